//! The composition root: the API of `http/` and the pages of `web/` in one
//! router, so that neither of the two depends on the other for it.

use axum::Router;

use crate::AppState;

/// The whole application: the API and the pages behind one stack of
/// middleware. Tests call this with a state of their own.
pub fn app(state: AppState) -> Router {
    crate::http::router(state, crate::web::routes())
}

/// The metrics listener's router (`GET /metrics` only), served apart from
/// [`app`] on `metrics_listen`.
pub fn metrics_app(state: AppState) -> Router {
    crate::http::metrics::router(state)
}
