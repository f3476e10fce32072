//! The instance as a whole: which backend serves it, a round trip for
//! `/readyz`, closing the pools, the migrations applied at opening, whether
//! anything was ever registered, and the instance's marks (e.g. `demo`).
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::{Backend, StorageResult};
use crate::domain::Timestamp;

/// The database as a whole: which backend, whether it answers, whether
/// anything was ever registered, the instance's marks.
#[async_trait]
pub trait InstanceStore: Send + Sync {
    fn backend(&self) -> Backend;
    /// Whether two writing transactions progress side by side (PostgreSQL's
    /// row locks) rather than taking the database's one write lock in turn
    /// (SQLite, whose busy handler sleeps in steps of milliseconds): a
    /// background writer may run beside a hot one only in the first case.
    fn writers_run_side_by_side(&self) -> bool {
        self.backend() == Backend::Postgres
    }
    /// A cheap round trip, for `/readyz`.
    async fn ping(&self) -> StorageResult<()>;
    /// Closes the pool, waiting for connections to return.
    async fn close(&self);
    /// The shared pool's connections now: (open, idle), for `/metrics`.
    fn pool_usage(&self) -> (u32, usize);
    /// A consistent copy of the whole database into the new file `to`,
    /// taken while others keep writing (SQLite's `VACUUM INTO`: one read
    /// transaction). PostgreSQL: `Other` (its backups are `pg_dump` or
    /// physical ones, taken outside coffre).
    async fn snapshot_into(&self, to: &std::path::Path) -> StorageResult<()>;
    /// Whether nobody was ever registered: no resident, agent, partner or
    /// structure.
    async fn is_blank(&self) -> StorageResult<bool>;
    /// Whether the instance carries the mark `name` (e.g. `demo`).
    async fn has_instance_mark(&self, name: &str) -> StorageResult<bool>;
    async fn set_instance_mark(&self, name: &str, now: Timestamp) -> StorageResult<()>;
}

/// `impl InstanceStore` for a backend (see `storage::impl_store!`).
macro_rules! impl_instance_store {
    ($store:ty, $backend:expr, $migrations:literal) => {
    impl $store {
        /// Applies pending migrations (idempotent; safe from several
        /// processes). Only `open` runs them, before the store is handed
        /// out, so this is not part of the trait.
        async fn migrate(&self) -> $crate::storage::StorageResult<()> {
            sqlx::migrate!($migrations).run(&self.pool).await?;
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl $crate::storage::InstanceStore for $store {
        fn backend(&self) -> $crate::storage::Backend {
            $backend
        }

        async fn ping(&self) -> $crate::storage::StorageResult<()> {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        }

        async fn close(&self) {
            self.audit_writer.close().await;
            self.pool.close().await;
        }

        fn pool_usage(&self) -> (u32, usize) {
            (self.pool.size(), self.pool.num_idle())
        }

        async fn snapshot_into(&self, to: &std::path::Path) -> $crate::storage::StorageResult<()> {
            // The one statement of SQLite's own dialect outside connection
            // set-up: PostgreSQL has no equivalent inside a session.
            if self.backend() != $crate::storage::Backend::Sqlite {
                return Err($crate::storage::StorageError::Other(
                    "PostgreSQL is backed up with pg_dump or a physical backup".into(),
                ));
            }
            let to = to.to_str().ok_or_else(|| {
                $crate::storage::StorageError::Other("the backup path is not UTF-8".into())
            })?;
            sqlx::query("VACUUM INTO $1").bind(to).execute(&self.pool).await?;
            Ok(())
        }

        async fn is_blank(&self) -> $crate::storage::StorageResult<bool> {
            let found: Option<String> = sqlx::query_scalar(
                "SELECT id FROM residents UNION ALL SELECT id FROM agents \
                 UNION ALL SELECT id FROM partners UNION ALL SELECT id FROM structures LIMIT 1",
            )
            .fetch_optional(&self.pool)
            .await?;
            Ok(found.is_none())
        }

        async fn has_instance_mark(&self, name: &str) -> $crate::storage::StorageResult<bool> {
            let found: Option<String> =
                sqlx::query_scalar("SELECT name FROM instance_marks WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
            Ok(found.is_some())
        }

        async fn set_instance_mark(
            &self,
            name: &str,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO instance_marks (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(())
        }
    }
    };
}
pub(crate) use impl_instance_store;
