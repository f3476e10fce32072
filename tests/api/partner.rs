//! Partners as OAuth2 clients: tokens issued to registered partners only,
//! verified on every request; forged, expired, re-targeted or unsigned
//! tokens are refused.

use axum::http::Method;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::support::{TestApp, each_backend};

const LABO_ID: &str = "demo-labo-mobilite";
const LABO_SECRET: &str = "demo-secret-labo-mobilite-not-for-production";

async fn token(app: &TestApp, id: &str, secret: &str) -> crate::support::TestResponse {
    let basic = STANDARD.encode(format!("{id}:{secret}"));
    app.send(
        Method::POST,
        "/oauth/token",
        &[
            ("authorization", &format!("Basic {basic}")),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        "grant_type=client_credentials",
    )
    .await
}

async fn as_partner(app: &TestApp, bearer: &str) -> crate::support::TestResponse {
    app.send(
        Method::GET,
        "/api/v1/partner/me",
        &[("authorization", &format!("Bearer {bearer}"))],
        "",
    )
    .await
}

#[tokio::test]
async fn a_registered_partner_gets_a_short_token_carrying_its_purposes() {
    each_backend(|app| async move {
        let res = token(&app, LABO_ID, LABO_SECRET).await;
        assert_eq!(res.status, 200, "{}", res.text());
        let t = res.json();
        assert_eq!(t["token_type"], "Bearer");
        assert!(t["expires_in"].as_i64().unwrap() <= 300);
        let access = t["access_token"].as_str().unwrap().to_string();
        let header = jsonwebtoken::decode_header(&access).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
        let me = as_partner(&app, &access).await;
        assert_eq!(me.status, 200, "{}", me.text());
        let purposes = me.json()["purposes"].clone();
        // The register names labo-mobilite for these two purposes.
        assert_eq!(
            purposes,
            serde_json::json!(["aide-decision-publique", "etude-mobilite"])
        );

        // Expired five minutes later.
        app.clock.advance(301);
        as_partner(&app, &access)
            .await
            .assert_error(401, "invalid_token");
    })
    .await;
}

#[tokio::test]
async fn bad_credentials_and_grants_are_refused() {
    each_backend(|app| async move {
        token(&app, LABO_ID, "wrong")
            .await
            .assert_error(401, "invalid_client");
        token(&app, "nobody", LABO_SECRET)
            .await
            .assert_error(401, "invalid_client");
        app.send(
            Method::POST,
            "/oauth/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            "grant_type=client_credentials",
        )
        .await
        .assert_error(401, "invalid_client");
        let basic = STANDARD.encode(format!("{LABO_ID}:{LABO_SECRET}"));
        app.send(
            Method::POST,
            "/oauth/token",
            &[("authorization", &format!("Basic {basic}"))],
            "grant_type=password",
        )
        .await
        .assert_error(400, "unsupported_grant_type");
        app.get("/api/v1/partner/me")
            .await
            .assert_error(401, "unauthenticated");
    })
    .await;
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    each_backend(|app| async move {
        let good = token(&app, LABO_ID, LABO_SECRET).await.json()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        // Used once first, so this process has it among its verified tokens:
        // none of the variants below may ride on that.
        assert_eq!(as_partner(&app, &good).await.status, 200);
        let parts: Vec<&str> = good.split('.').collect();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();

        // Tampered payload (another partner id), original signature.
        let mut forged = claims.clone();
        forged["sub"] = "renov-energie".into();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(forged.to_string()),
            parts[2]
        );
        as_partner(&app, &tampered)
            .await
            .assert_error(401, "invalid_token");

        // alg: none.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        as_partner(&app, &none)
            .await
            .assert_error(401, "invalid_token");

        // Signed by coffre's own key but for another audience.
        let keys = app.keys.current();
        let mut other_aud = claims.clone();
        other_aud["aud"] = "someone-else".into();
        let t = coffre::crypto::jws::sign(&keys, &other_aud).unwrap();
        as_partner(&app, &t)
            .await
            .assert_error(401, "invalid_token");

        // A well-formed token signed by another key.
        let stranger = coffre::crypto::KeySet::generate_in_memory().unwrap();
        let t = coffre::crypto::jws::sign(&stranger, &claims).unwrap();
        as_partner(&app, &t)
            .await
            .assert_error(401, "invalid_token");

        // A token that claims a longer life than coffre ever issues.
        let mut long = claims.clone();
        long["exp"] = (claims["iat"].as_i64().unwrap() + 86_400).into();
        let t = coffre::crypto::jws::sign(&keys, &long).unwrap();
        as_partner(&app, &t)
            .await
            .assert_error(401, "invalid_token");

        // The genuine one still works, until it expires (remembered as
        // verified or not).
        assert_eq!(as_partner(&app, &good).await.status, 200);
        app.clock.advance(3600);
        as_partner(&app, &good)
            .await
            .assert_error(401, "invalid_token");
    })
    .await;
}

async fn bearer(app: &TestApp, id: &str, secret: &str) -> String {
    app.partner_token(id, secret).await
}

async fn get_as(app: &TestApp, bearer: &str, path: &str) -> crate::support::TestResponse {
    app.send(
        Method::GET,
        path,
        &[("authorization", &format!("Bearer {bearer}"))],
        "",
    )
    .await
}

#[tokio::test]
async fn partners_read_only_with_consent_or_legal_basis_for_their_purposes() {
    each_backend(|app| async move {
        let labo = bearer(&app, LABO_ID, LABO_SECRET).await;
        let renov = bearer(&app, "demo-renov-energie", "demo-secret-renov-energie-not-for-production").await;

        // The mobility study rests on consent: only Awa gave it (Jean-Pierre withdrew).
        let list = get_as(&app, &labo, "/api/v1/partner/residents?purpose=etude-mobilite").await;
        assert_eq!(list.status, 200, "{}", list.text());
        let who = list.json()["residents"].as_array().unwrap().clone();
        assert_eq!(who.len(), 1);
        let awa_for_labo = who[0].as_str().unwrap().to_string();
        assert!(!awa_for_labo.contains("0b9a3c1e"), "an internal id leaked");

        let read = get_as(&app, &labo, &format!("/api/v1/partner/residents/{awa_for_labo}/data/housing?purpose=etude-mobilite")).await;
        assert_eq!(read.status, 200, "{}", read.text());
        assert_eq!(read.json()["fields"]["tenure"], "social_tenant");
        assert!(read.header("x-audit-entry").is_some());
        get_as(&app, &labo, &format!("/api/v1/partner/residents/{awa_for_labo}/data/health?purpose=etude-mobilite"))
            .await
            .assert_error(403, "category_outside_purpose");
        get_as(&app, &labo, &format!("/api/v1/partner/residents/{awa_for_labo}/data/housing?purpose=renovation-energetique"))
            .await
            .assert_error(403, "not_a_recipient");
        get_as(&app, &labo, "/api/v1/partner/residents?purpose=aide-decision-publique")
            .await
            .assert_error(403, "extracts_only");
        get_as(&app, &labo, "/api/v1/partner/residents?purpose=sante-territoriale")
            .await
            .assert_error(403, "not_a_recipient");
        get_as(&app, &labo, "/api/v1/partner/residents/not-a-pseudonym/data/housing?purpose=etude-mobilite")
            .await
            .assert_error(422, "unknown_pseudonym");

        // A public-task purpose: every active resident, under other pseudonyms.
        let list = get_as(&app, &renov, "/api/v1/partner/residents?purpose=renovation-energetique").await.json();
        let renov_ids: Vec<String> = list["residents"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        assert_eq!(renov_ids.len(), 3);
        assert!(!renov_ids.contains(&awa_for_labo), "two partners share a pseudonym");
        // A pseudonym is only valid for the partner it was made for.
        get_as(&app, &renov, &format!("/api/v1/partner/residents/{awa_for_labo}/data/housing?purpose=renovation-energetique"))
            .await
            .assert_error(422, "unknown_pseudonym");
        let read = get_as(&app, &renov, &format!("/api/v1/partner/residents/{}/data/housing?purpose=renovation-energetique", renov_ids[0])).await;
        assert_eq!(read.status, 200, "{}", read.text());

        // Awa withdraws: the laboratory is refused at once, and the refusal is recorded.
        let s = app.login(crate::vault::AWA).await;
        let mine = app.as_user(&s, Method::GET, "/api/v1/me/consents", None).await.json();
        let id = mine["consents"].as_array().unwrap().iter().find(|c| c["purpose"] == "etude-mobilite").unwrap()["id"].as_str().unwrap().to_string();
        app.as_user(&s, Method::POST, &format!("/api/v1/me/consents/{id}/withdraw"), None).await;
        get_as(&app, &labo, &format!("/api/v1/partner/residents/{awa_for_labo}/data/housing?purpose=etude-mobilite"))
            .await
            .assert_error(403, "no_valid_consent");
        app.clock.advance(1);
        let accesses = app.as_user(&s, Method::GET, "/api/v1/me/accesses", None).await.json();
        let partner_reads: Vec<&serde_json::Value> = accesses["accesses"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["actor_role"] == "partner")
            .collect();
        assert!(partner_reads.iter().any(|a| a["decision"] == "deny" && a["reason"] == "no_valid_consent"));
        assert!(partner_reads.iter().any(|a| a["decision"] == "allow" && a["reason"] == "consent" && a["actor_id"] == "labo-mobilite"));
    })
    .await;
}

/// A partner's own Ed25519 key, as it would hold it: the signing half, and
/// the public JWK it registers with coffre.
struct PartnerKey {
    encoding: jsonwebtoken::EncodingKey,
    jwk: serde_json::Value,
}

fn partner_key(kid: &str) -> PartnerKey {
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    PartnerKey {
        encoding: jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}),
    }
}

fn assertion(key: &PartnerKey, kid: &str, claims: serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
}

async fn token_with_assertion(app: &TestApp, assertion: &str) -> crate::support::TestResponse {
    app.send(
        Method::POST,
        "/oauth/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        format!(
            "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}"
        ),
    )
    .await
}

#[tokio::test]
async fn private_key_jwt_authenticates_a_partner_once_per_assertion() {
    crate::support::each_backend_with(false, |app| async move {
        let key = partner_key("k1");
        let jwks = serde_json::json!({"keys": [key.jwk]}).to_string();
        app.store
            .insert_partner(
                &coffre::storage::PartnerRow {
                    id: crate::support::pid("labo-mobilite"),
                    name: "Labo".into(),
                    client_id: "labo-mobilite-1234".into(),
                    client_secret_hash: "!".into(),
                    age_recipient: None,
                    active: true,
                    client_jwks: Some(jwks),
                },
                app.clock.now(),
            )
            .await
            .unwrap();
        let now = app.clock.now();
        let aud = format!("{}/oauth/token", app.state.config.public_url.as_str().trim_end_matches('/'));
        let claims = |jti: &str| {
            serde_json::json!({"iss": "labo-mobilite-1234", "sub": "labo-mobilite-1234", "aud": aud, "iat": now, "exp": now + 120, "jti": jti})
        };

        let good = assertion(&key, "k1", claims("a-1"));
        let res = token_with_assertion(&app, &good).await;
        assert_eq!(res.status, 200, "{}", res.text());
        let bearer = res.json()["access_token"].as_str().unwrap().to_string();
        assert_eq!(as_partner(&app, &bearer).await.json()["id"], "labo-mobilite");

        // The same assertion again: a replay.
        token_with_assertion(&app, &good).await.assert_error(401, "invalid_client");

        // Another audience, expired, too long-lived, another key, unknown kid.
        let mut wrong_aud = claims("a-2");
        wrong_aud["aud"] = "https://elsewhere.example/oauth/token".into();
        let mut expired = claims("a-3");
        expired["exp"] = (now - 3600).into();
        expired["iat"] = (now - 3700).into();
        let mut long = claims("a-4");
        long["exp"] = (now + 86_400).into();
        let mut other_sub = claims("a-5");
        other_sub["sub"] = "demo-renov-energie".into();
        let stranger = partner_key("k1");
        for (why, jwt) in [
            ("audience", assertion(&key, "k1", wrong_aud)),
            ("expired", assertion(&key, "k1", expired)),
            ("lifetime", assertion(&key, "k1", long)),
            ("sub", assertion(&key, "k1", other_sub)),
            ("another key", assertion(&stranger, "k1", claims("a-6"))),
            ("unknown kid", assertion(&key, "k9", claims("a-7"))),
            ("alg none", {
                let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
                format!("{}.{}.", b64(serde_json::json!({"alg": "none", "kid": "k1"})), b64(claims("a-8")))
            }),
        ] {
            let res = token_with_assertion(&app, &jwt).await;
            assert_eq!((res.status.as_u16(), res.json()["error"]["code"].clone()), (401, "invalid_client".into()), "{why}");
        }
        // A partner registered with keys has no secret that works.
        let basic = STANDARD.encode("labo-mobilite-1234:!");
        app.send(
            Method::POST,
            "/oauth/token",
            &[("authorization", &format!("Basic {basic}")), ("content-type", "application/x-www-form-urlencoded")],
            "grant_type=client_credentials",
        )
        .await
        .assert_error(401, "invalid_client");
    })
    .await;
}

/// A partner deactivated after its token was issued is refused at once, by
/// the read that checks it in the same query as the record as by every
/// other partner route; nothing is disclosed or decided for it, and it gets
/// no new token until it is reactivated.
#[tokio::test]
async fn a_partner_deactivated_after_its_token_was_issued_is_refused_at_once() {
    each_backend(|app| async move {
        let renov = bearer(
            &app,
            "demo-renov-energie",
            "demo-secret-renov-energie-not-for-production",
        )
        .await;
        let list = get_as(
            &app,
            &renov,
            "/api/v1/partner/residents?purpose=renovation-energetique",
        )
        .await;
        assert_eq!(list.status, 200, "{}", list.text());
        let someone = list.json()["residents"][0].as_str().unwrap().to_string();
        let read_path = format!(
            "/api/v1/partner/residents/{someone}/data/housing?purpose=renovation-energetique"
        );
        assert_eq!(get_as(&app, &renov, &read_path).await.status, 200);
        // Allowed, but the resident has no record in this category: the
        // allow is recorded, then 404.
        let size = app.state.audit.size().await.unwrap();
        get_as(
            &app,
            &renov,
            &format!(
                "/api/v1/partner/residents/{someone}/data/energy?purpose=renovation-energetique"
            ),
        )
        .await
        .assert_error(404, "not_found");
        let entries = app.store.audit_entries(size, size + 1).await.unwrap();
        let entry = coffre::audit::AuditEntry::decode(&entries[0].1).unwrap();
        assert_eq!(
            (
                entry.action.as_str(),
                entry.decision,
                entry.category.as_deref()
            ),
            ("data.read", coffre::audit::Decision::Allow, Some("energy"))
        );

        // What `coffre partner deactivate` does, from another process.
        assert!(
            app.store
                .set_partner_active(&crate::support::pid("renov-energie"), false)
                .await
                .unwrap()
        );
        assert!(
            !app.store
                .set_partner_active(&crate::support::pid("no-such-partner"), false)
                .await
                .unwrap()
        );

        let size = app.state.audit.size().await.unwrap();
        for path in [
            read_path.as_str(),
            // Refused as inactive before being told the purpose is missing.
            read_path.split('?').next().unwrap(),
            "/api/v1/partner/residents/not-a-pseudonym/data/housing?purpose=renovation-energetique",
            "/api/v1/partner/residents?purpose=renovation-energetique",
            "/api/v1/partner/me",
        ] {
            get_as(&app, &renov, path)
                .await
                .assert_error(401, "invalid_token");
        }
        assert_eq!(
            app.state.audit.size().await.unwrap(),
            size,
            "nothing decided for it"
        );
    })
    .await;
}

/// A pseudonym the path cannot hold (parsed once at the edge) stands for
/// nobody, as an unknown one: the same answer, with or without a purpose,
/// and for a deactivated partner the same refusal.
#[tokio::test]
async fn a_malformed_pseudonym_is_answered_as_an_unknown_one() {
    each_backend(|app| async move {
        let labo = bearer(&app, LABO_ID, LABO_SECRET).await;
        for query in ["?purpose=etude-mobilite", ""] {
            let path = |p: &str| format!("/api/v1/partner/residents/{p}/data/housing{query}");
            let known = get_as(&app, &labo, &path("not-a-pseudonym")).await;
            assert!(known.status.is_client_error(), "{}", known.status);
            for bad in ["bad%20id", "%C3%A9t%C3%A9", "a%2Fb"] {
                let got = get_as(&app, &labo, &path(bad)).await;
                assert_eq!(
                    (got.status, got.json()["error"]["code"].clone()),
                    (known.status, known.json()["error"]["code"].clone()),
                    "{bad} {query}"
                );
            }
        }
    })
    .await;
}
