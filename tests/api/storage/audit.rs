//! AuditStore: group commits under the head's lock, the frontier recovered
//! from the stored nodes, the resident and recipients indexes, checkpoints.

use coffre::audit::merkle::{self, CompactRange};
use coffre::storage::{AuditAppend, CheckpointRow, DynStore, StorageError};

use super::{T0, each_store, on};

type Hash = [u8; 32];

/// What the log's writer plans: the entries after `size`, and every
/// perfect subtree they complete.
fn plan(
    size: u64,
    frontier: Vec<Hash>,
    leaves: &[(Vec<u8>, Option<String>)],
) -> Result<AuditAppend, String> {
    let mut range = CompactRange::from_parts(size, frontier).map_err(|e| e.to_string())?;
    let mut out = AuditAppend::default();
    for (i, (leaf, resident)) in leaves.iter().enumerate() {
        let created = range
            .append(merkle::leaf_hash(leaf))
            .map_err(|e| e.to_string())?;
        for ((level, index), hash) in created {
            out.nodes.push((i64::from(level), index as i64, hash));
        }
        out.entries
            .push(((size + i as u64) as i64, leaf.clone(), resident.clone(), T0));
    }
    out.new_size = range.size() as i64;
    out.frontier = range.hashes().to_vec();
    Ok(out)
}

/// Appends `leaves` (leaf bytes, resident concerned).
async fn append(
    store: &DynStore,
    cached: Option<&(u64, Vec<Hash>)>,
    leaves: &[(&str, Option<&str>)],
) -> AuditAppend {
    let leaves: Vec<(Vec<u8>, Option<String>)> = leaves
        .iter()
        .map(|(l, r)| (l.as_bytes().to_vec(), r.map(Into::into)))
        .collect();
    let planner = move |size: u64, frontier: Vec<Hash>| plan(size, frontier, &leaves);
    store.audit_append(T0, cached, &planner).await.unwrap()
}

#[tokio::test]
async fn group_commits_append_in_order_and_recover_the_frontier_from_the_nodes() {
    each_store(|store| async move {
        let b = on(&store);
        assert_eq!(store.audit_size().await.unwrap(), 0, "{b}");
        let first = append(&store, None, &[("a", None), ("b", None), ("c", None)]).await;
        assert_eq!(first.new_size, 3, "{b}");
        // The writer's own idea of the tree, still current.
        let cached = (3, first.frontier.clone());
        let second = append(&store, Some(&cached), &[("d", None), ("e", None)]).await;
        assert_eq!(second.new_size, 5, "{b}");
        // A stale idea (another process appended): read back under the lock.
        let stale = (1, vec![[0u8; 32]]);
        let third = append(&store, Some(&stale), &[("f", None)]).await;
        assert_eq!((third.new_size, third.entries[0].0), (6, 5), "{b}");
        let fourth = append(&store, None, &[("g", None)]).await;
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

        // The stored tree is the tree of those leaves.
        let mut reference = CompactRange::new();
        for c in "abcdefg".bytes() {
            reference.append(merkle::leaf_hash(&[c])).unwrap();
        }
        assert_eq!(fourth.frontier, reference.hashes(), "{b}");
        let coords = merkle::root_coords(7);
        let stored = store.audit_nodes(&coords).await.unwrap();
        let hashes: Vec<Hash> = coords
            .iter()
            .map(|(l, i)| {
                stored
                    .iter()
                    .find(|(sl, si, _)| sl == l && si == i)
                    .unwrap()
                    .2
            })
            .collect();
        let root = CompactRange::from_parts(7, hashes).unwrap().root();
        assert_eq!(root, reference.root(), "{b}");
        let level0 = store.audit_level_hashes(0, 0, 7).await.unwrap();
        let want: Vec<_> = "abcdefg"
            .bytes()
            .map(|c| merkle::leaf_hash(&[c]).to_vec())
            .collect();
        assert_eq!(
            level0.into_iter().map(|(_, h)| h).collect::<Vec<_>>(),
            want,
            "{b}"
        );
        assert_eq!(
            store.audit_level_hashes(1, 0, 4).await.unwrap().len(),
            3,
            "{b}"
        );

        // Nothing to write, or a planner that fails: the log stays as it was.
        let empty = append(&store, None, &[]).await;
        assert!(empty.entries.is_empty(), "{b}");
        let failing = |_: u64, _: Vec<Hash>| -> Result<AuditAppend, String> { Err("no".into()) };
        let refused = store.audit_append(T0, None, &failing).await;
        assert!(
            matches!(refused, Err(StorageError::Integrity(_))),
            "{b}: {refused:?}"
        );
        assert_eq!(store.audit_size().await.unwrap(), 7, "{b}");
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
