//! The web pages' own guarantees, without a browser: forms need the
//! session's CSRF token, each space is its own role's, refusals are HTML
//! pages with the stable code, language links never leave the site, and a
//! form does exactly what the JSON route does.

use axum::http::Method;

use crate::support::{Session, TestApp, each_backend};

const AWA: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000001";
const AIDANT: &str = "a1d00000-0000-4000-8000-000000000001";

pub(crate) async fn post_form(
    app: &TestApp,
    s: &Session,
    path: &str,
    form: &str,
) -> crate::support::TestResponse {
    app.send(
        Method::POST,
        path,
        &[
            ("cookie", s.cookie.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        form.to_string(),
    )
    .await
}

#[tokio::test]
async fn a_form_without_the_session_csrf_token_is_refused_and_changes_nothing() {
    each_backend(|app| async move {
        let s = app.login(AWA).await;
        let before = app
            .as_user(&s, Method::GET, "/api/v1/me/consents", None)
            .await
            .json();
        let form = "purpose=inventaire-arbres-patrimoine&decision=given&categories=environment";
        let res = post_form(&app, &s, "/moi/consentements", form).await;
        assert_eq!(res.status.as_u16(), 403);
        assert!(res.header("content-type").unwrap().starts_with("text/html"));
        assert!(res.text().contains("csrf_token_invalid"), "{}", res.text());
        let forged = post_form(
            &app,
            &s,
            "/moi/consentements",
            &format!("csrf_token=forged&{form}"),
        )
        .await;
        assert_eq!(forged.status.as_u16(), 403);
        let after = app
            .as_user(&s, Method::GET, "/api/v1/me/consents", None)
            .await
            .json();
        assert_eq!(before, after);
    })
    .await;
}

#[tokio::test]
async fn a_consent_form_does_what_the_json_route_does() {
    each_backend(|app| async move {
        let s = app.login(AWA).await;
        let csrf = format!("csrf_token={}", s.csrf);
        // No category ticked: nothing is given, and the page says why.
        let none = post_form(
            &app,
            &s,
            "/moi/consentements",
            &format!("{csrf}&purpose=agenda-culturel&decision=given"),
        )
        .await;
        assert_eq!(none.status.as_u16(), 422);
        assert!(none.text().contains("categories_required"));
        let res = post_form(
            &app,
            &s,
            "/moi/consentements",
            &format!("{csrf}&purpose=agenda-culturel&decision=given&categories=culture"),
        )
        .await;
        assert_eq!(res.status.as_u16(), 303, "{}", res.text());
        assert_eq!(
            res.header("location"),
            Some("/moi/consentements?fait=donne")
        );
        let mine = app
            .as_user(&s, Method::GET, "/api/v1/me/consents", None)
            .await
            .json();
        let c = mine["consents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["purpose"] == "agenda-culturel")
            .unwrap()
            .clone();
        assert_eq!(c["state"], "given");
        assert_eq!(c["categories"], serde_json::json!(["culture"]));
        // Withdrawing leads to the page that says how to give it again.
        let id = c["id"].as_str().unwrap();
        let w = post_form(&app, &s, &format!("/moi/consentements/{id}/retrait"), &csrf).await;
        assert_eq!(w.status.as_u16(), 303);
        assert_eq!(
            w.header("location"),
            Some(format!("/moi/consentements/{id}/retire").as_str())
        );
        let page = app
            .send(
                Method::GET,
                w.header("location").unwrap(),
                &[("cookie", s.cookie.as_str())],
                axum::body::Body::empty(),
            )
            .await;
        assert!(page.text().contains("redonner votre consentement"));
        // The special-category purpose needs the explicit box.
        let health = post_form(
            &app,
            &s,
            "/moi/consentements",
            &format!("{csrf}&purpose=sante-territoriale&decision=given&categories=health"),
        )
        .await;
        assert_eq!(health.status.as_u16(), 422);
        assert!(
            health.text().contains("explicit_consent_required"),
            "{}",
            health.text()
        );
    })
    .await;
}

#[tokio::test]
async fn each_space_belongs_to_its_role() {
    each_backend(|app| async move {
        let anonymous = app.get("/moi/donnees").await;
        assert_eq!(anonymous.status.as_u16(), 401);
        assert!(
            anonymous.text().contains("/dev/login"),
            "the page offers a way in"
        );
        let aidant = app.login(AIDANT).await;
        let res = app
            .send(
                Method::GET,
                "/moi/donnees",
                &[("cookie", aidant.cookie.as_str())],
                axum::body::Body::empty(),
            )
            .await;
        assert_eq!(res.status.as_u16(), 403);
        assert!(res.text().contains("role_not_allowed"));
        let awa = app.login(AWA).await;
        for path in ["/aidant", "/dpo", "/aidant/mandats/nouveau"] {
            let res = app
                .send(
                    Method::GET,
                    path,
                    &[("cookie", awa.cookie.as_str())],
                    axum::body::Body::empty(),
                )
                .await;
            assert_eq!(res.status.as_u16(), 403, "{path}");
        }
        let mine = app
            .send(
                Method::GET,
                "/moi/donnees",
                &[("cookie", awa.cookie.as_str())],
                axum::body::Body::empty(),
            )
            .await;
        assert_eq!(mine.status.as_u16(), 200);
        assert_eq!(mine.header("cache-control"), Some("no-store"));
        assert!(
            mine.header("content-security-policy")
                .unwrap()
                .contains("default-src 'self'")
        );
    })
    .await;
}

#[tokio::test]
async fn the_language_switch_never_leaves_the_site() {
    each_backend(|app| async move {
        for (back, expected) in [
            ("%2Fregistre", "/registre"),
            ("%2F%2Fevil.example%2F", "/"),
            ("https%3A%2F%2Fevil.example%2F", "/"),
            ("%2F%5Cevil.example", "/"),
            // Browsers drop tabs from URLs: `/\t/evil` would become `//evil`.
            ("%2F%09%2Fevil.example", "/"),
        ] {
            let res = app.get(&format!("/langue/en?retour={back}")).await;
            assert_eq!(res.status.as_u16(), 303);
            assert_eq!(res.header("location"), Some(expected), "{back}");
            assert!(
                res.header("set-cookie")
                    .unwrap()
                    .starts_with("coffre_lang=en")
            );
        }
        let en = app
            .send(
                Method::GET,
                "/registre",
                &[("cookie", "coffre_lang=en")],
                axum::body::Body::empty(),
            )
            .await;
        assert!(en.text().contains("<html lang=\"en\""));
        let fr = app.get("/registre").await;
        assert!(fr.text().contains("<html lang=\"fr\""));
    })
    .await;
}

#[tokio::test]
async fn the_stylesheet_is_small_and_cached_and_pages_are_not() {
    each_backend(|app| async move {
        let css = app.get("/static/coffre.css").await;
        assert_eq!(css.status.as_u16(), 200);
        assert!(css.body.len() < 8 * 1024, "{} bytes", css.body.len());
        assert!(css.header("cache-control").unwrap().contains("max-age"));
        let home = app.get("/").await;
        assert!(home.body.len() < 20 * 1024);
        assert_eq!(home.header("cache-control"), Some("no-store"));
    })
    .await;
}

#[tokio::test]
async fn a_refused_data_form_comes_back_with_what_was_typed_and_the_field_at_fault() {
    each_backend(|app| async move {
        let s = app.login(AWA).await;
        let before = app.as_user(&s, Method::GET, "/api/v1/me/data/contact", None).await.json();
        let form = format!(
            "csrf_token={}&email=awa%40example.org&phone=pas+un+num%C3%A9ro&postal_address=3+rue+Neuve",
            s.csrf
        );
        let res = post_form(&app, &s, "/moi/donnees/contact", &form).await;
        assert_eq!(res.status.as_u16(), 422, "{}", res.text());
        let page = res.text();
        assert!(page.contains("role=\"alert\""));
        assert!(page.contains("invalid_field"));
        assert!(page.contains("« Téléphone »"), "the field is named in words");
        // What was typed is there to correct, and the field is marked.
        assert!(page.contains("value=\"pas un numéro\""));
        assert!(page.contains("value=\"3 rue Neuve\""));
        assert!(page.contains(
            "id=\"contact-phone\" name=\"phone\" aria-invalid=\"true\" aria-describedby=\"contact-phone-erreur\""
        ));
        assert!(page.contains("href=\"#contact-phone\""));
        let after = app.as_user(&s, Method::GET, "/api/v1/me/data/contact", None).await.json();
        assert_eq!(before["current"], after["current"], "nothing was stored");
    })
    .await;
}

#[tokio::test]
async fn the_dpo_refuses_a_request_only_with_its_reason() {
    each_backend(|app| async move {
        let awa = app.login(AWA).await;
        let asked = app
            .as_user(
                &awa,
                Method::POST,
                "/api/v1/me/requests",
                Some(serde_json::json!({"kind": "erasure"})),
            )
            .await;
        assert_eq!(asked.status.as_u16(), 201, "{}", asked.text());
        let id = asked.json()["id"].as_str().unwrap().to_string();
        let dpo = app.login("a1d00000-0000-4000-8000-000000000004").await;
        let page = app
            .send(
                Method::GET,
                "/dpo",
                &[("cookie", dpo.cookie.as_str())],
                axum::body::Body::empty(),
            )
            .await
            .text();
        assert!(
            page.contains("name=\"reason\""),
            "the DPO page asks for the reason"
        );
        let path = format!("/dpo/demandes/{id}");
        let csrf = format!("csrf_token={}", dpo.csrf);
        let without = post_form(&app, &dpo, &path, &format!("{csrf}&action=refused&reason=")).await;
        assert_eq!(without.status.as_u16(), 422);
        assert!(without.text().contains("refusal_reason_required"));
        assert!(
            without.text().contains("href=\"/dpo\""),
            "the way back to the form"
        );
        let with = post_form(
            &app,
            &dpo,
            &path,
            &format!("{csrf}&action=refused&reason=legal_obligation"),
        )
        .await;
        assert_eq!(with.status.as_u16(), 303, "{}", with.text());
        let mine = app
            .as_user(&awa, Method::GET, "/api/v1/me/requests", None)
            .await
            .json();
        let r = &mine["requests"][0];
        assert_eq!(r["state"], "refused");
        assert_eq!(
            r["history"].as_array().unwrap().last().unwrap()["reason"],
            "legal_obligation"
        );
    })
    .await;
}
