//! PostgreSQL backend: for deployments where several stateless `coffre`
//! processes share one database. Nothing here is per-process: sessions,
//! sequences and locks all live in the database.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

use super::{StorageError, StorageResult};

pub struct PgStore {
    pub(crate) pool: PgPool,
    /// The audit log's writer has a connection of its own, so a group
    /// commit never waits for a connection behind readers.
    pub(crate) audit_writer: super::writer::WriterConnection<sqlx::Postgres>,
}

impl PgStore {
    /// Connects and migrates. sqlx takes an advisory lock while migrating, so
    /// several processes starting together apply each migration once.
    pub async fn open(url: &str) -> StorageResult<Self> {
        let pool_of = |connections: u32| {
            PgPoolOptions::new()
                // sqlx pings a connection before every use by default: a second
                // network round trip on the path of every query. A connection in
                // steady use is known to be alive; only one idle for a while is
                // checked here. (sqlx still checks each connection as it goes
                // back to the pool, off the request's path.) A server restarted
                // within those 10 s fails the next query on a stale connection,
                // which then fails closed like any database error.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for > Duration::from_secs(10) {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                .max_connections(connections)
                .acquire_timeout(Duration::from_secs(5))
        };
        let pool = pool_of(10)
            .connect(url)
            .await
            .map_err(|e| StorageError::Open(format!("PostgreSQL ({e})")))?;
        // Opened at its first use, after the migrations.
        let audit_writer = pool_of(1)
            .connect_lazy(url)
            .map_err(|e| StorageError::Open(format!("PostgreSQL ({e})")))?;
        let store = Self {
            pool,
            audit_writer: super::writer::WriterConnection::new(audit_writer, false),
        };
        store.migrate().await?;
        Ok(store)
    }
}

impl PgStore {
    /// After an erasure: let VACUUM prune the dead tuple of the deleted data
    /// key. (PostgreSQL does not guarantee the bytes are zeroed; SECURITY.md
    /// explains why KEK rotation is what makes such remnants useless.)
    /// Best effort: the erasure itself is already committed.
    async fn scrub_deleted(&self) {
        if let Err(e) = sqlx::query("VACUUM data_keys").execute(&self.pool).await {
            tracing::warn!(error = %e, "VACUUM after erasure failed");
        }
    }
}

super::impl_store!(
    PgStore,
    sqlx::Postgres,
    super::Backend::Postgres,
    "migrations/postgres",
    " FOR SHARE"
);
