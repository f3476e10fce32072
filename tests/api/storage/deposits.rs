//! DepositStore: deposited versions with their provenance, idempotency by
//! (source, source's record id), the resident's own correction standing,
//! and residents' pivot digests.

use coffre::storage::{DepositOutcome, DepositRow, DepositSubject, RecordOrigin, RecordRow};

use super::{T0, data_keys, each_store, on, record, residents};

fn deposit(source_record_id: &str, digest: &str, version: i64, observed_at: i64) -> DepositRow {
    DepositRow {
        source_id: "s1".into(),
        source_name: "Source 1".into(),
        source_record_id: source_record_id.into(),
        resident_id: crate::support::resident_id("r1"),
        content_digest: digest.into(),
        observed_at,
        via_link: true,
        record: RecordRow {
            origin: RecordOrigin::deposit(
                "s1",
                source_record_id,
                "resident_authorisation",
                observed_at,
            ),
            ..record(
                &format!("rec-{source_record_id}-{version}"),
                "energy",
                version,
                T0 + version,
            )
        },
    }
}

/// The versions of r1's records the source deposited, in order.
async fn deposited(store: &coffre::storage::DynStore) -> Vec<i64> {
    store
        .deposited_versions(&crate::support::resident_id("r1"))
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect()
}

/// Makes `ids` residents, r1 among them, and links r1 to source s1 by
/// the handle h1.
async fn r1_linked(store: &coffre::storage::DynStore, ids: &[&str]) {
    residents(store, ids).await;
    store
        .link_source("s1", &crate::support::resident_id("r1"), "h1", T0)
        .await
        .unwrap();
}

/// The digest of source s1's last accepted deposit of `record`, as the
/// deposit path reads it (`deposit_facts`, about r1's energy).
async fn digest(store: &coffre::storage::DynStore, record: &str) -> Option<String> {
    store
        .deposit_facts(
            "s1",
            DepositSubject::Resident(&crate::support::resident_id("r1")),
            record,
            "energy",
        )
        .await
        .unwrap()
        .and_then(|f| f.previous_digest)
}

#[tokio::test]
async fn a_deposit_is_idempotent_and_new_content_makes_a_new_version() {
    each_store(|store| async move {
        let b = on(&store);
        r1_linked(&store, &["r1"]).await;
        let d = deposit("m-1", "d1", 1, T0 - 10);
        assert_eq!(
            store.record_deposit(&d, T0 + 1).await.unwrap(),
            DepositOutcome::Accepted,
            "{b}"
        );
        assert_eq!(digest(&store, "m-1").await.as_deref(), Some("d1"));
        // The same content again: unchanged, nothing written.
        let again = deposit("m-1", "d1", 2, T0 - 10);
        assert_eq!(
            store.record_deposit(&again, T0 + 2).await.unwrap(),
            DepositOutcome::Unchanged,
            "{b}"
        );
        assert_eq!(
            store
                .latest_record_version(&crate::support::resident_id("r1"), "energy")
                .await
                .unwrap(),
            1,
            "{b}"
        );
        // New content: version 2; a seal made for a taken version is refused.
        let stale = deposit("m-1", "d2", 1, T0 - 5);
        assert_eq!(
            store.record_deposit(&stale, T0 + 3).await.unwrap(),
            DepositOutcome::VersionTaken,
            "{b}"
        );
        let newer = deposit("m-1", "d2", 2, T0 - 5);
        assert_eq!(
            store.record_deposit(&newer, T0 + 3).await.unwrap(),
            DepositOutcome::Accepted,
            "{b}"
        );
        assert_eq!(digest(&store, "m-1").await.as_deref(), Some("d2"));
        // The resident's later choices win inside the transaction.
        store
            .add_objection(
                &crate::support::resident_id("r1"),
                coffre::domain::rights::ObjectionTo::Source("s1"),
                T0 + 4,
            )
            .await
            .unwrap();
        let objected = deposit("m-9", "d9", 3, T0 - 1);
        assert_eq!(
            store.record_deposit(&objected, T0 + 4).await.unwrap(),
            DepositOutcome::Objected,
            "{b}"
        );
        store
            .remove_objection(
                &crate::support::resident_id("r1"),
                coffre::domain::rights::ObjectionTo::Source("s1"),
            )
            .await
            .unwrap();
        // Only the accepted versions stand as the source's.
        assert_eq!(deposited(&store).await, vec![1, 2], "{b}");
    })
    .await;
}

#[tokio::test]
async fn the_residents_own_later_correction_stands_and_erasure_ends_everything() {
    each_store(|store| async move {
        let b = on(&store);
        r1_linked(&store, &["r1"]).await;
        // The resident wrote version 1 at T0 + 1 (no provenance: their own).
        store
            .insert_record(
                &crate::support::resident_id("r1"),
                &record("own-1", "energy", 1, T0 + 1),
                &[],
            )
            .await
            .unwrap();
        // Observed before their correction: refused, their value stays.
        let old = deposit("m-1", "d1", 2, T0);
        assert_eq!(
            store.record_deposit(&old, T0 + 5).await.unwrap(),
            DepositOutcome::SupersededByResident,
            "{b}"
        );
        assert_eq!(
            store
                .latest_record_version(&crate::support::resident_id("r1"), "energy")
                .await
                .unwrap(),
            1,
            "{b}"
        );
        // Observed after it: a new version.
        let new = deposit("m-2", "d2", 2, T0 + 2);
        assert_eq!(
            store.record_deposit(&new, T0 + 6).await.unwrap(),
            DepositOutcome::Accepted,
            "{b}"
        );

        store
            .set_resident_pivot("p1", &crate::support::resident_id("r1"))
            .await
            .unwrap();
        store
            .set_resident_pivot("p1", &crate::support::resident_id("r9"))
            .await
            .unwrap();
        assert_eq!(
            store
                .resident_by_pivot("p1")
                .await
                .unwrap()
                .as_ref()
                .map(|r| r.as_str()),
            Some("r1"),
            "{b}"
        );
        assert!(
            store
                .erase_resident(&crate::support::resident_id("r1"), T0 + 10, &[])
                .await
                .unwrap(),
            "{b}"
        );
        assert_eq!(store.resident_by_pivot("p1").await.unwrap(), None, "{b}");
        assert_eq!(digest(&store, "m-2").await, None, "{b}");
        let late = DepositRow {
            via_link: false,
            ..deposit("m-3", "d3", 1, T0 + 9)
        };
        assert_eq!(
            store.record_deposit(&late, T0 + 11).await.unwrap(),
            DepositOutcome::NoResident,
            "{b}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_revoked_link_and_an_older_observation_than_the_residents_own_writing_refuse() {
    each_store(|store| async move {
        let b = on(&store);
        r1_linked(&store, &["r1"]).await;
        // Own v1 at T0 + 1, then a source's v2: an observation older than
        // the resident's own writing is still refused (not only the latest
        // version is looked at).
        store
            .insert_record(
                &crate::support::resident_id("r1"),
                &record("own-1", "energy", 1, T0 + 1),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .record_deposit(&deposit("m-1", "d1", 2, T0 + 5), T0 + 6)
                .await
                .unwrap(),
            DepositOutcome::Accepted,
            "{b}"
        );
        assert_eq!(
            store
                .record_deposit(&deposit("m-2", "d2", 3, T0), T0 + 7)
                .await
                .unwrap(),
            DepositOutcome::SupersededByResident,
            "{b}"
        );
        assert!(
            store
                .revoke_source_link("s1", &crate::support::resident_id("r1"), T0 + 8)
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .record_deposit(&deposit("m-3", "d3", 3, T0 + 8), T0 + 9)
                .await
                .unwrap(),
            DepositOutcome::NoLink,
            "{b}"
        );
        assert_eq!(
            store
                .latest_record_version(&crate::support::resident_id("r1"), "energy")
                .await
                .unwrap(),
            2,
            "{b}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_batch_of_deposits_gives_each_its_own_outcome_and_keeps_only_the_accepted() {
    each_store(|store| async move {
        let b = on(&store);
        r1_linked(&store, &["r1", "r2"]).await;
        assert_eq!(
            store
                .record_deposit(&deposit("m-0", "d0", 1, T0), T0 + 1)
                .await
                .unwrap(),
            DepositOutcome::Accepted,
            "{b}"
        );
        // r2 has no link: its deposit is refused without touching the rest.
        let unlinked = DepositRow {
            resident_id: crate::support::resident_id("r2"),
            ..deposit("m-9", "d9", 1, T0)
        };
        let batch = vec![
            (deposit("m-1", "d1", 2, T0), T0 + 2),
            // The same content as m-0 again.
            (deposit("m-0", "d0", 3, T0), T0 + 2),
            (unlinked, T0 + 2),
            // Sealed for version 2 too: the first of the batch took it.
            (deposit("m-2", "d2", 2, T0), T0 + 2),
            (deposit("m-3", "d3", 3, T0), T0 + 2),
        ];
        assert_eq!(
            store.record_deposits(&batch).await.unwrap(),
            vec![
                DepositOutcome::Accepted,
                DepositOutcome::Unchanged,
                DepositOutcome::NoLink,
                DepositOutcome::VersionTaken,
                DepositOutcome::Accepted,
            ],
            "{b}"
        );
        assert_eq!(
            store
                .latest_record_version(&crate::support::resident_id("r1"), "energy")
                .await
                .unwrap(),
            3,
            "{b}"
        );
        assert_eq!(
            store
                .latest_record_version(&crate::support::resident_id("r2"), "energy")
                .await
                .unwrap(),
            0,
            "{b}"
        );
        // Nothing of the refused ones stayed, not even an idempotency row.
        for refused in ["m-9", "m-2"] {
            assert_eq!(digest(&store, refused).await, None, "{b} {refused}");
        }
        assert_eq!(digest(&store, "m-3").await.as_deref(), Some("d3"), "{b}");
    })
    .await;
}

#[tokio::test]
async fn a_deposits_facts_come_in_one_read_and_follow_what_they_read() {
    each_store(|store| async move {
        let b = on(&store);
        r1_linked(&store, &["r1", "r2"]).await;
        assert!(
            store
                .deposit_facts(
                    "s1",
                    DepositSubject::Resident(&crate::support::resident_id("nobody")),
                    "m-1",
                    "energy"
                )
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        // By a link's handle: the subject resolved in the same read; only a
        // standing link of this source names anyone.
        let by_handle = |source: &'static str, handle: &'static str| {
            let store = store.clone();
            async move {
                store
                    .deposit_facts(source, DepositSubject::Handle(handle), "m-1", "energy")
                    .await
                    .unwrap()
            }
        };
        let linked = by_handle("s1", "h1").await.unwrap();
        assert_eq!(linked.resident_id.as_str(), "r1", "{b}");
        assert!(linked.active && !linked.restricted, "{b}");
        assert!(by_handle("s2", "h1").await.is_none(), "{b}");
        assert!(by_handle("s1", "h2").await.is_none(), "{b}");
        let fresh = store
            .deposit_facts(
                "s1",
                DepositSubject::Resident(&crate::support::resident_id("r1")),
                "m-1",
                "energy",
            )
            .await
            .unwrap()
            .unwrap();
        assert!(!fresh.restricted && !fresh.objected, "{b}");
        assert_eq!(fresh.previous_digest, None, "{b}");
        assert_eq!(fresh.latest_version, 0, "{b}");
        assert!(fresh.data_key.is_none(), "{b}");

        data_keys(&store, &["r1", "r2"]).await;
        assert_eq!(
            store
                .record_deposit(&deposit("m-1", "d1", 1, T0), T0 + 1)
                .await
                .unwrap(),
            DepositOutcome::Accepted,
            "{b}"
        );
        store
            .add_objection(
                &crate::support::resident_id("r1"),
                coffre::domain::rights::ObjectionTo::Source("s1"),
                T0 + 2,
            )
            .await
            .unwrap();
        // Another source's objection and another resident's restriction
        // are not this line's.
        store
            .add_objection(
                &crate::support::resident_id("r1"),
                coffre::domain::rights::ObjectionTo::Source("s2"),
                T0 + 2,
            )
            .await
            .unwrap();
        store
            .set_restricted(&crate::support::resident_id("r2"), Some(T0 + 2), &[])
            .await
            .unwrap();
        let after = store
            .deposit_facts(
                "s1",
                DepositSubject::Resident(&crate::support::resident_id("r1")),
                "m-1",
                "energy",
            )
            .await
            .unwrap()
            .unwrap();
        assert!(!after.restricted && after.objected, "{b}");
        assert_eq!(after.previous_digest.as_deref(), Some("d1"), "{b}");
        assert_eq!(after.latest_version, 1, "{b}");
        let key = after.data_key.unwrap();
        assert_eq!(
            (key.resident_id.as_str(), key.kek_version, key.wrapped),
            ("r1", 1, b"wrapped-r1".to_vec()),
            "{b}"
        );
        // Another category, another record id of the source.
        let other = store
            .deposit_facts(
                "s1",
                DepositSubject::Resident(&crate::support::resident_id("r1")),
                "m-2",
                "contact",
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (other.previous_digest, other.latest_version),
            (None, 0),
            "{b}"
        );
        let restricted = store
            .deposit_facts(
                "s1",
                DepositSubject::Resident(&crate::support::resident_id("r2")),
                "m-1",
                "energy",
            )
            .await
            .unwrap()
            .unwrap();
        assert!(restricted.restricted && !restricted.objected, "{b}");
        // Several lines' questions in one read, answered in their order.
        let (r1, r2, nobody) = (
            crate::support::resident_id("r1"),
            crate::support::resident_id("r2"),
            crate::support::resident_id("nobody"),
        );
        let ask = |subject, record| coffre::storage::FactsAsked {
            source_id: "s1",
            subject,
            source_record_id: record,
            category: "energy",
        };
        let answers = store
            .deposit_facts_of(&[
                ask(DepositSubject::Resident(&r2), "m-1"),
                ask(DepositSubject::Handle("h2"), "m-1"),
                ask(DepositSubject::Handle("h1"), "m-1"),
                ask(DepositSubject::Resident(&nobody), "m-1"),
                ask(DepositSubject::Resident(&r1), "m-2"),
            ])
            .await
            .unwrap();
        let seen: Vec<_> = answers
            .iter()
            .map(|a| {
                a.as_ref().map(|f| {
                    (
                        f.resident_id.as_str().to_string(),
                        f.restricted,
                        f.previous_digest.clone(),
                    )
                })
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                Some(("r2".into(), true, Some("d1".into()))),
                None,
                Some(("r1".into(), false, Some("d1".into()))),
                None,
                Some(("r1".into(), false, None)),
            ],
            "{b}"
        );
        // A revoked link names no one.
        assert!(
            store
                .revoke_source_link("s1", &crate::support::resident_id("r1"), T0 + 3)
                .await
                .unwrap(),
            "{b}"
        );
        assert!(by_handle("s1", "h1").await.is_none(), "{b}");
    })
    .await;
}

#[tokio::test]
async fn a_deposit_that_breaks_a_key_inside_a_batch_rolls_back_alone() {
    // A unique violation inside the batch's transaction (on PostgreSQL it
    // would abort the whole transaction without the deposit's savepoint):
    // that deposit is answered `VersionTaken` (sealed again by the
    // service), the others stand.
    each_store(|store| async move {
        let b = on(&store);
        r1_linked(&store, &["r1"]).await;
        let batch = a_batch_with_a_broken_key();
        assert_eq!(
            store.record_deposits(&batch).await.unwrap(),
            vec![
                DepositOutcome::Accepted,
                DepositOutcome::VersionTaken,
                DepositOutcome::Accepted,
            ],
            "{b}"
        );
        assert_eq!(
            store
                .latest_record_version(&crate::support::resident_id("r1"), "energy")
                .await
                .unwrap(),
            2,
            "{b}"
        );
        assert_eq!(digest(&store, "m-2").await, None, "{b}");
    })
    .await;
}

#[tokio::test]
async fn a_deposit_rides_in_its_entrys_sequencing_transaction_both_or_neither() {
    // The audit log's writer carries a batch's deposits in the transaction
    // that sequences their entries: committed together, or neither.
    each_store(|store| async move {
        let b = on(&store);
        r1_linked(&store, &["r1", "r2"]).await;
        let entries = |n: usize| {
            move |_first: u64| -> Result<Vec<coffre::storage::SequencedEntry>, String> {
                Ok((0..n)
                    .map(|i| (format!("e{i}").into_bytes(), Some("r1".into()), T0))
                    .collect())
            }
        };
        let latest = |store: coffre::storage::DynStore| async move {
            store
                .latest_record_version(&crate::support::resident_id("r1"), "energy")
                .await
                .unwrap()
        };
        // An entry that cannot be written: neither it nor the deposit.
        let failing =
            |_: u64| -> Result<Vec<coffre::storage::SequencedEntry>, String> { Err("no".into()) };
        let refused = store
            .audit_sequence(T0, None, &failing, &[(deposit("m-1", "d1", 1, T0), T0 + 1)])
            .await;
        assert!(refused.is_err(), "{b}");
        assert_eq!(latest(store.clone()).await, 0, "{b}");
        assert_eq!(store.audit_size().await.unwrap(), 0, "{b}");
        // Both, in one commit; a refused deposit leaves its entry (the
        // allow is on record, as is why nothing was stored).
        let unlinked = DepositRow {
            resident_id: crate::support::resident_id("r2"),
            ..deposit("m-9", "d9", 1, T0)
        };
        let done = store
            .audit_sequence(
                T0,
                None,
                &entries(2),
                &[(deposit("m-1", "d1", 1, T0), T0 + 1), (unlinked, T0 + 1)],
            )
            .await
            .unwrap();
        assert_eq!((done.first, done.count), (0, 2), "{b}");
        assert_eq!(
            done.deposits,
            vec![DepositOutcome::Accepted, DepositOutcome::NoLink],
            "{b}"
        );
        assert_eq!(latest(store.clone()).await, 1, "{b}");
        assert_eq!(digest(&store, "m-1").await.as_deref(), Some("d1"), "{b}");
        // The refused one wrote nothing: no idempotency row, no version.
        assert_eq!(digest(&store, "m-9").await, None, "{b}");
        assert_eq!(deposited(&store).await, vec![1], "{b}");
        // On the writer's fast path (its size still the database's) too.
        let done = store
            .audit_sequence(
                T0,
                Some(2),
                &entries(1),
                &[(deposit("m-2", "d2", 2, T0), T0 + 2)],
            )
            .await
            .unwrap();
        assert_eq!(
            (done.first, done.count, done.deposits),
            (2, 1, vec![DepositOutcome::Accepted]),
            "{b}"
        );
        assert_eq!(latest(store.clone()).await, 2, "{b}");
        assert_eq!(store.audit_size().await.unwrap(), 3, "{b}");
    })
    .await;
}

/// Runs `test` on a fresh SQLite store and, when configured, a PostgreSQL
/// one, with a raw pool on the same database (for what the service never
/// does: take a table away).
async fn each_store_with_raw<F, Fut>(test: F)
where
    F: Fn(coffre::storage::DynStore, sqlx::AnyPool) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coffre.db");
    let store = coffre::storage::open(&coffre::config::DatabaseUrl::Sqlite { path: path.clone() })
        .await
        .unwrap();
    let raw = sqlx::AnyPool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    test(store.clone(), raw.clone()).await;
    raw.close().await;
    store.close().await;
    if let Some(db) = crate::support::PgDatabase::create().await {
        let url = db.url.clone();
        let store =
            coffre::storage::open(&coffre::config::DatabaseUrl::Postgres { url: url.clone() })
                .await
                .unwrap();
        let raw = sqlx::AnyPool::connect(&url).await.unwrap();
        let outcome = tokio::spawn(test(store.clone(), raw.clone())).await;
        raw.close().await;
        store.close().await;
        db.drop_now().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

#[tokio::test]
async fn a_failure_of_the_deposits_beside_their_entries_never_fails_the_entries() {
    // Whatever fails in the deposits' part of a sequencing transaction
    // (here their table is gone; on PostgreSQL also a row lock held too
    // long, a deadlock), the batch's entries commit, other callers' among
    // them, and the deposits are answered `StoreAlone`, nothing of them
    // written.
    each_store_with_raw(|store, raw| async move {
        let b = on(&store);
        r1_linked(&store, &["r1"]).await;
        sqlx::query("ALTER TABLE source_deposits RENAME TO source_deposits_gone")
            .execute(&raw)
            .await
            .unwrap();
        let entries = entries(3);
        let done = store
            .audit_sequence(T0, None, &entries, &[(deposit("m-1", "d1", 1, T0), T0 + 1)])
            .await
            .unwrap();
        assert_eq!(
            (done.count, done.deposits),
            (3, vec![DepositOutcome::StoreAlone]),
            "{b}"
        );
        assert_eq!(store.audit_size().await.unwrap(), 3, "{b}");
        assert_eq!(
            store
                .latest_record_version(&crate::support::resident_id("r1"), "energy")
                .await
                .unwrap(),
            0,
            "{b}"
        );
        // On the writer's fast path too (its size still the database's).
        let done = store
            .audit_sequence(
                T0,
                Some(3),
                &entries,
                &[(deposit("m-1", "d1", 1, T0), T0 + 1)],
            )
            .await
            .unwrap();
        assert_eq!(
            (done.first, done.count, done.deposits),
            (3, 3, vec![DepositOutcome::StoreAlone]),
            "{b}"
        );
        assert_eq!(store.audit_size().await.unwrap(), 6, "{b}");
        // Stored alone once its table is back.
        sqlx::query("ALTER TABLE source_deposits_gone RENAME TO source_deposits")
            .execute(&raw)
            .await
            .unwrap();
        assert_eq!(
            store
                .record_deposit(&deposit("m-1", "d1", 1, T0), T0 + 2)
                .await
                .unwrap(),
            DepositOutcome::Accepted,
            "{b}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_audit_log_answers_each_caller_with_its_own_deposits_outcome() {
    // The writer sorts a batch's deposits before the storage sees them:
    // each outcome still goes back to its own caller, and a caller with
    // no deposit gets its index alone.
    each_store(|store| async move {
        let b = on(&store);
        r1_linked(&store, &["r1", "r2"]).await;
        let log = coffre::audit::AuditLog::start(store.clone(), "test".into());
        let entry =
            || coffre::audit::AuditRecord::new("s1", "source", "source.deposit", T0).allow("test");
        // r2 sorts after r1 but comes first; r2 has no link.
        let unlinked = DepositRow {
            resident_id: crate::support::resident_id("r2"),
            ..deposit("m-2", "d2", 1, T0)
        };
        let (first, plain, second) = tokio::join!(
            log.record_deposit(entry(), unlinked, T0 + 1),
            log.record(entry()),
            log.record_deposit(entry(), deposit("m-1", "d1", 1, T0), T0 + 1),
        );
        assert_eq!(first.unwrap().1, DepositOutcome::NoLink, "{b}");
        plain.unwrap();
        assert_eq!(second.unwrap().1, DepositOutcome::Accepted, "{b}");
        assert_eq!(digest(&store, "m-1").await.as_deref(), Some("d1"), "{b}");
        assert_eq!(digest(&store, "m-2").await, None, "{b}");
    })
    .await;
}

#[tokio::test]
async fn a_failure_after_a_broken_key_beside_the_entries_leaves_none_of_the_batch() {
    // A broken key makes the batch's deposits go one at a time; another
    // failure on a later one (here a trigger refuses its idempotency row)
    // then rolls back the ones before it too, answers every deposit of the
    // batch `StoreAlone`, and the entries still commit.
    each_store_with_raw(|store, raw| async move {
        let b = on(&store);
        r1_linked(&store, &["r1"]).await;
        refuse_inserts(&raw, b, "source_deposits", Some("m-3")).await;
        let batch = a_batch_with_a_broken_key();
        let entries = entries(3);
        let done = store
            .audit_sequence(T0, None, &entries, &batch)
            .await
            .unwrap();
        assert_eq!(
            (done.count, done.deposits),
            (3, vec![DepositOutcome::StoreAlone; 3]),
            "{b}"
        );
        assert_eq!(store.audit_size().await.unwrap(), 3, "{b}");
        // Nothing of the batch, not even the first deposit, which had
        // been written before the failure.
        assert_eq!(deposited(&store).await, Vec::<i64>::new(), "{b}");
        assert_eq!(digest(&store, "m-1").await, None, "{b}");
        // Outside the entries' transaction the failure is the caller's.
        assert!(store.record_deposits(&batch).await.is_err(), "{b}");
        assert_eq!(deposited(&store).await, Vec::<i64>::new(), "{b}");
    })
    .await;
}

#[tokio::test]
async fn a_row_held_by_another_transaction_does_not_hold_the_log() {
    // PostgreSQL: the sequencing transaction holds the log's head row; its
    // deposits wait for a row another transaction holds no longer than the
    // log allows, then are answered `StoreAlone` while the entries commit:
    // a resident's row (an erasure that has not committed), a link's row (a
    // revocation that has not committed: a deposit takes its link in share
    // mode). Once the revocation commits, the deposit stored alone finds no
    // link. (SQLite has no row locks: one writer at a time.)
    each_store_with_raw(|store, raw| async move {
        let b = on(&store);
        if b == "sqlite" {
            return;
        }
        r1_linked(&store, &["r1"]).await;
        let holders = [
            "SELECT id FROM residents WHERE id = 'r1' FOR UPDATE",
            "UPDATE source_links SET revoked_at = 1 WHERE source_id = 's1' AND resident_id = 'r1'",
        ];
        for (held, size) in holders.into_iter().zip(1..) {
            let mut holder = raw.begin().await.unwrap();
            sqlx::query(held).execute(&mut *holder).await.unwrap();
            let done = one_deposit_beside_an_entry_in_time(&store).await;
            assert_eq!(
                (done.count, done.deposits),
                (1, vec![DepositOutcome::StoreAlone]),
                "{b}: {held}"
            );
            holder.commit().await.unwrap();
            assert_eq!(store.audit_size().await.unwrap(), size, "{b}");
        }
        assert_eq!(
            store
                .record_deposit(&deposit("m-1", "d1", 1, T0), T0 + 2)
                .await
                .unwrap(),
            DepositOutcome::NoLink,
            "{b}"
        );
        assert_eq!(deposited(&store).await, Vec::<i64>::new(), "{b}");
    })
    .await;
}

#[tokio::test]
async fn entries_that_cannot_be_written_take_their_deposits_with_them() {
    // On the writer's fast path, entries that cannot be written fail the
    // batch: nothing of it is written (neither the entries nor the
    // deposits) and the caller gets the error.
    each_store_with_raw(|store, raw| async move {
        let b = on(&store);
        r1_linked(&store, &["r1"]).await;
        let entries = entries(1);
        store.audit_sequence(T0, None, &entries, &[]).await.unwrap();
        refuse_inserts(&raw, b, "audit_entries", None).await;
        let refused = store
            .audit_sequence(
                T0,
                Some(1),
                &entries,
                &[(deposit("m-1", "d1", 1, T0), T0 + 1)],
            )
            .await;
        assert!(refused.is_err(), "{b}");
        assert_eq!(store.audit_size().await.unwrap(), 1, "{b}");
        assert_eq!(deposited(&store).await, Vec::<i64>::new(), "{b}");
        assert_eq!(digest(&store, "m-1").await, None, "{b}");
    })
    .await;
}

#[tokio::test]
async fn a_batch_failing_after_its_first_writes_leaves_nothing_not_even_its_notice() {
    // The batch's writes beside the entries (the version, the art. 14
    // notice, the idempotency row; on SQLite one text) fail at the last
    // one: the ones before it are rolled back with it (no version, no
    // notice telling the resident of a deposit that is not there), the
    // entries commit, and the writer's connection serves the next batch.
    each_store_with_raw(|store, raw| async move {
        let b = on(&store);
        r1_linked(&store, &["r1"]).await;
        refuse_inserts(&raw, b, "source_deposits", None).await;
        let entries = entries(1);
        let notices = || async {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox")
                .fetch_one(&raw)
                .await
                .unwrap();
            n
        };
        // Both the writer's paths: its first batch reads the size, the
        // next one knows it.
        for (cached, first) in [(None, 0), (Some(1), 1)] {
            let done = store
                .audit_sequence(
                    T0,
                    cached,
                    &entries,
                    &[(deposit("m-1", "d1", 1, T0), T0 + 1)],
                )
                .await
                .unwrap();
            assert_eq!(
                (done.first, done.deposits),
                (first, vec![DepositOutcome::StoreAlone]),
                "{b}"
            );
            assert_eq!(deposited(&store).await, Vec::<i64>::new(), "{b}");
            assert_eq!(notices().await, 0, "{b}");
        }
        assert_eq!(store.audit_size().await.unwrap(), 2, "{b}");
        // The savepoint was ended: the next batch commits on the same
        // connection.
        let drop_trigger = if b == "sqlite" {
            "DROP TRIGGER refuse_source_deposits"
        } else {
            "DROP TRIGGER refuse_source_deposits ON source_deposits"
        };
        sqlx::query(drop_trigger).execute(&raw).await.unwrap();
        let done = store
            .audit_sequence(
                T0,
                Some(2),
                &entries,
                &[(deposit("m-1", "d1", 1, T0), T0 + 2)],
            )
            .await
            .unwrap();
        assert_eq!(done.deposits, vec![DepositOutcome::Accepted], "{b}");
        assert_eq!(deposited(&store).await, vec![1], "{b}");
        assert_eq!(notices().await, 1, "{b}");
        assert_eq!(store.audit_size().await.unwrap(), 3, "{b}");
    })
    .await;
}

/// Makes inserts into `table` fail (a trigger, on each backend's own
/// terms): every one, or only the deposit of source record `record`.
async fn refuse_inserts(raw: &sqlx::AnyPool, backend: &str, table: &str, record: Option<&str>) {
    let name = format!("refuse_{table}");
    let statements = if backend == "sqlite" {
        let when = record
            .map(|r| format!("WHEN NEW.source_record_id = '{r}' "))
            .unwrap_or_default();
        vec![format!(
            "CREATE TRIGGER {name} BEFORE INSERT ON {table} {when}\
             BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )]
    } else {
        let when = record
            .map(|r| format!("NEW.source_record_id = '{r}'"))
            .unwrap_or_else(|| "true".into());
        vec![
            format!(
                "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN IF {when} THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$"
            ),
            format!(
                "CREATE TRIGGER {name} BEFORE INSERT ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION {name}()"
            ),
        ]
    };
    for sql in statements {
        sqlx::query(&sql).execute(raw).await.unwrap();
    }
}

/// One entry and r1's deposit m-1 through the log's storage, which must
/// answer within 3 s (a row lock another transaction holds only makes the
/// deposit wait so long).
async fn one_deposit_beside_an_entry_in_time(
    store: &coffre::storage::DynStore,
) -> coffre::storage::Sequenced {
    let entries = entries(1);
    tokio::time::timeout(
        std::time::Duration::from_secs(3),
        store.audit_sequence(T0, None, &entries, &[(deposit("m-1", "d1", 1, T0), T0 + 1)]),
    )
    .await
    .expect("the log waited on a row a deposit needed")
    .unwrap()
}

/// `n` audit entries about no one, whatever the index they start at.
fn entries(
    n: usize,
) -> impl Fn(u64) -> Result<Vec<coffre::storage::SequencedEntry>, String> + Send + Sync {
    move |_first| {
        Ok((0..n)
            .map(|i| (format!("e{i}").into_bytes(), None, T0))
            .collect())
    }
}

/// r1's deposits m-1 (version 1), m-2 (version 2 under m-1's record id,
/// a primary key: it breaks a key) and m-3 (version 2).
fn a_batch_with_a_broken_key() -> Vec<(DepositRow, i64)> {
    let first = deposit("m-1", "d1", 1, T0);
    let clash = DepositRow {
        record: RecordRow {
            id: first.record.id.clone(),
            ..deposit("m-2", "d2", 2, T0).record
        },
        ..deposit("m-2", "d2", 2, T0)
    };
    vec![
        (first, T0 + 1),
        (clash, T0 + 1),
        (deposit("m-3", "d3", 2, T0), T0 + 1),
    ]
}
