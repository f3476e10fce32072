//! Mandates (mandats) for aidants: creation with the resident's login and
//! the aidant's TOTP step-up, signed attestations, revocation with signed
//! receipts, and the aidant context every agent route starts from.
//!
//! The uniqueness of live authorisations per (resident, structure, démarche)
//! is the database's (a partial unique index); this module never relies on
//! having checked first.

use crate::domain::notice::NoticeEvent;
use crate::error::ErrorCode;
use crate::storage::OutboxMessage;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::crypto::{DataKey, SealContext, WrappedDataKey};
use crate::domain::mandate::{AuthorisationState, TEMPLATE_VERSION, authorisation_state, totp};
use crate::domain::{AgentId, Demarche, DraftId, MandateId, Role, Timestamp};
use crate::error::{AppError, AppResult};
use crate::storage::{AgentRow, MandateRow, StorageError, StructureRow, TotpRow};

const DAY: i64 = 86_400;

/// An agent acting now: their row and their current structure.
#[derive(Clone, Debug)]
pub struct AgentContext {
    pub agent: AgentRow,
    pub role: Role,
    pub structure: StructureRow,
}

impl AgentContext {
    pub fn allowed_demarches(&self) -> Vec<Demarche> {
        let mut ds = self.structure.allowed_demarches.clone();
        ds.sort();
        ds.dedup();
        ds
    }
}

/// Loads the agent behind a session, refusing deactivated agents and agents
/// without an active structure.
pub async fn agent_context(
    state: &AppState,
    agent_id: &str,
    role: Role,
) -> AppResult<AgentContext> {
    if !matches!(role, Role::Aidant | Role::Referent) {
        return Err(ErrorCode::AidantOnly.into());
    }
    // A session's actor id that is no agent id names no agent.
    let agent = match AgentId::parse(agent_id) {
        Ok(id) => state.store.find_agent(&id).await?,
        Err(_) => None,
    }
    .ok_or_else(|| AppError::from(ErrorCode::AgentUnknown))?;
    if !agent.active {
        return Err(ErrorCode::AgentInactive.into());
    }
    // The current structure, if it is active and the agent still belongs
    // to it (a référent may have removed them): one query.
    let structure = match &agent.structure_id {
        Some(id) => state.store.active_structure_of(&agent.id, id).await?,
        None => None,
    }
    .ok_or_else(|| AppError::from(ErrorCode::StructureInactive))?;
    Ok(AgentContext {
        agent,
        role,
        structure,
    })
}

// --- TOTP step-up ---------------------------------------------------------

fn totp_context(agent_id: &AgentId) -> SealContext<'_> {
    SealContext {
        resident_id: agent_id.as_str(),
        category: "totp",
        record_id: agent_id.as_str(),
        version: 1,
        provenance: None,
    }
}

/// Gives an agent a new TOTP secret (replacing any), sealed under a data key
/// of its own wrapped by the current KEK. Returns the secret, to be shown
/// once (as an `otpauth://` URI) and never again.
pub async fn enroll_totp(
    state: &AppState,
    agent_id: &AgentId,
    now: Timestamp,
) -> AppResult<Vec<u8>> {
    let mut secret = vec![0u8; 20];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| AppError::internal("system random generator failed"))?;
    enroll_totp_secret(state, agent_id, &secret, now).await?;
    Ok(secret)
}

/// Stores a given TOTP secret for an agent (the demo's published one; a
/// card's factory secret).
pub async fn enroll_totp_secret(
    state: &AppState,
    agent_id: &AgentId,
    secret: &[u8],
    now: Timestamp,
) -> AppResult<()> {
    let vault = state.vault()?;
    let keys = vault.keys().current();
    let dk = DataKey::generate().map_err(|_| AppError::internal("data key"))?;
    let wrapped = keys
        .wrap_data_key(&format!("agent:{agent_id}"), &dk)
        .map_err(|_| AppError::internal("wrapping the TOTP key"))?;
    let sealed = crate::crypto::seal(&dk, &totp_context(agent_id), secret)
        .map_err(|_| AppError::internal("sealing the TOTP secret"))?;
    state
        .store
        .upsert_totp(&TotpRow {
            agent_id: agent_id.clone(),
            kek_version: i64::from(wrapped.kek_version),
            wrapped_key: wrapped.bytes,
            sealed_secret: sealed,
            last_step: 0,
            failures: 0,
            locked_until: 0,
            created_at: now,
        })
        .await?;
    Ok(())
}

/// The `otpauth://` URI an authenticator app (or a TOTP card's enrolment)
/// takes.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits=6&period=30",
        enc(issuer),
        enc(account),
        totp::base32(secret),
        enc(issuer)
    )
}

/// Checks an agent's TOTP code at `now`: one step either side, never a code
/// already used, at most five failures then a 15-minute lock.
pub async fn check_totp(
    state: &AppState,
    agent_id: &AgentId,
    code: Option<&str>,
    now: Timestamp,
) -> AppResult<()> {
    let Some(device) = state.store.find_totp(agent_id).await? else {
        return Err(ErrorCode::TotpNotEnrolled.into());
    };
    // The attempt is counted before the code is looked at: parallel wrong
    // codes each take a slot, and none is evaluated once the lock is set.
    if !state
        .store
        .totp_claim_attempt(agent_id, totp::MAX_FAILURES, now + totp::LOCK_SECS, now)
        .await?
    {
        return Err(ErrorCode::TotpLocked.into());
    }
    let vault = state.vault()?;
    let version =
        u32::try_from(device.kek_version).map_err(|_| AppError::internal("kek version"))?;
    let dk = vault
        .keys()
        .unwrap_data_key(
            &format!("agent:{agent_id}"),
            &WrappedDataKey {
                kek_version: version,
                bytes: device.wrapped_key.clone(),
            },
        )
        .map_err(|_| AppError::from(ErrorCode::KeysUnavailable))?;
    let secret = zeroize::Zeroizing::new(
        crate::crypto::open(&dk, &totp_context(agent_id), &device.sealed_secret)
            .map_err(|_| AppError::Integrity)?,
    );
    let invalid = || ErrorCode::TotpInvalid.into();
    let step = code.and_then(|c| totp::matching_step(&secret, c, now, device.last_step));
    match step {
        // Accepting clears the attempt counted above.
        Some(step) if state.store.totp_accept(agent_id, step).await? => Ok(()),
        // Already counted as a failure by the claim.
        _ => Err(invalid()),
    }
}

// --- mandates ---------------------------------------------------------------

/// A signed attestation's claims (JWS, EdDSA, the vault's key).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AttestationClaims {
    pub iss: String,
    /// The mandate id.
    pub sub: String,
    /// Always `coffre-mandate`.
    pub typ: String,
    pub resident: String,
    pub structure: String,
    pub structure_siret: String,
    pub structure_name: String,
    pub aidant: String,
    pub demarches: Vec<String>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub template: String,
    pub renews: Option<String>,
}

/// A signed revocation receipt's claims.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RevocationClaims {
    pub iss: String,
    /// The mandate id.
    pub sub: String,
    /// Always `coffre-mandate-revocation`.
    pub typ: String,
    pub demarches: Vec<String>,
    pub revoked_at: i64,
    /// `resident`, `aidant` or `referent`.
    pub revoked_by: String,
    pub actor: String,
    pub iat: i64,
}

fn issuer(state: &AppState) -> String {
    state.config.public_base().to_string()
}

fn sign<T: Serialize>(state: &AppState, claims: &T) -> AppResult<String> {
    let keys = state.vault()?.keys().current();
    crate::crypto::jws::sign(&keys, claims).map_err(|_| AppError::internal("signing"))
}

/// A mandate lasts 1, 31, 182 or 365 days (Aidants Connect's choices).
pub fn check_duration(days: i64) -> AppResult<()> {
    if crate::domain::mandate::DURATIONS.contains(&days) {
        Ok(())
    } else {
        Err(ErrorCode::InvalidDuration.into())
    }
}

pub struct NewMandate<'a> {
    pub aidant_id: &'a AgentId,
    pub structure: &'a StructureRow,
    pub resident_id: &'a crate::domain::ResidentId,
    pub demarches: &'a [Demarche],
    pub duration_days: i64,
    pub renews: Option<&'a MandateId>,
}

/// Creates a mandate and its authorisations (the newer mandate takes over
/// the same démarches of the same structure), and signs its attestation.
/// A concurrent creation for the same triple is retried once, so the later
/// one supersedes the earlier: never two live ones.
pub async fn create(
    state: &AppState,
    m: NewMandate<'_>,
    now: Timestamp,
) -> AppResult<(MandateRow, String)> {
    create_with(state, m, None, now).await
}

/// [`create`] from a confirmed draft, in one transaction with consuming the
/// draft and, for a renewal, ending the renewed mandate's remaining
/// démarches: all of it happens, or none. A draft already consumed (a
/// second confirmation) is `not_found`.
pub async fn create_from_draft(
    state: &AppState,
    m: NewMandate<'_>,
    draft_id: &DraftId,
    now: Timestamp,
) -> AppResult<(MandateRow, String)> {
    create_with(state, m, Some(draft_id), now).await
}

async fn create_with(
    state: &AppState,
    m: NewMandate<'_>,
    draft_id: Option<&DraftId>,
    now: Timestamp,
) -> AppResult<(MandateRow, String)> {
    check_duration(m.duration_days)?;
    let row = MandateRow {
        id: MandateId::from_uuid(uuid::Uuid::new_v4()),
        resident_id: m.resident_id.clone(),
        structure_id: m.structure.id.clone(),
        aidant_id: m.aidant_id.clone(),
        duration_days: m.duration_days,
        template_version: TEMPLATE_VERSION.to_string(),
        renews: m.renews.cloned(),
        created_at: now,
        expires_at: now + m.duration_days * DAY,
    };
    // The resident is told, by a message written with the mandate (the
    // outbox): no mandate without its message, no message without it.
    let event = if row.renews.is_some() {
        NoticeEvent::MandateRenewed
    } else {
        NoticeEvent::MandateCreated
    };
    // …and the structure's référent is alerted in the same transaction
    // when the mandate is out of hours or one too many (no mandate whose
    // alert could be lost).
    let effects = crate::storage::MandateEffects {
        notices: vec![OutboxMessage::new(
            event,
            &row.resident_id,
            row.id.as_str(),
            &m.structure.name,
            now,
        )],
        ..crate::service::alerts::on_mandate(state, &row, now).await
    };
    let mut tries = 0;
    loop {
        let made = match draft_id {
            Some(draft) => {
                state
                    .store
                    .create_mandate_from_draft(&row, m.demarches, draft, now, &effects)
                    .await
            }
            None => {
                state
                    .store
                    .create_mandate(&row, m.demarches, now, &effects)
                    .await
            }
        };
        match made {
            Ok(()) => break,
            Err(StorageError::Conflict(_)) if tries == 0 => tries += 1,
            Err(StorageError::Conflict(_)) => {
                return Err(ErrorCode::MandateConflict.into());
            }
            Err(e) => return Err(e.into()),
        }
    }
    crate::service::alerts::after_mandate(state, &row, now).await;
    let codes: Vec<String> = m.demarches.iter().map(|d| d.as_str().to_string()).collect();
    let attestation = attestation(state, &row, m.structure, &codes)?;
    Ok((row, attestation))
}

pub fn attestation(
    state: &AppState,
    m: &MandateRow,
    s: &StructureRow,
    demarches: &[String],
) -> AppResult<String> {
    sign(
        state,
        &AttestationClaims {
            iss: issuer(state),
            sub: m.id.to_string(),
            typ: "coffre-mandate".into(),
            resident: m.resident_id.to_string(),
            structure: s.id.to_string(),
            structure_siret: s.siret.clone(),
            structure_name: s.name.clone(),
            aidant: m.aidant_id.to_string(),
            demarches: demarches.to_vec(),
            iat: m.created_at,
            nbf: m.created_at,
            exp: m.expires_at,
            template: m.template_version.clone(),
            renews: m.renews.as_ref().map(MandateId::to_string),
        },
    )
}

/// One démarche of a mandate, as shown.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AuthorisationView {
    pub demarche: String,
    pub label_fr: String,
    pub state: AuthorisationState,
    pub revoked_at: Option<i64>,
    /// `resident`, `aidant`, `referent` or `superseded` (by a newer mandate).
    pub revoked_by: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct MandateView {
    pub id: String,
    pub resident_id: String,
    pub structure_id: String,
    pub structure_name: String,
    pub aidant_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub duration_days: i64,
    /// `active` while one démarche is; `revoked` when all were revoked;
    /// else `expired`.
    pub state: AuthorisationState,
    pub demarches: Vec<AuthorisationView>,
    pub renews: Option<String>,
    /// The signed attestation (JWS); verify it with `/.well-known/jwks.json`
    /// or at `/api/v1/mandates/verify`.
    pub attestation: String,
    pub verify_url: String,
}

/// Records, before anything of it is shown, that `actor_id` reads the
/// mandate `m` (its resident, structure and démarches are the resident's
/// data): as the resident's own read, or an agent's on their behalf.
/// Returns the entry's index.
pub async fn record_read(
    state: &AppState,
    actor_id: &str,
    role: Role,
    m: &MandateRow,
    request_id: Option<String>,
) -> AppResult<u64> {
    let agent = role != Role::Resident;
    Ok(state
        .audit
        .record(
            crate::audit::AuditRecord::new(
                actor_id,
                role.as_str(),
                "mandate.read",
                state.clock.now(),
            )
            .on_behalf_of(agent.then(|| m.resident_id.clone()))
            .structure(agent.then(|| m.structure_id.clone()))
            .resident(&m.resident_id)
            .request(request_id)
            .allow(if agent { "mandate" } else { "own_data" }),
        )
        .await?)
}

/// Who may see a mandate and its attestation: its own resident, or an
/// active agent of the mandate's structure (their current one).
pub async fn may_see(state: &AppState, actor_id: &str, role: Role, m: &MandateRow) -> bool {
    if role == Role::Resident {
        return m.resident_id == actor_id;
    }
    agent_context(state, actor_id, role)
        .await
        .is_ok_and(|c| c.structure.id == m.structure_id)
}

pub async fn view(state: &AppState, m: &MandateRow, now: Timestamp) -> AppResult<MandateView> {
    let structure = state
        .store
        .find_structure(&m.structure_id)
        .await?
        .ok_or_else(|| AppError::internal("mandate without structure"))?;
    let auths = state.store.mandate_authorisations(&m.id).await?;
    let demarches: Vec<AuthorisationView> = auths
        .iter()
        .map(|a| AuthorisationView {
            demarche: a.demarche.as_str().to_string(),
            label_fr: state
                .demarches
                .get(a.demarche)
                .map(|d| d.label_fr.clone())
                .unwrap_or_default(),
            state: authorisation_state(a.expires_at, a.revoked_at, now),
            revoked_at: a.revoked_at,
            revoked_by: a.revoked_by.clone(),
        })
        .collect();
    let codes: Vec<String> = auths
        .iter()
        .map(|a| a.demarche.as_str().to_string())
        .collect();
    let attestation = attestation(state, m, &structure, &codes)?;
    let verify_url = format!(
        "{}/api/v1/mandates/verify?attestation={attestation}",
        issuer(state)
    );
    Ok(MandateView {
        id: m.id.to_string(),
        resident_id: m.resident_id.to_string(),
        structure_id: m.structure_id.to_string(),
        structure_name: structure.name,
        aidant_id: m.aidant_id.to_string(),
        created_at: m.created_at,
        expires_at: m.expires_at,
        duration_days: m.duration_days,
        state: overall_state(&demarches),
        demarches,
        renews: m.renews.as_ref().map(MandateId::to_string),
        attestation,
        verify_url,
    })
}

fn overall_state(d: &[AuthorisationView]) -> AuthorisationState {
    if d.iter().any(|a| a.state == AuthorisationState::Active) {
        AuthorisationState::Active
    } else if !d.is_empty() && d.iter().all(|a| a.state == AuthorisationState::Revoked) {
        AuthorisationState::Revoked
    } else {
        AuthorisationState::Expired
    }
}

/// Revokes a mandate (or one démarche of it) and returns the signed receipt.
/// Nothing live to revoke: 409 `nothing_to_revoke`.
pub async fn revoke(
    state: &AppState,
    m: &MandateRow,
    demarche: Option<Demarche>,
    by: Role,
    actor: &str,
    now: Timestamp,
) -> AppResult<String> {
    let live: Vec<String> = state
        .store
        .mandate_authorisations(&m.id)
        .await?
        .into_iter()
        .filter(|a| {
            authorisation_state(a.expires_at, a.revoked_at, now) == AuthorisationState::Active
        })
        .filter(|a| demarche.is_none_or(|d| a.demarche == d))
        .map(|a| a.demarche.as_str().to_string())
        .collect();
    if live.is_empty() {
        return Err(ErrorCode::NothingToRevoke.into());
    }
    let structure = state
        .store
        .find_structure(&m.structure_id)
        .await?
        .map(|s| s.name)
        .unwrap_or_else(|| m.structure_id.to_string());
    let notices = [OutboxMessage::new(
        NoticeEvent::MandateRevoked,
        &m.resident_id,
        m.id.as_str(),
        &structure,
        now,
    )];
    state
        .store
        .revoke_authorisations(&m.id, demarche, by.as_str(), now, &notices)
        .await?;
    sign(
        state,
        &RevocationClaims {
            iss: issuer(state),
            sub: m.id.to_string(),
            typ: "coffre-mandate-revocation".into(),
            demarches: live,
            revoked_at: now,
            revoked_by: by.as_str().into(),
            actor: actor.to_string(),
            iat: now,
        },
    )
}

/// The status of an attestation, as the verify route answers it.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttestationStatus {
    Valid,
    Revoked,
    Expired,
}

/// Verifies an attestation's signature with the service's public key and
/// reads the mandate's state at `now`. A bad signature or a mandate coffre
/// does not know: 422 `attestation_invalid`.
pub async fn verify(
    state: &AppState,
    jws: &str,
    now: Timestamp,
) -> AppResult<(AttestationStatus, Option<String>, AttestationClaims)> {
    let invalid = || ErrorCode::AttestationInvalid.into();
    let keys: Arc<crate::crypto::KeySet> = state.vault()?.keys().current();
    let x = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        keys.signing_public_key(),
    );
    let key =
        DecodingKey::from_ed_components(&x).map_err(|_| AppError::internal("decoding key"))?;
    let mut v = Validation::new(Algorithm::EdDSA);
    // Expiry is a status here, not an error; time is the service clock.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.set_issuer(&[issuer(state)]);
    v.required_spec_claims = ["iss", "sub", "exp"]
        .into_iter()
        .map(String::from)
        .collect();
    let claims = jsonwebtoken::decode::<AttestationClaims>(jws, &key, &v)
        .map_err(|_| invalid())?
        .claims;
    if claims.typ != "coffre-mandate" {
        return Err(invalid());
    }
    // A subject that is no mandate id names no mandate.
    let sub = MandateId::parse(&claims.sub).map_err(|_| invalid())?;
    let mandate = state.store.find_mandate(&sub).await?.ok_or_else(invalid)?;
    let auths = state.store.mandate_authorisations(&mandate.id).await?;
    let states: Vec<AuthorisationState> = auths
        .iter()
        .filter(|a| claims.demarches.iter().any(|d| d == a.demarche.as_str()))
        .map(|a| authorisation_state(a.expires_at, a.revoked_at, now))
        .collect();
    let status = if states.contains(&AuthorisationState::Active) {
        AttestationStatus::Valid
    } else if !states.is_empty() && states.iter().all(|s| *s == AuthorisationState::Revoked) {
        AttestationStatus::Revoked
    } else {
        AttestationStatus::Expired
    };
    // Why it was revoked, when every démarche ended the same way (by the
    // resident, an aidant, a référent, a newer mandate, the erasure).
    let reason = match status {
        AttestationStatus::Revoked => {
            let mut by = auths
                .iter()
                .filter(|a| claims.demarches.iter().any(|d| d == a.demarche.as_str()))
                .filter_map(|a| a.revoked_by.clone());
            let first = by.next();
            first.filter(|f| by.all(|b| &b == f))
        }
        _ => None,
    };
    Ok((status, reason, claims))
}

// --- shared by the agents' use cases ----------------------------------------

/// An audit record of an agent's act, in their current structure when
/// known (an allowed one: a refusal goes through `access::deny`).
pub(crate) fn record(
    state: &AppState,
    caller: &crate::service::Caller,
    ctx: Option<&AgentContext>,
    action: &str,
) -> crate::audit::AuditRecord {
    caller
        .record(action, state.clock.now())
        .structure(ctx.map(|c| c.structure.id.clone()))
        .allow("mandate")
}

/// The agent context, with a refusal recorded in the audit log.
pub(crate) async fn agent(
    state: &AppState,
    caller: &crate::service::Caller,
    action: &str,
) -> AppResult<AgentContext> {
    match agent_context(state, &caller.actor_id, caller.role).await {
        Ok(ctx) => Ok(ctx),
        Err(e) => {
            Err(crate::service::access::deny(state, record(state, caller, None, action), e).await)
        }
    }
}

pub(crate) fn demarche_defs(
    state: &AppState,
    ds: &[Demarche],
) -> Vec<crate::service::drafts::DemarcheItem> {
    ds.iter()
        .filter_map(|d| {
            state
                .demarches
                .get(*d)
                .map(|def| crate::service::drafts::DemarcheItem {
                    code: d.as_str().into(),
                    def: def.clone(),
                })
        })
        .collect()
}
