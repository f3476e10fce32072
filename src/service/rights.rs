//! Residents' rights beyond reading and correcting: requests that need the
//! DPO (with their legal deadlines), erasure of what a withdrawn consent
//! alone justified, telling recipients (art. 19), and the retention job.
//!
//! Time is a parameter everywhere: the job and the deadlines take `now`.

use crate::error::ErrorCode;
use std::collections::BTreeSet;

use crate::AppState;
use crate::audit::AuditRecord;
use crate::domain::Timestamp;
use crate::domain::category::Category;
use crate::domain::rights::{NoticeKind, RightsRequestState};
use crate::error::{AppError, AppResult};
use crate::service::access::own_data;
use crate::service::{Audited, Caller};
use crate::storage::NotificationRow;

/// The legal deadline of a request received at `received`: `months`
/// calendar months counted on the Paris calendar date of receipt (the day
/// clamped to the month's end), to the end of that day, Paris time (GDPR
/// art. 12(3); French law counts deadlines in calendar days and a deadline
/// runs to the end of its last day).
pub fn legal_deadline(received: Timestamp, months: u32) -> Timestamp {
    use chrono::{Months, TimeZone};
    use chrono_tz::Europe::Paris;
    let fallback = received + i64::from(months) * 31 * 86_400;
    let Some(at) = chrono::DateTime::from_timestamp(received, 0) else {
        return fallback;
    };
    let day = at.with_timezone(&Paris).date_naive();
    let Some(last_day) = day.checked_add_months(Months::new(months)) else {
        return fallback;
    };
    // The first instant of the next day, Paris time, minus one second (a
    // day's end exists whatever the summer-time switch).
    let Some(next) = last_day.succ_opt().and_then(|d| d.and_hms_opt(0, 0, 0)) else {
        return fallback;
    };
    Paris
        .from_local_datetime(&next)
        .earliest()
        .map_or(fallback, |t| t.timestamp() - 1)
}

/// A request is late when still open after its due date.
pub fn is_late(state: RightsRequestState, due_at: Timestamp, now: Timestamp) -> bool {
    state.is_open() && now > due_at
}

fn purge_record(now: Timestamp, what: &str, count: u64) -> AuditRecord {
    // What was purged and how many: never which values.
    AuditRecord::new("retention", "system", "retention.purge", now)
        .category(what)
        .allow(&format!("count:{count}"))
}

/// What one run of the retention job deleted.
#[derive(Clone, Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct RetentionReport {
    pub superseded_versions: u64,
    pub records_without_consent: u64,
    pub sessions: u64,
    pub logins_and_drafts: u64,
    pub ended_mandates: u64,
    pub extract_files: u64,
    /// Residents' notices delivered (or given up) longer ago than the
    /// information purpose keeps them.
    pub notices: u64,
    /// Messages written to tell residents a consent of theirs ends within
    /// 30 days.
    pub consents_ending_told: u64,
    /// Weekly digests of accesses written (for residents who asked).
    pub digests: u64,
    /// Extract builds interrupted (no progress for an hour) marked failed.
    pub interrupted_extracts: u64,
    /// Messages written to tell residents a mandate in their name ended.
    pub mandates_ended_told: u64,
    /// Alerts to référents reviewed longer ago than a year.
    pub reviewed_alerts: u64,
}

/// After a consent ended, its data stays this long (time to renew it)
/// before the job deletes what no other basis holds.
pub const CONSENT_GRACE_DAYS: i64 = 30;
/// A reviewed alert to a référent is kept this long (it names an agent's
/// acts; a year covers an annual review of the structure), then deleted.
pub const REVIEWED_ALERT_DAYS: i64 = 365;
/// Ended mandates are archived this long (Aidants Connect keeps them for
/// the period a resident may contest an act), then deleted.
pub const MANDATE_ARCHIVE_DAYS: i64 = 5 * 365;

/// Why a request may be refused: manifestly unfounded or excessive (art.
/// 12(5)), identity not established (art. 12(6)), erasure prevented by a
/// legal obligation, a public task or legal claims (art. 17(3)), objection
/// overridden by compelling legitimate grounds (art. 21(1)).
pub const REFUSAL_REASONS: [&str; 6] = [
    "manifestly_unfounded",
    "excessive",
    "identity_not_established",
    "legal_obligation",
    "legal_claims",
    "compelling_legitimate_grounds",
];

/// The reason recorded when a request is closed: a refusal must give one of
/// [`REFUSAL_REASONS`] (GDPR art. 12(4): the resident is told why); a grant
/// records none.
pub fn closing_reason(outcome: &str, reason: Option<String>) -> AppResult<Option<String>> {
    match (outcome, reason) {
        ("refused", None) => Err(ErrorCode::RefusalReasonRequired.into()),
        ("refused", Some(r)) if !REFUSAL_REASONS.contains(&r.as_str()) => {
            Err(ErrorCode::UnknownRefusalReason
                .with(format!("reason: one of {}", REFUSAL_REASONS.join(", "))))
        }
        ("refused", Some(r)) => Ok(Some(r)),
        _ => Ok(None),
    }
}

/// The retention job at `now`: superseded versions past their category's
/// history period, data held only under consents that ended more than the
/// grace period ago, expired sessions, logins and drafts, and mandates past
/// their archive period. Each kind of purge is audited with its count.
pub async fn run_retention(state: &AppState, now: Timestamp) -> AppResult<RetentionReport> {
    let mut report = RetentionReport::default();
    let categories: Vec<String> = state.categories.names().map(str::to_string).collect();
    for c in &categories {
        let days = i64::from(state.categories.history_days(c));
        report.superseded_versions += state.store.purge_superseded(c, now - days * 86_400).await?;
    }
    for c in &categories {
        let covering: Vec<&crate::domain::purpose::Purpose> = state
            .register
            .all()
            .filter(|p| p.categories.iter().any(|x| x == c))
            .collect();
        // A category some purpose holds on another basis than consent is
        // kept whatever the consents say.
        if covering.is_empty() || covering.iter().any(|p| !p.legal_basis.needs_consent()) {
            continue;
        }
        let ids: Vec<crate::domain::PurposeId> = covering.iter().map(|p| p.id.clone()).collect();
        let ended_before = now - CONSENT_GRACE_DAYS * 86_400;
        for resident in state
            .store
            .consent_orphaned_records(&ids, c, ended_before)
            .await?
        {
            report.records_without_consent += state.store.delete_category(&resident, c).await?;
        }
    }
    report.sessions = state
        .store
        .purge_expired_sessions(now, now - crate::service::sessions::SESSION_IDLE_SECS)
        .await?;
    report.logins_and_drafts = state.store.purge_expired_logins_and_drafts(now).await?;
    report.ended_mandates = state
        .store
        .purge_ended_mandates(now - MANDATE_ARCHIVE_DAYS * 86_400)
        .await?;
    report.extract_files = crate::service::extracts::expire_due(state, now).await?;
    report.interrupted_extracts = crate::service::extracts::fail_interrupted(state, now).await?;
    let notice_days = state
        .register
        .get(crate::domain::access::INFORMATION_PURPOSE)
        .map_or(365, |p| i64::from(p.retention_days));
    report.reviewed_alerts = state
        .store
        .purge_reviewed_alerts(now - REVIEWED_ALERT_DAYS * 86_400)
        .await?;
    report.consents_ending_told = state
        .store
        .outbox_expiring_consents(now, now + 30 * 86_400)
        .await?;
    // The digest never stops the rest of the job.
    report.digests = crate::service::notices::weekly_digests(state, now)
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "weekly digests not written");
            0
        });
    // A week back: a job that did not run for a few days still tells.
    report.mandates_ended_told = state
        .store
        .outbox_ended_mandates(now - 7 * 86_400, now)
        .await?;
    report.notices = state.store.outbox_purge(now - notice_days * 86_400).await?;
    for (what, count) in [
        ("extract_files", report.extract_files),
        ("superseded_versions", report.superseded_versions),
        ("records_without_consent", report.records_without_consent),
        ("sessions", report.sessions),
        ("logins_and_drafts", report.logins_and_drafts),
        ("ended_mandates", report.ended_mandates),
        ("notices", report.notices),
        ("reviewed_alerts", report.reviewed_alerts),
    ] {
        if count > 0 {
            state.audit.record(purge_record(now, what, count)).await?;
        }
    }
    tracing::info!(?report, "retention run");
    Ok(report)
}

/// After a consent to `purpose_id` was withdrawn, erases the categories
/// that purpose alone held (when the register says its withdrawal erases):
/// not those another purpose holds on another basis, or under a consent
/// still valid. Returns the categories erased.
pub async fn erase_after_withdrawal(
    state: &AppState,
    resident_id: &crate::domain::ResidentId,
    purpose_id: &crate::domain::PurposeId,
    now: Timestamp,
) -> AppResult<Vec<String>> {
    let Some(purpose) = state.register.get(purpose_id.as_str()) else {
        return Ok(Vec::new());
    };
    if !purpose.withdrawal_erases {
        return Ok(Vec::new());
    }
    let mut erased = Vec::new();
    for c in &purpose.categories {
        let mut held_elsewhere = false;
        for other in state.register.all().filter(|p| p.id != purpose.id) {
            if !other.categories.iter().any(|x| x == c) {
                continue;
            }
            if !other.legal_basis.needs_consent()
                || crate::service::consents::valid_consent(
                    state.store.as_ref(),
                    other,
                    resident_id,
                    c,
                    None,
                    now,
                )
                .await?
                .is_some()
            {
                held_elsewhere = true;
                break;
            }
        }
        if !held_elsewhere && state.store.delete_category(resident_id, c).await? > 0 {
            erased.push(c.clone());
        }
    }
    if !erased.is_empty() {
        state
            .audit
            .record(
                AuditRecord::new(resident_id.as_str(), "resident", "erasure.purpose", now)
                    .resident(resident_id)
                    .category(erased.join(","))
                    .purpose(&purpose.id)
                    .allow("withdrawal_erases"),
            )
            .await?;
    }
    Ok(erased)
}

/// The partners that received this resident's data (a read allowed, or an
/// extract that included them), from the audit log; with `category`, only
/// those that received that category. The recipients index answers for
/// what the log's writer has indexed; the short tail after it is read from
/// the resident's own entries.
pub async fn recipients_of(
    state: &AppState,
    resident_id: &crate::domain::ResidentId,
    category: Option<&str>,
) -> AppResult<BTreeSet<String>> {
    let (indexed, upto) = state.store.audit_recipients_of(resident_id).await?;
    let mut partners: BTreeSet<String> = indexed
        .into_iter()
        .filter(|(_, c)| category.is_none_or(|wanted| wanted == c))
        .map(|(p, _)| p)
        .collect();
    partners.extend(recipients_since(state, resident_id, category, upto).await?);
    Ok(partners)
}

/// The partners that received this resident's data (of `category`, when
/// given) in the log's entries from index `since` on: a scan of the
/// resident's own entries, newest first, down to `since`.
async fn recipients_since(
    state: &AppState,
    resident_id: &crate::domain::ResidentId,
    category: Option<&str>,
    since: u64,
) -> AppResult<BTreeSet<String>> {
    let mut partners = BTreeSet::new();
    let mut before = u64::MAX;
    loop {
        let rows = state
            .store
            .audit_entries_of(resident_id, before, 500)
            .await?;
        let Some((last, _)) = rows.last() else { break };
        before = u64::try_from(*last).unwrap_or(0);
        for (idx, leaf) in &rows {
            if u64::try_from(*idx).unwrap_or(0) < since {
                return Ok(partners);
            }
            let Ok(e) = crate::audit::AuditEntry::decode(leaf) else {
                continue;
            };
            if let Some((_, partner, categories)) = crate::audit::indexes::received(&e)
                && category.is_none_or(|c| categories.contains(&c))
            {
                partners.insert(partner.to_string());
            }
        }
        if rows.len() < 500 {
            break;
        }
    }
    Ok(partners)
}

/// The art. 19 notices to `partners`, each under its own pseudonym of the
/// resident.
fn notices_to(
    state: &AppState,
    partners: &BTreeSet<String>,
    resident_id: &crate::domain::ResidentId,
    kind: NoticeKind,
    category: Option<&Category>,
    now: Timestamp,
) -> AppResult<Vec<NotificationRow>> {
    if partners.is_empty() {
        return Ok(Vec::new());
    }
    let keys = state.vault()?.keys().current();
    partners
        .iter()
        .map(|p| {
            let typed = |e| AppError::internal(format!("recipient's ids: {e}"));
            Ok(NotificationRow {
                id: uuid::Uuid::new_v4().to_string(),
                partner_id: crate::domain::PartnerId::parse(p).map_err(typed)?,
                pseudonym: crate::domain::Pseudonym::parse(
                    &keys.pseudonym(&format!("partner:{p}"), resident_id.as_str().as_bytes()),
                )
                .map_err(typed)?,
                kind,
                category: category.cloned(),
                created_at: now,
                fetched_at: None,
            })
        })
        .collect()
}

/// One change that art. 19 makes the recipients hear of.
pub enum Change<'a> {
    /// A new version of one category (by the resident or on their behalf).
    Rectification {
        category: &'a crate::domain::category::Category,
        record: &'a serde_json::Value,
    },
    Erasure,
    /// Restricting (`true`) or lifting it (`false`: nobody is told).
    Restriction(bool),
}

/// What a change did: the new version for a rectification, whether there
/// was anyone to erase, and the partners told (for the resident to see).
pub struct Applied {
    pub record: Option<crate::service::vault::RecordView>,
    pub erased: bool,
    pub notified: Vec<String>,
}

/// Applies a rectification, an erasure or a restriction with its art. 19
/// notices: the partners that received the data are found before the
/// change (recipients index plus tail), their notices are written in the
/// change's own transaction, and a partner whose read landed between that
/// look and the commit (it got the old value) is told after the commit, a
/// second write, best effort. The caller has recorded the decision.
pub async fn apply_with_notices(
    state: &AppState,
    resident_id: &crate::domain::ResidentId,
    change: Change<'_>,
    now: Timestamp,
) -> AppResult<Applied> {
    let (kind, category) = match &change {
        Change::Rectification { category, .. } => (NoticeKind::Rectification, Some(category)),
        Change::Erasure => (NoticeKind::Erasure, None),
        Change::Restriction(_) => (NoticeKind::Restriction, None),
    };
    let tells = !matches!(change, Change::Restriction(false));
    let since = state.audit.size().await?;
    let told = if tells {
        recipients_of(state, resident_id, category.map(|c| c.as_str())).await?
    } else {
        BTreeSet::new()
    };
    let notices = notices_to(state, &told, resident_id, kind, category.copied(), now)?;
    let mut applied = Applied {
        record: None,
        erased: false,
        notified: told.iter().cloned().collect(),
    };
    match change {
        Change::Rectification { category, record } => {
            applied.record = Some(
                state
                    .vault()?
                    .write_with_notices(resident_id, category, record, now, &notices)
                    .await?,
            );
        }
        Change::Erasure => {
            applied.erased = state.vault()?.erase(resident_id, now, &notices).await?;
            if !applied.erased {
                applied.notified.clear();
                return Ok(applied);
            }
        }
        Change::Restriction(restricted) => {
            state
                .store
                .set_restricted(resident_id, restricted.then_some(now), &notices)
                .await?;
        }
    }
    if tells {
        let late = notify_late_recipients(
            state,
            resident_id,
            kind,
            category.copied(),
            since,
            &told,
            now,
        )
        .await;
        applied.notified.extend(late);
    }
    Ok(applied)
}

/// A rectification with its art. 19 notices ([`apply_with_notices`]): the
/// new version and the partners told.
pub async fn rectify(
    state: &AppState,
    resident_id: &crate::domain::ResidentId,
    category: &crate::domain::category::Category,
    record: &serde_json::Value,
    now: Timestamp,
) -> AppResult<(crate::service::vault::RecordView, Vec<String>)> {
    let applied = apply_with_notices(
        state,
        resident_id,
        Change::Rectification { category, record },
        now,
    )
    .await?;
    let written = applied
        .record
        .ok_or_else(|| AppError::internal("rectification without a record"))?;
    Ok((written, applied.notified))
}

/// After the change committed: a partner that received the resident's data
/// between the notices' computation (when the log held `since` entries)
/// and the commit got the value before the change, and is told too, in a
/// second write (best effort: a failure is logged, the change stands and
/// its own notices with it). Returns the partners added.
pub async fn notify_late_recipients(
    state: &AppState,
    resident_id: &crate::domain::ResidentId,
    kind: NoticeKind,
    category: Option<&Category>,
    since: u64,
    told: &BTreeSet<String>,
    now: Timestamp,
) -> Vec<String> {
    let late = async {
        let mut partners =
            recipients_since(state, resident_id, category.map(Category::as_str), since).await?;
        partners.retain(|p| !told.contains(p));
        let rows = notices_to(state, &partners, resident_id, kind, category, now)?;
        if !rows.is_empty() {
            state.store.insert_notifications(&rows).await?;
        }
        Ok::<_, AppError>(partners.into_iter().collect())
    };
    match late.await {
        Ok(added) => added,
        Err(e) => {
            tracing::warn!(resident = resident_id.as_str(), error = %e, "late art. 19 notices not written");
            Vec::new()
        }
    }
}

// --- restriction (art. 18), objection (art. 21), recipients (art. 19) -------

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct RightsView {
    /// Processing restricted (art. 18) since this time, if it is.
    pub restricted_since: Option<i64>,
    /// Purposes objected to (art. 21), with the time of the objection.
    pub objections: Vec<Objection>,
    /// Partners told about the change (art. 19), when there was one.
    pub notified_partners: Vec<String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Objection {
    pub purpose: String,
    pub since: i64,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Recipients {
    /// Partners that received my data: a read, or an extract I was in.
    pub partners: Vec<String>,
}

async fn rights_view(
    state: &AppState,
    resident: &crate::domain::ResidentId,
    notified: Vec<String>,
) -> AppResult<RightsView> {
    Ok(RightsView {
        restricted_since: state.store.restricted_since(resident).await?,
        objections: state
            .store
            .objections_of(resident)
            .await?
            .into_iter()
            .map(|(purpose, since)| Objection { purpose, since })
            .collect(),
        notified_partners: notified,
    })
}

/// Who received my data (art. 19: the partners a rectification, erasure or
/// restriction is told to).
pub async fn my_recipients(state: &AppState, caller: &Caller) -> AppResult<Audited<Recipients>> {
    let entry = own_data(state, caller, "rights.read", None).await?;
    let me = caller.resident_id()?;
    let partners = recipients_of(state, &me, None).await?;
    Ok(Audited::new(
        entry,
        Recipients {
            partners: partners.into_iter().collect(),
        },
    ))
}

/// My restriction and objections.
pub async fn my_rights(state: &AppState, caller: &Caller) -> AppResult<Audited<RightsView>> {
    let entry = own_data(state, caller, "rights.read", None).await?;
    let me = caller.resident_id()?;
    Ok(Audited::new(
        entry,
        rights_view(state, &me, Vec::new()).await?,
    ))
}

/// Restricts processing of my data (art. 18), or lifts the restriction. At
/// once: partners are refused `processing_restricted`; partners that read
/// my data are told (art. 19).
pub async fn restrict(
    state: &AppState,
    caller: &Caller,
    restricted: bool,
    now: Timestamp,
) -> AppResult<Audited<RightsView>> {
    let entry = own_data(state, caller, "restriction", None).await?;
    let me = caller.resident_id()?;
    let notified = apply_with_notices(state, &me, Change::Restriction(restricted), now)
        .await?
        .notified;
    Ok(Audited::new(
        entry,
        rights_view(state, &me, notified).await?,
    ))
}

/// Objects to a purpose processed on another basis than consent (art. 21).
/// At once: partners of that purpose are refused `objection`.
pub async fn object(
    state: &AppState,
    caller: &Caller,
    purpose: &str,
    now: Timestamp,
) -> AppResult<Audited<RightsView>> {
    let purpose = state
        .register
        .get(purpose)
        .ok_or_else(|| AppError::from(ErrorCode::UnknownPurpose))?;
    if purpose.legal_basis.needs_consent() {
        return Err(ErrorCode::ObjectionNotApplicable.into());
    }
    let entry = own_data(state, caller, "objection", None).await?;
    let me = caller.resident_id()?;
    state
        .store
        .add_objection(
            &me,
            crate::domain::rights::ObjectionTo::Purpose(&purpose.id),
            now,
        )
        .await?;
    Ok(Audited::new(
        entry,
        rights_view(state, &me, Vec::new()).await?,
    ))
}

/// Lifts an objection.
pub async fn lift_objection(
    state: &AppState,
    caller: &Caller,
    purpose: &str,
) -> AppResult<Audited<RightsView>> {
    let entry = own_data(state, caller, "objection", None).await?;
    let me = caller.resident_id()?;
    // Only a purpose id of the register's shape names an objection here (a
    // source's, `source:…`, is lifted on the source's route, audited as
    // such): anything else is `not_found`, as an unknown one.
    let purpose = crate::domain::purpose::register_id(purpose).ok_or(AppError::NotFound)?;
    if !state
        .store
        .remove_objection(&me, crate::domain::rights::ObjectionTo::Purpose(&purpose))
        .await?
    {
        return Err(AppError::NotFound);
    }
    Ok(Audited::new(
        entry,
        rights_view(state, &me, Vec::new()).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_run_to_the_end_of_the_paris_calendar_day() {
        use chrono::TimeZone;
        use chrono_tz::Europe::Paris;
        let at = |y, m, d, h, mi, s| {
            Paris
                .with_ymd_and_hms(y, m, d, h, mi, s)
                .single()
                .unwrap()
                .timestamp()
        };
        // Received on 31 January (Paris), at any hour: due at the end of
        // 28 February (29 in a leap year).
        assert_eq!(
            legal_deadline(at(2027, 1, 31, 9, 0, 0), 1),
            at(2027, 2, 28, 23, 59, 59)
        );
        assert_eq!(
            legal_deadline(at(2028, 1, 31, 23, 30, 0), 1),
            at(2028, 2, 29, 23, 59, 59)
        );
        // 23:30 in Paris on 30 April is 21:30 UTC: the Paris date counts,
        // not the UTC one.
        assert_eq!(
            legal_deadline(at(2027, 4, 30, 23, 30, 0), 1),
            at(2027, 5, 30, 23, 59, 59)
        );
        // 00:30 in Paris on 1 March is still 28 February in UTC.
        assert_eq!(
            legal_deadline(at(2027, 3, 1, 0, 30, 0), 1),
            at(2027, 4, 1, 23, 59, 59)
        );
        // Across the summer-time change (28 March 2027): the deadline is a
        // local day's end, 23:59:59 Paris, which is 21:59:59 UTC in summer
        // and 22:59:59 UTC in winter.
        let due = legal_deadline(at(2027, 3, 10, 12, 0, 0), 1);
        assert_eq!(due, at(2027, 4, 10, 23, 59, 59));
        assert_eq!(due % 86_400, 21 * 3600 + 59 * 60 + 59);
        let due = legal_deadline(at(2027, 10, 15, 12, 0, 0), 1);
        assert_eq!(due % 86_400, 22 * 3600 + 59 * 60 + 59);
        // Three months for an extension.
        assert_eq!(
            legal_deadline(at(2027, 11, 30, 8, 0, 0), 3),
            at(2028, 2, 29, 23, 59, 59)
        );
    }

    #[test]
    fn only_open_requests_are_late() {
        use crate::domain::rights::RightsRequestState::{Extended, Granted, Received};
        assert!(is_late(Received, 100, 101));
        assert!(is_late(Extended, 100, 101));
        assert!(!is_late(Received, 100, 100));
        assert!(!is_late(Granted, 100, 101));
    }
}
