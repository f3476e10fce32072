//! Building one monthly release of the open statistics (see
//! `service::stats`): each table's exact counts over its public domain,
//! read from the registry's tables and the audit log with each person's
//! contribution bounded, then noised and protected, rendered as CSV, and
//! described by its data package.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};

use super::stats::{LIBRARY, LICENSE_URL, release_url};
use crate::AppState;
use crate::audit::{AuditRecord, Decision};
use crate::crypto::keyset::KeySet;
use crate::domain::Timestamp;
use crate::domain::access::Denial;
use crate::domain::extract::{CsvRows, ExtractKind, MIN_CELL};
use crate::domain::rights::RightsRequestKind;
use crate::domain::stats::{OTHER, Period, ProtectedTable, StatTable, protect};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::storage::{ClampedTable, StatCount};

/// A read that named no purpose.
const NONE: &str = "aucune";

pub(super) struct Built {
    pub(super) datapackage: String,
    pub(super) tables: Vec<(String, String)>,
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

pub(super) async fn build(
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
