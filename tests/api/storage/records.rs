//! RecordStore: KEK versions, data keys, sealed record versions, and what
//! retention deletes of them.

use coffre::storage::DataKeyRow;

use super::{
    Decision, T0, assert_conflict, assert_not_found, data_keys, each_store, notice, on, record,
    residents,
};

fn key(resident: &str, version: i64, wrapped: &str) -> DataKeyRow {
    DataKeyRow {
        resident_id: crate::support::resident_id(resident),
        kek_version: version,
        wrapped: wrapped.as_bytes().to_vec(),
    }
}

#[tokio::test]
async fn a_data_key_is_stored_once_and_rewrapped_only_from_its_version() {
    each_store(|store| async move {
        let b = on(&store);
        assert_eq!(store.current_kek_version().await.unwrap(), None, "{b}");
        store.register_kek_version(1, T0).await.unwrap();
        store.register_kek_version(1, T0 + 1).await.unwrap();
        store.register_kek_version(2, T0).await.unwrap();
        assert_eq!(store.current_kek_version().await.unwrap(), Some(2), "{b}");

        residents(&store, &["c", "a", "b"]).await;
        assert!(
            store
                .insert_data_key(&key("a", 1, "first"), T0)
                .await
                .unwrap(),
            "{b}"
        );
        // Another request lost the race: the first key stays.
        assert!(
            !store
                .insert_data_key(&key("a", 1, "second"), T0)
                .await
                .unwrap(),
            "{b}"
        );
        let found = store
            .find_data_key(&crate::support::resident_id("a"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.wrapped, b"first", "{b}");
        assert!(
            !store
                .insert_data_key(&key("ghost", 1, "k"), T0)
                .await
                .unwrap(),
            "{b}"
        );
        store.insert_data_key(&key("b", 1, "kb"), T0).await.unwrap();
        store.insert_data_key(&key("c", 1, "kc"), T0).await.unwrap();

        assert!(
            !store.unregister_kek_version(1).await.unwrap(),
            "in use ({b})"
        );
        let page: Vec<_> = store
            .data_keys_not_at(2, 2)
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.resident_id)
            .collect();
        assert_eq!(page, ["a", "b"], "by resident, limited ({b})");
        assert_eq!(store.count_data_keys_not_at(2).await.unwrap(), 3, "{b}");

        let rewrapped = store
            .rewrap_data_keys(&[(key("a", 2, "a@2"), 1), (key("b", 2, "b@2"), 2)], T0 + 5)
            .await
            .unwrap();
        assert_eq!(rewrapped, 1, "b was not at version 2 ({b})");
        let a = store
            .find_data_key(&crate::support::resident_id("a"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.kek_version, a.wrapped.as_slice()),
            (2, &b"a@2"[..]),
            "{b}"
        );
        assert_eq!(store.count_data_keys_not_at(2).await.unwrap(), 2, "{b}");
        store
            .rewrap_data_keys(&[(key("b", 2, "b@2"), 1), (key("c", 2, "c@2"), 1)], T0 + 6)
            .await
            .unwrap();
        assert!(
            store.unregister_kek_version(1).await.unwrap(),
            "now unused ({b})"
        );
        assert_eq!(store.current_kek_version().await.unwrap(), Some(2), "{b}");
    })
    .await;
}

#[tokio::test]
async fn record_versions_current_history_and_a_page_of_residents() {
    each_store(|store| async move {
        let b = on(&store);
        residents(&store, &["awa", "basile"]).await;
        data_keys(&store, &["awa", "basile"]).await;
        for (resident, r) in [
            ("awa", record("a-c1", "contact", 1, T0)),
            ("awa", record("a-c2", "contact", 2, T0 + 10)),
            ("awa", record("a-h1", "housing", 1, T0 + 5)),
            ("basile", record("b-c1", "contact", 1, T0)),
        ] {
            store
                .insert_record(&crate::support::resident_id(resident), &r, &[])
                .await
                .unwrap();
        }
        assert_conflict(
            store
                .insert_record(
                    &crate::support::resident_id("awa"),
                    &record("a-c2bis", "contact", 2, T0 + 11),
                    &[],
                )
                .await,
            "same version twice",
        );
        assert_eq!(
            store
                .latest_record_version(&crate::support::resident_id("awa"), "contact")
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            store
                .latest_record_version(&crate::support::resident_id("awa"), "culture")
                .await
                .unwrap(),
            0
        );

        let current: Vec<_> = store
            .current_records(&crate::support::resident_id("awa"))
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.category, r.version))
            .collect();
        assert_eq!(
            current,
            [("contact".to_string(), 2), ("housing".to_string(), 1)],
            "{b}"
        );
        let history: Vec<_> = store
            .record_history(&crate::support::resident_id("awa"), "contact")
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.sealed))
            .collect();
        assert_eq!(
            history,
            [
                ("a-c2".to_string(), b"sealed-a-c2".to_vec()),
                ("a-c1".to_string(), b"sealed-a-c1".to_vec())
            ],
            "newest first ({b})"
        );

        let page = store
            .current_records_of_page(
                &[
                    crate::support::resident_id("basile"),
                    crate::support::resident_id("awa"),
                    crate::support::resident_id("ghost"),
                ],
                &["contact".into()],
            )
            .await
            .unwrap();
        let seen: Vec<_> = page
            .iter()
            .map(|r| (r.resident_id.as_str(), r.version, r.wrapped.as_slice()))
            .collect();
        assert_eq!(
            seen,
            [
                ("awa", 2, &b"wrapped-awa"[..]),
                ("basile", 1, &b"wrapped-basile"[..])
            ],
            "{b}"
        );
        assert!(
            store
                .current_records_of_page(&[], &["contact".into()])
                .await
                .unwrap()
                .is_empty()
        );

        // With notices: one transaction. An unknown resident writes neither.
        let n = notice("n1", "p1", "rectification", T0 + 20);
        assert_not_found(
            store
                .insert_record(
                    &crate::support::resident_id("ghost"),
                    &record("g-1", "contact", 1, T0),
                    std::slice::from_ref(&n),
                )
                .await,
            "unknown resident",
        );
        assert!(
            store
                .take_notifications(&crate::support::pid("p1"), T0)
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );
        store
            .insert_record(
                &crate::support::resident_id("awa"),
                &record("a-c3", "contact", 3, T0 + 20),
                &[n],
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .take_notifications(&crate::support::pid("p1"), T0)
                .await
                .unwrap()
                .len(),
            1,
            "{b}"
        );

        assert_eq!(
            store
                .delete_category(&crate::support::resident_id("awa"), "contact")
                .await
                .unwrap(),
            3,
            "{b}"
        );
        let left: Vec<_> = store
            .current_records(&crate::support::resident_id("awa"))
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.category)
            .collect();
        assert_eq!(left, ["housing"], "{b}");
    })
    .await;
}

#[tokio::test]
async fn retention_deletes_superseded_versions_and_data_no_consent_covers() {
    each_store(|store| async move {
        let b = on(&store);
        let people = [
            "awa", "basile", "chloe", "dora", "eve", "fay", "gus", "hal", "ivy",
        ];
        residents(&store, &people).await;
        data_keys(&store, &people).await;
        let grace_end = T0 + 100;

        // Superseded versions go once the newer one is older than the cutoff.
        for (resident, r) in [
            ("awa", record("a-1", "contact", 1, T0)),
            ("awa", record("a-2", "contact", 2, T0 + 10)),
            ("basile", record("b-1", "contact", 1, T0)),
            ("basile", record("b-2", "contact", 2, T0 + 500)),
        ] {
            store
                .insert_record(&crate::support::resident_id(resident), &r, &[])
                .await
                .unwrap();
        }
        assert_eq!(
            store.purge_superseded("contact", grace_end).await.unwrap(),
            1,
            "{b}"
        );
        assert_eq!(
            store
                .record_history(&crate::support::resident_id("awa"), "contact")
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            store
                .record_history(&crate::support::resident_id("basile"), "contact")
                .await
                .unwrap()
                .len(),
            2
        );

        // Orphaned data: found from the records, kept within the grace
        // period or while a consent covers the category.
        for (resident, at) in [
            ("chloe", grace_end + 100),
            ("dora", T0),
            ("eve", T0),
            ("fay", T0),
            ("gus", T0),
            ("hal", T0),
            ("ivy", T0),
        ] {
            let r = record(&format!("{resident}-1"), "contact", 1, at);
            store
                .insert_record(&crate::support::resident_id(resident), &r, &[])
                .await
                .unwrap();
        }
        let decide = |resident, state, categories, valid_until, at| Decision {
            categories,
            valid_until,
            at,
            ..Decision::new(resident, "p1", state)
        };
        // awa: given, covering contact, valid past the grace period: kept.
        decide("awa", "given", "contact,housing", Some(T0 + 1000), T0)
            .record(&store, None, 1)
            .await
            .unwrap();
        // dora: withdrawn within the grace period: kept for now.
        decide("dora", "withdrawn", "contact", None, grace_end + 50)
            .record(&store, None, 2)
            .await
            .unwrap();
        // eve: withdrawn before it: orphaned.
        decide("eve", "withdrawn", "contact", None, T0 + 50)
            .record(&store, None, 3)
            .await
            .unwrap();
        // fay: given for another category only: orphaned.
        decide("fay", "given", "housing", Some(T0 + 1000), T0)
            .record(&store, None, 4)
            .await
            .unwrap();
        // gus: given but ended before the grace period did: orphaned.
        decide("gus", "given", "contact", Some(T0 + 50), T0)
            .record(&store, None, 5)
            .await
            .unwrap();
        // hal: a category whose name merely starts the same: orphaned.
        decide("hal", "given", "contacts", Some(T0 + 1000), T0)
            .record(&store, None, 6)
            .await
            .unwrap();
        // ivy never consented: orphaned. basile's and chloe's data are too
        // recent (written after the grace period began).

        let orphans = store
            .consent_orphaned_records(
                &[
                    crate::support::purpose_id("p1"),
                    crate::support::purpose_id("p2"),
                ],
                "contact",
                grace_end,
            )
            .await
            .unwrap();
        assert_eq!(orphans, ["eve", "fay", "gus", "hal", "ivy"], "{b}");
        assert!(
            store
                .consent_orphaned_records(&[], "contact", grace_end)
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}
