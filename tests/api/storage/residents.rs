//! ResidentStore: registration, provider logins, and the erasure with
//! everything it reaches.

use coffre::domain::Role;
use coffre::storage::{DynStore, MandateDraftRow, NewSession};

use super::{
    Decision, T0, assert_conflict, assert_not_found, at_once, data_keys, each_store, mandate,
    notice, on, partner, record, residents, structure_with_aidant,
};

#[tokio::test]
async fn residents_register_once_and_only_active_ones_count() {
    each_store(|store| async move {
        let b = on(&store);
        assert!(!store.has_residents().await.unwrap(), "{b}");
        assert_eq!(store.count_residents().await.unwrap(), 0, "{b}");

        residents(&store, &["awa", "basile"]).await;
        assert_conflict(
            store
                .insert_resident(&crate::support::resident_id("awa"), T0)
                .await,
            "same id twice",
        );
        assert!(store.has_residents().await.unwrap(), "{b}");
        assert_eq!(store.count_residents().await.unwrap(), 2, "{b}");
        assert!(
            store
                .resident_exists(&crate::support::resident_id("awa"))
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            !store
                .resident_exists(&crate::support::resident_id("nobody"))
                .await
                .unwrap(),
            "{b}"
        );

        assert!(
            store
                .erase_resident(&crate::support::resident_id("basile"), T0, &[])
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            !store
                .resident_exists(&crate::support::resident_id("basile"))
                .await
                .unwrap(),
            "{b}"
        );
        assert_eq!(store.count_residents().await.unwrap(), 1, "{b}");
        // Any status: an erased resident still holds its id.
        assert!(store.has_residents().await.unwrap(), "{b}");
        assert_conflict(
            store
                .insert_resident(&crate::support::resident_id("basile"), T0)
                .await,
            "erased id reused",
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_account_maps_to_one_resident_even_when_first_logins_race() {
    each_store(|store| async move {
        let b = on(&store);
        let first = store
            .resident_for_login("sub-1", &crate::support::resident_id("r-1"), T0)
            .await
            .unwrap();
        assert_eq!(first, (crate::support::resident_id("r-1"), true), "{b}");
        let again = store
            .resident_for_login("sub-1", &crate::support::resident_id("r-2"), T0 + 5)
            .await
            .unwrap();
        assert_eq!(again, (crate::support::resident_id("r-1"), false), "{b}");
        assert!(
            !store
                .resident_exists(&crate::support::resident_id("r-2"))
                .await
                .unwrap(),
            "{b}"
        );

        let outcomes = at_once(8, |i| {
            let store = store.clone();
            async move {
                store
                    .resident_for_login(
                        "sub-2",
                        &crate::support::resident_id(format!("racer-{i}")),
                        T0,
                    )
                    .await
                    .unwrap()
            }
        })
        .await;
        let winner = &outcomes[0].0;
        assert!(
            outcomes.iter().all(|(id, _)| id == winner),
            "{b}: {outcomes:?}"
        );
        assert_eq!(
            outcomes.iter().filter(|(_, created)| *created).count(),
            1,
            "{b}"
        );
        // The losers' residents were rolled back with their links.
        assert_eq!(store.count_residents().await.unwrap(), 2, "{b}");
    })
    .await;
}

/// Awa with something in every aggregate the erasure reaches.
async fn awa_everywhere(store: &DynStore) {
    let (id, created) = store
        .resident_for_login("sub-awa", &crate::support::resident_id("awa"), T0)
        .await
        .unwrap();
    assert!(created && id == "awa");
    structure_with_aidant(store).await;
    data_keys(store, &["awa"]).await;
    store
        .insert_record(
            &crate::support::resident_id("awa"),
            &record("rec-1", "contact", 1, T0),
            &[],
        )
        .await
        .unwrap();
    Decision::new("awa", "p-given", "given")
        .record(store, None, 1)
        .await
        .unwrap();
    Decision::new("awa", "p-refused", "refused")
        .record(store, None, 2)
        .await
        .unwrap();
    store
        .create_mandate(
            &mandate("m1", "awa", T0, T0 + 10_000),
            &crate::support::demarches("famille,logement"),
            T0,
            &Default::default(),
        )
        .await
        .unwrap();
    store
        .insert_mandate_draft(&MandateDraftRow {
            id: crate::support::did("d1"),
            aidant_id: crate::support::aid("ag1"),
            structure_id: crate::support::sid("s1"),
            demarches: crate::support::demarches("famille"),
            duration_days: 31,
            renews: None,
            resident_id: Some(crate::support::resident_id("awa")),
            created_at: T0,
            expires_at: T0 + 600,
        })
        .await
        .unwrap();
    store
        .create_session(&NewSession {
            token_hash: "t-awa",
            actor_id: "awa",
            role: Role::Resident,
            csrf_token: "csrf",
            now: T0,
            expires_at: T0 + 3600,
            provider: "resident",
            id_token_sealed: None,
        })
        .await
        .unwrap();
    store.insert_partner(&partner("p1"), T0).await.unwrap();
}

#[tokio::test]
async fn the_erasure_reaches_every_aggregate_in_one_transaction() {
    each_store(|store| async move {
        let b = on(&store);
        awa_everywhere(&store).await;
        let now = T0 + 10;

        let erased = store
            .erase_resident(
                &crate::support::resident_id("awa"),
                now,
                &[notice("n1", "p1", "erasure", now)],
            )
            .await
            .unwrap();
        assert!(erased, "{b}");
        assert!(
            !store
                .erase_resident(&crate::support::resident_id("awa"), now, &[])
                .await
                .unwrap(),
            "twice ({b})"
        );
        assert!(
            !store
                .erase_resident(&crate::support::resident_id("nobody"), now, &[])
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            !store
                .resident_exists(&crate::support::resident_id("awa"))
                .await
                .unwrap(),
            "{b}"
        );

        // Key and data gone.
        assert!(
            store
                .find_data_key(&crate::support::resident_id("awa"))
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        assert!(
            store
                .current_records(&crate::support::resident_id("awa"))
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );
        assert!(
            store
                .record_history(&crate::support::resident_id("awa"), "contact")
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );

        // Consents kept as proof; the given one withdrawn at `now`.
        let given = store
            .find_consent(
                &crate::support::resident_id("awa"),
                &crate::support::purpose_id("p-given"),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(given.state.as_str(), "withdrawn", "{b}");
        assert_eq!(
            (given.valid_until, given.updated_at, given.seq),
            (Some(now), now, 2),
            "{b}"
        );
        let refused = store
            .find_consent(
                &crate::support::resident_id("awa"),
                &crate::support::purpose_id("p-refused"),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!((refused.state.as_str(), refused.seq), ("refused", 1), "{b}");
        assert_eq!(
            store.consent_events(&given.id).await.unwrap().len(),
            1,
            "{b}"
        );

        // Mandate kept, every authorisation ended by the erasure.
        assert!(
            store
                .find_mandate(&crate::support::mid("m1"))
                .await
                .unwrap()
                .is_some(),
            "{b}"
        );
        let auths = store
            .mandate_authorisations(&crate::support::mid("m1"))
            .await
            .unwrap();
        assert_eq!(auths.len(), 2, "{b}");
        for a in &auths {
            assert_eq!(a.revoked_at, Some(now), "{b}");
            assert_eq!(a.revoked_by.as_deref(), Some("resident_erased"), "{b}");
        }

        // Sessions, drafts and the provider link gone.
        assert!(
            store.find_session("t-awa", now, 0).await.unwrap().is_none(),
            "{b}"
        );
        assert!(
            store
                .find_mandate_draft(&crate::support::did("d1"))
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        let next = store
            .resident_for_login("sub-awa", &crate::support::resident_id("awa-2"), now)
            .await
            .unwrap();
        assert_eq!(
            next,
            (crate::support::resident_id("awa-2"), true),
            "a fresh start ({b})"
        );

        // The notice was written with it.
        let notices = store
            .take_notifications(&crate::support::pid("p1"), now)
            .await
            .unwrap();
        assert_eq!(notices.len(), 1, "{b}");
        assert_eq!(notices[0].kind.as_str(), "erasure", "{b}");

        // Nothing new attaches to the erased resident.
        assert_not_found(
            store
                .insert_record(
                    &crate::support::resident_id("awa"),
                    &record("rec-2", "contact", 2, now),
                    &[],
                )
                .await,
            "record after erasure",
        );
        let key = coffre::storage::DataKeyRow {
            resident_id: crate::support::resident_id("awa"),
            kek_version: 1,
            wrapped: b"again".to_vec(),
        };
        assert!(!store.insert_data_key(&key, now).await.unwrap(), "{b}");
        assert_not_found(
            store
                .create_mandate(
                    &mandate("m2", "awa", now, now + 100),
                    &crate::support::demarches("famille"),
                    now,
                    &Default::default(),
                )
                .await,
            "mandate after erasure",
        );
    })
    .await;
}
