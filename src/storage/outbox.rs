//! The outbox (BRIEF C13): messages to residents, inserted in the same
//! transaction as the act they report (by the aggregate that performs it,
//! through [`insert_outbox_on`]), then claimed by delivery workers under a
//! lease, so that several processes sharing PostgreSQL never take the same
//! message at once (`FOR UPDATE SKIP LOCKED`; SQLite's write lock
//! serialises claims).
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::StorageResult;
use crate::domain::notice::{Channel, NoticeEvent};
use crate::domain::{ResidentId, Timestamp};

/// A message as an act writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxMessage {
    /// A UUID (v4, or v7 for an extract's messages, written in bulk and in
    /// order), or a fixed id for a message written once: the message's
    /// `Message-ID` is made of it.
    pub id: String,
    pub event: NoticeEvent,
    pub resident_id: ResidentId,
    /// The object of the event (a mandate's id).
    pub subject_id: String,
    /// Who acted, by public name (a structure, a partner).
    pub actor_name: String,
    pub created_at: Timestamp,
}

impl OutboxMessage {
    pub fn new(
        event: NoticeEvent,
        resident_id: &ResidentId,
        subject_id: &str,
        actor_name: &str,
        now: Timestamp,
    ) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            event,
            resident_id: resident_id.clone(),
            subject_id: subject_id.to_string(),
            actor_name: actor_name.to_string(),
            created_at: now,
        }
    }
}

/// A message a worker claimed, with how many times it was tried.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OutboxClaim {
    pub id: String,
    /// The claim's token: only it settles the message (empty when read
    /// outside a claim).
    pub claimed_by: String,
    pub event: NoticeEvent,
    pub resident_id: ResidentId,
    pub subject_id: String,
    pub actor_name: String,
    pub created_at: i64,
    pub attempts: i64,
}

/// How many messages are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct OutboxCounts {
    pub pending: i64,
    pub sent: i64,
    pub failed: i64,
    /// No e-mail address: waiting for a postal letter.
    pub post: i64,
    /// Written with an act not finished yet (an extract being built): sent
    /// once it is, deleted if it fails.
    pub held: i64,
    /// Not sent: the resident turned these messages off.
    pub muted: i64,
}

#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Takes up to `limit` due messages for `lease` seconds under the
    /// claim token `token` (their attempt counted), oldest first. A message
    /// under another worker's lease is skipped.
    async fn outbox_claim(
        &self,
        token: &str,
        now: Timestamp,
        lease: i64,
        limit: i64,
    ) -> StorageResult<Vec<OutboxClaim>>;
    /// Delivered. Only by the claim that holds it (a worker whose lease
    /// lapsed changes nothing); false when it did not hold it.
    async fn outbox_sent(&self, c: &OutboxClaim, now: Timestamp) -> StorageResult<bool>;
    /// Not delivered; tried again from `next_at`. `error` is a stable code.
    /// `counted`: false gives the attempt back (the failure was ours, not
    /// the message's: audit log, store or vault unavailable).
    async fn outbox_retry(
        &self,
        c: &OutboxClaim,
        next_at: Timestamp,
        error: &str,
        counted: bool,
    ) -> StorageResult<()>;
    /// Given up (`failed`) or handed to the postal batch (`post`), by the
    /// claim that holds it.
    async fn outbox_settle(&self, c: &OutboxClaim, state: &str, error: &str) -> StorageResult<()>;
    async fn outbox_counts(&self) -> StorageResult<OutboxCounts>;
    /// Up to `limit` messages waiting for a postal letter, oldest first.
    async fn outbox_letters(&self, limit: i64) -> StorageResult<Vec<OutboxClaim>>;
    /// A letter printed and posted: `sent`, if it was still waiting for
    /// one (true) — a second click changes nothing.
    async fn outbox_posted(&self, id: &str, now: Timestamp) -> StorageResult<bool>;
    /// Writes one `consent.expiring` message for each given consent of an
    /// active resident that ends after `now` and by `until`, once per
    /// consent and end date (its id says which: a second run adds
    /// nothing); returns how many were written.
    async fn outbox_expiring_consents(
        &self,
        now: Timestamp,
        until: Timestamp,
    ) -> StorageResult<u64>;
    /// Writes one `mandate.ended` message for each mandate of an active
    /// resident that reached its end date after `since` and by `now` with
    /// an authorisation still standing (not revoked nor superseded: those
    /// were told when it happened), once per mandate (its id says which);
    /// returns how many were written.
    async fn outbox_ended_mandates(&self, since: Timestamp, now: Timestamp) -> StorageResult<u64>;
    /// Deletes messages sent, given up, muted, or held by an act that never
    /// finished, written before `before`; returns how many.
    async fn outbox_purge(&self, before: Timestamp) -> StorageResult<u64>;
    /// Writes messages that wait (`held`) for the act they report to
    /// finish (an extract's file), in one transaction.
    async fn outbox_hold(&self, messages: &[OutboxMessage]) -> StorageResult<()>;
    /// Writes a message unless one with its id exists (a job that runs
    /// again adds nothing); true when written.
    async fn outbox_insert_once(&self, message: &OutboxMessage) -> StorageResult<bool>;
    /// A resident's choices, event by event (events without a row keep
    /// their default).
    async fn notice_preferences(
        &self,
        resident_id: &ResidentId,
    ) -> StorageResult<Vec<(NoticeEvent, Channel)>>;
    /// The resident's choice for one event, if they made one.
    async fn notice_preference(
        &self,
        resident_id: &ResidentId,
        event: NoticeEvent,
    ) -> StorageResult<Option<Channel>>;
    /// Records the resident's choices, all in one transaction.
    async fn set_notice_preferences(
        &self,
        resident_id: &ResidentId,
        choices: &[(NoticeEvent, Channel)],
        now: Timestamp,
    ) -> StorageResult<()>;
    /// Active residents who chose a channel other than off for `event`
    /// (the digest's readers) and have no message of id
    /// `{id_prefix}{resident}{id_suffix}` yet, by id after `after`, at most
    /// `limit`.
    async fn residents_opted_in(
        &self,
        event: NoticeEvent,
        id_prefix: &str,
        id_suffix: &str,
        after: &str,
        limit: i64,
    ) -> StorageResult<Vec<ResidentId>>;
    /// Every message about one resident, oldest first (tests, the DPO).
    async fn outbox_of_resident(&self, resident_id: &ResidentId)
    -> StorageResult<Vec<OutboxClaim>>;
}

macro_rules! impl_outbox_store {
    ($store:ty, $db:ty, $backend:expr) => {
    impl $store {
        /// Writes `messages` inside the caller's transaction: the act and
        /// its messages commit or roll back together.
        pub(crate) async fn insert_outbox_on(
            tx: &mut sqlx::Transaction<'_, $db>,
            messages: &[$crate::storage::OutboxMessage],
        ) -> $crate::storage::StorageResult<()> {
            Self::push_outbox_on(tx, messages, "pending").await.map(|_| ())
        }

        /// The one INSERT of messages, in `state`: a few multi-row
        /// statements (7 parameters a row, far under either backend's
        /// limit); a message whose id exists is skipped (ids made of what
        /// they report, such as a job's, are written once). Answers how
        /// many were written.
        async fn push_outbox_on(
            tx: &mut sqlx::Transaction<'_, $db>,
            messages: &[$crate::storage::OutboxMessage],
            state: &'static str,
        ) -> $crate::storage::StorageResult<u64> {
            let mut written = 0;
            for chunk in messages.chunks(500) {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO outbox (id, event, resident_id, subject_id, actor_name, created_at, next_attempt_at, state) ",
                );
                q.push_values(chunk, |mut b, m| {
                    b.push_bind(&m.id)
                        .push_bind(m.event)
                        .push_bind(&m.resident_id)
                        .push_bind(&m.subject_id)
                        .push_bind(&m.actor_name)
                        .push_bind(m.created_at)
                        .push_bind(m.created_at)
                        .push_bind(state);
                });
                q.push(" ON CONFLICT (id) DO NOTHING");
                written += q.build().execute(&mut **tx).await?.rows_affected();
            }
            Ok(written)
        }
    }

    #[async_trait::async_trait]
    impl $crate::storage::OutboxStore for $store {
        async fn outbox_claim(
            &self,
            token: &str,
            now: $crate::domain::Timestamp,
            lease: i64,
            limit: i64,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::OutboxClaim>> {
            // One statement: the rows chosen are locked (PostgreSQL) and
            // leased in the same breath; a second worker's choice skips
            // them, and sees the lease once this one commits.
            let skip_locked = $backend.skip_locked();
            let sql = format!(
                "UPDATE outbox SET claimed_until = $1 + $2, claimed_by = $4, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1 \
                   AND (claimed_until IS NULL OR claimed_until <= $1) \
                   ORDER BY created_at, id LIMIT $3{skip_locked}) \
                 RETURNING id, claimed_by, event, resident_id, subject_id, actor_name, created_at, CAST(attempts AS BIGINT) AS attempts"
            );
            let mut claimed: Vec<$crate::storage::OutboxClaim> = sqlx::query_as(&sql)
                .bind(now)
                .bind(lease)
                .bind(limit)
                .bind(token)
                .fetch_all(&self.pool)
                .await?;
            // RETURNING's order is unspecified: oldest first, here.
            claimed.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            Ok(claimed)
        }

        async fn outbox_sent(
            &self,
            c: &$crate::storage::OutboxClaim,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            Ok(sqlx::query(
                "UPDATE outbox SET state = 'sent', sent_at = $3, claimed_until = NULL, last_error = NULL \
                 WHERE id = $1 AND claimed_by = $2 AND state = 'pending'",
            )
            .bind(&c.id)
            .bind(&c.claimed_by)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected()
                == 1)
        }

        async fn outbox_retry(
            &self,
            c: &$crate::storage::OutboxClaim,
            next_at: $crate::domain::Timestamp,
            error: &str,
            counted: bool,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "UPDATE outbox SET next_attempt_at = $3, claimed_until = NULL, last_error = $4, \
                   attempts = attempts - $5 \
                 WHERE id = $1 AND claimed_by = $2 AND state = 'pending'",
            )
            .bind(&c.id)
            .bind(&c.claimed_by)
            .bind(next_at)
            .bind(error)
            .bind(if counted { 0_i32 } else { 1_i32 })
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn outbox_settle(
            &self,
            c: &$crate::storage::OutboxClaim,
            state: &str,
            error: &str,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "UPDATE outbox SET state = $3, claimed_until = NULL, last_error = $4 \
                 WHERE id = $1 AND claimed_by = $2 AND state = 'pending'",
            )
            .bind(&c.id)
            .bind(&c.claimed_by)
            .bind(state)
            .bind(error)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn outbox_counts(
            &self,
        ) -> $crate::storage::StorageResult<$crate::storage::OutboxCounts> {
            let rows: Vec<(String, i64)> =
                sqlx::query_as("SELECT state, COUNT(*) FROM outbox GROUP BY state")
                    .fetch_all(&self.pool)
                    .await?;
            let mut c = $crate::storage::OutboxCounts::default();
            for (state, n) in rows {
                match state.as_str() {
                    "pending" => c.pending = n,
                    "sent" => c.sent = n,
                    "failed" => c.failed = n,
                    "post" => c.post = n,
                    "held" => c.held = n,
                    "muted" => c.muted = n,
                    other => {
                        return Err($crate::storage::StorageError::Integrity(format!(
                            "outbox state {other:?}"
                        )));
                    }
                }
            }
            Ok(c)
        }

        async fn outbox_letters(
            &self,
            limit: i64,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::OutboxClaim>> {
            Ok(sqlx::query_as(
                "SELECT id, COALESCE(claimed_by, '') AS claimed_by, event, resident_id, subject_id, actor_name, created_at, CAST(attempts AS BIGINT) AS attempts \
                 FROM outbox WHERE state = 'post' ORDER BY created_at, id LIMIT $1",
            )
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn outbox_posted(
            &self,
            id: &str,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            Ok(sqlx::query(
                "UPDATE outbox SET state = 'sent', sent_at = $2, last_error = NULL WHERE id = $1 AND state = 'post'",
            )
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected()
                == 1)
        }

        async fn outbox_expiring_consents(
            &self,
            now: $crate::domain::Timestamp,
            until: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<u64> {
            Ok(sqlx::query(
                "INSERT INTO outbox (id, event, resident_id, subject_id, actor_name, created_at, next_attempt_at) \
                 SELECT 'consent-expiring-' || c.id || '-' || CAST(c.valid_until AS TEXT), 'consent.expiring', \
                        c.resident_id, c.id, c.purpose, $1, $1 \
                 FROM consents c JOIN residents r ON r.id = c.resident_id \
                 WHERE c.state = 'given' AND c.valid_until > $1 AND c.valid_until <= $2 AND r.status = 'active' \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(now)
            .bind(until)
            .execute(&self.pool)
            .await?
            .rows_affected())
        }

        async fn outbox_ended_mandates(
            &self,
            since: $crate::domain::Timestamp,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<u64> {
            Ok(sqlx::query(
                "INSERT INTO outbox (id, event, resident_id, subject_id, actor_name, created_at, next_attempt_at) \
                 SELECT 'mandate-ended-' || m.id, 'mandate.ended', m.resident_id, m.id, s.name, m.expires_at, $2 \
                 FROM mandates m JOIN structures s ON s.id = m.structure_id JOIN residents r ON r.id = m.resident_id \
                 WHERE m.expires_at > $1 AND m.expires_at <= $2 AND r.status = 'active' \
                   AND EXISTS (SELECT 1 FROM mandate_authorisations a WHERE a.mandate_id = m.id AND a.revoked_at IS NULL) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(since)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected())
        }

        async fn outbox_purge(
            &self,
            before: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<u64> {
            Ok(sqlx::query(
                "DELETE FROM outbox WHERE state IN ('sent', 'failed', 'muted', 'held') AND created_at < $1",
            )
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
        }

        async fn outbox_hold(
            &self,
            messages: &[$crate::storage::OutboxMessage],
        ) -> $crate::storage::StorageResult<()> {
            let mut tx = self.pool.begin().await?;
            Self::push_outbox_on(&mut tx, messages, "held").await?;
            tx.commit().await?;
            Ok(())
        }

        async fn outbox_insert_once(
            &self,
            m: &$crate::storage::OutboxMessage,
        ) -> $crate::storage::StorageResult<bool> {
            let mut tx = self.pool.begin().await?;
            let written = Self::push_outbox_on(&mut tx, std::slice::from_ref(m), "pending").await?;
            tx.commit().await?;
            Ok(written == 1)
        }

        async fn notice_preferences(
            &self,
            resident_id: &$crate::domain::ResidentId,
        ) -> $crate::storage::StorageResult<Vec<($crate::domain::notice::NoticeEvent, $crate::domain::notice::Channel)>> {
            Ok(sqlx::query_as(
                "SELECT event, channel FROM notice_preferences WHERE resident_id = $1 ORDER BY event",
            )
            .bind(resident_id)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn notice_preference(
            &self,
            resident_id: &$crate::domain::ResidentId,
            event: $crate::domain::notice::NoticeEvent,
        ) -> $crate::storage::StorageResult<Option<$crate::domain::notice::Channel>> {
            Ok(sqlx::query_scalar(
                "SELECT channel FROM notice_preferences WHERE resident_id = $1 AND event = $2",
            )
            .bind(resident_id)
            .bind(event)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn set_notice_preferences(
            &self,
            resident_id: &$crate::domain::ResidentId,
            choices: &[($crate::domain::notice::NoticeEvent, $crate::domain::notice::Channel)],
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            let mut tx = self.pool.begin().await?;
            for (event, channel) in choices {
                sqlx::query(
                    "INSERT INTO notice_preferences (resident_id, event, channel, updated_at) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (resident_id, event) DO UPDATE SET channel = excluded.channel, updated_at = excluded.updated_at",
                )
                .bind(resident_id)
                .bind(*event)
                .bind(*channel)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        }

        async fn residents_opted_in(
            &self,
            event: $crate::domain::notice::NoticeEvent,
            id_prefix: &str,
            id_suffix: &str,
            after: &str,
            limit: i64,
        ) -> $crate::storage::StorageResult<Vec<$crate::domain::ResidentId>> {
            Ok(sqlx::query_scalar(
                "SELECT p.resident_id FROM notice_preferences p JOIN residents r ON r.id = p.resident_id \
                 WHERE p.event = $1 AND p.channel <> 'off' AND r.status = 'active' AND p.resident_id > $2 \
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = $4 || p.resident_id || $5) \
                 ORDER BY p.resident_id LIMIT $3",
            )
            .bind(event)
            .bind(after)
            .bind(limit)
            .bind(id_prefix)
            .bind(id_suffix)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn outbox_of_resident(
            &self,
            resident_id: &$crate::domain::ResidentId,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::OutboxClaim>> {
            Ok(sqlx::query_as(
                "SELECT id, COALESCE(claimed_by, '') AS claimed_by, event, resident_id, subject_id, actor_name, created_at, CAST(attempts AS BIGINT) AS attempts \
                 FROM outbox WHERE resident_id = $1 ORDER BY created_at, id",
            )
            .bind(resident_id)
            .fetch_all(&self.pool)
            .await?)
        }
    }
    };
}
pub(crate) use impl_outbox_store;
