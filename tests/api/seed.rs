//! The synthetic territory: deterministic, readable through the vault,
//! consents that work, and usable by the rest of the product.

use crate::support::{T0, each_backend_with};

#[tokio::test]
async fn a_seeded_territory_is_deterministic_and_works_end_to_end() {
    each_backend_with(false, |app| async move {
        let report = coffre::seed::seed(&app.state, 600, 42, T0, |_, _| {})
            .await
            .unwrap();
        assert_eq!(report.residents, 600);
        assert!(report.records >= 600 * 7);
        assert!(report.consents > 100, "{report:?}");
        assert_eq!(app.store.count_residents().await.unwrap(), 600);
        // Seeding again is refused.
        let again = coffre::seed::seed(&app.state, 10, 42, T0, |_, _| {})
            .await
            .unwrap_err();
        assert_eq!(again.code_and_status().0, "not_empty");

        // Every resident opens through the vault; the same seed gives the
        // same people.
        let vault = app.state.vault().unwrap();
        let first = app
            .store
            .reachable_residents(
                &crate::support::purpose_id("renovation-energetique"),
                false,
                "",
                T0,
                0,
                1,
            )
            .await
            .unwrap();
        let records = vault
            .read_current(&crate::support::resident_id(&first[0]))
            .await
            .unwrap();
        let identity = records.iter().find(|r| r.category == "identity").unwrap();
        assert!(identity.fields["family_name"].is_string());
        let other = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", other.path().join("twin.db").display());
        let twin = crate::support::build_app(&url, "sqlite", false).await;
        coffre::seed::seed(&twin.state, 600, 42, T0, |_, _| {})
            .await
            .unwrap();
        let twin_first = twin
            .store
            .reachable_residents(
                &crate::support::purpose_id("renovation-energetique"),
                false,
                "",
                T0,
                0,
                1,
            )
            .await
            .unwrap();
        assert_eq!(twin_first, first);
        let twin_records = twin
            .state
            .vault()
            .unwrap()
            .read_current(&crate::support::resident_id(&twin_first[0]))
            .await
            .unwrap();
        let twin_identity = twin_records
            .iter()
            .find(|r| r.category == "identity")
            .unwrap();
        assert_eq!(twin_identity.fields, identity.fields);

        // Consents are real: the validity question answers, receipts verify.
        let purpose = app.state.register.get("etude-mobilite").unwrap();
        let consenting = app
            .store
            .reachable_residents(
                &crate::support::purpose_id("etude-mobilite"),
                true,
                &purpose.notice_version,
                T0,
                0,
                1000,
            )
            .await
            .unwrap();
        assert!(!consenting.is_empty() && consenting.len() < 600);
        let c = coffre::service::consents::valid_consent(
            app.store.as_ref(),
            purpose,
            &crate::support::resident_id(&consenting[0]),
            "mobility",
            Some("labo-mobilite"),
            T0,
        )
        .await
        .unwrap();
        assert!(c.is_some());
        let consent = app
            .store
            .consents_of(&crate::support::resident_id(&consenting[0]))
            .await
            .unwrap();
        let events = app.store.consent_events(&consent[0].id).await.unwrap();
        assert_eq!(events[0].receipt.split('.').count(), 3);

        // The services around them: a CCAS per commune with a référent and
        // two aidants, mandates that work, and the register's partners with
        // credentials that work.
        assert_eq!(report.structures, 36);
        assert_eq!(report.agents, 108);
        assert!(report.mandates > 0, "{report:?}");
        let mut mandated = 0;
        for s in app.store.list_structures().await.unwrap() {
            mandated += app
                .store
                .structure_authorisations(&s.id, T0, i64::MAX)
                .await
                .unwrap()
                .len();
        }
        assert!(mandated as u64 >= report.mandates, "{mandated}");
        let ids: Vec<&str> = report.partners.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            ["labo-mobilite", "observatoire-sante", "renov-energie"]
        );
        let lab = &report.partners[0];
        let token = app.partner_token(&lab.client_id, &lab.client_secret).await;
        assert!(!token.is_empty());
    })
    .await;
}
