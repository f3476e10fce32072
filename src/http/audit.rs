//! The audit log over HTTP: the signed checkpoint, proofs, the auditor's
//! view of entries, and a resident's own accesses with inclusion proofs.
//! Also the small helpers handlers use to record their decisions.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::{AuditEntry, AuditRecord};
use crate::error::{AppError, AppResult};
use crate::http::session::CurrentUser;

/// The request id (set by the middleware), to tie audit entries to logs.
pub struct RequestId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestId(
            parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(64).collect()),
        ))
    }
}

/// An audit record of `user` doing `action`, at the state's clock.
pub fn record_for(
    state: &AppState,
    user: &CurrentUser,
    action: &str,
    rid: &RequestId,
) -> AuditRecord {
    AuditRecord {
        timestamp: state.clock.now(),
        actor_id: user.actor_id.clone(),
        actor_role: user.role.as_str().to_string(),
        action: action.to_string(),
        request_id: rid.0.clone(),
        ..AuditRecord::default()
    }
}

/// Records a refusal, then returns the refusal itself (or 503 if even the
/// refusal could not be recorded: nothing happens unaudited).
pub async fn deny(state: &AppState, mut record: AuditRecord, refusal: AppError) -> AppError {
    let (code, _) = refusal.code_and_status();
    record.allowed = false;
    record.reason = code.to_string();
    match state.audit.record(record).await {
        Ok(_) => refusal,
        Err(e) => e.into(),
    }
}

/// Decides, through the one access decision, about the logged-in person
/// acting on their own data (the `/api/v1/me` routes), and records it
/// before anything is read or changed. Only residents hold `…:own` actions;
/// anyone else is refused `resident_only` (recorded too). Returns the audit
/// entry's index.
pub async fn own_data(
    state: &AppState,
    user: &CurrentUser,
    rid: &RequestId,
    action: &str,
    category: Option<&str>,
) -> AppResult<u64> {
    crate::service::access::decide(
        state,
        crate::service::access::AccessRequest {
            own: true,
            resident_id: Some(&user.actor_id),
            category,
            request_id: rid.0.clone(),
            ..crate::service::access::AccessRequest::new(&user.actor_id, user.role, action)
        },
    )
    .await
}

/// The `X-Audit-Entry` header: the index of the entry that recorded this
/// request's decision, so a client can ask for its inclusion proof.
pub fn with_entry(index: u64, body: impl IntoResponse) -> Response {
    ([("x-audit-entry", index.to_string())], body).into_response()
}

fn number(q: &HashMap<String, String>, name: &'static str) -> AppResult<u64> {
    let raw = q.get(name).ok_or_else(|| {
        AppError::bad_request(
            "missing_parameter",
            format!("query parameter `{name}` is required"),
        )
    })?;
    raw.parse().map_err(|_| {
        AppError::bad_request(
            "invalid_parameter",
            format!("query parameter `{name}` must be a whole number"),
        )
    })
}

fn b64(hashes: &[[u8; 32]]) -> Vec<String> {
    hashes.iter().map(|h| STANDARD.encode(h)).collect()
}

/// The latest signed checkpoint (C2SP tlog-checkpoint as a signed note).
#[utoipa::path(get, path = "/api/v1/audit/checkpoint", tag = "audit",
    responses((status = 200, description = "signed note: origin, tree size, base64 root hash, signature", content_type = "text/plain"),
              (status = 503, description = "`keys_unavailable`, `audit_unavailable`", body = crate::error::ErrorBody)))]
pub async fn checkpoint(State(state): State<AppState>) -> AppResult<Response> {
    let signer = state.checkpoint_signer()?;
    let row = state.audit.checkpoint(&signer, state.clock.now()).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        row.note,
    )
        .into_response())
}

/// The verifier key of checkpoints, in signed-note form (`name+hexid+base64`).
#[utoipa::path(get, path = "/api/v1/audit/key", tag = "audit",
    responses((status = 200, description = "verifier key", content_type = "text/plain")))]
pub async fn key(State(state): State<AppState>) -> AppResult<Response> {
    let signer = state.checkpoint_signer()?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", signer.verifier_key()),
    )
        .into_response())
}

#[derive(Serialize, ToSchema)]
pub struct InclusionProof {
    pub leaf_index: u64,
    pub tree_size: u64,
    /// Base64 SHA-256 hashes, from the leaf upwards (RFC 9162 §2.1.3).
    pub proof: Vec<String>,
}

/// RFC 9162 inclusion proof of one entry in the tree of `tree_size`.
#[utoipa::path(get, path = "/api/v1/audit/proofs/inclusion", tag = "audit",
    params(("leaf_index" = u64, Query,), ("tree_size" = u64, Query,)),
    responses((status = 200, body = InclusionProof),
              (status = 400, description = "`missing_parameter`, `invalid_parameter`", body = crate::error::ErrorBody),
              (status = 422, description = "`leaf_index_out_of_range`, `tree_size_too_large`", body = crate::error::ErrorBody)))]
pub async fn inclusion(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> AppResult<Json<InclusionProof>> {
    let leaf_index = number(&q, "leaf_index")?;
    let tree_size = number(&q, "tree_size")?;
    let proof = state.audit.inclusion_proof(leaf_index, tree_size).await?;
    Ok(Json(InclusionProof {
        leaf_index,
        tree_size,
        proof: b64(&proof),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    /// Base64 SHA-256 hashes (RFC 9162 §2.1.4).
    pub proof: Vec<String>,
}

/// RFC 9162 consistency proof between two tree sizes.
#[utoipa::path(get, path = "/api/v1/audit/proofs/consistency", tag = "audit",
    params(("from" = u64, Query,), ("to" = u64, Query,)),
    responses((status = 200, body = ConsistencyProof),
              (status = 400, description = "`missing_parameter`, `invalid_parameter`", body = crate::error::ErrorBody),
              (status = 422, description = "`invalid_range`, `tree_size_too_large`", body = crate::error::ErrorBody)))]
pub async fn consistency(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> AppResult<Json<ConsistencyProof>> {
    let from = number(&q, "from")?;
    let to = number(&q, "to")?;
    let proof = state.audit.consistency_proof(from, to).await?;
    Ok(Json(ConsistencyProof {
        from,
        to,
        proof: b64(&proof),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct EntryView {
    pub index: u64,
    /// Base64 of the exact leaf bytes (hash them with a 0x00 prefix).
    pub leaf: String,
    #[serde(flatten)]
    pub fields: AuditEntry,
}

#[derive(Serialize, ToSchema)]
pub struct Entries {
    pub entries: Vec<EntryView>,
}

const MAX_ENTRIES: u64 = 1000;

/// Entries with index in [from, to) (at most 1000), for auditors and the DPO.
#[utoipa::path(get, path = "/api/v1/audit/entries", tag = "audit",
    params(("from" = u64, Query,), ("to" = u64, Query,)),
    responses((status = 200, body = Entries),
              (status = 403, description = "`auditor_only`", body = crate::error::ErrorBody),
              (status = 422, description = "`invalid_range`", body = crate::error::ErrorBody)))]
pub async fn entries(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Query(q): Query<HashMap<String, String>>,
) -> AppResult<Response> {
    let from = number(&q, "from")?;
    let to = number(&q, "to")?;
    if from > to || to - from > MAX_ENTRIES {
        return Err(AppError::unprocessable(
            "invalid_range",
            format!("from ≤ to and at most {MAX_ENTRIES} entries per request"),
        ));
    }
    let index = crate::service::access::decide(
        &state,
        crate::service::access::AccessRequest {
            request_id: rid.0.clone(),
            ..crate::service::access::AccessRequest::new(&user.actor_id, user.role, "audit.read")
        },
    )
    .await?;
    let rows = state.store.audit_entries(from, to).await?;
    let entries = rows
        .into_iter()
        .map(|(idx, leaf)| {
            let fields = AuditEntry::decode(&leaf)
                .map_err(|e| AppError::internal(format!("entry {idx}: {e}")))?;
            Ok(EntryView {
                index: idx as u64,
                leaf: STANDARD.encode(&leaf),
                fields,
            })
        })
        .collect::<AppResult<Vec<_>>>()?;
    Ok(with_entry(index, Json(Entries { entries })))
}

#[derive(Serialize, ToSchema)]
pub struct AccessView {
    #[serde(flatten)]
    pub entry: EntryView,
    /// Inclusion proof in the tree of `checkpoint`'s size (absent for an
    /// entry newer than the checkpoint).
    pub proof: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct MyAccesses {
    /// The signed checkpoint the proofs lead to.
    pub checkpoint: String,
    pub tree_size: u64,
    pub accesses: Vec<AccessView>,
}

/// Who accessed my data, when and why — every decision about me in the audit
/// log (newest first, 100 per page; `before` pages back), each with its
/// inclusion proof in the signed checkpoint.
#[utoipa::path(get, path = "/api/v1/me/accesses", tag = "resident",
    params(("before" = Option<u64>, Query, description = "only entries with a smaller index")),
    responses((status = 200, body = MyAccesses), (status = 403, body = crate::error::ErrorBody)))]
pub async fn my_accesses(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Query(q): Query<HashMap<String, String>>,
) -> AppResult<Response> {
    let before = match q.get("before") {
        Some(_) => number(&q, "before")?,
        None => u64::MAX,
    };
    let index = own_data(&state, &user, &rid, "audit.read", None).await?;
    let signer = state.checkpoint_signer()?;
    let cp = state.audit.checkpoint(&signer, state.clock.now()).await?;
    let tree_size = cp.tree_size as u64;
    let rows = state
        .store
        .audit_entries_of(&user.actor_id, before, 100)
        .await?;
    let mut accesses = Vec::with_capacity(rows.len());
    for (idx, leaf) in rows {
        let idx = idx as u64;
        let fields = AuditEntry::decode(&leaf)
            .map_err(|e| AppError::internal(format!("entry {idx}: {e}")))?;
        let proof = if idx < tree_size {
            Some(b64(&state.audit.inclusion_proof(idx, tree_size).await?))
        } else {
            None
        };
        accesses.push(AccessView {
            entry: EntryView {
                index: idx,
                leaf: STANDARD.encode(&leaf),
                fields,
            },
            proof,
        });
    }
    Ok(with_entry(
        index,
        Json(MyAccesses {
            checkpoint: cp.note,
            tree_size,
            accesses,
        }),
    ))
}
