//! The audit log writer's own connection (a pool of one): its appends,
//! its integration steps and, on SQLite, its other writes (indexes,
//! checkpoints) take turns on it through the pool's fair queue.

use super::StorageResult;

pub(crate) struct WriterConnection<DB: sqlx::Database> {
    /// A pool of one connection: it opens, checks and closes the connection.
    pool: sqlx::Pool<DB>,
    /// Whether the log's other writes of this process (its indexes, its
    /// checkpoints) take turns on this connection too ([`Self::lend_background`]).
    carries_background: bool,
}

/// A connection lent to one caller, who ends with [`Lent::settle`]. If the
/// caller is dropped before (a cancelled future), the connection goes back
/// to its pool, which rolls back what it left open.
pub(crate) struct Lent<DB: sqlx::Database> {
    pub(crate) conn: sqlx::pool::PoolConnection<DB>,
}

impl<DB: sqlx::Database> WriterConnection<DB> {
    /// `carries_background`: see [`Self::lend_background`].
    pub(crate) fn new(pool: sqlx::Pool<DB>, carries_background: bool) -> Self {
        Self {
            pool,
            carries_background,
        }
    }

    /// The writer's connection, for one caller at a time.
    pub(crate) async fn lend(&self) -> StorageResult<Lent<DB>> {
        Ok(Lent {
            conn: self.pool.acquire().await?,
        })
    }

    /// A connection for one of the log's writes beside its appends (its
    /// indexes, its checkpoints): the writer's when it carries them
    /// (SQLite), else one of the `shared` pool (PostgreSQL, where they need
    /// not wait for appends). On SQLite a write on another connection waits
    /// for the write lock in SQLite's busy handler, which sleeps in steps
    /// of milliseconds (under a deposit stream a checkpoint's insert
    /// waited 20-70 ms for it, 3-5 ms on the writer's connection), and its
    /// commit makes SQLite drop the writer's page cache; on the writer's
    /// connection such writes queue between two batches instead.
    pub(crate) async fn lend_background(&self, shared: &sqlx::Pool<DB>) -> StorageResult<Lent<DB>> {
        let pool = if self.carries_background {
            &self.pool
        } else {
            shared
        };
        Ok(Lent {
            conn: pool.acquire().await?,
        })
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

impl<DB: sqlx::Database> Lent<DB> {
    /// The caller's outcome. After a failure the connection is closed,
    /// never reused: a COMMIT that failed (SQLITE_FULL, an I/O error, a
    /// lost server) can leave it inside a transaction that neither side
    /// will end, and every later BEGIN/COMMIT would then be a savepoint of
    /// it, answered as committed while nothing reaches the disk. The next
    /// caller opens a fresh connection (and sequencing re-reads the
    /// committed head).
    pub(crate) fn settle<T>(mut self, outcome: StorageResult<T>) -> StorageResult<T> {
        if outcome.is_err() {
            self.conn.close_on_drop();
        }
        outcome
    }
}
