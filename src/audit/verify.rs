//! `coffre audit verify`: recomputes the tree from the stored entries and
//! checks every stored checkpoint's signature and root against it. Any
//! altered, deleted, reordered or inserted entry is reported at the first
//! bad index.

use super::entry::AuditEntry;
use super::merkle::{self, CompactRange};
use super::note::{Checkpoint, NoteVerifier};
use crate::storage::DynStore;

const BATCH: u64 = 10_000;

#[derive(Debug)]
pub struct VerifyReport {
    pub size: u64,
    pub root: [u8; 32],
    pub checkpoints: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyFailure {
    #[error("entry {index}: {reason}")]
    Entry { index: u64, reason: String },
    #[error("checkpoint of size {size}: {reason}")]
    Checkpoint { size: u64, reason: String },
    #[error("stored tree: {0}")]
    Tree(String),
    #[error("cannot read the log: {0}")]
    Storage(String),
    /// Everything stored is consistent with the stored checkpoints, but a
    /// checkpoint kept outside the database signs a longer log: published
    /// entries are missing. An older copy restored looks exactly so; so
    /// does a log cut (and perhaps rewritten past its last stored
    /// checkpoint) by someone with write access, which nothing here can
    /// tell apart: an incident unless a restore has just been made.
    #[error(
        "rolled back: the log holds {size} entries, consistent with its stored checkpoints, but the checkpoint kept outside signs {published}: {lost} published entries are missing (an older copy restored, or the log cut by someone with write access: an incident unless you have just restored a backup)",
        lost = published - size
    )]
    Rollback { size: u64, published: u64 },
}

fn parse_signed(verifier: &NoteVerifier, note: &str, origin: &str) -> Result<Checkpoint, String> {
    let text = verifier
        .verify(note)
        .map_err(|e| format!("signature: {e}"))?;
    let cp = Checkpoint::parse(&text).map_err(|e| format!("malformed: {e}"))?;
    if cp.origin != origin {
        return Err(format!(
            "origin {:?} is not this log's {origin:?}",
            cp.origin
        ));
    }
    Ok(cp)
}

/// Verifies the whole log. `external` is a checkpoint kept outside the
/// database (its note text), checked like the stored ones.
pub async fn verify(
    store: &DynStore,
    verifier: &NoteVerifier,
    origin: &str,
    external: Option<&str>,
) -> Result<VerifyReport, VerifyFailure> {
    verify_in_batches(store, verifier, origin, external, BATCH).await
}

/// [`verify`], reading `batch` entries (and the nodes they complete) at a
/// time. Public so that tests can make a short log span several batches:
/// the nodes a batch completes may lie over entries of earlier batches,
/// which a log read in one batch never exercises.
pub async fn verify_in_batches(
    store: &DynStore,
    verifier: &NoteVerifier,
    origin: &str,
    external: Option<&str>,
    batch: u64,
) -> Result<VerifyReport, VerifyFailure> {
    // A batch of 0 would never advance.
    let batch = batch.max(1);
    let storage = |e: crate::storage::StorageError| VerifyFailure::Storage(e.to_string());
    let size = store.audit_size().await.map_err(storage)?;

    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    for row in store.audit_checkpoints().await.map_err(storage)? {
        let claimed = u64::try_from(row.tree_size).unwrap_or(u64::MAX);
        let cp = parse_signed(verifier, &row.note, origin).map_err(|reason| {
            VerifyFailure::Checkpoint {
                size: claimed,
                reason,
            }
        })?;
        if cp.size != claimed {
            return Err(VerifyFailure::Checkpoint {
                size: claimed,
                reason: format!("stored under size {claimed} but signs size {}", cp.size),
            });
        }
        checkpoints.push(cp);
    }
    // A checkpoint kept outside that signs more than the log holds is
    // judged last: if everything stored is consistent, the log was rolled
    // back, which is said as such (not as an entry altered).
    let mut rolled_back_from = None;
    if let Some(note) = external {
        let cp =
            parse_signed(verifier, note, origin).map_err(|reason| VerifyFailure::Checkpoint {
                size: 0,
                reason: format!("external checkpoint: {reason}"),
            })?;
        if cp.size > size {
            rolled_back_from = Some(cp.size);
        } else {
            checkpoints.push(cp);
        }
    }
    checkpoints.sort_by_key(|c| c.size);
    if let Some(last) = checkpoints.last()
        && last.size > size
    {
        return Err(VerifyFailure::Checkpoint {
            size: last.size,
            reason: format!(
                "signed for {} entries but the log holds {size}: entries were deleted",
                last.size
            ),
        });
    }

    let mut range = CompactRange::new();
    let mut next_checkpoint = checkpoints.iter().peekable();
    let check_roots =
        |range: &CompactRange, cps: &mut std::iter::Peekable<std::slice::Iter<'_, Checkpoint>>| {
            while let Some(cp) = cps.peek() {
                if cp.size != range.size() {
                    break;
                }
                if cp.root != range.root() {
                    return Err(VerifyFailure::Checkpoint {
                    size: cp.size,
                    reason: "its signed root does not match the entries (an entry before it was rewritten)".into(),
                });
                }
                cps.next();
            }
            Ok(())
        };
    check_roots(&range, &mut next_checkpoint)?;

    let mut expected = 0u64;
    while expected < size {
        let to = (expected + batch).min(size);
        let rows = store.audit_entries(expected, to).await.map_err(storage)?;
        // Every node this batch completes, at every level: the stored
        // interior nodes serve proofs, so each one is checked, not only the
        // frontier (a zeroed or deleted inner node would pass a root check
        // and yet make the proofs served from it fail).
        let mut stored: std::collections::HashMap<(u8, u64), Vec<u8>> =
            std::collections::HashMap::new();
        for level in 0..64u8 {
            let (lo, hi) = (expected >> level, to >> level);
            if hi <= lo && level > 0 {
                break;
            }
            for (idx, hash) in store
                .audit_level_hashes(level, lo, hi.max(lo + 1))
                .await
                .map_err(storage)?
            {
                stored.insert((level, u64::try_from(idx).unwrap_or(u64::MAX)), hash);
            }
        }
        for (idx, leaf) in rows {
            let idx = u64::try_from(idx).unwrap_or(u64::MAX);
            if idx != expected {
                return Err(VerifyFailure::Entry {
                    index: expected,
                    reason: "missing (deleted)".into(),
                });
            }
            let entry = AuditEntry::decode(&leaf).map_err(|e| VerifyFailure::Entry {
                index: idx,
                reason: format!("undecodable leaf ({e})"),
            })?;
            if entry.index != idx {
                return Err(VerifyFailure::Entry {
                    index: idx,
                    reason: format!("holds entry {} (reordered or inserted)", entry.index),
                });
            }
            let hash = merkle::leaf_hash(&leaf);
            if stored.get(&(0, idx)).map(Vec::as_slice) != Some(&hash[..]) {
                return Err(VerifyFailure::Entry {
                    index: idx,
                    reason: "its content does not match the tree (altered)".into(),
                });
            }
            let completed = range
                .append(hash)
                .map_err(|e| VerifyFailure::Tree(e.to_string()))?;
            for ((level, at), node) in completed.into_iter().filter(|((l, _), _)| *l > 0) {
                match stored.get(&(level, at)) {
                    Some(h) if h.as_slice() == node.as_slice() => {}
                    found => {
                        let first = at << level;
                        return Err(VerifyFailure::Tree(format!(
                            "stored node ({level}, {at}) over entries {first}..={idx} is {}; proofs served from it would be wrong",
                            if found.is_some() {
                                "altered"
                            } else {
                                "missing"
                            }
                        )));
                    }
                }
            }
            check_roots(&range, &mut next_checkpoint)?;
            expected += 1;
        }
        if expected < to {
            return Err(VerifyFailure::Entry {
                index: expected,
                reason: "missing (deleted)".into(),
            });
        }
    }
    let extra = store
        .audit_entries(size, u64::MAX >> 1)
        .await
        .map_err(storage)?;
    if let Some((idx, _)) = extra.first() {
        return Err(VerifyFailure::Entry {
            index: u64::try_from(*idx).unwrap_or(size),
            reason: format!("beyond the log's size {size} (inserted)"),
        });
    }
    // The stored interior nodes serve proofs: they must agree too.
    let coords = merkle::root_coords(size);
    let nodes: std::collections::HashMap<(u8, u64), [u8; 32]> = store
        .audit_nodes(&coords)
        .await
        .map_err(storage)?
        .into_iter()
        .map(|(l, i, h)| ((l, i), h))
        .collect();
    let stored_root = merkle::root_hash(size, |l, i| nodes.get(&(l, i)).copied());
    if stored_root != Some(range.root()) {
        return Err(VerifyFailure::Tree(
            "stored node hashes do not match the entries; proofs would be wrong".into(),
        ));
    }
    if let Some(published) = rolled_back_from {
        return Err(VerifyFailure::Rollback { size, published });
    }
    Ok(VerifyReport {
        size,
        root: range.root(),
        checkpoints: checkpoints.len(),
    })
}
