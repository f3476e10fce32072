//! The key set: the KEK ring, the Ed25519 signing seed and the pseudonymisation key,
//! and their encrypted files in the keys directory.
//!
//! Owns: generating those keys, persisting each one age-encrypted to the unlock identity's
//! recipient, loading them back with permission checks, KEK rotation and retirement.
//! Must never: write a key in clear to disk, replace an existing key file, accept key files
//! or a keys directory that group or others can access, let key bytes reach `Debug`,
//! errors or logs, or retire the KEK that new wraps use.
//!
//! # On-disk layout
//!
//! The keys directory (mode 0700) holds, each mode 0600:
//! - `kek-v{N}.age` for every live KEK version N >= 1 (decimal, no leading zeros); the
//!   highest N is the current version;
//! - `signing.age`: the Ed25519 signing seed;
//! - `pseudonym.age`: the HMAC-SHA256 pseudonymisation key.
//!
//! Each file is a binary age v1 file (X25519 recipient = the unlock identity) whose payload
//! is exactly 46 bytes:
//!
//! | offset | len | field                                              |
//! |--------|-----|----------------------------------------------------|
//! | 0      | 6   | magic `COFFRE`                                     |
//! | 6      | 1   | payload format, `0x01`                             |
//! | 7      | 1   | kind: `0x01` KEK, `0x02` signing, `0x03` pseudonym  |
//! | 8      | 4   | KEK version, big-endian u32 (0 for the other kinds) |
//! | 12     | 2   | key length, big-endian u16, `32`                   |
//! | 14     | 32  | key bytes                                          |
//!
//! Kind and version sit inside the authenticated age payload so that renaming or swapping
//! files (`kek-v1.age` -> `kek-v2.age`, `signing.age` <-> `pseudonym.age`) is detected as
//! [`KeyError::Corrupt`] instead of silently using the wrong key.
//! Files named `.{name}.{random}.tmp` are leftovers of an interrupted write and are ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};
use zeroize::Zeroizing;

use super::{
    KeyError, UnlockIdentity, age_decrypt_with, age_encrypt_to, ensure_private_dir,
    read_private_file, sync_dir, write_new_private_file,
};

const KEY_LEN: usize = 32;
const MAGIC: &[u8; 6] = b"COFFRE";
const PAYLOAD_FORMAT_V1: u8 = 0x01;
const PAYLOAD_LEN: usize = 6 + 1 + 1 + 4 + 2 + KEY_LEN;
/// A real key file is ~250 bytes (age header + 46-byte payload + tag).
const MAX_KEY_FILE_LEN: usize = 16 * 1024;

const SIGNING_FILE: &str = "signing.age";
const PSEUDONYM_FILE: &str = "pseudonym.age";
const KEK_PREFIX: &str = "kek-v";
const AGE_SUFFIX: &str = ".age";

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Kek = 0x01,
    Signing = 0x02,
    Pseudonym = 0x03,
}

/// 32 secret bytes on the heap (so moves do not leave copies), zeroized on drop, and
/// printed as `[REDACTED]` by `secrecy`.
type Secret32 = SecretBox<[u8; KEY_LEN]>;

fn random_secret(rng: &SystemRandom) -> Result<Secret32, ring::error::Unspecified> {
    let mut key = SecretBox::new(Box::new([0u8; KEY_LEN]));
    rng.fill(key.expose_secret_mut())?;
    Ok(key)
}

/// One version of the key-encryption key (AES-256-GCM).
pub struct Kek {
    key: Secret32,
}

impl Kek {
    pub(super) fn bytes(&self) -> &[u8; KEY_LEN] {
        self.key.expose_secret()
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek { .. }")
    }
}

/// All long-lived secrets of a coffre instance, unlocked in memory.
pub struct KeySet {
    /// Invariant: never empty; the highest version is the current one.
    keks: BTreeMap<u32, Kek>,
    signing_seed: Secret32,
    signing_public: [u8; 32],
    pseudonym_key: Secret32,
    /// Recipient the on-disk files are encrypted to; `None` for in-memory key sets.
    /// Checked on rotation so a new KEK file is never written to a different identity
    /// than the rest of the set (which would make it unloadable).
    recipient: Option<String>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("kek_versions", &self.kek_versions())
            .field("current_kek_version", &self.current_kek_version())
            .field("signing_public_key", &hex::encode(self.signing_public))
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// Random keys (KEK v1, signing seed, pseudonym key) held only in memory; never
    /// touches the filesystem. For tests and benchmarks.
    pub fn generate_in_memory() -> Result<KeySet, KeyError> {
        let rng = SystemRandom::new();
        let rand = |_| KeyError::Random;
        let mut keks = BTreeMap::new();
        keks.insert(
            1,
            Kek {
                key: random_secret(&rng).map_err(rand)?,
            },
        );
        Self::assemble(
            keks,
            random_secret(&rng).map_err(rand)?,
            random_secret(&rng).map_err(rand)?,
            None,
        )
    }

    fn assemble(
        keks: BTreeMap<u32, Kek>,
        signing_seed: Secret32,
        pseudonym_key: Secret32,
        recipient: Option<String>,
    ) -> Result<KeySet, KeyError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(signing_seed.expose_secret())
            .map_err(|_| KeyError::InvalidSigningSeed)?;
        let mut signing_public = [0u8; 32];
        signing_public.copy_from_slice(pair.public_key().as_ref());
        Ok(KeySet {
            keks,
            signing_seed,
            signing_public,
            pseudonym_key,
            recipient,
        })
    }

    /// Creates the keys directory (0700) if needed and writes a fresh key set into it.
    /// Refuses if any key file is already present.
    pub fn init(dir: &Path, unlock: &UnlockIdentity) -> Result<KeySet, KeyError> {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| KeyError::io(dir, e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        if !Self::is_initialised(dir) {
            // A folder that holds no key yet (e.g. `keys/` of a fresh checkout,
            // which git creates 0755) is ours to tighten before keys go in.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| KeyError::io(dir, e))?;
        }
        ensure_private_dir(dir)?;
        if Self::is_initialised(dir) {
            return Err(KeyError::AlreadyInitialised {
                dir: dir.to_path_buf(),
            });
        }

        let mut set = Self::generate_in_memory()?;
        set.recipient = Some(unlock.recipient().to_string());
        // KEK last: a crash before it leaves a set that `load` reports as Missing rather
        // than one that looks usable. `link` no-clobber turns a concurrent init into
        // AlreadyInitialised instead of two sets mixing.
        let already = |e| match e {
            KeyError::FileExists { .. } => KeyError::AlreadyInitialised {
                dir: dir.to_path_buf(),
            },
            other => other,
        };
        write_key_file(
            dir,
            SIGNING_FILE,
            KeyKind::Signing,
            0,
            set.signing_seed.expose_secret(),
            unlock,
        )
        .map_err(already)?;
        write_key_file(
            dir,
            PSEUDONYM_FILE,
            KeyKind::Pseudonym,
            0,
            set.pseudonym_key.expose_secret(),
            unlock,
        )
        .map_err(already)?;
        for (version, kek) in &set.keks {
            write_key_file(
                dir,
                &kek_file_name(*version),
                KeyKind::Kek,
                *version,
                kek.bytes(),
                unlock,
            )
            .map_err(already)?;
        }
        tracing::info!(dir = %dir.display(), "initialised key set");
        Ok(set)
    }

    /// Loads and decrypts every key file in `dir`.
    pub fn load(dir: &Path, unlock: &UnlockIdentity) -> Result<KeySet, KeyError> {
        ensure_private_dir(dir)?;
        let versions = list_kek_versions(dir)?;
        if versions.is_empty() {
            return Err(KeyError::Missing {
                file: dir.join(format!("{KEK_PREFIX}*{AGE_SUFFIX}")),
            });
        }
        let signing_seed = read_key_file(dir, SIGNING_FILE, KeyKind::Signing, 0, unlock)?;
        let pseudonym_key = read_key_file(dir, PSEUDONYM_FILE, KeyKind::Pseudonym, 0, unlock)?;
        let mut keks = BTreeMap::new();
        for version in versions {
            let key = read_key_file(dir, &kek_file_name(version), KeyKind::Kek, version, unlock)?;
            keks.insert(version, Kek { key });
        }
        let set = Self::assemble(
            keks,
            signing_seed,
            pseudonym_key,
            Some(unlock.recipient().to_string()),
        )?;
        tracing::info!(
            dir = %dir.display(),
            kek_versions = ?set.kek_versions(),
            "loaded key set"
        );
        Ok(set)
    }

    /// True if any key file is present in `dir` (so exactly when `init` would refuse with
    /// `AlreadyInitialised`). A partially written set counts as initialised; `load` will
    /// then say which file is missing.
    pub fn is_initialised(dir: &Path) -> bool {
        let Ok(entries) = fs::read_dir(dir) else {
            return false;
        };
        entries.filter_map(Result::ok).any(|entry| {
            entry.file_name().to_str().is_some_and(|name| {
                name == SIGNING_FILE
                    || name == PSEUDONYM_FILE
                    || parse_kek_file_name(name).is_some()
            })
        })
    }

    /// Rotation: writes `kek-v{current+1}.age`, which becomes the current KEK for new
    /// wraps. Existing wrapped keys keep unwrapping with their own version.
    pub fn add_kek_version(
        &mut self,
        dir: &Path,
        unlock: &UnlockIdentity,
    ) -> Result<u32, KeyError> {
        let recipient = unlock.recipient().to_string();
        if self.recipient.as_ref().is_some_and(|r| *r != recipient) {
            return Err(KeyError::WrongUnlockIdentity);
        }
        ensure_private_dir(dir)?;
        let version = self
            .current_kek_version()
            .checked_add(1)
            .ok_or(KeyError::VersionExhausted)?;
        let key = random_secret(&SystemRandom::new()).map_err(|_| KeyError::Random)?;
        write_key_file(
            dir,
            &kek_file_name(version),
            KeyKind::Kek,
            version,
            key.expose_secret(),
            unlock,
        )?;
        self.keks.insert(version, Kek { key });
        tracing::info!(dir = %dir.display(), version, "added KEK version");
        Ok(version)
    }

    /// Deletes an old KEK version from disk and memory. The caller must have re-wrapped
    /// every data key under a newer version first: this cannot be checked here, and data
    /// keys still wrapped under `version` become unrecoverable.
    pub fn retire_kek_version(&mut self, dir: &Path, version: u32) -> Result<(), KeyError> {
        if version == self.current_kek_version() {
            return Err(KeyError::RetireCurrent { version });
        }
        if !self.keks.contains_key(&version) {
            return Err(KeyError::UnknownKekVersion { version });
        }
        ensure_private_dir(dir)?;
        let path = dir.join(kek_file_name(version));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(path = %path.display(), "retired KEK file was already absent");
            }
            Err(e) => return Err(KeyError::io(&path, e)),
        }
        sync_dir(dir)?;
        // Dropping the entry zeroizes the key.
        self.keks.remove(&version);
        tracing::info!(dir = %dir.display(), version, "retired KEK version");
        Ok(())
    }

    /// The version new data keys are wrapped under (the highest live version).
    pub fn current_kek_version(&self) -> u32 {
        self.keks.keys().next_back().copied().unwrap_or(0)
    }

    /// All live KEK versions, ascending.
    pub fn kek_versions(&self) -> Vec<u32> {
        self.keks.keys().copied().collect()
    }

    pub(super) fn kek(&self, version: u32) -> Option<&Kek> {
        self.keks.get(&version)
    }

    pub(super) fn pseudonym_key(&self) -> &[u8; KEY_LEN] {
        self.pseudonym_key.expose_secret()
    }

    /// An Ed25519 key pair built from the signing seed. Note that ring does not zeroize
    /// the pair on drop: keep it short-lived.
    pub fn signing_key_pair(&self) -> Result<Ed25519KeyPair, KeyError> {
        Ed25519KeyPair::from_seed_unchecked(self.signing_seed.expose_secret())
            .map_err(|_| KeyError::InvalidSigningSeed)
    }

    /// The raw 32-byte Ed25519 seed, for callers that build their own signer. Do not copy
    /// it into anything that is not zeroized.
    pub fn signing_seed(&self) -> &[u8; 32] {
        self.signing_seed.expose_secret()
    }

    pub fn signing_public_key(&self) -> [u8; 32] {
        self.signing_public
    }
}

fn kek_file_name(version: u32) -> String {
    format!("{KEK_PREFIX}{version}{AGE_SUFFIX}")
}

/// Only canonical names count, so `kek-v01.age` cannot shadow or alias `kek-v1.age`.
fn parse_kek_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(KEK_PREFIX)?.strip_suffix(AGE_SUFFIX)?;
    let version: u32 = digits.parse().ok()?;
    (version >= 1 && kek_file_name(version) == name).then_some(version)
}

fn list_kek_versions(dir: &Path) -> Result<Vec<u32>, KeyError> {
    let mut versions = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| KeyError::io(dir, e))? {
        let entry = entry.map_err(|e| KeyError::io(dir, e))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            tracing::warn!(dir = %dir.display(), "ignoring non-UTF-8 file name in keys dir");
            continue;
        };
        if let Some(version) = parse_kek_file_name(name) {
            versions.push(version);
        } else if name.starts_with('.') && name.ends_with(".tmp") {
            tracing::warn!(file = name, "ignoring leftover temp file in keys dir");
        } else if matches!(
            name,
            "README.md" | ".gitignore" | "unlock.key" | super::custodians::MANIFEST_FILE
        ) {
            // Expected neighbours: the folder's docs, the demo's unlock
            // identity, the custodians' public manifest.
        } else if name != SIGNING_FILE && name != PSEUDONYM_FILE {
            tracing::warn!(file = name, "ignoring unexpected file in keys dir");
        }
    }
    versions.sort_unstable();
    Ok(versions)
}

fn encode_payload(kind: KeyKind, version: u32, key: &[u8; KEY_LEN]) -> Zeroizing<Vec<u8>> {
    // Exact capacity: no reallocation, hence no stray copy of the key.
    let mut payload = Zeroizing::new(Vec::with_capacity(PAYLOAD_LEN));
    payload.extend_from_slice(MAGIC);
    payload.push(PAYLOAD_FORMAT_V1);
    payload.push(kind as u8);
    payload.extend_from_slice(&version.to_be_bytes());
    payload.extend_from_slice(&(KEY_LEN as u16).to_be_bytes());
    payload.extend_from_slice(key);
    payload
}

fn decode_payload(payload: &[u8], kind: KeyKind, version: u32) -> Option<Secret32> {
    if payload.len() != PAYLOAD_LEN
        || payload.get(0..6)? != MAGIC
        || *payload.get(6)? != PAYLOAD_FORMAT_V1
        || *payload.get(7)? != kind as u8
        || payload.get(8..12)? != version.to_be_bytes()
        || payload.get(12..14)? != (KEY_LEN as u16).to_be_bytes()
    {
        return None;
    }
    let mut key = SecretBox::new(Box::new([0u8; KEY_LEN]));
    key.expose_secret_mut()
        .copy_from_slice(payload.get(14..14 + KEY_LEN)?);
    Some(key)
}

fn write_key_file(
    dir: &Path,
    name: &str,
    kind: KeyKind,
    version: u32,
    key: &[u8; KEY_LEN],
    unlock: &UnlockIdentity,
) -> Result<PathBuf, KeyError> {
    let payload = encode_payload(kind, version, key);
    let ciphertext = age_encrypt_to(&unlock.recipient(), &payload, &dir.join(name))?;
    write_new_private_file(dir, name, &ciphertext)
}

fn read_key_file(
    dir: &Path,
    name: &str,
    kind: KeyKind,
    version: u32,
    unlock: &UnlockIdentity,
) -> Result<Secret32, KeyError> {
    let path = dir.join(name);
    let ciphertext = read_private_file(&path, MAX_KEY_FILE_LEN)?;
    let payload = age_decrypt_with(&ciphertext, unlock, PAYLOAD_LEN)
        .ok_or_else(|| KeyError::Undecryptable { file: path.clone() })?;
    decode_payload(&payload, kind, version).ok_or(KeyError::Corrupt { file: path })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::crypto::{CryptoError, DataKey, SealContext, generate_unlock_identity, open, seal};
    use base64::Engine;

    struct Fixture {
        _tmp: tempfile::TempDir,
        keys: PathBuf,
        unlock: UnlockIdentity,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let unlock = generate_unlock_identity(&tmp.path().join("unlock.txt")).unwrap();
        Fixture {
            keys: tmp.path().join("keys"),
            _tmp: tmp,
            unlock,
        }
    }

    fn ctx(record: &str) -> SealContext<'_> {
        SealContext {
            resident_id: "resident-1",
            category: "health",
            record_id: record,
            version: 1,
            provenance: None,
        }
    }

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn init_then_load_round_trip() {
        let f = fixture();
        assert!(!KeySet::is_initialised(&f.keys));
        let created = KeySet::init(&f.keys, &f.unlock).unwrap();
        assert!(KeySet::is_initialised(&f.keys));

        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&f.keys), 0o700);
        let mut names: Vec<String> = fs::read_dir(&f.keys)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["kek-v1.age", "pseudonym.age", "signing.age"]);
        for name in &names {
            assert_eq!(mode(&f.keys.join(name)), 0o600, "{name}");
        }

        let loaded = KeySet::load(&f.keys, &f.unlock).unwrap();
        assert_eq!(loaded.kek_versions(), vec![1]);
        assert_eq!(loaded.current_kek_version(), 1);
        assert_eq!(loaded.signing_public_key(), created.signing_public_key());
        assert_eq!(loaded.signing_seed(), created.signing_seed());
        assert_eq!(
            loaded.kek(1).unwrap().bytes(),
            created.kek(1).unwrap().bytes()
        );
        assert_eq!(loaded.pseudonym("d", b"v"), created.pseudonym("d", b"v"));
        let pair = loaded.signing_key_pair().unwrap();
        assert_eq!(pair.public_key().as_ref(), &loaded.signing_public_key());
    }

    #[test]
    fn init_refuses_existing_set() {
        let f = fixture();
        KeySet::init(&f.keys, &f.unlock).unwrap();
        assert!(matches!(
            KeySet::init(&f.keys, &f.unlock),
            Err(KeyError::AlreadyInitialised { .. })
        ));
        // Even one stray key file blocks init.
        let g = fixture();
        fs::create_dir(&g.keys).unwrap();
        set_mode(&g.keys, 0o700);
        fs::write(g.keys.join("kek-v7.age"), b"x").unwrap();
        assert!(matches!(
            KeySet::init(&g.keys, &g.unlock),
            Err(KeyError::AlreadyInitialised { .. })
        ));
    }

    #[test]
    fn sealed_values_survive_reload() {
        let f = fixture();
        let set = KeySet::init(&f.keys, &f.unlock).unwrap();
        let dk = DataKey::generate().unwrap();
        let wrapped = set.wrap_data_key("resident-1", &dk).unwrap();
        let sealed = seal(&dk, &ctx("r1"), b"blood type: O+").unwrap();
        drop((set, dk));

        let set = KeySet::load(&f.keys, &f.unlock).unwrap();
        let dk = set.unwrap_data_key("resident-1", &wrapped).unwrap();
        assert_eq!(open(&dk, &ctx("r1"), &sealed).unwrap(), b"blood type: O+");
    }

    #[test]
    fn group_or_world_access_is_refused() {
        let f = fixture();
        KeySet::init(&f.keys, &f.unlock).unwrap();
        for name in ["signing.age", "pseudonym.age", "kek-v1.age"] {
            let path = f.keys.join(name);
            set_mode(&path, 0o644);
            match KeySet::load(&f.keys, &f.unlock) {
                Err(KeyError::InsecurePermissions { path: p }) => assert_eq!(p, path),
                other => panic!("{name}: expected InsecurePermissions, got {other:?}"),
            }
            set_mode(&path, 0o600);
        }
        set_mode(&f.keys, 0o755);
        match KeySet::load(&f.keys, &f.unlock) {
            Err(KeyError::InsecurePermissions { path }) => assert_eq!(path, f.keys),
            other => panic!("expected InsecurePermissions, got {other:?}"),
        }
        set_mode(&f.keys, 0o700);
        KeySet::load(&f.keys, &f.unlock).unwrap();
    }

    #[test]
    fn wrong_unlock_identity_is_undecryptable() {
        let f = fixture();
        KeySet::init(&f.keys, &f.unlock).unwrap();
        let other = fixture();
        match KeySet::load(&f.keys, &other.unlock) {
            Err(KeyError::Undecryptable { .. }) => {}
            other => panic!("expected Undecryptable, got {other:?}"),
        }
    }

    #[test]
    fn tampered_or_missing_or_swapped_files_are_refused() {
        let f = fixture();
        KeySet::init(&f.keys, &f.unlock).unwrap();
        let signing = f.keys.join("signing.age");
        let pseudonym = f.keys.join("pseudonym.age");
        let original = fs::read(&signing).unwrap();

        // A flipped byte in the payload fails age's authentication.
        let mut tampered = original.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        fs::write(&signing, &tampered).unwrap();
        assert!(matches!(
            KeySet::load(&f.keys, &f.unlock),
            Err(KeyError::Undecryptable { file }) if file == signing
        ));

        // The pseudonym key copied over the signing file decrypts but is the wrong kind.
        fs::write(&signing, fs::read(&pseudonym).unwrap()).unwrap();
        assert!(matches!(
            KeySet::load(&f.keys, &f.unlock),
            Err(KeyError::Corrupt { file }) if file == signing
        ));

        fs::remove_file(&signing).unwrap();
        assert!(matches!(
            KeySet::load(&f.keys, &f.unlock),
            Err(KeyError::Missing { file }) if file == signing
        ));
        fs::write(&signing, &original).unwrap();
        // fs::write created it with the umask's 0644: refused until tightened.
        assert!(matches!(
            KeySet::load(&f.keys, &f.unlock),
            Err(KeyError::InsecurePermissions { .. })
        ));
        set_mode(&signing, 0o600);
        KeySet::load(&f.keys, &f.unlock).unwrap();

        // A KEK file renamed to another version is caught by the version binding.
        fs::rename(f.keys.join("kek-v1.age"), f.keys.join("kek-v2.age")).unwrap();
        assert!(matches!(
            KeySet::load(&f.keys, &f.unlock),
            Err(KeyError::Corrupt { .. })
        ));
        fs::remove_file(f.keys.join("kek-v2.age")).unwrap();
        assert!(matches!(
            KeySet::load(&f.keys, &f.unlock),
            Err(KeyError::Missing { .. })
        ));
    }

    #[test]
    fn rotation_and_retirement() {
        let f = fixture();
        let mut set = KeySet::init(&f.keys, &f.unlock).unwrap();
        let dk = DataKey::generate().unwrap();
        let old = set.wrap_data_key("resident-1", &dk).unwrap();
        assert_eq!(old.kek_version, 1);

        assert_eq!(set.add_kek_version(&f.keys, &f.unlock).unwrap(), 2);
        assert_eq!(set.current_kek_version(), 2);
        assert_eq!(set.kek_versions(), vec![1, 2]);

        // Old wraps still open; new wraps use v2.
        let dk_again = set.unwrap_data_key("resident-1", &old).unwrap();
        let sealed = seal(&dk, &ctx("r"), b"x").unwrap();
        assert_eq!(open(&dk_again, &ctx("r"), &sealed).unwrap(), b"x");
        let rewrapped = set.wrap_data_key("resident-1", &dk_again).unwrap();
        assert_eq!(rewrapped.kek_version, 2);

        // Retiring the current version is refused, and so is an unknown one.
        assert!(matches!(
            set.retire_kek_version(&f.keys, 2),
            Err(KeyError::RetireCurrent { version: 2 })
        ));
        assert!(matches!(
            set.retire_kek_version(&f.keys, 9),
            Err(KeyError::UnknownKekVersion { version: 9 })
        ));

        set.retire_kek_version(&f.keys, 1).unwrap();
        assert_eq!(set.kek_versions(), vec![2]);
        assert!(!f.keys.join("kek-v1.age").exists());
        assert_eq!(
            set.unwrap_data_key("resident-1", &old).unwrap_err(),
            CryptoError::UnknownKekVersion { version: 1 }
        );

        // The reloaded set agrees, and the next rotation is v3.
        let mut reloaded = KeySet::load(&f.keys, &f.unlock).unwrap();
        assert_eq!(reloaded.kek_versions(), vec![2]);
        let dk3 = reloaded.unwrap_data_key("resident-1", &rewrapped).unwrap();
        assert_eq!(open(&dk3, &ctx("r"), &sealed).unwrap(), b"x");
        assert!(matches!(
            reloaded.retire_kek_version(&f.keys, 2),
            Err(KeyError::RetireCurrent { version: 2 })
        ));
        assert_eq!(reloaded.add_kek_version(&f.keys, &f.unlock).unwrap(), 3);
    }

    #[test]
    fn rotation_refuses_other_identity_and_existing_file() {
        let f = fixture();
        let mut set = KeySet::init(&f.keys, &f.unlock).unwrap();
        let other = fixture();
        assert!(matches!(
            set.add_kek_version(&f.keys, &other.unlock),
            Err(KeyError::WrongUnlockIdentity)
        ));
        // Another process rotated first: never overwrite its KEK.
        let mut racer = KeySet::load(&f.keys, &f.unlock).unwrap();
        racer.add_kek_version(&f.keys, &f.unlock).unwrap();
        let theirs = fs::read(f.keys.join("kek-v2.age")).unwrap();
        assert!(matches!(
            set.add_kek_version(&f.keys, &f.unlock),
            Err(KeyError::FileExists { .. })
        ));
        assert_eq!(fs::read(f.keys.join("kek-v2.age")).unwrap(), theirs);
        assert_eq!(set.kek_versions(), vec![1]);
    }

    #[test]
    fn key_files_hold_no_secret_in_clear() {
        let f = fixture();
        let mut set = KeySet::init(&f.keys, &f.unlock).unwrap();
        set.add_kek_version(&f.keys, &f.unlock).unwrap();
        let mut secrets: Vec<[u8; 32]> = set.keks.values().map(|k| *k.bytes()).collect();
        secrets.push(*set.signing_seed());
        secrets.push(*set.pseudonym_key());

        let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        for entry in fs::read_dir(&f.keys).unwrap() {
            let raw = fs::read(entry.unwrap().path()).unwrap();
            for s in &secrets {
                assert!(!contains(&raw, s));
                assert!(!contains(&raw, hex::encode(s).as_bytes()));
                let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(s);
                assert!(!contains(&raw, b64.as_bytes()));
            }
        }
        // Nor does Debug.
        let debug = format!("{set:?}");
        for s in &secrets {
            assert!(!debug.contains(&hex::encode(s)));
        }
        assert!(debug.contains(&hex::encode(set.signing_public_key())));
    }

    #[test]
    fn kek_file_names_are_canonical() {
        assert_eq!(parse_kek_file_name("kek-v1.age"), Some(1));
        assert_eq!(parse_kek_file_name("kek-v4294967295.age"), Some(u32::MAX));
        for bad in [
            "kek-v0.age",
            "kek-v01.age",
            "kek-v+1.age",
            "kek-v1.age.tmp",
            "kek-v.age",
        ] {
            assert_eq!(parse_kek_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn in_memory_set_writes_nothing() {
        let a = KeySet::generate_in_memory().unwrap();
        let b = KeySet::generate_in_memory().unwrap();
        assert_eq!(a.kek_versions(), vec![1]);
        assert_ne!(a.signing_public_key(), b.signing_public_key());
        assert_ne!(a.pseudonym("d", b"v"), b.pseudonym("d", b"v"));
    }
}
