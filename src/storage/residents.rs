//! Residents: registration (by the directory, the seed or a first login
//! through a provider account) and erasure. The erasure is the one write
//! that reaches into every other aggregate (data key, records, consents,
//! mandates, sessions, drafts, logins, the art. 19 notices), in one
//! transaction, so it lives with the resident.
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::{NotificationRow, StorageResult};
use crate::domain::Timestamp;

/// Residents: their registration, the provider accounts they log in
/// with, and their erasure (which reaches into every other aggregate).
#[async_trait]
pub trait ResidentStore: Send + Sync {
    /// Active residents (erased ones are not counted).
    async fn count_residents(&self) -> StorageResult<i64>;
    /// Whether any resident exists, whatever the status: one index probe,
    /// where counting would read every resident (start-up asks this).
    async fn has_residents(&self) -> StorageResult<bool>;
    async fn insert_resident(
        &self,
        id: &crate::domain::ResidentId,
        now: Timestamp,
    ) -> StorageResult<()>;
    async fn resident_exists(&self, id: &crate::domain::ResidentId) -> StorageResult<bool>;
    /// The resident whose provider account has this subject digest, created
    /// with `new_resident_id` on the first login. Returns (id, created).
    async fn resident_for_login(
        &self,
        subject_digest: &str,
        new_resident_id: &crate::domain::ResidentId,
        now: Timestamp,
    ) -> StorageResult<(crate::domain::ResidentId, bool)>;
    /// Erasure: deletes the data key and every record, withdraws the given
    /// consents, ends the mandates, sessions, drafts and provider logins,
    /// and marks the resident erased, in one transaction. `false` if unknown
    /// or already erased. With the art. 19 notices to the recipients, in
    /// the same transaction.
    async fn erase_resident(
        &self,
        resident_id: &crate::domain::ResidentId,
        now: Timestamp,
        notices: &[NotificationRow],
    ) -> StorageResult<bool>;
}

/// `impl ResidentStore` for a backend (see `storage::impl_store!`).
macro_rules! impl_resident_store {
    ($store:ty) => {
    #[async_trait::async_trait]
    impl $crate::storage::ResidentStore for $store {
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

        async fn insert_resident(
            &self,
            id: &$crate::domain::ResidentId,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query("INSERT INTO residents (id, status, created_at) VALUES ($1, 'active', $2)")
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn resident_exists(&self, id: &$crate::domain::ResidentId) -> $crate::storage::StorageResult<bool> {
            let row: Option<(String,)> =
                sqlx::query_as("SELECT id FROM residents WHERE id = $1 AND status = 'active'")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            Ok(row.is_some())
        }

        async fn resident_for_login(
            &self,
            subject_digest: &str,
            new_resident_id: &$crate::domain::ResidentId,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<($crate::domain::ResidentId, bool)> {
            // Two tries: a concurrent first login of the same account may win
            // the insert, and then this one finds its resident.
            for _ in 0..2 {
                let found: Option<($crate::domain::ResidentId,)> = sqlx::query_as(
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
                    return Ok((new_resident_id.clone(), true));
                }
                tx.rollback().await?;
            }
            Err($crate::storage::StorageError::Conflict(
                "resident login raced twice".into(),
            ))
        }

        async fn erase_resident(
            &self,
            resident_id: &$crate::domain::ResidentId,
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
                // No source names an erased resident any more.
                "DELETE FROM source_links WHERE resident_id = $1",
                "DELETE FROM source_link_codes WHERE resident_id = $1",
                "DELETE FROM source_deposits WHERE resident_id = $1",
                "DELETE FROM resident_pivots WHERE resident_id = $1",
                // Nobody to tell any more.
                "DELETE FROM outbox WHERE resident_id = $1",
                "DELETE FROM notice_preferences WHERE resident_id = $1",
            ] {
                sqlx::query(sql).bind(resident_id).execute(&mut *tx).await?;
            }
            Self::insert_notifications_on(&mut tx, notices).await?;
            tx.commit().await?;
            self.scrub_deleted().await;
            Ok(true)
        }
    }
    };
}
pub(crate) use impl_resident_store;
