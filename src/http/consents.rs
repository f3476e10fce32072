//! The register of processing (public) and a resident's consents: give,
//! refuse, withdraw, history, receipts.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::domain::ConsentId;
use crate::domain::purpose::Purpose;
use crate::error::AppResult;
use crate::http::ApiJson;
use crate::http::audit::{RequestId, audited_json};
use crate::http::session::CurrentUser;
use crate::service::consents::{
    self, ConsentOutcome, ConsentRequest, MyConsents, Receipts, decision_of,
};

#[derive(Serialize, ToSchema)]
pub struct PurposesRegister {
    /// Plain-language reminder: purposes resting on a public task never ask
    /// for consent, and refusing a consent purpose never affects them.
    pub notice_fr: &'static str,
    pub notice_en: &'static str,
    pub purposes: Vec<Purpose>,
}

/// The register of processing (GDPR art. 30), public.
#[utoipa::path(get, path = "/api/v1/purposes", tag = "public",
    responses((status = 200, body = PurposesRegister)))]
pub async fn purposes(State(state): State<AppState>) -> Json<PurposesRegister> {
    Json(PurposesRegister {
        notice_fr: "Les traitements fondés sur une mission de service public ne demandent pas votre accord ; refuser ou retirer un consentement ne change jamais votre accès à un service public.",
        notice_en: "Processing based on a public task does not ask for your consent; refusing or withdrawing a consent never affects your access to a public service.",
        purposes: state.register.all().cloned().collect(),
    })
}

/// My consents: current state of each, and the full history.
#[utoipa::path(get, path = "/api/v1/me/consents", tag = "resident",
    responses((status = 200, body = MyConsents), (status = 403, body = crate::error::ErrorBody)))]
pub async fn my_consents(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    let now = state.clock.now();
    Ok(audited_json(
        consents::my_consents(&state, &user.caller(&rid), now).await?,
    ))
}

/// Gives or refuses consent to a purpose; answers the consent and its
/// signed receipt.
#[utoipa::path(post, path = "/api/v1/me/consents", tag = "resident",
    request_body = ConsentRequest,
    responses((status = 200, body = ConsentOutcome),
              (status = 409, description = "`already_given`", body = crate::error::ErrorBody),
              (status = 422, description = "`unknown_purpose`, `consent_not_applicable`, `categories_outside_purpose`, `duration_above_maximum`, `invalid_until`, `explicit_consent_required`", body = crate::error::ErrorBody)))]
pub async fn decide(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    ApiJson(req): ApiJson<ConsentRequest>,
) -> AppResult<Json<ConsentOutcome>> {
    let outcome = consents::decide_own(&state, &user.caller(&rid), &req.purpose, || {
        decision_of(&req)
    })
    .await?;
    Ok(Json(outcome))
}

/// Withdraws a consent: effective at once, never retroactive.
#[utoipa::path(post, path = "/api/v1/me/consents/{id}/withdraw", tag = "resident",
    params(("id" = String, Path,)),
    responses((status = 200, body = ConsentOutcome),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "`not_given`", body = crate::error::ErrorBody)))]
pub async fn withdraw(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> AppResult<Json<ConsentOutcome>> {
    Ok(Json(
        consents::withdraw_own(&state, &user.caller(&rid), consent_id(&id).as_ref()).await?,
    ))
}

/// The signed receipts of one of my consents.
#[utoipa::path(get, path = "/api/v1/me/consents/{id}/receipts", tag = "resident",
    params(("id" = String, Path,)),
    responses((status = 200, body = Receipts), (status = 404, body = crate::error::ErrorBody)))]
pub async fn receipts(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> AppResult<Response> {
    Ok(audited_json(
        consents::receipts(&state, &user.caller(&rid), consent_id(&id).as_ref()).await?,
    ))
}

/// The consent a path names, parsed once; a malformed id names none, and
/// the use case answers it as an unknown one.
fn consent_id(raw: &str) -> Option<ConsentId> {
    ConsentId::parse(raw).ok()
}
