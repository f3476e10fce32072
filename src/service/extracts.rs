//! Partner extracts: requested by a partner, approved or rejected by the
//! DPO, built into a CSV encrypted with age to the partner's X25519
//! recipient, with a signed manifest; downloaded; deleted when their
//! retention ends. Every step is in the audit log, and every resident
//! included sees it among their accesses.
//!
//! Memory does not grow with the number of residents: the cohort is read in
//! pages of 500, each resident's record opened and written out (records) or
//! counted into its cell (aggregates, whose memory grows with the number of
//! cells only).

use crate::error::ErrorCode;
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::AuditRecord;
use crate::domain::category::FieldType;
use crate::domain::extract::{ExtractKind, ExtractState, generalise, text_of};
use crate::domain::{ExtractId, PartnerId, Timestamp};
use crate::error::{AppError, AppResult};
use crate::service::access::role_action;
use crate::service::{Audited, Caller};
use crate::storage::ExtractRow;

/// A built file is kept this long, downloaded or not.
pub const FILE_RETENTION_SECS: i64 = 7 * 86_400;
/// Total ε a partner may spend on noisy aggregates.
pub const PARTNER_EPSILON_BUDGET: f64 = 5.0;
pub(crate) const PAGE: i64 = 500;
/// ε of an aggregate that names none: every aggregate is noisy, and
/// charged.
pub const DEFAULT_AGGREGATE_EPSILON: f64 = 1.0;
/// The most cells an aggregate's public domain may hold (each is published,
/// with its noise, even when nobody is in it).
pub const MAX_AGGREGATE_CELLS: usize = 5_000;
/// The widest integer range a group-by field may have.
const MAX_INTEGER_VALUES: i64 = 200;

/// What a partner asks for.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtractRequest {
    pub purpose: String,
    /// `records` (one row per resident, pseudonymised) or `aggregate`.
    pub kind: String,
    /// Categories, within the purpose's.
    pub categories: Vec<String>,
    /// `category.field` names. Records: the columns (default: every field
    /// of the categories). Aggregates: integer fields to sum (default none).
    pub fields: Option<Vec<String>>,
    /// Aggregates: the `category.field` dimensions.
    pub group_by: Option<Vec<String>>,
    /// Only residents whose `category.field` equals the value.
    pub filters: Option<BTreeMap<String, String>>,
    /// Records: birthdate → year, exact address dropped (default true).
    pub generalise: Option<bool>,
    /// Aggregates: discrete Laplace noise with this ε (0.01 ≤ ε ≤ 2,
    /// default 1), from the partner's budget.
    pub epsilon: Option<f64>,
}

/// The request as validated and stored.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct ExtractSpec {
    pub categories: Vec<String>,
    pub fields: Vec<String>,
    pub group_by: Vec<String>,
    pub filters: BTreeMap<String, String>,
    pub generalise: bool,
    pub epsilon: Option<f64>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ExtractView {
    pub id: String,
    pub partner_id: String,
    pub purpose: String,
    pub kind: String,
    pub spec: ExtractSpec,
    /// requested, approved, rejected, building, ready, downloaded, expired, failed.
    pub state: String,
    /// Why it was rejected or failed.
    pub reason: Option<String>,
    pub progress: Progress,
    /// Once ready: the manifest, and the same signed (JWS, EdDSA).
    #[schema(value_type = Option<Object>)]
    pub manifest: Option<Value>,
    pub manifest_jws: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// Why the extract cannot go further as the register stands now
    /// (`not_a_recipient`: the partner is no longer a recipient of the
    /// purpose): approval, build and download are refused.
    pub blocked: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Progress {
    pub rows_done: i64,
    pub rows_total: i64,
}

/// The partner's right to the purpose as the register stands now: checked
/// at every step of an extract (request, approval, build, download), not
/// only at the request.
pub fn still_recipient(
    state: &AppState,
    partner_id: &str,
    purpose_id: &crate::domain::PurposeId,
) -> Result<(), ErrorCode> {
    match state.register.get(purpose_id.as_str()) {
        Some(p) if p.names_recipient(partner_id) => Ok(()),
        _ => Err(ErrorCode::NotARecipient),
    }
}

pub(crate) fn not_a_recipient() -> AppError {
    ErrorCode::NotARecipient.into()
}

pub fn view(state: &AppState, row: &ExtractRow) -> AppResult<ExtractView> {
    let spec: ExtractSpec =
        serde_json::from_str(&row.spec).map_err(|_| AppError::internal("stored extract spec"))?;
    Ok(ExtractView {
        id: row.id.to_string(),
        partner_id: row.partner_id.to_string(),
        purpose: row.purpose.to_string(),
        kind: row.kind.as_str().to_string(),
        spec,
        state: row.state.as_str().to_string(),
        reason: row.reason.clone(),
        // An aggregate's exact cohort is not shown beside its noisy cells:
        // its progress is counted in pages.
        progress: match row.kind {
            ExtractKind::Aggregate => Progress {
                rows_done: (row.rows_done.max(0) + PAGE - 1) / PAGE * PAGE,
                rows_total: (row.rows_total.max(0) + PAGE - 1) / PAGE * PAGE,
            },
            ExtractKind::Records => Progress {
                rows_done: row.rows_done,
                rows_total: row.rows_total,
            },
        },
        manifest: row
            .manifest
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok()),
        manifest_jws: row.manifest_jws.clone(),
        created_at: row.created_at,
        expires_at: row.expires_at,
        blocked: matches!(
            row.state,
            ExtractState::Requested
                | ExtractState::Approved
                | ExtractState::Building
                | ExtractState::Ready
                | ExtractState::Downloaded
        )
        .then(|| still_recipient(state, row.partner_id.as_str(), &row.purpose).err())
        .flatten()
        .map(|code| code.code().to_string()),
    })
}

/// Whether a resident's values pass a spec's filters.
pub(crate) fn passes_filters(spec: &ExtractSpec, value: &impl Fn(&str) -> Option<Value>) -> bool {
    spec.filters
        .iter()
        .all(|(k, v)| value(k).map(|x| text_of(&x)) == Some(v.clone()))
}

/// A resident's cell in an aggregate of `spec`: its group-by values,
/// generalised.
pub(crate) fn group_key(spec: &ExtractSpec, value: &impl Fn(&str) -> Option<Value>) -> Vec<String> {
    spec.group_by
        .iter()
        .map(|d| {
            value(d)
                .map(|v| generalise(d, &text_of(&v)))
                .unwrap_or_default()
        })
        .collect()
}

/// One page of a purpose's cohort after `after` (which it advances): the
/// residents whose consent, when the purpose needs one, covers every
/// category of `categories`, and how many candidates the page held; `None`
/// past the last page. Extracts and the statistics' commune read page alike.
pub(crate) async fn eligible_page(
    state: &AppState,
    purpose: &crate::domain::purpose::Purpose,
    categories: &[String],
    now: Timestamp,
    after: &mut String,
) -> Result<Option<(Vec<crate::domain::ResidentId>, usize)>, crate::storage::StorageError> {
    let page = state
        .store
        .cohort_page(
            &purpose.id,
            purpose.legal_basis.needs_consent(),
            &purpose.notice_version,
            now,
            after,
            PAGE,
        )
        .await?;
    let Some((last, _)) = page.last() else {
        return Ok(None);
    };
    *after = last.to_string();
    let candidates = page.len();
    let eligible = page
        .into_iter()
        .filter(|(_, consented)| match consented {
            Some(cats) => categories
                .iter()
                .all(|c| cats.iter().any(|x| x.as_str() == c)),
            None => true,
        })
        .map(|(resident, _)| resident)
        .collect();
    Ok(Some((eligible, candidates)))
}

/// The public domain of a group-by field: the values its type declares, in
/// order (an enum's values; `true`, `false`; a bounded integer's range of at
/// most 200 values; the territory's communes). `None` when its type declares
/// none: a value typed by a resident must never name a cell.
pub(crate) fn group_domain(state: &AppState, name: &str) -> Option<Vec<String>> {
    let (c, f) = name.split_once('.')?;
    match field_type(state, c, f)? {
        FieldType::Enum { values } => Some(values.clone()),
        FieldType::Boolean => Some(vec!["true".into(), "false".into()]),
        FieldType::Integer { min, max } if max.saturating_sub(*min) < MAX_INTEGER_VALUES => {
            Some((*min..=*max).map(|n| n.to_string()).collect())
        }
        FieldType::InseeCode => Some(
            state
                .territory
                .communes()
                .iter()
                .map(|c| c.insee.clone())
                .collect(),
        ),
        _ => None,
    }
}

/// Splits `category.field`, checking both exist and the category is asked.
pub(crate) fn field_of<'a>(
    state: &AppState,
    categories: &[String],
    name: &'a str,
) -> AppResult<(&'a str, &'a str)> {
    let (c, f) = name
        .split_once('.')
        .ok_or_else(|| ErrorCode::UnknownField.with("fields are `category.field`"))?;
    if !categories.iter().any(|x| x == c) {
        return Err(AppError::from(ErrorCode::FieldOutsideCategories));
    }
    let category = state
        .categories
        .category(c)
        .map_err(|_| ErrorCode::UnknownField.with("unknown category"))?;
    let known = state
        .categories
        .def(&category)
        .is_some_and(|d| d.fields.contains_key(f));
    if !known {
        return Err(AppError::from(ErrorCode::UnknownField));
    }
    Ok((c, f))
}

pub(crate) fn field_type<'a>(state: &'a AppState, c: &str, f: &str) -> Option<&'a FieldType> {
    let category = state.categories.category(c).ok()?;
    state.categories.def(&category)?.fields.get(f)
}

pub(crate) fn audit(
    actor: &str,
    role: &str,
    action: &str,
    row: &ExtractRow,
    now: Timestamp,
    reason: &str,
) -> AuditRecord {
    AuditRecord::new(actor, role, action, now)
        .purpose(&row.purpose)
        .category(format!("extract:{}", row.id))
        .allow(reason)
}

/// Validates and records a partner's request.
pub async fn request(
    state: &AppState,
    partner_id: &str,
    req: ExtractRequest,
    now: Timestamp,
) -> AppResult<ExtractRow> {
    let purpose = state
        .register
        .get(&req.purpose)
        .ok_or_else(|| AppError::from(ErrorCode::UnknownPurpose))?;
    if !purpose.names_recipient(partner_id) {
        return Err(ErrorCode::NotARecipient.into());
    }
    let vanished = || AppError::internal("partner vanished");
    let partner_id = PartnerId::parse(partner_id).map_err(|_| vanished())?;
    let partner = state
        .store
        .find_partner(&partner_id)
        .await?
        .ok_or_else(vanished)?;
    if partner.age_recipient.is_none() {
        return Err(AppError::from(ErrorCode::NoAgeRecipient));
    }
    let Some(extract_kind) = ExtractKind::parse(&req.kind) else {
        return Err(AppError::from(ErrorCode::InvalidKind));
    };
    let kind = extract_kind.as_str();
    if req.categories.is_empty() || req.categories.iter().any(|c| !purpose.covers_category(c)) {
        return Err(AppError::from(ErrorCode::CategoriesOutsidePurpose));
    }
    let mut fields = Vec::new();
    match &req.fields {
        Some(list) => {
            for name in list {
                field_of(state, &req.categories, name)?;
                fields.push(name.clone());
            }
        }
        None if kind == "records" => {
            for c in &req.categories {
                let category = state
                    .categories
                    .category(c)
                    .map_err(|_| ErrorCode::UnknownField.with("unknown category"))?;
                if let Some(def) = state.categories.def(&category) {
                    fields.extend(def.fields.keys().map(|f| format!("{c}.{f}")));
                }
            }
        }
        None => {}
    }
    let generalise = req.generalise.unwrap_or(true);
    if kind == "records" && generalise {
        fields.retain(|f| !crate::domain::extract::dropped_when_generalising(f));
    }
    let mut group_by = Vec::new();
    for name in req.group_by.clone().unwrap_or_default() {
        field_of(state, &req.categories, &name)?;
        group_by.push(name);
    }
    if kind == "aggregate" {
        if group_by.is_empty() {
            return Err(AppError::from(ErrorCode::GroupByRequired));
        }
        for f in &fields {
            let (c, name) = field_of(state, &req.categories, f)?;
            if !matches!(field_type(state, c, name), Some(FieldType::Integer { .. })) {
                return Err(AppError::from(ErrorCode::NotSummable));
            }
        }
        // Every cell of the product of the fields' domains (each with its
        // `autre`) is published.
        let mut cells: usize = 1;
        for g in &group_by {
            let values = group_domain(state, g)
                .ok_or_else(|| AppError::from(ErrorCode::UndeclaredGroupBy))?;
            cells = cells.saturating_mul(values.len() + 1);
            if cells > MAX_AGGREGATE_CELLS {
                return Err(ErrorCode::UndeclaredGroupBy.into());
            }
        }
    } else if !group_by.is_empty() || req.epsilon.is_some() {
        return Err(AppError::from(ErrorCode::InvalidForRecords));
    }
    let filters = req.filters.clone().unwrap_or_default();
    for name in filters.keys() {
        field_of(state, &req.categories, name)?;
    }
    // Below 0.01 the noise's scale outgrows any count it hides.
    if let Some(e) = req.epsilon
        && !(0.01..=2.0).contains(&e)
    {
        return Err(ErrorCode::InvalidEpsilon.into());
    }
    let epsilon = match kind {
        "aggregate" => Some(req.epsilon.unwrap_or(DEFAULT_AGGREGATE_EPSILON)),
        _ => None,
    };
    let spec = ExtractSpec {
        categories: req.categories,
        fields,
        group_by,
        filters,
        generalise,
        epsilon,
    };
    let row = ExtractRow {
        id: ExtractId::from_uuid(uuid::Uuid::new_v4()),
        partner_id: partner_id.clone(),
        purpose: purpose.id.clone(),
        kind: extract_kind,
        spec: serde_json::to_string(&spec).map_err(|_| AppError::internal("spec"))?,
        state: ExtractState::Requested,
        reason: None,
        rows_done: 0,
        rows_total: 0,
        manifest: None,
        manifest_jws: None,
        epsilon: spec.epsilon,
        created_at: now,
        updated_at: now,
        expires_at: None,
    };
    state
        .audit
        .record(audit(
            partner_id.as_str(),
            "partner",
            "extract.request",
            &row,
            now,
            "recipient",
        ))
        .await?;
    state.store.insert_extract(&row).await?;
    Ok(row)
}

/// The DPO approves (the build starts in the background) or rejects.
pub async fn decide(
    state: &AppState,
    dpo_id: &str,
    id: &ExtractId,
    approve: bool,
    reason: Option<&str>,
    now: Timestamp,
) -> AppResult<ExtractRow> {
    let row = state
        .store
        .find_extract(id)
        .await?
        .ok_or(AppError::NotFound)?;
    let to = if approve {
        ExtractState::Approved
    } else {
        ExtractState::Rejected
    };
    let action = if approve {
        "extract.approve"
    } else {
        "extract.reject"
    };
    let over_budget =
        || ErrorCode::EpsilonBudgetExhausted.with(format!("ε ≤ {PARTNER_EPSILON_BUDGET}"));
    let refused = |reason: &str| audit(dpo_id, "dpo", action, &row, now, "dpo").deny(reason);
    // The register may have changed since the request.
    if approve && let Err(reason) = still_recipient(state, row.partner_id.as_str(), &row.purpose) {
        state.audit.record(refused(reason.code())).await?;
        return Err(not_a_recipient());
    }
    // An aggregate asked before every aggregate was noisy carries no ε: it
    // could be approved uncharged, then never built.
    if approve && row.kind == ExtractKind::Aggregate && row.epsilon.is_none() {
        state
            .audit
            .record(refused(ErrorCode::InvalidEpsilon.code()))
            .await?;
        return Err(ErrorCode::InvalidEpsilon.into());
    }
    // A first look spares the log an "allow" that the atomic check below
    // would only take back.
    if approve
        && let Some(e) = row.epsilon
        && state.store.epsilon_spent(&row.partner_id).await? + e > PARTNER_EPSILON_BUDGET
    {
        state
            .audit
            .record(refused(ErrorCode::EpsilonBudgetExhausted.code()))
            .await?;
        return Err(over_budget());
    }
    state
        .audit
        .record(audit(dpo_id, "dpo", action, &row, now, "dpo"))
        .await?;
    let moved = if approve {
        // Check and spend in one serialised unit (concurrent approvals).
        match state
            .store
            .extract_approve(id, PARTNER_EPSILON_BUDGET, now)
            .await?
        {
            crate::storage::ApproveOutcome::Approved => true,
            crate::storage::ApproveOutcome::NotRequested => false,
            crate::storage::ApproveOutcome::BudgetExhausted => {
                state
                    .audit
                    .record(refused(ErrorCode::EpsilonBudgetExhausted.code()))
                    .await?;
                return Err(over_budget());
            }
        }
    } else {
        state
            .store
            .extract_transition(id, ExtractState::Requested, to, reason, now)
            .await?
    };
    if !moved {
        return Err(ErrorCode::InvalidTransition.with(format!("{} → {to}", row.state)));
    }
    if approve {
        let state = state.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let now = state.clock.now();
            if let Err(e) = crate::service::extract_build::build(&state, &id, now).await {
                tracing::warn!(extract = %id, error = %e, "extract build failed");
            }
        });
    }
    state
        .store
        .find_extract(id)
        .await?
        .ok_or(AppError::NotFound)
}

/// A partner's download of its extract's file, decided and recorded before
/// a byte leaves: its right to the purpose as the register stands now, the
/// file's retention by date (even before the hourly purge), and its state.
/// Returns the audit entry of the allowed download.
pub async fn authorise_download(
    state: &AppState,
    partner_id: &str,
    row: &ExtractRow,
    request_id: Option<String>,
    now: Timestamp,
) -> AppResult<u64> {
    let entry = |allowed: bool, reason: &str| {
        let record =
            audit(partner_id, "partner", "extract.download", row, now, reason).request(&request_id);
        if allowed { record } else { record.deny(reason) }
    };
    if let Err(reason) = still_recipient(state, partner_id, &row.purpose) {
        state.audit.record(entry(false, reason.code())).await?;
        return Err(not_a_recipient());
    }
    let live = matches!(row.state, ExtractState::Ready | ExtractState::Downloaded);
    if live && row.expires_at.is_some_and(|at| at <= now) {
        state
            .audit
            .record(entry(false, ErrorCode::ExtractExpired.code()))
            .await?;
        return Err(ErrorCode::ExtractExpired.into());
    }
    match row.state {
        ExtractState::Ready | ExtractState::Downloaded => {
            Ok(state.audit.record(entry(true, "recipient")).await?)
        }
        ExtractState::Expired => Err(ErrorCode::ExtractExpired.into()),
        _ => Err(ErrorCode::ExtractNotReady.with(row.state.to_string())),
    }
}

pub fn file_path(state: &AppState, id: &ExtractId) -> PathBuf {
    state.config.extracts_dir.join(format!("{id}.csv.age"))
}

/// Where a build writes its file until it is complete (then renamed to
/// [`file_path`]).
pub fn part_path(state: &AppState, id: &ExtractId) -> PathBuf {
    state.config.extracts_dir.join(format!("{id}.csv.age.part"))
}

#[derive(Serialize, ToSchema)]
pub struct ExtractList {
    pub extracts: Vec<ExtractView>,
    /// The privacy-loss ledger of the partners listed (the DPO's list
    /// only): ε spent by their approved noisy aggregates, and the budget.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<EpsilonBudget>,
}

/// One partner's line of the ε ledger.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EpsilonBudget {
    pub partner_id: String,
    pub spent: f64,
    pub budget: f64,
}

fn list_of(state: &AppState, rows: &[ExtractRow]) -> AppResult<ExtractList> {
    Ok(ExtractList {
        extracts: rows
            .iter()
            .map(|r| view(state, r))
            .collect::<AppResult<_>>()?,
        budgets: Vec::new(),
    })
}

/// A partner's own extracts.
pub async fn partner_list(state: &AppState, partner: &Caller) -> AppResult<ExtractList> {
    let rows = match partner.partner_id() {
        Some(id) => state.store.extracts_of_partner(&id).await?,
        None => Vec::new(),
    };
    list_of(state, &rows)
}

/// One of the partner's own extracts (another's is `not_found`).
async fn own(state: &AppState, partner: &Caller, id: &ExtractId) -> AppResult<ExtractRow> {
    state
        .store
        .find_extract(id)
        .await?
        .filter(|e| e.partner_id == partner.actor_id.as_str())
        .ok_or(AppError::NotFound)
}

/// One of the partner's extracts: its state, progress and, once built, its
/// signed manifest.
pub async fn partner_get(
    state: &AppState,
    partner: &Caller,
    id: &ExtractId,
) -> AppResult<ExtractView> {
    view(state, &own(state, partner, id).await?)
}

/// A partner asks for an extract (it waits for the DPO's approval).
pub async fn partner_request(
    state: &AppState,
    partner: &Caller,
    req: ExtractRequest,
    now: Timestamp,
) -> AppResult<ExtractView> {
    let row = request(state, &partner.actor_id, req, now).await?;
    view(state, &row)
}

/// A partner downloads its extract's file: decided and recorded first
/// ([`authorise_download`]), then the file is opened and the extract marked
/// downloaded, and only then does a byte leave.
pub async fn download(
    state: &AppState,
    partner: &Caller,
    id: &ExtractId,
    now: Timestamp,
) -> AppResult<Audited<tokio::fs::File>> {
    let row = own(state, partner, id).await?;
    let entry = authorise_download(
        state,
        &partner.actor_id,
        &row,
        partner.request_id.clone(),
        now,
    )
    .await?;
    let file = tokio::fs::File::open(file_path(state, id))
        .await
        .map_err(|_| AppError::internal("extract file missing"))?;
    state
        .store
        .extract_transition(id, ExtractState::Ready, ExtractState::Downloaded, None, now)
        .await?;
    Ok(Audited::new(entry, file))
}

/// Every extract request, those awaiting a decision first (the DPO).
pub async fn dpo_list(state: &AppState, caller: &Caller) -> AppResult<Audited<ExtractList>> {
    let entry = role_action(state, caller, "extract.approve").await?;
    let rows = state.store.all_extracts(500).await?;
    let mut list = list_of(state, &rows)?;
    let mut partners: Vec<&crate::domain::PartnerId> = rows.iter().map(|r| &r.partner_id).collect();
    partners.sort();
    partners.dedup();
    for p in partners {
        list.budgets.push(EpsilonBudget {
            partner_id: p.to_string(),
            spent: state.store.epsilon_spent(p).await?,
            budget: PARTNER_EPSILON_BUDGET,
        });
    }
    Ok(Audited::new(entry, list))
}

/// The DPO approves an extract (it is then built in the background).
/// `id` is `None` when the path could name no extract (a malformed id): it
/// is then `not_found` at the point an unknown extract is, after the
/// caller's right was checked and recorded.
pub async fn dpo_approve(
    state: &AppState,
    caller: &Caller,
    id: Option<&ExtractId>,
    now: Timestamp,
) -> AppResult<Audited<ExtractView>> {
    let entry = role_action(state, caller, "extract.approve").await?;
    let id = id.ok_or(AppError::NotFound)?;
    let row = decide(state, &caller.actor_id, id, true, None, now).await?;
    Ok(Audited::new(entry, view(state, &row)?))
}

/// The DPO rejects an extract, with a reason the partner sees (1 to 500
/// characters). `id` as for [`dpo_approve`].
pub async fn dpo_reject(
    state: &AppState,
    caller: &Caller,
    id: Option<&ExtractId>,
    reason: &str,
    now: Timestamp,
) -> AppResult<Audited<ExtractView>> {
    if reason.trim().is_empty() || reason.len() > 500 {
        return Err(ErrorCode::InvalidReason.with("a reason of 1 to 500 characters"));
    }
    let entry = role_action(state, caller, "extract.approve").await?;
    let id = id.ok_or(AppError::NotFound)?;
    let row = decide(state, &caller.actor_id, id, false, Some(reason.trim()), now).await?;
    Ok(Audited::new(entry, view(state, &row)?))
}

/// A build with no progress for this long was interrupted (a page of
/// residents takes seconds).
pub const INTERRUPTED_AFTER_SECS: i64 = 3600;

/// Fails the builds interrupted by a crash or a kill (still `building`,
/// no progress for an hour): their held messages go with the transition
/// (nobody is told of a file that was never made) and their partial file
/// is removed. The partner may ask again. Returns how many.
pub async fn fail_interrupted(state: &AppState, now: Timestamp) -> AppResult<u64> {
    let mut n = 0;
    for id in state
        .store
        .extracts_interrupted(now - INTERRUPTED_AFTER_SECS)
        .await?
    {
        if state
            .store
            .extract_transition(
                &id,
                ExtractState::Building,
                ExtractState::Failed,
                Some("interrupted: the build stopped (restart) before its file was made"),
                now,
            )
            .await?
        {
            let _ = std::fs::remove_file(part_path(state, &id));
            let _ = std::fs::remove_file(file_path(state, &id));
            n += 1;
        }
    }
    // A build failed while it was still running may have held a page's
    // messages after the failure: never to be released, so gone.
    let orphans = state.store.extract_orphan_messages_delete().await?;
    if orphans > 0 {
        tracing::warn!(orphans, "messages held for failed extracts deleted");
    }
    Ok(n)
}

/// Deletes the files of extracts past their retention (the retention job).
pub async fn expire_due(state: &AppState, now: Timestamp) -> AppResult<u64> {
    let mut n = 0;
    for id in state.store.extracts_to_expire(now).await? {
        let _ = std::fs::remove_file(file_path(state, &id));
        for from in [ExtractState::Ready, ExtractState::Downloaded] {
            if state
                .store
                .extract_transition(&id, from, ExtractState::Expired, None, now)
                .await?
            {
                n += 1;
            }
        }
    }
    Ok(n)
}
