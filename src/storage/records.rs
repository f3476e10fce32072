//! The vault as stored: KEK versions, each resident's data key wrapped by
//! one of them, and the sealed versions of each record (every value stays
//! sealed here; only `crypto` opens it). Also what retention deletes of
//! records: superseded versions, and data no consent covers any more.
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::{NotificationRow, StorageResult};
use crate::domain::Timestamp;

/// One sealed version of one record of the vault.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RecordRow {
    pub id: String,
    pub category: String,
    pub version: i64,
    pub sealed: Vec<u8>,
    pub created_at: i64,
    #[sqlx(flatten)]
    pub origin: RecordOrigin,
}

/// Where a stored version came from: nothing for the resident's own
/// writing (or an aidant's for them); for a source's deposit, the source,
/// its own id of the record, the legal basis and when it observed the
/// value. All of it is bound into the version's seal (envelope format 2,
/// `crypto::SealProvenance`), so the columns cannot be edited,
/// added or stripped without the version failing to open.
#[derive(Clone, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct RecordOrigin {
    pub source_id: Option<String>,
    pub source_record_id: Option<String>,
    pub source_basis: Option<String>,
    pub observed_at: Option<i64>,
}

impl RecordOrigin {
    pub fn deposit(
        source_id: &str,
        source_record_id: &str,
        basis: &str,
        observed_at: Timestamp,
    ) -> Self {
        Self {
            source_id: Some(source_id.to_string()),
            source_record_id: Some(source_record_id.to_string()),
            source_basis: Some(basis.to_string()),
            observed_at: Some(observed_at),
        }
    }
}

/// One current record of a resident of a page, with the resident's
/// wrapped data key (an extract reads a page of residents in one query).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PageRecordRow {
    pub resident_id: crate::domain::ResidentId,
    pub kek_version: i64,
    pub wrapped: Vec<u8>,
    pub id: String,
    pub category: String,
    pub version: i64,
    pub sealed: Vec<u8>,
    pub created_at: i64,
    #[sqlx(flatten)]
    pub origin: RecordOrigin,
}

/// A data key as stored: wrapped by the KEK of `kek_version`.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DataKeyRow {
    pub resident_id: crate::domain::ResidentId,
    pub kek_version: i64,
    pub wrapped: Vec<u8>,
}

/// The vault: KEK versions, residents' wrapped data keys, and the sealed
/// versions of their records.
#[async_trait]
pub trait RecordStore: Send + Sync {
    /// The highest registered KEK version: the one new data keys use.
    async fn current_kek_version(&self) -> StorageResult<Option<i64>>;
    async fn register_kek_version(&self, version: i64, now: Timestamp) -> StorageResult<()>;
    /// Removes a KEK version from the database; `false` while a data key
    /// still uses it (the foreign key refuses).
    async fn unregister_kek_version(&self, version: i64) -> StorageResult<bool>;
    async fn find_data_key(
        &self,
        resident_id: &crate::domain::ResidentId,
    ) -> StorageResult<Option<DataKeyRow>>;
    /// Stores a resident's first data key; `false` if one exists already
    /// (another request won the race: use that one).
    async fn insert_data_key(&self, key: &DataKeyRow, now: Timestamp) -> StorageResult<bool>;
    /// Inserts a record version and, in the same transaction, the art. 19
    /// notices it causes (none: one statement).
    async fn insert_record(
        &self,
        resident_id: &crate::domain::ResidentId,
        record: &RecordRow,
        notices: &[NotificationRow],
    ) -> StorageResult<()>;
    async fn latest_record_version(
        &self,
        resident_id: &crate::domain::ResidentId,
        category: &str,
    ) -> StorageResult<i64>;
    /// The latest version of each category the resident has.
    async fn current_records(
        &self,
        resident_id: &crate::domain::ResidentId,
    ) -> StorageResult<Vec<RecordRow>>;
    /// The latest version of each of `categories` for every resident of
    /// `residents`, each with the resident's wrapped data key, ordered by
    /// resident: one query for a page of an extract.
    async fn current_records_of_page(
        &self,
        residents: &[crate::domain::ResidentId],
        categories: &[String],
    ) -> StorageResult<Vec<PageRecordRow>>;
    /// Every version of one category, newest first.
    async fn record_history(
        &self,
        resident_id: &crate::domain::ResidentId,
        category: &str,
    ) -> StorageResult<Vec<RecordRow>>;
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
    /// Every version of a resident's category (erasure for one purpose).
    async fn delete_category(
        &self,
        resident_id: &crate::domain::ResidentId,
        category: &str,
    ) -> StorageResult<u64>;
    /// Deletes versions of `category` superseded by a version written at or
    /// before `cutoff`.
    async fn purge_superseded(&self, category: &str, cutoff: Timestamp) -> StorageResult<u64>;
    /// Residents holding records of `category`, a category only the
    /// consent-based `purposes` hold, that no consent covers: counted from
    /// the data (a resident who never consented is found too), keeping
    /// data written, and consents decided or valid, within the grace
    /// period that ends at `ended_before`.
    async fn consent_orphaned_records(
        &self,
        purposes: &[crate::domain::PurposeId],
        category: &str,
        ended_before: Timestamp,
    ) -> StorageResult<Vec<crate::domain::ResidentId>>;
}

/// `impl RecordStore` for a backend (see `storage::impl_store!`).
macro_rules! impl_record_store {
    ($store:ty, $db:ty, $for_share:literal) => {
    #[async_trait::async_trait]
    impl $crate::storage::RecordStore for $store {
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
            resident_id: &$crate::domain::ResidentId,
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
            resident_id: &$crate::domain::ResidentId,
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
            resident_id: &$crate::domain::ResidentId,
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
            resident_id: &$crate::domain::ResidentId,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::RecordRow>> {
            Ok(sqlx::query_as(
                "SELECT r.id, r.category, r.version, r.sealed, r.created_at, \
                   r.source_id, r.source_record_id, r.source_basis, r.observed_at \
                 FROM personal_records r \
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
            residents: &[$crate::domain::ResidentId],
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
                "SELECT r.resident_id, k.kek_version, k.wrapped, r.id, r.category, r.version, r.sealed, r.created_at, \
                   r.source_id, r.source_record_id, r.source_basis, r.observed_at \
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
            resident_id: &$crate::domain::ResidentId,
            category: &str,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::RecordRow>> {
            Ok(sqlx::query_as(
                "SELECT id, category, version, sealed, created_at, \
                   source_id, source_record_id, source_basis, observed_at \
                 FROM personal_records \
                 WHERE resident_id = $1 AND category = $2 ORDER BY version DESC LIMIT 100",
            )
            .bind(resident_id)
            .bind(category)
            .fetch_all(&self.pool)
            .await?)
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

        async fn delete_category(&self, resident_id: &$crate::domain::ResidentId, category: &str) -> $crate::storage::StorageResult<u64> {
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

        async fn consent_orphaned_records(
            &self,
            purposes: &[$crate::domain::PurposeId],
            category: &str,
            ended_before: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<Vec<$crate::domain::ResidentId>> {
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
            let rows: Vec<($crate::domain::ResidentId,)> = q.build_query_as().fetch_all(&self.pool).await?;
            let residents: std::collections::BTreeSet<$crate::domain::ResidentId> =
                rows.into_iter().map(|(r,)| r).collect();
            Ok(residents.into_iter().collect())
        }
    }
    };
}
pub(crate) use impl_record_store;
