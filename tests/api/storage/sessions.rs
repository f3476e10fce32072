//! SessionStore: sessions, OpenID Connect logins under way, and client
//! assertion jtis, each usable once where it must be.

use coffre::domain::Role;
use coffre::storage::{DynStore, LoginAttemptRow, MandateDraftRow, NewSession};

use super::{T0, assert_conflict, at_once, each_store, on, structure_with_aidant};

async fn session(store: &DynStore, token: &str, now: i64, expires_at: i64) {
    store
        .create_session(&NewSession {
            token_hash: token,
            actor_id: "awa",
            role: Role::Resident,
            csrf_token: "csrf",
            now,
            expires_at,
            provider: "resident",
            id_token_sealed: Some("sealed-id-token"),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_session_lives_until_its_expiry_or_its_idle_cutoff() {
    each_store(|store| async move {
        let b = on(&store);
        session(&store, "t1", T0, T0 + 3600).await;
        let found = store
            .find_session("t1", T0 + 10, T0 - 900)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.actor_id.as_str(), found.role.as_str()),
            ("awa", "resident"),
            "{b}"
        );
        assert_eq!(
            (found.last_seen_at, found.expires_at),
            (T0, T0 + 3600),
            "{b}"
        );
        assert_eq!(
            found.id_token_sealed.as_deref(),
            Some("sealed-id-token"),
            "{b}"
        );
        assert!(
            store
                .find_session("t1", T0 + 3600, 0)
                .await
                .unwrap()
                .is_none(),
            "expired ({b})"
        );
        assert!(
            store
                .find_session("t1", T0 + 10, T0)
                .await
                .unwrap()
                .is_none(),
            "idle ({b})"
        );
        store.touch_session("t1", T0 + 100).await.unwrap();
        let touched = store
            .find_session("t1", T0 + 110, T0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(touched.last_seen_at, T0 + 100, "{b}");
        assert_conflict(
            store
                .create_session(&NewSession {
                    token_hash: "t1",
                    actor_id: "basile",
                    role: Role::Resident,
                    csrf_token: "other",
                    now: T0,
                    expires_at: T0 + 10,
                    provider: "demo",
                    id_token_sealed: None,
                })
                .await,
            "same token",
        );
        store.delete_session("t1").await.unwrap();
        assert!(
            store
                .find_session("t1", T0 + 110, 0)
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );

        // The purge takes the expired and the idle, nothing else.
        session(&store, "expired", T0, T0 + 10).await;
        session(&store, "idle", T0, T0 + 5000).await;
        session(&store, "live", T0, T0 + 5000).await;
        store.touch_session("live", T0 + 2000).await.unwrap();
        let purged = store
            .purge_expired_sessions(T0 + 1000, T0 + 500)
            .await
            .unwrap();
        assert_eq!(purged, 2, "{b}");
        assert!(
            store
                .find_session("live", T0 + 2001, 0)
                .await
                .unwrap()
                .is_some(),
            "{b}"
        );
    })
    .await;
}

fn attempt(state: &str, created_at: i64, expires_at: i64) -> LoginAttemptRow {
    LoginAttemptRow {
        state_digest: state.into(),
        browser_digest: format!("browser-{state}"),
        provider: "resident".into(),
        sealed: "sealed".into(),
        created_at,
        expires_at,
        mandate_draft: Some(crate::support::did("d1")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_state_is_taken_once() {
    each_store(|store| async move {
        let b = on(&store);
        store
            .insert_login_attempt(&attempt("s1", T0, T0 + 600))
            .await
            .unwrap();
        let taken = store.take_login_attempt("s1").await.unwrap().unwrap();
        assert_eq!(taken.browser_digest, "browser-s1", "{b}");
        assert_eq!(
            taken.mandate_draft.as_ref().map(|d| d.as_str()),
            Some("d1"),
            "{b}"
        );
        assert_eq!((taken.created_at, taken.expires_at), (T0, T0 + 600), "{b}");
        assert!(
            store.take_login_attempt("s1").await.unwrap().is_none(),
            "{b}"
        );

        store
            .insert_login_attempt(&attempt("s2", T0, T0 + 600))
            .await
            .unwrap();
        let takes = at_once(8, |_| {
            let store = store.clone();
            async move { store.take_login_attempt("s2").await.unwrap().is_some() }
        })
        .await;
        assert_eq!(takes.iter().filter(|t| **t).count(), 1, "{b}: {takes:?}");

        // A new attempt drops those expired by its creation.
        store
            .insert_login_attempt(&attempt("old", T0, T0 + 10))
            .await
            .unwrap();
        store
            .insert_login_attempt(&attempt("new", T0 + 10, T0 + 600))
            .await
            .unwrap();
        assert!(
            store.take_login_attempt("old").await.unwrap().is_none(),
            "{b}"
        );
        assert!(
            store.take_login_attempt("new").await.unwrap().is_some(),
            "{b}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_assertion_jti_works_once_until_it_expires() {
    each_store(|store| async move {
        let b = on(&store);
        assert!(
            store.use_assertion_jti("j1", T0 + 60, T0).await.unwrap(),
            "{b}"
        );
        assert!(
            !store.use_assertion_jti("j1", T0 + 60, T0).await.unwrap(),
            "replay ({b})"
        );
        assert!(
            !store
                .use_assertion_jti("j1", T0 + 60, T0 + 59)
                .await
                .unwrap(),
            "{b}"
        );
        // Forgotten once expired (the assertion itself is refused by then).
        assert!(
            store
                .use_assertion_jti("j1", T0 + 120, T0 + 60)
                .await
                .unwrap(),
            "{b}"
        );

        let uses = at_once(8, |_| {
            let store = store.clone();
            async move { store.use_assertion_jti("j2", T0 + 60, T0).await.unwrap() }
        })
        .await;
        assert_eq!(uses.iter().filter(|u| **u).count(), 1, "{b}: {uses:?}");
    })
    .await;
}

#[tokio::test]
async fn the_login_purge_takes_expired_attempts_drafts_and_jtis() {
    each_store(|store| async move {
        let b = on(&store);
        structure_with_aidant(&store).await;
        let draft = |id: &str, expires_at| MandateDraftRow {
            id: crate::support::did(id),
            aidant_id: crate::support::aid("ag1"),
            structure_id: crate::support::sid("s1"),
            demarches: crate::support::demarches("famille"),
            duration_days: 31,
            renews: None,
            resident_id: None,
            created_at: T0,
            expires_at,
        };
        store
            .insert_mandate_draft(&draft("d-old", T0 + 100))
            .await
            .unwrap();
        store
            .insert_mandate_draft(&draft("d-live", T0 + 101))
            .await
            .unwrap();
        store
            .insert_login_attempt(&attempt("a-old", T0, T0 + 100))
            .await
            .unwrap();
        store
            .insert_login_attempt(&attempt("a-live", T0, T0 + 101))
            .await
            .unwrap();
        store
            .use_assertion_jti("j-old", T0 + 100, T0)
            .await
            .unwrap();
        store
            .use_assertion_jti("j-live", T0 + 101, T0)
            .await
            .unwrap();

        let purged = store
            .purge_expired_logins_and_drafts(T0 + 100)
            .await
            .unwrap();
        assert_eq!(purged, 3, "{b}");
        assert!(
            store
                .find_mandate_draft(&crate::support::did("d-old"))
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        assert!(
            store
                .find_mandate_draft(&crate::support::did("d-live"))
                .await
                .unwrap()
                .is_some(),
            "{b}"
        );
        assert!(
            store.take_login_attempt("a-live").await.unwrap().is_some(),
            "{b}"
        );
        // j-live is still remembered: a replay.
        assert!(
            !store
                .use_assertion_jti("j-live", T0 + 101, T0 + 100)
                .await
                .unwrap(),
            "{b}"
        );
    })
    .await;
}
