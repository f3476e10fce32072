//! Alerts to a structure's référent about unusual aidant activity (BRIEF
//! C13; the national Aidants Connect terms promise them): a mandate created
//! outside the structure's opening hours, a burst of mandates by one
//! aidant, an act on behalf at night. Raised after the act (an alert is
//! never a reason to refuse it, and its failure never undoes it: logged);
//! listed and reviewed by the référent, every review audited.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::domain::alert::{AlertKind, AlertRules, is_night};
use crate::domain::{AgentId, Role, StructureId, Timestamp};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::service::mandates::record;
use crate::service::structures::referent;
use crate::service::{Audited, Caller};
use crate::storage::{AlertRow, AlertRulesRow, BurstCheck, MandateEffects, MandateRow};

/// Alerts shown at a time.
pub const MAX_LISTED: i64 = 200;

/// The structure's rules, or the defaults when it set none (a stored rule
/// that no longer parses falls back to the defaults, logged).
pub async fn rules_of(state: &AppState, structure: &StructureId) -> AppResult<AlertRules> {
    Ok(rules_from(
        structure,
        state.store.alert_rules(structure).await?.as_ref(),
    ))
}

/// The rules a stored row gives (the defaults when none, or when it no
/// longer parses).
fn rules_from(structure: &StructureId, stored: Option<&AlertRulesRow>) -> AlertRules {
    match stored {
        Some(r) => AlertRules::new(
            &r.hours,
            u32::try_from(r.burst_max).unwrap_or(0),
            u32::try_from(r.burst_minutes).unwrap_or(0),
        )
        .unwrap_or_else(|e| {
            tracing::warn!(structure = %structure, error = %e, "stored alert rules unusable; defaults apply");
            AlertRules::default()
        }),
        None => AlertRules::default(),
    }
}

async fn raise(
    state: &AppState,
    structure: &StructureId,
    aidant: &AgentId,
    kind: AlertKind,
    subject: String,
    now: Timestamp,
) {
    let row = AlertRow::new(structure, aidant, kind, subject, now);
    match state.store.insert_alert(&row).await {
        Ok(()) => {
            tracing::info!(structure = %structure, aidant = %aidant, kind = kind.as_str(), "référent alert raised")
        }
        Err(e) => {
            tracing::error!(structure = %structure, kind = kind.as_str(), error = %e, "référent alert NOT recorded")
        }
    }
}

/// The alerts a mandate about to be created carries into its transaction:
/// out of hours (decided here), and the burst rule (checked in the
/// transaction). Rules that cannot be read: the defaults, logged.
pub async fn on_mandate(state: &AppState, m: &MandateRow, now: Timestamp) -> MandateEffects {
    let rules = rules_of(state, &m.structure_id).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "alert rules not read; the defaults apply");
        AlertRules::default()
    });
    let alert = |kind| {
        AlertRow::new(
            &m.structure_id,
            &m.aidant_id,
            kind,
            format!("mandate:{}", m.id),
            now,
        )
    };
    MandateEffects {
        notices: Vec::new(),
        alerts: if rules.hours.is_open(now) {
            Vec::new()
        } else {
            vec![alert(AlertKind::OutOfHours)]
        },
        burst: Some(BurstCheck {
            max: i64::from(rules.burst_max),
            since: now - i64::from(rules.burst_minutes) * 60,
            alert: alert(AlertKind::Burst),
        }),
    }
}

/// After a mandate was created: when its structure lists the communes it
/// serves, the resident's commune (their `contact` record's
/// `commune_insee`) is read by the supervisor, through the one decision
/// (purpose `controle-des-mandats`), recorded before it is opened; a
/// commune outside the list raises an alert. Never a reason to undo the
/// mandate: a failure is logged.
pub async fn after_mandate(state: &AppState, m: &MandateRow, now: Timestamp) {
    let communes = match state.store.alert_rules(&m.structure_id).await {
        Ok(Some(r)) if !r.communes.is_empty() => r.communes,
        Ok(_) => return,
        Err(e) => {
            tracing::error!(error = %e, "alert rules not read; no commune check");
            return;
        }
    };
    let kind = match resident_commune(state, m).await {
        Ok(Some(c)) if communes.contains(&c) => None,
        Ok(Some(_)) => Some(AlertKind::OutsideCommune),
        // No commune to check: the list must not be evaded by clearing it.
        Ok(None) => Some(AlertKind::CommuneUnknown),
        // The resident objected to the check or restricted processing:
        // respected, and not held against them.
        Err(AppError::Coded {
            code: ErrorCode::Objection | ErrorCode::ProcessingRestricted,
            ..
        }) => None,
        Err(e) => {
            tracing::error!(mandate = %m.id, error = %e, "the resident's commune was not checked");
            Some(AlertKind::CommuneUnknown)
        }
    };
    if let Some(kind) = kind {
        raise(
            state,
            &m.structure_id,
            &m.aidant_id,
            kind,
            format!("mandate:{}", m.id),
            now,
        )
        .await;
    }
}

async fn resident_commune(state: &AppState, m: &MandateRow) -> AppResult<Option<String>> {
    crate::service::access::decide(
        state,
        crate::service::access::AccessRequest {
            resident_id: Some(m.resident_id.as_str()),
            category: Some("contact"),
            purpose_id: Some(crate::domain::access::SUPERVISION_PURPOSE),
            request_id: Some(format!("mandate:{}", m.id)),
            ..crate::service::access::AccessRequest::new(
                "supervisor",
                Role::Supervisor,
                "alert.commune",
            )
        },
    )
    .await?;
    let contact = state.categories.category("contact")?;
    let current = state
        .vault()?
        .read_current_category(&m.resident_id, &contact)
        .await?;
    Ok(current
        .and_then(|r| r.fields.get("commune_insee").cloned())
        .and_then(|v| v.as_str().map(str::to_string)))
}

/// After an act on behalf was decided: at night? `subject` names the act
/// (`audit:{index}` of its decision, or `consent:{id}`).
pub async fn after_act_on_behalf(
    state: &AppState,
    aidant: &AgentId,
    structure: &StructureId,
    subject: String,
    now: Timestamp,
) {
    if is_night(now) {
        raise(state, structure, aidant, AlertKind::NightAct, subject, now).await;
    }
}

#[derive(Serialize, ToSchema)]
pub struct AlertView {
    pub id: String,
    /// `out_of_hours`, `burst` or `night_act`.
    pub kind: String,
    pub aidant_id: String,
    /// The aidant's display name (a public agent's work identity).
    pub aidant_name: String,
    /// The act: `mandate:{id}` or `audit:{index}`.
    pub subject: String,
    pub created_at: i64,
    pub reviewed_at: Option<i64>,
    pub reviewed_by: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AlertsView {
    pub hours: String,
    pub burst_max: u32,
    pub burst_minutes: u32,
    /// Where alerts are also e-mailed (none: the page only).
    pub alert_email: Option<String>,
    /// The communes the structure serves (empty: no check).
    pub communes: Vec<String>,
    pub alerts: Vec<AlertView>,
}

async fn view(state: &AppState, structure: &StructureId) -> AppResult<AlertsView> {
    let stored = state.store.alert_rules(structure).await?;
    let rules = rules_from(structure, stored.as_ref());
    let communes = stored
        .as_ref()
        .map(|r| r.communes.codes().to_vec())
        .unwrap_or_default();
    let alert_email = stored.and_then(|r| r.alert_email);
    let names: std::collections::HashMap<String, String> = state
        .store
        .agents_of_structure(structure)
        .await?
        .into_iter()
        .map(|a| (a.id.into_string(), a.display_name))
        .collect();
    let alerts = state
        .store
        .structure_alerts(structure, MAX_LISTED)
        .await?
        .into_iter()
        .map(|a| AlertView {
            id: a.id,
            kind: a.kind.as_str().to_string(),
            aidant_name: names
                .get(a.aidant_id.as_str())
                .cloned()
                .unwrap_or_else(|| a.aidant_id.to_string()),
            aidant_id: a.aidant_id.into_string(),
            subject: a.subject,
            created_at: a.created_at,
            reviewed_at: a.reviewed_at,
            reviewed_by: a.reviewed_by,
        })
        .collect();
    Ok(AlertsView {
        hours: rules.hours.as_text(),
        burst_max: rules.burst_max,
        burst_minutes: rules.burst_minutes,
        alert_email,
        communes,
        alerts,
    })
}

/// The référent's alerts (their structure's), with its rules.
pub async fn list(state: &AppState, caller: &Caller) -> AppResult<Audited<AlertsView>> {
    let ctx = referent(state, caller, "structure.read").await?;
    let entry = state
        .audit
        .record(record(state, caller, Some(&ctx), "alerts.read"))
        .await?;
    Ok(Audited::new(entry, view(state, &ctx.structure.id).await?))
}

/// The référent marks one of their structure's alerts reviewed (once; an
/// alert of another structure, or an id that is none, is `not_found`; an
/// alert about the référent's own acts is not theirs to close:
/// `self_review`).
pub async fn review(
    state: &AppState,
    caller: &Caller,
    id: &str,
    now: Timestamp,
) -> AppResult<Audited<AlertsView>> {
    let ctx = referent(state, caller, "structure.manage").await?;
    let (Some(me), Ok(id)) = (caller.agent_id(), uuid::Uuid::parse_str(id)) else {
        return Err(AppError::NotFound);
    };
    let id = id.to_string();
    let alert = state
        .store
        .find_alert(&id, &ctx.structure.id)
        .await?
        .ok_or(AppError::NotFound)?;
    if alert.aidant_id == me {
        return Err(crate::service::access::deny(
            state,
            record(state, caller, Some(&ctx), "alert.review"),
            ErrorCode::SelfReview.into(),
        )
        .await);
    }
    let entry = state
        .audit
        .record(record(state, caller, Some(&ctx), "alert.review"))
        .await?;
    if !state
        .store
        .review_alert(&id, &ctx.structure.id, &me, now)
        .await?
    {
        return Err(AppError::NotFound);
    }
    Ok(Audited::new(entry, view(state, &ctx.structure.id).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRulesRequest {
    /// e.g. `mon-fri 08:30-12:00,13:30-17:30; sat 09:00-12:00` (Paris time).
    pub hours: String,
    /// More than this many mandates by one aidant…
    pub burst_max: u32,
    /// …within this many minutes raise an alert.
    pub burst_minutes: u32,
    /// The structure's functional mailbox that alerts are also sent to
    /// (e.g. `alertes@ccas.example`); `""` removes it; left out, the one
    /// set stays.
    #[serde(default)]
    pub alert_email: Option<String>,
    /// The communes the structure serves (INSEE codes); a mandate for a
    /// resident living elsewhere raises an alert. `[]`: no check; left
    /// out, the list set stays.
    #[serde(default)]
    pub communes: Option<Vec<String>>,
}

/// The référent sets the structure's alert rules.
pub async fn set_rules(
    state: &AppState,
    caller: &Caller,
    body: AlertRulesRequest,
    now: Timestamp,
) -> AppResult<Audited<AlertsView>> {
    let rules = AlertRules::new(&body.hours, body.burst_max, body.burst_minutes)
        .map_err(|m| ErrorCode::InvalidAlertRules.with(m))?;
    let alert_email = match body.alert_email.as_deref().map(str::trim) {
        None => None,
        Some("") => Some(None),
        Some(a) => Some(Some(
            crate::service::notify::usable_address(a)
                .ok_or_else(|| {
                    ErrorCode::InvalidAlertRules
                        .with("alert_email: not an e-mail address a relay may be given")
                })?
                .to_string(),
        )),
    };
    let communes = body
        .communes
        .as_deref()
        .map(crate::domain::alert::Communes::new)
        .transpose()
        .map_err(|m| ErrorCode::InvalidAlertRules.with(m))?;
    let ctx = referent(state, caller, "structure.manage").await?;
    // A field left out keeps what is stored (decided by the one upsert,
    // not read here first: two référents at once lose nothing).
    let (set_email, alert_email) = match alert_email {
        Some(set) => (true, set),
        None => (false, None),
    };
    let (set_communes, communes) = match communes {
        Some(set) => (true, set),
        None => (false, Default::default()),
    };
    let entry = state
        .audit
        .record(record(state, caller, Some(&ctx), "alert.rules"))
        .await?;
    state
        .store
        .set_alert_rules(
            &ctx.structure.id,
            &AlertRulesRow {
                hours: rules.hours.as_text(),
                burst_max: i64::from(rules.burst_max),
                burst_minutes: i64::from(rules.burst_minutes),
                alert_email,
                communes,
            },
            set_email,
            set_communes,
            now,
        )
        .await?;
    Ok(Audited::new(entry, view(state, &ctx.structure.id).await?))
}
