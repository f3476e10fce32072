//! Mandates over HTTP: drafts, confirmation, renewal and revocation;
//! acting for a resident under a mandate; the référent's structure. The
//! rules are in `service::{drafts, agents, structures, mandates}`.

use crate::error::ErrorCode;
use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use crate::AppState;
use crate::domain::{AgentId, Demarche, DraftId, MandateId};
use crate::error::AppResult;
use crate::http::ApiJson;
use crate::http::audit::{RequestId, audited_json, with_entry};
use crate::http::session::CurrentUser;
use crate::service::agents::{
    self, MyMandates, RevocationReceipt, RevokeRequest, StructureMandates, Verification,
};
use crate::service::consents::{ConsentOutcome, ConsentRequest};
use crate::service::drafts::{
    self, ConfirmRequest, DemarcheItem, DraftRequest, DraftView, RenewRequest,
};
use crate::service::mandates::MandateView;
use crate::service::structures::{self, CurrentStructureRequest, DemarchesRequest, StructureView};

/// The revocation body is optional: empty revokes the whole mandate.
fn revoke_body(body: &[u8]) -> AppResult<RevokeRequest> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(RevokeRequest::default());
    }
    serde_json::from_slice(body).map_err(|_| ErrorCode::InvalidJson.into())
}

fn demarche_param(q: &HashMap<String, String>) -> AppResult<Demarche> {
    let code = q
        .get("demarche")
        .ok_or_else(|| ErrorCode::MissingParameter.with("`demarche`"))?;
    Demarche::parse(code).ok_or_else(|| ErrorCode::UnknownDemarche.into())
}

/// The démarches, their French labels and the data categories each reaches.
#[utoipa::path(get, path = "/api/v1/demarches", tag = "public",
    responses((status = 200, body = [DemarcheItem])))]
pub async fn demarches(State(state): State<AppState>) -> Json<Vec<DemarcheItem>> {
    Json(drafts::all_demarches(&state))
}

/// Starts a mandate: the aidant's choices. The resident then logs in at
/// `resident_login`, in this browser.
#[utoipa::path(post, path = "/api/v1/mandates/drafts", tag = "agent", request_body = DraftRequest,
    responses((status = 201, body = DraftView),
              (status = 403, description = "`aidant_only`, `agent_inactive`, `cannot_create_mandates`", body = crate::error::ErrorBody),
              (status = 422, description = "`unknown_demarche`, `demarche_not_allowed`, `invalid_duration`", body = crate::error::ErrorBody)))]
pub async fn create_draft(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    ApiJson(body): ApiJson<DraftRequest>,
) -> AppResult<Response> {
    let done = drafts::create_draft(&state, &user.caller(&rid), body).await?;
    Ok(with_entry(
        done.entry,
        (StatusCode::CREATED, Json(done.value)),
    ))
}

/// The recap the resident confirms (after their login).
#[utoipa::path(get, path = "/api/v1/mandates/drafts/{id}", tag = "agent",
    responses((status = 200, body = DraftView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_draft(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> AppResult<Response> {
    Ok(audited_json(
        drafts::get_draft(&state, &user.caller(&rid), draft_id(&id).as_ref()).await?,
    ))
}

/// Creates the mandate from a draft the resident has logged in to and
/// confirmed, with the aidant's TOTP code.
#[utoipa::path(post, path = "/api/v1/mandates/drafts/{id}/confirm", tag = "agent", request_body = ConfirmRequest,
    responses((status = 201, body = MandateView),
              (status = 403, description = "`totp_invalid`, `totp_locked`, `totp_not_enrolled`", body = crate::error::ErrorBody),
              (status = 409, description = "`resident_login_required`, `mandate_conflict`", body = crate::error::ErrorBody),
              (status = 422, description = "`resident_confirmation_required`", body = crate::error::ErrorBody)))]
pub async fn confirm_draft(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ConfirmRequest>,
) -> AppResult<Response> {
    let done =
        drafts::confirm_draft(&state, &user.caller(&rid), draft_id(&id).as_ref(), body).await?;
    Ok(with_entry(
        done.entry,
        (StatusCode::CREATED, Json(done.value)),
    ))
}

/// Renews a mandate of the structure: a new draft, which the same resident
/// must confirm with a fresh login.
#[utoipa::path(post, path = "/api/v1/mandates/{id}/renew", tag = "agent", request_body = RenewRequest,
    responses((status = 201, body = DraftView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn renew(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RenewRequest>,
) -> AppResult<Response> {
    let done = drafts::renew(&state, &user.caller(&rid), mandate_id(&id).as_ref(), body).await?;
    Ok(with_entry(
        done.entry,
        (StatusCode::CREATED, Json(done.value)),
    ))
}

/// Revokes a mandate of the structure (or one démarche): an aidant with
/// their TOTP code, or a référent.
#[utoipa::path(post, path = "/api/v1/mandates/{id}/revoke", tag = "agent", request_body = RevokeRequest,
    responses((status = 200, body = RevocationReceipt),
              (status = 403, description = "`totp_invalid`, `totp_locked`", body = crate::error::ErrorBody),
              (status = 409, description = "`nothing_to_revoke`", body = crate::error::ErrorBody)))]
pub async fn agent_revoke(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> AppResult<Response> {
    let body = revoke_body(&body)?;
    Ok(audited_json(
        agents::agent_revoke(&state, &user.caller(&rid), mandate_id(&id).as_ref(), body).await?,
    ))
}

/// A resident revokes one of their mandates (or one démarche of it), at once.
#[utoipa::path(post, path = "/api/v1/me/mandates/{id}/revoke", tag = "resident", request_body = RevokeRequest,
    responses((status = 200, body = RevocationReceipt),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "`nothing_to_revoke`", body = crate::error::ErrorBody)))]
pub async fn resident_revoke(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> AppResult<Response> {
    let body = revoke_body(&body)?;
    Ok(audited_json(
        agents::resident_revoke(&state, &user.caller(&rid), mandate_id(&id).as_ref(), body).await?,
    ))
}

/// My mandates, with their state and attestation.
#[utoipa::path(get, path = "/api/v1/me/mandates", tag = "resident",
    responses((status = 200, body = MyMandates), (status = 403, body = crate::error::ErrorBody)))]
pub async fn my_mandates(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    Ok(audited_json(
        agents::my_mandates(&state, &user.caller(&rid)).await?,
    ))
}

/// Residents under an active mandate of my current structure, one row per
/// démarche.
#[utoipa::path(get, path = "/api/v1/aidant/residents", tag = "agent",
    responses((status = 200, body = StructureMandates), (status = 403, body = crate::error::ErrorBody)))]
pub async fn mandated_residents(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    Ok(audited_json(
        agents::mandated_residents(&state, &user.caller(&rid)).await?,
    ))
}

/// Authorisations of my structure expiring within 30 days.
#[utoipa::path(get, path = "/api/v1/aidant/mandates/expiring", tag = "agent",
    responses((status = 200, body = StructureMandates), (status = 403, body = crate::error::ErrorBody)))]
pub async fn expiring(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    Ok(audited_json(
        agents::expiring(&state, &user.caller(&rid)).await?,
    ))
}

/// One mandate of my structure, with its attestation.
#[utoipa::path(get, path = "/api/v1/mandates/{id}", tag = "agent",
    responses((status = 200, body = MandateView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_mandate(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> AppResult<Response> {
    Ok(audited_json(
        agents::get_mandate(&state, &user.caller(&rid), mandate_id(&id).as_ref()).await?,
    ))
}

/// Reads a resident's category within a démarche of an active mandate.
#[utoipa::path(get, path = "/api/v1/aidant/residents/{resident}/data/{category}", tag = "agent",
    params(("demarche" = String, Query,)),
    responses((status = 200, body = crate::service::vault::RecordView),
              (status = 403, description = "`no_active_mandate`, `outside_demarche`, `agent_inactive`", body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn read_on_behalf(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path((resident, category)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> AppResult<Response> {
    let demarche = demarche_param(&q)?;
    Ok(audited_json(
        agents::read_on_behalf(&state, &user.caller(&rid), &resident, &category, demarche).await?,
    ))
}

/// Writes a new version of a resident's category within a démarche of an
/// active mandate.
#[utoipa::path(put, path = "/api/v1/aidant/residents/{resident}/data/{category}", tag = "agent",
    params(("demarche" = String, Query,)),
    responses((status = 200, body = crate::service::vault::RecordView),
              (status = 403, description = "`no_active_mandate`, `outside_demarche`", body = crate::error::ErrorBody)))]
pub async fn write_on_behalf(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path((resident, category)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    ApiJson(body): ApiJson<Value>,
) -> AppResult<Response> {
    let demarche = demarche_param(&q)?;
    let done = agents::write_on_behalf(
        &state,
        &user.caller(&rid),
        &resident,
        &category,
        demarche,
        body,
    )
    .await?;
    Ok(crate::http::data::with_notified(
        with_entry(done.entry, Json(done.value.record)),
        &done.value.notified,
    ))
}

/// Checks an attestation: signed by this service, and the mandate's state
/// now. Public: anyone shown an attestation may check it.
#[utoipa::path(get, path = "/api/v1/mandates/verify", tag = "public",
    params(("attestation" = String, Query,)),
    responses((status = 200, body = Verification),
              (status = 422, description = "`attestation_invalid`", body = crate::error::ErrorBody)))]
pub async fn verify(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> AppResult<Json<Verification>> {
    let jws = q
        .get("attestation")
        .ok_or_else(|| ErrorCode::MissingParameter.with("`attestation`"))?;
    Ok(Json(agents::verify(&state, jws, state.clock.now()).await?))
}

/// An aidant gives, refuses or withdraws a consent for a resident, within a
/// démarche of an active mandate whose categories cover the purpose's; the
/// consent is recorded as given on the resident's behalf, with the aidant
/// and the structure.
#[utoipa::path(post, path = "/api/v1/aidant/residents/{resident}/consents", tag = "agent",
    params(("demarche" = String, Query,)),
    request_body = crate::service::consents::ConsentRequest,
    responses((status = 200, body = crate::service::consents::ConsentOutcome),
              (status = 403, description = "`no_active_mandate`, `outside_demarche`", body = crate::error::ErrorBody)))]
pub async fn consent_on_behalf(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(resident): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ApiJson(req): ApiJson<ConsentRequest>,
) -> AppResult<Json<ConsentOutcome>> {
    let demarche = demarche_param(&q)?;
    Ok(Json(
        agents::consent_on_behalf(&state, &user.caller(&rid), &resident, demarche, req).await?,
    ))
}

/// The référent's structure: its allowed démarches and its agents.
#[utoipa::path(get, path = "/api/v1/referent/structure", tag = "agent",
    responses((status = 200, body = StructureView), (status = 403, description = "`referent_only`", body = crate::error::ErrorBody)))]
pub async fn referent_structure(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    Ok(audited_json(
        structures::referent_structure(&state, &user.caller(&rid)).await?,
    ))
}

/// The référent sets the démarches the structure's aidants may take on
/// (new mandates only: live ones keep theirs until they end or are revoked).
#[utoipa::path(put, path = "/api/v1/referent/structure/demarches", tag = "agent", request_body = DemarchesRequest,
    responses((status = 200, body = StructureView), (status = 403, description = "`referent_only`", body = crate::error::ErrorBody)))]
pub async fn set_demarches(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    ApiJson(body): ApiJson<DemarchesRequest>,
) -> AppResult<Response> {
    Ok(audited_json(
        structures::set_demarches(&state, &user.caller(&rid), body).await?,
    ))
}

/// The référent removes an aidant from the structure (or takes them back).
/// The agent's account is untouched: an aidant of several structures keeps
/// working for the others, and an administrator's deactivation stands.
#[utoipa::path(post, path = "/api/v1/referent/aidants/{id}/{action}", tag = "agent",
    params(("id" = String, Path,), ("action" = String, Path, description = "`deactivate` or `activate`")),
    responses((status = 200, body = StructureView), (status = 403, description = "`referent_only`", body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn set_aidant_active(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path((id, action)): Path<(String, String)>,
) -> AppResult<Response> {
    Ok(audited_json(
        structures::set_aidant_active(
            &state,
            &user.caller(&rid),
            AgentId::parse(&id).ok().as_ref(),
            &action,
        )
        .await?,
    ))
}

/// An aidant who works for several structures picks the current one; their
/// mandates and acts are those of the current structure.
#[utoipa::path(put, path = "/api/v1/aidant/structure", tag = "agent", request_body = CurrentStructureRequest,
    responses((status = 204, description = "switched"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn switch_structure(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    ApiJson(body): ApiJson<CurrentStructureRequest>,
) -> AppResult<Response> {
    let done = structures::switch_structure(&state, &user.caller(&rid), body).await?;
    Ok(with_entry(done.entry, StatusCode::NO_CONTENT))
}

/// The mandate a path names, parsed once; a malformed id names none, and
/// the use case answers it as an unknown one (after the checks it makes
/// first).
fn mandate_id(raw: &str) -> Option<MandateId> {
    MandateId::parse(raw).ok()
}

/// The draft a path names, parsed once, as [`mandate_id`].
fn draft_id(raw: &str) -> Option<DraftId> {
    DraftId::parse(raw).ok()
}

/// The référent's alerts about their structure's aidants (out of hours,
/// bursts, acts at night), with the structure's rules.
#[utoipa::path(get, path = "/api/v1/referent/alerts", tag = "agent",
    responses((status = 200, body = crate::service::alerts::AlertsView), (status = 403, description = "`referent_only`", body = crate::error::ErrorBody)))]
pub async fn referent_alerts(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    Ok(audited_json(
        crate::service::alerts::list(&state, &user.caller(&rid)).await?,
    ))
}

/// The référent marks an alert reviewed (audited; once).
#[utoipa::path(post, path = "/api/v1/referent/alerts/{id}/review", tag = "agent",
    params(("id" = String, Path,)),
    responses((status = 200, body = crate::service::alerts::AlertsView), (status = 403, description = "`referent_only`", body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn review_alert(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> AppResult<Response> {
    Ok(audited_json(
        crate::service::alerts::review(&state, &user.caller(&rid), &id, state.clock.now()).await?,
    ))
}

/// The référent sets the structure's opening hours and burst limit.
#[utoipa::path(put, path = "/api/v1/referent/structure/alert-rules", tag = "agent", request_body = crate::service::alerts::AlertRulesRequest,
    responses((status = 200, body = crate::service::alerts::AlertsView), (status = 403, description = "`referent_only`", body = crate::error::ErrorBody), (status = 422, description = "`invalid_alert_rules`", body = crate::error::ErrorBody)))]
pub async fn set_alert_rules(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    ApiJson(body): ApiJson<crate::service::alerts::AlertRulesRequest>,
) -> AppResult<Response> {
    Ok(audited_json(
        crate::service::alerts::set_rules(&state, &user.caller(&rid), body, state.clock.now())
            .await?,
    ))
}
