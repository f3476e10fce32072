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

impl AlertRow {
    /// A new, unreviewed alert about `aidant`'s act `subject`.
    pub fn new(
        structure_id: &StructureId,
        aidant_id: &AgentId,
        kind: AlertKind,
        subject: String,
        now: Timestamp,
    ) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            structure_id: structure_id.clone(),
            aidant_id: aidant_id.clone(),
            kind,
            subject,
            created_at: now,
            reviewed_at: None,
            reviewed_by: None,
        }
    }
}

/// The burst rule, checked inside a mandate's transaction: `alert` is
/// written when the aidant created more than `max` mandates since `since`
/// and no burst alert about them was raised since.
#[derive(Clone, Debug)]
pub struct BurstCheck {
    pub max: i64,
    pub since: Timestamp,
    pub alert: AlertRow,
}

/// What a mandate's creation writes in its own transaction: the messages
/// to the resident (the outbox) and the alerts to the référent.
#[derive(Clone, Debug, Default)]
pub struct MandateEffects {
    pub notices: Vec<crate::storage::OutboxMessage>,
    /// Alerts decided before the transaction (out of hours).
    pub alerts: Vec<AlertRow>,
    pub burst: Option<BurstCheck>,
}

/// A structure's rules as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AlertRulesRow {
    pub hours: String,
    pub burst_max: i64,
    pub burst_minutes: i64,
    /// The structure's functional mailbox for alerts (none: the page only).
    pub alert_email: Option<String>,
    /// The communes it serves (empty: no commune check).
    pub communes: crate::domain::alert::Communes,
}

/// An alert a delivery worker claimed for its e-mail to the structure.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AlertMailClaim {
    pub id: String,
    /// The claim's token: only it settles the e-mail.
    pub mail_claimed_by: String,
    pub structure_id: StructureId,
    pub kind: AlertKind,
    pub created_at: i64,
    pub mail_attempts: i64,
}

#[async_trait]
pub trait AlertStore: Send + Sync {
    async fn alert_rules(&self, structure_id: &StructureId)
    -> StorageResult<Option<AlertRulesRow>>;
    /// Sets the rules; `alert_email` and `communes` only when `set_email`
    /// and `set_communes` (else what is stored stays), in one statement, so
    /// two référents changing different fields at once lose neither.
    async fn set_alert_rules(
        &self,
        structure_id: &StructureId,
        rules: &AlertRulesRow,
        set_email: bool,
        set_communes: bool,
        now: Timestamp,
    ) -> StorageResult<()>;
    /// One alert of `structure_id`.
    async fn find_alert(
        &self,
        id: &str,
        structure_id: &StructureId,
    ) -> StorageResult<Option<AlertRow>>;
    async fn insert_alert(&self, a: &AlertRow) -> StorageResult<()>;
    /// The structure's alerts: every unreviewed one first, newest first.
    async fn structure_alerts(
        &self,
        structure_id: &StructureId,
        limit: i64,
    ) -> StorageResult<Vec<AlertRow>>;
    /// Deletes alerts reviewed before `before`; returns how many.
    async fn purge_reviewed_alerts(&self, before: Timestamp) -> StorageResult<u64>;
    /// Marks an alert of `structure_id` reviewed, once; false when there is
    /// no such unreviewed alert of that structure.
    async fn review_alert(
        &self,
        id: &str,
        structure_id: &StructureId,
        by: &AgentId,
        now: Timestamp,
    ) -> StorageResult<bool>;
    /// Takes up to `limit` alerts whose e-mail is due (written while their
    /// structure had a mailbox) for `lease` seconds under `token`, oldest
    /// first; one under another worker's lease is skipped.
    async fn alert_mail_claim(
        &self,
        token: &str,
        now: Timestamp,
        lease: i64,
        limit: i64,
    ) -> StorageResult<Vec<AlertMailClaim>>;
    /// Settles a claimed alert's e-mail: `sent` or `failed`, or `pending`
    /// again from `next_at` (a retry). Only by the claim that holds it.
    async fn alert_mail_settle(
        &self,
        c: &AlertMailClaim,
        state: &str,
        next_at: Timestamp,
    ) -> StorageResult<()>;
}

macro_rules! impl_alert_store {
    ($store:ty, $db:ty, $backend:expr) => {
    impl $store {
        /// Writes a mandate's alerts inside its transaction: those decided
        /// before, and the burst rule checked here, against every mandate
        /// of the aidant (whatever the structure) and once per window.
        pub(crate) async fn insert_alerts_on(
            tx: &mut sqlx::Transaction<'_, $db>,
            effects: &$crate::storage::MandateEffects,
        ) -> $crate::storage::StorageResult<()> {
            for a in &effects.alerts {
                sqlx::query(
                    // Its e-mail is due when the structure has a mailbox now.
                    "INSERT INTO referent_alerts (id, structure_id, aidant_id, kind, subject, created_at, mail_state) \
                     VALUES ($1, $2, $3, $4, $5, $6, (SELECT 'pending' FROM structure_alert_rules WHERE structure_id = $2 AND alert_email IS NOT NULL))",
                )
                .bind(&a.id)
                .bind(&a.structure_id)
                .bind(&a.aidant_id)
                .bind(a.kind)
                .bind(&a.subject)
                .bind(a.created_at)
                .execute(&mut **tx)
                .await?;
            }
            if let Some(b) = &effects.burst {
                sqlx::query(
                    "INSERT INTO referent_alerts (id, structure_id, aidant_id, kind, subject, created_at, mail_state) \
                     SELECT $1, $2, $3, $4, $5, $6, (SELECT 'pending' FROM structure_alert_rules WHERE structure_id = $2 AND alert_email IS NOT NULL) \
                     WHERE (SELECT COUNT(*) FROM mandates WHERE aidant_id = $3 AND created_at >= $7) > $8 \
                       AND NOT EXISTS (SELECT 1 FROM referent_alerts WHERE aidant_id = $3 AND kind = $4 AND created_at >= $7)",
                )
                .bind(&b.alert.id)
                .bind(&b.alert.structure_id)
                .bind(&b.alert.aidant_id)
                .bind(b.alert.kind)
                .bind(&b.alert.subject)
                .bind(b.alert.created_at)
                .bind(b.since)
                .bind(b.max)
                .execute(&mut **tx)
                .await?;
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl $crate::storage::AlertStore for $store {
        async fn alert_rules(
            &self,
            structure_id: &$crate::domain::StructureId,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::AlertRulesRow>> {
            Ok(sqlx::query_as(
                "SELECT hours, CAST(burst_max AS BIGINT) AS burst_max, CAST(burst_minutes AS BIGINT) AS burst_minutes, alert_email, communes \
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
            set_email: bool,
            set_communes: bool,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO structure_alert_rules (structure_id, hours, burst_max, burst_minutes, updated_at, alert_email, communes) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (structure_id) DO UPDATE SET hours = $2, burst_max = $3, burst_minutes = $4, updated_at = $5, \
                   alert_email = CASE WHEN $8 THEN $6 ELSE structure_alert_rules.alert_email END, \
                   communes = CASE WHEN $9 THEN $7 ELSE structure_alert_rules.communes END",
            )
            .bind(structure_id)
            .bind(&rules.hours)
            .bind(rules.burst_max)
            .bind(rules.burst_minutes)
            .bind(now)
            .bind(&rules.alert_email)
            .bind(&rules.communes)
            .bind(set_email)
            .bind(set_communes)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn find_alert(
            &self,
            id: &str,
            structure_id: &$crate::domain::StructureId,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::AlertRow>> {
            Ok(sqlx::query_as(
                "SELECT id, structure_id, aidant_id, kind, subject, created_at, reviewed_at, reviewed_by \
                 FROM referent_alerts WHERE id = $1 AND structure_id = $2",
            )
            .bind(id)
            .bind(structure_id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn insert_alert(
            &self,
            a: &$crate::storage::AlertRow,
        ) -> $crate::storage::StorageResult<()> {
            // The one INSERT of an alert, as a mandate's transaction does it.
            let mut tx = self.pool.begin().await?;
            let effects = $crate::storage::MandateEffects {
                alerts: vec![a.clone()],
                ..Default::default()
            };
            Self::insert_alerts_on(&mut tx, &effects).await?;
            tx.commit().await?;
            Ok(())
        }

        async fn structure_alerts(
            &self,
            structure_id: &$crate::domain::StructureId,
            limit: i64,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::AlertRow>> {
            Ok(sqlx::query_as(
                "SELECT id, structure_id, aidant_id, kind, subject, created_at, reviewed_at, reviewed_by \
                 FROM referent_alerts WHERE structure_id = $1 \
                 ORDER BY CASE WHEN reviewed_at IS NULL THEN 0 ELSE 1 END, created_at DESC, id LIMIT $2",
            )
            .bind(structure_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn purge_reviewed_alerts(
            &self,
            before: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<u64> {
            Ok(sqlx::query("DELETE FROM referent_alerts WHERE reviewed_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected())
        }

        async fn alert_mail_claim(
            &self,
            token: &str,
            now: $crate::domain::Timestamp,
            lease: i64,
            limit: i64,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::AlertMailClaim>> {
            // As the outbox's claim: chosen, locked and leased at once.
            let skip_locked = $backend.skip_locked();
            let sql = format!(
                "UPDATE referent_alerts SET mail_claimed_until = $1 + $2, mail_claimed_by = $4, mail_attempts = mail_attempts + 1 \
                 WHERE id IN (SELECT id FROM referent_alerts WHERE mail_state = 'pending' AND COALESCE(mail_next_at, 0) <= $1 \
                   AND (mail_claimed_until IS NULL OR mail_claimed_until <= $1) \
                   ORDER BY created_at, id LIMIT $3{skip_locked}) \
                 RETURNING id, mail_claimed_by, structure_id, kind, created_at, CAST(mail_attempts AS BIGINT) AS mail_attempts"
            );
            let mut claimed: Vec<$crate::storage::AlertMailClaim> = sqlx::query_as(&sql)
                .bind(now)
                .bind(lease)
                .bind(limit)
                .bind(token)
                .fetch_all(&self.pool)
                .await?;
            claimed.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            Ok(claimed)
        }

        async fn alert_mail_settle(
            &self,
            c: &$crate::storage::AlertMailClaim,
            state: &str,
            next_at: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "UPDATE referent_alerts SET mail_state = $3, mail_next_at = $4, mail_claimed_until = NULL \
                 WHERE id = $1 AND mail_claimed_by = $2 AND mail_state = 'pending'",
            )
            .bind(&c.id)
            .bind(&c.mail_claimed_by)
            .bind(state)
            .bind(next_at)
            .execute(&self.pool)
            .await?;
            Ok(())
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
