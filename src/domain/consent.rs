//! The consent lifecycle, as pure rules (time passed in).
//!
//! States follow W3C DPV / ISO/IEC TS 27560: given, refused, withdrawn,
//! expired. The history is append-only; the current state is derived from
//! the last event and the clock (a given consent past its end is expired).

use serde::Serialize;
use utoipa::ToSchema;

use super::Timestamp;
use super::purpose::Purpose;

pub const DAY: i64 = 86_400;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    Given,
    Refused,
    Withdrawn,
    Expired,
}

impl ConsentState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentState::Given => "given",
            ConsentState::Refused => "refused",
            ConsentState::Withdrawn => "withdrawn",
            ConsentState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Given, Self::Refused, Self::Withdrawn, Self::Expired]
            .into_iter()
            .find(|x| x.as_str() == s)
    }

    /// The W3C DPV concept of this state.
    pub fn dpv_iri(self) -> &'static str {
        match self {
            ConsentState::Given => "https://w3id.org/dpv#ConsentGiven",
            ConsentState::Refused => "https://w3id.org/dpv#ConsentRefused",
            ConsentState::Withdrawn => "https://w3id.org/dpv#ConsentWithdrawn",
            ConsentState::Expired => "https://w3id.org/dpv#ConsentExpired",
        }
    }
}

/// The last recorded decision of a resident for one purpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub state: ConsentState,
    pub categories: Vec<String>,
    pub valid_until: Option<Timestamp>,
}

impl Recorded {
    /// The state at `now`: a given consent past its end has expired.
    pub fn effective(&self, now: Timestamp) -> ConsentState {
        match (self.state, self.valid_until) {
            (ConsentState::Given, Some(until)) if until <= now => ConsentState::Expired,
            (s, _) => s,
        }
    }

    /// Whether this consent lets `category` be used at `now`.
    pub fn covers(&self, category: &str, now: Timestamp) -> bool {
        self.effective(now) == ConsentState::Given && self.categories.iter().any(|c| c == category)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentError {
    #[error(
        "this purpose does not rest on consent (legal basis {0}); there is nothing to give or refuse"
    )]
    NotApplicable(&'static str),
    #[error("category `{0}` is not used by this purpose")]
    CategoryOutsidePurpose(String),
    #[error("a consent for this purpose lasts at most {0} days")]
    DurationAboveMaximum(u32),
    #[error("the end of the consent must be in the future")]
    InvalidUntil,
    #[error(
        "this purpose uses special-category data (GDPR art. 9): set \"explicit\": true to consent explicitly"
    )]
    ExplicitRequired,
    #[error("a consent is already given for this purpose; withdraw it first")]
    AlreadyGiven,
    #[error("there is no given consent to withdraw")]
    NotGiven,
}

/// What a resident asks for when giving consent.
#[derive(Clone, Debug, Default)]
pub struct GiveRequest {
    /// Defaults to every category of the purpose.
    pub categories: Option<Vec<String>>,
    /// Defaults to the purpose's maximum duration.
    pub until: Option<Timestamp>,
    /// Required for special-category purposes (art. 9).
    pub explicit: bool,
}

fn consent_based(purpose: &Purpose) -> Result<(), ConsentError> {
    if purpose.legal_basis.needs_consent() {
        Ok(())
    } else {
        Err(ConsentError::NotApplicable(purpose.legal_basis.as_str()))
    }
}

/// Giving (or renewing, or giving again after a withdrawal or expiry).
pub fn give(
    purpose: &Purpose,
    req: &GiveRequest,
    now: Timestamp,
) -> Result<Recorded, ConsentError> {
    consent_based(purpose)?;
    if purpose.special_category && !req.explicit {
        return Err(ConsentError::ExplicitRequired);
    }
    let categories = match &req.categories {
        None => purpose.categories.clone(),
        Some(list) => {
            if list.is_empty() {
                return Err(ConsentError::CategoryOutsidePurpose(String::new()));
            }
            for c in list {
                if !purpose.covers_category(c) {
                    return Err(ConsentError::CategoryOutsidePurpose(
                        c.chars().take(40).collect(),
                    ));
                }
            }
            let mut list = list.clone();
            list.sort();
            list.dedup();
            list
        }
    };
    let max = now + i64::from(purpose.max_consent_days) * DAY;
    let until = req.until.unwrap_or(max);
    if until <= now {
        return Err(ConsentError::InvalidUntil);
    }
    if until > max {
        return Err(ConsentError::DurationAboveMaximum(purpose.max_consent_days));
    }
    Ok(Recorded {
        state: ConsentState::Given,
        categories,
        valid_until: Some(until),
    })
}

/// Refusing: allowed unless a consent is currently given (withdraw instead).
pub fn refuse(
    purpose: &Purpose,
    current: Option<&Recorded>,
    now: Timestamp,
) -> Result<Recorded, ConsentError> {
    consent_based(purpose)?;
    if current.is_some_and(|c| c.effective(now) == ConsentState::Given) {
        return Err(ConsentError::AlreadyGiven);
    }
    Ok(Recorded {
        state: ConsentState::Refused,
        categories: Vec::new(),
        valid_until: None,
    })
}

/// Withdrawing: effective at once, never retroactive; only a given,
/// unexpired consent can be withdrawn.
pub fn withdraw(current: Option<&Recorded>, now: Timestamp) -> Result<Recorded, ConsentError> {
    match current {
        Some(c) if c.effective(now) == ConsentState::Given => Ok(Recorded {
            state: ConsentState::Withdrawn,
            categories: c.categories.clone(),
            valid_until: Some(now),
        }),
        _ => Err(ConsentError::NotGiven),
    }
}

/// Parses `until` as `YYYY-MM-DD` (end of that day, UTC) or as seconds
/// since the Unix epoch.
pub fn parse_until(raw: &serde_json::Value) -> Option<Timestamp> {
    if let Some(n) = raw.as_i64() {
        return Some(n);
    }
    let s = raw.as_str()?;
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = s.get(0..4)?.parse().ok()?;
    let m: i64 = s.get(5..7)?.parse().ok()?;
    let d: i64 = s.get(8..10)?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d) * DAY + DAY - 1)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::category::Categories;
    use crate::domain::purpose::Register;

    const NOW: Timestamp = 1_795_867_200;

    fn register() -> Register {
        Register::builtin(&Categories::builtin().unwrap()).unwrap()
    }

    #[test]
    fn lifecycle_give_withdraw_expire_give_again() {
        let r = register();
        let p = r.get("etude-mobilite").unwrap();
        let given = give(p, &GiveRequest::default(), NOW).unwrap();
        assert_eq!(given.valid_until, Some(NOW + 365 * DAY));
        assert!(given.covers("mobility", NOW));
        assert!(!given.covers("health", NOW));
        assert_eq!(given.effective(NOW + 365 * DAY), ConsentState::Expired);
        let withdrawn = withdraw(Some(&given), NOW + 10).unwrap();
        assert_eq!(withdrawn.effective(NOW + 10), ConsentState::Withdrawn);
        assert_eq!(
            withdraw(Some(&withdrawn), NOW + 11),
            Err(ConsentError::NotGiven)
        );
        let again = give(p, &GiveRequest::default(), NOW + 20).unwrap();
        assert_eq!(again.effective(NOW + 20), ConsentState::Given);
        // An expired consent cannot be withdrawn; it can be given again.
        assert_eq!(
            withdraw(Some(&given), NOW + 400 * DAY),
            Err(ConsentError::NotGiven)
        );
    }

    #[test]
    fn invalid_requests_have_stable_codes() {
        let r = register();
        let mobility = r.get("etude-mobilite").unwrap();
        let public = r.get("renovation-energetique").unwrap();
        let health = r.get("sante-territoriale").unwrap();
        // The variant's name; its stable code is in the error catalogue.
        let code = |e: Result<Recorded, ConsentError>| {
            let e = format!("{:?}", e.unwrap_err());
            e.split('(').next().unwrap_or_default().to_string()
        };
        assert_eq!(
            code(give(public, &GiveRequest::default(), NOW)),
            "NotApplicable"
        );
        assert_eq!(code(refuse(public, None, NOW)), "NotApplicable");
        let outside = GiveRequest {
            categories: Some(vec!["health".into()]),
            ..Default::default()
        };
        assert_eq!(
            code(give(mobility, &outside, NOW)),
            "CategoryOutsidePurpose"
        );
        let long = GiveRequest {
            until: Some(NOW + 366 * DAY),
            ..Default::default()
        };
        assert_eq!(code(give(mobility, &long, NOW)), "DurationAboveMaximum");
        let past = GiveRequest {
            until: Some(NOW - 1),
            ..Default::default()
        };
        assert_eq!(code(give(mobility, &past, NOW)), "InvalidUntil");
        assert_eq!(
            code(give(health, &GiveRequest::default(), NOW)),
            "ExplicitRequired"
        );
        let explicit = GiveRequest {
            explicit: true,
            ..Default::default()
        };
        assert!(give(health, &explicit, NOW).is_ok());
        let given = give(mobility, &GiveRequest::default(), NOW).unwrap();
        assert_eq!(code(refuse(mobility, Some(&given), NOW)), "AlreadyGiven");
    }

    #[test]
    fn dates_parse_to_the_end_of_the_day() {
        assert_eq!(parse_until(&serde_json::json!("1970-01-01")), Some(DAY - 1));
        assert_eq!(
            parse_until(&serde_json::json!("2026-11-28")),
            Some(1_795_910_399)
        );
        assert_eq!(parse_until(&serde_json::json!("2026-13-01")), None);
        assert_eq!(parse_until(&serde_json::json!(42)), Some(42));
    }
}
