//! Open statistics of the commons (BRIEF C12): monthly releases built from
//! the registry's own tables and the audit log, protected by one layer
//! (OpenDP's discrete Laplace noise with cell-key stability, then
//! `domain::stats::protect`), published as CSV with a Frictionless data
//! package and a DCAT catalogue, each release's SHA-256 in the audit log
//! before it is stored, and its ε charged to the public ledger in the same
//! transaction.
//!
//! A release is immutable: publishing a month again gives the stored one.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::AuditRecord;
use crate::domain::Timestamp;
use crate::domain::stats::{Period, StatTable};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::storage::{PublishOutcome, StatsReleaseRow};

use super::stats_build::build;

// ε charged by one monthly release (`stats_release_epsilon`) is split
// equally between its tables (a person may be in all of them: sequential
// composition); the releases of a calendar year spend at most
// `stats_annual_epsilon` together.
/// The licence of the releases: Etalab's Open Licence 2.0, the French
/// public sector's default for open data.
pub(super) const LICENSE_URL: &str = "https://www.etalab.gouv.fr/licence-ouverte-open-licence/";
pub(super) const LIBRARY: &str = "OpenDP 0.14 (exact discrete Laplace sampler of Canonne, Kamath and Steinke; random bits from OpenSSL RAND_bytes)";

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

pub(super) fn release_url(state: &AppState, period: &str) -> String {
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
