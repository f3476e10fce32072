//! Data sources (BRIEF C11): credentials and tokens kept apart from the
//! partners', and both ways a resident authorises a link source — a
//! pairing code read aloud, or an approval sent back to a registered
//! redirect URI — exchanged once for a handle unlinkable across sources.

use axum::http::Method;
use coffre::domain::Role;
use coffre::service::Caller;
use coffre::service::sources;

use crate::support::{TestApp, each_backend};

const AWA: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000001";
const LUCIE: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000003";

/// Credentials for a source of the register, as `coffre source add` makes
/// them.
async fn register(app: &TestApp, id: &str) -> sources::SourceCredentials {
    let operator = Caller::new("cli", Role::Admin, None);
    sources::register_client(&app.state, &operator, id, "Test", app.clock.now())
        .await
        .unwrap()
        .value
}

/// A source's access token, from the same token endpoint as partners'.
async fn token(app: &TestApp, c: &sources::SourceCredentials) -> String {
    app.partner_token(&c.client_id, &c.client_secret).await
}

/// Credentials and a token.
async fn source_token(app: &TestApp, id: &str) -> String {
    let c = register(app, id).await;
    token(app, &c).await
}

async fn as_source(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: serde_json::Value,
) -> crate::support::TestResponse {
    app.send(
        method,
        path,
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn a_pairing_code_read_aloud_links_the_resident_once() {
    each_backend(|app| async move {
        let token = source_token(&app, "energie-locale").await;
        let awa = app.login(AWA).await;
        let mine = app
            .as_user(&awa, Method::GET, "/api/v1/me/sources", None)
            .await;
        assert_eq!(mine.status, 200, "{}", mine.text());
        let links: Vec<_> = mine
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["link"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert!(
            links.contains(&("energie-locale".into(), "not_linked".into())),
            "{links:?}"
        );
        assert!(
            links.contains(&("regie-eau".into(), "public_task".into())),
            "{links:?}"
        );

        let started = app
            .as_user(
                &awa,
                Method::POST,
                "/api/v1/me/sources/energie-locale/links",
                None,
            )
            .await;
        assert_eq!(started.status, 201, "{}", started.text());
        assert!(started.header("x-audit-entry").is_some());
        let code = started.json()["pairing_code"].as_str().unwrap().to_string();
        assert_eq!(code.len(), 9, "{code}");
        // Typed back by hand: lower case, no dash.
        let typed = code.replace('-', "").to_lowercase();
        let got = as_source(
            &app,
            &token,
            Method::POST,
            "/api/v1/source/links",
            serde_json::json!({"code": typed}),
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.text());
        let handle = got.json()["handle"].as_str().unwrap().to_string();
        assert_eq!(handle.len(), 64);
        assert!(!handle.contains(AWA));
        let entry = app.last_entry().await;
        assert_eq!(
            (entry.action.as_str(), entry.actor_role.as_str()),
            ("source.link.exchange", "source")
        );
        assert_eq!(entry.resident_id.as_deref(), Some(AWA));
        // Used once: a second exchange is refused, and logged.
        as_source(
            &app,
            &token,
            Method::POST,
            "/api/v1/source/links",
            serde_json::json!({"code": code}),
        )
        .await
        .assert_error(422, "invalid_grant");
        assert_eq!(
            app.last_entry().await.decision,
            coffre::audit::Decision::Deny
        );
        let mine = app
            .as_user(&awa, Method::GET, "/api/v1/me/sources", None)
            .await;
        let energie = mine
            .json()
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "energie-locale")
            .unwrap()
            .clone();
        assert_eq!(energie["link"], "linked", "{energie}");

        // A second code gives the same handle; revocation ends the link.
        let again = app
            .as_user(
                &awa,
                Method::POST,
                "/api/v1/me/sources/energie-locale/links",
                None,
            )
            .await;
        let code = again.json()["pairing_code"].as_str().unwrap().to_string();
        let got = as_source(
            &app,
            &token,
            Method::POST,
            "/api/v1/source/links",
            serde_json::json!({"code": code}),
        )
        .await;
        assert_eq!(got.json()["handle"], handle.as_str());
        let revoked = app
            .as_user(
                &awa,
                Method::DELETE,
                "/api/v1/me/sources/energie-locale/links",
                None,
            )
            .await;
        assert_eq!(revoked.status, 204, "{}", revoked.text());
        app.as_user(
            &awa,
            Method::DELETE,
            "/api/v1/me/sources/energie-locale/links",
            None,
        )
        .await
        .assert_error(409, "no_link");
    })
    .await;
}

#[tokio::test]
async fn codes_expire_belong_to_one_source_and_pivot_sources_do_not_link() {
    each_backend(|app| async move {
        let energie = register(&app, "energie-locale").await;
        let water = source_token(&app, "regie-eau").await;
        let awa = app.login(AWA).await;
        app.as_user(
            &awa,
            Method::POST,
            "/api/v1/me/sources/regie-eau/links",
            None,
        )
        .await
        .assert_error(422, "source_not_linkable");
        app.as_user(&awa, Method::POST, "/api/v1/me/sources/nope/links", None)
            .await
            .assert_error(404, "not_found");
        let code = |res: crate::support::TestResponse| {
            res.json()["pairing_code"].as_str().unwrap().to_string()
        };
        let first = code(
            app.as_user(
                &awa,
                Method::POST,
                "/api/v1/me/sources/energie-locale/links",
                None,
            )
            .await,
        );
        // The water utility matches by pivot and links no one.
        as_source(
            &app,
            &water,
            Method::POST,
            "/api/v1/source/links",
            serde_json::json!({"code": first}),
        )
        .await
        .assert_error(422, "source_not_linkable");
        // 15 minutes later the code is gone (and the 5-minute token too).
        app.clock.advance(15 * 60);
        let fresh = token(&app, &energie).await;
        as_source(
            &app,
            &fresh,
            Method::POST,
            "/api/v1/source/links",
            serde_json::json!({"code": first}),
        )
        .await
        .assert_error(422, "invalid_grant");
        // Garbage and over-long codes are the same refusal.
        for bad in ["", "x", &"A".repeat(500)] {
            as_source(
                &app,
                &fresh,
                Method::POST,
                "/api/v1/source/links",
                serde_json::json!({"code": bad}),
            )
            .await
            .assert_error(422, "invalid_grant");
        }
        // Another resident's code links that resident, not Awa.
        let lucie = app.login(LUCIE).await;
        let hers = code(
            app.as_user(
                &lucie,
                Method::POST,
                "/api/v1/me/sources/energie-locale/links",
                None,
            )
            .await,
        );
        let got = as_source(
            &app,
            &fresh,
            Method::POST,
            "/api/v1/source/links",
            serde_json::json!({"code": hers}),
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(app.last_entry().await.resident_id.as_deref(), Some(LUCIE));
        let awa_sources = app
            .as_user(&awa, Method::GET, "/api/v1/me/sources", None)
            .await;
        let e = awa_sources
            .json()
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "energie-locale")
            .unwrap()
            .clone();
        assert_eq!(e["link"], "not_linked", "{e}");
    })
    .await;
}

#[tokio::test]
async fn a_partner_token_never_reaches_a_source_route_nor_a_source_token_a_partner_route() {
    each_backend(|app| async move {
        let source = source_token(&app, "energie-locale").await;
        as_source(
            &app,
            &source,
            Method::GET,
            "/api/v1/partner/me",
            serde_json::json!({}),
        )
        .await
        .assert_error(401, "invalid_token");
        let partner = app
            .partner_token(
                "demo-renov-energie",
                "demo-secret-renov-energie-not-for-production",
            )
            .await;
        as_source(
            &app,
            &partner,
            Method::POST,
            "/api/v1/source/links",
            serde_json::json!({"code": "ACDE-FGHJ"}),
        )
        .await
        .assert_error(401, "invalid_token");
        // A deactivated source's unexpired token is refused at once.
        let operator = Caller::new("cli", Role::Admin, None);
        sources::set_client_active(
            &app.state,
            &operator,
            "energie-locale",
            false,
            app.clock.now(),
        )
        .await
        .unwrap();
        as_source(
            &app,
            &source,
            Method::POST,
            "/api/v1/source/links",
            serde_json::json!({"code": "ACDE-FGHJ"}),
        )
        .await
        .assert_error(401, "invalid_token");
        // A source not in the register gets no credentials.
        let err = sources::register_client(&app.state, &operator, "ghost", "G", app.clock.now())
            .await
            .unwrap_err();
        assert_eq!(err.code_and_status().0, "unknown_source");
    })
    .await;
}

async fn post_form(
    app: &TestApp,
    s: &crate::support::Session,
    path: &str,
    form: &[(&str, &str)],
) -> crate::support::TestResponse {
    let body = {
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        body.append_pair("csrf_token", &s.csrf);
        for (k, v) in form {
            body.append_pair(k, v);
        }
        body.finish()
    };
    app.send(
        Method::POST,
        path,
        &[
            ("cookie", s.cookie.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        body,
    )
    .await
}

#[tokio::test]
async fn from_the_source_site_the_resident_approves_and_is_sent_back_with_a_code() {
    each_backend(|app| async move {
        let energie = register(&app, "energie-locale").await;
        let awa = app.login(AWA).await;
        let back = "https://energie-locale.example/coffre/retour";
        let page = app
            .as_user(
                &awa,
                Method::GET,
                &format!("/moi/sources/energie-locale/autoriser?state=xyz-1&redirect_uri={back}"),
                None,
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.text());
        assert!(page.text().contains("Énergie Locale") && page.text().contains("J'autorise"));
        // An unregistered redirect URI (here a look-alike) is an error page,
        // never a redirect — on the page and on its form alike.
        let evil = "https://energie-locale.example.evil.example/coffre/retour";
        let refused = app
            .as_user(
                &awa,
                Method::GET,
                &format!("/moi/sources/energie-locale/autoriser?state=xyz-1&redirect_uri={evil}"),
                None,
            )
            .await;
        assert_eq!(refused.status, 422, "{}", refused.text());
        assert!(refused.header("location").is_none());
        let refused = post_form(
            &app,
            &awa,
            "/moi/sources/energie-locale/autoriser",
            &[("redirect_uri", evil), ("state", "xyz-1")],
        )
        .await;
        assert_eq!(refused.status, 422, "{}", refused.text());
        assert!(refused.header("location").is_none());
        // Without the session's CSRF token nothing happens.
        let forged = app
            .send(
                Method::POST,
                "/moi/sources/energie-locale/autoriser",
                &[
                    ("cookie", awa.cookie.as_str()),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                format!("redirect_uri={back}&state=xyz-1"),
            )
            .await;
        assert_eq!(forged.status, 403, "{}", forged.text());

        let approved = post_form(
            &app,
            &awa,
            "/moi/sources/energie-locale/autoriser",
            &[("redirect_uri", back), ("state", "xyz-1")],
        )
        .await;
        // A page with a link back (the CSP's form-action forbids a form's
        // answer from redirecting to another site), never a redirect.
        assert_eq!(approved.status, 200, "{}", approved.text());
        assert!(approved.header("location").is_none());
        let text = approved.text();
        let marker = "id=\"continue\" href=\"";
        let at = text.find(marker).unwrap() + marker.len();
        let location = text[at..].split('"').next().unwrap().replace("&amp;", "&");
        let (base, query) = location.split_once('?').unwrap();
        assert_eq!(base, back);
        let q: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
        assert_eq!(q["state"], "xyz-1");
        let fresh = token(&app, &energie).await;
        let got = as_source(
            &app,
            &fresh,
            Method::POST,
            "/api/v1/source/links",
            serde_json::json!({"code": q["code"]}),
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.text());
        as_source(
            &app,
            &fresh,
            Method::POST,
            "/api/v1/source/links",
            serde_json::json!({"code": q["code"]}),
        )
        .await
        .assert_error(422, "invalid_grant");
        let list = app.as_user(&awa, Method::GET, "/moi/sources", None).await;
        assert_eq!(list.status, 200);
        assert!(
            list.text().contains("Retirer l'autorisation"),
            "{}",
            list.text()
        );
        // Revoked from the page, with the box ticked.
        let done = post_form(
            &app,
            &awa,
            "/moi/sources/energie-locale/retrait",
            &[("confirm", "yes")],
        )
        .await;
        assert_eq!(done.status, 303, "{}", done.text());
        let mine = app
            .as_user(&awa, Method::GET, "/api/v1/me/sources", None)
            .await;
        let e = mine
            .json()
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "energie-locale")
            .unwrap()
            .clone();
        assert_eq!(e["link"], "revoked", "{e}");
    })
    .await;
}

/// Review finding: a code handed out before a revocation must not bring the
/// link back, and a resident can cancel a code they gave.
#[tokio::test]
async fn revoking_cancels_the_codes_still_waiting() {
    each_backend(|app| async move {
        let token = source_token(&app, "energie-locale").await;
        let awa = app.login(AWA).await;
        let new_code = || async {
            app.as_user(
                &awa,
                Method::POST,
                "/api/v1/me/sources/energie-locale/links",
                None,
            )
            .await
            .json()["pairing_code"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let exchange = |code: String| {
            as_source(
                &app,
                &token,
                Method::POST,
                "/api/v1/source/links",
                serde_json::json!({"code": code}),
            )
        };
        // Not linked yet: revoking cancels the code given at the counter.
        let given = new_code().await;
        let revoked = app
            .as_user(
                &awa,
                Method::DELETE,
                "/api/v1/me/sources/energie-locale/links",
                None,
            )
            .await;
        assert_eq!(revoked.status, 204, "{}", revoked.text());
        exchange(given).await.assert_error(422, "invalid_grant");
        // Linked, a second code handed out, then revoked: the second code
        // does not bring the link back.
        assert_eq!(exchange(new_code().await).await.status, 200);
        let second = new_code().await;
        let revoked = app
            .as_user(
                &awa,
                Method::DELETE,
                "/api/v1/me/sources/energie-locale/links",
                None,
            )
            .await;
        assert_eq!(revoked.status, 204, "{}", revoked.text());
        exchange(second).await.assert_error(422, "invalid_grant");
        let mine = app
            .as_user(&awa, Method::GET, "/api/v1/me/sources", None)
            .await;
        let e = mine
            .json()
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "energie-locale")
            .unwrap()
            .clone();
        assert_eq!(e["link"], "revoked", "{e}");
        // One waiting code at a time: a new one replaces the last.
        let first = new_code().await;
        let newer = new_code().await;
        exchange(first).await.assert_error(422, "invalid_grant");
        assert_eq!(exchange(newer).await.status, 200);
        // Nothing standing: a recorded refusal.
        app.as_user(
            &awa,
            Method::DELETE,
            "/api/v1/me/sources/energie-locale/links",
            None,
        )
        .await;
        app.as_user(
            &awa,
            Method::DELETE,
            "/api/v1/me/sources/energie-locale/links",
            None,
        )
        .await
        .assert_error(409, "no_link");
        assert_eq!(
            app.last_entry().await.decision,
            coffre::audit::Decision::Deny
        );
    })
    .await;
}

/// Review finding: guessing codes is rate-limited per token and address.
#[tokio::test]
async fn guessing_link_codes_is_rate_limited() {
    each_backend(|app| async move {
        let token = source_token(&app, "energie-locale").await;
        let mut statuses = vec![];
        for i in 0..14 {
            let res = as_source(
                &app,
                &token,
                Method::POST,
                "/api/v1/source/links",
                serde_json::json!({"code": format!("ACDE-FG{i:02}")}),
            )
            .await;
            statuses.push(res.status.as_u16());
        }
        assert!(statuses[..10].iter().all(|s| *s == 422), "{statuses:?}");
        assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    })
    .await;
}
