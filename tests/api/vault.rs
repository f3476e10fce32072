//! The encrypted vault: nothing in clear at rest, integrity errors instead of
//! someone else's data, crypto-shredding erasure, rotation, bad input.

use axum::http::Method;
use serde_json::json;

use crate::support::{PG_ENV, TestApp, each_backend};

pub const AWA: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000001";
pub const JP: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000002";

/// A marker no encoding of ours would produce by accident.
const MARKER: &str = "Zq7-MARQUEUR-PERSONNEL-9xK";

async fn any_pool(app: &TestApp) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&app.database_url).await.unwrap()
}

fn sqlite_files(app: &TestApp) -> Vec<std::path::PathBuf> {
    let path = app.database_url.trim_start_matches("sqlite://").to_string();
    vec![path.clone().into(), format!("{path}-wal").into()]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn pg_dump(url: &str) -> Vec<u8> {
    let out = std::process::Command::new("pg_dump")
        .arg("--no-owner")
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("pg_dump is needed when {PG_ENV} is set ({e})"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test]
async fn personal_values_never_reach_the_disk_in_clear() {
    each_backend(|app| async move {
        let s = app.login(AWA).await;
        let res = app
            .as_user(
                &s,
                Method::PUT,
                "/api/v1/me/data/contact",
                Some(json!({"email": format!("{}@example.org", MARKER.to_lowercase()), "postal_address": MARKER})),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        // Correct it: the old version stays, encrypted, in the history.
        let res = app
            .as_user(&s, Method::PUT, "/api/v1/me/data/contact", Some(json!({"postal_address": format!("{MARKER} bis")})))
            .await;
        // The demo seeded version 1; ours are 2 and 3.
        assert_eq!(res.json()["version"], 3);

        let history = app.as_user(&s, Method::GET, "/api/v1/me/data/contact", None).await.json();
        assert_eq!(history["history"].as_array().unwrap().len(), 3, "{history}");
        assert_eq!(history["history"][1]["fields"]["postal_address"], MARKER);
        assert_eq!(history["current"]["fields"]["postal_address"], format!("{MARKER} bis"));

        if app.backend == "sqlite" {
            for file in sqlite_files(&app) {
                if let Ok(bytes) = std::fs::read(&file) {
                    assert!(!contains(&bytes, MARKER.as_bytes()), "{} holds the marker", file.display());
                    assert!(!contains(&bytes, MARKER.to_lowercase().as_bytes()));
                    assert!(!contains(&bytes, b"Diallo"), "demo identity in clear in {}", file.display());
                }
            }
        } else {
            let dump = pg_dump(&app.database_url);
            assert!(!contains(&dump, MARKER.as_bytes()), "pg_dump holds the marker");
            assert!(!contains(&dump, b"Diallo"));
        }
    })
    .await;
}

#[tokio::test]
async fn swapped_or_flipped_ciphertexts_give_an_integrity_error() {
    each_backend(|app| async move {
        let awa = app.login(AWA).await;
        let jp = app.login(JP).await;
        let pool = any_pool(&app).await;

        // Swap Awa's and Jean-Pierre's sealed identity records.
        let a: (Vec<u8>,) = sqlx::query_as("SELECT sealed FROM personal_records WHERE resident_id = $1 AND category = 'identity'")
            .bind(AWA)
            .fetch_one(&pool)
            .await
            .unwrap();
        let b: (Vec<u8>,) = sqlx::query_as("SELECT sealed FROM personal_records WHERE resident_id = $1 AND category = 'identity'")
            .bind(JP)
            .fetch_one(&pool)
            .await
            .unwrap();
        for (who, sealed) in [(AWA, &b.0), (JP, &a.0)] {
            sqlx::query("UPDATE personal_records SET sealed = $1 WHERE resident_id = $2 AND category = 'identity'")
                .bind(sealed.clone())
                .bind(who)
                .execute(&pool)
                .await
                .unwrap();
        }
        for s in [&awa, &jp] {
            let res = app.as_user(s, Method::GET, "/api/v1/me/data", None).await;
            res.assert_error(500, "integrity_error");
            assert!(!res.text().contains("Diallo") && !res.text().contains("Martin"));
        }
        // Restore Awa's, then flip one byte of her contact record.
        sqlx::query("UPDATE personal_records SET sealed = $1 WHERE resident_id = $2 AND category = 'identity'")
            .bind(a.0.clone())
            .bind(AWA)
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(app.as_user(&awa, Method::GET, "/api/v1/me/data", None).await.status, 200);
        let (mut c,): (Vec<u8>,) = sqlx::query_as("SELECT sealed FROM personal_records WHERE resident_id = $1 AND category = 'contact'")
            .bind(AWA)
            .fetch_one(&pool)
            .await
            .unwrap();
        let last = c.len() - 1;
        c[last / 2] ^= 0x01;
        sqlx::query("UPDATE personal_records SET sealed = $1 WHERE resident_id = $2 AND category = 'contact'")
            .bind(c)
            .bind(AWA)
            .execute(&pool)
            .await
            .unwrap();
        app.as_user(&awa, Method::GET, "/api/v1/me/data", None)
            .await
            .assert_error(500, "integrity_error");

        // A wrapped data key moved to another resident does not unwrap either.
        let (k,): (Vec<u8>,) = sqlx::query_as("SELECT wrapped FROM data_keys WHERE resident_id = $1")
            .bind(AWA)
            .fetch_one(&pool)
            .await
            .unwrap();
        sqlx::query("UPDATE data_keys SET wrapped = $1 WHERE resident_id = $2")
            .bind(k)
            .bind(JP)
            .execute(&pool)
            .await
            .unwrap();
        app.as_user(&jp, Method::GET, "/api/v1/me/data", None)
            .await
            .assert_error(500, "integrity_error");
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn erasure_destroys_the_key_and_the_data() {
    each_backend(|app| async move {
        let s = app.login(AWA).await;
        let pool = any_pool(&app).await;
        let (wrapped,): (Vec<u8>,) =
            sqlx::query_as("SELECT wrapped FROM data_keys WHERE resident_id = $1")
                .bind(AWA)
                .fetch_one(&pool)
                .await
                .unwrap();
        let sealed: Vec<(Vec<u8>,)> =
            sqlx::query_as("SELECT sealed FROM personal_records WHERE resident_id = $1")
                .bind(AWA)
                .fetch_all(&pool)
                .await
                .unwrap();
        assert!(!sealed.is_empty());

        let res = app
            .as_user(&s, Method::POST, "/api/v1/me/erasure", None)
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.json()["erased"], true);
        // The session ended with the erasure.
        app.send(Method::GET, "/api/v1/me/data", &[("cookie", &s.cookie)], "")
            .await
            .assert_error(401, "unauthenticated");

        let (keys,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM data_keys WHERE resident_id = $1")
                .bind(AWA)
                .fetch_one(&pool)
                .await
                .unwrap();
        let (records,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM personal_records WHERE resident_id = $1")
                .bind(AWA)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!((keys, records), (0, 0));
        // Every key present cannot bring it back: the vault finds nothing to open.
        let vault = app.state.vault().unwrap();
        assert!(
            vault
                .read_current(&crate::support::resident_id(AWA))
                .await
                .unwrap()
                .is_empty()
        );
        if app.backend == "sqlite" {
            // secure_delete + WAL truncation: not even the wrapped key's bytes remain.
            for file in sqlite_files(&app) {
                if let Ok(bytes) = std::fs::read(&file) {
                    assert!(
                        !contains(&bytes, &wrapped),
                        "wrapped key survives in {}",
                        file.display()
                    );
                    for (s,) in &sealed {
                        assert!(
                            !contains(&bytes, &s[1..40]),
                            "sealed record survives in {}",
                            file.display()
                        );
                    }
                }
            }
        }
        // Other residents are untouched.
        let jp = app.login(JP).await;
        let data = app
            .as_user(&jp, Method::GET, "/api/v1/me/data", None)
            .await
            .json();
        assert_eq!(data["records"].as_array().unwrap().len(), 3);
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn bad_input_is_refused_with_a_code_and_changes_nothing() {
    each_backend(|app| async move {
        let s = app.login(AWA).await;
        let before = app
            .as_user(&s, Method::GET, "/api/v1/me/data/contact", None)
            .await
            .json();
        let put = |body: Option<serde_json::Value>| {
            app.as_user(&s, Method::PUT, "/api/v1/me/data/contact", body)
        };
        put(Some(json!({"mail": "x@example.org"})))
            .await
            .assert_error(422, "unknown_field");
        put(Some(json!({"email": "not-an-address"})))
            .await
            .assert_error(422, "invalid_field");
        put(Some(json!({"phone": 33})))
            .await
            .assert_error(422, "invalid_field");
        put(Some(json!({})))
            .await
            .assert_error(422, "invalid_record");
        put(Some(json!([1, 2])))
            .await
            .assert_error(422, "invalid_record");
        app.as_user(
            &s,
            Method::PUT,
            "/api/v1/me/data/passport",
            Some(json!({"number": "1"})),
        )
        .await
        .assert_error(422, "unknown_category");
        app.as_user(&s, Method::GET, "/api/v1/me/data/passport", None)
            .await
            .assert_error(422, "unknown_category");
        // Malformed JSON and wrong content type.
        let res = app
            .send(
                Method::PUT,
                "/api/v1/me/data/contact",
                &[
                    ("cookie", &s.cookie),
                    ("x-csrf-token", &s.csrf),
                    ("content-type", "application/json"),
                ],
                r#"{"email": "secret@example.org""#,
            )
            .await;
        res.assert_error(400, "invalid_json");
        assert!(
            !res.text().contains("secret@"),
            "error echoes the value: {}",
            res.text()
        );
        app.send(
            Method::PUT,
            "/api/v1/me/data/contact",
            &[
                ("cookie", &s.cookie),
                ("x-csrf-token", &s.csrf),
                ("content-type", "text/plain"),
            ],
            r#"{"email": "a@example.org"}"#,
        )
        .await
        .assert_error(415, "unsupported_media_type");
        // Without the CSRF header.
        app.send(
            Method::PUT,
            "/api/v1/me/data/contact",
            &[("cookie", &s.cookie), ("content-type", "application/json")],
            r#"{"email": "a@example.org"}"#,
        )
        .await
        .assert_error(403, "csrf_token_invalid");
        // Agents cannot use a resident's own routes.
        let dpo = app.login("a1d00000-0000-4000-8000-000000000004").await;
        app.as_user(&dpo, Method::GET, "/api/v1/me/data", None)
            .await
            .assert_error(403, "resident_only");

        let after = app
            .as_user(&s, Method::GET, "/api/v1/me/data/contact", None)
            .await
            .json();
        assert_eq!(before, after, "a refused request changed something");
    })
    .await;
}

#[tokio::test]
async fn public_keys_and_categories_are_published() {
    each_backend(|app| async move {
        let jwks = app.get("/.well-known/jwks.json").await.json();
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert!(key.get("d").is_none(), "private part published");
        let cats = app.get("/api/v1/categories").await.json();
        assert!(
            cats.as_array()
                .unwrap()
                .iter()
                .any(|c| c["id"] == "health" && c["special"] == true)
        );
    })
    .await;
}

/// cargo-mutants: dropping the resident or the category from the request
/// of a resident's own read survived every test. The entry of an own read
/// names whose data and which category (the resident's journal and the
/// DPO's review rely on both).
#[tokio::test]
async fn a_residents_own_read_is_recorded_with_their_id_and_the_category() {
    each_backend(|app| async move {
        let s = app.login(AWA).await;
        let res = app
            .as_user(&s, Method::GET, "/api/v1/me/data/contact", None)
            .await;
        assert!(res.status == 200 || res.status == 404, "{}", res.text());
        let entry = app.last_entry().await;
        assert_eq!(entry.actor_id, AWA);
        assert_eq!(entry.resident_id.as_deref(), Some(AWA));
        assert_eq!(entry.category.as_deref(), Some("contact"));
        assert_eq!(entry.decision, coffre::audit::Decision::Allow);
    })
    .await;
}
