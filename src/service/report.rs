//! The DPO's annual transparency report (EU Data Governance Act art.
//! 20(2), BRIEF C12): who used the commons' data, for what, when and by
//! which technical means; extracts and reads per user; deposits per
//! source; rights requests and the deadlines met; the refusals the vault
//! made (fail-closed events included); the open-statistics releases and
//! their ε. Counts and identifiers only: no personal value.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::Decision;
use crate::domain::Timestamp;
use crate::domain::stats::Period;
use crate::error::{AppResult, ErrorCode};
use crate::service::access::role_action;
use crate::service::{Audited, Caller};

/// Whether a refusal's reason is the vault failing closed on its own state
/// (seal, keys, log), not a decision about a request.
fn fail_closed(reason: &str) -> bool {
    [
        ErrorCode::Sealed,
        ErrorCode::KeysUnavailable,
        ErrorCode::AuditUnavailable,
    ]
    .iter()
    .any(|c| c.code() == reason)
}

#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct AnnualReport {
    pub year: i32,
    /// When the report was computed.
    pub generated_at: Timestamp,
    /// Data users (DGA art. 20(2)(a) and (b)): partners, their purposes
    /// and means.
    pub data_users: Vec<DataUser>,
    pub deposits: Vec<SourceDeposits>,
    pub rights_requests: Vec<RightsLine>,
    /// Refusals by reason; `fail_closed` marks the vault's own state.
    pub refusals: Vec<RefusalLine>,
    pub statistics_releases: Vec<ReleaseLine>,
}

#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct DataUser {
    pub partner_id: String,
    pub name: String,
    /// Who answers for the processing: the controller named by its
    /// purposes in the register.
    pub contact: Vec<String>,
    pub active: bool,
    pub purposes: Vec<UserPurpose>,
    pub reads_allowed: u64,
    pub reads_refused: u64,
    pub first_access: Option<Timestamp>,
    pub last_access: Option<Timestamp>,
    /// Extracts requested in the year: `kind/state` → count.
    pub extracts: BTreeMap<String, i64>,
    /// ε spent by its approved noisy aggregates of the year.
    pub epsilon: f64,
    /// The technical means (art. 20(2)(b)).
    pub means: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct UserPurpose {
    pub id: String,
    pub title: String,
    pub legal_basis: String,
    pub access: String,
}

#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct SourceDeposits {
    pub source_id: String,
    pub name: String,
    pub category: String,
    pub records: i64,
}

#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct RightsLine {
    pub kind: String,
    pub state: String,
    /// `on_time`, `late`, `open` or `overdue`.
    pub deadline: String,
    pub count: i64,
}

#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct RefusalLine {
    pub reason: String,
    pub count: u64,
    pub fail_closed: bool,
}

#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct ReleaseLine {
    pub release: String,
    pub epsilon: f64,
    pub sha256: String,
    pub audit_index: i64,
}

/// The year named by a request (2000 to 2999).
pub fn parse_year(text: &str) -> AppResult<i32> {
    Period::parse_year(text)
        .ok_or_else(|| ErrorCode::InvalidParameter.with("`year`: YYYY, 2000 to 2999"))
}

/// The year a report is of when none is named: the last whole one.
pub fn default_year(now: Timestamp) -> i32 {
    Period::containing(now).year() - 1
}

/// The report of `year`, for the DPO (recorded as their read first).
pub async fn annual(
    state: &AppState,
    caller: &Caller,
    year: i32,
    now: Timestamp,
) -> AppResult<Audited<AnnualReport>> {
    let entry = role_action(state, caller, "report.read").await?;
    let (start, end) = Period::year_span(year);
    let store = &state.store;

    // Reads and refusals, from the log's entries of the year.
    #[derive(Default)]
    struct Reads {
        allowed: u64,
        refused: u64,
        first: Option<Timestamp>,
        last: Option<Timestamp>,
    }
    let mut reads: BTreeMap<String, Reads> = BTreeMap::new();
    let mut refusals: BTreeMap<String, u64> = BTreeMap::new();
    crate::service::journal::scan(state, start, end, |e| {
        if e.decision == Decision::Deny {
            *refusals.entry(e.reason.clone()).or_default() += 1;
        }
        if e.actor_role == "partner" && e.action == "data.read" {
            let r = reads.entry(e.actor_id).or_default();
            match e.decision {
                Decision::Allow => {
                    r.allowed += 1;
                    r.first = Some(r.first.map_or(e.timestamp, |f| f.min(e.timestamp)));
                    r.last = Some(r.last.map_or(e.timestamp, |l| l.max(e.timestamp)));
                }
                Decision::Deny => r.refused += 1,
            }
        }
    })
    .await?;

    let mut extracts: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for c in store.report_extracts(start, end).await? {
        extracts
            .entry(c.a)
            .or_default()
            .insert(format!("{}/{}", c.b, c.c), c.n);
    }
    let epsilon: BTreeMap<String, f64> = store
        .report_epsilon(start, end)
        .await?
        .into_iter()
        .collect();

    // Every partner the register names, and any other that acted.
    let mut partners: Vec<String> = state
        .register
        .all()
        .flat_map(|p| p.recipients.iter().cloned())
        .chain(reads.keys().cloned())
        .chain(extracts.keys().cloned())
        .collect();
    partners.sort();
    partners.dedup();
    let mut data_users = Vec::new();
    for id in partners {
        let row = match crate::domain::PartnerId::parse(&id) {
            Ok(pid) => store.find_partner(&pid).await?,
            Err(_) => None,
        };
        let purposes: Vec<_> = state.register.purposes_of_partner(&id).collect();
        let mut contact: Vec<String> = purposes.iter().map(|p| p.controller.clone()).collect();
        contact.sort();
        contact.dedup();
        let r = reads.remove(&id).unwrap_or_default();
        let mut means = vec![
            "pseudonymisation: a keyed pseudonym per partner, unlinkable across partners"
                .to_string(),
        ];
        if purposes
            .iter()
            .any(|p| p.access == crate::domain::purpose::PartnerAccess::ExtractsOnly)
            || extracts.contains_key(&id)
        {
            means.push(format!(
                "extracts encrypted with age to the partner's key; aggregates always noisy over a declared domain, a noisy count under {} withheld (with secondary suppression)",
                crate::domain::extract::MIN_CELL
            ));
        }
        let eps = epsilon.get(&id).copied().unwrap_or(0.0);
        if eps > 0.0 {
            means.push(format!(
                "differential privacy: OpenDP discrete Laplace noise, ε = {eps} spent this year (budget {} per partner)",
                crate::service::extracts::PARTNER_EPSILON_BUDGET
            ));
        }
        data_users.push(DataUser {
            name: row
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_else(|| id.clone()),
            active: row.as_ref().map(|p| p.active).unwrap_or(false),
            contact,
            purposes: purposes
                .iter()
                .map(|p| UserPurpose {
                    id: p.id.to_string(),
                    title: p.title_fr.clone(),
                    legal_basis: p.legal_basis.as_str().to_string(),
                    access: match p.access {
                        crate::domain::purpose::PartnerAccess::Records => "records",
                        crate::domain::purpose::PartnerAccess::ExtractsOnly => "extracts_only",
                    }
                    .to_string(),
                })
                .collect(),
            reads_allowed: r.allowed,
            reads_refused: r.refused,
            first_access: r.first,
            last_access: r.last,
            extracts: extracts.remove(&id).unwrap_or_default(),
            epsilon: eps,
            means,
            partner_id: id,
        });
    }

    let deposits = store
        .report_deposits(start, end)
        .await?
        .into_iter()
        .map(|c| SourceDeposits {
            name: state
                .sources
                .get(&c.a)
                .map(|s| s.name_fr.clone())
                .unwrap_or_else(|| c.a.clone()),
            source_id: c.a,
            category: c.b,
            records: c.n,
        })
        .collect();
    let rights_requests = store
        .report_rights(start, end, now)
        .await?
        .into_iter()
        .map(|c| RightsLine {
            kind: c.a,
            state: c.b,
            deadline: c.c,
            count: c.n,
        })
        .collect();
    let refusals = refusals
        .into_iter()
        .map(|(reason, count)| RefusalLine {
            fail_closed: fail_closed(&reason),
            reason,
            count,
        })
        .collect();
    let statistics_releases = store
        .stats_releases()
        .await?
        .into_iter()
        .filter(|r| Period::parse(&r.period).is_some_and(|p| p.year() == year))
        .map(|r| ReleaseLine {
            release: r.period,
            epsilon: r.epsilon,
            sha256: r.sha256,
            audit_index: r.audit_index,
        })
        .collect();
    Ok(Audited::new(
        entry,
        AnnualReport {
            year,
            generated_at: now,
            data_users,
            deposits,
            rights_requests,
            refusals,
            statistics_releases,
        },
    ))
}
