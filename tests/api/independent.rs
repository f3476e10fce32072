//! An independent verifier of the audit log: it checks the signed checkpoint
//! with the published key, and the inclusion and consistency proofs served
//! by the routes, with code written from the specifications alone.

use axum::http::Method;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::support::{TestApp, each_backend};

use verifier::{Checkpoint, Hash, VerifierKey};

const AWA: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000001";
const AUDITOR: &str = "a1d00000-0000-4000-8000-000000000005";

/// A verifier written from RFC 9162 (§2.1.1 hashing, §2.1.3.2 inclusion,
/// §2.1.4.2 consistency), C2SP signed-note and C2SP tlog-checkpoint.
///
/// It deliberately shares no code with coffre: nothing here uses a `coffre`
/// item, and nothing is copied from `src/audit/`. Its only dependencies are
/// `ring` (SHA-256, Ed25519), `base64` and `serde_json`.
pub(crate) mod verifier {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use ring::digest::{SHA256, digest};
    use ring::signature::{ED25519, UnparsedPublicKey};

    pub type Hash = [u8; 32];

    /// The algorithm byte of an Ed25519 key in a signed-note verifier key.
    const ALG_ED25519: u8 = 0x01;
    /// U+2014 EM DASH, then a space: the start of every signature line.
    const SIG_PREFIX: &str = "\u{2014} ";

    fn sha256(parts: &[&[u8]]) -> Hash {
        let mut buf = Vec::new();
        for p in parts {
            buf.extend_from_slice(p);
        }
        let d = digest(&SHA256, &buf);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// RFC 9162 §2.1.1: MTH({d(0)}) = SHA-256(0x00 || d(0)).
    pub fn leaf_hash(leaf: &[u8]) -> Hash {
        sha256(&[&[0x00], leaf])
    }

    /// RFC 9162 §2.1.1: SHA-256(0x01 || left || right).
    pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
        sha256(&[&[0x01], left, right])
    }

    /// RFC 9162 §2.1.1: the Merkle Tree Hash of a list of leaves, by its
    /// recursive definition (k = the largest power of two smaller than n).
    pub fn tree_hash(leaves: &[Vec<u8>]) -> Hash {
        match leaves.len() {
            0 => sha256(&[]),
            1 => leaf_hash(&leaves[0]),
            n => {
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                node_hash(&tree_hash(&leaves[..k]), &tree_hash(&leaves[k..]))
            }
        }
    }

    pub fn decode_hash(b64: &str) -> Result<Hash, String> {
        let raw = STANDARD
            .decode(b64)
            .map_err(|e| format!("bad base64 hash {b64:?}: {e}"))?;
        raw.as_slice()
            .try_into()
            .map_err(|_| format!("hash {b64:?} is {} bytes, not 32", raw.len()))
    }

    /// A proof as served: a JSON array of base64 hashes.
    pub fn decode_proof(v: &serde_json::Value) -> Result<Vec<Hash>, String> {
        v.as_array()
            .ok_or_else(|| format!("proof is not an array: {v}"))?
            .iter()
            .map(|h| {
                h.as_str()
                    .ok_or_else(|| format!("proof element is not a string: {h}"))
                    .and_then(decode_hash)
            })
            .collect()
    }

    /// RFC 9162 §2.1.3.2: verifies that `leaf` (a leaf hash) is at
    /// `leaf_index` in the tree of `tree_size` whose root is `root`.
    pub fn verify_inclusion(
        leaf_index: u64,
        tree_size: u64,
        leaf: &Hash,
        proof: &[Hash],
        root: &Hash,
    ) -> Result<(), String> {
        // 1. leaf_index must be within the tree.
        if leaf_index >= tree_size {
            return Err(format!("leaf index {leaf_index} ≥ tree size {tree_size}"));
        }
        // 2-3.
        let mut fn_ = leaf_index;
        let mut sn = tree_size - 1;
        let mut r = *leaf;
        // 4.
        for p in proof {
            // a.
            if sn == 0 {
                return Err("inclusion proof is too long".into());
            }
            // b.
            if fn_ & 1 == 1 || fn_ == sn {
                r = node_hash(p, &r);
                if fn_ & 1 == 0 {
                    while fn_ & 1 == 0 && fn_ != 0 {
                        fn_ >>= 1;
                        sn >>= 1;
                    }
                }
            } else {
                r = node_hash(&r, p);
            }
            // c.
            fn_ >>= 1;
            sn >>= 1;
        }
        // 5.
        if sn != 0 {
            return Err("inclusion proof is too short".into());
        }
        if &r != root {
            return Err("inclusion proof does not lead to the root".into());
        }
        Ok(())
    }

    /// RFC 9162 §2.1.4.2: verifies that the tree of `first` leaves with root
    /// `first_hash` is a prefix of the tree of `second` leaves with root
    /// `second_hash`.
    pub fn verify_consistency(
        first: u64,
        second: u64,
        first_hash: &Hash,
        second_hash: &Hash,
        proof: &[Hash],
    ) -> Result<(), String> {
        if first == 0 || first > second {
            return Err(format!("no consistency proof from {first} to {second}"));
        }
        if first == second {
            // Same tree: the proof is empty and the roots are equal.
            return if proof.is_empty() && first_hash == second_hash {
                Ok(())
            } else {
                Err("equal sizes but a non-empty proof or different roots".into())
            };
        }
        // 1.
        if proof.is_empty() {
            return Err("empty consistency proof".into());
        }
        // 2.
        let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
        if first.is_power_of_two() {
            path.push(*first_hash);
        }
        path.extend_from_slice(proof);
        // 3.
        let mut fn_ = first - 1;
        let mut sn = second - 1;
        // 4.
        while fn_ & 1 == 1 {
            fn_ >>= 1;
            sn >>= 1;
        }
        // 5.
        let mut fr = path[0];
        let mut sr = path[0];
        // 6.
        for c in &path[1..] {
            // a.
            if sn == 0 {
                return Err("consistency proof is too long".into());
            }
            // b.
            if fn_ & 1 == 1 || fn_ == sn {
                fr = node_hash(c, &fr);
                sr = node_hash(c, &sr);
                if fn_ & 1 == 0 {
                    while fn_ & 1 == 0 && fn_ != 0 {
                        fn_ >>= 1;
                        sn >>= 1;
                    }
                }
            } else {
                sr = node_hash(&sr, c);
            }
            // c.
            fn_ >>= 1;
            sn >>= 1;
        }
        // 7.
        if sn != 0 {
            return Err("consistency proof is too short".into());
        }
        if &fr != first_hash {
            return Err("consistency proof does not lead to the first root".into());
        }
        if &sr != second_hash {
            return Err("consistency proof does not lead to the second root".into());
        }
        Ok(())
    }

    /// A signed-note Ed25519 verifier key.
    #[derive(Clone, Debug)]
    pub struct VerifierKey {
        pub name: String,
        pub key_id: [u8; 4],
        pub public_key: [u8; 32],
    }

    /// signed-note: the key id is the first 4 bytes of
    /// SHA-256(name || "\n" || alg || public key).
    pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
        let h = sha256(&[name.as_bytes(), b"\n", &[ALG_ED25519], public_key]);
        [h[0], h[1], h[2], h[3]]
    }

    fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && !name.contains('+')
            && !name.chars().any(|c| c.is_whitespace() || c.is_control())
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    impl VerifierKey {
        /// The textual form `<name>+<hex key id>+<base64(alg || key)>`.
        pub fn encode(&self) -> String {
            let mut k = vec![ALG_ED25519];
            k.extend_from_slice(&self.public_key);
            format!("{}+{}+{}", self.name, hex(&self.key_id), STANDARD.encode(k))
        }

        /// Parses `<name>+<hex key id>+<base64(0x01 || 32-byte key)>`,
        /// checking that the key id matches the name and key.
        pub fn parse(s: &str) -> Result<VerifierKey, String> {
            let s = s.strip_suffix('\n').unwrap_or(s);
            let mut parts = s.splitn(3, '+');
            let (Some(name), Some(id_hex), Some(key_b64)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("verifier key {s:?} is not name+id+key"));
            };
            if !valid_name(name) {
                return Err(format!("bad key name {name:?}"));
            }
            if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("bad key id {id_hex:?}"));
            }
            let id = u32::from_str_radix(id_hex, 16)
                .map_err(|e| format!("bad key id {id_hex:?}: {e}"))?
                .to_be_bytes();
            let raw = STANDARD
                .decode(key_b64)
                .map_err(|e| format!("bad key base64: {e}"))?;
            let (Some(&alg), Some(key)) = (raw.first(), raw.get(1..)) else {
                return Err("empty key".into());
            };
            if alg != ALG_ED25519 {
                return Err(format!("key algorithm {alg:#04x} is not Ed25519"));
            }
            let public_key: [u8; 32] = key
                .try_into()
                .map_err(|_| format!("Ed25519 key is {} bytes, not 32", key.len()))?;
            if key_id(name, &public_key) != id {
                return Err("key id does not match the name and key".into());
            }
            Ok(VerifierKey {
                name: name.to_string(),
                key_id: id,
                public_key,
            })
        }
    }

    /// Opens a signed note: returns its text (ending in "\n") when at least
    /// one signature line is by `key` and every such line verifies.
    pub fn open_note(note: &str, key: &VerifierKey) -> Result<String, String> {
        // The text ends with "\n"; a blank line separates it from the
        // signatures, which never contain a blank line: split at the last
        // "\n\n".
        let split = note
            .rfind("\n\n")
            .ok_or("note has no blank line before its signatures")?;
        let text = &note[..=split];
        let sigs = &note[split + 2..];
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err("signature block is empty or does not end in a newline".into());
        }
        let mut verified = 0;
        for line in sigs[..sigs.len() - 1].split('\n') {
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or_else(|| format!("malformed signature line {line:?}"))?;
            let (name, sig_b64) = rest
                .split_once(' ')
                .ok_or_else(|| format!("malformed signature line {line:?}"))?;
            if !valid_name(name) || sig_b64.contains(' ') {
                return Err(format!("malformed signature line {line:?}"));
            }
            let sig = STANDARD
                .decode(sig_b64)
                .map_err(|e| format!("bad signature base64: {e}"))?;
            if sig.len() < 5 {
                return Err("signature is too short".into());
            }
            if name != key.name || sig[..4] != key.key_id {
                // Another signer's line: not ours to check.
                continue;
            }
            if sig.len() != 4 + 64 {
                return Err(format!("Ed25519 signature is {} bytes", sig.len() - 4));
            }
            UnparsedPublicKey::new(&ED25519, &key.public_key)
                .verify(text.as_bytes(), &sig[4..])
                .map_err(|_| format!("signature by {name} does not verify"))?;
            verified += 1;
        }
        if verified == 0 {
            return Err(format!("no signature by {}+{}", key.name, hex(&key.key_id)));
        }
        Ok(text.to_string())
    }

    /// A C2SP tlog-checkpoint body.
    #[derive(Clone, Debug)]
    pub struct Checkpoint {
        pub origin: String,
        pub size: u64,
        pub root: Hash,
    }

    /// Parses a checkpoint text: origin line, decimal size line, base64 root
    /// hash line, then optional extension lines.
    pub fn parse_checkpoint(text: &str) -> Result<Checkpoint, String> {
        let body = text
            .strip_suffix('\n')
            .ok_or("checkpoint text does not end in a newline")?;
        let lines: Vec<&str> = body.split('\n').collect();
        let [origin, size, root, ..] = lines.as_slice() else {
            return Err("checkpoint has fewer than three lines".into());
        };
        if origin.is_empty() {
            return Err("empty origin".into());
        }
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(format!("tree size {size:?} is not canonical decimal"));
        }
        let size = size.parse().map_err(|e| format!("tree size: {e}"))?;
        let root = decode_hash(root)?;
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
        })
    }

    /// Opens a signed checkpoint with `key`, then parses it.
    pub fn verify_checkpoint(note: &str, key: &VerifierKey) -> Result<Checkpoint, String> {
        parse_checkpoint(&open_note(note, key)?)
    }
}

fn flip_bit(h: &Hash) -> Hash {
    let mut h = *h;
    h[7] ^= 0x10;
    h
}

pub(crate) async fn checkpoint(app: &TestApp) -> String {
    let res = app.get("/api/v1/audit/checkpoint").await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(
        res.header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain"),
        "{:?}",
        res.headers
    );
    res.text()
}

pub(crate) async fn published_key(app: &TestApp) -> VerifierKey {
    let res = app.get("/api/v1/audit/key").await;
    assert_eq!(res.status, 200, "{}", res.text());
    VerifierKey::parse(&res.text()).unwrap_or_else(|e| panic!("{e}: {:?}", res.text()))
}

pub(crate) async fn inclusion(app: &TestApp, leaf_index: u64, tree_size: u64) -> Vec<Hash> {
    let res = app
        .get(&format!(
            "/api/v1/audit/proofs/inclusion?leaf_index={leaf_index}&tree_size={tree_size}"
        ))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let v = res.json();
    assert_eq!(v["leaf_index"], leaf_index, "{v}");
    assert_eq!(v["tree_size"], tree_size, "{v}");
    verifier::decode_proof(&v["proof"]).unwrap()
}

async fn consistency(app: &TestApp, from: u64, to: u64) -> Vec<Hash> {
    let res = app
        .get(&format!(
            "/api/v1/audit/proofs/consistency?from={from}&to={to}"
        ))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let v = res.json();
    assert_eq!(v["from"], from, "{v}");
    assert_eq!(v["to"], to, "{v}");
    verifier::decode_proof(&v["proof"]).unwrap()
}

/// Some resident activity, each request adding to the log.
async fn activity(app: &TestApp, reads: usize) {
    let awa = app.login(AWA).await;
    for _ in 0..reads {
        let res = app
            .as_user(&awa, Method::GET, "/api/v1/me/data", None)
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
}

#[tokio::test]
async fn independent_verifier_checks_checkpoint_and_proofs() {
    each_backend(|app| async move {
        activity(&app, 8).await;
        let awa = app.login(AWA).await;
        let res = app
            .as_user(
                &awa,
                Method::PUT,
                "/api/v1/me/data/contact",
                Some(json!({"phone": "0612345678"})),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());

        app.clock.advance(1);
        let key = published_key(&app).await;
        let note_a = checkpoint(&app).await;
        let a = verifier::verify_checkpoint(&note_a, &key)
            .unwrap_or_else(|e| panic!("checkpoint A: {e}\n{note_a}"));
        assert!(a.size >= 10, "only {} entries in {note_a}", a.size);

        activity(&app, 4).await;
        app.clock.advance(1);
        let note_b = checkpoint(&app).await;
        let b: Checkpoint = verifier::verify_checkpoint(&note_b, &key)
            .unwrap_or_else(|e| panic!("checkpoint B: {e}\n{note_b}"));
        assert!(b.size > a.size, "{note_a}\n{note_b}");
        assert_eq!(a.origin, b.origin);
        let (m, n) = (a.size, b.size);

        // Every entry of B, as the auditor sees it (that read itself is
        // logged after n).
        let auditor = app.login(AUDITOR).await;
        let res = app
            .as_user(
                &auditor,
                Method::GET,
                &format!("/api/v1/audit/entries?from=0&to={n}"),
                None,
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let entries = res.json()["entries"].as_array().unwrap().clone();
        assert_eq!(entries.len() as u64, n);
        let leaves: Vec<Vec<u8>> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                assert_eq!(e["index"], i as u64, "{e}");
                STANDARD.decode(e["leaf"].as_str().unwrap()).unwrap()
            })
            .collect();

        // The roots are the Merkle Tree Hashes of the entries as served.
        assert_eq!(verifier::tree_hash(&leaves), b.root, "root of B");
        assert_eq!(
            verifier::tree_hash(&leaves[..m as usize]),
            a.root,
            "root of A"
        );

        // Inclusion of every entry in B's tree.
        for (i, leaf) in leaves.iter().enumerate() {
            let i = i as u64;
            let proof = inclusion(&app, i, n).await;
            verifier::verify_inclusion(i, n, &verifier::leaf_hash(leaf), &proof, &b.root)
                .unwrap_or_else(|e| panic!("inclusion of {i} in {n}: {e}"));
        }
        // And of A's entries in A's tree.
        for (i, leaf) in leaves.iter().take(m as usize).enumerate() {
            let i = i as u64;
            let proof = inclusion(&app, i, m).await;
            verifier::verify_inclusion(i, m, &verifier::leaf_hash(leaf), &proof, &a.root)
                .unwrap_or_else(|e| panic!("inclusion of {i} in {m}: {e}"));
        }

        // A is a prefix of B.
        let cproof = consistency(&app, m, n).await;
        verifier::verify_consistency(m, n, &a.root, &b.root, &cproof)
            .unwrap_or_else(|e| panic!("consistency {m} → {n}: {e}"));

        // Every smaller tree too, against roots computed here from the
        // leaves: inclusion of each of its entries, consistency with each
        // larger tree up to n.
        let roots: Vec<Hash> = (0..=n as usize)
            .map(|s| verifier::tree_hash(&leaves[..s]))
            .collect();
        for size in 1..n {
            for i in 0..size {
                let proof = inclusion(&app, i, size).await;
                let leaf = verifier::leaf_hash(&leaves[i as usize]);
                verifier::verify_inclusion(i, size, &leaf, &proof, &roots[size as usize])
                    .unwrap_or_else(|e| panic!("inclusion of {i} in {size}: {e}"));
            }
            for to in size..=n {
                let proof = consistency(&app, size, to).await;
                let (r1, r2) = (&roots[size as usize], &roots[to as usize]);
                verifier::verify_consistency(size, to, r1, r2, &proof)
                    .unwrap_or_else(|e| panic!("consistency {size} → {to}: {e}"));
            }
        }

        // Negative: a flipped bit in any hash of a proof.
        let i = m / 2;
        let leaf = verifier::leaf_hash(&leaves[i as usize]);
        let proof = inclusion(&app, i, n).await;
        assert!(!proof.is_empty());
        for k in 0..proof.len() {
            let mut bad = proof.clone();
            bad[k] = flip_bit(&bad[k]);
            assert!(
                verifier::verify_inclusion(i, n, &leaf, &bad, &b.root).is_err(),
                "inclusion proof with hash {k} flipped verified"
            );
        }
        for k in 0..cproof.len() {
            let mut bad = cproof.clone();
            bad[k] = flip_bit(&bad[k]);
            assert!(
                verifier::verify_consistency(m, n, &a.root, &b.root, &bad).is_err(),
                "consistency proof with hash {k} flipped verified"
            );
        }
        // Truncated or extended proofs, wrong sizes, wrong roots.
        assert!(
            verifier::verify_inclusion(i, n, &leaf, &proof[..proof.len() - 1], &b.root).is_err()
        );
        let mut longer = proof.clone();
        longer.push(b.root);
        assert!(verifier::verify_inclusion(i, n, &leaf, &longer, &b.root).is_err());
        assert!(verifier::verify_inclusion(i, n, &leaf, &proof, &a.root).is_err());
        assert!(verifier::verify_consistency(m, n, &b.root, &b.root, &cproof).is_err());
        assert!(verifier::verify_consistency(m, n, &a.root, &a.root, &cproof).is_err());
        assert!(verifier::verify_consistency(m - 1, n, &a.root, &b.root, &cproof).is_err());

        // Negative: a wrong leaf, another entry's or one changed byte.
        let other = verifier::leaf_hash(&leaves[i as usize + 1]);
        assert!(verifier::verify_inclusion(i, n, &other, &proof, &b.root).is_err());
        let mut tampered = leaves[i as usize].clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x01;
        let tampered = verifier::leaf_hash(&tampered);
        assert!(verifier::verify_inclusion(i, n, &tampered, &proof, &b.root).is_err());
        // Hashing without the 0x00 prefix is not the leaf hash either.
        let unprefixed: Hash = ring::digest::digest(&ring::digest::SHA256, &leaves[i as usize])
            .as_ref()
            .try_into()
            .unwrap();
        assert!(verifier::verify_inclusion(i, n, &unprefixed, &proof, &b.root).is_err());

        // Negative: one changed character in the root line of the note.
        let lines: Vec<&str> = note_b.split('\n').collect();
        let root_line = lines[2];
        let first = root_line.chars().next().unwrap();
        let swapped = if first == 'A' { 'B' } else { 'A' };
        let forged_root = format!("{swapped}{}", &root_line[1..]);
        let mut forged_lines = lines.clone();
        forged_lines[2] = &forged_root;
        let forged = forged_lines.join("\n");
        assert_ne!(forged, note_b);
        assert!(
            verifier::verify_checkpoint(&forged, &key).is_err(),
            "forged checkpoint verified:\n{forged}"
        );
        // The unchanged note still opens (the forgery is the only change).
        assert!(verifier::verify_checkpoint(&note_b, &key).is_ok());
    })
    .await;
}

#[tokio::test]
async fn verifier_rejects_a_key_that_did_not_sign() {
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    each_backend(|app| async move {
        activity(&app, 3).await;
        app.clock.advance(1);
        let key = published_key(&app).await;
        let note = checkpoint(&app).await;
        verifier::verify_checkpoint(&note, &key)
            .unwrap_or_else(|e| panic!("published key: {e}\n{note}"));

        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let other: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
        assert_ne!(other, key.public_key);

        // A well-formed key of the same name: its id differs, so no line of
        // the note is by it.
        let honest = VerifierKey {
            name: key.name.clone(),
            key_id: verifier::key_id(&key.name, &other),
            public_key: other,
        };
        let reparsed = VerifierKey::parse(&honest.encode()).unwrap();
        assert!(
            verifier::verify_checkpoint(&note, &reparsed).is_err(),
            "checkpoint verified with an unrelated key"
        );

        // A key claiming the published id: the Ed25519 check itself fails.
        let impostor = VerifierKey {
            name: key.name.clone(),
            key_id: key.key_id,
            public_key: other,
        };
        assert!(VerifierKey::parse(&impostor.encode()).is_err());
        assert!(
            verifier::verify_checkpoint(&note, &impostor).is_err(),
            "checkpoint verified with a key that did not sign it"
        );
    })
    .await;
}
