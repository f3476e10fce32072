//! C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, and the
//! tlog-checkpoint body (c2sp.org/tlog-checkpoint) that a log signs with them.
//!
//! A note is `text` (ending in a newline), a blank line, then one or more
//! lines `— <key name> <base64(key id || signature)>`. The signature covers the
//! text only, including its final newline.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::digest::{SHA256, digest};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use thiserror::Error;

/// Signature type byte for Ed25519 in key ids and verifier keys.
const ALG_ED25519: u8 = 0x01;
pub(crate) const SIG_PREFIX: &str = "\u{2014} ";
const ED25519_SIG_LEN: usize = 64;

/// Bound on signature lines per note, so a hostile note cannot make a
/// verifier parse forever; the spec requires accepting at least 16.
pub const MAX_SIGNATURES: usize = 100;

/// Why a key, note or checkpoint was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NoteError {
    #[error("invalid key name: must be non-empty, without spaces, '+' or control characters")]
    InvalidKeyName,
    #[error("Ed25519 key rejected: {0}")]
    InvalidKey(String),
    #[error("malformed verifier key: {0}")]
    MalformedVerifierKey(&'static str),
    #[error("unsupported signature type {0:#04x}")]
    UnsupportedAlgorithm(u8),
    #[error("verifier key id does not match its name and public key")]
    KeyIdMismatch,
    #[error("text cannot be signed: {0}")]
    MalformedText(&'static str),
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    #[error("note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    #[error("signature by {0} does not verify")]
    InvalidSignature(String),
    #[error("note has no signature by {0}")]
    NoKnownSignature(String),
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
}

pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c == '+' || c.is_whitespace() || c.is_control())
}

/// Signed notes must be free of control characters other than newline; `&str`
/// already guarantees valid UTF-8.
pub(crate) fn has_forbidden_control(s: &str) -> bool {
    s.chars().any(|c| c < ' ' && c != '\n')
}

fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    key_id_of(name, ALG_ED25519, public_key)
}

/// A signed-note key id: the first four bytes of
/// `SHA-256(name || "\n" || alg || public key)`.
pub(crate) fn key_id_of(name: &str, alg: u8, public_key: &[u8; 32]) -> [u8; 4] {
    let mut input = Vec::with_capacity(name.len() + 2 + public_key.len());
    input.extend_from_slice(name.as_bytes());
    input.push(b'\n');
    input.push(alg);
    input.extend_from_slice(public_key);
    let hash = digest(&SHA256, &input);
    let mut id = [0u8; 4];
    id.copy_from_slice(&hash.as_ref()[..4]);
    id
}

fn hex8(id: &[u8; 4]) -> String {
    format!("{:08x}", u32::from_be_bytes(*id))
}

/// Parses a verifier key `<name>+<hex key id>+<base64(alg || key)>` of
/// signature type `alg` (0x01 a note signature, 0x04 a witness's
/// cosignature), rejecting a key id that does not match the name and key.
pub(crate) fn parse_vkey(vkey: &str, alg: u8) -> Result<(String, [u8; 4], [u8; 32]), NoteError> {
    // Names cannot contain '+', but standard base64 can: split twice only.
    let mut parts = vkey.trim().splitn(3, '+');
    let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(NoteError::MalformedVerifierKey(
            "expected <name>+<key id>+<key>",
        ));
    };
    if !is_valid_name(name) {
        return Err(NoteError::InvalidKeyName);
    }
    if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NoteError::MalformedVerifierKey(
            "key id must be 8 hex digits",
        ));
    }
    let claimed_id = u32::from_str_radix(id_hex, 16)
        .map_err(|_| NoteError::MalformedVerifierKey("key id must be 8 hex digits"))?
        .to_be_bytes();
    let key = STANDARD
        .decode(key_b64)
        .map_err(|_| NoteError::MalformedVerifierKey("key is not valid base64"))?;
    let (&found, public) = key
        .split_first()
        .ok_or(NoteError::MalformedVerifierKey("key is empty"))?;
    if found != alg {
        return Err(NoteError::UnsupportedAlgorithm(found));
    }
    let public_key: [u8; 32] = public
        .try_into()
        .map_err(|_| NoteError::MalformedVerifierKey("Ed25519 key must be 32 bytes"))?;
    if key_id_of(name, alg, &public_key) != claimed_id {
        return Err(NoteError::KeyIdMismatch);
    }
    Ok((name.to_owned(), claimed_id, public_key))
}

/// Signs notes as one named Ed25519 key.
#[derive(Debug)]
pub struct NoteSigner {
    name: String,
    key: Ed25519KeyPair,
    key_id: [u8; 4],
}

impl NoteSigner {
    /// Takes ownership of `key` because ring's key pairs cannot be cloned.
    pub fn new(name: &str, key: Ed25519KeyPair) -> Result<Self, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidKeyName);
        }
        let public: [u8; 32] = key
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| NoteError::InvalidKey("public key is not 32 bytes".into()))?;
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, &public),
            key,
        })
    }

    /// From a raw 32-byte Ed25519 seed (RFC 8032 private key).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        let key = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|e| NoteError::InvalidKey(e.to_string()))?;
        Self::new(name, key)
    }

    /// From a PKCS#8 v1 or v2 document, as `Ed25519KeyPair::generate_pkcs8`
    /// produces.
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Self, NoteError> {
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|e| NoteError::InvalidKey(e.to_string()))?;
        Self::new(name, key)
    }

    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// `<name>+<hex key id>+<base64(0x01 || public key)>`.
    pub fn verifier_key(&self) -> String {
        let mut encoded = Vec::with_capacity(33);
        encoded.push(ALG_ED25519);
        encoded.extend_from_slice(self.public_key());
        format!(
            "{}+{}+{}",
            self.name,
            hex8(&self.key_id),
            STANDARD.encode(encoded)
        )
    }

    /// Returns the signed note: `text`, a blank line, and this key's
    /// signature line. `text` must end with a newline and hold no control
    /// characters other than newlines.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') {
            return Err(NoteError::MalformedText("must end with a newline"));
        }
        if has_forbidden_control(text) {
            return Err(NoteError::MalformedText(
                "must not contain control characters other than newline",
            ));
        }
        let signature = self.key.sign(text.as_bytes());
        let mut raw = Vec::with_capacity(4 + ED25519_SIG_LEN);
        raw.extend_from_slice(&self.key_id);
        raw.extend_from_slice(signature.as_ref());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(raw)
        ))
    }
}

/// Checks notes against one trusted Ed25519 verifier key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: [u8; 4],
    public_key: [u8; 32],
}

impl NoteVerifier {
    /// Parses `<name>+<hex key id>+<base64(0x01 || public key)>`, rejecting a
    /// key id that does not match the name and key.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let (name, key_id, public_key) = parse_vkey(vkey, ALG_ED25519)?;
        Ok(Self {
            name,
            key_id,
            public_key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// Returns the note's text (up to and including its last newline before
    /// the blank line) if it carries a valid signature by this key.
    ///
    /// Signatures by other keys are ignored, as the spec requires, but any
    /// signature that claims this key's name and id must verify: a note with
    /// one bad signature from a trusted key is rejected as a whole.
    pub fn verify(&self, note: &str) -> Result<String, NoteError> {
        if has_forbidden_control(note) {
            return Err(NoteError::MalformedNote(
                "contains control characters other than newline",
            ));
        }
        // The text may itself contain blank lines; only the last one
        // separates it from the signatures.
        let split = note
            .rfind("\n\n")
            .ok_or(NoteError::MalformedNote("no blank line before signatures"))?;
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        let sigs = sigs
            .strip_suffix('\n')
            .ok_or(NoteError::MalformedNote("must end with a newline"))?;
        let verifier = UnparsedPublicKey::new(&ED25519, &self.public_key);
        let mut verified = false;
        for (count, line) in sigs.split('\n').enumerate() {
            if count >= MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or(NoteError::MalformedNote(
                    "signature line must start with an em dash and a space",
                ))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or(NoteError::MalformedNote("signature line lacks a signature"))?;
            if !is_valid_name(name) {
                return Err(NoteError::MalformedNote("invalid key name in signature"));
            }
            let raw = STANDARD
                .decode(b64)
                .map_err(|_| NoteError::MalformedNote("signature is not valid base64"))?;
            let Some((id, signature)) = raw.split_first_chunk::<4>() else {
                return Err(NoteError::MalformedNote("signature is too short"));
            };
            if signature.is_empty() {
                return Err(NoteError::MalformedNote("signature is too short"));
            }
            if name != self.name || *id != self.key_id {
                continue;
            }
            verifier
                .verify(text.as_bytes(), signature)
                .map_err(|_| NoteError::InvalidSignature(name.to_owned()))?;
            verified = true;
        }
        if !verified {
            return Err(NoteError::NoKnownSignature(format!(
                "{}+{}",
                self.name,
                hex8(&self.key_id)
            )));
        }
        Ok(text.to_owned())
    }
}

/// The three mandatory lines of a tlog checkpoint. Extension lines are not
/// kept: this log never writes them, and they are not auditable anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: [u8; 32],
}

impl Checkpoint {
    /// `origin\nsize\nbase64(root)\n`, the note text to sign. The origin must
    /// be non-empty and single-line for the result to parse back.
    pub fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// Strict parse of a checkpoint note text (as returned by
    /// [`NoteVerifier::verify`]). Extension lines are allowed and ignored.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(NoteError::MalformedCheckpoint("must end with a newline"))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(NoteError::MalformedCheckpoint("needs at least three lines"));
        };
        if origin.is_empty() {
            return Err(NoteError::MalformedCheckpoint("empty origin"));
        }
        if lines.any(str::is_empty) {
            return Err(NoteError::MalformedCheckpoint("empty extension line"));
        }
        // `u64::from_str` would also accept a leading '+'.
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(NoteError::MalformedCheckpoint(
                "size must be decimal without leading zeros",
            ));
        }
        let size = size
            .parse::<u64>()
            .map_err(|_| NoteError::MalformedCheckpoint("size does not fit in 64 bits"))?;
        let root = STANDARD
            .decode(root)
            .map_err(|_| NoteError::MalformedCheckpoint("root is not valid base64"))?
            .try_into()
            .map_err(|_| NoteError::MalformedCheckpoint("root must be 32 bytes"))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn verifier_keys_whose_base64_holds_a_plus_parse() {
        // Try seeds until the encoded key contains '+' (about one in two).
        for seed in 0u8..=255 {
            let signer = super::NoteSigner::from_seed("example.org/log", &[seed; 32]).unwrap();
            let vkey = signer.verifier_key();
            if vkey.matches('+').count() > 2 {
                let v = super::NoteVerifier::parse(&vkey).unwrap();
                let note = signer.sign("example.org/log\n1\nAAAA\n").unwrap();
                v.verify(&note).unwrap();
                return;
            }
        }
        panic!("no seed produced a '+' in base64");
    }

    use super::*;
    use std::path::PathBuf;

    fn example_dir() -> PathBuf {
        crate::audit::test_vectors_dir().join("signed-note")
    }

    fn example() -> (String, String) {
        let dir = example_dir();
        let note = std::fs::read_to_string(dir.join("note.txt")).unwrap();
        let vkey = std::fs::read_to_string(dir.join("verifier.txt")).unwrap();
        (note, vkey.trim_end().to_owned())
    }

    const EXAMPLE_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                                then you don't know what your problem is.\n";

    fn signer(name: &str, byte: u8) -> NoteSigner {
        NoteSigner::from_seed(name, &[byte; 32]).unwrap()
    }

    /// The key id must be exactly 8 hex digits: a shorter one, or 8
    /// characters that are not all hex, is malformed (not a mismatch found
    /// later by luck of the parse).
    #[test]
    fn a_verifier_key_id_is_eight_hex_digits() {
        let (_, vkey) = example();
        let mut parts = vkey.splitn(3, '+');
        let (name, _, key) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        for id in ["c74f20a", "c74f20a3f", "c74f20g3", "", "+c74f20a"] {
            match NoteVerifier::parse(&format!("{name}+{id}+{key}")) {
                Err(NoteError::MalformedVerifierKey(why)) => {
                    assert_eq!(why, "key id must be 8 hex digits", "{id:?}")
                }
                other => panic!("{id:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn published_example_verifies() {
        let (note, vkey) = example();
        let v = NoteVerifier::parse(&vkey).unwrap();
        assert_eq!(v.name(), "PeterNeumann");
        assert_eq!(hex8(&v.key_id()), "c74f20a3");
        assert_eq!(v.verify(&note).unwrap(), EXAMPLE_TEXT);
    }

    #[test]
    fn published_example_rejects_any_changed_character() {
        let (note, vkey) = example();
        let v = NoteVerifier::parse(&vkey).unwrap();
        let chars: Vec<char> = note.chars().collect();
        for i in 0..chars.len() {
            let mut changed = chars.clone();
            changed[i] = if chars[i] == 'x' { 'y' } else { 'x' };
            let changed: String = changed.into_iter().collect();
            assert!(
                v.verify(&changed).is_err(),
                "char {i} changed still verifies"
            );
        }
        assert!(v.verify(note.trim_end()).is_err());
        assert!(v.verify(&format!("{note}\n")).is_err());
    }

    #[test]
    fn key_id_matches_published_verifier_key() {
        let (_, vkey) = example();
        let v = NoteVerifier::parse(&vkey).unwrap();
        assert_eq!(
            key_id("PeterNeumann", &v.public_key),
            [0xc7, 0x4f, 0x20, 0xa3]
        );
        // Same key under another name is another key id.
        assert_ne!(key_id("PeterNeumann2", &v.public_key), v.key_id());
    }

    #[test]
    fn sign_then_verify_round_trip() {
        let s = signer("example.com/log", 7);
        let vkey = s.verifier_key();
        assert!(vkey.starts_with(&format!("example.com/log+{}+", hex8(&s.key_id()))));
        let v = NoteVerifier::parse(&vkey).unwrap();
        assert_eq!(v.key_id(), s.key_id());
        for text in [
            "hello\n",
            "\n",
            "a\n\nb\n",
            "ends blank\n\n",
            "— looks like a sig\n",
        ] {
            let note = s.sign(text).unwrap();
            assert!(note.starts_with(text));
            assert!(note.contains("\n\n\u{2014} example.com/log "));
            assert_eq!(v.verify(&note).unwrap(), text, "{text:?}");
        }
    }

    #[test]
    fn signing_is_deterministic_and_matches_pkcs8_key() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let a = NoteSigner::from_pkcs8("k", pkcs8.as_ref()).unwrap();
        let b = NoteSigner::from_pkcs8("k", pkcs8.as_ref()).unwrap();
        assert_eq!(a.sign("x\n").unwrap(), b.sign("x\n").unwrap());
        assert_eq!(a.verifier_key(), b.verifier_key());
        assert!(NoteSigner::from_pkcs8("k", b"not pkcs8").is_err());
    }

    #[test]
    fn tampering_fails() {
        let s = signer("log", 1);
        let v = NoteVerifier::parse(&s.verifier_key()).unwrap();
        let note = s.sign("origin\n5\n").unwrap();
        let tampered_text = note.replacen('5', "6", 1);
        assert_eq!(
            v.verify(&tampered_text),
            Err(NoteError::InvalidSignature("log".into()))
        );

        let (head, b64) = note.trim_end().rsplit_once(' ').unwrap();
        let mut raw = STANDARD.decode(b64).unwrap();
        raw[10] ^= 1;
        let bad_sig = format!("{head} {}\n", STANDARD.encode(&raw));
        assert!(matches!(
            v.verify(&bad_sig),
            Err(NoteError::InvalidSignature(_))
        ));

        // A truncated signature from the trusted key is still a bad signature.
        let short = format!("{head} {}\n", STANDARD.encode(&raw[..20]));
        assert!(matches!(
            v.verify(&short),
            Err(NoteError::InvalidSignature(_))
        ));
    }

    #[test]
    fn several_signatures() {
        let (a, b, c) = (signer("a", 1), signer("b", 2), signer("c", 3));
        let text = "shared text\n";
        let sig_line = |s: &NoteSigner| s.sign(text).unwrap()[text.len() + 1..].to_owned();
        let note = format!("{text}\n{}{}", sig_line(&a), sig_line(&b));
        for s in [&a, &b] {
            let v = NoteVerifier::parse(&s.verifier_key()).unwrap();
            assert_eq!(v.verify(&note).unwrap(), text);
        }
        let vc = NoteVerifier::parse(&c.verifier_key()).unwrap();
        assert!(matches!(
            vc.verify(&note),
            Err(NoteError::NoKnownSignature(_))
        ));

        // Same name, other key: unknown, hence ignored rather than failed.
        let impostor = signer("a", 9);
        let note = format!("{text}\n{}{}", sig_line(&impostor), sig_line(&a));
        let va = NoteVerifier::parse(&a.verifier_key()).unwrap();
        assert_eq!(va.verify(&note).unwrap(), text);

        // A bad signature claiming the trusted key sinks the whole note.
        let forged = sig_line(&a).replace(&sig_line(&a)[5..9], "AAAA");
        let note = format!("{text}\n{}{forged}", sig_line(&b));
        assert!(va.verify(&note).is_err());

        let many: String = (0..=MAX_SIGNATURES).map(|_| sig_line(&b)).collect();
        assert_eq!(
            va.verify(&format!("{text}\n{many}")),
            Err(NoteError::TooManySignatures)
        );
    }

    #[test]
    fn malformed_notes_are_rejected() {
        let s = signer("log", 4);
        let v = NoteVerifier::parse(&s.verifier_key()).unwrap();
        let good = s.sign("t\n").unwrap();
        let line = &good[3..];
        for bad in [
            String::new(),
            "t\n".to_owned(),
            format!("t\n{line}"),
            format!("t\n\n{}", line.trim_end()),
            format!("t\n\n{line}\n"),
            format!("t\n\n{line}garbage\n"),
            format!("t\n\n{}", line.replacen("\u{2014} ", "- ", 1)),
            format!("t\n\n{}", line.replacen(" ", "  ", 1)),
            format!("t\n\n{}", line.replace('\n', "=\n")),
            format!("t\x01\n\n{line}"),
            "t\n\n\u{2014} log AAAA\n".to_owned(),
            "t\n\n\u{2014} lo+g AAAAAA==\n".to_owned(),
        ] {
            assert!(v.verify(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_text_and_names_are_rejected() {
        let s = signer("log", 5);
        assert!(s.sign("no newline").is_err());
        assert!(s.sign("").is_err());
        assert!(s.sign("tab\there\n").is_err());
        for name in ["", "a b", "a+b", "a\u{a0}b", "a\nb"] {
            assert_eq!(
                NoteSigner::from_seed(name, &[0; 32]).unwrap_err(),
                NoteError::InvalidKeyName,
                "{name:?}"
            );
        }
    }

    #[test]
    fn verifier_key_parsing() {
        let (_, vkey) = example();
        let (name_id, key) = vkey.rsplit_once('+').unwrap();
        assert_eq!(
            NoteVerifier::parse(&vkey.replace("c74f20a3", "c74f20a4")),
            Err(NoteError::KeyIdMismatch)
        );
        assert!(NoteVerifier::parse(&vkey.replace("c74f20a3", "C74F20A3")).is_ok());
        assert!(NoteVerifier::parse(&vkey.replace("c74f20a3", "c74f20a")).is_err());
        assert!(NoteVerifier::parse(&format!("{vkey}+x")).is_err());
        assert!(NoteVerifier::parse(name_id).is_err());
        let mut raw = STANDARD.decode(key).unwrap();
        raw[0] = 0x02;
        assert_eq!(
            NoteVerifier::parse(&format!("{name_id}+{}", STANDARD.encode(&raw))),
            Err(NoteError::UnsupportedAlgorithm(2))
        );
        raw[0] = 0x01;
        raw.pop();
        assert!(NoteVerifier::parse(&format!("{name_id}+{}", STANDARD.encode(&raw))).is_err());
        assert!(NoteVerifier::parse(&format!("{name_id}+!!!!")).is_err());
    }

    #[test]
    fn checkpoint_round_trip_and_signing() {
        let cp = Checkpoint {
            origin: "coffre.example/log".into(),
            size: 20_852_163,
            root: [0xab; 32],
        };
        let text = cp.to_text();
        assert_eq!(
            text,
            format!(
                "coffre.example/log\n20852163\n{}\n",
                STANDARD.encode([0xab; 32])
            )
        );
        assert_eq!(Checkpoint::parse(&text).unwrap(), cp);

        let s = signer("coffre.example/log", 6);
        let v = NoteVerifier::parse(&s.verifier_key()).unwrap();
        let note = s.sign(&text).unwrap();
        assert_eq!(Checkpoint::parse(&v.verify(&note).unwrap()).unwrap(), cp);

        let empty = Checkpoint {
            origin: "o".into(),
            size: 0,
            root: [0; 32],
        };
        assert_eq!(Checkpoint::parse(&empty.to_text()).unwrap(), empty);
        let max = Checkpoint {
            size: u64::MAX,
            ..empty.clone()
        };
        assert_eq!(Checkpoint::parse(&max.to_text()).unwrap(), max);
    }

    #[test]
    fn checkpoint_parse_is_strict() {
        let root = STANDARD.encode([7u8; 32]);
        let ok = format!("o\n12\n{root}\nextension one\next two\n");
        assert_eq!(Checkpoint::parse(&ok).unwrap().size, 12);
        for bad in [
            format!("o\n12\n{root}"),
            format!("o\n12\n{root}\n\n"),
            format!("o\n12\n{root}\n\nx\n"),
            "o\n12\n".to_owned(),
            format!("\n12\n{root}\n"),
            format!("o\n012\n{root}\n"),
            format!("o\n00\n{root}\n"),
            format!("o\n+12\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            format!("o\n 12\n{root}\n"),
            format!("o\n\n{root}\n"),
            format!("o\n18446744073709551616\n{root}\n"),
            format!("o\n12\n{}\n", STANDARD.encode([7u8; 31])),
            format!("o\n12\n{}\n", STANDARD.encode([7u8; 33])),
            format!("o\n12\n{}\n", root.trim_end_matches('=')),
            "o\n12\n!!!!\n".to_owned(),
        ] {
            assert!(Checkpoint::parse(&bad).is_err(), "{bad:?}");
        }
    }
}
