//! MandateStore: drafts, mandates with one live authorisation per
//! démarche, revocation and the purge of ended mandates.

use coffre::storage::MandateDraftRow;

use super::{
    T0, assert_conflict, assert_not_found, each_store, mandate, on, residents,
    structure_with_aidant,
};

fn demarches(list: &[&str]) -> Vec<coffre::domain::Demarche> {
    list.iter().map(|d| d.parse().unwrap()).collect()
}

#[tokio::test]
async fn a_mandate_holds_one_live_authorisation_per_demarche_and_supersedes_the_last() {
    each_store(|store| async move {
        let b = on(&store);
        structure_with_aidant(&store).await;
        residents(&store, &["awa"]).await;
        let m1 = mandate("m1", "awa", T0, T0 + 1000);
        store
            .create_mandate(
                &m1,
                &demarches(&["logement", "famille"]),
                T0,
                &Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .find_mandate(&crate::support::mid("m1"))
                .await
                .unwrap()
                .unwrap()
                .expires_at,
            T0 + 1000
        );
        let auths = store
            .mandate_authorisations(&crate::support::mid("m1"))
            .await
            .unwrap();
        let listed: Vec<_> = auths.iter().map(|a| a.demarche.as_str()).collect();
        assert_eq!(listed, ["famille", "logement"], "by démarche ({b})");
        assert!(
            auths
                .iter()
                .all(|a| a.revoked_at.is_none() && a.expires_at == T0 + 1000)
        );
        assert_conflict(
            store
                .create_mandate(&m1, &demarches(&["famille"]), T0, &Default::default())
                .await,
            "same mandate id",
        );
        assert_not_found(
            store
                .create_mandate(
                    &mandate("m9", "ghost", T0, T0 + 10),
                    &demarches(&["famille"]),
                    T0,
                    &Default::default(),
                )
                .await,
            "unknown resident",
        );

        // A new mandate for one démarche supersedes that one only.
        let m2 = mandate("m2", "awa", T0 + 10, T0 + 2000);
        store
            .create_mandate(&m2, &demarches(&["logement"]), T0 + 10, &Default::default())
            .await
            .unwrap();
        let old = store
            .mandate_authorisations(&crate::support::mid("m1"))
            .await
            .unwrap();
        assert_eq!(old[0].revoked_at, None, "famille stays ({b})");
        assert_eq!(old[1].revoked_at, Some(T0 + 10), "{b}");
        assert_eq!(old[1].revoked_by.as_deref(), Some("superseded"), "{b}");
        let live = |demarche: &'static str, now| {
            let store = store.clone();
            async move {
                store
                    .live_authorisation(
                        &crate::support::resident_id("awa"),
                        &crate::support::sid("s1"),
                        demarche.parse().unwrap(),
                        now,
                    )
                    .await
                    .unwrap()
                    .map(|a| a.mandate_id.into_string())
            }
        };
        assert_eq!(
            live("logement", T0 + 20).await.as_deref(),
            Some("m2"),
            "{b}"
        );
        assert_eq!(live("famille", T0 + 20).await.as_deref(), Some("m1"), "{b}");
        assert_eq!(live("famille", T0 + 1000).await, None, "expired ({b})");
        let mine: Vec<_> = store
            .mandates_of_resident(&crate::support::resident_id("awa"))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(mine, ["m2", "m1"], "newest first ({b})");

        // Revocation: one démarche, then the rest; never twice.
        let revoked = store
            .revoke_authorisations(
                &crate::support::mid("m1"),
                Some("famille".parse().unwrap()),
                "awa",
                T0 + 30,
                &[],
            )
            .await
            .unwrap();
        assert_eq!(revoked, 1, "{b}");
        assert_eq!(
            store
                .revoke_authorisations(&crate::support::mid("m1"), None, "awa", T0 + 31, &[])
                .await
                .unwrap(),
            0,
            "{b}"
        );
        assert_eq!(
            store
                .revoke_authorisations(&crate::support::mid("m2"), None, "ag1", T0 + 32, &[])
                .await
                .unwrap(),
            1,
            "{b}"
        );
        let m2_auths = store
            .mandate_authorisations(&crate::support::mid("m2"))
            .await
            .unwrap();
        assert_eq!(m2_auths[0].revoked_by.as_deref(), Some("ag1"), "{b}");
        assert_eq!(live("logement", T0 + 40).await, None, "{b}");
    })
    .await;
}

#[tokio::test]
async fn drafts_round_trip_and_a_structure_sees_its_authorisations_by_expiry() {
    each_store(|store| async move {
        let b = on(&store);
        structure_with_aidant(&store).await;
        residents(&store, &["awa", "basile", "chloe"]).await;
        let draft = MandateDraftRow {
            id: crate::support::did("d1"),
            aidant_id: crate::support::aid("ag1"),
            structure_id: crate::support::sid("s1"),
            demarches: crate::support::demarches("famille,logement"),
            duration_days: 31,
            renews: None,
            resident_id: None,
            created_at: T0,
            expires_at: T0 + 600,
        };
        store.insert_mandate_draft(&draft).await.unwrap();
        assert_conflict(store.insert_mandate_draft(&draft).await, "same draft id");
        store
            .set_draft_resident(
                &crate::support::did("d1"),
                &crate::support::resident_id("awa"),
            )
            .await
            .unwrap();
        let found = store
            .find_mandate_draft(&crate::support::did("d1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            found.resident_id.as_ref().map(|r| r.as_str()),
            Some("awa"),
            "{b}"
        );
        assert_eq!(
            crate::support::joined(&found.demarches),
            "famille,logement",
            "{b}"
        );
        store
            .delete_mandate_draft(&crate::support::did("d1"))
            .await
            .unwrap();
        assert!(
            store
                .find_mandate_draft(&crate::support::did("d1"))
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );

        store
            .create_mandate(
                &mandate("late", "awa", T0, T0 + 900),
                &demarches(&["famille"]),
                T0,
                &Default::default(),
            )
            .await
            .unwrap();
        store
            .create_mandate(
                &mandate("soon", "basile", T0, T0 + 100),
                &demarches(&["logement", "famille"]),
                T0,
                &Default::default(),
            )
            .await
            .unwrap();
        store
            .create_mandate(
                &mandate("gone", "chloe", T0, T0 + 50),
                &demarches(&["famille"]),
                T0,
                &Default::default(),
            )
            .await
            .unwrap();
        store
            .revoke_authorisations(&crate::support::mid("gone"), None, "chloe", T0, &[])
            .await
            .unwrap();

        let seen = |now, until| {
            let store = store.clone();
            async move {
                store
                    .structure_authorisations(&crate::support::sid("s1"), now, until)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|a| (a.mandate_id.into_string(), a.demarche.to_string()))
                    .collect::<Vec<_>>()
            }
        };
        let all = seen(T0, i64::MAX).await;
        let expected = [
            ("soon", "famille"),
            ("soon", "logement"),
            ("late", "famille"),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(m, d)| (m.to_string(), d.to_string()))
            .collect();
        assert_eq!(all, expected, "by expiry, live only ({b})");
        assert_eq!(seen(T0, T0 + 100).await.len(), 2, "expiring by then ({b})");
        assert_eq!(
            seen(T0 + 100, i64::MAX).await.len(),
            1,
            "expired left out ({b})"
        );
    })
    .await;
}

#[tokio::test]
async fn ended_mandates_are_purged_unless_renewed_or_still_running() {
    each_store(|store| async move {
        let b = on(&store);
        structure_with_aidant(&store).await;
        residents(&store, &["awa", "basile", "chloe", "dora", "eve"]).await;
        let famille = demarches(&["famille"]);
        let make = |id: &'static str, resident: &'static str, expires_at, renews: Option<&str>| {
            let mut m = mandate(id, resident, T0, expires_at);
            m.renews = renews.map(crate::support::mid);
            m
        };
        for m in [
            make("ended", "awa", T0 + 100, None),
            make("running", "basile", T0 + 10_000, None),
            make("revoked", "chloe", T0 + 10_000, None),
            make("renewed", "dora", T0 + 100, None),
            make("renewal", "dora", T0 + 10_000, Some("renewed")),
            make("drafted", "eve", T0 + 100, None),
        ] {
            store
                .create_mandate(&m, &famille, T0, &Default::default())
                .await
                .unwrap();
        }
        store
            .revoke_authorisations(&crate::support::mid("revoked"), None, "chloe", T0 + 50, &[])
            .await
            .unwrap();
        // A draft renewing a mandate keeps it too.
        store
            .insert_mandate_draft(&MandateDraftRow {
                id: crate::support::did("d1"),
                aidant_id: crate::support::aid("ag1"),
                structure_id: crate::support::sid("s1"),
                demarches: crate::support::demarches("famille"),
                duration_days: 31,
                renews: Some(crate::support::mid("drafted")),
                resident_id: None,
                created_at: T0,
                expires_at: T0 + 100_000,
            })
            .await
            .unwrap();

        let purged = store.purge_ended_mandates(T0 + 200).await.unwrap();
        assert_eq!(purged, 2, "{b}");
        for gone in ["ended", "revoked"] {
            assert!(
                store
                    .find_mandate(&crate::support::mid(gone))
                    .await
                    .unwrap()
                    .is_none(),
                "{gone} ({b})"
            );
            assert!(
                store
                    .mandate_authorisations(&crate::support::mid(gone))
                    .await
                    .unwrap()
                    .is_empty(),
                "{b}"
            );
        }
        for kept in ["running", "renewed", "renewal", "drafted"] {
            assert!(
                store
                    .find_mandate(&crate::support::mid(kept))
                    .await
                    .unwrap()
                    .is_some(),
                "{kept} ({b})"
            );
        }
        assert_eq!(
            store.purge_ended_mandates(T0 + 200).await.unwrap(),
            0,
            "{b}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_draft_is_confirmed_once_with_its_renewal_in_one_transaction() {
    each_store(|store| async move {
        let b = on(&store);
        structure_with_aidant(&store).await;
        residents(&store, &["awa"]).await;
        let old = mandate("old", "awa", T0, T0 + 1000);
        store
            .create_mandate(
                &old,
                &demarches(&["logement", "famille"]),
                T0,
                &Default::default(),
            )
            .await
            .unwrap();
        let draft = |id: &str| MandateDraftRow {
            id: crate::support::did(id),
            aidant_id: crate::support::aid("ag1"),
            structure_id: crate::support::sid("s1"),
            demarches: crate::support::demarches("famille"),
            duration_days: 31,
            renews: Some(crate::support::mid("old")),
            resident_id: Some(crate::support::resident_id("awa")),
            created_at: T0,
            expires_at: T0 + 600,
        };
        store.insert_mandate_draft(&draft("d1")).await.unwrap();
        let mut renewal = mandate("new", "awa", T0 + 10, T0 + 2000);
        renewal.renews = Some(crate::support::mid("old"));

        // A creation that fails (an unknown resident) leaves the draft and
        // the renewed mandate as they were.
        let mut stranger = renewal.clone();
        stranger.id = crate::support::mid("stranger");
        stranger.resident_id = crate::support::resident_id("nobody");
        assert_not_found(
            store
                .create_mandate_from_draft(
                    &stranger,
                    &demarches(&["famille"]),
                    &crate::support::did("d1"),
                    T0 + 10,
                    &Default::default(),
                )
                .await,
            "unknown resident",
        );
        assert!(
            store
                .find_mandate_draft(&crate::support::did("d1"))
                .await
                .unwrap()
                .is_some(),
            "{b}"
        );
        assert!(
            store
                .mandate_authorisations(&crate::support::mid("old"))
                .await
                .unwrap()
                .iter()
                .all(|a| a.revoked_at.is_none()),
            "{b}"
        );

        store
            .create_mandate_from_draft(
                &renewal,
                &demarches(&["famille"]),
                &crate::support::did("d1"),
                T0 + 10,
                &Default::default(),
            )
            .await
            .unwrap();
        assert!(
            store
                .find_mandate_draft(&crate::support::did("d1"))
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        // Every démarche of the renewed mandate ended: `famille` taken over by
        // the new one, `logement` with it.
        let old_auths = store
            .mandate_authorisations(&crate::support::mid("old"))
            .await
            .unwrap();
        assert_eq!(old_auths.len(), 2, "{b}");
        for a in &old_auths {
            assert_eq!(a.revoked_at, Some(T0 + 10), "{} ({b})", a.demarche);
            assert_eq!(a.revoked_by.as_deref(), Some("superseded"), "{b}");
        }

        // A second confirmation of the same draft finds nothing and makes
        // no second mandate.
        let mut again = renewal.clone();
        again.id = crate::support::mid("again");
        assert_not_found(
            store
                .create_mandate_from_draft(
                    &again,
                    &demarches(&["famille"]),
                    &crate::support::did("d1"),
                    T0 + 20,
                    &Default::default(),
                )
                .await,
            "draft already confirmed",
        );
        assert!(
            store
                .find_mandate(&crate::support::mid("again"))
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        let live = store
            .live_authorisation(
                &crate::support::resident_id("awa"),
                &crate::support::sid("s1"),
                "famille".parse().unwrap(),
                T0 + 30,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(live.mandate_id, "new", "{b}");
    })
    .await;
}
