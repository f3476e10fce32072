//! The demo login, sessions shared through the database, and CSRF.

use axum::http::Method;

use crate::support::{each_backend, each_backend_with};

const AWA: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000001";
const DPO: &str = "a1d00000-0000-4000-8000-000000000004";

#[tokio::test]
async fn personas_list_every_kind_of_user() {
    each_backend(|app| async move {
        let res = app.get("/dev/personas").await;
        assert_eq!(res.status, 200);
        let list = res.json();
        let roles: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["role"].as_str().unwrap())
            .collect();
        for role in ["resident", "aidant", "dpo", "auditor", "partner"] {
            assert!(roles.contains(&role), "no {role} persona");
        }
        let partner = list
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["role"] == "partner")
            .unwrap();
        assert!(partner["client_id"].is_string() && partner["client_secret"].is_string());
    })
    .await;
}

#[tokio::test]
async fn demo_login_gives_a_session_with_csrf_token() {
    each_backend(|app| async move {
        let s = app.login(AWA).await;
        let me = app.as_user(&s, Method::GET, "/api/v1/me", None).await;
        assert_eq!(me.json()["id"], AWA);
        assert_eq!(me.json()["role"], "resident");
        let dpo = app.login(DPO).await;
        let me = app
            .as_user(&dpo, Method::GET, "/api/v1/me", None)
            .await
            .json();
        assert_eq!(me["role"], "dpo");
        assert!(me["display_name"].as_str().unwrap().contains("Claire"));
    })
    .await;
}

#[tokio::test]
async fn unknown_persona_is_refused_and_changes_nothing() {
    each_backend(|app| async move {
        let res = app
            .send(
                Method::POST,
                "/dev/login",
                &[("content-type", "application/x-www-form-urlencoded")],
                "persona=nobody",
            )
            .await;
        res.assert_error(422, "unknown_persona");
        assert!(res.header("set-cookie").is_none());
    })
    .await;
}

#[tokio::test]
async fn logout_needs_the_csrf_token_then_ends_the_session() {
    each_backend(|app| async move {
        let s = app.login(AWA).await;
        app.send(Method::POST, "/auth/logout", &[("cookie", &s.cookie)], "")
            .await
            .assert_error(403, "csrf_token_invalid");
        let res = app.as_user(&s, Method::POST, "/auth/logout", None).await;
        assert_eq!(res.status, 303);
        app.send(Method::GET, "/api/v1/me", &[("cookie", &s.cookie)], "")
            .await
            .assert_error(401, "unauthenticated");
    })
    .await;
}

#[tokio::test]
async fn sessions_expire_with_the_clock() {
    each_backend(|app| async move {
        let s = app.login(AWA).await;
        app.clock.advance(8 * 3600 + 1);
        app.send(Method::GET, "/api/v1/me", &[("cookie", &s.cookie)], "")
            .await
            .assert_error(401, "unauthenticated");
    })
    .await;
}

#[tokio::test]
async fn sessions_end_after_thirty_idle_minutes_and_eight_busy_hours() {
    each_backend(|app| async move {
        let me = |s: &crate::support::Session| {
            let cookie = s.cookie.clone();
            let app = &app;
            async move {
                app.send(Method::GET, "/api/v1/me", &[("cookie", &cookie)], "")
                    .await
            }
        };
        // Idle: 30 minutes without a request ends it.
        let idle = app.login(AWA).await;
        app.clock.advance(29 * 60);
        assert_eq!(me(&idle).await.status, 200);
        app.clock.advance(29 * 60);
        assert_eq!(me(&idle).await.status, 200, "activity keeps it alive");
        app.clock.advance(30 * 60 + 1);
        me(&idle).await.assert_error(401, "unauthenticated");

        // Busy: a request every 20 minutes, still over after 8 hours.
        let busy = app.login(AWA).await;
        for _ in 0..(8 * 3) {
            assert_eq!(me(&busy).await.status, 200);
            app.clock.advance(20 * 60);
        }
        me(&busy).await.assert_error(401, "unauthenticated");
    })
    .await;
}

#[tokio::test]
async fn dev_login_does_not_exist_outside_demo_mode() {
    each_backend_with(false, |app| async move {
        app.get("/dev/personas")
            .await
            .assert_error(404, "not_found");
        let res = app
            .send(
                Method::POST,
                "/dev/login",
                &[("content-type", "application/x-www-form-urlencoded")],
                format!("persona={AWA}"),
            )
            .await;
        res.assert_error(404, "not_found");
        let doc = app.get("/api/openapi.json").await.json();
        assert!(doc["paths"].get("/dev/login").is_none());
    })
    .await;
}
