//! Sealing a server-side value with a key that only the browser holds.
//!
//! Owns: [`seal_for_bearer`] and [`open_for_bearer`]. The key is derived with
//! HKDF-SHA256 from a random cookie value (256 bits) that the database never
//! stores (it keeps only its SHA-256); the AEAD is ChaCha20-Poly1305 with a
//! random nonce, and the purpose is bound in as associated data. Used for the
//! ID token kept for logout (`id_token_hint`) and for the nonce and PKCE
//! verifier of a login under way: a copy of the database alone opens neither.
//! Must never: derive from anything stored server-side, or reuse a key across
//! purposes without binding the purpose.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

use super::CryptoError;

const SALT: &[u8] = b"coffre/bearer-seal/v1";

fn key(bearer: &str, purpose: &str) -> Result<LessSafeKey, CryptoError> {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT);
    let prk = salt.extract(bearer.as_bytes());
    let info = [purpose.as_bytes()];
    let okm = prk
        .expand(&info, &aead::CHACHA20_POLY1305)
        .map_err(|_| CryptoError::Internal)?;
    let unbound = UnboundKey::from(okm);
    Ok(LessSafeKey::new(unbound))
}

/// Seals `plaintext` for whoever holds `bearer`; base64url(nonce ‖ ciphertext).
pub fn seal_for_bearer(
    bearer: &str,
    purpose: &str,
    plaintext: &[u8],
) -> Result<String, CryptoError> {
    let key = key(bearer, purpose)?;
    let mut nonce = [0u8; aead::NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| CryptoError::Random)?;
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(purpose.as_bytes()),
        &mut buf,
    )
    .map_err(|_| CryptoError::Internal)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    Ok(URL_SAFE_NO_PAD.encode(out))
}

/// Opens what [`seal_for_bearer`] sealed; `None` for another bearer, another
/// purpose, or altered bytes.
pub fn open_for_bearer(bearer: &str, purpose: &str, sealed: &str) -> Option<Vec<u8>> {
    let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
    if bytes.len() < aead::NONCE_LEN + aead::CHACHA20_POLY1305.tag_len() {
        return None;
    }
    let (nonce, ct) = bytes.split_at(aead::NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let key = key(bearer, purpose).ok()?;
    let mut buf = ct.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut buf)
        .ok()?;
    Some(plain.to_vec())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_bearer_and_purpose_open() {
        let sealed = seal_for_bearer("cookie-a", "id_token", b"eyJ...").unwrap();
        assert_eq!(
            open_for_bearer("cookie-a", "id_token", &sealed).unwrap(),
            b"eyJ..."
        );
        assert!(open_for_bearer("cookie-b", "id_token", &sealed).is_none());
        assert!(open_for_bearer("cookie-a", "login", &sealed).is_none());
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(open_for_bearer("cookie-a", "id_token", &tampered).is_none());
        assert!(open_for_bearer("cookie-a", "id_token", "%%").is_none());
        // A fresh nonce each time.
        assert_ne!(
            sealed,
            seal_for_bearer("cookie-a", "id_token", b"eyJ...").unwrap()
        );
    }
}
