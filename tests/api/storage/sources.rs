//! SourceStore: data sources' credentials, residents' links to them, and
//! the one-time codes that make a link.

use coffre::storage::{LinkCodeKind, SourceClientRow};

use super::{T0, assert_conflict, at_once, each_store, on, residents};

fn client(id: &str) -> SourceClientRow {
    SourceClientRow {
        id: id.into(),
        name: format!("Source {id}"),
        client_id: format!("client-{id}"),
        client_secret_hash: "hash".into(),
        active: true,
    }
}

#[tokio::test]
async fn source_clients_round_trip_with_a_unique_client_id() {
    each_store(|store| async move {
        let b = on(&store);
        store.insert_source_client(&client("s1"), T0).await.unwrap();
        let mut copy = client("s2");
        copy.client_id = "client-s1".into();
        assert_conflict(
            store.insert_source_client(&copy, T0).await,
            "same client id",
        );
        assert_conflict(
            store.insert_source_client(&client("s1"), T0).await,
            "same id",
        );
        let found = store
            .find_source_client_by_client_id("client-s1")
            .await
            .unwrap();
        assert_eq!(found.map(|s| s.id).as_deref(), Some("s1"), "{b}");
        // A source is never found where a partner is looked up.
        assert!(
            store
                .find_partner_by_client_id("client-s1")
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        assert!(
            store.set_source_client_active("s1", false).await.unwrap(),
            "{b}"
        );
        assert!(
            !store
                .find_source_client("s1")
                .await
                .unwrap()
                .unwrap()
                .active,
            "{b}"
        );
        assert!(
            !store.set_source_client_active("s9", false).await.unwrap(),
            "{b}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_link_code_is_taken_once_by_its_own_source_only() {
    each_store(|store| async move {
        let b = on(&store);
        residents(&store, &["r1"]).await;
        assert!(
            store
                .insert_link_code(
                    "d1",
                    "s1",
                    &crate::support::resident_id("r1"),
                    LinkCodeKind::Authorisation,
                    Some("https://a.example/r"),
                    T0,
                    T0 + 900
                )
                .await
                .unwrap(),
            "{b}"
        );
        // Another source does not see it; its own does, without consuming it.
        assert!(
            store.peek_link_code("d1", "s2").await.unwrap().is_none(),
            "{b}"
        );
        let seen = store.peek_link_code("d1", "s1").await.unwrap().unwrap();
        assert_eq!(seen.resident_id, "r1");
        assert_eq!(seen.kind, LinkCodeKind::Authorisation);
        assert_eq!(seen.redirect_uri.as_deref(), Some("https://a.example/r"));
        assert_eq!(seen.expires_at, T0 + 900);
        // Another source cannot exchange it.
        assert!(
            !store
                .exchange_link_code("d1", "s2", &crate::support::resident_id("r1"), "h1", T0)
                .await
                .unwrap(),
            "{b}"
        );
        // Eight concurrent exchanges: exactly one gets the code.
        let got = at_once(8, |_| {
            let store = store.clone();
            async move {
                store
                    .exchange_link_code("d1", "s1", &crate::support::resident_id("r1"), "h1", T0)
                    .await
                    .unwrap()
            }
        })
        .await;
        assert_eq!(got.iter().filter(|won| **won).count(), 1, "{b}");
        assert!(
            store.peek_link_code("d1", "s1").await.unwrap().is_none(),
            "{b}"
        );
        // No code for an unknown resident.
        assert!(
            !store
                .insert_link_code(
                    "d2",
                    "s1",
                    &crate::support::resident_id("nobody"),
                    LinkCodeKind::Pairing,
                    None,
                    T0,
                    T0 + 900
                )
                .await
                .unwrap(),
            "{b}"
        );
        store
            .insert_link_code(
                "d3",
                "s1",
                &crate::support::resident_id("r1"),
                LinkCodeKind::Pairing,
                None,
                T0,
                T0 + 900,
            )
            .await
            .unwrap();
        assert_eq!(store.purge_link_codes(T0 + 899).await.unwrap(), 0, "{b}");
        assert_eq!(store.purge_link_codes(T0 + 900).await.unwrap(), 1, "{b}");
    })
    .await;
}

#[tokio::test]
async fn a_link_is_revoked_and_made_again_with_the_same_handle_and_erasure_ends_it() {
    each_store(|store| async move {
        let b = on(&store);
        residents(&store, &["r1", "r2"]).await;
        assert!(
            store
                .link_source("s1", &crate::support::resident_id("r1"), "h1", T0)
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            store
                .link_source("s2", &crate::support::resident_id("r1"), "h2", T0)
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            !store
                .link_source("s1", &crate::support::resident_id("nobody"), "h9", T0)
                .await
                .unwrap(),
            "{b}"
        );
        // A handle names one resident per source.
        assert_conflict(
            store
                .link_source("s1", &crate::support::resident_id("r2"), "h1", T0)
                .await,
            "same handle",
        );
        let l = store
            .source_link_by_handle("s1", "h1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((l.resident_id.as_str(), l.revoked_at), ("r1", None), "{b}");
        assert!(
            store
                .source_link_by_handle("s2", "h1")
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );

        assert!(
            store
                .revoke_source_link("s1", &crate::support::resident_id("r1"), T0 + 5)
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            !store
                .revoke_source_link("s1", &crate::support::resident_id("r1"), T0 + 6)
                .await
                .unwrap(),
            "{b}"
        );
        let l = store
            .source_link_by_handle("s1", "h1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(l.revoked_at, Some(T0 + 5), "{b}");
        assert!(
            store
                .link_source("s1", &crate::support::resident_id("r1"), "h1", T0 + 9)
                .await
                .unwrap(),
            "{b}"
        );
        let links = store
            .source_links_of(&crate::support::resident_id("r1"))
            .await
            .unwrap();
        let ids: Vec<_> = links
            .iter()
            .map(|l| (l.source_id.as_str(), l.revoked_at))
            .collect();
        assert_eq!(ids, [("s1", None), ("s2", None)], "{b}");

        store
            .insert_link_code(
                "d1",
                "s1",
                &crate::support::resident_id("r1"),
                LinkCodeKind::Pairing,
                None,
                T0,
                T0 + 900,
            )
            .await
            .unwrap();
        assert!(
            store
                .erase_resident(&crate::support::resident_id("r1"), T0 + 10, &[])
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            store
                .source_links_of(&crate::support::resident_id("r1"))
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );
        assert!(
            store.peek_link_code("d3", "s1").await.unwrap().is_none(),
            "{b}"
        );
    })
    .await;
}
