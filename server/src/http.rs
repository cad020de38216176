//! The coordinator's HTTP side, beside its gRPC port: Prometheus `/metrics` on
//! `--metrics-listen` and the dashboard on `--dashboard-listen` (one listener serves both when
//! the two name the same address). Both are bound before anything is served, so a taken port
//! fails the start with a clear error.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use fedcsg_wire::metrics_http;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::CoordinatorConfig;
use crate::coordinator::Coordinator;
use crate::dashboard;
use crate::error::{Result, ServerError};

/// A bound HTTP listener and what it serves.
pub struct HttpEndpoint {
    pub addr: SocketAddr,
    pub serves: &'static str,
    listener: TcpListener,
    router: Router,
}

/// `/metrics`, refreshing the gauges (jobs and workers by state) before each scrape.
pub fn metrics_router(coordinator: Arc<Coordinator>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let coordinator = Arc::clone(&coordinator);
            async move {
                let metrics = coordinator.metrics();
                metrics.refresh(&coordinator.census());
                metrics_http::render(metrics.registry())
            }
        }),
    )
}

/// Binds the configured endpoints (none without `--metrics-listen` or `--dashboard-listen`).
pub async fn bind(
    config: &CoordinatorConfig,
    coordinator: &Arc<Coordinator>,
) -> Result<Vec<HttpEndpoint>> {
    let metrics = config
        .metrics_listen
        .map(|addr| (addr, metrics_router(Arc::clone(coordinator))));
    let dashboard = config.dashboard_listen.map(|addr| {
        (
            addr,
            dashboard::router(Arc::clone(coordinator), config.admin_token.clone()),
        )
    });
    let wanted: Vec<(SocketAddr, Router, &'static str)> = match (metrics, dashboard) {
        (Some((m, mr)), Some((d, dr))) if m == d => {
            vec![(m, mr.merge(dr), "metrics and dashboard")]
        }
        (m, d) => m
            .map(|(a, r)| (a, r, "metrics"))
            .into_iter()
            .chain(d.map(|(a, r)| (a, r, "dashboard")))
            .collect(),
    };
    let mut endpoints = Vec::new();
    for (listen, router, serves) in wanted {
        let listener =
            TcpListener::bind(listen)
                .await
                .map_err(|source| ServerError::HttpListen {
                    what: serves,
                    listen,
                    source,
                })?;
        let addr = listener.local_addr()?;
        endpoints.push(HttpEndpoint {
            addr,
            serves,
            listener,
            router,
        });
    }
    Ok(endpoints)
}

impl HttpEndpoint {
    /// Serves until `shutdown` completes.
    pub fn spawn(self, shutdown: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        let HttpEndpoint {
            addr,
            serves,
            listener,
            router,
        } = self;
        info!(%addr, serves, "HTTP listening");
        tokio::spawn(async move {
            if let Err(e) = metrics_http::serve(listener, router, shutdown).await {
                warn!(%addr, serves, error = %e, "HTTP endpoint stopped");
            }
        })
    }
}
