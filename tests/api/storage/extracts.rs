//! ExtractStore: the life cycle of an extract, the ε budget, and the
//! cohort an extract is built from.

use coffre::storage::{ApproveOutcome, DynStore, ExtractRow};

use super::{Decision, T0, assert_conflict, at_once, each_store, on, partner, residents};

fn extract(id: &str, partner_id: &str, epsilon: Option<f64>, created_at: i64) -> ExtractRow {
    ExtractRow {
        id: crate::support::eid(id),
        partner_id: crate::support::pid(partner_id),
        purpose: crate::support::purpose_id("p-stats"),
        kind: if epsilon.is_some() {
            "aggregate"
        } else {
            "records"
        }
        .parse()
        .unwrap(),
        spec: "{}".into(),
        state: "requested".parse().unwrap(),
        reason: None,
        rows_done: 0,
        rows_total: 0,
        manifest: None,
        manifest_jws: None,
        epsilon,
        created_at,
        updated_at: created_at,
        expires_at: None,
    }
}

async fn state_of(store: &DynStore, id: &str) -> String {
    store
        .find_extract(&crate::support::eid(id))
        .await
        .unwrap()
        .unwrap()
        .state
        .to_string()
}

#[tokio::test]
async fn an_approval_spends_the_partners_budget_at_most_once() {
    each_store(|store| async move {
        let b = on(&store);
        store.insert_partner(&partner("p1"), T0).await.unwrap();
        for e in [
            extract("e1", "p1", Some(0.6), T0),
            extract("e2", "p1", Some(0.6), T0 + 1),
            extract("e3", "p1", None, T0 + 2),
        ] {
            store.insert_extract(&e).await.unwrap();
        }
        assert_conflict(
            store.insert_extract(&extract("e1", "p1", None, T0)).await,
            "same id",
        );

        let approve = |id: &'static str| {
            let store = store.clone();
            async move {
                store
                    .extract_approve(&crate::support::eid(id), 1.0, T0 + 10)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(approve("e1").await, ApproveOutcome::Approved, "{b}");
        assert_eq!(
            approve("e1").await,
            ApproveOutcome::NotRequested,
            "twice ({b})"
        );
        assert_eq!(approve("e2").await, ApproveOutcome::BudgetExhausted, "{b}");
        assert_eq!(
            state_of(&store, "e2").await,
            "requested",
            "still waiting ({b})"
        );
        assert_eq!(
            approve("e3").await,
            ApproveOutcome::Approved,
            "no ε, no budget ({b})"
        );
        assert_eq!(approve("ghost").await, ApproveOutcome::NotRequested, "{b}");
        assert_eq!(
            store
                .epsilon_spent(&crate::support::pid("p1"))
                .await
                .unwrap(),
            0.6,
            "{b}"
        );
        assert_eq!(
            store
                .epsilon_spent(&crate::support::pid("p9"))
                .await
                .unwrap(),
            0.0,
            "{b}"
        );

        // A failed build gives its ε back.
        assert!(
            store
                .extract_transition(
                    &crate::support::eid("e1"),
                    "approved".parse().unwrap(),
                    "building".parse().unwrap(),
                    None,
                    T0 + 11
                )
                .await
                .unwrap()
        );
        assert!(
            !store
                .extract_transition(
                    &crate::support::eid("e1"),
                    "approved".parse().unwrap(),
                    "building".parse().unwrap(),
                    None,
                    T0 + 12
                )
                .await
                .unwrap()
        );
        assert!(
            store
                .extract_transition(
                    &crate::support::eid("e1"),
                    "building".parse().unwrap(),
                    "failed".parse().unwrap(),
                    Some("disk"),
                    T0 + 13
                )
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .epsilon_spent(&crate::support::pid("p1"))
                .await
                .unwrap(),
            0.0,
            "{b}"
        );
        assert_eq!(approve("e2").await, ApproveOutcome::Approved, "{b}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_approvals_never_spend_past_the_budget() {
    each_store(|store| async move {
        let b = on(&store);
        store.insert_partner(&partner("p1"), T0).await.unwrap();
        for i in 0..8 {
            let e = extract(&format!("e{i}"), "p1", Some(0.25), T0 + i);
            store.insert_extract(&e).await.unwrap();
        }
        let outcomes = at_once(8, |i| {
            let store = store.clone();
            async move {
                store
                    .extract_approve(&crate::support::eid(&format!("e{i}")), 1.0, T0 + 10)
                    .await
                    .unwrap()
            }
        })
        .await;
        let approved = outcomes
            .iter()
            .filter(|o| **o == ApproveOutcome::Approved)
            .count();
        assert_eq!(approved, 4, "exactly up to the budget ({b}): {outcomes:?}");
        assert!(
            outcomes.iter().all(|o| matches!(
                o,
                ApproveOutcome::Approved | ApproveOutcome::BudgetExhausted
            )),
            "{b}: {outcomes:?}"
        );
        assert_eq!(
            store
                .epsilon_spent(&crate::support::pid("p1"))
                .await
                .unwrap(),
            1.0,
            "{b}"
        );
    })
    .await;
}

#[tokio::test]
async fn an_extract_moves_only_from_the_state_it_is_in_and_expires_when_due() {
    each_store(|store| async move {
        let b = on(&store);
        store.insert_partner(&partner("p1"), T0).await.unwrap();
        store
            .insert_extract(&extract("e1", "p1", None, T0))
            .await
            .unwrap();
        store
            .insert_extract(&extract("e2", "p1", None, T0 + 1))
            .await
            .unwrap();
        store
            .insert_extract(&extract("e3", "p2", None, T0 + 2))
            .await
            .unwrap();

        // Ready only from building.
        store
            .extract_ready(&crate::support::eid("e1"), "{}", "jws", T0 + 100, T0 + 1)
            .await
            .unwrap();
        assert_eq!(state_of(&store, "e1").await, "requested", "{b}");
        store
            .extract_approve(&crate::support::eid("e1"), 1.0, T0)
            .await
            .unwrap();
        store
            .extract_transition(
                &crate::support::eid("e1"),
                "approved".parse().unwrap(),
                "building".parse().unwrap(),
                Some("started"),
                T0 + 1,
            )
            .await
            .unwrap();
        store
            .extract_progress(&crate::support::eid("e1"), 5, 10, T0 + 2)
            .await
            .unwrap();
        let e = store
            .find_extract(&crate::support::eid("e1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.rows_done, e.rows_total, e.updated_at),
            (5, 10, T0 + 2),
            "{b}"
        );
        store
            .extract_ready(
                &crate::support::eid("e1"),
                "{\"rows\":10}",
                "jws",
                T0 + 100,
                T0 + 2,
            )
            .await
            .unwrap();
        let e = store
            .find_extract(&crate::support::eid("e1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.state.as_str(), "ready", "{b}");
        assert_eq!(
            (e.manifest.as_deref(), e.manifest_jws.as_deref()),
            (Some("{\"rows\":10}"), Some("jws"))
        );
        assert_eq!(
            (e.expires_at, e.updated_at),
            (Some(T0 + 100), T0 + 2),
            "{b}"
        );
        // A transition without a reason keeps the last one.
        store
            .extract_transition(
                &crate::support::eid("e1"),
                "ready".parse().unwrap(),
                "downloaded".parse().unwrap(),
                None,
                T0 + 3,
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .find_extract(&crate::support::eid("e1"))
                .await
                .unwrap()
                .unwrap()
                .reason
                .as_deref(),
            Some("started")
        );

        assert!(
            store.extracts_to_expire(T0 + 99).await.unwrap().is_empty(),
            "{b}"
        );
        assert_eq!(
            store.extracts_to_expire(T0 + 100).await.unwrap(),
            ["e1"],
            "{b}"
        );

        let ids = |rows: Vec<ExtractRow>| rows.into_iter().map(|e| e.id).collect::<Vec<_>>();
        let mine = ids(store
            .extracts_of_partner(&crate::support::pid("p1"))
            .await
            .unwrap());
        assert_eq!(mine, ["e2", "e1"], "newest first ({b})");
        // Requests first, then the newest.
        assert_eq!(
            ids(store.all_extracts(10).await.unwrap()),
            ["e3", "e2", "e1"],
            "{b}"
        );
        assert_eq!(ids(store.all_extracts(1).await.unwrap()), ["e3"], "{b}");
    })
    .await;
}

#[tokio::test]
async fn the_cohort_is_paged_by_resident_and_counted_alike() {
    each_store(|store| async move {
        let b = on(&store);
        residents(&store, &["r1", "r2", "r3", "r4", "r5", "r6"]).await;
        for (resident, notice_version) in [("r1", "v1"), ("r2", "v1"), ("r3", "v1"), ("r4", "v0")] {
            Decision {
                notice_version,
                categories: "contact,housing",
                ..Decision::new(resident, "p-consent", "given")
            }
            .record(&store, None, 1)
            .await
            .unwrap();
        }
        store
            .set_restricted(&crate::support::resident_id("r3"), Some(T0), &[])
            .await
            .unwrap();
        store
            .add_objection(
                &crate::support::resident_id("r5"),
                coffre::domain::rights::ObjectionTo::Purpose(&crate::support::purpose_id(
                    "p-legit",
                )),
                T0,
            )
            .await
            .unwrap();
        store
            .erase_resident(&crate::support::resident_id("r6"), T0, &[])
            .await
            .unwrap();

        let page = |consent_based, after: &'static str, limit| {
            let store = store.clone();
            let purpose = if consent_based {
                "p-consent"
            } else {
                "p-legit"
            };
            async move {
                store
                    .cohort_page(
                        &crate::support::purpose_id(purpose),
                        consent_based,
                        "v1",
                        T0,
                        after,
                        limit,
                    )
                    .await
                    .unwrap()
            }
        };
        let first = page(true, "", 1).await;
        assert_eq!(
            first,
            [(
                crate::support::resident_id("r1"),
                Some(crate::support::categories("contact,housing"))
            )],
            "{b}"
        );
        let rest: Vec<_> = page(true, "r1", 10)
            .await
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        assert_eq!(rest, ["r2"], "{b}");
        assert_eq!(
            store
                .count_cohort(&crate::support::purpose_id("p-consent"), true, "v1", T0)
                .await
                .unwrap(),
            2,
            "{b}"
        );

        let legit: Vec<_> = page(false, "", 10).await;
        let ids: Vec<_> = legit.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(ids, ["r1", "r2", "r4"], "{b}");
        assert!(legit.iter().all(|(_, c)| c.is_none()), "{b}");
        assert_eq!(page(false, "r2", 10).await.len(), 1, "{b}");
        assert_eq!(
            store
                .count_cohort(&crate::support::purpose_id("p-legit"), false, "", T0)
                .await
                .unwrap(),
            3,
            "{b}"
        );
    })
    .await;
}
