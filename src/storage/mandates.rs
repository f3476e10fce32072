//! Mandates: the drafts an aidant prepares, the mandates a resident
//! confirms with one authorisation per démarche (at most one live per
//! resident, structure and démarche), their revocation, and the purge of
//! ended ones.
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::StorageResult;
use super::columns::DemarcheList;
use crate::domain::{AgentId, Demarche, DraftId, MandateId, StructureId, Timestamp};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct MandateRow {
    pub id: MandateId,
    pub resident_id: crate::domain::ResidentId,
    pub structure_id: StructureId,
    pub aidant_id: AgentId,
    pub duration_days: i64,
    pub template_version: String,
    pub renews: Option<MandateId>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// One démarche of one mandate.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AuthorisationRow {
    pub mandate_id: MandateId,
    pub resident_id: crate::domain::ResidentId,
    pub structure_id: StructureId,
    pub demarche: Demarche,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct MandateDraftRow {
    pub id: DraftId,
    pub aidant_id: AgentId,
    pub structure_id: StructureId,
    #[sqlx(try_from = "DemarcheList")]
    pub demarches: Vec<Demarche>,
    pub duration_days: i64,
    pub renews: Option<MandateId>,
    pub resident_id: Option<crate::domain::ResidentId>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Mandates, their authorisations (one per démarche) and the drafts an
/// aidant prepares before the resident confirms.
#[async_trait]
pub trait MandateStore: Send + Sync {
    async fn insert_mandate_draft(&self, d: &MandateDraftRow) -> StorageResult<()>;
    async fn find_mandate_draft(&self, id: &DraftId) -> StorageResult<Option<MandateDraftRow>>;
    async fn set_draft_resident(
        &self,
        id: &DraftId,
        resident_id: &crate::domain::ResidentId,
    ) -> StorageResult<()>;
    async fn delete_mandate_draft(&self, id: &DraftId) -> StorageResult<()>;
    /// Creates a mandate with one authorisation per démarche, revoking (as
    /// `superseded`) the live ones of the same (resident, structure,
    /// démarche), in one transaction.
    async fn create_mandate(
        &self,
        m: &MandateRow,
        demarches: &[Demarche],
        now: Timestamp,
        effects: &crate::storage::MandateEffects,
    ) -> StorageResult<()>;
    /// A mandate confirmed from its draft, in one transaction: the draft is
    /// consumed (`NotFound` when it is gone: a confirmation runs once), the
    /// mandate created as [`MandateStore::create_mandate`] does, and when
    /// it renews another, the old one's remaining authorisations end
    /// (`superseded`).
    async fn create_mandate_from_draft(
        &self,
        m: &MandateRow,
        demarches: &[Demarche],
        draft_id: &DraftId,
        now: Timestamp,
        effects: &crate::storage::MandateEffects,
    ) -> StorageResult<()>;
    async fn find_mandate(&self, id: &MandateId) -> StorageResult<Option<MandateRow>>;
    async fn mandate_authorisations(
        &self,
        mandate_id: &MandateId,
    ) -> StorageResult<Vec<AuthorisationRow>>;
    async fn mandates_of_resident(
        &self,
        resident_id: &crate::domain::ResidentId,
    ) -> StorageResult<Vec<MandateRow>>;
    /// Revokes the live authorisations of a mandate (one démarche, or all);
    /// returns how many. `notices` are written with it when it revoked
    /// anything, in the same transaction.
    async fn revoke_authorisations(
        &self,
        mandate_id: &MandateId,
        demarche: Option<Demarche>,
        by: &str,
        now: Timestamp,
        notices: &[crate::storage::OutboxMessage],
    ) -> StorageResult<u64>;
    /// The live, unexpired authorisation of (resident, structure, démarche).
    async fn live_authorisation(
        &self,
        resident_id: &crate::domain::ResidentId,
        structure_id: &StructureId,
        demarche: Demarche,
        now: Timestamp,
    ) -> StorageResult<Option<AuthorisationRow>>;
    /// Live, unexpired authorisations of a structure expiring before
    /// `until` (all of them with `until` = i64::MAX).
    async fn structure_authorisations(
        &self,
        structure_id: &StructureId,
        now: Timestamp,
        until: Timestamp,
    ) -> StorageResult<Vec<AuthorisationRow>>;
    /// Mandates whose every authorisation ended (expired or revoked) at or
    /// before `cutoff`, with their authorisations.
    /// The structure's authorisations that ended (revoked or expired) by
    /// `now`, the most recently ended first, at most `limit`.
    async fn structure_ended_authorisations(
        &self,
        structure_id: &StructureId,
        now: Timestamp,
        limit: i64,
    ) -> StorageResult<Vec<AuthorisationRow>>;
    async fn purge_ended_mandates(&self, cutoff: Timestamp) -> StorageResult<u64>;
}

/// `impl MandateStore` for a backend (see `storage::impl_store!`).
macro_rules! impl_mandate_store {
    ($store:ty, $db:ty, $for_share:literal) => {
    impl $store {
        /// The statements of [`MandateStore::create_mandate`], inside the
        /// caller's transaction.
        async fn create_mandate_on(
            tx: &mut sqlx::Transaction<'_, $db>,
            m: &$crate::storage::MandateRow,
            demarches: &[$crate::domain::Demarche],
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            for d in demarches {
                sqlx::query(
                    "UPDATE mandate_authorisations SET revoked_at = $4, revoked_by = 'superseded' \
                     WHERE resident_id = $1 AND structure_id = $2 AND demarche = $3 AND revoked_at IS NULL",
                )
                .bind(&m.resident_id)
                .bind(&m.structure_id)
                .bind(d)
                .bind(now)
                .execute(&mut **tx)
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
            .execute(&mut **tx)
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
                .execute(&mut **tx)
                .await?;
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl $crate::storage::MandateStore for $store {
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
            .bind($crate::storage::columns::joined(&d.demarches))
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
            id: &$crate::domain::DraftId,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::MandateDraftRow>> {
            Ok(sqlx::query_as(
                "SELECT id, aidant_id, structure_id, demarches, duration_days, renews, resident_id, created_at, expires_at \
                 FROM mandate_drafts WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn set_draft_resident(&self, id: &$crate::domain::DraftId, resident_id: &$crate::domain::ResidentId) -> $crate::storage::StorageResult<()> {
            sqlx::query("UPDATE mandate_drafts SET resident_id = $2 WHERE id = $1")
                .bind(id)
                .bind(resident_id)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn delete_mandate_draft(&self, id: &$crate::domain::DraftId) -> $crate::storage::StorageResult<()> {
            sqlx::query("DELETE FROM mandate_drafts WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn create_mandate(
            &self,
            m: &$crate::storage::MandateRow,
            demarches: &[$crate::domain::Demarche],
            now: $crate::domain::Timestamp,
            effects: &$crate::storage::MandateEffects,
        ) -> $crate::storage::StorageResult<()> {
            let mut tx = self.pool.begin().await?;
            Self::create_mandate_on(&mut tx, m, demarches, now).await?;
            Self::insert_outbox_on(&mut tx, &effects.notices).await?;
            Self::insert_alerts_on(&mut tx, effects).await?;
            tx.commit().await?;
            Ok(())
        }

        async fn create_mandate_from_draft(
            &self,
            m: &$crate::storage::MandateRow,
            demarches: &[$crate::domain::Demarche],
            draft_id: &$crate::domain::DraftId,
            now: $crate::domain::Timestamp,
            effects: &$crate::storage::MandateEffects,
        ) -> $crate::storage::StorageResult<()> {
            let mut tx = self.pool.begin().await?;
            // The draft is taken first: of two confirmations of one draft,
            // the second finds nothing and changes nothing.
            let taken = sqlx::query("DELETE FROM mandate_drafts WHERE id = $1")
                .bind(draft_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if taken == 0 {
                return Err($crate::storage::StorageError::NotFound);
            }
            Self::create_mandate_on(&mut tx, m, demarches, now).await?;
            if let Some(old) = &m.renews {
                // The renewed mandate's remaining démarches end with the new one.
                sqlx::query(
                    "UPDATE mandate_authorisations SET revoked_at = $2, revoked_by = 'superseded' \
                     WHERE mandate_id = $1 AND revoked_at IS NULL",
                )
                .bind(old)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            Self::insert_outbox_on(&mut tx, &effects.notices).await?;
            Self::insert_alerts_on(&mut tx, effects).await?;
            tx.commit().await?;
            Ok(())
        }

        async fn find_mandate(
            &self,
            id: &$crate::domain::MandateId,
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
            mandate_id: &$crate::domain::MandateId,
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
            resident_id: &$crate::domain::ResidentId,
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
            mandate_id: &$crate::domain::MandateId,
            demarche: Option<$crate::domain::Demarche>,
            by: &str,
            now: $crate::domain::Timestamp,
            notices: &[$crate::storage::OutboxMessage],
        ) -> $crate::storage::StorageResult<u64> {
            let mut tx = self.pool.begin().await?;
            let done = sqlx::query(
                "UPDATE mandate_authorisations SET revoked_at = $3, revoked_by = $4 \
                 WHERE mandate_id = $1 AND ($2 IS NULL OR demarche = $2) AND revoked_at IS NULL",
            )
            .bind(mandate_id)
            .bind(demarche)
            .bind(now)
            .bind(by)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if done > 0 {
                Self::insert_outbox_on(&mut tx, notices).await?;
            }
            tx.commit().await?;
            Ok(done)
        }

        async fn live_authorisation(
            &self,
            resident_id: &$crate::domain::ResidentId,
            structure_id: &$crate::domain::StructureId,
            demarche: $crate::domain::Demarche,
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
            structure_id: &$crate::domain::StructureId,
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

        async fn structure_ended_authorisations(
            &self,
            structure_id: &$crate::domain::StructureId,
            now: $crate::domain::Timestamp,
            limit: i64,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::AuthorisationRow>> {
            Ok(sqlx::query_as(
                "SELECT mandate_id, resident_id, structure_id, demarche, expires_at, revoked_at, revoked_by \
                 FROM mandate_authorisations \
                 WHERE structure_id = $1 AND COALESCE(revoked_at, expires_at) <= $2 \
                 ORDER BY COALESCE(revoked_at, expires_at) DESC, mandate_id, demarche LIMIT $3",
            )
            .bind(structure_id)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
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
    }
    };
}
pub(crate) use impl_mandate_store;
