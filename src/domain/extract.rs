//! Extract rules, pure: cell suppression (INSEE's threshold of 11 residents,
//! with secondary suppression), generalisation and CSV encoding. No I/O,
//! no randomness (the noise is `crypto::dp`'s).
//!
//! The suppression guarantee, stated so a test can check it. The partner
//! learns the cohort size (at least 11: smaller cohorts are refused) and the
//! published cells; suppressed cells are omitted. Assume, to be safe, that
//! the partner also knows which keys were suppressed (the values of a
//! dimension are often public). Each suppressed cell holds at least one
//! resident. A suppressed cell's count is then recoverable if it is the only
//! suppressed cell (total minus the rest), or if the suppressed cells hold
//! exactly as many residents as there are of them (all ones) while some
//! cell is published. `suppress` never leaves either case: it adds the
//! smallest published cells to the suppressed set until neither holds.

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

/// Two aggregates of one partner over the same people, tabulated jointly:
/// (cell of the earlier one, cell of the new one) → residents in both.
pub type Joint = BTreeMap<(Vec<String>, Vec<String>), u64>;

/// Whether publishing the new aggregate beside an earlier one of the same
/// partner would isolate fewer than `min` people by differencing: a
/// published cell of one minus a published cell of the other that overlaps
/// it, or minus the published cells of the other nested in it, leaving
/// between 1 and `min - 1` residents (whose sums are then exact). `new_size`
/// gives the new cells' full counts (some of their residents may lie
/// outside the earlier table). Returns a description of the first group
/// found (cell keys only, no value), or `None`.
///
/// This is the fallback the second review asked for until the open
/// statistics' noise and budget land; it recomputes the earlier table on
/// today's data, which approximates what the partner holds.
pub fn differencing_risk(
    joint: &Joint,
    earlier_hidden: &BTreeSet<Vec<String>>,
    new_size: &BTreeMap<Vec<String>, u64>,
    new_hidden: &BTreeSet<Vec<String>>,
    min: u64,
) -> Option<String> {
    let mut e_size: BTreeMap<&Vec<String>, u64> = BTreeMap::new();
    for ((e, _), n) in joint {
        *e_size.entry(e).or_default() += n;
    }
    let small = |d: u64| d > 0 && d < min;
    let e_published = |e: &Vec<String>| !earlier_hidden.contains(e);
    let n_published = |n: &Vec<String>| !new_hidden.contains(n);
    // Pairs of overlapping published cells.
    for ((e, n), both) in joint {
        if *both == 0 || !e_published(e) || !n_published(n) {
            continue;
        }
        let e_all = e_size.get(e).copied().unwrap_or(0);
        let n_all = new_size.get(n).copied().unwrap_or(0);
        if small(e_all.saturating_sub(*both)) || small(n_all.saturating_sub(*both)) {
            return Some(format!("cells {e:?} and {n:?}"));
        }
    }
    // A published cell minus the published cells of the other table that
    // lie wholly inside it.
    let mut inside_e: BTreeMap<&Vec<String>, u64> = BTreeMap::new();
    for (n, n_all) in new_size {
        if !n_published(n) {
            continue;
        }
        let parts: Vec<(&Vec<String>, u64)> = joint
            .iter()
            .filter(|((_, nn), c)| nn == n && **c > 0)
            .map(|((e, _), c)| (e, *c))
            .collect();
        if let [(e, c)] = parts.as_slice()
            && c == n_all
            && e_published(e)
        {
            *inside_e.entry(*e).or_default() += c;
        }
    }
    for (e, inside) in inside_e {
        let e_all = e_size.get(e).copied().unwrap_or(0);
        if small(e_all.saturating_sub(inside)) {
            return Some(format!("cell {e:?} minus the new cells inside it"));
        }
    }
    let mut inside_n: BTreeMap<&Vec<String>, u64> = BTreeMap::new();
    for (e, e_all) in &e_size {
        if !e_published(e) {
            continue;
        }
        let parts: Vec<(&Vec<String>, u64)> = joint
            .iter()
            .filter(|((ee, _), c)| ee == *e && **c > 0)
            .map(|((_, n), c)| (n, *c))
            .collect();
        if let [(n, c)] = parts.as_slice()
            && c == e_all
            && n_published(n)
        {
            *inside_n.entry(*n).or_default() += c;
        }
    }
    for (n, inside) in inside_n {
        let n_all = new_size.get(n).copied().unwrap_or(0);
        if small(n_all.saturating_sub(inside)) {
            return Some(format!("new cell {n:?} minus the earlier cells inside it"));
        }
    }
    None
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

    fn k(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn overlapping_aggregates_that_subtract_to_a_few_people_are_caught() {
        // The review's attack: A by household size, B by size × single
        // parent; A's size-4 cell (12) minus B's only published size-4 cell
        // (11) is one person.
        let mut joint = Joint::new();
        joint.insert((k(&["4"]), k(&["4", "true"])), 11);
        joint.insert((k(&["4"]), k(&["4", "false"])), 1);
        joint.insert((k(&["3"]), k(&["3", "true"])), 20);
        joint.insert((k(&["3"]), k(&["3", "false"])), 15);
        let mut new_size: BTreeMap<Vec<String>, u64> = [
            (k(&["4", "true"]), 11),
            (k(&["4", "false"]), 1),
            (k(&["3", "true"]), 20),
            (k(&["3", "false"]), 15),
        ]
        .into_iter()
        .collect();
        let new_hidden: BTreeSet<Vec<String>> = [k(&["4", "false"])].into_iter().collect();
        assert!(
            differencing_risk(&joint, &BTreeSet::new(), &new_size, &new_hidden, MIN_CELL).is_some()
        );
        // With 11 in that cell instead, nothing small is isolated.
        joint.insert((k(&["4"]), k(&["4", "false"])), 11);
        new_size.insert(k(&["4", "false"]), 11);
        assert_eq!(
            differencing_risk(
                &joint,
                &BTreeSet::new(),
                &new_size,
                &BTreeSet::new(),
                MIN_CELL
            ),
            None
        );
        // The same table again: nothing to subtract.
        let mut same = Joint::new();
        same.insert((k(&["4"]), k(&["4"])), 12);
        let size: BTreeMap<Vec<String>, u64> = [(k(&["4"]), 12)].into_iter().collect();
        assert_eq!(
            differencing_risk(&same, &BTreeSet::new(), &size, &BTreeSet::new(), MIN_CELL),
            None
        );
    }

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
