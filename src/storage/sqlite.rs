//! SQLite backend: the embedded default. WAL journal, `synchronous=FULL` so
//! an acknowledged write survives power loss, foreign keys on, busy timeout.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{StorageError, StorageResult};

pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    /// The audit log's writer has a connection of its own. sqlx hands out
    /// idle connections first in, first out, so through the shared pool each
    /// group commit ran on another connection than the last, whose page
    /// cache the other connections' commits had made stale: every batch
    /// re-read the pages it appends to. It also never waits behind readers.
    /// The log's other writes (its indexes, its checkpoints) take turns on
    /// it ([`super::writer::WriterConnection::lend_background`]).
    pub(crate) audit_writer: super::writer::WriterConnection<sqlx::Sqlite>,
}

impl SqliteStore {
    /// Opens (creating the file and its folder when missing) and migrates.
    pub async fn open(path: &Path) -> StorageResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(|e| {
                StorageError::Open(format!(
                    "cannot create folder {} ({})",
                    dir.display(),
                    e.kind()
                ))
            })?;
        }
        create_private_file(path).map_err(|e| {
            StorageError::Open(format!("cannot create {} ({})", path.display(), e.kind()))
        })?;
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|e| StorageError::Open(e.to_string()))?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            // Deleted content is overwritten with zeros, so an erased
            // resident's wrapped data key does not linger in free pages.
            .pragma("secure_delete", "ON")
            // Hot index pages stay in memory (grows only as used, so idle
            // memory is unaffected).
            .pragma("cache_size", "-32768")
            // No memory map: in WAL mode SQLite unmaps the whole file from
            // a connection at the start of every read transaction that
            // follows another connection's commit, and every audited read
            // commits. The unmap and the re-faults cost each read a
            // cross-CPU TLB flush; reads through `pread` do not (audited
            // partner reads: ~2x the throughput, BENCHMARKS.md).
            .pragma("mmap_size", "0");
        let pool_of = |connections: u32| {
            SqlitePoolOptions::new()
                // An embedded database's connections cannot go stale: skip
                // the ping sqlx otherwise sends before handing one out.
                .test_before_acquire(false)
                .max_connections(connections)
                .acquire_timeout(Duration::from_secs(5))
                // A COMMIT that failed (SQLITE_FULL, an I/O error) leaves
                // sqlx counting an open transaction; when SQLite already
                // rolled it back, the ROLLBACK sqlx sends on drop fails too and
                // the count stays. Such a connection would turn every later
                // BEGIN into a SAVEPOINT: it is closed, never reused.
                .after_release(|conn, _| {
                    Box::pin(async move {
                        if !sqlx::Connection::is_in_transaction(conn) {
                            return Ok(true);
                        }
                        // Let a queued rollback run, then look again.
                        sqlx::Connection::ping(conn).await?;
                        Ok(!sqlx::Connection::is_in_transaction(conn))
                    })
                })
        };
        let pool = pool_of(4)
            .connect_with(options.clone())
            .await
            .map_err(|e| StorageError::Open(format!("{} ({e})", path.display())))?;
        // Opened at its first use, after the migrations.
        let audit_writer = pool_of(1).connect_lazy_with(options);
        let store = Self {
            pool,
            audit_writer: super::writer::WriterConnection::new(audit_writer, true),
        };
        store.migrate().await?;
        Ok(store)
    }
}

/// The database's folder, created 0700 when missing. An existing folder is
/// left as the operator made it (it may be shared, e.g. `/var/lib`).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The database file, created 0600 before SQLite opens it (and narrowed to
/// 0600 if it exists wider): it holds audit metadata, agents' names and
/// sessions' CSRF tokens. SQLite gives its WAL and shared-memory files the
/// database file's permissions.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = std::path::PathBuf::from(side);
        if let Ok(meta) = std::fs::metadata(&side)
            && meta.permissions().mode() & 0o077 != 0
        {
            std::fs::set_permissions(&side, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

impl SqliteStore {
    /// After an erasure: move the WAL into the database file and truncate it,
    /// so no earlier page image holding the erased data key survives there.
    /// Best effort: the erasure itself is already committed.
    async fn scrub_deleted(&self) {
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.pool)
            .await
        {
            Ok((0, _, _)) => {}
            Ok(_) => tracing::warn!(
                "WAL checkpoint after erasure was blocked by readers; the next checkpoint will complete it"
            ),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint after erasure failed"),
        }
    }
}

super::impl_store!(
    SqliteStore,
    sqlx::Sqlite,
    super::Backend::Sqlite,
    "migrations/sqlite",
    ""
);

/// The KEK versions registered in a database snapshot (`coffre backup`'s
/// copy), read without writing anything beside it (`immutable`: no
/// journal, no lock): every one of them needs its key file in the backup.
pub async fn snapshot_kek_versions(path: &Path) -> StorageResult<Vec<i64>> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .immutable(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let versions: Result<Vec<(i64,)>, sqlx::Error> =
        sqlx::query_as("SELECT version FROM kek_versions ORDER BY version")
            .fetch_all(&pool)
            .await;
    pool.close().await;
    Ok(versions?.into_iter().map(|(v,)| v).collect())
}
