//! The synthetic territory of `coffre seed`: residents with their data
//! keys, records, consents and consent events, written a batch per
//! transaction in multi-row statements.
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::{ConsentEventRow, ConsentRow, DataKeyRow, RecordRow, StorageResult};
use crate::domain::Timestamp;

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

/// The synthetic territory of `coffre seed`.
#[async_trait]
pub trait SeedStore: Send + Sync {
    /// Inserts one seed batch in one transaction, in multi-row statements.
    async fn seed_batch(&self, batch: &SeedBatch) -> StorageResult<()>;
}

/// `impl SeedStore` for a backend (see `storage::impl_store!`).
macro_rules! impl_seed_store {
    ($store:ty, $db:ty) => {
    #[async_trait::async_trait]
    impl $crate::storage::SeedStore for $store {
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
                        .push_bind(c.state)
                        .push_bind($crate::storage::columns::joined(&c.categories))
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
                        .push_bind(e.state)
                        .push_bind($crate::storage::columns::joined(&e.categories))
                        .push_bind(e.valid_until)
                        .push_bind(e.notice_version.clone())
                        .push_bind(e.actor_id.clone())
                        .push_bind(e.actor_role)
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
    }
    };
}
pub(crate) use impl_seed_store;
