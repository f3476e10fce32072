//! Browser login through OpenID Connect: residents at `/auth/login` and
//! `/auth/callback` (FranceConnect-like provider), agents at
//! `/auth/agent/login` and `/auth/agent/callback` (ProConnect-like).
//!
//! Between the two legs the login is kept server-side (`login_attempts`),
//! keyed by a digest of the OAuth `state`, bound to the browser that started
//! it by a short-lived cookie, with the nonce and PKCE verifier sealed under a
//! key derived from that cookie. A state works once and for ten minutes.
//!
//! A resident's provider `sub` is never stored: only its keyed digest. The
//! identity the provider vouches for goes to the vault's `identity` category
//! (and the e-mail to `contact`). An agent is matched by a keyed digest of
//! their e-mail; their role comes from coffre's database, never from claims.
//!
//! Every completed or refused login whose state was genuine is audited;
//! requests with an unknown state are only logged (they carry nothing to
//! attribute, and would let anyone fill the audit log).

use crate::error::ErrorCode;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::AppState;
use crate::audit::AuditRecord;
use crate::crypto::{open_for_bearer, seal_for_bearer, sha256_hex};
use crate::domain::paths::resident_return_path;
use crate::domain::{DraftId, Role, Timestamp};
use crate::error::{AppError, AppResult};
use crate::oidc::{IdentityClaims, IdentityProvider, LoginKind, OidcError, VerifiedLogin};
use crate::service::Caller;
use crate::storage::LoginAttemptRow;

/// How long a login may stay between the two legs.
pub const LOGIN_ATTEMPT_SECS: i64 = 600;
const ATTEMPT_SEAL: &str = "login-attempt";

pub fn provider(state: &AppState, kind: LoginKind) -> AppResult<&IdentityProvider> {
    let configured = match kind {
        LoginKind::Resident => state.resident_login.as_deref(),
        LoginKind::Agent => state.agent_login.as_deref(),
    };
    configured.ok_or_else(|| match kind {
        LoginKind::Resident => ErrorCode::LoginNotConfigured.into(),
        LoginKind::Agent => ErrorCode::AgentLoginNotConfigured.into(),
    })
}

fn provider_unavailable(detail: &str) -> AppError {
    tracing::warn!(detail, "identity provider unavailable");
    ErrorCode::IdentityProviderUnavailable.into()
}

fn refusal(e: &OidcError) -> AppError {
    match e {
        OidcError::Unavailable(detail) => provider_unavailable(detail),
        OidcError::CodeRejected(_) => ErrorCode::OidcCodeRejected.into(),
        OidcError::IdTokenInvalid(_) => ErrorCode::OidcIdTokenInvalid.into(),
        OidcError::UserInfoInvalid(_) => ErrorCode::OidcUserinfoInvalid.into(),
    }
}

fn state_invalid() -> AppError {
    ErrorCode::OidcStateInvalid.into()
}

/// The live draft `id` of the aidant logged in in this browser (`None`: a
/// text that could name no draft).
pub async fn mandate_draft_of(
    state: &AppState,
    user: Option<&Caller>,
    id: Option<&DraftId>,
) -> AppResult<crate::storage::MandateDraftRow> {
    let refused = || ErrorCode::MandateDraftInvalid.into();
    let user = user.ok_or_else(refused)?;
    // A malformed id (`None`) names no draft: refused as an unknown one.
    let id = id.ok_or_else(refused)?;
    state
        .store
        .find_mandate_draft(id)
        .await?
        .filter(|d| d.aidant_id == user.actor_id.as_str() && d.expires_at > state.clock.now())
        .ok_or_else(refused)
}

/// Starts a login at `kind`'s provider: the attempt is kept server-side,
/// its nonce and PKCE verifier sealed under `browser`, a fresh random value
/// the caller binds to the browser (a short-lived cookie). Answers where
/// to send the browser.
pub async fn start(
    state: &AppState,
    kind: LoginKind,
    mandate_draft: Option<DraftId>,
    return_to: Option<&str>,
    browser: &str,
    now: Timestamp,
) -> AppResult<String> {
    let idp = provider(state, kind)?;
    let auth = idp
        .authorize(mandate_draft.is_some())
        .await
        .map_err(|e| refusal(&e))?;
    // Where to go once logged in travels sealed with the attempt: only a
    // page of the resident's own space, never another site.
    let return_to = return_to.and_then(resident_return_path);
    let secrets = serde_json::json!({"nonce": auth.nonce, "pkce_verifier": auth.pkce_verifier, "return_to": return_to});
    let sealed = seal_for_bearer(browser, ATTEMPT_SEAL, secrets.to_string().as_bytes())
        .map_err(|_| AppError::internal("sealing a login attempt"))?;
    state
        .store
        .insert_login_attempt(&LoginAttemptRow {
            state_digest: sha256_hex(&auth.state),
            browser_digest: sha256_hex(browser),
            provider: kind.as_str().to_string(),
            sealed,
            created_at: now,
            expires_at: now + LOGIN_ATTEMPT_SECS,
            mandate_draft,
        })
        .await?;
    Ok(auth.url.to_string())
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// Set by the provider when the person cancelled or the login failed.
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct AttemptSecrets {
    nonce: String,
    pkce_verifier: String,
    #[serde(default)]
    return_to: Option<String>,
}

/// What a completed login leads to.
pub enum LoginDone {
    /// Open a session for this person (the provider's ID token is kept,
    /// sealed, for logout).
    Session {
        actor_id: String,
        role: Role,
        id_token: String,
        /// The page the login was started from, to go back to.
        return_to: Option<String>,
    },
    /// A resident confirmed who they are for an aidant's mandate draft, in
    /// the aidant's browser: no session for them; back to the draft.
    Draft { draft_id: DraftId },
}

/// The provider sent the browser back: the attempt of `q.state` is taken
/// (it works once), checked against `browser` (the value bound to the
/// browser that started it), the code exchanged and the ID token verified;
/// the person found or created. Every outcome whose state was genuine is
/// recorded; `user` is the aidant logged in in this browser, for a mandate
/// draft.
pub async fn callback(
    state: &AppState,
    kind: LoginKind,
    request_id: Option<String>,
    user: Option<&Caller>,
    browser: &str,
    q: CallbackQuery,
    now: Timestamp,
) -> AppResult<LoginDone> {
    let idp = provider(state, kind)?;
    let Some(st) = q
        .state
        .as_deref()
        .filter(|s| !s.is_empty() && s.len() <= 512)
    else {
        return Err(state_invalid());
    };
    // Consumed whatever happens next: a state works once.
    let Some(attempt) = state.store.take_login_attempt(&sha256_hex(st)).await? else {
        tracing::warn!(
            provider = kind.as_str(),
            "login callback with an unknown state"
        );
        return Err(state_invalid());
    };
    let audit = AuditRecord::new("anonymous", kind.as_str(), "login", now).request(&request_id);
    let secrets: Option<AttemptSecrets> = if attempt.provider == kind.as_str()
        && attempt.expires_at > now
        && !browser.is_empty()
        && sha256_hex(browser) == attempt.browser_digest
    {
        open_for_bearer(browser, ATTEMPT_SEAL, &attempt.sealed)
            .and_then(|b| serde_json::from_slice(&b).ok())
    } else {
        None
    };
    let Some(secrets) = secrets else {
        return Err(crate::service::access::deny(state, audit, state_invalid()).await);
    };
    if q.error.is_some() {
        let refused = ErrorCode::OidcLoginRefused.into();
        return Err(crate::service::access::deny(state, audit, refused).await);
    }
    let Some(code) = q
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= 2048)
    else {
        return Err(crate::service::access::deny(state, audit, state_invalid()).await);
    };
    let login = match idp
        .finish(
            code,
            &secrets.pkce_verifier,
            &secrets.nonce,
            now,
            attempt.mandate_draft.as_ref().map(|_| attempt.created_at),
        )
        .await
    {
        Ok(login) => login,
        Err(e) => {
            tracing::warn!(provider = kind.as_str(), error = %e, "login refused");
            return Err(crate::service::access::deny(state, audit, refusal(&e)).await);
        }
    };
    if let Some(draft_id) = &attempt.mandate_draft {
        return mandate_login(state, idp, &login, draft_id, user, &request_id, audit, now).await;
    }
    let (actor_id, role) = match kind {
        LoginKind::Resident => (
            resident_from_login(state, idp, &login, &request_id, now)
                .await?
                .into_string(),
            Role::Resident,
        ),
        LoginKind::Agent => agent_from_login(state, &login, audit.clone()).await?,
    };
    state
        .audit
        .record(
            audit
                .by(&actor_id, role.as_str())
                .resident((role == Role::Resident).then(|| actor_id.clone()))
                .allow(&format!("oidc_{}", kind.as_str())),
        )
        .await?;
    tracing::info!(actor = %actor_id, role = role.as_str(), acr = ?login.acr, "login");
    Ok(LoginDone::Session {
        actor_id,
        role,
        id_token: login.id_token.clone(),
        return_to: secrets.return_to.as_deref().and_then(resident_return_path),
    })
}

/// A resident's login to confirm an aidant's mandate draft, in the aidant's
/// browser: the resident is attached to the draft and no resident session
/// is opened (the aidant's goes on). A renewal must be confirmed by the
/// mandate's own resident.
#[allow(clippy::too_many_arguments)]
async fn mandate_login(
    state: &AppState,
    idp: &IdentityProvider,
    login: &VerifiedLogin,
    draft_id: &DraftId,
    user: Option<&Caller>,
    request_id: &Option<String>,
    audit: AuditRecord,
    now: i64,
) -> AppResult<LoginDone> {
    let draft = match mandate_draft_of(state, user, Some(draft_id)).await {
        Ok(d) => d,
        Err(e) => return Err(crate::service::access::deny(state, audit, e).await),
    };
    let resident_id = resident_from_login(state, idp, login, request_id, now).await?;
    attach_resident(state, &draft, &resident_id, audit, "mandate_draft").await?;
    Ok(LoginDone::Draft { draft_id: draft.id })
}

/// Attaches the resident who just logged in (for real, or in demo mode) to
/// an aidant's draft: a renewal only by the mandate's own resident. The
/// login is recorded, allowed (`reason`) or refused.
pub async fn attach_resident(
    state: &AppState,
    draft: &crate::storage::MandateDraftRow,
    resident_id: &crate::domain::ResidentId,
    audit: AuditRecord,
    reason: &str,
) -> AppResult<()> {
    let audit = audit
        .by(resident_id.as_str(), Role::Resident.as_str())
        .resident(resident_id)
        .structure(&draft.structure_id)
        .action("mandate.resident_login");
    if let Some(renewed) = &draft.renews {
        let same = state
            .store
            .find_mandate(renewed)
            .await?
            .is_some_and(|m| m.resident_id == *resident_id);
        if !same {
            let refused = ErrorCode::RenewalOtherResident.into();
            return Err(crate::service::access::deny(state, audit, refused).await);
        }
    }
    state
        .store
        .set_draft_resident(&draft.id, resident_id)
        .await?;
    state.audit.record(audit.allow(reason)).await?;
    Ok(())
}

/// Finds or creates the resident behind a verified login, and refreshes the
/// identity the provider vouches for in the vault.
async fn resident_from_login(
    state: &AppState,
    idp: &IdentityProvider,
    login: &VerifiedLogin,
    request_id: &Option<String>,
    now: i64,
) -> AppResult<crate::domain::ResidentId> {
    let vault = state.vault()?;
    let digest = vault.keys().current().pseudonym(
        &format!("oidc-sub:{}", idp.issuer()),
        login.subject.as_bytes(),
    );
    let new_id = crate::domain::ResidentId::from_uuid(uuid::Uuid::new_v4());
    let (resident_id, created) = state
        .store
        .resident_for_login(&digest, &new_id, now)
        .await?;
    if created {
        state
            .audit
            .record(
                AuditRecord::new(
                    resident_id.as_str(),
                    Role::Resident.as_str(),
                    "resident.create",
                    now,
                )
                .resident(&resident_id)
                .request(request_id)
                .allow("first_login"),
            )
            .await?;
        tracing::info!(resident = %resident_id, "resident created at first login");
    }
    let (identity, contact) = vault_fields(&login.claims);
    for (category, fields) in [("identity", identity), ("contact", contact)] {
        refresh_category(state, &resident_id, category, fields, request_id, now).await?;
    }
    register_pivot(state, &resident_id, &login.claims).await;
    Ok(resident_id)
}

/// The resident's FranceConnect pivot identity, when the provider gave all
/// of it, kept as its keyed digest only (for the public-task sources that
/// match by pivot; the identity itself is in the vault). A pivot that
/// cannot be one is left out and logged, never its value; a failure here
/// does not fail the login.
async fn register_pivot(
    state: &AppState,
    resident_id: &crate::domain::ResidentId,
    c: &IdentityClaims,
) {
    // Every part, the birth country included: guessing France for a
    // missing one would register a digest nobody's pivot matches.
    let (Some(family_name), Some(given_names), Some(birthdate), Some(gender), Some(birthcountry)) = (
        c.family_name.clone(),
        c.given_name.clone(),
        c.birthdate.clone(),
        c.gender.clone(),
        c.birthcountry.clone(),
    ) else {
        return;
    };
    let pivot = crate::domain::deposit::PivotIdentity {
        family_name,
        given_names,
        birthdate,
        birthplace: c.birthplace.clone().unwrap_or_default(),
        birthcountry,
        gender,
    };
    if let Err(e) = super::deposits::register_pivot(state, resident_id, &pivot).await {
        let (code, _) = e.code_and_status();
        tracing::warn!(resident = %resident_id, code, "pivot identity not registered");
    }
}

/// The provider's claims as vault fields: identity, and contact (e-mail).
fn vault_fields(c: &IdentityClaims) -> (Map<String, Value>, Map<String, Value>) {
    let mut identity = Map::new();
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            identity.insert(k.to_string(), Value::String(v.clone()));
        }
    };
    put("given_name", &c.given_name);
    put("family_name", &c.family_name);
    put("birthdate", &c.birthdate);
    put("gender", &c.gender);
    put("birthplace", &c.birthplace);
    put("birthcountry", &c.birthcountry);
    put("preferred_username", &c.preferred_username);
    let mut contact = Map::new();
    if let (Some(email), Some(true) | None) = (&c.email, c.email_verified) {
        contact.insert("email".into(), Value::String(email.clone()));
    }
    (identity, contact)
}

/// Writes a new version of `category` with the provider's fields merged over
/// the current ones, when they differ. A field the category refuses (an
/// unexpected format from the provider) is left out and named in the log,
/// never its value.
async fn refresh_category(
    state: &AppState,
    resident_id: &crate::domain::ResidentId,
    category: &str,
    from_provider: Map<String, Value>,
    request_id: &Option<String>,
    now: i64,
) -> AppResult<()> {
    if from_provider.is_empty() {
        return Ok(());
    }
    let vault = state.vault()?;
    let category = vault
        .categories()
        .category(category)
        .map_err(crate::service::vault::VaultError::from)?;
    let current = vault
        .read_current_category(resident_id, &category)
        .await?
        .map(|r| r.fields)
        .unwrap_or_default();
    let mut merged = current.clone();
    for (field, value) in from_provider {
        let one = Value::Object(Map::from_iter([(field.clone(), value.clone())]));
        if vault.categories().validate(&category, &one).is_ok() {
            merged.insert(field, value);
        } else {
            tracing::warn!(category = category.as_str(), field = %field, "provider claim refused by the category; left out");
        }
    }
    if merged == current {
        return Ok(());
    }
    let entry = state
        .audit
        .record(
            AuditRecord::new(
                resident_id.as_str(),
                Role::Resident.as_str(),
                "data.write",
                now,
            )
            .resident(resident_id)
            .category(category.as_str())
            .request(request_id)
            .allow("identity_provider"),
        )
        .await?;
    vault
        .write(resident_id, &category, &Value::Object(merged), now)
        .await?;
    tracing::info!(resident = %resident_id, category = category.as_str(), audit_entry = entry, "identity refreshed from the provider");
    Ok(())
}

/// The agent behind a verified login, matched by e-mail digest; the role is
/// the one in coffre's database.
async fn agent_from_login(
    state: &AppState,
    login: &VerifiedLogin,
    audit: AuditRecord,
) -> AppResult<(String, Role)> {
    let Some(email) = login.claims.email.as_deref() else {
        let refused = ErrorCode::AgentEmailMissing.into();
        return Err(crate::service::access::deny(state, audit, refused).await);
    };
    if login.claims.email_verified == Some(false) {
        let refused = ErrorCode::AgentEmailUnverified.into();
        return Err(crate::service::access::deny(state, audit, refused).await);
    }
    let digest = agent_email_digest(state, email)?;
    let Some(agent) = state.store.find_agent_by_email_digest(&digest).await? else {
        let refused = ErrorCode::AgentUnknown.into();
        return Err(crate::service::access::deny(state, audit, refused).await);
    };
    let role = agent.role;
    let audit = audit
        .by(agent.id.as_str(), role.as_str())
        .structure(&agent.structure_id);
    if !agent.active {
        let refused = ErrorCode::AgentInactive.into();
        return Err(crate::service::access::deny(state, audit, refused).await);
    }
    Ok((agent.id.into_string(), role))
}

/// Keyed digest of an agent's e-mail (case-insensitive): how agents are
/// matched at login without their address being stored in clear.
pub fn agent_email_digest(state: &AppState, email: &str) -> AppResult<String> {
    let vault = state.vault()?;
    Ok(vault
        .keys()
        .current()
        .pseudonym("agent-email", email.trim().to_lowercase().as_bytes()))
}

/// Records a demo persona's login (demo mode only, loopback only), before
/// its session opens.
pub async fn record_demo_login(
    state: &AppState,
    persona: &Caller,
    now: Timestamp,
) -> AppResult<()> {
    state
        .audit
        .record(persona.record("login", now).allow("demo_login"))
        .await?;
    Ok(())
}

/// Demo mode's stand-in for a resident's login during the mandate journey:
/// attaches a demo resident to the aidant's draft, as a real login does.
pub async fn attach_demo_resident(
    state: &AppState,
    draft: &crate::storage::MandateDraftRow,
    resident_id: &crate::domain::ResidentId,
    request_id: Option<String>,
    now: Timestamp,
) -> AppResult<()> {
    let audit =
        AuditRecord::new("anonymous", Role::Resident.as_str(), "login", now).request(request_id);
    attach_resident(state, draft, resident_id, audit, "demo_login").await
}
