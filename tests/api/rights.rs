//! Residents' rights: the export holds everything the resident can see
//! elsewhere and nothing about anyone else; restriction and objection stop
//! partners at once with their own reasons; requests to the DPO keep their
//! legal deadlines; the retention job deletes exactly what is due and the
//! audit log still verifies — on both backends.

use axum::http::Method;

use crate::support::{Session, T0, TestApp, TestResponse, each_backend};

const AWA: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000001";
const JP: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000002";
const LUCIE: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000003";
const DPO: &str = "a1d00000-0000-4000-8000-000000000004";
const AIDANT: &str = "a1d00000-0000-4000-8000-000000000001";
const DAY: i64 = 86_400;

async fn as_(
    app: &TestApp,
    s: &Session,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> TestResponse {
    app.as_user(s, method, path, body).await
}

async fn renov_bearer(app: &TestApp) -> String {
    app.partner_token(
        "demo-renov-energie",
        "demo-secret-renov-energie-not-for-production",
    )
    .await
}

async fn as_partner(app: &TestApp, bearer: &str, path: &str) -> TestResponse {
    app.send(
        Method::GET,
        path,
        &[("authorization", &format!("Bearer {bearer}"))],
        "",
    )
    .await
}

#[tokio::test]
async fn the_export_holds_everything_about_me_and_nothing_about_anyone_else() {
    each_backend(|app| async move {
        let awa = app.login(AWA).await;
        // Something in every section: a rectification, a partner's read, a request.
        as_(
            &app,
            &awa,
            Method::PUT,
            "/api/v1/me/data/housing",
            Some(serde_json::json!({"tenure": "owner"})),
        )
        .await;
        as_(
            &app,
            &awa,
            Method::POST,
            "/api/v1/me/requests",
            Some(serde_json::json!({"kind": "erasure"})),
        )
        .await;
        let bearer = renov_bearer(&app).await;
        let list = as_partner(
            &app,
            &bearer,
            "/api/v1/partner/residents?purpose=renovation-energetique",
        )
        .await
        .json();
        for p in list["residents"].as_array().unwrap() {
            as_partner(
                &app,
                &bearer,
                &format!(
                    "/api/v1/partner/residents/{}/data/housing?purpose=renovation-energetique",
                    p.as_str().unwrap()
                ),
            )
            .await;
        }

        // Asked from another site (a link there, followed by a logged-in
        // resident): refused; from coffre's own page: given.
        let headers = [
            ("cookie", awa.cookie.as_str()),
            ("sec-fetch-site", "cross-site"),
        ];
        app.send(Method::GET, "/api/v1/me/export", &headers, "")
            .await
            .assert_error(403, "cross_site_request");
        let headers = [
            ("cookie", awa.cookie.as_str()),
            ("sec-fetch-site", "same-origin"),
        ];
        assert_eq!(
            app.send(Method::GET, "/api/v1/me/export", &headers, "")
                .await
                .status,
            200
        );
        let res = as_(&app, &awa, Method::GET, "/api/v1/me/export", None).await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.header("content-type"), Some("application/json"));
        let text = res.text();
        let export: serde_json::Value = serde_json::from_str(&text).expect("one JSON document");
        assert_eq!(export["schema"], "coffre-export/1");
        assert_eq!(export["resident_id"], AWA);
        // Every category I can read, with every version.
        let mine = as_(&app, &awa, Method::GET, "/api/v1/me/data", None)
            .await
            .json();
        for r in mine["records"].as_array().unwrap() {
            let c = r["category"].as_str().unwrap();
            assert!(export["records"][c].is_array(), "{c} missing");
        }
        assert_eq!(export["records"]["housing"].as_array().unwrap().len(), 2);
        // Every consent, with its history and receipts.
        let consents = as_(&app, &awa, Method::GET, "/api/v1/me/consents", None)
            .await
            .json();
        assert_eq!(
            export["consents"].as_array().unwrap().len(),
            consents["consents"].as_array().unwrap().len()
        );
        assert!(
            export["consents"][0]["history"][0]["receipt"]
                .as_str()
                .unwrap()
                .split('.')
                .count()
                == 3
        );
        // Mandates, requests, and the accesses with their proofs.
        assert_eq!(export["mandates"].as_array().unwrap().len(), 1);
        assert_eq!(export["requests"][0]["kind"], "erasure");
        let entries = export["accesses"]["entries"].as_array().unwrap();
        assert!(
            entries
                .iter()
                .any(|e| e["fields"]["actor_id"] == "renov-energie")
        );
        assert!(entries.iter().all(|e| e["fields"]["resident_id"] == AWA));
        assert!(entries.iter().filter(|e| e["proof"].is_array()).count() > 0);
        // Nothing about anyone else.
        for other in [JP, LUCIE, "Jean-Pierre", "Lucie", "Bernard"] {
            assert!(!text.contains(other), "{other} appears in Awa's export");
        }

        // Encrypted with a passphrase the resident chose.
        let mut headers = vec![("cookie", awa.cookie.as_str())];
        headers.push(("x-export-passphrase", "short"));
        app.send(Method::GET, "/api/v1/me/export", &headers, "")
            .await
            .assert_error(422, "passphrase_too_short");
        headers.pop();
        headers.push(("x-export-passphrase", "correct horse battery staple"));
        let res = app
            .send(Method::GET, "/api/v1/me/export", &headers, "")
            .await;
        assert_eq!(res.header("content-type"), Some("application/age"));
        let decryptor = age::Decryptor::new(res.body.as_slice()).unwrap();
        let identity = age::scrypt::Identity::new(age::secrecy::SecretString::from(
            "correct horse battery staple".to_string(),
        ));
        let mut reader = decryptor
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .unwrap();
        let mut plain = String::new();
        std::io::Read::read_to_string(&mut reader, &mut plain).unwrap();
        let decrypted: serde_json::Value = serde_json::from_str(&plain).unwrap();
        assert_eq!(decrypted["resident_id"], AWA);
        assert_eq!(decrypted["records"], export["records"]);
    })
    .await;
}

#[tokio::test]
async fn restriction_and_objection_stop_partners_at_once_and_partners_are_told() {
    each_backend(|app| async move {
        let bearer = renov_bearer(&app).await;
        let awa = app.login(AWA).await;
        let list = |b: String| {
            let app = &app;
            async move {
                as_partner(
                    app,
                    &b,
                    "/api/v1/partner/residents?purpose=renovation-energetique",
                )
                .await
                .json()["residents"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            }
        };
        let before = list(bearer.clone()).await;
        assert_eq!(before.len(), 3);
        let keys = app.keys.current();
        let awa_p = keys.pseudonym("partner:renov-energie", AWA.as_bytes());
        let read = format!(
            "/api/v1/partner/residents/{awa_p}/data/housing?purpose=renovation-energetique"
        );
        assert_eq!(as_partner(&app, &bearer, &read).await.status, 200);

        // Restriction (art. 18).
        let res = as_(
            &app,
            &awa,
            Method::POST,
            "/api/v1/me/restriction",
            Some(serde_json::json!({"restricted": true})),
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(
            res.json()["notified_partners"],
            serde_json::json!(["renov-energie"])
        );
        as_partner(&app, &bearer, &read)
            .await
            .assert_error(403, "processing_restricted");
        assert!(!list(bearer.clone()).await.contains(&awa_p));
        // The partner was told, under its own pseudonym.
        let notes = as_partner(&app, &bearer, "/api/v1/partner/notifications")
            .await
            .json();
        assert_eq!(notes["notifications"][0]["pseudonym"], awa_p.as_str());
        assert_eq!(notes["notifications"][0]["kind"], "restriction");
        as_(
            &app,
            &awa,
            Method::POST,
            "/api/v1/me/restriction",
            Some(serde_json::json!({"restricted": false})),
        )
        .await;
        assert_eq!(as_partner(&app, &bearer, &read).await.status, 200);

        // Objection (art. 21) to a public-task purpose; not to a consent one.
        as_(
            &app,
            &awa,
            Method::POST,
            "/api/v1/me/objections",
            Some(serde_json::json!({"purpose": "etude-mobilite"})),
        )
        .await
        .assert_error(422, "objection_not_applicable");
        let res = as_(
            &app,
            &awa,
            Method::POST,
            "/api/v1/me/objections",
            Some(serde_json::json!({"purpose": "renovation-energetique"})),
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text());
        as_partner(&app, &bearer, &read)
            .await
            .assert_error(403, "objection");
        assert!(!list(bearer.clone()).await.contains(&awa_p));
        let rights = as_(&app, &awa, Method::GET, "/api/v1/me/rights", None)
            .await
            .json();
        assert_eq!(rights["objections"][0]["purpose"], "renovation-energetique");
        as_(
            &app,
            &awa,
            Method::DELETE,
            "/api/v1/me/objections/renovation-energetique",
            None,
        )
        .await;
        assert_eq!(as_partner(&app, &bearer, &read).await.status, 200);

        // A rectification is told to the partners that read the category.
        let res = as_(
            &app,
            &awa,
            Method::PUT,
            "/api/v1/me/data/housing",
            Some(serde_json::json!({"tenure": "owner"})),
        )
        .await;
        assert_eq!(res.status, 200);
        assert_eq!(res.header("x-notified-partners"), Some("renov-energie"));
        let recipients = as_(&app, &awa, Method::GET, "/api/v1/me/recipients", None)
            .await
            .json();
        assert_eq!(recipients["partners"], serde_json::json!(["renov-energie"]));
        let notes = as_partner(&app, &bearer, "/api/v1/partner/notifications")
            .await
            .json();
        let kinds: Vec<_> = notes["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["kind"].as_str().unwrap().to_string())
            .collect();
        assert!(kinds.contains(&"rectification".to_string()), "{kinds:?}");
    })
    .await;
}

#[tokio::test]
async fn requests_keep_their_deadlines_and_show_late_ones() {
    each_backend(|app| async move {
        let awa = app.login(AWA).await;
        let res = as_(
            &app,
            &awa,
            Method::POST,
            "/api/v1/me/requests",
            Some(serde_json::json!({"kind": "erasure"})),
        )
        .await;
        assert_eq!(res.status, 201, "{}", res.text());
        let first = res.json();
        assert_eq!(
            first["due_at"],
            coffre::service::rights::legal_deadline(T0, 1)
        );
        assert_eq!(first["late"], false);
        as_(
            &app,
            &awa,
            Method::POST,
            "/api/v1/me/requests",
            Some(serde_json::json!({"kind": "nonsense"})),
        )
        .await
        .assert_error(422, "unknown_request_kind");

        // Only the DPO lists them.
        let aidant = app.login(AIDANT).await;
        as_(&app, &aidant, Method::GET, "/api/v1/dpo/requests", None)
            .await
            .assert_error(403, "role_not_allowed");

        // A second request, extended within the first month.
        let second = as_(
            &app,
            &awa,
            Method::POST,
            "/api/v1/me/requests",
            Some(serde_json::json!({"kind": "objection", "purpose": "suivi-social-ccas"})),
        )
        .await
        .json();
        let dpo = app.login(DPO).await;
        let id2 = second["id"].as_str().unwrap();
        let res = as_(
            &app,
            &dpo,
            Method::POST,
            &format!("/api/v1/dpo/requests/{id2}/extend"),
            Some(serde_json::json!({"reason": "complexity"})),
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(
            res.json()["due_at"],
            coffre::service::rights::legal_deadline(T0, 3)
        );

        // Past the first one's due date: late, and too late to extend.
        app.clock
            .set(coffre::service::rights::legal_deadline(T0, 1) + 1);
        let dpo = app.login(DPO).await;
        let all = as_(&app, &dpo, Method::GET, "/api/v1/dpo/requests", None)
            .await
            .json();
        let id1 = first["id"].as_str().unwrap();
        let late: Vec<_> = all["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["late"] == true)
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(late, vec![id1.to_string()]);
        as_(
            &app,
            &dpo,
            Method::POST,
            &format!("/api/v1/dpo/requests/{id1}/extend"),
            Some(serde_json::json!({"reason": "complexity"})),
        )
        .await
        .assert_error(409, "extension_too_late");
        let res = as_(
            &app,
            &dpo,
            Method::POST,
            &format!("/api/v1/dpo/requests/{id1}/close"),
            Some(serde_json::json!({"outcome": "granted"})),
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text());
        as_(
            &app,
            &dpo,
            Method::POST,
            &format!("/api/v1/dpo/requests/{id1}/close"),
            Some(serde_json::json!({"outcome": "refused"})),
        )
        .await
        .assert_error(422, "refusal_reason_required");
        as_(
            &app,
            &dpo,
            Method::POST,
            &format!("/api/v1/dpo/requests/{id1}/close"),
            Some(serde_json::json!({"outcome": "refused", "reason": "because"})),
        )
        .await
        .assert_error(422, "unknown_refusal_reason");
        as_(
            &app,
            &dpo,
            Method::POST,
            &format!("/api/v1/dpo/requests/{id1}/close"),
            Some(serde_json::json!({"outcome": "refused", "reason": "excessive"})),
        )
        .await
        .assert_error(409, "invalid_transition");

        // The resident sees every change, with the extension's reason.
        let awa = app.login(AWA).await;
        let mine = as_(&app, &awa, Method::GET, "/api/v1/me/requests", None)
            .await
            .json();
        let r2 = mine["requests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id2)
            .unwrap()
            .clone();
        assert_eq!(r2["state"], "extended");
        assert_eq!(r2["history"][1]["reason"], "complexity");
        let r1 = mine["requests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id1)
            .unwrap()
            .clone();
        let states: Vec<_> = r1["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["state"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(states, ["received", "granted"]);
        assert_eq!(r1["late"], false);
    })
    .await;
}

async fn history_len(app: &TestApp, resident: &str, category: &str) -> usize {
    let vault = app.state.vault().unwrap();
    let c = vault.categories().category(category).unwrap();
    vault
        .read_history(&crate::support::resident_id(resident), &c)
        .await
        .unwrap()
        .len()
}

async fn verify_log(app: &TestApp) {
    let signer = app.state.checkpoint_signer().unwrap();
    app.state
        .audit
        .checkpoint(&signer, app.clock.now())
        .await
        .unwrap();
    let verifier = coffre::audit::note::NoteVerifier::parse(&signer.verifier_key()).unwrap();
    coffre::audit::verify::verify(&app.store, &verifier, app.state.audit.origin(), None)
        .await
        .unwrap_or_else(|e| panic!("audit verify failed after retention: {e:?}"));
}

#[tokio::test]
async fn the_retention_job_deletes_exactly_what_is_due_and_the_log_still_verifies() {
    each_backend(|app| async move {
        verify_log(&app).await;
        let vault = app.state.vault().unwrap();
        let write = |resident: &'static str, category: &'static str, v: serde_json::Value| {
            let app = &app;
            async move {
                let c = app
                    .state
                    .vault()
                    .unwrap()
                    .categories()
                    .category(category)
                    .unwrap();
                app.state
                    .vault()
                    .unwrap()
                    .write(
                        &crate::support::resident_id(resident),
                        &c,
                        &v,
                        app.clock.now(),
                    )
                    .await
                    .unwrap();
            }
        };
        let _ = vault;
        // Awa rectifies her housing ten days in: version 1 is superseded then.
        app.clock.set(T0 + 10 * DAY);
        write(AWA, "housing", serde_json::json!({"tenure": "owner"})).await;
        // Lucie refused the cultural agenda at T0 but keeps culture data;
        // Awa gave it, so hers stays.
        write(
            LUCIE,
            "culture",
            serde_json::json!({"interests": ["théâtre"]}),
        )
        .await;
        write(AWA, "culture", serde_json::json!({"interests": ["cinéma"]})).await;
        assert_eq!(history_len(&app, AWA, "housing").await, 2);

        // Day 20: nothing is due yet.
        let r = coffre::service::rights::run_retention(&app.state, T0 + 20 * DAY)
            .await
            .unwrap();
        assert_eq!((r.superseded_versions, r.records_without_consent), (0, 0));
        assert_eq!(history_len(&app, LUCIE, "culture").await, 1);

        // Day 31: the grace period runs from the later of her refusal
        // (day 0) and her last write (day 10): still kept.
        let r = coffre::service::rights::run_retention(&app.state, T0 + 31 * DAY)
            .await
            .unwrap();
        assert_eq!((r.superseded_versions, r.records_without_consent), (0, 0));
        assert_eq!(history_len(&app, LUCIE, "culture").await, 1);
        // Day 41: Lucie's culture data goes (no consent, grace over); Awa's stays.
        let r = coffre::service::rights::run_retention(&app.state, T0 + 41 * DAY)
            .await
            .unwrap();
        assert_eq!((r.superseded_versions, r.records_without_consent), (0, 1));
        assert_eq!(history_len(&app, LUCIE, "culture").await, 0);
        assert_eq!(history_len(&app, AWA, "culture").await, 1);
        // Her contact (held by public-task purposes too) stays.
        assert_eq!(history_len(&app, LUCIE, "contact").await, 1);

        // Housing keeps superseded versions 365 days after their replacement.
        let r = coffre::service::rights::run_retention(&app.state, T0 + 10 * DAY + 364 * DAY)
            .await
            .unwrap();
        assert_eq!(r.superseded_versions, 0);
        let r = coffre::service::rights::run_retention(&app.state, T0 + 10 * DAY + 365 * DAY)
            .await
            .unwrap();
        assert_eq!(r.superseded_versions, 1);
        assert_eq!(history_len(&app, AWA, "housing").await, 1);

        // Awa's consent to the cultural agenda expires (it was given for at
        // most the purpose's 365 days): her culture data goes once the grace
        // period after the end of validity is over, not before.
        let r = coffre::service::rights::run_retention(&app.state, T0 + 370 * DAY)
            .await
            .unwrap();
        assert_eq!(r.records_without_consent, 0);
        assert_eq!(history_len(&app, AWA, "culture").await, 1);
        let r = coffre::service::rights::run_retention(&app.state, T0 + 400 * DAY)
            .await
            .unwrap();
        assert_eq!(r.records_without_consent, 1);
        assert_eq!(history_len(&app, AWA, "culture").await, 0);

        // Every purge is in the log, as counts; and the log verifies.
        let size = app.state.audit.size().await.unwrap();
        let entries: Vec<_> = app
            .store
            .audit_entries(0, size)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, l)| coffre::audit::AuditEntry::decode(&l).unwrap())
            .collect();
        let purges: Vec<_> = entries
            .iter()
            .filter(|e| e.action == "retention.purge")
            .map(|e| (e.category.clone().unwrap(), e.reason.clone()))
            .collect();
        assert!(
            purges.contains(&("records_without_consent".into(), "count:1".into())),
            "{purges:?}"
        );
        assert!(
            purges.contains(&("superseded_versions".into(), "count:1".into())),
            "{purges:?}"
        );
        verify_log(&app).await;
    })
    .await;
}

#[tokio::test]
async fn withdrawing_a_consent_that_erases_deletes_what_it_alone_held() {
    each_backend(|app| async move {
        let awa = app.login(AWA).await;
        as_(
            &app,
            &awa,
            Method::PUT,
            "/api/v1/me/data/culture",
            Some(serde_json::json!({"interests": ["cinéma"]})),
        )
        .await;
        let consents = as_(&app, &awa, Method::GET, "/api/v1/me/consents", None)
            .await
            .json();
        let id = consents["consents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["purpose"] == "agenda-culturel")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let res = as_(
            &app,
            &awa,
            Method::POST,
            &format!("/api/v1/me/consents/{id}/withdraw"),
            None,
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text());
        // Culture was held only for the agenda: gone. Contact is held for
        // public tasks too: kept.
        assert_eq!(history_len(&app, AWA, "culture").await, 0);
        assert_eq!(history_len(&app, AWA, "contact").await, 1);
        let size = app.state.audit.size().await.unwrap();
        let (_, leaf) = app
            .store
            .audit_entries(size - 1, size)
            .await
            .unwrap()
            .pop()
            .unwrap();
        let e = coffre::audit::AuditEntry::decode(&leaf).unwrap();
        assert_eq!(
            (e.action.as_str(), e.category.as_deref()),
            ("erasure.purpose", Some("culture"))
        );
    })
    .await;
}

#[tokio::test]
async fn the_dpo_reads_the_register_of_processing() {
    each_backend(|app| async move {
        let dpo = app.login(DPO).await;
        let reg = as_(&app, &dpo, Method::GET, "/api/v1/dpo/register", None).await;
        assert_eq!(reg.status, 200, "{}", reg.text());
        assert_eq!(reg.json()["purposes"].as_array().unwrap().len(), 11);
        // The printable page is public.
        let page = app.get("/registre").await;
        assert_eq!(page.status, 200);
        assert!(page.text().contains("Registre des activités de traitement"));
        assert!(page.text().contains("mission de service public"));
        // C11: the sources stand beside the purposes, on the public page
        // and the DPO's.
        for source in ["regie-eau", "energie-locale"] {
            assert!(
                page.text().contains(&format!("id=\"s-{source}\"")),
                "{source}"
            );
        }
        assert!(page.text().contains("Sources de données"));
        let space = as_(&app, &dpo, Method::GET, "/dpo", None).await;
        assert_eq!(space.status, 200);
        assert!(space.text().contains("Régie des eaux") && space.text().contains("Énergie Locale"));
        let awa = app.login(AWA).await;
        as_(&app, &awa, Method::GET, "/api/v1/dpo/register", None)
            .await
            .assert_error(403, "role_not_allowed");
    })
    .await;
}

/// A rights request id the path cannot hold (parsed once at the edge) is
/// answered as an unknown one: 404 to the DPO, after the checks of the
/// body and of the caller's role that come first, as for any id.
#[tokio::test]
async fn a_malformed_request_id_is_answered_as_an_unknown_one() {
    each_backend(|app| async move {
        let dpo = app.login(DPO).await;
        let awa = app.login(AWA).await;
        for id in ["no-such-request", "bad%20id", "%C3%A9t%C3%A9"] {
            let extend = format!("/api/v1/dpo/requests/{id}/extend");
            let close = format!("/api/v1/dpo/requests/{id}/close");
            let complexity = serde_json::json!({"reason": "complexity"});
            as_(&app, &dpo, Method::POST, &extend, Some(complexity.clone()))
                .await
                .assert_error(404, "not_found");
            as_(
                &app,
                &dpo,
                Method::POST,
                &extend,
                Some(serde_json::json!({"reason": "x"})),
            )
            .await
            .assert_error(422, "invalid_reason");
            as_(
                &app,
                &dpo,
                Method::POST,
                &close,
                Some(serde_json::json!({"outcome": "granted"})),
            )
            .await
            .assert_error(404, "not_found");
            as_(
                &app,
                &dpo,
                Method::POST,
                &close,
                Some(serde_json::json!({"outcome": "maybe"})),
            )
            .await
            .assert_error(422, "invalid_outcome");
            as_(&app, &awa, Method::POST, &extend, Some(complexity))
                .await
                .assert_error(403, "role_not_allowed");
        }
    })
    .await;
}
