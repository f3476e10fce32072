//! The catalogue of error codes (`coffre::error::ErrorCode`): its reader's
//! copy in `docs/errors.md` is current, the access decision's refusals are
//! in it under their own code, and every (status, code) pair the tests
//! expect from the service is one the catalogue declares.

use std::path::PathBuf;

use coffre::domain::access::Denial;
use coffre::error::ErrorCode;

fn docs_errors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/errors.md")
}

#[test]
fn docs_errors_md_is_generated_from_the_catalogue() {
    let want = ErrorCode::markdown();
    if std::env::var_os("COFFRE_BLESS").is_some() {
        std::fs::write(docs_errors(), &want).unwrap();
    }
    let have = std::fs::read_to_string(docs_errors()).unwrap_or_default();
    assert!(
        have == want,
        "docs/errors.md is stale: regenerate it with \
         `COFFRE_BLESS=1 cargo test --test api errors::` and commit it"
    );
}

#[test]
fn each_refusal_of_the_access_decision_is_a_403_under_its_own_code() {
    for d in Denial::ALL {
        let code = ErrorCode::from(d);
        assert_eq!(code.code(), d.as_str(), "{d:?}");
        assert_eq!(code.status().as_u16(), 403, "{d:?}");
    }
}

#[test]
fn each_refusal_of_a_deposit_line_is_in_the_catalogue_under_its_own_code() {
    use coffre::domain::deposit::LineRefusal as L;
    for r in [
        L::InvalidJson,
        L::LineTooLong,
        L::InvalidDeposit,
        L::InvalidObservedAt,
    ] {
        assert_eq!(ErrorCode::from(r).code(), r.as_str(), "{r:?}");
    }
}

/// Reads `assert_error(STATUS, "code")` in every test file: a test that
/// expects a pair the catalogue does not declare expects something the
/// service cannot answer.
#[test]
fn every_status_and_code_the_tests_expect_is_in_the_catalogue() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/api");
    let mut files = vec![];
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let known: std::collections::HashSet<(u16, &str)> = ErrorCode::ALL
        .iter()
        .map(|c| (c.status().as_u16(), c.code()))
        .collect();
    let mut seen = 0;
    let mut unknown = vec![];
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, _) in text.match_indices("assert_error(") {
            let rest = &text[i + "assert_error(".len()..];
            let Some((status, rest)) = rest.split_once(',') else {
                continue;
            };
            let Ok(status) = status.trim().parse::<u16>() else {
                continue;
            };
            let rest = rest.trim_start();
            let Some(rest) = rest.strip_prefix('"') else {
                continue;
            };
            let Some((code, _)) = rest.split_once('"') else {
                continue;
            };
            seen += 1;
            if !known.contains(&(status, code)) {
                unknown.push(format!("{}: {status} {code}", f.display()));
            }
        }
    }
    assert!(seen > 100, "the scan found only {seen} assertions");
    assert!(unknown.is_empty(), "not in the catalogue: {unknown:#?}");
}
