//! Metrics over HTTP: the middleware that counts every request of the main
//! router by its route *template* (never the path a client sent, which may
//! hold ids), and the router of the separate metrics listener
//! (`metrics_listen`), which serves `GET /metrics` and nothing else.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;
use crate::service::metrics::Metrics;

/// Counts and times one request. Applied with `Router::layer`, so it runs
/// after routing and sees the matched route's template.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    // A duration for metrics, not a time of the domain's.
    let started = Instant::now();
    let res = next.run(req).await;
    metrics.request(
        method.as_str(),
        route.as_ref().map(MatchedPath::as_str),
        res.status().as_u16(),
        started.elapsed(),
    );
    res
}

/// The metrics listener's router: `GET /metrics` (Prometheus text format,
/// version 0.0.4); anything else is 404.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(state)
}

async fn scrape(State(state): State<AppState>) -> Response {
    match state.metrics.render(&state).await {
        Ok(body) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(crate::service::metrics::ScrapeError::Busy) => {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics not rendered");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
