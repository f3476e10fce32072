//! Gathers the facts of an access decision (casbin policy, register,
//! indexed consent lookup), applies `domain::access`, and records the
//! verdict in the audit log before anything is disclosed.

use casbin::{CoreApi, DefaultModel, Enforcer, StringAdapter};

use crate::AppState;
use crate::audit::AuditRecord;
use crate::domain::Role;
use crate::domain::access::{AccessQuery, Verdict, decide as domain_decide};
use crate::error::{AppError, AppResult};

pub const BUILTIN_MODEL: &str = include_str!("../../policies/model.conf");
pub const BUILTIN_POLICY: &str = include_str!("../../policies/policy.csv");

/// Loads the casbin model and policy; an invalid one stops the start.
pub async fn load_policy(model: &str, policy: &str) -> Result<Enforcer, String> {
    let m = DefaultModel::from_str(model)
        .await
        .map_err(|e| e.to_string())?;
    let e = Enforcer::new(m, StringAdapter::new(policy.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    Ok(e)
}

/// Whether the policy lets `role` do `action` (a failure to evaluate denies).
pub fn role_may(state: &AppState, role: &str, action: &str) -> bool {
    state.policy.enforce((role, action)).unwrap_or(false)
}

/// One request for access, as the HTTP layer states it.
#[derive(Clone, Debug)]
pub struct AccessRequest<'a> {
    pub actor_id: &'a str,
    pub role: Role,
    /// The action as the audit log names it, e.g. `data.read`.
    pub action: &'a str,
    /// The actor acts on their own data (the `/api/v1/me` routes): the
    /// policy is asked about `{action}:own`.
    pub own: bool,
    /// Whose data, when a resident's data is concerned, as asked: an id
    /// that is not well-formed names no one, and `evaluate` decides it as
    /// an unknown resident (a use case parses the id again only once the
    /// decision allowed, which needs an active resident).
    pub resident_id: Option<&'a str>,
    pub category: Option<&'a str>,
    pub purpose_id: Option<&'a str>,
    pub structure_id: Option<&'a crate::domain::StructureId>,
    /// The démarche an aidant acts within (mandates).
    pub demarche: Option<crate::domain::Demarche>,
    pub request_id: Option<String>,
    /// A partner's read may gather the decision's facts in the same query
    /// as the record ([`crate::storage::Store::partner_read`]); otherwise
    /// the decision asks for them.
    pub partner_facts: Option<crate::storage::PartnerReadFacts>,
    /// Whether a resident is active, as the caller read it with its other
    /// facts in one statement (a deposit line, `DepositStore::deposit_facts`):
    /// used only if it is about `resident_id`; otherwise the decision asks.
    pub resident_active: Option<(&'a str, bool)>,
}

impl<'a> AccessRequest<'a> {
    pub fn new(actor_id: &'a str, role: Role, action: &'a str) -> Self {
        Self {
            actor_id,
            role,
            action,
            own: false,
            resident_id: None,
            category: None,
            purpose_id: None,
            structure_id: None,
            demarche: None,
            request_id: None,
            partner_facts: None,
            resident_active: None,
        }
    }
}

/// The one access decision with its facts: the casbin policy (roles ×
/// actions), the register (purpose, legal basis, recipients), the resident's
/// consents and active mandates (indexed queries), at the state's clock.
/// The verdict, allow or deny, is recorded in the audit log before anything
/// is disclosed: `Ok(audit index)` when allowed; a refusal comes back as 403
/// with its reason code, after it too has been recorded (or 503 if it could
/// not be: nothing happens unaudited).
pub async fn decide(state: &AppState, req: AccessRequest<'_>) -> AppResult<u64> {
    let (verdict, facts) = evaluate(state, &req).await?;
    record(state, req, &verdict, &facts).await
}

/// The facts gathered for one decision.
pub struct Facts<'r> {
    purpose: Option<&'r crate::domain::purpose::Purpose>,
    resident_active: bool,
    now: crate::domain::Timestamp,
}

/// The verdict without recording it, for callers whose allowed action is
/// itself the audited event (a consent given is recorded as `consent.give`
/// by the consent registry); they record refusals with [`record`].
pub async fn evaluate<'r>(
    state: &'r AppState,
    req: &AccessRequest<'_>,
) -> AppResult<(Verdict, Facts<'r>)> {
    let now = state.clock.now();
    let policy_action = if req.own {
        format!("{}:own", req.action)
    } else {
        req.action.to_string()
    };
    let role_allows = role_may(state, req.role.as_str(), &policy_action);
    let purpose = req.purpose_id.and_then(|p| state.register.get(p));
    // A partner's read, the busiest path, gathers what it needs of the
    // resident (status, consent, restriction, objection) in one query.
    // Facts handed in are used only if they were read for this very
    // (resident, purpose); otherwise they are read here.
    let handed_in = req.partner_facts.as_ref().filter(|f| {
        Some(f.resident_id.as_str()) == req.resident_id
            && f.purpose.as_ref() == purpose.map(|p| &p.id)
    });
    let named = req
        .resident_id
        .and_then(|r| crate::domain::ResidentId::parse(r).ok());
    let partner_facts = match (req.role, named.as_ref(), handed_in) {
        (Role::Partner, Some(_), Some(facts)) if role_allows => Some(facts.clone()),
        // The supervisor's read is bound by the resident's objection to
        // its purpose and their restriction, as a partner's is.
        (Role::Partner | Role::Supervisor, Some(r), _) if role_allows => Some(
            state
                .store
                .partner_read_facts(r, purpose.map(|p| &p.id))
                .await?,
        ),
        _ => None,
    };
    let resident_active = match (req.resident_id, &partner_facts) {
        (Some(_), Some(facts)) => facts.resident_active,
        // A resident's own session proves the account exists.
        (Some(_), None) if req.role == Role::Resident => true,
        (Some(_), None) if role_allows => match (&named, req.resident_active) {
            (Some(r), Some((about, active))) if about == r.as_str() => active,
            (Some(r), _) => state.store.resident_exists(r).await?,
            (None, _) => false,
        },
        _ => false,
    };
    // Consents matter only to a partner's read for a consent-based purpose.
    let valid_consent = match (purpose, req.category, &partner_facts) {
        (Some(p), Some(c), Some(facts))
            if resident_active
                && crate::service::consents::consent_could_cover(p, c, Some(req.actor_id)) =>
        {
            crate::service::consents::covering_consent(p, facts.consent.clone(), c, now)
        }
        _ => None,
    };
    // An aidant acts within one démarche of a live mandate of their
    // current structure; the démarche must reach the category.
    let demarche_covers_category = match (req.demarche, req.category) {
        (Some(d), Some(c)) => state.demarches.covers(d, c),
        (Some(_), None) => true,
        (None, _) => false,
    };
    let active_mandate = match (req.role, named.as_ref(), req.structure_id, req.demarche) {
        (Role::Aidant | Role::Referent, Some(r), Some(s), Some(d))
            if resident_active && demarche_covers_category =>
        {
            state
                .store
                .live_authorisation(r, s, d, now)
                .await?
                .map(|a| a.mandate_id)
        }
        _ => None,
    };
    // Restriction and objection matter to partners' use of the data.
    let (restricted, objected) = match &partner_facts {
        Some(facts) if resident_active => (facts.restricted, facts.objected),
        _ => (false, false),
    };
    let verdict = domain_decide(&AccessQuery {
        actor_id: req.actor_id,
        role: req.role,
        action: &policy_action,
        role_allows,
        resident_id: req.resident_id,
        resident_active,
        category: req.category,
        purpose,
        purpose_asked: req.purpose_id.is_some(),
        valid_consent,
        active_mandate,
        demarche_covers_category,
        restricted,
        objected,
    });
    Ok((
        verdict,
        Facts {
            purpose,
            resident_active,
            now,
        },
    ))
}

/// The audit entry of a verdict, allow or deny, with whether it allows and
/// its reason.
fn verdict_entry(
    req: AccessRequest<'_>,
    verdict: &Verdict,
    facts: &Facts<'_>,
) -> (AuditRecord, bool, &'static str) {
    let Facts {
        purpose,
        resident_active,
        now,
    } = *facts;
    let (allowed, reason) = match verdict {
        Verdict::Allow(basis) => (true, basis.reason()),
        Verdict::Deny(denial) => (false, denial.as_str()),
    };
    // Only a resident who exists is named, here as below: a probe for an
    // unknown id leaves no trace of that id.
    let on_behalf_of = matches!(req.role, Role::Aidant | Role::Referent)
        .then(|| {
            req.resident_id
                .filter(|_| resident_active)
                .map(str::to_string)
        })
        .flatten();
    let record = AuditRecord::new(req.actor_id, req.role.as_str(), req.action, now)
        .on_behalf_of(on_behalf_of)
        .structure(req.structure_id.map(|s| s.as_str()))
        // Only a resident who exists is named; a probe for an
        // unknown id leaves no trace of that id.
        .resident(
            req.resident_id
                .filter(|_| resident_active || req.role == Role::Resident),
        )
        .category(req.category.map(|c| c.chars().take(40).collect::<String>()))
        // An aidant's act names the démarche where a purpose would be.
        .purpose(
            req.purpose_id
                .map(|p| p.chars().take(60).collect::<String>())
                .or_else(|| req.demarche.map(|d| format!("demarche:{}", d.as_str()))),
        )
        .legal_basis(purpose.map(|p| p.legal_basis.as_str()))
        .request(req.request_id);
    (
        if allowed {
            record.allow(reason)
        } else {
            record.deny(reason)
        },
        allowed,
        reason,
    )
}

/// Records a verdict in the audit log; `Ok(index)` when it allows, the
/// refusal (403 with its reason code) when it denies.
pub async fn record(
    state: &AppState,
    req: AccessRequest<'_>,
    verdict: &Verdict,
    facts: &Facts<'_>,
) -> AppResult<u64> {
    let (entry, allowed, reason) = verdict_entry(req, verdict, facts);
    let index = state.audit.record(entry).await?;
    state.metrics.decision(allowed, reason);
    match *verdict {
        Verdict::Allow(_) => Ok(index),
        Verdict::Deny(denial) => Err(denial.into()),
    }
}

/// The one decision for a data source's deposit: allowed, its entry and
/// the deposit are written in one transaction (the entry first, the
/// deposit checked and written after it: `AuditLog::record_deposit`), so
/// the deposit is never stored without the entry that allowed it, and
/// the two take one durable commit. A refusal is recorded as [`record`]
/// does. Returns the deposit's outcome.
pub async fn decide_deposit(
    state: &AppState,
    req: AccessRequest<'_>,
    deposit: crate::storage::DepositRow,
    now: crate::domain::Timestamp,
) -> AppResult<crate::storage::DepositOutcome> {
    let (verdict, facts) = evaluate(state, &req).await?;
    if let Verdict::Deny(denial) = verdict {
        return Err(match record(state, req, &verdict, &facts).await {
            Err(e) => e,
            Ok(_) => denial.into(),
        });
    }
    let (entry, allowed, reason) = verdict_entry(req, &verdict, &facts);
    let (_, outcome) = state.audit.record_deposit(entry, deposit, now).await?;
    state.metrics.decision(allowed, reason);
    Ok(outcome)
}

/// Decides, through the one access decision, about the logged-in person
/// acting on their own data (the `/api/v1/me` routes and the resident's
/// pages), and records it before anything is read or changed. Only
/// residents hold `…:own` actions; anyone else is refused `resident_only`
/// (recorded too). Returns the audit entry's index.
pub async fn own_data(
    state: &AppState,
    caller: &super::Caller,
    action: &str,
    category: Option<&str>,
) -> AppResult<u64> {
    decide(
        state,
        AccessRequest {
            own: true,
            resident_id: Some(&caller.actor_id),
            category,
            request_id: caller.request_id.clone(),
            ..AccessRequest::new(&caller.actor_id, caller.role, action)
        },
    )
    .await
}

/// Decides about an action on no one's data in particular (the DPO's,
/// auditor's and operator's routes: the policy alone answers), recorded.
pub async fn role_action(state: &AppState, caller: &super::Caller, action: &str) -> AppResult<u64> {
    decide(
        state,
        AccessRequest {
            request_id: caller.request_id.clone(),
            ..AccessRequest::new(&caller.actor_id, caller.role, action)
        },
    )
    .await
}

/// Records a refusal, then returns the refusal itself (or 503 if even the
/// refusal could not be recorded: nothing happens unaudited).
pub async fn deny(state: &AppState, record: AuditRecord, refusal: AppError) -> AppError {
    let (code, _) = refusal.code_and_status();
    match state.audit.record(record.deny(code)).await {
        Ok(_) => {
            state.metrics.refusal(code);
            refusal
        }
        Err(e) => e.into(),
    }
}
