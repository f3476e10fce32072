//! Races at every check-then-act (issue 19): N concurrent requests, through
//! the real router, on both backends; exactly one wins where one may, and
//! the stored state is the winner's. (The ε budget and the TOTP lockout are
//! in `trust.rs`; one live authorisation per démarche in `mandates.rs`.)

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use tower::ServiceExt;

use crate::support::{Session, TestApp, each_backend};

const LUCIE: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000003";
const DPO: &str = "a1d00000-0000-4000-8000-000000000004";
const N: usize = 12;

/// `N` copies of one request at once; their statuses.
async fn at_once(
    app: &TestApp,
    s: &Session,
    method: Method,
    path: &str,
    bodies: Vec<serde_json::Value>,
) -> Vec<(StatusCode, serde_json::Value)> {
    let calls = bodies.into_iter().map(|body| {
        let router = app.router.clone();
        let req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("cookie", &s.cookie)
            .header("x-csrf-token", &s.csrf)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        tokio::spawn(async move {
            let res = router.oneshot(req).await.unwrap();
            let status = res.status();
            let bytes = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            )
        })
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

fn winners(outcomes: &[(StatusCode, serde_json::Value)]) -> usize {
    outcomes.iter().filter(|(s, _)| s.is_success()).count()
}

fn assert_losers_say(outcomes: &[(StatusCode, serde_json::Value)], codes: &[&str]) {
    for (s, v) in outcomes.iter().filter(|(s, _)| !s.is_success()) {
        let code = v["error"]["code"].as_str().unwrap_or("");
        assert!(
            *s == StatusCode::CONFLICT && codes.contains(&code),
            "{s} {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consent_decisions_lose_none_and_double_none() {
    each_backend(|app| async move {
        let lucie = app.login(LUCIE).await;
        let give =
            serde_json::json!({"purpose": "inventaire-arbres-patrimoine", "decision": "given"});
        let outcomes = at_once(
            &app,
            &lucie,
            Method::POST,
            "/api/v1/me/consents",
            vec![give; N],
        )
        .await;
        // Giving again is a renewal, so more than one may win, each on the
        // state the previous one left; none is lost, none is doubled: as
        // many events as winners, and the compare-and-set counter agrees.
        let won = winners(&outcomes);
        assert!(won >= 1, "{outcomes:?}");
        assert_losers_say(&outcomes, &["concurrent_update"]);
        let c = app
            .store
            .find_consent(
                &crate::support::resident_id(LUCIE),
                &crate::support::purpose_id("inventaire-arbres-patrimoine"),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!((c.state.as_str(), c.seq), ("given", won as i64));
        let events = app.store.consent_events(&c.id).await.unwrap();
        assert_eq!(events.len(), won);
        // Each winner's receipt names its own event's audit entry.
        let mut indexes: Vec<i64> = events.iter().map(|e| e.audit_index).collect();
        indexes.sort();
        indexes.dedup();
        assert_eq!(indexes.len(), won);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_extract_decisions_apply_one() {
    each_backend(|app| async move {
        let token = app
            .partner_token(
                "demo-renov-energie",
                "demo-secret-renov-energie-not-for-production",
            )
            .await;
        let auth = format!("Bearer {token}");
        let res = app
            .send(
                Method::POST,
                "/api/v1/partner/extracts",
                &[
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                ],
                serde_json::json!({"purpose": "renovation-energetique", "kind": "records", "categories": ["housing"]})
                    .to_string(),
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.text());
        let id = res.json()["id"].as_str().unwrap().to_string();
        let dpo = app.login(DPO).await;
        let approve_path = format!("/api/v1/dpo/extracts/{id}/approve");
        let reject_path = format!("/api/v1/dpo/extracts/{id}/reject");
        // Half approve, half reject, all at once.
        let approve = at_once(
            &app,
            &dpo,
            Method::POST,
            &approve_path,
            vec![serde_json::json!({}); N / 2],
        );
        let reject = at_once(
            &app,
            &dpo,
            Method::POST,
            &reject_path,
            vec![serde_json::json!({"reason": "non"}); N / 2],
        );
        let (a, r) = tokio::join!(approve, reject);
        let all: Vec<_> = a.iter().chain(r.iter()).cloned().collect();
        assert_eq!(winners(&all), 1, "{all:?}");
        assert_losers_say(&all, &["invalid_transition"]);
        let row = app.store.find_extract(&crate::support::eid(&id)).await.unwrap().unwrap();
        let approved = winners(&a) == 1;
        if approved {
            assert_ne!(row.state.as_str(), "rejected");
        } else {
            assert_eq!(row.state.as_str(), "rejected");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rights_request_transitions_apply_one() {
    each_backend(|app| async move {
        let lucie = app.login(LUCIE).await;
        let res = app
            .as_user(
                &lucie,
                Method::POST,
                "/api/v1/me/requests",
                Some(serde_json::json!({"kind": "access"})),
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.text());
        let id = res.json()["id"].as_str().unwrap().to_string();
        let dpo = app.login(DPO).await;
        let extend_path = format!("/api/v1/dpo/requests/{id}/extend");
        let close_path = format!("/api/v1/dpo/requests/{id}/close");
        let extend = at_once(
            &app,
            &dpo,
            Method::POST,
            &extend_path,
            vec![serde_json::json!({"reason": "complexity"}); N / 2],
        );
        let close = at_once(
            &app,
            &dpo,
            Method::POST,
            &close_path,
            vec![serde_json::json!({"outcome": "granted"}); N / 2],
        );
        let (e, c) = tokio::join!(extend, close);
        // One close at most; one extension at most; never an extension
        // after the close.
        assert!(winners(&c) <= 1, "{c:?}");
        assert!(winners(&e) <= 1, "{e:?}");
        assert!(winners(&c) + winners(&e) >= 1);
        let all: Vec<_> = e.iter().chain(c.iter()).cloned().collect();
        assert_losers_say(
            &all,
            &[
                "invalid_transition",
                "concurrent_update",
                "extension_too_late",
                "already_extended",
            ],
        );
        let row = app
            .store
            .find_rights_request(&crate::support::rid(&id))
            .await
            .unwrap()
            .unwrap();
        let events = app
            .store
            .rights_request_events(&crate::support::rid(&id))
            .await
            .unwrap();
        let closes = events
            .iter()
            .filter(|e| {
                e.state.as_str() == "closed"
                    || e.state.as_str().starts_with("granted")
                    || e.state.as_str().starts_with("refused")
            })
            .count();
        assert!(closes <= 1, "{events:?}");
        if winners(&c) == 1 {
            assert_ne!(row.state.as_str(), "open", "{row:?}");
        }
    })
    .await;
}
