//! HTTP surface: routers per area, extractors, middleware, and the OpenAPI
//! document generated from the handlers themselves.
//!
//! Handlers translate HTTP to domain calls and back; they never decide
//! policy themselves.

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::AppError;

pub mod audit;
pub mod consents;
pub mod data;
pub mod dev;
pub mod extracts;
pub mod health;
pub mod json;
pub mod login;
pub mod mandates;
pub mod me;
pub mod metrics;
pub mod middleware;
pub mod notices;
pub mod partner;
pub mod ratelimit;
pub mod rights;
pub mod sealed;
pub mod session;
pub mod sources;
pub mod stats;

pub use json::ApiJson;

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(
        title = "coffre",
        description = "Registre des consentements et coffre-fort de données personnelles — consent registry and encrypted personal-data vault. Errors are always `{\"error\":{\"code\",\"message\"}}`.",
        license(name = "EUPL-1.2")
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail)),
    tags(
        (name = "ops", description = "Liveness, readiness, this document"),
        (name = "public", description = "Public information: categories, keys"),
        (name = "resident", description = "A resident's own space"),
        (name = "agent", description = "Agents: aidants, référents, DPO, auditors, admins"),
        (name = "partner", description = "Partners: OAuth2 client credentials and purpose-limited access"),
        (name = "source", description = "Data sources: OAuth2 client credentials, residents' links, deposits"),
        (name = "audit", description = "The tamper-evident audit log: checkpoints, proofs, entries"),
        (name = "demo", description = "Development login (demo mode only)")
    )
)]
struct ApiDoc;

/// The application router: the API, and `pages` (the HTML pages of
/// `web/`, which the crate root hands in so that `http` does not depend on
/// `web`), behind one stack of middleware. [`crate::app`] assembles it.
pub fn router(state: AppState, pages: Router<AppState>) -> Router {
    let mut api = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(me::me))
        .routes(routes!(session::logout))
        .routes(routes!(login::resident_login))
        .routes(routes!(login::resident_callback))
        .routes(routes!(login::agent_login))
        .routes(routes!(login::agent_callback))
        .routes(routes!(data::my_data))
        .routes(routes!(data::my_category, data::put_my_category))
        .routes(routes!(data::erase_me))
        .routes(routes!(data::categories))
        .routes(routes!(data::jwks))
        .routes(routes!(audit::checkpoint))
        .routes(routes!(audit::key))
        .routes(routes!(audit::inclusion))
        .routes(routes!(audit::consistency))
        .routes(routes!(audit::entries))
        .routes(routes!(audit::my_accesses))
        .routes(routes!(consents::purposes))
        .routes(routes!(consents::my_consents, consents::decide))
        .routes(routes!(consents::withdraw))
        .routes(routes!(consents::receipts))
        .routes(routes!(partner::token))
        .routes(routes!(partner::me))
        .routes(routes!(partner::residents))
        .routes(routes!(partner::resident_data))
        .routes(routes!(mandates::demarches))
        .routes(routes!(mandates::create_draft))
        .routes(routes!(mandates::get_draft))
        .routes(routes!(mandates::confirm_draft))
        .routes(routes!(mandates::renew))
        .routes(routes!(mandates::agent_revoke))
        .routes(routes!(mandates::resident_revoke))
        .routes(routes!(mandates::my_mandates))
        .routes(routes!(mandates::mandated_residents))
        .routes(routes!(mandates::expiring))
        .routes(routes!(mandates::get_mandate))
        .routes(routes!(mandates::read_on_behalf, mandates::write_on_behalf))
        .routes(routes!(mandates::verify))
        .routes(routes!(mandates::consent_on_behalf))
        .routes(routes!(mandates::referent_structure))
        .routes(routes!(mandates::set_demarches))
        .routes(routes!(mandates::referent_alerts))
        .routes(routes!(mandates::review_alert))
        .routes(routes!(mandates::set_alert_rules))
        .routes(routes!(mandates::set_aidant_active))
        .routes(routes!(mandates::switch_structure))
        .routes(routes!(notices::my_preferences, notices::set_preferences))
        .routes(routes!(rights::my_rights))
        .routes(routes!(rights::my_recipients))
        .routes(routes!(rights::restriction))
        .routes(routes!(rights::object))
        .routes(routes!(rights::lift_objection))
        .routes(routes!(rights::new_request, rights::my_requests))
        .routes(routes!(rights::dpo_requests))
        .routes(routes!(rights::extend))
        .routes(routes!(rights::close))
        .routes(routes!(rights::register))
        .routes(routes!(rights::partner_notifications))
        .routes(routes!(rights::export))
        .routes(routes!(extracts::request, extracts::list))
        .routes(routes!(extracts::get))
        .routes(routes!(extracts::file))
        .routes(routes!(extracts::dpo_list))
        .routes(routes!(extracts::approve))
        .routes(routes!(extracts::reject))
        .routes(routes!(sources::my_sources))
        .routes(routes!(sources::start_pairing, sources::revoke))
        .routes(routes!(sources::object, sources::lift_objection))
        .routes(routes!(sources::exchange))
        .routes(routes!(sources::deposits))
        .routes(routes!(stats::releases))
        .routes(routes!(stats::release))
        .routes(routes!(stats::table))
        .routes(routes!(stats::catalog))
        .routes(routes!(stats::ledger))
        .routes(routes!(rights::dpo_report));
    if state.demo {
        api = api
            .routes(routes!(dev::personas))
            .routes(routes!(dev::login))
            .routes(routes!(dev::mandate_login));
    }
    let (router, openapi) = api.split_for_parts();
    let openapi_json = std::sync::Arc::new(openapi);

    let max_body = state.config.max_body_bytes;
    let max_deposit = state.config.max_deposit_bytes;
    let state_clock = state.clock.clone();
    let hsts = middleware::Hsts(state.config.is_https());
    let metrics = state.metrics.clone();

    router
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = openapi_json.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        // The log as C2SP tlog-tiles, for standard clients (beside the
        // JSON proofs of /api/v1/audit).
        .route("/audit/checkpoint", get(audit::tlog_checkpoint))
        .route("/audit/tile/entries/{*path}", get(audit::entry_bundle))
        .route("/audit/tile/{*path}", get(audit::hash_tile))
        .merge(pages)
        .fallback(|| async { AppError::NotFound })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(max_body))
        // Sealed: only the public routes answer; the refusal is audited.
        .layer(from_fn_with_state(state, sealed::refuse_while_sealed))
        // Layers below wrap those above: the last one added sees requests first.
        .layer(from_fn_with_state(
            (max_body, max_deposit),
            middleware::body_limit,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(from_fn_with_state(
            (
                std::sync::Arc::new(ratelimit::Limiter::default()),
                state_clock,
            ),
            ratelimit::limit,
        ))
        .layer(from_fn(middleware::json_errors))
        .layer(from_fn_with_state(hsts, middleware::security_headers))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let request_id = req
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                let client_request_id = req
                    .headers()
                    .get(middleware::CLIENT_REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                // The path may hold identifiers but never personal values;
                // query strings are left out on purpose.
                tracing::info_span!(
                    "request",
                    method = %req.method(),
                    path = %req.uri().path(),
                    request_id = %request_id,
                    client_request_id = %client_request_id,
                )
            }),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(from_fn(middleware::sanitize_request_id))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        // Outermost: every answer is counted, a caught panic's 500 too.
        .layer(from_fn_with_state(metrics, metrics::track))
}
