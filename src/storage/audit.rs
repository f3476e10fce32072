//! The audit log as stored: entries *sequenced* by group commits under the
//! head row's lock (the moment an entry is acknowledged), the tree as C2SP
//! tlog-tiles written by the one *integrator* holding the lease, the
//! resident and recipients indexes the writer fills when idle, and the
//! signed checkpoints. The tiles themselves are computed in `audit`;
//! storage writes what it is handed.
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::{Backend, StorageError, StorageResult};
use crate::domain::Timestamp;

/// One sequenced entry: (leaf bytes, resident concerned, created_at).
pub type SequencedEntry = (Vec<u8>, Option<String>, i64);

/// Encodes a batch once its first index is known (entries carry their own
/// index). Called at most twice: before the transaction from the writer's
/// idea of the size, and again under the lock if another process appended.
pub type AuditEncoder<'a> = &'a (dyn Fn(u64) -> Result<Vec<SequencedEntry>, String> + Send + Sync);

/// What one sequencing commit did.
#[derive(Clone, Debug)]
pub struct Sequenced {
    /// The first entry's index; the batch holds `first..first + count`.
    pub first: u64,
    pub count: u64,
    /// How long the log's lock was held (from the transaction's first
    /// statement to its durable commit): what serialises every process.
    pub lock_held: std::time::Duration,
    /// What became of the deposits that rode in the batch's transaction,
    /// in their order.
    pub deposits: Vec<super::DepositOutcome>,
}

/// The integration's state: how far the tiles reach, how far the entries
/// do, and who holds the integrator's lease until when (ms since epoch).
#[derive(Clone, Debug)]
pub struct IntegrationState {
    pub integrated: u64,
    pub sequenced: u64,
    pub holder: Option<String>,
    pub lease_until: i64,
}

/// One stored tile: (tile level, tile index, hashes concatenated).
pub type TileRow = (u8, u64, Vec<u8>);

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CheckpointRow {
    pub tree_size: i64,
    pub root: Vec<u8>,
    pub note: String,
    pub created_at: i64,
}

/// Many rows as one JSON document and one blob, so an integration step's
/// tiles (some 8 KiB each, a varying number) take one INSERT whatever their
/// number: every statement is a round trip to the database (through sqlx's
/// worker thread on SQLite). A batch of entries is a multi-row VALUES list
/// instead (see `insert_entries`).
pub(crate) struct PackedRows {
    /// `[[…keys, offset in blob, length], …]`
    pub(super) rows: String,
    pub(super) blob: Vec<u8>,
}

impl PackedRows {
    /// Tiles: `[level, index, offset, length]`.
    pub(crate) fn tiles(tiles: &[TileRow]) -> StorageResult<Self> {
        let mut blob = Vec::with_capacity(tiles.iter().map(|t| t.2.len()).sum());
        let mut rows = Vec::with_capacity(tiles.len());
        for (level, idx, hashes) in tiles {
            rows.push((*level, *idx, blob.len(), hashes.len()));
            blob.extend_from_slice(hashes);
        }
        Self::packed(&rows, blob)
    }

    fn packed<T: serde::Serialize>(rows: &[T], blob: Vec<u8>) -> StorageResult<Self> {
        let rows = serde_json::to_string(rows)
            .map_err(|e| StorageError::Integrity(format!("audit batch: {e}")))?;
        Ok(Self { rows, blob })
    }

    /// The upsert of tiles (a partial tile's row is rewritten as it grows).
    pub(crate) fn upsert_tiles(backend: Backend) -> &'static str {
        match backend {
            Backend::Sqlite => {
                "INSERT INTO audit_tiles (level, idx, hashes) \
                 SELECT value ->> 0, value ->> 1, substr($1, (value ->> 2) + 1, value ->> 3) \
                 FROM json_each($2) WHERE true \
                 ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes"
            }
            Backend::Postgres => {
                "INSERT INTO audit_tiles (level, idx, hashes) \
                 SELECT (t ->> 0)::bigint, (t ->> 1)::bigint, \
                 substring($1 FROM (t ->> 2)::int + 1 FOR (t ->> 3)::int) \
                 FROM jsonb_array_elements($2::jsonb) AS t \
                 ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes"
            }
        }
    }
}

/// The audit log's tables: entries, Merkle nodes, head, resident and
/// recipients indexes, checkpoints.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Sequences one batch in one short durable transaction: locks the log
    /// (the head row, serialising every process), takes the next indexes,
    /// stores the entries `encode` gives for them. `cached` is the writer's
    /// idea of the size; it is used only if the database still agrees (no
    /// other process appended). Committed means acknowledged.
    ///
    /// `deposits`: data sources' deposits, each allowed by an entry of the
    /// batch, checked and written in the same transaction after the
    /// entries (as [`super::DepositStore::record_deposits`] does): an entry
    /// and the deposit it allowed commit together or not at all, in one
    /// durable commit.
    async fn audit_sequence(
        &self,
        now: Timestamp,
        cached: Option<u64>,
        encode: AuditEncoder<'_>,
        deposits: &[(super::DepositRow, Timestamp)],
    ) -> StorageResult<Sequenced>;
    /// How far the tiles and the entries reach, and the integrator's lease.
    async fn audit_integration(&self) -> StorageResult<IntegrationState>;
    /// Takes (or renews) the integrator's lease for `holder` until `until`
    /// if it is free, expired at `now`, or already `holder`'s; one
    /// statement. True if `holder` holds it.
    async fn audit_claim_integrator(
        &self,
        holder: &str,
        now: i64,
        until: i64,
    ) -> StorageResult<bool>;
    /// Gives the lease up if `holder` holds it (a process stopping).
    async fn audit_release_integrator(&self, holder: &str) -> StorageResult<()>;
    /// Integrates entries `from..to`: writes `tiles` over the stored rows,
    /// moves the integrated size from `from` to `to` and renews the lease
    /// until `lease_until`, in one transaction, only if `holder` still holds
    /// the lease and nobody moved the size (false, nothing written,
    /// otherwise).
    async fn audit_integrate(
        &self,
        holder: &str,
        lease_until: i64,
        from: u64,
        to: u64,
        tiles: &[TileRow],
    ) -> StorageResult<bool>;
    /// Stored tiles at these (tile level, tile index) keys, one query.
    async fn audit_tiles(&self, keys: &[(u8, u64)]) -> StorageResult<Vec<TileRow>>;
    /// Stored tiles of one tile level with `from <= index < to`, by index.
    async fn audit_tile_range(&self, level: u8, from: u64, to: u64) -> StorageResult<Vec<TileRow>>;
    /// Adds at most `limit` entries past the resident index's end to it, in
    /// one transaction; returns how many were covered (0: up to date).
    async fn audit_index_residents(&self, limit: u64) -> StorageResult<u64>;
    /// Empties the resident and recipients indexes; the writer (or
    /// `coffre audit reindex`) then rebuilds them from the entries. Readers
    /// meanwhile scan the log.
    async fn audit_reset_resident_index(&self) -> StorageResult<()>;
    /// How far the recipients index reaches, and the log's size: entries
    /// `upto..size` are committed and not indexed yet.
    async fn audit_recipients_cursor(&self) -> StorageResult<(u64, u64)>;
    /// Adds (resident, partner, category, index) rows read from entries
    /// `from..to` and moves the cursor from `from` to `to`, in one
    /// transaction; false (nothing written) if another process moved it.
    async fn audit_add_recipients(
        &self,
        from: u64,
        to: u64,
        rows: &[(String, String, String, i64)],
    ) -> StorageResult<bool>;
    /// The indexed (partner, category) pairs that received the resident's
    /// data, and how far the index reaches (entries from there on are read
    /// from the log by the caller).
    async fn audit_recipients_of(
        &self,
        resident_id: &crate::domain::ResidentId,
    ) -> StorageResult<(Vec<(String, String)>, u64)>;
    /// The entries sequenced (the tree integrated so far may be smaller:
    /// see [`AuditStore::audit_integration`]).
    async fn audit_size(&self) -> StorageResult<u64>;
    /// The first index of the audit log written at or after `t` (the log's
    /// size when none): a binary search on the entries' times, which grow
    /// with their index.
    async fn audit_index_at(&self, t: Timestamp) -> StorageResult<u64>;
    /// Entries with index in [from, to), in order: (index, leaf).
    async fn audit_entries(&self, from: u64, to: u64) -> StorageResult<Vec<(i64, Vec<u8>)>>;
    /// Entries concerning one resident, newest first, below `before`.
    async fn audit_entries_of(
        &self,
        resident_id: &crate::domain::ResidentId,
        before: u64,
        limit: i64,
    ) -> StorageResult<Vec<(i64, Vec<u8>)>>;
    async fn audit_insert_checkpoint(&self, row: &CheckpointRow) -> StorageResult<()>;
    async fn audit_latest_checkpoint(&self) -> StorageResult<Option<CheckpointRow>>;
    async fn audit_checkpoints(&self) -> StorageResult<Vec<CheckpointRow>>;
}

/// A stored tile row, checked: its level and index in range, whole hashes.
pub(crate) fn tile_row((level, idx, hashes): (i64, i64, Vec<u8>)) -> StorageResult<TileRow> {
    match (u8::try_from(level), u64::try_from(idx)) {
        (Ok(level), Ok(idx)) if hashes.len().is_multiple_of(32) && !hashes.is_empty() => {
            Ok((level, idx, hashes))
        }
        _ => Err(StorageError::Integrity(format!(
            "malformed audit tile ({level}, {idx})"
        ))),
    }
}

/// `impl AuditStore` for a backend (see `storage::impl_store!`).
macro_rules! impl_audit_store {
    ($store:ty, $db:ty, $backend:expr) => {
    impl $store {
        async fn audit_integrate_on(
            conn: &mut <$db as sqlx::Database>::Connection,
            holder: &str,
            lease_until: i64,
            from: u64,
            to: u64,
            tiles: &[$crate::storage::TileRow],
        ) -> $crate::storage::StorageResult<bool> {
            use $crate::storage::audit::PackedRows;
            let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            let rows = PackedRows::tiles(tiles)?;
            let mut tx = sqlx::Connection::begin(conn).await?;
            // The lease's row first: SQLite's write lock at once; the holder
            // condition fences off an integrator whose lease another process
            // took over while it was working, and the lease is renewed with
            // the step.
            let moved = sqlx::query(
                "UPDATE audit_integration SET size = $2, lease_until = $4 \
                 WHERE id = 1 AND size = $1 AND holder = $3",
            )
            .bind(as_i64(from))
            .bind(as_i64(to))
            .bind(holder)
            .bind(lease_until)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved != 1 {
                return Ok(false);
            }
            if !tiles.is_empty() {
                sqlx::query(PackedRows::upsert_tiles($backend))
                    .bind(&rows.blob)
                    .bind(&rows.rows)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(true)
        }

        async fn audit_sequence_on(
            conn: &mut <$db as sqlx::Database>::Connection,
            now: $crate::domain::Timestamp,
            cached: Option<u64>,
            encode: $crate::storage::AuditEncoder<'_>,
            deposits: &[($crate::storage::DepositRow, $crate::domain::Timestamp)],
        ) -> $crate::storage::StorageResult<$crate::storage::Sequenced> {
            let integrity = $crate::storage::StorageError::Integrity;
            let as_i64 = |v: u64| i64::try_from(v).map_err(|_| integrity("tree size".into()));
            // Encoded before the transaction from the writer's own idea of
            // the size, so the lock is held only for the writes.
            let speculative = match cached {
                Some(size) => Some((size, encode(size).map_err(integrity)?)),
                None => None,
            };
            // A duration for the metrics and the benchmark, not a time of
            // the log's.
            let locked = std::time::Instant::now();
            // A plain BEGIN (the writer's connection is lent outside any
            // transaction: `WriterConnection::lend`, so it is never a
            // savepoint): the first statement below writes the head row,
            // which on SQLite takes the write lock at once, as BEGIN
            // IMMEDIATE would. (sqlx answers a BEGIN given as text only
            // after handing the connection's handle back and forth with its
            // worker thread to check it took: two more waits for this task
            // to be scheduled, on the log's critical path; under a deposit
            // stream they made BEGIN take 0.4 ms on average, 1-4 ms in one
            // batch of twelve.)
            let mut tx = sqlx::Connection::begin(conn).await?;
            if let Some((size, rows)) = speculative {
                let count = rows.len() as u64;
                // Taking the head row's write lock serialises appends from
                // every process; the size condition proves that no other
                // process appended since this one's last batch.
                let moved = sqlx::query(
                    "UPDATE audit_head SET size = $1, updated_at = $2 WHERE id = 1 AND size = $3",
                )
                .bind(as_i64(size + count)?)
                .bind(now)
                .bind(as_i64(size)?)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if moved == 1 {
                    Self::insert_entries(&mut tx, size, &rows).await?;
                    let deposits = Self::deposits_in(&mut tx, deposits, true).await?;
                    tx.commit().await?;
                    return Ok($crate::storage::Sequenced { first: size, count, lock_held: locked.elapsed(), deposits });
                }
            }
            // Another process appended (or this writer just started): read
            // the size under the lock.
            let (size,): (i64,) = sqlx::query_as(
                "UPDATE audit_head SET updated_at = $1 WHERE id = 1 RETURNING size",
            )
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let size = u64::try_from(size).map_err(|_| integrity("negative tree size".into()))?;
            let rows = encode(size).map_err(integrity)?;
            let count = rows.len() as u64;
            // No entry, nothing allowed: not a deposit either.
            if count == 0 {
                return Ok($crate::storage::Sequenced { first: size, count, lock_held: locked.elapsed(), deposits: Vec::new() });
            }
            Self::insert_entries(&mut tx, size, &rows).await?;
            sqlx::query("UPDATE audit_head SET size = $1 WHERE id = 1")
                .bind(as_i64(size + count)?)
                .execute(&mut *tx)
                .await?;
            let deposits = Self::deposits_in(&mut tx, deposits, true).await?;
            tx.commit().await?;
            Ok($crate::storage::Sequenced { first: size, count, lock_held: locked.elapsed(), deposits })
        }

        /// A batch's entries from index `first` on, as one multi-row VALUES
        /// list with bound values (one statement shape for both backends),
        /// prepared once per batch size and connection: sqlx's cache keeps
        /// the last 100, so a size not seen lately is prepared inside the
        /// lock. Measured on SQLite against the JSON document and blob the
        /// tiles use: 0.14 ms less per 64-entry batch, inside the lock.
        async fn insert_entries(
            tx: &mut sqlx::Transaction<'_, $db>,
            first: u64,
            entries: &[$crate::storage::SequencedEntry],
        ) -> $crate::storage::StorageResult<()> {
            if entries.is_empty() {
                return Ok(());
            }
            let first = i64::try_from(first).map_err(|_| {
                $crate::storage::StorageError::Integrity("tree size".into())
            })?;
            let mut q = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO audit_entries (idx, leaf, resident_id, created_at) ",
            );
            q.push_values(entries.iter().zip(first..), |mut row, ((leaf, resident, at), idx)| {
                row.push_bind(idx)
                    .push_bind(leaf.as_slice())
                    .push_bind(resident.as_deref())
                    .push_bind(*at);
            });
            q.build().execute(&mut **tx).await?;
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl $crate::storage::AuditStore for $store {
        async fn audit_sequence(
            &self,
            now: $crate::domain::Timestamp,
            cached: Option<u64>,
            encode: $crate::storage::AuditEncoder<'_>,
            deposits: &[($crate::storage::DepositRow, $crate::domain::Timestamp)],
        ) -> $crate::storage::StorageResult<$crate::storage::Sequenced> {
            let mut lent = self.audit_writer.lend().await?;
            let outcome = Self::audit_sequence_on(&mut lent.conn, now, cached, encode, deposits).await;
            lent.settle(outcome)
        }

        async fn audit_integration(
            &self,
        ) -> $crate::storage::StorageResult<$crate::storage::IntegrationState> {
            let (integrated, sequenced, holder, lease_until): (i64, i64, Option<String>, i64) =
                sqlx::query_as(
                    "SELECT i.size, h.size, i.holder, i.lease_until \
                     FROM audit_integration i, audit_head h WHERE i.id = 1 AND h.id = 1",
                )
                .fetch_one(&self.pool)
                .await?;
            let size = |v: i64| {
                u64::try_from(v).map_err(|_| {
                    $crate::storage::StorageError::Integrity("negative tree size".into())
                })
            };
            Ok($crate::storage::IntegrationState {
                integrated: size(integrated)?,
                sequenced: size(sequenced)?,
                holder,
                lease_until,
            })
        }

        async fn audit_claim_integrator(
            &self,
            holder: &str,
            now: i64,
            until: i64,
        ) -> $crate::storage::StorageResult<bool> {
            let mut lent = self.audit_writer.lend().await?;
            let outcome = sqlx::query(
                "UPDATE audit_integration SET holder = $1, lease_until = $3 \
                 WHERE id = 1 AND (holder IS NULL OR holder = $1 OR lease_until < $2)",
            )
            .bind(holder)
            .bind(now)
            .bind(until)
            .execute(&mut *lent.conn)
            .await
            .map_err($crate::storage::StorageError::from);
            Ok(lent.settle(outcome)?.rows_affected() == 1)
        }

        async fn audit_release_integrator(&self, holder: &str) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "UPDATE audit_integration SET holder = NULL, lease_until = 0 WHERE id = 1 AND holder = $1",
            )
            .bind(holder)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn audit_integrate(
            &self,
            holder: &str,
            lease_until: i64,
            from: u64,
            to: u64,
            tiles: &[$crate::storage::TileRow],
        ) -> $crate::storage::StorageResult<bool> {
            // On the writer's own connection: in this process, sequencing
            // and integration then take turns on it (an async queue),
            // instead of meeting at SQLite's write lock, whose busy handler
            // sleeps in steps of milliseconds.
            let mut lent = self.audit_writer.lend().await?;
            let outcome =
                Self::audit_integrate_on(&mut lent.conn, holder, lease_until, from, to, tiles).await;
            lent.settle(outcome)
        }

        async fn audit_tiles(
            &self,
            keys: &[(u8, u64)],
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::TileRow>> {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let mut sql = String::from("SELECT level, idx, hashes FROM audit_tiles WHERE ");
            for i in 0..keys.len() {
                if i > 0 {
                    sql.push_str(" OR ");
                }
                sql.push_str(&format!("(level = ${} AND idx = ${})", 2 * i + 1, 2 * i + 2));
            }
            let mut q = sqlx::query_as::<_, (i64, i64, Vec<u8>)>(&sql);
            for (level, idx) in keys {
                q = q.bind(i64::from(*level)).bind(i64::try_from(*idx).unwrap_or(i64::MAX));
            }
            q.fetch_all(&self.pool).await?.into_iter().map($crate::storage::audit::tile_row).collect()
        }

        async fn audit_tile_range(
            &self,
            level: u8,
            from: u64,
            to: u64,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::TileRow>> {
            let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            sqlx::query_as::<_, (i64, i64, Vec<u8>)>(
                "SELECT level, idx, hashes FROM audit_tiles \
                 WHERE level = $1 AND idx >= $2 AND idx < $3 ORDER BY idx",
            )
            .bind(i64::from(level))
            .bind(as_i64(from))
            .bind(as_i64(to))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map($crate::storage::audit::tile_row)
            .collect()
        }

        async fn audit_index_residents(&self, limit: u64) -> $crate::storage::StorageResult<u64> {
            // SQLite: on the writer's connection, between its batches
            // (`WriterConnection::lend_background`).
            let mut lent = self.audit_writer.lend_background(&self.pool).await?;
            let outcome: $crate::storage::StorageResult<u64> = async {
                let mut tx = sqlx::Connection::begin(&mut *lent.conn).await?;
                // Entries below `size` are committed (the size moves in their
                // transaction). On SQLite the write lock is taken first, as any
                // writer must (a read snapshot cannot be upgraded once another
                // commit happened); on PostgreSQL the head row is not locked,
                // so appends of other processes go on while this one inserts,
                // and concurrent indexers only ever move the mark forward.
                let (upto, size): (i64, i64) = sqlx::query_as(match $backend {
                    $crate::storage::Backend::Sqlite => {
                        "UPDATE audit_head SET indexed_upto = indexed_upto WHERE id = 1 \
                         RETURNING indexed_upto, size"
                    }
                    $crate::storage::Backend::Postgres => {
                        "SELECT indexed_upto, size FROM audit_head WHERE id = 1"
                    }
                })
                .fetch_one(&mut *tx)
                .await?;
                let to = size.min(upto.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX)));
                if to <= upto {
                    return Ok(0);
                }
                sqlx::query(
                    "INSERT INTO audit_by_resident (resident_id, idx) \
                     SELECT resident_id, idx FROM audit_entries \
                     WHERE idx >= $1 AND idx < $2 AND resident_id IS NOT NULL \
                     ORDER BY resident_id, idx ON CONFLICT DO NOTHING",
                )
                .bind(upto)
                .bind(to)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE audit_head SET indexed_upto = $1 WHERE id = 1 AND indexed_upto < $1")
                    .bind(to)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(u64::try_from(to - upto).unwrap_or(0))
            }
            .await;
            lent.settle(outcome)
        }

        async fn audit_reset_resident_index(&self) -> $crate::storage::StorageResult<()> {
            let mut tx = self.pool.begin().await?;
            sqlx::query("UPDATE audit_head SET indexed_upto = 0 WHERE id = 1")
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM audit_by_resident")
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE audit_recipients_cursor SET upto = 0 WHERE id = 1")
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM audit_recipients")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }

        async fn audit_recipients_cursor(&self) -> $crate::storage::StorageResult<(u64, u64)> {
            let (upto, size): (i64, i64) = sqlx::query_as(
                "SELECT c.upto, h.size FROM audit_recipients_cursor c, audit_head h \
                 WHERE c.id = 1 AND h.id = 1",
            )
            .fetch_one(&self.pool)
            .await?;
            Ok((
                u64::try_from(upto).unwrap_or(0),
                u64::try_from(size).unwrap_or(0),
            ))
        }

        async fn audit_add_recipients(
            &self,
            from: u64,
            to: u64,
            rows: &[(String, String, String, i64)],
        ) -> $crate::storage::StorageResult<bool> {
            let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            // Before the writer's connection is taken.
            let json = serde_json::to_string(rows)
                .map_err(|e| $crate::storage::StorageError::Other(e.to_string()))?;
            let mut lent = self.audit_writer.lend_background(&self.pool).await?;
            let outcome: $crate::storage::StorageResult<bool> = async {
                let mut tx = sqlx::Connection::begin(&mut *lent.conn).await?;
                // The cursor first: SQLite's write lock is taken at once, and a
                // concurrent indexer (another process) makes this one a no-op.
                let moved = sqlx::query(
                    "UPDATE audit_recipients_cursor SET upto = $2 WHERE id = 1 AND upto = $1",
                )
                .bind(as_i64(from))
                .bind(as_i64(to))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if moved != 1 {
                    return Ok(false);
                }
                if !rows.is_empty() {
                    sqlx::query(match $backend {
                        $crate::storage::Backend::Sqlite => {
                            "INSERT INTO audit_recipients (resident_id, partner_id, category, first_idx) \
                             SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each($1) WHERE true \
                             ON CONFLICT DO NOTHING"
                        }
                        $crate::storage::Backend::Postgres => {
                            "INSERT INTO audit_recipients (resident_id, partner_id, category, first_idx) \
                             SELECT r->>0, r->>1, r->>2, (r->>3)::BIGINT FROM jsonb_array_elements($1::jsonb) AS r \
                             ON CONFLICT DO NOTHING"
                        }
                    })
                    .bind(json)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(true)
            }
            .await;
            lent.settle(outcome)
        }

        async fn audit_recipients_of(
            &self,
            resident_id: &$crate::domain::ResidentId,
        ) -> $crate::storage::StorageResult<(Vec<(String, String)>, u64)> {
            // The cursor first: under READ COMMITTED (PostgreSQL) each
            // statement sees its own snapshot, and an indexer committing in
            // between then only adds rows the tail scan would find anyway;
            // read the other way round, its entries would be in neither.
            let mut tx = self.pool.begin().await?;
            let (upto,): (i64,) = sqlx::query_as("SELECT upto FROM audit_recipients_cursor WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT partner_id, category FROM audit_recipients WHERE resident_id = $1",
            )
            .bind(resident_id)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok((rows, u64::try_from(upto).unwrap_or(0)))
        }

        async fn audit_index_at(
            &self,
            t: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<u64> {
            let (size,): (i64,) = sqlx::query_as("SELECT size FROM audit_head WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
            // The first index in [lo, hi) written at or after t.
            let (mut lo, mut hi) = (0i64, size);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let at: Option<(i64,)> =
                    sqlx::query_as("SELECT created_at FROM audit_entries WHERE idx = $1")
                        .bind(mid)
                        .fetch_optional(&self.pool)
                        .await?;
                match at {
                    Some((at,)) if at < t => lo = mid + 1,
                    _ => hi = mid,
                }
            }
            Ok(lo.max(0) as u64)
        }

        async fn audit_size(&self) -> $crate::storage::StorageResult<u64> {
            let (size,): (i64,) = sqlx::query_as("SELECT size FROM audit_head WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
            u64::try_from(size)
                .map_err(|_| $crate::storage::StorageError::Integrity("negative tree size".into()))
        }

        async fn audit_entries(
            &self,
            from: u64,
            to: u64,
        ) -> $crate::storage::StorageResult<Vec<(i64, Vec<u8>)>> {
            Ok(sqlx::query_as(
                "SELECT idx, leaf FROM audit_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx",
            )
            .bind(from as i64)
            .bind(to as i64)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn audit_entries_of(
            &self,
            resident_id: &$crate::domain::ResidentId,
            before: u64,
            limit: i64,
        ) -> $crate::storage::StorageResult<Vec<(i64, Vec<u8>)>> {
            // The indexed part through `audit_by_resident`, the part the
            // writer has not indexed yet by a scan of its (short) index range.
            Ok(sqlx::query_as(
                "SELECT idx, leaf FROM audit_entries WHERE idx IN ( \
                     SELECT idx FROM (SELECT idx FROM audit_by_resident \
                         WHERE resident_id = $1 AND idx < $2 ORDER BY idx DESC LIMIT $3) AS indexed \
                     UNION \
                     SELECT idx FROM audit_entries WHERE resident_id = $1 AND idx < $2 \
                         AND idx >= (SELECT indexed_upto FROM audit_head WHERE id = 1)) \
                 ORDER BY idx DESC LIMIT $3",
            )
            .bind(resident_id)
            .bind(i64::try_from(before).unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn audit_insert_checkpoint(
            &self,
            row: &$crate::storage::CheckpointRow,
        ) -> $crate::storage::StorageResult<()> {
            // SQLite: on the writer's connection, between its batches
            // (`WriterConnection::lend_background`).
            let mut lent = self.audit_writer.lend_background(&self.pool).await?;
            let outcome = sqlx::query(
                "INSERT INTO audit_checkpoints (tree_size, root, note, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (tree_size) DO NOTHING",
            )
            .bind(row.tree_size)
            .bind(&row.root)
            .bind(&row.note)
            .bind(row.created_at)
            .execute(&mut *lent.conn)
            .await
            .map(|_| ())
            .map_err($crate::storage::StorageError::from);
            lent.settle(outcome)
        }

        async fn audit_latest_checkpoint(
            &self,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::CheckpointRow>> {
            Ok(sqlx::query_as(
                "SELECT tree_size, root, note, created_at FROM audit_checkpoints \
                 ORDER BY tree_size DESC LIMIT 1",
            )
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn audit_checkpoints(
            &self,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::CheckpointRow>> {
            Ok(sqlx::query_as(
                "SELECT tree_size, root, note, created_at FROM audit_checkpoints ORDER BY tree_size",
            )
            .fetch_all(&self.pool)
            .await?)
        }
    }

    };
}
pub(crate) use impl_audit_store;
