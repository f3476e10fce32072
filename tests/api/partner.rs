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

        // The genuine one still works.
        assert_eq!(as_partner(&app, &good).await.status, 200);
    })
    .await;
}
