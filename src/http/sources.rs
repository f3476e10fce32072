//! Data sources over HTTP: a resident's links to them (`/api/v1/me/sources`)
//! and what a source does with its token (`/api/v1/source/…`). The rules
//! are in `service::sources`.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{AppError, AppResult};
use crate::http::ApiJson;
use crate::http::audit::{RequestId, audited_json, with_entry};
use crate::http::session::CurrentUser;
use crate::service::sources::{self, LinkHandle, MySource, PairingCode, SourceCaller};

/// A data source authenticated by its bearer token (audience
/// `coffre-source`), active and still in the register.
pub struct Source(pub SourceCaller);

impl FromRequestParts<AppState> for Source {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> AppResult<Self> {
        let Ok(RequestId(request_id)) = RequestId::from_request_parts(parts, state).await;
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(AppError::Unauthenticated)?;
        Ok(Source(
            sources::verify_token(state, token, request_id, state.clock.now()).await?,
        ))
    }
}

/// The data sources of the register that may deposit about me, what each
/// may deposit, and my link to it.
#[utoipa::path(get, path = "/api/v1/me/sources", tag = "resident",
    responses((status = 200, body = Vec<MySource>), (status = 401, body = crate::error::ErrorBody)))]
pub async fn my_sources(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    Ok(audited_json(
        sources::my_sources(&state, &user.caller(&rid)).await?,
    ))
}

/// A pairing code to give a link source (at a counter, by phone): one use,
/// 15 minutes.
#[utoipa::path(post, path = "/api/v1/me/sources/{id}/links", tag = "resident",
    responses((status = 201, body = PairingCode),
              (status = 404, body = crate::error::ErrorBody),
              (status = 422, description = "`source_not_linkable`", body = crate::error::ErrorBody)))]
pub async fn start_pairing(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let done = sources::start_pairing(&state, &user.caller(&rid), &id, state.clock.now()).await?;
    Ok(with_entry(
        done.entry,
        (StatusCode::CREATED, axum::Json(done.value)),
    ))
}

/// Revokes my link to a source: its later deposits about me are refused.
#[utoipa::path(delete, path = "/api/v1/me/sources/{id}/links", tag = "resident",
    responses((status = 204),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "`no_link`", body = crate::error::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let done = sources::revoke(&state, &user.caller(&rid), &id, state.clock.now()).await?;
    Ok(with_entry(done.entry, StatusCode::NO_CONTENT))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkExchange {
    /// A pairing code the resident gave (`XXXX-XXXX`, any case, dash
    /// optional) or the authorisation code sent to the redirect URI.
    pub code: String,
}

/// A source exchanges a code for the resident's handle (one use; an
/// expired, reused or foreign code is `invalid_grant`).
#[utoipa::path(post, path = "/api/v1/source/links", tag = "source", request_body = LinkExchange,
    responses((status = 200, body = LinkHandle),
              (status = 401, description = "`unauthenticated`, `invalid_token`", body = crate::error::ErrorBody),
              (status = 422, description = "`invalid_grant`, `source_not_linkable`", body = crate::error::ErrorBody)))]
pub async fn exchange(
    State(state): State<AppState>,
    Source(source): Source,
    ApiJson(body): ApiJson<LinkExchange>,
) -> AppResult<Response> {
    Ok(audited_json(
        sources::exchange(&state, &source, &body.code, state.clock.now()).await?,
    ))
}
