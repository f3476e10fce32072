//! AuditStore: sequencing under the head's lock, integration into tiles
//! under the integrator's lease, the resident and recipients indexes,
//! checkpoints.

use coffre::audit::merkle::{self, CompactRange};
use coffre::audit::tiles::{self, TileAppender};
use coffre::storage::{CheckpointRow, DynStore, Sequenced, SequencedEntry, StorageError};

use super::{T0, each_store, on};

/// Sequences `leaves` (leaf bytes, resident concerned).
async fn append(
    store: &DynStore,
    cached: Option<u64>,
    leaves: &[(&str, Option<&str>)],
) -> Sequenced {
    let leaves: Vec<SequencedEntry> = leaves
        .iter()
        .map(|(l, r)| (l.as_bytes().to_vec(), r.map(Into::into), T0))
        .collect();
    let encode = move |_first: u64| Ok(leaves.clone());
    store
        .audit_sequence(T0, cached, &encode, &[])
        .await
        .unwrap()
}

/// Integrates everything sequenced, as `holder`, in one step, renewing the
/// lease until `until`.
async fn integrate(store: &DynStore, holder: &str, until: i64) -> bool {
    let state = store.audit_integration().await.unwrap();
    let edge: Vec<(u8, u64)> = tiles::edge(state.integrated)
        .into_iter()
        .map(|(l, i, _)| (l, i))
        .collect();
    let mut stored = store.audit_tiles(&edge).await.unwrap();
    stored.sort_by_key(|(l, ..)| *l);
    let mut a = TileAppender::new(state.integrated, &stored).unwrap();
    for (_, leaf) in store
        .audit_entries(state.integrated, state.sequenced)
        .await
        .unwrap()
    {
        a.append(merkle::leaf_hash(&leaf)).unwrap();
    }
    store
        .audit_integrate(holder, until, state.integrated, state.sequenced, &a.tiles())
        .await
        .unwrap()
}

#[tokio::test]
async fn sequencing_appends_in_order_and_integration_builds_the_tiles_under_a_lease() {
    each_store(|store| async move {
        let b = on(&store);
        assert_eq!(store.audit_size().await.unwrap(), 0, "{b}");
        let first = append(&store, None, &[("a", None), ("b", None), ("c", None)]).await;
        assert_eq!((first.first, first.count), (0, 3), "{b}");
        // The writer's own idea of the size, still current.
        let second = append(&store, Some(3), &[("d", None), ("e", None)]).await;
        assert_eq!((second.first, second.count), (3, 2), "{b}");
        // A stale idea (another process appended): read back under the lock.
        let third = append(&store, Some(1), &[("f", None)]).await;
        assert_eq!((third.first, third.count), (5, 1), "{b}");
        append(&store, None, &[("g", None)]).await;
        assert_eq!(store.audit_size().await.unwrap(), 7, "{b}");

        let leaves: Vec<_> = store
            .audit_entries(0, 7)
            .await
            .unwrap()
            .into_iter()
            .map(|(i, leaf)| (i, String::from_utf8(leaf).unwrap()))
            .collect();
        let expected: Vec<_> = "abcdefg"
            .chars()
            .enumerate()
            .map(|(i, c)| (i as i64, c.to_string()))
            .collect();
        assert_eq!(leaves, expected, "{b}");
        let middle: Vec<_> = store
            .audit_entries(2, 4)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(middle, [2, 3], "{b}");

        // Sequenced, not integrated: no tile yet, nobody holds the lease.
        let state = store.audit_integration().await.unwrap();
        assert_eq!(
            (state.integrated, state.sequenced, state.holder),
            (0, 7, None),
            "{b}"
        );
        assert!(
            store.audit_tiles(&[(0, 0)]).await.unwrap().is_empty(),
            "{b}"
        );
        // Without the lease, integration writes nothing.
        assert!(!integrate(&store, "p1", 250).await, "{b}");
        // p1 takes it; p2 cannot while it runs, can once it expired.
        assert!(
            store.audit_claim_integrator("p1", 100, 200).await.unwrap(),
            "{b}"
        );
        assert!(
            !store.audit_claim_integrator("p2", 150, 250).await.unwrap(),
            "{b}"
        );
        assert!(
            store.audit_claim_integrator("p1", 150, 250).await.unwrap(),
            "renewed ({b})"
        );
        assert!(integrate(&store, "p1", 250).await, "{b}");
        let mut reference = CompactRange::new();
        for c in "abcdefg".bytes() {
            reference.append(merkle::leaf_hash(&[c])).unwrap();
        }
        let tile = store.audit_tiles(&[(0, 0)]).await.unwrap();
        let want: Vec<u8> = "abcdefg"
            .bytes()
            .flat_map(|c| merkle::leaf_hash(&[c]))
            .collect();
        assert_eq!(tile, vec![(0, 0, want)], "{b}");
        let root = merkle::root_hash(7, |h, i| tiles::node_from_tile(h, i, &tile[0].2));
        assert_eq!(root, Some(reference.root()), "{b}");

        // More entries; p2 takes the expired lease, p1 is fenced off.
        append(&store, None, &[("h", None)]).await;
        assert!(
            store.audit_claim_integrator("p2", 300, 400).await.unwrap(),
            "{b}"
        );
        assert!(!integrate(&store, "p1", 450).await, "fenced ({b})");
        assert!(integrate(&store, "p2", 400).await, "{b}");
        let state = store.audit_integration().await.unwrap();
        assert_eq!((state.integrated, state.sequenced), (8, 8), "{b}");
        assert_eq!(state.holder.as_deref(), Some("p2"), "{b}");
        // The partial tile's row grew in place.
        let rows = store.audit_tile_range(0, 0, 10).await.unwrap();
        assert_eq!((rows.len(), rows[0].2.len()), (1, 8 * 32), "{b}");
        // A stale `from` writes nothing.
        assert!(
            !store
                .audit_integrate("p2", 10_000, 7, 9, &[])
                .await
                .unwrap(),
            "{b}"
        );
        store.audit_release_integrator("p1").await.unwrap();
        assert!(
            store.audit_integration().await.unwrap().holder.is_some(),
            "not p1's ({b})"
        );
        store.audit_release_integrator("p2").await.unwrap();
        assert!(
            store.audit_claim_integrator("p3", 0, 1).await.unwrap(),
            "released ({b})"
        );

        // Nothing to write, or an encoder that fails: the log stays as it was.
        let empty = append(&store, None, &[]).await;
        assert_eq!(empty.count, 0, "{b}");
        let empty = append(&store, Some(8), &[]).await;
        assert_eq!((empty.first, empty.count), (8, 0), "{b}");
        let failing = |_: u64| -> Result<Vec<SequencedEntry>, String> { Err("no".into()) };
        let refused = store.audit_sequence(T0, None, &failing, &[]).await;
        assert!(
            matches!(refused, Err(StorageError::Integrity(_))),
            "{b}: {refused:?}"
        );
        assert_eq!(store.audit_size().await.unwrap(), 8, "{b}");
    })
    .await;
}

#[tokio::test]
async fn a_residents_entries_are_found_indexed_or_not_newest_first() {
    each_store(|store| async move {
        let b = on(&store);
        let awa = Some("awa");
        append(
            &store,
            None,
            &[
                ("e0", awa),
                ("e1", None),
                ("e2", Some("basile")),
                ("e3", awa),
                ("e4", awa),
                ("e5", None),
            ],
        )
        .await;
        let of = |before, limit| {
            let store = store.clone();
            async move {
                store
                    .audit_entries_of(&crate::support::resident_id("awa"), before, limit)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|(i, _)| i)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(of(100, 10).await, [4, 3, 0], "not indexed yet ({b})");
        assert_eq!(store.audit_index_residents(2).await.unwrap(), 2, "{b}");
        assert_eq!(of(100, 10).await, [4, 3, 0], "half indexed ({b})");
        assert_eq!(store.audit_index_residents(100).await.unwrap(), 4, "{b}");
        assert_eq!(
            store.audit_index_residents(100).await.unwrap(),
            0,
            "up to date ({b})"
        );
        assert_eq!(of(100, 10).await, [4, 3, 0], "indexed ({b})");
        assert_eq!(of(4, 10).await, [3, 0], "{b}");
        assert_eq!(of(100, 1).await, [4], "{b}");

        store.audit_reset_resident_index().await.unwrap();
        assert_eq!(of(100, 10).await, [4, 3, 0], "scanned again ({b})");
        assert_eq!(store.audit_index_residents(100).await.unwrap(), 6, "{b}");
    })
    .await;
}

fn recipient(
    resident: &str,
    partner: &str,
    category: &str,
    idx: i64,
) -> (String, String, String, i64) {
    (resident.into(), partner.into(), category.into(), idx)
}

#[tokio::test]
async fn the_recipients_cursor_moves_once_and_a_checkpoint_keeps_its_first_note() {
    each_store(|store| async move {
        let b = on(&store);
        append(
            &store,
            None,
            &[
                ("0", None),
                ("1", None),
                ("2", None),
                ("3", None),
                ("4", None),
            ],
        )
        .await;
        assert_eq!(
            store.audit_recipients_cursor().await.unwrap(),
            (0, 5),
            "{b}"
        );
        let rows = [
            recipient("awa", "p1", "contact", 1),
            recipient("awa", "p1", "contact", 2),
        ];
        assert!(
            store.audit_add_recipients(0, 3, &rows).await.unwrap(),
            "{b}"
        );
        assert!(
            !store.audit_add_recipients(0, 3, &rows).await.unwrap(),
            "moved already ({b})"
        );
        let (pairs, upto) = store
            .audit_recipients_of(&crate::support::resident_id("awa"))
            .await
            .unwrap();
        assert_eq!(
            (pairs, upto),
            (vec![("p1".into(), "contact".into())], 3),
            "{b}"
        );
        let more = [recipient("awa", "p2", "housing", 4)];
        assert!(
            store.audit_add_recipients(3, 5, &more).await.unwrap(),
            "{b}"
        );
        let (mut pairs, upto) = store
            .audit_recipients_of(&crate::support::resident_id("awa"))
            .await
            .unwrap();
        pairs.sort();
        let expected = vec![
            ("p1".to_string(), "contact".to_string()),
            ("p2".into(), "housing".into()),
        ];
        assert_eq!((pairs, upto), (expected, 5), "{b}");
        assert_eq!(
            store
                .audit_recipients_of(&crate::support::resident_id("basile"))
                .await
                .unwrap(),
            (vec![], 5),
            "{b}"
        );

        store.audit_reset_resident_index().await.unwrap();
        assert_eq!(
            store.audit_recipients_cursor().await.unwrap(),
            (0, 5),
            "{b}"
        );
        assert_eq!(
            store
                .audit_recipients_of(&crate::support::resident_id("awa"))
                .await
                .unwrap(),
            (vec![], 0),
            "{b}"
        );

        assert!(
            store.audit_latest_checkpoint().await.unwrap().is_none(),
            "{b}"
        );
        let checkpoint = |size: i64, note: &str| CheckpointRow {
            tree_size: size,
            root: vec![size as u8; 32],
            note: note.into(),
            created_at: T0,
        };
        store
            .audit_insert_checkpoint(&checkpoint(3, "first"))
            .await
            .unwrap();
        store
            .audit_insert_checkpoint(&checkpoint(3, "second"))
            .await
            .unwrap();
        assert_eq!(
            store.audit_latest_checkpoint().await.unwrap().unwrap().note,
            "first",
            "{b}"
        );
        store
            .audit_insert_checkpoint(&checkpoint(5, "later"))
            .await
            .unwrap();
        assert_eq!(
            store
                .audit_latest_checkpoint()
                .await
                .unwrap()
                .unwrap()
                .tree_size,
            5,
            "{b}"
        );
        let all: Vec<_> = store
            .audit_checkpoints()
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.tree_size, c.note))
            .collect();
        assert_eq!(
            all,
            [(3, "first".to_string()), (5, "later".to_string())],
            "{b}"
        );
    })
    .await;
}

/// Issue 24: migration 0028 converts a log stored the old way (a row per
/// perfect subtree in `audit_nodes`) into tiles, on both backends: the
/// converted tiles give the same root and proofs, `audit verify` passes,
/// and the log goes on growing from them.
#[tokio::test]
async fn migration_0028_converts_a_node_log_into_tiles() {
    use sqlx::migrate::Migrator;
    const N: u64 = 600;
    let leaves: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            coffre::audit::AuditRecord::new("agent-1", "dpo", "test.act", 1_000)
                .allow("test")
                .encode(i)
                .unwrap()
        })
        .collect();
    let mut reference = CompactRange::new();
    let mut nodes: Vec<(i64, i64, Vec<u8>)> = Vec::new();
    for leaf in &leaves {
        for ((level, idx), hash) in reference.append(merkle::leaf_hash(leaf)).unwrap() {
            nodes.push((i64::from(level), idx as i64, hash.to_vec()));
        }
    }
    assert!(nodes.iter().any(|n| n.0 == 8), "a level-1 tile to convert");

    /// Migrates `url` up to 0027, then writes the old log through `conn`.
    async fn old_log<DB: sqlx::Database>(
        pool: &sqlx::Pool<DB>,
        dir: &str,
        leaves: &[Vec<u8>],
        nodes: &[(i64, i64, Vec<u8>)],
    ) where
        for<'c> &'c mut <DB as sqlx::Database>::Connection: sqlx::Executor<'c, Database = DB>,
        <DB as sqlx::Database>::Connection: sqlx::migrate::Migrate,
        for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
        i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Vec<u8>: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        let mut m = Migrator::new(std::path::Path::new(dir)).await.unwrap();
        m.migrations = m
            .migrations
            .iter()
            .filter(|x| x.version <= 27)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        m.run(pool).await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        for (i, leaf) in leaves.iter().enumerate() {
            sqlx::query(
                "INSERT INTO audit_entries (idx, leaf, resident_id, created_at) VALUES ($1, $2, NULL, 0)",
            )
            .bind(i as i64)
            .bind(leaf.clone())
            .execute(&mut *conn)
            .await
            .unwrap();
        }
        for (level, idx, hash) in nodes {
            sqlx::query("INSERT INTO audit_nodes (level, idx, hash) VALUES ($1, $2, $3)")
                .bind(*level)
                .bind(*idx)
                .bind(hash.clone())
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        sqlx::query("UPDATE audit_head SET size = $1")
            .bind(leaves.len() as i64)
            .execute(&mut *conn)
            .await
            .unwrap();
    }

    let check = |store: DynStore| {
        let root = reference.root();
        async move {
            let b = on(&store);
            let state = store.audit_integration().await.unwrap();
            assert_eq!((state.integrated, state.sequenced), (N, N), "{b}");
            let tiles = store.audit_tile_range(0, 0, 10).await.unwrap();
            assert_eq!(
                tiles.iter().map(|t| t.2.len() / 32).collect::<Vec<_>>(),
                [256, 256, 88],
                "{b}"
            );
            let upper = store.audit_tiles(&[(1, 0)]).await.unwrap();
            assert_eq!(upper[0].2.len(), 64, "{b}");
            // The log on top of the converted tiles: same root, proofs,
            // and it grows.
            let log = coffre::audit::AuditLog::start(store.clone(), "test/convert".into());
            assert_eq!(log.root(N).await.unwrap(), root, "{b}");
            let proof = log.inclusion_proof(300, N).await.unwrap();
            merkle::verify_inclusion(
                300,
                N,
                &merkle::leaf_hash(&leaves_at(&store, 300).await),
                &proof,
                &root,
            )
            .unwrap();
            let idx = log
                .record(
                    coffre::audit::AuditRecord::new("agent-1", "dpo", "test.act", 2_000)
                        .allow("test"),
                )
                .await
                .unwrap();
            assert_eq!(idx, N, "{b}");
            assert!(
                log.await_integrated(N + 1, std::time::Duration::from_secs(20))
                    .await,
                "{b}"
            );
            let old = log.root(N).await.unwrap();
            let proof = log.consistency_proof(N, N + 1).await.unwrap();
            merkle::verify_consistency(N, N + 1, &old, &log.root(N + 1).await.unwrap(), &proof)
                .unwrap();
            let signer =
                coffre::audit::note::NoteSigner::from_seed("test/convert", &[7u8; 32]).unwrap();
            let verifier =
                coffre::audit::note::NoteVerifier::parse(&signer.verifier_key()).unwrap();
            log.checkpoint(&signer, 3_000).await.unwrap();
            let report = coffre::audit::verify::verify(&store, &verifier, "test/convert", None)
                .await
                .unwrap_or_else(|e| panic!("{b}: {e}"));
            assert_eq!((report.size, report.pending), (N + 1, 0), "{b}");
        }
    };
    async fn leaves_at(store: &DynStore, idx: u64) -> Vec<u8> {
        store
            .audit_entries(idx, idx + 1)
            .await
            .unwrap()
            .pop()
            .unwrap()
            .1
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    old_log(&pool, "migrations/sqlite", &leaves, &nodes).await;
    pool.close().await;
    let store = coffre::storage::open(&coffre::config::DatabaseUrl::Sqlite { path })
        .await
        .unwrap();
    check(store.clone()).await;
    store.close().await;

    if let Some(db) = crate::support::PgDatabase::create().await {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        old_log(&pool, "migrations/postgres", &leaves, &nodes).await;
        pool.close().await;
        let url = db.url.clone();
        let store = coffre::storage::open(&coffre::config::DatabaseUrl::Postgres { url })
            .await
            .unwrap();
        check(store.clone()).await;
        store.close().await;
        db.drop_now().await;
    }
}
