//! The data subject's rights: restriction (art. 18), objections
//! (art. 21), rights requests with their state changes and events, and the
//! art. 19 notices to recipients. The notices are written in the
//! transaction of the change they report, so `insert_notifications_on` is
//! shared with the records and the erasure.
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::StorageResult;
use crate::domain::category::Category;
use crate::domain::rights::{NoticeKind, RightsRequestKind, RightsRequestState};
use crate::domain::{RightsRequestId, Role, Timestamp};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RightsRequestRow {
    pub id: RightsRequestId,
    pub resident_id: crate::domain::ResidentId,
    pub kind: RightsRequestKind,
    pub purpose: Option<crate::domain::PurposeId>,
    pub state: RightsRequestState,
    pub created_at: i64,
    pub due_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RightsEventRow {
    pub request_id: RightsRequestId,
    pub seq: i64,
    pub state: RightsRequestState,
    pub actor_id: String,
    pub actor_role: Role,
    pub reason: Option<String>,
    pub at: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: String,
    pub partner_id: crate::domain::PartnerId,
    pub pseudonym: crate::domain::Pseudonym,
    pub kind: NoticeKind,
    pub category: Option<Category>,
    pub created_at: i64,
    pub fetched_at: Option<i64>,
}

/// The data subject's rights: restriction (art. 18), objections
/// (art. 21), rights requests and their events, and the art. 19 notices
/// to recipients.
#[async_trait]
pub trait RightsStore: Send + Sync {
    /// (restricted, objected to `purpose`) for the access decision.
    async fn rights_state(
        &self,
        resident_id: &crate::domain::ResidentId,
        purpose: Option<&crate::domain::PurposeId>,
    ) -> StorageResult<(bool, bool)>;
    /// With the art. 19 notices a restriction causes, in one transaction.
    async fn set_restricted(
        &self,
        resident_id: &crate::domain::ResidentId,
        at: Option<Timestamp>,
        notices: &[NotificationRow],
    ) -> StorageResult<()>;
    async fn restricted_since(
        &self,
        resident_id: &crate::domain::ResidentId,
    ) -> StorageResult<Option<Timestamp>>;
    async fn add_objection(
        &self,
        resident_id: &crate::domain::ResidentId,
        to: crate::domain::rights::ObjectionTo<'_>,
        now: Timestamp,
    ) -> StorageResult<bool>;
    async fn remove_objection(
        &self,
        resident_id: &crate::domain::ResidentId,
        to: crate::domain::rights::ObjectionTo<'_>,
    ) -> StorageResult<bool>;
    async fn objections_of(
        &self,
        resident_id: &crate::domain::ResidentId,
    ) -> StorageResult<Vec<(String, i64)>>;
    async fn insert_rights_request(
        &self,
        r: &RightsRequestRow,
        e: &RightsEventRow,
    ) -> StorageResult<()>;
    async fn find_rights_request(
        &self,
        id: &RightsRequestId,
    ) -> StorageResult<Option<RightsRequestRow>>;
    async fn rights_requests_of(
        &self,
        resident_id: &crate::domain::ResidentId,
    ) -> StorageResult<Vec<RightsRequestRow>>;
    /// Every request, open ones first by due date (the DPO's list).
    async fn all_rights_requests(&self, limit: i64) -> StorageResult<Vec<RightsRequestRow>>;
    async fn rights_request_events(
        &self,
        id: &RightsRequestId,
    ) -> StorageResult<Vec<RightsEventRow>>;
    /// Moves a request to `state` (and `due_at`) if it is still in
    /// `from_state`; appends the event and writes `notices` (the outbox),
    /// in one transaction. False when it was not.
    async fn update_rights_request(
        &self,
        id: &RightsRequestId,
        from_state: RightsRequestState,
        state: RightsRequestState,
        due_at: Timestamp,
        event: &RightsEventRow,
        notices: &[crate::storage::OutboxMessage],
    ) -> StorageResult<bool>;
    async fn insert_notifications(&self, rows: &[NotificationRow]) -> StorageResult<()>;
    /// A partner's notifications, at most 1,000: those not delivered yet
    /// first (oldest first), then those delivered before (oldest first);
    /// the undelivered ones returned are marked fetched at `now`, in the
    /// same transaction. Nothing is deleted, and a long history never
    /// keeps a new notice from being delivered.
    async fn take_notifications(
        &self,
        partner_id: &crate::domain::PartnerId,
        now: Timestamp,
    ) -> StorageResult<Vec<NotificationRow>>;
}

/// `impl RightsStore` for a backend (see `storage::impl_store!`).
macro_rules! impl_rights_store {
    ($store:ty, $db:ty) => {
    impl $store {
        async fn insert_notifications_on(
            tx: &mut sqlx::Transaction<'_, $db>,
            rows: &[$crate::storage::NotificationRow],
        ) -> $crate::storage::StorageResult<()> {
            for n in rows {
                sqlx::query(
                    "INSERT INTO recipient_notifications (id, partner_id, pseudonym, kind, category, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&n.id)
                .bind(&n.partner_id)
                .bind(&n.pseudonym)
                .bind(n.kind)
                .bind(&n.category)
                .bind(n.created_at)
                .execute(&mut **tx)
                .await?;
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl $crate::storage::RightsStore for $store {
        async fn rights_state(
            &self,
            resident_id: &$crate::domain::ResidentId,
            purpose: Option<&$crate::domain::PurposeId>,
        ) -> $crate::storage::StorageResult<(bool, bool)> {
            let row: Option<(Option<i64>, i64)> = sqlx::query_as(
                "SELECT r.restricted_at, (SELECT COUNT(*) FROM objections o WHERE o.resident_id = r.id AND o.purpose = $2) \
                 FROM residents r WHERE r.id = $1",
            )
            .bind(resident_id)
            .bind(purpose)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map(|(r, o)| (r.is_some(), o > 0)).unwrap_or((false, false)))
        }

        async fn set_restricted(
            &self,
            resident_id: &$crate::domain::ResidentId,
            at: Option<$crate::domain::Timestamp>,
            notices: &[$crate::storage::NotificationRow],
        ) -> $crate::storage::StorageResult<()> {
            let mut tx = self.pool.begin().await?;
            sqlx::query("UPDATE residents SET restricted_at = $2 WHERE id = $1")
                .bind(resident_id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            Self::insert_notifications_on(&mut tx, notices).await?;
            tx.commit().await?;
            Ok(())
        }

        async fn restricted_since(
            &self,
            resident_id: &$crate::domain::ResidentId,
        ) -> $crate::storage::StorageResult<Option<$crate::domain::Timestamp>> {
            let row: Option<(Option<i64>,)> =
                sqlx::query_as("SELECT restricted_at FROM residents WHERE id = $1")
                    .bind(resident_id)
                    .fetch_optional(&self.pool)
                    .await?;
            Ok(row.and_then(|(r,)| r))
        }

        async fn add_objection(
            &self,
            resident_id: &$crate::domain::ResidentId,
            to: $crate::domain::rights::ObjectionTo<'_>,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            let mut tx = self.pool.begin().await?;
            // The resident's row locked first (a no-op update: on
            // PostgreSQL a lock that conflicts with the `FOR SHARE` a
            // deposit's transaction holds on it), so an objection that
            // commits first is seen by every deposit stored after it; an
            // insert alone would only take a key-share lock, which does not.
            sqlx::query("UPDATE residents SET status = status WHERE id = $1")
                .bind(resident_id)
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query(
                "INSERT INTO objections (resident_id, purpose, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(resident_id)
            .bind(to.key())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(done.rows_affected() == 1)
        }

        async fn remove_objection(&self, resident_id: &$crate::domain::ResidentId, to: $crate::domain::rights::ObjectionTo<'_>) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query("DELETE FROM objections WHERE resident_id = $1 AND purpose = $2")
                .bind(resident_id)
                .bind(to.key())
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn objections_of(&self, resident_id: &$crate::domain::ResidentId) -> $crate::storage::StorageResult<Vec<(String, i64)>> {
            Ok(sqlx::query_as(
                "SELECT purpose, created_at FROM objections WHERE resident_id = $1 ORDER BY purpose",
            )
            .bind(resident_id)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn insert_rights_request(
            &self,
            r: &$crate::storage::RightsRequestRow,
            e: &$crate::storage::RightsEventRow,
        ) -> $crate::storage::StorageResult<()> {
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO rights_requests (id, resident_id, kind, purpose, state, created_at, due_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&r.id)
            .bind(&r.resident_id)
            .bind(r.kind)
            .bind(&r.purpose)
            .bind(r.state)
            .bind(r.created_at)
            .bind(r.due_at)
            .bind(r.updated_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO rights_request_events (request_id, seq, state, actor_id, actor_role, reason, at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&e.request_id)
            .bind(e.seq)
            .bind(e.state)
            .bind(&e.actor_id)
            .bind(&e.actor_role)
            .bind(&e.reason)
            .bind(e.at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }

        async fn find_rights_request(
            &self,
            id: &$crate::domain::RightsRequestId,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::RightsRequestRow>> {
            Ok(sqlx::query_as(
                "SELECT id, resident_id, kind, purpose, state, created_at, due_at, updated_at FROM rights_requests WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn rights_requests_of(
            &self,
            resident_id: &$crate::domain::ResidentId,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::RightsRequestRow>> {
            Ok(sqlx::query_as(
                "SELECT id, resident_id, kind, purpose, state, created_at, due_at, updated_at FROM rights_requests \
                 WHERE resident_id = $1 ORDER BY created_at DESC, id",
            )
            .bind(resident_id)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn all_rights_requests(
            &self,
            limit: i64,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::RightsRequestRow>> {
            Ok(sqlx::query_as(
                "SELECT id, resident_id, kind, purpose, state, created_at, due_at, updated_at FROM rights_requests \
                 ORDER BY CASE WHEN state IN ('received', 'extended') THEN 0 ELSE 1 END, due_at, id LIMIT $1",
            )
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn rights_request_events(
            &self,
            id: &$crate::domain::RightsRequestId,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::RightsEventRow>> {
            Ok(sqlx::query_as(
                "SELECT request_id, seq, state, actor_id, actor_role, reason, at FROM rights_request_events \
                 WHERE request_id = $1 ORDER BY seq",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn update_rights_request(
            &self,
            id: &$crate::domain::RightsRequestId,
            from_state: $crate::domain::rights::RightsRequestState,
            state: $crate::domain::rights::RightsRequestState,
            due_at: $crate::domain::Timestamp,
            event: &$crate::storage::RightsEventRow,
            notices: &[$crate::storage::OutboxMessage],
        ) -> $crate::storage::StorageResult<bool> {
            let mut tx = self.pool.begin().await?;
            let done = sqlx::query(
                "UPDATE rights_requests SET state = $3, due_at = $4, updated_at = $5 WHERE id = $1 AND state = $2",
            )
            .bind(id)
            .bind(from_state)
            .bind(state)
            .bind(due_at)
            .bind(event.at)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            let (seq,): (i64,) = sqlx::query_as(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM rights_request_events WHERE request_id = $1",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            let event = $crate::storage::RightsEventRow { seq, ..event.clone() };
            sqlx::query(
                "INSERT INTO rights_request_events (request_id, seq, state, actor_id, actor_role, reason, at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&event.request_id)
            .bind(event.seq)
            .bind(event.state)
            .bind(&event.actor_id)
            .bind(&event.actor_role)
            .bind(&event.reason)
            .bind(event.at)
            .execute(&mut *tx)
            .await?;
            Self::insert_outbox_on(&mut tx, notices).await?;
            tx.commit().await?;
            Ok(true)
        }

        async fn insert_notifications(
            &self,
            rows: &[$crate::storage::NotificationRow],
        ) -> $crate::storage::StorageResult<()> {
            let mut tx = self.pool.begin().await?;
            Self::insert_notifications_on(&mut tx, rows).await?;
            tx.commit().await?;
            Ok(())
        }

        async fn take_notifications(
            &self,
            partner_id: &$crate::domain::PartnerId,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::NotificationRow>> {
            const MAX: usize = 1000;
            // The write comes first, so the transaction holds the write lock
            // from its first statement (SQLite) and a concurrent take skips
            // what this one delivers (PostgreSQL re-checks `fetched_at`).
            let mut tx = self.pool.begin().await?;
            let mut rows: Vec<$crate::storage::NotificationRow> = sqlx::query_as(
                "UPDATE recipient_notifications SET fetched_at = $2 \
                 WHERE fetched_at IS NULL AND id IN (SELECT id FROM recipient_notifications \
                   WHERE partner_id = $1 AND fetched_at IS NULL ORDER BY created_at, id LIMIT $3) \
                 RETURNING id, partner_id, pseudonym, kind, category, created_at, fetched_at",
            )
            .bind(partner_id)
            .bind(now)
            .bind(MAX as i64)
            .fetch_all(&mut *tx)
            .await?;
            rows.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            // Delivered by this very call: shown as not fetched before.
            for n in &mut rows {
                n.fetched_at = None;
            }
            if rows.len() < MAX {
                let fresh: std::collections::HashSet<String> =
                    rows.iter().map(|n| n.id.clone()).collect();
                let earlier: Vec<$crate::storage::NotificationRow> = sqlx::query_as(
                    "SELECT id, partner_id, pseudonym, kind, category, created_at, fetched_at FROM recipient_notifications \
                     WHERE partner_id = $1 AND fetched_at IS NOT NULL ORDER BY created_at, id LIMIT $2",
                )
                .bind(partner_id)
                .bind((MAX + fresh.len()) as i64)
                .fetch_all(&mut *tx)
                .await?;
                let room = MAX - rows.len();
                rows.extend(earlier.into_iter().filter(|n| !fresh.contains(&n.id)).take(room));
            }
            tx.commit().await?;
            Ok(rows)
        }
    }
    };
}
pub(crate) use impl_rights_store;
