//! Partners' extracts: request, approval against the partner's ε budget
//! (check and spend in one transaction), build progress, manifest, expiry,
//! and the pages of the cohort an extract is built from.
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::StorageResult;
use crate::domain::category::Category;
use crate::domain::extract::{ExtractKind, ExtractState};
use crate::domain::{ExtractId, PartnerId, Timestamp};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ExtractRow {
    pub id: ExtractId,
    pub partner_id: PartnerId,
    pub purpose: crate::domain::PurposeId,
    pub kind: ExtractKind,
    pub spec: String,
    pub state: ExtractState,
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

/// What [`ExtractStore::extract_approve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApproveOutcome {
    Approved,
    /// Still requested: its ε would take the partner over budget.
    BudgetExhausted,
    /// Not (or no longer) a request.
    NotRequested,
}

/// Partners' extracts: their life cycle, the ε budget, and the cohort an
/// extract is built from.
#[async_trait]
pub trait ExtractStore: Send + Sync {
    async fn insert_extract(&self, e: &ExtractRow) -> StorageResult<()>;
    async fn find_extract(&self, id: &ExtractId) -> StorageResult<Option<ExtractRow>>;
    async fn extracts_of_partner(&self, partner_id: &PartnerId) -> StorageResult<Vec<ExtractRow>>;
    async fn all_extracts(&self, limit: i64) -> StorageResult<Vec<ExtractRow>>;
    /// Approves a requested extract if the partner's ε budget still holds
    /// its ε, atomically: concurrent approvals for one partner are
    /// serialised on the partner's row, so check and spend cannot
    /// interleave (both backends).
    async fn extract_approve(
        &self,
        id: &ExtractId,
        budget: f64,
        now: Timestamp,
    ) -> StorageResult<ApproveOutcome>;
    /// Moves an extract from `from` to `to` (with a reason); false when it
    /// was not in `from`.
    async fn extract_transition(
        &self,
        id: &ExtractId,
        from: ExtractState,
        to: ExtractState,
        reason: Option<&str>,
        now: Timestamp,
    ) -> StorageResult<bool>;
    /// A build's progress; `now` marks it alive.
    async fn extract_progress(
        &self,
        id: &ExtractId,
        done: i64,
        total: i64,
        now: Timestamp,
    ) -> StorageResult<()>;
    /// Extracts still `building` with no progress since `before`: their
    /// build was interrupted (a crash, a kill).
    async fn extracts_interrupted(&self, before: Timestamp) -> StorageResult<Vec<ExtractId>>;
    /// Deletes the messages still held for extracts that failed: a build
    /// failed as interrupted while it was in fact still running can hold a
    /// page's messages after its failure deleted the others. How many.
    async fn extract_orphan_messages_delete(&self) -> StorageResult<u64>;
    async fn extract_ready(
        &self,
        id: &ExtractId,
        manifest: &str,
        jws: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StorageResult<bool>;
    /// ε already spent by a partner (extracts approved with noise).
    async fn epsilon_spent(&self, partner_id: &PartnerId) -> StorageResult<f64>;
    /// Ready or downloaded extracts whose file is past its retention.
    async fn extracts_to_expire(&self, now: Timestamp) -> StorageResult<Vec<ExtractId>>;
    /// One page of an extract's cohort, by resident id after `after`:
    /// active, not restricted, not objecting to the purpose; for a consent
    /// purpose, with a consent given, valid at `now`, under the current
    /// notice (its categories returned, for the caller to check).
    async fn cohort_page(
        &self,
        purpose: &crate::domain::PurposeId,
        consent_based: bool,
        notice_version: &str,
        now: Timestamp,
        after: &str,
        limit: i64,
    ) -> StorageResult<Vec<(crate::domain::ResidentId, Option<Vec<Category>>)>>;
    /// How many candidates `cohort_page` will go through (for progress).
    async fn count_cohort(
        &self,
        purpose: &crate::domain::PurposeId,
        consent_based: bool,
        notice_version: &str,
        now: Timestamp,
    ) -> StorageResult<i64>;
    /// The (masked) noise of an aggregate's cell: the one stored for `cell`
    /// (a keyed digest of its contents) if it was drawn before, else
    /// `drawn`, stored now. Concurrent builders of the same cell get the
    /// same value (the first insert wins).
    async fn stable_noise(&self, cell: &str, drawn: i64, now: Timestamp) -> StorageResult<i64>;
}

/// `impl ExtractStore` for a backend (see `storage::impl_store!`).
macro_rules! impl_extract_store {
    ($store:ty) => {
    #[async_trait::async_trait]
    impl $crate::storage::ExtractStore for $store {
        async fn insert_extract(&self, e: &$crate::storage::ExtractRow) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO extracts (id, partner_id, purpose, kind, spec, state, reason, rows_done, rows_total, epsilon, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, $8, $9, $9)",
            )
            .bind(&e.id)
            .bind(&e.partner_id)
            .bind(&e.purpose)
            .bind(e.kind)
            .bind(&e.spec)
            .bind(e.state)
            .bind(&e.reason)
            .bind(e.epsilon)
            .bind(e.created_at)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn find_extract(&self, id: &$crate::domain::ExtractId) -> $crate::storage::StorageResult<Option<$crate::storage::ExtractRow>> {
            Ok(sqlx::query_as(
                "SELECT id, partner_id, purpose, kind, spec, state, reason, rows_done, rows_total, manifest, manifest_jws, epsilon, created_at, updated_at, expires_at \
                 FROM extracts WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn extracts_of_partner(&self, partner_id: &$crate::domain::PartnerId) -> $crate::storage::StorageResult<Vec<$crate::storage::ExtractRow>> {
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
            id: &$crate::domain::ExtractId,
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
                let (state,): ($crate::domain::extract::ExtractState,) = sqlx::query_as("SELECT state FROM extracts WHERE id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                if state == $crate::domain::extract::ExtractState::Requested {
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
            id: &$crate::domain::ExtractId,
            from: $crate::domain::extract::ExtractState,
            to: $crate::domain::extract::ExtractState,
            reason: Option<&str>,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            let mut tx = self.pool.begin().await?;
            let done = sqlx::query(
                "UPDATE extracts SET state = $3, reason = COALESCE($4, reason), updated_at = $5 WHERE id = $1 AND state = $2",
            )
            .bind(id)
            .bind(from)
            .bind(to)
            .bind(reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // An extract that failed was never delivered: the messages
            // written for its pages go with it.
            if done.rows_affected() == 1 && to == $crate::domain::extract::ExtractState::Failed {
                sqlx::query("DELETE FROM outbox WHERE subject_id = $1 AND state = 'held'")
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(done.rows_affected() == 1)
        }

        async fn extract_orphan_messages_delete(&self) -> $crate::storage::StorageResult<u64> {
            Ok(sqlx::query(
                "DELETE FROM outbox WHERE state = 'held' \
                 AND subject_id IN (SELECT id FROM extracts WHERE state = 'failed')",
            )
            .execute(&self.pool)
            .await?
            .rows_affected())
        }

        async fn extracts_interrupted(
            &self,
            before: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<Vec<$crate::domain::ExtractId>> {
            Ok(sqlx::query_scalar(
                "SELECT id FROM extracts WHERE state = 'building' AND updated_at < $1 ORDER BY id",
            )
            .bind(before)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn extract_progress(&self, id: &$crate::domain::ExtractId, done: i64, total: i64, now: $crate::domain::Timestamp) -> $crate::storage::StorageResult<()> {
            sqlx::query("UPDATE extracts SET rows_done = $2, rows_total = $3, updated_at = $4 WHERE id = $1")
                .bind(id)
                .bind(done)
                .bind(total)
                .bind(now)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn extract_ready(
            &self,
            id: &$crate::domain::ExtractId,
            manifest: &str,
            jws: &str,
            expires_at: $crate::domain::Timestamp,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            // The file becomes available and the residents' messages due
            // in one transaction: none before, none lost.
            let mut tx = self.pool.begin().await?;
            let ready = sqlx::query(
                "UPDATE extracts SET state = 'ready', manifest = $2, manifest_jws = $3, expires_at = $4, updated_at = $5 \
                 WHERE id = $1 AND state = 'building'",
            )
            .bind(id)
            .bind(manifest)
            .bind(jws)
            .bind(expires_at)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if ready.rows_affected() == 1 {
                sqlx::query(
                    "UPDATE outbox SET state = 'pending', next_attempt_at = $2 WHERE subject_id = $1 AND state = 'held'",
                )
                .bind(id.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(ready.rows_affected() == 1)
        }

        async fn epsilon_spent(&self, partner_id: &$crate::domain::PartnerId) -> $crate::storage::StorageResult<f64> {
            let (sum,): (Option<f64>,) = sqlx::query_as(
                "SELECT SUM(epsilon) FROM extracts WHERE partner_id = $1 AND epsilon IS NOT NULL \
                 AND state IN ('approved', 'building', 'ready', 'downloaded', 'expired')",
            )
            .bind(partner_id)
            .fetch_one(&self.pool)
            .await?;
            Ok(sum.unwrap_or(0.0))
        }

        async fn extracts_to_expire(&self, now: $crate::domain::Timestamp) -> $crate::storage::StorageResult<Vec<$crate::domain::ExtractId>> {
            let rows: Vec<($crate::domain::ExtractId,)> = sqlx::query_as(
                "SELECT id FROM extracts WHERE state IN ('ready', 'downloaded') AND expires_at <= $1",
            )
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(|(i,)| i).collect())
        }

        async fn cohort_page(
            &self,
            purpose: &$crate::domain::PurposeId,
            consent_based: bool,
            notice_version: &str,
            now: $crate::domain::Timestamp,
            after: &str,
            limit: i64,
        ) -> $crate::storage::StorageResult<Vec<($crate::domain::ResidentId, Option<Vec<$crate::domain::category::Category>>)>> {
            if consent_based {
                let rows: Vec<($crate::domain::ResidentId, $crate::storage::columns::CategoryList)> = sqlx::query_as(
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
                .await?;
                Ok(rows.into_iter().map(|(r, c)| (r, Some(c.into()))).collect())
            } else {
                let rows: Vec<($crate::domain::ResidentId,)> = sqlx::query_as(
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

        async fn stable_noise(
            &self,
            cell: &str,
            drawn: i64,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<i64> {
            // One statement: the first insert wins, and a later one gets
            // the stored value back. The date only, not the build's
            // second (which would tie a row to its extract).
            Ok(sqlx::query_scalar(
                "INSERT INTO dp_noise (cell, noise, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (cell) DO UPDATE SET noise = dp_noise.noise RETURNING noise",
            )
            .bind(cell)
            .bind(drawn)
            .bind(now - now.rem_euclid(86_400))
            .fetch_one(&self.pool)
            .await?)
        }

        async fn count_cohort(
            &self,
            purpose: &$crate::domain::PurposeId,
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
    }
    };
}
pub(crate) use impl_extract_store;
