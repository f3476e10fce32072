//! Persistence: one [`Store`] trait, implemented for SQLite (embedded
//! default) and PostgreSQL (several stateless processes sharing one database).
//!
//! Storage stores and fetches; it never decides who may do what. Both
//! implementations share their SQL through the `shared_queries!` macro (the
//! SQL here is written in the dialect common to SQLite ≥ 3.35 and PostgreSQL);
//! only connection set-up and locking differ.

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::DatabaseUrl;
use crate::domain::{Role, Timestamp};

mod postgres;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

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
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StructureRow {
    pub id: String,
    pub siret: String,
    pub name: String,
    /// Comma-separated démarche codes.
    pub allowed_demarches: String,
    pub active: bool,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AgentRow {
    pub id: String,
    pub role: String,
    pub display_name: String,
    /// The current structure (aidants and référents).
    pub structure_id: Option<String>,
    pub active: bool,
    pub can_create_mandates: bool,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PartnerRow {
    pub id: String,
    pub name: String,
    pub client_id: String,
    pub client_secret_hash: String,
    pub age_recipient: Option<String>,
    pub active: bool,
    /// Public keys (JWKS JSON) for `private_key_jwt`, when registered.
    pub client_jwks: Option<String>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SessionRow {
    pub actor_id: String,
    pub role: String,
    pub csrf_token: String,
    pub expires_at: i64,
    pub last_seen_at: i64,
    pub provider: String,
    pub id_token_sealed: Option<String>,
}

/// A login under way between the redirect to an OpenID provider and its
/// callback (see migration 0006).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LoginAttemptRow {
    pub state_digest: String,
    pub browser_digest: String,
    pub provider: String,
    pub sealed: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// The mandate draft this resident login confirms, if any (the login
    /// then opens no resident session: the aidant's session goes on).
    pub mandate_draft: Option<String>,
}

/// An agent's TOTP device: the secret sealed under its own wrapped data key.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TotpRow {
    pub agent_id: String,
    pub kek_version: i64,
    pub wrapped_key: Vec<u8>,
    pub sealed_secret: Vec<u8>,
    pub last_step: i64,
    pub failures: i64,
    pub locked_until: i64,
    pub created_at: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct MandateRow {
    pub id: String,
    pub resident_id: String,
    pub structure_id: String,
    pub aidant_id: String,
    pub duration_days: i64,
    pub template_version: String,
    pub renews: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// One démarche of one mandate.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AuthorisationRow {
    pub mandate_id: String,
    pub resident_id: String,
    pub structure_id: String,
    pub demarche: String,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RightsRequestRow {
    pub id: String,
    pub resident_id: String,
    pub kind: String,
    pub purpose: Option<String>,
    pub state: String,
    pub created_at: i64,
    pub due_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RightsEventRow {
    pub request_id: String,
    pub seq: i64,
    pub state: String,
    pub actor_id: String,
    pub actor_role: String,
    pub reason: Option<String>,
    pub at: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: String,
    pub partner_id: String,
    pub pseudonym: String,
    pub kind: String,
    pub category: Option<String>,
    pub created_at: i64,
    pub fetched_at: Option<i64>,
}

/// One transaction of `coffre seed`: residents with their wrapped data
/// keys, sealed records, consents and consent events.
#[derive(Clone, Debug, Default)]
pub struct SeedBatch {
    pub residents: Vec<String>,
    pub data_keys: Vec<DataKeyRow>,
    /// (resident id, record)
    pub records: Vec<(String, RecordRow)>,
    pub consents: Vec<ConsentRow>,
    pub events: Vec<ConsentEventRow>,
    pub now: Timestamp,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ExtractRow {
    pub id: String,
    pub partner_id: String,
    pub purpose: String,
    pub kind: String,
    pub spec: String,
    pub state: String,
    pub reason: Option<String>,
    pub rows_done: i64,
    pub rows_total: i64,
    pub manifest: Option<String>,
    pub manifest_jws: Option<String>,
    pub epsilon: Option<f64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: Option<i64>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct MandateDraftRow {
    pub id: String,
    pub aidant_id: String,
    pub structure_id: String,
    /// Comma-separated démarche codes.
    pub demarches: String,
    pub duration_days: i64,
    pub renews: Option<String>,
    pub resident_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// One sealed version of one record of the vault.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RecordRow {
    pub id: String,
    pub category: String,
    pub version: i64,
    pub sealed: Vec<u8>,
    pub created_at: i64,
}

/// One current record of a resident of a page, with the resident's
/// wrapped data key (an extract reads a page of residents in one query).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PageRecordRow {
    pub resident_id: String,
    pub kek_version: i64,
    pub wrapped: Vec<u8>,
    pub id: String,
    pub category: String,
    pub version: i64,
    pub sealed: Vec<u8>,
    pub created_at: i64,
}

/// A data key as stored: wrapped by the KEK of `kek_version`.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DataKeyRow {
    pub resident_id: String,
    pub kek_version: i64,
    pub wrapped: Vec<u8>,
}

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

/// See [`Store::partner_read_facts`]. All false / none for an unknown resident.
#[derive(Clone, Debug, Default)]
pub struct PartnerReadFacts {
    /// The (resident, purpose) these facts were read for: a decision uses
    /// facts handed to it only for the same pair.
    pub resident_id: String,
    pub purpose: String,
    pub resident_active: bool,
    pub consent: Option<ConsentForDecision>,
    pub restricted: bool,
    pub objected: bool,
}

impl PartnerReadFacts {
    /// The facts of a resident who does not exist: nothing is allowed.
    pub fn unknown_resident(resident_id: &str, purpose: &str) -> Self {
        Self {
            resident_id: resident_id.to_string(),
            purpose: purpose.to_string(),
            ..Self::default()
        }
    }
}

/// Everything a partner's read of one category needs from the database,
/// read in one statement ([`Store::partner_read`]): the busiest route pays
/// one round trip to the database instead of three.
#[derive(Clone, Debug, Default)]
pub struct PartnerRead {
    /// The partner exists and is active (checked on every request).
    pub partner_active: bool,
    pub facts: PartnerReadFacts,
    /// The current version of the category, still sealed, with the
    /// resident's wrapped data key. It is opened only after the decision
    /// allowed the read and was recorded.
    pub record: Option<PageRecordRow>,
}

/// The columns of [`PartnerReadFacts`] as both [`Store::partner_read_facts`]
/// and [`Store::partner_read`] select them (same aliases). All null when the
/// resident does not exist.
#[derive(sqlx::FromRow)]
pub(crate) struct FactColumns {
    pub(crate) status: Option<String>,
    pub(crate) restricted_at: Option<i64>,
    pub(crate) objections: Option<i64>,
    pub(crate) consent_id: Option<String>,
    pub(crate) consent_state: Option<String>,
    pub(crate) consent_categories: Option<String>,
    pub(crate) consent_valid_until: Option<i64>,
    pub(crate) consent_notice_version: Option<String>,
}

impl FactColumns {
    pub(crate) fn into_facts(self, resident_id: &str, purpose: &str) -> PartnerReadFacts {
        let Some(status) = self.status else {
            return PartnerReadFacts::unknown_resident(resident_id, purpose);
        };
        let consent = match (
            self.consent_id,
            self.consent_state,
            self.consent_categories,
            self.consent_notice_version,
        ) {
            (Some(id), Some(state), Some(categories), Some(notice_version)) => {
                Some(ConsentForDecision {
                    id,
                    state,
                    categories,
                    valid_until: self.consent_valid_until,
                    notice_version,
                })
            }
            _ => None,
        };
        PartnerReadFacts {
            resident_id: resident_id.to_string(),
            purpose: purpose.to_string(),
            resident_active: status == "active",
            consent,
            restricted: self.restricted_at.is_some(),
            objected: self.objections.unwrap_or(0) > 0,
        }
    }
}

/// The row of [`Store::partner_read`]'s statement.
#[derive(sqlx::FromRow)]
pub(crate) struct PartnerReadRow {
    pub(crate) partner_active: bool,
    #[sqlx(flatten)]
    pub(crate) facts: FactColumns,
    pub(crate) kek_version: Option<i64>,
    pub(crate) wrapped: Option<Vec<u8>>,
    pub(crate) record_id: Option<String>,
    pub(crate) record_category: Option<String>,
    pub(crate) record_version: Option<i64>,
    pub(crate) sealed: Option<Vec<u8>>,
    pub(crate) record_created_at: Option<i64>,
}

impl PartnerReadRow {
    pub(crate) fn into_read(self, resident_id: &str, purpose: &str) -> PartnerRead {
        let record = match (
            self.kek_version,
            self.wrapped,
            self.record_id,
            self.record_category,
            self.record_version,
            self.sealed,
            self.record_created_at,
        ) {
            (
                Some(kek_version),
                Some(wrapped),
                Some(id),
                Some(category),
                Some(version),
                Some(sealed),
                Some(created_at),
            ) => Some(PageRecordRow {
                resident_id: resident_id.to_string(),
                kek_version,
                wrapped,
                id,
                category,
                version,
                sealed,
                created_at,
            }),
            _ => None,
        };
        PartnerRead {
            partner_active: self.partner_active,
            facts: self.facts.into_facts(resident_id, purpose),
            record,
        }
    }
}

/// The columns of a consent the access decision reads.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ConsentForDecision {
    pub id: String,
    /// `given`, `refused` or `withdrawn`.
    pub state: String,
    /// Comma-separated data categories.
    pub categories: String,
    pub valid_until: Option<i64>,
    pub notice_version: String,
}

/// The current recorded state of one (resident, purpose) consent.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ConsentRow {
    pub id: String,
    pub resident_id: String,
    pub purpose: String,
    /// `given`, `refused` or `withdrawn` (expiry is derived from the clock).
    pub state: String,
    /// Comma-separated data categories.
    pub categories: String,
    pub valid_until: Option<i64>,
    pub notice_version: String,
    pub updated_at: i64,
    /// Number of events so far: the compare-and-set guard of the next one.
    pub seq: i64,
}

/// One event of a consent's append-only history, with its receipt.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ConsentEventRow {
    pub id: String,
    pub consent_id: String,
    pub purpose: String,
    pub state: String,
    pub categories: String,
    pub valid_until: Option<i64>,
    pub notice_version: String,
    pub actor_id: String,
    pub actor_role: String,
    pub structure_id: Option<String>,
    pub audit_index: i64,
    pub receipt: String,
    pub created_at: i64,
}

#[derive(Clone, Debug)]
pub struct NewSession<'a> {
    pub token_hash: &'a str,
    pub actor_id: &'a str,
    pub role: Role,
    pub csrf_token: &'a str,
    pub now: Timestamp,
    pub expires_at: Timestamp,
    /// `demo`, `resident` or `agent`: who vouched for the login.
    pub provider: &'a str,
    pub id_token_sealed: Option<&'a str>,
}

/// The one storage interface. Every method is a short transaction of its own
/// unless its name says otherwise.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Applies pending migrations (idempotent; safe from several processes).
    async fn migrate(&self) -> StorageResult<()>;

    /// A cheap round trip, for `/readyz`.
    async fn ping(&self) -> StorageResult<()>;

    /// Closes the pool, waiting for connections to return.
    async fn close(&self);

    async fn count_residents(&self) -> StorageResult<i64>;
    /// Whether any resident exists, whatever the status: one index probe,
    /// where counting would read every resident (start-up asks this).
    async fn has_residents(&self) -> StorageResult<bool>;
    async fn insert_resident(&self, id: &str, now: Timestamp) -> StorageResult<()>;
    /// Whether nobody was ever registered: no resident, agent, partner or
    /// structure.
    async fn is_blank(&self) -> StorageResult<bool>;
    /// Whether the instance carries the mark `name` (e.g. `demo`).
    async fn has_instance_mark(&self, name: &str) -> StorageResult<bool>;
    async fn set_instance_mark(&self, name: &str, now: Timestamp) -> StorageResult<()>;
    async fn resident_exists(&self, id: &str) -> StorageResult<bool>;

    async fn insert_structure(&self, s: &StructureRow, now: Timestamp) -> StorageResult<()>;
    async fn list_structures(&self) -> StorageResult<Vec<StructureRow>>;

    async fn insert_agent(
        &self,
        a: &AgentRow,
        email_digest: Option<&str>,
        now: Timestamp,
    ) -> StorageResult<()>;
    async fn find_agent(&self, id: &str) -> StorageResult<Option<AgentRow>>;
    async fn find_agent_by_email_digest(&self, digest: &str) -> StorageResult<Option<AgentRow>>;

    async fn insert_partner(&self, p: &PartnerRow, now: Timestamp) -> StorageResult<()>;
    async fn find_partner_by_client_id(&self, client_id: &str)
    -> StorageResult<Option<PartnerRow>>;
    async fn find_partner(&self, id: &str) -> StorageResult<Option<PartnerRow>>;
    /// Activates or deactivates a partner; `false` if there is no such partner.
    async fn set_partner_active(&self, id: &str, active: bool) -> StorageResult<bool>;
    /// Records a client assertion's jti until `expires_at`; false when it
    /// was already used (a replay). Forgets the expired ones.
    async fn use_assertion_jti(
        &self,
        jti_digest: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StorageResult<bool>;

    async fn create_session(&self, s: &NewSession<'_>) -> StorageResult<()>;
    /// The live session with this token digest: not expired at `now` and
    /// used since `idle_cutoff`.
    async fn find_session(
        &self,
        token_hash: &str,
        now: Timestamp,
        idle_cutoff: Timestamp,
    ) -> StorageResult<Option<SessionRow>>;
    /// Records activity on a session (for the idle timeout).
    async fn touch_session(&self, token_hash: &str, now: Timestamp) -> StorageResult<()>;
    async fn delete_session(&self, token_hash: &str) -> StorageResult<()>;
    /// Deletes sessions past their absolute expiry or idle since `idle_cutoff`.
    async fn purge_expired_sessions(
        &self,
        now: Timestamp,
        idle_cutoff: Timestamp,
    ) -> StorageResult<u64>;

    // --- mandates ---
    async fn find_structure(&self, id: &str) -> StorageResult<Option<StructureRow>>;
    async fn agent_structures(&self, agent_id: &str) -> StorageResult<Vec<String>>;
    /// Adds a structure to an agent's (idempotent).
    async fn add_agent_structure(&self, agent_id: &str, structure_id: &str) -> StorageResult<()>;
    /// Makes one of the agent's structures the current one.
    async fn set_current_structure(
        &self,
        agent_id: &str,
        structure_id: &str,
    ) -> StorageResult<bool>;
    /// The agents who belong to a structure; `active` is false when either
    /// the account or the membership is.
    async fn agents_of_structure(&self, structure_id: &str) -> StorageResult<Vec<AgentRow>>;
    /// Ends or restores one agent's membership of one structure (a
    /// référent's act); the account itself is untouched. False when the
    /// agent does not belong to the structure.
    async fn set_membership_active(
        &self,
        agent_id: &str,
        structure_id: &str,
        active: bool,
    ) -> StorageResult<bool>;
    /// The structure, if it is active and the agent belongs to it actively.
    async fn active_structure_of(
        &self,
        agent_id: &str,
        structure_id: &str,
    ) -> StorageResult<Option<StructureRow>>;
    async fn set_agent_active(
        &self,
        agent_id: &str,
        active: bool,
        now: Timestamp,
    ) -> StorageResult<bool>;
    async fn set_structure_demarches(
        &self,
        structure_id: &str,
        demarches: &str,
    ) -> StorageResult<()>;
    async fn upsert_totp(&self, row: &TotpRow) -> StorageResult<()>;
    async fn find_totp(&self, agent_id: &str) -> StorageResult<Option<TotpRow>>;
    /// TOTP devices whose key is wrapped under another KEK version.
    async fn totp_not_at(&self, version: i64) -> StorageResult<Vec<TotpRow>>;
    /// Re-wraps a TOTP device's key if it is still under `old_version`.
    async fn rewrap_totp(
        &self,
        agent_id: &str,
        old_version: i64,
        version: i64,
        wrapped: &[u8],
    ) -> StorageResult<bool>;
    /// Accepts time step `step` for the agent if it is newer than the last
    /// one accepted (no replay); resets the failure count.
    async fn totp_accept(&self, agent_id: &str, step: i64) -> StorageResult<bool>;
    /// Claims one attempt before a code is evaluated, counting it as a
    /// failure until [`Store::totp_accept`] clears the count: false while the
    /// device is locked at `now`; the claim that reaches `max_failures` locks
    /// it until `lock_until`. One statement, so parallel wrong codes cannot
    /// all be evaluated before the lock.
    async fn totp_claim_attempt(
        &self,
        agent_id: &str,
        max_failures: i64,
        lock_until: Timestamp,
        now: Timestamp,
    ) -> StorageResult<bool>;
    async fn insert_mandate_draft(&self, d: &MandateDraftRow) -> StorageResult<()>;
    async fn find_mandate_draft(&self, id: &str) -> StorageResult<Option<MandateDraftRow>>;
    async fn set_draft_resident(&self, id: &str, resident_id: &str) -> StorageResult<()>;
    async fn delete_mandate_draft(&self, id: &str) -> StorageResult<()>;
    /// Creates a mandate with one authorisation per démarche, revoking (as
    /// `superseded`) the live ones of the same (resident, structure,
    /// démarche), in one transaction.
    async fn create_mandate(
        &self,
        m: &MandateRow,
        demarches: &[String],
        now: Timestamp,
    ) -> StorageResult<()>;
    async fn find_mandate(&self, id: &str) -> StorageResult<Option<MandateRow>>;
    async fn mandate_authorisations(
        &self,
        mandate_id: &str,
    ) -> StorageResult<Vec<AuthorisationRow>>;
    async fn mandates_of_resident(&self, resident_id: &str) -> StorageResult<Vec<MandateRow>>;
    /// Revokes the live authorisations of a mandate (one démarche, or all);
    /// returns how many.
    async fn revoke_authorisations(
        &self,
        mandate_id: &str,
        demarche: Option<&str>,
        by: &str,
        now: Timestamp,
    ) -> StorageResult<u64>;
    /// The live, unexpired authorisation of (resident, structure, démarche).
    async fn live_authorisation(
        &self,
        resident_id: &str,
        structure_id: &str,
        demarche: &str,
        now: Timestamp,
    ) -> StorageResult<Option<AuthorisationRow>>;
    /// Live, unexpired authorisations of a structure expiring before
    /// `until` (all of them with `until` = i64::MAX).
    async fn structure_authorisations(
        &self,
        structure_id: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StorageResult<Vec<AuthorisationRow>>;

    // --- rights and retention ---
    /// (restricted, objected to `purpose`) for the access decision.
    async fn rights_state(
        &self,
        resident_id: &str,
        purpose: Option<&str>,
    ) -> StorageResult<(bool, bool)>;
    /// Everything a partner's read for `purpose` must know of a resident, in
    /// one query (it runs on every partner read): whether the resident is
    /// active, the consent for the purpose, restriction and objection.
    async fn partner_read_facts(
        &self,
        resident_id: &str,
        purpose: &str,
    ) -> StorageResult<PartnerReadFacts>;
    /// A partner's read of one category of one resident, in one statement:
    /// whether the partner is active, [`Store::partner_read_facts`], and the
    /// current sealed record with its wrapped key. Absent partner: all false.
    async fn partner_read(
        &self,
        partner_id: &str,
        resident_id: &str,
        purpose: &str,
        category: &str,
    ) -> StorageResult<PartnerRead>;
    /// With the art. 19 notices a restriction causes, in one transaction.
    async fn set_restricted(
        &self,
        resident_id: &str,
        at: Option<Timestamp>,
        notices: &[NotificationRow],
    ) -> StorageResult<()>;
    async fn restricted_since(&self, resident_id: &str) -> StorageResult<Option<Timestamp>>;
    async fn add_objection(
        &self,
        resident_id: &str,
        purpose: &str,
        now: Timestamp,
    ) -> StorageResult<bool>;
    async fn remove_objection(&self, resident_id: &str, purpose: &str) -> StorageResult<bool>;
    async fn objections_of(&self, resident_id: &str) -> StorageResult<Vec<(String, i64)>>;
    async fn insert_rights_request(
        &self,
        r: &RightsRequestRow,
        e: &RightsEventRow,
    ) -> StorageResult<()>;
    async fn find_rights_request(&self, id: &str) -> StorageResult<Option<RightsRequestRow>>;
    async fn rights_requests_of(&self, resident_id: &str) -> StorageResult<Vec<RightsRequestRow>>;
    /// Every request, open ones first by due date (the DPO's list).
    async fn all_rights_requests(&self, limit: i64) -> StorageResult<Vec<RightsRequestRow>>;
    async fn rights_request_events(&self, id: &str) -> StorageResult<Vec<RightsEventRow>>;
    /// Moves a request to `state` (and `due_at`) if it is still in
    /// `from_state`; appends the event. False when it was not.
    async fn update_rights_request(
        &self,
        id: &str,
        from_state: &str,
        state: &str,
        due_at: Timestamp,
        event: &RightsEventRow,
    ) -> StorageResult<bool>;
    async fn insert_notifications(&self, rows: &[NotificationRow]) -> StorageResult<()>;
    /// A partner's notifications (marking them fetched at `now`).
    async fn take_notifications(
        &self,
        partner_id: &str,
        now: Timestamp,
    ) -> StorageResult<Vec<NotificationRow>>;
    /// Every version of a resident's category (erasure for one purpose).
    async fn delete_category(&self, resident_id: &str, category: &str) -> StorageResult<u64>;
    /// Deletes versions of `category` superseded by a version written at or
    /// before `cutoff`.
    async fn purge_superseded(&self, category: &str, cutoff: Timestamp) -> StorageResult<u64>;
    /// Expired login attempts and mandate drafts.
    async fn purge_expired_logins_and_drafts(&self, now: Timestamp) -> StorageResult<u64>;
    /// Mandates whose every authorisation ended (expired or revoked) at or
    /// before `cutoff`, with their authorisations.
    async fn purge_ended_mandates(&self, cutoff: Timestamp) -> StorageResult<u64>;
    /// Residents holding records of `category`, a category only the
    /// consent-based `purposes` hold, that no consent covers: counted from
    /// the data (a resident who never consented is found too), keeping
    /// data written, and consents decided or valid, within the grace
    /// period that ends at `ended_before`.
    async fn consent_orphaned_records(
        &self,
        purposes: &[String],
        category: &str,
        ended_before: Timestamp,
    ) -> StorageResult<Vec<String>>;

    // --- synthetic territory ---
    /// Inserts one seed batch in one transaction, in multi-row statements.
    async fn seed_batch(&self, batch: &SeedBatch) -> StorageResult<()>;

    // --- extracts ---
    async fn insert_extract(&self, e: &ExtractRow) -> StorageResult<()>;
    async fn find_extract(&self, id: &str) -> StorageResult<Option<ExtractRow>>;
    async fn extracts_of_partner(&self, partner_id: &str) -> StorageResult<Vec<ExtractRow>>;
    async fn all_extracts(&self, limit: i64) -> StorageResult<Vec<ExtractRow>>;
    /// Approves a requested extract if the partner's ε budget still holds
    /// its ε, atomically: concurrent approvals for one partner are
    /// serialised on the partner's row, so check and spend cannot
    /// interleave (both backends).
    async fn extract_approve(
        &self,
        id: &str,
        budget: f64,
        now: Timestamp,
    ) -> StorageResult<ApproveOutcome>;
    /// Moves an extract from `from` to `to` (with a reason); false when it
    /// was not in `from`.
    async fn extract_transition(
        &self,
        id: &str,
        from: &str,
        to: &str,
        reason: Option<&str>,
        now: Timestamp,
    ) -> StorageResult<bool>;
    async fn extract_progress(&self, id: &str, done: i64, total: i64) -> StorageResult<()>;
    async fn extract_ready(
        &self,
        id: &str,
        manifest: &str,
        jws: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StorageResult<()>;
    /// ε already spent by a partner (extracts approved with noise).
    async fn epsilon_spent(&self, partner_id: &str) -> StorageResult<f64>;
    /// Ready or downloaded extracts whose file is past its retention.
    async fn extracts_to_expire(&self, now: Timestamp) -> StorageResult<Vec<String>>;
    /// One page of an extract's cohort, by resident id after `after`:
    /// active, not restricted, not objecting to the purpose; for a consent
    /// purpose, with a consent given, valid at `now`, under the current
    /// notice (its categories returned, for the caller to check).
    async fn cohort_page(
        &self,
        purpose: &str,
        consent_based: bool,
        notice_version: &str,
        now: Timestamp,
        after: &str,
        limit: i64,
    ) -> StorageResult<Vec<(String, Option<String>)>>;
    /// How many candidates `cohort_page` will go through (for progress).
    async fn count_cohort(
        &self,
        purpose: &str,
        consent_based: bool,
        notice_version: &str,
        now: Timestamp,
    ) -> StorageResult<i64>;

    // --- OpenID Connect logins ---
    /// Stores a login under way, and drops the attempts that expired.
    async fn insert_login_attempt(&self, row: &LoginAttemptRow) -> StorageResult<()>;
    /// Consumes the attempt with this state digest: a state works once.
    async fn take_login_attempt(
        &self,
        state_digest: &str,
    ) -> StorageResult<Option<LoginAttemptRow>>;
    /// The resident whose provider account has this subject digest, created
    /// with `new_resident_id` on the first login. Returns (id, created).
    async fn resident_for_login(
        &self,
        subject_digest: &str,
        new_resident_id: &str,
        now: Timestamp,
    ) -> StorageResult<(String, bool)>;
    async fn delete_sessions_of(&self, actor_id: &str) -> StorageResult<()>;

    // --- vault ---
    /// The highest registered KEK version: the one new data keys use.
    async fn current_kek_version(&self) -> StorageResult<Option<i64>>;
    async fn register_kek_version(&self, version: i64, now: Timestamp) -> StorageResult<()>;
    /// Removes a KEK version from the database; `false` while a data key
    /// still uses it (the foreign key refuses).
    async fn unregister_kek_version(&self, version: i64) -> StorageResult<bool>;
    async fn find_data_key(&self, resident_id: &str) -> StorageResult<Option<DataKeyRow>>;
    /// Stores a resident's first data key; `false` if one exists already
    /// (another request won the race: use that one).
    async fn insert_data_key(&self, key: &DataKeyRow, now: Timestamp) -> StorageResult<bool>;
    /// Inserts a record version and, in the same transaction, the art. 19
    /// notices it causes (none: one statement).
    async fn insert_record(
        &self,
        resident_id: &str,
        record: &RecordRow,
        notices: &[NotificationRow],
    ) -> StorageResult<()>;
    async fn latest_record_version(&self, resident_id: &str, category: &str) -> StorageResult<i64>;
    /// The latest version of each category the resident has.
    async fn current_records(&self, resident_id: &str) -> StorageResult<Vec<RecordRow>>;
    /// The latest version of each of `categories` for every resident of
    /// `residents`, each with the resident's wrapped data key, ordered by
    /// resident: one query for a page of an extract.
    async fn current_records_of_page(
        &self,
        residents: &[String],
        categories: &[String],
    ) -> StorageResult<Vec<PageRecordRow>>;
    /// Every version of one category, newest first.
    async fn record_history(
        &self,
        resident_id: &str,
        category: &str,
    ) -> StorageResult<Vec<RecordRow>>;
    /// Erasure: deletes the data key and every record, ends sessions and
    /// marks the resident erased, in one transaction. `false` if unknown.
    /// With the art. 19 notices to the recipients, in the same transaction.
    async fn erase_resident(
        &self,
        resident_id: &str,
        now: Timestamp,
        notices: &[NotificationRow],
    ) -> StorageResult<bool>;
    /// Data keys not yet wrapped by `version`, in resident order.
    async fn data_keys_not_at(&self, version: i64, limit: i64) -> StorageResult<Vec<DataKeyRow>>;
    async fn count_data_keys_not_at(&self, version: i64) -> StorageResult<i64>;
    /// Replaces wrapped keys in one transaction, each only if still at its
    /// old version (`rows[i].kek_version` is the new one). Returns how many.
    async fn rewrap_data_keys(
        &self,
        rows: &[(DataKeyRow, i64)],
        now: Timestamp,
    ) -> StorageResult<u64>;

    // --- consents ---
    /// The consent of a resident for a purpose: one indexed lookup.
    async fn find_consent(
        &self,
        resident_id: &str,
        purpose: &str,
    ) -> StorageResult<Option<ConsentRow>>;
    /// What the access decision needs of a (resident, purpose) consent, and
    /// nothing more: it is asked on every consent-based read.
    async fn consent_for_decision(
        &self,
        resident_id: &str,
        purpose: &str,
    ) -> StorageResult<Option<ConsentForDecision>>;
    async fn find_consent_by_id(&self, id: &str) -> StorageResult<Option<ConsentRow>>;
    async fn consents_of(&self, resident_id: &str) -> StorageResult<Vec<ConsentRow>>;
    /// A consent's history, oldest first.
    async fn consent_events(&self, consent_id: &str) -> StorageResult<Vec<ConsentEventRow>>;
    /// Appends an event and sets the current state, in one transaction, only
    /// if the current state is still the one the decision was made on
    /// (`expected_seq`: `None` when there was no consent yet). Otherwise
    /// `Conflict`: a concurrent decision won.
    async fn record_consent_event(
        &self,
        current: &ConsentRow,
        expected_seq: Option<i64>,
        event: &ConsentEventRow,
    ) -> StorageResult<()>;

    // --- partners ---
    /// Residents a partner may be shown for a purpose, in a stable order:
    /// those with a given, unexpired consent under the current notice when
    /// the purpose rests on consent, every active resident otherwise.
    async fn reachable_residents(
        &self,
        purpose: &str,
        consent_based: bool,
        notice_version: &str,
        now: Timestamp,
        offset: i64,
        limit: i64,
    ) -> StorageResult<Vec<String>>;
    async fn remember_pseudonyms(
        &self,
        partner_id: &str,
        pairs: &[(String, String)],
    ) -> StorageResult<()>;
    async fn resolve_pseudonym(
        &self,
        partner_id: &str,
        pseudonym: &str,
    ) -> StorageResult<Option<String>>;

    // --- audit log ---
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
    /// Empties the resident and recipients indexes; the writer (or `coffre audit reindex`)
    /// then rebuilds it from the entries. Readers meanwhile scan the log.
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
        resident_id: &str,
    ) -> StorageResult<(Vec<(String, String)>, u64)>;
    async fn audit_size(&self) -> StorageResult<u64>;
    /// Stored node hashes for these (level, index) coordinates, one query.
    async fn audit_nodes(&self, coords: &[(u8, u64)]) -> StorageResult<Vec<(u8, u64, [u8; 32])>>;
    /// Entries with index in [from, to), in order: (index, leaf).
    async fn audit_entries(&self, from: u64, to: u64) -> StorageResult<Vec<(i64, Vec<u8>)>>;
    /// Level-0 nodes (leaf hashes) with index in [from, to), in order.
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
        resident_id: &str,
        before: u64,
        limit: i64,
    ) -> StorageResult<Vec<(i64, Vec<u8>)>>;
    async fn audit_insert_checkpoint(&self, row: &CheckpointRow) -> StorageResult<()>;
    async fn audit_latest_checkpoint(&self) -> StorageResult<Option<CheckpointRow>>;
    async fn audit_checkpoints(&self) -> StorageResult<Vec<CheckpointRow>>;
}

pub type DynStore = Arc<dyn Store>;

/// What [`Store::extract_approve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApproveOutcome {
    Approved,
    /// Still requested: its ε would take the partner over budget.
    BudgetExhausted,
    /// Not (or no longer) a request.
    NotRequested,
}

/// Opens the store named by the URL scheme and applies migrations.
pub async fn open(url: &DatabaseUrl) -> StorageResult<DynStore> {
    let store: DynStore = match url {
        DatabaseUrl::Sqlite { path } => Arc::new(SqliteStore::open(path).await?),
        DatabaseUrl::Postgres { url } => Arc::new(PgStore::open(url).await?),
    };
    Ok(store)
}

/// One group commit's rows as JSON documents and blobs, so each table gets
/// one INSERT whatever the batch size: every statement is a round trip to
/// the database (through sqlx's worker thread on SQLite), and a multi-row
/// VALUES list would need one statement shape per batch size.
pub(crate) struct AuditRows {
    /// `[[index, offset in leaves, length, resident or null, created_at], …]`
    entries: String,
    leaves: Vec<u8>,
    /// `[[level, index], …]`, the hashes in the same order in `hashes`.
    nodes: String,
    hashes: Vec<u8>,
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

/// The `impl Store` both backends share, with their few differences passed
/// in. The SQL is written with `$n` placeholders, which SQLite and PostgreSQL
/// both accept. (A macro rather than generics over `sqlx::Database`, whose
/// trait bounds grow without end.)
macro_rules! impl_store {
    ($store:ty, $db:ty, $backend:expr, $migrations:literal, $for_share:literal) => {
    impl $store {
        /// Writes a planned batch: one statement for the entries, one for
        /// the nodes (see `AuditRows`).
        async fn insert_audit_rows(
            tx: &mut sqlx::Transaction<'_, $db>,
            plan: &$crate::storage::AuditAppend,
        ) -> $crate::storage::StorageResult<()> {
            let rows = $crate::storage::AuditRows::of(plan)?;
            let (entries, nodes) = $crate::storage::AuditRows::statements($backend);
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

        async fn insert_notifications_on(
            tx: &mut sqlx::Transaction<'_, $db>,
            rows: &[$crate::storage::NotificationRow],
        ) -> $crate::storage::StorageResult<()> {
            for n in rows {
                sqlx::query(
                    "INSERT INTO recipient_notifications (id, partner_id, pseudonym, kind, category, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&n.id)
                .bind(&n.partner_id)
                .bind(&n.pseudonym)
                .bind(&n.kind)
                .bind(&n.category)
                .bind(n.created_at)
                .execute(&mut **tx)
                .await?;
            }
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
    impl $crate::storage::Store for $store {
        fn backend(&self) -> $crate::storage::Backend {
            $backend
        }

        async fn migrate(&self) -> $crate::storage::StorageResult<()> {
            sqlx::migrate!($migrations).run(&self.pool).await?;
            Ok(())
        }

        async fn ping(&self) -> $crate::storage::StorageResult<()> {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        }

        async fn close(&self) {
            self.audit_writer.close().await;
            self.pool.close().await;
        }

        async fn count_residents(&self) -> $crate::storage::StorageResult<i64> {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM residents WHERE status = 'active'")
                .fetch_one(&self.pool)
                .await?;
            Ok(n)
        }

        async fn has_residents(&self) -> $crate::storage::StorageResult<bool> {
            Ok(sqlx::query_scalar::<_, String>("SELECT id FROM residents LIMIT 1")
                .fetch_optional(&self.pool)
                .await?
                .is_some())
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

        async fn insert_resident(
            &self,
            id: &str,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query("INSERT INTO residents (id, status, created_at) VALUES ($1, 'active', $2)")
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn resident_exists(&self, id: &str) -> $crate::storage::StorageResult<bool> {
            let row: Option<(String,)> =
                sqlx::query_as("SELECT id FROM residents WHERE id = $1 AND status = 'active'")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            Ok(row.is_some())
        }

        async fn insert_structure(
            &self,
            s: &$crate::storage::StructureRow,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO structures (id, siret, name, allowed_demarches, active, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&s.id)
            .bind(&s.siret)
            .bind(&s.name)
            .bind(&s.allowed_demarches)
            .bind(s.active)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn list_structures(
            &self,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::StructureRow>> {
            Ok(sqlx::query_as(
                "SELECT id, siret, name, allowed_demarches, active FROM structures ORDER BY name",
            )
            .fetch_all(&self.pool)
            .await?)
        }

        async fn insert_agent(
            &self,
            a: &$crate::storage::AgentRow,
            email_digest: Option<&str>,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO agents (id, role, display_name, email_digest, structure_id, active, created_at, \
                 can_create_mandates, habilitated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7)",
            )
            .bind(&a.id)
            .bind(&a.role)
            .bind(&a.display_name)
            .bind(email_digest)
            .bind(&a.structure_id)
            .bind(a.active)
            .bind(now)
            .bind(a.can_create_mandates)
            .execute(&self.pool)
            .await?;
            if let Some(structure) = &a.structure_id {
                sqlx::query(
                    "INSERT INTO agent_structures (agent_id, structure_id) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&a.id)
                .bind(structure)
                .execute(&self.pool)
                .await?;
            }
            Ok(())
        }

        async fn find_agent(
            &self,
            id: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::AgentRow>> {
            Ok(sqlx::query_as(
                "SELECT id, role, display_name, structure_id, active, can_create_mandates FROM agents WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn find_agent_by_email_digest(
            &self,
            digest: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::AgentRow>> {
            Ok(sqlx::query_as(
                "SELECT id, role, display_name, structure_id, active, can_create_mandates FROM agents WHERE email_digest = $1",
            )
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn insert_partner(
            &self,
            p: &$crate::storage::PartnerRow,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO partners (id, name, client_id, client_secret_hash, age_recipient, active, created_at, client_jwks) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&p.id)
            .bind(&p.name)
            .bind(&p.client_id)
            .bind(&p.client_secret_hash)
            .bind(&p.age_recipient)
            .bind(p.active)
            .bind(now)
            .bind(&p.client_jwks)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn find_partner_by_client_id(
            &self,
            client_id: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::PartnerRow>> {
            Ok(sqlx::query_as(
                "SELECT id, name, client_id, client_secret_hash, age_recipient, active, client_jwks \
                 FROM partners WHERE client_id = $1",
            )
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn find_partner(
            &self,
            id: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::PartnerRow>> {
            Ok(sqlx::query_as(
                "SELECT id, name, client_id, client_secret_hash, age_recipient, active, client_jwks \
                 FROM partners WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn set_partner_active(
            &self,
            id: &str,
            active: bool,
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query("UPDATE partners SET active = $2 WHERE id = $1")
                .bind(id)
                .bind(active)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn use_assertion_jti(
            &self,
            jti_digest: &str,
            expires_at: $crate::domain::Timestamp,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            let mut tx = self.pool.begin().await?;
            sqlx::query("DELETE FROM client_assertion_jtis WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let fresh = sqlx::query(
                "INSERT INTO client_assertion_jtis (jti_digest, expires_at) VALUES ($1, $2) \
                 ON CONFLICT (jti_digest) DO NOTHING",
            )
            .bind(jti_digest)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(fresh.rows_affected() == 1)
        }

        async fn create_session(
            &self,
            s: &$crate::storage::NewSession<'_>,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO sessions (token_hash, actor_id, role, csrf_token, created_at, expires_at, \
                 last_seen_at, provider, id_token_sealed) VALUES ($1, $2, $3, $4, $5, $6, $5, $7, $8)",
            )
            .bind(s.token_hash)
            .bind(s.actor_id)
            .bind(s.role.as_str())
            .bind(s.csrf_token)
            .bind(s.now)
            .bind(s.expires_at)
            .bind(s.provider)
            .bind(s.id_token_sealed)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn find_session(
            &self,
            token_hash: &str,
            now: $crate::domain::Timestamp,
            idle_cutoff: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::SessionRow>> {
            Ok(sqlx::query_as(
                "SELECT actor_id, role, csrf_token, expires_at, last_seen_at, provider, id_token_sealed \
                 FROM sessions WHERE token_hash = $1 AND expires_at > $2 AND last_seen_at > $3",
            )
            .bind(token_hash)
            .bind(now)
            .bind(idle_cutoff)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn touch_session(
            &self,
            token_hash: &str,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE token_hash = $1")
                .bind(token_hash)
                .bind(now)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn delete_session(&self, token_hash: &str) -> $crate::storage::StorageResult<()> {
            sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                .bind(token_hash)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn purge_expired_sessions(
            &self,
            now: $crate::domain::Timestamp,
            idle_cutoff: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<u64> {
            let done =
                sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
                    .bind(now)
                    .bind(idle_cutoff)
                    .execute(&self.pool)
                    .await?;
            Ok(done.rows_affected())
        }

        async fn find_structure(
            &self,
            id: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::StructureRow>> {
            Ok(sqlx::query_as(
                "SELECT id, siret, name, allowed_demarches, active FROM structures WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn agent_structures(&self, agent_id: &str) -> $crate::storage::StorageResult<Vec<String>> {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT structure_id FROM agent_structures WHERE agent_id = $1 AND active ORDER BY structure_id",
            )
            .bind(agent_id)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(|(s,)| s).collect())
        }

        async fn add_agent_structure(
            &self,
            agent_id: &str,
            structure_id: &str,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO agent_structures (agent_id, structure_id) VALUES ($1, $2) \
                 ON CONFLICT (agent_id, structure_id) DO UPDATE SET active = TRUE",
            )
            .bind(agent_id)
            .bind(structure_id)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn set_current_structure(
            &self,
            agent_id: &str,
            structure_id: &str,
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query(
                "UPDATE agents SET structure_id = $2 WHERE id = $1 AND EXISTS \
                 (SELECT 1 FROM agent_structures WHERE agent_id = $1 AND structure_id = $2 AND active)",
            )
            .bind(agent_id)
            .bind(structure_id)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn agents_of_structure(
            &self,
            structure_id: &str,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::AgentRow>> {
            Ok(sqlx::query_as(
                "SELECT a.id, a.role, a.display_name, a.structure_id, \
                 (a.active AND s.active) AS active, a.can_create_mandates \
                 FROM agents a JOIN agent_structures s ON s.agent_id = a.id \
                 WHERE s.structure_id = $1 ORDER BY a.display_name, a.id",
            )
            .bind(structure_id)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn set_membership_active(
            &self,
            agent_id: &str,
            structure_id: &str,
            active: bool,
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query(
                "UPDATE agent_structures SET active = $3 WHERE agent_id = $1 AND structure_id = $2",
            )
            .bind(agent_id)
            .bind(structure_id)
            .bind(active)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn active_structure_of(
            &self,
            agent_id: &str,
            structure_id: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::StructureRow>> {
            Ok(sqlx::query_as(
                "SELECT s.id, s.siret, s.name, s.allowed_demarches, s.active FROM structures s \
                 JOIN agent_structures m ON m.structure_id = s.id \
                 WHERE s.id = $2 AND m.agent_id = $1 AND m.active AND s.active",
            )
            .bind(agent_id)
            .bind(structure_id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn set_agent_active(
            &self,
            agent_id: &str,
            active: bool,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query(
                "UPDATE agents SET active = $2, deactivated_at = CASE WHEN $2 THEN NULL ELSE $3 END \
                 WHERE id = $1",
            )
            .bind(agent_id)
            .bind(active)
            .bind(now)
            .execute(&self.pool)
            .await?;
            if !active {
                sqlx::query("DELETE FROM sessions WHERE actor_id = $1")
                    .bind(agent_id)
                    .execute(&self.pool)
                    .await?;
            }
            Ok(done.rows_affected() == 1)
        }

        async fn set_structure_demarches(
            &self,
            structure_id: &str,
            demarches: &str,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query("UPDATE structures SET allowed_demarches = $2 WHERE id = $1")
                .bind(structure_id)
                .bind(demarches)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn upsert_totp(&self, r: &$crate::storage::TotpRow) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO totp_devices (agent_id, kek_version, wrapped_key, sealed_secret, last_step, failures, locked_until, created_at) \
                 VALUES ($1, $2, $3, $4, 0, 0, 0, $5) \
                 ON CONFLICT (agent_id) DO UPDATE SET kek_version = $2, wrapped_key = $3, sealed_secret = $4, \
                 last_step = 0, failures = 0, locked_until = 0, created_at = $5",
            )
            .bind(&r.agent_id)
            .bind(r.kek_version)
            .bind(&r.wrapped_key)
            .bind(&r.sealed_secret)
            .bind(r.created_at)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn find_totp(
            &self,
            agent_id: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::TotpRow>> {
            Ok(sqlx::query_as(
                "SELECT agent_id, kek_version, wrapped_key, sealed_secret, last_step, failures, locked_until, created_at \
                 FROM totp_devices WHERE agent_id = $1",
            )
            .bind(agent_id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn totp_not_at(
            &self,
            version: i64,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::TotpRow>> {
            Ok(sqlx::query_as(
                "SELECT agent_id, kek_version, wrapped_key, sealed_secret, last_step, failures, locked_until, created_at \
                 FROM totp_devices WHERE kek_version <> $1",
            )
            .bind(version)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn rewrap_totp(
            &self,
            agent_id: &str,
            old_version: i64,
            version: i64,
            wrapped: &[u8],
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query(
                "UPDATE totp_devices SET kek_version = $3, wrapped_key = $4 WHERE agent_id = $1 AND kek_version = $2",
            )
            .bind(agent_id)
            .bind(old_version)
            .bind(version)
            .bind(wrapped)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn totp_accept(&self, agent_id: &str, step: i64) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query(
                "UPDATE totp_devices SET last_step = $2, failures = 0, locked_until = 0 \
                 WHERE agent_id = $1 AND last_step < $2",
            )
            .bind(agent_id)
            .bind(step)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn totp_claim_attempt(
            &self,
            agent_id: &str,
            max_failures: i64,
            lock_until: $crate::domain::Timestamp,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query(
                "UPDATE totp_devices SET failures = failures + 1, \
                 locked_until = CASE WHEN failures + 1 >= $2 THEN $3 ELSE locked_until END \
                 WHERE agent_id = $1 AND locked_until <= $4",
            )
            .bind(agent_id)
            .bind(max_failures)
            .bind(lock_until)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn insert_mandate_draft(
            &self,
            d: &$crate::storage::MandateDraftRow,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO mandate_drafts (id, aidant_id, structure_id, demarches, duration_days, renews, resident_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&d.id)
            .bind(&d.aidant_id)
            .bind(&d.structure_id)
            .bind(&d.demarches)
            .bind(d.duration_days)
            .bind(&d.renews)
            .bind(&d.resident_id)
            .bind(d.created_at)
            .bind(d.expires_at)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn find_mandate_draft(
            &self,
            id: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::MandateDraftRow>> {
            Ok(sqlx::query_as(
                "SELECT id, aidant_id, structure_id, demarches, duration_days, renews, resident_id, created_at, expires_at \
                 FROM mandate_drafts WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn set_draft_resident(&self, id: &str, resident_id: &str) -> $crate::storage::StorageResult<()> {
            sqlx::query("UPDATE mandate_drafts SET resident_id = $2 WHERE id = $1")
                .bind(id)
                .bind(resident_id)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn delete_mandate_draft(&self, id: &str) -> $crate::storage::StorageResult<()> {
            sqlx::query("DELETE FROM mandate_drafts WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn create_mandate(
            &self,
            m: &$crate::storage::MandateRow,
            demarches: &[String],
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            let mut tx = self.pool.begin().await?;
            for d in demarches {
                sqlx::query(
                    "UPDATE mandate_authorisations SET revoked_at = $4, revoked_by = 'superseded' \
                     WHERE resident_id = $1 AND structure_id = $2 AND demarche = $3 AND revoked_at IS NULL",
                )
                .bind(&m.resident_id)
                .bind(&m.structure_id)
                .bind(d)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            // Only for a resident still active, checked in the statement
            // (share-locked on PostgreSQL; SQLite's write lock is held
            // already): a resident erased meanwhile gets no mandate.
            let made = sqlx::query(concat!(
                "INSERT INTO mandates (id, resident_id, structure_id, aidant_id, duration_days, template_version, renews, created_at, expires_at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE EXISTS \
                   (SELECT 1 FROM residents WHERE id = $2 AND status = 'active'", $for_share, ")",
            ))
            .bind(&m.id)
            .bind(&m.resident_id)
            .bind(&m.structure_id)
            .bind(&m.aidant_id)
            .bind(m.duration_days)
            .bind(&m.template_version)
            .bind(&m.renews)
            .bind(m.created_at)
            .bind(m.expires_at)
            .execute(&mut *tx)
            .await?;
            if made.rows_affected() == 0 {
                return Err($crate::storage::StorageError::NotFound);
            }
            for d in demarches {
                sqlx::query(
                    "INSERT INTO mandate_authorisations (mandate_id, resident_id, structure_id, demarche, expires_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&m.id)
                .bind(&m.resident_id)
                .bind(&m.structure_id)
                .bind(d)
                .bind(m.expires_at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        }

        async fn find_mandate(
            &self,
            id: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::MandateRow>> {
            Ok(sqlx::query_as(
                "SELECT id, resident_id, structure_id, aidant_id, duration_days, template_version, renews, created_at, expires_at \
                 FROM mandates WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn mandate_authorisations(
            &self,
            mandate_id: &str,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::AuthorisationRow>> {
            Ok(sqlx::query_as(
                "SELECT mandate_id, resident_id, structure_id, demarche, expires_at, revoked_at, revoked_by \
                 FROM mandate_authorisations WHERE mandate_id = $1 ORDER BY demarche",
            )
            .bind(mandate_id)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn mandates_of_resident(
            &self,
            resident_id: &str,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::MandateRow>> {
            Ok(sqlx::query_as(
                "SELECT id, resident_id, structure_id, aidant_id, duration_days, template_version, renews, created_at, expires_at \
                 FROM mandates WHERE resident_id = $1 ORDER BY created_at DESC, id",
            )
            .bind(resident_id)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn revoke_authorisations(
            &self,
            mandate_id: &str,
            demarche: Option<&str>,
            by: &str,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<u64> {
            let done = sqlx::query(
                "UPDATE mandate_authorisations SET revoked_at = $3, revoked_by = $4 \
                 WHERE mandate_id = $1 AND ($2 IS NULL OR demarche = $2) AND revoked_at IS NULL",
            )
            .bind(mandate_id)
            .bind(demarche)
            .bind(now)
            .bind(by)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected())
        }

        async fn live_authorisation(
            &self,
            resident_id: &str,
            structure_id: &str,
            demarche: &str,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::AuthorisationRow>> {
            Ok(sqlx::query_as(
                "SELECT mandate_id, resident_id, structure_id, demarche, expires_at, revoked_at, revoked_by \
                 FROM mandate_authorisations \
                 WHERE resident_id = $1 AND structure_id = $2 AND demarche = $3 AND revoked_at IS NULL AND expires_at > $4",
            )
            .bind(resident_id)
            .bind(structure_id)
            .bind(demarche)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn structure_authorisations(
            &self,
            structure_id: &str,
            now: $crate::domain::Timestamp,
            until: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::AuthorisationRow>> {
            Ok(sqlx::query_as(
                "SELECT mandate_id, resident_id, structure_id, demarche, expires_at, revoked_at, revoked_by \
                 FROM mandate_authorisations \
                 WHERE structure_id = $1 AND revoked_at IS NULL AND expires_at > $2 AND expires_at <= $3 \
                 ORDER BY expires_at, resident_id, demarche",
            )
            .bind(structure_id)
            .bind(now)
            .bind(until)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn rights_state(
            &self,
            resident_id: &str,
            purpose: Option<&str>,
        ) -> $crate::storage::StorageResult<(bool, bool)> {
            let row: Option<(Option<i64>, i64)> = sqlx::query_as(
                "SELECT r.restricted_at, (SELECT COUNT(*) FROM objections o WHERE o.resident_id = r.id AND o.purpose = $2) \
                 FROM residents r WHERE r.id = $1",
            )
            .bind(resident_id)
            .bind(purpose.unwrap_or(""))
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map(|(r, o)| (r.is_some(), o > 0)).unwrap_or((false, false)))
        }

        async fn partner_read_facts(
            &self,
            resident_id: &str,
            purpose: &str,
        ) -> $crate::storage::StorageResult<$crate::storage::PartnerReadFacts> {
            let row: Option<$crate::storage::FactColumns> = sqlx::query_as(
                "SELECT r.status, r.restricted_at, \
                   (SELECT COUNT(*) FROM objections o WHERE o.resident_id = r.id AND o.purpose = $2) AS objections, \
                   c.id AS consent_id, c.state AS consent_state, c.categories AS consent_categories, \
                   c.valid_until AS consent_valid_until, c.notice_version AS consent_notice_version \
                 FROM residents r LEFT JOIN consents c ON c.resident_id = r.id AND c.purpose = $2 \
                 WHERE r.id = $1",
            )
            .bind(resident_id)
            .bind(purpose)
            .fetch_optional(&self.pool)
            .await?;
            Ok(match row {
                Some(row) => row.into_facts(resident_id, purpose),
                None => $crate::storage::PartnerReadFacts::unknown_resident(resident_id, purpose),
            })
        }

        async fn partner_read(
            &self,
            partner_id: &str,
            resident_id: &str,
            purpose: &str,
            category: &str,
        ) -> $crate::storage::StorageResult<$crate::storage::PartnerRead> {
            // Every join is on a primary key or an index: the partner, the
            // resident, the (resident, purpose) consent, the data key, and
            // the latest version of (resident, category).
            let row: Option<$crate::storage::PartnerReadRow> = sqlx::query_as(
                "SELECT p.active AS partner_active, r.status, r.restricted_at, \
                   (SELECT COUNT(*) FROM objections o WHERE o.resident_id = r.id AND o.purpose = $3) AS objections, \
                   c.id AS consent_id, c.state AS consent_state, c.categories AS consent_categories, \
                   c.valid_until AS consent_valid_until, c.notice_version AS consent_notice_version, \
                   k.kek_version, k.wrapped, pr.id AS record_id, pr.category AS record_category, \
                   pr.version AS record_version, pr.sealed, pr.created_at AS record_created_at \
                 FROM partners p \
                 LEFT JOIN residents r ON r.id = $2 \
                 LEFT JOIN consents c ON c.resident_id = r.id AND c.purpose = $3 \
                 LEFT JOIN data_keys k ON k.resident_id = r.id \
                 LEFT JOIN personal_records pr ON pr.resident_id = r.id AND pr.category = $4 \
                   AND pr.version = (SELECT MAX(l.version) FROM personal_records l \
                                     WHERE l.resident_id = r.id AND l.category = $4) \
                 WHERE p.id = $1",
            )
            .bind(partner_id)
            .bind(resident_id)
            .bind(purpose)
            .bind(category)
            .fetch_optional(&self.pool)
            .await?;
            Ok(match row {
                Some(row) => row.into_read(resident_id, purpose),
                // No such partner: it reads nothing.
                None => $crate::storage::PartnerRead {
                    partner_active: false,
                    facts: $crate::storage::PartnerReadFacts::unknown_resident(resident_id, purpose),
                    record: None,
                },
            })
        }

        async fn set_restricted(
            &self,
            resident_id: &str,
            at: Option<$crate::domain::Timestamp>,
            notices: &[$crate::storage::NotificationRow],
        ) -> $crate::storage::StorageResult<()> {
            let mut tx = self.pool.begin().await?;
            sqlx::query("UPDATE residents SET restricted_at = $2 WHERE id = $1")
                .bind(resident_id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            Self::insert_notifications_on(&mut tx, notices).await?;
            tx.commit().await?;
            Ok(())
        }

        async fn restricted_since(
            &self,
            resident_id: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::domain::Timestamp>> {
            let row: Option<(Option<i64>,)> =
                sqlx::query_as("SELECT restricted_at FROM residents WHERE id = $1")
                    .bind(resident_id)
                    .fetch_optional(&self.pool)
                    .await?;
            Ok(row.and_then(|(r,)| r))
        }

        async fn add_objection(
            &self,
            resident_id: &str,
            purpose: &str,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query(
                "INSERT INTO objections (resident_id, purpose, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(resident_id)
            .bind(purpose)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn remove_objection(&self, resident_id: &str, purpose: &str) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query("DELETE FROM objections WHERE resident_id = $1 AND purpose = $2")
                .bind(resident_id)
                .bind(purpose)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn objections_of(&self, resident_id: &str) -> $crate::storage::StorageResult<Vec<(String, i64)>> {
            Ok(sqlx::query_as(
                "SELECT purpose, created_at FROM objections WHERE resident_id = $1 ORDER BY purpose",
            )
            .bind(resident_id)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn insert_rights_request(
            &self,
            r: &$crate::storage::RightsRequestRow,
            e: &$crate::storage::RightsEventRow,
        ) -> $crate::storage::StorageResult<()> {
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO rights_requests (id, resident_id, kind, purpose, state, created_at, due_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&r.id)
            .bind(&r.resident_id)
            .bind(&r.kind)
            .bind(&r.purpose)
            .bind(&r.state)
            .bind(r.created_at)
            .bind(r.due_at)
            .bind(r.updated_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO rights_request_events (request_id, seq, state, actor_id, actor_role, reason, at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&e.request_id)
            .bind(e.seq)
            .bind(&e.state)
            .bind(&e.actor_id)
            .bind(&e.actor_role)
            .bind(&e.reason)
            .bind(e.at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }

        async fn find_rights_request(
            &self,
            id: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::RightsRequestRow>> {
            Ok(sqlx::query_as(
                "SELECT id, resident_id, kind, purpose, state, created_at, due_at, updated_at FROM rights_requests WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn rights_requests_of(
            &self,
            resident_id: &str,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::RightsRequestRow>> {
            Ok(sqlx::query_as(
                "SELECT id, resident_id, kind, purpose, state, created_at, due_at, updated_at FROM rights_requests \
                 WHERE resident_id = $1 ORDER BY created_at DESC, id",
            )
            .bind(resident_id)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn all_rights_requests(
            &self,
            limit: i64,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::RightsRequestRow>> {
            Ok(sqlx::query_as(
                "SELECT id, resident_id, kind, purpose, state, created_at, due_at, updated_at FROM rights_requests \
                 ORDER BY CASE WHEN state IN ('received', 'extended') THEN 0 ELSE 1 END, due_at, id LIMIT $1",
            )
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn rights_request_events(
            &self,
            id: &str,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::RightsEventRow>> {
            Ok(sqlx::query_as(
                "SELECT request_id, seq, state, actor_id, actor_role, reason, at FROM rights_request_events \
                 WHERE request_id = $1 ORDER BY seq",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn update_rights_request(
            &self,
            id: &str,
            from_state: &str,
            state: &str,
            due_at: $crate::domain::Timestamp,
            event: &$crate::storage::RightsEventRow,
        ) -> $crate::storage::StorageResult<bool> {
            let mut tx = self.pool.begin().await?;
            let done = sqlx::query(
                "UPDATE rights_requests SET state = $3, due_at = $4, updated_at = $5 WHERE id = $1 AND state = $2",
            )
            .bind(id)
            .bind(from_state)
            .bind(state)
            .bind(due_at)
            .bind(event.at)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            let (seq,): (i64,) = sqlx::query_as(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM rights_request_events WHERE request_id = $1",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            let event = $crate::storage::RightsEventRow { seq, ..event.clone() };
            sqlx::query(
                "INSERT INTO rights_request_events (request_id, seq, state, actor_id, actor_role, reason, at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&event.request_id)
            .bind(event.seq)
            .bind(&event.state)
            .bind(&event.actor_id)
            .bind(&event.actor_role)
            .bind(&event.reason)
            .bind(event.at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        }

        async fn insert_notifications(
            &self,
            rows: &[$crate::storage::NotificationRow],
        ) -> $crate::storage::StorageResult<()> {
            let mut tx = self.pool.begin().await?;
            Self::insert_notifications_on(&mut tx, rows).await?;
            tx.commit().await?;
            Ok(())
        }

        async fn take_notifications(
            &self,
            partner_id: &str,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::NotificationRow>> {
            let rows: Vec<$crate::storage::NotificationRow> = sqlx::query_as(
                "SELECT id, partner_id, pseudonym, kind, category, created_at, fetched_at FROM recipient_notifications \
                 WHERE partner_id = $1 ORDER BY created_at, id LIMIT 1000",
            )
            .bind(partner_id)
            .fetch_all(&self.pool)
            .await?;
            sqlx::query("UPDATE recipient_notifications SET fetched_at = $2 WHERE partner_id = $1 AND fetched_at IS NULL")
                .bind(partner_id)
                .bind(now)
                .execute(&self.pool)
                .await?;
            Ok(rows)
        }

        async fn delete_category(&self, resident_id: &str, category: &str) -> $crate::storage::StorageResult<u64> {
            let done = sqlx::query("DELETE FROM personal_records WHERE resident_id = $1 AND category = $2")
                .bind(resident_id)
                .bind(category)
                .execute(&self.pool)
                .await?;
            self.scrub_deleted().await;
            Ok(done.rows_affected())
        }

        async fn purge_superseded(
            &self,
            category: &str,
            cutoff: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<u64> {
            // Driven from the newer versions (the partial index of
            // rectified rows), never by scanning every record of the
            // category under the write lock.
            let done = sqlx::query(
                "DELETE FROM personal_records WHERE id IN (\
                 SELECT o.id FROM personal_records n JOIN personal_records o \
                 ON o.resident_id = n.resident_id AND o.category = n.category AND o.version < n.version \
                 WHERE n.category = $1 AND n.version > 1 AND n.created_at <= $2)",
            )
            .bind(category)
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected())
        }

        async fn purge_expired_logins_and_drafts(
            &self,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<u64> {
            let a = sqlx::query("DELETE FROM login_attempts WHERE expires_at <= $1")
                .bind(now)
                .execute(&self.pool)
                .await?;
            let b = sqlx::query("DELETE FROM mandate_drafts WHERE expires_at <= $1")
                .bind(now)
                .execute(&self.pool)
                .await?;
            let c = sqlx::query("DELETE FROM client_assertion_jtis WHERE expires_at <= $1")
                .bind(now)
                .execute(&self.pool)
                .await?;
            Ok(a.rows_affected() + b.rows_affected() + c.rows_affected())
        }

        async fn purge_ended_mandates(
            &self,
            cutoff: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<u64> {
            let mut tx = self.pool.begin().await?;
            let ended = "SELECT m.id FROM mandates m WHERE NOT EXISTS (\
                 SELECT 1 FROM mandate_authorisations a WHERE a.mandate_id = m.id \
                 AND COALESCE(a.revoked_at, a.expires_at) > $1) \
                 AND NOT EXISTS (SELECT 1 FROM mandates n WHERE n.renews = m.id) \
                 AND NOT EXISTS (SELECT 1 FROM mandate_drafts d WHERE d.renews = m.id)";
            sqlx::query(&format!("DELETE FROM mandate_authorisations WHERE mandate_id IN ({ended})"))
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query(&format!(
                "DELETE FROM mandates WHERE id IN ({ended}) AND NOT EXISTS \
                 (SELECT 1 FROM mandate_authorisations a WHERE a.mandate_id = mandates.id)"
            ))
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(done.rows_affected())
        }

        async fn consent_orphaned_records(
            &self,
            purposes: &[String],
            category: &str,
            ended_before: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<Vec<String>> {
            if purposes.is_empty() {
                return Ok(Vec::new());
            }
            // From the data: every resident with records of the category,
            // unless a version was written within the grace period, or a
            // consent to one of the purposes was decided within it or is
            // given and valid past it. (The old query started from ended
            // consents and missed data no consent ever covered.)
            let mut q = sqlx::QueryBuilder::<$db>::new(
                "SELECT DISTINCT p.resident_id FROM personal_records p WHERE p.category = ",
            );
            q.push_bind(category.to_string());
            q.push(" AND NOT EXISTS (SELECT 1 FROM personal_records n WHERE n.resident_id = p.resident_id AND n.category = ");
            q.push_bind(category.to_string());
            q.push(" AND n.created_at > ");
            q.push_bind(ended_before);
            q.push(") AND NOT EXISTS (SELECT 1 FROM consents v WHERE v.resident_id = p.resident_id AND v.purpose IN (");
            let mut sep = q.separated(", ");
            for purpose in purposes {
                sep.push_bind(purpose.clone());
            }
            q.push(") AND (v.updated_at > ");
            q.push_bind(ended_before);
            // A given consent keeps the category only if it covers it.
            q.push(" OR (v.state = 'given' AND (',' || v.categories || ',') LIKE ('%,' || ");
            q.push_bind(category.to_string());
            q.push(" || ',%') AND (v.valid_until IS NULL OR v.valid_until > ");
            q.push_bind(ended_before);
            q.push("))))");
            let rows: Vec<(String,)> = q.build_query_as().fetch_all(&self.pool).await?;
            let residents: std::collections::BTreeSet<String> =
                rows.into_iter().map(|(r,)| r).collect();
            Ok(residents.into_iter().collect())
        }

        async fn count_cohort(
            &self,
            purpose: &str,
            consent_based: bool,
            notice_version: &str,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<i64> {
            let (n,): (i64,) = if consent_based {
                sqlx::query_as(
                    "SELECT COUNT(*) FROM consents c JOIN residents r ON r.id = c.resident_id \
                     WHERE c.purpose = $1 AND c.state = 'given' AND c.valid_until > $2 AND c.notice_version = $3 \
                     AND r.status = 'active' AND r.restricted_at IS NULL",
                )
                .bind(purpose)
                .bind(now)
                .bind(notice_version)
                .fetch_one(&self.pool)
                .await?
            } else {
                sqlx::query_as(
                    "SELECT COUNT(*) FROM residents r WHERE r.status = 'active' AND r.restricted_at IS NULL \
                     AND NOT EXISTS (SELECT 1 FROM objections o WHERE o.resident_id = r.id AND o.purpose = $1)",
                )
                .bind(purpose)
                .fetch_one(&self.pool)
                .await?
            };
            Ok(n)
        }

        async fn seed_batch(&self, b: &$crate::storage::SeedBatch) -> $crate::storage::StorageResult<()> {
            let mut tx = self.pool.begin().await?;
            for chunk in b.residents.chunks(1000) {
                let mut q = sqlx::QueryBuilder::<$db>::new("INSERT INTO residents (id, status, created_at) ");
                q.push_values(chunk, |mut v, id| {
                    v.push_bind(id.clone()).push_bind("active").push_bind(b.now);
                });
                q.build().execute(&mut *tx).await?;
            }
            for chunk in b.data_keys.chunks(1000) {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO data_keys (resident_id, kek_version, wrapped, created_at) ",
                );
                q.push_values(chunk, |mut v, k| {
                    v.push_bind(k.resident_id.clone())
                        .push_bind(k.kek_version)
                        .push_bind(k.wrapped.clone())
                        .push_bind(b.now);
                });
                q.build().execute(&mut *tx).await?;
            }
            for chunk in b.records.chunks(1000) {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO personal_records (id, resident_id, category, version, sealed, created_at) ",
                );
                q.push_values(chunk, |mut v, (resident, r)| {
                    v.push_bind(r.id.clone())
                        .push_bind(resident.clone())
                        .push_bind(r.category.clone())
                        .push_bind(r.version)
                        .push_bind(r.sealed.clone())
                        .push_bind(r.created_at);
                });
                q.build().execute(&mut *tx).await?;
            }
            for chunk in b.consents.chunks(1000) {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO consents (id, resident_id, purpose, state, categories, valid_until, notice_version, updated_at, seq) ",
                );
                q.push_values(chunk, |mut v, c| {
                    v.push_bind(c.id.clone())
                        .push_bind(c.resident_id.clone())
                        .push_bind(c.purpose.clone())
                        .push_bind(c.state.clone())
                        .push_bind(c.categories.clone())
                        .push_bind(c.valid_until)
                        .push_bind(c.notice_version.clone())
                        .push_bind(c.updated_at)
                        .push_bind(c.seq);
                });
                q.build().execute(&mut *tx).await?;
            }
            for chunk in b.events.chunks(500) {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO consent_events (id, consent_id, resident_id, purpose, state, categories, valid_until, \
                     notice_version, actor_id, actor_role, structure_id, audit_index, receipt, created_at) ",
                );
                q.push_values(chunk, |mut v, e| {
                    v.push_bind(e.id.clone())
                        .push_bind(e.consent_id.clone())
                        .push_bind(e.actor_id.clone())
                        .push_bind(e.purpose.clone())
                        .push_bind(e.state.clone())
                        .push_bind(e.categories.clone())
                        .push_bind(e.valid_until)
                        .push_bind(e.notice_version.clone())
                        .push_bind(e.actor_id.clone())
                        .push_bind(e.actor_role.clone())
                        .push_bind(e.structure_id.clone())
                        .push_bind(e.audit_index)
                        .push_bind(e.receipt.clone())
                        .push_bind(e.created_at);
                });
                q.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        }

        async fn insert_extract(&self, e: &$crate::storage::ExtractRow) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO extracts (id, partner_id, purpose, kind, spec, state, reason, rows_done, rows_total, epsilon, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, $8, $9, $9)",
            )
            .bind(&e.id)
            .bind(&e.partner_id)
            .bind(&e.purpose)
            .bind(&e.kind)
            .bind(&e.spec)
            .bind(&e.state)
            .bind(&e.reason)
            .bind(e.epsilon)
            .bind(e.created_at)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn find_extract(&self, id: &str) -> $crate::storage::StorageResult<Option<$crate::storage::ExtractRow>> {
            Ok(sqlx::query_as(
                "SELECT id, partner_id, purpose, kind, spec, state, reason, rows_done, rows_total, manifest, manifest_jws, epsilon, created_at, updated_at, expires_at \
                 FROM extracts WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn extracts_of_partner(&self, partner_id: &str) -> $crate::storage::StorageResult<Vec<$crate::storage::ExtractRow>> {
            Ok(sqlx::query_as(
                "SELECT id, partner_id, purpose, kind, spec, state, reason, rows_done, rows_total, manifest, manifest_jws, epsilon, created_at, updated_at, expires_at \
                 FROM extracts WHERE partner_id = $1 ORDER BY created_at DESC, id",
            )
            .bind(partner_id)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn all_extracts(&self, limit: i64) -> $crate::storage::StorageResult<Vec<$crate::storage::ExtractRow>> {
            Ok(sqlx::query_as(
                "SELECT id, partner_id, purpose, kind, spec, state, reason, rows_done, rows_total, manifest, manifest_jws, epsilon, created_at, updated_at, expires_at \
                 FROM extracts ORDER BY CASE WHEN state = 'requested' THEN 0 ELSE 1 END, created_at DESC, id LIMIT $1",
            )
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn extract_approve(
            &self,
            id: &str,
            budget: f64,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<$crate::storage::ApproveOutcome> {
            let mut tx = self.pool.begin().await?;
            // A write on the partner's row first: PostgreSQL holds its row
            // lock, SQLite its write lock, until the commit, so a second
            // approval for the same partner waits and then sees this one's
            // spend (the UPDATE below reads a fresh snapshot).
            let partner: Option<(String,)> = sqlx::query_as(
                "UPDATE partners SET id = id WHERE id = (SELECT partner_id FROM extracts WHERE id = $1) \
                 RETURNING id",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if partner.is_none() {
                return Ok($crate::storage::ApproveOutcome::NotRequested);
            }
            let done = sqlx::query(
                "UPDATE extracts SET state = 'approved', updated_at = $3 \
                 WHERE id = $1 AND state = 'requested' AND (epsilon IS NULL OR epsilon + \
                   (SELECT COALESCE(SUM(s.epsilon), 0) FROM extracts s \
                    WHERE s.partner_id = extracts.partner_id AND s.epsilon IS NOT NULL \
                    AND s.state IN ('approved', 'building', 'ready', 'downloaded', 'expired')) <= $2)",
            )
            .bind(id)
            .bind(budget)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let outcome = if done.rows_affected() == 1 {
                $crate::storage::ApproveOutcome::Approved
            } else {
                let (state,): (String,) = sqlx::query_as("SELECT state FROM extracts WHERE id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                if state == "requested" {
                    $crate::storage::ApproveOutcome::BudgetExhausted
                } else {
                    $crate::storage::ApproveOutcome::NotRequested
                }
            };
            tx.commit().await?;
            Ok(outcome)
        }

        async fn extract_transition(
            &self,
            id: &str,
            from: &str,
            to: &str,
            reason: Option<&str>,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query(
                "UPDATE extracts SET state = $3, reason = COALESCE($4, reason), updated_at = $5 WHERE id = $1 AND state = $2",
            )
            .bind(id)
            .bind(from)
            .bind(to)
            .bind(reason)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn extract_progress(&self, id: &str, done: i64, total: i64) -> $crate::storage::StorageResult<()> {
            sqlx::query("UPDATE extracts SET rows_done = $2, rows_total = $3 WHERE id = $1")
                .bind(id)
                .bind(done)
                .bind(total)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn extract_ready(
            &self,
            id: &str,
            manifest: &str,
            jws: &str,
            expires_at: $crate::domain::Timestamp,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "UPDATE extracts SET state = 'ready', manifest = $2, manifest_jws = $3, expires_at = $4, updated_at = $5 \
                 WHERE id = $1 AND state = 'building'",
            )
            .bind(id)
            .bind(manifest)
            .bind(jws)
            .bind(expires_at)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn epsilon_spent(&self, partner_id: &str) -> $crate::storage::StorageResult<f64> {
            let (sum,): (Option<f64>,) = sqlx::query_as(
                "SELECT SUM(epsilon) FROM extracts WHERE partner_id = $1 AND epsilon IS NOT NULL \
                 AND state IN ('approved', 'building', 'ready', 'downloaded', 'expired')",
            )
            .bind(partner_id)
            .fetch_one(&self.pool)
            .await?;
            Ok(sum.unwrap_or(0.0))
        }

        async fn extracts_to_expire(&self, now: $crate::domain::Timestamp) -> $crate::storage::StorageResult<Vec<String>> {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT id FROM extracts WHERE state IN ('ready', 'downloaded') AND expires_at <= $1",
            )
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(|(i,)| i).collect())
        }

        async fn cohort_page(
            &self,
            purpose: &str,
            consent_based: bool,
            notice_version: &str,
            now: $crate::domain::Timestamp,
            after: &str,
            limit: i64,
        ) -> $crate::storage::StorageResult<Vec<(String, Option<String>)>> {
            if consent_based {
                Ok(sqlx::query_as(
                    "SELECT c.resident_id, c.categories FROM consents c JOIN residents r ON r.id = c.resident_id \
                     WHERE c.purpose = $1 AND c.state = 'given' AND c.valid_until > $2 AND c.notice_version = $3 \
                     AND r.status = 'active' AND r.restricted_at IS NULL AND c.resident_id > $4 \
                     ORDER BY c.resident_id LIMIT $5",
                )
                .bind(purpose)
                .bind(now)
                .bind(notice_version)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            } else {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT r.id FROM residents r WHERE r.status = 'active' AND r.restricted_at IS NULL \
                     AND NOT EXISTS (SELECT 1 FROM objections o WHERE o.resident_id = r.id AND o.purpose = $1) \
                     AND r.id > $2 ORDER BY r.id LIMIT $3",
                )
                .bind(purpose)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(r,)| (r, None)).collect())
            }
        }

        async fn insert_login_attempt(
            &self,
            row: &$crate::storage::LoginAttemptRow,
        ) -> $crate::storage::StorageResult<()> {
            let mut tx = self.pool.begin().await?;
            sqlx::query("DELETE FROM login_attempts WHERE expires_at <= $1")
                .bind(row.created_at)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO login_attempts (state_digest, browser_digest, provider, sealed, created_at, expires_at, mandate_draft) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&row.state_digest)
            .bind(&row.browser_digest)
            .bind(&row.provider)
            .bind(&row.sealed)
            .bind(row.created_at)
            .bind(row.expires_at)
            .bind(&row.mandate_draft)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }

        async fn take_login_attempt(
            &self,
            state_digest: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::LoginAttemptRow>> {
            Ok(sqlx::query_as(
                "DELETE FROM login_attempts WHERE state_digest = $1 \
                 RETURNING state_digest, browser_digest, provider, sealed, created_at, expires_at, mandate_draft",
            )
            .bind(state_digest)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn resident_for_login(
            &self,
            subject_digest: &str,
            new_resident_id: &str,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<(String, bool)> {
            // Two tries: a concurrent first login of the same account may win
            // the insert, and then this one finds its resident.
            for _ in 0..2 {
                let found: Option<(String,)> = sqlx::query_as(
                    "UPDATE resident_logins SET last_login_at = $2 WHERE subject_digest = $1 \
                     RETURNING resident_id",
                )
                .bind(subject_digest)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                if let Some((id,)) = found {
                    return Ok((id, false));
                }
                let mut tx = self.pool.begin().await?;
                sqlx::query("INSERT INTO residents (id, status, created_at) VALUES ($1, 'active', $2)")
                    .bind(new_resident_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let linked = sqlx::query(
                    "INSERT INTO resident_logins (subject_digest, resident_id, created_at, last_login_at) \
                     VALUES ($1, $2, $3, $3) ON CONFLICT (subject_digest) DO NOTHING",
                )
                .bind(subject_digest)
                .bind(new_resident_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if linked.rows_affected() == 1 {
                    tx.commit().await?;
                    return Ok((new_resident_id.to_string(), true));
                }
                tx.rollback().await?;
            }
            Err($crate::storage::StorageError::Conflict(
                "resident login raced twice".into(),
            ))
        }

        async fn delete_sessions_of(&self, actor_id: &str) -> $crate::storage::StorageResult<()> {
            sqlx::query("DELETE FROM sessions WHERE actor_id = $1")
                .bind(actor_id)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn current_kek_version(&self) -> $crate::storage::StorageResult<Option<i64>> {
            let (v,): (Option<i64>,) = sqlx::query_as("SELECT MAX(version) FROM kek_versions")
                .fetch_one(&self.pool)
                .await?;
            Ok(v)
        }

        async fn register_kek_version(
            &self,
            version: i64,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO kek_versions (version, created_at) VALUES ($1, $2) \
                 ON CONFLICT (version) DO NOTHING",
            )
            .bind(version)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn unregister_kek_version(&self, version: i64) -> $crate::storage::StorageResult<bool> {
            match sqlx::query("DELETE FROM kek_versions WHERE version = $1")
                .bind(version)
                .execute(&self.pool)
                .await
            {
                Ok(_) => Ok(true),
                Err(e) => match $crate::storage::StorageError::from(e) {
                    $crate::storage::StorageError::Conflict(_) => Ok(false),
                    other => Err(other),
                },
            }
        }

        async fn find_data_key(
            &self,
            resident_id: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::DataKeyRow>> {
            Ok(sqlx::query_as(
                "SELECT resident_id, kek_version, wrapped FROM data_keys WHERE resident_id = $1",
            )
            .bind(resident_id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn insert_data_key(
            &self,
            key: &$crate::storage::DataKeyRow,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query(concat!(
                "INSERT INTO data_keys (resident_id, kek_version, wrapped, created_at) \
                 SELECT $1, $2, $3, $4 WHERE EXISTS \
                   (SELECT 1 FROM residents WHERE id = $1 AND status = 'active'", $for_share, ") \
                 ON CONFLICT (resident_id) DO NOTHING",
            ))
            .bind(&key.resident_id)
            .bind(key.kek_version)
            .bind(&key.wrapped)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn insert_record(
            &self,
            resident_id: &str,
            r: &$crate::storage::RecordRow,
            notices: &[$crate::storage::NotificationRow],
        ) -> $crate::storage::StorageResult<()> {
            // The resident row is share-locked (PostgreSQL) or checked in the
            // same statement (SQLite), so a concurrent erasure either waits for
            // this insert or makes it insert nothing: no record outlives it.
            let insert = sqlx::query(concat!(
                "INSERT INTO personal_records (id, resident_id, category, version, sealed, created_at) \
                 SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS \
                   (SELECT 1 FROM residents WHERE id = $2 AND status = 'active'", $for_share, ")",
            ))
            .bind(&r.id)
            .bind(resident_id)
            .bind(&r.category)
            .bind(r.version)
            .bind(&r.sealed)
            .bind(r.created_at);
            if notices.is_empty() {
                let done = insert.execute(&self.pool).await?;
                if done.rows_affected() == 0 {
                    return Err($crate::storage::StorageError::NotFound);
                }
                return Ok(());
            }
            let mut tx = self.pool.begin().await?;
            let done = insert.execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                return Err($crate::storage::StorageError::NotFound);
            }
            Self::insert_notifications_on(&mut tx, notices).await?;
            tx.commit().await?;
            Ok(())
        }

        async fn latest_record_version(
            &self,
            resident_id: &str,
            category: &str,
        ) -> $crate::storage::StorageResult<i64> {
            let (v,): (Option<i64>,) = sqlx::query_as(
                "SELECT MAX(version) FROM personal_records WHERE resident_id = $1 AND category = $2",
            )
            .bind(resident_id)
            .bind(category)
            .fetch_one(&self.pool)
            .await?;
            Ok(v.unwrap_or(0))
        }

        async fn current_records(
            &self,
            resident_id: &str,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::RecordRow>> {
            Ok(sqlx::query_as(
                "SELECT r.id, r.category, r.version, r.sealed, r.created_at FROM personal_records r \
                 WHERE r.resident_id = $1 AND r.version = \
                   (SELECT MAX(l.version) FROM personal_records l \
                    WHERE l.resident_id = r.resident_id AND l.category = r.category) \
                 ORDER BY r.category",
            )
            .bind(resident_id)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn current_records_of_page(
            &self,
            residents: &[String],
            categories: &[String],
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::PageRecordRow>> {
            if residents.is_empty() || categories.is_empty() {
                return Ok(Vec::new());
            }
            // Placeholders only: every value is bound.
            let list = |from: usize, n: usize| {
                (from..from + n)
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let sql = format!(
                "SELECT r.resident_id, k.kek_version, k.wrapped, r.id, r.category, r.version, r.sealed, r.created_at \
                 FROM personal_records r JOIN data_keys k ON k.resident_id = r.resident_id \
                 WHERE r.resident_id IN ({}) AND r.category IN ({}) AND r.version = \
                   (SELECT MAX(l.version) FROM personal_records l \
                    WHERE l.resident_id = r.resident_id AND l.category = r.category) \
                 ORDER BY r.resident_id, r.category",
                list(1, residents.len()),
                list(1 + residents.len(), categories.len())
            );
            let mut q = sqlx::query_as(&sql);
            for r in residents {
                q = q.bind(r);
            }
            for c in categories {
                q = q.bind(c);
            }
            Ok(q.fetch_all(&self.pool).await?)
        }

        async fn record_history(
            &self,
            resident_id: &str,
            category: &str,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::RecordRow>> {
            Ok(sqlx::query_as(
                "SELECT id, category, version, sealed, created_at FROM personal_records \
                 WHERE resident_id = $1 AND category = $2 ORDER BY version DESC LIMIT 100",
            )
            .bind(resident_id)
            .bind(category)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn erase_resident(
            &self,
            resident_id: &str,
            _now: $crate::domain::Timestamp,
            notices: &[$crate::storage::NotificationRow],
        ) -> $crate::storage::StorageResult<bool> {
            let mut tx = self.pool.begin().await?;
            let done = sqlx::query(
                "UPDATE residents SET status = 'erased' WHERE id = $1 AND status = 'active'",
            )
            .bind(resident_id)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            // Consents stay as proof of past lawful processing, but none of
            // them can be used any more.
            sqlx::query(
                "UPDATE consents SET state = 'withdrawn', valid_until = $2, updated_at = $2, seq = seq + 1 \
                 WHERE resident_id = $1 AND state = 'given'",
            )
            .bind(resident_id)
            .bind(_now)
            .execute(&mut *tx)
            .await?;
            // Nobody acts for an erased resident: every mandate ends with
            // the erasure (the verify route says so).
            sqlx::query(
                "UPDATE mandate_authorisations SET revoked_at = $2, revoked_by = 'resident_erased' \
                 WHERE resident_id = $1 AND revoked_at IS NULL",
            )
            .bind(resident_id)
            .bind(_now)
            .execute(&mut *tx)
            .await?;
            for sql in [
                "DELETE FROM data_keys WHERE resident_id = $1",
                "DELETE FROM personal_records WHERE resident_id = $1",
                "DELETE FROM sessions WHERE actor_id = $1",
                // A draft the resident logged in to would otherwise still
                // be confirmable into a mandate.
                "DELETE FROM mandate_drafts WHERE resident_id = $1",
                // The next login with the same provider account starts afresh.
                "DELETE FROM resident_logins WHERE resident_id = $1",
            ] {
                sqlx::query(sql).bind(resident_id).execute(&mut *tx).await?;
            }
            Self::insert_notifications_on(&mut tx, notices).await?;
            tx.commit().await?;
            self.scrub_deleted().await;
            Ok(true)
        }

        async fn data_keys_not_at(
            &self,
            version: i64,
            limit: i64,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::DataKeyRow>> {
            Ok(sqlx::query_as(
                "SELECT resident_id, kek_version, wrapped FROM data_keys \
                 WHERE kek_version <> $1 ORDER BY resident_id LIMIT $2",
            )
            .bind(version)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn count_data_keys_not_at(&self, version: i64) -> $crate::storage::StorageResult<i64> {
            let (n,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM data_keys WHERE kek_version <> $1")
                    .bind(version)
                    .fetch_one(&self.pool)
                    .await?;
            Ok(n)
        }

        async fn rewrap_data_keys(
            &self,
            rows: &[($crate::storage::DataKeyRow, i64)],
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<u64> {
            let mut tx = self.pool.begin().await?;
            let mut n = 0;
            for (row, old_version) in rows {
                let done = sqlx::query(
                    "UPDATE data_keys SET kek_version = $1, wrapped = $2, rewrapped_at = $3 \
                     WHERE resident_id = $4 AND kek_version = $5",
                )
                .bind(row.kek_version)
                .bind(&row.wrapped)
                .bind(now)
                .bind(&row.resident_id)
                .bind(old_version)
                .execute(&mut *tx)
                .await?;
                n += done.rows_affected();
            }
            tx.commit().await?;
            Ok(n)
        }

        async fn find_consent(
            &self,
            resident_id: &str,
            purpose: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::ConsentRow>> {
            Ok(sqlx::query_as(
                "SELECT id, resident_id, purpose, state, categories, valid_until, notice_version, updated_at, seq \
                 FROM consents WHERE resident_id = $1 AND purpose = $2",
            )
            .bind(resident_id)
            .bind(purpose)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn consent_for_decision(
            &self,
            resident_id: &str,
            purpose: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::ConsentForDecision>> {
            Ok(sqlx::query_as(
                "SELECT id, state, categories, valid_until, notice_version \
                 FROM consents WHERE resident_id = $1 AND purpose = $2",
            )
            .bind(resident_id)
            .bind(purpose)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn find_consent_by_id(
            &self,
            id: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::ConsentRow>> {
            Ok(sqlx::query_as(
                "SELECT id, resident_id, purpose, state, categories, valid_until, notice_version, updated_at, seq \
                 FROM consents WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn consents_of(
            &self,
            resident_id: &str,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::ConsentRow>> {
            Ok(sqlx::query_as(
                "SELECT id, resident_id, purpose, state, categories, valid_until, notice_version, updated_at, seq \
                 FROM consents WHERE resident_id = $1 ORDER BY purpose",
            )
            .bind(resident_id)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn consent_events(
            &self,
            consent_id: &str,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::ConsentEventRow>> {
            Ok(sqlx::query_as(
                "SELECT id, consent_id, purpose, state, categories, valid_until, notice_version, \
                 actor_id, actor_role, structure_id, audit_index, receipt, created_at \
                 FROM consent_events WHERE consent_id = $1 ORDER BY audit_index DESC LIMIT 500",
            )
            .bind(consent_id)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn record_consent_event(
            &self,
            c: &$crate::storage::ConsentRow,
            expected_seq: Option<i64>,
            e: &$crate::storage::ConsentEventRow,
        ) -> $crate::storage::StorageResult<()> {
            let mut tx = self.pool.begin().await?;
            let done = match expected_seq {
                None => {
                    sqlx::query(
                        "INSERT INTO consents (id, resident_id, purpose, state, categories, valid_until, notice_version, updated_at, seq) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1) ON CONFLICT (resident_id, purpose) DO NOTHING",
                    )
                    .bind(&c.id)
                    .bind(&c.resident_id)
                    .bind(&c.purpose)
                    .bind(&c.state)
                    .bind(&c.categories)
                    .bind(c.valid_until)
                    .bind(&c.notice_version)
                    .bind(c.updated_at)
                    .execute(&mut *tx)
                    .await?
                }
                Some(seq) => {
                    sqlx::query(
                        "UPDATE consents SET state = $1, categories = $2, valid_until = $3, notice_version = $4, \
                         updated_at = $5, seq = seq + 1 WHERE id = $6 AND seq = $7",
                    )
                    .bind(&c.state)
                    .bind(&c.categories)
                    .bind(c.valid_until)
                    .bind(&c.notice_version)
                    .bind(c.updated_at)
                    .bind(&c.id)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?
                }
            };
            if done.rows_affected() != 1 {
                return Err($crate::storage::StorageError::Conflict("concurrent consent decision".into()));
            }
            sqlx::query(
                "INSERT INTO consent_events (id, consent_id, resident_id, purpose, state, categories, valid_until, \
                 notice_version, actor_id, actor_role, structure_id, audit_index, receipt, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(&e.id)
            .bind(&e.consent_id)
            .bind(&c.resident_id)
            .bind(&e.purpose)
            .bind(&e.state)
            .bind(&e.categories)
            .bind(e.valid_until)
            .bind(&e.notice_version)
            .bind(&e.actor_id)
            .bind(&e.actor_role)
            .bind(&e.structure_id)
            .bind(e.audit_index)
            .bind(&e.receipt)
            .bind(e.created_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }

        async fn reachable_residents(
            &self,
            purpose: &str,
            consent_based: bool,
            notice_version: &str,
            now: $crate::domain::Timestamp,
            offset: i64,
            limit: i64,
        ) -> $crate::storage::StorageResult<Vec<String>> {
            let rows: Vec<(String,)> = if consent_based {
                sqlx::query_as(
                    "SELECT c.resident_id FROM consents c JOIN residents r ON r.id = c.resident_id \
                     WHERE c.purpose = $1 AND c.state = 'given' AND c.valid_until > $2 \
                     AND c.notice_version = $3 AND r.status = 'active' AND r.restricted_at IS NULL \
                     ORDER BY c.resident_id LIMIT $4 OFFSET $5",
                )
                .bind(purpose)
                .bind(now)
                .bind(notice_version)
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.pool)
                .await?
            } else {
                // Restricted residents (art. 18) and those who objected to
                // this purpose (art. 21) are not reachable.
                sqlx::query_as(
                    "SELECT r.id FROM residents r WHERE r.status = 'active' AND r.restricted_at IS NULL \
                     AND NOT EXISTS (SELECT 1 FROM objections o WHERE o.resident_id = r.id AND o.purpose = $1) \
                     ORDER BY r.id LIMIT $2 OFFSET $3",
                )
                .bind(purpose)
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.pool)
                .await?
            };
            Ok(rows.into_iter().map(|(id,)| id).collect())
        }

        async fn remember_pseudonyms(
            &self,
            partner_id: &str,
            pairs: &[(String, String)],
        ) -> $crate::storage::StorageResult<()> {
            for chunk in pairs.chunks(500) {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO partner_pseudonyms (partner_id, pseudonym, resident_id) ",
                );
                q.push_values(chunk, |mut b, (pseudonym, resident)| {
                    b.push_bind(partner_id.to_string())
                        .push_bind(pseudonym.clone())
                        .push_bind(resident.clone());
                });
                q.push(" ON CONFLICT (partner_id, pseudonym) DO NOTHING");
                q.build().execute(&self.pool).await?;
            }
            Ok(())
        }

        async fn resolve_pseudonym(
            &self,
            partner_id: &str,
            pseudonym: &str,
        ) -> $crate::storage::StorageResult<Option<String>> {
            let row: Option<(String,)> = sqlx::query_as(
                "SELECT resident_id FROM partner_pseudonyms WHERE partner_id = $1 AND pseudonym = $2",
            )
            .bind(partner_id)
            .bind(pseudonym)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map(|(r,)| r))
        }

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
            resident_id: &str,
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
            resident_id: &str,
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
pub(crate) use impl_store;
