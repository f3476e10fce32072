//! Issue 19, the trust defects found when the service was tried as an
//! attacker would: each finding has a test here that failed on the main
//! it was found on (on both backends where storage is involved). The full
//! disk and the crashing log are process-level, in `faults.rs`.

use axum::http::Method;
use coffre::domain::Demarche;
use coffre::domain::mandate::totp;

use crate::support::{TestApp, each_backend};

const AWA: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000001";
const LUCIE: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000003";
const AIDANT: &str = "a1d00000-0000-4000-8000-000000000001";
const REFERENT: &str = "a1d00000-0000-4000-8000-000000000003";
const DPO: &str = "a1d00000-0000-4000-8000-000000000004";
const CCAS: &str = coffre::demo::STRUCTURE_CCAS;

/// §2: under a logement mandate, an aidant gave explicit consent to the
/// health purpose by asking for a subset of its categories that logement
/// reaches; and could overwrite the resident's own decision.
#[tokio::test]
async fn an_aidant_never_consents_beyond_the_mandate_nor_over_the_residents_decision() {
    each_backend(|app| async move {
        app.mandate(LUCIE, &[Demarche::Logement, Demarche::Famille], 31).await;
        let before: Vec<_> = app
            .store
            .consents_of(&crate::support::resident_id(LUCIE))
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.purpose, c.seq))
            .collect();
        let aidant = app.login(AIDANT).await;
        let path = |d: &str| format!("/api/v1/aidant/residents/{LUCIE}/consents?demarche={d}");
        let give = |purpose: &str, cats: &[&str]| {
            serde_json::json!({"purpose": purpose, "decision": "given", "categories": cats})
        };
        // Explicit (art. 9) consent is the resident's own act, whatever
        // subset is asked for.
        let res = app
            .as_user(
                &aidant,
                Method::POST,
                &path("logement"),
                Some(serde_json::json!({"purpose": "sante-territoriale", "decision": "given", "categories": ["household"], "explicit": true})),
            )
            .await;
        res.assert_error(403, "explicit_consent_resident_only");
        let e = app.last_entry().await;
        assert_eq!(
            (e.decision, e.reason.as_str()),
            (
                coffre::audit::Decision::Deny,
                "explicit_consent_resident_only"
            )
        );
        // A purpose whose categories reach beyond the démarche (mobility),
        // even when only categories inside it are asked for.
        app.as_user(
            &aidant,
            Method::POST,
            &path("logement"),
            Some(give("etude-mobilite", &["household", "housing"])),
        )
        .await
        .assert_error(403, "outside_demarche");
        // Nothing was recorded for Lucie.
        let after: Vec<_> = app
            .store
            .consents_of(&crate::support::resident_id(LUCIE))
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.purpose, c.seq))
            .collect();
        assert_eq!(after, before);

        // The resident's own decision stands against the aidant…
        let lucie = app.login(LUCIE).await;
        let mine = app
            .as_user(
                &lucie,
                Method::POST,
                "/api/v1/me/consents",
                Some(give("cantine-scolaire", &["school"])),
            )
            .await;
        assert_eq!(mine.status, 200, "{}", mine.text());
        let res = app
            .as_user(
                &aidant,
                Method::POST,
                &path("famille"),
                Some(give(
                    "cantine-scolaire",
                    &["school", "household", "contact"],
                )),
            )
            .await;
        res.assert_error(409, "resident_decision_stands");
        let refuse = serde_json::json!({"purpose": "cantine-scolaire", "decision": "refused"});
        app.as_user(&aidant, Method::POST, &path("famille"), Some(refuse))
            .await
            .assert_error(409, "resident_decision_stands");
        let c = app
            .store
            .find_consent(&crate::support::resident_id(LUCIE), &crate::support::purpose_id("cantine-scolaire"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((c.state.as_str(), crate::support::joined(&c.categories).as_str()), ("given", "school"));
    })
    .await;
}

/// §3: an aidant without the right to create mandates created and widened
/// them through renew → confirm.
#[tokio::test]
async fn the_right_to_create_mandates_is_checked_at_every_step() {
    each_backend(|app| async move {
        let id = app.mandate(LUCIE, &[Demarche::Logement], 31).await;
        let aidant = app.login(AIDANT).await;
        // A draft made while the right was held…
        let draft = app
            .as_user(
                &aidant,
                Method::POST,
                "/api/v1/mandates/drafts",
                Some(serde_json::json!({"demarches": ["logement"], "duration_days": 31})),
            )
            .await;
        assert_eq!(draft.status, 201, "{}", draft.text());
        assert!(draft.header("x-audit-entry").is_some(), "draft audited");
        let draft_id = draft.json()["id"].as_str().unwrap().to_string();
        set_can_create(&app, false).await;
        for (path, body) in [
            (
                "/api/v1/mandates/drafts".to_string(),
                serde_json::json!({"demarches": ["logement"], "duration_days": 31}),
            ),
            (
                format!("/api/v1/mandates/{id}/renew"),
                serde_json::json!({"demarches": ["logement", "argent", "famille", "papiers", "social"], "duration_days": 365}),
            ),
            (
                format!("/api/v1/mandates/drafts/{draft_id}/confirm"),
                serde_json::json!({"resident_confirmed": true, "totp": "123456"}),
            ),
        ] {
            let res = app
                .as_user(&aidant, Method::POST, &path, Some(body))
                .await;
            res.assert_error(403, "cannot_create_mandates");
            let e = app.last_entry().await;
            assert_eq!(
                (e.decision, e.reason.as_str()),
                (coffre::audit::Decision::Deny, "cannot_create_mandates"),
                "{path}"
            );
        }
        // With the right back, a renewal is a new, audited draft.
        set_can_create(&app, true).await;
        let res = app
            .as_user(
                &aidant,
                Method::POST,
                &format!("/api/v1/mandates/{id}/renew"),
                Some(serde_json::json!({})),
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.text());
        let e = app.last_entry().await;
        assert_eq!(
            (e.action.as_str(), e.resident_id.as_deref()),
            ("mandate.renew", Some(LUCIE))
        );
    })
    .await;
}

async fn set_can_create(app: &TestApp, allowed: bool) {
    let p = app.raw_pool().await;
    sqlx::query("UPDATE agents SET can_create_mandates = $1 WHERE id = $2")
        .bind(allowed)
        .bind(AIDANT)
        .execute(&p)
        .await
        .unwrap();
    p.close().await;
}

/// §4: a référent deactivated an aidant working for another structure too,
/// and reactivated an agent an administrator had deactivated.
#[tokio::test]
async fn a_referent_acts_on_their_structure_only() {
    each_backend(|app| async move {
        app.store
            .insert_structure(
                &coffre::storage::StructureRow {
                    id: crate::support::sid("france-services"),
                    siret: "73282932000074".into(),
                    name: "France Services".into(),
                    allowed_demarches: crate::support::demarches("logement"),
                    active: true,
                },
                app.clock.now(),
            )
            .await
            .unwrap();
        app.store
            .add_agent_structure(
                &crate::support::aid(AIDANT),
                &crate::support::sid("france-services"),
            )
            .await
            .unwrap();
        let referent = app.login(REFERENT).await;
        let aidant = app.login(AIDANT).await;
        let res = app
            .as_user(
                &referent,
                Method::POST,
                &format!("/api/v1/referent/aidants/{AIDANT}/deactivate"),
                None,
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let listed = res.json()["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == AIDANT)
            .unwrap()
            .clone();
        assert_eq!(listed["active"], false);
        // The account stands: out of the CCAS only.
        assert!(
            app.store
                .find_agent(&crate::support::aid(AIDANT))
                .await
                .unwrap()
                .unwrap()
                .active
        );
        app.as_user(&aidant, Method::GET, "/api/v1/aidant/residents", None)
            .await
            .assert_error(403, "structure_inactive");
        // They cannot switch back to the CCAS; France Services works.
        app.as_user(
            &aidant,
            Method::PUT,
            "/api/v1/aidant/structure",
            Some(serde_json::json!({"structure_id": CCAS})),
        )
        .await
        .assert_error(404, "not_found");
        let res = app
            .as_user(
                &aidant,
                Method::PUT,
                "/api/v1/aidant/structure",
                Some(serde_json::json!({"structure_id": "france-services"})),
            )
            .await;
        assert_eq!(res.status, 204, "{}", res.text());
        assert!(res.header("x-audit-entry").is_some());
        let res = app
            .as_user(&aidant, Method::GET, "/api/v1/aidant/residents", None)
            .await;
        assert_eq!(res.status, 200, "{}", res.text());

        // An administrator's deactivation is not undone by the référent.
        assert!(
            app.store
                .set_agent_active(&crate::support::aid(AIDANT), false, app.clock.now())
                .await
                .unwrap()
        );
        let res = app
            .as_user(
                &referent,
                Method::POST,
                &format!("/api/v1/referent/aidants/{AIDANT}/activate"),
                None,
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert!(
            !app.store
                .find_agent(&crate::support::aid(AIDANT))
                .await
                .unwrap()
                .unwrap()
                .active
        );
    })
    .await;
}

/// §6: concurrent DPO approvals of noisy aggregates spent 6 and 8 of a
/// budget of 5.
#[tokio::test]
async fn concurrent_approvals_never_overspend_the_epsilon_budget() {
    each_backend(|app| async move {
        let token = app
            .partner_token(
                "demo-labo-mobilite",
                "demo-secret-labo-mobilite-not-for-production",
            )
            .await;
        let auth = format!("Bearer {token}");
        let mut ids = Vec::new();
        for _ in 0..8 {
            let res = app
                .send(
                    Method::POST,
                    "/api/v1/partner/extracts",
                    &[
                        ("authorization", auth.as_str()),
                        ("content-type", "application/json"),
                    ],
                    serde_json::json!({"purpose": "etude-mobilite", "kind": "aggregate", "categories": ["housing"], "group_by": ["housing.tenure"], "epsilon": 2})
                        .to_string(),
                )
                .await;
            assert_eq!(res.status, 201, "{}", res.text());
            ids.push(res.json()["id"].as_str().unwrap().to_string());
        }
        // The check-and-spend itself, raced: exactly two of eight fit.
        let now = app.clock.now();
        let outcomes = futures_util::future::join_all(ids.iter().map(|id| {
            let store = app.store.clone();
            let id = id.clone();
            tokio::spawn(async move { store.extract_approve(&crate::support::eid(&id), 5.0, now).await.unwrap() })
        }))
        .await;
        let approved = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(coffre::storage::ApproveOutcome::Approved)))
            .count();
        assert_eq!(approved, 2, "ε = 2 each against a budget of 5: {outcomes:?}");
        assert!(outcomes.iter().all(|o| matches!(
            o,
            Ok(coffre::storage::ApproveOutcome::Approved
                | coffre::storage::ApproveOutcome::BudgetExhausted)
        )));
        let spent = app.store.epsilon_spent(&crate::support::pid("labo-mobilite")).await.unwrap();
        assert!((spent - 4.0).abs() < 1e-9, "spent {spent}");
        // Through the DPO's route, the refusal is audited with its reason.
        let dpo = app.login(DPO).await;
        let rest = ids
            .iter()
            .find(|id| {
                !outcomes.iter().zip(ids.iter()).any(|(o, i)| {
                    i == *id && matches!(o, Ok(coffre::storage::ApproveOutcome::Approved))
                })
            })
            .unwrap();
        app.as_user(&dpo, Method::POST, &format!("/api/v1/dpo/extracts/{rest}/approve"), None)
            .await
            .assert_error(409, "epsilon_budget_exhausted");
        let e = app.last_entry().await;
        assert_eq!(
            (e.decision, e.reason.as_str()),
            (coffre::audit::Decision::Deny, "epsilon_budget_exhausted")
        );
    })
    .await;
}

/// §10: 64 parallel wrong codes got 5 to 8 evaluated before the lock.
#[tokio::test]
async fn parallel_wrong_totp_codes_get_at_most_five_tries() {
    each_backend(|app| async move {
        let now = app.clock.now();
        let secret =
            coffre::service::mandates::enroll_totp(&app.state, &crate::support::aid(AIDANT), now)
                .await
                .unwrap();
        let right = totp::code(&secret, totp::step_at(now));
        let wrong = if right == "000000" {
            "111111"
        } else {
            "000000"
        };
        let outcomes = futures_util::future::join_all((0..64).map(|_| {
            let state = app.state.clone();
            tokio::spawn(async move {
                match coffre::service::mandates::check_totp(
                    &state,
                    &crate::support::aid(AIDANT),
                    Some(wrong),
                    now,
                )
                .await
                {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e.code_and_status().0.to_string(),
                }
            })
        }))
        .await;
        let evaluated = outcomes
            .iter()
            .filter(|o| o.as_deref().ok() == Some("totp_invalid"))
            .count();
        let locked = outcomes
            .iter()
            .filter(|o| o.as_deref().ok() == Some("totp_locked"))
            .count();
        assert_eq!((evaluated, locked), (5, 59), "{outcomes:?}");
        // Locked even against the right code.
        let e = coffre::service::mandates::check_totp(
            &app.state,
            &crate::support::aid(AIDANT),
            Some(&right),
            now,
        )
        .await
        .unwrap_err();
        assert_eq!(e.code_and_status().0, "totp_locked");
    })
    .await;
}

/// §7: a mandate, its attestation page and a partner's notifications were
/// disclosed without an entry, and answered 200 while the log was down.
#[tokio::test]
async fn mandate_reads_and_partner_notifications_are_audited_and_fail_closed() {
    each_backend(|app| async move {
        let id = app.mandate(LUCIE, &[Demarche::Logement], 31).await;
        let aidant = app.login(AIDANT).await;
        let lucie = app.login(LUCIE).await;
        let res = app
            .as_user(
                &aidant,
                Method::GET,
                &format!("/api/v1/mandates/{id}"),
                None,
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert!(res.header("x-audit-entry").is_some());
        let e = app.last_entry().await;
        assert_eq!(
            (e.action.as_str(), e.resident_id.as_deref()),
            ("mandate.read", Some(LUCIE))
        );
        let page = app
            .as_user(
                &lucie,
                Method::GET,
                &format!("/mandates/{id}/attestation"),
                None,
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.text());
        let e = app.last_entry().await;
        assert_eq!(
            (e.action.as_str(), e.actor_id.as_str()),
            ("mandate.read", LUCIE)
        );
        let token = app
            .partner_token(
                "demo-labo-mobilite",
                "demo-secret-labo-mobilite-not-for-production",
            )
            .await;
        let auth = format!("Bearer {token}");
        let res = app
            .send(
                Method::GET,
                "/api/v1/partner/notifications",
                &[("authorization", auth.as_str())],
                "",
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert!(res.header("x-audit-entry").is_some());

        app.audit_down().await;
        app.as_user(
            &aidant,
            Method::GET,
            &format!("/api/v1/mandates/{id}"),
            None,
        )
        .await
        .assert_error(503, "audit_unavailable");
        let page = app
            .as_user(
                &lucie,
                Method::GET,
                &format!("/mandates/{id}/attestation"),
                None,
            )
            .await;
        assert_eq!(page.status, 503, "{}", page.text());
        assert!(!page.text().contains("CCAS de l"), "{}", page.text());
        app.send(
            Method::GET,
            "/api/v1/partner/notifications",
            &[("authorization", auth.as_str())],
            "",
        )
        .await
        .assert_error(503, "audit_unavailable");
        // A switch of structure is refused before it happens.
        app.as_user(
            &aidant,
            Method::PUT,
            "/api/v1/aidant/structure",
            Some(serde_json::json!({"structure_id": CCAS})),
        )
        .await
        .assert_error(503, "audit_unavailable");
        // Creating a draft too.
        app.as_user(
            &aidant,
            Method::POST,
            "/api/v1/mandates/drafts",
            Some(serde_json::json!({"demarches": ["logement"], "duration_days": 31})),
        )
        .await
        .assert_error(503, "audit_unavailable");
        let _ = AWA;
    })
    .await;
}

/// §11: the SQLite database, its WAL and shared-memory files were 0644.
#[tokio::test]
async fn sqlite_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("data");
    let url = format!("sqlite://{}", folder.join("coffre.db").display());
    let app = crate::support::build_app(&url, "sqlite", true).await;
    let s = app.login(AWA).await;
    assert_eq!(
        app.as_user(&s, Method::GET, "/api/v1/me/data", None)
            .await
            .status,
        200
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&folder), 0o700, "folder");
    for f in ["coffre.db", "coffre.db-wal", "coffre.db-shm"] {
        let p = folder.join(f);
        assert!(p.exists(), "{f} exists");
        assert_eq!(mode(&p), 0o600, "{f}");
    }
    app.store.close().await;
    // An existing database made wider is narrowed at the next open.
    std::fs::set_permissions(
        folder.join("coffre.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let store = coffre::storage::open(&coffre::config::DatabaseUrl::Sqlite {
        path: folder.join("coffre.db"),
    })
    .await
    .unwrap();
    assert_eq!(mode(&folder.join("coffre.db")), 0o600);
    store.close().await;
}

/// §12: an aidant told a real resident id from a random one
/// (`resident_not_found` against `no_active_mandate`).
#[tokio::test]
async fn an_aidant_cannot_tell_a_resident_from_a_random_id() {
    each_backend(|app| async move {
        let aidant = app.login(AIDANT).await;
        let random = "0b9a3c1e-0000-4000-8000-00000000abcd";
        for d in ["logement", "famille"] {
            let real = app
                .as_user(
                    &aidant,
                    Method::GET,
                    &format!("/api/v1/aidant/residents/{LUCIE}/data/housing?demarche={d}"),
                    None,
                )
                .await;
            let fake = app
                .as_user(
                    &aidant,
                    Method::GET,
                    &format!("/api/v1/aidant/residents/{random}/data/housing?demarche={d}"),
                    None,
                )
                .await;
            assert_eq!(real.status, fake.status, "{d}");
            assert_eq!(real.json()["error"], fake.json()["error"], "{d}");
        }
    })
    .await;
}

/// §12: the client's `X-Request-Id` went verbatim into audit entries.
/// Now the log records coffre's own id, whatever the client sent.
#[tokio::test]
async fn a_clients_request_id_never_enters_the_audit_log() {
    each_backend(|app| async move {
        let s = app.login(AWA).await;
        let mut seen = std::collections::BTreeSet::new();
        for sent in [
            "trace-42.a:b_c",
            "awa.diallo@example.org",
            "Awa Diallo 0612345678",
            "187041234567890",
            &"x".repeat(65) as &str,
        ] {
            let res = app
                .send(
                    Method::GET,
                    "/api/v1/me/data/contact",
                    &[("cookie", s.cookie.as_str()), ("x-request-id", sent)],
                    "",
                )
                .await;
            assert_eq!(res.status, 200, "{}", res.text());
            let e = app.last_entry().await;
            let recorded = e.request_id.clone().unwrap_or_default();
            assert!(
                uuid::Uuid::parse_str(&recorded).is_ok(),
                "{sent:?} → {recorded:?}"
            );
            assert_eq!(res.header("x-request-id"), Some(recorded.as_str()));
            assert!(seen.insert(recorded), "one id per request");
        }
    })
    .await;
}

/// §12: `unknown_category` echoed input of any length.
#[tokio::test]
async fn unknown_names_are_never_echoed_at_length() {
    each_backend(|app| async move {
        let s = app.login(AWA).await;
        let long = "a".repeat(3000);
        for path in [
            format!("/api/v1/me/data/{long}"),
            format!("/moi/donnees/{long}"),
        ] {
            let method = if path.starts_with("/moi") {
                Method::POST
            } else {
                Method::GET
            };
            let res = app.as_user(&s, method, &path, None).await;
            assert!(res.status.is_client_error(), "{path}: {}", res.status);
            assert!(
                !res.text().contains(&"a".repeat(100)),
                "{}: echoed {} bytes",
                res.status,
                res.body.len()
            );
        }
        let consent = app
            .as_user(
                &s,
                Method::POST,
                "/api/v1/me/consents",
                Some(serde_json::json!({"purpose": "agenda-culturel", "decision": "given", "categories": [long]})),
            )
            .await;
        assert!(!consent.text().contains(&"a".repeat(100)), "{}", consent.text());
        let aidant = app.login(AIDANT).await;
        let res = app
            .as_user(
                &aidant,
                Method::GET,
                &format!("/api/v1/aidant/residents/{LUCIE}/data/{long}?demarche=logement"),
                None,
            )
            .await;
        assert!(!res.text().contains(&"a".repeat(100)), "{}", res.text());
        let token = app
            .partner_token(
                "demo-labo-mobilite",
                "demo-secret-labo-mobilite-not-for-production",
            )
            .await;
        let auth = format!("Bearer {token}");
        for (method, path, body) in [
            (
                Method::POST,
                "/api/v1/partner/extracts".to_string(),
                serde_json::json!({"purpose": "etude-mobilite", "kind": "records", "categories": [long]}).to_string(),
            ),
            (
                Method::POST,
                "/api/v1/partner/extracts".to_string(),
                serde_json::json!({"purpose": long, "kind": "records", "categories": ["housing"]}).to_string(),
            ),
            (
                Method::GET,
                format!("/api/v1/partner/residents/{long}/data/{long}?purpose=etude-mobilite"),
                String::new(),
            ),
        ] {
            let res = app
                .send(
                    method,
                    &path,
                    &[
                        ("authorization", auth.as_str()),
                        ("content-type", "application/json"),
                    ],
                    body,
                )
                .await;
            assert!(
                !res.text().contains(&"a".repeat(100)),
                "{path}: {}",
                res.text()
            );
        }
    })
    .await;
}

/// §12: the token endpoint, logins and TOTP step-ups had no rate limit.
#[tokio::test]
async fn guessing_routes_are_rate_limited_with_retry_after() {
    use base64::Engine;
    each_backend(|app| async move {
        // The token endpoint, per client: wrong secrets are cut off…
        let basic = |secret: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("demo-labo-mobilite:{secret}"))
            )
        };
        let token = |auth: String| {
            let app = &app;
            async move {
                app.send(
                    Method::POST,
                    "/oauth/token",
                    &[
                        ("authorization", auth.as_str()),
                        ("content-type", "application/x-www-form-urlencoded"),
                    ],
                    "grant_type=client_credentials",
                )
                .await
            }
        };
        let mut limited = None;
        for i in 0..100 {
            let res = token(basic(&format!("guess-{i}"))).await;
            if res.status == 429 {
                limited = Some((i, res));
                break;
            }
            assert_eq!(res.status, 401, "{}", res.text());
        }
        let (after, res) = limited.expect("never limited");
        assert_eq!(after, 30, "the client's burst");
        res.assert_error(429, "rate_limited");
        let wait: u64 = res.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        // …the right secret too, until the bucket refills.
        token(basic("demo-secret-labo-mobilite-not-for-production"))
            .await
            .assert_error(429, "rate_limited");
        app.clock.advance(wait as i64);
        assert_eq!(
            token(basic("demo-secret-labo-mobilite-not-for-production"))
                .await
                .status,
            200
        );
        // Successes never count against the client: a partner keeps its
        // access while someone else guesses.
        for _ in 0..40 {
            assert_eq!(
                token(basic("demo-secret-labo-mobilite-not-for-production"))
                    .await
                    .status,
                200
            );
        }
        // Logins, per address.
        let mut statuses = Vec::new();
        for _ in 0..70 {
            let res = app
                .send(
                    Method::POST,
                    "/dev/login",
                    &[("content-type", "application/x-www-form-urlencoded")],
                    format!("persona={AWA}"),
                )
                .await;
            statuses.push(res.status.as_u16());
        }
        assert!(statuses[..60].iter().all(|s| *s == 303), "{statuses:?}");
        assert!(statuses[60..].iter().all(|s| *s == 429), "{statuses:?}");
        // TOTP step-ups, per address.
        app.clock.advance(3600);
        let aidant = app.login(AIDANT).await;
        let id = app.mandate(LUCIE, &[Demarche::Logement], 31).await;
        let mut statuses = Vec::new();
        for _ in 0..25 {
            let res = app
                .as_user(
                    &aidant,
                    Method::POST,
                    &format!("/api/v1/mandates/{id}/revoke"),
                    Some(serde_json::json!({"totp": "000000"})),
                )
                .await;
            statuses.push(res.status.as_u16());
        }
        assert!(statuses[..20].iter().all(|s| *s == 403), "{statuses:?}");
        assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");
    })
    .await;
}

/// `renov-energie`'s bearer header, having listed the residents (so that
/// it knows its pseudonyms), and its pseudonym of Awa.
async fn renov_knowing_awa(app: &TestApp) -> (String, String) {
    let bearer = app
        .partner_token(
            "demo-renov-energie",
            "demo-secret-renov-energie-not-for-production",
        )
        .await;
    let auth = format!("Bearer {bearer}");
    let list = app
        .send(
            Method::GET,
            "/api/v1/partner/residents?purpose=renovation-energetique",
            &[("authorization", auth.as_str())],
            "",
        )
        .await;
    assert_eq!(list.status, 200, "{}", list.text());
    let awa_p = app
        .keys
        .current()
        .pseudonym("partner:renov-energie", AWA.as_bytes());
    (auth, awa_p)
}

/// §8: rectification, restriction and erasure found the partners to tell
/// by decoding the resident's whole audit history, after the write had
/// committed; a notice lost past the timeout left the write standing. Now:
/// an index the log's writer fills (plus the short tail), and the notice
/// is written in the change's own transaction.
#[tokio::test]
async fn art19_notices_come_from_the_recipients_index_and_commit_with_the_change() {
    each_backend(|app| async move {
        let (auth, awa_p) = renov_knowing_awa(&app).await;
        let read = format!(
            "/api/v1/partner/residents/{awa_p}/data/housing?purpose=renovation-energetique"
        );
        let res = app
            .send(Method::GET, &read, &[("authorization", auth.as_str())], "")
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        // Not indexed yet: found in the tail.
        let tail = coffre::service::rights::recipients_of(
            &app.state,
            &crate::support::resident_id(AWA),
            Some("housing"),
        )
        .await
        .unwrap();
        assert_eq!(tail.into_iter().collect::<Vec<_>>(), ["renov-energie"]);
        // Indexed: found in the index, and only for what was received.
        while coffre::audit::indexes::index_recipients(&app.store, 7)
            .await
            .unwrap()
            > 0
        {}
        let (indexed, upto) = app
            .store
            .audit_recipients_of(&crate::support::resident_id(AWA))
            .await
            .unwrap();
        assert_eq!(upto, app.state.audit.size().await.unwrap());
        assert_eq!(
            indexed,
            [("renov-energie".to_string(), "housing".to_string())]
        );
        for (category, want) in [
            (Some("housing"), vec!["renov-energie"]),
            (Some("contact"), vec![]),
            (None, vec!["renov-energie"]),
        ] {
            let got = coffre::service::rights::recipients_of(
                &app.state,
                &crate::support::resident_id(AWA),
                category,
            )
            .await
            .unwrap();
            assert_eq!(got.into_iter().collect::<Vec<_>>(), want, "{category:?}");
        }
        // Another resident, who nobody read: nobody to tell.
        assert!(
            coffre::service::rights::recipients_of(
                &app.state,
                &crate::support::resident_id(LUCIE),
                None
            )
            .await
            .unwrap()
            .is_empty()
        );

        // The notice cannot be written: the rectification does not stand.
        let awa = app.login(AWA).await;
        let before = app
            .store
            .latest_record_version(&crate::support::resident_id(AWA), "housing")
            .await
            .unwrap();
        let p = app.raw_pool().await;
        sqlx::query("ALTER TABLE recipient_notifications RENAME TO recipient_notifications_away")
            .execute(&p)
            .await
            .unwrap();
        let res = app
            .as_user(
                &awa,
                Method::PUT,
                "/api/v1/me/data/housing",
                Some(serde_json::json!({"tenure": "owner"})),
            )
            .await;
        assert!(res.status.is_server_error(), "{}", res.text());
        assert_eq!(
            app.store
                .latest_record_version(&crate::support::resident_id(AWA), "housing")
                .await
                .unwrap(),
            before
        );
        let res = app
            .as_user(
                &awa,
                Method::POST,
                "/api/v1/me/restriction",
                Some(serde_json::json!({"restricted": true})),
            )
            .await;
        assert!(res.status.is_server_error(), "{}", res.text());
        assert_eq!(
            app.store
                .restricted_since(&crate::support::resident_id(AWA))
                .await
                .unwrap(),
            None
        );
        sqlx::query("ALTER TABLE recipient_notifications_away RENAME TO recipient_notifications")
            .execute(&p)
            .await
            .unwrap();
        p.close().await;
        // With the table back, change and notice go together.
        let res = app
            .as_user(
                &awa,
                Method::PUT,
                "/api/v1/me/data/housing",
                Some(serde_json::json!({"tenure": "owner"})),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.header("x-notified-partners"), Some("renov-energie"));
        let notes = app
            .send(
                Method::GET,
                "/api/v1/partner/notifications",
                &[("authorization", auth.as_str())],
                "",
            )
            .await
            .json();
        assert_eq!(
            notes["notifications"].as_array().unwrap().len(),
            1,
            "{notes}"
        );
        assert_eq!(notes["notifications"][0]["pseudonym"], awa_p.as_str());
    })
    .await;
}

/// §8, the window the review found: a partner read landing between the
/// notices' computation and the change's commit got the old value; it is
/// told too, once, after the commit.
#[tokio::test]
async fn a_read_racing_a_rectification_is_told_too() {
    each_backend(|app| async move {
        let (auth, awa_p) = renov_knowing_awa(&app).await;
        // The notices were computed here (nobody to tell)…
        let since = app.state.audit.size().await.unwrap();
        let told = coffre::service::rights::recipients_of(
            &app.state,
            &crate::support::resident_id(AWA),
            Some("housing"),
        )
        .await
        .unwrap();
        assert!(told.is_empty());
        // …then the partner reads, before the change commits.
        let res = app
            .send(
                Method::GET,
                &format!(
                    "/api/v1/partner/residents/{awa_p}/data/housing?purpose=renovation-energetique"
                ),
                &[("authorization", auth.as_str())],
                "",
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let late = coffre::service::rights::notify_late_recipients(
            &app.state,
            &crate::support::resident_id(AWA),
            coffre::domain::rights::NoticeKind::Rectification,
            coffre::domain::category::Category::recorded("housing").as_ref(),
            since,
            &told,
            app.clock.now(),
        )
        .await;
        assert_eq!(late, ["renov-energie"]);
        // Already told: not twice; another category: not at all.
        for (category, told) in [
            (Some("housing"), late.iter().cloned().collect()),
            (Some("contact"), std::collections::BTreeSet::new()),
        ] {
            let again = coffre::service::rights::notify_late_recipients(
                &app.state,
                &crate::support::resident_id(AWA),
                coffre::domain::rights::NoticeKind::Rectification,
                coffre::domain::category::Category::recorded(category.unwrap_or_default()).as_ref(),
                since,
                &told,
                app.clock.now(),
            )
            .await;
            assert!(again.is_empty(), "{category:?}: {again:?}");
        }
        let notes = app
            .send(
                Method::GET,
                "/api/v1/partner/notifications",
                &[("authorization", auth.as_str())],
                "",
            )
            .await
            .json();
        assert_eq!(
            notes["notifications"].as_array().unwrap().len(),
            1,
            "{notes}"
        );
    })
    .await;
}
