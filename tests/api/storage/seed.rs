//! SeedStore: a batch of the synthetic territory, written whole or not at
//! all.

use coffre::storage::{ConsentEventRow, ConsentRow, DataKeyRow, SeedBatch};

use super::{T0, assert_conflict, each_store, on, record};

#[tokio::test]
async fn a_seed_batch_is_written_whole_or_not_at_all() {
    each_store(|store| async move {
        let b = on(&store);
        store.register_kek_version(1, T0).await.unwrap();
        // More rows than one statement takes (1,000 residents, 500 events).
        let ids: Vec<String> = (0..1500).map(|i| format!("s{i:04}")).collect();
        let mut batch = SeedBatch {
            residents: ids.clone(),
            now: T0,
            ..SeedBatch::default()
        };
        for (i, id) in ids.iter().enumerate() {
            batch.data_keys.push(DataKeyRow {
                resident_id: crate::support::resident_id(id.clone()),
                kek_version: 1,
                wrapped: id.as_bytes().to_vec(),
            });
            if i < 100 {
                batch
                    .records
                    .push((id.clone(), record(&format!("rec-{id}"), "contact", 1, T0)));
            }
            if i < 600 {
                let consent_id = crate::support::cid(&format!("c-{id}"));
                batch.consents.push(ConsentRow {
                    id: consent_id.clone(),
                    resident_id: crate::support::resident_id(id.clone()),
                    purpose: crate::support::purpose_id("p1"),
                    state: "given".parse().unwrap(),
                    categories: crate::support::categories("contact"),
                    valid_until: Some(T0 + 1000),
                    notice_version: "v1".into(),
                    updated_at: T0,
                    seq: 1,
                });
                batch.events.push(ConsentEventRow {
                    id: format!("ev-{id}"),
                    consent_id,
                    purpose: crate::support::purpose_id("p1"),
                    state: "given".parse().unwrap(),
                    categories: crate::support::categories("contact"),
                    valid_until: Some(T0 + 1000),
                    notice_version: "v1".into(),
                    // The seed's residents give their own consents.
                    actor_id: id.clone(),
                    actor_role: coffre::domain::Role::Resident,
                    structure_id: None,
                    audit_index: i as i64,
                    receipt: "receipt".into(),
                    created_at: T0,
                });
            }
        }
        store.seed_batch(&batch).await.unwrap();
        assert_eq!(store.count_residents().await.unwrap(), 1500, "{b}");
        let key = store
            .find_data_key(&crate::support::resident_id("s1499"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(key.wrapped, b"s1499", "{b}");
        assert_eq!(
            store
                .current_records(&crate::support::resident_id("s0099"))
                .await
                .unwrap()
                .len(),
            1,
            "{b}"
        );
        assert!(
            store
                .current_records(&crate::support::resident_id("s0100"))
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );
        let consent = store
            .find_consent(
                &crate::support::resident_id("s0599"),
                &crate::support::purpose_id("p1"),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!((consent.state.as_str(), consent.seq), ("given", 1), "{b}");
        assert_eq!(
            store.consent_events(&consent.id).await.unwrap().len(),
            1,
            "{b}"
        );

        // One resident already there: nothing of the batch is written.
        let clash = SeedBatch {
            residents: vec!["new-1".into(), "s0000".into()],
            now: T0,
            ..SeedBatch::default()
        };
        assert_conflict(store.seed_batch(&clash).await, "a resident seeded twice");
        assert!(
            !store
                .resident_exists(&crate::support::resident_id("new-1"))
                .await
                .unwrap(),
            "{b}"
        );
        assert_eq!(store.count_residents().await.unwrap(), 1500, "{b}");
    })
    .await;
}
