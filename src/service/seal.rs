//! Sealing: a process whose key set is held by custodians starts sealed,
//! and opens its vault once K custodians have each submitted their share
//! (over the local admin socket, never over HTTP); `coffre seal` closes
//! it again. While sealed, every data route answers 503 `sealed`, audited.
//!
//! Owns: what the process's vault is right now ([`VaultSlot`]: open,
//! sealed, or unavailable and why), the shares received so far, and the
//! use cases: submitting a share, sealing, the refusal of a request while
//! sealed, a rotation inside the unsealed process, the status.
//!
//! Each process seals and unseals on its own (several processes sharing
//! PostgreSQL are each unsealed, as Vault's nodes are): the only state
//! here that changes inside a process, by design, and none of it is a
//! fact a decision reads.
//!
//! Never: keep a share after the identity is rebuilt; write the identity;
//! act before the act is audited (a share whose entry cannot be written
//! is refused and not kept).

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::AppState;
use crate::audit::AuditRecord;
use crate::crypto::LiveKeys;
use crate::crypto::custodians::{Manifest, Refusal, Unsealing};
use crate::domain::Timestamp;
use crate::error::{AppError, ErrorCode};
use crate::service::vault::Vault;

/// What a process starts with.
pub enum VaultAtStart {
    /// The single-file identity opened the key set.
    Loaded(Arc<LiveKeys>),
    /// The key set is held by custodians: start sealed.
    Sealed {
        manifest: Manifest,
        keys_dir: PathBuf,
    },
    /// The keys could not be loaded; the one-line reason.
    Unavailable(String),
}

impl From<Result<Arc<LiveKeys>, String>> for VaultAtStart {
    fn from(keys: Result<Arc<LiveKeys>, String>) -> Self {
        match keys {
            Ok(k) => VaultAtStart::Loaded(k),
            Err(reason) => VaultAtStart::Unavailable(reason),
        }
    }
}

/// The process's vault right now.
pub(crate) enum VaultSlot {
    Open(Arc<Vault>),
    Sealed,
    Unavailable(String),
}

/// The custodians' side of a process: the manifest's shares received so
/// far. Present only when the key set is held by custodians.
pub struct Custodians {
    keys_dir: PathBuf,
    /// One submission at a time, held across its audit write.
    unsealing: tokio::sync::Mutex<Unsealing>,
    verifier_key: String,
    /// The second whose first refusal while sealed was audited: at most
    /// one `request.sealed` entry a second, so that anyone on the network
    /// cannot fill the log (and the writer's queue the custodians' entries
    /// wait in) while the service is sealed.
    last_refusal_audited: std::sync::atomic::AtomicI64,
    /// One rotation at a time.
    rotating: tokio::sync::Mutex<()>,
}

impl Custodians {
    pub(crate) fn new(manifest: Manifest, keys_dir: PathBuf) -> Self {
        let verifier_key = manifest.verifier_key.clone();
        Self {
            keys_dir,
            unsealing: tokio::sync::Mutex::new(Unsealing::new(manifest)),
            verifier_key,
            last_refusal_audited: std::sync::atomic::AtomicI64::new(i64::MIN),
            rotating: tokio::sync::Mutex::new(()),
        }
    }

    /// The checkpoint verifier key the manifest publishes.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }
}

/// The answer of every admin-socket command.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SealStatus {
    pub sealed: bool,
    /// The key set is held by custodians (else by one identity file).
    pub custodians: bool,
    /// Shares received towards the next unseal.
    pub shares: usize,
    pub threshold: usize,
}

/// Why an admin command did nothing.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("this key set is not held by custodians: there is nothing to unseal")]
    NotCustodians,
    #[error("the vault is already unsealed")]
    AlreadyUnsealed,
    #[error("the vault is sealed: unseal it first")]
    Sealed,
    #[error("share refused: {}", .0.as_str())]
    Refused(Refusal),
    #[error("refused: the audit log cannot record it ({0})")]
    Unaudited(String),
    #[error("the key set did not open with the rebuilt identity: {0}")]
    Keys(String),
    #[error("rotation stopped (run it again to resume): {0}")]
    Rotation(String),
}

impl SealError {
    /// A stable code for the admin socket's answers.
    pub fn code(&self) -> &'static str {
        match self {
            SealError::NotCustodians => "not_custodians",
            SealError::AlreadyUnsealed => "already_unsealed",
            SealError::Sealed => "sealed",
            SealError::Refused(r) => r.as_str(),
            SealError::Unaudited(_) => "audit_unavailable",
            SealError::Keys(_) => "keys_unavailable",
            SealError::Rotation(_) => "rotation_failed",
        }
    }
}

/// The actor of a custodian's entries: their name from the manifest, or
/// `unknown` when the submission named none.
fn custodian_record(name: Option<&str>, action: &str, now: Timestamp) -> AuditRecord {
    AuditRecord::new(name.unwrap_or("unknown"), "custodian", action, now)
}

pub async fn status(state: &AppState) -> SealStatus {
    let (shares, threshold) = match &state.custodians {
        Some(c) => c.unsealing.lock().await.progress(),
        None => (0, 0),
    };
    SealStatus {
        sealed: state.is_sealed(),
        custodians: state.custodians.is_some(),
        shares,
        threshold,
    }
}

/// A custodian submits their share (the plaintext payload of their share
/// file). Checked, then audited (accepted or refused, with the
/// custodian's name, never the share), then kept; the K-th opens the
/// vault and every share is wiped.
pub async fn submit_share(
    state: &AppState,
    submitted: &[u8],
    now: Timestamp,
) -> Result<SealStatus, SealError> {
    let custodians = state.custodians.as_ref().ok_or(SealError::NotCustodians)?;
    let mut unsealing = custodians.unsealing.lock().await;
    if !state.is_sealed() {
        return Err(SealError::AlreadyUnsealed);
    }
    let checked = match unsealing.check(submitted) {
        Ok(c) => c,
        Err((name, refusal)) => {
            let entry =
                custodian_record(name.as_deref(), "vault.unseal_share", now).deny(refusal.as_str());
            state
                .audit
                .record(entry)
                .await
                .map_err(|e| SealError::Unaudited(e.to_string()))?;
            tracing::warn!(
                custodian = name.as_deref().unwrap_or("unknown"),
                reason = refusal.as_str(),
                "unseal share refused"
            );
            return Err(SealError::Refused(refusal));
        }
    };
    let custodian = checked.custodian.clone();
    if !checked.completes() {
        let entry =
            custodian_record(Some(&custodian), "vault.unseal_share", now).allow("share_accepted");
        state
            .audit
            .record(entry)
            .await
            .map_err(|e| SealError::Unaudited(e.to_string()))?;
        unsealing.accept(checked);
        let (shares, threshold) = unsealing.progress();
        tracing::info!(custodian, shares, threshold, "unseal share accepted");
        return Ok(SealStatus {
            sealed: true,
            custodians: true,
            shares,
            threshold,
        });
    }
    // The K-th share: the key set must open with the rebuilt identity
    // before the unseal is recorded as done.
    let Some(identity) = unsealing.accept(checked) else {
        return Err(SealError::Refused(Refusal::Reconstruction));
    };
    let keys = match LiveKeys::unsealed(custodians.keys_dir.clone(), identity)
        .map_err(|e| e.to_string())
        .and_then(|k| {
            // The manifest (a file the service can write) publishes the
            // verifier key a sealed process serves: it must be the one the
            // signing key gives, or the manifest was altered.
            let derived = crate::audit::note::NoteSigner::from_seed(
                &state.config.audit_log_name,
                k.current().signing_seed(),
            )
            .map_err(|e| e.to_string())?
            .verifier_key();
            if derived != custodians.verifier_key {
                return Err(
                    "the custodians manifest's verifier key is not the signing key's (altered manifest, or another audit_log_name)".to_string(),
                );
            }
            Ok(k)
        }) {
        Ok(k) => Arc::new(k),
        Err(e) => {
            let entry =
                custodian_record(Some(&custodian), "vault.unseal", now).deny("keys_unavailable");
            // The shares are already wiped: the custodians start again.
            if let Err(a) = state.audit.record(entry).await {
                tracing::error!(error = %a, "the failed unseal could not be audited");
            }
            tracing::error!(error = %e, "unseal: the key set did not open");
            return Err(SealError::Keys(e));
        }
    };
    let entry = custodian_record(Some(&custodian), "vault.unseal", now).allow("threshold_reached");
    state
        .audit
        .record(entry)
        .await
        .map_err(|e| SealError::Unaudited(e.to_string()))?;
    let vault = Arc::new(Vault::new(
        state.store.clone(),
        keys,
        state.categories.clone(),
        state.metrics.clone(),
    ));
    if let Err(e) = vault.register_kek_versions(now).await {
        tracing::warn!(error = %e, "unsealed, but KEK versions not registered yet");
    }
    state.set_vault(VaultSlot::Open(vault));
    tracing::info!(custodian, "vault unsealed");
    Ok(SealStatus {
        sealed: false,
        custodians: true,
        shares: 0,
        threshold: unsealing.progress().1,
    })
}

/// `coffre seal`: the protective act, so it never waits and never fails
/// to seal: the vault and the identity are dropped first (their keys
/// zeroize once the requests in flight that hold them finish), any share
/// received is wiped, then the act is audited; an audit failure is
/// reported, the process stays sealed.
pub async fn seal(state: &AppState, now: Timestamp) -> Result<SealStatus, SealError> {
    let custodians = state.custodians.as_ref().ok_or(SealError::NotCustodians)?;
    state.set_vault(VaultSlot::Sealed);
    tracing::warn!("vault sealed");
    let threshold = {
        let mut unsealing = custodians.unsealing.lock().await;
        unsealing.clear();
        unsealing.progress().1
    };
    let entry = AuditRecord::new("admin-socket", "operator", "vault.seal", now).allow("operator");
    match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        state.audit.record(entry),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(SealError::Unaudited(format!("sealed, but {e}"))),
        Err(_) => {
            return Err(SealError::Unaudited(
                "sealed, but the audit log did not answer in 10 s".into(),
            ));
        }
    }
    Ok(SealStatus {
        sealed: true,
        custodians: true,
        shares: 0,
        threshold,
    })
}

/// A request that needs the vault reached a sealed process: answered 503
/// `sealed`; the first refusal of each second is audited (the others are
/// logged), so that the log records that the sealed service was asked
/// without letting anyone on the network write to it at will. The caller is not identified (sessions and
/// tokens need the keys); the request id ties the entry to the logs.
pub async fn refuse_sealed(state: &AppState, request_id: Option<&str>, now: Timestamp) -> AppError {
    if let Some(c) = &state.custodians
        && c.last_refusal_audited
            .swap(now, std::sync::atomic::Ordering::Relaxed)
            == now
    {
        tracing::debug!(
            request_id,
            "request refused while sealed (this second's first refusal is audited)"
        );
        return ErrorCode::Sealed.into();
    }
    let entry = AuditRecord::new("unknown", "anonymous", "request.sealed", now)
        .deny("sealed")
        .request(request_id);
    if let Err(e) = state.audit.record(entry).await {
        tracing::error!(error = %e, "a request refused while sealed could not be audited");
        return ErrorCode::AuditUnavailable.into();
    }
    ErrorCode::Sealed.into()
}

/// `coffre keys rotate` against an unsealed process holding custodians'
/// keys: the rotation runs here, with the identity this process holds.
pub async fn rotate(
    state: &AppState,
    batch: i64,
    now: Timestamp,
) -> Result<crate::service::vault::RotationReport, SealError> {
    let custodians = state.custodians.as_ref().ok_or(SealError::NotCustodians)?;
    let _one_at_a_time = custodians.rotating.lock().await;
    let vault = state.vault().map_err(|_| SealError::Sealed)?;
    let (dir, identity) = vault
        .keys()
        .held_identity()
        .ok_or(SealError::NotCustodians)?;
    let entry = AuditRecord::new("admin-socket", "operator", "keys.rotate", now).allow("operator");
    state
        .audit
        .record(entry)
        .await
        .map_err(|e| SealError::Unaudited(e.to_string()))?;
    let mut set =
        crate::crypto::KeySet::load(&dir, &identity).map_err(|e| SealError::Keys(e.to_string()))?;
    let report = crate::service::vault::rotate(
        &state.store,
        &mut set,
        &dir,
        &identity,
        batch,
        now,
        |_, _| {},
    )
    .await
    .map_err(|e| SealError::Rotation(e.to_string()))?;
    vault
        .keys()
        .reload()
        .map_err(|e| SealError::Keys(e.to_string()))?;
    Ok(report)
}
