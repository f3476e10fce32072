//! Keyed pseudonyms: stable, non-reversible identifiers derived from sensitive values.
//!
//! Owns: `KeySet::pseudonym`, i.e. lowercase hex of
//! `HMAC-SHA256(pseudonym_key, be64(len(domain)) || domain || value)`. Used to look up an
//! OpenID `sub` without storing it in clear, and for per-partner pseudonyms (domain =
//! partner id), so two partners cannot join their data on a shared identifier.
//! Must never: use a plain (unkeyed) hash, which anyone could recompute by brute force over
//! the small space of identifiers; mix domains without the length prefix; expose the key.
//!
//! The output is a lookup key, not a secret: comparing it in variable time is fine.

use ring::hmac;

use super::KeySet;

impl KeySet {
    /// Deterministic pseudonym of `value` within `domain` (64 lowercase hex chars).
    pub fn pseudonym(&self, domain: &str, value: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.pseudonym_key());
        let mut ctx = hmac::Context::with_key(&key);
        // Length prefix: ("ab", "c") and ("a", "bc") must not collide.
        ctx.update(&(domain.len() as u64).to_be_bytes());
        ctx.update(domain.as_bytes());
        ctx.update(value);
        hex::encode(ctx.sign().as_ref())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_domain_separated_and_keyed() {
        let set = KeySet::generate_in_memory().unwrap();
        let p = set.pseudonym("oidc-sub", b"user-123");
        assert_eq!(p.len(), 64);
        assert!(
            p.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(p, set.pseudonym("oidc-sub", b"user-123"));
        assert_ne!(p, set.pseudonym("partner-a", b"user-123"));
        assert_ne!(p, set.pseudonym("oidc-sub", b"user-124"));
        assert_ne!(set.pseudonym("ab", b"c"), set.pseudonym("a", b"bc"));
        let other = KeySet::generate_in_memory().unwrap();
        assert_ne!(p, other.pseudonym("oidc-sub", b"user-123"));
    }

    #[test]
    fn matches_the_documented_construction() {
        let set = KeySet::generate_in_memory().unwrap();
        let key = hmac::Key::new(hmac::HMAC_SHA256, set.pseudonym_key());
        let mut msg = 3u64.to_be_bytes().to_vec();
        msg.extend_from_slice(b"dom");
        msg.extend_from_slice(b"value");
        let expected = hex::encode(hmac::sign(&key, &msg).as_ref());
        assert_eq!(set.pseudonym("dom", b"value"), expected);
    }
}
