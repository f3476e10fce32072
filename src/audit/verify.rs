//! `coffre audit verify`: recomputes the tiles from the stored entries,
//! compares every stored tile with them, and checks every stored
//! checkpoint's signature and root. Any altered, deleted, reordered or
//! inserted entry is reported at the first bad index; so is a stored hash
//! that no longer matches its entries.

use std::collections::HashMap;

use super::entry::AuditEntry;
use super::merkle::{self, CompactRange};
use super::note::{Checkpoint, NoteVerifier};
use super::tiles::{self, TILE_WIDTH, TileAppender};
use crate::storage::DynStore;

const BATCH: u64 = 10_000;

#[derive(Debug)]
pub struct VerifyReport {
    /// Entries integrated into the tree (what the checkpoints sign).
    pub size: u64,
    /// Entries sequenced past it, checked one by one, not yet in the tree.
    pub pending: u64,
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
    let state = store.audit_integration().await.map_err(storage)?;
    let size = state.integrated;
    if state.sequenced < size {
        return Err(VerifyFailure::Tree(format!(
            "{size} entries integrated but only {} sequenced",
            state.sequenced
        )));
    }

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

    let mut tiles_now = TileAppender::new(0, &[]).map_err(VerifyFailure::Tree)?;
    let stored_tile = |level: u8, index: u64| async move {
        store
            .audit_tiles(&[(level, index)])
            .await
            .map_err(storage)
            .map(|mut t| t.pop().map(|(_, _, h)| h))
    };
    let tile_mismatch = |level: u8, index: u64, found: Option<&Vec<u8>>| {
        let first = (index * TILE_WIDTH) << (u32::from(level) * tiles::TILE_HEIGHT);
        VerifyFailure::Tree(format!(
            "stored tile ({level}, {index}) over entries from {first} is {}; proofs served from it would be wrong",
            if found.is_some() {
                "altered"
            } else {
                "missing"
            }
        ))
    };
    let mut expected = 0u64;
    while expected < size {
        let to = (expected + batch).min(size);
        let rows = store.audit_entries(expected, to).await.map_err(storage)?;
        // The level-0 tiles over this batch: each leaf's stored hash is
        // checked as it is read, so an altered entry is named by its index.
        let level0: HashMap<u64, Vec<u8>> = store
            .audit_tile_range(0, expected / TILE_WIDTH, to.div_ceil(TILE_WIDTH))
            .await
            .map_err(storage)?
            .into_iter()
            .map(|(_, i, h)| (i, h))
            .collect();
        for (idx, leaf) in rows {
            let idx = u64::try_from(idx).unwrap_or(u64::MAX);
            if idx != expected {
                return Err(VerifyFailure::Entry {
                    index: expected,
                    reason: "missing (deleted)".into(),
                });
            }
            check_entry(idx, &leaf)?;
            let hash = merkle::leaf_hash(&leaf);
            let at = usize::try_from(idx % TILE_WIDTH).unwrap_or(0) * 32;
            let stored = level0
                .get(&(idx / TILE_WIDTH))
                .and_then(|t| t.get(at..at + 32));
            if stored != Some(&hash[..]) {
                return Err(VerifyFailure::Entry {
                    index: idx,
                    reason: format!(
                        "its content does not match the tree (the entry, or its hash in tile (0, {}), altered)",
                        idx / TILE_WIDTH
                    ),
                });
            }
            range
                .append(hash)
                .map_err(|e| VerifyFailure::Tree(e.to_string()))?;
            tiles_now.append(hash).map_err(VerifyFailure::Tree)?;
            // Every tile this entry completed, whole: the stored tiles serve
            // proofs, so each one is checked, not only the root (an altered
            // upper tile would pass a root check of the entries and yet make
            // the proofs served from it fail).
            for (level, index, hashes) in tiles_now.take_full() {
                let want: Vec<u8> = hashes.iter().flatten().copied().collect();
                let found = if level == 0 {
                    level0.get(&index).cloned()
                } else {
                    stored_tile(level, index).await?
                };
                if found.as_ref() != Some(&want) {
                    return Err(tile_mismatch(level, index, found.as_ref()));
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
    // The partial tiles at the right edge hold exactly the tree's hashes.
    for (level, index, want) in tiles_now.edge_tiles() {
        let found = stored_tile(level, index).await?;
        if found.as_ref() != Some(&want) {
            return Err(tile_mismatch(level, index, found.as_ref()));
        }
    }
    // No tile past the tree.
    for level in 0..=tiles::MAX_TILE_LEVEL {
        let hashes = size
            .checked_shr(u32::from(level) * tiles::TILE_HEIGHT)
            .unwrap_or(0);
        let beyond = store
            .audit_tile_range(level, hashes.div_ceil(TILE_WIDTH), u64::MAX >> 1)
            .await
            .map_err(storage)?;
        if let Some((_, index, _)) = beyond.first() {
            return Err(VerifyFailure::Tree(format!(
                "stored tile ({level}, {index}) lies beyond the tree of {size} entries (inserted)"
            )));
        }
    }
    // Sequenced entries not integrated yet: each checked on its own.
    let sequenced = state.sequenced;
    while expected < sequenced {
        let to = (expected + batch).min(sequenced);
        for (idx, leaf) in store.audit_entries(expected, to).await.map_err(storage)? {
            if u64::try_from(idx).ok() != Some(expected) {
                return Err(VerifyFailure::Entry {
                    index: expected,
                    reason: "missing (deleted)".into(),
                });
            }
            check_entry(expected, &leaf)?;
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
        .audit_entries(sequenced, u64::MAX >> 1)
        .await
        .map_err(storage)?;
    if let Some((idx, _)) = extra.first() {
        return Err(VerifyFailure::Entry {
            index: u64::try_from(*idx).unwrap_or(sequenced),
            reason: format!("beyond the log's size {sequenced} (inserted)"),
        });
    }
    // The root the proofs are served from: nodes hashed up from the tiles.
    let nodes = super::log::nodes_from_tiles(store, &merkle::root_coords(size))
        .await
        .map_err(storage)?;
    let stored_root = merkle::root_hash(size, |l, i| nodes.get(&(l, i)).copied());
    if stored_root != Some(range.root()) {
        return Err(VerifyFailure::Tree(
            "stored tiles do not match the entries; proofs would be wrong".into(),
        ));
    }
    if let Some(published) = rolled_back_from {
        return Err(VerifyFailure::Rollback { size, published });
    }
    Ok(VerifyReport {
        size,
        pending: sequenced - size,
        root: range.root(),
        checkpoints: checkpoints.len(),
    })
}

/// One entry decodes and holds its own index.
fn check_entry(idx: u64, leaf: &[u8]) -> Result<(), VerifyFailure> {
    let entry = AuditEntry::decode(leaf).map_err(|e| VerifyFailure::Entry {
        index: idx,
        reason: format!("undecodable leaf ({e})"),
    })?;
    if entry.index != idx {
        return Err(VerifyFailure::Entry {
            index: idx,
            reason: format!("holds entry {} (reordered or inserted)", entry.index),
        });
    }
    Ok(())
}
