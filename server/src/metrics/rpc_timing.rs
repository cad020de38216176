//! A tower layer on the gRPC server that times every call by method into
//! `fedcsg_rpc_duration_seconds`: from the request's arrival until the response starts (for
//! a streamed upload that is after the whole stream was read; for a streamed download, before
//! its first chunk).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tower_layer::Layer;
use tower_service::Service;

use super::CoordinatorMetrics;

#[derive(Debug, Clone)]
pub struct RpcTimingLayer {
    metrics: Arc<CoordinatorMetrics>,
}

impl RpcTimingLayer {
    pub fn new(metrics: Arc<CoordinatorMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcTimingLayer {
    type Service = RpcTiming<S>;

    fn layer(&self, inner: S) -> RpcTiming<S> {
        RpcTiming {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RpcTiming<S> {
    inner: S,
    metrics: Arc<CoordinatorMetrics>,
}

impl<S, B> Service<http::Request<B>> for RpcTiming<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let labels = CoordinatorMetrics::rpc_labels(request.uri().path());
        let started = Instant::now();
        let response = self.inner.call(request);
        let metrics = Arc::clone(&self.metrics);
        Box::pin(async move {
            let result = response.await;
            metrics.rpc_finished(&labels, started.elapsed());
            result
        })
    }
}
