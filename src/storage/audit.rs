//! The audit log as stored: entries and Merkle nodes written by group
//! commits under the head row's lock, the resident and recipients indexes
//! the writer fills when idle, and the signed checkpoints. The tree itself
//! is computed in `audit`; storage writes what the planner hands it.
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::{Backend, StorageError, StorageResult};
use crate::domain::Timestamp;

/// What one group commit writes: entries, the perfect-subtree nodes they
/// complete, and the new tree size.
#[derive(Clone, Debug, Default)]
pub struct AuditAppend {
    /// (index, leaf bytes, resident concerned, created_at)
    pub entries: Vec<(i64, Vec<u8>, Option<String>, i64)>,
    /// (level, index, hash)
    pub nodes: Vec<(i64, i64, [u8; 32])>,
    pub new_size: i64,
    /// The frontier after the append (see `audit::merkle::root_coords`),
    /// kept by the writer so the next batch need not read it back.
    pub frontier: Vec<[u8; 32]>,
}

/// Plans a group commit from the current tree size and the frontier hashes
/// (those of `audit::merkle::root_coords(size)`, in order). Called inside the
/// transaction that holds the log's lock.
pub type AuditPlanner<'a> =
    &'a (dyn Fn(u64, Vec<[u8; 32]>) -> Result<AuditAppend, String> + Send + Sync);

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CheckpointRow {
    pub tree_size: i64,
    pub root: Vec<u8>,
    pub note: String,
    pub created_at: i64,
}

/// One group commit's rows as JSON documents and blobs, so each table gets
/// one INSERT whatever the batch size: every statement is a round trip to
/// the database (through sqlx's worker thread on SQLite), and a multi-row
/// VALUES list would need one statement shape per batch size.
pub(crate) struct AuditRows {
    /// `[[index, offset in leaves, length, resident or null, created_at], …]`
    pub(super) entries: String,
    pub(super) leaves: Vec<u8>,
    /// `[[level, index], …]`, the hashes in the same order in `hashes`.
    pub(super) nodes: String,
    pub(super) hashes: Vec<u8>,
}

impl AuditRows {
    pub(crate) fn of(plan: &AuditAppend) -> StorageResult<Self> {
        let mut leaves = Vec::with_capacity(plan.entries.iter().map(|e| e.1.len()).sum());
        let mut entries = Vec::with_capacity(plan.entries.len());
        for (idx, leaf, resident, at) in &plan.entries {
            entries.push((*idx, leaves.len(), leaf.len(), resident.as_deref(), *at));
            leaves.extend_from_slice(leaf);
        }
        let mut hashes = Vec::with_capacity(32 * plan.nodes.len());
        let mut nodes = Vec::with_capacity(plan.nodes.len());
        for (level, idx, hash) in &plan.nodes {
            nodes.push((*level, *idx));
            hashes.extend_from_slice(hash);
        }
        let json = |e: serde_json::Error| StorageError::Integrity(format!("audit batch: {e}"));
        Ok(Self {
            entries: serde_json::to_string(&entries).map_err(json)?,
            leaves,
            nodes: serde_json::to_string(&nodes).map_err(json)?,
            hashes,
        })
    }

    /// The two INSERTs (entries, nodes) of `backend`'s dialect: `$1` is the
    /// blob, `$2` the JSON document.
    pub(crate) fn statements(backend: Backend) -> (&'static str, &'static str) {
        match backend {
            Backend::Sqlite => (
                "INSERT INTO audit_entries (idx, leaf, resident_id, created_at) \
                 SELECT value ->> 0, substr($1, (value ->> 1) + 1, value ->> 2), value ->> 3, value ->> 4 \
                 FROM json_each($2)",
                "INSERT INTO audit_nodes (level, idx, hash) \
                 SELECT value ->> 0, value ->> 1, substr($1, key * 32 + 1, 32) FROM json_each($2)",
            ),
            Backend::Postgres => (
                "INSERT INTO audit_entries (idx, leaf, resident_id, created_at) \
                 SELECT (e ->> 0)::bigint, substring($1 FROM (e ->> 1)::int + 1 FOR (e ->> 2)::int), \
                 e ->> 3, (e ->> 4)::bigint FROM jsonb_array_elements($2::jsonb) AS e",
                "INSERT INTO audit_nodes (level, idx, hash) \
                 SELECT (t.e ->> 0)::bigint, (t.e ->> 1)::bigint, substring($1 FROM (t.n::int - 1) * 32 + 1 FOR 32) \
                 FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS t(e, n)",
            ),
        }
    }
}

/// The audit log's tables: entries, Merkle nodes, head, resident and
/// recipients indexes, checkpoints.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// One durable transaction: locks the log (serialising every process),
    /// reads size and frontier, lets `planner` build the batch, writes it.
    /// `cached` is the writer's idea of (size, frontier); it is used only if
    /// the size in the database still matches (no other process appended).
    async fn audit_append(
        &self,
        now: Timestamp,
        cached: Option<&(u64, Vec<[u8; 32]>)>,
        planner: AuditPlanner<'_>,
    ) -> StorageResult<AuditAppend>;
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
    async fn audit_size(&self) -> StorageResult<u64>;
    /// The first index of the audit log written at or after `t` (the log's
    /// size when none): a binary search on the entries' times, which grow
    /// with their index.
    async fn audit_index_at(&self, t: Timestamp) -> StorageResult<u64>;
    /// Stored node hashes for these (level, index) coordinates, one query.
    async fn audit_nodes(&self, coords: &[(u8, u64)]) -> StorageResult<Vec<(u8, u64, [u8; 32])>>;
    /// Entries with index in [from, to), in order: (index, leaf).
    async fn audit_entries(&self, from: u64, to: u64) -> StorageResult<Vec<(i64, Vec<u8>)>>;
    /// Stored node hashes of one tree level, `from <= idx < to`, by index.
    async fn audit_level_hashes(
        &self,
        level: u8,
        from: u64,
        to: u64,
    ) -> StorageResult<Vec<(i64, Vec<u8>)>>;
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

/// `impl AuditStore` for a backend (see `storage::impl_store!`).
macro_rules! impl_audit_store {
    ($store:ty, $db:ty, $backend:expr) => {
    impl $store {
        /// Writes a planned batch: one statement for the entries, one for
        /// the nodes (see `AuditRows`).
        async fn insert_audit_rows(
            tx: &mut sqlx::Transaction<'_, $db>,
            plan: &$crate::storage::AuditAppend,
        ) -> $crate::storage::StorageResult<()> {
            let rows = $crate::storage::audit::AuditRows::of(plan)?;
            let (entries, nodes) = $crate::storage::audit::AuditRows::statements($backend);
            sqlx::query(entries)
                .bind(rows.leaves)
                .bind(rows.entries)
                .execute(&mut **tx)
                .await?;
            sqlx::query(nodes)
                .bind(rows.hashes)
                .bind(rows.nodes)
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        async fn audit_append_on(
            conn: &mut <$db as sqlx::Database>::Connection,
            now: $crate::domain::Timestamp,
            cached: Option<&(u64, Vec<[u8; 32]>)>,
            planner: $crate::storage::AuditPlanner<'_>,
        ) -> $crate::storage::StorageResult<$crate::storage::AuditAppend> {
            let integrity = $crate::storage::StorageError::Integrity;
            // Planned before the transaction from the writer's own idea of
            // the tree, so the lock is held only for the writes.
            let speculative = match cached {
                Some((size, frontier)) => Some(planner(*size, frontier.clone()).map_err(integrity)?),
                None => None,
            };
            // An explicit BEGIN (IMMEDIATE on SQLite: the write lock at once)
            // is refused by sqlx inside a transaction instead of becoming a
            // savepoint of it.
            let begin = match $backend {
                $crate::storage::Backend::Sqlite => "BEGIN IMMEDIATE",
                $crate::storage::Backend::Postgres => "BEGIN",
            };
            let mut tx = sqlx::Connection::begin_with(conn, begin).await?;
            if let (Some(plan), Some((size, _))) = (speculative, cached) {
                // Taking the head row's write lock serialises appends from
                // every process; the size condition proves that no other
                // process appended since this one's last batch.
                let moved = sqlx::query(
                    "UPDATE audit_head SET size = $1, updated_at = $2 WHERE id = 1 AND size = $3",
                )
                .bind(plan.new_size)
                .bind(now)
                .bind(i64::try_from(*size).map_err(|_| integrity("tree size".into()))?)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if moved == 1 {
                    Self::insert_audit_rows(&mut tx, &plan).await?;
                    tx.commit().await?;
                    return Ok(plan);
                }
            }
            // Another process appended (or this writer just started): read
            // the size under the lock and the frontier from the stored nodes.
            let (size,): (i64,) = sqlx::query_as(
                "UPDATE audit_head SET updated_at = $1 WHERE id = 1 RETURNING size",
            )
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let size = u64::try_from(size).map_err(|_| integrity("negative tree size".into()))?;
            let coords = $crate::audit::merkle::root_coords(size);
            let mut frontier = Vec::with_capacity(coords.len());
            if !coords.is_empty() {
                let mut sql = String::from("SELECT level, idx, hash FROM audit_nodes WHERE ");
                for i in 0..coords.len() {
                    if i > 0 {
                        sql.push_str(" OR ");
                    }
                    sql.push_str(&format!("(level = ${} AND idx = ${})", 2 * i + 1, 2 * i + 2));
                }
                let mut q = sqlx::query_as::<_, (i64, i64, Vec<u8>)>(&sql);
                for (level, idx) in &coords {
                    q = q.bind(i64::from(*level)).bind(*idx as i64);
                }
                let found: std::collections::HashMap<(i64, i64), Vec<u8>> = q
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .map(|(l, i, h)| ((l, i), h))
                    .collect();
                for (level, idx) in &coords {
                    let hash: [u8; 32] = found
                        .get(&(i64::from(*level), *idx as i64))
                        .and_then(|h| h.as_slice().try_into().ok())
                        .ok_or_else(|| {
                            integrity(format!("audit node ({level}, {idx}) missing or malformed"))
                        })?;
                    frontier.push(hash);
                }
            }
            let plan = planner(size, frontier).map_err(integrity)?;
            if plan.entries.is_empty() {
                return Ok(plan);
            }
            Self::insert_audit_rows(&mut tx, &plan).await?;
            sqlx::query("UPDATE audit_head SET size = $1 WHERE id = 1")
                .bind(plan.new_size)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(plan)
        }
    }

    #[async_trait::async_trait]
    impl $crate::storage::AuditStore for $store {
        async fn audit_append(
            &self,
            now: $crate::domain::Timestamp,
            cached: Option<&(u64, Vec<[u8; 32]>)>,
            planner: $crate::storage::AuditPlanner<'_>,
        ) -> $crate::storage::StorageResult<$crate::storage::AuditAppend> {
            let mut conn = self.audit_writer.acquire().await?;
            let outcome = Self::audit_append_on(&mut conn, now, cached, planner).await;
            if outcome.is_err() {
                // Never reuse a connection an append failed on: a COMMIT that
                // failed (SQLITE_FULL, an I/O error, a lost server) can leave
                // it inside a transaction that neither side will end, and every
                // later BEGIN/COMMIT would then be a savepoint of it, answered
                // as committed while nothing reaches the disk. The next append
                // opens a fresh connection and re-reads the committed head.
                conn.close_on_drop();
            }
            outcome
        }

        async fn audit_index_residents(&self, limit: u64) -> $crate::storage::StorageResult<u64> {
            // On the shared pool: the writer indexes once idle after start,
            // and its own connection is opened only by a first append, so an
            // idle server keeps one SQLite connection fewer.
            let mut tx = self.pool.begin().await?;
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
            let mut tx = self.pool.begin().await?;
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
                let json = serde_json::to_string(rows)
                    .map_err(|e| $crate::storage::StorageError::Other(e.to_string()))?;
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

        async fn audit_nodes(
            &self,
            coords: &[(u8, u64)],
        ) -> $crate::storage::StorageResult<Vec<(u8, u64, [u8; 32])>> {
            if coords.is_empty() {
                return Ok(Vec::new());
            }
            let mut sql = String::from("SELECT level, idx, hash FROM audit_nodes WHERE ");
            for i in 0..coords.len() {
                if i > 0 {
                    sql.push_str(" OR ");
                }
                sql.push_str(&format!("(level = ${} AND idx = ${})", 2 * i + 1, 2 * i + 2));
            }
            let mut q = sqlx::query_as::<_, (i64, i64, Vec<u8>)>(&sql);
            for (level, idx) in coords {
                q = q.bind(i64::from(*level)).bind(*idx as i64);
            }
            let rows = q.fetch_all(&self.pool).await?;
            rows.into_iter()
                .map(|(level, idx, hash)| {
                    let hash: [u8; 32] = hash.try_into().map_err(|_| {
                        $crate::storage::StorageError::Integrity("malformed audit node".into())
                    })?;
                    Ok((level as u8, idx as u64, hash))
                })
                .collect()
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

        async fn audit_level_hashes(
            &self,
            level: u8,
            from: u64,
            to: u64,
        ) -> $crate::storage::StorageResult<Vec<(i64, Vec<u8>)>> {
            Ok(sqlx::query_as(
                "SELECT idx, hash FROM audit_nodes WHERE level = $3 AND idx >= $1 AND idx < $2 ORDER BY idx",
            )
            .bind(from as i64)
            .bind(to as i64)
            .bind(i64::from(level))
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
            sqlx::query(
                "INSERT INTO audit_checkpoints (tree_size, root, note, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (tree_size) DO NOTHING",
            )
            .bind(row.tree_size)
            .bind(&row.root)
            .bind(&row.note)
            .bind(row.created_at)
            .execute(&self.pool)
            .await?;
            Ok(())
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
