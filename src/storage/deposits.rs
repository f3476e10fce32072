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
}

/// What a deposit line needs to know of its resident before it is decided
/// and sealed, read in one statement (a stream's hot path: each statement
/// is a hand-off to the database's thread). A first look only:
/// `record_deposits` checks again where it writes.
#[derive(Clone, Debug, Default)]
pub struct DepositFacts {
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

/// A deposited version of a resident's record and where it came from.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DepositedVersion {
    pub category: String,
    pub version: i64,
    pub source_id: String,
    pub observed_at: Timestamp,
    pub created_at: Timestamp,
}

#[async_trait]
pub trait DepositStore: Send + Sync {
    /// Every version of the resident's records a source deposited, with its
    /// provenance (the resident's page, art. 15(1)(g)).
    async fn deposited_versions(
        &self,
        resident_id: &crate::domain::ResidentId,
    ) -> StorageResult<Vec<DepositedVersion>>;
    /// The resident's facts for a deposit of `category` under this source's
    /// record id, in one statement; `None` when there is no such resident.
    async fn deposit_facts(
        &self,
        source_id: &str,
        source_record_id: &str,
        resident_id: &crate::domain::ResidentId,
        category: &str,
    ) -> StorageResult<Option<DepositFacts>>;
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
    ($store:ty, $backend:expr, $for_share:literal) => {
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

        async fn deposit_facts(
            &self,
            source_id: &str,
            source_record_id: &str,
            resident_id: &$crate::domain::ResidentId,
            category: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::DepositFacts>> {
            type Row = (
                Option<i64>,
                i64,
                Option<String>,
                Option<i64>,
                Option<i64>,
                Option<Vec<u8>>,
            );
            let row: Option<Row> = sqlx::query_as(
                "SELECT r.restricted_at, \
                   (SELECT COUNT(*) FROM objections o WHERE o.resident_id = r.id AND o.purpose = $4), \
                   (SELECT d.content_digest FROM source_deposits d \
                    WHERE d.source_id = $2 AND d.source_record_id = $3), \
                   (SELECT MAX(p.version) FROM personal_records p \
                    WHERE p.resident_id = r.id AND p.category = $5), \
                   k.kek_version, k.wrapped \
                 FROM residents r LEFT JOIN data_keys k ON k.resident_id = r.id \
                 WHERE r.id = $1",
            )
            .bind(resident_id)
            .bind(source_id)
            .bind(source_record_id)
            .bind(format!("source:{source_id}"))
            .bind(category)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map(
                |(restricted_at, objections, previous_digest, latest, kek_version, wrapped)| {
                    $crate::storage::DepositFacts {
                        restricted: restricted_at.is_some(),
                        objected: objections > 0,
                        previous_digest,
                        latest_version: latest.unwrap_or(0),
                        data_key: kek_version.zip(wrapped).map(|(kek_version, wrapped)| {
                            $crate::storage::DataKeyRow {
                                resident_id: resident_id.clone(),
                                kek_version,
                                wrapped,
                            }
                        }),
                    }
                },
            ))
        }

        async fn record_deposits(
            &self,
            rows: &[($crate::storage::DepositRow, $crate::domain::Timestamp)],
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::DepositOutcome>> {
            use $crate::storage::DepositOutcome as O;
            use sqlx::Acquire;
            // BEGIN IMMEDIATE on SQLite: the write lock before the first
            // read, so the checks below still hold at the insert. On
            // PostgreSQL a concurrent deposit of the same version fails on
            // the (resident, category, version) key: that deposit's
            // savepoint rolls back and it is sealed again.
            let begin = match $backend {
                $crate::storage::Backend::Sqlite => "BEGIN IMMEDIATE",
                $crate::storage::Backend::Postgres => "BEGIN",
            };
            let mut conn = self.pool.acquire().await?;
            let stored = async {
                let mut tx = sqlx::Connection::begin_with(&mut *conn, begin).await?;
                let mut outcomes = Vec::with_capacity(rows.len());
                for (d, now) in rows {
                    let mut one = (&mut tx).begin().await?;
                    let outcome = async {
                        let previous: Option<String> = sqlx::query_scalar(
                            "SELECT content_digest FROM source_deposits WHERE source_id = $1 AND source_record_id = $2",
                        )
                        .bind(&d.source_id)
                        .bind(&d.source_record_id)
                        .fetch_optional(&mut *one)
                        .await?;
                        // Every answer but `Accepted` rolls back its savepoint: nothing
                        // of a refused deposit stays (not even the link's last deposit
                        // time).
                        if previous.as_deref() == Some(d.content_digest.as_str()) {
                            return Ok(O::Unchanged);
                        }
                        if d.via_link {
                            // The link row's write lock orders this deposit with a
                            // revocation on PostgreSQL (SQLite holds the database's).
                            let standing = sqlx::query(
                                "UPDATE source_links SET last_deposit_at = $3 \
                                 WHERE source_id = $1 AND resident_id = $2 AND revoked_at IS NULL",
                            )
                            .bind(&d.source_id)
                            .bind(&d.resident_id)
                            .bind(*now)
                            .execute(&mut *one)
                            .await?;
                            if standing.rows_affected() != 1 {
                                return Ok(O::NoLink);
                    }
                }
                let facts: Option<(Option<i64>, i64)> = sqlx::query_as(concat!(
                    "SELECT r.restricted_at, \
                       (SELECT COUNT(*) FROM objections o WHERE o.resident_id = r.id AND o.purpose = $2) \
                     FROM residents r WHERE r.id = $1 AND r.status = 'active'",
                    $for_share,
                ))
                .bind(&d.resident_id)
                .bind(format!("source:{}", d.source_id))
                .fetch_optional(&mut *one)
                .await?;
                match facts {
                    None => return Ok(O::NoResident),
                    Some((Some(_), _)) => return Ok(O::Restricted),
                    Some((None, n)) if n > 0 => return Ok(O::Objected),
                    Some(_) => {}
                }
                // The resident's own latest writing (no origin: theirs or an
                // aidant's), whatever sources deposited since: it stands against
                // an older observation.
                let (latest, own): (Option<i64>, Option<i64>) = sqlx::query_as(
                    "SELECT MAX(version), MAX(CASE WHEN source_id IS NULL THEN created_at END) \
                     FROM personal_records WHERE resident_id = $1 AND category = $2",
                )
                .bind(&d.resident_id)
                .bind(&d.record.category)
                .fetch_one(&mut *one)
                .await?;
                if own.is_some_and(|written_at| written_at > d.observed_at) {
                    return Ok(O::SupersededByResident);
                }
                if latest.unwrap_or(0) + 1 != d.record.version {
                    return Ok(O::VersionTaken);
                }
                sqlx::query(
                    "INSERT INTO personal_records \
                     (id, resident_id, category, version, sealed, created_at, origin, \
                      source_id, source_record_id, observed_at, source_basis) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'source', $7, $8, $9, $10)",
                )
                .bind(&d.record.id)
                .bind(&d.resident_id)
                .bind(&d.record.category)
                .bind(d.record.version)
                .bind(&d.record.sealed)
                .bind(d.record.created_at)
                // The provenance columns are exactly what the seal was made
                // with (`Vault::seal_after`), or the version would not open.
                .bind(&d.record.origin.source_id)
                .bind(&d.record.origin.source_record_id)
                .bind(d.record.origin.observed_at)
                .bind(&d.record.origin.source_basis)
                .execute(&mut *one)
                .await?;
                {
                    // Art. 14: the first deposit from this source about this
                    // resident (none of its deposits stands) tells them, in
                    // this transaction (whatever this record id's past: a
                    // record a source moves to another resident tells them). The id is fixed per source and
                    // resident: two processes racing on PostgreSQL write one
                    // message (a resident told less than a year ago, the
                    // outbox's retention, of a source that deposits again
                    // after an erasure is not told twice).
                    sqlx::query(
                        "INSERT INTO outbox (id, event, resident_id, subject_id, actor_name, created_at, next_attempt_at) \
                         SELECT $1, $2, $3, $4, $5, $6, $6 \
                         WHERE NOT EXISTS (SELECT 1 FROM source_deposits WHERE resident_id = $3 AND source_id = $4) \
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(format!("source-first-{}-{}", d.source_id, d.resident_id.as_str()))
                    .bind($crate::domain::notice::NoticeEvent::SourceFirstDeposit)
                    .bind(&d.resident_id)
                    .bind(&d.source_id)
                    .bind(&d.source_name)
                    .bind(*now)
                    .execute(&mut *one)
                    .await?;
                }
                sqlx::query(
                    "INSERT INTO source_deposits \
                     (source_id, source_record_id, resident_id, category, content_digest, record_id, deposited_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (source_id, source_record_id) DO UPDATE SET \
                     resident_id = excluded.resident_id, category = excluded.category, \
                     content_digest = excluded.content_digest, record_id = excluded.record_id, \
                     deposited_at = excluded.deposited_at",
                )
                .bind(&d.source_id)
                .bind(&d.source_record_id)
                .bind(&d.resident_id)
                .bind(&d.record.category)
                .bind(&d.content_digest)
                .bind(&d.record.id)
                .bind(*now)
                .execute(&mut *one)
                .await?;
                Ok::<_, $crate::storage::StorageError>(O::Accepted)
                    }
                    .await;
                    let outcome = match outcome {
                        Ok(O::Accepted) => {
                            one.commit().await?;
                            O::Accepted
                        }
                        Ok(other) => {
                            one.rollback().await?;
                            other
                        }
                        // Another transaction took the version first (PostgreSQL).
                        Err($crate::storage::StorageError::Conflict(_)) => {
                            one.rollback().await?;
                            O::VersionTaken
                        }
                        Err(e) => return Err(e),
                    };
                    outcomes.push(outcome);
                }
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
