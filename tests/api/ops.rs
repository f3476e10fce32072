//! Liveness, readiness, the OpenAPI document, security headers and the error
//! model of every kind of bad request.

use axum::http::Method;

use crate::support::each_backend;

#[tokio::test]
async fn health_and_readiness() {
    each_backend(|app| async move {
        let res = app.get("/healthz").await;
        assert_eq!(res.status, 200);
        assert_eq!(res.json()["status"], "ok");
        let res = app.get("/readyz").await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.json()["database"], app.backend);
    })
    .await;
}

#[tokio::test]
async fn readiness_fails_with_reason_when_database_is_gone() {
    each_backend(|app| async move {
        app.store.close().await;
        app.get("/readyz")
            .await
            .assert_error(503, "database_unavailable");
        // Liveness is about the process only.
        assert_eq!(app.get("/healthz").await.status, 200);
    })
    .await;
}

#[tokio::test]
async fn openapi_document_lists_the_routes() {
    each_backend(|app| async move {
        let res = app.get("/api/openapi.json").await;
        assert_eq!(res.status, 200);
        let doc = res.json();
        if let Ok(p) = std::env::var("DUMP_OPENAPI") {
            std::fs::write(p, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        }
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
        for path in [
            "/healthz",
            "/readyz",
            "/api/v1/me",
            "/auth/logout",
            "/dev/personas",
            "/dev/login",
        ] {
            assert!(
                doc["paths"].get(path).is_some(),
                "{path} missing from OpenAPI"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn security_headers_on_every_response() {
    each_backend(|app| async move {
        for path in ["/healthz", "/api/v1/does-not-exist", "/"] {
            let res = app.get(path).await;
            let csp = res.header("content-security-policy").unwrap();
            assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
            assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
            assert_eq!(res.header("referrer-policy"), Some("no-referrer"));
            assert!(res.header("x-request-id").is_some());
            // http:// public URL: no HSTS.
            assert!(res.header("strict-transport-security").is_none());
        }
    })
    .await;
}

#[tokio::test]
async fn request_id_is_propagated() {
    each_backend(|app| async move {
        // coffre's own id is the request's (the one the audit log records);
        // the client's comes back beside it, for correlation.
        let res = app
            .send(Method::GET, "/healthz", &[("x-request-id", "abc-123")], "")
            .await;
        let own = res.header("x-request-id").unwrap();
        assert!(uuid::Uuid::parse_str(own).is_ok(), "{own}");
        assert_eq!(res.header("x-client-request-id"), Some("abc-123"));
        // Free text is not echoed.
        let res = app
            .send(
                Method::GET,
                "/healthz",
                &[("x-request-id", "Awa Diallo")],
                "",
            )
            .await;
        assert!(res.header("x-client-request-id").is_none());
    })
    .await;
}

#[tokio::test]
async fn every_api_error_is_json_with_a_stable_code() {
    each_backend(|app| async move {
        app.get("/api/v1/unknown")
            .await
            .assert_error(404, "not_found");
        app.get("/nowhere").await.assert_error(404, "not_found");
        let res = app.send(Method::DELETE, "/healthz", &[], "").await;
        res.assert_error(405, "method_not_allowed");
        assert!(res.header("allow").is_some());
        app.send(Method::PUT, "/api/v1/me", &[], "")
            .await
            .assert_error(405, "method_not_allowed");
        // Huge body, announced or streamed.
        let huge = vec![b'a'; 2 * 1024 * 1024];
        app.send(
            Method::POST,
            "/auth/logout",
            &[("content-type", "application/json")],
            huge.clone(),
        )
        .await
        .assert_error(413, "payload_too_large");
        let len = huge.len().to_string();
        app.send(
            Method::POST,
            "/api/v1/anything",
            &[("content-length", &len)],
            huge,
        )
        .await
        .assert_error(413, "payload_too_large");
        app.get("/api/v1/me")
            .await
            .assert_error(401, "unauthenticated");
    })
    .await;
}

#[tokio::test]
async fn hsts_when_the_public_url_is_https() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let mut config = coffre::Config::for_tests(&url, &dir.path().join("keys")).unwrap();
    config.public_url = url::Url::parse("https://coffre.example.org/").unwrap();
    let store = coffre::storage::open(&config.database_url).await.unwrap();
    let state = coffre::AppState::new(
        config,
        store,
        coffre::Clock::fixed(crate::support::T0),
        false,
        Err("no keys".into()),
    )
    .await
    .unwrap();
    let app = coffre::app(state);
    let res = tower::ServiceExt::oneshot(
        app,
        axum::http::Request::get("/healthz")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    let hsts = res
        .headers()
        .get("strict-transport-security")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(hsts.contains("max-age="));
}

#[tokio::test]
async fn the_session_cookie_is_host_prefixed_and_secure_under_https() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let mut config = coffre::Config::for_tests(&url, &dir.path().join("keys")).unwrap();
    config.public_url = url::Url::parse("https://coffre.example.org/").unwrap();
    let store = coffre::storage::open(&config.database_url).await.unwrap();
    let keys = std::sync::Arc::new(coffre::crypto::LiveKeys::in_memory(
        coffre::crypto::KeySet::generate_in_memory().unwrap(),
    ));
    let state = coffre::AppState::new(
        config,
        store,
        coffre::Clock::fixed(crate::support::T0),
        true,
        Ok(keys),
    )
    .await
    .unwrap();
    state
        .vault()
        .unwrap()
        .register_kek_versions(crate::support::T0)
        .await
        .unwrap();
    coffre::demo::seed_if_empty(&state).await.unwrap();
    let app = coffre::app(state);
    let res = tower::ServiceExt::oneshot(
        app.clone(),
        axum::http::Request::post("/dev/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(axum::body::Body::from(
                "persona=0b9a3c1e-5d6f-4a7b-8c9d-000000000001",
            ))
            .unwrap(),
    )
    .await
    .unwrap();
    let cookie = res
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.starts_with("__Host-coffre_session=")
            && cookie.contains("; Secure")
            && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(!cookie.contains("Domain"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    let me = tower::ServiceExt::oneshot(
        app,
        axum::http::Request::get("/api/v1/me")
            .header("cookie", pair)
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(me.status(), 200);
}
