//! Residents' rights over HTTP: the export (arts. 15 and 20), restriction
//! (art. 18), objection (art. 21), requests to the DPO with their deadlines,
//! recipients' notifications (art. 19) and the DPO's register (art. 30).

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::{AuditEntry, AuditRecord};
use crate::domain::Role;
use crate::error::{AppError, AppResult};
use crate::http::ApiJson;
use crate::http::audit::{RequestId, own_data, with_entry};
use crate::http::partner::Partner;
use crate::http::session::CurrentUser;
use crate::service::access::{AccessRequest, decide};
use crate::service::rights::{is_late, legal_deadline};
use crate::storage::{RightsEventRow, RightsRequestRow};

// --- restriction and objection -------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestrictionRequest {
    /// true: restrict processing (data kept, not used); false: lift it.
    pub restricted: bool,
}

#[derive(Serialize, ToSchema)]
pub struct RightsView {
    /// Processing restricted (art. 18) since this time, if it is.
    pub restricted_since: Option<i64>,
    /// Purposes objected to (art. 21), with the time of the objection.
    pub objections: Vec<Objection>,
    /// Partners told about the change (art. 19), when there was one.
    pub notified_partners: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Recipients {
    /// Partners that received my data: a read, or an extract I was in.
    pub partners: Vec<String>,
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
    let entry = own_data(&state, &user, &rid, "rights.read", None).await?;
    let partners = crate::service::rights::recipients_of(&state, &user.actor_id, None).await?;
    Ok(with_entry(
        entry,
        Json(Recipients {
            partners: partners.into_iter().collect(),
        }),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct Objection {
    pub purpose: String,
    pub since: i64,
}

async fn rights_view(
    state: &AppState,
    resident: &str,
    notified: Vec<String>,
) -> AppResult<RightsView> {
    Ok(RightsView {
        restricted_since: state.store.restricted_since(resident).await?,
        objections: state
            .store
            .objections_of(resident)
            .await?
            .into_iter()
            .map(|(purpose, since)| Objection { purpose, since })
            .collect(),
        notified_partners: notified,
    })
}

/// My restriction and objections.
#[utoipa::path(get, path = "/api/v1/me/rights", tag = "resident",
    responses((status = 200, body = RightsView), (status = 403, body = crate::error::ErrorBody)))]
pub async fn my_rights(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    let entry = own_data(&state, &user, &rid, "rights.read", None).await?;
    Ok(with_entry(
        entry,
        Json(rights_view(&state, &user.actor_id, Vec::new()).await?),
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
    let entry = own_data(&state, &user, &rid, "restriction", None).await?;
    let now = state.clock.now();
    let notified = crate::service::rights::apply_with_notices(
        &state,
        &user.actor_id,
        crate::service::rights::Change::Restriction(body.restricted),
        now,
    )
    .await?
    .notified;
    Ok(with_entry(
        entry,
        Json(rights_view(&state, &user.actor_id, notified).await?),
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
    let purpose = state.register.get(&body.purpose).ok_or_else(|| {
        AppError::unprocessable("unknown_purpose", "Finalité inconnue. / Unknown purpose.")
    })?;
    if purpose.legal_basis.needs_consent() {
        return Err(AppError::unprocessable(
            "objection_not_applicable",
            "Cette finalité repose sur votre consentement : retirez-le plutôt. / This purpose rests on your consent: withdraw it instead.",
        ));
    }
    let entry = own_data(&state, &user, &rid, "objection", None).await?;
    state
        .store
        .add_objection(&user.actor_id, &purpose.id, state.clock.now())
        .await?;
    Ok(with_entry(
        entry,
        Json(rights_view(&state, &user.actor_id, Vec::new()).await?),
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
    let entry = own_data(&state, &user, &rid, "objection", None).await?;
    if !state
        .store
        .remove_objection(&user.actor_id, &purpose)
        .await?
    {
        return Err(AppError::NotFound);
    }
    Ok(with_entry(
        entry,
        Json(rights_view(&state, &user.actor_id, Vec::new()).await?),
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

const KINDS: [&str; 7] = [
    "erasure",
    "objection",
    "rectification",
    "restriction",
    "access",
    "portability",
    "other",
];

async fn request_view(
    state: &AppState,
    r: RightsRequestRow,
    now: i64,
) -> AppResult<RightsRequestView> {
    let history = state
        .store
        .rights_request_events(&r.id)
        .await?
        .into_iter()
        .map(|e| RightsEventView {
            state: e.state,
            by: e.actor_role,
            reason: e.reason,
            at: e.at,
        })
        .collect();
    Ok(RightsRequestView {
        late: is_late(&r.state, r.due_at, now),
        id: r.id,
        resident_id: r.resident_id,
        kind: r.kind,
        purpose: r.purpose,
        state: r.state,
        created_at: r.created_at,
        due_at: r.due_at,
        history,
    })
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
    if !KINDS.contains(&body.kind.as_str()) {
        return Err(AppError::unprocessable(
            "unknown_request_kind",
            format!("kind: one of {}", KINDS.join(", ")),
        ));
    }
    if let Some(p) = &body.purpose
        && state.register.get(p).is_none()
    {
        return Err(AppError::unprocessable(
            "unknown_purpose",
            "Finalité inconnue. / Unknown purpose.",
        ));
    }
    let entry = own_data(&state, &user, &rid, "rights.request", None).await?;
    let now = state.clock.now();
    let row = RightsRequestRow {
        id: uuid::Uuid::new_v4().to_string(),
        resident_id: user.actor_id.clone(),
        kind: body.kind,
        purpose: body.purpose,
        state: "received".into(),
        created_at: now,
        due_at: legal_deadline(now, 1),
        updated_at: now,
    };
    let event = RightsEventRow {
        request_id: row.id.clone(),
        seq: 1,
        state: "received".into(),
        actor_id: user.actor_id.clone(),
        actor_role: "resident".into(),
        reason: None,
        at: now,
    };
    state.store.insert_rights_request(&row, &event).await?;
    Ok(with_entry(
        entry,
        (
            StatusCode::CREATED,
            Json(request_view(&state, row, now).await?),
        ),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct RightsRequests {
    pub requests: Vec<RightsRequestView>,
}

/// My requests, with every state change.
#[utoipa::path(get, path = "/api/v1/me/requests", tag = "resident",
    responses((status = 200, body = RightsRequests)))]
pub async fn my_requests(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    let entry = own_data(&state, &user, &rid, "rights.read", None).await?;
    let now = state.clock.now();
    let mut requests = Vec::new();
    for r in state.store.rights_requests_of(&user.actor_id).await? {
        requests.push(request_view(&state, r, now).await?);
    }
    Ok(with_entry(entry, Json(RightsRequests { requests })))
}

/// The DPO's routes: the policy gives `rights.manage` and `register.read`
/// to the DPO only.
async fn dpo(
    state: &AppState,
    user: &CurrentUser,
    rid: &RequestId,
    action: &str,
) -> AppResult<u64> {
    decide(
        state,
        AccessRequest {
            request_id: rid.0.clone(),
            ..AccessRequest::new(&user.actor_id, user.role, action)
        },
    )
    .await
}

/// Every request, open ones first by due date, late ones flagged (DPO).
#[utoipa::path(get, path = "/api/v1/dpo/requests", tag = "agent",
    responses((status = 200, body = RightsRequests), (status = 403, description = "`role_not_allowed`", body = crate::error::ErrorBody)))]
pub async fn dpo_requests(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    let entry = dpo(&state, &user, &rid, "rights.manage").await?;
    let now = state.clock.now();
    let mut requests = Vec::new();
    for r in state.store.all_rights_requests(1000).await? {
        requests.push(request_view(&state, r, now).await?);
    }
    Ok(with_entry(entry, Json(RightsRequests { requests })))
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

async fn transition(
    state: &AppState,
    user: &CurrentUser,
    rid: &RequestId,
    id: &str,
    to: &str,
    reason: Option<String>,
) -> AppResult<Response> {
    let entry = dpo(state, user, rid, "rights.manage").await?;
    let now = state.clock.now();
    let r = state
        .store
        .find_rights_request(id)
        .await?
        .ok_or(AppError::NotFound)?;
    let (from, due) = match (r.state.as_str(), to) {
        // An extension is given within the first month, once.
        ("received", "extended") if now <= r.due_at => {
            ("received", legal_deadline(r.created_at, 3))
        }
        ("received", "extended") => {
            return Err(AppError::Conflict {
                code: "extension_too_late",
                message: "Une prolongation se notifie dans le premier mois. / An extension must be given within the first month.".into(),
            });
        }
        ("received" | "extended", "granted" | "refused") => (r.state.as_str(), r.due_at),
        _ => {
            return Err(AppError::Conflict {
                code: "invalid_transition",
                message: format!("{} → {to}", r.state),
            });
        }
    };
    let event = RightsEventRow {
        request_id: r.id.clone(),
        seq: 0,
        state: to.into(),
        actor_id: user.actor_id.clone(),
        actor_role: user.role.as_str().into(),
        reason,
        at: now,
    };
    if !state
        .store
        .update_rights_request(&r.id, from, to, due, &event)
        .await?
    {
        return Err(AppError::Conflict {
            code: "concurrent_update",
            message: "La demande a changé entre-temps. / The request changed meanwhile.".into(),
        });
    }
    state
        .audit
        .record(crate::audit::AuditRecord {
            timestamp: now,
            actor_id: user.actor_id.clone(),
            actor_role: user.role.as_str().into(),
            action: format!("rights.{to}"),
            resident_id: Some(r.resident_id.clone()),
            allowed: true,
            reason: "dpo".into(),
            request_id: rid.0.clone(),
            ..Default::default()
        })
        .await?;
    let r = state
        .store
        .find_rights_request(id)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(with_entry(entry, Json(request_view(state, r, now).await?)))
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
    if !matches!(body.reason.as_str(), "complexity" | "number_of_requests") {
        return Err(AppError::unprocessable(
            "invalid_reason",
            "reason: `complexity` or `number_of_requests` (GDPR art. 12(3))",
        ));
    }
    transition(&state, &user, &rid, &id, "extended", Some(body.reason)).await
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
    if !matches!(body.outcome.as_str(), "granted" | "refused") {
        return Err(AppError::unprocessable(
            "invalid_outcome",
            "outcome: `granted` or `refused`",
        ));
    }
    let reason = crate::service::rights::closing_reason(&body.outcome, body.reason)?;
    transition(&state, &user, &rid, &id, &body.outcome, reason).await
}

/// The register of processing (art. 30), as the DPO keeps it.
#[utoipa::path(get, path = "/api/v1/dpo/register", tag = "agent",
    responses((status = 200, description = "the purposes of policies/purposes.toml with their notice versions"), (status = 403, body = crate::error::ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    let entry = dpo(&state, &user, &rid, "register.read").await?;
    let purposes: Vec<Value> = state
        .register
        .all()
        .map(|p| serde_json::to_value(p).unwrap_or(Value::Null))
        .collect();
    Ok(with_entry(
        entry,
        Json(json!({"controller_register": "GDPR art. 30", "purposes": purposes})),
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

/// Rectifications, erasures and restrictions of residents whose data you
/// read (art. 19), under your pseudonyms.
#[utoipa::path(get, path = "/api/v1/partner/notifications", tag = "partner",
    responses((status = 200, body = Notifications), (status = 401, body = crate::error::ErrorBody)))]
pub async fn partner_notifications(
    State(state): State<AppState>,
    partner: Partner,
    rid: RequestId,
) -> AppResult<Response> {
    // Taking the notifications tells the partner which of its pseudonyms
    // were rectified, erased or restricted: audited before, fail closed.
    let now = state.clock.now();
    let entry = state
        .audit
        .record(AuditRecord {
            timestamp: now,
            actor_id: partner.id.clone(),
            actor_role: Role::Partner.as_str().into(),
            action: "notifications.read".into(),
            allowed: true,
            reason: "art19_notice".into(),
            request_id: rid.0.clone(),
            ..Default::default()
        })
        .await?;
    let rows = state.store.take_notifications(&partner.id, now).await?;
    Ok(crate::http::audit::with_entry(
        entry,
        Json(Notifications {
            notifications: rows
                .into_iter()
                .map(|n| NotificationView {
                    id: n.id,
                    pseudonym: n.pseudonym,
                    kind: n.kind,
                    category: n.category,
                    created_at: n.created_at,
                })
                .collect(),
        }),
    ))
}

// --- export ----------------------------------------------------------------

/// The export's header carrying the optional age passphrase (never a query
/// parameter: query strings end up in logs).
pub const PASSPHRASE_HEADER: &str = "x-export-passphrase";
const PASSPHRASE_MIN: usize = 12;

/// Where the export's bytes go: straight to the client, or through age.
struct Channel {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
}

/// A `Write` whose bytes are collected, for age's synchronous writer.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<u8>>>);

impl Write for Collected {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Collected {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

enum Sink {
    Plain(Channel),
    Age(
        Channel,
        Box<age::stream::StreamWriter<Collected>>,
        Collected,
    ),
}

impl Sink {
    async fn put(&mut self, bytes: &[u8]) -> Result<(), std::io::Error> {
        match self {
            Sink::Plain(c) => c.send(bytes.to_vec()).await,
            Sink::Age(c, w, out) => {
                w.write_all(bytes)?;
                let chunk = out.take();
                if chunk.is_empty() {
                    Ok(())
                } else {
                    c.send(chunk).await
                }
            }
        }
    }

    async fn json(&mut self, v: &impl Serialize) -> Result<(), std::io::Error> {
        let bytes = serde_json::to_vec(v).map_err(std::io::Error::other)?;
        self.put(&bytes).await
    }

    async fn finish(self) -> Result<(), std::io::Error> {
        match self {
            Sink::Plain(_) => Ok(()),
            Sink::Age(c, w, out) => {
                w.finish()?;
                let chunk = out.take();
                c.send(chunk).await
            }
        }
    }
}

impl Channel {
    async fn send(&self, bytes: Vec<u8>) -> Result<(), std::io::Error> {
        self.tx
            .send(Ok(Bytes::from(bytes)))
            .await
            .map_err(|_| std::io::Error::other("client went away"))
    }
}

/// Everything held about me, as one JSON document (schema
/// `coffre-export/1`, documented in README), streamed; with the
/// `X-Export-Passphrase` header, encrypted with age (scrypt passphrase).
#[utoipa::path(get, path = "/api/v1/me/export", tag = "resident",
    params(("x-export-passphrase" = Option<String>, Header, description = "at least 12 characters; the export is then an age file")),
    responses((status = 200, description = "application/json, or application/age with a passphrase"),
              (status = 422, description = "`passphrase_too_short`", body = crate::error::ErrorBody)))]
pub async fn export(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    headers: HeaderMap,
) -> AppResult<Response> {
    let passphrase = headers
        .get(PASSPHRASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if passphrase
        .as_ref()
        .is_some_and(|p| p.chars().count() < PASSPHRASE_MIN)
    {
        return Err(AppError::unprocessable(
            "passphrase_too_short",
            format!(
                "La phrase de passe doit compter au moins {PASSPHRASE_MIN} caractères. / The passphrase needs at least {PASSPHRASE_MIN} characters."
            ),
        ));
    }
    // Fail closed before the first byte: no keys, no export.
    state.vault()?;
    let entry = own_data(&state, &user, &rid, "export", None).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let channel = Channel { tx };
    let encrypted = passphrase.is_some();
    let sink = match passphrase {
        None => Sink::Plain(channel),
        Some(p) => {
            let out = Collected::default();
            let encryptor =
                age::Encryptor::with_user_passphrase(age::secrecy::SecretString::from(p));
            let writer = encryptor
                .wrap_output(out.clone())
                .map_err(|_| AppError::internal("age encryptor"))?;
            Sink::Age(channel, Box::new(writer), out)
        }
    };
    let resident = user.actor_id.clone();
    tokio::spawn(async move {
        if let Err(e) = write_export(&state, &resident, sink).await {
            // The client sees a cut stream (no closing brace, or an age
            // file that fails its final check), never a partial success.
            tracing::warn!(resident = %resident, error = %e, "export interrupted");
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
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
    let mut res = with_entry(entry, Body::from_stream(stream));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    if let Ok(v) = header::HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res.into_response())
}

async fn write_export(
    state: &AppState,
    resident: &str,
    mut out: Sink,
) -> Result<(), std::io::Error> {
    let io = |e: AppError| std::io::Error::other(format!("{:?}", e.code_and_status().0));
    let now = state.clock.now();
    out.put(b"{\"schema\":\"coffre-export/1\",\"resident_id\":")
        .await?;
    out.json(&resident).await?;
    out.put(format!(",\"generated_at\":{now},\"records\":{{").as_bytes())
        .await?;
    // Every category, every version (one category in memory at a time).
    let vault = state.vault().map_err(io)?;
    let mut first = true;
    for name in state.categories.names() {
        let category = vault
            .categories()
            .category(name)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let history = vault
            .read_history(resident, &category)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if history.is_empty() {
            continue;
        }
        if !first {
            out.put(b",").await?;
        }
        first = false;
        out.json(&name).await?;
        out.put(b":").await?;
        out.json(&history).await?;
    }
    out.put(b"},\"consents\":[").await?;
    let consents = state
        .store
        .consents_of(resident)
        .await
        .map_err(|e| io(e.into()))?;
    for (i, row) in consents.iter().enumerate() {
        if i > 0 {
            out.put(b",").await?;
        }
        let events = state
            .store
            .consent_events(&row.id)
            .await
            .map_err(|e| io(e.into()))?;
        let view = crate::service::consents::view(row, now).map_err(io)?;
        let history: Vec<Value> = events
            .into_iter()
            .map(|e| {
                json!({"state": e.state, "categories": crate::service::consents::split_categories(&e.categories),
                       "valid_until": e.valid_until, "notice_version": e.notice_version,
                       "recorded_by": e.actor_role, "structure_id": e.structure_id,
                       "audit_index": e.audit_index, "at": e.created_at, "receipt": e.receipt})
            })
            .collect();
        out.json(&json!({"consent": view, "history": history}))
            .await?;
    }
    out.put(b"],\"mandates\":[").await?;
    let mandates = state
        .store
        .mandates_of_resident(resident)
        .await
        .map_err(|e| io(e.into()))?;
    for (i, m) in mandates.iter().enumerate() {
        if i > 0 {
            out.put(b",").await?;
        }
        out.json(
            &crate::service::mandates::view(state, m, now)
                .await
                .map_err(io)?,
        )
        .await?;
    }
    let (restricted, _) = state
        .store
        .rights_state(resident, None)
        .await
        .map_err(|e| io(e.into()))?;
    let objections = state
        .store
        .objections_of(resident)
        .await
        .map_err(|e| io(e.into()))?;
    out.put(format!("],\"restricted\":{restricted},\"objections\":").as_bytes())
        .await?;
    out.json(
        &objections
            .iter()
            .map(|(p, t)| json!({"purpose": p, "since": t}))
            .collect::<Vec<_>>(),
    )
    .await?;
    out.put(b",\"requests\":[").await?;
    let requests = state
        .store
        .rights_requests_of(resident)
        .await
        .map_err(|e| io(e.into()))?;
    for (i, r) in requests.into_iter().enumerate() {
        if i > 0 {
            out.put(b",").await?;
        }
        out.json(&request_view(state, r, now).await.map_err(io)?)
            .await?;
    }
    // Every decision about me in the audit log, each with its inclusion
    // proof in the signed checkpoint given first; paged, newest first.
    let signer = state.checkpoint_signer().map_err(io)?;
    let cp = state
        .audit
        .checkpoint(&signer, now)
        .await
        .map_err(|e| io(e.into()))?;
    let tree_size = cp.tree_size as u64;
    out.put(b"],\"accesses\":{\"checkpoint\":").await?;
    out.json(&cp.note).await?;
    out.put(format!(",\"tree_size\":{tree_size},\"entries\":[").as_bytes())
        .await?;
    let mut before = u64::MAX;
    let mut first = true;
    // The extracts I was included in, gathered on the way (one per extract).
    let mut extracts: Vec<Value> = Vec::new();
    loop {
        let rows = state
            .store
            .audit_entries_of(resident, before, 100)
            .await
            .map_err(|e| io(e.into()))?;
        for (idx, leaf) in &rows {
            let idx = *idx as u64;
            let fields =
                AuditEntry::decode(leaf).map_err(|e| std::io::Error::other(e.to_string()))?;
            if matches!(
                fields.action.as_str(),
                "extract.include" | "extract.aggregate"
            ) {
                extracts.push(json!({
                    "extract": fields.reason.strip_prefix("extract:").unwrap_or(&fields.reason),
                    "partner": fields.actor_id,
                    "purpose": fields.purpose,
                    "categories": fields.category,
                    "at": fields.timestamp,
                    "audit_index": idx,
                }));
            }
            let proof = if idx < tree_size {
                let p = state
                    .audit
                    .inclusion_proof(idx, tree_size)
                    .await
                    .map_err(|e| io(e.into()))?;
                Some(p.iter().map(|h| STANDARD.encode(h)).collect::<Vec<_>>())
            } else {
                None
            };
            if !first {
                out.put(b",").await?;
            }
            first = false;
            out.json(&json!({"index": idx, "leaf": STANDARD.encode(leaf), "fields": fields, "proof": proof}))
                .await?;
        }
        match rows.last() {
            Some((last, _)) if rows.len() == 100 => before = *last as u64,
            _ => break,
        }
    }
    out.put(b"]},\"extracts\":").await?;
    out.json(&extracts).await?;
    out.put(b"}").await?;
    out.finish().await
}
