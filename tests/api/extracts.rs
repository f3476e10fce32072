//! Partner extracts end to end: request, DPO approval, build, download,
//! decryption with the standard `age` tool, the signed manifest, the
//! residents' view, cohorts, suppression and expiry — on both backends.

use std::time::Duration;

use axum::http::Method;

use crate::support::{TestApp, TestResponse, each_backend};

const AWA: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000001";
const LUCIE: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000003";
const DPO: &str = "a1d00000-0000-4000-8000-000000000004";

async fn bearer(app: &TestApp, client: &str, secret: &str) -> String {
    app.partner_token(client, secret).await
}

async fn labo(app: &TestApp) -> String {
    bearer(
        app,
        "demo-labo-mobilite",
        "demo-secret-labo-mobilite-not-for-production",
    )
    .await
}

pub async fn renov(app: &TestApp) -> String {
    bearer(
        app,
        "demo-renov-energie",
        "demo-secret-renov-energie-not-for-production",
    )
    .await
}

pub async fn partner(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> TestResponse {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    app.send(
        method,
        path,
        &headers,
        body.map(|b| b.to_string()).unwrap_or_default(),
    )
    .await
}

/// Requests, has the DPO approve, and waits for the build to end.
pub async fn built(app: &TestApp, token: &str, request: serde_json::Value) -> serde_json::Value {
    let res = partner(
        app,
        token,
        Method::POST,
        "/api/v1/partner/extracts",
        Some(request),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let id = res.json()["id"].as_str().unwrap().to_string();
    let dpo = app.login(DPO).await;
    let res = app
        .as_user(
            &dpo,
            Method::POST,
            &format!("/api/v1/dpo/extracts/{id}/approve"),
            None,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    for _ in 0..200 {
        let v = partner(
            app,
            token,
            Method::GET,
            &format!("/api/v1/partner/extracts/{id}"),
            None,
        )
        .await
        .json();
        if !matches!(v["state"].as_str(), Some("approved" | "building")) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("extract {id} never finished building");
}

/// How many cells' noise the cell-key method has drawn.
async fn noise_rows(app: &TestApp) -> i64 {
    let pool = app.raw_pool().await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dp_noise")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// An extract's file, decrypted (`age` is installed by `.ci/run`).
async fn file_of(app: &TestApp, token: &str, v: &serde_json::Value) -> String {
    file_of_partner(app, token, v, coffre::demo::PARTNERS[1].age_identity).await
}

/// The same, for the partner holding `identity`.
async fn file_of_partner(
    app: &TestApp,
    token: &str,
    v: &serde_json::Value,
    identity: &str,
) -> String {
    let path = format!(
        "/api/v1/partner/extracts/{}/file",
        v["id"].as_str().unwrap()
    );
    let res = partner(app, token, Method::GET, &path, None).await;
    age_decrypt(app, identity, &res.body).unwrap()
}

/// Decrypts with the `age` command-line tool (Debian's), as a partner would.
fn age_decrypt(app: &TestApp, identity: &str, ciphertext: &[u8]) -> Option<String> {
    let dir = app.dir.path();
    let key = dir.join("partner.key");
    std::fs::write(&key, format!("{identity}\n")).unwrap();
    let file = dir.join("extract.csv.age");
    std::fs::write(&file, ciphertext).unwrap();
    let out = match std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&key)
        .arg(&file)
        .output()
    {
        Ok(o) => o,
        Err(_) => {
            crate::support::notice(
                "SKIPPED: decrypting with the `age` command (not installed; .ci/run installs it)",
            );
            return None;
        }
    };
    assert!(
        out.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[tokio::test]
async fn a_records_extract_is_approved_built_downloaded_and_decrypts_with_age() {
    each_backend(|app| async move {
        let token = labo(&app).await;
        // Not ready yet: no file.
        let res = partner(&app, &token, Method::POST, "/api/v1/partner/extracts", Some(serde_json::json!({"purpose": "etude-mobilite", "kind": "records", "categories": ["housing"]}))).await;
        let pending = res.json()["id"].as_str().unwrap().to_string();
        partner(&app, &token, Method::GET, &format!("/api/v1/partner/extracts/{pending}/file"), None)
            .await
            .assert_error(409, "extract_not_ready");

        let v = built(&app, &token, serde_json::json!({"purpose": "etude-mobilite", "kind": "records", "categories": ["housing"]})).await;
        assert_eq!(v["state"], "ready", "{v}");
        let id = v["id"].as_str().unwrap().to_string();
        let manifest = v["manifest"].clone();
        // Awa gave the mobility study her consent; Jean-Pierre withdrew his.
        assert_eq!(manifest["cohort_size"], 1);
        assert_eq!(manifest["legal_basis"], "consent");
        assert_eq!(v["progress"]["rows_done"], v["progress"]["rows_total"]);

        let res = partner(&app, &token, Method::GET, &format!("/api/v1/partner/extracts/{id}/file"), None).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.header("content-type"), Some("application/age"));
        let identity = coffre::demo::PARTNERS[0].age_identity;
        let Some(csv) = age_decrypt(&app, identity, &res.body) else { return };
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2, "{csv}");
        assert!(lines[0].starts_with("pseudonym,housing."));
        let pseudonym = app.keys.current().pseudonym("partner:labo-mobilite", AWA.as_bytes());
        assert!(lines[1].starts_with(&pseudonym), "{csv}");
        assert!(!csv.contains(AWA), "an internal id leaked");
        // The manifest: the plaintext's digest, and signed.
        let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, csv.as_bytes()));
        assert_eq!(manifest["plaintext_sha256"], sha.as_str());
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&app.get("/.well-known/jwks.json").await.body).unwrap();
        let jws = v["manifest_jws"].as_str().unwrap();
        let kid = jsonwebtoken::decode_header(jws).unwrap().kid.unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
        let mut val = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        val.required_spec_claims.clear();
        val.validate_exp = false;
        let claims = jsonwebtoken::decode::<serde_json::Value>(jws, &key, &val).unwrap().claims;
        assert_eq!(claims, manifest);
        assert_eq!(
            partner(&app, &token, Method::GET, &format!("/api/v1/partner/extracts/{id}"), None).await.json()["state"],
            "downloaded"
        );

        // Awa sees it among her accesses.
        let awa = app.login(AWA).await;
        let accesses = app.as_user(&awa, Method::GET, "/api/v1/me/accesses", None).await.json();
        assert!(accesses["accesses"].as_array().unwrap().iter().any(|a| a["action"] == "extract.include"
            && a["actor_id"] == "labo-mobilite"
            && a["purpose"] == "etude-mobilite"));

        // And among the partners that received her data.
        let recipients = app.as_user(&awa, Method::GET, "/api/v1/me/recipients", None).await.json();
        assert!(recipients["partners"].as_array().unwrap().iter().any(|p| p == "labo-mobilite"));
        // And in her export.
        let export = app.as_user(&awa, Method::GET, "/api/v1/me/export", None).await.json();
        assert_eq!(export["extracts"][0]["extract"], id.as_str());
        assert_eq!(export["extracts"][0]["partner"], "labo-mobilite");

        // Seven days later the file is gone.
        app.clock.advance(7 * 86_400);
        let report = coffre::service::rights::run_retention(&app.state, app.clock.now()).await.unwrap();
        assert_eq!(report.extract_files, 1);
        let token = labo(&app).await;
        partner(&app, &token, Method::GET, &format!("/api/v1/partner/extracts/{id}/file"), None)
            .await
            .assert_error(410, "extract_expired");
        assert!(!coffre::service::extracts::file_path(&app.state, &crate::support::eid(&id)).exists());
    })
    .await;
}

#[tokio::test]
async fn requests_are_checked_and_the_dpo_decides() {
    each_backend(|app| async move {
        let token = labo(&app).await;
        let ask = |body: serde_json::Value| {
            let app = &app;
            let token = token.clone();
            async move { partner(app, &token, Method::POST, "/api/v1/partner/extracts", Some(body)).await }
        };
        ask(serde_json::json!({"purpose": "renovation-energetique", "kind": "records", "categories": ["housing"]})).await.assert_error(403, "not_a_recipient");
        ask(serde_json::json!({"purpose": "etude-mobilite", "kind": "records", "categories": ["health"]})).await.assert_error(422, "categories_outside_purpose");
        ask(serde_json::json!({"purpose": "etude-mobilite", "kind": "records", "categories": ["housing"], "fields": ["housing.nope"]})).await.assert_error(422, "unknown_field");
        ask(serde_json::json!({"purpose": "etude-mobilite", "kind": "aggregate", "categories": ["housing"]})).await.assert_error(422, "group_by_required");
        ask(serde_json::json!({"purpose": "etude-mobilite", "kind": "aggregate", "categories": ["housing"], "group_by": ["housing.tenure"], "epsilon": 9})).await.assert_error(422, "invalid_epsilon");
        // A group-by field whose values are not declared (a postal code, a
        // range of 1,996 surfaces) would let a typed value name a cell.
        for g in ["housing.postal_code", "housing.surface_m2"] {
            ask(serde_json::json!({"purpose": "etude-mobilite", "kind": "aggregate", "categories": ["housing"], "group_by": [g]})).await.assert_error(422, "undeclared_group_by");
        }
        // Nor too many cells: 31 sizes × 31 sizes × 6 tenures.
        ask(serde_json::json!({"purpose": "etude-mobilite", "kind": "aggregate", "categories": ["housing", "household"], "group_by": ["household.size", "household.size", "housing.tenure"]})).await.assert_error(422, "undeclared_group_by");

        let res = ask(serde_json::json!({"purpose": "etude-mobilite", "kind": "records", "categories": ["housing"]})).await;
        let id = res.json()["id"].as_str().unwrap().to_string();
        // Only the DPO decides.
        let awa = app.login(AWA).await;
        app.as_user(&awa, Method::POST, &format!("/api/v1/dpo/extracts/{id}/approve"), None).await.assert_error(403, "role_not_allowed");
        let dpo = app.login(DPO).await;
        let list = app.as_user(&dpo, Method::GET, "/api/v1/dpo/extracts", None).await.json();
        assert_eq!(list["extracts"][0]["state"], "requested");
        let res = app.as_user(&dpo, Method::POST, &format!("/api/v1/dpo/extracts/{id}/reject"), Some(serde_json::json!({"reason": "trop large"}))).await;
        assert_eq!(res.status, 200, "{}", res.text());
        let v = partner(&app, &token, Method::GET, &format!("/api/v1/partner/extracts/{id}"), None).await.json();
        assert_eq!((v["state"].as_str(), v["reason"].as_str()), (Some("rejected"), Some("trop large")));
        app.as_user(&dpo, Method::POST, &format!("/api/v1/dpo/extracts/{id}/approve"), None).await.assert_error(409, "invalid_transition");

        // A partner without an age recipient cannot ask: nothing could be encrypted for it.
        app.store
            .insert_partner(
                &coffre::storage::PartnerRow {
                    id: crate::support::pid("observatoire"),
                    name: "Observatoire".into(),
                    client_id: "observatoire-1".into(),
                    client_secret_hash: coffre::crypto::sha256_hex("s3cret-s3cret-s3cret"),
                    age_recipient: None,
                    active: true,
                    client_jwks: None,
                },
                app.clock.now(),
            )
            .await
            .unwrap();
        let _ = LUCIE;
    })
    .await;
}

#[tokio::test]
async fn aggregates_hide_small_cells_and_residents_without_a_covering_consent_stay_out() {
    each_backend(|app| async move {
        // Twelve social tenants and two owners more, on a public-task purpose.
        let vault = app.state.vault().unwrap();
        let housing = vault.categories().category("housing").unwrap();
        for i in 0..14 {
            let id = format!("00000000-0000-4000-8000-{i:012}");
            app.store.insert_resident(&crate::support::resident_id(&id), app.clock.now()).await.unwrap();
            let tenure = if i < 12 { "social_tenant" } else { "owner" };
            vault.write(&crate::support::resident_id(&id), &housing, &serde_json::json!({"tenure": tenure, "surface_m2": 50 + i}), app.clock.now()).await.unwrap();
        }
        let token = renov(&app).await;
        let ask = serde_json::json!({"purpose": "renovation-energetique", "kind": "aggregate", "categories": ["housing"], "group_by": ["housing.tenure"], "fields": ["housing.surface_m2"]});
        // No ε named: noisy all the same (ε 1, charged). OpenDP's discrete
        // noise, over the public domain (the five declared tenures and
        // `autre`, each published even when empty), then the statistics'
        // post-processing.
        let v = built(&app, &token, ask.clone()).await;
        assert_eq!(v["state"], "ready", "{v}");
        // The exact cohort (17) is never shown beside noisy cells.
        assert_eq!(v["manifest"]["cohort_size"], serde_json::Value::Null, "{v}");
        assert_eq!(v["manifest"]["noise"]["mechanism"], "discrete_laplace", "{v}");
        assert_eq!(v["manifest"]["noise"]["epsilon"], 1.0, "{v}");
        assert!(v["manifest"]["noise"]["library"].as_str().unwrap().contains("OpenDP"));
        let first = file_of(&app, &token, &v).await;
        let rows: Vec<Vec<String>> = first.lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect();
        let keys: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(keys, ["autre", "hosted", "other", "owner", "social_tenant", "tenant"], "{first}");
        let mut published = 0;
        let mut withheld = 0;
        for r in &rows {
            match r[1].parse::<u64>() {
                Ok(n) => {
                    assert!(n >= 11, "{first}");
                    assert!(r[2].parse::<i64>().is_ok(), "a whole sum: {first}");
                    published += n;
                }
                Err(_) => {
                    assert!(r[1] == "< 11" || r[1] == "s", "{first}");
                    assert_eq!(r[2], r[1], "a withheld cell's sum is withheld: {first}");
                    withheld += 1;
                }
            }
        }
        assert_ne!(withheld, 1, "a lone withheld cell is the total minus the rest: {first}");
        // The total is the sum of every noisy cell, withheld ones included.
        let total = v["manifest"]["suppression"]["total"].as_u64().unwrap();
        assert!(total >= published, "{v}");
        if withheld == 0 {
            assert_eq!(total, published, "{v}");
        }
        // The cell-key method: asked again on the same residents, the same
        // noise (charged again all the same); one resident more, another
        // table, other noise drawn in every cell (the table's contents are
        // part of each cell's key, so an empty cell's noise does not repeat
        // across tables of other residents).
        assert_eq!(noise_rows(&app).await, 12, "a count and a sum for each of six cells");
        let mut explicit = ask.clone();
        explicit["epsilon"] = serde_json::json!(1.0);
        let again = built(&app, &token, explicit.clone()).await;
        assert_eq!(again["state"], "ready", "{again}");
        assert_eq!(file_of(&app, &token, &again).await, first);
        assert_eq!(noise_rows(&app).await, 12);
        // The same residents, one of whom moved to another tenure: fresh
        // noise in every cell, not only in the two it left and joined
        // (else those two would stand out).
        vault.write(&crate::support::resident_id("00000000-0000-4000-8000-000000000000"), &housing, &serde_json::json!({"tenure": "owner", "surface_m2": 50}), app.clock.now()).await.unwrap();
        let moved = built(&app, &token, explicit.clone()).await;
        assert_eq!(moved["state"], "ready", "{moved}");
        assert_eq!(noise_rows(&app).await, 24, "a value changed: new noise in every cell");
        let id = "00000000-0000-4000-8000-000000000099";
        app.store.insert_resident(&crate::support::resident_id(id), app.clock.now()).await.unwrap();
        vault.write(&crate::support::resident_id(id), &housing, &serde_json::json!({"tenure": "social_tenant", "surface_m2": 70}), app.clock.now()).await.unwrap();
        let third = built(&app, &token, explicit).await;
        assert_eq!(third["state"], "ready", "{third}");
        assert_eq!(noise_rows(&app).await, 36, "one resident more: new noise in every cell");
        // The DPO sees the ledger: every request was charged.
        let dpo = app.login(DPO).await;
        let list = app.as_user(&dpo, Method::GET, "/api/v1/dpo/extracts", None).await.json();
        let renov = list["budgets"].as_array().unwrap().iter().find(|b| b["partner_id"] == "renov-energie").cloned().unwrap();
        assert_eq!((renov["spent"].as_f64(), renov["budget"].as_f64()), (Some(4.0), Some(5.0)), "{list}");
        assert!(app.as_user(&dpo, Method::GET, "/dpo", None).await.text().contains("ε"));

        // A cohort of a few: built all the same, and nothing in it is
        // published as a count (ε 2: the noise's scale is ½).
        let token = labo(&app).await;
        let v = built(&app, &token, serde_json::json!({"purpose": "etude-mobilite", "kind": "aggregate", "categories": ["housing"], "group_by": ["housing.tenure"], "epsilon": 2})).await;
        assert_eq!(v["state"], "ready", "{v}");
        let small = file_of_partner(&app, &token, &v, coffre::demo::PARTNERS[0].age_identity).await;
        for line in small.lines().skip(1) {
            assert!(line.ends_with(",< 11"), "{small}");
        }

        // A consent that does not cover the category asked: out of the cohort.
        let lucie = app.login(LUCIE).await;
        let res = app.as_user(&lucie, Method::POST, "/api/v1/me/consents", Some(serde_json::json!({"purpose": "etude-mobilite", "decision": "given", "categories": ["mobility"]}))).await;
        assert_eq!(res.status, 200, "{}", res.text());
        let v = built(&app, &token, serde_json::json!({"purpose": "etude-mobilite", "kind": "records", "categories": ["housing"]})).await;
        assert_eq!(v["manifest"]["cohort_size"], 1, "only Awa's consent covers housing");
        let v = built(&app, &token, serde_json::json!({"purpose": "etude-mobilite", "kind": "records", "categories": ["mobility"]})).await;
        assert_eq!(v["manifest"]["cohort_size"], 2, "Awa and Lucie both cover mobility");
    })
    .await;
}

/// A partner deactivated after it asked for an extract gets no file made for
/// it, even once the DPO approves.
#[tokio::test]
async fn no_extract_is_built_for_a_partner_deactivated_after_asking() {
    each_backend(|app| async move {
        let token = renov(&app).await;
        let res = partner(&app, &token, Method::POST, "/api/v1/partner/extracts", Some(serde_json::json!({"purpose": "renovation-energetique", "kind": "records", "categories": ["housing"]}))).await;
        assert_eq!(res.status, 201, "{}", res.text());
        let id = res.json()["id"].as_str().unwrap().to_string();
        assert!(app.store.set_partner_active(&crate::support::pid("renov-energie"), false).await.unwrap());
        let dpo = app.login(DPO).await;
        let res = app.as_user(&dpo, Method::POST, &format!("/api/v1/dpo/extracts/{id}/approve"), None).await;
        assert_eq!(res.status, 200, "{}", res.text());
        for _ in 0..200 {
            let row = app.store.find_extract(&crate::support::eid(&id)).await.unwrap().unwrap();
            if !matches!(row.state.as_str(), "approved" | "building") {
                assert_eq!((row.state.as_str(), row.reason.as_deref()), ("failed", Some("partner deactivated")));
                for name in [format!("{id}.csv.age"), format!("{id}.csv.age.part")] {
                    assert!(!app.state.config.extracts_dir.join(name).exists());
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("extract {id} never finished building");
    })
    .await;
}

/// Issue 27 §2, the review's exact attack: as `labo-mobilite` on
/// `etude-mobilite`, aggregate A by household size and B by size × single
/// parent, both with the sums of commute and surface. Without noise, A's
/// size-4 row minus B's only published size-4 row left one person, with
/// their exact commute (34 km) and surface (142 m²). Now both are noisy
/// (each charged its ε): B is published, and the lone person's cell gives
/// neither a count nor their exact values.
#[tokio::test]
async fn two_overlapping_aggregates_never_subtract_to_a_few_people() {
    each_backend(|app| async move {
        let vault = app.state.vault().unwrap();
        let cat = |c: &str| vault.categories().category(c).unwrap();
        let now = app.clock.now();
        // Size 4: eleven single parents and one other person (the target);
        // size 3: twelve and eleven.
        let mut people = Vec::new();
        for i in 0..12 {
            people.push((4, i < 11, if i < 11 { 10 + i } else { 34 }, if i < 11 { 60 + i } else { 142 }));
        }
        for i in 0..23 {
            people.push((3, i < 12, 5 + i, 40 + i));
        }
        // (Eleven more, so that A's secondary suppression, which hides a
        // cell beside the demo residents' own, takes size 5, not size 4.)
        for i in 0..11 {
            people.push((5, true, 7 + i, 80 + i));
        }
        for (n, (size, single, km, m2)) in people.into_iter().enumerate() {
            let id = format!("00000000-0000-4000-8000-{:012}", 900 + n);
            app.store.insert_resident(&crate::support::resident_id(&id), now).await.unwrap();
            vault.write(&crate::support::resident_id(&id), &cat("household"), &serde_json::json!({"size": size, "single_parent": single}), now).await.unwrap();
            vault.write(&crate::support::resident_id(&id), &cat("mobility"), &serde_json::json!({"commute_km": km}), now).await.unwrap();
            vault.write(&crate::support::resident_id(&id), &cat("housing"), &serde_json::json!({"surface_m2": m2}), now).await.unwrap();
            coffre::service::consents::decide(
                &app.state,
                &coffre::service::consents::Actor {
                    id: id.clone(),
                    role: coffre::domain::Role::Resident,
                    structure_id: None,
                    request_id: None,
                },
                &crate::support::resident_id(&id),
                app.state.register.get("etude-mobilite").unwrap(),
                coffre::service::consents::Decision::Give(Default::default()),
            )
            .await
            .unwrap();
        }
        let token = labo(&app).await;
        let fields = ["mobility.commute_km", "housing.surface_m2"];
        let a = built(&app, &token, serde_json::json!({"purpose": "etude-mobilite", "kind": "aggregate", "categories": ["household", "mobility", "housing"], "group_by": ["household.size"], "fields": fields})).await;
        assert_eq!(a["state"], "ready", "{a}");
        let b = built(&app, &token, serde_json::json!({"purpose": "etude-mobilite", "kind": "aggregate", "categories": ["household", "mobility", "housing"], "group_by": ["household.size", "household.single_parent"], "fields": fields})).await;
        assert_eq!(b["state"], "ready", "{b}");
        let identity = coffre::demo::PARTNERS[0].age_identity;
        let table_b = file_of_partner(&app, &token, &b, identity).await;
        // Every size (1 to 30) × yes/no/autre, and `autre` × the same.
        assert_eq!(table_b.lines().count(), 1 + 31 * 3, "{table_b}");
        let lone = table_b.lines().find(|l| l.starts_with("4,false,")).unwrap();
        let cols: Vec<&str> = lone.split(',').collect();
        // One person: withheld with their sums (a count under 11 after
        // noise is never written), or, rarely, pushed over 11 by the noise,
        // with sums noisy at the scale of the fields' ranges.
        if cols[2] == "< 11" || cols[2] == "s" {
            assert_eq!((cols[3], cols[4]), (cols[2], cols[2]), "{lone}");
        } else {
            assert!(cols[2].parse::<u64>().unwrap() >= 11, "{lone}");
            assert_ne!((cols[3], cols[4]), ("34", "142"), "{lone}");
        }
        // Both were charged: the ledger, not a comparison with earlier
        // tables, bounds what a partner learns by differencing.
        let dpo = app.login(DPO).await;
        let list = app.as_user(&dpo, Method::GET, "/api/v1/dpo/extracts", None).await.json();
        let labo = list["budgets"].as_array().unwrap().iter().find(|b| b["partner_id"] == "labo-mobilite").cloned().unwrap();
        assert_eq!(labo["spent"].as_f64(), Some(2.0), "{list}");
    })
    .await;
}

/// The review's replay: a request whose filter matches nobody shows the
/// noise of every empty cell; a second one isolating one person must not
/// repeat it (else its only changed cell is the person's). Every cell of
/// the second table draws fresh noise, and both are logged for every
/// resident whose record was opened, whatever the filters kept.
#[tokio::test]
async fn an_empty_cells_noise_never_repeats_across_tables_of_other_residents() {
    each_backend(|app| async move {
        let token = renov(&app).await;
        let before = app.state.audit.size().await.unwrap();
        let nobody = built(&app, &token, serde_json::json!({"purpose": "renovation-energetique", "kind": "aggregate", "categories": ["housing"], "group_by": ["housing.tenure"], "filters": {"housing.postal_code": "00000"}})).await;
        assert_eq!(nobody["state"], "ready", "{nobody}");
        let after_first = app.state.audit.size().await.unwrap();
        assert_eq!(noise_rows(&app).await, 6, "six cells, all empty");
        let one = built(&app, &token, serde_json::json!({"purpose": "renovation-energetique", "kind": "aggregate", "categories": ["housing"], "group_by": ["housing.tenure"], "filters": {"housing.postal_code": "31310"}})).await;
        assert_eq!(one["state"], "ready", "{one}");
        assert_eq!(noise_rows(&app).await, 12, "fresh noise in every cell, the empty ones too");
        // The log grew alike for both (the filters decide nothing there).
        let after_second = app.state.audit.size().await.unwrap();
        let grew = |from: u64, to: u64| to - from;
        assert_eq!(grew(before, after_first), grew(after_first, after_second));
        // And the partner's progress is counted in pages, not residents.
        let v = partner(&app, &token, Method::GET, &format!("/api/v1/partner/extracts/{}", one["id"].as_str().unwrap()), None).await.json();
        assert_eq!(v["progress"]["rows_total"].as_i64().unwrap() % 500, 0, "{v}");
    })
    .await;
}

/// An extract id the path cannot hold (parsed once at the edge) is answered
/// as an unknown one: 404 to its partner and to the DPO, and the right to
/// decide checked first, as for any id.
#[tokio::test]
async fn a_malformed_extract_id_is_answered_as_an_unknown_one() {
    each_backend(|app| async move {
        let token = labo(&app).await;
        let dpo = app.login(DPO).await;
        let awa = app.login(AWA).await;
        for id in ["no-such-extract", "bad%20id", "%C3%A9t%C3%A9"] {
            partner(
                &app,
                &token,
                Method::GET,
                &format!("/api/v1/partner/extracts/{id}"),
                None,
            )
            .await
            .assert_error(404, "not_found");
            partner(
                &app,
                &token,
                Method::GET,
                &format!("/api/v1/partner/extracts/{id}/file"),
                None,
            )
            .await
            .assert_error(404, "not_found");
            app.as_user(
                &dpo,
                Method::POST,
                &format!("/api/v1/dpo/extracts/{id}/approve"),
                None,
            )
            .await
            .assert_error(404, "not_found");
            app.as_user(
                &dpo,
                Method::POST,
                &format!("/api/v1/dpo/extracts/{id}/reject"),
                Some(serde_json::json!({"reason": "trop large"})),
            )
            .await
            .assert_error(404, "not_found");
            app.as_user(
                &dpo,
                Method::POST,
                &format!("/api/v1/dpo/extracts/{id}/reject"),
                Some(serde_json::json!({"reason": ""})),
            )
            .await
            .assert_error(422, "invalid_reason");
            app.as_user(
                &awa,
                Method::POST,
                &format!("/api/v1/dpo/extracts/{id}/approve"),
                None,
            )
            .await
            .assert_error(403, "role_not_allowed");
        }
    })
    .await;
}
