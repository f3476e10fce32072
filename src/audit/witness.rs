//! Witnesses (C2SP tlog-witness, tlog-cosignature): independent parties
//! that cosign each checkpoint after checking it extends what they saw
//! before, so the operator cannot show one history to an auditor and
//! another to a court (a split view) without a witness refusing.
//!
//! This module is pure: a witness's verifier key, the verification of its
//! cosignature lines (`cosignature/v1`), and the `add-checkpoint` request
//! body. The round trips are `service::witness`'s.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ED25519, UnparsedPublicKey};

use super::merkle::Hash;
use super::note::{NoteError, SIG_PREFIX, has_forbidden_control, parse_vkey};

/// The signature type of a `cosignature/v1` Ed25519 key.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// A witness's verifier key: `<name>+<hex key id>+<base64(0x04 || key)>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessKey {
    name: String,
    key_id: [u8; 4],
    public_key: [u8; 32],
}

impl WitnessKey {
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let (name, key_id, public_key) = parse_vkey(vkey, ALG_COSIGNATURE_V1)?;
        Ok(Self {
            name,
            key_id,
            public_key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// The timestamp of this witness's valid cosignature of `text` (the
    /// checkpoint's text, up to its blank line) on `line`
    /// (`— <name> <base64(key id || timestamp || signature)>`); `None`
    /// when the line is another key's; an error when it claims this key
    /// and does not verify.
    pub fn check_line(&self, text: &str, line: &str) -> Result<Option<u64>, NoteError> {
        let Some(rest) = line.strip_prefix(SIG_PREFIX) else {
            return Err(NoteError::MalformedNote(
                "signature line must start with an em dash and a space",
            ));
        };
        let (name, b64) = rest
            .split_once(' ')
            .ok_or(NoteError::MalformedNote("signature line lacks a signature"))?;
        let raw = STANDARD
            .decode(b64.trim_end())
            .map_err(|_| NoteError::MalformedNote("signature is not valid base64"))?;
        if name != self.name || raw.get(..4) != Some(&self.key_id[..]) {
            return Ok(None);
        }
        // key id (4) || timestamp (8, big-endian) || Ed25519 signature (64).
        if raw.len() != 4 + 8 + 64 {
            return Err(NoteError::InvalidSignature(name.to_string()));
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[4..12]);
        let timestamp = u64::from_be_bytes(ts);
        let message = cosigned_message(text, timestamp);
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(message.as_bytes(), &raw[12..])
            .map_err(|_| NoteError::InvalidSignature(name.to_string()))?;
        Ok(Some(timestamp))
    }

    /// Whether the signed note `note` carries this witness's valid
    /// cosignature (any line claiming this key must verify).
    pub fn cosigned(&self, note: &str) -> Result<bool, NoteError> {
        if has_forbidden_control(note) {
            return Err(NoteError::MalformedNote(
                "contains control characters other than newline",
            ));
        }
        let split = note
            .rfind("\n\n")
            .ok_or(NoteError::MalformedNote("no blank line before signatures"))?;
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        let mut found = false;
        for line in sigs.lines().filter(|l| !l.is_empty()) {
            if self.check_line(text, line)?.is_some() {
                found = true;
            }
        }
        Ok(found)
    }
}

/// What a `cosignature/v1` signs: the header, the time, then the
/// checkpoint's text.
pub fn cosigned_message(text: &str, timestamp: u64) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{text}")
}

/// The body of a tlog-witness `add-checkpoint` request: the size the
/// witness last cosigned, the consistency proof from it, a blank line and
/// the signed checkpoint.
pub fn add_checkpoint_body(old_size: u64, proof: &[Hash], note: &str) -> String {
    let mut body = format!("old {old_size}\n");
    for h in proof {
        body.push_str(&STANDARD.encode(h));
        body.push('\n');
    }
    body.push('\n');
    body.push_str(note);
    body
}

/// Adds cosignature lines to a signed note (after its own signatures).
pub fn with_cosignatures(note: &str, lines: &[String]) -> String {
    let mut out = note.to_string();
    for l in lines {
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(l.trim_end());
        out.push('\n');
    }
    out
}

/// How many of `witnesses` validly cosigned `note`.
pub fn cosigners(note: &str, witnesses: &[WitnessKey]) -> Result<usize, NoteError> {
    let mut n = 0;
    for w in witnesses {
        if w.cosigned(note)? {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::note::key_id_of;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn witness(name: &str, seed: u8) -> (Ed25519KeyPair, String) {
        let key = Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap_or_else(|_| panic!());
        let mut pk = [0u8; 32];
        pk.copy_from_slice(key.public_key().as_ref());
        let id = key_id_of(name, ALG_COSIGNATURE_V1, &pk);
        let mut enc = vec![ALG_COSIGNATURE_V1];
        enc.extend_from_slice(&pk);
        let vkey = format!(
            "{name}+{:08x}+{}",
            u32::from_be_bytes(id),
            STANDARD.encode(enc)
        );
        (key, vkey)
    }

    fn cosign(key: &Ed25519KeyPair, name: &str, vkey: &WitnessKey, text: &str, t: u64) -> String {
        let sig = key.sign(cosigned_message(text, t).as_bytes());
        let mut raw = vkey.key_id.to_vec();
        raw.extend_from_slice(&t.to_be_bytes());
        raw.extend_from_slice(sig.as_ref());
        format!("{SIG_PREFIX}{name} {}", STANDARD.encode(raw))
    }

    #[test]
    fn a_cosignature_verifies_over_the_checkpoint_text_only() {
        let (key, vkey) = witness("witness.example/w1", 3);
        let w = WitnessKey::parse(&vkey).unwrap_or_else(|e| panic!("{e}"));
        let text = "example.org/log\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
        let note = format!("{text}\n{SIG_PREFIX}example.org/log AAAA\n");
        let line = cosign(&key, "witness.example/w1", &w, text, 1_700_000_000);
        assert_eq!(w.check_line(text, &line), Ok(Some(1_700_000_000)));
        let both = with_cosignatures(&note, std::slice::from_ref(&line));
        assert_eq!(cosigners(&both, std::slice::from_ref(&w)), Ok(1));
        assert_eq!(cosigners(&note, std::slice::from_ref(&w)), Ok(0));
        // Over another text: refused.
        let other = "example.org/log\n6\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
        assert!(w.check_line(other, &line).is_err());
        // A log key (0x01) is not a witness key.
        let log_key = crate::audit::note::NoteSigner::from_seed("x", &[4; 32])
            .unwrap_or_else(|e| panic!("{e}"))
            .verifier_key();
        assert_eq!(
            WitnessKey::parse(&log_key),
            Err(NoteError::UnsupportedAlgorithm(0x01))
        );
        assert!(add_checkpoint_body(3, &[[0u8; 32]], &note).starts_with("old 3\nAAAA"));
    }
}
