//! ConsentStore: the current state of each (resident, purpose), its
//! history, and the compare-and-set that lets one decision win.

use coffre::storage::StorageError;

use super::{Decision, T0, assert_conflict, at_once, each_store, on, residents};

#[tokio::test]
async fn a_consent_decision_is_compare_and_set_on_its_sequence() {
    each_store(|store| async move {
        let b = on(&store);
        residents(&store, &["awa"]).await;
        let give = Decision {
            categories: "contact,housing",
            ..Decision::new("awa", "p1", "given")
        };
        give.record(&store, None, 10).await.unwrap();
        let c = store
            .find_consent(
                &crate::support::resident_id("awa"),
                &crate::support::purpose_id("p1"),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!((c.state.as_str(), c.seq), ("given", 1), "{b}");
        assert_eq!(
            (
                crate::support::joined(&c.categories).as_str(),
                c.valid_until
            ),
            ("contact,housing", Some(T0 + 1000))
        );
        let by_id = store.find_consent_by_id(&c.id).await.unwrap().unwrap();
        assert_eq!(
            (by_id.resident_id.as_str(), by_id.purpose.as_str()),
            ("awa", "p1"),
            "{b}"
        );
        let d = store
            .consent_for_decision(
                &crate::support::resident_id("awa"),
                &crate::support::purpose_id("p1"),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.id.as_str(), d.state.as_str()),
            (c.id.as_str(), "given"),
            "{b}"
        );
        assert_eq!(d.notice_version, "v1", "{b}");
        assert!(
            store
                .consent_for_decision(
                    &crate::support::resident_id("awa"),
                    &crate::support::purpose_id("p9")
                )
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );

        // A second "first" decision, and one on a stale sequence, lose
        // without writing their event.
        assert_conflict(give.record(&store, None, 11).await, "second first decision");
        let withdraw = Decision {
            at: T0 + 5,
            ..Decision::new("awa", "p1", "withdrawn")
        };
        assert_conflict(withdraw.record(&store, Some(0), 12).await, "stale sequence");
        assert_eq!(store.consent_events(&c.id).await.unwrap().len(), 1, "{b}");

        withdraw.record(&store, Some(1), 20).await.unwrap();
        let c = store
            .find_consent(
                &crate::support::resident_id("awa"),
                &crate::support::purpose_id("p1"),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.state.as_str(), c.seq, c.updated_at),
            ("withdrawn", 2, T0 + 5),
            "{b}"
        );
        assert_conflict(
            withdraw.record(&store, Some(1), 21).await,
            "same sequence again",
        );

        // The history, newest (by audit index) first.
        let events = store.consent_events(&c.id).await.unwrap();
        let seen: Vec<_> = events
            .iter()
            .map(|e| (e.audit_index, e.state.as_str()))
            .collect();
        assert_eq!(seen, [(20, "withdrawn"), (10, "given")], "{b}");

        Decision::new("awa", "p0", "refused")
            .record(&store, None, 30)
            .await
            .unwrap();
        let purposes: Vec<_> = store
            .consents_of(&crate::support::resident_id("awa"))
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.purpose)
            .collect();
        assert_eq!(purposes, ["p0", "p1"], "{b}");
        assert_conflict(
            Decision::new("ghost", "p1", "given")
                .record(&store, None, 40)
                .await,
            "unknown resident",
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_decisions_on_one_sequence_let_exactly_one_win() {
    each_store(|store| async move {
        let b = on(&store);
        residents(&store, &["awa"]).await;
        Decision::new("awa", "p1", "given")
            .record(&store, None, 1)
            .await
            .unwrap();
        let outcomes = at_once(8, |i| {
            let store = store.clone();
            async move {
                let state = if i % 2 == 0 { "withdrawn" } else { "given" };
                Decision::new("awa", "p1", state)
                    .record(&store, Some(1), 100 + i as i64)
                    .await
            }
        })
        .await;
        let won = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(won, 1, "{b}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, Ok(()) | Err(StorageError::Conflict(_)))),
            "{b}: {outcomes:?}"
        );
        let c = store
            .find_consent(
                &crate::support::resident_id("awa"),
                &crate::support::purpose_id("p1"),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.seq, 2, "{b}");
        assert_eq!(store.consent_events(&c.id).await.unwrap().len(), 2, "{b}");
    })
    .await;
}
