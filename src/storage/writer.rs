//! The audit log writer's own connection (a pool of one): its appends,
//! its integration steps and, on SQLite, its other writes (indexes,
//! checkpoints) take turns on it through the pool's fair queue.

use sqlx::Connection;

use super::{StorageError, StorageResult};

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

    /// The writer's connection, for one caller at a time, outside any
    /// transaction: sqlx's `begin` on a connection it counts inside one
    /// makes a savepoint, whose commit would be answered while nothing
    /// reaches the disk. A rollback sqlx queued for a transaction dropped
    /// unfinished is let run first (a ping); a connection still inside one
    /// (nothing will end it) is closed and the caller refused.
    pub(crate) async fn lend(&self) -> StorageResult<Lent<DB>> {
        let mut conn = self.pool.acquire().await?;
        if conn.is_in_transaction() {
            conn.ping().await?;
        }
        if conn.is_in_transaction() {
            conn.close_on_drop();
            return Err(StorageError::Integrity(
                "the audit log writer's connection is inside a transaction".into(),
            ));
        }
        Ok(Lent { conn })
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use sqlx::Connection;

    #[tokio::test]
    async fn the_writer_is_never_lent_inside_a_transaction_left_open() {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let writer = super::WriterConnection::new(pool, true);
        let mut lent = writer.lend().await.unwrap();
        // A transaction dropped unfinished: sqlx queues its rollback, which
        // the next lend lets run.
        drop(lent.conn.begin().await.unwrap());
        drop(lent);
        let mut lent = writer.lend().await.unwrap();
        assert!(!lent.conn.is_in_transaction());
        // One that nothing will end (as after a COMMIT that failed):
        // refused, where `begin` would have made a savepoint of it.
        std::mem::forget(lent.conn.begin().await.unwrap());
        drop(lent);
        assert!(writer.lend().await.is_err());
    }
}
