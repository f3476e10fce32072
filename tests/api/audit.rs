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
async fn audit_verify(app: &TestApp, extra: &[&str]) -> (bool, String) {
    let vkey = verifier_key(app);
    let mut args = vec!["audit", "verify", "--key", &vkey];
    args.extend_from_slice(extra);
    coffre_cli(app, &args).await
}

/// Runs the real `coffre` binary with `args` on the test database.
/// On a blocking thread: the test's own runtime has one thread, and its
/// background tasks (the audit integrator, the indexers) must be able to
/// finish a transaction they are in while the command runs, or they would
/// hold SQLite's write lock against it.
pub(crate) async fn coffre_cli(app: &TestApp, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffre"));
    for (k, _) in std::env::vars() {
        if k.starts_with("COFFRE_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(app.dir.path())
        .env("COFFRE_DATABASE_URL", &app.database_url)
        .env("COFFRE_AUDIT_LOG_NAME", &app.state.config.audit_log_name)
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
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
    integrated(app).await;
}

/// An entry an administrator's test act leaves (the `i`-th of `actor`).
fn test_write(actor: &str, i: impl std::fmt::Display) -> AuditRecord {
    AuditRecord {
        timestamp: 1,
        actor_id: actor.into(),
        actor_role: "admin".into(),
        action: "test.write".into(),
        allowed: true,
        reason: format!("n{i}"),
        ..Default::default()
    }
}

/// Waits until every sequenced entry is integrated into the tiles (what
/// `audit verify` and the proofs cover).
async fn integrated(app: &TestApp) -> u64 {
    let size = app.state.audit.size().await.unwrap();
    assert!(
        app.state
            .audit
            .await_integrated(size, std::time::Duration::from_secs(20))
            .await,
        "entries not integrated"
    );
    size
}

async fn pool(app: &TestApp) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&app.database_url).await.unwrap()
}

/// The stored hashes of tile (`level`, `idx`).
async fn stored_tile(p: &sqlx::AnyPool, level: i64, idx: i64) -> Vec<u8> {
    let (h,): (Vec<u8>,) =
        sqlx::query_as("SELECT hashes FROM audit_tiles WHERE level = $1 AND idx = $2")
            .bind(level)
            .bind(idx)
            .fetch_one(p)
            .await
            .unwrap();
    h
}

/// Replaces tile (`level`, `idx`) with `hashes`, or deletes it (`None`).
async fn set_tile(p: &sqlx::AnyPool, level: i64, idx: i64, hashes: Option<Vec<u8>>) {
    sqlx::query("DELETE FROM audit_tiles WHERE level = $1 AND idx = $2")
        .bind(level)
        .bind(idx)
        .execute(p)
        .await
        .unwrap();
    if let Some(hashes) = hashes {
        sqlx::query("INSERT INTO audit_tiles (level, idx, hashes) VALUES ($1, $2, $3)")
            .bind(level)
            .bind(idx)
            .bind(hashes)
            .execute(p)
            .await
            .unwrap();
    }
}

/// Cuts the log to its first `cut` entries as someone with write access
/// would, leaving it consistent: entries, the right edge's tile, the head's
/// and the integration's sizes (a log of fewer than 256 entries, whose tree
/// is one tile).
async fn cut_log(p: &sqlx::AnyPool, size: u64, cut: i64) {
    assert!(size < 256, "the log is longer than one tile: {size}");
    sqlx::query("DELETE FROM audit_entries WHERE idx >= $1")
        .bind(cut)
        .execute(p)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE audit_tiles SET hashes = substr(hashes, 1, $1) WHERE level = 0 AND idx = 0",
    )
    .bind((cut * 32) as i32)
    .execute(p)
    .await
    .unwrap();
    for table in ["audit_head", "audit_integration"] {
        sqlx::query(&format!("UPDATE {table} SET size = $1"))
            .bind(cut)
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

async fn assert_fails_at(app: &TestApp, index: u64) {
    let (ok, text) = audit_verify(app, &[]).await;
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
        let (ok, text) = audit_verify(&app, &[]).await;
        assert!(ok, "{text}");
        assert!(text.contains("audit log OK"), "{text}");
        // Against a checkpoint kept outside the database too.
        let cp = app.get("/api/v1/audit/checkpoint").await.text();
        let file = app.dir.path().join("kept.checkpoint");
        std::fs::write(&file, &cp).unwrap();
        let (ok, text) = audit_verify(&app, &["--checkpoint", file.to_str().unwrap()]).await;
        assert!(ok, "{text}");
        // A forged outside checkpoint is refused.
        let forged = cp.replacen(char::is_numeric, "9", 1);
        std::fs::write(&file, forged).unwrap();
        let (ok, text) = audit_verify(&app, &["--checkpoint", file.to_str().unwrap()]).await;
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
        assert_fails_at(&app, 7).await;
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
        assert_fails_at(&app, 5).await;
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
        assert_fails_at(&app, 3).await;
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
        assert_fails_at(&app, 6).await;
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
        assert_fails_at(&app, size).await;
    })
    .await;
}

#[tokio::test]
async fn nothing_is_disclosed_when_the_log_cannot_be_written() {
    each_backend(|app| async move {
        let s = app.login(AWA).await;
        let p = pool(&app).await;
        sqlx::query("DROP TABLE audit_entries")
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
        // Proofs cover the integrated tree (a client takes its size from a
        // checkpoint).
        let size = integrated(&app).await;
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
                        .record(test_write(&format!("server-{n}"), i))
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
        // Whichever process holds the lease integrates both's entries.
        integrated(&app).await;
        let (ok, text) = audit_verify(&app, &[]).await;
        assert!(text.contains("(and 0 sequenced"), "{text}");
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
        cut_log(&p, size, (size - 5) as i64).await;
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
        // The CLI below blocks this test's only thread: the integrator must
        // not be left in the middle of a transaction (holding SQLite's
        // write lock) when it does.
        integrated(&app).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (ok, out) = coffre_cli(&app, &["audit", "reindex"]).await;
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

/// Issue 19 §5, with the tree stored as tiles: every stored tile is
/// checked, not only the root. The verifier reads the log in batches
/// (10,000 entries in the product) and a tile a batch completes lies over
/// entries of earlier batches (cargo-mutants found eight mutants of
/// `verify.rs` surviving when every test log fitted in one batch). Here a
/// log of three level-0 tiles and one level-1 tile is read in batches of
/// several sizes: clean, it verifies at each; each damage is named, read in
/// batches of 7.
#[tokio::test]
async fn a_log_read_in_several_batches_verifies_and_names_the_bad_tile() {
    each_backend(|app| async move {
        busy_log(&app).await;
        let before = app.state.audit.size().await.unwrap();
        for i in before..600 {
            app.state
                .audit
                .record(test_write("agent-1", i))
                .await
                .unwrap();
        }
        app.clock.advance(1);
        assert_eq!(app.get("/api/v1/audit/checkpoint").await.status, 200);
        let size = integrated(&app).await;
        assert_eq!(size, 600);
        let verifier = coffre::audit::note::NoteVerifier::parse(&verifier_key(&app)).unwrap();
        let origin = app.state.audit.origin().to_owned();
        let run = |batch: u64| {
            let (app, verifier, origin) = (&app, &verifier, &origin);
            async move {
                coffre::audit::verify::verify_in_batches(&app.store, verifier, origin, None, batch)
                    .await
            }
        };
        for batch in [0, 7, 256, 10_000] {
            let report = run(batch)
                .await
                .unwrap_or_else(|e| panic!("clean log, batches of {batch}: {e}"));
            assert_eq!(
                (report.size, report.pending),
                (size, 0),
                "batches of {batch}"
            );
            assert!(report.checkpoints > 1, "batches of {batch}");
        }
        let p = pool(&app).await;
        let zeroed_at = |tile: &[u8], at: usize| {
            let mut t = tile.to_vec();
            t[at * 32..at * 32 + 32].fill(0);
            Some(t)
        };
        let (t01, t02, t10) = (
            stored_tile(&p, 0, 1).await,
            stored_tile(&p, 0, 2).await,
            stored_tile(&p, 1, 0).await,
        );
        assert_eq!(
            (t01.len(), t02.len(), t10.len()),
            (256 * 32, 88 * 32, 2 * 32)
        );
        let mut wider = t02.clone();
        wider.extend_from_slice(&[7u8; 32]);
        for (level, idx, damage, kept, says) in [
            (
                0i64,
                1i64,
                zeroed_at(&t01, 3),
                &t01,
                "entry 259: its content does not match the tree".to_string(),
            ),
            (
                0,
                1,
                None,
                &t01,
                "entry 256: its content does not match the tree".to_string(),
            ),
            (
                1,
                0,
                zeroed_at(&t10, 1),
                &t10,
                "stored tile (1, 0) over entries from 0 is altered".to_string(),
            ),
            (
                1,
                0,
                None,
                &t10,
                "stored tile (1, 0) over entries from 0 is missing".to_string(),
            ),
            (
                0,
                2,
                Some(wider),
                &t02,
                "stored tile (0, 2) over entries from 512 is altered".to_string(),
            ),
            (
                0,
                5,
                Some(vec![1u8; 64]),
                &Vec::new(),
                "stored tile (0, 5) lies beyond the tree of 600 entries".to_string(),
            ),
        ] {
            set_tile(&p, level, idx, damage).await;
            let failure = run(7)
                .await
                .expect_err("a damaged tile must fail verification");
            assert!(failure.to_string().contains(&says), "{failure}");
            set_tile(&p, level, idx, (!kept.is_empty()).then(|| kept.clone())).await;
        }
        p.close().await;
        run(7).await.expect("restored");
        let (ok, text) = audit_verify(&app, &[]).await;
        assert!(ok && text.contains("600 entries in the tree"), "{text}");
    })
    .await;
}

/// A tail cut off the log (entries, their tiles and the sizes all
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
        cut_log(&p, size, cut).await;
        let (ok, text) = audit_verify(&app, &[]).await;
        assert!(!ok && text.contains("entries were deleted"), "{text}");
        // The stored checkpoints deleted too: the one kept outside says it.
        sqlx::query("DELETE FROM audit_checkpoints WHERE tree_size > $1")
            .bind(cut)
            .execute(&p)
            .await
            .unwrap();
        let (ok, _) = audit_verify(&app, &[]).await;
        assert!(ok, "without a checkpoint over the cut, nothing can tell");
        // What is left is consistent: the checkpoint kept outside reports a
        // rollback, as such (an older copy restored looks exactly so).
        let (ok, text) = audit_verify(&app, &["--checkpoint", file.to_str().unwrap()]).await;
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
        let (ok, text) = audit_verify(&app, &["--checkpoint", file.to_str().unwrap()]).await;
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
        assert_fails_at(&app, size - 1).await;
    })
    .await;
}
