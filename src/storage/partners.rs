//! Partners: their registration and activity, the residents a partner may
//! be shown for a purpose, and the partner-scoped pseudonyms it knows them
//! by. (The client assertions' jtis are with the sessions.)
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::StorageResult;
use crate::domain::{PartnerId, Pseudonym, Timestamp};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PartnerRow {
    pub id: PartnerId,
    pub name: String,
    pub client_id: String,
    pub client_secret_hash: String,
    pub age_recipient: Option<String>,
    pub active: bool,
    /// Public keys (JWKS JSON) for `private_key_jwt`, when registered.
    pub client_jwks: Option<String>,
}

/// Partners (the recipients), the residents they may be shown, and the
/// pseudonyms they know residents by.
#[async_trait]
pub trait PartnerStore: Send + Sync {
    async fn insert_partner(&self, p: &PartnerRow, now: Timestamp) -> StorageResult<()>;
    async fn find_partner_by_client_id(&self, client_id: &str)
    -> StorageResult<Option<PartnerRow>>;
    async fn find_partner(&self, id: &PartnerId) -> StorageResult<Option<PartnerRow>>;
    /// Activates or deactivates a partner; `false` if there is no such partner.
    async fn set_partner_active(&self, id: &PartnerId, active: bool) -> StorageResult<bool>;
    /// Residents a partner may be shown for a purpose, in a stable order:
    /// those with a given, unexpired consent under the current notice when
    /// the purpose rests on consent, every active resident otherwise.
    async fn reachable_residents(
        &self,
        purpose: &crate::domain::PurposeId,
        consent_based: bool,
        notice_version: &str,
        now: Timestamp,
        offset: i64,
        limit: i64,
    ) -> StorageResult<Vec<String>>;
    async fn remember_pseudonyms(
        &self,
        partner_id: &PartnerId,
        pairs: &[(Pseudonym, String)],
    ) -> StorageResult<()>;
    async fn resolve_pseudonym(
        &self,
        partner_id: &PartnerId,
        pseudonym: &Pseudonym,
    ) -> StorageResult<Option<crate::domain::ResidentId>>;
}

/// `impl PartnerStore` for a backend (see `storage::impl_store!`).
macro_rules! impl_partner_store {
    ($store:ty, $db:ty) => {
    #[async_trait::async_trait]
    impl $crate::storage::PartnerStore for $store {
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
            id: &$crate::domain::PartnerId,
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
            id: &$crate::domain::PartnerId,
            active: bool,
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query("UPDATE partners SET active = $2 WHERE id = $1")
                .bind(id)
                .bind(active)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn reachable_residents(
            &self,
            purpose: &$crate::domain::PurposeId,
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
            partner_id: &$crate::domain::PartnerId,
            pairs: &[($crate::domain::Pseudonym, String)],
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
            partner_id: &$crate::domain::PartnerId,
            pseudonym: &$crate::domain::Pseudonym,
        ) -> $crate::storage::StorageResult<Option<$crate::domain::ResidentId>> {
            let row: Option<($crate::domain::ResidentId,)> = sqlx::query_as(
                "SELECT resident_id FROM partner_pseudonyms WHERE partner_id = $1 AND pseudonym = $2",
            )
            .bind(partner_id)
            .bind(pseudonym)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map(|(r,)| r))
        }
    }
    };
}
pub(crate) use impl_partner_store;
