//! The audit log service: one group-commit writer per process that
//! *sequences* entries, one *integrator* among all processes that builds
//! the tiles, signed checkpoints, and proofs.
//!
//! `record(entry).await` returns the entry's index only after the batch it
//! rode in is sequenced: stored durably at its index, in one short
//! transaction. Callers disclose nothing before that; if the store fails,
//! they fail closed with `audit_unavailable`. Integration (hashing the new
//! entries into the C2SP tiles) follows apart, by whichever process holds
//! the integrator's lease in the database; proofs and checkpoints cover
//! what is integrated, and an entry sequenced but not yet integrated is
//! *pending* (its proof follows within moments).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::entry::AuditRecord;
use super::indexes::{
    INDEX_EVERY, INDEX_WHEN_IDLE_FOR, index_residents, recipients_indexer, resident_indexer,
};
use super::integrator::{INTEGRATE_STEP, integrator};
use super::merkle::{self, Hash};
use super::note::{Checkpoint, NoteSigner};
use super::tiles;
use crate::domain::Timestamp;
use crate::storage::{
    CheckpointRow, DepositOutcome, DepositRow, DynStore, Sequenced, SequencedEntry, StorageError,
};

/// Largest batch one commit carries (bounded so one transaction stays short).
const MAX_BATCH: usize = 1024;

/// Most deposits one commit carries: they are checked and written in the
/// transaction that holds the log's lock, at most this many at once
/// (`storage::deposits::MAX_DEPOSIT_BATCH`).
const MAX_DEPOSITS: usize = 48;

/// After this long without a batch the writer reports the deposits it
/// carried since its last report (one log line per burst, for the operator
/// and the deposit benchmark, which compares with a ceiling of the same
/// batch size).
const REPORT_WHEN_IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a checkpoint waits for what was sequenced before it asked to
/// be integrated, before signing what is.
const CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// At most this many entries sequenced and not yet integrated. Past it the
/// writer waits for the integrator, at most [`BACKLOG_WAIT`], then refuses
/// (fail closed, `audit_unavailable`): an entry is tamper-evident only once
/// integrated, so a stalled integration must stop acknowledging, not let
/// the pending part grow without bound.
const MAX_BACKLOG: u64 = 4 * INTEGRATE_STEP;
const BACKLOG_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Full tiles kept in memory for proofs (8 KiB each; a full tile never
/// changes).
const TILE_CACHE: usize = 2048;

/// Full tiles by (tile level, tile index).
type TileCache = HashMap<(u8, u64), Arc<[u8]>>;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    /// A proof asked for a tree larger than the log.
    #[error("the log holds {size} entries")]
    TreeSizeTooLarge { size: u64 },
    /// An inclusion proof for a leaf outside the tree.
    #[error("leaf_index must be below tree_size")]
    LeafIndexOutOfRange,
    /// A consistency proof from a larger tree to a smaller one.
    #[error("from must not exceed to")]
    InvalidRange,
    #[error("audit log integrity: {0}")]
    Integrity(String),
}

impl From<StorageError> for AuditError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Integrity(m) => AuditError::Integrity(m),
            other => AuditError::Unavailable(other.to_string()),
        }
    }
}

pub(super) struct Pending {
    pub(super) record: AuditRecord,
    /// A data source's deposit the entry allows, written in the batch's
    /// transaction after the entries (at the time given).
    pub(super) deposit: Option<(DepositRow, Timestamp)>,
    pub(super) reply: oneshot::Sender<Result<(u64, Option<DepositOutcome>), AuditError>>,
}

/// What the writer measures of its commits, for `/metrics`
/// (`service::metrics` registers them). Counts of this process's writer.
#[derive(Clone)]
pub struct AuditMetrics {
    batches: prometheus::IntCounter,
    batch_entries: prometheus::Histogram,
    commit_seconds: prometheus::Histogram,
    lock_seconds: prometheus::Histogram,
    failures: prometheus::IntCounter,
    pub(super) integrated: prometheus::IntGauge,
}

/// A histogram of durations around a durable commit: 0.25 ms to 2 s.
fn commit_histogram(name: &str, help: &str) -> prometheus::Result<prometheus::Histogram> {
    prometheus::Histogram::with_opts(
        prometheus::HistogramOpts::new(name, help)
            .buckets(prometheus::exponential_buckets(0.000_25, 2.0, 14)?),
    )
}

impl AuditMetrics {
    pub fn new() -> prometheus::Result<Self> {
        Ok(Self {
            batches: prometheus::IntCounter::new(
                "audit_batches_total",
                "Batches of audit entries committed durably by this process's writer.",
            )?,
            batch_entries: prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(
                    "audit_batch_entries",
                    "Entries per committed batch (group commit).",
                )
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 11)?),
            )?,
            commit_seconds: commit_histogram(
                "audit_commit_duration_seconds",
                "Time to append and durably commit one batch.",
            )?,
            lock_seconds: commit_histogram(
                "audit_sequence_lock_seconds",
                "Time the log's lock (which serialises every process) was held to sequence one batch.",
            )?,
            failures: prometheus::IntCounter::new(
                "audit_append_failures_total",
                "Batches whose commit failed: every caller was refused (fail closed).",
            )?,
            integrated: prometheus::IntGauge::new(
                "audit_integrated_entries",
                "Entries integrated into the tiles, as this process last saw it.",
            )?,
        })
    }

    /// Batches sequenced, entries in them, and seconds the log's lock was
    /// held in all (for the benchmark's report).
    pub fn sequencing(&self) -> (u64, f64, f64) {
        (
            self.batches.get(),
            self.batch_entries.get_sample_sum(),
            self.lock_seconds.get_sample_sum(),
        )
    }

    /// The instruments, for a registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.batches.clone()),
            Box::new(self.batch_entries.clone()),
            Box::new(self.commit_seconds.clone()),
            Box::new(self.lock_seconds.clone()),
            Box::new(self.failures.clone()),
            Box::new(self.integrated.clone()),
        ]
    }
}

pub struct AuditLog {
    queue: mpsc::Sender<Pending>,
    store: DynStore,
    origin: String,
    /// The last checkpoint this process signed or checked (size, root):
    /// before signing a new one, the new tree must extend it, so a log
    /// rewritten in the database behind a running server is not re-signed.
    last_signed: std::sync::Mutex<Option<(u64, Hash)>>,
    /// Set once by the service that serves metrics; the writer records
    /// into it when set.
    metrics: Arc<OnceLock<AuditMetrics>>,
    /// Wakes this process's integrator (after each sequenced batch, or a
    /// caller waiting for integration).
    wake: Arc<Notify>,
    /// The integrated size as this process's integrator last saw it, and
    /// whether its last attempt failed (waiters then stop waiting).
    integrated: watch::Receiver<(u64, bool)>,
    /// Full tiles read for proofs (see [`TILE_CACHE`]).
    full_tiles: std::sync::Mutex<TileCache>,
}

impl AuditLog {
    /// Starts this process's writer task. `origin` is the checkpoint's
    /// origin line (the log's name).
    pub fn start(store: DynStore, origin: String) -> Arc<Self> {
        Self::start_with_batch(store, origin, MAX_BATCH)
    }

    /// As [`AuditLog::start`] with another batch limit; `1` gives one
    /// transaction per entry (the benchmark's baseline).
    pub fn start_with_batch(store: DynStore, origin: String, max_batch: usize) -> Arc<Self> {
        let max_batch = max_batch.clamp(1, MAX_BATCH);
        let (queue, rx) = mpsc::channel(4 * MAX_BATCH);
        let metrics = Arc::new(OnceLock::new());
        let wake = Arc::new(Notify::new());
        let (integrated_tx, integrated) = watch::channel((0, false));
        // Where writers do not exclude each other (PostgreSQL), the
        // resident index's steps under load run beside the writer (measured:
        // inline they took 28 % of its time under 64 writers); elsewhere
        // (SQLite) they take turns with the batches.
        let index_beside = store.writers_run_side_by_side().then(|| {
            let wake = Arc::new(Notify::new());
            tokio::spawn(resident_indexer(
                store.clone(),
                queue.downgrade(),
                wake.clone(),
            ));
            wake
        });
        tokio::spawn(writer(
            store.clone(),
            rx,
            max_batch,
            metrics.clone(),
            wake.clone(),
            integrated.clone(),
            index_beside,
        ));
        tokio::spawn(recipients_indexer(store.clone(), queue.downgrade()));
        tokio::spawn(integrator(
            store.clone(),
            queue.downgrade(),
            wake.clone(),
            integrated_tx,
            metrics.clone(),
        ));
        Arc::new(Self {
            queue,
            store,
            origin,
            last_signed: std::sync::Mutex::new(None),
            metrics,
            wake,
            integrated,
            full_tiles: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Makes the writer record its commits into `metrics` (once; a second
    /// call is ignored).
    pub fn attach_metrics(&self, metrics: AuditMetrics) {
        let _ = self.metrics.set(metrics);
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Appends one entry; resolves to its index once it is durable.
    pub async fn record(&self, record: AuditRecord) -> Result<u64, AuditError> {
        Ok(self.append(record, None).await?.0)
    }

    /// Appends one entry that allows a data source's deposit, and checks
    /// and writes the deposit in the same transaction, after the entry
    /// (`DepositStore::record_deposits`' checks): the entry and what it
    /// allowed are durable together, in one commit, or neither is.
    /// Resolves to the entry's index and the deposit's outcome.
    pub async fn record_deposit(
        &self,
        record: AuditRecord,
        deposit: DepositRow,
        now: Timestamp,
    ) -> Result<(u64, DepositOutcome), AuditError> {
        match self.append(record, Some((deposit, now))).await? {
            (index, Some(outcome)) => Ok((index, outcome)),
            (_, None) => Err(AuditError::Unavailable("no outcome for the deposit".into())),
        }
    }

    async fn append(
        &self,
        record: AuditRecord,
        deposit: Option<(DepositRow, Timestamp)>,
    ) -> Result<(u64, Option<DepositOutcome>), AuditError> {
        // Refuse an unencodable entry here, so it cannot fail a whole batch.
        record
            .encode(0)
            .map_err(|e| AuditError::Unavailable(format!("unencodable entry: {e}")))?;
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                record,
                deposit,
                reply,
            })
            .await
            .map_err(|_| AuditError::Unavailable("writer stopped".into()))?;
        answer
            .await
            .map_err(|_| AuditError::Unavailable("writer stopped".into()))?
    }

    /// The entries sequenced (acknowledged), integrated or not.
    pub async fn size(&self) -> Result<u64, AuditError> {
        Ok(self.store.audit_size().await?)
    }

    /// The entries integrated into the tree: what proofs and checkpoints
    /// cover.
    pub async fn integrated_size(&self) -> Result<u64, AuditError> {
        Ok(self.store.audit_integration().await?.integrated)
    }

    /// Waits (at most `wait`) until the tree holds the first `size` entries;
    /// true if it does.
    pub async fn await_integrated(&self, size: u64, wait: std::time::Duration) -> bool {
        let mut seen = self.integrated.clone();
        let reached = async {
            loop {
                let (reached, failing) = *seen.borrow_and_update();
                if reached >= size {
                    return true;
                }
                if failing {
                    return false;
                }
                self.wake.notify_one();
                if seen.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(wait, reached).await.unwrap_or(false)
    }

    async fn lookup(&self, coords: &[(u8, u64)]) -> Result<HashMap<(u8, u64), Hash>, AuditError> {
        let mut keys = tiles::tiles_of_nodes(coords);
        let mut found: TileCache = HashMap::new();
        {
            let cache = unpoisoned(&self.full_tiles);
            keys.retain(|k| match cache.get(k) {
                Some(t) => {
                    found.insert(*k, t.clone());
                    false
                }
                None => true,
            });
        }
        let fetched = self.store.audit_tiles(&keys).await?;
        {
            let mut cache = unpoisoned(&self.full_tiles);
            for (l, i, hashes) in fetched {
                let tile: Arc<[u8]> = Arc::from(hashes);
                if tile.len() as u64 == tiles::TILE_WIDTH * 32 {
                    if cache.len() >= TILE_CACHE {
                        cache.clear();
                    }
                    cache.insert((l, i), tile.clone());
                }
                found.insert((l, i), tile);
            }
        }
        Ok(tiles::nodes_from(coords, &found))
    }

    /// The root hash of the tree at `size` (≤ the current size).
    pub async fn root(&self, size: u64) -> Result<Hash, AuditError> {
        let nodes = self.lookup(&merkle::root_coords(size)).await?;
        merkle::root_hash(size, |l, i| nodes.get(&(l, i)).copied()).ok_or_else(|| {
            AuditError::Integrity(format!("nodes missing for the root of size {size}"))
        })
    }

    async fn check_size(&self, tree_size: u64) -> Result<(), AuditError> {
        let current = self.integrated_size().await?;
        if tree_size > current {
            return Err(AuditError::TreeSizeTooLarge { size: current });
        }
        Ok(())
    }

    /// RFC 9162 inclusion proof of `leaf_index` in the tree of `tree_size`.
    pub async fn inclusion_proof(
        &self,
        leaf_index: u64,
        tree_size: u64,
    ) -> Result<Vec<Hash>, AuditError> {
        if leaf_index >= tree_size {
            return Err(AuditError::LeafIndexOutOfRange);
        }
        self.check_size(tree_size).await?;
        let coords = merkle::inclusion_proof_coords(leaf_index, tree_size)
            .map_err(|e| AuditError::Integrity(e.to_string()))?;
        let nodes = self.lookup(&coords).await?;
        merkle::inclusion_proof(leaf_index, tree_size, |l, i| nodes.get(&(l, i)).copied())
            .map_err(|e| AuditError::Integrity(e.to_string()))
    }

    /// RFC 9162 consistency proof between the trees of sizes `from` and `to`.
    pub async fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, AuditError> {
        if from > to {
            return Err(AuditError::InvalidRange);
        }
        self.check_size(to).await?;
        let coords = merkle::consistency_proof_coords(from, to)
            .map_err(|e| AuditError::Integrity(e.to_string()))?;
        let nodes = self.lookup(&coords).await?;
        merkle::consistency_proof(from, to, |l, i| nodes.get(&(l, i)).copied())
            .map_err(|e| AuditError::Integrity(e.to_string()))
    }

    /// The latest checkpoint signed and stored, without signing a new one
    /// (what a sealed process publishes).
    pub async fn latest_checkpoint(&self) -> Result<Option<CheckpointRow>, AuditError> {
        Ok(self.store.audit_latest_checkpoint().await?)
    }

    /// The latest signed checkpoint, signing a new one if the integrated
    /// tree grew — at most one per second, so a checkpoint of the same
    /// second is reused.
    pub async fn checkpoint(
        &self,
        signer: &NoteSigner,
        now: Timestamp,
    ) -> Result<CheckpointRow, AuditError> {
        // What was signed before is read before the size: the log only grows,
        // so a concurrent signer can never make the size look smaller.
        let remembered = *unpoisoned(&self.last_signed);
        let latest = self.store.audit_latest_checkpoint().await?;
        if let Some(latest) = &latest
            && latest.created_at >= now
        {
            return Ok(latest.clone());
        }
        // What was acknowledged before this call is signed if it can be
        // integrated in time; what is integrated is signed in any case.
        let sequenced = self.size().await?;
        self.await_integrated(sequenced, CHECKPOINT_WAIT).await;
        let size = self.integrated_size().await?;
        if let Some(latest) = &latest
            && latest.tree_size as u64 == size
        {
            return Ok(latest.clone());
        }
        let root = self.root(size).await?;
        let previous = match &latest {
            Some(l) => Some((
                l.tree_size as u64,
                <[u8; 32]>::try_from(l.root.as_slice())
                    .map_err(|_| AuditError::Integrity("stored checkpoint root".into()))?,
            )),
            None => None,
        };
        for (old_size, old_root) in [remembered, previous].into_iter().flatten() {
            self.check_extends(old_size, &old_root, size, &root).await?;
        }
        let text = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
        }
        .to_text();
        let note = signer
            .sign(&text)
            .map_err(|e| AuditError::Integrity(format!("signing checkpoint: {e}")))?;
        let row = CheckpointRow {
            tree_size: i64::try_from(size).map_err(|_| AuditError::Integrity("size".into()))?,
            root: root.to_vec(),
            note,
            created_at: now,
        };
        self.store.audit_insert_checkpoint(&row).await?;
        *unpoisoned(&self.last_signed) = Some((size, root));
        Ok(row)
    }

    /// Refuses to sign a tree that does not extend an earlier signed one.
    async fn check_extends(
        &self,
        old_size: u64,
        old_root: &Hash,
        size: u64,
        root: &Hash,
    ) -> Result<(), AuditError> {
        let rewritten = |why: &str| {
            tracing::error!(
                old_size,
                size,
                why,
                "audit log no longer extends a signed checkpoint; refusing to sign"
            );
            AuditError::Integrity(format!(
                "the log does not extend the checkpoint of size {old_size}: {why}"
            ))
        };
        if size < old_size {
            return Err(rewritten("it shrank"));
        }
        if old_size == 0 {
            return Ok(());
        }
        if old_size == size {
            return if old_root == root {
                Ok(())
            } else {
                Err(rewritten("same size, other root"))
            };
        }
        let proof = self.consistency_proof(old_size, size).await?;
        merkle::verify_consistency(old_size, size, old_root, root, &proof)
            .map_err(|_| rewritten("inconsistent"))
    }
}

/// The group-commit writer. While one batch is being committed, everything
/// that arrives is queued into the next one; when the commit ends, every
/// caller of the batch is answered and the next batch starts at once. So the
/// durable commit, the real cost, is paid once per batch, not per entry.
async fn writer(
    store: DynStore,
    mut rx: mpsc::Receiver<Pending>,
    max_batch: usize,
    metrics: Arc<OnceLock<AuditMetrics>>,
    integrator: Arc<Notify>,
    integrated: watch::Receiver<(u64, bool)>,
    index_beside: Option<Arc<Notify>>,
) {
    type Commit = std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = (
                        Vec<Pending>,
                        Result<(Sequenced, Vec<Option<DepositOutcome>>), StorageError>,
                        std::time::Duration,
                    ),
                > + Send,
        >,
    >;
    let mut next: Vec<Pending> = Vec::new();
    let mut inflight: Option<Commit> = None;
    // The size after this writer's last batch: if no other process appended
    // since, the next batch is encoded before the lock is taken.
    let mut cached: Option<u64> = None;
    let mut open = true;
    // Unknown at start (a crash, or `coffre audit reindex`, may have left
    // entries unindexed): index once the writer is first idle.
    let mut unindexed: u64 = 1;
    // Deposits carried (whatever became of each), and the transactions
    // they rode in, since the last report.
    let (mut deposits, mut deposit_batches) = (0u64, 0u64);
    loop {
        // Under load, between two batches.
        if inflight.is_none() && unindexed >= INDEX_EVERY {
            match &index_beside {
                Some(indexer) => {
                    indexer.notify_one();
                    unindexed = 0;
                }
                None => unindexed = index_residents(&store, unindexed).await,
            }
        }
        if inflight.is_none() && !next.is_empty() {
            let mut take = next.len().min(max_batch);
            if let Some((past, _)) = next
                .iter()
                .enumerate()
                .filter(|(_, p)| p.deposit.is_some())
                .nth(MAX_DEPOSITS)
            {
                take = take.min(past);
            }
            let mut batch: Vec<Pending> = next.drain(..take).collect();
            let store = store.clone();
            let cached = cached.take();
            let mut integrated = integrated.clone();
            let integrator = integrator.clone();
            inflight = Some(Box::pin(async move {
                // A duration for metrics, not a time of the log's.
                let started = std::time::Instant::now();
                if let Some(size) = cached
                    && let Err(e) = within_backlog(size, &mut integrated, &integrator).await
                {
                    return (batch, Err(e), started.elapsed());
                }
                // The deposits, in one order of (resident, category,
                // source, record) for every batch of every process, so two
                // batches on PostgreSQL take the same keys in the same
                // order; stable, so two deposits about the same record
                // keep theirs.
                let mut carried: Vec<(usize, (DepositRow, Timestamp))> = batch
                    .iter_mut()
                    .enumerate()
                    .filter_map(|(i, p)| p.deposit.take().map(|d| (i, d)))
                    .collect();
                carried.sort_by(|(_, a), (_, b)| deposit_key(&a.0).cmp(&deposit_key(&b.0)));
                let (slots, rows): (Vec<usize>, Vec<(DepositRow, Timestamp)>) =
                    carried.into_iter().unzip();
                let records: Vec<&AuditRecord> = batch.iter().map(|p| &p.record).collect();
                let now = records.iter().map(|r| r.timestamp).max().unwrap_or(0);
                let encode = |first: u64| encode(first, &records);
                let outcome = store
                    .audit_sequence(now, cached, &encode, &rows)
                    .await
                    .and_then(|done| {
                        if done.deposits.len() != slots.len() {
                            return Err(StorageError::Integrity(format!(
                                "{} deposit outcomes for {} deposits",
                                done.deposits.len(),
                                slots.len()
                            )));
                        }
                        let mut outcomes = vec![None; batch.len()];
                        for (&slot, &outcome) in slots.iter().zip(&done.deposits) {
                            outcomes[slot] = Some(outcome);
                        }
                        Ok((done, outcomes))
                    });
                let took = started.elapsed();
                drop(records);
                (batch, outcome, took)
            }));
        }
        if !open && inflight.is_none() && next.is_empty() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(INDEX_WHEN_IDLE_FOR),
                if inflight.is_none() && next.is_empty() && unindexed > 0 =>
            {
                unindexed = index_residents(&store, unindexed).await;
            }
            _ = tokio::time::sleep(REPORT_WHEN_IDLE_FOR),
                if inflight.is_none() && next.is_empty() && deposit_batches > 0 =>
            {
                tracing::info!(
                    deposits,
                    transactions = deposit_batches,
                    "audit writer: deposits carried since its last report"
                );
                (deposits, deposit_batches) = (0, 0);
            }
            received = rx.recv(), if open && next.len() < 4 * max_batch => match received {
                Some(p) => next.push(p),
                None => open = false,
            },
            (batch, outcome, took) = async {
                match inflight.as_mut() {
                    Some(commit) => commit.await,
                    None => std::future::pending().await,
                }
            }, if inflight.is_some() => {
                inflight = None;
                match outcome {
                    Ok((done, outcomes)) if done.count == batch.len() as u64 => {
                        cached = Some(done.first + done.count);
                        integrator.notify_one();
                        let released = batch.len();
                        if let Some(m) = metrics.get() {
                            m.batches.inc();
                            m.batch_entries.observe(released as f64);
                            m.commit_seconds.observe(took.as_secs_f64());
                            m.lock_seconds.observe(done.lock_held.as_secs_f64());
                        }
                        unindexed = unindexed.saturating_add(released as u64);
                        if !done.deposits.is_empty() {
                            deposits += done.deposits.len() as u64;
                            deposit_batches += 1;
                        }
                        for ((i, p), outcome) in batch.into_iter().enumerate().zip(outcomes) {
                            let _ = p.reply.send(Ok((done.first + i as u64, outcome)));
                        }
                        // Callers just answered usually append again at once:
                        // give them a moment so they ride the next commit
                        // instead of waiting for the one after.
                        for _ in 0..8 {
                            while next.len() < max_batch {
                                match rx.try_recv() {
                                    Ok(p) => next.push(p),
                                    Err(_) => break,
                                }
                            }
                            if next.len() >= released.min(max_batch) {
                                break;
                            }
                            tokio::task::yield_now().await;
                        }
                    }
                    outcome => {
                        let e = match outcome {
                            Err(e) => e,
                            Ok((done, _)) => StorageError::Integrity(format!(
                                "{} entries sequenced for a batch of {}",
                                done.count,
                                batch.len()
                            )),
                        };
                        if let Some(m) = metrics.get() {
                            m.failures.inc();
                        }
                        tracing::error!(error = %e, entries = batch.len(), "audit append failed; failing closed");
                        for p in batch {
                            let _ = p.reply.send(Err(AuditError::Unavailable(e.to_string())));
                        }
                    }
                }
            }
        }
    }
}

/// The order deposits are written in within a batch.
fn deposit_key(row: &DepositRow) -> (&str, &str, &str, &str) {
    (
        row.resident_id.as_str(),
        &row.record.category,
        &row.source_id,
        &row.source_record_id,
    )
}

/// Waits until the entries sequenced (`size`, this writer's last idea) are
/// at most [`MAX_BACKLOG`] ahead of the integrated tree, as this process's
/// integrator sees it; refuses after [`BACKLOG_WAIT`].
async fn within_backlog(
    size: u64,
    integrated: &mut watch::Receiver<(u64, bool)>,
    integrator: &Notify,
) -> Result<(), StorageError> {
    let caught_up = async {
        loop {
            if size.saturating_sub(integrated.borrow_and_update().0) <= MAX_BACKLOG {
                return true;
            }
            integrator.notify_one();
            if integrated.changed().await.is_err() {
                return false;
            }
        }
    };
    match tokio::time::timeout(BACKLOG_WAIT, caught_up).await {
        Ok(true) => Ok(()),
        _ => Err(StorageError::Other(format!(
            "integration has fallen more than {MAX_BACKLOG} entries behind: refusing to acknowledge more"
        ))),
    }
}

/// The guarded value even if a panicking holder poisoned the lock: what
/// these locks guard (a cache, the last signed tree) stays valid whatever
/// a holder was doing.
fn unpoisoned<T>(lock: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A batch's leaves once its first index is known.
fn encode(first: u64, records: &[&AuditRecord]) -> Result<Vec<SequencedEntry>, String> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let leaf = r.encode(first + i as u64).map_err(|e| e.to_string())?;
            Ok((leaf, r.resident_id.clone(), r.timestamp))
        })
        .collect()
}

/// The hashes of these tree nodes, each hashed up from the one stored tile
/// that holds it (one query for all); a node the tiles do not reach is
/// absent from the answer.
pub async fn nodes_from_tiles(
    store: &DynStore,
    coords: &[(u8, u64)],
) -> Result<HashMap<(u8, u64), Hash>, StorageError> {
    let stored: HashMap<(u8, u64), Vec<u8>> = store
        .audit_tiles(&tiles::tiles_of_nodes(coords))
        .await?
        .into_iter()
        .map(|(l, i, h)| ((l, i), h))
        .collect();
    Ok(tiles::nodes_from(coords, &stored))
}

/// The writer and its proofs on a real SQLite store (the API tests drive
/// them through the routes on both backends; these are the library's own,
/// fast enough for cargo-mutants to run on every mutant).
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::audit::integrator::{LEASE_MS, lease_clock};
    use crate::audit::merkle::CompactRange;

    const ORIGIN: &str = "test.example/coffre/audit";

    async fn store(dir: &tempfile::TempDir) -> DynStore {
        let path = dir.path().join("log.db");
        Arc::new(crate::storage::SqliteStore::open(&path).await.unwrap())
    }

    /// A second connection to the test's database, to damage it as an
    /// attacker with write access would.
    async fn raw_pool(dir: &tempfile::TempDir) -> sqlx::SqlitePool {
        sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("log.db").display()))
            .await
            .unwrap()
    }

    fn record(n: u64) -> AuditRecord {
        AuditRecord::new("agent-1", "dpo", "test.act", 1_000 + n as i64).allow("test")
    }

    /// The stored leaf hash of entry `idx`.
    async fn leaf_at(store: &DynStore, idx: u64) -> Hash {
        let rows = store.audit_entries(idx, idx + 1).await.unwrap();
        assert_eq!(rows.len(), 1, "entry {idx}");
        merkle::leaf_hash(&rows[0].1)
    }

    /// The root recomputed from the stored leaves alone.
    async fn recomputed_root(store: &DynStore, size: u64) -> Hash {
        let mut range = CompactRange::new();
        for (_, leaf) in store.audit_entries(0, size).await.unwrap() {
            range.append(merkle::leaf_hash(&leaf)).unwrap();
        }
        range.root()
    }

    async fn append(log: &Arc<AuditLog>, n: u64) -> Vec<u64> {
        let calls = (0..n).map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.record(record(i)).await.unwrap() })
        });
        let mut out = Vec::new();
        for c in calls.collect::<Vec<_>>() {
            out.push(c.await.unwrap());
        }
        // Proofs cover what is integrated: this process's integrator is
        // woken by each batch.
        let size = log.size().await.unwrap();
        assert!(
            log.await_integrated(size, std::time::Duration::from_secs(20))
                .await,
            "not integrated"
        );
        out
    }

    #[tokio::test]
    async fn concurrent_appends_get_every_index_once_and_the_tree_is_the_leaves() {
        for max_batch in [1, 7, MAX_BATCH] {
            let dir = tempfile::tempdir().unwrap();
            let store = store(&dir).await;
            let log = AuditLog::start_with_batch(store.clone(), ORIGIN.into(), max_batch);
            let mut got = append(&log, 45).await;
            got.sort_unstable();
            assert_eq!(got, (0..45).collect::<Vec<_>>(), "batches of {max_batch}");
            assert_eq!(log.size().await.unwrap(), 45);
            assert_eq!(
                log.root(45).await.unwrap(),
                recomputed_root(&store, 45).await,
                "batches of {max_batch}"
            );
            // Every smaller tree's root too (the stored nodes serve them).
            for size in [1, 2, 3, 16, 17, 44] {
                assert_eq!(
                    log.root(size).await.unwrap(),
                    recomputed_root(&store, size).await,
                    "size {size}, batches of {max_batch}"
                );
            }
            // An entry carries its own index.
            let rows = store.audit_entries(10, 11).await.unwrap();
            let entry = crate::audit::AuditEntry::decode(&rows[0].1).unwrap();
            assert_eq!(entry.index, 10);
        }
    }

    #[tokio::test]
    async fn proofs_verify_and_bad_ranges_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let log = AuditLog::start(store.clone(), ORIGIN.into());
        append(&log, 21).await;
        for size in [1u64, 2, 5, 8, 13, 21] {
            let root = log.root(size).await.unwrap();
            for leaf in [0, size / 2, size - 1] {
                let proof = log.inclusion_proof(leaf, size).await.unwrap();
                merkle::verify_inclusion(leaf, size, &leaf_at(&store, leaf).await, &proof, &root)
                    .unwrap_or_else(|e| panic!("inclusion of {leaf} in {size}: {e}"));
            }
            for from in [1, size / 2, size] {
                if from == 0 {
                    continue;
                }
                let proof = log.consistency_proof(from, size).await.unwrap();
                let old = log.root(from).await.unwrap();
                merkle::verify_consistency(from, size, &old, &root, &proof)
                    .unwrap_or_else(|e| panic!("consistency {from}..{size}: {e}"));
            }
        }
        assert!(matches!(
            log.inclusion_proof(21, 21).await,
            Err(AuditError::LeafIndexOutOfRange)
        ));
        assert!(matches!(
            log.inclusion_proof(3, 22).await,
            Err(AuditError::TreeSizeTooLarge { size: 21 })
        ));
        assert!(matches!(
            log.consistency_proof(5, 4).await,
            Err(AuditError::InvalidRange)
        ));
        assert!(matches!(
            log.consistency_proof(5, 22).await,
            Err(AuditError::TreeSizeTooLarge { size: 21 })
        ));
        // The edges that are allowed.
        log.inclusion_proof(20, 21).await.unwrap();
        log.consistency_proof(21, 21).await.unwrap();
    }

    #[tokio::test]
    async fn checkpoints_are_signed_when_the_log_grew_at_most_once_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let log = AuditLog::start(store.clone(), ORIGIN.into());
        let signer = NoteSigner::from_seed(ORIGIN, &[7u8; 32]).unwrap();
        let verifier = super::super::note::NoteVerifier::parse(&signer.verifier_key()).unwrap();
        append(&log, 5).await;
        let first = log.checkpoint(&signer, 100).await.unwrap();
        assert_eq!(first.tree_size, 5);
        assert_eq!(first.created_at, 100);
        let text = verifier.verify(&first.note).unwrap();
        let cp = Checkpoint::parse(&text).unwrap();
        assert_eq!((cp.origin.as_str(), cp.size), (ORIGIN, 5));
        assert_eq!(cp.root, log.root(5).await.unwrap());
        assert_eq!(first.root, cp.root.to_vec());
        // Nothing new: the same checkpoint, even later.
        let again = log.checkpoint(&signer, 200).await.unwrap();
        assert_eq!((again.tree_size, again.created_at), (5, 100));
        // Grown, but within the same second: reused.
        append(&log, 3).await;
        let same_second = log.checkpoint(&signer, 100).await.unwrap();
        assert_eq!((same_second.tree_size, same_second.created_at), (5, 100));
        // Grown, a second later: a new one over 8.
        let next = log.checkpoint(&signer, 101).await.unwrap();
        assert_eq!((next.tree_size, next.created_at), (8, 101));
        assert_eq!(store.audit_checkpoints().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_log_rewritten_behind_the_writer_is_not_signed_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let log = AuditLog::start(store.clone(), ORIGIN.into());
        let signer = NoteSigner::from_seed(ORIGIN, &[7u8; 32]).unwrap();
        append(&log, 6).await;
        log.checkpoint(&signer, 100).await.unwrap();
        append(&log, 4).await;
        // Another history of the same length: a node under the old
        // checkpoint replaced (as a rewrite that kept the tree's shape).
        let raw = raw_pool(&dir).await;
        sqlx::query(
            "UPDATE audit_tiles SET hashes = $1 || substr(hashes, 33) WHERE level = 0 AND idx = 0",
        )
        .bind(vec![9u8; 32])
        .execute(&raw)
        .await
        .unwrap();
        let refused = log.checkpoint(&signer, 101).await;
        match refused {
            Err(AuditError::Integrity(why)) => {
                assert!(
                    why.contains("does not extend the checkpoint of size 6"),
                    "{why}"
                )
            }
            other => panic!("signed over a rewritten log: {other:?}"),
        }
        assert_eq!(store.audit_checkpoints().await.unwrap().len(), 1);
        raw.close().await;
    }

    /// What `checkpoint` compares a new tree with, beyond the stored
    /// latest: a log cut below a signed size is refused as shrunk; with the
    /// stored checkpoints deleted, the same log is signed again, but one of
    /// the same size with another root is refused.
    #[tokio::test]
    async fn the_last_signed_tree_is_remembered_and_a_shrunk_or_forked_log_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let log = AuditLog::start(store.clone(), ORIGIN.into());
        let signer = NoteSigner::from_seed(ORIGIN, &[7u8; 32]).unwrap();
        append(&log, 10).await;
        log.checkpoint(&signer, 100).await.unwrap();
        let raw = raw_pool(&dir).await;
        let run = |sql: &'static str| {
            let raw = raw.clone();
            async move { sqlx::query(sql).execute(&raw).await.unwrap() }
        };
        // The stored checkpoints deleted: the same log is signed again (the
        // process remembers what it signed, and this extends it).
        run("DELETE FROM audit_checkpoints").await;
        let again = log.checkpoint(&signer, 101).await.unwrap();
        assert_eq!(again.tree_size, 10);
        // The same size, another root: refused.
        run("DELETE FROM audit_checkpoints").await;
        run("UPDATE audit_tiles SET hashes = zeroblob(32) || substr(hashes, 33) WHERE level = 0 AND idx = 0").await;
        match log.checkpoint(&signer, 102).await {
            Err(AuditError::Integrity(why)) => {
                assert!(why.contains("same size, other root"), "{why}")
            }
            other => panic!("signed a forked log: {other:?}"),
        }
        // Cut below what was signed: refused as shrunk.
        run("DELETE FROM audit_entries WHERE idx >= 8").await;
        run("UPDATE audit_head SET size = 8").await;
        run("UPDATE audit_integration SET size = 8").await;
        match log.checkpoint(&signer, 103).await {
            Err(AuditError::Integrity(why)) => assert!(why.contains("it shrank"), "{why}"),
            other => panic!("signed a shrunk log: {other:?}"),
        }
        raw.close().await;
    }

    /// The recipients index (art. 19) catches up with the log once it is
    /// quiet, beside the writer: a partner's allowed read is found there.
    #[tokio::test]
    async fn the_recipients_index_catches_up_when_the_log_is_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let log = AuditLog::start(store.clone(), ORIGIN.into());
        for category in ["contact", "housing"] {
            log.record(
                AuditRecord::new("labo", "partner", "data.read", 1)
                    .resident(Some("r1"))
                    .category(Some(category.to_string()))
                    .allow("consent"),
            )
            .await
            .unwrap();
        }
        append(&log, 3).await;
        // Indexed within a few ticks of a second once nothing is appended
        // (polled, so a slow machine only waits longer).
        let mut caught_up = false;
        for _ in 0..100 {
            let (upto, size) = store.audit_recipients_cursor().await.unwrap();
            if upto == size && size == 5 {
                caught_up = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(caught_up, "the recipients index did not catch up");
        let r1 = crate::domain::ResidentId::parse("r1").unwrap();
        let (mut pairs, upto) = store.audit_recipients_of(&r1).await.unwrap();
        pairs.sort();
        assert_eq!(upto, 5);
        assert_eq!(
            pairs,
            vec![
                ("labo".to_string(), "contact".to_string()),
                ("labo".to_string(), "housing".to_string())
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_caller_closed_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let log = AuditLog::start(store.clone(), ORIGIN.into());
        let metrics = AuditMetrics::new().unwrap();
        log.attach_metrics(metrics.clone());
        append(&log, 3).await;
        assert!(metrics.batches.get() >= 1);
        let raw = raw_pool(&dir).await;
        sqlx::query("DROP TABLE audit_entries")
            .execute(&raw)
            .await
            .unwrap();
        raw.close().await;
        let callers: Vec<_> = (0..6)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.record(record(9 + i)).await })
            })
            .collect();
        for c in callers {
            match c.await.unwrap() {
                Err(AuditError::Unavailable(_)) => {}
                other => panic!("acknowledged without a commit: {other:?}"),
            }
        }
        assert!(metrics.failures.get() >= 1);
        assert_eq!(store.audit_size().await.unwrap(), 3);
    }

    #[test]
    fn a_batch_is_numbered_from_its_first_index() {
        let records: Vec<AuditRecord> = (0..3).map(record).collect();
        let refs: Vec<&AuditRecord> = records.iter().collect();
        let leaves = encode(40, &refs).unwrap();
        let idx: Vec<u64> = leaves
            .iter()
            .map(|(leaf, ..)| crate::audit::AuditEntry::decode(leaf).unwrap().index)
            .collect();
        assert_eq!(idx, vec![40, 41, 42]);
    }

    /// Two logs on one database (two processes): one integrator at a time.
    /// The first holds the lease while it lives; once it stops, giving the
    /// lease up, the second integrates what both sequenced; and an
    /// integrator whose lease was taken over cannot write.
    #[tokio::test]
    async fn one_integrator_at_a_time_and_another_takes_over() {
        let dir = tempfile::tempdir().unwrap();
        let first = AuditLog::start(store(&dir).await, ORIGIN.into());
        append(&first, 5).await;
        let store2 = store(&dir).await;
        let state = store2.audit_integration().await.unwrap();
        let holder = state.holder.clone().expect("the first log holds the lease");
        assert_eq!(state.integrated, 5);
        // Another holder is refused while the lease runs.
        assert!(
            !store2
                .audit_claim_integrator("other", lease_clock(), lease_clock() + 1)
                .await
                .unwrap()
        );
        // The second log sequences; the first (the holder) integrates it.
        let second = AuditLog::start(store2.clone(), ORIGIN.into());
        let got = append(&second, 4).await;
        assert!(got.iter().all(|i| (5..9).contains(i)), "{got:?}");
        assert_eq!(
            store2.audit_integration().await.unwrap().holder.as_deref(),
            Some(holder.as_str())
        );
        drop(first);
        // Stopped: the lease is given up within a poll, and the second log
        // takes over with its next batch.
        let mut taken = false;
        for _ in 0..100 {
            append(&second, 1).await;
            let h = store2.audit_integration().await.unwrap().holder;
            if h.is_some() && h.as_deref() != Some(holder.as_str()) {
                taken = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(taken, "nobody took the lease over");
        let size = second.size().await.unwrap();
        assert_eq!(second.integrated_size().await.unwrap(), size);
        assert_eq!(
            second.root(size).await.unwrap(),
            recomputed_root(&store2, size).await
        );
        // The old holder's write is fenced off.
        assert!(
            !store2
                .audit_integrate(&holder, lease_clock() + LEASE_MS, size, size + 1, &[])
                .await
                .unwrap()
        );
    }
}
