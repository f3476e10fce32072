//! Mandates over HTTP: the aidant's creation flow (draft → the resident logs
//! in, in the aidant's browser → recap → confirmation with the aidant's
//! TOTP), renewal (a fresh login of the same resident), revocation by the
//! resident, the aidant (TOTP) or the référent, acting on behalf within a
//! démarche, and the public verification of attestations.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::AuditRecord;
use crate::domain::mandate::{DemarcheDef, parse_demarches};
use crate::domain::{Demarche, Role};
use crate::error::{AppError, AppResult};
use crate::http::ApiJson;
use crate::http::audit::{RequestId, with_entry};
use crate::http::session::CurrentUser;
use crate::service::access::{AccessRequest, decide};
use crate::service::mandates::{AgentContext, MandateView, agent_context};
use crate::storage::{MandateDraftRow, MandateRow};

/// A draft waits this long for the resident's login and the confirmation.
const DRAFT_SECS: i64 = 30 * 60;
/// "Expiring soon" for a structure's list.
const EXPIRING_SECS: i64 = 30 * 86_400;

fn record(
    state: &AppState,
    user: &CurrentUser,
    ctx: Option<&AgentContext>,
    action: &str,
    rid: &RequestId,
) -> AuditRecord {
    AuditRecord {
        timestamp: state.clock.now(),
        actor_id: user.actor_id.clone(),
        actor_role: user.role.as_str().into(),
        structure_id: ctx.map(|c| c.structure.id.clone()),
        action: action.into(),
        allowed: true,
        reason: "mandate".into(),
        request_id: rid.0.clone(),
        ..Default::default()
    }
}

/// The agent context, with a refusal recorded in the audit log.
async fn agent(
    state: &AppState,
    user: &CurrentUser,
    action: &str,
    rid: &RequestId,
) -> AppResult<AgentContext> {
    match agent_context(state, &user.actor_id, user.role).await {
        Ok(ctx) => Ok(ctx),
        Err(e) => {
            Err(
                crate::service::access::deny(state, record(state, user, None, action, rid), e)
                    .await,
            )
        }
    }
}

fn demarche_defs(state: &AppState, ds: &[Demarche]) -> Vec<DemarcheItem> {
    ds.iter()
        .filter_map(|d| {
            state.demarches.get(*d).map(|def| DemarcheItem {
                code: d.as_str().into(),
                def: def.clone(),
            })
        })
        .collect()
}

#[derive(Serialize, ToSchema)]
pub struct DemarcheItem {
    pub code: String,
    #[serde(flatten)]
    pub def: DemarcheDef,
}

/// The démarches, their French labels and the data categories each reaches.
#[utoipa::path(get, path = "/api/v1/demarches", tag = "public",
    responses((status = 200, body = [DemarcheItem])))]
pub async fn demarches(State(state): State<AppState>) -> Json<Vec<DemarcheItem>> {
    Json(demarche_defs(&state, &Demarche::ALL))
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
        .map_err(|m| AppError::unprocessable("unknown_demarche", m))?;
    if ds.is_empty() {
        return Err(AppError::unprocessable(
            "demarches_required",
            "Choisissez au moins une démarche. / Pick at least one démarche.",
        ));
    }
    let allowed = ctx.allowed_demarches();
    if ds.iter().any(|d| !allowed.contains(d)) {
        return Err(AppError::unprocessable(
            "demarche_not_allowed",
            "Cette démarche n'est pas autorisée pour votre structure. / A démarche outside your structure's allowed ones.",
        ));
    }
    Ok(ds)
}

/// Starts a mandate: the aidant's choices. The resident then logs in at
/// `resident_login`, in this browser.
#[utoipa::path(post, path = "/api/v1/mandates/drafts", tag = "agent", request_body = DraftRequest,
    responses((status = 201, body = DraftView),
              (status = 403, description = "`aidant_only`, `agent_inactive`, `cannot_create_mandates`", body = crate::error::ErrorBody),
              (status = 422, description = "`unknown_demarche`, `demarche_not_allowed`, `invalid_duration`", body = crate::error::ErrorBody)))]
pub async fn create_draft(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    ApiJson(body): ApiJson<DraftRequest>,
) -> AppResult<Response> {
    let ctx = agent(&state, &user, "mandate.draft", &rid).await?;
    may_create_mandates(&state, &user, &ctx, "mandate.draft", &rid).await?;
    let ds = validated_demarches(&ctx, &body.demarches)?;
    crate::service::mandates::check_duration(body.duration_days)?;
    let draft = new_draft(&state, &ctx, &ds, body.duration_days, None);
    let entry = state
        .audit
        .record(record(&state, &user, Some(&ctx), "mandate.draft", &rid))
        .await?;
    state.store.insert_mandate_draft(&draft).await?;
    let view = draft_view(&state, &ctx, &draft).await?;
    Ok(with_entry(entry, (StatusCode::CREATED, Json(view))))
}

/// The agent's right to create mandates, checked at every step that creates
/// or widens one (a draft, a renewal, the confirmation): a right withdrawn
/// between two steps stops the next one. A refusal is audited.
async fn may_create_mandates(
    state: &AppState,
    user: &CurrentUser,
    ctx: &AgentContext,
    action: &str,
    rid: &RequestId,
) -> AppResult<()> {
    if ctx.agent.can_create_mandates {
        return Ok(());
    }
    let e = AppError::forbidden(
        "cannot_create_mandates",
        "Ce compte ne peut pas créer de mandat. / This account may not create mandates.",
    );
    Err(crate::service::access::deny(state, record(state, user, Some(ctx), action, rid), e).await)
}

/// A draft by the agent of `ctx`, for their current structure, waiting
/// `DRAFT_SECS` for the resident's login and the confirmation.
fn new_draft(
    state: &AppState,
    ctx: &AgentContext,
    ds: &[Demarche],
    duration_days: i64,
    renews: Option<String>,
) -> MandateDraftRow {
    let now = state.clock.now();
    MandateDraftRow {
        id: uuid::Uuid::new_v4().to_string(),
        aidant_id: ctx.agent.id.clone(),
        structure_id: ctx.structure.id.clone(),
        demarches: ds.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(","),
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
    let ds = parse_demarches(d.demarches.split(',')).map_err(AppError::internal)?;
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
        id: d.id.clone(),
        demarches: demarche_defs(state, &ds),
        duration_days: d.duration_days,
        structure_name: ctx.structure.name.clone(),
        resident_id: d.resident_id.clone(),
        resident_name,
        renews: d.renews.clone(),
        resident_login: format!("/auth/login?mandate_draft={}", d.id),
        recap_fr,
        expires_at: d.expires_at,
    })
}

async fn resident_name(state: &AppState, resident_id: &str) -> AppResult<Option<String>> {
    let vault = state.vault()?;
    let category = vault
        .categories()
        .category("identity")
        .map_err(crate::service::vault::VaultError::from)?;
    let Some(record) = vault.read_current_category(resident_id, &category).await? else {
        return Ok(None);
    };
    let field = |k: &str| {
        record
            .fields
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let name = format!("{} {}", field("given_name"), field("family_name"));
    Ok(Some(name.trim().to_string()).filter(|n| !n.is_empty()))
}

/// The aidant's own draft, live.
async fn own_draft(state: &AppState, ctx: &AgentContext, id: &str) -> AppResult<MandateDraftRow> {
    state
        .store
        .find_mandate_draft(id)
        .await?
        .filter(|d| d.aidant_id == ctx.agent.id && d.structure_id == ctx.structure.id)
        .filter(|d| d.expires_at > state.clock.now())
        .ok_or(AppError::NotFound)
}

/// The recap the resident confirms (after their login).
#[utoipa::path(get, path = "/api/v1/mandates/drafts/{id}", tag = "agent",
    responses((status = 200, body = DraftView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_draft(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let ctx = agent(&state, &user, "mandate.draft", &rid).await?;
    let draft = own_draft(&state, &ctx, &id).await?;
    let entry = match &draft.resident_id {
        // Showing the resident's name is reading their identity: recorded.
        Some(r) => {
            state
                .audit
                .record(AuditRecord {
                    on_behalf_of: Some(r.clone()),
                    resident_id: Some(r.clone()),
                    category: Some("identity".into()),
                    ..record(&state, &user, Some(&ctx), "mandate.recap", &rid)
                })
                .await?
        }
        // A draft before the resident's login is the aidant's own; read
        // on the record all the same (fail closed, one rule for drafts).
        None => {
            state
                .audit
                .record(record(
                    &state,
                    &user,
                    Some(&ctx),
                    "mandate.draft.read",
                    &rid,
                ))
                .await?
        }
    };
    Ok(with_entry(
        entry,
        Json(draft_view(&state, &ctx, &draft).await?),
    ))
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
/// confirmed, with the aidant's TOTP code.
#[utoipa::path(post, path = "/api/v1/mandates/drafts/{id}/confirm", tag = "agent", request_body = ConfirmRequest,
    responses((status = 201, body = MandateView),
              (status = 403, description = "`totp_invalid`, `totp_locked`, `totp_not_enrolled`", body = crate::error::ErrorBody),
              (status = 409, description = "`resident_login_required`, `mandate_conflict`", body = crate::error::ErrorBody),
              (status = 422, description = "`resident_confirmation_required`", body = crate::error::ErrorBody)))]
pub async fn confirm_draft(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ConfirmRequest>,
) -> AppResult<Response> {
    let ctx = agent(&state, &user, "mandate.create", &rid).await?;
    may_create_mandates(&state, &user, &ctx, "mandate.create", &rid).await?;
    let draft = own_draft(&state, &ctx, &id).await?;
    let Some(resident_id) = draft.resident_id.clone() else {
        return Err(AppError::Conflict {
            code: "resident_login_required",
            message: "La personne doit d'abord se connecter avec FranceConnect. / The resident must log in first.".into(),
        });
    };
    if !body.resident_confirmed {
        return Err(AppError::unprocessable(
            "resident_confirmation_required",
            "La personne doit confirmer le récapitulatif. / The resident must confirm the recap.",
        ));
    }
    let now = state.clock.now();
    let base = AuditRecord {
        on_behalf_of: Some(resident_id.clone()),
        resident_id: Some(resident_id.clone()),
        ..record(&state, &user, Some(&ctx), "mandate.create", &rid)
    };
    if let Err(e) =
        crate::service::mandates::check_totp(&state, &user.actor_id, Some(&body.totp), now).await
    {
        return Err(crate::service::access::deny(&state, base, e).await);
    }
    // The structure may have narrowed its démarches since the draft.
    let ds = validated_demarches(
        &ctx,
        &draft
            .demarches
            .split(',')
            .map(str::to_string)
            .collect::<Vec<_>>(),
    )?;
    let entry = state.audit.record(base).await?;
    let (mandate, _) = crate::service::mandates::create(
        &state,
        crate::service::mandates::NewMandate {
            aidant_id: &user.actor_id,
            structure: &ctx.structure,
            resident_id: &resident_id,
            demarches: &ds,
            duration_days: draft.duration_days,
            renews: draft.renews.as_deref(),
        },
        now,
    )
    .await?;
    if let Some(old) = &draft.renews {
        // The renewed mandate's remaining démarches end with the new one.
        state
            .store
            .revoke_authorisations(old, None, "superseded", now)
            .await?;
    }
    state.store.delete_mandate_draft(&draft.id).await?;
    tracing::info!(mandate = %mandate.id, resident = %resident_id, structure = %ctx.structure.id, "mandate created");
    let view = crate::service::mandates::view(&state, &mandate, now).await?;
    Ok(with_entry(entry, (StatusCode::CREATED, Json(view))))
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
/// must confirm with a fresh login.
#[utoipa::path(post, path = "/api/v1/mandates/{id}/renew", tag = "agent", request_body = RenewRequest,
    responses((status = 201, body = DraftView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn renew(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RenewRequest>,
) -> AppResult<Response> {
    let ctx = agent(&state, &user, "mandate.renew", &rid).await?;
    may_create_mandates(&state, &user, &ctx, "mandate.renew", &rid).await?;
    let mandate = structure_mandate(&state, &ctx, &id).await?;
    let codes = match body.demarches {
        Some(c) => c,
        None => state
            .store
            .mandate_authorisations(&mandate.id)
            .await?
            .into_iter()
            .filter(|a| a.revoked_at.is_none())
            .map(|a| a.demarche)
            .collect(),
    };
    let ds = validated_demarches(&ctx, &codes)?;
    let duration_days = body.duration_days.unwrap_or(mandate.duration_days);
    crate::service::mandates::check_duration(duration_days)?;
    let draft = new_draft(&state, &ctx, &ds, duration_days, Some(mandate.id.clone()));
    let entry = state
        .audit
        .record(AuditRecord {
            on_behalf_of: Some(mandate.resident_id.clone()),
            resident_id: Some(mandate.resident_id.clone()),
            ..record(&state, &user, Some(&ctx), "mandate.renew", &rid)
        })
        .await?;
    state.store.insert_mandate_draft(&draft).await?;
    Ok(with_entry(
        entry,
        (
            StatusCode::CREATED,
            Json(draft_view(&state, &ctx, &draft).await?),
        ),
    ))
}

/// A mandate of the agent's current structure.
async fn structure_mandate(
    state: &AppState,
    ctx: &AgentContext,
    id: &str,
) -> AppResult<MandateRow> {
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

/// The revocation body is optional: empty revokes the whole mandate.
fn revoke_body(body: &[u8]) -> AppResult<RevokeRequest> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(RevokeRequest::default());
    }
    serde_json::from_slice(body).map_err(|_| {
        AppError::bad_request(
            "invalid_json",
            "Corps JSON invalide : {\"demarche\"?, \"totp\"?} attendu. / Expected {\"demarche\"?, \"totp\"?}.",
        )
    })
}

fn one_demarche(code: Option<&str>) -> AppResult<Option<Demarche>> {
    code.map(|c| {
        Demarche::parse(c).ok_or_else(|| {
            AppError::unprocessable("unknown_demarche", "Démarche inconnue. / Unknown démarche.")
        })
    })
    .transpose()
}

/// Revokes a mandate of the structure (or one démarche): an aidant with
/// their TOTP code, or a référent.
#[utoipa::path(post, path = "/api/v1/mandates/{id}/revoke", tag = "agent", request_body = RevokeRequest,
    responses((status = 200, body = RevocationReceipt),
              (status = 403, description = "`totp_invalid`, `totp_locked`", body = crate::error::ErrorBody),
              (status = 409, description = "`nothing_to_revoke`", body = crate::error::ErrorBody)))]
pub async fn agent_revoke(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> AppResult<Response> {
    let body = revoke_body(&body)?;
    let ctx = agent(&state, &user, "mandate.revoke", &rid).await?;
    let mandate = structure_mandate(&state, &ctx, &id).await?;
    let demarche = one_demarche(body.demarche.as_deref())?;
    let now = state.clock.now();
    let base = AuditRecord {
        on_behalf_of: Some(mandate.resident_id.clone()),
        resident_id: Some(mandate.resident_id.clone()),
        purpose: demarche.map(|d| format!("demarche:{}", d.as_str())),
        ..record(&state, &user, Some(&ctx), "mandate.revoke", &rid)
    };
    // Aidants confirm with their TOTP code; a référent manages the
    // structure's mandates without one.
    if user.role == Role::Aidant
        && let Err(e) =
            crate::service::mandates::check_totp(&state, &user.actor_id, body.totp.as_deref(), now)
                .await
    {
        return Err(crate::service::access::deny(&state, base, e).await);
    }
    let entry = state.audit.record(base).await?;
    let receipt = crate::service::mandates::revoke(
        &state,
        &mandate,
        demarche,
        user.role,
        &user.actor_id,
        now,
    )
    .await?;
    let view = crate::service::mandates::view(&state, &mandate, now).await?;
    Ok(with_entry(
        entry,
        Json(RevocationReceipt {
            receipt,
            mandate: view,
        }),
    ))
}

/// A resident revokes one of their mandates (or one démarche of it), at once.
#[utoipa::path(post, path = "/api/v1/me/mandates/{id}/revoke", tag = "resident", request_body = RevokeRequest,
    responses((status = 200, body = RevocationReceipt),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "`nothing_to_revoke`", body = crate::error::ErrorBody)))]
pub async fn resident_revoke(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> AppResult<Response> {
    let body = revoke_body(&body)?;
    let demarche = one_demarche(body.demarche.as_deref())?;
    let entry = crate::http::audit::own_data(&state, &user, &rid, "mandate.revoke", None).await?;
    let mandate = state
        .store
        .find_mandate(&id)
        .await?
        .filter(|m| m.resident_id == user.actor_id)
        .ok_or(AppError::NotFound)?;
    let now = state.clock.now();
    let receipt = crate::service::mandates::revoke(
        &state,
        &mandate,
        demarche,
        Role::Resident,
        &user.actor_id,
        now,
    )
    .await?;
    let view = crate::service::mandates::view(&state, &mandate, now).await?;
    tracing::info!(mandate = %mandate.id, "mandate revoked by the resident");
    Ok(with_entry(
        entry,
        Json(RevocationReceipt {
            receipt,
            mandate: view,
        }),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct MyMandates {
    pub mandates: Vec<MandateView>,
}

/// My mandates, with their state and attestation.
#[utoipa::path(get, path = "/api/v1/me/mandates", tag = "resident",
    responses((status = 200, body = MyMandates), (status = 403, body = crate::error::ErrorBody)))]
pub async fn my_mandates(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    let entry = crate::http::audit::own_data(&state, &user, &rid, "mandate.read", None).await?;
    let now = state.clock.now();
    let mut mandates = Vec::new();
    for m in state.store.mandates_of_resident(&user.actor_id).await? {
        mandates.push(crate::service::mandates::view(&state, &m, now).await?);
    }
    Ok(with_entry(entry, Json(MyMandates { mandates })))
}

#[derive(Serialize, ToSchema)]
pub struct MandatedResident {
    pub resident_id: String,
    pub mandate_id: String,
    pub demarche: String,
    pub expires_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct StructureMandates {
    pub structure_id: String,
    pub authorisations: Vec<MandatedResident>,
}

async fn structure_list(
    state: &AppState,
    user: &CurrentUser,
    rid: &RequestId,
    until: i64,
    action: &str,
) -> AppResult<Response> {
    let ctx = agent(state, user, action, rid).await?;
    let now = state.clock.now();
    let rows = state
        .store
        .structure_authorisations(&ctx.structure.id, now, until)
        .await?;
    let entry = state
        .audit
        .record(record(state, user, Some(&ctx), action, rid))
        .await?;
    Ok(with_entry(
        entry,
        Json(StructureMandates {
            structure_id: ctx.structure.id.clone(),
            authorisations: rows
                .into_iter()
                .map(|a| MandatedResident {
                    resident_id: a.resident_id,
                    mandate_id: a.mandate_id,
                    demarche: a.demarche,
                    expires_at: a.expires_at,
                })
                .collect(),
        }),
    ))
}

/// Residents under an active mandate of my current structure, one row per
/// démarche.
#[utoipa::path(get, path = "/api/v1/aidant/residents", tag = "agent",
    responses((status = 200, body = StructureMandates), (status = 403, body = crate::error::ErrorBody)))]
pub async fn mandated_residents(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    structure_list(&state, &user, &rid, i64::MAX, "mandate.list").await
}

/// Authorisations of my structure expiring within 30 days.
#[utoipa::path(get, path = "/api/v1/aidant/mandates/expiring", tag = "agent",
    responses((status = 200, body = StructureMandates), (status = 403, body = crate::error::ErrorBody)))]
pub async fn expiring(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    let until = state.clock.now() + EXPIRING_SECS;
    structure_list(&state, &user, &rid, until, "mandate.list").await
}

/// One mandate of my structure, with its attestation.
#[utoipa::path(get, path = "/api/v1/mandates/{id}", tag = "agent",
    responses((status = 200, body = MandateView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_mandate(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let ctx = agent(&state, &user, "mandate.read", &rid).await?;
    let mandate = structure_mandate(&state, &ctx, &id).await?;
    // Who a structure acts for, and for what, is the resident's data.
    let entry = crate::service::mandates::record_read(
        &state,
        &user.actor_id,
        user.role,
        &mandate,
        rid.0.clone(),
    )
    .await?;
    Ok(with_entry(
        entry,
        Json(crate::service::mandates::view(&state, &mandate, state.clock.now()).await?),
    ))
}

fn demarche_param(q: &HashMap<String, String>) -> AppResult<Demarche> {
    let code = q.get("demarche").ok_or_else(|| {
        AppError::bad_request(
            "missing_parameter",
            "query parameter `demarche` is required",
        )
    })?;
    Demarche::parse(code).ok_or_else(|| {
        AppError::unprocessable("unknown_demarche", "Démarche inconnue. / Unknown démarche.")
    })
}

async fn on_behalf(
    state: &AppState,
    user: &CurrentUser,
    rid: &RequestId,
    resident: &str,
    category: &str,
    demarche: Demarche,
    action: &str,
) -> AppResult<(u64, crate::domain::category::Category)> {
    let ctx = agent(state, user, action, rid).await?;
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
            request_id: rid.0.clone(),
            ..AccessRequest::new(&user.actor_id, user.role, action)
        },
    )
    .await?;
    Ok((entry, cat))
}

/// Reads a resident's category within a démarche of an active mandate.
#[utoipa::path(get, path = "/api/v1/aidant/residents/{resident}/data/{category}", tag = "agent",
    params(("demarche" = String, Query,)),
    responses((status = 200, body = crate::service::vault::RecordView),
              (status = 403, description = "`no_active_mandate`, `outside_demarche`, `agent_inactive`", body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn read_on_behalf(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path((resident, category)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> AppResult<Response> {
    let demarche = demarche_param(&q)?;
    let (entry, cat) = on_behalf(
        &state,
        &user,
        &rid,
        &resident,
        &category,
        demarche,
        "data.read",
    )
    .await?;
    let record = state
        .vault()?
        .read_current_category(&resident, &cat)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(with_entry(entry, Json(record)))
}

/// Writes a new version of a resident's category within a démarche of an
/// active mandate.
#[utoipa::path(put, path = "/api/v1/aidant/residents/{resident}/data/{category}", tag = "agent",
    params(("demarche" = String, Query,)),
    responses((status = 200, body = crate::service::vault::RecordView),
              (status = 403, description = "`no_active_mandate`, `outside_demarche`", body = crate::error::ErrorBody)))]
pub async fn write_on_behalf(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path((resident, category)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    ApiJson(body): ApiJson<Value>,
) -> AppResult<Response> {
    let demarche = demarche_param(&q)?;
    // Bad input is refused before the decision is recorded.
    let vault = state.vault()?;
    let cat = vault
        .categories()
        .category(&category)
        .map_err(crate::service::vault::VaultError::from)?;
    vault
        .categories()
        .validate(&cat, &body)
        .map_err(crate::service::vault::VaultError::from)?;
    let (entry, cat) = on_behalf(
        &state,
        &user,
        &rid,
        &resident,
        &category,
        demarche,
        "data.write",
    )
    .await?;
    // A rectification on the resident's behalf is told to the recipients
    // (art. 19) as the resident's own is, in the same transaction.
    let (record, notified) =
        crate::service::rights::rectify(&state, &resident, &cat, &body, state.clock.now()).await?;
    Ok(crate::http::data::with_notified(
        with_entry(entry, Json(record)),
        &notified,
    ))
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
#[utoipa::path(get, path = "/api/v1/mandates/verify", tag = "public",
    params(("attestation" = String, Query,)),
    responses((status = 200, body = Verification),
              (status = 422, description = "`attestation_invalid`", body = crate::error::ErrorBody)))]
pub async fn verify(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> AppResult<Json<Verification>> {
    let jws = q.get("attestation").ok_or_else(|| {
        AppError::bad_request(
            "missing_parameter",
            "query parameter `attestation` is required",
        )
    })?;
    let (status, reason, mandate) =
        crate::service::mandates::verify(&state, jws, state.clock.now()).await?;
    Ok(Json(Verification {
        status,
        reason,
        mandate,
    }))
}

/// An aidant gives, refuses or withdraws a consent for a resident, within a
/// démarche of an active mandate whose categories cover the purpose's; the
/// consent is recorded as given on the resident's behalf, with the aidant
/// and the structure.
#[utoipa::path(post, path = "/api/v1/aidant/residents/{resident}/consents", tag = "agent",
    params(("demarche" = String, Query,)),
    request_body = crate::http::consents::ConsentRequest,
    responses((status = 200, body = crate::service::consents::ConsentOutcome),
              (status = 403, description = "`no_active_mandate`, `outside_demarche`", body = crate::error::ErrorBody)))]
pub async fn consent_on_behalf(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(resident): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ApiJson(req): ApiJson<crate::http::consents::ConsentRequest>,
) -> AppResult<Json<crate::service::consents::ConsentOutcome>> {
    let demarche = demarche_param(&q)?;
    let ctx = agent(&state, &user, "consent.give", &rid).await?;
    let purpose = state.register.get(&req.purpose).ok_or_else(|| {
        AppError::unprocessable("unknown_purpose", "Finalité inconnue. / Unknown purpose.")
    })?;
    let access = AccessRequest {
        resident_id: Some(&resident),
        structure_id: Some(&ctx.structure.id),
        demarche: Some(demarche),
        purpose_id: Some(&purpose.id),
        request_id: rid.0.clone(),
        ..AccessRequest::new(&user.actor_id, user.role, "consent.give")
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
    let (verdict, facts) = crate::service::access::evaluate(&state, &access).await?;
    let verdict = match verdict {
        crate::domain::access::Verdict::Allow(_)
            if purpose.special_category
                || purpose.legal_basis == crate::domain::purpose::LegalBasis::ExplicitConsent =>
        {
            crate::domain::access::Verdict::Deny("explicit_consent_resident_only")
        }
        crate::domain::access::Verdict::Allow(_) if !covered => {
            crate::domain::access::Verdict::Deny("outside_demarche")
        }
        v => v,
    };
    if let crate::domain::access::Verdict::Deny(_) = verdict {
        crate::service::access::record(&state, access, &verdict, &facts).await?;
        return Err(AppError::internal(
            "unreachable: a denial is returned by record",
        ));
    }
    let decision = crate::http::consents::decision_of(&req)?;
    let actor = crate::service::consents::Actor {
        id: user.actor_id.clone(),
        role: user.role,
        structure_id: Some(ctx.structure.id.clone()),
        request_id: rid.0.clone(),
    };
    Ok(Json(
        crate::service::consents::decide(&state, &actor, &resident, &purpose.id, decision).await?,
    ))
}

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

async fn referent(
    state: &AppState,
    user: &CurrentUser,
    action: &str,
    rid: &RequestId,
) -> AppResult<AgentContext> {
    let ctx = agent(state, user, action, rid).await?;
    if ctx.role != Role::Referent {
        let e = AppError::forbidden("referent_only", "Réservé aux référents. / Référents only.");
        return Err(crate::service::access::deny(
            state,
            record(state, user, Some(&ctx), action, rid),
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
            id: a.id,
            role: a.role,
            display_name: a.display_name,
            active: a.active,
            can_create_mandates: a.can_create_mandates,
        })
        .collect();
    Ok(StructureView {
        id: s.id,
        siret: s.siret,
        name: s.name,
        allowed_demarches: s
            .allowed_demarches
            .split(',')
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect(),
        agents,
    })
}

/// The référent's structure: its allowed démarches and its agents.
#[utoipa::path(get, path = "/api/v1/referent/structure", tag = "agent",
    responses((status = 200, body = StructureView), (status = 403, description = "`referent_only`", body = crate::error::ErrorBody)))]
pub async fn referent_structure(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    let ctx = referent(&state, &user, "structure.read", &rid).await?;
    // The agents' names and rights are theirs: read on the record.
    let entry = state
        .audit
        .record(record(&state, &user, Some(&ctx), "structure.read", &rid))
        .await?;
    Ok(with_entry(entry, Json(structure_view(&state, &ctx).await?)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DemarchesRequest {
    pub demarches: Vec<String>,
}

/// The référent sets the démarches the structure's aidants may take on
/// (new mandates only: live ones keep theirs until they end or are revoked).
#[utoipa::path(put, path = "/api/v1/referent/structure/demarches", tag = "agent", request_body = DemarchesRequest,
    responses((status = 200, body = StructureView), (status = 403, description = "`referent_only`", body = crate::error::ErrorBody)))]
pub async fn set_demarches(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    ApiJson(body): ApiJson<DemarchesRequest>,
) -> AppResult<Response> {
    let ds = parse_demarches(body.demarches.iter().map(String::as_str))
        .map_err(|m| AppError::unprocessable("unknown_demarche", m))?;
    if ds.is_empty() {
        return Err(AppError::unprocessable(
            "demarches_required",
            "Au moins une démarche. / At least one démarche.",
        ));
    }
    let ctx = referent(&state, &user, "structure.manage", &rid).await?;
    let entry = state
        .audit
        .record(record(&state, &user, Some(&ctx), "structure.manage", &rid))
        .await?;
    let codes = ds.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(",");
    state
        .store
        .set_structure_demarches(&ctx.structure.id, &codes)
        .await?;
    Ok(with_entry(entry, Json(structure_view(&state, &ctx).await?)))
}

/// The référent removes an aidant from the structure (or takes them back).
/// The agent's account is untouched: an aidant of several structures keeps
/// working for the others, and an administrator's deactivation stands.
#[utoipa::path(post, path = "/api/v1/referent/aidants/{id}/{action}", tag = "agent",
    params(("id" = String, Path,), ("action" = String, Path, description = "`deactivate` or `activate`")),
    responses((status = 200, body = StructureView), (status = 403, description = "`referent_only`", body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn set_aidant_active(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path((id, action)): Path<(String, String)>,
) -> AppResult<Response> {
    let active = match action.as_str() {
        "deactivate" => false,
        "activate" => true,
        _ => return Err(AppError::NotFound),
    };
    let ctx = referent(&state, &user, "structure.manage", &rid).await?;
    let member = state
        .store
        .agents_of_structure(&ctx.structure.id)
        .await?
        .into_iter()
        .any(|a| a.id == id && a.role == Role::Aidant.as_str());
    if !member {
        return Err(AppError::NotFound);
    }
    let entry = state
        .audit
        .record(AuditRecord {
            category: Some(format!("agent:{action}")),
            ..record(&state, &user, Some(&ctx), "structure.manage", &rid)
        })
        .await?;
    // The référent acts on their structure only: the aidant leaves (or
    // rejoins) it; the account, which other structures and an
    // administrator's decision depend on, is not theirs to change.
    state
        .store
        .set_membership_active(&id, &ctx.structure.id, active)
        .await?;
    Ok(with_entry(entry, Json(structure_view(&state, &ctx).await?)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CurrentStructureRequest {
    pub structure_id: String,
}

/// An aidant who works for several structures picks the current one; their
/// mandates and acts are those of the current structure.
#[utoipa::path(put, path = "/api/v1/aidant/structure", tag = "agent", request_body = CurrentStructureRequest,
    responses((status = 204, description = "switched"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn switch_structure(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    ApiJson(body): ApiJson<CurrentStructureRequest>,
) -> AppResult<Response> {
    // An aidant removed from their current structure may still switch to
    // another of theirs: only that refusal is let through here.
    let ctx = match agent(&state, &user, "structure.switch", &rid).await {
        Ok(ctx) => Some(ctx),
        Err(AppError::Forbidden {
            code: "structure_inactive",
            ..
        }) => None,
        Err(e) => return Err(e),
    };
    let member = state
        .store
        .agent_structures(&user.actor_id)
        .await?
        .contains(&body.structure_id);
    if !member {
        return Err(AppError::NotFound);
    }
    // Audited before the change; the change itself re-checks membership.
    let entry = state
        .audit
        .record(AuditRecord {
            category: Some(format!(
                "structure:{}",
                body.structure_id.chars().take(40).collect::<String>()
            )),
            ..record(&state, &user, ctx.as_ref(), "structure.switch", &rid)
        })
        .await?;
    if !state
        .store
        .set_current_structure(&user.actor_id, &body.structure_id)
        .await?
    {
        return Err(AppError::NotFound);
    }
    Ok(with_entry(entry, StatusCode::NO_CONTENT))
}
