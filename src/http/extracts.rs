//! Extracts over HTTP: partners request, follow and download; the DPO
//! approves or rejects.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::domain::ExtractId;
use crate::error::{AppError, AppResult};
use crate::http::ApiJson;
use crate::http::audit::{RequestId, audited_json, with_entry};
use crate::http::partner::Partner;
use crate::http::session::CurrentUser;
use crate::service::extracts::{self, ExtractList, ExtractRequest, ExtractView};

/// Asks for an extract (it waits for the DPO's approval).
#[utoipa::path(post, path = "/api/v1/partner/extracts", tag = "partner", request_body = ExtractRequest,
    responses((status = 201, body = ExtractView),
              (status = 403, description = "`not_a_recipient`", body = crate::error::ErrorBody),
              (status = 422, description = "`unknown_purpose`, `categories_outside_purpose`, `unknown_field`, `no_age_recipient`, `group_by_required`, `not_summable`, `invalid_epsilon`", body = crate::error::ErrorBody)))]
pub async fn request(
    State(state): State<AppState>,
    partner: Partner,
    rid: RequestId,
    ApiJson(body): ApiJson<ExtractRequest>,
) -> AppResult<Response> {
    let now = state.clock.now();
    let view = extracts::partner_request(&state, &partner.caller(&rid), body, now).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// My extracts.
#[utoipa::path(get, path = "/api/v1/partner/extracts", tag = "partner",
    responses((status = 200, body = ExtractList)))]
pub async fn list(
    State(state): State<AppState>,
    partner: Partner,
    rid: RequestId,
) -> AppResult<Json<ExtractList>> {
    Ok(Json(
        extracts::partner_list(&state, &partner.caller(&rid)).await?,
    ))
}

/// One extract: its state, progress and, once built, its signed manifest.
#[utoipa::path(get, path = "/api/v1/partner/extracts/{id}", tag = "partner",
    responses((status = 200, body = ExtractView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    partner: Partner,
    rid: RequestId,
    Path(id): Path<String>,
) -> AppResult<Json<ExtractView>> {
    Ok(Json(
        extracts::partner_get(&state, &partner.caller(&rid), &extract_id(&id)?).await?,
    ))
}

/// The extract's file: CSV encrypted with age to your recipient
/// (`age -d -i your.key`), streamed. Available until it expires.
#[utoipa::path(get, path = "/api/v1/partner/extracts/{id}/file", tag = "partner",
    responses((status = 200, description = "application/age"),
              (status = 409, description = "`extract_not_ready`", body = crate::error::ErrorBody),
              (status = 410, description = "`extract_expired`", body = crate::error::ErrorBody)))]
pub async fn file(
    State(state): State<AppState>,
    partner: Partner,
    rid: RequestId,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let now = state.clock.now();
    let done = extracts::download(&state, &partner.caller(&rid), &extract_id(&id)?, now).await?;
    // 64 KiB at a time: memory does not grow with the file.
    let stream = futures_util::stream::unfold(done.value, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let mut res = with_entry(done.entry, Body::from_stream(stream));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/age"),
    );
    if let Ok(v) =
        header::HeaderValue::from_str(&format!("attachment; filename=\"extract-{id}.csv.age\""))
    {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

/// Extract requests, those awaiting a decision first (DPO).
#[utoipa::path(get, path = "/api/v1/dpo/extracts", tag = "agent",
    responses((status = 200, body = ExtractList), (status = 403, body = crate::error::ErrorBody)))]
pub async fn dpo_list(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    Ok(audited_json(
        extracts::dpo_list(&state, &user.caller(&rid)).await?,
    ))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    /// Given to the partner.
    pub reason: String,
}

/// Approves an extract: it is built in the background.
#[utoipa::path(post, path = "/api/v1/dpo/extracts/{id}/approve", tag = "agent",
    responses((status = 200, body = ExtractView), (status = 409, description = "`invalid_transition`, `epsilon_budget_exhausted`", body = crate::error::ErrorBody)))]
pub async fn approve(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let now = state.clock.now();
    Ok(audited_json(
        extracts::dpo_approve(
            &state,
            &user.caller(&rid),
            ExtractId::parse(&id).ok().as_ref(),
            now,
        )
        .await?,
    ))
}

/// Rejects an extract, with a reason the partner sees.
#[utoipa::path(post, path = "/api/v1/dpo/extracts/{id}/reject", tag = "agent", request_body = RejectRequest,
    responses((status = 200, body = ExtractView), (status = 409, description = "`invalid_transition`", body = crate::error::ErrorBody)))]
pub async fn reject(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RejectRequest>,
) -> AppResult<Response> {
    let now = state.clock.now();
    Ok(audited_json(
        extracts::dpo_reject(
            &state,
            &user.caller(&rid),
            ExtractId::parse(&id).ok().as_ref(),
            &body.reason,
            now,
        )
        .await?,
    ))
}

/// The extract a partner's path names: a malformed id names none, and is
/// `not_found` as an unknown one is (nothing is decided or recorded before
/// a partner's extract is found).
fn extract_id(raw: &str) -> AppResult<ExtractId> {
    ExtractId::parse(raw).map_err(|_| AppError::NotFound)
}
