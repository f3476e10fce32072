//! Alerts to référents (BRIEF C13): a structure's rules and the alerts
//! raised about its aidants, until reviewed.
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::StorageResult;
use crate::domain::alert::AlertKind;
use crate::domain::{AgentId, StructureId, Timestamp};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AlertRow {
    pub id: String,
    pub structure_id: StructureId,
    pub aidant_id: AgentId,
    pub kind: AlertKind,
    pub subject: String,
    pub created_at: i64,
    pub reviewed_at: Option<i64>,
    pub reviewed_by: Option<String>,
}

/// A structure's rules as stored: (hours, burst_max, burst_minutes).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AlertRulesRow {
    pub hours: String,
    pub burst_max: i64,
    pub burst_minutes: i64,
}

#[async_trait]
pub trait AlertStore: Send + Sync {
    async fn alert_rules(&self, structure_id: &StructureId)
    -> StorageResult<Option<AlertRulesRow>>;
    async fn set_alert_rules(
        &self,
        structure_id: &StructureId,
        rules: &AlertRulesRow,
        now: Timestamp,
    ) -> StorageResult<()>;
    /// Mandates `aidant_id` created for `structure_id` since `since`
    /// (inclusive).
    async fn aidant_mandates_since(
        &self,
        aidant_id: &AgentId,
        structure_id: &StructureId,
        since: Timestamp,
    ) -> StorageResult<i64>;
    async fn insert_alert(&self, a: &AlertRow) -> StorageResult<()>;
    /// The structure's alerts, newest first.
    async fn structure_alerts(
        &self,
        structure_id: &StructureId,
        limit: i64,
    ) -> StorageResult<Vec<AlertRow>>;
    /// Marks an alert of `structure_id` reviewed, once; false when there is
    /// no such unreviewed alert of that structure.
    async fn review_alert(
        &self,
        id: &str,
        structure_id: &StructureId,
        by: &AgentId,
        now: Timestamp,
    ) -> StorageResult<bool>;
}

macro_rules! impl_alert_store {
    ($store:ty) => {
    #[async_trait::async_trait]
    impl $crate::storage::AlertStore for $store {
        async fn alert_rules(
            &self,
            structure_id: &$crate::domain::StructureId,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::AlertRulesRow>> {
            Ok(sqlx::query_as(
                "SELECT hours, CAST(burst_max AS BIGINT) AS burst_max, CAST(burst_minutes AS BIGINT) AS burst_minutes \
                 FROM structure_alert_rules WHERE structure_id = $1",
            )
            .bind(structure_id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn set_alert_rules(
            &self,
            structure_id: &$crate::domain::StructureId,
            rules: &$crate::storage::AlertRulesRow,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO structure_alert_rules (structure_id, hours, burst_max, burst_minutes, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (structure_id) DO UPDATE SET hours = $2, burst_max = $3, burst_minutes = $4, updated_at = $5",
            )
            .bind(structure_id)
            .bind(&rules.hours)
            .bind(rules.burst_max)
            .bind(rules.burst_minutes)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn aidant_mandates_since(
            &self,
            aidant_id: &$crate::domain::AgentId,
            structure_id: &$crate::domain::StructureId,
            since: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<i64> {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM mandates WHERE aidant_id = $1 AND structure_id = $2 AND created_at >= $3",
            )
            .bind(aidant_id)
            .bind(structure_id)
            .bind(since)
            .fetch_one(&self.pool)
            .await?;
            Ok(n)
        }

        async fn insert_alert(
            &self,
            a: &$crate::storage::AlertRow,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO referent_alerts (id, structure_id, aidant_id, kind, subject, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&a.id)
            .bind(&a.structure_id)
            .bind(&a.aidant_id)
            .bind(a.kind)
            .bind(&a.subject)
            .bind(a.created_at)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn structure_alerts(
            &self,
            structure_id: &$crate::domain::StructureId,
            limit: i64,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::AlertRow>> {
            Ok(sqlx::query_as(
                "SELECT id, structure_id, aidant_id, kind, subject, created_at, reviewed_at, reviewed_by \
                 FROM referent_alerts WHERE structure_id = $1 ORDER BY created_at DESC, id LIMIT $2",
            )
            .bind(structure_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn review_alert(
            &self,
            id: &str,
            structure_id: &$crate::domain::StructureId,
            by: &$crate::domain::AgentId,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            Ok(sqlx::query(
                "UPDATE referent_alerts SET reviewed_at = $4, reviewed_by = $3 \
                 WHERE id = $1 AND structure_id = $2 AND reviewed_at IS NULL",
            )
            .bind(id)
            .bind(structure_id)
            .bind(by)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected()
                == 1)
        }
    }
    };
}
pub(crate) use impl_alert_store;
