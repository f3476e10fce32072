//! Extract rules, pure: cell suppression (INSEE's threshold of 11 residents,
//! with secondary suppression), Laplace noise, generalisation and CSV
//! encoding. No I/O; randomness passed in.
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

/// One cell of an aggregate: how many residents, and sums of numeric fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cell {
    pub count: u64,
    pub sums: BTreeMap<String, f64>,
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

/// A Laplace(0, scale) sample from `u`, uniform in (-0.5, 0.5).
pub fn laplace(scale: f64, u: f64) -> f64 {
    let u = u.clamp(-0.499_999_999, 0.499_999_999);
    -scale * u.signum() * (1.0 - 2.0 * u.abs()).ln()
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

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line
/// break; a leading `=`, `+`, `-` or `@` is prefixed with `'` so that a
/// spreadsheet never runs it as a formula.
pub fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) && value.parse::<f64>().is_err() {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

pub fn csv_line(fields: &[String]) -> String {
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
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
                        sums: BTreeMap::new(),
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
    fn laplace_is_centred_with_the_right_scale() {
        let n = 20_000;
        let samples: Vec<f64> = (0..n)
            .map(|i| laplace(2.0, (i as f64 + 0.5) / n as f64 - 0.5))
            .collect();
        let mean = samples.iter().sum::<f64>() / n as f64;
        let mad = samples.iter().map(|x| x.abs()).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((mad - 2.0).abs() < 0.05, "{mad}");
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(
            csv_line(&["a".into(), "b,c".into(), "d\"e".into()]),
            "a,\"b,c\",\"d\"\"e\"\n"
        );
        assert_eq!(csv_field("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(csv_field("-3"), "-3");
        assert_eq!(generalise("birthdate", "1987-04-12"), "1987");
    }
}
