//! Open statistics of the commons (BRIEF C12): monthly releases built from
//! the registry's own tables and the audit log, protected by one layer
//! (OpenDP's discrete Laplace noise with cell-key stability, then
//! `domain::stats::protect`), published as CSV with a Frictionless data
//! package and a DCAT catalogue, each release's SHA-256 in the audit log
//! before it is stored, and its ε charged to the public ledger in the same
//! transaction.
//!
//! A release is immutable: publishing a month again gives the stored one.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::{AuditRecord, Decision};
use crate::crypto::keyset::KeySet;
use crate::domain::Timestamp;
use crate::domain::access::Denial;
use crate::domain::extract::{CsvRows, ExtractKind, MIN_CELL};
use crate::domain::rights::RightsRequestKind;
use crate::domain::stats::{OTHER, Period, ProtectedTable, StatTable, protect};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::storage::{ClampedTable, PublishOutcome, StatCount, StatsReleaseRow};

// ε charged by one monthly release (`stats_release_epsilon`) is split
// equally between its tables (a person may be in all of them: sequential
// composition); the releases of a calendar year spend at most
// `stats_annual_epsilon` together.
/// The licence of the releases: Etalab's Open Licence 2.0, the French
/// public sector's default for open data.
const LICENSE_URL: &str = "https://www.etalab.gouv.fr/licence-ouverte-open-licence/";
const LIBRARY: &str = "OpenDP 0.14 (exact discrete Laplace sampler of Canonne, Kamath and Steinke; random bits from OpenSSL RAND_bytes)";

/// A read that named no purpose.
const NONE: &str = "aucune";

/// One release as listed.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ReleaseSummary {
    /// `YYYY-MM`.
    pub id: String,
    pub published_at: Timestamp,
    pub epsilon: f64,
    /// SHA-256 of the data package, as in the audit log.
    pub sha256: String,
    /// The audit log entry that holds the hash (its inclusion proof:
    /// `/api/v1/audit/proofs/inclusion`).
    pub audit_index: i64,
    /// The data package's URL.
    pub datapackage: String,
    /// The tables' CSV URLs.
    pub tables: Vec<String>,
}

/// The public ledger of privacy loss.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Ledger {
    pub mechanism: String,
    pub release_epsilon: f64,
    pub annual_cap: f64,
    pub years: Vec<LedgerYear>,
    pub releases: Vec<LedgerEntry>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LedgerYear {
    pub year: i64,
    pub spent: f64,
    pub cap: f64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LedgerEntry {
    pub release: String,
    pub epsilon: f64,
    pub published_at: Timestamp,
    pub sha256: String,
    pub audit_index: i64,
}

/// A release's table as a page shows it.
#[derive(Clone, Debug)]
pub struct TableView {
    pub table: StatTable,
    pub cells: Vec<(Vec<String>, String)>,
    pub total: u64,
}

/// The page of the statistics (see [`page`]).
#[derive(Clone, Debug)]
pub struct StatsPage {
    pub shown: Option<ReleaseView>,
    /// Every release's id, newest first.
    pub releases: Vec<String>,
    pub year: i32,
    pub spent: f64,
}

/// A release as the page shows it.
#[derive(Clone, Debug)]
pub struct ReleaseView {
    pub row: StatsReleaseRow,
    pub tables: Vec<TableView>,
}

fn release_url(state: &AppState, period: &str) -> String {
    format!(
        "{}/api/v1/stats/releases/{period}",
        state.config.public_base()
    )
}

fn summary(state: &AppState, row: &StatsReleaseRow) -> ReleaseSummary {
    let url = release_url(state, &row.period);
    ReleaseSummary {
        id: row.period.clone(),
        published_at: row.published_at,
        epsilon: row.epsilon,
        sha256: row.sha256.clone(),
        audit_index: row.audit_index,
        tables: StatTable::ALL
            .iter()
            .map(|t| format!("{url}/{}.csv", t.as_str()))
            .collect(),
        datapackage: url,
    }
}

/// The month named by a request, or the error a client reads.
pub fn parse_period(text: &str) -> AppResult<Period> {
    Period::parse(text).ok_or_else(|| AppError::from(ErrorCode::InvalidPeriod))
}

/// Publishes the release of `period` (by default the last whole month):
/// built, hashed, the hash written to the audit log, then stored with its
/// ε charged. A month already published gives the stored release
/// (`false`): releases never change.
pub async fn publish(
    state: &AppState,
    period: Option<Period>,
    now: Timestamp,
) -> AppResult<(StatsReleaseRow, bool)> {
    let period = period.unwrap_or_else(|| Period::due(now));
    if !period.is_over(now) {
        return Err(ErrorCode::PeriodNotOver.into());
    }
    let id = period.to_string();
    if let Some(row) = state.store.stats_release(&id).await? {
        return Ok((row, false));
    }
    // A clear refusal before any work when the year is spent (the
    // transaction below is the guarantee).
    let cap = budget_left(state, period).await?;
    let vault = state.vault()?;
    let keys = vault.keys().current();
    let built = build(state, &vault, &keys, period, now).await?;
    let sha256 = crate::crypto::sha256_hex(&built.datapackage);
    // The hash is in the log before the release exists: a release cannot
    // be rewritten, or published, unseen.
    let audit_index = state
        .audit
        .record(
            // The log's own time, whatever `now` the months were judged at.
            AuditRecord::new("stats", "system", "stats.publish", state.clock.now())
                .allow(&format!("release:{id}:sha256:{sha256}")),
        )
        .await?;
    let row = StatsReleaseRow {
        period: id.clone(),
        epsilon: state.config.stats_release_epsilon,
        datapackage: built.datapackage,
        sha256,
        audit_index: audit_index as i64,
        published_at: now,
    };
    match state
        .store
        .stats_publish(
            &row,
            &built.tables,
            i64::from(period.year()),
            micro(row.epsilon),
            cap,
        )
        .await?
    {
        PublishOutcome::Published => {
            tracing::info!(release = %id, audit_index, "statistics release published");
            Ok((row, true))
        }
        PublishOutcome::AlreadyPublished => {
            // Another process published it meanwhile: its release stands.
            let stored = state.store.stats_release(&id).await?;
            stored
                .map(|r| (r, false))
                .ok_or_else(|| ErrorCode::NotFound.into())
        }
        PublishOutcome::BudgetExhausted => Err(ErrorCode::StatsBudgetExhausted.into()),
    }
}

/// How long the monthly job's claim on a month lasts: one build (reading
/// every resident) at a time across processes, and after a failure the
/// next try this long after the last.
pub const PUBLISH_RETRY_SECS: i64 = 6 * 3600;

/// The monthly job of `serve`: publishes last month's release when it is
/// missing, once it has claimed the month (a process without its keys, or a
/// year spent, logs and waits for the claim to lapse).
pub async fn publish_due(state: &AppState, now: Timestamp) {
    let period = Period::due(now);
    let id = period.to_string();
    let outcome = async {
        if !period.is_over(now) || state.store.stats_release(&id).await?.is_some() {
            return Ok(None);
        }
        // A process that could not build (sealed, or the year spent) does
        // not claim the month from one that can.
        state.vault()?;
        budget_left(state, period).await?;
        if !state
            .store
            .stats_claim(&id, now + PUBLISH_RETRY_SECS, now)
            .await?
        {
            return Ok(None);
        }
        publish(state, Some(period), now).await.map(Some)
    }
    .await;
    if let Err(e) = outcome {
        let e: AppError = e;
        let (code, _) = e.code_and_status();
        tracing::warn!(release = %id, error = code, retry_in_secs = PUBLISH_RETRY_SECS, "statistics release not published");
    }
}

/// The year's cap in millionths, or `stats_budget_exhausted` when a
/// release would pass it (a first look: the store's transaction decides).
async fn budget_left(state: &AppState, period: Period) -> AppResult<i64> {
    let cap = micro(state.config.stats_annual_epsilon);
    if spent_micro(state, period.year()).await? + micro(state.config.stats_release_epsilon) > cap {
        return Err(ErrorCode::StatsBudgetExhausted.into());
    }
    Ok(cap)
}

/// ε in millionths: how the ledger counts it (integers, compared exactly).
fn micro(epsilon: f64) -> i64 {
    (epsilon * 1e6).round() as i64
}

/// The ε spent in `year`, in millionths.
async fn spent_micro(state: &AppState, year: i32) -> AppResult<i64> {
    Ok(state
        .store
        .stats_budgets()
        .await?
        .into_iter()
        .find(|b| b.year == i64::from(year))
        .map(|b| b.spent_micro)
        .unwrap_or(0))
}

struct Built {
    datapackage: String,
    tables: Vec<(String, String)>,
}

/// Exact counts of one table, keyed by dimension values, with the public
/// domain filled in (a cell nobody is in is published too, with its
/// noise, so that a missing row says nothing).
type Exact = BTreeMap<Vec<String>, i64>;

fn from_rows(rows: Vec<StatCount>, dims: usize) -> Exact {
    rows.into_iter()
        .map(|r| {
            let key: Vec<String> = [r.a, r.b, r.c].into_iter().take(dims).collect();
            (key, r.n)
        })
        .collect()
}

/// The table over its public domain: every key of `domain` (0 when nobody
/// is in it); counts under keys outside it merged into the all-`autre`
/// key, itself always present, or dropped when `other` is false (merging
/// cells never raises a person's weight on the table).
fn confine(
    exact: Exact,
    domain: impl IntoIterator<Item = Vec<String>>,
    dims: usize,
    other: bool,
) -> Exact {
    let mut out: Exact = domain.into_iter().map(|k| (k, 0)).collect();
    let other_key = vec![OTHER.to_string(); dims];
    if other {
        out.insert(other_key.clone(), 0);
    }
    for (key, n) in exact {
        match out.get_mut(&key) {
            Some(slot) => *slot += n,
            None if other => *out.entry(other_key.clone()).or_insert(0) += n,
            None => {}
        }
    }
    out
}

fn v(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// Accesses and refusals, from the audit log entries of the month: each
/// subject (the resident, else the actor) counted once per cell and in at
/// most the table's bound cells (its first ones in key order).
async fn from_log(
    state: &AppState,
    period: Period,
    bound: impl Fn(StatTable) -> u64,
) -> AppResult<(Exact, Exact)> {
    let mut reads: HashMap<String, BTreeSet<Vec<String>>> = HashMap::new();
    let mut refusals: HashMap<String, BTreeSet<Vec<String>>> = HashMap::new();
    crate::service::journal::scan(state, period.start(), period.end(), |e| {
        if e.action == "data.read"
            && let Some(resident) = &e.resident_id
            && *resident != e.actor_id
        {
            let recipient = if e.actor_role == "partner" {
                e.actor_id.clone()
            } else {
                e.actor_role.clone()
            };
            let decision = match e.decision {
                Decision::Allow => "allow",
                Decision::Deny => "deny",
            };
            reads.entry(resident.clone()).or_default().insert(vec![
                recipient,
                e.purpose.clone().unwrap_or_else(|| NONE.into()),
                decision.into(),
            ]);
        }
        if e.decision == Decision::Deny {
            let subject = e.resident_id.unwrap_or(e.actor_id);
            refusals.entry(subject).or_default().insert(vec![e.reason]);
        }
    })
    .await?;
    let tally = |by: HashMap<String, BTreeSet<Vec<String>>>, bound: u64| {
        let mut out = Exact::new();
        for cells in by.into_values() {
            for key in cells.into_iter().take(bound as usize) {
                *out.entry(key).or_insert(0) += 1;
            }
        }
        out
    };
    Ok((
        tally(reads, bound(StatTable::Accesses)),
        tally(refusals, bound(StatTable::Refusals)),
    ))
}

/// Residents in the commons by commune: each active resident who has not
/// objected to the statistics purpose (nor restricted processing) is read,
/// their `contact` record's `commune_insee` only, under
/// `statistiques-publiques` (public task), in pages whose reads are written
/// to the audit log before the page is counted, as an extract's are. Each
/// resident is in one cell: a commune of the territory, or `autre` (outside
/// it, or no commune given). Read as held at `now`: records are current
/// values, not a month's history.
async fn residents_by_commune(
    state: &AppState,
    vault: &crate::service::vault::Vault,
    period: Period,
    now: Timestamp,
) -> AppResult<Exact> {
    let purpose = state
        .register
        .get(crate::domain::access::STATISTICS_PURPOSE)
        .ok_or_else(|| AppError::from(ErrorCode::UnknownPurpose))?;
    // As the register says, not as this code assumes: a purpose edited to
    // consent reads only those whose consent covers `contact`, and one
    // that no longer covers `contact` reads nothing.
    if !purpose.covers_category("contact") {
        return Err(ErrorCode::CategoryOutsidePurpose.into());
    }
    let categories = vec!["contact".to_string()];
    let mut by_commune = Exact::new();
    let mut after = String::new();
    // A consent, when the purpose needs one, must cover `contact`.
    while let Some((residents, _)) =
        crate::service::extracts::eligible_page(state, purpose, &categories, now, &mut after)
            .await?
    {
        // Recorded before the page is opened: a read that could not be
        // logged does not happen.
        futures_util::future::try_join_all(residents.iter().map(|r| {
            state.audit.record(
                AuditRecord::new("stats", "system", "stats.count", state.clock.now())
                    .resident(r.as_str())
                    .category("contact")
                    .purpose(&purpose.id)
                    .legal_basis(purpose.legal_basis.as_str())
                    .allow(&format!("release:{period}")),
            )
        }))
        .await?;
        let opened = vault.read_page(&residents, &categories).await?;
        for r in &residents {
            let commune = opened
                .get(r)
                .and_then(|records| records.iter().find(|x| x.category == "contact"))
                .and_then(|x| x.fields.get("commune_insee"))
                .and_then(Value::as_str)
                .unwrap_or(OTHER);
            *by_commune.entry(vec![commune.to_string()]).or_insert(0) += 1;
        }
    }
    Ok(by_commune)
}

async fn exact_tables(
    state: &AppState,
    vault: &crate::service::vault::Vault,
    period: Period,
    consent_purposes: &[String],
    now: Timestamp,
) -> AppResult<Vec<(StatTable, Exact)>> {
    let (start, end) = (period.start(), period.end());
    let store = &state.store;
    let bound = |t: StatTable| t.bound(consent_purposes.len());
    let partners: BTreeSet<String> = state
        .register
        .all()
        .flat_map(|p| p.recipients.iter().cloned())
        .collect();

    // Consents to purposes that are not (or no longer) consent purposes of
    // the register are left out, so a resident is in at most one cell per
    // consent purpose: the table's bound.
    let consents = confine(
        from_rows(store.stats_consents(end).await?, 2),
        consent_purposes
            .iter()
            .flat_map(|p| ["given", "refused", "withdrawn", "expired"].map(|s| v(&[p, s]))),
        2,
        false,
    );

    let (accesses, refusals) = from_log(state, period, bound).await?;
    let accesses = confine(
        accesses,
        state.register.all().flat_map(|p| {
            p.recipients
                .iter()
                .flat_map(|r| ["allow", "deny"].map(|d| v(&[r, p.id.as_str(), d])))
                .collect::<Vec<_>>()
        }),
        3,
        true,
    );
    let refusals = confine(
        refusals,
        Denial::ALL.iter().map(|d| v(&[d.as_str()])),
        1,
        true,
    );

    let extracts = confine(
        from_rows(store.stats_extracts(start, end).await?, 2),
        partners
            .iter()
            .flat_map(|p| ExtractKind::ALL.iter().map(|k| v(&[p, k.as_str()]))),
        2,
        true,
    );

    let structures: Vec<Vec<String>> = store
        .list_structures()
        .await?
        .into_iter()
        .filter(|s| s.active)
        .flat_map(|s| {
            s.allowed_demarches
                .iter()
                .map(|d| v(&[s.id.as_str(), d.as_str()]))
                .collect::<Vec<_>>()
        })
        .collect();
    let mandates = confine(
        from_rows(
            store
                .stats_clamped(
                    ClampedTable::Mandates,
                    start,
                    end,
                    bound(StatTable::Mandates) as i64,
                )
                .await?,
            2,
        ),
        structures,
        2,
        true,
    );

    let rights = confine(
        from_rows(
            store
                .stats_clamped(
                    ClampedTable::Rights,
                    start,
                    end,
                    bound(StatTable::Rights) as i64,
                )
                .await?,
            3,
        ),
        RightsRequestKind::ALL.iter().flat_map(|k| {
            ["granted", "refused"]
                .iter()
                .flat_map(|o| ["yes", "no"].map(|t| v(&[k.as_str(), o, t])))
                .collect::<Vec<_>>()
        }),
        3,
        true,
    );

    let deposits = confine(
        from_rows(
            store
                .stats_clamped(
                    ClampedTable::Deposits,
                    start,
                    end,
                    bound(StatTable::Deposits) as i64,
                )
                .await?,
            2,
        ),
        state.sources.all().flat_map(|s| {
            s.categories
                .iter()
                .map(|c| v(&[&s.id, c]))
                .collect::<Vec<_>>()
        }),
        2,
        true,
    );

    let residents = confine(
        residents_by_commune(state, vault, period, now).await?,
        state
            .territory
            .communes()
            .iter()
            .map(|c| v(&[c.insee.as_str()])),
        1,
        true,
    );

    Ok(vec![
        (StatTable::Consents, consents),
        (StatTable::Accesses, accesses),
        (StatTable::Refusals, refusals),
        (StatTable::Extracts, extracts),
        (StatTable::Mandates, mandates),
        (StatTable::Rights, rights),
        (StatTable::Deposits, deposits),
        (StatTable::Residents, residents),
    ])
}

async fn build(
    state: &AppState,
    vault: &crate::service::vault::Vault,
    keys: &KeySet,
    period: Period,
    now: Timestamp,
) -> AppResult<Built> {
    // The consent purposes of the register: the consents table's domain,
    // and its bound (one consent per resident and purpose).
    let consent_purposes: Vec<String> = state
        .register
        .all()
        .filter(|p| p.legal_basis.needs_consent())
        .map(|p| p.id.to_string())
        .collect();
    let exact = exact_tables(state, vault, period, &consent_purposes, now).await?;
    let table_epsilon = state.config.stats_release_epsilon / exact.len() as f64;
    let noise_failed = |e: String| {
        tracing::error!(error = %e, "statistics noise failed");
        AppError::from(ErrorCode::InternalError)
    };
    let id = period.to_string();
    let mut resources = Vec::new();
    let mut tables = Vec::new();
    let mut protection = serde_json::Map::new();
    for (table, cells) in exact {
        let sensitivity = table.bound(consent_purposes.len());
        let scale = crate::crypto::dp::laplace_scale(sensitivity, table_epsilon)
            .map_err(|e| noise_failed(e.to_string()))?;
        let mut noisy = BTreeMap::new();
        for (key, count) in &cells {
            // The cell is its month, table, dimensions and exact count
            // (and the scale): built again (a second process, a retry),
            // the same cell gets the same noise, so a release cannot be
            // redrawn to average it; another month is another cell with
            // noise of its own (each release is charged its ε), so that
            // months with equal published values say nothing about their
            // true counts being equal.
            let cell = json!({"period": id, "table": table.as_str(), "cell": key, "count": count, "scale": scale.to_string()});
            let noise = crate::service::noise::stable_noise(state, keys, cell, &scale, now)
                .await
                .map_err(noise_failed)?;
            noisy.insert(key.clone(), count.saturating_add(noise));
        }
        let protected = protect(&noisy);
        let csv = render_csv(table, &id, &protected).map_err(|e| noise_failed(e.to_string()))?;
        let digest = crate::crypto::sha256_hex(&csv);
        resources.push(resource(table, csv.len(), &digest));
        protection.insert(
            table.as_str().into(),
            json!({"sensitivity": sensitivity, "epsilon": table_epsilon, "scale": scale.to_string(), "total": protected.total}),
        );
        tables.push((table.as_str().to_string(), csv));
    }
    let base = state.config.public_base();
    let package = json!({
        "profile": "tabular-data-package",
        "name": format!("coffre-statistiques-{id}"),
        "id": release_url(state, &id),
        "title": format!("Statistiques ouvertes du coffre de données, {id}"),
        "description": "Consentements, lectures, refus, extractions, mandats, demandes de droits, dépôts et usagers par commune du coffre de données personnelles de l'agglomération, pour un mois. Chaque nombre est protégé par un bruit de confidentialité différentielle ; un nombre inférieur à 11 après bruit est publié « < 11 », et une case retirée pour qu'aucune petite case ne se déduise du total est publiée « s ».",
        "version": id,
        // The month's end, not the time of the build: two processes
        // building the same month produce the same bytes, so the same hash.
        "created": chrono::DateTime::from_timestamp(period.end(), 0).map(|d| d.to_rfc3339()).unwrap_or_default(),
        "homepage": format!("{base}/statistiques"),
        "keywords": ["données personnelles", "consentement", "RGPD", "transparence", "tiers de confiance"],
        "licenses": [{"name": "etalab-2.0", "path": LICENSE_URL, "title": "Licence Ouverte / Open Licence version 2.0"}],
        "resources": resources,
        "protection": {
            "mechanism": "discrete_laplace",
            "library": LIBRARY,
            "unit": "a person: a resident (for a refusal without a resident, the actor; for extracts, the extract)",
            "epsilon": state.config.stats_release_epsilon,
            "epsilon_split": "equally between the tables (sequential composition)",
            "annual_cap": state.config.stats_annual_epsilon,
            "cell_key": "the noise of a cell is drawn once per (month, table, cell, exact count, scale) and reused: the same cell built again gets the same noise; another month draws its own",
            "post_processing": "negative values become 0; a count under 11 after noise is published as \"< 11\"; secondary suppression (\"s\") so that no cell under 11 is recoverable from the total; each total is the sum of its table's noisy cells",
            "min_cell": MIN_CELL,
            "tables": protection,
        },
    });
    Ok(Built {
        datapackage: serde_json::to_string_pretty(&package)
            .map_err(|e| noise_failed(e.to_string()))?,
        tables,
    })
}

fn render_csv(table: StatTable, period: &str, t: &ProtectedTable) -> Result<String, csv::Error> {
    let rows = CsvRows::default();
    let mut out = Vec::new();
    let mut header = vec!["period".to_string()];
    header.extend(table.dimensions().iter().map(|d| d.name.to_string()));
    header.push("count".into());
    out.extend(rows.row(&header)?);
    for (key, value) in &t.cells {
        let mut line = vec![period.to_string()];
        line.extend(key.iter().cloned());
        line.push(value.text());
        out.extend(rows.row(&line)?);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A table's Frictionless resource (Table Schema).
fn resource(table: StatTable, bytes: usize, sha256: &str) -> Value {
    let (title_fr, _) = table.title();
    let (sentence_fr, sentence_en) = table.sentence();
    let mut fields = vec![
        json!({"name": "period", "type": "yearmonth", "title": "Mois", "description": "The month counted (UTC), YYYY-MM."}),
    ];
    for d in table.dimensions() {
        fields.push(json!({"name": d.name, "type": "string", "title": d.fr, "description": d.en, "constraints": {"required": true}}));
    }
    fields.push(json!({
        "name": "count",
        "type": "integer",
        "title": "Nombre (protégé)",
        "description": "The protected count: an integer of at least 11, or \"< 11\", or \"s\" (withheld), both read as missing values.",
        "constraints": {"minimum": MIN_CELL}
    }));
    let mut key = vec!["period".to_string()];
    key.extend(table.dimensions().iter().map(|d| d.name.to_string()));
    json!({
        "name": table.as_str(),
        "path": format!("{}.csv", table.as_str()),
        "profile": "tabular-data-resource",
        "title": title_fr,
        "description": format!("{sentence_fr} / {sentence_en}"),
        "format": "csv",
        "mediatype": "text/csv",
        "encoding": "utf-8",
        "bytes": bytes,
        "hash": format!("sha256:{sha256}"),
        "schema": {
            "fields": fields,
            "missingValues": [crate::domain::stats::small_mark(), crate::domain::stats::SECRET_MARK],
            "primaryKey": key,
        }
    })
}

pub async fn releases(state: &AppState) -> AppResult<Vec<ReleaseSummary>> {
    Ok(state
        .store
        .stats_releases()
        .await?
        .iter()
        .map(|r| summary(state, r))
        .collect())
}

async fn release_row(state: &AppState, id: &str) -> AppResult<StatsReleaseRow> {
    let period = parse_period(id)?;
    state
        .store
        .stats_release(&period.to_string())
        .await?
        .ok_or_else(|| ErrorCode::NotFound.into())
}

/// The data package of a release, exactly as hashed.
pub async fn datapackage(state: &AppState, id: &str) -> AppResult<String> {
    Ok(release_row(state, id).await?.datapackage)
}

/// A table of a release as CSV (`file` is `{table}.csv`).
pub async fn table_csv(state: &AppState, id: &str, file: &str) -> AppResult<String> {
    let period = parse_period(id)?;
    let table = file
        .strip_suffix(".csv")
        .and_then(StatTable::parse)
        .ok_or_else(|| AppError::from(ErrorCode::NotFound))?;
    state
        .store
        .stats_table(&period.to_string(), table.as_str())
        .await?
        .ok_or_else(|| ErrorCode::NotFound.into())
}

pub async fn ledger(state: &AppState) -> AppResult<Ledger> {
    let releases = state.store.stats_releases().await?;
    let years = state
        .store
        .stats_budgets()
        .await?
        .into_iter()
        .map(|b| LedgerYear {
            year: b.year,
            spent: b.spent_micro as f64 / 1e6,
            cap: state.config.stats_annual_epsilon,
        })
        .collect();
    Ok(Ledger {
        mechanism: LIBRARY.into(),
        release_epsilon: state.config.stats_release_epsilon,
        annual_cap: state.config.stats_annual_epsilon,
        years,
        releases: releases
            .into_iter()
            .map(|r| LedgerEntry {
                release: r.period,
                epsilon: r.epsilon,
                published_at: r.published_at,
                sha256: r.sha256,
                audit_index: r.audit_index,
            })
            .collect(),
    })
}

/// The DCAT catalogue (DCAT-AP, JSON-LD with its context inline, so that
/// it parses offline) data.gouv.fr harvests: one dataset per release, one
/// distribution per table and one for the data package.
pub async fn catalog(state: &AppState) -> AppResult<Value> {
    let base = state.config.public_base();
    let rows = state.store.stats_releases().await?;
    let iso = |t: Timestamp| {
        chrono::DateTime::from_timestamp(t, 0)
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    let mut datasets = Vec::new();
    for r in &rows {
        let Some(period) = Period::parse(&r.period) else {
            continue;
        };
        let url = release_url(state, &r.period);
        let mut distributions = vec![json!({
            "@id": format!("{url}#datapackage"),
            "@type": "dcat:Distribution",
            "dct:title": {"@value": "Data package (Frictionless)", "@language": "en"},
            "dcat:accessURL": {"@id": url},
            "dcat:downloadURL": {"@id": url},
            "dcat:mediaType": {"@id": "https://www.iana.org/assignments/media-types/application/json"},
            "dct:format": "JSON",
            "dct:license": {"@id": LICENSE_URL},
            "spdx:checksum": {"@type": "spdx:Checksum", "spdx:algorithm": {"@id": "spdx:checksumAlgorithm_sha256"}, "spdx:checksumValue": r.sha256},
        })];
        for t in StatTable::ALL {
            let csv = format!("{url}/{}.csv", t.as_str());
            distributions.push(json!({
                "@id": csv,
                "@type": "dcat:Distribution",
                "dct:title": [{"@value": t.title().0, "@language": "fr"}, {"@value": t.title().1, "@language": "en"}],
                "dct:description": [{"@value": t.sentence().0, "@language": "fr"}, {"@value": t.sentence().1, "@language": "en"}],
                "dcat:accessURL": {"@id": csv},
                "dcat:downloadURL": {"@id": csv},
                "dcat:mediaType": {"@id": "https://www.iana.org/assignments/media-types/text/csv"},
                "dct:format": "CSV",
                "dct:license": {"@id": LICENSE_URL},
                "dct:conformsTo": {"@id": url},
            }));
        }
        datasets.push(json!({
            "@id": url,
            "@type": "dcat:Dataset",
            "dct:identifier": format!("coffre-statistiques-{}", r.period),
            "dct:title": [
                {"@value": format!("Statistiques ouvertes du coffre de données, {}", r.period), "@language": "fr"},
                {"@value": format!("Open statistics of the data vault, {}", r.period), "@language": "en"}
            ],
            "dct:description": [
                {"@value": "Consentements, lectures, refus, extractions, mandats, demandes de droits, dépôts et usagers par commune, protégés par confidentialité différentielle (OpenDP).", "@language": "fr"},
                {"@value": "Consents, reads, refusals, extracts, mandates, rights requests, deposits and residents by commune, protected by differential privacy (OpenDP).", "@language": "en"}
            ],
            "dct:issued": {"@value": iso(r.published_at), "@type": "xsd:dateTime"},
            "dct:temporal": {
                "@type": "dct:PeriodOfTime",
                "dcat:startDate": {"@value": iso(period.start()), "@type": "xsd:dateTime"},
                "dcat:endDate": {"@value": iso(period.end() - 1), "@type": "xsd:dateTime"}
            },
            "dct:accrualPeriodicity": {"@id": "http://publications.europa.eu/resource/authority/frequency/MONTHLY"},
            "dct:publisher": {"@id": format!("{base}/#publisher")},
            "dct:license": {"@id": LICENSE_URL},
            "dcat:keyword": ["données personnelles", "consentement", "RGPD", "transparence"],
            "dcat:landingPage": {"@id": format!("{base}/statistiques?periode={}", r.period)},
            "dcat:distribution": distributions,
        }));
    }
    Ok(json!({
        "@context": {
            "dcat": "http://www.w3.org/ns/dcat#",
            "dct": "http://purl.org/dc/terms/",
            "foaf": "http://xmlns.com/foaf/0.1/",
            "spdx": "http://spdx.org/rdf/terms#",
            "xsd": "http://www.w3.org/2001/XMLSchema#"
        },
        "@id": format!("{base}/api/v1/stats/catalog.jsonld"),
        "@type": "dcat:Catalog",
        "dct:title": [
            {"@value": "Statistiques ouvertes du coffre de données personnelles", "@language": "fr"},
            {"@value": "Open statistics of the personal-data vault", "@language": "en"}
        ],
        "dct:description": {"@value": "Publications mensuelles, immuables, dont l'empreinte SHA-256 est inscrite au journal d'audit.", "@language": "fr"},
        "dct:publisher": {"@id": format!("{base}/#publisher"), "@type": "foaf:Organization", "foaf:name": "Agglomération (tiers de confiance du coffre)"},
        "dct:license": {"@id": LICENSE_URL, "@type": "dct:LicenseDocument"},
        "foaf:homepage": {"@id": format!("{base}/statistiques")},
        "dcat:dataset": datasets,
    }))
}

/// What `/statistiques` shows: a release (`None`: the latest), the ids of
/// every release, and the ε spent in the shown release's year (else the
/// current one).
pub async fn page(
    state: &AppState,
    period: Option<Period>,
    now: Timestamp,
) -> AppResult<StatsPage> {
    let rows = state.store.stats_releases().await?;
    let releases = rows.iter().map(|r| r.period.clone()).collect();
    let row = match period {
        Some(p) => rows.into_iter().find(|r| r.period == p.to_string()),
        None => rows.into_iter().next(),
    };
    let shown = match row {
        Some(row) => Some(view(state, row).await?),
        None => None,
    };
    let year = shown
        .as_ref()
        .and_then(|r| Period::parse(&r.row.period))
        .unwrap_or_else(|| Period::containing(now))
        .year();
    let spent = spent_micro(state, year).await? as f64 / 1e6;
    Ok(StatsPage {
        shown,
        releases,
        year,
        spent,
    })
}

/// A release with its tables read back from the stored CSV, totals from
/// the data package.
async fn view(state: &AppState, row: StatsReleaseRow) -> AppResult<ReleaseView> {
    // The totals come from the package (they count the withheld cells, so
    // the CSV cannot give them): one that does not parse is an error, not
    // zeros.
    let package: Value = serde_json::from_str(&row.datapackage).map_err(|e| {
        tracing::error!(release = %row.period, error = %e, "stored data package unreadable");
        AppError::from(ErrorCode::InternalError)
    })?;
    let stored: HashMap<String, String> = state
        .store
        .stats_tables(&row.period)
        .await?
        .into_iter()
        .collect();
    let mut tables = Vec::new();
    for t in StatTable::ALL {
        let Some(csv) = stored.get(t.as_str()) else {
            continue;
        };
        let mut reader = csv::ReaderBuilder::new().from_reader(csv.as_bytes());
        let mut cells = Vec::new();
        for rec in reader.records().flatten() {
            let fields: Vec<String> = rec.iter().map(str::to_string).collect();
            if let Some((value, rest)) = fields.split_last() {
                cells.push((rest.iter().skip(1).cloned().collect(), value.clone()));
            }
        }
        let total = package["protection"]["tables"][t.as_str()]["total"]
            .as_u64()
            .unwrap_or(0);
        tables.push(TableView {
            table: *t,
            cells,
            total,
        });
    }
    Ok(ReleaseView { row, tables })
}
