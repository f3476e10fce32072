//! The register of processing (public) and a resident's consents: give,
//! refuse, withdraw, history, receipts.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::domain::consent::{GiveRequest, parse_until};
use crate::domain::purpose::Purpose;
use crate::error::{AppError, AppResult};
use crate::http::ApiJson;
use crate::http::audit::{RequestId, own_data, with_entry};
use crate::http::session::CurrentUser;
use crate::service::consents::{self, Actor, ConsentOutcome, ConsentView, Decision};

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

#[derive(Serialize, ToSchema)]
pub struct HistoryEvent {
    pub state: String,
    pub categories: Vec<String>,
    pub valid_until: Option<i64>,
    pub notice_version: String,
    /// `resident`, or `aidant` when recorded under a mandate.
    pub recorded_by: String,
    pub structure_id: Option<String>,
    pub audit_index: i64,
    pub at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct ConsentWithHistory {
    #[serde(flatten)]
    pub consent: ConsentView,
    pub history: Vec<HistoryEvent>,
}

#[derive(Serialize, ToSchema)]
pub struct MyConsents {
    pub consents: Vec<ConsentWithHistory>,
}

/// My consents: current state of each, and the full history.
#[utoipa::path(get, path = "/api/v1/me/consents", tag = "resident",
    responses((status = 200, body = MyConsents), (status = 403, body = crate::error::ErrorBody)))]
pub async fn my_consents(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    let entry = own_data(&state, &user, &rid, "consent.read", None).await?;
    let now = state.clock.now();
    let mut out = Vec::new();
    for row in state.store.consents_of(&user.actor_id).await? {
        let history = state
            .store
            .consent_events(&row.id)
            .await?
            .into_iter()
            .map(|e| HistoryEvent {
                state: e.state,
                categories: consents::split_categories(&e.categories),
                valid_until: e.valid_until,
                notice_version: e.notice_version,
                recorded_by: e.actor_role,
                structure_id: e.structure_id,
                audit_index: e.audit_index,
                at: e.created_at,
            })
            .collect();
        out.push(ConsentWithHistory {
            consent: consents::view(&row, now)?,
            history,
        });
    }
    Ok(with_entry(entry, Json(MyConsents { consents: out })))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    Given,
    Refused,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequest {
    /// A purpose id from `GET /api/v1/purposes`.
    pub purpose: String,
    pub decision: DecisionKind,
    /// Subset of the purpose's categories (default: all of them).
    pub categories: Option<Vec<String>>,
    /// End of the consent: `YYYY-MM-DD` or seconds since the Unix epoch
    /// (default and maximum: the purpose's maximum duration).
    #[schema(value_type = Option<String>)]
    pub until: Option<serde_json::Value>,
    /// Required (true) for special-category purposes (GDPR art. 9).
    #[serde(default)]
    pub explicit: bool,
}

fn actor(user: &CurrentUser, rid: &RequestId) -> Actor {
    Actor {
        id: user.actor_id.clone(),
        role: user.role,
        structure_id: None,
        request_id: rid.0.clone(),
    }
}

/// Only the resident decides in their own space (aidants act through
/// mandates); a refusal is recorded like any other decision.
async fn resident_only(
    state: &AppState,
    user: &CurrentUser,
    rid: &RequestId,
    action: &str,
) -> AppResult<()> {
    let req = crate::service::access::AccessRequest {
        own: true,
        resident_id: Some(&user.actor_id),
        request_id: rid.0.clone(),
        ..crate::service::access::AccessRequest::new(&user.actor_id, user.role, action)
    };
    let (verdict, facts) = crate::service::access::evaluate(state, &req).await?;
    match verdict {
        // The consent registry records the decision itself as this action.
        crate::domain::access::Verdict::Allow(_) => Ok(()),
        deny => crate::service::access::record(state, req, &deny, &facts)
            .await
            .map(|_| ()),
    }
}

/// The consent decision a request asks for.
pub fn decision_of(req: &ConsentRequest) -> AppResult<Decision> {
    Ok(match req.decision {
        DecisionKind::Refused => Decision::Refuse,
        DecisionKind::Given => {
            let until = match &req.until {
                None => None,
                Some(v) => Some(parse_until(v).ok_or_else(|| {
                    AppError::unprocessable(
                        "invalid_until",
                        "`until` is a date YYYY-MM-DD or seconds since the Unix epoch",
                    )
                })?),
            };
            Decision::Give(GiveRequest {
                categories: req.categories.clone(),
                until,
                explicit: req.explicit,
            })
        }
    })
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
    resident_only(&state, &user, &rid, "consent.give").await?;
    let decision = decision_of(&req)?;
    let outcome = consents::decide(
        &state,
        &actor(&user, &rid),
        &user.actor_id,
        &req.purpose,
        decision,
    )
    .await?;
    Ok(Json(outcome))
}

async fn own_consent(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
) -> AppResult<crate::storage::ConsentRow> {
    match state.store.find_consent_by_id(id).await? {
        Some(row) if row.resident_id == user.actor_id => Ok(row),
        // Someone else's consent is indistinguishable from none.
        _ => Err(AppError::NotFound),
    }
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
    resident_only(&state, &user, &rid, "consent.withdraw").await?;
    let row = own_consent(&state, &user, &id).await?;
    let outcome = consents::decide(
        &state,
        &actor(&user, &rid),
        &user.actor_id,
        &row.purpose,
        Decision::Withdraw,
    )
    .await?;
    Ok(Json(outcome))
}

#[derive(Serialize, ToSchema)]
pub struct Receipts {
    /// Every receipt of this consent, newest first (compact JWS, EdDSA; verify
    /// with `/.well-known/jwks.json`).
    pub receipts: Vec<String>,
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
    let entry = own_data(&state, &user, &rid, "consent.read", None).await?;
    let row = own_consent(&state, &user, &id).await?;
    let receipts = state
        .store
        .consent_events(&row.id)
        .await?
        .into_iter()
        .map(|e| e.receipt)
        .collect();
    Ok(with_entry(entry, Json(Receipts { receipts })))
}
