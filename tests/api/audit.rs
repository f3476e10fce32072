//! The audit log: every decision recorded before disclosure, fail-closed
//! when the log cannot be written, tamper detection by `coffre audit
//! verify`, several writers on one database, and a crash mid-burst.

use std::process::Command;
use std::sync::Arc;

use axum::http::Method;
use coffre::audit::AuditRecord;
use coffre::audit::note::NoteSigner;

use crate::support::{TestApp, build_app, each_backend};
use crate::vault::{AWA, JP};

const AUDITOR: &str = "a1d00000-0000-4000-8000-000000000005";

pub(crate) fn verifier_key(app: &TestApp) -> String {
    let set = app.keys.current();
    NoteSigner::from_seed(&app.state.config.audit_log_name, set.signing_seed())
        .unwrap()
        .verifier_key()
}

/// Runs the real `coffre audit verify` against the test database, trusting
/// the published verifier key (no keys folder needed, as for an auditor).
fn audit_verify(app: &TestApp, extra: &[&str]) -> (bool, String) {
    let vkey = verifier_key(app);
    let mut args = vec!["audit", "verify", "--key", &vkey];
    args.extend_from_slice(extra);
    coffre_cli(app, &args)
}

/// Runs the real `coffre` binary with `args` on the test database.
pub(crate) fn coffre_cli(app: &TestApp, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffre"));
    for (k, _) in std::env::vars() {
        if k.starts_with("COFFRE_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .current_dir(app.dir.path())
        .env("COFFRE_DATABASE_URL", &app.database_url)
        .env("COFFRE_AUDIT_LOG_NAME", &app.state.config.audit_log_name)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Twenty-odd entries with checkpoints along the way.
async fn busy_log(app: &TestApp) {
    let awa = app.login(AWA).await;
    let jp = app.login(JP).await;
    for i in 0..6 {
        let s = if i % 2 == 0 { &awa } else { &jp };
        assert_eq!(
            app.as_user(s, Method::GET, "/api/v1/me/data", None)
                .await
                .status,
            200
        );
        app.clock.advance(1);
        assert_eq!(app.get("/api/v1/audit/checkpoint").await.status, 200);
    }
    for _ in 0..12 {
        app.as_user(&awa, Method::GET, "/api/v1/me/data/contact", None)
            .await;
    }
    app.clock.advance(1);
    assert_eq!(app.get("/api/v1/audit/checkpoint").await.status, 200);
}

async fn pool(app: &TestApp) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&app.database_url).await.unwrap()
}

/// The stored hash of interior node (`level`, `idx`).
async fn stored_node(p: &sqlx::AnyPool, level: i64, idx: i64) -> Vec<u8> {
    let (h,): (Vec<u8>,) =
        sqlx::query_as("SELECT hash FROM audit_nodes WHERE level = $1 AND idx = $2")
            .bind(level)
            .bind(idx)
            .fetch_one(p)
            .await
            .unwrap();
    h
}

/// Replaces node (`level`, `idx`) with `hash`, or deletes it (`None`).
async fn set_node(p: &sqlx::AnyPool, level: i64, idx: i64, hash: Option<Vec<u8>>) {
    sqlx::query("DELETE FROM audit_nodes WHERE level = $1 AND idx = $2")
        .bind(level)
        .bind(idx)
        .execute(p)
        .await
        .unwrap();
    if let Some(hash) = hash {
        sqlx::query("INSERT INTO audit_nodes (level, idx, hash) VALUES ($1, $2, $3)")
            .bind(level)
            .bind(idx)
            .bind(hash)
            .execute(p)
            .await
            .unwrap();
    }
}

async fn leaf(pool: &sqlx::AnyPool, idx: i64) -> Vec<u8> {
    let (leaf,): (Vec<u8>,) = sqlx::query_as("SELECT leaf FROM audit_entries WHERE idx = $1")
        .bind(idx)
        .fetch_one(pool)
        .await
        .unwrap();
    leaf
}

async fn set_leaf(pool: &sqlx::AnyPool, idx: i64, leaf: Vec<u8>) {
    sqlx::query("UPDATE audit_entries SET leaf = $1 WHERE idx = $2")
        .bind(leaf)
        .bind(idx)
        .execute(pool)
        .await
        .unwrap();
}

fn assert_fails_at(app: &TestApp, index: u64) {
    let (ok, text) = audit_verify(app, &[]);
    assert!(!ok, "verify should fail: {text}");
    assert!(
        text.contains(&format!("entry {index}:")),
        "expected first bad index {index}: {text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

#[tokio::test]
async fn untouched_log_verifies() {
    each_backend(|app| async move {
        busy_log(&app).await;
        let (ok, text) = audit_verify(&app, &[]);
        assert!(ok, "{text}");
        assert!(text.contains("audit log OK"), "{text}");
        // Against a checkpoint kept outside the database too.
        let cp = app.get("/api/v1/audit/checkpoint").await.text();
        let file = app.dir.path().join("kept.checkpoint");
        std::fs::write(&file, &cp).unwrap();
        let (ok, text) = audit_verify(&app, &["--checkpoint", file.to_str().unwrap()]);
        assert!(ok, "{text}");
        // A forged outside checkpoint is refused.
        let forged = cp.replacen(char::is_numeric, "9", 1);
        std::fs::write(&file, forged).unwrap();
        let (ok, text) = audit_verify(&app, &["--checkpoint", file.to_str().unwrap()]);
        assert!(!ok, "{text}");
    })
    .await;
}

#[tokio::test]
async fn altered_entry_is_found() {
    each_backend(|app| async move {
        busy_log(&app).await;
        let p = pool(&app).await;
        let mut l = leaf(&p, 7).await;
        l[22] ^= 0x01; // a character of the actor id
        set_leaf(&p, 7, l).await;
        p.close().await;
        assert_fails_at(&app, 7);
    })
    .await;
}

#[tokio::test]
async fn deleted_entry_is_found() {
    each_backend(|app| async move {
        busy_log(&app).await;
        let p = pool(&app).await;
        sqlx::query("DELETE FROM audit_entries WHERE idx = 5")
            .execute(&p)
            .await
            .unwrap();
        p.close().await;
        assert_fails_at(&app, 5);
    })
    .await;
}

#[tokio::test]
async fn reordered_entries_are_found() {
    each_backend(|app| async move {
        busy_log(&app).await;
        let p = pool(&app).await;
        let (a, b) = (leaf(&p, 3).await, leaf(&p, 4).await);
        set_leaf(&p, 3, b).await;
        set_leaf(&p, 4, a).await;
        p.close().await;
        assert_fails_at(&app, 3);
    })
    .await;
}

#[tokio::test]
async fn inserted_entries_are_found() {
    each_backend(|app| async move {
        busy_log(&app).await;
        let p = pool(&app).await;
        // Shift entries 6.. up by one and slip a forged entry in at 6.
        sqlx::query("UPDATE audit_entries SET idx = idx + 1000000 WHERE idx >= 6").execute(&p).await.unwrap();
        sqlx::query("UPDATE audit_entries SET idx = idx - 999999 WHERE idx >= 1000000").execute(&p).await.unwrap();
        let forged = AuditRecord {
            timestamp: 0,
            actor_id: "forger".into(),
            actor_role: "admin".into(),
            action: "data.read".into(),
            allowed: true,
            reason: "forged".into(),
            ..Default::default()
        }
        .encode(6)
        .unwrap();
        sqlx::query("INSERT INTO audit_entries (idx, leaf, resident_id, created_at) VALUES (6, $1, NULL, 0)")
            .bind(forged)
            .execute(&p)
            .await
            .unwrap();
        p.close().await;
        assert_fails_at(&app, 6);
    })
    .await;
}

#[tokio::test]
async fn entry_appended_behind_the_log_is_found() {
    each_backend(|app| async move {
        busy_log(&app).await;
        let size = app.state.audit.size().await.unwrap();
        let p = pool(&app).await;
        let forged = leaf(&p, 0).await;
        sqlx::query("INSERT INTO audit_entries (idx, leaf, resident_id, created_at) VALUES ($1, $2, NULL, 0)")
            .bind(size as i64)
            .bind(forged)
            .execute(&p)
            .await
            .unwrap();
        p.close().await;
        assert_fails_at(&app, size);
    })
    .await;
}

#[tokio::test]
async fn nothing_is_disclosed_when_the_log_cannot_be_written() {
    each_backend(|app| async move {
        let s = app.login(AWA).await;
        let p = pool(&app).await;
        sqlx::query("DROP TABLE audit_nodes")
            .execute(&p)
            .await
            .unwrap();
        p.close().await;
        let res = app.as_user(&s, Method::GET, "/api/v1/me/data", None).await;
        res.assert_error(503, "audit_unavailable");
        assert!(
            !res.text().contains("Diallo") && !res.text().contains("awa.diallo"),
            "{}",
            res.text()
        );
        let res = app
            .as_user(
                &s,
                Method::PUT,
                "/api/v1/me/data/contact",
                Some(serde_json::json!({"phone": "0611111111"})),
            )
            .await;
        res.assert_error(503, "audit_unavailable");
    })
    .await;
}

#[tokio::test]
async fn every_access_is_recorded_and_visible_to_the_resident_with_proofs() {
    each_backend(|app| async move {
        let s = app.login(AWA).await;
        let res = app
            .as_user(&s, Method::GET, "/api/v1/me/data/contact", None)
            .await;
        let index: u64 = res.header("x-audit-entry").unwrap().parse().unwrap();
        // A refused attempt is recorded too.
        let dpo = app.login("a1d00000-0000-4000-8000-000000000004").await;
        app.as_user(&dpo, Method::GET, "/api/v1/me/data", None)
            .await
            .assert_error(403, "resident_only");

        app.clock.advance(1);
        let mine = app
            .as_user(&s, Method::GET, "/api/v1/me/accesses", None)
            .await
            .json();
        let accesses = mine["accesses"].as_array().unwrap();
        let read = accesses.iter().find(|a| a["index"] == index).unwrap();
        assert_eq!(read["action"], "data.read");
        assert_eq!(read["category"], "contact");
        assert_eq!(read["decision"], "allow");
        assert_eq!(read["actor_id"], AWA);
        assert!(read["proof"].is_array());
        assert!(
            mine["checkpoint"]
                .as_str()
                .unwrap()
                .contains("\n\n\u{2014} ")
        );
        // Other residents' entries are not shown.
        assert!(accesses.iter().all(|a| a["resident_id"] == AWA));

        // Only auditors (and the DPO) read the whole log.
        let auditor = app.login(AUDITOR).await;
        let all = app
            .as_user(
                &auditor,
                Method::GET,
                "/api/v1/audit/entries?from=0&to=1000",
                None,
            )
            .await;
        assert_eq!(all.status, 200, "{}", all.text());
        let entries = all.json()["entries"].as_array().unwrap().clone();
        assert!(
            entries
                .iter()
                .any(|e| e["reason"] == "resident_only" && e["decision"] == "deny")
        );
        app.as_user(&s, Method::GET, "/api/v1/audit/entries?from=0&to=10", None)
            .await
            .assert_error(403, "auditor_only");
        // No personal value in any entry.
        let text = all.text();
        for value in ["Diallo", "awa.diallo", "0612345678"] {
            assert!(!text.contains(value), "{value} in the audit log");
        }
    })
    .await;
}

#[tokio::test]
async fn proof_routes_refuse_bad_parameters() {
    each_backend(|app| async move {
        app.login(AWA).await;
        let size = app.state.audit.size().await.unwrap();
        app.get("/api/v1/audit/proofs/inclusion?leaf_index=0")
            .await
            .assert_error(400, "missing_parameter");
        app.get("/api/v1/audit/proofs/inclusion?leaf_index=x&tree_size=1")
            .await
            .assert_error(400, "invalid_parameter");
        app.get(&format!(
            "/api/v1/audit/proofs/inclusion?leaf_index={size}&tree_size={size}"
        ))
        .await
        .assert_error(422, "leaf_index_out_of_range");
        app.get(&format!(
            "/api/v1/audit/proofs/inclusion?leaf_index=0&tree_size={}",
            size + 1
        ))
        .await
        .assert_error(422, "tree_size_too_large");
        app.get("/api/v1/audit/proofs/consistency?from=2&to=1")
            .await
            .assert_error(422, "invalid_range");
        let ok = app
            .get(&format!(
                "/api/v1/audit/proofs/consistency?from=1&to={size}"
            ))
            .await;
        assert_eq!(ok.status, 200, "{}", ok.text());
    })
    .await;
}

#[tokio::test]
async fn two_servers_writing_at_once_keep_one_consistent_tree() {
    each_backend(|app| async move {
        // A second server: its own pool and its own group-commit writer.
        let other = build_app(&app.database_url, app.backend, false).await;
        let mut tasks = Vec::new();
        for (n, state) in [app.state.clone(), other.state.clone()]
            .into_iter()
            .enumerate()
        {
            for i in 0..100 {
                let state = state.clone();
                tasks.push(tokio::spawn(async move {
                    state
                        .audit
                        .record(AuditRecord {
                            timestamp: 1,
                            actor_id: format!("server-{n}"),
                            actor_role: "admin".into(),
                            action: "test.write".into(),
                            allowed: true,
                            reason: format!("n{i}"),
                            ..Default::default()
                        })
                        .await
                        .unwrap()
                }));
            }
        }
        let mut indices = Vec::new();
        for t in tasks {
            indices.push(t.await.unwrap());
        }
        indices.sort_unstable();
        indices.dedup();
        assert_eq!(indices.len(), 200, "two entries got the same index");
        let (ok, text) = audit_verify(&app, &[]);
        assert!(ok, "{text}");
        let _ = Arc::new(other);
    })
    .await;
}

#[tokio::test]
async fn a_running_server_refuses_to_sign_a_rewritten_log() {
    each_backend(|app| async move {
        busy_log(&app).await;
        let size = app.state.audit.size().await.unwrap();
        // A DBA truncates the tail, deletes every stored checkpoint to hide
        // it, and the log grows again.
        let p = pool(&app).await;
        sqlx::query("DELETE FROM audit_checkpoints")
            .execute(&p)
            .await
            .unwrap();
        sqlx::query("DELETE FROM audit_entries WHERE idx >= $1")
            .bind((size - 5) as i64)
            .execute(&p)
            .await
            .unwrap();
        sqlx::query("DELETE FROM audit_nodes WHERE ((idx + 1) << CAST(level AS INTEGER)) > $1")
            .bind((size - 5) as i64)
            .execute(&p)
            .await
            .unwrap();
        sqlx::query("UPDATE audit_head SET size = $1")
            .bind((size - 5) as i64)
            .execute(&p)
            .await
            .unwrap();
        p.close().await;
        let s = app.login(AWA).await;
        app.as_user(&s, Method::GET, "/api/v1/me/data", None).await;
        app.clock.advance(1);
        app.get("/api/v1/audit/checkpoint")
            .await
            .assert_error(500, "integrity_error");
    })
    .await;
}

/// A resident's entries are found whether the writer has indexed them yet
/// or not (the index is filled in bulk), each once, newest first.
#[tokio::test]
async fn a_residents_entries_are_found_indexed_or_not() {
    each_backend(|app| async move {
        let store = app.state.store.clone();
        // Indexes of Awa's entries below `before`, newest first.
        let entries_of = |before: u64, limit: i64| {
            let store = store.clone();
            async move {
                store
                    .audit_entries_of(&crate::support::resident_id(AWA), before, limit)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|(idx, _)| idx)
                    .collect::<Vec<i64>>()
            }
        };
        let entry = |resident: &str| AuditRecord {
            timestamp: 0,
            actor_id: "tester".into(),
            actor_role: "admin".into(),
            action: "data.read".into(),
            resident_id: Some(resident.to_string()),
            allowed: true,
            reason: "test".into(),
            ..Default::default()
        };
        // Entries the fixtures wrote for her count too.
        let mut want = entries_of(app.state.audit.size().await.unwrap(), 100).await;
        for i in 0..10 {
            let idx = app
                .state
                .audit
                .record(entry(if i % 3 == 0 { AWA } else { JP }))
                .await
                .unwrap();
            if i % 3 == 0 {
                want.insert(0, idx as i64);
            }
            if i == 5 {
                // Index what is there so far; the rest stays in the tail.
                while store.audit_index_residents(u64::MAX).await.unwrap() > 0 {}
            }
        }
        assert!(want.len() >= 4);
        let size = app.state.audit.size().await.unwrap();
        assert_eq!(entries_of(size, 100).await, want);
        // Fully indexed, the answer is the same; `before` and `limit` hold.
        while store.audit_index_residents(3).await.unwrap() > 0 {}
        assert_eq!(entries_of(size, 100).await, want);
        assert_eq!(entries_of(want[0] as u64, 2).await, want[1..3].to_vec());
        // Lost or emptied, the index hides nothing (the log is scanned),
        // and `coffre audit reindex` rebuilds it.
        store.audit_reset_resident_index().await.unwrap();
        assert_eq!(entries_of(size, 100).await, want);
        let (ok, out) = coffre_cli(&app, &["audit", "reindex"]);
        assert!(ok, "{out}");
        // (The test server's own writer may index part of it meanwhile.)
        assert!(
            out.contains("the resident and recipients indexes cover"),
            "{out}"
        );
        assert_eq!(entries_of(size, 100).await, want);
    })
    .await;
}

/// Issue 19 §5: every stored interior node is checked, not only those on
/// the frontier: a zeroed or deleted inner node (which would make proofs
/// fail against the signed checkpoint) is named by `audit verify`.
#[tokio::test]
async fn altered_or_deleted_interior_nodes_are_found() {
    each_backend(|app| async move {
        busy_log(&app).await;
        busy_log(&app).await;
        let size = app.state.audit.size().await.unwrap();
        assert!(size >= 32, "log too short for the test: {size}");
        let (ok, text) = audit_verify(&app, &[]);
        assert!(ok, "{text}");
        let p = pool(&app).await;
        // Zeroed (1, 0).
        let kept = stored_node(&p, 1, 0).await;
        set_node(&p, 1, 0, Some(vec![0u8; 32])).await;
        let (ok, text) = audit_verify(&app, &[]);
        assert!(!ok && text.contains("stored node (1, 0)"), "{text}");
        assert!(text.contains("altered"), "{text}");
        set_node(&p, 1, 0, Some(kept)).await;
        // Deleted (3, 2), then (2, 5).
        for (level, idx) in [(3i64, 2i64), (2, 5)] {
            let kept = stored_node(&p, level, idx).await;
            set_node(&p, level, idx, None).await;
            let (ok, text) = audit_verify(&app, &[]);
            assert!(
                !ok && text.contains(&format!("stored node ({level}, {idx})")),
                "{text}"
            );
            assert!(text.contains("missing"), "{text}");
            set_node(&p, level, idx, Some(kept)).await;
        }
        p.close().await;
        let (ok, text) = audit_verify(&app, &[]);
        assert!(ok, "restored: {text}");
    })
    .await;
}

/// The verifier reads the log in batches (10,000 entries in the product),
/// and a node a batch completes may lie over entries of earlier batches.
/// Every other test log fits in one batch read from 0, where a wrong range
/// of prefetched nodes or a wrong index in the report goes unseen (found by
/// cargo-mutants: eight mutants of `verify.rs` survived every test). Here a
/// short log is read in batches of several sizes: clean, it verifies at
/// each; with an interior node of a later batch altered or deleted, the
/// report names that node and the entries under it.
#[tokio::test]
async fn a_log_read_in_several_batches_verifies_and_names_the_bad_node() {
    each_backend(|app| async move {
        busy_log(&app).await;
        busy_log(&app).await;
        let size = app.state.audit.size().await.unwrap();
        assert!(size >= 32, "log too short for the test: {size}");
        let verifier = coffre::audit::note::NoteVerifier::parse(&verifier_key(&app)).unwrap();
        let origin = app.state.audit.origin().to_owned();
        let run = |batch: u64| {
            let (app, verifier, origin) = (&app, &verifier, &origin);
            async move {
                coffre::audit::verify::verify_in_batches(&app.store, verifier, origin, None, batch)
                    .await
            }
        };
        for batch in [0, 1, 3, 7, 8, 16, 10_000] {
            let report = run(batch)
                .await
                .unwrap_or_else(|e| panic!("clean log, batches of {batch}: {e}"));
            assert_eq!(report.size, size, "batches of {batch}");
            assert!(report.checkpoints > 1, "batches of {batch}");
        }
        let p = pool(&app).await;
        // (1, 9) over entries 18..=19, (2, 5) over 20..=23, (3, 2) over
        // 16..=23: read in batches of 7, each is completed in the third
        // batch (14..21) or the fourth (21..28), past the first.
        for (level, idx, first, last) in [(1i64, 9i64, 18, 19), (2, 5, 20, 23), (3, 2, 16, 23)] {
            let kept = stored_node(&p, level, idx).await;
            for (damage, word) in [(Some(vec![0u8; 32]), "altered"), (None, "missing")] {
                set_node(&p, level, idx, damage).await;
                let failure = run(7)
                    .await
                    .expect_err("a damaged node must fail verification");
                let text = failure.to_string();
                assert!(
                    text.contains(&format!(
                        "stored node ({level}, {idx}) over entries {first}..={last} is {word}"
                    )),
                    "{text}"
                );
                set_node(&p, level, idx, Some(kept.clone())).await;
            }
        }
        p.close().await;
        run(7).await.expect("restored");
    })
    .await;
}

/// A tail cut off the log (entries, their nodes and the head's size all
/// made consistent) is caught by `audit verify` against the checkpoints
/// that were signed over it, stored or kept outside (found missing by
/// cargo-mutants: nothing tested this).
#[tokio::test]
async fn a_tail_cut_below_a_signed_checkpoint_is_found() {
    each_backend(|app| async move {
        busy_log(&app).await;
        let size = app.state.audit.size().await.unwrap();
        let signed = app.get("/api/v1/audit/checkpoint").await.text();
        let file = app.dir.path().join("kept-checkpoint");
        std::fs::write(&file, &signed).unwrap();
        let p = pool(&app).await;
        let cut = (size - 5) as i64;
        sqlx::query("DELETE FROM audit_entries WHERE idx >= $1")
            .bind(cut)
            .execute(&p)
            .await
            .unwrap();
        sqlx::query("DELETE FROM audit_nodes WHERE ((idx + 1) << CAST(level AS INTEGER)) > $1")
            .bind(cut)
            .execute(&p)
            .await
            .unwrap();
        sqlx::query("UPDATE audit_head SET size = $1")
            .bind(cut)
            .execute(&p)
            .await
            .unwrap();
        let (ok, text) = audit_verify(&app, &[]);
        assert!(!ok && text.contains("entries were deleted"), "{text}");
        // The stored checkpoints deleted too: the one kept outside says it.
        sqlx::query("DELETE FROM audit_checkpoints WHERE tree_size > $1")
            .bind(cut)
            .execute(&p)
            .await
            .unwrap();
        let (ok, _) = audit_verify(&app, &[]);
        assert!(ok, "without a checkpoint over the cut, nothing can tell");
        // What is left is consistent: the checkpoint kept outside reports a
        // rollback, as such (an older copy restored looks exactly so).
        let (ok, text) = audit_verify(&app, &["--checkpoint", file.to_str().unwrap()]);
        assert!(!ok && text.contains("ROLLED BACK"), "{text}");
        assert!(
            text.contains(&format!("holds {cut} entries"))
                && text.contains(&format!("signs {size}"))
                && !text.contains("altered"),
            "{text}"
        );
        // A rolled-back log that was also rewritten: the rewrite is named
        // first (a rollback is only said of a consistent log).
        let kept = leaf(&p, 3).await;
        let mut altered = kept.clone();
        altered[10] ^= 1;
        set_leaf(&p, 3, altered).await;
        let (ok, text) = audit_verify(&app, &["--checkpoint", file.to_str().unwrap()]);
        assert!(
            !ok && text.contains("entry 3:") && !text.contains("ROLLED BACK"),
            "{text}"
        );
        set_leaf(&p, 3, kept).await;
        p.close().await;
    })
    .await;
}

/// The last entry deleted, the head's size left as it was: found at its
/// index (found missing by cargo-mutants: only a middle deletion was
/// tested, and the end-of-batch check could be inverted unseen).
#[tokio::test]
async fn the_last_entry_deleted_is_found() {
    each_backend(|app| async move {
        busy_log(&app).await;
        let size = app.state.audit.size().await.unwrap();
        let p = pool(&app).await;
        sqlx::query("DELETE FROM audit_entries WHERE idx = $1")
            .bind((size - 1) as i64)
            .execute(&p)
            .await
            .unwrap();
        p.close().await;
        assert_fails_at(&app, size - 1);
    })
    .await;
}
