//! Extract rules, pure: cell suppression (INSEE's threshold of 11, with
//! secondary suppression), generalisation and CSV encoding. No I/O, no
//! randomness (the noise is `crypto::dp`'s).
//!
//! Suppression runs on noisy counts only (`domain::stats::protect`, for
//! releases and partners' aggregates alike): it is post-processing of the
//! differentially private values, never a decision on exact ones. Its
//! guarantee, stated so a test can check it: the reader learns the total
//! and the published cells, and which keys were withheld. Each withheld
//! cell is at least one. A withheld cell's value is then recoverable if it
//! is the only one withheld (total minus the rest), or if the withheld
//! cells hold exactly as many as there are of them (all ones) while some
//! cell is published. `suppress` never leaves either case: it adds the
//! smallest published cells to the withheld set until neither holds.

use std::collections::{BTreeMap, BTreeSet};

/// The smallest cell published (INSEE's statistical secrecy rule).
pub const MIN_CELL: u64 = 11;

/// How a noisy count under [`MIN_CELL`] is published: "< 11".
pub fn small_mark() -> String {
    format!("< {MIN_CELL}")
}

code_enum!(
    /// What an extract holds: pseudonymised rows, or aggregates.
    ExtractKind {
        Records => "records",
        Aggregate => "aggregate",
    }
);

code_enum!(
    /// Where an extract is in its life: asked, decided by the DPO, built,
    /// taken, gone.
    ExtractState {
        Requested => "requested",
        Approved => "approved",
        Rejected => "rejected",
        Building => "building",
        Ready => "ready",
        Downloaded => "downloaded",
        Expired => "expired",
        Failed => "failed",
    }
);

/// One cell of an aggregate: how many residents, and sums of numeric
/// fields; with, for its noise, the cell's contents as a key (the sum,
/// modulo 2^128, of a keyed digest of each resident counted, and of each
/// (resident, value) summed): the same residents give the same key
/// whatever the request, one resident more or less another key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cell {
    pub count: u64,
    pub sums: BTreeMap<String, f64>,
    pub key: u128,
    pub sum_keys: BTreeMap<String, u128>,
}

/// The keys of the cells to withhold.
pub fn suppress(cells: &BTreeMap<Vec<String>, Cell>) -> BTreeSet<Vec<String>> {
    let mut hidden: BTreeSet<Vec<String>> = cells
        .iter()
        .filter(|(_, c)| c.count < MIN_CELL)
        .map(|(k, _)| k.clone())
        .collect();
    loop {
        let k = hidden.len() as u64;
        let sum: u64 = hidden
            .iter()
            .filter_map(|key| cells.get(key))
            .map(|c| c.count)
            .sum();
        let some_published = (hidden.len()) < cells.len();
        let recoverable = k == 1 || (k >= 2 && sum == k && some_published);
        if !recoverable {
            return hidden;
        }
        // Secondary suppression: the smallest published cell.
        let next = cells
            .iter()
            .filter(|(key, _)| !hidden.contains(*key))
            .min_by(|(ka, a), (kb, b)| a.count.cmp(&b.count).then(ka.cmp(kb)))
            .map(|(key, _)| key.clone());
        match next {
            Some(key) => {
                hidden.insert(key);
            }
            // Everything is hidden: nothing can be recovered from nothing.
            None => return hidden,
        }
    }
}

/// Generalises a value for a records extract: a birthdate becomes its year.
pub fn generalise(field: &str, value: &str) -> String {
    if field.ends_with("birthdate") && value.len() >= 4 {
        return value[..4].to_string();
    }
    value.to_string()
}

/// Fields dropped when generalising (an exact address; the commune is kept
/// through `commune_insee`).
pub fn dropped_when_generalising(field: &str) -> bool {
    field.ends_with("postal_address")
}

/// A cell as written to an extract: a leading `=`, `+`, `-`, `@`, tab or
/// carriage return is prefixed with `'` (unless the cell is a number), so
/// that a spreadsheet never runs it as a formula (OWASP CSV injection).
pub fn defuse(value: &str) -> std::borrow::Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) && value.parse::<f64>().is_err() {
        std::borrow::Cow::Owned(format!("'{value}"))
    } else {
        std::borrow::Cow::Borrowed(value)
    }
}

/// Extract rows as CSV: RFC 4180 quoting by the `csv` crate (a cell is
/// quoted when it holds a comma, a quote or a line break), `\n` line
/// ends, every cell defused first. One encoder serves a whole extract.
pub struct CsvRows {
    builder: csv::WriterBuilder,
}

impl Default for CsvRows {
    fn default() -> Self {
        let mut builder = csv::WriterBuilder::new();
        builder
            .terminator(csv::Terminator::Any(b'\n'))
            .quote_style(csv::QuoteStyle::Necessary)
            // One row at a time: a small buffer, flushed at the end of it.
            .buffer_capacity(1024);
        Self { builder }
    }
}

impl CsvRows {
    /// One row's bytes, line end included.
    pub fn row(&self, cells: &[String]) -> Result<Vec<u8>, csv::Error> {
        let mut writer = self.builder.from_writer(Vec::with_capacity(128));
        for cell in cells {
            writer.write_field(defuse(cell).as_bytes())?;
        }
        // An empty record ends the row the fields above began.
        writer.write_record(None::<&[u8]>)?;
        writer
            .into_inner()
            .map_err(|e| csv::Error::from(e.into_error()))
    }
}

/// A JSON field value as CSV text (lists joined with `;`).
pub fn text_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items.iter().map(text_of).collect::<Vec<_>>().join(";"),
        other => other.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn table(counts: &[u64]) -> BTreeMap<Vec<String>, Cell> {
        counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    vec![format!("k{i:03}")],
                    Cell {
                        count: *c,
                        ..Cell::default()
                    },
                )
            })
            .collect()
    }

    /// The attacker of the module comment: knows the total and the
    /// published cells; each hidden cell holds at least one resident.
    fn recoverable(cells: &BTreeMap<Vec<String>, Cell>, hidden: &BTreeSet<Vec<String>>) -> bool {
        let k = hidden.len() as u64;
        let total: u64 = cells.values().map(|c| c.count).sum();
        let published: u64 = cells
            .iter()
            .filter(|(key, _)| !hidden.contains(*key))
            .map(|(_, c)| c.count)
            .sum();
        let s = total - published;
        k == 1 || (k >= 2 && s == k && hidden.len() < cells.len())
    }

    #[test]
    fn small_cells_are_hidden_and_never_alone() {
        let t = table(&[40, 25, 3]);
        let hidden = suppress(&t);
        assert_eq!(
            hidden.len(),
            2,
            "a lone hidden cell is recomputed from the total"
        );
        assert!(hidden.contains(&vec!["k002".to_string()]));
        assert!(hidden.contains(&vec!["k001".to_string()]));
        // Two ones: each is recoverable (they must both be 1).
        let t = table(&[40, 25, 1, 1]);
        let hidden = suppress(&t);
        assert!(!recoverable(&t, &hidden));
        assert_eq!(hidden.len(), 3);
        assert!(suppress(&table(&[40, 25])).is_empty());
    }

    #[test]
    fn property_no_published_cell_under_11_and_no_hidden_cell_recoverable() {
        // A deterministic generator over many random territories.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..5_000 {
            let n = 1 + (next() % 12) as usize;
            let counts: Vec<u64> = (0..n)
                .map(|_| match next() % 3 {
                    0 => 1 + next() % 10,
                    1 => 1 + next() % 3,
                    _ => 1 + next() % 60,
                })
                .collect();
            let t = table(&counts);
            if counts.iter().sum::<u64>() < MIN_CELL {
                continue; // refused before suppression: the cohort is too small
            }
            let hidden = suppress(&t);
            for (key, cell) in &t {
                if !hidden.contains(key) {
                    assert!(
                        cell.count >= MIN_CELL,
                        "{counts:?}: published {}",
                        cell.count
                    );
                }
            }
            assert!(!recoverable(&t, &hidden), "{counts:?} hidden {hidden:?}");
        }
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let csv = CsvRows::default();
        let row = |csv: &CsvRows, cells: &[&str]| {
            let cells: Vec<String> = cells.iter().map(|c| c.to_string()).collect();
            String::from_utf8(csv.row(&cells).unwrap()).unwrap()
        };
        assert_eq!(row(&csv, &["a", "b,c", "d\"e"]), "a,\"b,c\",\"d\"\"e\"\n");
        // A formula, quoted because of its comma, is defused inside the
        // quotes; a number keeps its sign; a line break stays in its cell.
        assert_eq!(
            row(
                &csv,
                &["=HYPERLINK(\"http://x\",\"y\")", "-3", "+33 6", "l1\nl2"]
            ),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",-3,'+33 6,\"l1\nl2\"\n"
        );
        assert_eq!(
            row(&csv, &["@SUM(A1)", "\tcmd", "ok"]),
            "'@SUM(A1),'\tcmd,ok\n"
        );
        // The encoder carries nothing over from one row to the next.
        assert_eq!(row(&csv, &["x"]), "x\n");
    }
}
