//! Mandates: acting on behalf within a démarche, every denial, revocation
//! by each party with signed receipts, the TOTP step-up, attestations that
//! verify offline, and the database's one-live-authorisation guarantee under
//! concurrency — on both backends. (The creation flow with the resident's
//! OpenID login is in `oidc.rs`.)

use axum::http::Method;
use base64::Engine;
use coffre::domain::Demarche;
use coffre::domain::mandate::totp;
use coffre::service::mandates::{NewMandate, create};

use crate::support::{Session, TestApp, TestResponse, each_backend};

/// Lucie: no mandate in the demo (Awa has one, with the CCAS).
const LUCIE: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000003";
const AWA: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000001";
const JP: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000002";
const AIDANT: &str = "a1d00000-0000-4000-8000-000000000001";
const REFERENT: &str = "a1d00000-0000-4000-8000-000000000003";
const DPO: &str = "a1d00000-0000-4000-8000-000000000004";
const CCAS: &str = coffre::demo::STRUCTURE_CCAS;

async fn as_(
    app: &TestApp,
    s: &Session,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> TestResponse {
    app.as_user(s, method, path, body).await
}

fn code(secret: &[u8], now: i64, offset: i64) -> String {
    totp::code(secret, totp::step_at(now) + offset)
}

#[tokio::test]
async fn an_aidant_acts_only_within_a_live_mandate_of_their_structure() {
    each_backend(|app| async move {
        app.mandate(LUCIE, &[Demarche::Logement], 31).await;
        let aidant = app.login(AIDANT).await;
        let data = |r: &str, c: &str, d: &str| {
            format!("/api/v1/aidant/residents/{r}/data/{c}?demarche={d}")
        };

        let list = as_(&app, &aidant, Method::GET, "/api/v1/aidant/residents", None).await;
        assert_eq!(list.status, 200, "{}", list.text());
        // The demo's own mandate (Awa's) is listed too; Lucie's is ours.
        let rows: Vec<_> = list.json()["authorisations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["resident_id"] == LUCIE)
            .cloned()
            .collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (
                rows[0]["resident_id"].as_str(),
                rows[0]["demarche"].as_str()
            ),
            (Some(LUCIE), Some("logement"))
        );

        let read = as_(
            &app,
            &aidant,
            Method::GET,
            &data(LUCIE, "housing", "logement"),
            None,
        )
        .await;
        assert_eq!(read.status, 200, "{}", read.text());
        assert!(read.header("x-audit-entry").is_some());
        let e = app.last_entry().await;
        assert_eq!(
            (
                e.actor_id.as_str(),
                e.on_behalf_of.as_deref(),
                e.structure_id.as_deref(),
                e.purpose.as_deref(),
                e.reason.as_str()
            ),
            (
                AIDANT,
                Some(LUCIE),
                Some(CCAS),
                Some("demarche:logement"),
                "mandate"
            )
        );
        let write = as_(
            &app,
            &aidant,
            Method::PUT,
            &data(LUCIE, "housing", "logement"),
            Some(serde_json::json!({"tenure": "social_tenant"})),
        )
        .await;
        assert_eq!(write.status, 200, "{}", write.text());

        // Every way outside the mandate.
        as_(
            &app,
            &aidant,
            Method::GET,
            &data(LUCIE, "health", "logement"),
            None,
        )
        .await
        .assert_error(403, "outside_demarche");
        as_(
            &app,
            &aidant,
            Method::GET,
            &data(LUCIE, "housing", "transports"),
            None,
        )
        .await
        .assert_error(403, "outside_demarche");
        as_(
            &app,
            &aidant,
            Method::GET,
            &data(LUCIE, "identity", "papiers"),
            None,
        )
        .await
        .assert_error(403, "no_active_mandate");
        as_(
            &app,
            &aidant,
            Method::GET,
            &data(JP, "housing", "logement"),
            None,
        )
        .await
        .assert_error(403, "no_active_mandate");
        as_(
            &app,
            &aidant,
            Method::GET,
            &data(LUCIE, "housing", "nowhere"),
            None,
        )
        .await
        .assert_error(422, "unknown_demarche");
        let e = app.last_entry().await;
        assert_eq!(
            (e.decision, e.reason.as_str()),
            (coffre::audit::Decision::Deny, "no_active_mandate")
        );

        // An aidant of another structure.
        app.store
            .insert_structure(
                &coffre::storage::StructureRow {
                    id: crate::support::sid("other-structure"),
                    siret: "73282932000074".into(),
                    name: "France Services (autre)".into(),
                    allowed_demarches: crate::support::demarches("logement"),
                    active: true,
                },
                app.clock.now(),
            )
            .await
            .unwrap();
        app.store
            .insert_agent(
                &coffre::storage::AgentRow {
                    id: crate::support::aid("aidant-elsewhere"),
                    role: coffre::domain::Role::Aidant,
                    display_name: "Ailleurs".into(),
                    structure_id: Some(crate::support::sid("other-structure")),
                    active: true,
                    can_create_mandates: true,
                },
                None,
                app.clock.now(),
            )
            .await
            .unwrap();
        let cookie = coffre::http::session::open_session(
            &app.state,
            "aidant-elsewhere",
            coffre::domain::Role::Aidant,
            "demo",
            None,
        )
        .await
        .unwrap();
        let cookie = cookie
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let elsewhere = Session {
            cookie,
            csrf: String::new(),
        };
        as_(
            &app,
            &elsewhere,
            Method::GET,
            &data(LUCIE, "housing", "logement"),
            None,
        )
        .await
        .assert_error(403, "no_active_mandate");

        // Residents, DPOs and partners have no aidant routes.
        let awa = app.login(LUCIE).await;
        as_(
            &app,
            &awa,
            Method::GET,
            &data(LUCIE, "housing", "logement"),
            None,
        )
        .await
        .assert_error(403, "aidant_only");

        // Expired.
        app.clock.advance(31 * 86_400);
        let aidant = app.login(AIDANT).await;
        as_(
            &app,
            &aidant,
            Method::GET,
            &data(LUCIE, "housing", "logement"),
            None,
        )
        .await
        .assert_error(403, "no_active_mandate");
        let list = as_(&app, &aidant, Method::GET, "/api/v1/aidant/residents", None).await;
        assert!(
            !list.json()["authorisations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["resident_id"] == LUCIE)
        );
    })
    .await;
}

#[tokio::test]
async fn residents_aidants_and_referents_revoke_with_signed_receipts() {
    each_backend(|app| async move {
        let now = app.clock.now();
        let secret =
            coffre::service::mandates::enroll_totp(&app.state, &crate::support::aid(AIDANT), now)
                .await
                .unwrap();
        let id = app
            .mandate(
                LUCIE,
                &[Demarche::Famille, Demarche::Logement, Demarche::Papiers],
                365,
            )
            .await;
        let awa = app.login(LUCIE).await;
        let aidant = app.login(AIDANT).await;
        let referent = app.login(REFERENT).await;

        let mine = as_(&app, &awa, Method::GET, "/api/v1/me/mandates", None).await;
        assert_eq!(mine.status, 200, "{}", mine.text());
        assert_eq!(mine.json()["mandates"][0]["state"], "active");

        // The resident takes one démarche back, at once.
        let res = as_(
            &app,
            &awa,
            Method::POST,
            &format!("/api/v1/me/mandates/{id}/revoke"),
            Some(serde_json::json!({"demarche": "famille"})),
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let receipt = res.json()["receipt"].as_str().unwrap().to_string();
        let claims = verify_offline(&app, &receipt).await;
        assert_eq!(
            (claims["typ"].as_str(), claims["revoked_by"].as_str()),
            (Some("coffre-mandate-revocation"), Some("resident"))
        );
        assert_eq!(claims["demarches"], serde_json::json!(["famille"]));
        as_(
            &app,
            &aidant,
            Method::GET,
            &format!("/api/v1/aidant/residents/{LUCIE}/data/household?demarche=famille"),
            None,
        )
        .await
        .assert_error(403, "no_active_mandate");
        as_(
            &app,
            &awa,
            Method::POST,
            &format!("/api/v1/me/mandates/{id}/revoke"),
            Some(serde_json::json!({"demarche": "famille"})),
        )
        .await
        .assert_error(409, "nothing_to_revoke");
        // Someone else's mandate is not the resident's to see.
        let jp = app.login(JP).await;
        as_(
            &app,
            &jp,
            Method::POST,
            &format!("/api/v1/me/mandates/{id}/revoke"),
            None,
        )
        .await
        .assert_error(404, "not_found");

        // An aidant needs their TOTP code.
        let path = format!("/api/v1/mandates/{id}/revoke");
        as_(
            &app,
            &aidant,
            Method::POST,
            &path,
            Some(serde_json::json!({"demarche": "logement"})),
        )
        .await
        .assert_error(403, "totp_invalid");
        as_(
            &app,
            &aidant,
            Method::POST,
            &path,
            Some(serde_json::json!({"demarche": "logement", "totp": code(&secret, now, 5)})),
        )
        .await
        .assert_error(403, "totp_invalid");
        let ok = as_(
            &app,
            &aidant,
            Method::POST,
            &path,
            Some(serde_json::json!({"demarche": "logement", "totp": code(&secret, now, 0)})),
        )
        .await;
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert_eq!(
            verify_offline(&app, ok.json()["receipt"].as_str().unwrap()).await["revoked_by"],
            "aidant"
        );

        // The référent of the structure, without a code.
        let ok = as_(&app, &referent, Method::POST, &path, None).await;
        assert_eq!(ok.status, 200, "{}", ok.text());
        let view = &ok.json()["mandate"];
        assert_eq!(view["state"], "revoked");
        let by: Vec<_> = view["demarches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["revoked_by"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(by, ["resident", "aidant", "referent"]);
    })
    .await;
}

async fn verify_offline(app: &TestApp, jws: &str) -> serde_json::Value {
    // Only the published JWKS: what anyone outside coffre has.
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&app.get("/.well-known/jwks.json").await.body).unwrap();
    let header = jsonwebtoken::decode_header(jws).unwrap();
    let key =
        jsonwebtoken::DecodingKey::from_jwk(jwks.find(header.kid.as_deref().unwrap()).unwrap())
            .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<serde_json::Value>(jws, &key, &v)
        .unwrap()
        .claims
}

#[tokio::test]
async fn the_totp_step_up_is_rate_limited_and_never_replayed() {
    each_backend(|app| async move {
        let now = app.clock.now();
        let secret =
            coffre::service::mandates::enroll_totp(&app.state, &crate::support::aid(AIDANT), now)
                .await
                .unwrap();
        let check = |c: Option<String>| {
            let app = &app;
            async move {
                match coffre::service::mandates::check_totp(
                    &app.state,
                    &crate::support::aid(AIDANT),
                    c.as_deref(),
                    app.clock.now(),
                )
                .await
                {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e.code_and_status().0.to_string(),
                }
            }
        };
        assert_eq!(check(Some(code(&secret, now, 0))).await, "ok");
        // The same code again, or an older one: replay.
        assert_eq!(check(Some(code(&secret, now, 0))).await, "totp_invalid");
        assert_eq!(check(Some(code(&secret, now, -1))).await, "totp_invalid");
        // The next step (clock drift) is accepted once.
        assert_eq!(check(Some(code(&secret, now, 1))).await, "ok");
        // Five wrong codes lock the device, even against the right one.
        for _ in 0..5 {
            assert_eq!(check(Some("000000".into())).await, "totp_invalid");
        }
        app.clock.advance(60);
        assert_eq!(
            check(Some(code(&secret, app.clock.now(), 0))).await,
            "totp_locked"
        );
        app.clock.advance(15 * 60);
        assert_eq!(check(Some(code(&secret, app.clock.now(), 0))).await, "ok");
        // An agent without a device.
        let none = coffre::service::mandates::check_totp(
            &app.state,
            &crate::support::aid(DPO),
            Some("123456"),
            now,
        )
        .await
        .unwrap_err();
        assert_eq!(none.code_and_status().0, "totp_not_enrolled");
        // The secret is not stored in clear.
        let row = app
            .store
            .find_totp(&crate::support::aid(AIDANT))
            .await
            .unwrap()
            .unwrap();
        assert!(
            !row.sealed_secret
                .windows(secret.len())
                .any(|w| w == secret.as_slice())
        );
    })
    .await;
}

#[tokio::test]
async fn a_deactivated_aidant_is_refused_everything() {
    each_backend(|app| async move {
        app.mandate(LUCIE, &[Demarche::Logement], 31).await;
        let aidant = app.login(AIDANT).await;
        let path = format!("/api/v1/aidant/residents/{LUCIE}/data/housing?demarche=logement");
        assert_eq!(
            as_(&app, &aidant, Method::GET, &path, None).await.status,
            200
        );
        assert!(
            app.store
                .set_agent_active(&crate::support::aid(AIDANT), false, app.clock.now())
                .await
                .unwrap()
        );
        // Their sessions ended with the deactivation…
        as_(&app, &aidant, Method::GET, &path, None)
            .await
            .assert_error(401, "unauthenticated");
        // …and a session that would survive is refused.
        let cookie = coffre::http::session::open_session(
            &app.state,
            AIDANT,
            coffre::domain::Role::Aidant,
            "demo",
            None,
        )
        .await
        .unwrap();
        let cookie = cookie
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let zombie = Session {
            cookie,
            csrf: String::new(),
        };
        as_(&app, &zombie, Method::GET, &path, None)
            .await
            .assert_error(403, "agent_inactive");
        as_(&app, &zombie, Method::GET, "/api/v1/aidant/residents", None)
            .await
            .assert_error(403, "agent_inactive");
        let e = app.last_entry().await;
        assert_eq!(
            (e.decision, e.reason.as_str()),
            (coffre::audit::Decision::Deny, "agent_inactive")
        );
    })
    .await;
}

#[tokio::test]
async fn attestations_verify_offline_and_say_valid_revoked_or_expired() {
    each_backend(|app| async move {
        let id = app
            .mandate(LUCIE, &[Demarche::Logement, Demarche::Papiers], 31)
            .await;
        let awa = app.login(LUCIE).await;
        let mine = as_(&app, &awa, Method::GET, "/api/v1/me/mandates", None)
            .await
            .json();
        let attestation = mine["mandates"][0]["attestation"]
            .as_str()
            .unwrap()
            .to_string();
        let claims = verify_offline(&app, &attestation).await;
        assert_eq!(claims["sub"], id.as_str());
        assert_eq!(claims["structure_siret"], "26340001200013");
        assert_eq!(
            claims["demarches"],
            serde_json::json!(["logement", "papiers"])
        );
        assert_eq!(
            claims["template"],
            coffre::domain::mandate::TEMPLATE_VERSION
        );

        let status = |jws: String| {
            let app = &app;
            async move {
                let q: String = url::form_urlencoded::byte_serialize(jws.as_bytes()).collect();
                app.get(&format!("/api/v1/mandates/verify?attestation={q}"))
                    .await
            }
        };
        assert_eq!(status(attestation.clone()).await.json()["status"], "valid");
        // A printable page with the text and the link.
        let page = as_(
            &app,
            &awa,
            Method::GET,
            &format!("/mandates/{id}/attestation"),
            None,
        )
        .await;
        assert_eq!(page.status, 200);
        assert!(
            page.text().contains("Attestation de mandat")
                && page.text().contains("/api/v1/mandates/verify?attestation=")
        );
        // Tampered: refused.
        let mut parts: Vec<String> = attestation.split('.').map(str::to_string).collect();
        let mut payload: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&parts[1])
                .unwrap(),
        )
        .unwrap();
        payload["demarches"] = serde_json::json!(["logement", "papiers", "argent"]);
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string());
        status(parts.join("."))
            .await
            .assert_error(422, "attestation_invalid");
        status("not-a-jws".into())
            .await
            .assert_error(422, "attestation_invalid");

        // Revoked, then another one expired.
        as_(
            &app,
            &awa,
            Method::POST,
            &format!("/api/v1/me/mandates/{id}/revoke"),
            None,
        )
        .await;
        assert_eq!(status(attestation).await.json()["status"], "revoked");
        app.mandate(LUCIE, &[Demarche::Argent], 1).await;
        let mine = as_(&app, &awa, Method::GET, "/api/v1/me/mandates", None)
            .await
            .json();
        let newer = mine["mandates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["demarches"][0]["demarche"] == "argent")
            .unwrap()["attestation"]
            .as_str()
            .unwrap()
            .to_string();
        app.clock.advance(86_400);
        assert_eq!(status(newer).await.json()["status"], "expired");
    })
    .await;
}

#[tokio::test]
async fn one_live_authorisation_per_demarche_even_when_created_at_once() {
    each_backend(|app| async move {
        let first = app.mandate(LUCIE, &[Demarche::Logement, Demarche::Famille], 31).await;
        // A newer mandate takes the démarche over; the old one keeps the rest.
        let second = app.mandate(LUCIE, &[Demarche::Logement], 365).await;
        let old = app.store.mandate_authorisations(&crate::support::mid(&first)).await.unwrap();
        let logement = old.iter().find(|a| a.demarche.as_str() == "logement").unwrap();
        assert_eq!(logement.revoked_by.as_deref(), Some("superseded"));
        assert!(old.iter().find(|a| a.demarche.as_str() == "famille").unwrap().revoked_at.is_none());
        let live = app.store.live_authorisation(&crate::support::resident_id(LUCIE), &crate::support::sid(CCAS), "logement".parse().unwrap(), app.clock.now()).await.unwrap().unwrap();
        assert_eq!(live.mandate_id.as_str(), second);

        // Eight creations at once for the same démarche.
        let structure = app.store.find_structure(&crate::support::sid(CCAS)).await.unwrap().unwrap();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let state = app.state.clone();
            let structure = structure.clone();
            let now = app.clock.now();
            tasks.push(tokio::spawn(async move {
                create(
                    &state,
                    NewMandate {
                        aidant_id: &crate::support::aid(AIDANT),
                        structure: &structure,
                        resident_id: &crate::support::resident_id(JP),
                        demarches: &[Demarche::Transports],
                        duration_days: 31,
                        renews: None,
                    },
                    now,
                )
                .await
                .map(|(m, _)| m.id)
                .map_err(|e| e.code_and_status().0)
            }));
        }
        let mut created = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(id) => created.push(id),
                Err(code) => assert_eq!(code, "mandate_conflict"),
            }
        }
        assert!(!created.is_empty());
        let live: Vec<_> = app
            .store
            .structure_authorisations(&crate::support::sid(CCAS), app.clock.now(), i64::MAX)
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.resident_id == JP && a.demarche.as_str() == "transports")
            .collect();
        assert_eq!(live.len(), 1, "{live:?}");

        // And the database itself refuses a second live row, whatever the code does.
        let sql = format!(
            "INSERT INTO mandate_authorisations (mandate_id, resident_id, structure_id, demarche, expires_at) \
             VALUES ('{first}', '{JP}', '{CCAS}', 'transports', 9999999999)"
        );
        let err = if app.backend == "sqlite" {
            let pool = sqlx::SqlitePool::connect(&app.database_url).await.unwrap();
            sqlx::Executor::execute(&pool, sql.as_str()).await.map(|_| ())
        } else {
            let pool = sqlx::PgPool::connect(&app.database_url).await.unwrap();
            let r = sqlx::Executor::execute(&pool, sql.as_str()).await.map(|_| ());
            pool.close().await;
            r
        };
        let err = err.expect_err("the unique index let a second live authorisation in");
        assert!(err.to_string().to_lowercase().contains("unique"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn mandates_expiring_within_thirty_days_are_listed_for_the_structure() {
    each_backend(|app| async move {
        app.mandate(LUCIE, &[Demarche::Logement], 31).await;
        app.mandate(JP, &[Demarche::Papiers], 365).await;
        let aidant = app.login(AIDANT).await;
        let soon = as_(
            &app,
            &aidant,
            Method::GET,
            "/api/v1/aidant/mandates/expiring",
            None,
        )
        .await;
        assert_eq!(soon.status, 200, "{}", soon.text());
        assert!(soon.json()["authorisations"].as_array().unwrap().is_empty());
        app.clock.advance(2 * 86_400);
        let aidant = app.login(AIDANT).await;
        let soon = as_(
            &app,
            &aidant,
            Method::GET,
            "/api/v1/aidant/mandates/expiring",
            None,
        )
        .await
        .json();
        let rows = soon["authorisations"].as_array().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["resident_id"], LUCIE);
        let all = as_(&app, &aidant, Method::GET, "/api/v1/aidant/residents", None)
            .await
            .json();
        // Ours, and the demo's two (Awa: logement, papiers).
        assert_eq!(all["authorisations"].as_array().unwrap().len(), 4);
    })
    .await;
}

#[tokio::test]
async fn an_aidant_records_a_consent_on_behalf_only_within_the_mandate() {
    each_backend(|app| async move {
        app.mandate(LUCIE, &[Demarche::Famille], 31).await;
        let aidant = app.login(AIDANT).await;
        let give = serde_json::json!({"purpose": "cantine-scolaire", "decision": "given"});
        let path = |d: &str| format!("/api/v1/aidant/residents/{LUCIE}/consents?demarche={d}");
        // The school canteen's categories (school, household, contact) are
        // all within "famille".
        let res = as_(
            &app,
            &aidant,
            Method::POST,
            &path("famille"),
            Some(give.clone()),
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let awa = app.login(LUCIE).await;
        let mine = as_(&app, &awa, Method::GET, "/api/v1/me/consents", None)
            .await
            .json();
        let c = mine["consents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["purpose"] == "cantine-scolaire")
            .unwrap()
            .clone();
        assert_eq!(c["history"][0]["recorded_by"], "aidant");
        assert_eq!(c["history"][0]["structure_id"], CCAS);
        // Outside: another démarche with no mandate; a purpose whose
        // categories the démarche does not reach; another resident.
        as_(
            &app,
            &aidant,
            Method::POST,
            &path("logement"),
            Some(give.clone()),
        )
        .await
        .assert_error(403, "no_active_mandate");
        let culture = serde_json::json!({"purpose": "agenda-culturel", "decision": "given"});
        as_(&app, &aidant, Method::POST, &path("famille"), Some(culture))
            .await
            .assert_error(403, "outside_demarche");
        as_(
            &app,
            &aidant,
            Method::POST,
            &format!("/api/v1/aidant/residents/{JP}/consents?demarche=famille"),
            Some(give),
        )
        .await
        .assert_error(403, "no_active_mandate");
    })
    .await;
}

#[tokio::test]
async fn a_referent_manages_the_structures_demarches_and_aidants() {
    each_backend(|app| async move {
        let referent = app.login(REFERENT).await;
        let aidant = app.login(AIDANT).await;
        let view = as_(
            &app,
            &referent,
            Method::GET,
            "/api/v1/referent/structure",
            None,
        )
        .await;
        assert_eq!(view.status, 200, "{}", view.text());
        assert_eq!(
            view.json()["allowed_demarches"].as_array().unwrap().len(),
            10
        );
        as_(
            &app,
            &aidant,
            Method::GET,
            "/api/v1/referent/structure",
            None,
        )
        .await
        .assert_error(403, "referent_only");

        // Narrow the démarches: new drafts outside them are refused.
        let res = as_(
            &app,
            &referent,
            Method::PUT,
            "/api/v1/referent/structure/demarches",
            Some(serde_json::json!({"demarches": ["logement", "papiers"]})),
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text());
        as_(
            &app,
            &aidant,
            Method::POST,
            "/api/v1/mandates/drafts",
            Some(serde_json::json!({"demarches": ["argent"], "duration_days": 31})),
        )
        .await
        .assert_error(422, "demarche_not_allowed");
        let ok = as_(
            &app,
            &aidant,
            Method::POST,
            "/api/v1/mandates/drafts",
            Some(serde_json::json!({"demarches": ["logement"], "duration_days": 31})),
        )
        .await;
        assert_eq!(ok.status, 201, "{}", ok.text());

        // Remove the aidant from the structure: they act for it no more
        // (their account, an administrator's, stands: see trust.rs).
        let res = as_(
            &app,
            &referent,
            Method::POST,
            &format!("/api/v1/referent/aidants/{AIDANT}/deactivate"),
            None,
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text());
        as_(&app, &aidant, Method::GET, "/api/v1/aidant/residents", None)
            .await
            .assert_error(403, "structure_inactive");
        // Not a member of the structure, or not an aidant: not found.
        as_(
            &app,
            &referent,
            Method::POST,
            "/api/v1/referent/aidants/a1d00000-0000-4000-8000-000000000004/deactivate",
            None,
        )
        .await
        .assert_error(404, "not_found");
        let res = as_(
            &app,
            &referent,
            Method::POST,
            &format!("/api/v1/referent/aidants/{AIDANT}/activate"),
            None,
        )
        .await;
        assert_eq!(res.status, 200);
    })
    .await;
}

#[tokio::test]
async fn an_aidant_of_two_structures_acts_for_the_current_one() {
    each_backend(|app| async move {
        app.store
            .insert_structure(
                &coffre::storage::StructureRow {
                    id: crate::support::sid("france-services"),
                    siret: "73282932000074".into(),
                    name: "France Services".into(),
                    allowed_demarches: crate::support::demarches("logement"),
                    active: true,
                },
                app.clock.now(),
            )
            .await
            .unwrap();
        app.store
            .add_agent_structure(
                &crate::support::aid(AIDANT),
                &crate::support::sid("france-services"),
            )
            .await
            .unwrap();
        app.mandate(LUCIE, &[Demarche::Logement], 31).await; // a CCAS mandate
        let aidant = app.login(AIDANT).await;
        let path = format!("/api/v1/aidant/residents/{LUCIE}/data/housing?demarche=logement");
        assert_eq!(
            as_(&app, &aidant, Method::GET, &path, None).await.status,
            200
        );
        let res = as_(
            &app,
            &aidant,
            Method::PUT,
            "/api/v1/aidant/structure",
            Some(serde_json::json!({"structure_id": "france-services"})),
        )
        .await;
        assert_eq!(res.status, 204, "{}", res.text());
        as_(&app, &aidant, Method::GET, &path, None)
            .await
            .assert_error(403, "no_active_mandate");
        // Not one of theirs.
        as_(
            &app,
            &aidant,
            Method::PUT,
            "/api/v1/aidant/structure",
            Some(serde_json::json!({"structure_id": "elsewhere"})),
        )
        .await
        .assert_error(404, "not_found");
    })
    .await;
}

/// A mandate or draft id the path cannot hold (parsed once at the edge) is
/// answered as an unknown one, by the JSON routes and the pages, to each
/// role, after the checks that come first.
#[tokio::test]
async fn a_malformed_mandate_or_draft_id_is_answered_as_an_unknown_one() {
    each_backend(|app| async move {
        let sessions = [
            app.login(AIDANT).await,
            app.login(REFERENT).await,
            app.login(LUCIE).await,
        ];
        let api: [(Method, &str, Option<serde_json::Value>); 7] = [
            (Method::GET, "/api/v1/mandates/drafts/{id}", None),
            (
                Method::POST,
                "/api/v1/mandates/drafts/{id}/confirm",
                Some(serde_json::json!({"resident_confirmed": true, "totp": "000000"})),
            ),
            (
                Method::POST,
                "/api/v1/mandates/{id}/renew",
                Some(serde_json::json!({})),
            ),
            (
                Method::POST,
                "/api/v1/mandates/{id}/revoke",
                Some(serde_json::json!({})),
            ),
            (
                Method::POST,
                "/api/v1/me/mandates/{id}/revoke",
                Some(serde_json::json!({})),
            ),
            (Method::GET, "/api/v1/mandates/{id}", None),
            (Method::GET, "/auth/login?mandate_draft={id}", None),
        ];
        let pages = [
            "/aidant/brouillons/{id}",
            "/aidant/mandats/{id}",
            "/mandates/{id}/attestation",
        ];
        for s in &sessions {
            for (method, template, body) in &api {
                let path = |id: &str| template.replace("{id}", id);
                let known = as_(&app, s, method.clone(), &path("no-such-id"), body.clone()).await;
                assert!(
                    known.status.is_client_error(),
                    "{template}: {}",
                    known.status
                );
                for bad in ["bad%20id", "%C3%A9t%C3%A9", "a%2Fb"] {
                    let got = as_(&app, s, method.clone(), &path(bad), body.clone()).await;
                    assert_eq!(
                        (got.status, got.json()["error"]["code"].clone()),
                        (known.status, known.json()["error"]["code"].clone()),
                        "{template} {bad}"
                    );
                }
            }
            for template in pages {
                let get = |id: &str| {
                    let path = template.replace("{id}", id);
                    let cookie = s.cookie.clone();
                    let app = &app;
                    async move {
                        app.send(
                            Method::GET,
                            &path,
                            &[("cookie", &cookie)],
                            axum::body::Body::empty(),
                        )
                        .await
                        .status
                    }
                };
                let known = get("no-such-id").await;
                for bad in ["bad%20id", "%C3%A9t%C3%A9"] {
                    assert_eq!(get(bad).await, known, "{template} {bad}");
                }
            }
        }
    })
    .await;
}

/// An agent id in a référent's path, or a structure id in an aidant's
/// switch, that could name nothing (parsed once at the edge) is answered as
/// an unknown one, to each role.
#[tokio::test]
async fn a_malformed_agent_or_structure_id_is_answered_as_an_unknown_one() {
    each_backend(|app| async move {
        let sessions = [
            app.login(AIDANT).await,
            app.login(REFERENT).await,
            app.login(LUCIE).await,
        ];
        for s in &sessions {
            for action in ["deactivate", "activate"] {
                let path = |id: &str| format!("/api/v1/referent/aidants/{id}/{action}");
                let known = as_(&app, s, Method::POST, &path("no-such-agent"), None).await;
                assert!(known.status.is_client_error(), "{}", known.status);
                for bad in ["bad%20id", "%C3%A9t%C3%A9", "a%2Fb"] {
                    let got = as_(&app, s, Method::POST, &path(bad), None).await;
                    assert_eq!(
                        (got.status, got.json()["error"]["code"].clone()),
                        (known.status, known.json()["error"]["code"].clone()),
                        "{action} {bad}"
                    );
                }
            }
            let switch = |id: &str| Some(serde_json::json!({ "structure_id": id }));
            let known = as_(
                &app,
                s,
                Method::PUT,
                "/api/v1/aidant/structure",
                switch("no-such-structure"),
            )
            .await;
            assert!(known.status.is_client_error(), "{}", known.status);
            for bad in ["bad id", "été", "", "a/b"] {
                let got = as_(
                    &app,
                    s,
                    Method::PUT,
                    "/api/v1/aidant/structure",
                    switch(bad),
                )
                .await;
                assert_eq!(
                    (got.status, got.json()["error"]["code"].clone()),
                    (known.status, known.json()["error"]["code"].clone()),
                    "switch {bad:?}"
                );
            }
        }
    })
    .await;
}

/// The aidant's list shows people, not ids: each person under an active
/// mandate of the structure with their name and commune, read for the
/// list under one audit entry; nobody else; ended mandates apart, without
/// names (the vault is no longer read for them); the page searches.
#[tokio::test]
async fn the_aidants_list_names_the_people_under_mandate_and_nobody_else() {
    each_backend(|app| async move {
        app.mandate(LUCIE, &[Demarche::Logement], 31).await;
        let aidant = app.login(AIDANT).await;
        let before = app.state.audit.size().await.unwrap();
        let list = as_(&app, &aidant, Method::GET, "/api/v1/aidant/residents", None).await;
        assert_eq!(list.status, 200, "{}", list.text());
        assert_eq!(
            app.state.audit.size().await.unwrap(),
            before + 1,
            "one entry for the list read"
        );
        let entry = app.last_entry().await;
        assert_eq!(
            (entry.action.as_str(), entry.category.as_deref()),
            ("mandate.list", Some("identity"))
        );
        let rows = list.json()["authorisations"].as_array().unwrap().clone();
        let lucie = rows.iter().find(|r| r["resident_id"] == LUCIE).unwrap();
        assert_eq!(lucie["name"], "Lucie Bernard", "{lucie}");
        assert!(lucie["commune_insee"].is_string(), "{lucie}");
        let awa = rows.iter().find(|r| r["resident_id"] == AWA).unwrap();
        assert_eq!(awa["name"], "Awa Diallo", "{awa}");
        // Jean-Pierre (the demo's second resident) has no mandate here: absent.
        assert!(
            rows.iter()
                .all(|r| r["resident_id"] == LUCIE || r["resident_id"] == AWA),
            "{rows:?}"
        );
        let text = list.text();
        assert!(
            !text.contains("Jean-Pierre") && !text.contains(JP),
            "{text}"
        );
        // The page: names, the search, and Lucie's mandate once revoked.
        let page = as_(&app, &aidant, Method::GET, "/aidant", None).await;
        assert!(
            page.text().contains("Lucie Bernard") && page.text().contains("Awa Diallo"),
            "{}",
            page.text()
        );
        // The search is posted (a name never in the address).
        let found = app
            .send(
                Method::POST,
                "/aidant",
                &[
                    ("cookie", &aidant.cookie),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                format!("csrf_token={}&q=lucie", aidant.csrf),
            )
            .await;
        assert_eq!(found.status, 200, "{}", found.text());
        assert!(
            found.text().contains("Lucie Bernard") && !found.text().contains("Awa Diallo"),
            "{}",
            found.text()
        );
        let mandate = lucie["mandate_id"].as_str().unwrap().to_string();
        let lucie_session = app.login(LUCIE).await;
        let revoked = as_(
            &app,
            &lucie_session,
            Method::POST,
            &format!("/api/v1/me/mandates/{mandate}/revoke"),
            Some(serde_json::json!({"demarche": "logement"})),
        )
        .await;
        assert!(revoked.status.is_success(), "{}", revoked.text());
        let list = as_(&app, &aidant, Method::GET, "/api/v1/aidant/residents", None)
            .await
            .json();
        assert!(
            list["authorisations"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["resident_id"] != LUCIE)
        );
        let ended = list["ended"].as_array().unwrap();
        let gone = ended
            .iter()
            .find(|r| r["mandate_id"] == mandate.as_str())
            .unwrap();
        assert_eq!(
            (gone["revoked"].as_bool(), gone.get("name")),
            (Some(true), None),
            "{gone}"
        );
        let page = as_(&app, &aidant, Method::GET, "/aidant", None).await;
        assert!(
            page.text().contains("Mandats terminés") && !page.text().contains("Lucie Bernard"),
            "{}",
            page.text()
        );
    })
    .await;
}
