//! Compact JWS signed with the vault's Ed25519 key (receipts, attestations,
//! access tokens), through `jsonwebtoken` (RustCrypto backend). The `kid` is
//! the RFC 7638 thumbprint published in `/.well-known/jwks.json`.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use zeroize::Zeroizing;

use super::{CryptoError, KeySet};

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410): the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Signs `claims` as a compact JWS (`alg` EdDSA, `typ` JWT, `kid`).
pub fn sign<T: Serialize>(set: &KeySet, claims: &T) -> Result<String, CryptoError> {
    let mut der = Zeroizing::new(Vec::with_capacity(48));
    der.extend_from_slice(&PKCS8_ED25519_PREFIX);
    der.extend_from_slice(set.signing_seed());
    let key = EncodingKey::from_ed_der(&der);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(super::jwks::key_id(&set.signing_public_key()));
    jsonwebtoken::encode(&header, claims, &key).map_err(|_| CryptoError::Internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};

    #[test]
    fn signed_tokens_verify_with_the_published_jwks() {
        let set = KeySet::generate_in_memory().unwrap();
        let jws = sign(&set, &serde_json::json!({"hello": "monde"})).unwrap();
        let jwks: JwkSet = serde_json::from_value(super::super::jwks(&set)).unwrap();
        let header = jsonwebtoken::decode_header(&jws).unwrap();
        let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
        let key = DecodingKey::from_jwk(jwk).unwrap();
        let mut v = Validation::new(Algorithm::EdDSA);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(&jws, &key, &v).unwrap();
        assert_eq!(data.claims["hello"], "monde");
        // One changed character of the payload breaks it.
        let mut parts: Vec<String> = jws.split('.').map(str::to_string).collect();
        parts[1] = parts[1].replacen('e', "f", 1);
        assert!(jsonwebtoken::decode::<serde_json::Value>(&parts.join("."), &key, &v).is_err());
    }
}
