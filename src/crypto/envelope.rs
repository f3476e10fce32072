//! Envelope encryption: per-resident data keys, wrapped by the current KEK, seal the values.
//!
//! Owns: [`DataKey`] generation, wrapping/unwrapping data keys under a KEK version
//! ([`KeySet::wrap_data_key`] / [`KeySet::unwrap_data_key`]) and sealing/opening values
//! under a data key bound to their [`SealContext`].
//! Must never: reuse a nonce on purpose, return plaintext that failed authentication, tell
//! a caller *which* check failed, or expose data-key bytes (no `Debug`, no accessor).
//!
//! # Formats
//!
//! Both use AES-256-GCM (ring) with a fresh 96-bit random nonce.
//!
//! Wrapped data key (`WrappedDataKey::bytes`, 61 bytes):
//! `0x01 || nonce(12) || AES-GCM(KEK_v, data key)(32) || tag(16)`, associated data
//! `lp("coffre/v1/data-key-wrap") || 0x01 || lp(resident_id) || be32(kek_version)`.
//! Because the resident id and version are in the AAD, a wrapped key pasted onto another
//! resident, or relabelled with another version, fails with [`CryptoError::Integrity`].
//!
//! Sealed value: `0x01 || nonce(12) || ciphertext || tag(16)`, associated data
//! `lp("coffre/v1/seal") || 0x01 || lp(resident_id) || lp(category) || lp(record_id) ||
//! be64(version as i64)`. `lp(x)` is `be64(len(x)) || x`, so field boundaries are
//! unambiguous (`("ab","c")` and `("a","bc")` encode differently).
//!
//! Deposited value (format 2, BRIEF C11): `0x02 || nonce(12) || ciphertext || tag(16)`,
//! associated data as format 1 with `0x02` for the format byte, followed by its provenance:
//! `lp(source_id) || lp(source_record_id) || lp(basis) || be64(observed_at) ||
//! be64(deposited_at)`. The format byte says which the opener must use, and the context
//! must agree: a deposited value whose provenance was stripped from its row (to pass it
//! off as the resident's own writing), or a resident's value given a made-up provenance,
//! or a provenance changed in any field, fails with [`CryptoError::Integrity`].
//!
//! # Nonce budget
//!
//! With random 96-bit nonces, NIST SP 800-38D caps one key at 2^32 encryptions to keep the
//! collision probability below 2^-32; a collision would leak the XOR of two plaintexts and
//! allow forgeries. Each resident has their own data key, so the count per key is that
//! resident's number of sealed value versions (thousands, not billions). Each KEK wraps one
//! data key per resident per data-key rotation, and KEKs are rotated too: also far below.

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};
use zeroize::{Zeroize, Zeroizing};

use super::{CryptoError, KeySet};

const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const FORMAT_V1: u8 = 0x01;
/// A sealed value that carries its provenance in its associated data.
const FORMAT_V2_PROVENANCE: u8 = 0x02;
const HEADER_LEN: usize = 1 + NONCE_LEN;
const WRAPPED_LEN: usize = HEADER_LEN + KEY_LEN + TAG_LEN;
const WRAP_LABEL: &[u8] = b"coffre/v1/data-key-wrap";
const SEAL_LABEL: &[u8] = b"coffre/v1/seal";

/// A 256-bit data key (one per resident). Heap-allocated and zeroized on drop; its bytes
/// are never exposed outside this module.
pub struct DataKey {
    key: SecretBox<[u8; KEY_LEN]>,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey { .. }")
    }
}

impl DataKey {
    pub fn generate() -> Result<DataKey, CryptoError> {
        let mut key = SecretBox::new(Box::new([0u8; KEY_LEN]));
        SystemRandom::new()
            .fill(key.expose_secret_mut())
            .map_err(|_| CryptoError::Random)?;
        Ok(DataKey { key })
    }

    /// Builds the AES key schedule once, for sealing/opening many values of one resident.
    pub fn sealer(&self) -> Result<Sealer, CryptoError> {
        Ok(Sealer {
            key: aead_key(self.key.expose_secret())?,
            rng: SystemRandom::new(),
        })
    }
}

/// A data key ready for AES-256-GCM. Note: ring does not zeroize its expanded key
/// schedule on drop, so keep sealers scoped to the work on one resident.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer { .. }")
    }
}

/// A data key encrypted under one KEK version. Not secret: stored next to the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedDataKey {
    pub kek_version: u32,
    pub bytes: Vec<u8>,
}

/// Where a sealed value belongs. Bound into the AEAD associated data so a ciphertext moved
/// to another resident, category, record or version, or given another provenance, fails
/// to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealContext<'a> {
    pub resident_id: &'a str,
    pub category: &'a str,
    pub record_id: &'a str,
    pub version: i64,
    /// Where a deposited value came from; `None` for the resident's own writing (or an
    /// aidant's for them).
    pub provenance: Option<SealProvenance<'a>>,
}

/// A deposited value's provenance (art. 15(1)(g)), part of what its seal authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealProvenance<'a> {
    pub source_id: &'a str,
    /// The source's own id of the record.
    pub source_record_id: &'a str,
    /// The source's legal basis (`resident_authorisation` or `public_task`).
    pub basis: &'a str,
    pub observed_at: i64,
    pub deposited_at: i64,
}

impl SealContext<'_> {
    /// The format a value sealed in this context has.
    fn format(&self) -> u8 {
        if self.provenance.is_some() {
            FORMAT_V2_PROVENANCE
        } else {
            FORMAT_V1
        }
    }

    fn associated_data(&self) -> Vec<u8> {
        let provenance_len = self.provenance.map_or(0, |p| {
            8 * 5 + p.source_id.len() + p.source_record_id.len() + p.basis.len()
        });
        let mut aad = Vec::with_capacity(
            8 * 5
                + 1
                + SEAL_LABEL.len()
                + self.resident_id.len()
                + self.category.len()
                + self.record_id.len()
                + provenance_len,
        );
        push_field(&mut aad, SEAL_LABEL);
        aad.push(self.format());
        push_field(&mut aad, self.resident_id.as_bytes());
        push_field(&mut aad, self.category.as_bytes());
        push_field(&mut aad, self.record_id.as_bytes());
        aad.extend_from_slice(&self.version.to_be_bytes());
        if let Some(p) = self.provenance {
            push_field(&mut aad, p.source_id.as_bytes());
            push_field(&mut aad, p.source_record_id.as_bytes());
            push_field(&mut aad, p.basis.as_bytes());
            aad.extend_from_slice(&p.observed_at.to_be_bytes());
            aad.extend_from_slice(&p.deposited_at.to_be_bytes());
        }
        aad
    }
}

/// Length-prefixed field. usize -> u64 is lossless on every platform we target.
fn push_field(buf: &mut Vec<u8>, field: &[u8]) {
    buf.extend_from_slice(&(field.len() as u64).to_be_bytes());
    buf.extend_from_slice(field);
}

fn wrap_associated_data(resident_id: &str, kek_version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(8 * 2 + 1 + 4 + WRAP_LABEL.len() + resident_id.len());
    push_field(&mut aad, WRAP_LABEL);
    aad.push(FORMAT_V1);
    push_field(&mut aad, resident_id.as_bytes());
    aad.extend_from_slice(&kek_version.to_be_bytes());
    aad
}

fn aead_key(bytes: &[u8; KEY_LEN]) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::Internal)
}

/// `FORMAT_V1 || nonce || AES-GCM(plaintext) || tag`, built in one exact-capacity buffer.
fn seal_with(
    key: &LessSafeKey,
    rng: &SystemRandom,
    format: u8,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.push(format);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let sealed = match out.get_mut(HEADER_LEN..) {
        Some(in_out) => key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            in_out,
        ),
        None => Err(ring::error::Unspecified),
    };
    match sealed {
        Ok(tag) => {
            out.extend_from_slice(tag.as_ref());
            Ok(out)
        }
        Err(_) => {
            // The buffer may still hold plaintext.
            out.zeroize();
            Err(CryptoError::Internal)
        }
    }
}

/// Inverse of [`seal_with`]. Every failure is [`CryptoError::Integrity`].
fn open_with(
    key: &LessSafeKey,
    format: u8,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < HEADER_LEN + TAG_LEN || sealed.first() != Some(&format) {
        return Err(CryptoError::Integrity);
    }
    let nonce = sealed
        .get(1..HEADER_LEN)
        .and_then(|n| Nonce::try_assume_unique_for_key(n).ok())
        .ok_or(CryptoError::Integrity)?;
    let mut buf = sealed
        .get(HEADER_LEN..)
        .ok_or(CryptoError::Integrity)?
        .to_vec();
    match key.open_in_place(nonce, Aad::from(aad), &mut buf) {
        Ok(plaintext) => {
            let len = plaintext.len();
            buf.truncate(len);
            Ok(buf)
        }
        Err(_) => {
            // Never let unauthenticated decrypted bytes linger.
            buf.zeroize();
            Err(CryptoError::Integrity)
        }
    }
}

impl Sealer {
    /// Encrypts `plaintext` bound to `ctx`, with a fresh random nonce.
    pub fn seal(&self, ctx: &SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal_with(
            &self.key,
            &self.rng,
            ctx.format(),
            &ctx.associated_data(),
            plaintext,
        )
    }

    /// Decrypts a value sealed under the same data key and the same `ctx`. The returned
    /// plaintext is the caller's to protect (e.g. wrap in `Zeroizing`).
    pub fn open(&self, ctx: &SealContext<'_>, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        // The value's format byte must be the one its context calls for.
        open_with(&self.key, ctx.format(), &ctx.associated_data(), sealed)
    }
}

/// One-shot [`Sealer::seal`]; use [`DataKey::sealer`] for many values.
pub fn seal(dk: &DataKey, aad: &SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    dk.sealer()?.seal(aad, plaintext)
}

/// One-shot [`Sealer::open`]; use [`DataKey::sealer`] for many values.
pub fn open(dk: &DataKey, aad: &SealContext<'_>, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    dk.sealer()?.open(aad, sealed)
}

impl KeySet {
    /// Wraps `dk` for `resident_id` under the current KEK.
    pub fn wrap_data_key(
        &self,
        resident_id: &str,
        dk: &DataKey,
    ) -> Result<WrappedDataKey, CryptoError> {
        self.wrap_data_key_at(resident_id, dk, self.current_kek_version())
    }

    /// Wraps `dk` under KEK `version` (the version the database says is
    /// current, which may be newer than this process's idea of it).
    pub fn wrap_data_key_at(
        &self,
        resident_id: &str,
        dk: &DataKey,
        version: u32,
    ) -> Result<WrappedDataKey, CryptoError> {
        let kek = self
            .kek(version)
            .ok_or(CryptoError::UnknownKekVersion { version })?;
        let key = aead_key(kek.bytes())?;
        let bytes = seal_with(
            &key,
            &SystemRandom::new(),
            FORMAT_V1,
            &wrap_associated_data(resident_id, version),
            dk.key.expose_secret(),
        )?;
        Ok(WrappedDataKey {
            kek_version: version,
            bytes,
        })
    }

    /// Unwraps a data key of `resident_id`. The KEK version must still be live.
    pub fn unwrap_data_key(
        &self,
        resident_id: &str,
        wrapped: &WrappedDataKey,
    ) -> Result<DataKey, CryptoError> {
        let version = wrapped.kek_version;
        let kek = self
            .kek(version)
            .ok_or(CryptoError::UnknownKekVersion { version })?;
        if wrapped.bytes.len() != WRAPPED_LEN {
            return Err(CryptoError::Integrity);
        }
        let key = aead_key(kek.bytes())?;
        let plaintext = Zeroizing::new(open_with(
            &key,
            FORMAT_V1,
            &wrap_associated_data(resident_id, version),
            &wrapped.bytes,
        )?);
        let mut dk = SecretBox::new(Box::new([0u8; KEY_LEN]));
        if plaintext.len() != KEY_LEN {
            return Err(CryptoError::Integrity);
        }
        dk.expose_secret_mut().copy_from_slice(&plaintext);
        Ok(DataKey { key: dk })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const CTX: SealContext<'static> = SealContext {
        resident_id: "resident-1",
        category: "health",
        record_id: "rec-42",
        version: 3,
        provenance: None,
    };

    const DEPOSITED: SealContext<'static> = SealContext {
        provenance: Some(SealProvenance {
            source_id: "eau-agglo",
            source_record_id: "contrat-17",
            basis: "public_task",
            observed_at: 1_700_000_000,
            deposited_at: 1_700_000_100,
        }),
        ..CTX
    };

    #[test]
    fn a_deposited_value_is_bound_to_its_provenance() {
        let dk = DataKey::generate().unwrap();
        let sealer = dk.sealer().unwrap();
        let sealed = sealer.seal(&DEPOSITED, b"12 m3").unwrap();
        assert_eq!(sealed[0], FORMAT_V2_PROVENANCE);
        assert_eq!(sealer.open(&DEPOSITED, &sealed).unwrap(), b"12 m3");
        let p = DEPOSITED.provenance.unwrap();
        let changed = [
            SealProvenance {
                source_id: "energie-locale",
                ..p
            },
            SealProvenance {
                source_record_id: "contrat-18",
                ..p
            },
            SealProvenance {
                basis: "resident_authorisation",
                ..p
            },
            SealProvenance {
                observed_at: p.observed_at + 1,
                ..p
            },
            SealProvenance {
                deposited_at: p.deposited_at - 1,
                ..p
            },
        ];
        for other in changed {
            let ctx = SealContext {
                provenance: Some(other),
                ..DEPOSITED
            };
            assert_eq!(sealer.open(&ctx, &sealed), Err(CryptoError::Integrity));
        }
        // Provenance stripped from the row: the value does not pass for
        // the resident's own writing, even with its format byte rewritten.
        assert_eq!(sealer.open(&CTX, &sealed), Err(CryptoError::Integrity));
        let mut relabelled = sealed.clone();
        relabelled[0] = FORMAT_V1;
        assert_eq!(sealer.open(&CTX, &relabelled), Err(CryptoError::Integrity));
        // And the resident's own value cannot be given a provenance.
        let own = sealer.seal(&CTX, b"12 m3").unwrap();
        assert_eq!(own[0], FORMAT_V1);
        assert_eq!(sealer.open(&DEPOSITED, &own), Err(CryptoError::Integrity));
        let mut relabelled = own;
        relabelled[0] = FORMAT_V2_PROVENANCE;
        assert_eq!(
            sealer.open(&DEPOSITED, &relabelled),
            Err(CryptoError::Integrity)
        );
    }

    #[test]
    fn seal_open_round_trip_with_fresh_nonces() {
        let dk = DataKey::generate().unwrap();
        let sealer = dk.sealer().unwrap();
        for pt in [&b""[..], b"x", &[7u8; 5000][..]] {
            let a = sealer.seal(&CTX, pt).unwrap();
            let b = sealer.seal(&CTX, pt).unwrap();
            assert_ne!(a, b, "nonce must be fresh per seal");
            assert_eq!(a.len(), 1 + 12 + pt.len() + 16);
            assert_eq!(a[0], FORMAT_V1);
            assert_eq!(sealer.open(&CTX, &a).unwrap(), pt);
            assert_eq!(open(&dk, &CTX, &b).unwrap(), pt);
        }
    }

    #[test]
    fn any_context_change_fails() {
        let dk = DataKey::generate().unwrap();
        let sealed = seal(&dk, &CTX, b"secret").unwrap();
        let variants = [
            SealContext {
                resident_id: "resident-2",
                ..CTX
            },
            SealContext {
                category: "finance",
                ..CTX
            },
            SealContext {
                record_id: "rec-43",
                ..CTX
            },
            SealContext { version: 4, ..CTX },
            // Shifting a boundary between fields must not collide.
            SealContext {
                resident_id: "resident-1h",
                category: "ealth",
                ..CTX
            },
            SealContext {
                category: "healthrec-42",
                record_id: "",
                ..CTX
            },
        ];
        for ctx in variants {
            assert_eq!(
                open(&dk, &ctx, &sealed),
                Err(CryptoError::Integrity),
                "{ctx:?}"
            );
        }
        let other = DataKey::generate().unwrap();
        assert_eq!(open(&other, &CTX, &sealed), Err(CryptoError::Integrity));
    }

    #[test]
    fn every_flipped_byte_and_truncation_fails() {
        let dk = DataKey::generate().unwrap();
        let sealer = dk.sealer().unwrap();
        let sealed = sealer.seal(&CTX, b"blood type O+").unwrap();
        for i in 0..sealed.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = sealed.clone();
                bad[i] ^= bit;
                assert_eq!(
                    sealer.open(&CTX, &bad),
                    Err(CryptoError::Integrity),
                    "byte {i}"
                );
            }
        }
        for len in 0..sealed.len() {
            assert_eq!(
                sealer.open(&CTX, &sealed[..len]),
                Err(CryptoError::Integrity)
            );
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert_eq!(sealer.open(&CTX, &longer), Err(CryptoError::Integrity));
    }

    #[test]
    fn wrapped_key_is_bound_to_resident_and_version() {
        let set = KeySet::generate_in_memory().unwrap();
        let dk = DataKey::generate().unwrap();
        let sealed = seal(&dk, &CTX, b"v").unwrap();
        let wrapped = set.wrap_data_key("resident-1", &dk).unwrap();
        assert_eq!(wrapped.kek_version, 1);
        assert_eq!(wrapped.bytes.len(), WRAPPED_LEN);

        let back = set.unwrap_data_key("resident-1", &wrapped).unwrap();
        assert_eq!(open(&back, &CTX, &sealed).unwrap(), b"v");

        assert_eq!(
            set.unwrap_data_key("resident-2", &wrapped).unwrap_err(),
            CryptoError::Integrity
        );
        let relabelled = WrappedDataKey {
            kek_version: 2,
            ..wrapped.clone()
        };
        assert_eq!(
            set.unwrap_data_key("resident-1", &relabelled).unwrap_err(),
            CryptoError::UnknownKekVersion { version: 2 }
        );
        for i in 0..wrapped.bytes.len() {
            let mut bad = wrapped.clone();
            bad.bytes[i] ^= 0x01;
            assert_eq!(
                set.unwrap_data_key("resident-1", &bad).unwrap_err(),
                CryptoError::Integrity
            );
        }
        // Another key set's KEK cannot unwrap it.
        let other = KeySet::generate_in_memory().unwrap();
        assert_eq!(
            other.unwrap_data_key("resident-1", &wrapped).unwrap_err(),
            CryptoError::Integrity
        );
    }

    #[test]
    fn debug_output_hides_key_bytes() {
        let dk = DataKey::generate().unwrap();
        let hex_key = hex::encode(dk.key.expose_secret());
        for shown in [format!("{dk:?}"), format!("{:?}", dk.sealer().unwrap())] {
            assert!(!shown.contains(&hex_key));
            assert!(!shown.contains(&format!("{:?}", dk.key.expose_secret())));
        }
    }
}
