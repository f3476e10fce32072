//! The log's witnesses (C2SP tlog-witness): what each one knows and last
//! cosigned, its last failure, and the cosignature lines served with the
//! checkpoints they sign.
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::StorageResult;
use crate::domain::Timestamp;

/// One witness's state, as `/journal` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct WitnessRow {
    pub name: String,
    /// The tree size it knows (the `old` of the next request).
    pub size: i64,
    /// The largest checkpoint it cosigned.
    pub cosigned_size: i64,
    pub last_ok_at: Option<i64>,
    /// A stable code, never a witness's reply text.
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
}

#[async_trait]
pub trait WitnessStore: Send + Sync {
    async fn witness(&self, name: &str) -> StorageResult<Option<WitnessRow>>;
    async fn witnesses(&self) -> StorageResult<Vec<WitnessRow>>;
    /// The witness cosigned the checkpoint of `size`: its line is kept and
    /// its state moves there, in one transaction.
    async fn witness_cosigned(
        &self,
        name: &str,
        size: i64,
        line: &str,
        now: Timestamp,
    ) -> StorageResult<()>;
    async fn witness_failed(&self, name: &str, code: &str, now: Timestamp) -> StorageResult<()>;
    /// The cosignature lines of the checkpoint of `tree_size`, by witness.
    async fn cosignatures(&self, tree_size: i64) -> StorageResult<Vec<String>>;
    /// The largest signed checkpoint that some witness cosigned.
    async fn latest_cosigned_checkpoint(&self) -> StorageResult<Option<super::CheckpointRow>>;
}

macro_rules! impl_witness_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::WitnessStore for $store {
            async fn witness(
                &self,
                name: &str,
            ) -> $crate::storage::StorageResult<Option<$crate::storage::WitnessRow>> {
                Ok(sqlx::query_as(
                    "SELECT name, size, cosigned_size, last_ok_at, last_error, last_error_at \
                     FROM audit_witnesses WHERE name = $1",
                )
                .bind(name)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn witnesses(
                &self,
            ) -> $crate::storage::StorageResult<Vec<$crate::storage::WitnessRow>> {
                Ok(sqlx::query_as(
                    "SELECT name, size, cosigned_size, last_ok_at, last_error, last_error_at \
                     FROM audit_witnesses ORDER BY name",
                )
                .fetch_all(&self.pool)
                .await?)
            }

            async fn witness_cosigned(
                &self,
                name: &str,
                size: i64,
                line: &str,
                now: $crate::domain::Timestamp,
            ) -> $crate::storage::StorageResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO audit_cosignatures (tree_size, witness, line, cosigned_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (tree_size, witness) DO NOTHING",
                )
                .bind(size)
                .bind(name)
                .bind(line)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    // Only forward: a slower process with an older
                    // checkpoint never moves the state back.
                    "INSERT INTO audit_witnesses (name, size, cosigned_size, last_ok_at) VALUES ($1, $2, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET \
                       size = CASE WHEN excluded.size > audit_witnesses.size THEN excluded.size ELSE audit_witnesses.size END, \
                       cosigned_size = CASE WHEN excluded.cosigned_size > audit_witnesses.cosigned_size \
                         THEN excluded.cosigned_size ELSE audit_witnesses.cosigned_size END, \
                       last_ok_at = excluded.last_ok_at, last_error = NULL, last_error_at = NULL",
                )
                .bind(name)
                .bind(size)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn witness_failed(
                &self,
                name: &str,
                code: &str,
                now: $crate::domain::Timestamp,
            ) -> $crate::storage::StorageResult<()> {
                sqlx::query(
                    "INSERT INTO audit_witnesses (name, last_error, last_error_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET last_error = excluded.last_error, \
                       last_error_at = excluded.last_error_at",
                )
                .bind(name)
                .bind(code)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn cosignatures(
                &self,
                tree_size: i64,
            ) -> $crate::storage::StorageResult<Vec<String>> {
                Ok(sqlx::query_scalar(
                    "SELECT line FROM audit_cosignatures WHERE tree_size = $1 ORDER BY witness",
                )
                .bind(tree_size)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn latest_cosigned_checkpoint(
                &self,
            ) -> $crate::storage::StorageResult<Option<$crate::storage::CheckpointRow>> {
                Ok(sqlx::query_as(
                    "SELECT c.tree_size, c.root, c.note, c.created_at FROM audit_checkpoints c \
                     WHERE c.tree_size = (SELECT MAX(tree_size) FROM audit_cosignatures)",
                )
                .fetch_optional(&self.pool)
                .await?)
            }
        }
    };
}
pub(crate) use impl_witness_store;
