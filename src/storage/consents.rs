//! Consents: the current state of each (resident, purpose), the
//! append-only history of its events with their receipts, and the
//! compare-and-set that lets only one of two concurrent decisions win.
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::StorageResult;
use super::columns::CategoryList;
use crate::domain::category::Category;
use crate::domain::consent::ConsentState;
use crate::domain::{ConsentId, Role};

/// The columns of a consent the access decision reads.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ConsentForDecision {
    pub id: ConsentId,
    /// Given, refused or withdrawn.
    pub state: ConsentState,
    #[sqlx(try_from = "CategoryList")]
    pub categories: Vec<Category>,
    pub valid_until: Option<i64>,
    pub notice_version: String,
}

/// The current recorded state of one (resident, purpose) consent.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ConsentRow {
    pub id: ConsentId,
    pub resident_id: crate::domain::ResidentId,
    pub purpose: crate::domain::PurposeId,
    /// Given, refused or withdrawn (expiry is derived from the clock).
    pub state: ConsentState,
    #[sqlx(try_from = "CategoryList")]
    pub categories: Vec<Category>,
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
    pub consent_id: ConsentId,
    pub purpose: crate::domain::PurposeId,
    pub state: ConsentState,
    #[sqlx(try_from = "CategoryList")]
    pub categories: Vec<Category>,
    pub valid_until: Option<i64>,
    pub notice_version: String,
    pub actor_id: String,
    pub actor_role: Role,
    pub structure_id: Option<String>,
    pub audit_index: i64,
    pub receipt: String,
    pub created_at: i64,
}

/// Consents: the current state of each (resident, purpose) and its
/// append-only history of events.
#[async_trait]
pub trait ConsentStore: Send + Sync {
    /// The consent of a resident for a purpose: one indexed lookup.
    async fn find_consent(
        &self,
        resident_id: &crate::domain::ResidentId,
        purpose: &crate::domain::PurposeId,
    ) -> StorageResult<Option<ConsentRow>>;
    /// What the access decision needs of a (resident, purpose) consent, and
    /// nothing more: it is asked on every consent-based read.
    async fn consent_for_decision(
        &self,
        resident_id: &crate::domain::ResidentId,
        purpose: &crate::domain::PurposeId,
    ) -> StorageResult<Option<ConsentForDecision>>;
    async fn find_consent_by_id(&self, id: &ConsentId) -> StorageResult<Option<ConsentRow>>;
    async fn consents_of(
        &self,
        resident_id: &crate::domain::ResidentId,
    ) -> StorageResult<Vec<ConsentRow>>;
    /// A consent's history, oldest first.
    async fn consent_events(&self, consent_id: &ConsentId) -> StorageResult<Vec<ConsentEventRow>>;
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
}

/// `impl ConsentStore` for a backend (see `storage::impl_store!`).
macro_rules! impl_consent_store {
    ($store:ty) => {
    #[async_trait::async_trait]
    impl $crate::storage::ConsentStore for $store {
        async fn find_consent(
            &self,
            resident_id: &$crate::domain::ResidentId,
            purpose: &$crate::domain::PurposeId,
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
            resident_id: &$crate::domain::ResidentId,
            purpose: &$crate::domain::PurposeId,
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
            id: &$crate::domain::ConsentId,
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
            resident_id: &$crate::domain::ResidentId,
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
            consent_id: &$crate::domain::ConsentId,
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
                    .bind(c.state)
                    .bind($crate::storage::columns::joined(&c.categories))
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
                    .bind(c.state)
                    .bind($crate::storage::columns::joined(&c.categories))
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
            .bind(e.state)
            .bind($crate::storage::columns::joined(&e.categories))
            .bind(e.valid_until)
            .bind(&e.notice_version)
            .bind(&e.actor_id)
            .bind(e.actor_role)
            .bind(&e.structure_id)
            .bind(e.audit_index)
            .bind(&e.receipt)
            .bind(e.created_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }
    }
    };
}
pub(crate) use impl_consent_store;
