//! The live dashboard (`--dashboard-listen`): a page embedded in the binary (no CDN, no build
//! step; it works air-gapped) and the small read-only JSON API it polls. With an admin token
//! configured, every `/api` call needs `Authorization: Bearer TOKEN`; the page asks for the
//! token and keeps it for the browser tab. The page itself holds no data and needs no token.

mod api;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fedcsg_core::secret::Secret;

use crate::coordinator::{Coordinator, constant_time_eq};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// What the dashboard's handlers share.
#[derive(Clone)]
pub(crate) struct Dashboard {
    coordinator: Arc<Coordinator>,
    admin_token: Option<Secret>,
}

/// The dashboard's routes: the page at `/`, its script and style, and `/api/...`.
pub fn router(coordinator: Arc<Coordinator>, admin_token: Option<Secret>) -> Router {
    let dashboard = Dashboard {
        coordinator,
        admin_token,
    };
    let api = Router::new()
        .route("/api/overview", get(api::overview))
        .route("/api/jobs/{id}", get(api::job))
        .route_layer(middleware::from_fn_with_state(
            dashboard.clone(),
            require_admin_token,
        ))
        .with_state(dashboard);
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .merge(api)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Scripts run only from this origin; nothing is fetched from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// A JSON error body: `{"error": "..."}`.
pub(crate) fn error(status: StatusCode, why: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": why.into() })),
    )
        .into_response()
}

/// Lets a request through when no admin token is configured or it carries the right one.
async fn require_admin_token(
    State(dashboard): State<Dashboard>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(expected) = &dashboard.admin_token {
        match presented_token(request.headers()) {
            None => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "this coordinator requires its admin token: send `Authorization: Bearer TOKEN`",
                );
            }
            Some(token) if !constant_time_eq(token, expected.expose()) => {
                return error(StatusCode::UNAUTHORIZED, "the admin token is not valid");
            }
            Some(_) => {}
        }
    }
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().expect("valid"));
    response
}

fn presented_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}
