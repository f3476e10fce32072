//! Residents' rights over HTTP: the export (arts. 15 and 20), restriction
//! (art. 18), objection (art. 21), requests to the DPO with their deadlines,
//! recipients' notifications (art. 19) and the DPO's register (art. 30).
//! The rules are in `service::{rights, requests, export}`.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::domain::RightsRequestId;
use crate::error::{AppResult, ErrorCode};
use crate::http::ApiJson;
use crate::http::audit::{RequestId, audited_json, with_entry};
use crate::http::partner::Partner;
use crate::http::session::CurrentUser;
use crate::service::requests::{self, Notifications, RightsRequestView, RightsRequests};
use crate::service::rights::{self, Recipients, RightsView};

// --- restriction and objection -------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestrictionRequest {
    /// true: restrict processing (data kept, not used); false: lift it.
    pub restricted: bool,
}

/// Who received my data (art. 19: the partners a rectification, erasure or
/// restriction is told to).
#[utoipa::path(get, path = "/api/v1/me/recipients", tag = "resident",
    responses((status = 200, body = Recipients), (status = 403, body = crate::error::ErrorBody)))]
pub async fn my_recipients(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    Ok(audited_json(
        rights::my_recipients(&state, &user.caller(&rid)).await?,
    ))
}

/// My restriction and objections.
#[utoipa::path(get, path = "/api/v1/me/rights", tag = "resident",
    responses((status = 200, body = RightsView), (status = 403, body = crate::error::ErrorBody)))]
pub async fn my_rights(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    Ok(audited_json(
        rights::my_rights(&state, &user.caller(&rid)).await?,
    ))
}

/// Restricts processing of my data (art. 18), or lifts the restriction. At
/// once: partners are refused `processing_restricted`; partners that read
/// my data are told (art. 19).
#[utoipa::path(post, path = "/api/v1/me/restriction", tag = "resident", request_body = RestrictionRequest,
    responses((status = 200, body = RightsView), (status = 403, body = crate::error::ErrorBody)))]
pub async fn restriction(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    ApiJson(body): ApiJson<RestrictionRequest>,
) -> AppResult<Response> {
    let now = state.clock.now();
    Ok(audited_json(
        rights::restrict(&state, &user.caller(&rid), body.restricted, now).await?,
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectionRequest {
    /// A purpose on another basis than consent (for a consent, withdraw it).
    pub purpose: String,
}

/// Objects to a purpose processed on another basis than consent (art. 21).
/// At once: partners of that purpose are refused `objection`.
#[utoipa::path(post, path = "/api/v1/me/objections", tag = "resident", request_body = ObjectionRequest,
    responses((status = 200, body = RightsView),
              (status = 422, description = "`unknown_purpose`, `objection_not_applicable`", body = crate::error::ErrorBody)))]
pub async fn object(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    ApiJson(body): ApiJson<ObjectionRequest>,
) -> AppResult<Response> {
    let now = state.clock.now();
    Ok(audited_json(
        rights::object(&state, &user.caller(&rid), &body.purpose, now).await?,
    ))
}

/// Lifts an objection.
#[utoipa::path(delete, path = "/api/v1/me/objections/{purpose}", tag = "resident",
    responses((status = 200, body = RightsView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn lift_objection(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(purpose): Path<String>,
) -> AppResult<Response> {
    Ok(audited_json(
        rights::lift_objection(&state, &user.caller(&rid), &purpose).await?,
    ))
}

// --- requests to the DPO ---------------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRightsRequest {
    /// erasure, objection, rectification, restriction, access, portability or other.
    pub kind: String,
    /// The purpose concerned, if any.
    pub purpose: Option<String>,
}

/// Makes a request that needs the DPO (e.g. an erasure a legal obligation
/// may prevent, an objection to review). Due one month after receipt.
#[utoipa::path(post, path = "/api/v1/me/requests", tag = "resident", request_body = NewRightsRequest,
    responses((status = 201, body = RightsRequestView),
              (status = 422, description = "`unknown_request_kind`, `unknown_purpose`", body = crate::error::ErrorBody)))]
pub async fn new_request(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    ApiJson(body): ApiJson<NewRightsRequest>,
) -> AppResult<Response> {
    let now = state.clock.now();
    let done =
        requests::new_request(&state, &user.caller(&rid), body.kind, body.purpose, now).await?;
    Ok(with_entry(
        done.entry,
        (StatusCode::CREATED, Json(done.value)),
    ))
}

/// My requests, with every state change.
#[utoipa::path(get, path = "/api/v1/me/requests", tag = "resident",
    responses((status = 200, body = RightsRequests)))]
pub async fn my_requests(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    let now = state.clock.now();
    Ok(audited_json(
        requests::my_requests(&state, &user.caller(&rid), now).await?,
    ))
}

/// Every request, open ones first by due date, late ones flagged (DPO).
#[utoipa::path(get, path = "/api/v1/dpo/requests", tag = "agent",
    responses((status = 200, body = RightsRequests), (status = 403, description = "`role_not_allowed`", body = crate::error::ErrorBody)))]
pub async fn dpo_requests(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    let now = state.clock.now();
    Ok(audited_json(
        requests::all_requests(&state, &user.caller(&rid), now).await?,
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    /// GDPR art. 12(3): `complexity` or `number_of_requests`.
    pub reason: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseRequest {
    /// `granted` or `refused`.
    pub outcome: String,
    /// Required to refuse (GDPR art. 12(4): the resident is told why, and
    /// that they may complain to the CNIL): one of [`crate::service::rights::REFUSAL_REASONS`]. A
    /// code, never free text, so no personal detail lands in the record.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Extends a request by two months, with the reason the resident sees.
#[utoipa::path(post, path = "/api/v1/dpo/requests/{id}/extend", tag = "agent", request_body = ExtendRequest,
    responses((status = 200, body = RightsRequestView), (status = 409, description = "`extension_too_late`, `invalid_transition`", body = crate::error::ErrorBody)))]
pub async fn extend(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ExtendRequest>,
) -> AppResult<Response> {
    let now = state.clock.now();
    Ok(audited_json(
        requests::extend(
            &state,
            &user.caller(&rid),
            RightsRequestId::parse(&id).ok().as_ref(),
            body.reason,
            now,
        )
        .await?,
    ))
}

/// Closes a request: granted or refused.
#[utoipa::path(post, path = "/api/v1/dpo/requests/{id}/close", tag = "agent", request_body = CloseRequest,
    responses((status = 200, body = RightsRequestView), (status = 409, description = "`invalid_transition`", body = crate::error::ErrorBody)))]
pub async fn close(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CloseRequest>,
) -> AppResult<Response> {
    let now = state.clock.now();
    Ok(audited_json(
        requests::close(
            &state,
            &user.caller(&rid),
            // A malformed id names no request: the use case answers it as
            // unknown, after the checks that come first.
            RightsRequestId::parse(&id).ok().as_ref(),
            body.outcome,
            body.reason,
            now,
        )
        .await?,
    ))
}

/// The register of processing (art. 30), as the DPO keeps it.
#[utoipa::path(get, path = "/api/v1/dpo/register", tag = "agent",
    responses((status = 200, description = "the purposes of policies/purposes.toml with their notice versions"), (status = 403, body = crate::error::ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    Ok(audited_json(
        requests::register(&state, &user.caller(&rid)).await?,
    ))
}

/// The DPO's annual report (DGA art. 20(2)): data users, their purposes,
/// means, reads and extracts; deposits per source; rights requests and
/// deadlines; refusals; statistics releases. DPO only, and recorded.
#[utoipa::path(get, path = "/api/v1/dpo/report", tag = "agent",
    params(("year" = i32, Query, description = "YYYY")),
    responses((status = 200, body = crate::service::report::AnnualReport),
              (status = 400, description = "`missing_parameter`, `invalid_parameter`", body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)))]
pub async fn dpo_report(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> AppResult<Response> {
    let year = q
        .get("year")
        .ok_or_else(|| ErrorCode::MissingParameter.with("`year`"))?;
    let year = crate::service::report::parse_year(year)?;
    let now = state.clock.now();
    Ok(audited_json(
        crate::service::report::annual(&state, &user.caller(&rid), year, now).await?,
    ))
}

// --- art. 19 notifications ---------------------------------------------------

/// Rectifications, erasures and restrictions of residents whose data you
/// read (art. 19), under your pseudonyms.
#[utoipa::path(get, path = "/api/v1/partner/notifications", tag = "partner",
    responses((status = 200, body = Notifications), (status = 401, body = crate::error::ErrorBody)))]
pub async fn partner_notifications(
    State(state): State<AppState>,
    partner: Partner,
    rid: RequestId,
) -> AppResult<Response> {
    let now = state.clock.now();
    Ok(audited_json(
        requests::take_notifications(&state, &partner.caller(&rid), now).await?,
    ))
}

// --- export ----------------------------------------------------------------

/// The export's header carrying the optional age passphrase (never a query
/// parameter: query strings end up in logs).
pub const PASSPHRASE_HEADER: &str = "x-export-passphrase";

/// Everything held about me, as one JSON document (schema
/// `coffre-export/1`, documented in README), streamed; with the
/// `X-Export-Passphrase` header, encrypted with age (scrypt passphrase).
#[utoipa::path(get, path = "/api/v1/me/export", tag = "resident",
    params(("x-export-passphrase" = Option<String>, Header, description = "at least 12 characters; the export is then an age file")),
    responses((status = 200, description = "application/json, or application/age with a passphrase"),
              (status = 403, description = "`cross_site_request`: asked from another site", body = crate::error::ErrorBody),
              (status = 422, description = "`passphrase_too_short`", body = crate::error::ErrorBody)))]
pub async fn export(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    headers: HeaderMap,
) -> AppResult<Response> {
    // The export is a navigation from the resident's page (a download
    // link), so it carries their cookie; a link on another site would too
    // (SameSite=Lax), and would make a logged-in resident download their
    // whole export, unencrypted, onto whatever computer they are at. A
    // browser says where a request comes from: another site is refused.
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"));
    if cross_site {
        return Err(ErrorCode::CrossSiteRequest.into());
    }
    let passphrase = headers
        .get(PASSPHRASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let now = state.clock.now();
    let done = crate::service::export::start(&state, &user.caller(&rid), passphrase, now).await?;
    let mut rx = done.value.chunks;
    let encrypted = done.value.encrypted;
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|c| c.map(|r| r.map(Bytes::from)))
    });
    let content_type = if encrypted {
        "application/age"
    } else {
        "application/json"
    };
    let filename = if encrypted {
        "coffre-export.json.age"
    } else {
        "coffre-export.json"
    };
    let mut res = with_entry(done.entry, Body::from_stream(stream));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    if let Ok(v) = header::HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res.into_response())
}
