//! A resident's own data: read, correct (a new version each time, history
//! kept, recipients told), erase. Only the resident themself: the decision
//! refuses anyone else `resident_only`, recorded.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::domain::Timestamp;
use crate::domain::category::Category;
use crate::error::AppResult;
use crate::service::access::own_data;
use crate::service::rights::{Change, apply_with_notices, rectify};
use crate::service::vault::{RecordView, Vault, VaultError};
use crate::service::{Audited, Caller};

fn known_category(vault: &Vault, name: &str) -> AppResult<Category> {
    Ok(vault
        .categories()
        .category(name)
        .map_err(VaultError::from)?)
}

#[derive(Serialize, ToSchema)]
pub struct MyData {
    /// The latest version of each category held.
    pub records: Vec<RecordView>,
}

#[derive(Serialize, ToSchema)]
pub struct MyCategory {
    pub category: String,
    /// The latest version, if any.
    pub current: Option<RecordView>,
    /// Every version, newest first (rectification history, GDPR art. 16).
    pub history: Vec<RecordView>,
}

#[derive(Serialize, ToSchema)]
pub struct Erased {
    pub erased: bool,
    /// Partners that had received my data and were told (art. 19).
    pub notified_partners: Vec<String>,
}

/// A new version of a category, and the partners told of it (art. 19).
pub struct Rectified {
    pub record: RecordView,
    pub notified: Vec<String>,
}

/// Everything the vault holds about me (the latest version of each
/// category). Without keys: refused before anything is recorded.
pub async fn my_data(state: &AppState, caller: &Caller) -> AppResult<Audited<MyData>> {
    let vault = state.vault()?;
    let entry = own_data(state, caller, "data.read", None).await?;
    let me = caller.resident_id()?;
    let records = vault.read_current(&me).await?;
    Ok(Audited::new(entry, MyData { records }))
}

/// One category of my data, with its history of corrections.
pub async fn my_category(
    state: &AppState,
    caller: &Caller,
    category: &str,
) -> AppResult<Audited<MyCategory>> {
    let vault = state.vault()?;
    let category = known_category(&vault, category)?;
    let entry = own_data(state, caller, "data.read", Some(category.as_str())).await?;
    let me = caller.resident_id()?;
    let history = vault.read_history(&me, &category).await?;
    Ok(Audited::new(
        entry,
        MyCategory {
            category: category.as_str().to_string(),
            current: history.first().cloned(),
            history,
        },
    ))
}

/// Stores a new version of one of my categories. Earlier versions are
/// kept; refused values change nothing, not even the audit log; partners
/// that received the category are told (the notice is written with the
/// new version, or neither is).
pub async fn rectify_own(
    state: &AppState,
    caller: &Caller,
    category: &str,
    fields: &Value,
    now: Timestamp,
) -> AppResult<Audited<Rectified>> {
    let vault = state.vault()?;
    let category = known_category(&vault, category)?;
    // Bad input is refused before anything, including the audit log, changes.
    vault
        .categories()
        .validate(&category, fields)
        .map_err(VaultError::from)?;
    let entry = own_data(state, caller, "data.write", Some(category.as_str())).await?;
    let me = caller.resident_id()?;
    let (record, notified) = rectify(state, &me, &category, fields, now).await?;
    tracing::info!(resident = %me, category = category.as_str(), version = record.version, "record rectified");
    Ok(Audited::new(entry, Rectified { record, notified }))
}

/// Erases all my data now: my data key is destroyed (crypto-shredding), my
/// records deleted and my sessions ended; the partners that received my
/// data are told. The audit log keeps only identifiers.
pub async fn erase_own(
    state: &AppState,
    caller: &Caller,
    now: Timestamp,
) -> AppResult<Audited<Erased>> {
    // Keys unavailable: refused before anything is recorded or changed.
    state.vault()?;
    let entry = own_data(state, caller, "erasure", None).await?;
    let me = caller.resident_id()?;
    let applied = apply_with_notices(state, &me, Change::Erasure, now).await?;
    tracing::info!(resident = %me, erased = applied.erased, "erasure");
    Ok(Audited::new(
        entry,
        Erased {
            erased: applied.erased,
            notified_partners: applied.notified,
        },
    ))
}
