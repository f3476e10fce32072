//! PartnerStore: partners, the residents a partner may be shown, and the
//! pseudonyms it knows them by.

use coffre::storage::SeedBatch;

use super::{Decision, T0, assert_conflict, each_store, on, partner, residents};

#[tokio::test]
async fn partners_round_trip_with_a_unique_client_id() {
    each_store(|store| async move {
        let b = on(&store);
        let mut p1 = partner("p1");
        p1.age_recipient = Some("age1xyz".into());
        p1.client_jwks = Some(r#"{"keys":[]}"#.into());
        store.insert_partner(&p1, T0).await.unwrap();
        let mut copy = partner("p2");
        copy.client_id = p1.client_id.clone();
        assert_conflict(store.insert_partner(&copy, T0).await, "same client id");
        assert_conflict(store.insert_partner(&partner("p1"), T0).await, "same id");

        let found = store
            .find_partner(&crate::support::pid("p1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.age_recipient.as_deref(), Some("age1xyz"), "{b}");
        assert_eq!(found.client_jwks, p1.client_jwks, "{b}");
        let by_client = store.find_partner_by_client_id("client-p1").await.unwrap();
        assert_eq!(
            by_client.map(|p| p.id.into_string()).as_deref(),
            Some("p1"),
            "{b}"
        );
        assert!(
            store
                .find_partner(&crate::support::pid("p9"))
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );

        assert!(
            store
                .set_partner_active(&crate::support::pid("p1"), false)
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            !store
                .find_partner(&crate::support::pid("p1"))
                .await
                .unwrap()
                .unwrap()
                .active,
            "{b}"
        );
        assert!(
            !store
                .set_partner_active(&crate::support::pid("p9"), false)
                .await
                .unwrap(),
            "{b}"
        );
    })
    .await;
}

#[tokio::test]
async fn pseudonyms_belong_to_one_partner_and_the_first_mapping_stays() {
    each_store(|store| async move {
        let b = on(&store);
        // More residents than one statement of pseudonyms takes (500).
        let ids: Vec<String> = (0..1100).map(|i| format!("r{i:04}")).collect();
        store
            .seed_batch(&SeedBatch {
                residents: ids.clone(),
                now: T0,
                ..SeedBatch::default()
            })
            .await
            .unwrap();
        let pairs: Vec<(coffre::domain::Pseudonym, String)> = ids
            .iter()
            .map(|r| (crate::support::psd(&format!("ps-{r}")), r.clone()))
            .collect();
        store
            .remember_pseudonyms(&crate::support::pid("p1"), &pairs)
            .await
            .unwrap();
        let last = store
            .resolve_pseudonym(&crate::support::pid("p1"), &crate::support::psd("ps-r1099"))
            .await
            .unwrap();
        assert_eq!(last.as_ref().map(|r| r.as_str()), Some("r1099"), "{b}");

        // Remembering again, even for another resident, keeps the first.
        store
            .remember_pseudonyms(
                &crate::support::pid("p1"),
                &[(crate::support::psd("ps-r0000"), "r0001".into())],
            )
            .await
            .unwrap();
        let first = store
            .resolve_pseudonym(&crate::support::pid("p1"), &crate::support::psd("ps-r0000"))
            .await
            .unwrap();
        assert_eq!(first.as_ref().map(|r| r.as_str()), Some("r0000"), "{b}");
        // Another partner's pseudonyms are not this one's.
        assert!(
            store
                .resolve_pseudonym(&crate::support::pid("p2"), &crate::support::psd("ps-r0000"))
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        assert!(
            store
                .resolve_pseudonym(&crate::support::pid("p1"), &crate::support::psd("ps-none"))
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        assert_conflict(
            store
                .remember_pseudonyms(
                    &crate::support::pid("p1"),
                    &[(crate::support::psd("ps-ghost"), "ghost".into())],
                )
                .await,
            "unknown resident",
        );
    })
    .await;
}

#[tokio::test]
async fn reachable_residents_follow_consent_restriction_and_objection_in_a_stable_order() {
    each_store(|store| async move {
        let b = on(&store);
        residents(&store, &["r5", "r1", "r2", "r3", "r4", "r6"]).await;
        store
            .set_restricted(&crate::support::resident_id("r2"), Some(T0), &[])
            .await
            .unwrap();
        store
            .add_objection(
                &crate::support::resident_id("r3"),
                coffre::domain::rights::ObjectionTo::Purpose(&crate::support::purpose_id(
                    "p-legit",
                )),
                T0,
            )
            .await
            .unwrap();
        store
            .erase_resident(&crate::support::resident_id("r4"), T0, &[])
            .await
            .unwrap();

        // Not consent-based: the active residents, neither restricted nor
        // objecting to the purpose, by id, paged.
        let legit = |offset, limit| {
            let store = store.clone();
            async move {
                store
                    .reachable_residents(
                        &crate::support::purpose_id("p-legit"),
                        false,
                        "",
                        T0,
                        offset,
                        limit,
                    )
                    .await
                    .unwrap()
            }
        };
        assert_eq!(legit(0, 10).await, ["r1", "r5", "r6"], "{b}");
        assert_eq!(legit(0, 1).await, ["r1"], "{b}");
        assert_eq!(legit(1, 10).await, ["r5", "r6"], "{b}");

        // Consent-based: a consent given, valid after `now`, under the
        // current notice.
        let give = |resident, notice_version, valid_until| Decision {
            notice_version,
            valid_until: Some(valid_until),
            ..Decision::new(resident, "p-consent", "given")
        };
        give("r1", "v2", T0 + 100)
            .record(&store, None, 1)
            .await
            .unwrap();
        give("r2", "v2", T0 + 100)
            .record(&store, None, 2)
            .await
            .unwrap();
        give("r5", "v1", T0 + 100)
            .record(&store, None, 3)
            .await
            .unwrap();
        give("r6", "v2", T0).record(&store, None, 4).await.unwrap();
        Decision::new("r3", "p-consent", "refused")
            .record(&store, None, 5)
            .await
            .unwrap();
        let consented = store
            .reachable_residents(
                &crate::support::purpose_id("p-consent"),
                true,
                "v2",
                T0,
                0,
                10,
            )
            .await
            .unwrap();
        assert_eq!(consented, ["r1"], "{b}");
    })
    .await;
}
