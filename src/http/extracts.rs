//! Extracts over HTTP: partners request, follow and download; the DPO
//! approves or rejects.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{AppError, AppResult};
use crate::http::ApiJson;
use crate::http::audit::{RequestId, with_entry};
use crate::http::partner::Partner;
use crate::http::session::CurrentUser;
use crate::service::access::{AccessRequest, decide};
use crate::service::extracts::{ExtractRequest, ExtractView, view};

/// Asks for an extract (it waits for the DPO's approval).
#[utoipa::path(post, path = "/api/v1/partner/extracts", tag = "partner", request_body = ExtractRequest,
    responses((status = 201, body = ExtractView),
              (status = 403, description = "`not_a_recipient`", body = crate::error::ErrorBody),
              (status = 422, description = "`unknown_purpose`, `categories_outside_purpose`, `unknown_field`, `no_age_recipient`, `group_by_required`, `not_summable`, `invalid_epsilon`", body = crate::error::ErrorBody)))]
pub async fn request(
    State(state): State<AppState>,
    partner: Partner,
    ApiJson(body): ApiJson<ExtractRequest>,
) -> AppResult<Response> {
    let row =
        crate::service::extracts::request(&state, &partner.id, body, state.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(view(&state, &row)?)).into_response())
}

#[derive(Serialize, ToSchema)]
pub struct ExtractList {
    pub extracts: Vec<ExtractView>,
}

/// My extracts.
#[utoipa::path(get, path = "/api/v1/partner/extracts", tag = "partner",
    responses((status = 200, body = ExtractList)))]
pub async fn list(State(state): State<AppState>, partner: Partner) -> AppResult<Json<ExtractList>> {
    let rows = state.store.extracts_of_partner(&partner.id).await?;
    Ok(Json(ExtractList {
        extracts: rows
            .iter()
            .map(|r| view(&state, r))
            .collect::<AppResult<_>>()?,
    }))
}

async fn own(
    state: &AppState,
    partner: &Partner,
    id: &str,
) -> AppResult<crate::storage::ExtractRow> {
    state
        .store
        .find_extract(id)
        .await?
        .filter(|e| e.partner_id == partner.id)
        .ok_or(AppError::NotFound)
}

/// One extract: its state, progress and, once built, its signed manifest.
#[utoipa::path(get, path = "/api/v1/partner/extracts/{id}", tag = "partner",
    responses((status = 200, body = ExtractView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    partner: Partner,
    Path(id): Path<String>,
) -> AppResult<Json<ExtractView>> {
    Ok(Json(view(&state, &own(&state, &partner, &id).await?)?))
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
    let row = own(&state, &partner, &id).await?;
    let now = state.clock.now();
    let entry =
        crate::service::extracts::authorise_download(&state, &partner.id, &row, rid.0, now).await?;
    let file = tokio::fs::File::open(crate::service::extracts::file_path(&state, &id))
        .await
        .map_err(|_| AppError::internal("extract file missing"))?;
    state
        .store
        .extract_transition(&id, "ready", "downloaded", None, now)
        .await?;
    // 64 KiB at a time: memory does not grow with the file.
    let stream = futures_util::stream::unfold(file, |mut file| async move {
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
    let mut res = with_entry(entry, Body::from_stream(stream));
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
    let entry = decide(
        &state,
        AccessRequest {
            request_id: rid.0,
            ..AccessRequest::new(&user.actor_id, user.role, "extract.approve")
        },
    )
    .await?;
    let rows = state.store.all_extracts(500).await?;
    Ok(with_entry(
        entry,
        Json(ExtractList {
            extracts: rows
                .iter()
                .map(|r| view(&state, r))
                .collect::<AppResult<_>>()?,
        }),
    ))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    /// Given to the partner.
    pub reason: String,
}

async fn dpo_decide(
    state: &AppState,
    user: &CurrentUser,
    rid: RequestId,
    id: &str,
    approve: bool,
    reason: Option<&str>,
) -> AppResult<Response> {
    let entry = decide(
        state,
        AccessRequest {
            request_id: rid.0,
            ..AccessRequest::new(&user.actor_id, user.role, "extract.approve")
        },
    )
    .await?;
    let row = crate::service::extracts::decide(
        state,
        &user.actor_id,
        id,
        approve,
        reason,
        state.clock.now(),
    )
    .await?;
    Ok(with_entry(entry, Json(view(state, &row)?)))
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
    dpo_decide(&state, &user, rid, &id, true, None).await
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
    if body.reason.trim().is_empty() || body.reason.len() > 500 {
        return Err(AppError::unprocessable(
            "invalid_reason",
            "a reason of 1 to 500 characters",
        ));
    }
    dpo_decide(&state, &user, rid, &id, false, Some(body.reason.trim())).await
}
