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

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::AuditRecord;
use crate::domain::Timestamp;
use crate::domain::category::FieldType;
use crate::domain::extract::{Cell, MIN_CELL, csv_line, generalise, laplace, suppress, text_of};
use crate::error::{AppError, AppResult};
use crate::storage::ExtractRow;

/// A built file is kept this long, downloaded or not.
pub const FILE_RETENTION_SECS: i64 = 7 * 86_400;
/// Total ε a partner may spend on noisy aggregates.
pub const PARTNER_EPSILON_BUDGET: f64 = 5.0;
const PAGE: i64 = 500;

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
    /// Aggregates: Laplace noise with this ε (0 < ε ≤ 2), from the
    /// partner's budget.
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
    purpose_id: &str,
) -> Result<(), &'static str> {
    match state.register.get(purpose_id) {
        Some(p) if p.names_recipient(partner_id) => Ok(()),
        _ => Err("not_a_recipient"),
    }
}

fn not_a_recipient() -> AppError {
    AppError::forbidden(
        "not_a_recipient",
        "Le partenaire n'est plus destinataire de cette finalité dans le registre. / The partner is no longer a recipient of this purpose in the register.",
    )
}

pub fn view(state: &AppState, row: &ExtractRow) -> AppResult<ExtractView> {
    let spec: ExtractSpec =
        serde_json::from_str(&row.spec).map_err(|_| AppError::internal("stored extract spec"))?;
    Ok(ExtractView {
        id: row.id.clone(),
        partner_id: row.partner_id.clone(),
        purpose: row.purpose.clone(),
        kind: row.kind.clone(),
        spec,
        state: row.state.clone(),
        reason: row.reason.clone(),
        progress: Progress {
            rows_done: row.rows_done,
            rows_total: row.rows_total,
        },
        manifest: row
            .manifest
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok()),
        manifest_jws: row.manifest_jws.clone(),
        created_at: row.created_at,
        expires_at: row.expires_at,
        blocked: matches!(
            row.state.as_str(),
            "requested" | "approved" | "building" | "ready" | "downloaded"
        )
        .then(|| still_recipient(state, &row.partner_id, &row.purpose).err())
        .flatten()
        .map(str::to_string),
    })
}

/// Whether a resident's values pass a spec's filters.
fn passes_filters(spec: &ExtractSpec, value: &impl Fn(&str) -> Option<Value>) -> bool {
    spec.filters
        .iter()
        .all(|(k, v)| value(k).map(|x| text_of(&x)) == Some(v.clone()))
}

/// A resident's cell in an aggregate of `spec`: its group-by values,
/// generalised.
fn group_key(spec: &ExtractSpec, value: &impl Fn(&str) -> Option<Value>) -> Vec<String> {
    spec.group_by
        .iter()
        .map(|d| {
            value(d)
                .map(|v| generalise(d, &text_of(&v)))
                .unwrap_or_default()
        })
        .collect()
}

fn refuse(code: &'static str, message: impl Into<String>) -> AppError {
    AppError::unprocessable(code, message)
}

/// Splits `category.field`, checking both exist and the category is asked.
fn field_of<'a>(
    state: &AppState,
    categories: &[String],
    name: &'a str,
) -> AppResult<(&'a str, &'a str)> {
    let (c, f) = name
        .split_once('.')
        .ok_or_else(|| refuse("unknown_field", "fields are `category.field`"))?;
    if !categories.iter().any(|x| x == c) {
        return Err(refuse(
            "field_outside_categories",
            "a field's category is not among the extract's",
        ));
    }
    let category = state
        .categories
        .category(c)
        .map_err(|_| refuse("unknown_field", "unknown category"))?;
    let known = state
        .categories
        .def(&category)
        .is_some_and(|d| d.fields.contains_key(f));
    if !known {
        return Err(refuse("unknown_field", "unknown field"));
    }
    Ok((c, f))
}

fn field_type<'a>(state: &'a AppState, c: &str, f: &str) -> Option<&'a FieldType> {
    let category = state.categories.category(c).ok()?;
    state.categories.def(&category)?.fields.get(f)
}

fn audit(
    actor: &str,
    role: &str,
    action: &str,
    row: &ExtractRow,
    now: Timestamp,
    reason: &str,
) -> AuditRecord {
    AuditRecord {
        timestamp: now,
        actor_id: actor.into(),
        actor_role: role.into(),
        action: action.into(),
        purpose: Some(row.purpose.clone()),
        category: Some(format!("extract:{}", row.id)),
        allowed: true,
        reason: reason.into(),
        ..Default::default()
    }
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
        .ok_or_else(|| refuse("unknown_purpose", "Finalité inconnue. / Unknown purpose."))?;
    if !purpose.names_recipient(partner_id) {
        return Err(AppError::forbidden(
            "not_a_recipient",
            "Vous n'êtes pas destinataire de cette finalité. / You are not a recipient of this purpose.",
        ));
    }
    let partner = state
        .store
        .find_partner(partner_id)
        .await?
        .ok_or_else(|| AppError::internal("partner vanished"))?;
    if partner.age_recipient.is_none() {
        return Err(refuse(
            "no_age_recipient",
            "Aucune clé age n'est enregistrée pour vous : l'extraction ne pourrait pas être chiffrée. / No age recipient registered for you.",
        ));
    }
    let kind = req.kind.as_str();
    if !matches!(kind, "records" | "aggregate") {
        return Err(refuse("invalid_kind", "kind: `records` or `aggregate`"));
    }
    if req.categories.is_empty() || req.categories.iter().any(|c| !purpose.covers_category(c)) {
        return Err(refuse(
            "categories_outside_purpose",
            "Catégories hors de la finalité. / Categories outside the purpose.",
        ));
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
                    .map_err(|_| refuse("unknown_field", "unknown category"))?;
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
            return Err(refuse("group_by_required", "an aggregate needs `group_by`"));
        }
        for f in &fields {
            let (c, name) = field_of(state, &req.categories, f)?;
            if !matches!(field_type(state, c, name), Some(FieldType::Integer { .. })) {
                return Err(refuse("not_summable", "aggregates sum integer fields only"));
            }
        }
    } else if !group_by.is_empty() || req.epsilon.is_some() {
        return Err(refuse(
            "invalid_for_records",
            "`group_by` and `epsilon` are for aggregates",
        ));
    }
    let filters = req.filters.clone().unwrap_or_default();
    for name in filters.keys() {
        field_of(state, &req.categories, name)?;
    }
    if let Some(e) = req.epsilon
        && !(e > 0.0 && e <= 2.0)
    {
        return Err(refuse("invalid_epsilon", "0 < ε ≤ 2"));
    }
    let spec = ExtractSpec {
        categories: req.categories,
        fields,
        group_by,
        filters,
        generalise,
        epsilon: req.epsilon,
    };
    let row = ExtractRow {
        id: uuid::Uuid::new_v4().to_string(),
        partner_id: partner_id.to_string(),
        purpose: purpose.id.clone(),
        kind: kind.into(),
        spec: serde_json::to_string(&spec).map_err(|_| AppError::internal("spec"))?,
        state: "requested".into(),
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
            partner_id,
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
    id: &str,
    approve: bool,
    reason: Option<&str>,
    now: Timestamp,
) -> AppResult<ExtractRow> {
    let row = state
        .store
        .find_extract(id)
        .await?
        .ok_or(AppError::NotFound)?;
    let to = if approve { "approved" } else { "rejected" };
    let action = if approve {
        "extract.approve"
    } else {
        "extract.reject"
    };
    let over_budget = || AppError::Conflict {
        code: "epsilon_budget_exhausted",
        message: format!(
            "Budget ε du partenaire épuisé ({PARTNER_EPSILON_BUDGET}). / The partner's ε budget is spent."
        ),
    };
    let refused = |reason: &str| AuditRecord {
        allowed: false,
        reason: reason.to_string(),
        ..audit(dpo_id, "dpo", action, &row, now, "dpo")
    };
    // The register may have changed since the request.
    if approve && let Err(reason) = still_recipient(state, &row.partner_id, &row.purpose) {
        state.audit.record(refused(reason)).await?;
        return Err(not_a_recipient());
    }
    // A first look spares the log an "allow" that the atomic check below
    // would only take back.
    if approve
        && let Some(e) = row.epsilon
        && state.store.epsilon_spent(&row.partner_id).await? + e > PARTNER_EPSILON_BUDGET
    {
        state
            .audit
            .record(refused("epsilon_budget_exhausted"))
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
                    .record(refused("epsilon_budget_exhausted"))
                    .await?;
                return Err(over_budget());
            }
        }
    } else {
        state
            .store
            .extract_transition(id, "requested", to, reason, now)
            .await?
    };
    if !moved {
        return Err(AppError::Conflict {
            code: "invalid_transition",
            message: format!("{} → {to}", row.state),
        });
    }
    if approve {
        let state = state.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let now = state.clock.now();
            if let Err(e) = build(&state, &id, now).await {
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
    let entry = |allowed: bool, reason: &str| AuditRecord {
        timestamp: now,
        actor_id: partner_id.to_string(),
        actor_role: "partner".into(),
        action: "extract.download".into(),
        purpose: Some(row.purpose.clone()),
        category: Some(format!("extract:{}", row.id)),
        allowed,
        reason: reason.into(),
        request_id: request_id.clone(),
        ..Default::default()
    };
    if let Err(reason) = still_recipient(state, partner_id, &row.purpose) {
        state.audit.record(entry(false, reason)).await?;
        return Err(not_a_recipient());
    }
    let live = matches!(row.state.as_str(), "ready" | "downloaded");
    if live && row.expires_at.is_some_and(|at| at <= now) {
        state.audit.record(entry(false, "extract_expired")).await?;
        return Err(AppError::Gone {
            code: "extract_expired",
            message: "Ce fichier a atteint la fin de sa durée de conservation. / The file reached the end of its retention.".into(),
        });
    }
    match row.state.as_str() {
        "ready" | "downloaded" => Ok(state.audit.record(entry(true, "recipient")).await?),
        "expired" => Err(AppError::Gone {
            code: "extract_expired",
            message: "Ce fichier a été supprimé à la fin de sa durée de conservation. / The file was deleted when its retention ended.".into(),
        }),
        _ => Err(AppError::Conflict {
            code: "extract_not_ready",
            message: format!("État : {}. / State: {}.", row.state, row.state),
        }),
    }
}

pub fn file_path(state: &AppState, id: &str) -> PathBuf {
    state.config.extracts_dir.join(format!("{id}.csv.age"))
}

fn uniform(rng: &ring::rand::SystemRandom) -> Result<f64, String> {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(rng, &mut b)
        .map_err(|_| "random generator failed".to_string())?;
    // 53 random bits in [0, 1), shifted to [-0.5, 0.5).
    Ok((u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
}

/// Builds an approved extract at `now`. On failure the extract is marked
/// `failed` with the reason and no file is left.
pub async fn build(state: &AppState, id: &str, now: Timestamp) -> Result<(), String> {
    let tmp = state.config.extracts_dir.join(format!("{id}.csv.age.part"));
    match build_inner(state, id, now, &tmp).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            let _ = state
                .store
                .extract_transition(id, "building", "failed", Some(&e), now)
                .await;
            Err(e)
        }
    }
}

async fn build_inner(
    state: &AppState,
    id: &str,
    now: Timestamp,
    tmp: &std::path::Path,
) -> Result<(), String> {
    let s = |e: crate::storage::StorageError| e.to_string();
    let row = state
        .store
        .find_extract(id)
        .await
        .map_err(s)?
        .ok_or("no such extract")?;
    if !state
        .store
        .extract_transition(id, "approved", "building", None, now)
        .await
        .map_err(s)?
    {
        return Err(format!("not approved (state {})", row.state));
    }
    let spec: ExtractSpec = serde_json::from_str(&row.spec).map_err(|e| e.to_string())?;
    let purpose = state
        .register
        .get(&row.purpose)
        .ok_or("purpose left the register")?
        .clone();
    let partner = state
        .store
        .find_partner(&row.partner_id)
        .await
        .map_err(s)?
        .ok_or("partner gone")?;
    // A partner cut off after the approval, or taken off the purpose's
    // recipients, gets no file made for it.
    if !partner.active {
        return Err("partner deactivated".into());
    }
    still_recipient(state, &partner.id, &purpose.id)
        .map_err(|code| format!("{code}: the partner is no longer a recipient of the purpose"))?;
    let recipient: age::x25519::Recipient = partner
        .age_recipient
        .as_deref()
        .ok_or("no age recipient")?
        .parse()
        .map_err(|_| "the partner's age recipient does not parse".to_string())?;
    let vault = state
        .vault()
        .map_err(|e| format!("{:?}", e.code_and_status().0))?;
    let keys = vault.keys().current();
    std::fs::create_dir_all(&state.config.extracts_dir).map_err(|e| e.to_string())?;
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(tmp)
            .map_err(|e| e.to_string())?
    };
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .map_err(|e| e.to_string())?;
    let mut out = encryptor
        .wrap_output(BufWriter::new(file))
        .map_err(|e| e.to_string())?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut write = |bytes: &[u8]| -> Result<(), String> {
        digest.update(bytes);
        out.write_all(bytes).map_err(|e| e.to_string())
    };

    let consent_based = purpose.legal_basis.needs_consent();
    let total = state
        .store
        .count_cohort(&purpose.id, consent_based, &purpose.notice_version, now)
        .await
        .map_err(s)?;
    let records = row.kind == "records";
    if records {
        let mut header = vec!["pseudonym".to_string()];
        header.extend(spec.fields.iter().cloned());
        write(csv_line(&header).as_bytes())?;
    }
    let mut cells: BTreeMap<Vec<String>, Cell> = BTreeMap::new();
    // Differencing (issue 27): the partner's earlier aggregates of this
    // purpose are tabulated jointly with this one over the same residents,
    // so that no pair of releases isolates fewer than 11 people.
    let earlier: Vec<(String, ExtractSpec)> = if records {
        Vec::new()
    } else {
        state
            .store
            .extracts_of_partner(&partner.id)
            .await
            .map_err(s)?
            .into_iter()
            .filter(|e| {
                e.id != row.id
                    && e.purpose == row.purpose
                    && e.kind == "aggregate"
                    // Those being built too: two approved close together
                    // would otherwise each miss the other.
                    && matches!(
                        e.state.as_str(),
                        "approved" | "building" | "ready" | "downloaded" | "expired"
                    )
            })
            .filter_map(|e| Some((e.id.clone(), serde_json::from_str(&e.spec).ok()?)))
            .collect()
    };
    let mut joints: Vec<crate::domain::extract::Joint> = vec![Default::default(); earlier.len()];
    let mut read_categories = spec.categories.clone();
    for (_, e) in &earlier {
        for c in &e.categories {
            if !read_categories.contains(c) {
                read_categories.push(c.clone());
            }
        }
    }
    let mut cohort: i64 = 0;
    let mut seen: i64 = 0;
    let mut after = String::new();
    let mut includes: Vec<AuditRecord> = Vec::new();
    loop {
        let page = state
            .store
            .cohort_page(
                &purpose.id,
                consent_based,
                &purpose.notice_version,
                now,
                &after,
                PAGE,
            )
            .await
            .map_err(s)?;
        let Some((last, _)) = page.last() else { break };
        after = last.clone();
        seen += page.len() as i64;
        // The consent must cover every category asked for.
        let eligible: Vec<String> = page
            .iter()
            .filter(|(_, consented)| match consented {
                Some(cats) => {
                    let cats = crate::service::consents::split_categories(cats);
                    spec.categories.iter().all(|c| cats.contains(c))
                }
                None => true,
            })
            .map(|(resident, _)| resident.clone())
            .collect();
        // The page's keys and records in one query, only the categories asked.
        let opened = vault
            .read_page(&eligible, &read_categories)
            .await
            .map_err(|e| e.to_string())?;
        for resident in &eligible {
            let current: &[crate::service::vault::RecordView] =
                opened.get(resident).map(Vec::as_slice).unwrap_or(&[]);
            let value = |name: &str| -> Option<Value> {
                let (c, f) = name.split_once('.')?;
                current
                    .iter()
                    .find(|r| r.category == c)?
                    .fields
                    .get(f)
                    .cloned()
            };
            if !passes_filters(&spec, &value) {
                continue;
            }
            cohort += 1;
            if records {
                let mut line =
                    vec![keys.pseudonym(&format!("partner:{}", partner.id), resident.as_bytes())];
                for f in &spec.fields {
                    let text = value(f).map(|v| text_of(&v)).unwrap_or_default();
                    line.push(if spec.generalise {
                        generalise(f, &text)
                    } else {
                        text
                    });
                }
                write(csv_line(&line).as_bytes())?;
            } else {
                let key = group_key(&spec, &value);
                for ((_, e), joint) in earlier.iter().zip(joints.iter_mut()) {
                    if passes_filters(e, &value) {
                        *joint
                            .entry((group_key(e, &value), key.clone()))
                            .or_default() += 1;
                    }
                }
                let cell = cells.entry(key).or_default();
                cell.count += 1;
                for f in &spec.fields {
                    if let Some(n) = value(f).and_then(|v| v.as_f64()) {
                        *cell.sums.entry(f.clone()).or_default() += n;
                    }
                }
            }
            // Each resident sees this among their accesses (recorded with
            // the page, below: a few group commits for many entries).
            includes.push(AuditRecord {
                timestamp: now,
                actor_id: partner.id.clone(),
                actor_role: "partner".into(),
                // A records extract discloses the resident's values (under
                // a pseudonym); an aggregate only counts them: the latter is
                // not a disclosure that art. 19 notices follow, and a
                // partner's pseudonym of each counted resident must not
                // reach it through such notices.
                action: if records {
                    "extract.include"
                } else {
                    "extract.aggregate"
                }
                .into(),
                resident_id: Some(resident.clone()),
                category: Some(spec.categories.join(",")),
                purpose: Some(purpose.id.clone()),
                legal_basis: Some(purpose.legal_basis.as_str().into()),
                allowed: true,
                reason: format!("extract:{}", row.id),
                ..Default::default()
            });
        }
        // All of the page's entries at once: the audit writer commits them
        // in a few group commits instead of one durable commit each.
        futures_util::future::try_join_all(
            std::mem::take(&mut includes)
                .into_iter()
                .map(|r| state.audit.record(r)),
        )
        .await
        .map_err(|e| e.to_string())?;
        state
            .store
            .extract_progress(id, seen, total.max(seen))
            .await
            .map_err(s)?;
    }
    let mut suppression = json!(null);
    let mut noise = json!(null);
    if !records {
        if (cohort as u64) < MIN_CELL {
            return Err(format!("cohort_too_small: fewer than {MIN_CELL} residents"));
        }
        let hidden = suppress(&cells);
        let new_size: BTreeMap<Vec<String>, u64> =
            cells.iter().map(|(k, c)| (k.clone(), c.count)).collect();
        for ((earlier_id, _), joint) in earlier.iter().zip(joints.iter()) {
            let mut earlier_cells: BTreeMap<Vec<String>, Cell> = BTreeMap::new();
            for ((e, _), n) in joint {
                earlier_cells.entry(e.clone()).or_default().count += n;
            }
            let earlier_hidden = suppress(&earlier_cells);
            // The reason the partner reads names no cell: which
            // combination is small is itself something to keep.
            if crate::domain::extract::differencing_risk(
                joint,
                &earlier_hidden,
                &new_size,
                &hidden,
                MIN_CELL,
            )
            .is_some()
            {
                return Err(format!(
                    "differencing_risk: combined with extract {earlier_id}, its cells would isolate fewer than {MIN_CELL} residents"
                ));
            }
        }
        let rng = ring::rand::SystemRandom::new();
        let mut header = spec.group_by.clone();
        header.push("count".into());
        header.extend(spec.fields.iter().map(|f| format!("sum({f})")));
        write(csv_line(&header).as_bytes())?;
        // With sums, ε is split between the counts and each sum.
        let shares = 1.0 + spec.fields.len() as f64;
        for (key, cell) in cells.iter().filter(|(k, _)| !hidden.contains(*k)) {
            let mut line = key.clone();
            let mut count = cell.count as f64;
            if let Some(e) = spec.epsilon {
                count = (count + laplace(shares / e, uniform(&rng)?))
                    .round()
                    .max(0.0);
            }
            line.push(format!("{count}"));
            for f in &spec.fields {
                let mut sum = cell.sums.get(f).copied().unwrap_or(0.0);
                if let Some(e) = spec.epsilon {
                    let (c, name) = f.split_once('.').unwrap_or(("", ""));
                    let bound = match field_type(state, c, name) {
                        Some(FieldType::Integer { min, max }) => {
                            min.unsigned_abs().max(max.unsigned_abs()) as f64
                        }
                        _ => 1.0,
                    };
                    sum = (sum + laplace(shares * bound / e, uniform(&rng)?)).round();
                }
                line.push(format!("{sum}"));
            }
            write(csv_line(&line).as_bytes())?;
        }
        suppression = json!({"min_cell": MIN_CELL, "suppressed": !hidden.is_empty(), "rule": "primary below the threshold; secondary so that no hidden cell is alone or all-ones"});
        if let Some(e) = spec.epsilon {
            noise = json!({"mechanism": "laplace", "epsilon": e, "partner_budget": PARTNER_EPSILON_BUDGET});
        }
    }
    out.finish()
        .and_then(|mut w| w.flush().map(|_| ()))
        .map_err(|e| e.to_string())?;
    let sha = hex::encode(digest.finish().as_ref());
    std::fs::rename(tmp, file_path(state, id)).map_err(|e| e.to_string())?;
    let built = state
        .audit
        .record(AuditRecord {
            reason: format!("cohort:{cohort}"),
            ..audit(&partner.id, "partner", "extract.build", &row, now, "")
        })
        .await
        .map_err(|e| e.to_string())?;
    let manifest = json!({
        "extract_id": row.id,
        "partner": partner.id,
        "purpose": purpose.id,
        "notice_version": purpose.notice_version,
        "legal_basis": purpose.legal_basis.as_str(),
        "kind": row.kind,
        "categories": spec.categories,
        "fields": spec.fields,
        "group_by": spec.group_by,
        "filters": spec.filters,
        "generalised": spec.generalise,
        // An aggregate's exact cohort would undo its protection: with the
        // published cells it gives the total of the suppressed ones, and
        // it is a noiseless count beside noisy ones. Records show it anyway.
        "cohort_size": if records { json!(cohort) } else { json!(null) },
        "suppression": suppression,
        "noise": noise,
        "audit_leaf_index": built,
        "plaintext_sha256": sha,
        "built_at": now,
        "format": "text/csv; charset=utf-8, encrypted with age to the partner's X25519 recipient",
    });
    let jws = crate::crypto::jws::sign(&keys, &manifest).map_err(|e| e.to_string())?;
    state
        .store
        .extract_ready(
            id,
            &manifest.to_string(),
            &jws,
            now + FILE_RETENTION_SECS,
            now,
        )
        .await
        .map_err(s)?;
    tracing::info!(extract = %id, cohort, "extract ready");
    Ok(())
}

/// Deletes the files of extracts past their retention (the retention job).
pub async fn expire_due(state: &AppState, now: Timestamp) -> AppResult<u64> {
    let mut n = 0;
    for id in state.store.extracts_to_expire(now).await? {
        let _ = std::fs::remove_file(file_path(state, &id));
        for from in ["ready", "downloaded"] {
            if state
                .store
                .extract_transition(&id, from, "expired", None, now)
                .await?
            {
                n += 1;
            }
        }
    }
    Ok(n)
}
