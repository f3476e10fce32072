//! Group commit for deposits: one writer per process stores the sealed
//! deposits of every stream in flight in as few transactions as it can.
//!
//! A deposit line's audit entry is durable before its version is handed
//! here (the service asks the decision first); this only changes how many
//! deposits share one durable commit. Each deposit is still checked and
//! written on its own inside the transaction (`DepositStore::record_deposits`,
//! a savepoint each), so one refused deposit never touches another; and
//! `store` resolves only after the commit its deposit rode in (or with that
//! deposit's own error: after a failed batch each deposit is tried alone,
//! so one bad row cannot fail the lines beside it).
//!
//! Why: SQLite commits about as many transactions per second as the disk
//! syncs; one transaction per line put a stream at a quarter of what the
//! same disk stores (BENCHMARKS row 7).

use tokio::sync::{mpsc, oneshot};

use crate::domain::Timestamp;
use crate::storage::{DepositOutcome, DepositRow, DynStore, StorageError, StorageResult};

/// Most deposits one transaction carries: it holds SQLite's write lock for
/// its length, and on PostgreSQL each deposit is a savepoint (past 64
/// subtransactions a backend's cache overflows and every session's
/// snapshots slow down).
const MAX_BATCH: usize = 48;

struct Pending {
    row: DepositRow,
    now: Timestamp,
    reply: oneshot::Sender<StorageResult<DepositOutcome>>,
}

/// The handle use cases store deposits through.
pub struct DepositWriter {
    queue: mpsc::Sender<Pending>,
}

impl DepositWriter {
    /// Starts this process's writer task.
    pub fn start(store: DynStore) -> Self {
        let (queue, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(writer(store, rx));
        Self { queue }
    }

    /// Stores one deposit at `now`; resolves once the transaction it rode
    /// in is committed (or rolled back: then with the error).
    pub async fn store(&self, row: DepositRow, now: Timestamp) -> StorageResult<DepositOutcome> {
        let stopped = || StorageError::Unavailable("deposit writer stopped".into());
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { row, now, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// After this long without a deposit the writer reports what it stored
/// since its last report (one log line per burst, for the operator and the
/// deposit benchmark, which compares with a ceiling of the same batch size).
const REPORT_WHEN_IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(1);

async fn writer(store: DynStore, mut rx: mpsc::Receiver<Pending>) {
    let (mut deposits, mut transactions) = (0u64, 0u64);
    loop {
        let first = match tokio::time::timeout(REPORT_WHEN_IDLE_FOR, rx.recv()).await {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(_) => {
                if transactions > 0 {
                    tracing::info!(
                        deposits,
                        transactions,
                        "deposit writer: deposits stored since its last report"
                    );
                    (deposits, transactions) = (0, 0);
                }
                continue;
            }
        };
        // Whatever queued while the previous transaction committed rides
        // in this one.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        // In one order of (resident, category, source, record) for every
        // batch of every process, so two batches on PostgreSQL lock the
        // same rows in the same order (no deadlock between them); stable,
        // so two deposits about the same record keep their order.
        batch.sort_by(|a, b| deposit_key(&a.row).cmp(&deposit_key(&b.row)));
        let (rows, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| ((p.row, p.now), p.reply)).unzip();
        deposits += rows.len() as u64;
        transactions += 1;
        match store.record_deposits(&rows).await {
            Ok(outcomes) if outcomes.len() == rows.len() => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            // The database itself failed (unreachable, its disk, a pool
            // timeout): so would each deposit alone. Every line of the
            // batch gets the error at once, rather than a wait each.
            Err(StorageError::Unavailable(e)) => {
                tracing::error!(error = %e, deposits = rows.len(), "deposit batch failed: database unavailable");
                for reply in replies {
                    let _ = reply.send(Err(StorageError::Unavailable(e.clone())));
                }
            }
            failed => {
                // Nothing of the batch stayed: each deposit alone, so an
                // error that is one deposit's fails that line only.
                if let Err(e) = failed {
                    tracing::warn!(error = %e, deposits = rows.len(), "deposit batch failed; storing one by one");
                }
                for (reply, (row, now)) in replies.into_iter().zip(rows) {
                    let _ = reply.send(store.record_deposit(&row, now).await);
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::storage::RecordRow;

    fn row(n: usize) -> DepositRow {
        DepositRow {
            source_id: "s1".into(),
            source_name: "Source 1".into(),
            source_record_id: format!("rec-{n}"),
            resident_id: crate::domain::ResidentId::parse("r1").unwrap(),
            content_digest: "d".into(),
            observed_at: 1,
            via_link: false,
            record: RecordRow {
                id: format!("v-{n}"),
                category: "contact".into(),
                version: 1,
                sealed: vec![0; 8],
                created_at: 2,
                origin: Default::default(),
            },
        }
    }

    /// A database that cannot serve (here: its pool closed under the
    /// writer) fails every deposit of the batch with `Unavailable` (503
    /// to the source, which sends the lines again), at once, and the writer
    /// keeps serving: nothing is acknowledged that was not stored.
    #[tokio::test]
    async fn an_unavailable_database_fails_every_queued_deposit_and_the_writer_lives_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::storage::open(&crate::config::DatabaseUrl::Sqlite {
            path: dir.path().join("d.db"),
        })
        .await
        .unwrap();
        let writer = std::sync::Arc::new(DepositWriter::start(store.clone()));
        store.close().await;
        let lines: Vec<_> = (0..10)
            .map(|n| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.store(row(n), 3).await })
            })
            .collect();
        // The database's own error, not the writer's death.
        let the_database = |answer: StorageResult<DepositOutcome>| match answer {
            Err(StorageError::Unavailable(e)) if !e.contains("writer stopped") => {}
            other => panic!("a deposit was answered {other:?} with no database"),
        };
        for line in lines {
            the_database(line.await.unwrap());
        }
        // The writer is still there for the next line.
        the_database(writer.store(row(11), 3).await);
    }
}
