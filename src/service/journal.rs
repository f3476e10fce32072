//! The audit log's use cases: its signed checkpoint and proofs (public),
//! the auditor's view of entries, and a resident's own accesses, each with
//! its inclusion proof, with the actors named for the resident's page.

use crate::error::ErrorCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::AuditEntry;
use crate::audit::tiles::{TileKind, TileRef};
use crate::domain::Timestamp;
use crate::error::{AppError, AppResult};
use crate::service::access::{own_data, role_action};
use crate::service::{Audited, Caller};

/// At most this many entries per request of the auditor's view.
pub const MAX_ENTRIES: u64 = 1000;

/// Entries read per query by [`scan`].
const SCAN_PAGE: u64 = 5_000;

/// Calls `f` on each entry of the log written in [start, end), in index
/// order: the statistics' and the annual report's pass over a month or a
/// year. The range is found by a binary search on the entries' times (which
/// grow with their index), then read a page at a time. A leaf that does not
/// decode is skipped (`coffre audit verify` names it).
pub(crate) async fn scan(
    state: &AppState,
    start: Timestamp,
    end: Timestamp,
    mut f: impl FnMut(AuditEntry),
) -> AppResult<()> {
    let mut at = state.store.audit_index_at(start).await?;
    let to = state.store.audit_index_at(end).await?;
    while at < to {
        let upto = (at + SCAN_PAGE).min(to);
        for (_, leaf) in state.store.audit_entries(at, upto).await? {
            if let Ok(e) = AuditEntry::decode(&leaf)
                && (start..end).contains(&e.timestamp)
            {
                f(e);
            }
        }
        at = upto;
    }
    Ok(())
}

fn b64(hashes: &[[u8; 32]]) -> Vec<String> {
    hashes.iter().map(|h| STANDARD.encode(h)).collect()
}

/// The latest signed checkpoint (C2SP tlog-checkpoint as a signed note),
/// with its tree size.
pub async fn checkpoint(
    state: &AppState,
    now: Timestamp,
) -> AppResult<crate::storage::CheckpointRow> {
    // Sealed, the process cannot sign: it serves the latest checkpoint
    // signed before (the log's public routes keep working).
    if state.is_sealed()
        && let Some(latest) = state.audit.latest_checkpoint().await?
    {
        return Ok(latest);
    }
    let signer = state.checkpoint_signer()?;
    Ok(state.audit.checkpoint(&signer, now).await?)
}

/// The latest signed checkpoint as served: the log's signature, then the
/// witnesses' cosignatures of that very checkpoint (none yet, usually: a
/// checkpoint is signed each second the log grows, witnesses are asked
/// every ten).
pub async fn checkpoint_note(
    state: &AppState,
    now: Timestamp,
) -> AppResult<(crate::storage::CheckpointRow, String)> {
    let cp = checkpoint(state, now).await?;
    let note = cosigned(&state.store, &cp).await?;
    Ok((cp, note))
}

/// A signed checkpoint with the witnesses' stored cosignatures of it.
pub async fn cosigned(
    store: &crate::storage::DynStore,
    cp: &crate::storage::CheckpointRow,
) -> Result<String, crate::storage::StorageError> {
    let lines = store.cosignatures(cp.tree_size).await?;
    Ok(crate::audit::witness::with_cosignatures(&cp.note, &lines))
}

/// The checkpoint standard clients read (`/audit/checkpoint`): the latest
/// one a witness cosigned, with its cosignatures, once the log has any;
/// before that, the latest signed.
pub async fn witnessed_note(state: &AppState, now: Timestamp) -> AppResult<String> {
    match state.store.latest_cosigned_checkpoint().await? {
        Some(cp) => Ok(cosigned(&state.store, &cp).await?),
        None => Ok(checkpoint_note(state, now).await?.1),
    }
}

/// The verifier key of checkpoints, in signed-note form (sealed, as the
/// custodians' manifest publishes it).
pub fn verifier_key(state: &AppState) -> AppResult<String> {
    if state.is_sealed()
        && let Some(c) = &state.custodians
        && !c.verifier_key().is_empty()
    {
        return Ok(c.verifier_key().to_string());
    }
    Ok(state.checkpoint_signer()?.verifier_key())
}

#[derive(Serialize, ToSchema)]
pub struct InclusionProof {
    pub leaf_index: u64,
    pub tree_size: u64,
    /// Base64 SHA-256 hashes, from the leaf upwards (RFC 9162 §2.1.3).
    pub proof: Vec<String>,
}

/// RFC 9162 inclusion proof of one entry in the tree of `tree_size`.
pub async fn inclusion(
    state: &AppState,
    leaf_index: u64,
    tree_size: u64,
) -> AppResult<InclusionProof> {
    let proof = state.audit.inclusion_proof(leaf_index, tree_size).await?;
    Ok(InclusionProof {
        leaf_index,
        tree_size,
        proof: b64(&proof),
    })
}

#[derive(Serialize, ToSchema)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    /// Base64 SHA-256 hashes (RFC 9162 §2.1.4).
    pub proof: Vec<String>,
}

/// RFC 9162 consistency proof between two tree sizes.
pub async fn consistency(state: &AppState, from: u64, to: u64) -> AppResult<ConsistencyProof> {
    let proof = state.audit.consistency_proof(from, to).await?;
    Ok(ConsistencyProof {
        from,
        to,
        proof: b64(&proof),
    })
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

fn entry_view(idx: i64, leaf: &[u8]) -> AppResult<EntryView> {
    let fields =
        AuditEntry::decode(leaf).map_err(|e| AppError::internal(format!("entry {idx}: {e}")))?;
    Ok(EntryView {
        index: idx as u64,
        leaf: STANDARD.encode(leaf),
        fields,
    })
}

/// Entries with index in [from, to) (at most [`MAX_ENTRIES`]), for auditors
/// and the DPO.
pub async fn entries(
    state: &AppState,
    caller: &Caller,
    from: u64,
    to: u64,
) -> AppResult<Audited<Entries>> {
    if from > to || to - from > MAX_ENTRIES {
        return Err(ErrorCode::InvalidRange.with(format!(
            "from ≤ to and at most {MAX_ENTRIES} entries per request"
        )));
    }
    let index = role_action(state, caller, "audit.read").await?;
    let rows = state.store.audit_entries(from, to).await?;
    let entries = rows
        .into_iter()
        .map(|(idx, leaf)| entry_view(idx, &leaf))
        .collect::<AppResult<Vec<_>>>()?;
    Ok(Audited::new(index, Entries { entries }))
}

#[derive(Serialize, ToSchema)]
pub struct AccessView {
    #[serde(flatten)]
    pub entry: EntryView,
    /// Inclusion proof in the tree of `checkpoint`'s size (absent for an
    /// entry newer than the checkpoint).
    pub proof: Option<Vec<String>>,
    /// Stored durably (the act it records happened after that) but not
    /// yet integrated into the tree: its proof follows within moments.
    pub pending: bool,
}

#[derive(Serialize, ToSchema)]
pub struct MyAccesses {
    /// The signed checkpoint the proofs lead to.
    pub checkpoint: String,
    pub tree_size: u64,
    pub accesses: Vec<AccessView>,
}

/// One hash tile of the tree (C2SP tlog-tiles), for anyone: hashes of
/// subtrees reveal nothing of the entries. `not_found` until the tree
/// holds it whole (a tile, once served, never changes).
pub async fn hash_tile(state: &AppState, tile: &TileRef) -> AppResult<Vec<u8>> {
    let TileKind::Hashes { level } = tile.kind else {
        return Err(AppError::NotFound);
    };
    let size = state.audit.integrated_size().await?;
    if !tile.within(size) {
        return Err(AppError::NotFound);
    }
    // The stored row may be wider than asked: a partial tile grows in
    // place, and its first `width` hashes never change.
    let width = usize::try_from(tile.width).map_err(|_| AppError::NotFound)?;
    match state.store.audit_tiles(&[(level, tile.index)]).await?.pop() {
        Some((_, _, hashes)) if hashes.len() >= width * 32 => Ok(hashes[..width * 32].to_vec()),
        // A tile the tree's size says exists is missing or short: the
        // log's storage is damaged (`coffre audit verify` names where).
        _ => Err(AppError::Integrity),
    }
}

/// One entry bundle (C2SP tlog-tiles): the leaves themselves. They name
/// residents by their internal ids, so only the roles that may read the
/// log's entries get them (auditors, the DPO), recorded as any read of
/// entries is.
pub async fn entry_bundle(
    state: &AppState,
    caller: &Caller,
    tile: &TileRef,
) -> AppResult<Audited<Vec<u8>>> {
    let index = role_action(state, caller, "audit.read").await?;
    if tile.kind != TileKind::Entries {
        return Err(AppError::NotFound);
    }
    let size = state.audit.integrated_size().await?;
    let (from, to) = tile.range().ok_or(AppError::NotFound)?;
    if !tile.within(size) {
        return Err(AppError::NotFound);
    }
    let rows = state.store.audit_entries(from, to).await?;
    if rows.len() as u64 != tile.width {
        return Err(AppError::Integrity);
    }
    let leaves: Vec<Vec<u8>> = rows.into_iter().map(|(_, leaf)| leaf).collect();
    let bundle = crate::audit::tiles::entry_bundle(&leaves)
        .ok_or_else(|| AppError::internal("an entry is longer than a bundle allows"))?;
    Ok(Audited::new(index, bundle))
}

/// Who accessed my data, when and why: every decision about me in the
/// audit log (newest first, 100 per page, below `before`), each with its
/// inclusion proof in the signed checkpoint.
pub async fn my_accesses(
    state: &AppState,
    caller: &Caller,
    before: u64,
    now: Timestamp,
) -> AppResult<Audited<MyAccesses>> {
    let index = own_data(state, caller, "audit.read", None).await?;
    let me = caller.resident_id()?;
    let signer = state.checkpoint_signer()?;
    let cp = state.audit.checkpoint(&signer, now).await?;
    let tree_size = cp.tree_size as u64;
    let integrated = state.audit.integrated_size().await?;
    let rows = state.store.audit_entries_of(&me, before, 100).await?;
    let mut accesses = Vec::with_capacity(rows.len());
    for (idx, leaf) in rows {
        let entry = entry_view(idx, &leaf)?;
        let proof = if entry.index < tree_size {
            Some(b64(&state
                .audit
                .inclusion_proof(entry.index, tree_size)
                .await?))
        } else {
            None
        };
        let pending = entry.index >= integrated;
        accesses.push(AccessView {
            entry,
            proof,
            pending,
        });
    }
    Ok(Audited::new(
        index,
        MyAccesses {
            checkpoint: cp.note,
            tree_size,
            accesses,
        },
    ))
}

/// How an actor of the log is named to a resident: a partner's name, or an
/// agent's display name and their structure's name; `None` when unknown.
pub struct ActorName {
    pub name: Option<String>,
    pub structure: Option<String>,
}

/// Names the actor of an entry for the resident's page (identifiers in the
/// log, names on the page). A lookup that fails names no one.
pub async fn actor_name(
    state: &AppState,
    actor_id: &str,
    role: &str,
    structure_id: Option<&str>,
) -> ActorName {
    let name = match role {
        "partner" => match crate::domain::PartnerId::parse(actor_id) {
            Ok(id) => state
                .store
                .find_partner(&id)
                .await
                .ok()
                .flatten()
                .map(|p| p.name),
            Err(_) => None,
        },
        // An actor id that is no agent id names no agent.
        _ => match crate::domain::AgentId::parse(actor_id) {
            Ok(id) => state
                .store
                .find_agent(&id)
                .await
                .ok()
                .flatten()
                .map(|a| a.display_name),
            Err(_) => None,
        },
    };
    let structure = match structure_id {
        Some(sid) => match crate::domain::StructureId::parse(sid) {
            Ok(sid) => state
                .store
                .find_structure(&sid)
                .await
                .ok()
                .flatten()
                .map(|s| s.name),
            Err(_) => None,
        },
        None => None,
    };
    ActorName { name, structure }
}
