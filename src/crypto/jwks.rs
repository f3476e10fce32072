//! The public half of the signing key, as a JWKS (RFC 7517, OKP/Ed25519 per
//! RFC 8037) with an RFC 7638 thumbprint as key id.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::KeySet;

/// RFC 7638 thumbprint of an Ed25519 public key: the key id of our JWS.
pub fn key_id(public_key: &[u8; 32]) -> String {
    let x = URL_SAFE_NO_PAD.encode(public_key);
    // Members in lexicographic order, no whitespace, as RFC 7638 requires.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ))
}

pub fn jwks(set: &KeySet) -> Value {
    let public = set.signing_public_key();
    json!({
        "keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(public),
            "kid": key_id(&public),
            "alg": "EdDSA",
            "use": "sig",
        }]
    })
}
