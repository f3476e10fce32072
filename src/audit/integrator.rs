//! The integrator: whichever process holds the lease in
//! `audit_integration` hashes the entries sequenced (by any process) into
//! the C2SP tiles, one fenced step at a time; the others watch the
//! integrated size for their waiters and take over when the lease expires.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tokio::sync::{Notify, mpsc, watch};

use super::log::{AuditMetrics, Pending};
use super::merkle;
use super::tiles::{self, TileAppender};
use crate::storage::{DynStore, StorageError};

/// Most entries one integration transaction covers (idem).
pub(super) const INTEGRATE_STEP: u64 = 16_384;

/// How long the integrator's lease lasts without renewal: how long the
/// other processes wait before taking over from one that died.
pub(super) const LEASE_MS: i64 = 3_000;

/// How often an integrator looks for entries other processes sequenced
/// (its own process wakes it after each batch).
const INTEGRATOR_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// At most one integration step per this interval while entries keep
/// coming: each step is a durable commit taking turns with the sequencer's
/// on the writer's connection, so integrating after every batch halved the
/// appends (measured: a step after each 64-entry batch held the connection
/// 32 % of the time). This way many batches share one step, and the
/// integrating process's entries are pending at most about this long
/// (another process's are seen within [`INTEGRATOR_POLL`]). A step that
/// follows a quiet moment as long, or a full step (catching up), runs at
/// once; a failed one waits as long before its retry.
const INTEGRATE_GATHER: std::time::Duration = std::time::Duration::from_millis(100);

/// Milliseconds since the epoch, for the integrator's lease: a matter of
/// processes being alive in real time, not a time of the log's (entries
/// carry the time their caller passed).
pub(super) fn lease_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The integrator: in every process, one task that integrates sequenced
/// entries into the tiles whenever this process holds the lease (taken
/// through the database when it is free or expired, renewed while there is
/// work), and otherwise watches the integrated size for waiters. Stops with
/// the log, giving the lease up.
pub(super) async fn integrator(
    store: DynStore,
    log: mpsc::WeakSender<Pending>,
    wake: Arc<Notify>,
    integrated: watch::Sender<(u64, bool)>,
    metrics: Arc<OnceLock<AuditMetrics>>,
) {
    // Names the process, so an operator (and the takeover test) can tell
    // which one integrates; unique per log even within one process.
    let holder = format!("pid {} {}", std::process::id(), uuid::Uuid::new_v4());
    // The integrated size this process's last failed step started from:
    // waiters stop waiting until the tree moves past it (whoever moves it).
    let mut failed_at: Option<u64> = None;
    // When the last step that was not a full one started: a duration
    // between integrations, not a time of the log's.
    let mut last_step: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(INTEGRATOR_POLL) => {}
        }
        if log.upgrade().is_none() {
            let _ = store.audit_release_integrator(&holder).await;
            return;
        }
        let Ok(state) = store.audit_integration().await else {
            continue;
        };
        let publish = |size: u64, failing: bool| {
            integrated.send_if_modified(|v| {
                let moved = *v != (size, failing);
                *v = (size, failing);
                moved
            });
            if let Some(m) = metrics.get() {
                m.integrated.set(i64::try_from(size).unwrap_or(i64::MAX));
            }
        };
        if failed_at.is_some_and(|at| state.integrated > at) {
            failed_at = None;
        }
        publish(state.integrated, failed_at.is_some());
        if state.integrated >= state.sequenced {
            continue;
        }
        let now = lease_clock();
        let mine = state.holder.as_deref() == Some(holder.as_str());
        if !mine && state.holder.is_some() && state.lease_until >= now {
            continue;
        }
        let mut from = state.integrated;
        let mut lease_until = if mine { state.lease_until } else { 0 };
        loop {
            if let Some(gap) = last_step.and_then(|t| INTEGRATE_GATHER.checked_sub(t.elapsed())) {
                tokio::time::sleep(gap).await;
            }
            // A log dropped while others keep sequencing: stop here, lease
            // given up, rather than integrate for them.
            if log.upgrade().is_none() {
                let _ = store.audit_release_integrator(&holder).await;
                return;
            }
            let now = lease_clock();
            if lease_until - now < LEASE_MS / 2 {
                match store
                    .audit_claim_integrator(&holder, now, now + LEASE_MS)
                    .await
                {
                    // Each step then renews it with its own commit.
                    Ok(true) => {}
                    _ => break,
                }
            }
            let renewed = lease_clock() + LEASE_MS;
            let started = std::time::Instant::now();
            match integrate_step(&store, &holder, renewed, from).await {
                Ok(Some(to)) => {
                    last_step = (to - from < INTEGRATE_STEP).then_some(started);
                    failed_at = None;
                    lease_until = renewed;
                    from = to;
                    publish(to, false);
                }
                Ok(None) => break,
                Err(e) => {
                    // Entries stay sequenced (acknowledged, durable) and
                    // pending; retried at the next wake-up; past the backlog
                    // bound the writers refuse. Said once per run of
                    // failures.
                    if failed_at.is_none() {
                        tracing::error!(error = %e, from, "audit integration failed; entries stay pending");
                    }
                    failed_at = Some(from);
                    last_step = Some(started);
                    publish(from, true);
                    break;
                }
            }
        }
    }
}

/// Integrates at most [`INTEGRATE_STEP`] entries from `from`; the new
/// integrated size, or `None` when there is nothing to do (or another
/// integrator moved first).
async fn integrate_step(
    store: &DynStore,
    holder: &str,
    lease_until: i64,
    from: u64,
) -> Result<Option<u64>, StorageError> {
    let integrity = StorageError::Integrity;
    let sequenced = store.audit_size().await?;
    let to = sequenced.min(from.saturating_add(INTEGRATE_STEP));
    if to <= from {
        return Ok(None);
    }
    let edge: Vec<(u8, u64)> = tiles::edge(from)
        .into_iter()
        .map(|(l, i, _)| (l, i))
        .collect();
    let mut stored: HashMap<(u8, u64), Vec<u8>> = store
        .audit_tiles(&edge)
        .await?
        .into_iter()
        .map(|(l, i, h)| ((l, i), h))
        .collect();
    let edge_tiles: Vec<(u8, u64, Vec<u8>)> = edge
        .iter()
        .filter_map(|k| stored.remove(k).map(|h| (k.0, k.1, h)))
        .collect();
    let mut appender = TileAppender::new(from, &edge_tiles).map_err(integrity)?;
    for (idx, leaf) in store.audit_entries(from, to).await? {
        // The integrator never hashes into the tree an entry that is not
        // where it says it is (`coffre audit verify` says which).
        let at = appender.size();
        let entry = super::AuditEntry::decode(&leaf)
            .map_err(|e| integrity(format!("entry {at} undecodable: {e}")))?;
        if u64::try_from(idx).ok() != Some(at) || entry.index != at {
            return Err(integrity(format!("entry {at} missing or out of place")));
        }
        appender
            .append(merkle::leaf_hash(&leaf))
            .map_err(integrity)?;
    }
    if appender.size() != to {
        return Err(integrity(format!(
            "entries {}..{to} missing",
            appender.size()
        )));
    }
    Ok(store
        .audit_integrate(holder, lease_until, from, to, &appender.tiles())
        .await?
        .then_some(to))
}
