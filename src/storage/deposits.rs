//! Deposits from data sources: a record version with its provenance, the
//! idempotency row of (source, source's record id), and the keyed digests
//! of residents' pivot identities that public-task sources match by.
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::{DataKeyRow, RecordRow, StorageResult};
use crate::domain::Timestamp;

/// One deposit to store: the sealed version (its `version` is the one its
/// seal was made for) and where it came from.
#[derive(Clone, Debug)]
pub struct DepositRow {
    pub source_id: String,
    /// The source's public name, for the resident's message about its
    /// first deposit.
    pub source_name: String,
    pub source_record_id: String,
    pub resident_id: crate::domain::ResidentId,
    /// Keyed digest of the category, the validated fields and
    /// `observed_at`: equal digests are the same content.
    pub content_digest: String,
    pub observed_at: Timestamp,
    /// The resident was named by a link's handle: the link must still
    /// stand when the deposit is stored (a revocation that committed first
    /// wins).
    pub via_link: bool,
    pub record: RecordRow,
}

/// What became of a deposit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepositOutcome {
    /// A new version, with its provenance.
    Accepted,
    /// The same content as this source's last deposit of this record.
    Unchanged,
    /// The current version was written by the resident (or an aidant for
    /// them) after the deposit was observed: it stands.
    SupersededByResident,
    /// Another version was written since the seal was made (its version
    /// number is taken): seal again and retry.
    VersionTaken,
    /// The resident is not active (erased meanwhile).
    NoResident,
    /// The link the handle named was revoked meanwhile.
    NoLink,
    /// The resident restricted processing (art. 18) meanwhile.
    Restricted,
    /// The resident objected to this source (art. 21) meanwhile.
    Objected,
    /// Not written in the audit log's transaction beside its entry (a row
    /// another transaction held longer than the log may wait, a deadlock,
    /// a failure of the deposits' part): its entry stands; store it alone.
    StoreAlone,
}

/// Most deposits checked and written at once (one read, one statement per
/// table): on PostgreSQL each may take a savepoint after a broken key, and
/// past 64 subtransactions a backend's cache overflows.
pub(crate) const MAX_DEPOSIT_BATCH: usize = 48;

/// How long deposits beside their entries wait for each row lock on
/// PostgreSQL, the log's head row held meanwhile (`SET LOCAL`: for the
/// rest of that transaction only, its COMMIT included; nothing there takes
/// a lock: no deferred constraint, no NOTIFY).
pub(crate) const DEPOSIT_LOCK_WAIT: &str = "SET LOCAL lock_timeout = '50ms'";

/// The savepoint a batch of deposits beside the log's entries is written
/// in on SQLite, opened and released by the batch's own texts
/// (`deposit_batch_on`), rolled back after a failure (`deposits_checked`).
pub(crate) const BATCH_SAVEPOINT_OPEN: &str = "SAVEPOINT deposits";
pub(crate) const BATCH_SAVEPOINT_RELEASE: &str = "RELEASE deposits";
pub(crate) const BATCH_SAVEPOINT_ROLLBACK: &str = "ROLLBACK TO deposits; RELEASE deposits";

/// What a deposit line needs to know of its resident before it is decided
/// and sealed, read in one statement (a stream's hot path: each statement
/// is a hand-off to the database's thread). A first look only:
/// `record_deposits` checks again where it writes.
#[derive(Clone, Debug)]
pub struct DepositFacts {
    /// The resident the line is about.
    pub resident_id: crate::domain::ResidentId,
    /// The resident is active (not erased).
    pub active: bool,
    /// Processing restricted (art. 18).
    pub restricted: bool,
    /// The resident objected to this source (art. 21).
    pub objected: bool,
    /// The content digest of this source's last accepted deposit of this
    /// record.
    pub previous_digest: Option<String>,
    /// The latest version of the resident's record of the category (0:
    /// none yet).
    pub latest_version: i64,
    /// The resident's wrapped data key, once they have one.
    pub data_key: Option<DataKeyRow>,
}

/// Whom a deposit line's facts are read about.
#[derive(Clone, Copy, Debug)]
pub enum DepositSubject<'a> {
    /// A resident already matched (by a pivot source's pivot identity).
    Resident(&'a crate::domain::ResidentId),
    /// The resident a standing link of the source names by this handle.
    Handle(&'a str),
}

/// One line's question for [`DepositStore::deposit_facts_of`].
#[derive(Clone, Copy, Debug)]
pub struct FactsAsked<'a> {
    pub source_id: &'a str,
    pub subject: DepositSubject<'a>,
    pub source_record_id: &'a str,
    pub category: &'a str,
}

/// A deposited version of a resident's record and where it came from.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DepositedVersion {
    pub category: String,
    pub version: i64,
    pub source_id: String,
    pub observed_at: Timestamp,
    pub created_at: Timestamp,
}

/// What a batch's one read found about one of its deposits
/// (`record_deposits`), before any of the batch is written.
#[derive(Clone, Debug, Default)]
pub(crate) struct StoredFacts {
    /// The content digest of this source's last accepted deposit of the
    /// record.
    pub previous_digest: Option<String>,
    /// The source's link with the resident stands.
    pub linked: bool,
    /// The resident is active.
    pub active: bool,
    /// Processing restricted (art. 18).
    pub restricted: bool,
    /// The resident objected to this source (art. 21).
    pub objected: bool,
    /// The latest version of the resident's record of the category (0:
    /// none yet).
    pub latest_version: i64,
    /// When the resident (or an aidant for them) last wrote the category.
    pub own_written_at: Option<Timestamp>,
    /// A deposit of this source about this resident stands: they were told
    /// of its first one.
    pub told: bool,
}

/// What a batch writes, as indexes into its deposits, in their order.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct DepositWrites {
    /// The accepted deposits: a version each.
    pub accepted: Vec<usize>,
    /// Those that are their source's first about their resident (art. 14).
    pub first_from_source: Vec<usize>,
    /// One idempotency row per (source, source's record id): its last
    /// accepted deposit's.
    pub deposits: Vec<usize>,
}

/// The outcome of each deposit of a batch, in the batch's order, from what
/// its one read found (`facts`, one per deposit), and what to write. A
/// deposit accepted counts for those after it, as if each were written in
/// turn: its digest, its version and the resident told of its source. The
/// checks, in this order: the same content again (`Unchanged`), the link
/// still standing, the resident active, unrestricted and not objecting,
/// the resident's own later correction, the version sealed for still the
/// next one.
pub(crate) fn decide_deposits(
    rows: &[(DepositRow, Timestamp)],
    facts: &[StoredFacts],
) -> (Vec<DepositOutcome>, DepositWrites) {
    use std::collections::{HashMap, HashSet};
    type Pair<'a> = (&'a str, &'a str);
    let mut digests: HashMap<Pair<'_>, &str> = HashMap::new();
    let mut versions: HashMap<Pair<'_>, i64> = HashMap::new();
    let mut told: HashSet<Pair<'_>> = HashSet::new();
    let mut last_of_record: HashMap<Pair<'_>, usize> = HashMap::new();
    let mut writes = DepositWrites::default();
    let outcomes = rows
        .iter()
        .zip(facts)
        .enumerate()
        .map(|(i, ((d, _), f))| {
            let record = (d.source_id.as_str(), d.source_record_id.as_str());
            let series = (d.resident_id.as_str(), d.record.category.as_str());
            let about = (d.source_id.as_str(), d.resident_id.as_str());
            let previous = digests
                .get(&record)
                .copied()
                .or(f.previous_digest.as_deref());
            let latest = versions.get(&series).copied().unwrap_or(f.latest_version);
            let outcome = if previous == Some(d.content_digest.as_str()) {
                DepositOutcome::Unchanged
            } else if d.via_link && !f.linked {
                DepositOutcome::NoLink
            } else if !f.active {
                DepositOutcome::NoResident
            } else if f.restricted {
                DepositOutcome::Restricted
            } else if f.objected {
                DepositOutcome::Objected
            } else if f.own_written_at.is_some_and(|at| at > d.observed_at) {
                DepositOutcome::SupersededByResident
            } else if latest + 1 != d.record.version {
                DepositOutcome::VersionTaken
            } else {
                DepositOutcome::Accepted
            };
            if outcome == DepositOutcome::Accepted {
                digests.insert(record, &d.content_digest);
                versions.insert(series, d.record.version);
                writes.accepted.push(i);
                if !f.told && told.insert(about) {
                    writes.first_from_source.push(i);
                }
                last_of_record.insert(record, i);
            }
            outcome
        })
        .collect();
    writes.deposits = last_of_record.into_values().collect();
    writes.deposits.sort_unstable();
    (outcomes, writes)
}

#[async_trait]
pub trait DepositStore: Send + Sync {
    /// Every version of the resident's records a source deposited, with its
    /// provenance (the resident's page, art. 15(1)(g)).
    async fn deposited_versions(
        &self,
        resident_id: &crate::domain::ResidentId,
    ) -> StorageResult<Vec<DepositedVersion>>;
    /// The facts of a deposit of `category` under this source's record id
    /// about `subject`, in one statement (the subject resolved in it);
    /// `None` when there is no such resident, or no standing link of the
    /// source with this handle.
    async fn deposit_facts(
        &self,
        source_id: &str,
        subject: DepositSubject<'_>,
        source_record_id: &str,
        category: &str,
    ) -> StorageResult<Option<DepositFacts>> {
        let asked = FactsAsked {
            source_id,
            subject,
            source_record_id,
            category,
        };
        Ok(self
            .deposit_facts_of(std::slice::from_ref(&asked))
            .await?
            .pop()
            .flatten())
    }
    /// [`DepositStore::deposit_facts`] for several lines in one statement
    /// (a stream's lines in flight share it): one answer per question, in
    /// their order.
    async fn deposit_facts_of(
        &self,
        asked: &[FactsAsked<'_>],
    ) -> StorageResult<Vec<Option<DepositFacts>>>;
    /// Stores a deposit in one transaction that holds the write lock
    /// (SQLite) or locks the link and the resident's row (PostgreSQL): the
    /// idempotency check, the link still standing, the resident still
    /// active, unrestricted and not objecting, the resident's own
    /// correction check, the record version and the idempotency row — all
    /// checked and written in the same unit, so a revocation, restriction,
    /// objection or erasure that commits first wins.
    async fn record_deposit(
        &self,
        d: &DepositRow,
        now: Timestamp,
    ) -> StorageResult<DepositOutcome> {
        let mut outcomes = self.record_deposits(&[(d.clone(), now)]).await?;
        outcomes
            .pop()
            .ok_or_else(|| super::StorageError::Other("no outcome for the deposit".into()))
    }
    /// Stores several deposits (each with its own time) in one transaction,
    /// each one checked and written as [`DepositStore::record_deposit`]
    /// does, inside a savepoint of its own: a deposit refused, or whose
    /// version another took (`VersionTaken`, also for a concurrent insert
    /// on PostgreSQL), leaves nothing behind and does not touch the others.
    /// One outcome per deposit, in their order. An error fails them all
    /// (nothing of the batch stays).
    async fn record_deposits(
        &self,
        rows: &[(DepositRow, Timestamp)],
    ) -> StorageResult<Vec<DepositOutcome>>;
    /// Erases what a source deposited about a resident (every version it
    /// deposited, and its idempotency rows), in one transaction; the
    /// resident's own versions stay. Returns how many versions went.
    async fn erase_source_deposits(
        &self,
        source_id: &str,
        resident_id: &crate::domain::ResidentId,
    ) -> StorageResult<u64>;
    /// The resident whose pivot identity has this keyed digest.
    async fn resident_by_pivot(
        &self,
        pivot_digest: &str,
    ) -> StorageResult<Option<crate::domain::ResidentId>>;
    /// Records a resident's pivot digest (from their FranceConnect login);
    /// a digest already recorded keeps its resident.
    async fn set_resident_pivot(
        &self,
        pivot_digest: &str,
        resident_id: &crate::domain::ResidentId,
    ) -> StorageResult<()>;
}

/// `impl DepositStore` for a backend (see `storage::impl_store!`).
macro_rules! impl_deposit_store {
    ($store:ty, $db:ty, $backend:expr) => {
    impl $store {
        /// Checks and writes deposits in the open transaction `tx`
        /// (`DepositStore::record_deposits`, or the audit log's sequencing
        /// transaction that carries their entries: `beside_entries`), at
        /// most [`MAX_DEPOSIT_BATCH`] at a time, each batch in a savepoint
        /// of its own: one outcome per deposit, in their order.
        ///
        /// Beside the entries (the log's head row locked on PostgreSQL),
        /// each of the deposits' lock waits on a row another transaction
        /// holds is cut at [`DEPOSIT_LOCK_WAIT`] (per lock: a batch's few
        /// lock statements can each wait that long), and any failure of a
        /// batch rolls back that batch alone and answers its deposits
        /// `StoreAlone`: another caller's entry in the transaction never
        /// fails for a deposit, and waits for one only that long. Elsewhere
        /// a failure is the caller's error (its transaction is dropped).
        async fn deposits_in(
            tx: &mut sqlx::Transaction<'_, $db>,
            rows: &[($crate::storage::DepositRow, $crate::domain::Timestamp)],
            beside_entries: bool,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::DepositOutcome>> {
            use $crate::storage::deposits::{DEPOSIT_LOCK_WAIT, MAX_DEPOSIT_BATCH};
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            if beside_entries && $backend == $crate::storage::Backend::Postgres {
                // For the rest of this transaction: only its deposits follow.
                sqlx::query(DEPOSIT_LOCK_WAIT).execute(&mut **tx).await?;
            }
            let mut outcomes = Vec::with_capacity(rows.len());
            for chunk in rows.chunks(MAX_DEPOSIT_BATCH) {
                outcomes.extend(Self::deposits_checked(tx, chunk, beside_entries).await?);
            }
            Ok(outcomes)
        }

        /// One batch of deposits in `tx`, in a savepoint (one read, then
        /// one statement per table written, whatever its size; one
        /// savepoint, where a second around the batch's part of the
        /// transaction cost two more round trips to the database on the
        /// audit log's critical path). After a broken key, each deposit
        /// alone. Whatever fails, nothing of the batch stays: beside the
        /// entries its deposits are then answered `StoreAlone`; elsewhere
        /// the error is returned.
        async fn deposits_checked(
            tx: &mut sqlx::Transaction<'_, $db>,
            rows: &[($crate::storage::DepositRow, $crate::domain::Timestamp)],
            beside_entries: bool,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::DepositOutcome>> {
            use sqlx::Acquire;
            let failed = if $backend == $crate::storage::Backend::Sqlite {
                // The savepoint is opened and released by the batch's own
                // statements (SQLite runs a text of several statements in
                // one call to its worker thread; each call is a round trip
                // on the audit log's critical path). It is always opened
                // inside the caller's transaction (`tx`), so its release
                // never commits by itself. A failure before it opened (a
                // value that cannot be bound) makes its rollback fail
                // too: the transaction's end, entries included (closed).
                // SQLite ends the transaction itself on some errors (a
                // full disk): the rollback then fails the same way.
                use $crate::storage::deposits::BATCH_SAVEPOINT_ROLLBACK;
                match Self::deposit_batch_on(&mut **tx, rows, true).await {
                    Ok(outcomes) => return Ok(outcomes),
                    Err(e) => Self::rolled_back(
                        sqlx::query(BATCH_SAVEPOINT_ROLLBACK).execute(&mut **tx).await.map(|_| ()),
                        e,
                    )?,
                }
            } else {
                let mut all = (&mut *tx).begin().await?;
                match Self::deposit_batch_on(&mut all, rows, false).await {
                    Ok(outcomes) => {
                        all.commit().await?;
                        return Ok(outcomes);
                    }
                    // Rolled back before anything else (a failed statement
                    // leaves the savepoint unusable until then); a rollback
                    // that fails is the transaction's end.
                    Err(e) => Self::rolled_back(all.rollback().await, e)?,
                }
            };
            match failed {
                // A key another deposit took (a version taken by another
                // process on PostgreSQL, a record id clash): each deposit
                // alone, so only the one that breaks the key is answered
                // `VersionTaken` (and sealed again).
                $crate::storage::StorageError::Conflict(_) => {
                    Self::deposits_one_by_one(tx, rows, beside_entries).await
                }
                e => Self::stored_alone(e, rows.len(), beside_entries),
            }
        }

        /// Each deposit of a batch in a savepoint of its own, all of them
        /// in one more: a deposit that breaks a key is `VersionTaken` and
        /// leaves nothing behind; any other failure leaves nothing of the
        /// batch ([`Self::deposits_checked`]).
        async fn deposits_one_by_one(
            tx: &mut sqlx::Transaction<'_, $db>,
            rows: &[($crate::storage::DepositRow, $crate::domain::Timestamp)],
            beside_entries: bool,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::DepositOutcome>> {
            use sqlx::Acquire;
            let mut each = (&mut *tx).begin().await?;
            let mut outcomes = Vec::with_capacity(rows.len());
            let mut failed = None;
            for row in rows {
                let mut one = (&mut *each).begin().await?;
                match Self::deposit_batch_on(&mut one, std::slice::from_ref(row), false).await {
                    Ok(mut alone) => {
                        one.commit().await?;
                        outcomes.push(alone.pop().ok_or_else(|| {
                            $crate::storage::StorageError::Other("no outcome for a deposit".into())
                        })?);
                    }
                    Err(e @ $crate::storage::StorageError::Conflict(_)) => {
                        Self::rolled_back(one.rollback().await, e)?;
                        outcomes.push($crate::storage::DepositOutcome::VersionTaken);
                    }
                    Err(e) => {
                        failed = Some(Self::rolled_back(one.rollback().await, e)?);
                        break;
                    }
                }
            }
            match failed {
                None => {
                    each.commit().await?;
                    Ok(outcomes)
                }
                Some(e) => {
                    let e = Self::rolled_back(each.rollback().await, e)?;
                    Self::stored_alone(e, rows.len(), beside_entries)
                }
            }
        }

        /// The failure `cause` once its savepoint was rolled back; when the
        /// rollback failed too (the transaction is gone: SQLite ends it on
        /// a full disk), the cause is still what is answered, as the
        /// transaction's end (`Err`), and the rollback's own error is
        /// logged beside it.
        fn rolled_back(
            rollback: Result<(), sqlx::Error>,
            cause: $crate::storage::StorageError,
        ) -> $crate::storage::StorageResult<$crate::storage::StorageError> {
            match rollback {
                Ok(()) => Ok(cause),
                Err(e) => {
                    tracing::error!(error = %e, cause = %cause,
                        "a deposits savepoint could not be rolled back after a failure");
                    Err(cause)
                }
            }
        }

        /// A batch of `count` deposits that failed (rolled back): beside
        /// the entries, each is to be stored alone; elsewhere, the error.
        fn stored_alone(
            e: $crate::storage::StorageError,
            count: usize,
            beside_entries: bool,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::DepositOutcome>> {
            if !beside_entries {
                return Err(e);
            }
            tracing::warn!(error = %e, deposits = count,
                "deposits beside their entries failed; each is stored alone");
            Ok(vec![$crate::storage::DepositOutcome::StoreAlone; count])
        }

        /// Ends the statement `q` holds: `joined` (SQLite), the next one
        /// follows it in the same text; else it runs now and `q` is emptied.
        async fn next_statement(
            q: &mut sqlx::QueryBuilder<'_, $db>,
            conn: &mut <$db as sqlx::Database>::Connection,
            joined: bool,
        ) -> $crate::storage::StorageResult<()> {
            if joined {
                q.push("; ");
            } else {
                q.build().execute(&mut *conn).await?;
                q.reset();
            }
            Ok(())
        }

        /// Checks and writes a batch of deposits in the transaction `conn`
        /// is in: on PostgreSQL the links and residents they name are
        /// locked first (SQLite's write lock covers them), then one read
        /// gives every deposit's facts, the outcomes are decided in the
        /// batch's order (`decide_deposits`) and the accepted ones are
        /// written with one statement per table (a deposit writes nothing
        /// to its link: the resident's page reads the last deposit from the
        /// versions). Nothing is written for a deposit that is not
        /// accepted. A broken key fails the whole call (`Conflict`).
        async fn deposit_batch_on(
            conn: &mut <$db as sqlx::Database>::Connection,
            rows: &[($crate::storage::DepositRow, $crate::domain::Timestamp)],
            in_savepoint: bool,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::DepositOutcome>> {
            use $crate::storage::deposits::{
                BATCH_SAVEPOINT_OPEN, BATCH_SAVEPOINT_RELEASE, DepositWrites, StoredFacts,
                decide_deposits,
            };
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            if $backend == $crate::storage::Backend::Postgres {
                // In one order for every batch of every process, and the
                // order an erasure takes them in (residents, then links,
                // each sorted): no two wait on each other crosswise. The
                // resident's row orders a deposit with an erasure, a
                // restriction or an objection; the link's with a
                // revocation (a share lock: a deposit writes nothing to
                // the link, so two batches on one link need not wait on
                // each other; the version key orders them).
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT 1 FROM residents WHERE id IN (");
                let mut ids = q.separated(", ");
                for (d, _) in rows {
                    ids.push_bind(&d.resident_id);
                }
                q.push(") ORDER BY id FOR SHARE");
                q.build().execute(&mut *conn).await?;
                let links: Vec<_> = rows.iter().filter(|(d, _)| d.via_link).collect();
                if !links.is_empty() {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "SELECT 1 FROM source_links WHERE (source_id, resident_id) IN (",
                    );
                    q.push_values(links, |mut b, (d, _)| {
                        b.push_bind(&d.source_id).push_bind(&d.resident_id);
                    });
                    q.push(") ORDER BY source_id, resident_id FOR SHARE");
                    q.build().execute(&mut *conn).await?;
                }
            }
            let mut q = sqlx::QueryBuilder::<$db>::new("");
            if in_savepoint {
                // SQLite only (one text of several statements): opened in
                // the read's text, released in the last write's.
                q.push(BATCH_SAVEPOINT_OPEN).push("; ");
            }
            q.push("WITH b (n, source_id, source_record_id, resident_id, category) AS (");
            q.push_values(rows.iter().zip(0i64..), |mut b, ((d, _), n)| {
                b.push_bind(n)
                    .push_bind(&d.source_id)
                    .push_bind(&d.source_record_id)
                    .push_bind(&d.resident_id)
                    .push_bind(&d.record.category);
            });
            // The resident's own latest writing (no origin: theirs or an
            // aidant's) is the newest version no source deposited.
            q.push(
                ") SELECT b.n, \
                   (SELECT d.content_digest FROM source_deposits d \
                    WHERE d.source_id = b.source_id AND d.source_record_id = b.source_record_id), \
                   EXISTS (SELECT 1 FROM source_links l WHERE l.source_id = b.source_id \
                           AND l.resident_id = b.resident_id AND l.revoked_at IS NULL), \
                   r.id IS NOT NULL, \
                   r.restricted_at IS NOT NULL, \
                   EXISTS (SELECT 1 FROM objections o WHERE o.resident_id = b.resident_id \
                           AND o.purpose = 'source:' || b.source_id), \
                   (SELECT MAX(p.version) FROM personal_records p \
                    WHERE p.resident_id = b.resident_id AND p.category = b.category), \
                   (SELECT MAX(p.created_at) FROM personal_records p \
                    WHERE p.resident_id = b.resident_id AND p.category = b.category \
                    AND p.source_id IS NULL), \
                   EXISTS (SELECT 1 FROM source_deposits s \
                           WHERE s.resident_id = b.resident_id AND s.source_id = b.source_id) \
                 FROM b LEFT JOIN residents r ON r.id = b.resident_id AND r.status = 'active' \
                 ORDER BY b.n",
            );
            type Row = (i64, Option<String>, bool, bool, bool, bool, Option<i64>, Option<i64>, bool);
            let found: Vec<Row> = q.build_query_as().fetch_all(&mut *conn).await?;
            if found.len() != rows.len() || found.iter().zip(0i64..).any(|(r, n)| r.0 != n) {
                return Err($crate::storage::StorageError::Integrity(
                    "a deposit batch's facts do not match its deposits".into(),
                ));
            }
            let facts: Vec<StoredFacts> = found
                .into_iter()
                .map(|(_, previous_digest, linked, active, restricted, objected, latest, own, told)| {
                    StoredFacts {
                        previous_digest,
                        linked,
                        active,
                        restricted,
                        objected,
                        latest_version: latest.unwrap_or(0),
                        own_written_at: own,
                        told,
                    }
                })
                .collect();
            let (outcomes, writes) = decide_deposits(rows, &facts);
            let DepositWrites { accepted, first_from_source, deposits } = writes;
            if accepted.is_empty() {
                if in_savepoint {
                    sqlx::query(BATCH_SAVEPOINT_RELEASE).execute(&mut *conn).await?;
                }
                return Ok(outcomes);
            }
            // One statement per table. On SQLite they are one text, with
            // the savepoint's release (SQLite runs a text of several
            // statements in one call to its worker thread, binding `?`
            // parameters in order across them); on PostgreSQL a prepared
            // statement is one statement.
            let joined = $backend == $crate::storage::Backend::Sqlite;
            let mut q = sqlx::QueryBuilder::<$db>::new("");
            q.push(
                "INSERT INTO personal_records \
                 (id, resident_id, category, version, sealed, created_at, origin, \
                  source_id, source_record_id, observed_at, source_basis) ",
            );
            // The provenance columns are exactly what the seal was made
            // with (`Vault::seal_after`), or the version would not open.
            q.push_values(accepted.iter().map(|&i| &rows[i].0), |mut b, d| {
                b.push_bind(&d.record.id)
                    .push_bind(&d.resident_id)
                    .push_bind(&d.record.category)
                    .push_bind(d.record.version)
                    .push_bind(&d.record.sealed)
                    .push_bind(d.record.created_at)
                    .push_bind("source")
                    .push_bind(&d.record.origin.source_id)
                    .push_bind(&d.record.origin.source_record_id)
                    .push_bind(d.record.origin.observed_at)
                    .push_bind(&d.record.origin.source_basis);
            });
            Self::next_statement(&mut q, &mut *conn, joined).await?;
            if !first_from_source.is_empty() {
                // Art. 14: the first deposit from this source about this
                // resident (none of its deposits stands) tells them, in
                // this transaction (whatever this record id's past: a
                // record a source moves to another resident tells them).
                // The id is fixed per source and resident: two processes
                // racing on PostgreSQL write one message (a resident told
                // less than a year ago, the outbox's retention, of a
                // source that deposits again after an erasure is not told
                // twice).
                q.push(
                    "INSERT INTO outbox (id, event, resident_id, subject_id, actor_name, created_at, next_attempt_at) ",
                );
                q.push_values(first_from_source.iter().map(|&i| &rows[i]), |mut b, (d, now)| {
                    b.push_bind(format!("source-first-{}-{}", d.source_id, d.resident_id.as_str()))
                        .push_bind($crate::domain::notice::NoticeEvent::SourceFirstDeposit)
                        .push_bind(&d.resident_id)
                        .push_bind(&d.source_id)
                        .push_bind(&d.source_name)
                        .push_bind(*now)
                        .push_bind(*now);
                });
                q.push(" ON CONFLICT (id) DO NOTHING");
                Self::next_statement(&mut q, &mut *conn, joined).await?;
            }
            q.push(
                "INSERT INTO source_deposits \
                 (source_id, source_record_id, resident_id, category, content_digest, record_id, deposited_at) ",
            );
            q.push_values(deposits.iter().map(|&i| &rows[i]), |mut b, (d, now)| {
                b.push_bind(&d.source_id)
                    .push_bind(&d.source_record_id)
                    .push_bind(&d.resident_id)
                    .push_bind(&d.record.category)
                    .push_bind(&d.content_digest)
                    .push_bind(&d.record.id)
                    .push_bind(*now);
            });
            q.push(
                " ON CONFLICT (source_id, source_record_id) DO UPDATE SET \
                 resident_id = excluded.resident_id, category = excluded.category, \
                 content_digest = excluded.content_digest, record_id = excluded.record_id, \
                 deposited_at = excluded.deposited_at",
            );
            if in_savepoint {
                q.push("; ").push(BATCH_SAVEPOINT_RELEASE);
            }
            q.build().execute(&mut *conn).await?;
            Ok(outcomes)
        }
    }

    #[async_trait::async_trait]
    impl $crate::storage::DepositStore for $store {
        async fn deposited_versions(
            &self,
            resident_id: &$crate::domain::ResidentId,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::DepositedVersion>> {
            Ok(sqlx::query_as(
                "SELECT category, version, source_id, observed_at, created_at FROM personal_records \
                 WHERE resident_id = $1 AND source_id IS NOT NULL ORDER BY category, version",
            )
            .bind(resident_id)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn deposit_facts_of(
            &self,
            asked: &[$crate::storage::FactsAsked<'_>],
        ) -> $crate::storage::StorageResult<Vec<Option<$crate::storage::DepositFacts>>> {
            use $crate::storage::DepositSubject;
            type Row = (
                i64,
                $crate::domain::ResidentId,
                bool,
                Option<i64>,
                i64,
                Option<String>,
                Option<i64>,
                Option<i64>,
                Option<Vec<u8>>,
            );
            let mut answers = vec![None; asked.len()];
            for (chunk, offset) in asked.chunks(256).zip((0..).step_by(256)) {
                // Each question names its subject by a resident's id, or by
                // a link's handle resolved here through a standing link.
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "WITH q (n, handle, resident, source_id, source_record_id, category) AS (",
                );
                q.push_values(chunk.iter().zip(0i64..), |mut b, (a, n)| {
                    let (handle, resident) = match a.subject {
                        DepositSubject::Handle(h) => (Some(h), None),
                        DepositSubject::Resident(r) => (None, Some(r.as_str())),
                    };
                    b.push_bind(n)
                        .push_bind(handle)
                        .push_bind(resident)
                        .push_bind(a.source_id)
                        .push_bind(a.source_record_id)
                        .push_bind(a.category);
                });
                q.push(
                    "), s (n, resident_id, source_id, source_record_id, category) AS ( \
                       SELECT q.n, COALESCE(q.resident, \
                         (SELECT l.resident_id FROM source_links l WHERE l.source_id = q.source_id \
                          AND l.handle = q.handle AND l.revoked_at IS NULL)), \
                         q.source_id, q.source_record_id, q.category FROM q) \
                     SELECT s.n, r.id, r.status = 'active', r.restricted_at, \
                       (SELECT COUNT(*) FROM objections o WHERE o.resident_id = r.id \
                        AND o.purpose = 'source:' || s.source_id), \
                       (SELECT d.content_digest FROM source_deposits d \
                        WHERE d.source_id = s.source_id AND d.source_record_id = s.source_record_id), \
                       (SELECT MAX(p.version) FROM personal_records p \
                        WHERE p.resident_id = r.id AND p.category = s.category), \
                       (SELECT k.kek_version FROM data_keys k WHERE k.resident_id = r.id), \
                       (SELECT k.wrapped FROM data_keys k WHERE k.resident_id = r.id) \
                     FROM s JOIN residents r ON r.id = s.resident_id",
                );
                let rows: Vec<Row> = q.build_query_as().fetch_all(&self.pool).await?;
                for (n, resident_id, active, restricted_at, objections, previous_digest, latest, kek_version, wrapped) in rows {
                    let at = usize::try_from(n).ok().and_then(|n| n.checked_add(offset));
                    let Some(slot) = at.and_then(|at| answers.get_mut(at)) else {
                        return Err($crate::storage::StorageError::Integrity(
                            "a deposit's facts for no question".into(),
                        ));
                    };
                    let data_key = kek_version.zip(wrapped).map(|(kek_version, wrapped)| {
                        $crate::storage::DataKeyRow {
                            resident_id: resident_id.clone(),
                            kek_version,
                            wrapped,
                        }
                    });
                    *slot = Some($crate::storage::DepositFacts {
                        resident_id,
                        active,
                        restricted: restricted_at.is_some(),
                        objected: objections > 0,
                        previous_digest,
                        latest_version: latest.unwrap_or(0),
                        data_key,
                    });
                }
            }
            Ok(answers)
        }

        async fn record_deposits(
            &self,
            rows: &[($crate::storage::DepositRow, $crate::domain::Timestamp)],
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::DepositOutcome>> {
            // BEGIN IMMEDIATE on SQLite: the write lock before the first
            // read, so the checks below still hold at the insert. On
            // PostgreSQL the rows checked are locked first
            // (`deposit_batch_on`) and a concurrent deposit of the same
            // version fails on the (resident, category, version) key.
            let begin = match $backend {
                $crate::storage::Backend::Sqlite => "BEGIN IMMEDIATE",
                $crate::storage::Backend::Postgres => "BEGIN",
            };
            let mut conn = self.pool.acquire().await?;
            let stored = async {
                let mut tx = sqlx::Connection::begin_with(&mut *conn, begin).await?;
                let outcomes = Self::deposits_in(&mut tx, rows, false).await?;
                tx.commit().await?;
                Ok::<_, $crate::storage::StorageError>(outcomes)
            }
            .await;
            if stored.is_err() {
                // As the audit log's append: a connection a write failed on
                // (a failed COMMIT can leave it inside a transaction) is
                // never reused.
                conn.close_on_drop();
            }
            stored
        }

        async fn erase_source_deposits(
            &self,
            source_id: &str,
            resident_id: &$crate::domain::ResidentId,
        ) -> $crate::storage::StorageResult<u64> {
            let mut tx = self.pool.begin().await?;
            let versions = sqlx::query(
                "DELETE FROM personal_records WHERE resident_id = $1 AND source_id = $2",
            )
            .bind(resident_id)
            .bind(source_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM source_deposits WHERE resident_id = $1 AND source_id = $2")
                .bind(resident_id)
                .bind(source_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(versions.rows_affected())
        }

        async fn resident_by_pivot(
            &self,
            pivot_digest: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::domain::ResidentId>> {
            Ok(sqlx::query_scalar(
                "SELECT p.resident_id FROM resident_pivots p JOIN residents r ON r.id = p.resident_id \
                 WHERE p.pivot_digest = $1 AND r.status = 'active'",
            )
            .bind(pivot_digest)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn set_resident_pivot(
            &self,
            pivot_digest: &str,
            resident_id: &$crate::domain::ResidentId,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO resident_pivots (pivot_digest, resident_id) VALUES ($1, $2) \
                 ON CONFLICT (pivot_digest) DO NOTHING",
            )
            .bind(pivot_digest)
            .bind(resident_id)
            .execute(&self.pool)
            .await?;
            Ok(())
        }
    }
    };
}
pub(crate) use impl_deposit_store;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::storage::RecordRow;
    use DepositOutcome::*;

    fn row(record: &str, resident: &str, digest: &str, version: i64) -> (DepositRow, Timestamp) {
        let d = DepositRow {
            source_id: "s1".into(),
            source_name: "Source 1".into(),
            source_record_id: record.into(),
            resident_id: crate::domain::ResidentId::parse(resident).unwrap(),
            content_digest: digest.into(),
            observed_at: 10,
            via_link: true,
            record: RecordRow {
                id: format!("{record}-{version}"),
                category: "energy".into(),
                version,
                sealed: vec![0; 8],
                created_at: 20,
                origin: Default::default(),
            },
        };
        (d, 100 + version)
    }

    fn linked() -> StoredFacts {
        StoredFacts {
            linked: true,
            active: true,
            ..Default::default()
        }
    }

    /// Inside one batch a deposit sees those accepted before it: the same
    /// content again is unchanged, the next version follows the one just
    /// taken and a second seal for it is refused, the resident is told once
    /// per source and one idempotency row per record (its last).
    #[test]
    fn a_batch_is_decided_as_if_each_deposit_were_written_in_turn() {
        let rows = vec![
            row("m-1", "r1", "d1", 1),
            row("m-1", "r1", "d1", 2),
            row("m-1", "r1", "d2", 2),
            row("m-2", "r1", "d3", 2),
            row("m-3", "r2", "d4", 1),
        ];
        let r2_told = StoredFacts {
            told: true,
            ..linked()
        };
        let facts = vec![linked(), linked(), linked(), linked(), r2_told];
        let (outcomes, writes) = decide_deposits(&rows, &facts);
        assert_eq!(
            outcomes,
            vec![Accepted, Unchanged, Accepted, VersionTaken, Accepted]
        );
        assert_eq!(
            writes,
            DepositWrites {
                accepted: vec![0, 2, 4],
                first_from_source: vec![0],
                deposits: vec![2, 4],
            }
        );
    }

    /// Every refusal, in the order the checks are made; none is written.
    #[test]
    fn refusals_come_in_their_order_and_write_nothing() {
        let d = |f: StoredFacts| decide_deposits(&[row("m-1", "r1", "d1", 1)], &[f]);
        let cases = [
            (
                StoredFacts {
                    previous_digest: Some("d1".into()),
                    ..Default::default()
                },
                Unchanged,
            ),
            (
                StoredFacts {
                    active: true,
                    ..Default::default()
                },
                NoLink,
            ),
            (
                StoredFacts {
                    active: false,
                    restricted: true,
                    ..linked()
                },
                NoResident,
            ),
            (
                StoredFacts {
                    restricted: true,
                    objected: true,
                    ..linked()
                },
                Restricted,
            ),
            (
                StoredFacts {
                    objected: true,
                    own_written_at: Some(11),
                    ..linked()
                },
                Objected,
            ),
            (
                StoredFacts {
                    own_written_at: Some(11),
                    ..linked()
                },
                SupersededByResident,
            ),
            (
                StoredFacts {
                    latest_version: 1,
                    own_written_at: Some(10),
                    ..linked()
                },
                VersionTaken,
            ),
        ];
        for (facts, expected) in cases {
            let (outcomes, writes) = d(facts);
            assert_eq!(outcomes, vec![expected]);
            assert_eq!(writes, DepositWrites::default(), "{expected:?}");
        }
        // Written at the very time it was observed: the deposit stands.
        let (outcomes, _) = d(StoredFacts {
            own_written_at: Some(10),
            ..linked()
        });
        assert_eq!(outcomes, vec![Accepted]);
    }
}
