//! Mandates in the Aidants Connect vocabulary: démarches, durations, the
//! state of an authorisation at a given time, and TOTP codes (RFC 6238) for
//! the aidants' step-up. Pure: no I/O, time passed in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::category::Categories;
use super::{Demarche, Timestamp};

pub const BUILTIN_DEMARCHES: &str = include_str!("../../policies/demarches.toml");

/// Version of the mandate text the resident confirms and the attestation
/// carries; change it when the text changes.
pub const TEMPLATE_VERSION: &str = "mandat-2026-11";

/// The durations Aidants Connect offers, in days.
pub const DURATIONS: [i64; 4] = [1, 31, 182, 365];

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DemarcheDef {
    pub label_fr: String,
    pub description_fr: String,
    pub label_en: String,
    /// Data categories an aidant may read and write within this démarche.
    pub categories: Vec<String>,
}

/// `policies/demarches.toml`, checked: every démarche present, known
/// categories only, no special (health) category.
#[derive(Clone, Debug)]
pub struct Demarches {
    defs: BTreeMap<String, DemarcheDef>,
}

impl Demarches {
    pub fn parse(text: &str, categories: &Categories) -> Result<Self, String> {
        let defs: BTreeMap<String, DemarcheDef> = super::parse_policy(text)?;
        for code in defs.keys() {
            if Demarche::parse(code).is_none() {
                return Err(format!("unknown démarche `{code}`"));
            }
        }
        for d in Demarche::ALL {
            let def = defs
                .get(d.as_str())
                .ok_or_else(|| format!("démarche `{}` is missing", d.as_str()))?;
            for c in &def.categories {
                if categories.category(c).is_err() {
                    return Err(format!("démarche `{}`: unknown category `{c}`", d.as_str()));
                }
                if categories.is_special(c) {
                    return Err(format!(
                        "démarche `{}`: special category `{c}` cannot be reached under a mandate",
                        d.as_str()
                    ));
                }
            }
        }
        Ok(Self { defs })
    }

    pub fn get(&self, d: Demarche) -> Option<&DemarcheDef> {
        self.defs.get(d.as_str())
    }

    pub fn all(&self) -> impl Iterator<Item = (&str, &DemarcheDef)> {
        self.defs.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether `demarche` lets an aidant reach `category`.
    pub fn covers(&self, demarche: Demarche, category: &str) -> bool {
        self.get(demarche)
            .is_some_and(|d| d.categories.iter().any(|c| c == category))
    }
}

/// Parses a comma-separated (or JSON list of) démarche codes, refusing
/// unknown ones and duplicates; sorted.
pub fn parse_demarches<'a>(
    codes: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Demarche>, String> {
    let mut out = Vec::new();
    for code in codes {
        let code = code.trim();
        if code.is_empty() {
            continue;
        }
        let d = Demarche::parse(code).ok_or_else(|| {
            format!(
                "unknown démarche `{}`",
                code.chars().take(20).collect::<String>()
            )
        })?;
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out.sort();
    Ok(out)
}

/// The state of one authorisation at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthorisationState {
    Active,
    Expired,
    Revoked,
}

impl AuthorisationState {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorisationState::Active => "active",
            AuthorisationState::Expired => "expired",
            AuthorisationState::Revoked => "revoked",
        }
    }
}

pub fn authorisation_state(
    expires_at: Timestamp,
    revoked_at: Option<Timestamp>,
    now: Timestamp,
) -> AuthorisationState {
    match revoked_at {
        Some(r) if r <= now => AuthorisationState::Revoked,
        _ if expires_at <= now => AuthorisationState::Expired,
        _ => AuthorisationState::Active,
    }
}

/// TOTP (RFC 6238): HMAC-SHA1, 30-second steps, 6 digits — what the
/// Aidants Connect cards and common authenticator apps produce. The codes
/// and their comparison are `totp-rs`'s; coffre's rules sit on top: one
/// step either side, never a step already used, time passed in (the
/// library's own clock is never read), lockout after failures
/// (`service::mandates::check_totp`).
pub mod totp {
    use super::*;
    use totp_rs::{Algorithm, TOTP};

    pub const STEP_SECS: i64 = 30;
    pub const DIGITS: usize = 6;
    /// Failed codes before the device is locked, and for how long.
    pub const MAX_FAILURES: i64 = 5;
    pub const LOCK_SECS: i64 = 15 * 60;

    /// A generator for one secret, checking one step at a time (no skew:
    /// the window is ours). `new_unchecked`: a card's factory secret may be
    /// shorter than the 128 bits the library asks of new secrets; coffre's
    /// own are 160.
    fn generator(secret: &[u8]) -> TOTP {
        TOTP::new_unchecked(
            Algorithm::SHA1,
            DIGITS,
            0,
            STEP_SECS.unsigned_abs(),
            secret.to_vec(),
        )
    }

    /// The first second of `step`; none before the epoch.
    fn start_of(step: i64) -> Option<u64> {
        u64::try_from(step.checked_mul(STEP_SECS)?).ok()
    }

    pub fn step_at(now: Timestamp) -> i64 {
        now.div_euclid(STEP_SECS)
    }

    /// The code of time step `step` (a card's display; tests).
    pub fn code(secret: &[u8], step: i64) -> String {
        generator(secret).generate(start_of(step).unwrap_or(0))
    }

    /// The step whose code is `submitted`, among the current one and one
    /// either side (clock drift), and newer than `last_step` (no replay).
    pub fn matching_step(
        secret: &[u8],
        submitted: &str,
        now: Timestamp,
        last_step: i64,
    ) -> Option<i64> {
        let submitted = submitted.trim();
        if submitted.len() != DIGITS || !submitted.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let totp = generator(secret);
        let current = step_at(now);
        let mut found = None;
        // Every candidate is checked (in constant time by the library), so
        // timing does not tell which matched.
        for step in [current - 1, current, current + 1] {
            let ok = start_of(step).is_some_and(|t| totp.check(submitted, t));
            if ok && step > last_step && found.is_none() {
                found = Some(step);
            }
        }
        found
    }

    /// RFC 4648 base32 without padding, for `otpauth://` URIs.
    pub fn base32(secret: &[u8]) -> String {
        generator(secret).get_secret_base32()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vectors() {
        // RFC 6238 appendix B, SHA-1, 8 digits there; the last 6 here.
        let secret = b"12345678901234567890";
        for (time, expected) in [
            (59_i64, 94_287_082_u32),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
        ] {
            assert_eq!(
                totp::code(secret, totp::step_at(time)),
                format!("{:06}", expected % 1_000_000),
                "{time}"
            );
        }
    }

    #[test]
    fn codes_match_one_step_either_side_and_never_twice() {
        let secret = b"12345678901234567890";
        let now = 1_795_867_200;
        let step = totp::step_at(now);
        let code = |s| totp::code(secret, s);
        assert_eq!(totp::matching_step(secret, &code(step), now, 0), Some(step));
        assert_eq!(
            totp::matching_step(secret, &code(step - 1), now, 0),
            Some(step - 1)
        );
        assert_eq!(
            totp::matching_step(secret, &code(step + 1), now, 0),
            Some(step + 1)
        );
        assert_eq!(totp::matching_step(secret, &code(step - 2), now, 0), None);
        // Already used: refused.
        assert_eq!(totp::matching_step(secret, &code(step), now, step), None);
        assert_eq!(totp::matching_step(secret, "12345", now, 0), None);
        assert_eq!(totp::matching_step(secret, "abcdef", now, 0), None);
    }

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(totp::base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(totp::base32(b"f"), "MY");
        assert_eq!(
            totp::base32(b"12345678901234567890"),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn states_follow_time_and_revocation() {
        use AuthorisationState::*;
        assert_eq!(authorisation_state(100, None, 50), Active);
        assert_eq!(authorisation_state(100, None, 100), Expired);
        assert_eq!(authorisation_state(100, Some(60), 70), Revoked);
        assert_eq!(authorisation_state(100, Some(60), 200), Revoked);
    }

    #[test]
    fn the_builtin_demarches_are_complete_and_reach_no_health_data() {
        let cats = Categories::builtin().unwrap();
        let d = Demarches::parse(BUILTIN_DEMARCHES, &cats).unwrap();
        assert!(d.covers(Demarche::Logement, "housing"));
        assert!(!d.covers(Demarche::Social, "health"));
        let bad = BUILTIN_DEMARCHES.replace(
            "categories = [\"identity\", \"contact\", \"culture\"]",
            "categories = [\"health\"]",
        );
        assert!(
            Demarches::parse(&bad, &cats)
                .unwrap_err()
                .contains("special")
        );
    }
}
