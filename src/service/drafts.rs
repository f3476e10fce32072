//! A mandate's creation, in three steps: the aidant's draft (démarches,
//! duration), the resident's login and reading of the recap, and the
//! confirmation with the aidant's TOTP code; and a renewal, which is a new
//! draft the same resident confirms. The right to create mandates is
//! checked at every step that creates or widens one.

use crate::error::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::domain::mandate::{DemarcheDef, parse_demarches};
use crate::domain::{Demarche, DraftId, MandateId};
use crate::error::{AppError, AppResult};
use crate::service::agents::structure_mandate;
use crate::service::mandates::{AgentContext, MandateView, agent, demarche_defs, record};
use crate::service::{Audited, Caller};
use crate::storage::MandateDraftRow;

/// A draft waits this long for the resident's login and the confirmation.
const DRAFT_SECS: i64 = 30 * 60;

#[derive(Serialize, ToSchema)]
pub struct DemarcheItem {
    pub code: String,
    #[serde(flatten)]
    pub def: DemarcheDef,
}

/// The démarches, their French labels and the data categories each reaches.
pub fn all_demarches(state: &AppState) -> Vec<DemarcheItem> {
    demarche_defs(state, &Demarche::ALL)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftRequest {
    /// Démarche codes, within the structure's allowed ones.
    pub demarches: Vec<String>,
    /// 1, 31, 182 or 365.
    pub duration_days: i64,
}

#[derive(Serialize, ToSchema)]
pub struct DraftView {
    pub id: String,
    pub demarches: Vec<DemarcheItem>,
    pub duration_days: i64,
    pub structure_name: String,
    /// Set once the resident has logged in.
    pub resident_id: Option<String>,
    /// The resident's name as their identity provider gave it, for the
    /// recap they confirm.
    pub resident_name: Option<String>,
    pub renews: Option<String>,
    /// Where the resident logs in (in this browser).
    pub resident_login: String,
    /// The plain-language text the resident confirms.
    pub recap_fr: String,
    pub expires_at: i64,
}

fn validated_demarches(ctx: &AgentContext, codes: &[String]) -> AppResult<Vec<Demarche>> {
    let ds = parse_demarches(codes.iter().map(String::as_str))
        .map_err(|m| ErrorCode::UnknownDemarche.with(m))?;
    allowed_demarches(ctx, ds)
}

/// `ds`, sorted and without duplicates, if it is not empty and the
/// structure allows each of them.
fn allowed_demarches(ctx: &AgentContext, mut ds: Vec<Demarche>) -> AppResult<Vec<Demarche>> {
    ds.sort();
    ds.dedup();
    if ds.is_empty() {
        return Err(ErrorCode::DemarchesRequired.into());
    }
    let allowed = ctx.allowed_demarches();
    if ds.iter().any(|d| !allowed.contains(d)) {
        return Err(ErrorCode::DemarcheNotAllowed.into());
    }
    Ok(ds)
}

/// Starts a mandate: the aidant's choices. The resident then logs in at
/// `resident_login`, in this browser.
pub async fn create_draft(
    state: &AppState,
    caller: &Caller,
    body: DraftRequest,
) -> AppResult<Audited<DraftView>> {
    let ctx = agent(state, caller, "mandate.draft").await?;
    may_create_mandates(state, caller, &ctx, "mandate.draft").await?;
    let ds = validated_demarches(&ctx, &body.demarches)?;
    crate::service::mandates::check_duration(body.duration_days)?;
    let draft = new_draft(state, &ctx, &ds, body.duration_days, None);
    let entry = state
        .audit
        .record(record(state, caller, Some(&ctx), "mandate.draft"))
        .await?;
    state.store.insert_mandate_draft(&draft).await?;
    let view = draft_view(state, &ctx, &draft).await?;
    Ok(Audited::new(entry, view))
}

/// The agent's right to create mandates, checked at every step that creates
/// or widens one (a draft, a renewal, the confirmation): a right withdrawn
/// between two steps stops the next one. A refusal is audited.
async fn may_create_mandates(
    state: &AppState,
    caller: &Caller,
    ctx: &AgentContext,
    action: &str,
) -> AppResult<()> {
    if ctx.agent.can_create_mandates {
        return Ok(());
    }
    let e = ErrorCode::CannotCreateMandates.into();
    Err(crate::service::access::deny(state, record(state, caller, Some(ctx), action), e).await)
}

/// A draft by the agent of `ctx`, for their current structure, waiting
/// `DRAFT_SECS` for the resident's login and the confirmation.
fn new_draft(
    state: &AppState,
    ctx: &AgentContext,
    ds: &[Demarche],
    duration_days: i64,
    renews: Option<MandateId>,
) -> MandateDraftRow {
    let now = state.clock.now();
    MandateDraftRow {
        id: DraftId::from_uuid(uuid::Uuid::new_v4()),
        aidant_id: ctx.agent.id.clone(),
        structure_id: ctx.structure.id.clone(),
        demarches: ds.to_vec(),
        duration_days,
        renews,
        resident_id: None,
        created_at: now,
        expires_at: now + DRAFT_SECS,
    }
}

async fn draft_view(
    state: &AppState,
    ctx: &AgentContext,
    d: &MandateDraftRow,
) -> AppResult<DraftView> {
    let ds = &d.demarches;
    let resident_name = match &d.resident_id {
        Some(r) => resident_name(state, r).await?,
        None => None,
    };
    let labels: Vec<String> = ds
        .iter()
        .filter_map(|x| state.demarches.get(*x).map(|def| def.label_fr.clone()))
        .collect();
    let recap_fr = format!(
        "J'autorise {} à réaliser à ma place, pendant {} jour(s), les démarches suivantes : {}. \
         Je peux révoquer ce mandat à tout moment depuis mon espace. \
         Chaque action faite pour moi est enregistrée et je peux la consulter.",
        ctx.structure.name,
        d.duration_days,
        labels.join(", ")
    );
    Ok(DraftView {
        id: d.id.to_string(),
        demarches: demarche_defs(state, ds),
        duration_days: d.duration_days,
        structure_name: ctx.structure.name.clone(),
        resident_id: d.resident_id.as_ref().map(ToString::to_string),
        resident_name,
        renews: d.renews.as_ref().map(MandateId::to_string),
        resident_login: format!("/auth/login?mandate_draft={}", d.id),
        recap_fr,
        expires_at: d.expires_at,
    })
}

pub(crate) async fn resident_name(
    state: &AppState,
    resident_id: &crate::domain::ResidentId,
) -> AppResult<Option<String>> {
    let vault = state.vault()?;
    let category = vault
        .categories()
        .category("identity")
        .map_err(crate::service::vault::VaultError::from)?;
    let Some(record) = vault.read_current_category(resident_id, &category).await? else {
        return Ok(None);
    };
    Ok(person_name(&record.fields))
}

/// "Given-name Family-name" from an identity record's fields; `None` when
/// it holds neither.
pub(crate) fn person_name(identity: &serde_json::Map<String, Value>) -> Option<String> {
    let field = |k: &str| identity.get(k).and_then(Value::as_str).unwrap_or("");
    let name = format!("{} {}", field("given_name"), field("family_name"));
    Some(name.trim().to_string()).filter(|n| !n.is_empty())
}

/// The aidant's own draft, live. `id` is `None` when the path could name
/// no draft (a malformed id): `not_found`, as an unknown draft is.
async fn own_draft(
    state: &AppState,
    ctx: &AgentContext,
    id: Option<&DraftId>,
) -> AppResult<MandateDraftRow> {
    let id = id.ok_or(AppError::NotFound)?;
    state
        .store
        .find_mandate_draft(id)
        .await?
        .filter(|d| d.aidant_id == ctx.agent.id && d.structure_id == ctx.structure.id)
        .filter(|d| d.expires_at > state.clock.now())
        .ok_or(AppError::NotFound)
}

/// The recap the resident confirms (after their login). `id` as for
/// `own_draft`: checked after the caller's right.
pub async fn get_draft(
    state: &AppState,
    caller: &Caller,
    id: Option<&DraftId>,
) -> AppResult<Audited<DraftView>> {
    let ctx = agent(state, caller, "mandate.draft").await?;
    let draft = own_draft(state, &ctx, id).await?;
    let entry = match &draft.resident_id {
        // Showing the resident's name is reading their identity: recorded.
        Some(r) => {
            state
                .audit
                .record(
                    record(state, caller, Some(&ctx), "mandate.recap")
                        .on_behalf_of(r)
                        .resident(r)
                        .category("identity"),
                )
                .await?
        }
        // A draft before the resident's login is the aidant's own; read
        // on the record all the same (fail closed, one rule for drafts).
        None => {
            state
                .audit
                .record(record(state, caller, Some(&ctx), "mandate.draft.read"))
                .await?
        }
    };
    Ok(Audited::new(entry, draft_view(state, &ctx, &draft).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    /// The resident read the recap and agrees (ticked by them, on the
    /// aidant's screen).
    pub resident_confirmed: bool,
    /// The aidant's TOTP code.
    pub totp: String,
}

/// Creates the mandate from a draft the resident has logged in to and
/// confirmed, with the aidant's TOTP code. `id` as for `own_draft`.
pub async fn confirm_draft(
    state: &AppState,
    caller: &Caller,
    id: Option<&DraftId>,
    body: ConfirmRequest,
) -> AppResult<Audited<MandateView>> {
    let ctx = agent(state, caller, "mandate.create").await?;
    may_create_mandates(state, caller, &ctx, "mandate.create").await?;
    let draft = own_draft(state, &ctx, id).await?;
    let Some(resident_id) = draft.resident_id.clone() else {
        return Err(ErrorCode::ResidentLoginRequired.into());
    };
    if !body.resident_confirmed {
        return Err(ErrorCode::ResidentConfirmationRequired.into());
    }
    let now = state.clock.now();
    let base = record(state, caller, Some(&ctx), "mandate.create")
        .on_behalf_of(&resident_id)
        .resident(&resident_id);
    if let Err(e) =
        crate::service::mandates::check_totp(state, &ctx.agent.id, Some(&body.totp), now).await
    {
        return Err(crate::service::access::deny(state, base, e).await);
    }
    // The structure may have narrowed its démarches since the draft.
    let ds = allowed_demarches(&ctx, draft.demarches.clone())?;
    let entry = state.audit.record(base).await?;
    let (mandate, _) = crate::service::mandates::create_from_draft(
        state,
        crate::service::mandates::NewMandate {
            aidant_id: &ctx.agent.id,
            structure: &ctx.structure,
            resident_id: &resident_id,
            demarches: &ds,
            duration_days: draft.duration_days,
            renews: draft.renews.as_ref(),
        },
        &draft.id,
        now,
    )
    .await?;
    tracing::info!(mandate = %mandate.id, resident = %resident_id, structure = %ctx.structure.id, "mandate created");
    let view = crate::service::mandates::view(state, &mandate, now).await?;
    Ok(Audited::new(entry, view))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// Démarches of the new mandate (default: the live ones of the old).
    pub demarches: Option<Vec<String>>,
    /// Default: the old mandate's duration.
    pub duration_days: Option<i64>,
}

/// Renews a mandate of the structure: a new draft, which the same resident
/// must confirm with a fresh login. `id` is `None` when the path could name
/// no mandate: `not_found` after the caller's rights, as an unknown one.
pub async fn renew(
    state: &AppState,
    caller: &Caller,
    id: Option<&MandateId>,
    body: RenewRequest,
) -> AppResult<Audited<DraftView>> {
    let ctx = agent(state, caller, "mandate.renew").await?;
    may_create_mandates(state, caller, &ctx, "mandate.renew").await?;
    let mandate = structure_mandate(state, &ctx, id).await?;
    let ds = match body.demarches {
        Some(codes) => validated_demarches(&ctx, &codes)?,
        None => allowed_demarches(
            &ctx,
            state
                .store
                .mandate_authorisations(&mandate.id)
                .await?
                .into_iter()
                .filter(|a| a.revoked_at.is_none())
                .map(|a| a.demarche)
                .collect(),
        )?,
    };
    let duration_days = body.duration_days.unwrap_or(mandate.duration_days);
    crate::service::mandates::check_duration(duration_days)?;
    let draft = new_draft(state, &ctx, &ds, duration_days, Some(mandate.id.clone()));
    let entry = state
        .audit
        .record(
            record(state, caller, Some(&ctx), "mandate.renew")
                .on_behalf_of(&mandate.resident_id)
                .resident(&mandate.resident_id),
        )
        .await?;
    state.store.insert_mandate_draft(&draft).await?;
    Ok(Audited::new(entry, draft_view(state, &ctx, &draft).await?))
}
