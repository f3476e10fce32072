//! What an agent does under a mandate, and what a resident does with
//! theirs: read, correct and consent on a resident's behalf within a
//! démarche of an active mandate; list the structure's mandated residents;
//! read, verify and revoke mandates.

use crate::error::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::domain::{Demarche, MandateId, Role, Timestamp};
use crate::error::{AppError, AppResult};
use crate::service::access::{AccessRequest, decide};
use crate::service::data::Rectified;
use crate::service::mandates::{AgentContext, MandateView, agent, record};
use crate::service::vault::RecordView;
use crate::service::{Audited, Caller};
use crate::storage::MandateRow;

/// "Expiring soon" for a structure's list.
const EXPIRING_SECS: i64 = 30 * 86_400;

/// A mandate of the agent's current structure. `id` is `None` when the
/// path could name no mandate (a malformed id): `not_found`, as an unknown
/// one, after the checks the caller made first.
pub(crate) async fn structure_mandate(
    state: &AppState,
    ctx: &AgentContext,
    id: Option<&MandateId>,
) -> AppResult<MandateRow> {
    let id = id.ok_or(AppError::NotFound)?;
    state
        .store
        .find_mandate(id)
        .await?
        .filter(|m| m.structure_id == ctx.structure.id)
        .ok_or(AppError::NotFound)
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// One démarche only (default: the whole mandate).
    pub demarche: Option<String>,
    /// An aidant's TOTP code (step-up); référents and residents send none.
    pub totp: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RevocationReceipt {
    /// A signed JWS (EdDSA) of the revocation: mandate, démarches, time, by whom.
    pub receipt: String,
    pub mandate: MandateView,
}

fn one_demarche(code: Option<&str>) -> AppResult<Option<Demarche>> {
    code.map(|c| Demarche::parse(c).ok_or_else(|| ErrorCode::UnknownDemarche.into()))
        .transpose()
}

/// Revokes a mandate of the structure (or one démarche): an aidant with
/// their TOTP code, or a référent. `id` as for `structure_mandate`.
pub async fn agent_revoke(
    state: &AppState,
    caller: &Caller,
    id: Option<&MandateId>,
    body: RevokeRequest,
) -> AppResult<Audited<RevocationReceipt>> {
    let ctx = agent(state, caller, "mandate.revoke").await?;
    let mandate = structure_mandate(state, &ctx, id).await?;
    let demarche = one_demarche(body.demarche.as_deref())?;
    let now = state.clock.now();
    let base = record(state, caller, Some(&ctx), "mandate.revoke")
        .on_behalf_of(&mandate.resident_id)
        .resident(&mandate.resident_id)
        .purpose(demarche.map(|d| format!("demarche:{}", d.as_str())));
    // Aidants confirm with their TOTP code; a référent manages the
    // structure's mandates without one.
    if caller.role == Role::Aidant
        && let Err(e) =
            crate::service::mandates::check_totp(state, &ctx.agent.id, body.totp.as_deref(), now)
                .await
    {
        return Err(crate::service::access::deny(state, base, e).await);
    }
    let entry = state.audit.record(base).await?;
    let receipt = crate::service::mandates::revoke(
        state,
        &mandate,
        demarche,
        caller.role,
        &caller.actor_id,
        now,
    )
    .await?;
    // A revocation is an act on the resident's behalf too: at night, the
    // référent hears of it.
    crate::service::alerts::after_act_on_behalf(
        state,
        &ctx.agent.id,
        &ctx.structure.id,
        format!("audit:{entry}"),
        now,
    )
    .await;
    let view = crate::service::mandates::view(state, &mandate, now).await?;
    Ok(Audited::new(
        entry,
        RevocationReceipt {
            receipt,
            mandate: view,
        },
    ))
}

/// A resident revokes one of their mandates (or one démarche of it), at once.
/// `id` is `None` when the path could name no mandate: `not_found` once the
/// right was checked and recorded, as an unknown one.
pub async fn resident_revoke(
    state: &AppState,
    caller: &Caller,
    id: Option<&MandateId>,
    body: RevokeRequest,
) -> AppResult<Audited<RevocationReceipt>> {
    let demarche = one_demarche(body.demarche.as_deref())?;
    let entry = crate::service::access::own_data(state, caller, "mandate.revoke", None).await?;
    let mandate = state
        .store
        .find_mandate(id.ok_or(AppError::NotFound)?)
        .await?
        .filter(|m| m.resident_id == *caller.actor_id)
        .ok_or(AppError::NotFound)?;
    let now = state.clock.now();
    let receipt = crate::service::mandates::revoke(
        state,
        &mandate,
        demarche,
        Role::Resident,
        &caller.actor_id,
        now,
    )
    .await?;
    let view = crate::service::mandates::view(state, &mandate, now).await?;
    tracing::info!(mandate = %mandate.id, "mandate revoked by the resident");
    Ok(Audited::new(
        entry,
        RevocationReceipt {
            receipt,
            mandate: view,
        },
    ))
}

#[derive(Serialize, ToSchema)]
pub struct MyMandates {
    pub mandates: Vec<MandateView>,
}

/// My mandates, with their state and attestation.
pub async fn my_mandates(state: &AppState, caller: &Caller) -> AppResult<Audited<MyMandates>> {
    let entry = crate::service::access::own_data(state, caller, "mandate.read", None).await?;
    let me = caller.resident_id()?;
    let now = state.clock.now();
    let mut mandates = Vec::new();
    for m in state.store.mandates_of_resident(&me).await? {
        mandates.push(crate::service::mandates::view(state, &m, now).await?);
    }
    Ok(Audited::new(entry, MyMandates { mandates }))
}

#[derive(Serialize, ToSchema)]
pub struct MandatedResident {
    pub resident_id: String,
    pub mandate_id: String,
    pub demarche: String,
    pub expires_at: i64,
    /// The person's given and family names, read from their vault under
    /// the mandate for this list (absent when they gave none).
    pub name: Option<String>,
    /// The INSEE code of the commune of their contact address, likewise.
    pub commune_insee: Option<String>,
}

/// An authorisation that ended: the person's name is no longer read from
/// their vault once the mandate no longer covers it.
#[derive(Serialize, ToSchema)]
pub struct EndedAuthorisation {
    pub resident_id: String,
    pub mandate_id: String,
    pub demarche: String,
    /// When it ended: its revocation, or its expiry.
    pub ended_at: i64,
    pub revoked: bool,
}

#[derive(Serialize, ToSchema)]
pub struct StructureMandates {
    pub structure_id: String,
    pub authorisations: Vec<MandatedResident>,
    /// The structure's most recently ended authorisations (at most
    /// `ENDED_SHOWN`), for renewals; empty in the expiring list.
    pub ended: Vec<EndedAuthorisation>,
}

/// How many ended authorisations the structure's list shows.
pub const ENDED_SHOWN: i64 = 200;

/// The name and commune of each of `residents` (all under an active
/// mandate of the caller's structure, the list's entry recorded before),
/// read in pages from their vaults.
async fn names_and_communes(
    state: &AppState,
    residents: &[crate::domain::ResidentId],
) -> AppResult<std::collections::HashMap<crate::domain::ResidentId, (Option<String>, Option<String>)>>
{
    let vault = state.vault()?;
    let categories = ["identity".to_string(), "contact".to_string()];
    let mut out = std::collections::HashMap::with_capacity(residents.len());
    for page in residents.chunks(500) {
        for (resident, records) in vault.read_page(page, &categories).await? {
            let of = |category: &str| records.iter().find(|r| r.category == category);
            let name = of("identity").and_then(|r| super::drafts::person_name(&r.fields));
            let commune = of("contact")
                .and_then(|r| r.fields.get("commune_insee"))
                .and_then(Value::as_str)
                .map(str::to_string);
            out.insert(resident, (name, commune));
        }
    }
    Ok(out)
}

async fn structure_list(
    state: &AppState,
    caller: &Caller,
    until: i64,
    action: &str,
) -> AppResult<Audited<StructureMandates>> {
    let ctx = agent(state, caller, action).await?;
    // One decision and one entry for the list, the names and communes it
    // shows included, recorded before anything is read: the list itself is
    // read after it, so a mandate revoked before the entry is not listed.
    let entry = decide(
        state,
        AccessRequest {
            category: Some("identity"),
            structure_id: Some(&ctx.structure.id),
            request_id: caller.request_id.clone(),
            ..AccessRequest::new(&caller.actor_id, caller.role, action)
        },
    )
    .await?;
    let now = state.clock.now();
    let rows = state
        .store
        .structure_authorisations(&ctx.structure.id, now, until)
        .await?;
    let ended = if until == i64::MAX {
        state
            .store
            .structure_ended_authorisations(&ctx.structure.id, now, ENDED_SHOWN)
            .await?
    } else {
        Vec::new()
    };
    let mut residents: Vec<crate::domain::ResidentId> =
        rows.iter().map(|a| a.resident_id.clone()).collect();
    residents.sort();
    residents.dedup();
    let people = names_and_communes(state, &residents).await?;
    Ok(Audited::new(
        entry,
        StructureMandates {
            structure_id: ctx.structure.id.to_string(),
            authorisations: rows
                .into_iter()
                .map(|a| {
                    let (name, commune_insee) =
                        people.get(&a.resident_id).cloned().unwrap_or_default();
                    MandatedResident {
                        resident_id: a.resident_id.into_string(),
                        mandate_id: a.mandate_id.into_string(),
                        demarche: a.demarche.as_str().to_string(),
                        expires_at: a.expires_at,
                        name,
                        commune_insee,
                    }
                })
                .collect(),
            ended: ended
                .into_iter()
                .map(|a| EndedAuthorisation {
                    resident_id: a.resident_id.into_string(),
                    mandate_id: a.mandate_id.into_string(),
                    demarche: a.demarche.as_str().to_string(),
                    ended_at: a.revoked_at.unwrap_or(a.expires_at),
                    revoked: a.revoked_at.is_some(),
                })
                .collect(),
        },
    ))
}

/// Residents under an active mandate of my current structure, one row per
/// démarche.
pub async fn mandated_residents(
    state: &AppState,
    caller: &Caller,
) -> AppResult<Audited<StructureMandates>> {
    structure_list(state, caller, i64::MAX, "mandate.list").await
}

/// Authorisations of my structure expiring within 30 days.
pub async fn expiring(state: &AppState, caller: &Caller) -> AppResult<Audited<StructureMandates>> {
    let until = state.clock.now() + EXPIRING_SECS;
    structure_list(state, caller, until, "mandate.list").await
}

/// One mandate of my structure, with its attestation.
/// `id` as for `structure_mandate`.
pub async fn get_mandate(
    state: &AppState,
    caller: &Caller,
    id: Option<&MandateId>,
) -> AppResult<Audited<MandateView>> {
    let ctx = agent(state, caller, "mandate.read").await?;
    let mandate = structure_mandate(state, &ctx, id).await?;
    // Who a structure acts for, and for what, is the resident's data.
    let entry = crate::service::mandates::record_read(
        state,
        &caller.actor_id,
        caller.role,
        &mandate,
        caller.request_id.clone(),
    )
    .await?;
    Ok(Audited::new(
        entry,
        crate::service::mandates::view(state, &mandate, state.clock.now()).await?,
    ))
}

async fn on_behalf(
    state: &AppState,
    caller: &Caller,
    resident: &str,
    category: &str,
    demarche: Demarche,
    action: &str,
) -> AppResult<(u64, crate::domain::category::Category)> {
    let ctx = agent(state, caller, action).await?;
    let vault = state.vault()?;
    let cat = vault
        .categories()
        .category(category)
        .map_err(crate::service::vault::VaultError::from)?;
    let entry = decide(
        state,
        AccessRequest {
            resident_id: Some(resident),
            category: Some(cat.as_str()),
            structure_id: Some(&ctx.structure.id),
            demarche: Some(demarche),
            request_id: caller.request_id.clone(),
            ..AccessRequest::new(&caller.actor_id, caller.role, action)
        },
    )
    .await?;
    crate::service::alerts::after_act_on_behalf(
        state,
        &ctx.agent.id,
        &ctx.structure.id,
        format!("audit:{entry}"),
        state.clock.now(),
    )
    .await;
    Ok((entry, cat))
}

/// Reads a resident's category within a démarche of an active mandate.
pub async fn read_on_behalf(
    state: &AppState,
    caller: &Caller,
    resident: &str,
    category: &str,
    demarche: Demarche,
) -> AppResult<Audited<RecordView>> {
    let (entry, cat) = on_behalf(state, caller, resident, category, demarche, "data.read").await?;
    let resident = decided_resident(resident)?;
    let record = state
        .vault()?
        .read_current_category(&resident, &cat)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(Audited::new(entry, record))
}

/// Writes a new version of a resident's category within a démarche of an
/// active mandate.
pub async fn write_on_behalf(
    state: &AppState,
    caller: &Caller,
    resident: &str,
    category: &str,
    demarche: Demarche,
    body: Value,
) -> AppResult<Audited<Rectified>> {
    // Bad input is refused before the decision is recorded.
    let vault = state.vault()?;
    let cat = vault
        .categories()
        .category(category)
        .map_err(crate::service::vault::VaultError::from)?;
    vault
        .categories()
        .validate(&cat, &body)
        .map_err(crate::service::vault::VaultError::from)?;
    let (entry, cat) = on_behalf(state, caller, resident, category, demarche, "data.write").await?;
    let resident = decided_resident(resident)?;
    // A rectification on the resident's behalf is told to the recipients
    // (art. 19) as the resident's own is, in the same transaction.
    let (record, notified) =
        crate::service::rights::rectify(state, &resident, &cat, &body, state.clock.now()).await?;
    Ok(Audited::new(entry, Rectified { record, notified }))
}

#[derive(Serialize, ToSchema)]
pub struct Verification {
    /// `valid`, `revoked` or `expired`.
    pub status: crate::service::mandates::AttestationStatus,
    /// When revoked: by whom or why (`resident`, `aidant`, `referent`,
    /// `superseded`, `resident_erased`), if every démarche ended alike.
    pub reason: Option<String>,
    pub mandate: crate::service::mandates::AttestationClaims,
}

/// Checks an attestation: signed by this service, and the mandate's state
/// now. Public: anyone shown an attestation may check it.
pub async fn verify(state: &AppState, jws: &str, now: Timestamp) -> AppResult<Verification> {
    let (status, reason, mandate) = crate::service::mandates::verify(state, jws, now).await?;
    Ok(Verification {
        status,
        reason,
        mandate,
    })
}

/// An aidant gives, refuses or withdraws a consent for a resident, within a
/// démarche of an active mandate whose categories cover the purpose's; the
/// consent is recorded as given on the resident's behalf, with the aidant
/// and the structure.
pub async fn consent_on_behalf(
    state: &AppState,
    caller: &Caller,
    resident: &str,
    demarche: Demarche,
    req: crate::service::consents::ConsentRequest,
) -> AppResult<crate::service::consents::ConsentOutcome> {
    let ctx = agent(state, caller, "consent.give").await?;
    let purpose = state
        .register
        .get(&req.purpose)
        .ok_or_else(|| AppError::from(ErrorCode::UnknownPurpose))?;
    let access = AccessRequest {
        resident_id: Some(resident),
        structure_id: Some(&ctx.structure.id),
        demarche: Some(demarche),
        purpose_id: Some(purpose.id.as_str()),
        request_id: caller.request_id.clone(),
        ..AccessRequest::new(&caller.actor_id, caller.role, "consent.give")
    };
    // A consent recorded on someone's behalf stays within the mandate: the
    // démarche must reach every category of the purpose (a consent is given
    // to the purpose, whatever subset is asked), and explicit consent to a
    // special-category purpose (art. 9(2)(a)) is the resident's own act.
    let covered = purpose
        .categories
        .iter()
        .chain(req.categories.iter().flatten())
        .all(|c| state.demarches.covers(demarche, c));
    let (verdict, facts) = crate::service::access::evaluate(state, &access).await?;
    let verdict = match verdict {
        crate::domain::access::Verdict::Allow(_)
            if purpose.special_category
                || purpose.legal_basis == crate::domain::purpose::LegalBasis::ExplicitConsent =>
        {
            crate::domain::access::Verdict::Deny(
                crate::domain::access::Denial::ExplicitConsentResidentOnly,
            )
        }
        crate::domain::access::Verdict::Allow(_) if !covered => {
            crate::domain::access::Verdict::Deny(crate::domain::access::Denial::OutsideDemarche)
        }
        v => v,
    };
    if let crate::domain::access::Verdict::Deny(_) = verdict {
        crate::service::access::record(state, access, &verdict, &facts).await?;
        return Err(AppError::internal(
            "unreachable: a denial is returned by record",
        ));
    }
    let decision = crate::service::consents::decision_of(&req)?;
    let actor = crate::service::consents::Actor {
        id: caller.actor_id.clone(),
        role: caller.role,
        structure_id: Some(ctx.structure.id.to_string()),
        request_id: caller.request_id.clone(),
    };
    let resident = decided_resident(resident)?;
    let made =
        crate::service::consents::decide(state, &actor, &resident, purpose, decision).await?;
    crate::service::alerts::after_act_on_behalf(
        state,
        &ctx.agent.id,
        &ctx.structure.id,
        format!("consent:{}", made.consent.id),
        state.clock.now(),
    )
    .await;
    Ok(made)
}

/// The resident a path named, once the decision allowed acting for them.
/// The decision parses the id (a malformed one names no one and is refused
/// as an unknown one); an allowed decision named an active resident, so
/// this cannot fail after it.
fn decided_resident(resident: &str) -> AppResult<crate::domain::ResidentId> {
    crate::domain::ResidentId::parse(resident).map_err(|_| AppError::NotFound)
}

/// A mandate's printable attestation, and the template it was made under.
pub struct Attestation {
    pub mandate: MandateView,
    pub template_version: String,
}

/// The printable attestation of a mandate, for its resident or an agent of
/// its structure (anyone else: `not_found`); it names the resident's
/// structure and démarches, so it is shown only once its reading is in the
/// log.
pub async fn attestation(
    state: &AppState,
    caller: &Caller,
    id: &MandateId,
    now: Timestamp,
) -> AppResult<Audited<Attestation>> {
    let mandate = state
        .store
        .find_mandate(id)
        .await?
        .ok_or(AppError::NotFound)?;
    if !crate::service::mandates::may_see(state, &caller.actor_id, caller.role, &mandate).await {
        return Err(AppError::NotFound);
    }
    let entry = crate::service::mandates::record_read(
        state,
        &caller.actor_id,
        caller.role,
        &mandate,
        caller.request_id.clone(),
    )
    .await?;
    let view = crate::service::mandates::view(state, &mandate, now).await?;
    Ok(Audited::new(
        entry,
        Attestation {
            mandate: view,
            template_version: mandate.template_version,
        },
    ))
}
