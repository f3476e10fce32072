//! Residents' notices (issue 23, the outbox) against a real SMTP server
//! started here on loopback (Debian's `python3-aiosmtpd`, installed by
//! `.ci/run`): a mandate's message is written with it and reaches the
//! resident's address with the expected headers and no personal value in
//! its body; the address is read through the notifier's decision, audited;
//! a failed delivery is retried and sent once; two processes never send a
//! message twice; an act that fails leaves no message.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use coffre::service::notify::{Mailer, deliver_due};
use secrecy::SecretString;

use crate::binary::free_port;
use crate::support::{TestApp, demarches, each_backend, notice, resident_id};

const AWA: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000001";
const JEAN_PIERRE: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000002";
const PYTHON: &str = "/usr/bin/python3";

/// A real SMTP server writing what it receives to a Maildir.
pub(crate) struct Smtpd {
    child: Child,
    pub(crate) port: u16,
    dir: tempfile::TempDir,
}

pub(crate) fn aiosmtpd_available() -> bool {
    let ok = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        notice(
            "notices:: SKIPPED: Debian's python3-aiosmtpd is not installed (.ci/run installs it)",
        );
    }
    ok
}

impl Smtpd {
    // Drop kills and waits for the child.
    #[allow(clippy::zombie_processes)]
    pub(crate) fn start_on(port: u16) -> Smtpd {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(PYTHON)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Smtpd { child, port, dir };
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("aiosmtpd did not listen on {port}");
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("mail/new")
    }

    /// Every message received, parsed by Python's `email` package (so
    /// transfer encodings are undone): headers and the text parts.
    pub(crate) fn messages(&self) -> Vec<serde_json::Value> {
        parse_maildir(&self.maildir())
    }
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_maildir(dir: &Path) -> Vec<serde_json::Value> {
    let script = r#"
import email, email.policy, json, os, sys
out = []
d = sys.argv[1]
for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
    with open(os.path.join(d, name), 'rb') as f:
        m = email.message_from_binary_file(f, policy=email.policy.default)
    parts = [{"type": p.get_content_type(), "text": p.get_content()} for p in m.walk() if p.get_content_maintype() == 'text']
    raw = open(os.path.join(d, name), 'rb').read().decode('utf-8', 'replace')
    out.append({"headers": {k: str(v) for k, v in m.items()}, "content_type": m.get_content_type(), "parts": parts, "raw": raw})
print(json.dumps(out))
"#;
    let out = Command::new(PYTHON)
        .args(["-c", script])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The demo's own mandates wrote messages while it was seeded: marked
/// sent here, so that each test counts its own.
pub(crate) async fn settle_demo_messages(app: &TestApp) {
    let pool = app.raw_pool().await;
    sqlx::query("UPDATE outbox SET state = 'sent'")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

pub(crate) fn mailer(app: &TestApp, port: u16) -> Mailer {
    let mut config = app.state.config.clone();
    config.smtp_url = Some(SecretString::from(format!("smtp://127.0.0.1:{port}")));
    config.smtp_from = "coffre@agglo.example".into();
    Mailer::from_config(&config).unwrap().unwrap()
}

#[tokio::test]
async fn a_mandate_reaches_the_resident_by_email_with_no_personal_value() {
    if !aiosmtpd_available() {
        return;
    }
    each_backend(|app| async move {
        settle_demo_messages(&app).await;
        let smtp = Smtpd::start_on(free_port());
        let mailer = mailer(&app, smtp.port);
        let mandate = app.mandate(AWA, &demarches("famille"), 31).await;
        let queued: Vec<_> = app
            .store
            .outbox_of_resident(&resident_id(AWA))
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.subject_id == mandate)
            .collect();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].event.as_str(), "mandate.created");
        assert_eq!(queued[0].subject_id, mandate);

        let report = deliver_due(&app.state, &mailer, app.clock.now())
            .await
            .unwrap();
        assert_eq!(report.sent, 1, "{report:?}");
        // The address was read through the notifier's decision, recorded.
        let entry = app.last_entry().await;
        assert_eq!(
            (
                entry.actor_id.as_str(),
                entry.actor_role.as_str(),
                entry.action.as_str(),
                entry.purpose.as_deref(),
                entry.category.as_deref(),
                entry.resident_id.as_deref(),
            ),
            (
                "notifier",
                "notifier",
                "notice.address",
                Some("information-des-personnes"),
                Some("contact"),
                Some(AWA),
            )
        );

        let mail = smtp.messages();
        assert_eq!(mail.len(), 1, "{mail:#?}");
        let m = &mail[0];
        let h = &m["headers"];
        assert_eq!(h["To"], "awa.diallo@example.org");
        assert_eq!(h["From"], "coffre@agglo.example");
        assert_eq!(h["Auto-Submitted"], "auto-generated");
        assert_eq!(
            h["Message-ID"],
            format!("<{}@agglo.example>", queued[0].id).as_str()
        );
        assert!(h["Date"].as_str().is_some_and(|d| !d.is_empty()));
        assert!(
            h["Subject"]
                .as_str()
                .unwrap()
                .starts_with("Un mandat a été créé en votre nom / "),
            "{h}"
        );
        // RFC 2047 on the wire (the words that need it).
        assert!(
            m["raw"]
                .as_str()
                .unwrap()
                .lines()
                .any(|l| l.starts_with("Subject: ") && l.contains("=?utf-8?b?")),
            "{}",
            m["raw"]
        );
        assert_eq!(m["content_type"], "multipart/alternative");
        let parts = m["parts"].as_array().unwrap();
        let types: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["text/plain", "text/html"]);
        for p in parts {
            let text = p["text"].as_str().unwrap();
            assert!(text.find("Bonjour").unwrap() < text.find("Hello").unwrap());
            assert!(text.contains("CCAS"), "{text}");
            for personal in [
                "Awa",
                "Diallo",
                "awa.diallo",
                "0612345678",
                "Platanes",
                "1987",
            ] {
                assert!(!text.contains(personal), "{personal} in {text}");
            }
        }

        // Sent once: another run finds nothing due.
        let again = deliver_due(&app.state, &mailer, app.clock.now() + 3600)
            .await
            .unwrap();
        assert_eq!(again, Default::default());
        assert_eq!(smtp.messages().len(), 1);
        let counts = app.store.outbox_counts().await.unwrap();
        assert_eq!(counts.pending, 0);
        // Kept as long as the information purpose says, then purged by the
        // retention job.
        let r = coffre::service::rights::run_retention(&app.state, app.clock.now() + 366 * 86_400)
            .await
            .unwrap();
        assert!(r.notices >= 1, "{r:?}");
        assert!(
            !app.store
                .outbox_of_resident(&resident_id(AWA))
                .await
                .unwrap()
                .iter()
                .any(|m| m.subject_id == mandate)
        );
    })
    .await;
}

#[tokio::test]
async fn a_failed_delivery_is_retried_later_and_sent_once() {
    if !aiosmtpd_available() {
        return;
    }
    each_backend(|app| async move {
        settle_demo_messages(&app).await;
        let port = free_port();
        let mailer = mailer(&app, port);
        let m = app.mandate(AWA, &demarches("famille"), 31).await;
        // Nothing listens: a transient failure, retried in 30 s.
        let now = app.clock.now();
        let report = deliver_due(&app.state, &mailer, now).await.unwrap();
        assert_eq!(report.retried, 1, "{report:?}");
        let queued = app
            .store
            .outbox_of_resident(&resident_id(AWA))
            .await
            .unwrap();
        let mine = queued.iter().find(|q| q.subject_id == m).unwrap();
        assert_eq!(mine.attempts, 1);
        // Not due yet.
        assert_eq!(
            deliver_due(&app.state, &mailer, now + 10).await.unwrap(),
            Default::default()
        );
        let smtp = Smtpd::start_on(port);
        let report = deliver_due(&app.state, &mailer, now + 31).await.unwrap();
        assert_eq!(report.sent, 1, "{report:?}");
        assert_eq!(
            deliver_due(&app.state, &mailer, now + 3600).await.unwrap(),
            Default::default()
        );
        assert_eq!(smtp.messages().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn no_address_means_a_letter_and_a_failed_act_means_no_message() {
    if !aiosmtpd_available() {
        return;
    }
    each_backend(|app| async move {
        settle_demo_messages(&app).await;
        let smtp = Smtpd::start_on(free_port());
        let mailer = mailer(&app, smtp.port);
        // Jean-Pierre has no e-mail address: his message waits for the
        // postal batch.
        app.mandate(JEAN_PIERRE, &demarches("famille"), 31).await;
        let report = deliver_due(&app.state, &mailer, app.clock.now())
            .await
            .unwrap();
        assert_eq!(report.post, 1, "{report:?}");
        assert!(smtp.messages().is_empty());
        assert_eq!(app.store.outbox_counts().await.unwrap().post, 1);

        // A mandate that cannot be made (no such resident) leaves no
        // message: act and message commit together or not at all.
        let before = app.store.outbox_counts().await.unwrap();
        let ghost = resident_id("0b9a3c1e-5d6f-4a7b-8c9d-000000000999");
        let made = app
            .try_mandate_by(
                "a1d00000-0000-4000-8000-000000000001",
                ghost.as_str(),
                &demarches("famille"),
                31,
            )
            .await;
        assert!(made.is_err());
        assert_eq!(app.store.outbox_counts().await.unwrap(), before);
        assert!(
            app.store
                .outbox_of_resident(&ghost)
                .await
                .unwrap()
                .is_empty()
        );

        // A revocation is told too.
        let m = app.mandate(AWA, &demarches("logement"), 31).await;
        let row = app
            .store
            .find_mandate(&crate::support::mid(&m))
            .await
            .unwrap()
            .unwrap();
        coffre::service::mandates::revoke(
            &app.state,
            &row,
            None,
            coffre::domain::Role::Resident,
            AWA,
            app.clock.now(),
        )
        .await
        .unwrap();
        let mut events: Vec<String> = app
            .store
            .outbox_of_resident(&resident_id(AWA))
            .await
            .unwrap()
            .iter()
            .filter(|c| c.subject_id == m)
            .map(|c| c.event.as_str().to_string())
            .collect();
        events.sort();
        assert_eq!(events, ["mandate.created", "mandate.revoked"]);
    })
    .await;
}

/// Two processes (two pools on one database) deliver at once: every
/// message is sent exactly once.
#[tokio::test]
async fn two_processes_never_send_a_message_twice() {
    if !aiosmtpd_available() {
        return;
    }
    each_backend(|app| async move {
        settle_demo_messages(&app).await;
        let smtp = Smtpd::start_on(free_port());
        let mailer = mailer(&app, smtp.port);
        for _ in 0..15 {
            app.mandate(AWA, &demarches("famille"), 31).await;
        }
        let other_store = coffre::storage::open(&app.state.config.database_url)
            .await
            .unwrap();
        let other = coffre::AppState::new(
            app.state.config.clone(),
            other_store.clone(),
            app.clock.clone(),
            true,
            Ok(app.keys.clone()),
        )
        .await
        .unwrap();
        let now = app.clock.now();
        let mut total = 0;
        for _ in 0..3 {
            let (a, b) = tokio::join!(
                deliver_due(&app.state, &mailer, now),
                deliver_due(&other, &mailer, now)
            );
            total += a.unwrap().sent + b.unwrap().sent;
        }
        other_store.close().await;
        assert_eq!(total, 15);
        let mail = smtp.messages();
        assert_eq!(mail.len(), 15);
        let mut ids: Vec<String> = mail
            .iter()
            .map(|m| m["headers"]["Message-ID"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 15, "a message was sent twice");
    })
    .await;
}

/// An aidant who changes the resident's e-mail address right after the
/// mandate does not become the only one told: the address held before the
/// act hears of it too.
#[tokio::test]
async fn the_address_held_before_the_act_is_told_too() {
    if !aiosmtpd_available() {
        return;
    }
    each_backend(|app| async move {
        settle_demo_messages(&app).await;
        let smtp = Smtpd::start_on(free_port());
        let mailer = mailer(&app, smtp.port);
        app.clock.advance(60);
        app.mandate(AWA, &demarches("famille"), 31).await;
        app.clock.advance(1);
        let session = app.login(AWA).await;
        let res = app
            .as_user(
                &session,
                axum::http::Method::PUT,
                "/api/v1/me/data/contact",
                Some(serde_json::json!({"email": "someone.else@example.net", "commune_insee": "31901"})),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let report = deliver_due(&app.state, &mailer, app.clock.now()).await.unwrap();
        assert_eq!(report.sent, 1, "{report:?}");
        let mail = smtp.messages();
        assert_eq!(mail.len(), 1);
        let to = mail[0]["headers"]["To"].as_str().unwrap();
        assert!(
            to.contains("awa.diallo@example.org") && to.contains("someone.else@example.net"),
            "{to}"
        );
    })
    .await;
}

/// A resident with no e-mail address gets a letter: the DPO's printable
/// batch shows the name and postal address (each read recorded, with the
/// DPO as the actor), and marking it posted is recorded too.
#[tokio::test]
async fn letters_are_printed_by_the_dpo_and_marked_posted() {
    if !aiosmtpd_available() {
        return;
    }
    each_backend(|app| async move {
        const DPO: &str = "a1d00000-0000-4000-8000-000000000004";
        settle_demo_messages(&app).await;
        let smtp = Smtpd::start_on(free_port());
        let mailer = mailer(&app, smtp.port);
        app.mandate(JEAN_PIERRE, &demarches("famille"), 31).await;
        let report = deliver_due(&app.state, &mailer, app.clock.now())
            .await
            .unwrap();
        assert_eq!(report.post, 1, "{report:?}");

        let dpo = app.login(DPO).await;
        let page = app
            .as_user(&dpo, axum::http::Method::GET, "/dpo/courriers", None)
            .await;
        assert_eq!(page.status, 200);
        let html = page.text();
        assert!(
            html.contains("Jean-Pierre Martin") && html.contains("3 chemin du Mas"),
            "{html}"
        );
        let entry = app.last_entry().await;
        assert_eq!(
            (
                entry.actor_id.as_str(),
                entry.actor_role.as_str(),
                entry.action.as_str()
            ),
            (DPO, "notifier", "notice.address")
        );
        let id = app
            .store
            .outbox_of_resident(&resident_id(JEAN_PIERRE))
            .await
            .unwrap()
            .into_iter()
            .last()
            .unwrap()
            .id;
        let res = app
            .send(
                axum::http::Method::POST,
                "/dpo/courriers",
                &[
                    ("cookie", dpo.cookie.as_str()),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                format!("csrf_token={}&id={id}", dpo.csrf),
            )
            .await;
        assert_eq!(res.status, 303, "{}", res.text());
        assert_eq!(app.store.outbox_counts().await.unwrap().post, 0);
        let entry = app.last_entry().await;
        assert_eq!(
            (
                entry.actor_id.as_str(),
                entry.action.as_str(),
                entry.resident_id.as_deref()
            ),
            (DPO, "notice.letter_posted", Some(JEAN_PIERRE))
        );
        // Nobody else prints letters.
        let awa = app.login(AWA).await;
        let res = app
            .as_user(&awa, axum::http::Method::GET, "/dpo/courriers", None)
            .await;
        assert_ne!(res.status, 200);
    })
    .await;
}

/// A rights request extended, then answered: the resident is told each
/// time, the message written with the change and pointing to their space.
#[tokio::test]
async fn a_rights_request_extended_then_answered_is_told() {
    if !aiosmtpd_available() {
        return;
    }
    each_backend(|app| async move {
        const DPO: &str = "a1d00000-0000-4000-8000-000000000004";
        settle_demo_messages(&app).await;
        let smtp = Smtpd::start_on(free_port());
        let mailer = mailer(&app, smtp.port);
        let awa = app.login(AWA).await;
        let made = app
            .as_user(
                &awa,
                axum::http::Method::POST,
                "/api/v1/me/requests",
                Some(serde_json::json!({"kind": "access"})),
            )
            .await;
        assert_eq!(made.status.as_u16() / 100, 2, "{}", made.text());
        let id = made.json()["id"].as_str().unwrap().to_string();
        let dpo = app.login(DPO).await;
        for (path, body) in [
            ("extend", serde_json::json!({"reason": "complexity"})),
            ("close", serde_json::json!({"outcome": "granted"})),
        ] {
            let res = app
                .as_user(
                    &dpo,
                    axum::http::Method::POST,
                    &format!("/api/v1/dpo/requests/{id}/{path}"),
                    Some(body),
                )
                .await;
            assert_eq!(res.status, 200, "{}", res.text());
        }
        let mut events: Vec<String> = app
            .store
            .outbox_of_resident(&resident_id(AWA))
            .await
            .unwrap()
            .iter()
            .filter(|m| m.subject_id == id)
            .map(|m| m.event.as_str().to_string())
            .collect();
        events.sort();
        assert_eq!(events, ["rights.answered", "rights.extended"]);
        // Where the message leads: the resident's requests, answered.
        let page = app
            .as_user(&awa, axum::http::Method::GET, "/moi/demandes", None)
            .await;
        assert_eq!(page.status, 200);
        let html = page.text();
        assert!(
            html.contains("acceptée") && html.contains("complexité"),
            "{html}"
        );
        let report = deliver_due(&app.state, &mailer, app.clock.now())
            .await
            .unwrap();
        assert_eq!(report.sent, 2, "{report:?}");
        for m in smtp.messages() {
            let text = m["parts"][0]["text"].as_str().unwrap().to_string();
            assert!(
                text.contains("/moi/demandes") && text.contains("CNIL"),
                "{text}"
            );
            assert!(!text.contains("Awa"), "{text}");
        }
    })
    .await;
}

/// A consent that ends within 30 days is told once (the retention job,
/// hourly, writes the message; a second run adds nothing), and the message
/// leads to the resident's consents.
#[tokio::test]
async fn a_consent_ending_within_thirty_days_is_told_once() {
    if !aiosmtpd_available() {
        return;
    }
    each_backend(|app| async move {
        settle_demo_messages(&app).await;
        let smtp = Smtpd::start_on(free_port());
        let mailer = mailer(&app, smtp.port);
        let consent = app
            .store
            .consents_of(&resident_id(AWA))
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.state.as_str() == "given" && c.valid_until.is_some())
            .unwrap();
        let ends = consent.valid_until.unwrap();
        // Forty days before: nothing yet.
        app.clock.set(ends - 40 * 86_400);
        let r = coffre::service::rights::run_retention(&app.state, app.clock.now())
            .await
            .unwrap();
        assert_eq!(r.consents_ending_told, 0);
        // Ten days before: told, once.
        app.clock.set(ends - 10 * 86_400);
        for expected in [1, 0] {
            let r = coffre::service::rights::run_retention(&app.state, app.clock.now())
                .await
                .unwrap();
            assert!(
                (expected == 0 && r.consents_ending_told == 0)
                    || (expected == 1 && r.consents_ending_told >= 1),
                "{r:?}"
            );
        }
        let told: Vec<_> = app
            .store
            .outbox_of_resident(&resident_id(AWA))
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.subject_id == consent.id.as_str())
            .collect();
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].event.as_str(), "consent.expiring");
        let report = deliver_due(&app.state, &mailer, app.clock.now())
            .await
            .unwrap();
        assert!(report.sent >= 1, "{report:?}");
        assert!(smtp.messages().iter().any(|m| {
            m["parts"][0]["text"]
                .as_str()
                .unwrap()
                .contains("/moi/consentements")
        }));
    })
    .await;
}
