//! The `/metrics` endpoint the coordinator and the worker serve on `--metrics-listen`: a
//! Prometheus registry in the OpenMetrics text format, over HTTP/1.1 (what Prometheus scrapes).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// The media type of the OpenMetrics text format, version 1.0.0.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry's current values as an HTTP response.
pub fn render(registry: &Registry) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}"),
        )
            .into_response(),
    }
}

/// A router answering `GET /metrics` with the registry's current values.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = Arc::clone(&registry);
            async move { render(&registry) }
        }),
    )
}

/// Serves `router` on `listener` until `shutdown` completes (then finishes the requests in
/// flight).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    /// A counter registered with a prefix comes out with its `_total` suffix and the
    /// OpenMetrics end marker.
    #[test]
    fn renders_openmetrics_text() {
        let mut registry = Registry::with_prefix("fedcsg");
        let counter: Counter = Counter::default();
        registry.register("things", "Things seen", counter.clone());
        counter.inc_by(3);
        let response = render(&registry);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("# TYPE fedcsg_things counter"), "{text}");
        assert!(text.contains("fedcsg_things_total 3"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
