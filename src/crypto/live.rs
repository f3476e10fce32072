//! The key set a running process uses, and how it follows rotations made by
//! another process (`coffre keys rotate`): when a data key names a KEK
//! version this process does not hold, it re-reads the keys folder once.
//!
//! Never hands out key bytes; callers get wrap/unwrap/sign operations.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::{
    CryptoError, DataKey, KeyError, KeySet, UnlockIdentity, WrappedDataKey, read_unlock_identity,
};

pub struct LiveKeys {
    set: RwLock<Arc<KeySet>>,
    /// Where to reload from; `None` for an in-memory set (tests, benchmarks).
    source: Option<(PathBuf, Unlock)>,
}

/// What opens the keys folder again on a reload.
enum Unlock {
    /// The single-file identity, re-read each time.
    File(PathBuf),
    /// The identity the custodians' shares rebuilt: held in memory while
    /// unsealed (it zeroizes on drop), never written.
    Held(Arc<UnlockIdentity>),
}

impl std::fmt::Debug for LiveKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveKeys")
            .field("set", &self.current())
            .finish()
    }
}

impl LiveKeys {
    pub fn in_memory(set: KeySet) -> Self {
        Self {
            set: RwLock::new(Arc::new(set)),
            source: None,
        }
    }

    /// Loads the key set from `dir`, decrypting it with the unlock identity
    /// at `unlock_path`.
    pub fn load(dir: PathBuf, unlock_path: PathBuf) -> Result<Self, KeyError> {
        let unlock = read_unlock_identity(&unlock_path)?;
        let set = KeySet::load(&dir, &unlock)?;
        Ok(Self {
            set: RwLock::new(Arc::new(set)),
            source: Some((dir, Unlock::File(unlock_path))),
        })
    }

    /// Loads the key set from `dir` with an identity the custodians'
    /// shares rebuilt; the identity is kept (in memory only) to follow
    /// rotations and to rotate.
    pub fn unsealed(dir: PathBuf, unlock: UnlockIdentity) -> Result<Self, KeyError> {
        let set = KeySet::load(&dir, &unlock)?;
        Ok(Self {
            set: RwLock::new(Arc::new(set)),
            source: Some((dir, Unlock::Held(Arc::new(unlock)))),
        })
    }

    /// The identity this process holds, when custodians unsealed it (for a
    /// rotation run inside the process).
    pub(crate) fn held_identity(&self) -> Option<(PathBuf, Arc<UnlockIdentity>)> {
        match &self.source {
            Some((dir, Unlock::Held(id))) => Some((dir.clone(), id.clone())),
            _ => None,
        }
    }

    pub fn current(&self) -> Arc<KeySet> {
        // A poisoned lock only means a panic elsewhere while swapping Arcs;
        // the Arc inside is still a complete key set.
        match self.set.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-reads the keys folder (after a rotation by another process).
    pub fn reload(&self) -> Result<(), KeyError> {
        let fresh = match &self.source {
            None => return Ok(()),
            Some((dir, Unlock::File(path))) => {
                Arc::new(KeySet::load(dir, &read_unlock_identity(path)?)?)
            }
            Some((dir, Unlock::Held(unlock))) => Arc::new(KeySet::load(dir, unlock)?),
        };
        tracing::info!(versions = ?fresh.kek_versions(), "key set reloaded");
        match self.set.write() {
            Ok(mut g) => *g = fresh,
            Err(p) => *p.into_inner() = fresh,
        }
        Ok(())
    }

    /// A key set holding KEK `version`, reloading once if needed.
    pub fn with_version(&self, version: u32) -> Result<Arc<KeySet>, CryptoError> {
        let set = self.current();
        if set.kek_versions().contains(&version) {
            return Ok(set);
        }
        if let Err(e) = self.reload() {
            tracing::error!(error = %e, "key set reload failed");
        }
        let set = self.current();
        if set.kek_versions().contains(&version) {
            Ok(set)
        } else {
            Err(CryptoError::UnknownKekVersion { version })
        }
    }

    pub fn unwrap_data_key(
        &self,
        resident_id: &str,
        wrapped: &WrappedDataKey,
    ) -> Result<DataKey, CryptoError> {
        self.with_version(wrapped.kek_version)?
            .unwrap_data_key(resident_id, wrapped)
    }
}
