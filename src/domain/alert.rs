//! Alerts to a structure's référent about unusual aidant activity (BRIEF
//! C13; the Aidants Connect terms promise them): a mandate created outside
//! the structure's opening hours, a burst of mandates by one aidant, an act
//! on behalf at night. Pure: time is an argument, in Paris time.

use chrono::{Datelike, TimeZone, Timelike};

use super::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// A mandate created outside the structure's opening hours.
    OutOfHours,
    /// More than the structure's limit of mandates by one aidant within
    /// its window.
    Burst,
    /// An act on behalf (a read or a write under a mandate) at night.
    NightAct,
    /// A mandate for a resident whose commune is not one the structure
    /// serves.
    OutsideCommune,
    /// A mandate for a resident whose commune could not be checked (none
    /// in their contact record, or the read failed): a list of communes
    /// must not be evaded by clearing the field.
    CommuneUnknown,
}

impl AlertKind {
    pub const ALL: [AlertKind; 5] = [
        AlertKind::OutOfHours,
        AlertKind::Burst,
        AlertKind::NightAct,
        AlertKind::OutsideCommune,
        AlertKind::CommuneUnknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::OutOfHours => "out_of_hours",
            AlertKind::Burst => "burst",
            AlertKind::NightAct => "night_act",
            AlertKind::OutsideCommune => "outside_commune",
            AlertKind::CommuneUnknown => "commune_unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The communes a structure serves (INSEE codes), sorted, without
/// repeats; empty: no commune check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Communes(Vec<String>);

/// At most this many communes a structure.
pub const MAX_COMMUNES: usize = 500;

impl Communes {
    /// Every code valid, at most [`MAX_COMMUNES`].
    pub fn new<S: AsRef<str>>(codes: &[S]) -> Result<Self, String> {
        if codes.len() > MAX_COMMUNES {
            return Err(format!("at most {MAX_COMMUNES} communes"));
        }
        let mut out = Vec::with_capacity(codes.len());
        for c in codes {
            let c = c.as_ref().trim();
            if !super::category::is_insee_code(c) {
                return Err("communes: INSEE codes such as 31555 or 2A004".into());
            }
            out.push(c.to_string());
        }
        out.sort();
        out.dedup();
        Ok(Communes(out))
    }

    /// The stored form: codes separated by spaces.
    pub fn as_text(&self) -> String {
        self.0.join(" ")
    }

    pub fn parse(text: &str) -> Option<Self> {
        let codes: Vec<&str> = text.split_whitespace().collect();
        Communes::new(&codes).ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, code: &str) -> bool {
        self.0.binary_search_by(|c| c.as_str().cmp(code)).is_ok()
    }

    pub fn codes(&self) -> &[String] {
        &self.0
    }
}

/// Opening hours per weekday (Monday first), as minutes since midnight,
/// Paris time. Written `mon-fri 08:30-12:00,13:30-17:30; sat 09:00-12:00`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpeningHours {
    days: [Vec<(u16, u16)>; 7],
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A structure that set nothing: weekdays, 8:00 to 18:00.
pub const DEFAULT_HOURS: &str = "mon-fri 08:00-18:00";
/// More than this many mandates by one aidant…
pub const DEFAULT_BURST_MAX: u32 = 5;
/// …within this many minutes.
pub const DEFAULT_BURST_MINUTES: u32 = 30;
/// Night, for acts on behalf: from 22:00 to 06:00, Paris time.
const NIGHT_FROM: u32 = 22 * 60;
const NIGHT_UNTIL: u32 = 6 * 60;

fn minutes(hhmm: &str) -> Option<u16> {
    let (h, m) = hhmm.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

fn day(name: &str) -> Option<usize> {
    DAYS.iter().position(|d| *d == name)
}

impl OpeningHours {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > 512 {
            return Err("at most 512 characters".into());
        }
        let mut days: [Vec<(u16, u16)>; 7] = Default::default();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (which, spans) = part
                .split_once(' ')
                .ok_or_else(|| format!("`{part}`: expected `DAYS HH:MM-HH:MM`"))?;
            let (first, last) = match which.split_once('-') {
                Some((a, b)) => (day(a), day(b)),
                None => (day(which), day(which)),
            };
            let (Some(first), Some(last)) = (first, last) else {
                return Err(format!(
                    "`{which}`: days are mon, tue, wed, thu, fri, sat, sun"
                ));
            };
            if first > last {
                return Err(format!("`{which}`: the first day comes after the last"));
            }
            for span in spans.split(',').map(str::trim) {
                let (from, to) = span
                    .split_once('-')
                    .and_then(|(a, b)| Some((minutes(a)?, minutes(b)?)))
                    .filter(|(a, b)| a < b)
                    .ok_or_else(|| {
                        format!("`{span}`: expected HH:MM-HH:MM, the start before the end")
                    })?;
                for d in &mut days[first..=last] {
                    d.push((from, to));
                }
            }
        }
        if days.iter().all(Vec::is_empty) {
            // "Never open" would make every mandate an alert: refused.
            return Err("at least one day with opening hours".into());
        }
        for d in &mut days {
            d.sort_unstable();
            d.dedup();
        }
        Ok(Self { days })
    }

    /// The canonical text (what `parse` reads back to the same hours).
    pub fn as_text(&self) -> String {
        let mut parts = Vec::new();
        for (i, spans) in self.days.iter().enumerate() {
            if spans.is_empty() {
                continue;
            }
            let s: Vec<String> = spans
                .iter()
                .map(|(a, b)| format!("{:02}:{:02}-{:02}:{:02}", a / 60, a % 60, b / 60, b % 60))
                .collect();
            parts.push(format!("{} {}", DAYS[i], s.join(",")));
        }
        parts.join("; ")
    }

    /// Open at `at` (Paris time, summer time included)?
    pub fn is_open(&self, at: Timestamp) -> bool {
        let Some((weekday, minute)) = paris(at) else {
            return false;
        };
        self.days[weekday]
            .iter()
            .any(|(a, b)| (*a..*b).contains(&(minute as u16)))
    }
}

/// (weekday from Monday = 0, minutes since midnight), Paris time.
fn paris(at: Timestamp) -> Option<(usize, u32)> {
    let t = chrono::Utc
        .timestamp_opt(at, 0)
        .single()?
        .with_timezone(&chrono_tz::Europe::Paris);
    Some((
        t.weekday().num_days_from_monday() as usize,
        t.hour() * 60 + t.minute(),
    ))
}

/// Night in Paris (22:00–06:00)?
pub fn is_night(at: Timestamp) -> bool {
    paris(at).is_some_and(|(_, m)| !(NIGHT_UNTIL..NIGHT_FROM).contains(&m))
}

/// A structure's alert rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertRules {
    pub hours: OpeningHours,
    pub burst_max: u32,
    pub burst_minutes: u32,
}

impl Default for AlertRules {
    fn default() -> Self {
        Self {
            hours: OpeningHours::parse(DEFAULT_HOURS).unwrap_or(OpeningHours {
                days: Default::default(),
            }),
            burst_max: DEFAULT_BURST_MAX,
            burst_minutes: DEFAULT_BURST_MINUTES,
        }
    }
}

impl AlertRules {
    /// Checked bounds: a window of 1 minute to a day, a limit of 1 to 100.
    pub fn new(hours: &str, burst_max: u32, burst_minutes: u32) -> Result<Self, String> {
        if !(1..=100).contains(&burst_max) {
            return Err("burst_max: between 1 and 100".into());
        }
        if !(1..=1440).contains(&burst_minutes) {
            return Err("burst_minutes: between 1 and 1440".into());
        }
        Ok(Self {
            hours: OpeningHours::parse(hours)?,
            burst_max,
            burst_minutes,
        })
    }

    /// The alerts a mandate created at `at` raises, given how many
    /// mandates its aidant created in the window ending at `at`, this one
    /// included, and whether a burst alert was raised in that window
    /// already (the storage applies the same rule in one statement).
    pub fn on_mandate(
        &self,
        at: Timestamp,
        aidants_recent: u32,
        burst_raised: bool,
    ) -> Vec<AlertKind> {
        let mut out = Vec::new();
        if !self.hours.is_open(at) {
            out.push(AlertKind::OutOfHours);
        }
        if aidants_recent > self.burst_max && !burst_raised {
            out.push(AlertKind::Burst);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-01 is a Tuesday; Paris is UTC+1 in winter.
    const TUE_0900_UTC: Timestamp = 1_796_115_600; // 10:00 Paris
    const JULY_SUN_0500_UTC: Timestamp = 1_783_227_600; // 2026-07-05 07:00 Paris (UTC+2)

    #[test]
    fn opening_hours_parse_and_print_back() {
        let h = OpeningHours::parse("mon-fri 08:30-12:00,13:30-17:30; sat 09:00-12:00").unwrap();
        assert_eq!(
            h.as_text(),
            "mon 08:30-12:00,13:30-17:30; tue 08:30-12:00,13:30-17:30; wed 08:30-12:00,13:30-17:30; thu 08:30-12:00,13:30-17:30; fri 08:30-12:00,13:30-17:30; sat 09:00-12:00"
        );
        assert_eq!(OpeningHours::parse(&h.as_text()).unwrap(), h);
        for bad in [
            "lun 08:00-12:00",
            "mon 8:00-12:00",
            "fri-mon 08:00-12:00",
            "mon 12:00-08:00",
            "mon",
        ] {
            assert!(OpeningHours::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn open_and_night_follow_paris_time() {
        let h = OpeningHours::parse("mon-fri 08:30-12:00,13:30-17:30").unwrap();
        assert!(h.is_open(TUE_0900_UTC));
        assert!(!h.is_open(TUE_0900_UTC + 3 * 3600)); // 13:00, lunch
        assert!(!h.is_open(TUE_0900_UTC + 4 * 86_400)); // Saturday
        // 05:00 UTC in July is 07:00 in Paris: closed, and not night.
        assert!(!h.is_open(JULY_SUN_0500_UTC));
        assert!(!is_night(JULY_SUN_0500_UTC));
        assert!(is_night(JULY_SUN_0500_UTC - 2 * 3600)); // 05:00 Paris
        assert!(is_night(TUE_0900_UTC + 12 * 3600 + 30 * 60)); // 22:30 Paris
        assert!(!is_night(TUE_0900_UTC));
    }

    #[test]
    fn a_mandate_raises_out_of_hours_and_burst_once() {
        let r = AlertRules::default();
        assert!(r.on_mandate(TUE_0900_UTC, 1, false).is_empty());
        assert_eq!(r.on_mandate(TUE_0900_UTC, 5, false), vec![]);
        assert_eq!(r.on_mandate(TUE_0900_UTC, 6, false), vec![AlertKind::Burst]);
        // Two at once may both count seven: still raised, once.
        assert_eq!(r.on_mandate(TUE_0900_UTC, 7, false), vec![AlertKind::Burst]);
        assert_eq!(r.on_mandate(TUE_0900_UTC, 7, true), vec![]);
        assert_eq!(
            r.on_mandate(TUE_0900_UTC + 11 * 3600, 1, false),
            vec![AlertKind::OutOfHours]
        );
        assert!(OpeningHours::parse("").is_err());
        assert!(AlertRules::new("mon 08:00-12:00", 0, 30).is_err());
        assert!(AlertRules::new("mon 08:00-12:00", 5, 2000).is_err());
    }
}
