//! Custodians (issue 25): a key set held by 3 custodians, any 2 of whom
//! unseal it. The process starts sealed and refuses data (audited), serves
//! its public routes, refuses a wrong, a foreign and a repeated share,
//! unseals with two, reads data, and seals again; no share and no
//! identity is ever written in clear, in the folder or the database.
//! The admin socket and the commands are driven through the binary in
//! `cli.rs`.

use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use axum::http::Method;
use base64::Engine;
use coffre::crypto::custodians::{Custodian, Manifest, Refusal, split_new_identity};
use coffre::crypto::{KeySet, LiveKeys};
use coffre::service::seal::{self, SealError, VaultAtStart};
use coffre::{AppState, Clock, Config, storage};

use crate::support::{PgDatabase, T0, TestApp};

const AWA: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000001";

/// A sealed demo app whose key set is held by three custodians (2 of 3),
/// and each custodian's decrypted share (what `coffre unseal` submits).
struct Quorum {
    app: TestApp,
    shares: Vec<Vec<u8>>,
    /// A share of another key set, decrypted by custodian 1.
    foreign: Vec<u8>,
}

async fn sealed_app(url: &str, backend: &'static str) -> Quorum {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&keys_dir)
        .unwrap();
    let config = Config::for_tests(url, &keys_dir).unwrap();
    // The custodians' own identities stay with them (here: in memory).
    let mine: Vec<age::x25519::Identity> =
        (0..3).map(|_| age::x25519::Identity::generate()).collect();
    let list: Vec<Custodian> = mine
        .iter()
        .enumerate()
        .map(|(i, id)| Custodian {
            name: format!("dsi-{i}"),
            recipient: id.to_public(),
        })
        .collect();
    let (identity, mut manifest, sealed) = split_new_identity(&list, 2).unwrap();
    let set = KeySet::init(&keys_dir, &identity).unwrap();
    manifest.verifier_key =
        coffre::audit::note::NoteSigner::from_seed(&config.audit_log_name, set.signing_seed())
            .unwrap()
            .verifier_key();
    manifest.write(&keys_dir).unwrap();
    let shares: Vec<Vec<u8>> = sealed
        .iter()
        .zip(&mine)
        .map(|(s, id)| age::decrypt(id, &s.ciphertext).unwrap())
        .collect();
    let (_, _, other) = split_new_identity(&list, 2).unwrap();
    let foreign = age::decrypt(&mine[1], &other[1].ciphertext).unwrap();

    // The first life, opened by the identity itself (this test's
    // bootstrap, before it is dropped): the demo territory, a checkpoint.
    let store = storage::open(&config.database_url).await.unwrap();
    let clock = Clock::fixed(T0);
    let keys = Arc::new(LiveKeys::unsealed(keys_dir.clone(), identity).unwrap());
    {
        let first = AppState::new(
            config.clone(),
            store.clone(),
            clock.clone(),
            true,
            Ok(keys.clone()),
        )
        .await
        .unwrap();
        first
            .vault()
            .unwrap()
            .register_kek_versions(T0)
            .await
            .unwrap();
        coffre::demo::seed_if_empty(&first).await.unwrap();
        let signer = first.checkpoint_signer().unwrap();
        first.audit.checkpoint(&signer, T0).await.unwrap();
    }
    // Restarted: sealed.
    let manifest = Manifest::read(&keys_dir).unwrap().unwrap();
    let state = AppState::new(
        config,
        store.clone(),
        clock.clone(),
        true,
        VaultAtStart::Sealed {
            manifest,
            keys_dir: keys_dir.clone(),
        },
    )
    .await
    .unwrap();
    Quorum {
        app: TestApp::from_state(state, store, clock, backend, dir, url, keys),
        shares,
        foreign,
    }
}

async fn refused(app: &TestApp, share: &[u8], expected: Refusal) {
    match seal::submit_share(&app.state, share, app.clock.now()).await {
        Err(SealError::Refused(r)) => assert_eq!(r, expected),
        other => panic!("expected {expected:?}, got {other:?}"),
    }
    let last = app.last_entry().await;
    assert_eq!(last.action, "vault.unseal_share");
    assert!(last.decision != coffre::audit::Decision::Allow);
    assert_eq!(last.reason, expected.as_str());
}

/// Every file under `dir`, read whole.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn quorum_of_two_unseals_reads_and_seals_again(q: Quorum) {
    let app = &q.app;
    assert!(app.state.is_sealed());

    // Sealed: health and the public routes answer; /readyz says sealed.
    app.get("/readyz").await.assert_error(503, "sealed");
    assert_eq!(app.get("/healthz").await.status, 200);
    assert_eq!(app.get("/registre").await.status, 200);
    assert_eq!(app.get("/api/v1/purposes").await.status, 200);
    let checkpoint = app.get("/api/v1/audit/checkpoint").await;
    assert_eq!(checkpoint.status, 200, "{}", checkpoint.text());
    let key = app.get("/api/v1/audit/key").await;
    assert_eq!(key.status, 200, "{}", key.text());

    // Data routes (and the login that would reach them) are refused, each
    // refusal audited.
    let before = app.state.audit.size().await.unwrap();
    app.get("/api/v1/me/data").await.assert_error(503, "sealed");
    let entry = app.last_entry().await;
    assert_eq!(
        (
            entry.action.as_str(),
            (entry.decision == coffre::audit::Decision::Allow),
            entry.reason.as_str()
        ),
        ("request.sealed", false, "sealed")
    );
    app.send(
        Method::POST,
        "/dev/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("persona={AWA}"),
    )
    .await
    .assert_error(503, "sealed");
    app.get("/moi").await.assert_error(503, "sealed");
    // The first refusal of a second is audited, the others only logged:
    // nobody on the network writes to the log at will while sealed.
    assert_eq!(app.state.audit.size().await.unwrap(), before + 1);
    app.clock.advance(1);
    app.get("/moi").await.assert_error(503, "sealed");
    assert_eq!(app.state.audit.size().await.unwrap(), before + 2);

    // Wrong, foreign, malformed shares: refused, audited, nothing kept.
    let mut tampered: serde_json::Value = serde_json::from_slice(&q.shares[0]).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut bytes = b64.decode(tampered["share"].as_str().unwrap()).unwrap();
    bytes[3] ^= 0x40;
    tampered["share"] = b64.encode(&bytes).into();
    refused(
        app,
        &serde_json::to_vec(&tampered).unwrap(),
        Refusal::WrongShare,
    )
    .await;
    refused(app, &q.foreign, Refusal::OtherKeySet).await;
    refused(app, b"{\"share\":1}", Refusal::Malformed).await;
    assert_eq!(seal::status(&app.state).await.shares, 0);

    // One share: accepted, still sealed; the same again: refused.
    let s = seal::submit_share(&app.state, &q.shares[0], app.clock.now())
        .await
        .unwrap();
    assert_eq!((s.sealed, s.shares, s.threshold), (true, 1, 2));
    let entry = app.last_entry().await;
    assert_eq!(
        (
            entry.actor_id.as_str(),
            entry.action.as_str(),
            (entry.decision == coffre::audit::Decision::Allow)
        ),
        ("dsi-0", "vault.unseal_share", true)
    );
    refused(app, &q.shares[0], Refusal::Repeated).await;
    app.get("/api/v1/me/data").await.assert_error(503, "sealed");

    // The second: unsealed.
    let s = seal::submit_share(&app.state, &q.shares[2], app.clock.now())
        .await
        .unwrap();
    assert!(!s.sealed);
    let entry = app.last_entry().await;
    assert_eq!(
        (
            entry.actor_id.as_str(),
            entry.action.as_str(),
            entry.reason.as_str()
        ),
        ("dsi-2", "vault.unseal", "threshold_reached")
    );
    assert_eq!(app.get("/readyz").await.status, 200);
    assert!(matches!(
        seal::submit_share(&app.state, &q.shares[1], app.clock.now()).await,
        Err(SealError::AlreadyUnsealed)
    ));

    // Data reads back, decrypted with the keys the quorum opened.
    let session = app.login(AWA).await;
    let data = app
        .as_user(&session, Method::GET, "/api/v1/me/data", None)
        .await;
    assert_eq!(data.status, 200, "{}", data.text());
    assert!(data.text().contains("\"identity\""), "{}", data.text());

    // Sealed again: the same session is refused.
    seal::seal(&app.state, app.clock.now()).await.unwrap();
    assert_eq!(app.last_entry().await.action, "vault.seal");
    app.as_user(&session, Method::GET, "/api/v1/me/data", None)
        .await
        .assert_error(503, "sealed");
    app.get("/readyz").await.assert_error(503, "sealed");
    // And a fresh quorum opens it again.
    seal::submit_share(&app.state, &q.shares[1], app.clock.now())
        .await
        .unwrap();
    let s = seal::submit_share(&app.state, &q.shares[0], app.clock.now())
        .await
        .unwrap();
    assert!(!s.sealed);

    // No share, no identity, ever in clear: not in the folder (keys,
    // database files), not in the database.
    let mut needles: Vec<Vec<u8>> = vec![b"AGE-SECRET-KEY-1".to_vec()];
    for share in &q.shares {
        let v: serde_json::Value = serde_json::from_slice(share).unwrap();
        let text = v["share"].as_str().unwrap().to_string();
        needles.push(b64.decode(&text).unwrap());
        needles.push(text.into_bytes());
    }
    for (path, bytes) in files(app.dir.path()) {
        for needle in &needles {
            assert!(
                !contains(&bytes, needle),
                "{} holds a secret",
                path.display()
            );
        }
    }
    for needle in &needles {
        let Ok(text) = std::str::from_utf8(needle) else {
            continue;
        };
        assert!(
            app.stored_in_clear(text).await.is_empty(),
            "in the database"
        );
    }
}

#[tokio::test]
async fn three_custodians_two_needed_on_each_backend() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("coffre.db").display());
    quorum_of_two_unseals_reads_and_seals_again(sealed_app(&url, "sqlite").await).await;
    if let Some(db) = PgDatabase::create().await {
        let q = sealed_app(&db.url, "postgres").await;
        let store = q.app.store.clone();
        let outcome = tokio::spawn(quorum_of_two_unseals_reads_and_seals_again(q)).await;
        store.close().await;
        db.drop_now().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// Every route of the API answers 503 `sealed` while sealed, except the
/// public ones: deny by default, so a route added later is closed.
#[tokio::test]
async fn every_non_public_route_is_closed_while_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("coffre.db").display());
    let q = sealed_app(&url, "sqlite").await;
    let doc = q.app.get("/api/openapi.json").await.json();
    let mut closed = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{category}", "identity")
            .replace('{', "x")
            .replace('}', "");
        for method in item.as_object().unwrap().keys() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let res = q
                .app
                .send(m, &concrete, &[], axum::body::Body::empty())
                .await;
            if coffre::http::sealed::public_while_sealed(&concrete) {
                continue;
            }
            res.assert_error(503, "sealed");
            closed += 1;
        }
    }
    assert!(closed > 60, "{closed}");
}
