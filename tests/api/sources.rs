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

/// Credentials for a source of the register: the demo's published ones
/// (the demo registers both sources, as `coffre source add` would).
async fn register(_app: &TestApp, id: &str) -> sources::SourceCredentials {
    let s = coffre::demo::SOURCES.iter().find(|s| s.id == id).unwrap();
    sources::SourceCredentials {
        client_id: s.client_id.into(),
        client_secret: s.client_secret.into(),
    }
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
        let back = "https://energie-locale.example/coffre/retour";
        // Not logged in yet: the page asks for a login that comes back to
        // it, request included; a return path out of the resident's space
        // (another host, another space) is never followed.
        let approval =
            format!("/moi/sources/energie-locale/autoriser?state=xyz-1&redirect_uri={back}");
        let anonymous = app.send(Method::GET, &approval, &[], "").await;
        assert_eq!(anonymous.status, 401, "{}", anonymous.text());
        let page = anonymous.text();
        let marker = "name=\"next\" value=\"";
        let at = page.find(marker).expect("a return path in the login form") + marker.len();
        let next = page[at..at + page[at..].find('"').unwrap()].replace("&amp;", "&");
        for (sent, expected) in [
            (next.as_str(), None),
            ("//evil.example/moi", Some("/")),
            ("https://evil.example/moi", Some("/")),
            ("/moi/\\evil.example", Some("/")),
            ("/dpo", Some("/")),
        ] {
            let form = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("persona", AWA)
                .append_pair("next", sent)
                .finish();
            let res = app
                .send(
                    Method::POST,
                    "/dev/login",
                    &[("content-type", "application/x-www-form-urlencoded")],
                    form,
                )
                .await;
            assert_eq!(res.status, 303, "{}", res.text());
            let location = res.header("location").unwrap().to_string();
            match expected {
                Some(e) => assert_eq!(location, e, "{sent}"),
                None => {
                    // The same page, its request intact (the query's order
                    // may differ).
                    let (path, query) = location
                        .split_once("?")
                        .unwrap_or_else(|| panic!("{location} from {sent}"));
                    assert_eq!(path, "/moi/sources/energie-locale/autoriser");
                    let q: std::collections::HashMap<String, String> =
                        url::form_urlencoded::parse(query.as_bytes())
                            .into_owned()
                            .collect();
                    assert_eq!(
                        (q["state"].as_str(), q["redirect_uri"].as_str()),
                        ("xyz-1", back)
                    );
                }
            }
        }
        let awa = app.login(AWA).await;
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
        // The page names the account it would link (a browser logged in
        // to someone else's account shows it), and that read is recorded.
        assert!(
            page.text()
                .contains("Vous êtes connecté·e au coffre de <strong>Awa Diallo</strong>"),
            "{}",
            page.text()
        );
        let last = app.last_entry().await;
        assert_eq!(
            (last.action.as_str(), last.category.as_deref()),
            ("source.link.view", Some("identity"))
        );
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

pub(crate) async fn deposit_stream(
    app: &TestApp,
    token: &str,
    body: String,
) -> Vec<serde_json::Value> {
    let res = app
        .send(
            Method::POST,
            "/api/v1/source/deposits",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("content-type", "application/x-ndjson"),
            ],
            body,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("application/x-ndjson"));
    res.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Links Awa to the electricity supplier; returns (token, handle).
pub(crate) async fn linked_awa(app: &TestApp) -> (String, String) {
    let token = source_token(app, "energie-locale").await;
    let awa = app.login(AWA).await;
    let code = app
        .as_user(
            &awa,
            Method::POST,
            "/api/v1/me/sources/energie-locale/links",
            None,
        )
        .await
        .json()["pairing_code"]
        .as_str()
        .unwrap()
        .to_string();
    let got = as_source(
        app,
        &token,
        Method::POST,
        "/api/v1/source/links",
        serde_json::json!({"code": code}),
    )
    .await;
    (token, got.json()["handle"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn a_deposit_stream_answers_each_line_in_order_and_is_idempotent() {
    each_backend(|app| async move {
        let (token, handle) = linked_awa(&app).await;
        let at = app.clock.now() - 3600;
        let good = serde_json::json!({"id": "m-1", "handle": handle, "category": "energy", "fields": {"annual_kwh": 4200}, "observed_at": at});
        let lines = [
            good.to_string(),
            "{not json".to_string(),
            serde_json::json!({"id": "m-2", "handle": handle, "category": "income", "fields": {"x": 1}, "observed_at": at}).to_string(),
            serde_json::json!({"id": "m-3", "handle": "0000", "category": "energy", "fields": {"annual_kwh": 1}, "observed_at": at}).to_string(),
            serde_json::json!({"id": "m-4", "handle": handle, "category": "energy", "fields": {"nope": 1}, "observed_at": at}).to_string(),
            serde_json::json!({"id": "m-5", "handle": handle, "category": "energy", "fields": {"annual_kwh": -3}, "observed_at": at}).to_string(),
            String::new(),
            format!("{{\"id\": \"m-6\", \"pad\": \"{}\"}}", "x".repeat(70_000)),
        ];
        let answers = deposit_stream(&app, &token, lines.join("\n")).await;
        let got: Vec<(u64, &str, Option<&str>)> = answers[..answers.len() - 1]
            .iter()
            .map(|a| (a["line"].as_u64().unwrap(), a["status"].as_str().unwrap(), a["code"].as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (1, "accepted", None),
                (2, "rejected", Some("invalid_json")),
                (3, "rejected", Some("category_not_deposited")),
                (4, "rejected", Some("no_link")),
                (5, "rejected", Some("unknown_field")),
                (6, "rejected", Some("invalid_field")),
                (8, "rejected", Some("line_too_long")),
            ]
        );
        assert_eq!(answers[0]["id"], "m-1");
        assert_eq!(answers.last().unwrap()["summary"], serde_json::json!({"accepted": 1, "unchanged": 0, "rejected": 6}));
        // One audit entry per line; the last, a refusal of the long line.
        let last = app.last_entry().await;
        assert_eq!((last.action.as_str(), last.decision), ("source.deposit", coffre::audit::Decision::Deny));
        // Sent again: unchanged; new content: a new version.
        let again = deposit_stream(&app, &token, format!("{good}\n")).await;
        assert_eq!(again[0]["status"], "unchanged", "{again:?}");
        let newer = serde_json::json!({"id": "m-1", "handle": handle, "category": "energy", "fields": {"annual_kwh": 4300}, "observed_at": at + 60});
        let answers = deposit_stream(&app, &token, newer.to_string()).await;
        assert_eq!(answers[0]["status"], "accepted", "{answers:?}");
        // Awa sees the value; her later correction stands against an older observation.
        let awa = app.login(AWA).await;
        let mine = app.as_user(&awa, Method::GET, "/api/v1/me/data/energy", None).await;
        assert_eq!(mine.status, 200, "{}", mine.text());
        assert!(mine.text().contains("4300"), "{}", mine.text());
        // Provenance: in the data (art. 15(1)(g)), on the page, and the
        // art. 14 notice on the sources page.
        let all = app.as_user(&awa, Method::GET, "/api/v1/me/data", None).await;
        let energy = all.json()["records"].as_array().unwrap().iter().find(|r| r["category"] == "energy").unwrap().clone();
        assert_eq!(energy["source"]["id"], "energie-locale", "{energy}");
        assert_eq!(energy["source"]["observed_at"], at + 60, "{energy}");
        let page = app.as_user(&awa, Method::GET, "/moi/donnees", None).await;
        assert!(page.text().contains("Déposé par"), "{}", page.text());
        // The export (art. 15) gives each version its origin: both
        // deposited versions name the source, with their observation dates.
        let export = app.as_user(&awa, Method::GET, "/api/v1/me/export", None).await;
        assert_eq!(export.status, 200, "{}", export.text());
        let versions = export.json()["records"]["energy"].as_array().unwrap().clone();
        let origins: Vec<_> = versions
            .iter()
            .filter(|v| !v["source"].is_null())
            .map(|v| (v["source"]["id"].as_str().unwrap().to_string(), v["source"]["observed_at"].as_i64().unwrap()))
            .collect();
        assert_eq!(
            origins,
            [("energie-locale".to_string(), at + 60), ("energie-locale".to_string(), at)],
            "{versions:?}"
        );
        let listed = export.json()["sources"].as_array().unwrap().clone();
        let energie = listed.iter().find(|s| s["id"] == "energie-locale").unwrap();
        assert_eq!((energie["link"].as_str(), energie["deposits"].as_u64()), (Some("linked"), Some(2)), "{energie}");
        assert!(energie["controller"].is_string() && energie["name_fr"].is_string(), "{energie}");
        let listed = app.as_user(&awa, Method::GET, "/api/v1/me/sources", None).await;
        let e = listed.json().as_array().unwrap().iter().find(|s| s["id"] == "energie-locale").unwrap().clone();
        assert_eq!(e["deposits"], 2, "{e}");
        assert!(e["first_deposit_at"].is_i64(), "{e}");
        let notice = app.as_user(&awa, Method::GET, "/moi/sources", None).await;
        assert!(notice.text().contains("Données reçues de cette source"), "{}", notice.text());
        app.clock.advance(10);
        let own = app
            .as_user(&awa, Method::PUT, "/api/v1/me/data/energy", Some(serde_json::json!({"annual_kwh": 1000})))
            .await;
        assert!(own.status.is_success(), "{}", own.text());
        let stale = serde_json::json!({"id": "m-7", "handle": handle, "category": "energy", "fields": {"annual_kwh": 9999}, "observed_at": at + 120});
        let answers = deposit_stream(&app, &token, stale.to_string()).await;
        assert_eq!(answers[0]["code"], "resident_correction_stands", "{answers:?}");
        let last = app.last_entry().await;
        assert_eq!(
            (last.action.as_str(), last.decision, last.reason.as_str()),
            ("source.deposit", coffre::audit::Decision::Deny, "resident_correction_stands")
        );
        let mine = app.as_user(&awa, Method::GET, "/api/v1/me/data/energy", None).await;
        assert!(mine.text().contains("1000") && !mine.text().contains("9999"), "{}", mine.text());
        // Revoked: the handle no longer deposits.
        app.as_user(&awa, Method::DELETE, "/api/v1/me/sources/energie-locale/links", None).await;
        let answers = deposit_stream(&app, &token, newer.to_string().replace("4300", "4400")).await;
        assert_eq!(answers[0]["code"], "no_link", "{answers:?}");
    })
    .await;
}

#[tokio::test]
async fn a_public_task_source_matches_by_pivot_and_says_nothing_of_unknown_people() {
    each_backend(|app| async move {
        let token = source_token(&app, "regie-eau").await;
        let pivot = serde_json::json!({"family_name": "Diallo", "given_names": "Awa", "birthdate": "1984-03-02", "birthplace": "69123", "gender": "female"});
        let p: coffre::domain::deposit::PivotIdentity = serde_json::from_value(pivot.clone()).unwrap();
        coffre::service::deposits::register_pivot(&app.state, &crate::support::resident_id(AWA), &p).await.unwrap();
        // Observed now: Awa's own housing record (the demo's) is older.
        let at = app.clock.now();
        let mut other = pivot.clone();
        other["given_names"] = "Aïcha".into();
        let lines = [
            serde_json::json!({"id": "w-1", "pivot": {"family_name": "DIALLO", "given_names": "awa", "birthdate": "1984-03-02", "birthplace": "69123", "gender": "F"}, "category": "housing", "fields": {"postal_code": "69001"}, "observed_at": at}),
            serde_json::json!({"id": "w-2", "pivot": other, "category": "housing", "fields": {"postal_code": "69001"}, "observed_at": at}),
            serde_json::json!({"id": "w-3", "handle": "abc", "category": "housing", "fields": {"postal_code": "69001"}, "observed_at": at}),
        ];
        let body = lines.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n");
        let answers = deposit_stream(&app, &token, body).await;
        let codes: Vec<_> = answers[..3].iter().map(|a| (a["status"].as_str().unwrap(), a["code"].as_str())).collect();
        assert_eq!(codes, [("accepted", None), ("rejected", Some("unknown_pivot")), ("rejected", Some("invalid_deposit"))]);
        // No marker value in clear in the database, on either backend: not
        // the deposited value, not the pivot in any spelling it came in.
        for marker in ["69001", "DIALLO", "Diallo", "1984-03-02", "Aïcha"] {
            assert_eq!(app.stored_in_clear(marker).await, Vec::<String>::new(), "{marker} in clear");
        }
        // The check can see: the source's own record id is stored in clear.
        assert!(!app.stored_in_clear("w-1").await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn revoking_with_erasure_removes_what_the_source_deposited_and_only_that() {
    each_backend(|app| async move {
        let (token, handle) = linked_awa(&app).await;
        let awa = app.login(AWA).await;
        // Awa's own mobility record, and a deposited energy one.
        let at = app.clock.now();
        let d = serde_json::json!({"id": "m-1", "handle": handle, "category": "energy", "fields": {"annual_kwh": 4200}, "observed_at": at});
        assert_eq!(deposit_stream(&app, &token, d.to_string()).await[0]["status"], "accepted");
        let before = app.as_user(&awa, Method::GET, "/api/v1/me/data", None).await.json();
        let categories = |v: &serde_json::Value| -> Vec<String> {
            v["records"].as_array().unwrap().iter().map(|r| r["category"].as_str().unwrap().to_string()).collect()
        };
        assert!(categories(&before).contains(&"energy".to_string()));
        // Keep: the data stays.
        let kept = app.as_user(&awa, Method::DELETE, "/api/v1/me/sources/energie-locale/links", None).await;
        assert_eq!(kept.status, 204, "{}", kept.text());
        let after = app.as_user(&awa, Method::GET, "/api/v1/me/data", None).await.json();
        assert_eq!(categories(&after), categories(&before));
        // Linked again, then revoked with erasure: the energy versions it
        // deposited go, the rest stays.
        let (_, _) = {
            let code = app.as_user(&awa, Method::POST, "/api/v1/me/sources/energie-locale/links", None).await.json()["pairing_code"].as_str().unwrap().to_string();
            let got = as_source(&app, &token, Method::POST, "/api/v1/source/links", serde_json::json!({"code": code})).await;
            assert_eq!(got.status, 200);
            ((), ())
        };
        let erased = app.as_user(&awa, Method::DELETE, "/api/v1/me/sources/energie-locale/links?erase=true", None).await;
        assert_eq!(erased.status, 204, "{}", erased.text());
        let entry = app.last_entry().await;
        assert_eq!(entry.action, "source.deposits.erase");
        let after = app.as_user(&awa, Method::GET, "/api/v1/me/data", None).await.json();
        let mut want = categories(&before);
        want.retain(|c| c != "energy");
        assert_eq!(categories(&after), want);
        // Sent again after erasure and a new link, it is new content.
        let code = app.as_user(&awa, Method::POST, "/api/v1/me/sources/energie-locale/links", None).await.json()["pairing_code"].as_str().unwrap().to_string();
        as_source(&app, &token, Method::POST, "/api/v1/source/links", serde_json::json!({"code": code})).await;
        assert_eq!(deposit_stream(&app, &token, d.to_string()).await[0]["status"], "accepted");
        // Revoked keeping the data, then erased later: the erasure is still
        // hers to ask (and asking twice is harmless); a revocation with
        // nothing left to revoke is refused.
        let kept = app.as_user(&awa, Method::DELETE, "/api/v1/me/sources/energie-locale/links", None).await;
        assert_eq!(kept.status, 204, "{}", kept.text());
        let page = app.as_user(&awa, Method::GET, "/moi/sources", None).await;
        assert!(page.text().contains("Effacer ses dépôts"), "{}", page.text());
        let again = app.as_user(&awa, Method::DELETE, "/api/v1/me/sources/energie-locale/links", None).await;
        again.assert_error(409, "no_link");
        for _ in 0..2 {
            let later = app.as_user(&awa, Method::DELETE, "/api/v1/me/sources/energie-locale/links?erase=true", None).await;
            assert_eq!(later.status, 204, "{}", later.text());
            assert_eq!(app.last_entry().await.action, "source.deposits.erase");
        }
        let after = app.as_user(&awa, Method::GET, "/api/v1/me/data", None).await.json();
        assert_eq!(categories(&after), want);
        // A source never linked: nothing to erase either.
        let never = app.as_user(&awa, Method::DELETE, "/api/v1/me/sources/regie-eau/links?erase=true", None).await;
        assert!(never.status.is_client_error(), "{}", never.text());
    })
    .await;
}

/// The demo lists both sources with their published credentials, and they
/// work at the token endpoint.
#[tokio::test]
async fn the_demo_lists_its_sources_and_their_credentials_work() {
    each_backend(|app| async move {
        let personas = app.get("/dev/personas").await.json();
        let sources: Vec<_> = personas
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["role"] == "source")
            .collect();
        assert_eq!(sources.len(), 2, "{personas}");
        for s in sources {
            let token = app
                .partner_token(
                    s["client_id"].as_str().unwrap(),
                    s["client_secret"].as_str().unwrap(),
                )
                .await;
            assert!(!token.is_empty());
        }
    })
    .await;
}

/// Art. 21: a resident objects to a public-task source's deposits; a source
/// on the resident's authorisation is revoked instead.
#[tokio::test]
async fn an_objection_to_a_public_task_source_refuses_its_deposits_until_lifted() {
    each_backend(|app| async move {
        let token = source_token(&app, "regie-eau").await;
        let awa = app.login(AWA).await;
        app.as_user(&awa, Method::POST, "/api/v1/me/sources/energie-locale/objection", None)
            .await
            .assert_error(422, "objection_not_applicable");
        let objected = app.as_user(&awa, Method::POST, "/api/v1/me/sources/regie-eau/objection", None).await;
        assert_eq!(objected.status, 204, "{}", objected.text());
        let mine = app.as_user(&awa, Method::GET, "/api/v1/me/sources", None).await;
        let water = mine.json().as_array().unwrap().iter().find(|s| s["id"] == "regie-eau").unwrap().clone();
        assert_eq!(water["objected"], true, "{water}");
        // The demo registered Awa's pivot (born in Toulouse).
        let line = |id: &str| {
            serde_json::json!({"id": id, "pivot": {"family_name": "Diallo", "given_names": "Awa", "birthdate": "1987-04-12", "birthplace": "31555", "gender": "female"}, "category": "energy", "fields": {"heating": "gas"}, "observed_at": app.clock.now()})
                .to_string()
        };
        let answers = deposit_stream(&app, &token, line("w-1")).await;
        assert_eq!(answers[0]["code"], "objection", "{answers:?}");
        let lifted = app.as_user(&awa, Method::DELETE, "/api/v1/me/sources/regie-eau/objection", None).await;
        assert_eq!(lifted.status, 204, "{}", lifted.text());
        let answers = deposit_stream(&app, &token, line("w-1")).await;
        assert_eq!(answers[0]["status"], "accepted", "{answers:?}");
    })
    .await;
}

/// A deposit stream may pass `max_body_bytes` (it is read a line at a
/// time); past `max_deposit_bytes` a declared length is refused before
/// anything is read, and an undeclared one is cut, keeping the lines
/// answered before the cut.
#[tokio::test]
async fn deposit_streams_have_their_own_limit() {
    let setup = crate::support::Setup {
        demo: true,
        configure: Some(std::sync::Arc::new(|c: &mut coffre::Config| {
            c.max_deposit_bytes = 3_000_000;
        })),
        ..Default::default()
    };
    crate::support::each_backend_setup(setup, |app| async move {
        let token = source_token(&app, "energie-locale").await;
        let bad = r#"{"id":"x"}"#;
        // 2 MB of blank lines (skipped) around two lines: over the
        // general 1 MiB limit, under the deposit one.
        let padding = "\n".repeat(1_000_000);
        let body = format!("{bad}\n{padding}{padding}{bad}\n");
        let answers = deposit_stream(&app, &token, body).await;
        assert_eq!(answers.len(), 3, "two answers and the summary");
        assert_eq!(answers[2]["summary"]["rejected"], 2);
        // Declared over the limit: 413, nothing read.
        let res = app
            .send(
                Method::POST,
                "/api/v1/source/deposits",
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("content-type", "application/x-ndjson"),
                    ("content-length", "3000001"),
                ],
                "x".repeat(3_000_001),
            )
            .await;
        res.assert_error(413, "payload_too_large");
        // Undeclared and over: cut; the line before the cut is answered,
        // no summary follows (sent as a client streams it, in chunks).
        let chunks: Vec<Result<String, std::io::Error>> = vec![
            Ok(format!("{bad}\n")),
            Ok("y".repeat(1_500_000)),
            Ok("y".repeat(1_600_000)),
        ];
        let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
        let res = app
            .send(
                Method::POST,
                "/api/v1/source/deposits",
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("content-type", "application/x-ndjson"),
                ],
                body,
            )
            .await;
        assert_eq!(res.status, 200);
        let lines: Vec<serde_json::Value> = res
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["line"], 1);
        // Then why it stopped, and where: no summary, the rest unread.
        assert_eq!(
            lines[1],
            serde_json::json!({"error": {"code": "payload_too_large", "line": 2}})
        );
    })
    .await;
}

#[tokio::test]
async fn a_deposited_version_is_sealed_with_its_provenance() {
    each_backend(|app| async move {
        let (token, handle) = linked_awa(&app).await;
        let at = app.clock.now() - 3600;
        let line = serde_json::json!({"id": "m-1", "handle": handle, "category": "energy", "fields": {"annual_kwh": 4200}, "observed_at": at});
        let answers = deposit_stream(&app, &token, line.to_string()).await;
        assert_eq!(answers[0]["status"], "accepted", "{answers:?}");
        let awa = app.login(AWA).await;
        assert_eq!(app.as_user(&awa, Method::GET, "/api/v1/me/data/energy", None).await.status, 200);
        let pool = app.raw_pool().await;
        let (basis,): (Option<String>,) =
            sqlx::query_as("SELECT source_basis FROM personal_records WHERE source_record_id = 'm-1'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(basis.as_deref(), Some("resident_authorisation"));
        // Each way of rewriting the provenance in the database makes the
        // version fail to open, rather than be shown with a false origin
        // (or as Awa's own writing, which a later deposit could not
        // overwrite).
        for (tamper, undo) in [
            ("UPDATE personal_records SET source_id = NULL, origin = NULL WHERE source_record_id = 'm-1'",
             "UPDATE personal_records SET source_id = 'energie-locale', origin = 'source' WHERE source_record_id = 'm-1'"),
            ("UPDATE personal_records SET source_id = 'eau-agglo' WHERE source_record_id = 'm-1'",
             "UPDATE personal_records SET source_id = 'energie-locale' WHERE source_record_id = 'm-1'"),
            ("UPDATE personal_records SET observed_at = observed_at + 1 WHERE source_record_id = 'm-1'",
             "UPDATE personal_records SET observed_at = observed_at - 1 WHERE source_record_id = 'm-1'"),
            ("UPDATE personal_records SET source_basis = 'public_task' WHERE source_record_id = 'm-1'",
             "UPDATE personal_records SET source_basis = 'resident_authorisation' WHERE source_record_id = 'm-1'"),
        ] {
            sqlx::query(tamper).execute(&pool).await.unwrap();
            let res = app.as_user(&awa, Method::GET, "/api/v1/me/data/energy", None).await;
            assert_eq!(res.status, 500, "{tamper}: {}", res.text());
            sqlx::query(undo).execute(&pool).await.unwrap();
            assert_eq!(app.as_user(&awa, Method::GET, "/api/v1/me/data/energy", None).await.status, 200, "{undo}");
        }
        // Awa's own writing cannot be given a source's provenance either.
        app.clock.advance(10);
        let own = app
            .as_user(&awa, Method::PUT, "/api/v1/me/data/energy", Some(serde_json::json!({"annual_kwh": 1000})))
            .await;
        assert!(own.status.is_success(), "{}", own.text());
        sqlx::query(
            "UPDATE personal_records SET source_id = 'energie-locale', source_record_id = 'm-1', \
             source_basis = 'resident_authorisation', observed_at = $1, origin = 'source' \
             WHERE category = 'energy' AND source_id IS NULL",
        )
        .bind(at)
        .execute(&pool)
        .await
        .unwrap();
        assert_eq!(app.as_user(&awa, Method::GET, "/api/v1/me/data/energy", None).await.status, 500);
    })
    .await;
}

/// A stream the client cuts in the middle (its connection fails): the
/// lines answered before the cut are stored, the partial line is dropped,
/// and the same stream sent again reports them `unchanged`.
#[tokio::test]
async fn a_cut_stream_keeps_the_lines_before_the_cut_and_a_retry_finds_them_unchanged() {
    each_backend(|app| async move {
        let (token, handle) = linked_awa(&app).await;
        let at = app.clock.now() - 3600;
        let first = serde_json::json!({"id": "c-1", "handle": handle, "category": "energy", "fields": {"annual_kwh": 100}, "observed_at": at});
        let second = serde_json::json!({"id": "c-2", "handle": handle, "category": "energy", "fields": {"annual_kwh": 200}, "observed_at": at + 1});
        let chunks: Vec<Result<String, std::io::Error>> = vec![
            Ok(format!("{first}\n")),
            Ok(second.to_string()[..20].to_string()),
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut")),
        ];
        let res = app
            .send(
                Method::POST,
                "/api/v1/source/deposits",
                &[("authorization", &format!("Bearer {token}")), ("content-type", "application/x-ndjson")],
                axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
            )
            .await;
        assert_eq!(res.status, 200);
        let lines: Vec<serde_json::Value> = res.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        // The first line answered; no summary, no error line (nobody reads it).
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!((lines[0]["id"].as_str(), lines[0]["status"].as_str()), (Some("c-1"), Some("accepted")));
        let pool = app.raw_pool().await;
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM personal_records WHERE source_id = 'energie-locale'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 1, "only the line before the cut is stored");
        // The retry: the first unchanged, the second accepted.
        let answers = deposit_stream(&app, &token, format!("{first}\n{second}\n")).await;
        let got: Vec<_> = answers[..2].iter().map(|a| a["status"].as_str().unwrap()).collect();
        assert_eq!(got, ["unchanged", "accepted"]);
        assert_eq!(answers[2]["summary"], serde_json::json!({"accepted": 1, "unchanged": 1, "rejected": 0}));
    })
    .await;
}

/// The resident's later choices win over a source: restricted (art. 18),
/// their lines are refused `processing_restricted` until lifted; erased,
/// the handle names nobody (`no_link`, the answer for no one), and nothing
/// of them is stored again.
#[tokio::test]
async fn restriction_and_erasure_refuse_a_sources_lines() {
    each_backend(|app| async move {
        let (token, handle) = linked_awa(&app).await;
        let at = app.clock.now() - 3600;
        let line = |id: &str, kwh: i64| {
            serde_json::json!({"id": id, "handle": handle, "category": "energy", "fields": {"annual_kwh": kwh}, "observed_at": at})
                .to_string()
        };
        let awa = app.login(AWA).await;
        let restrict = |on: bool| {
            app.as_user(&awa, Method::POST, "/api/v1/me/restriction", Some(serde_json::json!({"restricted": on})))
        };
        assert_eq!(restrict(true).await.status, 200);
        let answers = deposit_stream(&app, &token, line("r-1", 1)).await;
        assert_eq!(answers[0]["code"], "processing_restricted", "{answers:?}");
        let last = app.last_entry().await;
        assert_eq!((last.action.as_str(), last.reason.as_str()), ("source.deposit", "processing_restricted"));
        assert_eq!(restrict(false).await.status, 200);
        let answers = deposit_stream(&app, &token, line("r-1", 1)).await;
        assert_eq!(answers[0]["status"], "accepted", "{answers:?}");
        let erased = app.as_user(&awa, Method::POST, "/api/v1/me/erasure", None).await;
        assert_eq!(erased.status, 200, "{}", erased.text());
        let answers = deposit_stream(&app, &token, line("r-2", 2)).await;
        assert_eq!(answers[0]["code"], "no_link", "{answers:?}");
        let pool = app.raw_pool().await;
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM personal_records WHERE resident_id = $1")
            .bind(AWA)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "nothing of an erased resident is stored again");
    })
    .await;
}

/// A long stream outlives its token (checked when the stream began) but
/// not its source's deactivation: whether the source is still active is
/// asked again as the stream goes, and the next line after a deactivation
/// is not deposited; the stream ends with why.
#[tokio::test]
async fn a_long_stream_outlives_its_token_but_stops_when_the_source_is_deactivated() {
    each_backend(|app| async move {
        let (token, handle) = linked_awa(&app).await;
        let at = app.clock.now() - 3600;
        let line = |id: &str| {
            serde_json::json!({"id": id, "handle": handle, "category": "energy", "fields": {"annual_kwh": 7}, "observed_at": at})
                .to_string()
        };
        // The second line comes six minutes later (past the token's five),
        // the third after the source was deactivated (the clock and the
        // store move as the server asks for the next chunk).
        let clock = app.clock.clone();
        let store = app.store.clone();
        let chunks = vec![format!("{}\n", line("t-1")), format!("{}\n", line("t-2")), format!("{}\n", line("t-3"))];
        let body = futures_util::stream::unfold((0usize, chunks, clock, store), |(i, chunks, clock, store)| async move {
            let chunk = chunks.get(i)?.clone();
            if i == 1 {
                clock.advance(360);
            }
            if i == 2 {
                clock.advance(60);
                assert!(store.set_source_client_active("energie-locale", false).await.unwrap());
            }
            Some((Ok::<_, std::io::Error>(chunk), (i + 1, chunks, clock, store)))
        });
        let res = app
            .send(
                Method::POST,
                "/api/v1/source/deposits",
                &[("authorization", &format!("Bearer {token}")), ("content-type", "application/x-ndjson")],
                axum::body::Body::from_stream(body),
            )
            .await;
        assert_eq!(res.status, 200);
        let lines: Vec<serde_json::Value> = res.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!((lines[0]["status"].as_str(), lines[1]["status"].as_str()), (Some("accepted"), Some("accepted")));
        assert_eq!(lines[2], serde_json::json!({"error": {"code": "invalid_token", "line": 3}}));
        let pool = app.raw_pool().await;
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM personal_records WHERE source_record_id = 't-3'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 0);
    })
    .await;
}

/// Lines are deposited several at a time but answered in their order, and
/// two lines about the same record (or the same person and category) keep
/// their order: the later one's version is the current one.
#[tokio::test]
async fn lines_about_the_same_record_keep_their_order_in_a_busy_stream() {
    each_backend(|app| async move {
        let (token, handle) = linked_awa(&app).await;
        let at = app.clock.now() - 3600;
        let mut lines = Vec::new();
        for i in 0..40 {
            // The same record, new content each time, with refusals between.
            lines.push(serde_json::json!({"id": "same", "handle": handle, "category": "energy", "fields": {"annual_kwh": i}, "observed_at": at + i}).to_string());
            lines.push(serde_json::json!({"id": format!("x-{i}"), "handle": "nobody", "category": "energy", "fields": {"annual_kwh": i}, "observed_at": at}).to_string());
        }
        let answers = deposit_stream(&app, &token, lines.join("\n")).await;
        assert_eq!(answers.len(), 81, "{answers:?}");
        for (i, a) in answers[..80].iter().enumerate() {
            assert_eq!(a["line"], i as u64 + 1, "{a}");
            let expected = if i % 2 == 0 { "accepted" } else { "rejected" };
            assert_eq!(a["status"], expected, "{a}");
        }
        let awa = app.login(AWA).await;
        let mine = app.as_user(&awa, Method::GET, "/api/v1/me/data/energy", None).await.json();
        assert_eq!(mine["current"]["fields"]["annual_kwh"], 39, "{mine}");
        assert_eq!(mine["current"]["version"], 40, "{mine}");
    })
    .await;
}

/// Two streams at once about the same resident and category (the group
/// commit puts their lines in the same transactions, sealed for the same
/// version): no version is lost or doubled; a line that lost the version
/// twice is refused `concurrent_update` and accepted when sent again.
#[tokio::test]
async fn two_streams_about_the_same_record_lose_nothing_and_double_nothing() {
    each_backend(|app| async move {
        let (token, handle) = linked_awa(&app).await;
        let before = app.state.store.latest_record_version(&crate::support::resident_id(AWA), "energy").await.unwrap();
        let at = app.clock.now() - 3600;
        let body = |stream: &str| {
            (1..=12)
                .map(|i| {
                    serde_json::json!({"id": format!("{stream}-{i}"), "handle": handle, "category": "energy", "fields": {"annual_kwh": i}, "observed_at": at}).to_string()
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let (a, b) = tokio::join!(
            deposit_stream(&app, &token, body("a")),
            deposit_stream(&app, &token, body("b"))
        );
        let mut accepted = 0;
        let mut again = Vec::new();
        for (answers, stream) in [(&a, "a"), (&b, "b")] {
            for answer in &answers[..answers.len() - 1] {
                match (answer["status"].as_str(), answer["code"].as_str()) {
                    (Some("accepted"), None) => accepted += 1,
                    (Some("rejected"), Some("concurrent_update")) => {
                        let i = answer["line"].as_u64().unwrap();
                        again.push(body(stream).lines().nth(i as usize - 1).unwrap().to_string());
                    }
                    other => panic!("{other:?} in {answers:?}"),
                }
            }
        }
        assert_eq!(accepted + again.len(), 24);
        let latest = |app: &TestApp| {
            let store = app.state.store.clone();
            async move { store.latest_record_version(&crate::support::resident_id(AWA), "energy").await.unwrap() }
        };
        // One version each, in a row (the key (resident, category, version)
        // would refuse a double).
        assert_eq!(latest(&app).await, before + accepted as i64);
        if !again.is_empty() {
            let answers = deposit_stream(&app, &token, again.join("\n")).await;
            assert!(
                answers[..answers.len() - 1].iter().all(|a| a["status"] == "accepted"),
                "{answers:?}"
            );
        }
        assert_eq!(latest(&app).await, before + 24);
    })
    .await;
}
