//! Open statistics of the commons (BRIEF C12), pure: the month a release
//! covers, the tables it holds (what each counts, its dimensions, how many
//! cells one person can weigh on), and the protection of a table once its
//! noise is drawn: non-negative integers, counts under 11 shown as "< 11",
//! secondary suppression, and a total that is the sum of the cells. No
//! I/O, no clock, no randomness (the noise is `crypto::dp`'s, drawn by the
//! service with the cell-key method).
//!
//! The unit of privacy is a person (a resident; for refusals without a
//! resident, the actor; for extracts, the extract). Each table counts
//! distinct units per cell, and a unit is counted in at most
//! [`StatTable::bound`] cells of a table (the queries keep each unit's
//! first cells in a fixed order), so one person more or less changes a
//! table by at most that much in L1: its sensitivity.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};

use super::Timestamp;
pub use super::extract::small_mark;
use super::extract::{Cell, MIN_CELL, suppress};

/// How long after a month's end its release may be published.
pub const PUBLISH_GRACE_SECS: i64 = 86_400;

/// The calendar month (UTC) a release covers: its id, `YYYY-MM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: i32,
    month: u32,
}

impl Period {
    /// `YYYY-MM`, years 2000 to 2999 (a release is about this service's
    /// own history).
    pub fn parse(s: &str) -> Option<Period> {
        let b = s.as_bytes();
        if b.len() != 7
            || b[4] != b'-'
            || !s
                .bytes()
                .enumerate()
                .all(|(i, c)| i == 4 || c.is_ascii_digit())
        {
            return None;
        }
        let year: i32 = s.get(..4)?.parse().ok()?;
        let month: u32 = s.get(5..)?.parse().ok()?;
        ((2000..=2999).contains(&year) && (1..=12).contains(&month))
            .then_some(Period { year, month })
    }

    /// The month whose release is due at `now`: the last one over, its day
    /// of grace included.
    pub fn due(now: Timestamp) -> Period {
        Period::containing(now - PUBLISH_GRACE_SECS).previous()
    }

    /// The first second of `year` and of the next (a year as releases and
    /// the annual report count it, UTC).
    pub fn year_span(year: i32) -> (Timestamp, Timestamp) {
        (
            Period { year, month: 1 }.start(),
            Period {
                year: year + 1,
                month: 1,
            }
            .start(),
        )
    }

    /// A year as written in a request: `YYYY`, in the range of [`Period`].
    pub fn parse_year(s: &str) -> Option<i32> {
        Period::parse(&format!("{s}-01")).map(|p| p.year)
    }

    /// The month `t` falls in.
    pub fn containing(t: Timestamp) -> Period {
        let d = chrono::DateTime::from_timestamp(t, 0)
            .unwrap_or_default()
            .date_naive();
        Period {
            year: d.year(),
            month: d.month(),
        }
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn previous(self) -> Period {
        if self.month == 1 {
            Period {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Period {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    pub fn next(self) -> Period {
        if self.month == 12 {
            Period {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Period {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// Its first second.
    pub fn start(self) -> Timestamp {
        NaiveDate::from_ymd_opt(self.year, self.month, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc().timestamp())
            .unwrap_or_default()
    }

    /// The first second after it.
    pub fn end(self) -> Timestamp {
        self.next().start()
    }

    /// Whether the month is over at `now`, with a day's grace (only a
    /// whole month is published, and acts still being committed at
    /// midnight, or written by a process whose clock is a little behind,
    /// get the time to land in it).
    pub fn is_over(self, now: Timestamp) -> bool {
        self.end() + PUBLISH_GRACE_SECS <= now
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// One dimension of a table: its column name and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dimension {
    pub name: &'static str,
    pub fr: &'static str,
    pub en: &'static str,
}

const fn dim(name: &'static str, fr: &'static str, en: &'static str) -> Dimension {
    Dimension { name, fr, en }
}

code_enum!(
    /// The tables of a release.
    StatTable {
        Consents => "consents",
        Accesses => "accesses",
        Refusals => "refusals",
        Extracts => "extracts",
        Mandates => "mandates",
        Rights => "rights_requests",
        Deposits => "deposits",
        Residents => "residents",
    }
);

impl StatTable {
    /// Title, French then English.
    pub fn title(self) -> (&'static str, &'static str) {
        match self {
            StatTable::Consents => (
                "Consentements par finalité et état",
                "Consents by purpose and state",
            ),
            StatTable::Accesses => (
                "Lectures de données par destinataire, finalité et décision",
                "Data reads by recipient, purpose and decision",
            ),
            StatTable::Refusals => ("Refus par motif", "Refusals by reason"),
            StatTable::Extracts => (
                "Extractions par partenaire et type",
                "Extracts by partner and kind",
            ),
            StatTable::Mandates => (
                "Mandats par structure et démarche",
                "Mandates by structure and démarche",
            ),
            StatTable::Rights => (
                "Demandes de droits par type, issue et délai",
                "Rights requests by kind, outcome and deadline",
            ),
            StatTable::Deposits => (
                "Dépôts par source et catégorie",
                "Deposits by source and category",
            ),
            StatTable::Residents => (
                "Usagers du coffre par commune",
                "Residents in the commons by commune",
            ),
        }
    }

    /// The sentence that says what a count of the table is.
    pub fn sentence(self) -> (&'static str, &'static str) {
        match self {
            StatTable::Consents => (
                "Nombre d'usagers dont le consentement à chaque finalité était, à la fin du mois, donné, refusé, retiré ou expiré.",
                "Number of residents whose consent to each purpose was, at the end of the month, given, refused, withdrawn or expired.",
            ),
            StatTable::Accesses => (
                "Nombre d'usagers dont des données ont été demandées dans le mois, par destinataire (partenaire ou rôle), finalité et décision du coffre.",
                "Number of residents whose data was asked for during the month, by recipient (partner or role), purpose and the vault's decision.",
            ),
            StatTable::Refusals => (
                "Nombre de personnes concernées par un refus du coffre dans le mois, par motif.",
                "Number of people concerned by a refusal of the vault during the month, by reason.",
            ),
            StatTable::Extracts => (
                "Nombre d'extractions demandées dans le mois, par partenaire et type (lignes pseudonymisées ou agrégats).",
                "Number of extracts requested during the month, by partner and kind (pseudonymised records or aggregates).",
            ),
            StatTable::Mandates => (
                "Nombre d'usagers pour qui un mandat a été créé ou renouvelé dans le mois, par structure d'aide et démarche.",
                "Number of residents for whom a mandate was created or renewed during the month, by help structure and démarche.",
            ),
            StatTable::Rights => (
                "Nombre d'usagers dont une demande de droits a reçu sa réponse dans le mois, par type, issue et respect du délai légal.",
                "Number of residents whose rights request was answered during the month, by kind, outcome and whether the legal deadline was met.",
            ),
            StatTable::Deposits => (
                "Nombre d'usagers au sujet desquels une source a déposé des données dans le mois, par source et catégorie.",
                "Number of residents about whom a source deposited data during the month, by source and category.",
            ),
            StatTable::Residents => (
                "Nombre d'usagers inscrits au coffre, par commune de leur adresse de contact telle qu'enregistrée à la publication (« autre » : hors du territoire ou non renseignée ; ceux qui s'y sont opposés ne sont pas comptés).",
                "Number of residents registered in the vault, by the commune of their contact address as held at publication (\"autre\": outside the territory or not given; those who objected are not counted).",
            ),
        }
    }

    /// Its dimensions, in column order (after `period`).
    pub fn dimensions(self) -> &'static [Dimension] {
        const CONSENTS: &[Dimension] = &[
            dim("purpose", "Finalité", "Purpose"),
            dim("state", "État", "State"),
        ];
        const ACCESSES: &[Dimension] = &[
            dim("recipient", "Destinataire", "Recipient"),
            dim("purpose", "Finalité", "Purpose"),
            dim("decision", "Décision", "Decision"),
        ];
        const REFUSALS: &[Dimension] = &[dim("reason", "Motif", "Reason")];
        const EXTRACTS: &[Dimension] = &[
            dim("partner", "Partenaire", "Partner"),
            dim("kind", "Type", "Kind"),
        ];
        const MANDATES: &[Dimension] = &[
            dim("structure", "Structure", "Structure"),
            dim("demarche", "Démarche", "Démarche"),
        ];
        const RIGHTS: &[Dimension] = &[
            dim("kind", "Type", "Kind"),
            dim("outcome", "Issue", "Outcome"),
            dim("on_time", "Dans le délai", "On time"),
        ];
        const DEPOSITS: &[Dimension] = &[
            dim("source", "Source", "Source"),
            dim("category", "Catégorie", "Category"),
        ];
        const RESIDENTS: &[Dimension] = &[dim(
            "commune",
            "Commune (code INSEE)",
            "Commune (INSEE code)",
        )];
        match self {
            StatTable::Consents => CONSENTS,
            StatTable::Accesses => ACCESSES,
            StatTable::Refusals => REFUSALS,
            StatTable::Extracts => EXTRACTS,
            StatTable::Mandates => MANDATES,
            StatTable::Rights => RIGHTS,
            StatTable::Deposits => DEPOSITS,
            StatTable::Residents => RESIDENTS,
        }
    }

    /// The most cells of this table one unit is counted in: its L1
    /// sensitivity. A resident has one consent per purpose, so the consents
    /// table's bound is the number of purposes (`purposes`); the others are
    /// enforced by the queries.
    pub fn bound(self, purposes: usize) -> u64 {
        match self {
            StatTable::Consents => purposes.max(1) as u64,
            StatTable::Accesses | StatTable::Mandates | StatTable::Deposits => 4,
            StatTable::Refusals => 2,
            StatTable::Rights => 2,
            StatTable::Extracts | StatTable::Residents => 1,
        }
    }
}

/// A cell as published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// At least [`MIN_CELL`] after noise.
    Count(u64),
    /// Under [`MIN_CELL`] after noise: "< 11".
    Small,
    /// At least [`MIN_CELL`] after noise but withheld so that no small
    /// cell can be recovered from the total (secondary suppression): "s",
    /// INSEE's mark of secrecy.
    Secret,
}

/// INSEE's mark of a cell withheld by secondary suppression.
pub const SECRET_MARK: &str = "s";

/// The value of a dimension outside the public domain (a purpose no
/// longer in the register, a reason that is not a refusal code, a commune
/// outside the territory…): such cells are merged into one, always
/// published, so that nothing is published about a value because someone
/// was counted in it, and no text from a request reaches a release.
pub const OTHER: &str = "autre";

impl Published {
    pub fn text(self) -> String {
        match self {
            Published::Count(n) => n.to_string(),
            Published::Small => small_mark(),
            Published::Secret => SECRET_MARK.to_string(),
        }
    }

    pub fn count(self) -> Option<u64> {
        match self {
            Published::Count(n) => Some(n),
            _ => None,
        }
    }
}

/// A table once protected: its cells in key order, and its total.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectedTable {
    pub cells: Vec<(Vec<String>, Published)>,
    /// The sum of every cell's noisy value, the withheld ones included:
    /// the total is consistent with the cells by construction, and costs
    /// no privacy (it is computed from the noisy values only).
    pub total: u64,
}

/// Protects a table from its noisy counts (exact count plus noise, cell by
/// cell): post-processing only, so it spends no ε. Negative values become
/// 0; cells under [`MIN_CELL`] are published as "< 11"; then, as INSEE
/// asks of tables with a total, a withheld cell may not be the only one,
/// nor be recoverable with the others ([`suppress`]), so more cells may be
/// withheld ("s").
pub fn protect(noisy: &BTreeMap<Vec<String>, i64>) -> ProtectedTable {
    let values: BTreeMap<Vec<String>, Cell> = noisy
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Cell {
                    count: (*v).max(0) as u64,
                    ..Cell::default()
                },
            )
        })
        .collect();
    let hidden = suppress(&values);
    let total = values.values().map(|c| c.count).sum();
    let cells = values
        .iter()
        .map(|(k, c)| {
            let p = if !hidden.contains(k) {
                Published::Count(c.count)
            } else if c.count < MIN_CELL {
                Published::Small
            } else {
                Published::Secret
            };
            (k.clone(), p)
        })
        .collect();
    ProtectedTable { cells, total }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_and_bound_their_month() {
        let p = Period::parse("2026-11").unwrap_or_else(|| panic!("parse"));
        assert_eq!(p.to_string(), "2026-11");
        // 2026-11-01T00:00:00Z and 2026-12-01T00:00:00Z.
        assert_eq!(p.start(), 1_793_491_200);
        assert_eq!(p.end(), 1_796_083_200);
        assert_eq!(Period::containing(p.end() - 1), p);
        assert_eq!(Period::containing(p.end()), p.next());
        assert_eq!(
            Period::parse("2026-12").map(|p| p.next().to_string()),
            Some("2027-01".into())
        );
        assert_eq!(
            Period::parse("2027-01").map(|p| p.previous().to_string()),
            Some("2026-12".into())
        );
        assert_eq!(Period::due(p.end() + PUBLISH_GRACE_SECS), p);
        assert_eq!(Period::due(p.end() + PUBLISH_GRACE_SECS - 1), p.previous());
        assert_eq!(Period::year_span(2026), (1_767_225_600, 1_798_761_600));
        assert_eq!(Period::parse_year("2026"), Some(2026));
        for bad in ["26", "1999", "3000", "2026-01", "+026", " 2026"] {
            assert_eq!(Period::parse_year(bad), None, "{bad}");
        }
        assert!(p.is_over(p.end() + PUBLISH_GRACE_SECS));
        assert!(!p.is_over(p.end() + PUBLISH_GRACE_SECS - 1));
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-11",
            "2026/11",
            "1999-12",
            "2026-11 ",
            "+026-11",
            "２026-11",
        ] {
            assert_eq!(Period::parse(bad), None, "{bad}");
        }
    }

    fn k(s: &str) -> Vec<String> {
        vec![s.to_string()]
    }

    #[test]
    fn protection_publishes_no_count_under_11_and_totals_add_up() {
        let noisy: BTreeMap<Vec<String>, i64> = [
            (k("a"), 40),
            (k("b"), 12),
            (k("c"), 3),
            (k("d"), -4),
            (k("e"), 25),
        ]
        .into();
        let t = protect(&noisy);
        assert_eq!(
            t.total,
            40 + 12 + 3 + 25,
            "negatives are 0, the total is the cells' sum"
        );
        for (_, p) in &t.cells {
            if let Some(n) = p.count() {
                assert!(n >= MIN_CELL);
            }
        }
        let by: BTreeMap<_, _> = t.cells.iter().cloned().collect();
        assert_eq!(by[&k("c")], Published::Small);
        assert_eq!(by[&k("d")], Published::Small);
        assert_eq!(by[&k("a")], Published::Count(40));
        // One small cell alone would be the total minus the rest: the
        // smallest published one joins it.
        let noisy: BTreeMap<Vec<String>, i64> = [(k("a"), 40), (k("b"), 12), (k("c"), 3)].into();
        let t = protect(&noisy);
        let by: BTreeMap<_, _> = t.cells.iter().cloned().collect();
        assert_eq!(by[&k("b")], Published::Secret);
        assert_eq!(Published::Secret.text(), "s");
        assert_eq!(Published::Small.text(), "< 11");
    }

    #[test]
    fn every_table_has_dimensions_and_a_bound() {
        for t in StatTable::ALL {
            assert!(!t.dimensions().is_empty());
            assert!(t.bound(10) >= 1);
            assert_eq!(StatTable::parse(t.as_str()), Some(*t));
        }
        assert_eq!(StatTable::Consents.bound(7), 7);
    }
}
