//! Data sources (BRIEF C11): their credentials and tokens, and the
//! resident's authorisation of a link source — a pairing code read aloud
//! at a counter, or an approval on coffre's page sent back to the source's
//! registered redirect URI — exchanged by the source for a handle.
//!
//! A source deposits and never reads: its token (audience
//! `coffre-source`) reaches only the source routes, and the handle it gets
//! is a keyed pseudonym per source, so two sources cannot join what they
//! know of a resident. Every act is audited before it happens.

use serde::Serialize;
use utoipa::ToSchema;

use super::partners::TokenResponse;
use super::{Audited, Caller};
use crate::AppState;
use crate::audit::AuditRecord;
use crate::domain::deposit::{LINK_CODE_SECS, canonical_pairing_code, pairing_code};
use crate::domain::rights::ObjectionTo;
use crate::domain::source::{Matching, Source};
use crate::domain::{Role, Timestamp};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::storage::LinkCodeKind;

/// The audience of a source's access tokens.
pub const SOURCE_AUDIENCE: &str = "coffre-source";

/// A source's valid access token, from an active source still in the
/// register.
#[derive(Clone, Debug)]
pub struct SourceCaller {
    pub source_id: String,
    pub request_id: Option<String>,
}

impl SourceCaller {
    pub(crate) fn record(&self, action: &str, now: Timestamp) -> AuditRecord {
        AuditRecord::new(&self.source_id, Role::Source.as_str(), action, now)
            .request(&self.request_id)
    }
}

/// A pairing code for the resident to give the source (at a counter, by
/// phone).
#[derive(Debug, Serialize, ToSchema)]
pub struct PairingCode {
    /// `XXXX-XXXX`, one use, 15 minutes.
    pub pairing_code: String,
    pub expires_at: Timestamp,
}

/// What a source gets for a code: the handle it names the resident by.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkHandle {
    /// Stable per (source, resident); unlinkable across sources.
    pub handle: String,
}

/// A source as the resident sees it: what it may deposit and the link.
#[derive(Debug, Serialize, ToSchema)]
pub struct MySource {
    pub id: String,
    pub name_fr: String,
    pub name_en: String,
    pub controller: String,
    pub basis: crate::domain::source::SourceBasis,
    pub matching: Matching,
    pub categories: Vec<String>,
    /// `linked`, `revoked`, `not_linked`, or `public_task` (no link: the
    /// source names the resident by their pivot identity).
    pub link: String,
    pub linked_at: Option<Timestamp>,
    pub last_deposit_at: Option<Timestamp>,
    /// GDPR art. 14: when this source first deposited data about me, and
    /// how many versions of my records it deposited (none: absent).
    pub first_deposit_at: Option<Timestamp>,
    pub deposits: u64,
    /// A public-task source I objected to (art. 21): its deposits about me
    /// are refused.
    pub objected: bool,
}

fn source_of<'a>(state: &'a AppState, id: &str) -> AppResult<&'a Source> {
    state.sources.get(id).ok_or(AppError::NotFound)
}

/// A link source of the register, or the refusal to link to it.
fn link_source_of<'a>(state: &'a AppState, id: &str) -> AppResult<&'a Source> {
    let source = source_of(state, id)?;
    if source.matching != Matching::Link {
        return Err(ErrorCode::SourceNotLinkable.into());
    }
    Ok(source)
}

/// The one decision about a resident's own act on a source's link,
/// recorded with the source named (`source:ID` where a purpose would be).
async fn own_link_act(
    state: &AppState,
    caller: &Caller,
    action: &str,
    source: &Source,
) -> AppResult<u64> {
    let about = format!("source:{}", source.id);
    super::access::decide(
        state,
        super::access::AccessRequest {
            own: true,
            resident_id: Some(&caller.actor_id),
            purpose_id: Some(&about),
            request_id: caller.request_id.clone(),
            ..super::access::AccessRequest::new(&caller.actor_id, caller.role, action)
        },
    )
    .await
}

/// A link code as stored: keyed (a pairing code has ~36 bits; a stolen
/// database must not yield the waiting codes by brute force), within the
/// source's own domain.
fn code_digest(state: &AppState, source_id: &str, code: &str) -> AppResult<String> {
    let keys = state.vault()?.keys().current();
    Ok(keys.pseudonym(&format!("source-link-code:{source_id}"), code.as_bytes()))
}

/// The handle of a resident for a source: a keyed pseudonym within the
/// source's own domain.
fn handle_of(
    state: &AppState,
    source_id: &str,
    resident_id: &crate::domain::ResidentId,
) -> AppResult<String> {
    let keys = state.vault()?.keys().current();
    Ok(keys.pseudonym(
        &format!("source-handle:{source_id}"),
        resident_id.as_str().as_bytes(),
    ))
}

/// A source's credentials, printed once by `coffre source add`.
pub struct SourceCredentials {
    pub client_id: String,
    pub client_secret: String,
}

impl std::fmt::Debug for SourceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .finish()
    }
}

/// An operator's act on a source, which the entry names as its resource
/// (`source:{id}`): a source id is not personal data.
fn operator_act(caller: &Caller, action: &str, id: &str, now: Timestamp) -> AuditRecord {
    caller
        .record(action, now)
        .category(format!("source:{id}"))
        .allow("operator")
}

/// Registers client credentials for a source of the register. The secret
/// is returned once; only its digest is stored.
pub async fn register_client(
    state: &AppState,
    caller: &Caller,
    id: &str,
    name: &str,
    now: Timestamp,
) -> AppResult<Audited<SourceCredentials>> {
    if state.sources.get(id).is_none() {
        return Err(ErrorCode::UnknownSource.with(format!("`{id}` is not in sources.toml")));
    }
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ErrorCode::InvalidParameter.with("`name`: 1 to 200 characters"));
    }
    // Refused before it is recorded: the log keeps acts, not failed tries
    // (a concurrent add still fails on the key, below).
    if state.store.find_source_client(id).await?.is_some() {
        return Err(ErrorCode::Conflict.into());
    }
    let random = |what: &str| AppError::internal(format!("system random generator failed: {what}"));
    let client_secret = crate::crypto::random_token().map_err(|_| random("secret"))?;
    let suffix = crate::crypto::random_token().map_err(|_| random("client id"))?;
    // `src-`: a source's client id can never shadow a partner's at the
    // shared token endpoint (partners' are `{id}-{hex}`).
    let client_id = format!(
        "src-{id}-{}",
        suffix
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect::<String>()
            .to_ascii_lowercase()
    );
    let entry = state
        .audit
        .record(operator_act(caller, "source.add", id, now))
        .await?;
    state
        .store
        .insert_source_client(
            &crate::storage::SourceClientRow {
                id: id.to_string(),
                name: name.to_string(),
                client_id: client_id.clone(),
                client_secret_hash: crate::crypto::sha256_hex(&client_secret),
                active: true,
            },
            now,
        )
        .await?;
    Ok(Audited::new(
        entry,
        SourceCredentials {
            client_id,
            client_secret,
        },
    ))
}

/// Deactivates (credentials leaked, agreement ended) or reactivates a
/// source: its tokens, even unexpired ones, are refused from the next
/// request on.
pub async fn set_client_active(
    state: &AppState,
    caller: &Caller,
    id: &str,
    active: bool,
    now: Timestamp,
) -> AppResult<Audited<()>> {
    if state.store.find_source_client(id).await?.is_none() {
        return Err(AppError::NotFound);
    }
    let action = if active {
        "source.activate"
    } else {
        "source.deactivate"
    };
    let entry = state
        .audit
        .record(operator_act(caller, action, id, now))
        .await?;
    if !state.store.set_source_client_active(id, active).await? {
        return Err(AppError::NotFound);
    }
    Ok(Audited::new(entry, ()))
}

/// Issues an access token to an active source of the register, after
/// checking its secret (`client_secret_basic`). Every failure is
/// `invalid_client`.
pub async fn issue_token(
    state: &AppState,
    client_id: &str,
    secret: &str,
) -> AppResult<TokenResponse> {
    let invalid = || AppError::from(ErrorCode::InvalidClient);
    let source = state
        .store
        .find_source_client_by_client_id(client_id)
        .await?
        .filter(|s| s.active)
        .ok_or_else(invalid)?;
    // Digests are compared, so timing says nothing about the secret.
    if crate::crypto::sha256_hex(secret) != source.client_secret_hash {
        return Err(invalid());
    }
    // A source taken off the register gets no token.
    if state.sources.get(&source.id).is_none() {
        return Err(invalid());
    }
    let response = super::partners::sign_access_token(state, &source.id, SOURCE_AUDIENCE, vec![])?;
    tracing::info!(source = %source.id, "source access token issued");
    Ok(response)
}

/// Verifies a source's bearer token at `now` (signature, audience, time
/// window), then that the source is active and still in the register.
pub async fn verify_token(
    state: &AppState,
    token: &str,
    request_id: Option<String>,
    now: Timestamp,
) -> AppResult<SourceCaller> {
    let invalid = |why: &str| {
        tracing::info!(why, "source token refused");
        AppError::from(ErrorCode::InvalidToken)
    };
    let keys = state.vault()?.keys().current();
    let claims = super::partners::verify_access_token(
        state,
        token,
        &keys.signing_public_key(),
        SOURCE_AUDIENCE,
    )?;
    if claims.exp <= now
        || claims.nbf > now
        || claims.exp - claims.iat > super::partners::TOKEN_LIFETIME_SECS
    {
        return Err(invalid("expired or not yet valid"));
    }
    let active = state
        .store
        .find_source_client(&claims.sub)
        .await?
        .is_some_and(|s| s.active);
    if !active || state.sources.get(&claims.sub).is_none() {
        return Err(invalid("source inactive or off the register"));
    }
    Ok(SourceCaller {
        source_id: claims.sub,
        request_id,
    })
}

/// Whether a source whose token was valid when its stream began may go on
/// depositing: it is still active and still in the register. A long
/// stream asks this as it goes (a stream may outlast its token's five
/// minutes; a deactivation must not wait for the stream's end).
pub async fn still_depositing(state: &AppState, caller: &SourceCaller) -> AppResult<()> {
    let active = state
        .store
        .find_source_client(&caller.source_id)
        .await?
        .is_some_and(|s| s.active);
    if !active || state.sources.get(&caller.source_id).is_none() {
        tracing::info!(source = %caller.source_id, "deposit stream stopped: source inactive or off the register");
        return Err(ErrorCode::InvalidToken.into());
    }
    Ok(())
}

/// The resident asks for a pairing code to give a link source.
pub async fn start_pairing(
    state: &AppState,
    caller: &Caller,
    source_id: &str,
    now: Timestamp,
) -> AppResult<Audited<PairingCode>> {
    let source = link_source_of(state, source_id)?;
    let entry = own_link_act(state, caller, "source.link.start", source).await?;
    let me = caller.resident_id()?;
    let code = {
        use ring::rand::SecureRandom;
        let rng = ring::rand::SystemRandom::new();
        let mut failed = false;
        let code = pairing_code(|| {
            let mut b = [0u8; 1];
            failed |= rng.fill(&mut b).is_err();
            b[0]
        });
        if failed {
            return Err(AppError::internal("system random generator failed"));
        }
        code
    };
    let expires_at = now + LINK_CODE_SECS;
    let stored = state
        .store
        .insert_link_code(
            &code_digest(state, &source.id, &code)?,
            &source.id,
            &me,
            LinkCodeKind::Pairing,
            None,
            now,
            expires_at,
        )
        .await?;
    if !stored {
        return Err(AppError::NotFound);
    }
    Ok(Audited::new(
        entry,
        PairingCode {
            pairing_code: code,
            expires_at,
        },
    ))
}

/// A source's `state` parameter, echoed in the redirect: unreserved URL
/// characters only (nothing to escape, no header to break), 1 to 256.
pub fn valid_client_state(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// The resident approved a link on coffre's page, coming from the
/// source's site: an authorisation code for the registered `redirect_uri`
/// (compared exactly). Returns the URL to send the resident back to.
pub async fn authorise(
    state: &AppState,
    caller: &Caller,
    source_id: &str,
    redirect_uri: &str,
    client_state: &str,
    now: Timestamp,
) -> AppResult<Audited<String>> {
    let source = link_source_of(state, source_id)?;
    // A refused redirect is recorded: probing for open redirects shows.
    let refuse = |e: AppError| {
        let entry = caller
            .record("source.link.authorise", now)
            .resident(&caller.actor_id)
            .purpose(format!("source:{}", source.id));
        super::access::deny(state, entry, e)
    };
    if !source.redirect_allowed(redirect_uri) {
        return Err(refuse(ErrorCode::RedirectUriNotRegistered.into()).await);
    }
    if !valid_client_state(client_state) {
        return Err(refuse(ErrorCode::InvalidParameter.with("`state`")).await);
    }
    let entry = own_link_act(state, caller, "source.link.authorise", source).await?;
    let me = caller.resident_id()?;
    let code = crate::crypto::random_token()
        .map_err(|_| AppError::internal("system random generator failed"))?;
    let stored = state
        .store
        .insert_link_code(
            &code_digest(state, &source.id, &code)?,
            &source.id,
            &me,
            LinkCodeKind::Authorisation,
            Some(redirect_uri),
            now,
            now + LINK_CODE_SECS,
        )
        .await?;
    if !stored {
        return Err(AppError::NotFound);
    }
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    Ok(Audited::new(
        entry,
        format!("{redirect_uri}{sep}code={code}&state={client_state}"),
    ))
}

/// The source exchanges a pairing or authorisation code for the
/// resident's handle. The code is looked up, the one decision asked and its
/// entry written, and only then is the code consumed and the link made, in
/// one transaction. An expired, reused, foreign or unknown code is
/// `invalid_grant`, and recorded.
pub async fn exchange(
    state: &AppState,
    caller: &SourceCaller,
    code: &str,
    now: Timestamp,
) -> AppResult<Audited<LinkHandle>> {
    let source = link_source_of(state, &caller.source_id)?;
    let refuse = |resident: Option<&str>| {
        let entry = caller
            .record("source.link.exchange", now)
            .resident(resident)
            .purpose(format!("source:{}", source.id));
        super::access::deny(state, entry, ErrorCode::InvalidGrant.into())
    };
    // A pairing code may come typed by hand; an authorisation code as sent.
    let code = canonical_pairing_code(code).unwrap_or_else(|| code.to_string());
    if code.is_empty() || code.len() > 128 {
        return Err(refuse(None).await);
    }
    let digest = code_digest(state, &source.id, &code)?;
    let Some(found) = state
        .store
        .peek_link_code(&digest, &source.id)
        .await?
        .filter(|c| c.expires_at > now)
    else {
        return Err(refuse(None).await);
    };
    let handle = handle_of(state, &source.id, &found.resident_id)?;
    let about = format!("source:{}", source.id);
    let entry = super::access::decide(
        state,
        super::access::AccessRequest {
            resident_id: Some(found.resident_id.as_str()),
            purpose_id: Some(&about),
            request_id: caller.request_id.clone(),
            ..super::access::AccessRequest::new(
                &caller.source_id,
                Role::Source,
                "source.link.exchange",
            )
        },
    )
    .await?;
    if !state
        .store
        .exchange_link_code(&digest, &source.id, &found.resident_id, &handle, now)
        .await?
    {
        // Taken by a concurrent exchange, revoked, or the resident erased
        // between the look and the act.
        return Err(refuse(Some(found.resident_id.as_str())).await);
    }
    Ok(Audited::new(entry, LinkHandle { handle }))
}

/// The name of the account the resident is logged in to, for the approval
/// page: a browser logged in to someone else's account (a login CSRF)
/// shows a name that is not theirs before a source is linked to it.
/// Reading one's own identity is recorded like any read of one's data.
pub async fn approving_account(
    state: &AppState,
    caller: &Caller,
) -> AppResult<Audited<Option<String>>> {
    let entry =
        super::access::own_data(state, caller, "source.link.view", Some("identity")).await?;
    let me = caller.resident_id()?;
    let name = super::drafts::resident_name(state, &me).await?;
    Ok(Audited::new(entry, name))
}

/// The resident's sources: every source of the register that may deposit
/// about them, what it may deposit, and the link.
pub async fn my_sources(state: &AppState, caller: &Caller) -> AppResult<Audited<Vec<MySource>>> {
    let entry = super::access::own_data(state, caller, "source.read", None).await?;
    let me = caller.resident_id()?;
    let out = sources_of(state, &me).await?;
    Ok(Audited::new(entry, out))
}

/// The sources of the register as they stand for `resident` (for their
/// page, and their export, whose own entry covers the read).
pub(crate) async fn sources_of(
    state: &AppState,
    resident: &crate::domain::ResidentId,
) -> AppResult<Vec<MySource>> {
    let links = state.store.source_links_of(resident).await?;
    let deposited = state.store.deposited_versions(resident).await?;
    let objections = state.store.objections_of(resident).await?;
    let out = state
        .sources
        .all()
        .map(|s| {
            let link = links.iter().find(|l| l.source_id == s.id);
            MySource {
                id: s.id.clone(),
                name_fr: s.name_fr.clone(),
                name_en: s.name_en.clone(),
                controller: s.controller.clone(),
                basis: s.basis,
                matching: s.matching,
                categories: s.categories.clone(),
                link: match (s.matching, link) {
                    (Matching::Pivot, _) => "public_task",
                    (_, Some(l)) if l.revoked_at.is_none() => "linked",
                    (_, Some(_)) => "revoked",
                    (_, None) => "not_linked",
                }
                .to_string(),
                linked_at: link.map(|l| l.created_at),
                last_deposit_at: deposited
                    .iter()
                    .filter(|d| d.source_id == s.id)
                    .map(|d| d.created_at)
                    .max(),
                first_deposit_at: deposited
                    .iter()
                    .filter(|d| d.source_id == s.id)
                    .map(|d| d.created_at)
                    .min(),
                deposits: deposited.iter().filter(|d| d.source_id == s.id).count() as u64,
                objected: objections
                    .iter()
                    .any(|(p, _)| p.strip_prefix("source:") == Some(s.id.as_str())),
            }
        })
        .collect();
    Ok(out)
}

/// The resident revokes a source's link: from now on its deposits about
/// them are refused (`no_link`). What it deposited before stays unless the
/// resident asks to erase it (`erase`): every version it deposited goes,
/// recorded as its own act; the resident's own versions stay.
pub async fn revoke(
    state: &AppState,
    caller: &Caller,
    source_id: &str,
    erase: bool,
    now: Timestamp,
) -> AppResult<Audited<()>> {
    let source = link_source_of(state, source_id)?;
    // Someone who is not a resident has no link: refused below, recorded.
    let me = caller.resident_id().ok();
    let links = match &me {
        Some(me) => state.store.source_links_of(me).await?,
        None => Vec::new(),
    };
    let link = links.iter().find(|l| l.source_id == source.id);
    let standing = link.is_some_and(|l| l.revoked_at.is_none());
    let waiting = !standing
        && match &me {
            Some(me) => state.store.has_link_codes(&source.id, me).await?,
            None => false,
        };
    // Erasing what a source deposited stays possible once the link is gone:
    // revoked earlier without erasure, or a revocation whose erasure did
    // not finish (asking again completes it).
    let erasable = erase && link.is_some();
    // Nothing to act on (no link, no waiting code): a recorded refusal,
    // not an allowed act that then changes nothing.
    if !standing && !waiting && !erasable {
        let entry = caller
            .record("source.link.revoke", now)
            .resident(&caller.actor_id)
            .purpose(format!("source:{}", source.id));
        return Err(super::access::deny(state, entry, ErrorCode::NoLink.into()).await);
    }
    // Invariant: with no resident id there is no link nor code, so the
    // recorded refusal above has answered already; never reached.
    let me = me.ok_or_else(|| AppError::from(ErrorCode::ResidentOnly))?;
    let mut entry = None;
    if standing || waiting {
        entry = Some(own_link_act(state, caller, "source.link.revoke", source).await?);
        let revoked = state.store.revoke_source_link(&source.id, &me, now).await?;
        if !revoked && !erasable {
            return Err(ErrorCode::NoLink.into());
        }
    }
    if erase {
        let erased = own_link_act(state, caller, "source.deposits.erase", source).await?;
        let n = state.store.erase_source_deposits(&source.id, &me).await?;
        tracing::info!(source = %source.id, versions = n, "a source's deposits erased at the resident's request");
        entry = entry.or(Some(erased));
    }
    let entry = entry.ok_or_else(|| AppError::from(ErrorCode::NoLink))?;
    Ok(Audited::new(entry, ()))
}

/// Deletes the link codes whose 15 minutes are over (a background job):
/// no code names a resident longer than it can be used.
pub async fn purge_expired_codes(state: &AppState, now: Timestamp) -> AppResult<u64> {
    Ok(state.store.purge_link_codes(now).await?)
}

/// The demo's link: as if the resident had given the source a code
/// (`coffre serve --demo` only; recorded like an exchange). Returns the
/// handle.
pub(crate) async fn link_for_demo(
    state: &AppState,
    source_id: &str,
    resident_id: &crate::domain::ResidentId,
    now: Timestamp,
) -> AppResult<String> {
    let handle = handle_of(state, source_id, resident_id)?;
    state
        .audit
        .record(
            AuditRecord::new(
                source_id,
                Role::Source.as_str(),
                "source.link.exchange",
                now,
            )
            .resident(resident_id)
            .purpose(format!("source:{source_id}"))
            .allow("demo"),
        )
        .await?;
    state
        .store
        .link_source(source_id, resident_id, &handle, now)
        .await?;
    Ok(handle)
}

/// The resident objects (GDPR art. 21) to a public-task source's deposits
/// about them: from now on its lines about them are refused (`objection`).
/// A source on the resident's authorisation is revoked instead.
pub async fn object(
    state: &AppState,
    caller: &Caller,
    source_id: &str,
    now: Timestamp,
) -> AppResult<Audited<()>> {
    let source = source_of(state, source_id)?;
    if source.basis != crate::domain::source::SourceBasis::PublicTask {
        return Err(ErrorCode::ObjectionNotApplicable.into());
    }
    let entry = own_link_act(state, caller, "source.objection", source).await?;
    let me = caller.resident_id()?;
    state
        .store
        .add_objection(&me, ObjectionTo::Source(&source.id), now)
        .await?;
    Ok(Audited::new(entry, ()))
}

/// Lifts an objection to a public-task source.
pub async fn lift_objection(
    state: &AppState,
    caller: &Caller,
    source_id: &str,
) -> AppResult<Audited<()>> {
    let source = source_of(state, source_id)?;
    let entry = own_link_act(state, caller, "source.objection.lift", source).await?;
    let me = caller.resident_id()?;
    if !state
        .store
        .remove_objection(&me, ObjectionTo::Source(&source.id))
        .await?
    {
        return Err(AppError::NotFound);
    }
    Ok(Audited::new(entry, ()))
}
