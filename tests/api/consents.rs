//! The consent registry: the public register, every transition and every
//! invalid one with its code, receipts verifiable with only the JWKS, and
//! the audit entry of each decision.

use axum::http::Method;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde_json::{Value, json};

use crate::support::{T0, TestApp, each_backend};
use crate::vault::{AWA, JP};

const LUCIE: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000003";
const DAY: i64 = 86_400;

/// Verifies a receipt the way an outsider would: a standard JWT library and
/// the published JWKS, nothing else.
async fn verify_receipt(app: &TestApp, jws: &str) -> Result<Value, jsonwebtoken::errors::Error> {
    let jwks: JwkSet =
        serde_json::from_value(app.get("/.well-known/jwks.json").await.json()).unwrap();
    let header = jsonwebtoken::decode_header(jws)?;
    assert_eq!(header.alg, Algorithm::EdDSA);
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid not in the JWKS");
    let key = DecodingKey::from_jwk(jwk)?;
    let mut v = Validation::new(Algorithm::EdDSA);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    jsonwebtoken::decode::<Value>(jws, &key, &v).map(|d| d.claims)
}

async fn consents_of(app: &TestApp, s: &crate::support::Session) -> Value {
    app.as_user(s, Method::GET, "/api/v1/me/consents", None)
        .await
        .json()
}

#[tokio::test]
async fn the_register_is_public_and_complete() {
    each_backend(|app| async move {
        let reg = app.get("/api/v1/purposes").await.json();
        let purposes = reg["purposes"].as_array().unwrap();
        assert!(purposes.len() >= 8);
        for p in purposes {
            for field in [
                "id",
                "title_fr",
                "title_en",
                "description_fr",
                "description_en",
                "controller",
                "legal_basis",
                "categories",
                "recipients",
                "retention_days",
                "max_consent_days",
                "special_category",
                "dpv_purpose",
                "withdrawal_erases",
                "notice_version",
            ] {
                assert!(p.get(field).is_some(), "{field} missing in {p}");
            }
        }
        assert!(
            reg["notice_fr"]
                .as_str()
                .unwrap()
                .contains("service public")
        );
    })
    .await;
}

#[tokio::test]
async fn give_withdraw_give_again_with_verifiable_receipts() {
    each_backend(|app| async move {
        let s = app.login(LUCIE).await;
        let res = app
            .as_user(&s, Method::POST, "/api/v1/me/consents", Some(json!({"purpose": "etude-mobilite", "decision": "given", "categories": ["mobility"]})))
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let out = res.json();
        let id = out["consent"]["id"].as_str().unwrap().to_string();
        assert_eq!(out["consent"]["state"], "given");
        assert_eq!(out["consent"]["categories"], json!(["mobility"]));
        assert_eq!(out["consent"]["valid_until"], T0 + 365 * DAY);

        let claims = verify_receipt(&app, out["receipt"].as_str().unwrap()).await.unwrap();
        assert_eq!(claims["version"], "KI-CR-v1.1.0");
        assert_eq!(claims["jurisdiction"], "FR");
        assert_eq!(claims["consentTimestamp"], T0);
        assert_eq!(claims["dpv_state"], "https://w3id.org/dpv#ConsentGiven");
        assert_eq!(claims["services"][0]["purposes"][0]["piiCategory"], json!(["mobility"]));
        assert_eq!(claims["services"][0]["purposes"][0]["thirdPartyName"], "labo-mobilite");
        let pid = claims["piiPrincipalId"].as_str().unwrap();
        assert!(pid.len() == 64 && !pid.contains(LUCIE), "the receipt names the resident by pseudonym only");
        let purposes = app.get("/api/v1/purposes").await.json();
        let mobility = purposes["purposes"].as_array().unwrap().iter().find(|p| p["id"] == "etude-mobilite").unwrap().clone();
        assert_eq!(claims["notice_version"], mobility["notice_version"]);
        // The receipt points at its audit entry.
        let leaf = claims["audit_leaf_index"].as_u64().unwrap();
        let auditor = app.login("a1d00000-0000-4000-8000-000000000005").await;
        let entries = app
            .as_user(&auditor, Method::GET, &format!("/api/v1/audit/entries?from={leaf}&to={}", leaf + 1), None)
            .await
            .json();
        let e = &entries["entries"][0];
        assert_eq!((e["action"].as_str(), e["purpose"].as_str(), e["resident_id"].as_str()), (Some("consent.give"), Some("etude-mobilite"), Some(LUCIE)));
        assert_eq!(e["legal_basis"], "consent");

        // Withdraw: at once; twice is refused.
        app.clock.advance(60);
        let w = app.as_user(&s, Method::POST, &format!("/api/v1/me/consents/{id}/withdraw"), None).await;
        assert_eq!(w.status, 200, "{}", w.text());
        assert_eq!(w.json()["consent"]["state"], "withdrawn");
        let claims = verify_receipt(&app, w.json()["receipt"].as_str().unwrap()).await.unwrap();
        assert_eq!(claims["dpv_state"], "https://w3id.org/dpv#ConsentWithdrawn");
        app.as_user(&s, Method::POST, &format!("/api/v1/me/consents/{id}/withdraw"), None)
            .await
            .assert_error(409, "not_given");

        // Give again: same consent, history of three, three receipts.
        let again = app
            .as_user(&s, Method::POST, "/api/v1/me/consents", Some(json!({"purpose": "etude-mobilite", "decision": "given"})))
            .await
            .json();
        assert_eq!(again["consent"]["id"], id.as_str());
        let mine = consents_of(&app, &s).await;
        let c = mine["consents"].as_array().unwrap().iter().find(|c| c["id"] == id.as_str()).unwrap().clone();
        let states: Vec<&str> = c["history"].as_array().unwrap().iter().map(|h| h["state"].as_str().unwrap()).collect();
        assert_eq!(states, ["given", "withdrawn", "given"]);
        let receipts = app.as_user(&s, Method::GET, &format!("/api/v1/me/consents/{id}/receipts"), None).await.json();
        assert_eq!(receipts["receipts"].as_array().unwrap().len(), 3);

        // A tampered receipt fails.
        let r = receipts["receipts"][0].as_str().unwrap();
        let mut parts: Vec<String> = r.split('.').map(str::to_string).collect();
        let mut payload = parts[1].clone().into_bytes();
        payload[10] = if payload[10] == b'A' { b'B' } else { b'A' };
        parts[1] = String::from_utf8(payload).unwrap();
        assert!(verify_receipt(&app, &parts.join(".")).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn invalid_decisions_have_stable_codes_and_change_nothing() {
    each_backend(|app| async move {
        let s = app.login(AWA).await;
        let before = consents_of(&app, &s).await;
        let post = |body: Value| app.as_user(&s, Method::POST, "/api/v1/me/consents", Some(body));
        post(json!({"purpose": "renovation-energetique", "decision": "given"}))
            .await
            .assert_error(422, "consent_not_applicable");
        post(json!({"purpose": "suivi-social-ccas", "decision": "refused"}))
            .await
            .assert_error(422, "consent_not_applicable");
        post(json!({"purpose": "nope", "decision": "given"}))
            .await
            .assert_error(422, "unknown_purpose");
        post(json!({"purpose": "cantine-scolaire", "decision": "given", "categories": ["health"]}))
            .await
            .assert_error(422, "categories_outside_purpose");
        post(json!({"purpose": "cantine-scolaire", "decision": "given", "until": T0 + 366 * DAY}))
            .await
            .assert_error(422, "duration_above_maximum");
        post(json!({"purpose": "cantine-scolaire", "decision": "given", "until": "2020-01-01"}))
            .await
            .assert_error(422, "invalid_until");
        post(json!({"purpose": "cantine-scolaire", "decision": "given", "until": "tomorrow"}))
            .await
            .assert_error(422, "invalid_until");
        post(json!({"purpose": "sante-territoriale", "decision": "given"}))
            .await
            .assert_error(422, "explicit_consent_required");
        // Awa's demo consent to the mobility study is given: refusing is a conflict.
        post(json!({"purpose": "etude-mobilite", "decision": "refused"}))
            .await
            .assert_error(409, "already_given");
        post(json!({"purpose": "etude-mobilite", "decision": "maybe"}))
            .await
            .assert_error(400, "invalid_json");
        post(json!({"purpose": "etude-mobilite", "decision": "given", "colour": "blue"}))
            .await
            .assert_error(400, "invalid_json");
        // Another resident's consent does not exist for Awa.
        let jp = app.login(JP).await;
        let jp_consents = consents_of(&app, &jp).await;
        let jp_id = jp_consents["consents"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        app.as_user(
            &s,
            Method::POST,
            &format!("/api/v1/me/consents/{jp_id}/withdraw"),
            None,
        )
        .await
        .assert_error(404, "not_found");
        app.as_user(
            &s,
            Method::GET,
            &format!("/api/v1/me/consents/{jp_id}/receipts"),
            None,
        )
        .await
        .assert_error(404, "not_found");
        // Agents do not decide in a resident's space.
        let dpo = app.login("a1d00000-0000-4000-8000-000000000004").await;
        app.as_user(
            &dpo,
            Method::POST,
            "/api/v1/me/consents",
            Some(json!({"purpose": "etude-mobilite", "decision": "given"})),
        )
        .await
        .assert_error(403, "resident_only");
        assert_eq!(
            before,
            consents_of(&app, &s).await,
            "a refused decision changed something"
        );
    })
    .await;
}

#[tokio::test]
async fn consents_expire_with_time_and_can_be_given_again() {
    each_backend(|app| async move {
        let s = app.login(AWA).await;
        let out = app
            .as_user(&s, Method::POST, "/api/v1/me/consents", Some(json!({"purpose": "cantine-scolaire", "decision": "given", "until": T0 + DAY})))
            .await
            .json();
        let id = out["consent"]["id"].as_str().unwrap().to_string();
        app.clock.advance(2 * DAY);
        let s = app.login(AWA).await; // the 8-hour session is long gone
        let mine = consents_of(&app, &s).await;
        let c = mine["consents"].as_array().unwrap().iter().find(|c| c["id"] == id.as_str()).unwrap().clone();
        assert_eq!(c["state"], "expired");
        app.as_user(&s, Method::POST, &format!("/api/v1/me/consents/{id}/withdraw"), None).await.assert_error(409, "not_given");
        let again = app
            .as_user(&s, Method::POST, "/api/v1/me/consents", Some(json!({"purpose": "cantine-scolaire", "decision": "refused"})))
            .await;
        assert_eq!(again.json()["consent"]["state"], "refused");
        let again = app
            .as_user(&s, Method::POST, "/api/v1/me/consents", Some(json!({"purpose": "sante-territoriale", "decision": "given", "explicit": true, "until": "2027-01-31"})))
            .await;
        assert_eq!(again.status, 200, "{}", again.text());
        let claims = verify_receipt(&app, again.json()["receipt"].as_str().unwrap()).await.unwrap();
        assert_eq!(claims["sensitive"], true);
        assert_eq!(claims["spiCat"], json!(["health"]));
        assert_eq!(claims["services"][0]["purposes"][0]["consentType"], "EXPLICIT");
    })
    .await;
}

#[tokio::test]
async fn an_aidant_under_mandate_is_recorded_with_the_structure() {
    each_backend(|app| async move {
        let actor = coffre::service::consents::Actor {
            id: "a1d00000-0000-4000-8000-000000000001".into(),
            role: coffre::domain::Role::Aidant,
            structure_id: Some(coffre::demo::STRUCTURE_CCAS.into()),
            request_id: None,
        };
        let out = coffre::service::consents::decide(
            &app.state,
            &actor,
            &crate::support::resident_id(JP),
            app.state.register.get("cantine-scolaire").unwrap(),
            coffre::service::consents::Decision::Give(Default::default()),
        )
        .await
        .unwrap();
        let claims = verify_receipt(&app, &out.receipt).await.unwrap();
        assert_eq!(claims["recorded_by"], "aidant");
        let jp = app.login(JP).await;
        let mine = consents_of(&app, &jp).await;
        let c = mine["consents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["purpose"] == "cantine-scolaire")
            .unwrap()
            .clone();
        assert_eq!(c["history"][0]["recorded_by"], "aidant");
        assert_eq!(
            c["history"][0]["structure_id"],
            coffre::demo::STRUCTURE_CCAS
        );
        let leaf = claims["audit_leaf_index"].as_u64().unwrap();
        let entry = app.store.audit_entries(leaf, leaf + 1).await.unwrap();
        let e = coffre::audit::AuditEntry::decode(&entry[0].1).unwrap();
        assert_eq!(e.on_behalf_of.as_deref(), Some(JP));
        assert_eq!(
            e.structure_id.as_deref(),
            Some(coffre::demo::STRUCTURE_CCAS)
        );
        assert_eq!(e.reason, "mandate");
    })
    .await;
}

#[tokio::test]
async fn the_validity_question_is_answered_per_category_recipient_and_time() {
    each_backend(|app| async move {
        let reg = &app.state.register;
        let mobility = reg.get("etude-mobilite").unwrap();
        let public = reg.get("renovation-energetique").unwrap();
        let store = app.store.as_ref();
        let (awa, jp, lucie) = (
            crate::support::resident_id(AWA),
            crate::support::resident_id(JP),
            crate::support::resident_id(LUCIE),
        );
        let ask = |purpose, resident, category, recipient, now| {
            coffre::service::consents::valid_consent(
                store, purpose, resident, category, recipient, now,
            )
        };
        // Awa gave the mobility study (demo); Jean-Pierre withdrew it.
        assert!(
            ask(mobility, &awa, "mobility", Some("labo-mobilite"), T0)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            ask(mobility, &awa, "mobility", None, T0)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            ask(mobility, &awa, "health", Some("labo-mobilite"), T0)
                .await
                .unwrap()
                .is_none(),
            "category outside the purpose"
        );
        assert!(
            ask(mobility, &awa, "mobility", Some("renov-energie"), T0)
                .await
                .unwrap()
                .is_none(),
            "not a recipient"
        );
        assert!(
            ask(mobility, &awa, "mobility", None, T0 + 366 * DAY)
                .await
                .unwrap()
                .is_none(),
            "expired"
        );
        assert!(
            ask(mobility, &jp, "mobility", None, T0)
                .await
                .unwrap()
                .is_none(),
            "withdrawn"
        );
        assert!(
            ask(mobility, &lucie, "mobility", None, T0)
                .await
                .unwrap()
                .is_none(),
            "never given"
        );
        // A public-task purpose is not a consent question at all.
        assert!(
            ask(public, &awa, "housing", None, T0)
                .await
                .unwrap()
                .is_none()
        );
    })
    .await;
}

#[tokio::test]
async fn concurrent_decisions_never_overwrite_each_other() {
    each_backend(|app| async move {
        let actor = coffre::service::consents::Actor {
            id: AWA.into(),
            role: coffre::domain::Role::Resident,
            structure_id: None,
            request_id: None,
        };
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (state, actor) = (app.state.clone(), actor.clone());
            tasks.push(tokio::spawn(async move {
                let d = if i % 2 == 0 {
                    coffre::service::consents::Decision::Withdraw
                } else {
                    coffre::service::consents::Decision::Give(Default::default())
                };
                coffre::service::consents::decide(
                    &state,
                    &actor,
                    &crate::support::resident_id(AWA),
                    state.register.get("etude-mobilite").unwrap(),
                    d,
                )
                .await
            }));
        }
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                let (code, status) = e.code_and_status();
                assert!(
                    matches!(code, "concurrent_update" | "not_given" | "already_given"),
                    "unexpected {code} ({status})"
                );
            }
        }
        // The current state is the last event of the history.
        let s = app.login(AWA).await;
        let mine = consents_of(&app, &s).await;
        let c = mine["consents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["purpose"] == "etude-mobilite")
            .unwrap()
            .clone();
        let newest = &c["history"][0];
        assert_eq!(c["state"], newest["state"], "{c}");
    })
    .await;
}

/// A consent id the path cannot hold (parsed once at the edge) is answered
/// as an unknown one: 404 to the resident, after the right to act that is
/// checked first, as for any id.
#[tokio::test]
async fn a_malformed_consent_id_is_answered_as_an_unknown_one() {
    each_backend(|app| async move {
        let lucie = app.login(LUCIE).await;
        let aidant = app.login("a1d00000-0000-4000-8000-000000000001").await;
        for id in ["no-such-consent", "bad%20id", "%C3%A9t%C3%A9"] {
            let withdraw = format!("/api/v1/me/consents/{id}/withdraw");
            let receipts = format!("/api/v1/me/consents/{id}/receipts");
            app.as_user(&lucie, Method::POST, &withdraw, None)
                .await
                .assert_error(404, "not_found");
            app.as_user(&lucie, Method::GET, &receipts, None)
                .await
                .assert_error(404, "not_found");
            let other = app.as_user(&aidant, Method::POST, &withdraw, None).await;
            let known = app
                .as_user(
                    &aidant,
                    Method::POST,
                    "/api/v1/me/consents/no-such-consent/withdraw",
                    None,
                )
                .await;
            assert_eq!(
                (other.status, other.json()["error"]["code"].clone()),
                (known.status, known.json()["error"]["code"].clone()),
                "{id}"
            );
        }
    })
    .await;
}
