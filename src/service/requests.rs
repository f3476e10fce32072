//! Requests to the DPO (GDPR arts. 12, 15–22): a resident makes one, the
//! DPO extends or closes it within the legal deadlines; the register of
//! processing (art. 30) the DPO keeps; the art. 19 notices partners take.

use crate::error::ErrorCode;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::AppState;
use crate::domain::rights::{RightsRequestKind, RightsRequestState};
use crate::domain::{RightsRequestId, Timestamp};
use crate::error::{AppError, AppResult};
use crate::service::access::{own_data, role_action};
use crate::service::rights::{closing_reason, is_late, legal_deadline};
use crate::service::{Audited, Caller};
use crate::storage::{RightsEventRow, RightsRequestRow};

#[derive(Serialize, ToSchema)]
pub struct RightsRequestView {
    pub id: String,
    pub resident_id: String,
    pub kind: String,
    pub purpose: Option<String>,
    /// received, extended, granted or refused.
    pub state: String,
    pub created_at: i64,
    pub due_at: i64,
    /// Still open after its due date.
    pub late: bool,
    pub history: Vec<RightsEventView>,
}

#[derive(Serialize, ToSchema)]
pub struct RightsEventView {
    pub state: String,
    pub by: String,
    /// For an extension, the reason given to the resident.
    pub reason: Option<String>,
    pub at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct RightsRequests {
    pub requests: Vec<RightsRequestView>,
}

/// The kinds of request a resident may make.
pub const KINDS: [&str; 7] = [
    "erasure",
    "objection",
    "rectification",
    "restriction",
    "access",
    "portability",
    "other",
];

pub(crate) async fn request_view(
    state: &AppState,
    r: RightsRequestRow,
    now: Timestamp,
) -> AppResult<RightsRequestView> {
    let history = state
        .store
        .rights_request_events(&r.id)
        .await?
        .into_iter()
        .map(|e| RightsEventView {
            state: e.state.as_str().to_string(),
            by: e.actor_role.as_str().to_string(),
            reason: e.reason,
            at: e.at,
        })
        .collect();
    Ok(RightsRequestView {
        late: is_late(r.state, r.due_at, now),
        id: r.id.into_string(),
        resident_id: r.resident_id.into_string(),
        kind: r.kind.as_str().to_string(),
        purpose: r.purpose.map(crate::domain::PurposeId::into_string),
        state: r.state.as_str().to_string(),
        created_at: r.created_at,
        due_at: r.due_at,
        history,
    })
}

/// Makes a request that needs the DPO (e.g. an erasure a legal obligation
/// may prevent, an objection to review). Due one month after receipt.
pub async fn new_request(
    state: &AppState,
    caller: &Caller,
    kind: String,
    purpose: Option<String>,
    now: Timestamp,
) -> AppResult<Audited<RightsRequestView>> {
    let Some(kind) = RightsRequestKind::parse(&kind) else {
        return Err(
            ErrorCode::UnknownRequestKind.with(format!("kind: one of {}", KINDS.join(", ")))
        );
    };
    let purpose = match purpose {
        Some(p) => Some(
            state
                .register
                .get(&p)
                .ok_or_else(|| AppError::from(ErrorCode::UnknownPurpose))?
                .id
                .clone(),
        ),
        None => None,
    };
    let entry = own_data(state, caller, "rights.request", None).await?;
    let row = RightsRequestRow {
        id: RightsRequestId::from_uuid(uuid::Uuid::new_v4()),
        resident_id: caller.resident_id()?,
        kind,
        purpose,
        state: RightsRequestState::Received,
        created_at: now,
        due_at: legal_deadline(now, 1),
        updated_at: now,
    };
    let event = RightsEventRow {
        request_id: row.id.clone(),
        seq: 1,
        state: RightsRequestState::Received,
        actor_id: caller.actor_id.clone(),
        actor_role: crate::domain::Role::Resident,
        reason: None,
        at: now,
    };
    state.store.insert_rights_request(&row, &event).await?;
    Ok(Audited::new(entry, request_view(state, row, now).await?))
}

/// My requests, with every state change.
pub async fn my_requests(
    state: &AppState,
    caller: &Caller,
    now: Timestamp,
) -> AppResult<Audited<RightsRequests>> {
    let entry = own_data(state, caller, "rights.read", None).await?;
    let me = caller.resident_id()?;
    let mut requests = Vec::new();
    for r in state.store.rights_requests_of(&me).await? {
        requests.push(request_view(state, r, now).await?);
    }
    Ok(Audited::new(entry, RightsRequests { requests }))
}

/// Every request, open ones first by due date, late ones flagged (the
/// policy gives `rights.manage` to the DPO only).
pub async fn all_requests(
    state: &AppState,
    caller: &Caller,
    now: Timestamp,
) -> AppResult<Audited<RightsRequests>> {
    let entry = role_action(state, caller, "rights.manage").await?;
    let mut requests = Vec::new();
    for r in state.store.all_rights_requests(1000).await? {
        requests.push(request_view(state, r, now).await?);
    }
    Ok(Audited::new(entry, RightsRequests { requests }))
}

/// Extends a request by two months (GDPR art. 12(3)), with the reason the
/// resident sees: `complexity` or `number_of_requests`. `id` is `None` when
/// the path could name no request (a malformed id): it is then `not_found`
/// where an unknown request is, after the checks that come first.
pub async fn extend(
    state: &AppState,
    caller: &Caller,
    id: Option<&RightsRequestId>,
    reason: String,
    now: Timestamp,
) -> AppResult<Audited<RightsRequestView>> {
    if !matches!(reason.as_str(), "complexity" | "number_of_requests") {
        return Err(ErrorCode::InvalidReason
            .with("reason: `complexity` or `number_of_requests` (GDPR art. 12(3))"));
    }
    transition(
        state,
        caller,
        id,
        RightsRequestState::Extended,
        Some(reason),
        now,
    )
    .await
}

/// Closes a request: `granted`, or `refused` with one of
/// [`crate::service::rights::REFUSAL_REASONS`]. `id` as for [`extend`].
pub async fn close(
    state: &AppState,
    caller: &Caller,
    id: Option<&RightsRequestId>,
    outcome: String,
    reason: Option<String>,
    now: Timestamp,
) -> AppResult<Audited<RightsRequestView>> {
    let to = match outcome.as_str() {
        "granted" => RightsRequestState::Granted,
        "refused" => RightsRequestState::Refused,
        _ => {
            return Err(ErrorCode::InvalidOutcome.with("outcome: `granted` or `refused`"));
        }
    };
    let reason = closing_reason(&outcome, reason)?;
    transition(state, caller, id, to, reason, now).await
}

/// Who answers, as a message to the resident names them.
const DPO_NAME: &str = "DPO (délégué à la protection des données / data protection officer)";

/// The request's state machine: received → extended (within the first
/// month, once) → granted | refused; one winner under concurrency.
async fn transition(
    state: &AppState,
    caller: &Caller,
    id: Option<&RightsRequestId>,
    to: RightsRequestState,
    reason: Option<String>,
    now: Timestamp,
) -> AppResult<Audited<RightsRequestView>> {
    let entry = role_action(state, caller, "rights.manage").await?;
    let id = id.ok_or(AppError::NotFound)?;
    let r = state
        .store
        .find_rights_request(id)
        .await?
        .ok_or(AppError::NotFound)?;
    use RightsRequestState::{Extended, Granted, Received, Refused};
    let (from, due) = match (r.state, to) {
        // An extension is given within the first month, once.
        (Received, Extended) if now <= r.due_at => (Received, legal_deadline(r.created_at, 3)),
        (Received, Extended) => {
            return Err(ErrorCode::ExtensionTooLate.into());
        }
        (Received | Extended, Granted | Refused) => (r.state, r.due_at),
        _ => {
            return Err(ErrorCode::InvalidTransition.with(format!("{} → {to}", r.state)));
        }
    };
    let event = RightsEventRow {
        request_id: r.id.clone(),
        seq: 0,
        state: to,
        actor_id: caller.actor_id.clone(),
        actor_role: caller.role,
        reason,
        at: now,
    };
    // The resident is told, with the change (the outbox).
    let notices = [crate::storage::OutboxMessage::new(
        if to == Extended {
            crate::domain::notice::NoticeEvent::RightsExtended
        } else {
            crate::domain::notice::NoticeEvent::RightsAnswered
        },
        &r.resident_id,
        r.id.as_str(),
        DPO_NAME,
        now,
    )];
    if !state
        .store
        .update_rights_request(&r.id, from, to, due, &event, &notices)
        .await?
    {
        return Err(ErrorCode::ConcurrentUpdate.into());
    }
    state
        .audit
        .record(
            caller
                .record(&format!("rights.{to}"), now)
                .resident(&r.resident_id)
                .allow("dpo"),
        )
        .await?;
    let r = state
        .store
        .find_rights_request(id)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(Audited::new(entry, request_view(state, r, now).await?))
}

/// The register of processing (art. 30), as the DPO keeps it.
pub async fn register(state: &AppState, caller: &Caller) -> AppResult<Audited<Value>> {
    let entry = role_action(state, caller, "register.read").await?;
    let purposes: Vec<Value> = state
        .register
        .all()
        .map(|p| serde_json::to_value(p).unwrap_or(Value::Null))
        .collect();
    Ok(Audited::new(
        entry,
        json!({"controller_register": "GDPR art. 30", "purposes": purposes}),
    ))
}

// --- art. 19 notifications ---------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct Notifications {
    pub notifications: Vec<NotificationView>,
}

#[derive(Serialize, ToSchema)]
pub struct NotificationView {
    pub id: String,
    /// Your pseudonym of the resident.
    pub pseudonym: String,
    /// rectification, erasure or restriction.
    pub kind: String,
    pub category: Option<String>,
    pub created_at: i64,
}

/// A partner takes the rectifications, erasures and restrictions of
/// residents whose data it read (art. 19), under its pseudonyms.
pub async fn take_notifications(
    state: &AppState,
    partner: &Caller,
    now: Timestamp,
) -> AppResult<Audited<Notifications>> {
    // Taking the notifications tells the partner which of its pseudonyms
    // were rectified, erased or restricted: audited before, fail closed.
    let entry = state
        .audit
        .record(
            partner
                .record("notifications.read", now)
                .allow("art19_notice"),
        )
        .await?;
    let rows = match partner.partner_id() {
        Some(id) => state.store.take_notifications(&id, now).await?,
        None => Vec::new(),
    };
    Ok(Audited::new(
        entry,
        Notifications {
            notifications: rows
                .into_iter()
                .map(|n| NotificationView {
                    id: n.id,
                    pseudonym: n.pseudonym.into_string(),
                    kind: n.kind.as_str().to_string(),
                    category: n.category.map(|c| c.as_str().to_string()),
                    created_at: n.created_at,
                })
                .collect(),
        },
    ))
}
