//! Persistence: a trait per aggregate, each implemented for SQLite (the
//! embedded default) and PostgreSQL (several stateless processes sharing one
//! database). [`Store`] is their sum; the rest of the crate holds a
//! [`DynStore`] and calls any aggregate's methods on it without importing
//! that aggregate's trait.
//!
//! Storage stores and fetches; it never decides who may do what.
//!
//! Each aggregate's file holds its rows, its trait and its SQL, written once
//! for both backends in the dialect common to SQLite ≥ 3.35 and PostgreSQL
//! (`$n` placeholders), inside a macro that [`impl_store!`] invokes for
//! each backend; only connection set-up and locking differ (`sqlite.rs`,
//! `postgres.rs`). The aggregates:
//!
//! - `instance` ([`InstanceStore`]): the backend, liveness, closing, the
//!   migrations, whether anything was registered, the instance's marks;
//! - `residents` ([`ResidentStore`]): registration, provider logins, erasure;
//! - `agents` ([`AgentStore`]): agents, structures, memberships, TOTP devices;
//! - `partners` ([`PartnerStore`]): partners, reachable residents, pseudonyms;
//! - `sources` ([`SourceStore`]): data sources' credentials, residents' links
//!   to them and the one-time codes that make a link;
//! - `deposits` ([`DepositStore`]): deposited record versions with their
//!   provenance, idempotency, residents' pivot digests;
//! - `sessions` ([`SessionStore`]): sessions, logins under way, assertion jtis;
//! - `consents` ([`ConsentStore`]): consents and their events;
//! - `mandates` ([`MandateStore`]): mandates, authorisations, drafts;
//! - `rights` ([`RightsStore`]): restriction, objections, rights requests,
//!   art. 19 notices;
//! - `records` ([`RecordStore`]): KEK versions, data keys, sealed records;
//! - `access` ([`AccessStore`]): what a partner's read needs, in one statement;
//! - `extracts` ([`ExtractStore`]): extracts, the ε budget, cohorts;
//! - `audit` ([`AuditStore`]): the audit log's tables;
//! - `witnesses` ([`WitnessStore`]): the log's witnesses and their
//!   cosignatures;
//! - `stats` ([`StatsStore`]): the exact counts of the open statistics, the
//!   immutable releases and the public ε ledger;
//! - `seed` ([`SeedStore`]): the synthetic territory.

use std::sync::Arc;

use crate::config::DatabaseUrl;

mod access;
mod agents;
mod alerts;
mod audit;
mod columns;
mod consents;
pub(crate) mod deposits;
mod extracts;
mod instance;
mod mandates;
mod outbox;
mod partners;
mod postgres;
mod records;
mod residents;
mod rights;
mod seed;
mod sessions;
pub(crate) mod sources;
mod sqlite;
pub(crate) mod stats;
mod witnesses;
mod writer;

pub use access::{AccessStore, PartnerRead, PartnerReadFacts};
pub use agents::{AgentRow, AgentStore, StructureRow, TotpRow};
pub use alerts::{AlertMailClaim, AlertRow, AlertRulesRow, AlertStore, BurstCheck, MandateEffects};
pub use audit::{
    AuditEncoder, AuditStore, CheckpointRow, IntegrationState, Sequenced, SequencedEntry, TileRow,
};
pub use consents::{ConsentEventRow, ConsentForDecision, ConsentRow, ConsentStore};
pub use deposits::{
    DepositFacts, DepositOutcome, DepositRow, DepositStore, DepositSubject, DepositedVersion,
    FactsAsked,
};
pub use extracts::{ApproveOutcome, ExtractRow, ExtractStore};
pub use instance::InstanceStore;
pub use mandates::{AuthorisationRow, MandateDraftRow, MandateRow, MandateStore};
pub use outbox::{OutboxClaim, OutboxCounts, OutboxMessage, OutboxStore};
pub use partners::{PartnerRow, PartnerStore};
pub use postgres::PgStore;
pub use records::{DataKeyRow, PageRecordRow, RecordOrigin, RecordRow, RecordStore};
pub use residents::ResidentStore;
pub use rights::{NotificationRow, RightsEventRow, RightsRequestRow, RightsStore};
pub use seed::{SeedBatch, SeedStore};
pub use sessions::{LoginAttemptRow, NewSession, SessionRow, SessionStore};
pub use sources::{LinkCodeKind, SourceClientRow, SourceLinkRow, SourceStore, TakenLinkCode};
pub use sqlite::SqliteStore;
pub use sqlite::snapshot_kek_versions;
pub use stats::{
    ClampedTable, PublishOutcome, StatCount, StatsBudgetRow, StatsReleaseRow, StatsStore,
};
pub use witnesses::{WitnessRow, WitnessStore};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("constraint violated: {0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    #[error("integrity check failed: {0}")]
    Integrity(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("cannot open database: {0}")]
    Open(String),
    #[error("database error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StorageError::NotFound,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StorageError::Unavailable(e.to_string())
            }
            sqlx::Error::WorkerCrashed => StorageError::Unavailable(e.to_string()),
            // A stored text that is not a value of its domain type
            // (`storage::columns`): the database holds what coffre never writes.
            sqlx::Error::ColumnDecode { .. } => StorageError::Integrity(e.to_string()),
            sqlx::Error::Database(db)
                if db.is_unique_violation() || db.is_foreign_key_violation() =>
            {
                // The constraint name is safe to log; the offending values are not kept.
                StorageError::Conflict(db.constraint().unwrap_or("unique").to_string())
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|c| unavailable_code(&c)) => {
                StorageError::Unavailable(e.to_string())
            }
            _ => StorageError::Other(e.to_string()),
        }
    }
}

/// Database errors that say the database cannot serve now (a full disk, an
/// I/O error, a lock held too long, a server shutting down) rather than that
/// the request was wrong: answered 503, and the service recovers when they
/// clear. SQLite reports its numeric (extended) result code; PostgreSQL its
/// SQLSTATE.
fn unavailable_code(code: &str) -> bool {
    if let Ok(n) = code.parse::<i32>() {
        // SQLITE_BUSY, _LOCKED, _IOERR, _FULL, _CANTOPEN (primary codes).
        return matches!(n & 0xff, 5 | 6 | 10 | 13 | 14);
    }
    // Connection exception, insufficient resources (disk full), operator
    // intervention (shutdown), system error.
    code.len() == 5 && matches!(&code[..2], "08" | "53" | "57" | "58")
}

impl From<sqlx::migrate::MigrateError> for StorageError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StorageError::Migration(e.to_string())
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The clause that makes a queue's claim skip rows another worker
    /// holds (PostgreSQL); SQLite's write lock serialises claims anyway.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The one storage interface: every aggregate's trait. Every method is a
/// short transaction of its own unless its name says otherwise.
pub trait Store:
    InstanceStore
    + ResidentStore
    + AgentStore
    + PartnerStore
    + SourceStore
    + DepositStore
    + SessionStore
    + ConsentStore
    + MandateStore
    + OutboxStore
    + AlertStore
    + RightsStore
    + RecordStore
    + AccessStore
    + ExtractStore
    + AuditStore
    + WitnessStore
    + StatsStore
    + SeedStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: InstanceStore
        + ResidentStore
        + AgentStore
        + PartnerStore
        + SourceStore
        + DepositStore
        + SessionStore
        + ConsentStore
        + MandateStore
        + OutboxStore
        + AlertStore
        + RightsStore
        + RecordStore
        + AccessStore
        + ExtractStore
        + AuditStore
        + WitnessStore
        + StatsStore
        + SeedStore
        + Send
        + Sync
        + 'static
{
}

pub type DynStore = Arc<dyn Store>;

/// Opens the store named by the URL scheme and applies migrations.
pub async fn open(url: &DatabaseUrl) -> StorageResult<DynStore> {
    let store: DynStore = match url {
        DatabaseUrl::Sqlite { path } => Arc::new(SqliteStore::open(path).await?),
        DatabaseUrl::Postgres { url } => Arc::new(PgStore::open(url).await?),
    };
    Ok(store)
}

/// Every aggregate's trait for one backend, with the backend's few
/// differences passed in: its `sqlx` database, its [`Backend`], its
/// migrations folder, and the lock a statement takes on a resident row it
/// checks (` FOR SHARE` on PostgreSQL; SQLite's write lock covers it). (A
/// macro rather than generics over `sqlx::Database`, whose trait bounds grow
/// without end.)
macro_rules! impl_store {
    ($store:ty, $db:ty, $backend:expr, $migrations:literal, $for_share:literal) => {
        $crate::storage::instance::impl_instance_store!($store, $backend, $migrations);
        $crate::storage::residents::impl_resident_store!($store);
        $crate::storage::agents::impl_agent_store!($store);
        $crate::storage::partners::impl_partner_store!($store, $db);
        $crate::storage::sources::impl_source_store!($store, $for_share);
        $crate::storage::deposits::impl_deposit_store!($store, $db, $backend);
        $crate::storage::sessions::impl_session_store!($store);
        $crate::storage::consents::impl_consent_store!($store);
        $crate::storage::mandates::impl_mandate_store!($store, $db, $for_share);
        $crate::storage::outbox::impl_outbox_store!($store, $db, $backend);
        $crate::storage::alerts::impl_alert_store!($store, $db, $backend);
        $crate::storage::rights::impl_rights_store!($store, $db);
        $crate::storage::records::impl_record_store!($store, $db, $for_share);
        $crate::storage::access::impl_access_store!($store);
        $crate::storage::extracts::impl_extract_store!($store);
        $crate::storage::audit::impl_audit_store!($store, $db, $backend);
        $crate::storage::seed::impl_seed_store!($store, $db);
        $crate::storage::witnesses::impl_witness_store!($store);
        $crate::storage::stats::impl_stats_store!($store);
    };
}
pub(crate) use impl_store;
