//! Browser sessions (opened after a login, found by the digest of their
//! cookie, touched as they are used, ended at logout) and what the
//! operator's probes ask of the service (readiness).
//!
//! The cookie itself is the HTTP layer's; here a session is its token's
//! SHA-256 and its row. The token never reaches the database or a log.

use crate::AppState;
use crate::crypto::sha256_hex;
use crate::domain::{Role, Timestamp};
use crate::error::ErrorCode;
use crate::error::{AppError, AppResult};
use crate::service::Caller;
use crate::storage::NewSession;

/// Sessions end after 8 hours, a working day, whatever the activity.
pub const SESSION_LIFETIME_SECS: i64 = 8 * 3600;
/// ... and after 30 minutes without a request (ANSSI's recommendation for
/// sensitive services; a shared computer at a France Services desk is the
/// case to protect).
pub const SESSION_IDLE_SECS: i64 = 30 * 60;
/// Activity is written at most once a minute per session, not per request.
const TOUCH_EVERY_SECS: i64 = 60;

/// A live session, found by its token's digest.
pub struct Session {
    pub actor_id: String,
    pub role: Role,
    pub csrf_token: String,
    pub provider: String,
    pub token_hash: String,
    pub id_token_sealed: Option<String>,
}

/// Opens a session for `actor_id` under the bearer `token` (a fresh random
/// token the caller sets as the cookie). `provider` says who vouched for
/// the login (`demo`, `resident`, `agent`); the provider's ID token, if
/// any, is kept sealed under the token, for logout.
pub async fn open(
    state: &AppState,
    token: &str,
    actor_id: &str,
    role: Role,
    provider: &str,
    id_token_sealed: Option<&str>,
    now: Timestamp,
) -> AppResult<String> {
    let csrf = crate::crypto::random_token()
        .map_err(|_| AppError::internal("system random generator failed"))?;
    state
        .store
        .create_session(&NewSession {
            token_hash: &sha256_hex(token),
            actor_id,
            role,
            csrf_token: &csrf,
            now,
            expires_at: now + SESSION_LIFETIME_SECS,
            provider,
            id_token_sealed,
        })
        .await?;
    Ok(csrf)
}

/// The live session of `token` at `now`, if any (touched at most once a
/// minute, so the idle limit counts from the last use).
pub async fn find(state: &AppState, token: &str, now: Timestamp) -> AppResult<Option<Session>> {
    let token_hash = sha256_hex(token);
    let Some(row) = state
        .store
        .find_session(&token_hash, now, now - SESSION_IDLE_SECS)
        .await?
    else {
        return Ok(None);
    };
    let role = row.role;
    if now - row.last_seen_at >= TOUCH_EVERY_SECS {
        state.store.touch_session(&token_hash, now).await?;
    }
    Ok(Some(Session {
        actor_id: row.actor_id,
        role,
        csrf_token: row.csrf_token,
        provider: row.provider,
        token_hash,
        id_token_sealed: row.id_token_sealed,
    }))
}

/// Ends a session: recorded first, then deleted.
pub async fn logout(
    state: &AppState,
    caller: &Caller,
    token_hash: &str,
    now: Timestamp,
) -> AppResult<()> {
    state
        .audit
        .record(caller.record("logout", now).allow("own_session"))
        .await?;
    state.store.delete_session(token_hash).await?;
    Ok(())
}

/// An agent's display name, to greet them (a resident's name is their
/// data, read through the vault, never here).
pub async fn agent_display_name(state: &AppState, caller: &Caller) -> AppResult<Option<String>> {
    if !caller.role.is_agent() {
        return Ok(None);
    }
    let Some(id) = caller.agent_id() else {
        return Ok(None);
    };
    Ok(state.store.find_agent(&id).await?.map(|a| a.display_name))
}

/// The service can do its work: the database answers and the keys are
/// loaded; otherwise the reason, as a 503. Answers the backend's name.
pub async fn readiness(state: &AppState) -> AppResult<&'static str> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness: database unreachable");
        AppError::from(ErrorCode::DatabaseUnavailable)
    })?;
    if state.is_sealed() {
        return Err(ErrorCode::Sealed.into());
    }
    if let Some(reason) = state.keys_problem() {
        tracing::warn!(reason, "readiness: keys unavailable");
        return Err(ErrorCode::KeysUnavailable.into());
    }
    Ok(state.store.backend().as_str())
}
