//! Custodians: the unlock identity split into N Shamir shares, any K of
//! which rebuild it, so that no single person (and no single disk) can
//! open the vault.
//!
//! Owns: the custodians file (`name age1…` per line), splitting a fresh
//! unlock identity (never written anywhere) into shares over GF(256)
//! (`vsss-rs`), each share age-encrypted to one custodian; the public
//! manifest `custodians.json` in the keys folder (threshold, the unlock
//! identity's public recipient, and per custodian a SHA-256 commitment to
//! their share, so that a wrong share is refused when it is submitted, not
//! after K of them fail to rebuild anything); and [`Unsealing`], the
//! shares a sealed process has received, which rebuilds the identity once
//! K distinct, committed shares are in.
//!
//! Must never: write the identity or a share in clear; keep a share after
//! the identity is rebuilt or the unsealing is abandoned (every buffer is
//! `Zeroizing`); put a share or the identity in an error, a log or `Debug`.
//!
//! Why commitments are safe to publish: with K ≥ 2 every share alone is
//! uniformly random (Shamir), at least 74 bytes long, so its hash reveals
//! nothing an attacker can use; the hash is bound to the key set's
//! recipient and to the custodian's share number.

use std::collections::BTreeMap;
use std::fmt;

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::{
    KeyError, UnlockIdentity, age_decrypt_with, age_encrypt_to, read_private_file,
    write_new_private_file,
};

/// The public manifest's name in the keys folder.
pub const MANIFEST_FILE: &str = "custodians.json";
const MANIFEST_FORMAT: &str = "coffre-custodians-v1";
const SHARE_FORMAT: &str = "coffre-custodian-share-v1";
const COMMITMENT_DOMAIN: &[u8] = b"coffre custodian share v1\0";
/// More custodians than this is an organisation problem, not a key one.
pub const MAX_CUSTODIANS: usize = 32;
/// A share file or a submitted share is well under this.
pub const MAX_SHARE_LEN: usize = 16 * 1024;
const MAX_MANIFEST_LEN: usize = 64 * 1024;

/// Errors of the custodians' files and of splitting. Never carries a
/// share, the identity or a file's content.
#[derive(Debug, thiserror::Error)]
pub enum CustodianError {
    #[error("custodians file line {line}: {reason}")]
    List { line: usize, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// One custodian: a name the audit log will carry (a role or a staff id,
/// not a person's full name) and their age X25519 recipient.
#[derive(Clone)]
pub struct Custodian {
    pub name: String,
    pub recipient: age::x25519::Recipient,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses a custodians file: one `name age1…` per line, `#` comments and
/// blank lines ignored; names and recipients unique; 2 to 32 custodians.
pub fn parse_custodians(text: &str) -> Result<Vec<Custodian>, CustodianError> {
    let mut out: Vec<Custodian> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: &str| CustodianError::List {
            line: index + 1,
            reason: reason.to_string(),
        };
        let mut parts = line.split_whitespace();
        let (Some(name), Some(key), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err("expected `name age1…`"));
        };
        if !valid_name(name) {
            return Err(err(
                "a name is 1 to 64 letters, digits, `.`, `_` or `-` (use a role or a staff id)",
            ));
        }
        let recipient: age::x25519::Recipient = key
            .parse()
            .map_err(|_| err("not an age X25519 recipient (age1…)"))?;
        if out.iter().any(|c| c.name == name) {
            return Err(err("this name is listed twice"));
        }
        if out
            .iter()
            .any(|c| c.recipient.to_string() == recipient.to_string())
        {
            return Err(err(
                "this recipient is listed twice: one custodian, one key",
            ));
        }
        out.push(Custodian {
            name: name.to_string(),
            recipient,
        });
    }
    if out.len() < 2 || out.len() > MAX_CUSTODIANS {
        return Err(CustodianError::Invalid(format!(
            "the custodians file lists {} custodians; between 2 and {MAX_CUSTODIANS} are needed",
            out.len()
        )));
    }
    Ok(out)
}

/// What the keys folder publishes about its custodians. Public: nothing in
/// it opens anything.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    /// Shares needed to rebuild the unlock identity.
    pub threshold: u8,
    /// The unlock identity's public recipient: every key file is encrypted
    /// to it, and a rebuilt identity must have it.
    pub unlock_recipient: String,
    /// The audit log's checkpoint verifier key, so that a sealed process
    /// still publishes it.
    pub verifier_key: String,
    pub custodians: Vec<ManifestEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    pub name: String,
    pub recipient: String,
    /// The share's x coordinate (1..=255).
    pub share_id: u8,
    /// Lower-case hex SHA-256 of the share, bound to the unlock recipient.
    pub commitment: String,
}

impl Manifest {
    /// Reads `dir/custodians.json`, if the key set is held by custodians.
    pub fn read(dir: &Path) -> Result<Option<Manifest>, CustodianError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match read_private_file(&path, MAX_MANIFEST_LEN) {
            Ok(b) => b,
            Err(KeyError::Missing { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| CustodianError::File {
                path: path.clone(),
                reason: format!("not a custodians manifest ({e})"),
            })?;
        manifest.validate().map_err(|reason| CustodianError::File {
            path: path.clone(),
            reason,
        })?;
        Ok(Some(manifest))
    }

    /// True when `dir` holds a custodians manifest (whatever its state).
    pub fn present(dir: &Path) -> bool {
        dir.join(MANIFEST_FILE).exists()
    }

    fn validate(&self) -> Result<(), String> {
        if self.format != MANIFEST_FORMAT {
            return Err(format!("unknown format {:?}", self.format));
        }
        let n = self.custodians.len();
        if !(2..=MAX_CUSTODIANS).contains(&n) {
            return Err(format!("{n} custodians; between 2 and {MAX_CUSTODIANS}"));
        }
        if self.threshold < 2 || usize::from(self.threshold) > n {
            return Err(format!("threshold {} for {n} custodians", self.threshold));
        }
        if self
            .unlock_recipient
            .parse::<age::x25519::Recipient>()
            .is_err()
        {
            return Err("unlock_recipient is not an age recipient".into());
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut names = std::collections::BTreeSet::new();
        for c in &self.custodians {
            if !valid_name(&c.name) || !names.insert(c.name.as_str()) {
                return Err("custodian names must be valid and unique".into());
            }
            if c.share_id == 0 || !ids.insert(c.share_id) {
                return Err("share numbers must be non-zero and unique".into());
            }
            if c.commitment.len() != 64 || hex::decode(&c.commitment).is_err() {
                return Err(format!("{}: the commitment is not a SHA-256", c.name));
            }
        }
        Ok(())
    }

    /// Writes the manifest as a new 0600 file in `dir` (never replaces one).
    pub fn write(&self, dir: &Path) -> Result<PathBuf, CustodianError> {
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| CustodianError::Invalid(format!("manifest: {e}")))?;
        Ok(write_new_private_file(dir, MANIFEST_FILE, &text)?)
    }

    fn entry(&self, name: &str) -> Option<&ManifestEntry> {
        self.custodians.iter().find(|c| c.name == name)
    }
}

fn commitment(unlock_recipient: &str, share: &[u8]) -> String {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(COMMITMENT_DOMAIN);
    h.update(unlock_recipient.as_bytes());
    h.update(&[0]);
    h.update(share);
    hex::encode(h.finish().as_ref())
}

/// A custodian's share as they receive it: age ciphertext, to be written
/// to a file and handed to them.
pub struct SealedShare {
    pub custodian: String,
    pub ciphertext: Vec<u8>,
}

/// The plaintext inside a share file, and what a custodian submits.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SharePayload {
    format: String,
    unlock_recipient: String,
    custodian: String,
    /// Base64 of the share: its number, then one byte per secret byte.
    share: String,
}

impl Drop for SharePayload {
    fn drop(&mut self) {
        self.share.zeroize();
    }
}

/// A new unlock identity, split: the identity (to encrypt the new key set
/// to, then to drop), the manifest (without its verifier key, which the
/// caller fills once the key set exists) and one sealed share per
/// custodian. Nothing is written.
pub fn split_new_identity(
    custodians: &[Custodian],
    threshold: u8,
) -> Result<(UnlockIdentity, Manifest, Vec<SealedShare>), CustodianError> {
    let n = custodians.len();
    if !(2..=MAX_CUSTODIANS).contains(&n) {
        return Err(CustodianError::Invalid(format!(
            "{n} custodians; between 2 and {MAX_CUSTODIANS} are needed"
        )));
    }
    if threshold < 2 || usize::from(threshold) > n {
        return Err(CustodianError::Invalid(format!(
            "--threshold must be between 2 and the number of custodians ({n}); got {threshold}"
        )));
    }
    let identity = age::x25519::Identity::generate();
    let unlock_recipient = identity.to_public().to_string();
    let secret = identity.to_string();
    let secret_bytes = Zeroizing::new(secret.expose_secret().as_bytes().to_vec());
    let shares = split(&secret_bytes, threshold, n)?;
    let mut entries = Vec::with_capacity(n);
    let mut sealed = Vec::with_capacity(n);
    for (custodian, share) in custodians.iter().zip(shares.iter()) {
        let share_id = *share
            .first()
            .ok_or_else(|| CustodianError::Invalid("empty share".into()))?;
        entries.push(ManifestEntry {
            name: custodian.name.clone(),
            recipient: custodian.recipient.to_string(),
            share_id,
            commitment: commitment(&unlock_recipient, share),
        });
        let payload = SharePayload {
            format: SHARE_FORMAT.into(),
            unlock_recipient: unlock_recipient.clone(),
            custodian: custodian.name.clone(),
            share: STANDARD.encode(share.as_slice()),
        };
        let plain = Zeroizing::new(
            serde_json::to_vec(&payload)
                .map_err(|e| CustodianError::Invalid(format!("share: {e}")))?,
        );
        sealed.push(SealedShare {
            custodian: custodian.name.clone(),
            ciphertext: age_encrypt_to(
                &custodian.recipient,
                &plain,
                Path::new(&format!("{}.share.age", custodian.name)),
            )?,
        });
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        threshold,
        unlock_recipient,
        verifier_key: String::new(),
        custodians: entries,
    };
    Ok((UnlockIdentity { identity }, manifest, sealed))
}

/// Shamir over GF(256), polynomials drawn from ChaCha20 seeded by the
/// system's random source. Share ids are 1..=n.
fn split(
    secret: &[u8],
    threshold: u8,
    n: usize,
) -> Result<Vec<Zeroizing<Vec<u8>>>, CustodianError> {
    use chacha20::rand_core::SeedableRng;
    let mut seed = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(seed.as_mut())
        .map_err(|_| KeyError::Random)?;
    let rng = chacha20::ChaCha20Rng::from_seed(*seed);
    let shares = vsss_rs::Gf256::split_array(usize::from(threshold), n, secret, rng)
        .map_err(|e| CustodianError::Invalid(format!("splitting failed: {e:?}")))?;
    Ok(shares.into_iter().map(Zeroizing::new).collect())
}

/// Writes each sealed share as `out/{custodian}.share.age` (0600, new
/// files only; `out` is created 0700 when absent).
pub fn write_shares(out: &Path, shares: &[SealedShare]) -> Result<Vec<PathBuf>, CustodianError> {
    use std::os::unix::fs::DirBuilderExt;
    if !out.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(out)
            .map_err(|e| CustodianError::File {
                path: out.to_path_buf(),
                reason: format!("cannot create ({})", e.kind()),
            })?;
    }
    let mut paths = Vec::with_capacity(shares.len());
    for share in shares {
        paths.push(write_new_private_file(
            out,
            &format!("{}.share.age", share.custodian),
            &share.ciphertext,
        )?);
    }
    Ok(paths)
}

/// A custodian's side: decrypts their share file with their own age
/// identity. The result is what `coffre unseal` submits.
pub fn open_share_file(
    share_file: &Path,
    custodian_identity: &UnlockIdentity,
) -> Result<Zeroizing<Vec<u8>>, CustodianError> {
    let bad = |reason: &str| CustodianError::File {
        path: share_file.to_path_buf(),
        reason: reason.to_string(),
    };
    let bytes = std::fs::read(share_file).map_err(|e| CustodianError::File {
        path: share_file.to_path_buf(),
        reason: format!("cannot read ({})", e.kind()),
    })?;
    if bytes.len() > MAX_SHARE_LEN {
        return Err(bad("larger than any share file"));
    }
    let plain = age_decrypt_with(&bytes, custodian_identity, MAX_SHARE_LEN)
        .ok_or_else(|| bad("this identity cannot decrypt it (not your share, or tampered)"))?;
    if plain.len() > MAX_SHARE_LEN {
        return Err(bad("larger than any share"));
    }
    Ok(plain)
}

/// Why a submitted share was refused. Stable codes for the audit log and
/// the admin socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a share payload at all.
    Malformed,
    /// A share of another key set.
    OtherKeySet,
    /// Names no custodian of this key set.
    UnknownCustodian,
    /// This custodian's share is already in.
    Repeated,
    /// Does not match the custodian's commitment.
    WrongShare,
    /// K committed shares that do not rebuild the identity (cannot happen
    /// unless the manifest itself was altered); every share is dropped.
    Reconstruction,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed_share",
            Refusal::OtherKeySet => "other_key_set",
            Refusal::UnknownCustodian => "unknown_custodian",
            Refusal::Repeated => "repeated_share",
            Refusal::WrongShare => "wrong_share",
            Refusal::Reconstruction => "reconstruction_failed",
        }
    }
}

/// A share that passed every check, not yet taken in.
pub struct CheckedShare {
    pub custodian: String,
    share_id: u8,
    share: Zeroizing<Vec<u8>>,
    /// The rebuilt identity, when this share is the K-th.
    completes: Option<UnlockIdentity>,
}

impl CheckedShare {
    /// True when taking this share in rebuilds the identity.
    pub fn completes(&self) -> bool {
        self.completes.is_some()
    }
}

impl fmt::Debug for CheckedShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckedShare")
            .field("custodian", &self.custodian)
            .finish_non_exhaustive()
    }
}

/// The shares a sealed process holds, by share number.
pub struct Unsealing {
    manifest: Manifest,
    accepted: BTreeMap<u8, Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for Unsealing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unsealing")
            .field("have", &self.accepted.len())
            .field("need", &self.manifest.threshold)
            .finish()
    }
}

impl Unsealing {
    pub fn new(manifest: Manifest) -> Self {
        Self {
            manifest,
            accepted: BTreeMap::new(),
        }
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Shares in, shares needed.
    pub fn progress(&self) -> (usize, usize) {
        (self.accepted.len(), usize::from(self.manifest.threshold))
    }

    /// Checks a submitted share without taking it in. The custodian's name
    /// comes back with a refusal when the payload named a known one.
    pub fn check(&self, submitted: &[u8]) -> Result<CheckedShare, (Option<String>, Refusal)> {
        let payload: SharePayload =
            serde_json::from_slice(submitted).map_err(|_| (None, Refusal::Malformed))?;
        if payload.format != SHARE_FORMAT {
            return Err((None, Refusal::Malformed));
        }
        if payload.unlock_recipient != self.manifest.unlock_recipient {
            return Err((None, Refusal::OtherKeySet));
        }
        let Some(entry) = self.manifest.entry(&payload.custodian) else {
            return Err((None, Refusal::UnknownCustodian));
        };
        let named = || Some(entry.name.clone());
        let share = Zeroizing::new(
            STANDARD
                .decode(payload.share.as_bytes())
                .map_err(|_| (named(), Refusal::Malformed))?,
        );
        if share.first() != Some(&entry.share_id) {
            return Err((named(), Refusal::WrongShare));
        }
        // Commitments are public: comparing them in variable time leaks
        // nothing that is not already published.
        if commitment(&self.manifest.unlock_recipient, &share) != entry.commitment {
            return Err((named(), Refusal::WrongShare));
        }
        if self.accepted.contains_key(&entry.share_id) {
            return Err((named(), Refusal::Repeated));
        }
        let completes = if self.accepted.len() + 1 >= usize::from(self.manifest.threshold) {
            let mut all: Vec<Vec<u8>> = self.accepted.values().map(|s| s.to_vec()).collect();
            all.push(share.to_vec());
            let rebuilt = vsss_rs::Gf256::combine_array(&all).map(Zeroizing::new);
            for s in all.iter_mut() {
                s.zeroize();
            }
            let rebuilt = rebuilt.map_err(|_| (named(), Refusal::Reconstruction))?;
            let identity = std::str::from_utf8(&rebuilt)
                .ok()
                .and_then(|text| text.parse::<age::x25519::Identity>().ok())
                .filter(|id| id.to_public().to_string() == self.manifest.unlock_recipient)
                .ok_or((named(), Refusal::Reconstruction))?;
            Some(UnlockIdentity { identity })
        } else {
            None
        };
        Ok(CheckedShare {
            custodian: entry.name.clone(),
            share_id: entry.share_id,
            share,
            completes,
        })
    }

    /// Takes a checked share in. Answers the rebuilt identity when it was
    /// the K-th; every share held is then wiped.
    pub fn accept(&mut self, mut checked: CheckedShare) -> Option<UnlockIdentity> {
        match checked.completes.take() {
            Some(identity) => {
                self.clear();
                Some(identity)
            }
            None => {
                let share = std::mem::take(&mut checked.share);
                self.accepted.insert(checked.share_id, share);
                None
            }
        }
    }

    /// Drops (and wipes) every share held.
    pub fn clear(&mut self) {
        // Each `Zeroizing` wipes on drop.
        self.accepted.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn custodians(n: usize) -> (Vec<Custodian>, Vec<UnlockIdentity>) {
        let ids: Vec<UnlockIdentity> = (0..n)
            .map(|_| UnlockIdentity {
                identity: age::x25519::Identity::generate(),
            })
            .collect();
        let list = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Custodian {
                name: format!("custodian-{i}"),
                recipient: id.recipient(),
            })
            .collect();
        (list, ids)
    }

    fn open(sealed: &SealedShare, id: &UnlockIdentity) -> Zeroizing<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.age");
        std::fs::write(&path, &sealed.ciphertext).unwrap();
        open_share_file(&path, id).unwrap()
    }

    #[test]
    fn any_two_of_three_rebuild_the_identity_and_one_does_not() {
        let (list, ids) = custodians(3);
        let (identity, manifest, sealed) = split_new_identity(&list, 2).unwrap();
        let plain: Vec<_> = sealed.iter().zip(&ids).map(|(s, i)| open(s, i)).collect();
        for (a, b) in [(0, 1), (0, 2), (2, 1)] {
            let mut u = Unsealing::new(manifest.clone());
            let first = u.check(&plain[a]).unwrap();
            assert!(!first.completes());
            assert!(u.accept(first).is_none());
            assert_eq!(u.progress(), (1, 2));
            let second = u.check(&plain[b]).unwrap();
            assert!(second.completes());
            let rebuilt = u.accept(second).unwrap();
            assert_eq!(
                rebuilt.recipient().to_string(),
                identity.recipient().to_string()
            );
            assert_eq!(u.progress(), (0, 2), "shares are dropped once rebuilt");
        }
    }

    #[test]
    fn wrong_repeated_foreign_and_malformed_shares_are_refused() {
        let (list, ids) = custodians(3);
        let (_, manifest, sealed) = split_new_identity(&list, 2).unwrap();
        let plain: Vec<_> = sealed.iter().zip(&ids).map(|(s, i)| open(s, i)).collect();
        let mut u = Unsealing::new(manifest.clone());
        let first = u.check(&plain[0]).unwrap();
        u.accept(first);
        assert_eq!(
            u.check(&plain[0]).unwrap_err(),
            (Some("custodian-0".into()), Refusal::Repeated)
        );
        // One byte of a share changed: its commitment no longer matches.
        let mut payload: serde_json::Value = serde_json::from_slice(&plain[1]).unwrap();
        let mut share = STANDARD.decode(payload["share"].as_str().unwrap()).unwrap();
        share[5] ^= 1;
        payload["share"] = STANDARD.encode(&share).into();
        let tampered = serde_json::to_vec(&payload).unwrap();
        assert_eq!(
            u.check(&tampered).unwrap_err(),
            (Some("custodian-1".into()), Refusal::WrongShare)
        );
        // Another custodian's name on this share.
        let mut payload: serde_json::Value = serde_json::from_slice(&plain[1]).unwrap();
        payload["custodian"] = "custodian-2".into();
        assert_eq!(
            u.check(&serde_json::to_vec(&payload).unwrap())
                .unwrap_err()
                .1,
            Refusal::WrongShare
        );
        // A share of another key set.
        let (_, _, other) = split_new_identity(&list, 2).unwrap();
        assert_eq!(
            u.check(&open(&other[1], &ids[1])).unwrap_err().1,
            Refusal::OtherKeySet
        );
        assert_eq!(u.check(b"not json").unwrap_err().1, Refusal::Malformed);
        assert_eq!(u.progress(), (1, 2), "refusals change nothing");
        // The right share still completes.
        let second = u.check(&plain[1]).unwrap();
        assert!(u.accept(second).is_some());
    }

    #[test]
    fn a_share_opens_only_with_its_custodians_identity() {
        let (list, ids) = custodians(2);
        let (_, _, sealed) = split_new_identity(&list, 2).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.age");
        std::fs::write(&path, &sealed[0].ciphertext).unwrap();
        assert!(open_share_file(&path, &ids[1]).is_err());
        assert!(open_share_file(&path, &ids[0]).is_ok());
    }

    #[test]
    fn custodians_file_rules() {
        let a = age::x25519::Identity::generate().to_public();
        let b = age::x25519::Identity::generate().to_public();
        let ok = format!("# DSI\nalice {a}\n\nbob {b}\n");
        assert_eq!(parse_custodians(&ok).unwrap().len(), 2);
        assert!(
            parse_custodians(&format!("alice {a}\n")).is_err(),
            "one is not a quorum"
        );
        assert!(parse_custodians(&format!("alice {a}\nalice {b}\n")).is_err());
        assert!(parse_custodians(&format!("alice {a}\nbob {a}\n")).is_err());
        assert!(parse_custodians(&format!("alice {a}\nbob notakey\n")).is_err());
        assert!(parse_custodians(&format!("al ice {a}\nbob {b}\n")).is_err());
        let (list, _) = custodians(3);
        assert!(split_new_identity(&list, 1).is_err());
        assert!(split_new_identity(&list, 4).is_err());
    }

    #[test]
    fn the_manifest_round_trips_and_refuses_nonsense() {
        let (list, _) = custodians(3);
        let (_, mut manifest, _) = split_new_identity(&list, 2).unwrap();
        manifest.verifier_key = "coffre+00000000+AQ".into();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        assert!(Manifest::read(dir.path()).unwrap().is_none());
        manifest.write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap().unwrap(), manifest);
        assert!(manifest.write(dir.path()).is_err(), "never replaced");
        let mut bad = manifest.clone();
        bad.threshold = 4;
        assert!(bad.validate().is_err());
        let mut bad = manifest.clone();
        bad.custodians[1].share_id = bad.custodians[0].share_id;
        assert!(bad.validate().is_err());
    }
}
