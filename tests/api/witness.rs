//! Witnesses (issue 24): a witness written here from C2SP tlog-witness and
//! tlog-cosignature — no coffre code; it uses the independent verifier's
//! signed-note and RFC 9162 functions, themselves written from the specs —
//! cosigns coffre's checkpoints; a forked log (a second database with
//! another history under the same key) is refused by it, and the real
//! `coffre audit verify --witness … --quorum 1` refuses the fork's
//! checkpoint while it accepts the witnessed one.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use coffre::service::witness::{Witness, round};
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::audit::{coffre_cli, verifier_key};
use crate::independent::verifier::{
    Hash, VerifierKey, decode_hash, open_note, parse_checkpoint, verify_consistency,
};
use crate::support::{TestApp, each_backend};

/// The witness: its key, the log it follows, and the latest checkpoint it
/// cosigned for it.
struct TestWitness {
    name: String,
    key: Ed25519KeyPair,
    key_id: [u8; 4],
    log_key: VerifierKey,
    origin: String,
    latest: Mutex<(u64, Hash)>,
}

impl TestWitness {
    fn new(name: &str, seed: u8, log_vkey: &str, origin: &str) -> Arc<TestWitness> {
        let key = Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap();
        let mut id_input = name.as_bytes().to_vec();
        id_input.push(b'\n');
        id_input.push(0x04);
        id_input.extend_from_slice(key.public_key().as_ref());
        let h = ring::digest::digest(&ring::digest::SHA256, &id_input);
        Arc::new(TestWitness {
            name: name.into(),
            key,
            key_id: [h.as_ref()[0], h.as_ref()[1], h.as_ref()[2], h.as_ref()[3]],
            log_key: VerifierKey::parse(log_vkey).unwrap(),
            origin: origin.into(),
            // The empty tree: SHA-256 of nothing.
            latest: Mutex::new((
                0,
                ring::digest::digest(&ring::digest::SHA256, b"")
                    .as_ref()
                    .try_into()
                    .unwrap(),
            )),
        })
    }

    /// `name+hexid+base64(0x04 || key)` (tlog-cosignature's verifier key).
    fn vkey(&self) -> String {
        let mut k = vec![0x04];
        k.extend_from_slice(self.key.public_key().as_ref());
        format!(
            "{}+{:08x}+{}",
            self.name,
            u32::from_be_bytes(self.key_id),
            STANDARD.encode(k)
        )
    }
}

/// `POST /add-checkpoint` (C2SP tlog-witness): `old N`, the consistency
/// proof's hashes, a blank line, the signed checkpoint.
async fn add_checkpoint(State(w): State<Arc<TestWitness>>, body: String) -> (StatusCode, String) {
    let Some((head, note)) = body.split_once("\n\n") else {
        return (StatusCode::BAD_REQUEST, "no blank line".into());
    };
    let mut lines = head.lines();
    let Some(old) = lines
        .next()
        .and_then(|l| l.strip_prefix("old "))
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return (StatusCode::BAD_REQUEST, "no old line".into());
    };
    let proof: Result<Vec<Hash>, String> = lines.map(decode_hash).collect();
    let Ok(proof) = proof else {
        return (StatusCode::BAD_REQUEST, "bad proof line".into());
    };
    let Ok(text) = open_note(note, &w.log_key) else {
        return (StatusCode::FORBIDDEN, "not signed by the log".into());
    };
    let Ok(cp) = parse_checkpoint(&text) else {
        return (StatusCode::BAD_REQUEST, "bad checkpoint".into());
    };
    if cp.origin != w.origin {
        return (StatusCode::NOT_FOUND, "unknown log".into());
    }
    let mut latest = w.latest.lock().unwrap();
    if old != latest.0 {
        // The size this witness knows, for the log to try again.
        return (StatusCode::CONFLICT, format!("{}\n", latest.0));
    }
    if cp.size < old {
        return (StatusCode::BAD_REQUEST, "smaller than old".into());
    }
    let consistent = if old == 0 {
        proof.is_empty()
    } else {
        verify_consistency(old, cp.size, &latest.1, &cp.root, &proof).is_ok()
    };
    if !consistent {
        return (StatusCode::UNPROCESSABLE_ENTITY, "inconsistent".into());
    }
    *latest = (cp.size, cp.root);
    // cosignature/v1: the header, the time, the checkpoint's text.
    let time: u64 = 1_800_000_000;
    let signed = format!("cosignature/v1\ntime {time}\n{text}");
    let sig = w.key.sign(signed.as_bytes());
    let mut raw = w.key_id.to_vec();
    raw.extend_from_slice(&time.to_be_bytes());
    raw.extend_from_slice(sig.as_ref());
    (
        StatusCode::OK,
        format!("\u{2014} {} {}\n", w.name, STANDARD.encode(raw)),
    )
}

async fn serve_witness(w: Arc<TestWitness>) -> url::Url {
    let app = axum::Router::new()
        .route("/add-checkpoint", axum::routing::post(add_checkpoint))
        .with_state(w);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// The latest witnessed checkpoint with its cosignature, as stored.
async fn note_after(app: &TestApp) -> String {
    let cp = app
        .store
        .latest_cosigned_checkpoint()
        .await
        .unwrap()
        .unwrap();
    let lines = app.store.cosignatures(cp.tree_size).await.unwrap();
    assert_eq!(lines.len(), 1);
    format!("{}{}\n", cp.note, lines[0])
}

/// Some entries in `app`'s log, then a fresh checkpoint.
async fn grow(app: &TestApp, n: usize) {
    for i in 0..n {
        app.state
            .audit
            .record(
                coffre::audit::AuditRecord::new(
                    "auditor-probe",
                    "auditor",
                    "audit.read",
                    app.clock.now(),
                )
                .allow(&format!("probe-{i}")),
            )
            .await
            .unwrap();
    }
    app.clock.advance(1);
}

/// A second database under the same key and log name: another history.
async fn fork_of(app: &TestApp) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("fork.db").display());
    let mut config = app.state.config.clone();
    config.database_url = coffre::config::DatabaseUrl::parse(&url).unwrap();
    let store = coffre::storage::open(&config.database_url).await.unwrap();
    let state = coffre::AppState::new(
        config,
        store.clone(),
        app.clock.clone(),
        false,
        Ok(app.keys.clone()),
    )
    .await
    .unwrap();
    TestApp::from_state(
        state,
        store,
        app.clock.clone(),
        "sqlite",
        dir,
        &url,
        app.keys.clone(),
    )
}

#[tokio::test]
async fn a_witness_cosigns_the_log_and_refuses_a_fork() {
    each_backend(|app| async move {
        let log_vkey = verifier_key(&app);
        let origin = app.state.config.audit_log_name.clone();
        let witness = TestWitness::new("witness.example/w1", 9, &log_vkey, &origin);
        let url = serve_witness(witness.clone()).await;
        let witnesses = vec![Witness {
            key: coffre::audit::witness::WitnessKey::parse(&witness.vkey()).unwrap(),
            url,
        }];
        // The first checkpoint: cosigned, served with its cosignature.
        grow(&app, 3).await;
        let r = round(&app.state, &witnesses, app.clock.now())
            .await
            .unwrap();
        assert_eq!(r.cosigned, 1, "{r:?}");
        let note = app.get("/audit/checkpoint").await.text();
        assert!(note.contains("\u{2014} witness.example/w1 "), "{note}");
        assert_eq!(note, app.get("/api/v1/audit/checkpoint").await.text());
        // Nothing new: nothing sent. Then the log grows: the witness
        // checks the consistency proof from what it saw, and cosigns.
        assert_eq!(
            round(&app.state, &witnesses, app.clock.now())
                .await
                .unwrap(),
            Default::default()
        );
        grow(&app, 40).await;
        let r = round(&app.state, &witnesses, app.clock.now())
            .await
            .unwrap();
        assert_eq!(r.cosigned, 1, "{r:?}");
        let witnessed_size = witness.latest.lock().unwrap().0;
        let cp = app.state.audit.latest_checkpoint().await.unwrap().unwrap();
        assert_eq!(witnessed_size, cp.tree_size as u64);
        let page = app.get("/journal").await.text();
        assert!(
            page.contains("witness.example/w1") && page.contains("à jour"),
            "{page}"
        );

        // The log moves on and signs a newer checkpoint before the next
        // round: standard clients still get a witnessed one.
        grow(&app, 5).await;
        let newer = app.get("/api/v1/audit/checkpoint").await.text();
        assert!(!newer.contains("witness.example/w1"), "{newer}");
        assert_eq!(
            app.get("/audit/checkpoint").await.text(),
            note_after(&app).await
        );

        // `audit verify` with the witness's key and a quorum of one.
        let wkey = witness.vkey();
        let (ok, text) = coffre_cli(
            &app,
            &[
                "audit",
                "verify",
                "--key",
                &log_vkey,
                "--witness",
                &wkey,
                "--quorum",
                "1",
            ],
        )
        .await;
        assert!(ok, "{text}");
        assert!(text.contains("cosigned by 1"), "{text}");
        // One witness counts once, and a key needs a quorum.
        let (ok, text) = coffre_cli(
            &app,
            &[
                "audit",
                "verify",
                "--key",
                &log_vkey,
                "--witness",
                &wkey,
                "--witness",
                &wkey,
                "--quorum",
                "2",
            ],
        )
        .await;
        assert!(!ok && text.contains("twice"), "{text}");
        let (ok, text) = coffre_cli(
            &app,
            &["audit", "verify", "--key", &log_vkey, "--witness", &wkey],
        )
        .await;
        assert!(!ok && text.contains("--quorum"), "{text}");

        // A reply signed by another key than the one configured is not
        // a cosignature: nothing is stored or served.
        let configured = TestWitness::new("witness.example/w2", 11, &log_vkey, &origin);
        let impostor = TestWitness::new("witness.example/w2", 12, &log_vkey, &origin);
        let wrong = vec![Witness {
            key: coffre::audit::witness::WitnessKey::parse(&configured.vkey()).unwrap(),
            url: serve_witness(impostor).await,
        }];
        let r = round(&app.state, &wrong, app.clock.now()).await.unwrap();
        assert_eq!((r.cosigned, r.refused), (0, 1), "{r:?}");
        let w2 = app
            .store
            .witness("witness.example/w2")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (w2.cosigned_size, w2.last_error.as_deref()),
            (0, Some("bad_cosignature"))
        );
        assert!(
            !app.get("/audit/checkpoint")
                .await
                .text()
                .contains("witness.example/w2")
        );

        // A fork: the same key, another history, a larger tree.
        let fork = fork_of(&app).await;
        grow(&fork, cp.tree_size as usize + 20).await;
        let r = round(&fork.state, &witnesses, fork.clock.now())
            .await
            .unwrap();
        assert_eq!((r.cosigned, r.refused), (0, 1), "{r:?}");
        assert_eq!(
            witness.latest.lock().unwrap().0,
            witnessed_size,
            "the witness moved to the fork"
        );
        let status = fork
            .store
            .witness("witness.example/w1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.last_error.as_deref(), Some("refused_422"));
        assert!(fork.get("/journal").await.text().contains("refused_422"));
        // The fork's checkpoint carries no cosignature: refused, exit 4.
        let fork_note = fork.get("/audit/checkpoint").await.text();
        let file = fork.dir.path().join("fork.checkpoint");
        std::fs::write(&file, &fork_note).unwrap();
        assert_quorum_refused(&fork, &log_vkey, &file, &wkey).await;
        // Nor does a cosignature lifted from the real log's checkpoint
        // make it pass: it signs another tree.
        let lifted = note
            .lines()
            .find(|l| l.contains("witness.example/w1"))
            .unwrap();
        std::fs::write(&file, format!("{fork_note}{lifted}\n")).unwrap();
        assert_quorum_refused(&fork, &log_vkey, &file, &wkey).await;
    })
    .await;
}

/// `coffre audit verify --checkpoint FILE --witness WKEY --quorum 1` on
/// `app`'s database refuses the checkpoint.
async fn assert_quorum_refused(app: &TestApp, log_vkey: &str, file: &std::path::Path, wkey: &str) {
    let (ok, text) = coffre_cli(
        app,
        &[
            "audit",
            "verify",
            "--key",
            log_vkey,
            "--checkpoint",
            file.to_str().unwrap(),
            "--witness",
            wkey,
            "--quorum",
            "1",
        ],
    )
    .await;
    assert!(!ok && text.contains("REFUSED"), "{text}");
}

#[test]
fn a_witnesses_file_is_checked_line_by_line() {
    let w = TestWitness::new(
        "w.example/a",
        1,
        &{
            let k = Ed25519KeyPair::from_seed_unchecked(&[2; 32]).unwrap();
            let mut id_input = b"log\n\x01".to_vec();
            id_input.extend_from_slice(k.public_key().as_ref());
            let h = ring::digest::digest(&ring::digest::SHA256, &id_input);
            let mut enc = vec![0x01];
            enc.extend_from_slice(k.public_key().as_ref());
            format!(
                "log+{}+{}",
                hex::encode(&h.as_ref()[..4]),
                STANDARD.encode(enc)
            )
        },
        "log",
    );
    let good = format!(
        "# the county's witness\n{} https://witness.example/\n",
        w.vkey()
    );
    assert_eq!(
        coffre::service::witness::parse_witnesses(&good)
            .unwrap()
            .len(),
        1
    );
    for bad in [
        format!("{} ftp://witness.example/", w.vkey()),
        w.vkey(),
        "not-a-key https://witness.example/".to_string(),
        format!("{0} https://a.example/\n{0} https://b.example/", w.vkey()),
    ] {
        let e = coffre::service::witness::parse_witnesses(&bad).unwrap_err();
        assert!(e.starts_with("line "), "{e}");
    }
}
