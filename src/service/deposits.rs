//! Deposits (BRIEF C11): one line of a source's stream, from its bytes to
//! its answer. Parsed and checked for form (`domain::deposit`), the
//! category against the register of sources and the categories, the
//! subject resolved (a standing link's handle, or a pivot identity for a
//! public-task source), the resident's restriction and objection
//! honoured; the version is sealed (in memory) with its provenance, then
//! the one decision is asked and its entry written (one per line, allow or
//! deny, through the audit log's group-commit writer), the allow in the
//! same transaction as the deposit it allows: one durable commit for both.
//!
//! Idempotent by (source, source's record id): the same content again is
//! `unchanged`. A resident's own correction is never silently overwritten:
//! a deposit observed before the resident (or an aidant for them) last
//! wrote the category is `rejected` (`resident_correction_stands`), and the
//! resident's value stays current; one observed after it makes a new
//! version (the history keeps theirs).

use serde::Serialize;
use utoipa::ToSchema;

use super::sources::SourceCaller;
use crate::AppState;
use crate::domain::deposit::{Deposit, ReadLine, Subject, read_line};
use crate::domain::source::{Matching, Source};
use crate::domain::{Role, Timestamp};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::storage::{DepositFacts, DepositOutcome, DepositRow, DepositSubject, RecordOrigin};

/// The answer to one line, in the order of the lines.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineAnswer {
    /// 1-based line number in the stream.
    pub line: u64,
    /// The source's record id, when the line had a readable one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `accepted`, `unchanged` or `rejected`.
    pub status: &'static str,
    /// The stable code of a rejection (see docs/errors.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
}

/// The last line of the answer.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Summary {
    pub accepted: u64,
    pub unchanged: u64,
    pub rejected: u64,
}

impl Summary {
    pub fn count(&mut self, a: &LineAnswer) {
        match a.status {
            "accepted" => self.accepted += 1,
            "unchanged" => self.unchanged += 1,
            _ => self.rejected += 1,
        }
    }
}

/// How a line ended: stored, the same as before, or refused with a code.
enum Done {
    Accepted,
    Unchanged,
}

/// One line of a deposit stream at `now`. Only a failure of the log, the
/// keys or the database is an `Err` (the stream stops: nothing is
/// acknowledged that was not recorded); every refusal of the line itself
/// is an answer, recorded.
pub async fn deposit_line(
    state: &AppState,
    caller: &SourceCaller,
    line: u64,
    bytes: &[u8],
    now: Timestamp,
) -> AppResult<LineAnswer> {
    deposit_read_line(state, caller, line, read_line(bytes, now), now).await
}

/// As [`deposit_line`], for a line its caller has already read (the stream
/// reads each line once, to keep lines about the same record in order).
pub async fn deposit_read_line(
    state: &AppState,
    caller: &SourceCaller,
    line: u64,
    read: ReadLine,
    now: Timestamp,
) -> AppResult<LineAnswer> {
    let ReadLine {
        id,
        deposit: parsed,
    } = read;
    let answer = |status, code: Option<ErrorCode>| LineAnswer {
        line,
        id: id.clone(),
        status,
        code: code.map(ErrorCode::code),
    };
    match deposit(state, caller, parsed, now).await {
        Ok(Done::Accepted) => Ok(answer("accepted", None)),
        Ok(Done::Unchanged) => Ok(answer("unchanged", None)),
        Err(AppError::Coded { code, .. }) if code.status().is_client_error() => {
            Ok(answer("rejected", Some(code)))
        }
        Err(e) => Err(e),
    }
}

/// A line refused before it could be read as a deposit (an import file's
/// row that stands for no line: not UTF-8, more cells than the header):
/// recorded and answered as a stream's line would be.
pub async fn refuse_line(
    state: &AppState,
    caller: &SourceCaller,
    line: u64,
    refusal: crate::domain::deposit::LineRefusal,
    now: Timestamp,
) -> AppResult<LineAnswer> {
    let source = state
        .sources
        .get(&caller.source_id)
        .ok_or_else(|| AppError::from(ErrorCode::InvalidToken))?;
    match refuse(state, caller, source, None, None, refusal.into(), now).await {
        AppError::Coded { code, .. } if code.status().is_client_error() => Ok(LineAnswer {
            line,
            id: None,
            status: "rejected",
            code: Some(code.code()),
        }),
        e => Err(e),
    }
}

/// A recorded refusal of a line (about `resident` once it is known).
async fn refuse(
    state: &AppState,
    caller: &SourceCaller,
    source: &Source,
    resident: Option<&crate::domain::ResidentId>,
    category: Option<&str>,
    code: ErrorCode,
    now: Timestamp,
) -> AppError {
    let entry = caller
        .record("source.deposit", now)
        .resident(resident)
        .category(category)
        .purpose(format!("source:{}", source.id));
    super::access::deny(state, entry, code.into()).await
}

async fn deposit(
    state: &AppState,
    caller: &SourceCaller,
    parsed: Result<Deposit, crate::domain::deposit::LineRefusal>,
    now: Timestamp,
) -> AppResult<Done> {
    let source = state
        .sources
        .get(&caller.source_id)
        .ok_or_else(|| AppError::from(ErrorCode::InvalidToken))?;
    let d: Deposit = match parsed {
        Ok(d) => d,
        Err(r) => return Err(refuse(state, caller, source, None, None, r.into(), now).await),
    };
    let category = d.category.as_str();
    let no = |code| refuse(state, caller, source, None, Some(category), code, now);
    if !source.may_deposit(category) {
        return Err(no(ErrorCode::CategoryNotDeposited).await);
    }
    let Ok(cat) = state.categories.category(category) else {
        return Err(no(ErrorCode::UnknownCategory).await);
    };
    let fields = match state
        .categories
        .validate(&cat, &serde_json::Value::Object(d.fields.clone()))
    {
        Ok(f) => f,
        Err(e) => {
            let code = AppError::from(e).error_code();
            return Err(no(code).await);
        }
    };
    // A first look, so a line the resident's choices refuse is recorded as
    // a denial without an allow before it; the storage transaction checks
    // again (a choice that commits in between wins). The same read gives
    // the resident, whether they are active, the last digest, the latest
    // version and the data key (one statement for the line's facts). A
    // resident no longer active: the decision refuses.
    let facts = match subject_facts(state, source, &d.subject, &d.id, category).await? {
        Ok(f) => f,
        Err(code) => return Err(no(code).await),
    };
    let resident_id = facts.resident_id.clone();
    let about = format!("source:{}", source.id);
    let refusal = if facts.restricted {
        Some(ErrorCode::ProcessingRestricted)
    } else if facts.objected {
        Some(ErrorCode::Objection)
    } else {
        None
    };
    if let Some(code) = refusal {
        return Err(refuse(
            state,
            caller,
            source,
            Some(&resident_id),
            Some(category),
            code,
            now,
        )
        .await);
    }
    // The one decision, recorded before anything is stored: its entry
    // and the deposit it allows share one transaction.
    let about_source = super::access::AccessRequest {
        resident_id: Some(resident_id.as_str()),
        category: Some(category),
        purpose_id: Some(&about),
        request_id: caller.request_id.clone(),
        resident_active: Some((resident_id.as_str(), facts.active)),
        ..super::access::AccessRequest::new(&caller.source_id, Role::Source, "source.deposit")
    };
    let vault = state.vault()?;
    let keys = vault.keys().current();
    let canonical = serde_json::json!({
        "category": category,
        "fields": fields,
        "observed_at": d.observed_at,
    });
    let content_digest = keys.pseudonym(
        &format!("source-deposit:{}", source.id),
        canonical.to_string().as_bytes(),
    );
    if facts.previous_digest.as_deref() == Some(content_digest.as_str()) {
        super::access::decide(state, about_source).await?;
        return Ok(Done::Unchanged);
    }
    // A refusal found inside the storage transaction is recorded too,
    // after the decision's allow: the log says both what was allowed and
    // why nothing was stored.
    let refused = |code| {
        refuse(
            state,
            caller,
            source,
            Some(&resident_id),
            Some(category),
            code,
            now,
        )
    };
    // Gone since it was resolved: the answer `resolve` gives for no one.
    let no_subject = match source.matching {
        Matching::Link => ErrorCode::NoLink,
        Matching::Pivot => ErrorCode::UnknownPivot,
    };
    // Sealed for the version after the one just read with the key just
    // read (`known`), or reading them afresh (and making the resident's
    // data key if they have none yet).
    let (vault, resident, cat, fields, digest, d, refused) = (
        &vault,
        &resident_id,
        &cat,
        &fields,
        &content_digest,
        &d,
        &refused,
    );
    let row_sealed = |known| async move {
        let record = match vault
            .seal_after(
                resident,
                cat,
                fields,
                RecordOrigin::deposit(&source.id, &d.id, source.basis.as_str(), d.observed_at),
                known,
                now,
            )
            .await
        {
            Ok(record) => record,
            Err(super::vault::VaultError::NoSuchResident) => return Err(refused(no_subject).await),
            Err(e) => return Err(AppError::from(e)),
        };
        Ok(DepositRow {
            source_id: source.id.clone(),
            source_name: source.name_fr.clone(),
            source_record_id: d.id.clone(),
            resident_id: resident.clone(),
            content_digest: digest.clone(),
            observed_at: d.observed_at,
            via_link: source.matching == Matching::Link,
            record,
        })
    };
    let outcome = match &facts.data_key {
        // The usual case: sealed first (in memory: nothing is stored or
        // disclosed), then the decision, whose allow carries the deposit
        // into the audit log's transaction.
        Some(key) => {
            let row = row_sealed(Some((key, facts.latest_version))).await?;
            super::access::decide_deposit(state, about_source, row, now).await?
        }
        // No data key yet: the decision first, since sealing makes the
        // key; then the deposit alone.
        None => {
            super::access::decide(state, about_source).await?;
            state
                .store
                .record_deposit(&row_sealed(None).await?, now)
                .await?
        }
    };
    // Another version took the number meanwhile, or the deposit could not
    // be written beside its entry (its entry is written): sealed again
    // once, reading afresh, and stored alone.
    let outcome = match outcome {
        DepositOutcome::VersionTaken | DepositOutcome::StoreAlone => {
            state
                .store
                .record_deposit(&row_sealed(None).await?, now)
                .await?
        }
        outcome => outcome,
    };
    let code = match outcome {
        DepositOutcome::Accepted => return Ok(Done::Accepted),
        DepositOutcome::Unchanged => return Ok(Done::Unchanged),
        DepositOutcome::VersionTaken | DepositOutcome::StoreAlone => ErrorCode::ConcurrentUpdate,
        DepositOutcome::SupersededByResident => ErrorCode::ResidentCorrectionStands,
        DepositOutcome::NoResident | DepositOutcome::NoLink => no_subject,
        DepositOutcome::Restricted => ErrorCode::ProcessingRestricted,
        DepositOutcome::Objected => ErrorCode::Objection,
    };
    Err(refused(code).await)
}

/// The line's facts about the resident it is about, read in one statement
/// that resolves its subject (a standing link's handle for a link source),
/// or after matching a known pivot for a pivot source; or the refusal's
/// code. An unknown pivot says nothing of whether the person exists.
async fn subject_facts(
    state: &AppState,
    source: &Source,
    subject: &Subject,
    source_record_id: &str,
    category: &str,
) -> AppResult<Result<DepositFacts, ErrorCode>> {
    let facts = |subject| {
        state.deposit_facts.read(crate::storage::FactsAsked {
            source_id: &source.id,
            subject,
            source_record_id,
            category,
        })
    };
    match (source.matching, subject) {
        (Matching::Link, Subject::Handle(h)) => Ok(facts(DepositSubject::Handle(h))
            .await?
            .ok_or(ErrorCode::NoLink)),
        (Matching::Pivot, Subject::Pivot(p)) => {
            let Some(digest) = pivot_digest(state, p)? else {
                return Ok(Err(ErrorCode::UnknownPivot));
            };
            let Some(resident) = state.store.resident_by_pivot(&digest).await? else {
                return Ok(Err(ErrorCode::UnknownPivot));
            };
            Ok(facts(DepositSubject::Resident(&resident))
                .await?
                .ok_or(ErrorCode::UnknownPivot))
        }
        _ => Ok(Err(ErrorCode::InvalidDeposit)),
    }
}

/// Records a resident's pivot identity (its keyed digest only), for the
/// public-task sources that match by pivot: from their FranceConnect
/// login, the seed or the demo.
pub async fn register_pivot(
    state: &AppState,
    resident_id: &crate::domain::ResidentId,
    pivot: &crate::domain::deposit::PivotIdentity,
) -> AppResult<()> {
    let digest =
        pivot_digest(state, pivot)?.ok_or_else(|| AppError::from(ErrorCode::UnknownPivot))?;
    Ok(state.store.set_resident_pivot(&digest, resident_id).await?)
}

/// The keyed digest a pivot identity is stored and looked up by (`None`
/// when it cannot be a pivot's): the one construction, for registering and
/// for matching alike.
fn pivot_digest(
    state: &AppState,
    pivot: &crate::domain::deposit::PivotIdentity,
) -> AppResult<Option<String>> {
    let Some(canonical) = pivot.canonical() else {
        return Ok(None);
    };
    let keys = state.vault()?.keys().current();
    Ok(Some(keys.pseudonym("pivot", canonical.as_bytes())))
}
