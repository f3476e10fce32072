//! Open statistics (BRIEF C12): a release is protected (no count under 11
//! published), consistent (totals are the sums of the cells), hashed into
//! the audit log with an inclusion proof before it exists, immutable, and
//! charged to the public ledger atomically; the same cell gets the same
//! noise; the data package validates with the `frictionless` tool and the
//! DCAT catalogue parses as JSON-LD with the DCAT-AP classes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffre::domain::stats::Period;
use coffre::service::stats;
use serde_json::Value;

use crate::independent::{checkpoint, inclusion, published_key, verifier};
use crate::support::{Setup, TestApp, each_backend, each_backend_setup, notice};

/// 2026-12-02T01:00:00Z: November 2026 is over, and its day of grace.
const DEC_1: i64 = 1_796_173_200;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

async fn publish(app: &TestApp, period: &str) -> (coffre::storage::StatsReleaseRow, bool) {
    stats::publish(
        &app.state,
        Some(Period::parse(period).unwrap()),
        app.clock.now(),
    )
    .await
    .unwrap_or_else(|e| panic!("publish {period}: {:?}", e.code_and_status()))
}

/// Every count of a CSV table: its dimension values and its text.
fn cells(csv: &str) -> Vec<(Vec<String>, String)> {
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            let f: Vec<String> = rec.iter().map(str::to_string).collect();
            let (last, rest) = f.split_last().unwrap();
            (rest[1..].to_vec(), last.clone())
        })
        .collect()
}

#[tokio::test]
async fn a_release_is_protected_consistent_hashed_in_the_log_and_immutable() {
    each_backend(|app| async move {
        // Some reads and a refusal in November (T0 is 2026-11-28).
        let awa = app.login("0b9a3c1e-5d6f-4a7b-8c9d-000000000001").await;
        for _ in 0..3 {
            app.as_user(&awa, axum::http::Method::GET, "/api/v1/me/data", None)
                .await;
        }
        // A month not over is refused, nor on the first hours after it (a
        // day of grace), and nothing is stored or charged.
        for at in [app.clock.now(), DEC_1 - 2 * 3600] {
            app.clock.set(at);
            let err = stats::publish(&app.state, Period::parse("2026-11"), at)
                .await
                .unwrap_err();
            assert_eq!(err.code_and_status().0, "period_not_over");
        }
        assert!(app.store.stats_budgets().await.unwrap().is_empty());
        app.clock.set(DEC_1);
        // Awa objects to the statistics purpose (art. 21): she is neither
        // read nor counted.
        let awa = app.login("0b9a3c1e-5d6f-4a7b-8c9d-000000000001").await;
        let res = app
            .as_user(
                &awa,
                axum::http::Method::POST,
                "/api/v1/me/objections",
                Some(serde_json::json!({"purpose": "statistiques-publiques"})),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let size_before = app.state.audit.size().await.unwrap();
        let (row, created) = publish(&app, "2026-11").await;
        assert!(created);
        // Each resident's commune was read under the statistics purpose,
        // recorded before the release's own entry, which comes last.
        let purpose = app.state.register.get("statistiques-publiques").unwrap();
        let counted = app
            .store
            .count_cohort(&purpose.id, false, &purpose.notice_version, DEC_1)
            .await
            .unwrap() as u64;
        assert!(counted >= 2, "Jean-Pierre and Lucie at least");
        assert_eq!(row.audit_index as u64, size_before + counted);
        assert_eq!(
            app.state.audit.size().await.unwrap(),
            size_before + counted + 1
        );
        let reads: Vec<coffre::audit::AuditEntry> = app
            .store
            .audit_entries(size_before, size_before + counted)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, leaf)| coffre::audit::AuditEntry::decode(&leaf).unwrap())
            .collect();
        for e in &reads {
            assert_eq!(
                (
                    e.action.as_str(),
                    e.category.as_deref(),
                    e.purpose.as_deref(),
                    e.reason.as_str()
                ),
                (
                    "stats.count",
                    Some("contact"),
                    Some("statistiques-publiques"),
                    "release:2026-11"
                ),
                "{e:?}"
            );
        }
        assert!(
            !reads
                .iter()
                .any(|e| e.resident_id.as_deref() == Some("0b9a3c1e-5d6f-4a7b-8c9d-000000000001")),
            "Awa objected"
        );

        // Listed, and the data package served is the one hashed.
        let list = app.get("/api/v1/stats/releases").await;
        assert_eq!(list.status, 200, "{}", list.text());
        assert_eq!(list.json()[0]["id"], "2026-11");
        assert_eq!(list.json()[0]["sha256"], row.sha256);
        let res = app.get("/api/v1/stats/releases/2026-11").await;
        assert_eq!(res.status, 200);
        assert!(res.header("cache-control").unwrap().contains("immutable"));
        assert_eq!(
            sha256_hex(&res.body),
            row.sha256,
            "the package is the bytes hashed"
        );
        let package = res.json();
        let resources = package["resources"].as_array().unwrap();
        assert_eq!(resources.len(), 8);

        for r in resources {
            let name = r["name"].as_str().unwrap();
            let res = app
                .get(&format!("/api/v1/stats/releases/2026-11/{name}.csv"))
                .await;
            assert_eq!(res.status, 200, "{name}");
            assert!(res.header("content-type").unwrap().starts_with("text/csv"));
            // Each file is the one the package names, byte for byte.
            assert_eq!(
                r["hash"],
                format!("sha256:{}", sha256_hex(&res.body)),
                "{name}"
            );
            assert_eq!(r["bytes"], res.body.len() as u64, "{name}");
            let text = res.text();
            let mut published = 0u64;
            let mut withheld = 0usize;
            for (key, value) in cells(&text) {
                match value.as_str() {
                    "< 11" | "s" => withheld += 1,
                    n => {
                        let n: u64 = n.parse().unwrap_or_else(|_| panic!("{name} {key:?}: {n}"));
                        assert!(n >= 11, "{name} {key:?}: {n} is published under 11");
                        published += n;
                    }
                }
            }
            // Totals are consistent: the sum of every cell, the withheld
            // ones included; exactly the published sum when none is.
            let total = package["protection"]["tables"][name]["total"]
                .as_u64()
                .unwrap();
            if withheld == 0 {
                assert_eq!(total, published, "{name}");
            } else {
                assert!(total >= published, "{name}: {total} < {published}");
            }
        }
        // The public domain is published whole: every purpose of the
        // register that consents apply to has its four states.
        let consents = app
            .get("/api/v1/stats/releases/2026-11/consents.csv")
            .await
            .text();
        let rows = cells(&consents);
        for state in ["given", "refused", "withdrawn", "expired"] {
            let key = vec!["etude-mobilite".to_string(), state.to_string()];
            assert!(rows.iter().any(|(k, _)| *k == key), "{key:?}\n{consents}");
        }

        // Residents by commune: every commune of the territory and `autre`,
        // published even when empty; nothing else.
        let residents = app
            .get("/api/v1/stats/releases/2026-11/residents.csv")
            .await
            .text();
        let keys: Vec<Vec<String>> = cells(&residents).into_iter().map(|(k, _)| k).collect();
        let mut expected: Vec<Vec<String>> = app
            .state
            .territory
            .communes()
            .iter()
            .map(|c| vec![c.insee.clone()])
            .collect();
        expected.push(vec!["autre".to_string()]);
        expected.sort();
        assert_eq!(keys, expected, "{residents}");

        // The hash is in the log, at its index, with an inclusion proof
        // against a signed checkpoint.
        let (_, leaf) = app
            .store
            .audit_entries(row.audit_index as u64, row.audit_index as u64 + 1)
            .await
            .unwrap()
            .remove(0);
        let entry = coffre::audit::AuditEntry::decode(&leaf).unwrap();
        assert_eq!(entry.action, "stats.publish");
        assert_eq!(
            entry.reason,
            format!("release:2026-11:sha256:{}", row.sha256)
        );
        app.clock.advance(1);
        let key = published_key(&app).await;
        let cp = verifier::verify_checkpoint(&checkpoint(&app).await, &key).unwrap();
        let proof = inclusion(&app, row.audit_index as u64, cp.size).await;
        verifier::verify_inclusion(
            row.audit_index as u64,
            cp.size,
            &verifier::leaf_hash(&leaf),
            &proof,
            &cp.root,
        )
        .unwrap();

        // Publishing the month again changes nothing and logs nothing.
        let size = app.state.audit.size().await.unwrap();
        let (again, created) = publish(&app, "2026-11").await;
        assert!(!created);
        assert_eq!(again.sha256, row.sha256);
        assert_eq!(app.state.audit.size().await.unwrap(), size);

        // Immutable in the database itself.
        let pool = app.raw_pool().await;
        for sql in [
            "UPDATE stats_releases SET sha256 = 'x'",
            "DELETE FROM stats_releases",
            "UPDATE stats_tables SET csv = 'x'",
            "DELETE FROM stats_tables",
            "UPDATE stats_budget SET spent_micro = 0",
            "UPDATE stats_budget SET year = 2025",
            "DELETE FROM stats_budget",
        ] {
            assert!(
                sqlx::query(sql).execute(&pool).await.is_err(),
                "{sql} was allowed"
            );
        }
        if app.backend == "postgres" {
            for sql in [
                "TRUNCATE stats_releases CASCADE",
                "TRUNCATE stats_tables",
                "TRUNCATE stats_budget",
            ] {
                assert!(
                    sqlx::query(sql).execute(&pool).await.is_err(),
                    "{sql} was allowed"
                );
            }
        }
        // The ledger may grow (the next release's charge).
        sqlx::query("UPDATE stats_budget SET spent_micro = spent_micro + 0")
            .execute(&pool)
            .await
            .unwrap();

        // The ledger is public.
        let ledger = app.get("/api/v1/stats/ledger").await.json();
        assert_eq!(ledger["years"][0]["year"], 2026);
        assert_eq!(ledger["years"][0]["spent"], 1.0);
        assert_eq!(ledger["releases"][0]["release"], "2026-11");

        // Bad ids are clear errors.
        app.get("/api/v1/stats/releases/2026-13")
            .await
            .assert_error(422, "invalid_period");
        app.get("/api/v1/stats/releases/2026-10")
            .await
            .assert_error(404, "not_found");
        app.get("/api/v1/stats/releases/2026-11/secrets.csv")
            .await
            .assert_error(404, "not_found");
        app.get("/api/v1/stats/releases/2026-11/consents")
            .await
            .assert_error(404, "not_found");

        // The page shows it, charts inline.
        let page = app.get("/statistiques").await;
        assert_eq!(page.status, 200);
        let html = page.text();
        assert!(html.contains("<svg"), "a chart");
        assert!(html.contains(&row.sha256));
        assert!(page.body.len() < 50 * 1024, "{} bytes", page.body.len());
        assert_eq!(app.get("/statistiques?periode=nope").await.status, 422);
    })
    .await;
}

#[tokio::test]
async fn the_same_cell_gets_the_same_noise_when_built_again() {
    each_backend(|app| async move {
        // Two publishers of one month at once (two processes, a retry):
        // the same noise cell by cell and the same bytes, so one hash,
        // whichever is stored.
        app.clock.set(DEC_1);
        let before = app.state.audit.size().await.unwrap();
        let runs = [0, 1].map(|_| {
            let state = app.state.clone();
            let now = app.clock.now();
            tokio::spawn(async move {
                stats::publish(&state, Some(Period::parse("2026-11").unwrap()), now)
                    .await
                    .map_err(|e| e.code_and_status().0)
                    .unwrap()
            })
        });
        let mut hashes = Vec::new();
        for r in runs {
            hashes.push(r.await.unwrap().0.sha256);
        }
        assert_eq!(hashes[0], hashes[1]);
        assert_eq!(
            app.get("/api/v1/stats/releases")
                .await
                .json()
                .as_array()
                .unwrap()
                .len(),
            1
        );
        // Every entry the publishers wrote names that one hash.
        let size = app.state.audit.size().await.unwrap();
        let mut named = 0;
        for (_, leaf) in app.store.audit_entries(before, size).await.unwrap() {
            let e = coffre::audit::AuditEntry::decode(&leaf).unwrap();
            if e.action == "stats.publish" {
                named += 1;
                assert_eq!(e.reason, format!("release:2026-11:sha256:{}", hashes[0]));
            }
        }
        assert!(named >= 1);
        // Another month draws its own noise: an empty September and an
        // empty October (the demo starts in November) do not publish the
        // same values everywhere.
        publish(&app, "2026-09").await;
        publish(&app, "2026-10").await;
        let mut same = 0;
        let mut compared = 0;
        for t in coffre::domain::stats::StatTable::ALL {
            let a = app
                .get(&format!(
                    "/api/v1/stats/releases/2026-09/{}.csv",
                    t.as_str()
                ))
                .await
                .text();
            let b = app
                .get(&format!(
                    "/api/v1/stats/releases/2026-10/{}.csv",
                    t.as_str()
                ))
                .await
                .text();
            let (a, b): (BTreeMap<_, _>, BTreeMap<_, _>) = (
                cells(&a).into_iter().collect(),
                cells(&b).into_iter().collect(),
            );
            assert_eq!(
                a.keys().collect::<Vec<_>>(),
                b.keys().collect::<Vec<_>>(),
                "{t}: the same public domain"
            );
            for (k, v) in &a {
                if v.parse::<u64>().is_ok() {
                    compared += 1;
                    same += usize::from(b.get(k) == Some(v));
                }
            }
        }
        assert!(
            compared == 0 || same < compared,
            "{same} of {compared} published cells equal"
        );
    })
    .await;
}

#[tokio::test]
async fn the_yearly_budget_is_charged_atomically() {
    let setup = Setup {
        demo: true,
        configure: Some(Arc::new(|c: &mut coffre::Config| {
            c.stats_release_epsilon = 5.0;
            c.stats_annual_epsilon = 12.0;
        })),
        ..Setup::default()
    };
    each_backend_setup(setup, |app| async move {
        app.clock.set(DEC_1);
        // Four months at once; the year holds two releases of ε = 5.
        let months = ["2026-05", "2026-06", "2026-07", "2026-08"];
        let runs = months.map(|m| {
            let state = app.state.clone();
            let now = app.clock.now();
            tokio::spawn(async move {
                stats::publish(&state, Some(Period::parse(m).unwrap()), now)
                    .await
                    .map_err(|e| e.code_and_status().0)
            })
        });
        let mut ok = 0;
        for r in runs {
            match r.await.unwrap() {
                Ok((_, true)) => ok += 1,
                Ok((_, false)) => panic!("nothing was published before"),
                Err(code) => assert_eq!(code, "stats_budget_exhausted"),
            }
        }
        assert_eq!(ok, 2, "exactly two releases fit the year");
        let ledger = app.get("/api/v1/stats/ledger").await.json();
        assert_eq!(ledger["years"][0]["spent"], 10.0, "{ledger}");
        assert_eq!(ledger["releases"].as_array().unwrap().len(), 2);
        // Another year has its own budget.
        app.clock.set(1_802_000_000);
        let (_, created) = publish(&app, "2027-01").await;
        assert!(created);
    })
    .await;
}

/// The Python tools of the open-data checks: `tests/opendata/.venv`, made
/// by `.ci/run` (frictionless, rdflib).
fn opendata_tool(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/opendata/.venv/bin")
        .join(name);
    p.exists().then_some(p)
}

#[tokio::test]
async fn the_data_package_validates_and_the_catalogue_is_dcat() {
    let (Some(frictionless), Some(python)) =
        (opendata_tool("frictionless"), opendata_tool("python"))
    else {
        notice(
            "SKIPPED the_data_package_validates_and_the_catalogue_is_dcat: tests/opendata/.venv is missing (run .ci/run, or python3 -m venv tests/opendata/.venv && tests/opendata/.venv/bin/pip install -r tests/opendata/requirements.txt)",
        );
        return;
    };
    each_backend(|app| {
        let (frictionless, python) = (frictionless.clone(), python.clone());
        async move {
            app.clock.set(DEC_1);
            publish(&app, "2026-11").await;
            let dir = tempfile::tempdir().unwrap();
            let package = app.get("/api/v1/stats/releases/2026-11").await;
            std::fs::write(dir.path().join("datapackage.json"), &package.body).unwrap();
            for r in package.json()["resources"].as_array().unwrap() {
                let path = r["path"].as_str().unwrap();
                let csv = app.get(&format!("/api/v1/stats/releases/2026-11/{path}")).await;
                std::fs::write(dir.path().join(path), &csv.body).unwrap();
            }
            let out = std::process::Command::new(&frictionless)
                .args(["validate", "--json", "datapackage.json"])
                .current_dir(dir.path())
                .output()
                .unwrap();
            let report: Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
            assert_eq!(report["valid"], true, "frictionless: {report:#}");

            let catalog = app.get("/api/v1/stats/catalog.jsonld").await;
            assert_eq!(catalog.header("content-type"), Some("application/ld+json"));
            std::fs::write(dir.path().join("catalog.jsonld"), &catalog.body).unwrap();
            let script = r#"
import sys, rdflib
from rdflib.namespace import RDF, DCAT, DCTERMS, FOAF
g = rdflib.Graph()
g.parse(sys.argv[1], format="json-ld")
def n(cls): return len(list(g.subjects(RDF.type, cls)))
print(n(DCAT.Catalog), n(DCAT.Dataset), n(DCAT.Distribution), n(FOAF.Organization), len(list(g.objects(None, DCTERMS.license))), len(list(g.objects(None, DCAT.downloadURL))))
"#;
            let out = std::process::Command::new(&python)
                .args(["-c", script, "catalog.jsonld"])
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let counts: Vec<u64> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            assert_eq!(counts[..4], [1, 1, 9, 1], "catalogue, one dataset, 9 distributions, publisher");
            assert!(counts[4] >= 1 && counts[5] == 9, "{counts:?}");
        }
    })
    .await;
}

const DPO: &str = "a1d00000-0000-4000-8000-000000000004";

#[tokio::test]
async fn the_dpo_reads_the_annual_report_and_nobody_else_does() {
    each_backend(|app| async move {
        // A partner reads in 2026 (the demo's partner of etude-mobilite).
        app.clock.set(DEC_1);
        publish(&app, "2026-11").await;
        let dpo = app.login(DPO).await;
        let res = app
            .as_user(
                &dpo,
                axum::http::Method::GET,
                "/api/v1/dpo/report?year=2026",
                None,
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let entry: u64 = res.header("x-audit-entry").unwrap().parse().unwrap();
        let report = res.json();
        assert_eq!(report["year"], 2026);
        let users = report["data_users"].as_array().unwrap();
        assert!(!users.is_empty());
        for u in users {
            assert!(!u["purposes"].as_array().unwrap().is_empty(), "{u}");
            assert!(!u["contact"].as_array().unwrap().is_empty(), "{u}");
            assert!(!u["means"].as_array().unwrap().is_empty(), "{u}");
        }
        assert_eq!(report["statistics_releases"][0]["release"], "2026-11");
        // The DPO's read is in the log.
        let (_, leaf) = app
            .store
            .audit_entries(entry, entry + 1)
            .await
            .unwrap()
            .remove(0);
        let e = coffre::audit::AuditEntry::decode(&leaf).unwrap();
        assert_eq!(
            (e.action.as_str(), e.actor_id.as_str()),
            ("report.read", DPO)
        );

        // The page, printable, for the DPO.
        let page = app
            .as_user(
                &dpo,
                axum::http::Method::GET,
                "/dpo/rapport?annee=2026",
                None,
            )
            .await;
        assert_eq!(page.status, 200);
        assert!(page.text().contains("Rapport annuel"));

        // Bad years, and anybody else, are refused.
        app.as_user(
            &dpo,
            axum::http::Method::GET,
            "/api/v1/dpo/report?year=26",
            None,
        )
        .await
        .assert_error(400, "invalid_parameter");
        app.as_user(&dpo, axum::http::Method::GET, "/api/v1/dpo/report", None)
            .await
            .assert_error(400, "missing_parameter");
        let awa = app.login("0b9a3c1e-5d6f-4a7b-8c9d-000000000001").await;
        app.as_user(
            &awa,
            axum::http::Method::GET,
            "/api/v1/dpo/report?year=2026",
            None,
        )
        .await
        .assert_error(403, "role_not_allowed");
        app.get("/api/v1/dpo/report?year=2026")
            .await
            .assert_error(401, "unauthenticated");
    })
    .await;
}

/// The monthly job claims the month before it reads every resident: a
/// month another process is building (or that failed within the last six
/// hours) is left alone, and nothing is read or logged for it; once the
/// claim lapses, the job publishes.
#[tokio::test]
async fn the_monthly_job_builds_a_month_once_at_a_time() {
    each_backend(|app| async move {
        app.clock.set(DEC_1);
        // Another process holds November.
        assert!(
            app.store
                .stats_claim("2026-11", DEC_1 + stats::PUBLISH_RETRY_SECS, DEC_1)
                .await
                .unwrap()
        );
        assert!(
            !app.store
                .stats_claim("2026-11", DEC_1 + 60, DEC_1)
                .await
                .unwrap(),
            "one claim at a time"
        );
        let size = app.state.audit.size().await.unwrap();
        stats::publish_due(&app.state, DEC_1).await;
        assert!(app.store.stats_release("2026-11").await.unwrap().is_none());
        assert_eq!(
            app.state.audit.size().await.unwrap(),
            size,
            "nothing read, nothing logged"
        );
        // Six hours later the claim has lapsed: published, once.
        let later = DEC_1 + stats::PUBLISH_RETRY_SECS;
        app.clock.set(later);
        stats::publish_due(&app.state, later).await;
        let row = app
            .store
            .stats_release("2026-11")
            .await
            .unwrap()
            .expect("published");
        let size = app.state.audit.size().await.unwrap();
        stats::publish_due(&app.state, later + 3600).await;
        assert_eq!(
            app.state.audit.size().await.unwrap(),
            size,
            "a month published is left as it is"
        );
        assert_eq!(
            app.store
                .stats_release("2026-11")
                .await
                .unwrap()
                .unwrap()
                .sha256,
            row.sha256
        );
    })
    .await;
}
