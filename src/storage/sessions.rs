//! Who is calling: browser sessions, OpenID Connect logins under way
//! between the redirect and the callback (each state works once), and the
//! jtis of partners' client assertions (each works once), with their
//! purges. (Expired mandate drafts go with the expired logins: one purge.)
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::StorageResult;
use crate::domain::{DraftId, Role, Timestamp};

#[derive(Clone, Debug)]
pub struct NewSession<'a> {
    pub token_hash: &'a str,
    pub actor_id: &'a str,
    pub role: Role,
    pub csrf_token: &'a str,
    pub now: Timestamp,
    pub expires_at: Timestamp,
    /// `demo`, `resident` or `agent`: who vouched for the login.
    pub provider: &'a str,
    pub id_token_sealed: Option<&'a str>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SessionRow {
    pub actor_id: String,
    pub role: Role,
    pub csrf_token: String,
    pub expires_at: i64,
    pub last_seen_at: i64,
    pub provider: String,
    pub id_token_sealed: Option<String>,
}

/// A login under way between the redirect to an OpenID provider and its
/// callback (see migration 0006).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LoginAttemptRow {
    pub state_digest: String,
    pub browser_digest: String,
    pub provider: String,
    pub sealed: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// The mandate draft this resident login confirms, if any (the login
    /// then opens no resident session: the aidant's session goes on).
    pub mandate_draft: Option<DraftId>,
}

/// Sessions, OpenID Connect logins under way, and partners' client
/// assertion jtis: what proves who is calling, each usable once where it
/// must be.
#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn create_session(&self, s: &NewSession<'_>) -> StorageResult<()>;
    /// The live session with this token digest: not expired at `now` and
    /// used since `idle_cutoff`.
    async fn find_session(
        &self,
        token_hash: &str,
        now: Timestamp,
        idle_cutoff: Timestamp,
    ) -> StorageResult<Option<SessionRow>>;
    /// Records activity on a session (for the idle timeout).
    async fn touch_session(&self, token_hash: &str, now: Timestamp) -> StorageResult<()>;
    async fn delete_session(&self, token_hash: &str) -> StorageResult<()>;
    /// Deletes sessions past their absolute expiry or idle since `idle_cutoff`.
    async fn purge_expired_sessions(
        &self,
        now: Timestamp,
        idle_cutoff: Timestamp,
    ) -> StorageResult<u64>;
    /// Stores a login under way, and drops the attempts that expired.
    async fn insert_login_attempt(&self, row: &LoginAttemptRow) -> StorageResult<()>;
    /// Consumes the attempt with this state digest: a state works once.
    async fn take_login_attempt(
        &self,
        state_digest: &str,
    ) -> StorageResult<Option<LoginAttemptRow>>;
    /// Records a client assertion's jti until `expires_at`; false when it
    /// was already used (a replay). Forgets the expired ones.
    async fn use_assertion_jti(
        &self,
        jti_digest: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StorageResult<bool>;
    /// Expired login attempts, mandate drafts and client assertion jtis.
    async fn purge_expired_logins_and_drafts(&self, now: Timestamp) -> StorageResult<u64>;
}

/// `impl SessionStore` for a backend (see `storage::impl_store!`).
macro_rules! impl_session_store {
    ($store:ty) => {
    #[async_trait::async_trait]
    impl $crate::storage::SessionStore for $store {
        async fn create_session(
            &self,
            s: &$crate::storage::NewSession<'_>,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO sessions (token_hash, actor_id, role, csrf_token, created_at, expires_at, \
                 last_seen_at, provider, id_token_sealed) VALUES ($1, $2, $3, $4, $5, $6, $5, $7, $8)",
            )
            .bind(s.token_hash)
            .bind(s.actor_id)
            .bind(s.role.as_str())
            .bind(s.csrf_token)
            .bind(s.now)
            .bind(s.expires_at)
            .bind(s.provider)
            .bind(s.id_token_sealed)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn find_session(
            &self,
            token_hash: &str,
            now: $crate::domain::Timestamp,
            idle_cutoff: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::SessionRow>> {
            Ok(sqlx::query_as(
                "SELECT actor_id, role, csrf_token, expires_at, last_seen_at, provider, id_token_sealed \
                 FROM sessions WHERE token_hash = $1 AND expires_at > $2 AND last_seen_at > $3",
            )
            .bind(token_hash)
            .bind(now)
            .bind(idle_cutoff)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn touch_session(
            &self,
            token_hash: &str,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE token_hash = $1")
                .bind(token_hash)
                .bind(now)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn delete_session(&self, token_hash: &str) -> $crate::storage::StorageResult<()> {
            sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                .bind(token_hash)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn purge_expired_sessions(
            &self,
            now: $crate::domain::Timestamp,
            idle_cutoff: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<u64> {
            let done =
                sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
                    .bind(now)
                    .bind(idle_cutoff)
                    .execute(&self.pool)
                    .await?;
            Ok(done.rows_affected())
        }

        async fn insert_login_attempt(
            &self,
            row: &$crate::storage::LoginAttemptRow,
        ) -> $crate::storage::StorageResult<()> {
            let mut tx = self.pool.begin().await?;
            sqlx::query("DELETE FROM login_attempts WHERE expires_at <= $1")
                .bind(row.created_at)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO login_attempts (state_digest, browser_digest, provider, sealed, created_at, expires_at, mandate_draft) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&row.state_digest)
            .bind(&row.browser_digest)
            .bind(&row.provider)
            .bind(&row.sealed)
            .bind(row.created_at)
            .bind(row.expires_at)
            .bind(&row.mandate_draft)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }

        async fn take_login_attempt(
            &self,
            state_digest: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::LoginAttemptRow>> {
            Ok(sqlx::query_as(
                "DELETE FROM login_attempts WHERE state_digest = $1 \
                 RETURNING state_digest, browser_digest, provider, sealed, created_at, expires_at, mandate_draft",
            )
            .bind(state_digest)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn use_assertion_jti(
            &self,
            jti_digest: &str,
            expires_at: $crate::domain::Timestamp,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            let mut tx = self.pool.begin().await?;
            sqlx::query("DELETE FROM client_assertion_jtis WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let fresh = sqlx::query(
                "INSERT INTO client_assertion_jtis (jti_digest, expires_at) VALUES ($1, $2) \
                 ON CONFLICT (jti_digest) DO NOTHING",
            )
            .bind(jti_digest)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(fresh.rows_affected() == 1)
        }

        async fn purge_expired_logins_and_drafts(
            &self,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<u64> {
            let a = sqlx::query("DELETE FROM login_attempts WHERE expires_at <= $1")
                .bind(now)
                .execute(&self.pool)
                .await?;
            let b = sqlx::query("DELETE FROM mandate_drafts WHERE expires_at <= $1")
                .bind(now)
                .execute(&self.pool)
                .await?;
            let c = sqlx::query("DELETE FROM client_assertion_jtis WHERE expires_at <= $1")
                .bind(now)
                .execute(&self.pool)
                .await?;
            Ok(a.rows_affected() + b.rows_affected() + c.rows_affected())
        }
    }
    };
}
pub(crate) use impl_session_store;
