//! A structure as its référent manages it (its allowed démarches, its
//! aidants' membership) and an aidant's choice of current structure.

use crate::error::ErrorCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::domain::mandate::parse_demarches;
use crate::domain::{AgentId, Role, StructureId};
use crate::error::{AppError, AppResult};
use crate::service::mandates::{AgentContext, agent, record};
use crate::service::{Audited, Caller};

#[derive(Serialize, ToSchema)]
pub struct StructureAgent {
    pub id: String,
    pub role: String,
    pub display_name: String,
    pub active: bool,
    pub can_create_mandates: bool,
}

#[derive(Serialize, ToSchema)]
pub struct StructureView {
    pub id: String,
    pub siret: String,
    pub name: String,
    pub allowed_demarches: Vec<String>,
    pub agents: Vec<StructureAgent>,
}

pub(crate) async fn referent(
    state: &AppState,
    caller: &Caller,
    action: &str,
) -> AppResult<AgentContext> {
    let ctx = agent(state, caller, action).await?;
    if ctx.role != Role::Referent {
        let e = ErrorCode::ReferentOnly.into();
        return Err(crate::service::access::deny(
            state,
            record(state, caller, Some(&ctx), action),
            e,
        )
        .await);
    }
    Ok(ctx)
}

async fn structure_view(state: &AppState, ctx: &AgentContext) -> AppResult<StructureView> {
    let s = state
        .store
        .find_structure(&ctx.structure.id)
        .await?
        .ok_or(AppError::NotFound)?;
    let agents = state
        .store
        .agents_of_structure(&s.id)
        .await?
        .into_iter()
        .map(|a| StructureAgent {
            id: a.id.into_string(),
            role: a.role.as_str().to_string(),
            display_name: a.display_name,
            active: a.active,
            can_create_mandates: a.can_create_mandates,
        })
        .collect();
    Ok(StructureView {
        id: s.id.into_string(),
        siret: s.siret,
        name: s.name,
        allowed_demarches: s
            .allowed_demarches
            .iter()
            .map(|d| d.as_str().to_string())
            .collect(),
        agents,
    })
}

/// The référent's structure: its allowed démarches and its agents.
pub async fn referent_structure(
    state: &AppState,
    caller: &Caller,
) -> AppResult<Audited<StructureView>> {
    let ctx = referent(state, caller, "structure.read").await?;
    // The agents' names and rights are theirs: read on the record.
    let entry = state
        .audit
        .record(record(state, caller, Some(&ctx), "structure.read"))
        .await?;
    Ok(Audited::new(entry, structure_view(state, &ctx).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DemarchesRequest {
    pub demarches: Vec<String>,
}

/// The référent sets the démarches the structure's aidants may take on
/// (new mandates only: live ones keep theirs until they end or are revoked).
pub async fn set_demarches(
    state: &AppState,
    caller: &Caller,
    body: DemarchesRequest,
) -> AppResult<Audited<StructureView>> {
    let ds = parse_demarches(body.demarches.iter().map(String::as_str))
        .map_err(|m| ErrorCode::UnknownDemarche.with(m))?;
    if ds.is_empty() {
        return Err(ErrorCode::DemarchesRequired.into());
    }
    let ctx = referent(state, caller, "structure.manage").await?;
    let entry = state
        .audit
        .record(record(state, caller, Some(&ctx), "structure.manage"))
        .await?;
    state
        .store
        .set_structure_demarches(&ctx.structure.id, &ds)
        .await?;
    Ok(Audited::new(entry, structure_view(state, &ctx).await?))
}

/// The référent removes an aidant from the structure (or takes them back).
/// The agent's account is untouched: an aidant of several structures keeps
/// working for the others, and an administrator's deactivation stands.
pub async fn set_aidant_active(
    state: &AppState,
    caller: &Caller,
    id: Option<&AgentId>,
    action: &str,
) -> AppResult<Audited<StructureView>> {
    let active = match action {
        "deactivate" => false,
        "activate" => true,
        _ => return Err(AppError::NotFound),
    };
    let ctx = referent(state, caller, "structure.manage").await?;
    let member = state
        .store
        .agents_of_structure(&ctx.structure.id)
        .await?
        .into_iter()
        .any(|a| Some(&a.id) == id && a.role == Role::Aidant);
    // A malformed id (`None`) names no member, as an unknown one.
    let (true, Some(id)) = (member, id) else {
        return Err(AppError::NotFound);
    };
    let entry = state
        .audit
        .record(
            record(state, caller, Some(&ctx), "structure.manage")
                .category(format!("agent:{action}")),
        )
        .await?;
    // The référent acts on their structure only: the aidant leaves (or
    // rejoins) it; the account, which other structures and an
    // administrator's decision depend on, is not theirs to change.
    state
        .store
        .set_membership_active(id, &ctx.structure.id, active)
        .await?;
    Ok(Audited::new(entry, structure_view(state, &ctx).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CurrentStructureRequest {
    pub structure_id: String,
}

/// An aidant who works for several structures picks the current one; their
/// mandates and acts are those of the current structure.
pub async fn switch_structure(
    state: &AppState,
    caller: &Caller,
    body: CurrentStructureRequest,
) -> AppResult<Audited<()>> {
    // An aidant removed from their current structure may still switch to
    // another of theirs: only that refusal is let through here.
    let ctx = match agent(state, caller, "structure.switch").await {
        Ok(ctx) => Some(ctx),
        Err(AppError::Coded {
            code: ErrorCode::StructureInactive,
            ..
        }) => None,
        Err(e) => return Err(e),
    };
    // The body's structure and the caller, typed; either malformed names
    // nothing the caller belongs to, as an unknown structure.
    let (Some(agent_id), Ok(structure_id)) =
        (caller.agent_id(), StructureId::parse(&body.structure_id))
    else {
        return Err(AppError::NotFound);
    };
    let member = state
        .store
        .agent_structures(&agent_id)
        .await?
        .contains(&structure_id);
    if !member {
        return Err(AppError::NotFound);
    }
    // Audited before the change; the change itself re-checks membership.
    let entry = state
        .audit
        .record(
            record(state, caller, ctx.as_ref(), "structure.switch").category(format!(
                "structure:{}",
                body.structure_id.chars().take(40).collect::<String>()
            )),
        )
        .await?;
    if !state
        .store
        .set_current_structure(&agent_id, &structure_id)
        .await?
    {
        return Err(AppError::NotFound);
    }
    Ok(Audited::new(entry, ()))
}
