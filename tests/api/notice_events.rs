//! Residents' notices beyond mandates and requests (issue 23): a records
//! extract tells each resident it included once its file exists (none
//! before, none for a build that failed), a source's first deposit is told
//! once (art. 14), the weekly digest reaches only those who asked, and the
//! resident's preferences turn off what may be turned off and nothing
//! else — through the API and the page, against a real SMTP server.

use axum::http::Method;
use coffre::domain::extract::{ExtractKind, ExtractState};
use coffre::service::notify::deliver_due;

use crate::extracts::built;
use crate::notices::{Smtpd, aiosmtpd_available, mailer, settle_demo_messages};
use crate::support::{TestApp, each_backend, eid, pid, purpose_id, resident_id};

const AWA: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000001";
const JEAN_PIERRE: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000002";

/// (event, state) of every message about a resident since the demo's
/// (settled as sent before each test), oldest first.
async fn messages_of(app: &TestApp, resident: &str) -> Vec<(String, String)> {
    let pool = app.raw_pool().await;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT event, state FROM outbox WHERE resident_id = $1 AND (state <> 'sent' OR sent_at IS NOT NULL) \
         ORDER BY created_at, id",
    )
    .bind(resident)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

/// A records extract of the laboratory being built since `now`.
fn building_extract(id: &str, now: i64) -> coffre::storage::ExtractRow {
    coffre::storage::ExtractRow {
        id: eid(id),
        partner_id: pid("labo-mobilite"),
        purpose: purpose_id("etude-mobilite"),
        kind: ExtractKind::Records,
        spec: "{}".into(),
        state: ExtractState::Building,
        reason: None,
        rows_done: 0,
        rows_total: 0,
        manifest: None,
        manifest_jws: None,
        epsilon: None,
        created_at: now,
        updated_at: now,
        expires_at: None,
    }
}

/// An extract being built since `now`, with Awa's message held for it.
async fn building_with_a_held_message(app: &TestApp, id: &str, now: i64) {
    app.store
        .insert_extract(&building_extract(id, now))
        .await
        .unwrap();
    let held = coffre::storage::OutboxMessage::new(
        coffre::domain::notice::NoticeEvent::ExtractIncluded,
        &resident_id(AWA),
        id,
        "Laboratoire",
        now,
    );
    app.store.outbox_hold(&[held]).await.unwrap();
}

async fn labo(app: &TestApp) -> String {
    app.partner_token(
        "demo-labo-mobilite",
        "demo-secret-labo-mobilite-not-for-production",
    )
    .await
}

fn records() -> serde_json::Value {
    serde_json::json!({"purpose": "etude-mobilite", "kind": "records", "categories": ["housing"]})
}

#[tokio::test]
async fn a_records_extract_tells_its_residents_once_the_file_exists() {
    if !aiosmtpd_available() {
        return;
    }
    each_backend(|app| async move {
        settle_demo_messages(&app).await;
        let smtp = Smtpd::start_on(crate::binary::free_port());
        let mailer = mailer(&app, smtp.port);
        let token = labo(&app).await;
        let v = built(&app, &token, records()).await;
        assert_eq!(v["state"], "ready", "{v}");
        let id = v["id"].as_str().unwrap().to_string();
        // Awa is in the cohort; Jean-Pierre withdrew his consent.
        let awa = messages_of(&app, AWA).await;
        assert_eq!(
            awa,
            [("extract.included".to_string(), "pending".to_string())],
            "{awa:?}"
        );
        assert!(messages_of(&app, JEAN_PIERRE).await.is_empty());
        let report = deliver_due(&app.state, &mailer, app.clock.now())
            .await
            .unwrap();
        assert_eq!(report.sent, 1, "{report:?}");
        let got = smtp.messages();
        assert_eq!(got.len(), 1);
        let m = &got[0];
        assert!(m["headers"]["To"].as_str().unwrap().contains('@'));
        let text = m["parts"][0]["text"].as_str().unwrap();
        // Who received it, where to look; no value, no pseudonym, no id.
        assert!(text.contains("Laboratoire") || text.contains("labo"), "{text}");
        assert!(text.contains("/moi/acces"), "{text}");
        assert!(!text.contains(AWA) && !text.contains(&id), "{text}");
        let pseudonym = app
            .keys
            .current()
            .pseudonym("partner:labo-mobilite", AWA.as_bytes());
        for part in [text, m["parts"][1]["text"].as_str().unwrap(), m["raw"].as_str().unwrap()] {
            assert!(!part.contains(&pseudonym) && !part.contains(AWA), "{part}");
        }

        // An aggregate only counts: nobody is told.
        let before = messages_of(&app, AWA).await.len();
        let _ = built(
            &app,
            &token,
            serde_json::json!({"purpose": "etude-mobilite", "kind": "aggregate", "categories": ["housing"], "group_by": ["housing.tenure"]}),
        )
        .await;
        assert_eq!(messages_of(&app, AWA).await.len(), before);
    })
    .await;
}

/// Messages written for an extract's pages wait while it is built: not
/// delivered, then released with its file in the same transaction, or
/// deleted with its failure.
#[tokio::test]
async fn an_extracts_messages_wait_for_its_file_and_go_with_its_failure() {
    each_backend(|app| async move {
        settle_demo_messages(&app).await;
        let now = app.clock.now();
        let store = &app.store;
        for (id, end) in [("x-ready", "ready"), ("x-failed", "failed")] {
            building_with_a_held_message(&app, id, now).await;
            let counts = store.outbox_counts().await.unwrap();
            assert_eq!(counts.held, 1, "{end}: {counts:?}");
            // Held: no worker takes it.
            assert!(
                store
                    .outbox_claim("w", now + 60, 60, 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
            if end == "ready" {
                store
                    .extract_ready(&eid(id), "{}", "jws", now + 86_400, now + 1)
                    .await
                    .unwrap();
                let counts = store.outbox_counts().await.unwrap();
                assert_eq!((counts.held, counts.pending), (0, 1), "{counts:?}");
                let claimed = store.outbox_claim("w", now + 2, 60, 10).await.unwrap();
                assert_eq!(claimed.len(), 1);
                store.outbox_sent(&claimed[0], now + 2).await.unwrap();
            } else {
                assert!(
                    store
                        .extract_transition(
                            &eid(id),
                            ExtractState::Building,
                            ExtractState::Failed,
                            Some("disk full"),
                            now + 1,
                        )
                        .await
                        .unwrap()
                );
                let counts = store.outbox_counts().await.unwrap();
                assert_eq!((counts.held, counts.pending), (0, 0), "{counts:?}");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_sources_first_deposit_is_told_once() {
    if !aiosmtpd_available() {
        return;
    }
    each_backend(|app| async move {
        settle_demo_messages(&app).await;
        let smtp = Smtpd::start_on(crate::binary::free_port());
        let mailer = mailer(&app, smtp.port);
        let (token, handle) = crate::sources::linked_awa(&app).await;
        let at = app.clock.now() - 3600;
        let line = |id: &str, kwh: i64| {
            serde_json::json!({"id": id, "handle": handle, "category": "energy", "fields": {"annual_kwh": kwh}, "observed_at": at}).to_string()
        };
        // Two records in one stream, then a third later: one message.
        let answers = crate::sources::deposit_stream(
            &app,
            &token,
            [line("m-1", 4200), line("m-2", 3900)].join("\n"),
        )
        .await;
        assert_eq!(answers.last().unwrap()["summary"]["accepted"], 2);
        app.clock.advance(60);
        crate::sources::deposit_stream(&app, &token, line("m-3", 100)).await;
        let told: Vec<_> = messages_of(&app, AWA)
            .await
            .into_iter()
            .filter(|(e, _)| e == "source.first_deposit")
            .collect();
        assert_eq!(told.len(), 1, "{told:?}");
        let report = deliver_due(&app.state, &mailer, app.clock.now())
            .await
            .unwrap();
        assert_eq!(report.sent, 1, "{report:?}");
        let got = smtp.messages();
        let text = got[0]["parts"][0]["text"].as_str().unwrap();
        assert!(text.contains("/moi/sources"), "{text}");
        assert!(text.contains("article 14"), "{text}");
        // No deposited value in the message.
        assert!(!text.contains("4200") && !text.contains("3900"), "{text}");
    })
    .await;
}

#[tokio::test]
async fn preferences_turn_off_only_what_may_be_and_are_applied_at_delivery() {
    if !aiosmtpd_available() {
        return;
    }
    each_backend(|app| async move {
        settle_demo_messages(&app).await;
        let smtp = Smtpd::start_on(crate::binary::free_port());
        let mailer = mailer(&app, smtp.port);
        let awa = app.login(AWA).await;
        let v = app
            .as_user(&awa, Method::GET, "/api/v1/me/notifications", None)
            .await
            .json();
        let pref = |v: &serde_json::Value, e: &str| {
            v["events"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["event"] == e)
                .cloned()
                .unwrap()
        };
        assert_eq!(pref(&v, "mandate.created")["may_be_turned_off"], false);
        assert_eq!(
            pref(&v, "mandate.created")["channels"],
            serde_json::json!(["email", "post"])
        );
        assert_eq!(pref(&v, "accesses.digest")["channel"], "off");
        assert_eq!(pref(&v, "extract.included")["channel"], "email");

        // One choice that is not allowed refuses them all.
        let entries_before = app.state.audit.size().await.unwrap();
        for bad in [
            serde_json::json!({"channels": {"extract.included": "off", "mandate.created": "off"}}),
            serde_json::json!({"channels": {"extract.included": "pigeon"}}),
            serde_json::json!({"channels": {"mandate.eaten": "email"}}),
        ] {
            app.as_user(&awa, Method::PUT, "/api/v1/me/notifications", Some(bad))
                .await
                .assert_error(422, "invalid_notice_preference");
        }
        assert_eq!(app.state.audit.size().await.unwrap(), entries_before);
        let v = app
            .as_user(&awa, Method::GET, "/api/v1/me/notifications", None)
            .await
            .json();
        assert_eq!(pref(&v, "extract.included")["channel"], "email");

        // Through the page: the extract's message off, mandates by post.
        let page = app
            .send(
                Method::GET,
                "/moi/notifications",
                &[("cookie", awa.cookie.as_str())],
                "",
            )
            .await;
        assert_eq!(page.status, 200);
        let html = page.text();
        assert!(
            html.contains("name=\"extract.included\" value=\"off\""),
            "{html}"
        );
        assert!(!html.contains("name=\"mandate.created\" value=\"off\""));
        let res = crate::pages::post_form(
            &app,
            &awa,
            "/moi/notifications",
            &format!(
                "csrf_token={}&extract.included=off&mandate.created=post",
                awa.csrf
            ),
        )
        .await;
        assert_eq!(res.status, 303, "{}", res.text());
        let entry = app.last_entry().await;
        assert_eq!(entry.action, "notice.preferences");
        assert_eq!(entry.actor_id, AWA);
        // A form that tries to turn a mandate's message off changes nothing.
        let res = crate::pages::post_form(
            &app,
            &awa,
            "/moi/notifications",
            &format!(
                "csrf_token={}&mandate.created=off&extract.included=email",
                awa.csrf
            ),
        )
        .await;
        assert!(res.status.as_u16() >= 300, "{}", res.status);
        let v = app
            .as_user(&awa, Method::GET, "/api/v1/me/notifications", None)
            .await
            .json();
        assert_eq!(pref(&v, "extract.included")["channel"], "off");
        assert_eq!(pref(&v, "mandate.created")["channel"], "post");

        // Applied when delivered: the extract's message is muted (nothing
        // opened, nothing sent).
        let token = labo(&app).await;
        built(&app, &token, records()).await;
        let report = deliver_due(&app.state, &mailer, app.clock.now())
            .await
            .unwrap();
        assert_eq!((report.muted, report.sent), (1, 0), "{report:?}");
        assert!(smtp.messages().is_empty());
        assert_eq!(
            messages_of(&app, AWA).await.last().unwrap(),
            &("extract.included".to_string(), "muted".to_string())
        );
        // Mandates by post: a letter, since she has a postal address…
        app.mandate(AWA, &crate::support::demarches("travail"), 31)
            .await;
        let report = deliver_due(&app.state, &mailer, app.clock.now())
            .await
            .unwrap();
        assert_eq!((report.post, report.sent), (1, 0), "{report:?}");
        // …and an e-mail once she has none: a mandate's message is never
        // parked where it cannot be printed.
        let res = app
            .as_user(
                &awa,
                Method::PUT,
                "/api/v1/me/data/contact",
                Some(serde_json::json!({"email": "awa.diallo@example.org"})),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        app.clock.advance(60);
        app.mandate(AWA, &crate::support::demarches("loisirs"), 31)
            .await;
        let report = deliver_due(&app.state, &mailer, app.clock.now())
            .await
            .unwrap();
        assert_eq!((report.post, report.sent), (0, 1), "{report:?}");
        // Another resident's preferences are theirs: Awa's cannot be read
        // as anyone else's, and a partner has no such route.
        app.send(
            Method::GET,
            "/api/v1/me/notifications",
            &[("authorization", &format!("Bearer {token}"))],
            "",
        )
        .await
        .assert_error(401, "unauthenticated");
    })
    .await;
}

#[tokio::test]
async fn the_weekly_digest_reaches_only_those_who_asked_once_a_week() {
    if !aiosmtpd_available() {
        return;
    }
    each_backend(|app| async move {
        settle_demo_messages(&app).await;
        let smtp = Smtpd::start_on(crate::binary::free_port());
        let mailer = mailer(&app, smtp.port);
        let awa = app.login(AWA).await;
        app.as_user(
            &awa,
            Method::PUT,
            "/api/v1/me/notifications",
            Some(serde_json::json!({"channels": {"accesses.digest": "email", "extract.included": "off"}})),
        )
        .await;
        // A partner reads Awa's data this week (the extract's entries).
        let token = labo(&app).await;
        built(&app, &token, records()).await;
        // The same week: the digest is of the week before, with nothing.
        let (_, monday) = coffre::domain::notice::week_of(app.clock.now());
        assert_eq!(
            coffre::service::notices::weekly_digests(&app.state, app.clock.now())
                .await
                .unwrap(),
            0
        );
        // The next week: one digest, once, for Awa only.
        app.clock.set(monday + 7 * 86_400 + 3600);
        for expected in [1, 0] {
            let r = coffre::service::rights::run_retention(&app.state, app.clock.now())
                .await
                .unwrap();
            assert_eq!(r.digests, expected, "{r:?}");
        }
        let digests: Vec<_> = messages_of(&app, AWA)
            .await
            .into_iter()
            .filter(|(e, _)| e == "accesses.digest")
            .collect();
        assert_eq!(digests.len(), 1);
        assert!(
            messages_of(&app, JEAN_PIERRE)
                .await
                .iter()
                .all(|(e, _)| e != "accesses.digest")
        );
        let report = deliver_due(&app.state, &mailer, app.clock.now())
            .await
            .unwrap();
        assert_eq!(report.sent, 1, "{report:?}");
        let text = smtp.messages()[0]["parts"][0]["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(text.contains("/moi/acces"), "{text}");
        // Two weeks on, nobody touched her data: no digest.
        app.clock.advance(7 * 86_400);
        assert_eq!(
            coffre::service::notices::weekly_digests(&app.state, app.clock.now())
                .await
                .unwrap(),
            0
        );
    })
    .await;
}

/// A mandate that reaches its end date is told once by the hourly job; a
/// revoked one was told when it was revoked and is not told again.
#[tokio::test]
async fn a_mandate_that_reaches_its_end_is_told_once() {
    each_backend(|app| async move {
        settle_demo_messages(&app).await;
        let ends = app
            .mandate(JEAN_PIERRE, &crate::support::demarches("social"), 1)
            .await;
        let revoked = app
            .mandate(JEAN_PIERRE, &crate::support::demarches("logement"), 1)
            .await;
        coffre::service::agents::resident_revoke(
            &app.state,
            &coffre::service::Caller {
                actor_id: JEAN_PIERRE.into(),
                role: coffre::domain::Role::Resident,
                request_id: None,
            },
            Some(&crate::support::mid(&revoked)),
            coffre::service::agents::RevokeRequest {
                demarche: None,
                totp: None,
            },
        )
        .await
        .unwrap();
        // Still running: nothing.
        coffre::service::rights::run_retention(&app.state, app.clock.now())
            .await
            .unwrap();
        assert!(!ended_told(&app).await.contains(&ends));
        app.clock.advance(86_400 + 60);
        for expected in [1, 0] {
            let r = coffre::service::rights::run_retention(&app.state, app.clock.now())
                .await
                .unwrap();
            assert!(r.mandates_ended_told >= expected, "{r:?}");
            let told = ended_told(&app).await;
            assert_eq!(told.iter().filter(|s| **s == ends).count(), 1, "{told:?}");
            assert!(!told.contains(&revoked), "{told:?}");
        }
    })
    .await;
}

/// The mandates told as ended.
async fn ended_told(app: &TestApp) -> Vec<String> {
    let pool = app.raw_pool().await;
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT subject_id FROM outbox WHERE event = 'mandate.ended'")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows.into_iter().map(|(s,)| s).collect()
}

/// An alert is e-mailed to the structure's functional mailbox (set by its
/// référent), with its kind and the link to the page, never a name; a
/// structure without a mailbox gets none, and a bad mailbox is refused.
#[tokio::test]
async fn alerts_reach_the_structures_mailbox_without_a_name() {
    if !aiosmtpd_available() {
        return;
    }
    const REFERENT: &str = "a1d00000-0000-4000-8000-000000000003";
    const TUESDAY_21H: i64 = 1_796_115_600 + 11 * 3600;
    each_backend(|app| async move {
        let smtp = Smtpd::start_on(crate::binary::free_port());
        let mailer = mailer(&app, smtp.port);
        // The demo's own alert (its mailbox is the demo's) goes first.
        coffre::service::notify::deliver_alerts(&app.state, &mailer, app.clock.now())
            .await
            .unwrap();
        let demo_mails = smtp.messages().len();
        let s = app.login(REFERENT).await;
        for bad in ["pas une adresse", "x@[10.0.0.5]"] {
            app.as_user(
                &s,
                Method::PUT,
                "/api/v1/referent/structure/alert-rules",
                Some(serde_json::json!({"hours": "mon-fri 08:30-17:30", "burst_max": 5, "burst_minutes": 30, "alert_email": bad})),
            )
            .await
            .assert_error(422, "invalid_alert_rules");
        }
        let res = app
            .as_user(
                &s,
                Method::PUT,
                "/api/v1/referent/structure/alert-rules",
                Some(serde_json::json!({"hours": "mon-fri 08:30-17:30", "burst_max": 5, "burst_minutes": 30, "alert_email": "alertes@ccas.example"})),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.json()["alert_email"], "alertes@ccas.example");
        // A mandate at 21:00: an out-of-hours alert, e-mailed once.
        app.clock.set(TUESDAY_21H);
        app.mandate(AWA, &crate::support::demarches("logement"), 31).await;
        for expected in [1, 0] {
            let r = coffre::service::notify::deliver_alerts(&app.state, &mailer, app.clock.now())
                .await
                .unwrap();
            assert_eq!(r.sent, expected, "{r:?}");
        }
        let got = smtp.messages();
        assert_eq!(got.len(), demo_mails + 1);
        // (Maildir names do not sort by arrival.)
        let m = got
            .iter()
            .find(|m| m["headers"]["To"] == "alertes@ccas.example")
            .unwrap();
        assert_eq!(m["headers"]["Auto-Submitted"], "auto-generated");
        let text = m["parts"][0]["text"].as_str().unwrap();
        assert!(text.contains("/referent/alertes"), "{text}");
        assert!(text.contains("horaires d'ouverture"), "{text}");
        // No aidant's name, no resident's.
        let html = m["parts"][1]["text"].as_str().unwrap();
        for name in ["Awa", "Diallo", "Camille", "Roux", "Sophie"] {
            for part in [text, html, m["raw"].as_str().unwrap()] {
                assert!(!part.contains(name), "{name}: {part}");
            }
        }
        // Without a mailbox: the page only.
        let s = app.login(REFERENT).await;
        let res = app
            .as_user(
                &s,
                Method::PUT,
                "/api/v1/referent/structure/alert-rules",
                Some(serde_json::json!({"hours": "mon-fri 08:30-17:30", "burst_max": 5, "burst_minutes": 30})),
            )
            .await;
        // A field left out keeps what is set; "" removes the mailbox.
        assert_eq!(res.json()["alert_email"], "alertes@ccas.example");
        let res = app
            .as_user(
                &s,
                Method::PUT,
                "/api/v1/referent/structure/alert-rules",
                Some(serde_json::json!({"hours": "mon-fri 08:30-17:30", "burst_max": 5, "burst_minutes": 30, "alert_email": ""})),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.json()["alert_email"], serde_json::Value::Null);
        app.clock.advance(3600);
        app.mandate(JEAN_PIERRE, &crate::support::demarches("logement"), 31).await;
        let r = coffre::service::notify::deliver_alerts(&app.state, &mailer, app.clock.now())
            .await
            .unwrap();
        assert_eq!(r, Default::default());
        // The référent's page sets the same rules (audited).
        let s = app.login(REFERENT).await;
        let res = crate::pages::post_form(&app, &s, "/referent/alertes/regles", &format!(
                    "csrf_token={}&hours=mon-fri+09%3A00-17%3A00&burst_max=4&burst_minutes=20&alert_email=alertes%40ccas.example",
                    s.csrf
                ))
            .await;
        assert_eq!(res.status, 303, "{}", res.text());
        assert_eq!(app.last_entry().await.action, "alert.rules");
        let v = app
            .as_user(&s, Method::GET, "/api/v1/referent/alerts", None)
            .await
            .json();
        assert_eq!(
            (v["burst_max"].as_u64(), v["alert_email"].as_str()),
            (Some(4), Some("alertes@ccas.example"))
        );
        let page = app
            .send(Method::GET, "/referent/alertes", &[("cookie", s.cookie.as_str())], "")
            .await
            .text();
        assert!(page.contains("alertes@ccas.example"), "{page}");
    })
    .await;
}

/// A build interrupted by a crash (still `building`, no progress for an
/// hour) is failed by the hourly job: its held messages and partial file
/// go; one that is still making progress is left alone.
#[tokio::test]
async fn an_interrupted_build_is_failed_and_its_messages_go() {
    each_backend(|app| async move {
        settle_demo_messages(&app).await;
        let now = app.clock.now();
        for id in ["x-stuck", "x-alive"] {
            building_with_a_held_message(&app, id, now).await;
        }
        let dir = &app.state.config.extracts_dir;
        std::fs::create_dir_all(dir).unwrap();
        let part = dir.join("x-stuck.csv.age.part");
        std::fs::write(&part, b"half").unwrap();
        // Half an hour on: nothing yet. Then "x-alive" makes progress.
        let r = coffre::service::rights::run_retention(&app.state, now + 1800)
            .await
            .unwrap();
        assert_eq!(r.interrupted_extracts, 0);
        app.store
            .extract_progress(&eid("x-alive"), 1, 2, now + 3000)
            .await
            .unwrap();
        let r = coffre::service::rights::run_retention(&app.state, now + 4000)
            .await
            .unwrap();
        assert_eq!(r.interrupted_extracts, 1, "{r:?}");
        let stuck = app
            .store
            .find_extract(&eid("x-stuck"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stuck.state, ExtractState::Failed);
        assert!(!part.exists());
        let alive = app
            .store
            .find_extract(&eid("x-alive"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(alive.state, ExtractState::Building);
        assert_eq!(
            app.store.outbox_counts().await.unwrap().held,
            1,
            "only x-alive's"
        );
        // x-stuck was in fact still running: a late page holds a message
        // after its failure. The next hourly run deletes it.
        let late = coffre::storage::OutboxMessage::new(
            coffre::domain::notice::NoticeEvent::ExtractIncluded,
            &resident_id(AWA),
            "x-stuck",
            "Laboratoire",
            now + 4100,
        );
        app.store.outbox_hold(&[late]).await.unwrap();
        assert_eq!(app.store.outbox_counts().await.unwrap().held, 2);
        coffre::service::rights::run_retention(&app.state, now + 4200)
            .await
            .unwrap();
        assert_eq!(
            app.store.outbox_counts().await.unwrap().held,
            1,
            "x-stuck's late message went, x-alive's stays"
        );
    })
    .await;
}
