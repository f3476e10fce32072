//! Issue 27, the second review (as an attacker and as a DPO would): each
//! finding has a test here that failed on the main it was found on, on both
//! backends. (§2, aggregates that subtract to one person, is in
//! `extracts.rs`; §5, the policies folder, in `cli.rs`; §6's dates in
//! `rights.rs`' unit tests.)

use axum::http::Method;
use coffre::domain::Demarche;

use crate::extracts::{built, partner, renov};
use crate::support::each_backend;

const AWA: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000001";
const LUCIE: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000003";
const AIDANT: &str = "a1d00000-0000-4000-8000-000000000001";
const DPO: &str = "a1d00000-0000-4000-8000-000000000004";

/// A copy of the reviewed register with `renov-energie` taken off
/// `renovation-energetique`'s recipients.
fn register_without_renov() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir("policies").unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let purposes = std::fs::read_to_string("policies/purposes.toml").unwrap();
    let changed = purposes.replacen("recipients = [\"renov-energie\"]", "recipients = []", 1);
    assert_ne!(changed, purposes);
    std::fs::write(dir.path().join("purposes.toml"), changed).unwrap();
    dir
}

/// §1: a partner taken off a purpose's recipients still downloaded an
/// extract built before, and one requested before was approved, built and
/// downloaded.
#[tokio::test]
async fn a_partner_taken_off_a_purpose_gets_no_extract_of_it() {
    each_backend(|app| async move {
        let token = renov(&app).await;
        let ready = built(
            &app,
            &token,
            serde_json::json!({"purpose": "renovation-energetique", "kind": "records", "categories": ["housing"]}),
        )
        .await;
        assert_eq!(ready["state"], "ready", "{ready}");
        let ready = ready["id"].as_str().unwrap().to_string();
        let pending = partner(
            &app,
            &token,
            Method::POST,
            "/api/v1/partner/extracts",
            Some(serde_json::json!({"purpose": "renovation-energetique", "kind": "records", "categories": ["housing"]})),
        )
        .await;
        assert_eq!(pending.status, 201, "{}", pending.text());
        let pending = pending.json()["id"].as_str().unwrap().to_string();

        // The register changes; the service restarts with it.
        let policies = register_without_renov();
        let path = policies.path().to_path_buf();
        let app = app
            .restart_with(move |c| {
                c.policies_dir = path.clone();
                c.policies_dir_explicit = true;
            })
            .await;
        let _ = &policies;
        partner(
            &app,
            &token,
            Method::GET,
            &format!("/api/v1/partner/extracts/{ready}/file"),
            None,
        )
        .await
        .assert_error(403, "not_a_recipient");
        let dpo = app.login(DPO).await;
        // The DPO sees why before deciding…
        let list = app
            .as_user(&dpo, Method::GET, "/api/v1/dpo/extracts", None)
            .await
            .json();
        for id in [&ready, &pending] {
            let x = list["extracts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["id"] == id.as_str())
                .unwrap();
            assert_eq!(x["blocked"], "not_a_recipient", "{x}");
        }
        let page = app.as_user(&dpo, Method::GET, "/dpo", None).await;
        assert!(page.text().contains("plus destinataire"), "{}", page.text());
        // …and approval is refused, with its reason in the log.
        app.as_user(
            &dpo,
            Method::POST,
            &format!("/api/v1/dpo/extracts/{pending}/approve"),
            None,
        )
        .await
        .assert_error(403, "not_a_recipient");
        assert_eq!(
            app.store.find_extract(&crate::support::eid(&pending)).await.unwrap().unwrap().state.as_str(),
            "requested"
        );
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
            (e.action.as_str(), e.reason.as_str()),
            ("extract.approve", "not_a_recipient")
        );
        // A build approved before the change makes no file either.
        let id = uuid::Uuid::new_v4().to_string();
        app.store
            .insert_extract(&coffre::storage::ExtractRow {
                id: crate::support::eid(&id),
                state: "approved".parse().unwrap(),
                ..app.store.find_extract(&crate::support::eid(&pending)).await.unwrap().unwrap()
            })
            .await
            .unwrap();
        let err = coffre::service::extract_build::build(&app.state, &crate::support::eid(&id), app.clock.now())
            .await
            .unwrap_err();
        assert!(err.starts_with("not_a_recipient"), "{err}");
        assert_eq!(
            app.store.find_extract(&crate::support::eid(&id)).await.unwrap().unwrap().state.as_str(),
            "failed"
        );
    })
    .await;
}

/// §6: a ready extract whose `expires_at` has passed downloaded until the
/// hourly purge ran.
#[tokio::test]
async fn an_extract_past_its_expiry_never_downloads() {
    each_backend(|app| async move {
        let token = renov(&app).await;
        let v = built(
            &app,
            &token,
            serde_json::json!({"purpose": "renovation-energetique", "kind": "records", "categories": ["housing"]}),
        )
        .await;
        let id = v["id"].as_str().unwrap().to_string();
        let expires = v["expires_at"].as_i64().unwrap();
        app.clock.set(expires);
        let token = renov(&app).await;
        partner(
            &app,
            &token,
            Method::GET,
            &format!("/api/v1/partner/extracts/{id}/file"),
            None,
        )
        .await
        .assert_error(410, "extract_expired");
        // The purge has not run: the row still says ready.
        assert_eq!(
            app.store.find_extract(&crate::support::eid(&id)).await.unwrap().unwrap().state.as_str(),
            "ready"
        );
    })
    .await;
}

/// §3: the purge of data held only for consent-based purposes started from
/// consent rows: a resident who never consented kept the data forever.
#[tokio::test]
async fn retention_removes_data_that_no_consent_ever_covered() {
    each_backend(|app| async move {
        let lucie = app.login(LUCIE).await;
        // Lucie saves culture data and never consents to the agenda.
        let res = app
            .as_user(
                &lucie,
                Method::PUT,
                "/api/v1/me/data/culture",
                Some(serde_json::json!({"interests": ["danse"]})),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        // A resident of the demo's synthetic territory, seeded without a
        // consent, with data of a consent-only category, if any.
        let year_2100 = 4_102_444_800;
        let r = coffre::service::rights::run_retention(&app.state, year_2100)
            .await
            .unwrap();
        assert!(r.records_without_consent >= 1, "{r:?}");
        assert!(
            app.store
                .record_history(&crate::support::resident_id(LUCIE), "culture")
                .await
                .unwrap()
                .is_empty()
        );
        // Nothing of a category held on another basis goes.
        assert!(
            !app.store
                .record_history(&crate::support::resident_id(LUCIE), "contact")
                .await
                .unwrap()
                .is_empty()
        );
        // No resident keeps culture data without a consent covering it.
        let p = app.raw_pool().await;
        let (left,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM personal_records p WHERE p.category = 'culture' AND NOT EXISTS \
             (SELECT 1 FROM consents c WHERE c.resident_id = p.resident_id AND c.state = 'given' \
              AND c.valid_until > $1)",
        )
        .bind(year_2100 - 30 * 86_400)
        .fetch_one(&p)
        .await
        .unwrap();
        p.close().await;
        assert_eq!(left, 0);
    })
    .await;
}

/// §4: after an erasure, the resident's attestation still verified as
/// valid and the aidant's authorisations stayed live.
#[tokio::test]
async fn an_erasure_ends_every_mandate_of_the_resident() {
    each_backend(|app| async move {
        let structure = app
            .store
            .find_structure(&crate::support::sid(coffre::demo::STRUCTURE_CCAS))
            .await
            .unwrap()
            .unwrap();
        let (_, attestation) = coffre::service::mandates::create(
            &app.state,
            coffre::service::mandates::NewMandate {
                aidant_id: &crate::support::aid(AIDANT),
                structure: &structure,
                resident_id: &crate::support::resident_id(LUCIE),
                demarches: &[Demarche::Logement, Demarche::Famille],
                duration_days: 365,
                renews: None,
            },
            app.clock.now(),
        )
        .await
        .unwrap();
        let verify = format!("/api/v1/mandates/verify?attestation={attestation}");
        assert_eq!(app.get(&verify).await.json()["status"], "valid");
        let lucie = app.login(LUCIE).await;
        let res = app
            .as_user(&lucie, Method::POST, "/api/v1/me/erasure", None)
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let v = app.get(&verify).await.json();
        assert_eq!(
            (v["status"].as_str(), v["reason"].as_str()),
            (Some("revoked"), Some("resident_erased")),
            "{v}"
        );
        // No new mandate either (a draft she logged in to is gone with her).
        let again = coffre::service::mandates::create(
            &app.state,
            coffre::service::mandates::NewMandate {
                aidant_id: &crate::support::aid(AIDANT),
                structure: &structure,
                resident_id: &crate::support::resident_id(LUCIE),
                demarches: &[Demarche::Logement],
                duration_days: 31,
                renews: None,
            },
            app.clock.now(),
        )
        .await;
        assert!(again.is_err(), "a mandate for an erased resident");
        let aidant = app.login(AIDANT).await;
        let live = app
            .store
            .live_authorisation(
                &crate::support::resident_id(LUCIE),
                &crate::support::sid(coffre::demo::STRUCTURE_CCAS),
                coffre::domain::Demarche::Logement,
                app.clock.now(),
            )
            .await
            .unwrap();
        assert!(live.is_none());
        app.as_user(
            &aidant,
            Method::GET,
            &format!("/api/v1/aidant/residents/{LUCIE}/data/housing?demarche=logement"),
            None,
        )
        .await
        .assert_error(403, "no_active_mandate");
        let _ = AWA;
    })
    .await;
}
