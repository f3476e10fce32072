//! The noise of every number that leaves in aggregate form (BRIEF C12),
//! with cell-key stability: public statistics releases and partners'
//! aggregate extracts draw through [`stable_noise`].

use dashu::rational::RBig;
use serde_json::Value;

use crate::AppState;
use crate::crypto::keyset::KeySet;
use crate::domain::Timestamp;

/// The cell-key method (Eurostat), shared by releases and partners'
/// aggregate extracts: the noise of a cell is drawn once and stored under a
/// keyed digest of what identifies it (`cell`: its table or measure, its
/// contents and the noise scale); the same cell asked again gets the same
/// noise, so repeated requests cannot be averaged out. The noise is stored
/// masked by a keyed pad of its cell (one noise per cell, so the pad is
/// used once): the database alone, beside a released file, gives no exact
/// value.
pub async fn stable_noise(
    state: &AppState,
    keys: &KeySet,
    cell: Value,
    scale: &RBig,
    now: Timestamp,
) -> Result<i64, String> {
    let cell_id = keys.pseudonym("dp-cell", cell.to_string().as_bytes());
    let mask = keys
        .pseudonym("dp-mask", cell_id.as_bytes())
        .get(..16)
        .and_then(|x| u64::from_str_radix(x, 16).ok())
        .map(|m| m as i64)
        .ok_or_else(|| "noise_failed: mask".to_string())?;
    let drawn =
        crate::crypto::dp::discrete_laplace(scale).map_err(|e| format!("noise_failed: {e}"))?;
    let stored = state
        .store
        .stable_noise(&cell_id, drawn.wrapping_add(mask), now)
        .await
        .map_err(|e| e.to_string())?;
    Ok(stored.wrapping_sub(mask))
}
