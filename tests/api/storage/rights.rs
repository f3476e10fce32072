//! RightsStore: restriction, objections, rights requests and the art. 19
//! notices to recipients.

use coffre::storage::{DynStore, RightsEventRow, RightsRequestRow};

use super::{T0, assert_conflict, at_once, each_store, notice, on, residents};

#[tokio::test]
async fn restriction_and_objections_round_trip_with_their_notices() {
    each_store(|store| async move {
        let b = on(&store);
        residents(&store, &["awa"]).await;
        assert_eq!(
            store
                .rights_state(
                    &crate::support::resident_id("awa"),
                    Some(&crate::support::purpose_id("p1"))
                )
                .await
                .unwrap(),
            (false, false)
        );
        assert_eq!(
            store
                .rights_state(&crate::support::resident_id("ghost"), None)
                .await
                .unwrap(),
            (false, false)
        );

        let n1 = notice("n1", "partner-1", "restriction", T0);
        store
            .set_restricted(
                &crate::support::resident_id("awa"),
                Some(T0),
                std::slice::from_ref(&n1),
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .restricted_since(&crate::support::resident_id("awa"))
                .await
                .unwrap(),
            Some(T0),
            "{b}"
        );
        assert_eq!(
            store
                .rights_state(&crate::support::resident_id("awa"), None)
                .await
                .unwrap(),
            (true, false),
            "{b}"
        );
        assert_eq!(
            store
                .take_notifications(&crate::support::pid("partner-1"), T0)
                .await
                .unwrap()
                .len(),
            1
        );

        store
            .set_restricted(&crate::support::resident_id("awa"), None, &[])
            .await
            .unwrap();
        assert_eq!(
            store
                .restricted_since(&crate::support::resident_id("awa"))
                .await
                .unwrap(),
            None,
            "{b}"
        );
        // The restriction and its notices are one transaction: a notice that
        // cannot be written leaves the resident unrestricted.
        assert_conflict(
            store
                .set_restricted(&crate::support::resident_id("awa"), Some(T0 + 5), &[n1])
                .await,
            "notice written twice",
        );
        assert_eq!(
            store
                .restricted_since(&crate::support::resident_id("awa"))
                .await
                .unwrap(),
            None,
            "{b}"
        );

        assert!(
            store
                .add_objection(
                    &crate::support::resident_id("awa"),
                    coffre::domain::rights::ObjectionTo::Purpose(&crate::support::purpose_id("p1")),
                    T0
                )
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            !store
                .add_objection(
                    &crate::support::resident_id("awa"),
                    coffre::domain::rights::ObjectionTo::Purpose(&crate::support::purpose_id("p1")),
                    T0 + 1
                )
                .await
                .unwrap(),
            "twice ({b})"
        );
        assert!(
            store
                .add_objection(
                    &crate::support::resident_id("awa"),
                    coffre::domain::rights::ObjectionTo::Purpose(&crate::support::purpose_id("p0")),
                    T0 + 2
                )
                .await
                .unwrap(),
            "{b}"
        );
        let objections = store
            .objections_of(&crate::support::resident_id("awa"))
            .await
            .unwrap();
        assert_eq!(
            objections,
            [("p0".to_string(), T0 + 2), ("p1".to_string(), T0)],
            "{b}"
        );
        assert_eq!(
            store
                .rights_state(
                    &crate::support::resident_id("awa"),
                    Some(&crate::support::purpose_id("p1"))
                )
                .await
                .unwrap(),
            (false, true)
        );
        assert_eq!(
            store
                .rights_state(
                    &crate::support::resident_id("awa"),
                    Some(&crate::support::purpose_id("p2"))
                )
                .await
                .unwrap(),
            (false, false)
        );
        assert!(
            store
                .remove_objection(
                    &crate::support::resident_id("awa"),
                    coffre::domain::rights::ObjectionTo::Purpose(&crate::support::purpose_id("p1"))
                )
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            !store
                .remove_objection(
                    &crate::support::resident_id("awa"),
                    coffre::domain::rights::ObjectionTo::Purpose(&crate::support::purpose_id("p1"))
                )
                .await
                .unwrap(),
            "{b}"
        );
        assert_conflict(
            store
                .add_objection(
                    &crate::support::resident_id("ghost"),
                    coffre::domain::rights::ObjectionTo::Purpose(&crate::support::purpose_id("p1")),
                    T0,
                )
                .await,
            "unknown resident",
        );
    })
    .await;
}

fn request(
    id: &str,
    state: &str,
    created_at: i64,
    due_at: i64,
) -> (RightsRequestRow, RightsEventRow) {
    (
        RightsRequestRow {
            id: crate::support::rid(id),
            resident_id: crate::support::resident_id("awa"),
            kind: "erasure".parse().unwrap(),
            purpose: None,
            state: state.parse().unwrap(),
            created_at,
            due_at,
            updated_at: created_at,
        },
        event(id, state, created_at),
    )
}

fn event(request_id: &str, state: &str, at: i64) -> RightsEventRow {
    RightsEventRow {
        request_id: crate::support::rid(request_id),
        seq: 1,
        state: state.parse().unwrap(),
        actor_id: "dpo".into(),
        actor_role: coffre::domain::Role::Dpo,
        reason: Some(format!("to {state}")),
        at,
    }
}

async fn insert_request(store: &DynStore, id: &str, state: &str, created_at: i64, due_at: i64) {
    let (r, e) = request(id, state, created_at, due_at);
    store.insert_rights_request(&r, &e).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rights_request_moves_only_from_the_state_it_is_in() {
    each_store(|store| async move {
        let b = on(&store);
        residents(&store, &["awa"]).await;
        insert_request(&store, "r1", "received", T0, T0 + 30).await;
        let (dup, dup_event) = request("r1", "received", T0 + 1, T0 + 31);
        assert_conflict(
            store.insert_rights_request(&dup, &dup_event).await,
            "same id",
        );
        assert_eq!(
            store
                .rights_request_events(&crate::support::rid("r1"))
                .await
                .unwrap()
                .len(),
            1,
            "{b}"
        );

        let moved = store
            .update_rights_request(
                &crate::support::rid("r1"),
                "extended".parse().unwrap(),
                "granted".parse().unwrap(),
                T0 + 30,
                &event("r1", "granted", T0 + 5),
                &[],
            )
            .await
            .unwrap();
        assert!(!moved, "not in that state ({b})");
        let moved = store
            .update_rights_request(
                &crate::support::rid("r1"),
                "received".parse().unwrap(),
                "extended".parse().unwrap(),
                T0 + 90,
                &event("r1", "extended", T0 + 5),
                &[],
            )
            .await
            .unwrap();
        assert!(moved, "{b}");
        let r = store
            .find_rights_request(&crate::support::rid("r1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.state.as_str(), r.due_at, r.updated_at),
            ("extended", T0 + 90, T0 + 5)
        );
        store
            .update_rights_request(
                &crate::support::rid("r1"),
                "extended".parse().unwrap(),
                "granted".parse().unwrap(),
                T0 + 90,
                &event("r1", "granted", T0 + 6),
                &[],
            )
            .await
            .unwrap();
        // Events numbered by the store, in order.
        let events: Vec<_> = store
            .rights_request_events(&crate::support::rid("r1"))
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.state.to_string()))
            .collect();
        let expected = [(1, "received"), (2, "extended"), (3, "granted")];
        let expected: Vec<_> = expected
            .iter()
            .map(|(s, st)| (*s, st.to_string()))
            .collect();
        assert_eq!(events, expected, "{b}");

        // Concurrent closings of one request: one wins.
        insert_request(&store, "r2", "received", T0 + 1, T0 + 20).await;
        let outcomes = at_once(8, |i| {
            let store = store.clone();
            async move {
                let to = if i % 2 == 0 { "granted" } else { "refused" };
                store
                    .update_rights_request(
                        &crate::support::rid("r2"),
                        "received".parse().unwrap(),
                        to.parse().unwrap(),
                        T0 + 20,
                        &event("r2", to, T0 + 7),
                        &[],
                    )
                    .await
                    .unwrap()
            }
        })
        .await;
        assert_eq!(
            outcomes.iter().filter(|o| **o).count(),
            1,
            "{b}: {outcomes:?}"
        );
        assert_eq!(
            store
                .rights_request_events(&crate::support::rid("r2"))
                .await
                .unwrap()
                .len(),
            2,
            "{b}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_dpo_sees_open_requests_first_by_due_date() {
    each_store(|store| async move {
        let b = on(&store);
        residents(&store, &["awa"]).await;
        insert_request(&store, "closed", "granted", T0, T0 + 1).await;
        insert_request(&store, "later", "received", T0 + 1, T0 + 50).await;
        insert_request(&store, "sooner", "extended", T0 + 2, T0 + 40).await;
        insert_request(&store, "refused", "refused", T0 + 3, T0 + 2).await;
        let ids = |limit| {
            let store = store.clone();
            async move {
                store
                    .all_rights_requests(limit)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            ids(10).await,
            ["sooner", "later", "closed", "refused"],
            "{b}"
        );
        assert_eq!(ids(2).await, ["sooner", "later"], "{b}");
        let mine: Vec<_> = store
            .rights_requests_of(&crate::support::resident_id("awa"))
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(
            mine,
            ["refused", "sooner", "later", "closed"],
            "newest first ({b})"
        );
        assert!(
            store
                .rights_requests_of(&crate::support::resident_id("basile"))
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );
    })
    .await;
}

#[tokio::test]
async fn notifications_are_a_partners_own_oldest_first_and_marked_fetched_once() {
    each_store(|store| async move {
        let b = on(&store);
        store
            .insert_notifications(&[
                notice("n2", "p1", "rectification", T0 + 2),
                notice("n1", "p1", "erasure", T0 + 1),
                notice("n3", "p2", "restriction", T0),
            ])
            .await
            .unwrap();
        let first = store
            .take_notifications(&crate::support::pid("p1"), T0 + 10)
            .await
            .unwrap();
        let seen: Vec<_> = first
            .iter()
            .map(|n| (n.id.as_str(), n.fetched_at))
            .collect();
        assert_eq!(seen, [("n1", None), ("n2", None)], "{b}");
        assert_eq!(first[0].pseudonym, "ps-n1", "{b}");

        // Taken again, they come back marked with the first fetch.
        let again = store
            .take_notifications(&crate::support::pid("p1"), T0 + 20)
            .await
            .unwrap();
        let seen: Vec<_> = again
            .iter()
            .map(|n| (n.id.as_str(), n.fetched_at))
            .collect();
        assert_eq!(seen, [("n1", Some(T0 + 10)), ("n2", Some(T0 + 10))], "{b}");
        let other = store
            .take_notifications(&crate::support::pid("p2"), T0 + 20)
            .await
            .unwrap();
        assert_eq!(other.len(), 1, "{b}");

        // A batch is written whole or not at all.
        assert_conflict(
            store
                .insert_notifications(&[
                    notice("n4", "p1", "erasure", T0 + 3),
                    notice("n1", "p1", "erasure", T0 + 3),
                ])
                .await,
            "a notice id twice",
        );
        assert_eq!(
            store
                .take_notifications(&crate::support::pid("p1"), T0 + 30)
                .await
                .unwrap()
                .len(),
            2,
            "{b}"
        );
    })
    .await;
}

/// More notices than one answer holds: the ones not yet delivered come
/// first, so a partner with a long history still receives every new one;
/// only what was delivered is marked fetched.
#[tokio::test]
async fn new_notifications_are_delivered_past_a_full_page_of_old_ones() {
    each_store(|store| async move {
        let b = on(&store);
        let old: Vec<_> = (0..1000)
            .map(|i| notice(&format!("old-{i:04}"), "p1", "erasure", T0 + i))
            .collect();
        store.insert_notifications(&old).await.unwrap();
        assert_eq!(
            store
                .take_notifications(&crate::support::pid("p1"), T0 + 2000)
                .await
                .unwrap()
                .len(),
            1000,
            "{b}"
        );
        // Five more arrive after the first thousand were delivered.
        let new: Vec<_> = (0..5)
            .map(|i| notice(&format!("new-{i}"), "p1", "rectification", T0 + 3000 + i))
            .collect();
        store.insert_notifications(&new).await.unwrap();
        let next = store
            .take_notifications(&crate::support::pid("p1"), T0 + 4000)
            .await
            .unwrap();
        assert_eq!(next.len(), 1000, "{b}");
        let first: Vec<_> = next.iter().take(5).map(|n| n.id.as_str()).collect();
        assert_eq!(
            first,
            ["new-0", "new-1", "new-2", "new-3", "new-4"],
            "undelivered first ({b})"
        );
        assert!(next[..5].iter().all(|n| n.fetched_at.is_none()), "{b}");
        assert!(
            next[5..].iter().all(|n| n.fetched_at == Some(T0 + 2000)),
            "{b}"
        );
        // Delivered now, they are marked; none is delivered as new twice.
        let after = store
            .take_notifications(&crate::support::pid("p1"), T0 + 5000)
            .await
            .unwrap();
        assert!(after.iter().all(|n| n.fetched_at.is_some()), "{b}");
        assert!(
            after
                .iter()
                .filter(|n| n.id.starts_with("new-"))
                .all(|n| n.fetched_at == Some(T0 + 4000)),
            "{b}"
        );
    })
    .await;
}
