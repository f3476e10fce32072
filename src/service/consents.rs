//! Consent decisions: the rules of `domain::consent` applied to the stored
//! state, recorded in the audit log, answered with a signed receipt.
//!
//! Order matters: the decision is audited first (its leaf index goes into
//! the receipt), then the receipt is signed, then event and current state
//! are stored in one transaction. Nothing is answered before all three.

use crate::error::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::AuditRecord;
use crate::domain::category::Category;
use crate::domain::consent::{self, ConsentState, GiveRequest, Recorded, parse_until};
use crate::domain::purpose::Purpose;
use crate::domain::{ConsentId, Role, Timestamp};
use crate::error::{AppError, AppResult};
use crate::service::access::own_data;
use crate::service::{Audited, Caller};
use crate::storage::{ConsentEventRow, ConsentForDecision, ConsentRow};

/// Who records a decision: the resident, or an aidant under a mandate.
#[derive(Clone, Debug)]
pub struct Actor {
    pub id: String,
    pub role: Role,
    /// The aidant's structure, when an aidant acts under a mandate.
    pub structure_id: Option<String>,
    pub request_id: Option<String>,
}

impl Actor {
    /// An audit record of this actor doing `action` at `now`.
    fn record(&self, action: &str, now: Timestamp) -> AuditRecord {
        AuditRecord::new(&self.id, self.role.as_str(), action, now).request(&self.request_id)
    }
}

#[derive(Clone, Debug)]
pub enum Decision {
    Give(GiveRequest),
    Refuse,
    Withdraw,
}

impl Decision {
    fn action(&self) -> &'static str {
        match self {
            Decision::Give(_) => "consent.give",
            Decision::Refuse => "consent.refuse",
            Decision::Withdraw => "consent.withdraw",
        }
    }
}

/// A consent as the resident sees it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ConsentView {
    pub id: String,
    pub purpose: String,
    /// Effective state at the time of the answer (`expired` is derived).
    pub state: ConsentState,
    pub categories: Vec<String>,
    /// End of validity (seconds since the Unix epoch), if any.
    pub valid_until: Option<i64>,
    /// Version (hash) of the purpose's notice the decision was made under.
    pub notice_version: String,
    pub updated_at: i64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ConsentOutcome {
    pub consent: ConsentView,
    /// Compact JWS (EdDSA) carrying the Kantara consent-receipt fields.
    pub receipt: String,
}

/// The question every access decision asks: is there a valid consent of
/// `resident_id` for `purpose` covering `category` and, when a partner asks,
/// naming it as recipient, at `now`? One lookup on the unique
/// (resident, purpose) index. Returns the consent id.
pub async fn valid_consent(
    store: &dyn crate::storage::Store,
    purpose: &Purpose,
    resident_id: &crate::domain::ResidentId,
    category: &str,
    recipient: Option<&str>,
    now: Timestamp,
) -> AppResult<Option<String>> {
    if !consent_could_cover(purpose, category, recipient) {
        return Ok(None);
    }
    let row = store.consent_for_decision(resident_id, &purpose.id).await?;
    Ok(covering_consent(purpose, row, category, now))
}

/// Whether a consent could allow this use at all: the purpose rests on
/// consent, uses the category and, when a partner asks, names it.
pub fn consent_could_cover(purpose: &Purpose, category: &str, recipient: Option<&str>) -> bool {
    purpose.legal_basis.needs_consent()
        && purpose.covers_category(category)
        && recipient.is_none_or(|partner| purpose.names_recipient(partner))
}

/// The consent's id if the recorded (resident, purpose) consent `row`
/// covers `category` at `now` (given, not expired, under the current notice).
pub fn covering_consent(
    purpose: &Purpose,
    row: Option<ConsentForDecision>,
    category: &str,
    now: Timestamp,
) -> Option<String> {
    let row = row?;
    // A consent covers the notice it was given under: when the register's
    // text of the purpose changes (new recipients, say), it must be given again.
    if row.notice_version != purpose.notice_version {
        return None;
    }
    let consent = recorded_parts(row.state, &row.categories, row.valid_until);
    consent.covers(category, now).then(|| row.id.into_string())
}

/// A decision's categories as they are recorded: names the decision took
/// from the purpose or from the consent it changes.
fn recorded_categories(names: &[String]) -> AppResult<Vec<Category>> {
    names
        .iter()
        .map(|n| {
            Category::recorded(n).ok_or_else(|| AppError::internal("consent category malformed"))
        })
        .collect()
}

/// The names of recorded categories, as views and receipts show them.
pub fn category_names(categories: &[Category]) -> Vec<String> {
    categories.iter().map(|c| c.as_str().to_string()).collect()
}

pub fn recorded(row: &ConsentRow) -> Recorded {
    recorded_parts(row.state, &row.categories, row.valid_until)
}

fn recorded_parts(
    state: ConsentState,
    categories: &[Category],
    valid_until: Option<Timestamp>,
) -> Recorded {
    Recorded {
        state,
        categories: category_names(categories),
        valid_until,
    }
}

pub fn view(row: &ConsentRow, now: Timestamp) -> ConsentView {
    let r = recorded(row);
    ConsentView {
        id: row.id.to_string(),
        purpose: row.purpose.to_string(),
        state: r.effective(now),
        categories: r.categories,
        valid_until: row.valid_until,
        notice_version: row.notice_version.clone(),
        updated_at: row.updated_at,
    }
}

fn consent_error(e: consent::ConsentError) -> AppError {
    e.into()
}

pub fn purpose<'a>(state: &'a AppState, id: &str) -> AppResult<&'a Purpose> {
    state.register.get(id).ok_or_else(|| {
        ErrorCode::UnknownPurpose.with(format!(
            "no purpose `{}` in the register",
            id.chars().take(60).collect::<String>()
        ))
    })
}

/// Applies one decision of (or for) `resident_id` about `purpose`.
pub async fn decide(
    state: &AppState,
    actor: &Actor,
    resident_id: &crate::domain::ResidentId,
    purpose: &Purpose,
    decision: Decision,
) -> AppResult<ConsentOutcome> {
    let now = state.clock.now();
    let keys = state.vault()?.keys().current();
    let current_row = state.store.find_consent(resident_id, &purpose.id).await?;
    let current = current_row.as_ref().map(recorded);
    let on_behalf = actor.id != resident_id.as_str();
    if on_behalf {
        refuse_beyond_mandate(
            state,
            actor,
            resident_id,
            purpose,
            &decision,
            current_row.as_ref(),
            now,
        )
        .await?;
    }
    let next = match &decision {
        Decision::Give(req) => consent::give(purpose, req, now),
        Decision::Refuse => consent::refuse(purpose, current.as_ref(), now),
        Decision::Withdraw => consent::withdraw(current.as_ref(), now),
    }
    .map_err(consent_error)?;

    let audit_index = state
        .audit
        .record(
            actor
                .record(decision.action(), now)
                .on_behalf_of(on_behalf.then_some(resident_id))
                .structure(&actor.structure_id)
                .resident(resident_id)
                .purpose(&purpose.id)
                .legal_basis(purpose.legal_basis.as_str())
                .allow(if on_behalf {
                    "mandate"
                } else {
                    "resident_decision"
                }),
        )
        .await?;

    let consent_id = current_row
        .as_ref()
        .map(|c| c.id.clone())
        .unwrap_or_else(|| ConsentId::from_uuid(uuid::Uuid::new_v4()));
    let event_id = uuid::Uuid::new_v4().to_string();
    let claims = receipt_claims(
        state,
        purpose,
        &keys,
        resident_id,
        consent_id.as_str(),
        &event_id,
        &next,
        audit_index,
        actor,
        now,
    );
    let receipt = crate::crypto::jws::sign(&keys, &claims)
        .map_err(|e| AppError::internal(format!("receipt signing: {e}")))?;

    let row = ConsentRow {
        id: consent_id.clone(),
        resident_id: resident_id.clone(),
        purpose: purpose.id.clone(),
        state: next.state,
        categories: recorded_categories(&next.categories)?,
        valid_until: next.valid_until,
        notice_version: purpose.notice_version.clone(),
        updated_at: now,
        seq: current_row.as_ref().map_or(1, |c| c.seq + 1),
    };
    let event = ConsentEventRow {
        id: event_id,
        consent_id,
        purpose: purpose.id.clone(),
        state: row.state,
        categories: row.categories.clone(),
        valid_until: row.valid_until,
        notice_version: row.notice_version.clone(),
        actor_id: actor.id.clone(),
        actor_role: actor.role,
        structure_id: actor.structure_id.clone(),
        audit_index: audit_index as i64,
        receipt: receipt.clone(),
        created_at: now,
    };
    let expected = current_row.as_ref().map(|c| c.seq);
    match state
        .store
        .record_consent_event(&row, expected, &event)
        .await
    {
        Ok(()) => {}
        Err(crate::storage::StorageError::Conflict(_)) => {
            // Another decision about this consent landed first: this one is
            // void, and the log says so next to its "allow".
            state
                .audit
                .record(
                    actor
                        .record(decision.action(), now)
                        .resident(resident_id)
                        .purpose(&purpose.id)
                        .deny("concurrent_update"),
                )
                .await?;
            return Err(ErrorCode::ConcurrentUpdate.into());
        }
        Err(e) => return Err(e.into()),
    }
    // A purpose whose withdrawal erases: what it alone held goes now.
    if matches!(decision, Decision::Withdraw) {
        crate::service::rights::erase_after_withdrawal(state, resident_id, &purpose.id, now)
            .await?;
    }
    Ok(ConsentOutcome {
        consent: view(&row, now),
        receipt,
    })
}

/// What an aidant may never do for a resident, whatever the route: give
/// explicit consent to a special-category purpose (the resident's own act),
/// or replace a decision the resident took themself by another give or
/// refusal (a withdrawal stays possible: withdrawing must be as easy as
/// giving, art. 7(3)). Refusals are audited before they are returned.
async fn refuse_beyond_mandate(
    state: &AppState,
    actor: &Actor,
    resident_id: &crate::domain::ResidentId,
    purpose: &Purpose,
    decision: &Decision,
    current: Option<&ConsentRow>,
    now: Timestamp,
) -> AppResult<()> {
    let explicit = purpose.special_category
        || purpose.legal_basis == crate::domain::purpose::LegalBasis::ExplicitConsent;
    let reason = if explicit && !matches!(decision, Decision::Withdraw) {
        Some(ErrorCode::ExplicitConsentResidentOnly)
    } else if matches!(decision, Decision::Withdraw) {
        None
    } else {
        match current {
            Some(row) => {
                // Any give or refusal the resident made themself stands
                // against an aidant (not only the latest event: a later
                // aidant's act must not open the way).
                let events = state.store.consent_events(&row.id).await?;
                events
                    .iter()
                    .any(|e| {
                        e.actor_role == Role::Resident
                            && matches!(e.state, ConsentState::Given | ConsentState::Refused)
                    })
                    .then_some(ErrorCode::ResidentDecisionStands)
            }
            None => None,
        }
    };
    let Some(reason) = reason else {
        return Ok(());
    };
    state
        .audit
        .record(
            actor
                .record(decision.action(), now)
                .on_behalf_of(resident_id)
                .structure(&actor.structure_id)
                .resident(resident_id)
                .purpose(&purpose.id)
                .legal_basis(purpose.legal_basis.as_str())
                .deny(reason.code()),
        )
        .await?;
    Err(reason.into())
}

/// The Kantara Initiative Consent Receipt v1.1 fields, plus the DPV state,
/// the notice version and the audit leaf index.
#[allow(clippy::too_many_arguments)]
pub(crate) fn receipt_claims(
    state: &AppState,
    purpose: &Purpose,
    keys: &crate::crypto::KeySet,
    resident_id: &crate::domain::ResidentId,
    consent_id: &str,
    event_id: &str,
    next: &Recorded,
    audit_index: u64,
    actor: &Actor,
    now: Timestamp,
) -> Value {
    let public = state.config.public_base();
    let special: Vec<&String> = if purpose.special_category {
        next.categories
            .iter()
            .filter(|c| {
                state
                    .categories
                    .category(c)
                    .ok()
                    .and_then(|c| state.categories.def(&c).map(|d| d.special))
                    .unwrap_or(false)
            })
            .collect()
    } else {
        Vec::new()
    };
    let termination = match (next.state, next.valid_until) {
        (ConsentState::Given, Some(until)) => {
            format!("valid until {until} (Unix time) or until withdrawn, whichever comes first")
        }
        (ConsentState::Withdrawn, _) => "withdrawn; no processing from now on".to_string(),
        _ => "no consent".to_string(),
    };
    json!({
        "version": "KI-CR-v1.1.0",
        "jurisdiction": "FR",
        "consentTimestamp": now,
        "collectionMethod": if actor.id == resident_id.as_str() { "resident's own space (coffre)" } else { "aidant under a mandate, resident present (coffre)" },
        "consentReceiptID": event_id,
        "language": "fr",
        "piiPrincipalId": keys.pseudonym("consent-receipt", resident_id.as_str().as_bytes()),
        "piiControllers": [{
            "piiController": purpose.controller,
            "onBehalf": false,
            "contact": "Délégué à la protection des données",
            "address": public,
            "email": "dpo@coffre.example",
            "phone": "",
        }],
        "policyUrl": format!("{public}/api/v1/purposes#{}", purpose.id),
        "services": [{
            "service": purpose.title_fr,
            "purposes": [{
                "purpose": purpose.title_fr,
                "purposeCategory": [purpose.dpv_purpose],
                "consentType": if purpose.special_category { "EXPLICIT" } else { "EXPRESSED" },
                "piiCategory": next.categories,
                "primaryPurpose": true,
                "termination": termination,
                "thirdPartyDisclosure": !purpose.recipients.is_empty(),
                "thirdPartyName": purpose.recipients.join(", "),
            }],
        }],
        "sensitive": purpose.special_category,
        "spiCat": special,
        "iss": public,
        "iat": now,
        "consent_id": consent_id,
        "purpose_id": purpose.id,
        "state": next.state.as_str(),
        "dpv_state": next.state.dpv_iri(),
        "notice_version": purpose.notice_version,
        "audit_leaf_index": audit_index,
        "recorded_by": actor.role.as_str(),
    })
}

// --- the resident's own consents ---------------------------------------------

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

/// The consent decision a request asks for.
pub fn decision_of(req: &ConsentRequest) -> AppResult<Decision> {
    Ok(match req.decision {
        DecisionKind::Refused => Decision::Refuse,
        DecisionKind::Given => {
            let until = match &req.until {
                None => None,
                Some(v) => Some(parse_until(v).ok_or_else(|| {
                    ErrorCode::InvalidUntil
                        .with("`until` is a date YYYY-MM-DD or seconds since the Unix epoch")
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

#[derive(Serialize, ToSchema)]
pub struct Receipts {
    /// Every receipt of this consent, newest first (compact JWS, EdDSA; verify
    /// with `/.well-known/jwks.json`).
    pub receipts: Vec<String>,
}

/// My consents: the current state of each, and the full history.
pub async fn my_consents(
    state: &AppState,
    caller: &Caller,
    now: Timestamp,
) -> AppResult<Audited<MyConsents>> {
    let entry = own_data(state, caller, "consent.read", None).await?;
    let me = caller.resident_id()?;
    let mut out = Vec::new();
    for row in state.store.consents_of(&me).await? {
        let history = state
            .store
            .consent_events(&row.id)
            .await?
            .into_iter()
            .map(|e| HistoryEvent {
                state: e.state.as_str().to_string(),
                categories: category_names(&e.categories),
                valid_until: e.valid_until,
                notice_version: e.notice_version,
                recorded_by: e.actor_role.as_str().to_string(),
                structure_id: e.structure_id,
                audit_index: e.audit_index,
                at: e.created_at,
            })
            .collect();
        out.push(ConsentWithHistory {
            consent: view(&row, now),
            history,
        });
    }
    Ok(Audited::new(entry, MyConsents { consents: out }))
}

/// Only the resident decides in their own space (aidants act through
/// mandates); a refusal is recorded like any other decision, an allowed
/// one is recorded by the consent registry as the decision itself.
async fn resident_only(state: &AppState, caller: &Caller, action: &str) -> AppResult<()> {
    let req = crate::service::access::AccessRequest {
        own: true,
        resident_id: Some(&caller.actor_id),
        request_id: caller.request_id.clone(),
        ..crate::service::access::AccessRequest::new(&caller.actor_id, caller.role, action)
    };
    let (verdict, facts) = crate::service::access::evaluate(state, &req).await?;
    match verdict {
        crate::domain::access::Verdict::Allow(_) => Ok(()),
        deny => crate::service::access::record(state, req, &deny, &facts)
            .await
            .map(|_| ()),
    }
}

fn own_actor(caller: &Caller) -> Actor {
    Actor {
        id: caller.actor_id.clone(),
        role: caller.role,
        structure_id: None,
        request_id: caller.request_id.clone(),
    }
}

/// The resident gives or refuses consent to a purpose; answers the consent
/// and its signed receipt. `decision` is built by the caller from its
/// input only after the resident's right to decide was checked: pass it
/// as a closure so a malformed request by someone else is refused first.
pub async fn decide_own(
    state: &AppState,
    caller: &Caller,
    purpose_id: &str,
    decision: impl FnOnce() -> AppResult<Decision>,
) -> AppResult<ConsentOutcome> {
    resident_only(state, caller, "consent.give").await?;
    let me = caller.resident_id()?;
    let decision = decision()?;
    let purpose = purpose(state, purpose_id)?;
    decide(state, &own_actor(caller), &me, purpose, decision).await
}

/// One of the caller's own consents; someone else's is indistinguishable
/// from none.
async fn own_consent(state: &AppState, caller: &Caller, id: &ConsentId) -> AppResult<ConsentRow> {
    match state.store.find_consent_by_id(id).await? {
        Some(row) if row.resident_id == *caller.actor_id => Ok(row),
        _ => Err(AppError::NotFound),
    }
}

/// The resident withdraws a consent: effective at once, never retroactive.
/// `id` is `None` when the path could name no consent (a malformed id): it
/// is then `not_found`, after the caller's right was checked and recorded,
/// as an unknown consent is.
pub async fn withdraw_own(
    state: &AppState,
    caller: &Caller,
    id: Option<&ConsentId>,
) -> AppResult<ConsentOutcome> {
    resident_only(state, caller, "consent.withdraw").await?;
    let row = own_consent(state, caller, id.ok_or(AppError::NotFound)?).await?;
    let purpose = purpose(state, row.purpose.as_str())?;
    decide(
        state,
        &own_actor(caller),
        &row.resident_id,
        purpose,
        Decision::Withdraw,
    )
    .await
}

/// One of the caller's own consents once withdrawn (the page that says
/// what a withdrawal means); anything else is `not_found`.
pub async fn own_withdrawn(
    state: &AppState,
    caller: &Caller,
    id: &ConsentId,
) -> AppResult<ConsentRow> {
    let row = own_consent(state, caller, id).await?;
    if row.state == ConsentState::Withdrawn {
        Ok(row)
    } else {
        Err(AppError::NotFound)
    }
}

/// The signed receipts of one of the caller's consents. `id` as for
/// [`withdraw_own`].
pub async fn receipts(
    state: &AppState,
    caller: &Caller,
    id: Option<&ConsentId>,
) -> AppResult<Audited<Receipts>> {
    let entry = own_data(state, caller, "consent.read", None).await?;
    let row = own_consent(state, caller, id.ok_or(AppError::NotFound)?).await?;
    let receipts = state
        .store
        .consent_events(&row.id)
        .await?
        .into_iter()
        .map(|e| e.receipt)
        .collect();
    Ok(Audited::new(entry, Receipts { receipts }))
}
