//! The `/metrics` endpoint the coordinator and the worker serve on `--metrics-listen`: a
//! Prometheus registry in the OpenMetrics text format, over HTTP/1.1 (what Prometheus scrapes).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing;
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
        routing::get(move || {
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

/// `GET path` at `addr` over HTTP/1.1 (with `Authorization: Bearer token` if given): the status
/// and the body. A minimal client for scraping `/metrics` and the dashboard's API (the load test
/// and the tests use it); no redirects, no keep-alive.
pub async fn get(addr: &str, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    use std::io::{Error, ErrorKind};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let bad = |why: &str| Error::new(ErrorKind::InvalidData, format!("GET {path}: {why}"));
    let response = String::from_utf8(response).map_err(|_| bad("the response is not UTF-8"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of the headers"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body).ok_or_else(|| bad("a malformed chunked body"))?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size + 2..)?;
    }
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

    /// The client reads what the server serves, chunked or not.
    #[tokio::test]
    async fn get_reads_the_endpoint() {
        let mut registry = Registry::with_prefix("t");
        let counter: Counter = Counter::default();
        registry.register("hits", "Hits", counter.clone());
        counter.inc();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(serve(
            listener,
            router(Arc::new(registry)),
            std::future::pending(),
        ));
        let (status, body) = get(&addr, "/metrics", None).await.unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("t_hits_total 1"), "{body}");
        assert_eq!(get(&addr, "/nothing", None).await.unwrap().0, 404);
        assert_eq!(
            dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").as_deref(),
            Some("abcde")
        );
        assert_eq!(dechunk("9\r\nabc"), None);
        server.abort();
    }
}
