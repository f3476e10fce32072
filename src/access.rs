//! Gathers the facts of an access decision (casbin policy, register,
//! indexed consent lookup), applies `domain::access`, and records the
//! verdict in the audit log before anything is disclosed.

use casbin::{CoreApi, DefaultModel, Enforcer, StringAdapter};

use crate::AppState;
use crate::audit::AuditRecord;
use crate::domain::access::{PartnerRead, Verdict, partner_read};
use crate::error::{AppError, AppResult};

pub const BUILTIN_MODEL: &str = include_str!("../policies/model.conf");
pub const BUILTIN_POLICY: &str = include_str!("../policies/policy.csv");

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

/// Decides, records and returns the verdict of a partner reading one
/// category of one resident for a purpose. `Ok(audit index)` only when
/// allowed; a refusal comes back as 403 with its reason code, after it too
/// has been recorded.
pub async fn partner_read_decision(
    state: &AppState,
    partner_id: &str,
    resident_id: &str,
    category: &str,
    purpose_id: &str,
    request_id: Option<String>,
) -> AppResult<u64> {
    let now = state.clock.now();
    let purpose = state.register.get(purpose_id);
    let resident_active = state.store.resident_exists(resident_id).await?;
    let valid_consent = match purpose {
        Some(p) if resident_active => {
            crate::consents::valid_consent(
                state.store.as_ref(),
                p,
                resident_id,
                category,
                Some(partner_id),
                now,
            )
            .await?
        }
        _ => None,
    };
    let verdict = partner_read(&PartnerRead {
        partner_id,
        role_allows: role_may(state, "partner", "data.read"),
        purpose,
        category,
        resident_active,
        valid_consent,
    });
    let (allowed, reason) = match &verdict {
        Verdict::Allow(basis) => (true, basis.reason()),
        Verdict::Deny(reason) => (false, *reason),
    };
    let index = state
        .audit
        .record(AuditRecord {
            timestamp: now,
            actor_id: partner_id.to_string(),
            actor_role: "partner".into(),
            action: "data.read".into(),
            resident_id: resident_active.then(|| resident_id.to_string()),
            category: Some(category.chars().take(40).collect()),
            purpose: Some(purpose_id.chars().take(60).collect()),
            legal_basis: purpose.map(|p| p.legal_basis.as_str().to_string()),
            allowed,
            reason: reason.to_string(),
            request_id,
            ..Default::default()
        })
        .await?;
    match verdict {
        Verdict::Allow(_) => Ok(index),
        Verdict::Deny(reason) => Err(AppError::forbidden(
            reason,
            format!("Accès refusé ({reason}). / Access denied ({reason})."),
        )),
    }
}
