//! Alerts to the référent (issue 23): a mandate out of hours, a burst of
//! mandates by one aidant and an act on behalf at night raise alerts; an
//! ordinary day raises none; the référent alone reads and reviews them,
//! each review audited; the rules are the structure's.

use axum::http::Method;
use coffre::domain::{Demarche, Role};
use coffre::service::Caller;

use crate::support::{TestApp, each_backend};

const AWA: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000001";
const LUCIE: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000003";
const AIDANT: &str = "a1d00000-0000-4000-8000-000000000001";
const REFERENT: &str = "a1d00000-0000-4000-8000-000000000003";
/// Tuesday 1 December 2026, 10:00 in Paris (UTC+1).
const TUESDAY_10H: i64 = 1_796_115_600;

async fn alerts(app: &TestApp) -> Vec<serde_json::Value> {
    let s = app.login(REFERENT).await;
    let res = app
        .as_user(&s, Method::GET, "/api/v1/referent/alerts", None)
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()["alerts"].as_array().unwrap().clone()
}

fn kinds(all: &[serde_json::Value], since: i64) -> Vec<String> {
    let mut k: Vec<String> = all
        .iter()
        .filter(|a| a["created_at"].as_i64().unwrap() >= since)
        .map(|a| a["kind"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn out_of_hours_bursts_and_nights_raise_alerts_and_ordinary_days_none() {
    each_backend(|app| async move {
        // An ordinary Tuesday morning: two mandates, no alert.
        app.clock.set(TUESDAY_10H);
        app.mandate(AWA, &[Demarche::Logement], 31).await;
        app.clock.advance(600);
        app.mandate(LUCIE, &[Demarche::Logement], 31).await;
        assert_eq!(
            kinds(&alerts(&app).await, TUESDAY_10H),
            Vec::<String>::new()
        );

        // Four more within the half hour: the sixth goes over the limit of
        // five (raised once, not again by the seventh).
        for _ in 0..5 {
            app.clock.advance(60);
            app.mandate(AWA, &[Demarche::Famille], 31).await;
        }
        let all = alerts(&app).await;
        assert_eq!(kinds(&all, TUESDAY_10H), ["burst"]);
        let burst = all.iter().find(|a| a["kind"] == "burst").unwrap();
        assert_eq!(burst["aidant_id"], AIDANT);
        assert!(burst["aidant_name"].as_str().unwrap().contains("Camille"));
        assert!(burst["subject"].as_str().unwrap().starts_with("mandate:"));

        // 21:00 in Paris: out of hours. 23:00: an act on behalf at night.
        let evening = TUESDAY_10H + 11 * 3600;
        app.clock.set(evening);
        app.mandate(LUCIE, &[Demarche::Famille], 31).await;
        app.clock.set(evening + 2 * 3600);
        let caller = Caller {
            actor_id: AIDANT.into(),
            role: Role::Aidant,
            request_id: None,
        };
        coffre::service::agents::read_on_behalf(
            &app.state,
            &caller,
            AWA,
            "housing",
            Demarche::Logement,
        )
        .await
        .unwrap();
        let all = alerts(&app).await;
        assert_eq!(
            kinds(&all, evening),
            ["night_act", "out_of_hours"],
            "{all:#?}"
        );
        let night = all.iter().find(|a| a["kind"] == "night_act").unwrap();
        assert!(night["subject"].as_str().unwrap().starts_with("audit:"));

        // 23:30: a revocation by the structure is an act on behalf too.
        let late = evening + 2 * 3600 + 1800;
        app.clock.set(late);
        let m = app.mandate(AWA, &[Demarche::Papiers], 31).await;
        app.clock.advance(60);
        coffre::service::agents::agent_revoke(
            &app.state,
            &Caller {
                actor_id: REFERENT.into(),
                role: Role::Referent,
                request_id: None,
            },
            Some(&crate::support::mid(&m)),
            coffre::service::agents::RevokeRequest {
                demarche: None,
                totp: None,
            },
        )
        .await
        .unwrap();
        let all = alerts(&app).await;
        assert_eq!(
            all.iter()
                .filter(|a| a["kind"] == "night_act" && a["created_at"].as_i64() == Some(late + 60))
                .count(),
            1,
            "{all:#?}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_referent_alone_reviews_alerts_once_and_sets_the_rules() {
    each_backend(|app| async move {
        app.clock.set(TUESDAY_10H + 11 * 3600);
        app.mandate(AWA, &[Demarche::Logement], 31).await;
        let all = alerts(&app).await;
        let id = all
            .iter()
            .find(|a| a["reviewed_at"].is_null())
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();

        // A reviewed alert is kept a year, then the retention job deletes
        // it (an unreviewed one stays).
        let purge_probe = |app: &TestApp, at: i64| {
            let state = app.state.clone();
            async move {
                coffre::service::rights::run_retention(&state, at)
                    .await
                    .unwrap()
                    .reviewed_alerts
            }
        };
        assert_eq!(purge_probe(&app, app.clock.now()).await, 0);
        // An aidant does not see the alerts about them.
        let aidant = app.login(AIDANT).await;
        app.as_user(&aidant, Method::GET, "/api/v1/referent/alerts", None)
            .await
            .assert_error(403, "referent_only");

        let s = app.login(REFERENT).await;
        let path = format!("/api/v1/referent/alerts/{id}/review");
        let res = app.as_user(&s, Method::POST, &path, None).await;
        assert_eq!(res.status, 200, "{}", res.text());
        let entry = app.last_entry().await;
        assert_eq!(
            (entry.actor_id.as_str(), entry.action.as_str()),
            (REFERENT, "alert.review")
        );
        let reviewed = res.json()["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id.as_str())
            .unwrap()
            .clone();
        assert_eq!(reviewed["reviewed_by"], REFERENT);
        assert_eq!(purge_probe(&app, app.clock.now() + 30 * 86_400).await, 0);
        assert_eq!(purge_probe(&app, app.clock.now() + 366 * 86_400).await, 1);
        // (That run, a year ahead, also ended the session.)
        let s = app.login(REFERENT).await;
        // Once (and gone, after the purge).
        app.as_user(&s, Method::POST, &path, None)
            .await
            .assert_error(404, "not_found");
        app.as_user(&s, Method::POST, "/api/v1/referent/alerts/nope/review", None)
            .await
            .assert_error(404, "not_found");

        // An alert about the référent's own mandate is not hers to close.
        let own = app
            .try_mandate_by(REFERENT, LUCIE, &[Demarche::Famille], 31)
            .await
            .unwrap();
        let mine = alerts(&app)
            .await
            .into_iter()
            .find(|a| a["subject"] == format!("mandate:{}", own.id).as_str())
            .unwrap();
        let s = app.login(REFERENT).await;
        app.as_user(
            &s,
            Method::POST,
            &format!("/api/v1/referent/alerts/{}/review", mine["id"].as_str().unwrap()),
            None,
        )
        .await
        .assert_error(403, "self_review");

        // The rules: bad ones refused, good ones applied.
        for bad in [
            serde_json::json!({"hours": "lun 08:00-12:00", "burst_max": 5, "burst_minutes": 30}),
            serde_json::json!({"hours": "mon-fri 08:00-18:00", "burst_max": 0, "burst_minutes": 30}),
            serde_json::json!({"hours": "", "burst_max": 5, "burst_minutes": 30}),
        ] {
            app.as_user(&s, Method::PUT, "/api/v1/referent/structure/alert-rules", Some(bad))
                .await
                .assert_error(422, "invalid_alert_rules");
        }
        let res = app
            .as_user(
                &s,
                Method::PUT,
                "/api/v1/referent/structure/alert-rules",
                Some(serde_json::json!({"hours": "mon-sat 08:00-22:00", "burst_max": 2, "burst_minutes": 60})),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.json()["hours"], "mon 08:00-22:00; tue 08:00-22:00; wed 08:00-22:00; thu 08:00-22:00; fri 08:00-22:00; sat 08:00-22:00");
        // 21:00 is now within the hours: no new out-of-hours alert.
        let before = alerts(&app).await.len();
        app.clock.advance(3600 * 24 * 7);
        app.mandate(LUCIE, &[Demarche::Logement], 31).await;
        assert_eq!(alerts(&app).await.len(), before);

        // The page (a fresh session: a week went by).
        let s = app.login(REFERENT).await;
        let page = app.as_user(&s, Method::GET, "/referent/alertes", None).await;
        assert_eq!(page.status, 200);
        assert!(page.text().contains("Camille"));
    })
    .await;
}

/// A structure that lists the communes it serves is alerted when a
/// mandate is made for a resident living elsewhere: the resident's commune
/// is read by the supervisor through the one decision, recorded first;
/// a resident of a listed commune raises nothing, nor does a structure
/// with no list (no read at all).
#[tokio::test]
async fn a_mandate_for_a_resident_outside_the_structures_communes_is_alerted() {
    const JEAN_PIERRE: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000002";
    each_backend(|app| async move {
        app.clock.set(TUESDAY_10H);
        let s = app.login(REFERENT).await;
        let rules = |communes: serde_json::Value| {
            serde_json::json!({"hours": "mon-fri 08:00-18:00", "burst_max": 5, "burst_minutes": 30, "communes": communes})
        };
        for bad in [serde_json::json!(["3190"]), serde_json::json!(["ABCDE"])] {
            app.as_user(&s, Method::PUT, "/api/v1/referent/structure/alert-rules", Some(rules(bad)))
                .await
                .assert_error(422, "invalid_alert_rules");
        }
        app.as_user(&s, Method::PUT, "/api/v1/referent/structure/alert-rules", Some(rules(serde_json::json!("31909"))))
            .await
            .assert_error(400, "invalid_json");
        // No list: nothing read, nothing raised.
        let before = app.state.audit.size().await.unwrap();
        app.mandate(AWA, &[Demarche::Logement], 31).await;
        let supervisor_reads = |from: u64| {
            let store = app.store.clone();
            async move {
                let to = app_size(&store).await;
                store
                    .audit_entries(from, to)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|(_, leaf)| coffre::audit::AuditEntry::decode(&leaf).unwrap())
                    .filter(|e| e.actor_role == "supervisor")
                    .collect::<Vec<_>>()
            }
        };
        assert!(supervisor_reads(before).await.is_empty());
        let res = app
            .as_user(&s, Method::PUT, "/api/v1/referent/structure/alert-rules", Some(rules(serde_json::json!(["31909", " 31909 "]))))
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.json()["communes"], serde_json::json!(["31909"]));
        // Awa lives in 31901: alerted, after a recorded read.
        let before = app.state.audit.size().await.unwrap();
        app.clock.advance(60);
        let m = app.mandate(AWA, &[Demarche::Famille], 31).await;
        let reads = supervisor_reads(before).await;
        assert_eq!(reads.len(), 1, "{reads:?}");
        assert_eq!(
            (reads[0].action.as_str(), reads[0].resident_id.as_deref(), reads[0].category.as_deref(), reads[0].purpose.as_deref()),
            ("alert.commune", Some(AWA), Some("contact"), Some("controle-des-mandats"))
        );
        let all = alerts(&app).await;
        let outside: Vec<_> = all.iter().filter(|a| a["kind"] == "outside_commune").collect();
        assert_eq!(outside.len(), 1, "{all:?}");
        assert_eq!(outside[0]["subject"], format!("mandate:{m}").as_str());
        // Jean-Pierre lives in 31909: nothing.
        app.clock.advance(60);
        app.mandate(JEAN_PIERRE, &[Demarche::Famille], 31).await;
        let all = alerts(&app).await;
        assert_eq!(all.iter().filter(|a| a["kind"] == "outside_commune").count(), 1);
        // A field left out keeps the list.
        let res = app
            .as_user(&s, Method::PUT, "/api/v1/referent/structure/alert-rules",
                Some(serde_json::json!({"hours": "mon-fri 08:00-18:00", "burst_max": 5, "burst_minutes": 30})))
            .await;
        assert_eq!(res.json()["communes"], serde_json::json!(["31909"]));

        // Lucie has no commune in her contact record any more: the check
        // cannot be evaded that way.
        let lucie = app.login(LUCIE).await;
        let res = app
            .as_user(&lucie, Method::PUT, "/api/v1/me/data/contact",
                Some(serde_json::json!({"email": "lucie.bernard@example.org"})))
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        app.clock.advance(60);
        app.mandate(LUCIE, &[Demarche::Famille], 31).await;
        let all = alerts(&app).await;
        assert_eq!(all.iter().filter(|a| a["kind"] == "commune_unknown").count(), 1, "{all:?}");

        // Awa objects to the check (art. 21): no read, no alert.
        let awa = app.login(AWA).await;
        let res = app
            .as_user(&awa, Method::POST, "/api/v1/me/objections",
                Some(serde_json::json!({"purpose": "controle-des-mandats"})))
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let before = app.state.audit.size().await.unwrap();
        app.clock.advance(60);
        app.mandate(AWA, &[Demarche::Travail], 31).await;
        let reads = supervisor_reads(before).await;
        assert_eq!(reads.len(), 1);
        assert_eq!(reads[0].decision, coffre::audit::Decision::Deny);
        assert_eq!(reads[0].reason, "objection");
        let all = alerts(&app).await;
        assert_eq!(all.iter().filter(|a| a["kind"] == "outside_commune").count(), 1);
        assert_eq!(all.iter().filter(|a| a["kind"] == "commune_unknown").count(), 1);
    })
    .await;
}

async fn app_size(store: &coffre::storage::DynStore) -> u64 {
    store.audit_size().await.unwrap()
}

#[tokio::test]
async fn two_referents_setting_different_rules_at_once_lose_neither() {
    each_backend(|app| async move {
        let s = app.login(REFERENT).await;
        let hours = "mon-fri 08:30-12:00,13:30-17:30";
        for round in 0..5 {
            let mailbox = format!("alertes-{round}@ccas.example");
            let commune = format!("3190{round}");
            let email_only = serde_json::json!({"hours": hours, "burst_max": 5, "burst_minutes": 30, "alert_email": mailbox});
            let communes_only = serde_json::json!({"hours": hours, "burst_max": 5, "burst_minutes": 30, "communes": [commune]});
            let (a, b) = tokio::join!(
                app.as_user(&s, Method::PUT, "/api/v1/referent/structure/alert-rules", Some(email_only)),
                app.as_user(&s, Method::PUT, "/api/v1/referent/structure/alert-rules", Some(communes_only)),
            );
            assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200), "{} {}", a.text(), b.text());
            let view = app
                .as_user(&s, Method::GET, "/api/v1/referent/alerts", None)
                .await
                .json();
            assert_eq!(view["alert_email"], mailbox.as_str(), "{view}");
            assert_eq!(view["communes"], serde_json::json!([commune]), "{view}");
        }
    })
    .await;
}
