//! AgentStore: structures, agents, memberships and TOTP devices.

use coffre::domain::Role;
use coffre::storage::{DynStore, NewSession, TotpRow};

use super::{T0, agent, assert_conflict, at_once, each_store, on, structure};

#[tokio::test]
async fn structures_and_agents_round_trip_with_unique_siret_and_email() {
    each_store(|store| async move {
        let b = on(&store);
        store
            .insert_structure(&structure("s1", "11111111111111", "Zola"), T0)
            .await
            .unwrap();
        store
            .insert_structure(&structure("s2", "22222222222222", "Abri"), T0)
            .await
            .unwrap();
        assert_conflict(
            store
                .insert_structure(&structure("s3", "11111111111111", "Copy"), T0)
                .await,
            "same SIRET",
        );
        assert_conflict(
            store
                .insert_structure(&structure("s1", "33333333333333", "Copy"), T0)
                .await,
            "same id",
        );
        let names: Vec<_> = store
            .list_structures()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["Abri", "Zola"], "by name ({b})");

        store
            .set_structure_demarches(
                &crate::support::sid("s1"),
                &crate::support::demarches("famille"),
            )
            .await
            .unwrap();
        let s1 = store
            .find_structure(&crate::support::sid("s1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                s1.siret.as_str(),
                crate::support::joined(&s1.allowed_demarches).as_str()
            ),
            ("11111111111111", "famille")
        );
        assert!(
            store
                .find_structure(&crate::support::sid("s9"))
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );

        store
            .insert_agent(&agent("ag1", Some("s1")), Some("digest-1"), T0)
            .await
            .unwrap();
        let found = store
            .find_agent(&crate::support::aid("ag1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            found.structure_id.as_ref().map(|s| s.as_str()),
            Some("s1"),
            "{b}"
        );
        assert!(found.active && found.can_create_mandates, "{b}");
        let by_email = store.find_agent_by_email_digest("digest-1").await.unwrap();
        assert_eq!(
            by_email.map(|a| a.id.into_string()).as_deref(),
            Some("ag1"),
            "{b}"
        );
        assert!(
            store
                .find_agent_by_email_digest("digest-9")
                .await
                .unwrap()
                .is_none()
        );
        // Inserting an agent with a structure makes it a member.
        assert_eq!(
            store
                .agent_structures(&crate::support::aid("ag1"))
                .await
                .unwrap(),
            ["s1"],
            "{b}"
        );

        assert_conflict(
            store
                .insert_agent(&agent("ag2", None), Some("digest-1"), T0)
                .await,
            "same e-mail digest",
        );
        // Agents without an e-mail do not collide.
        store
            .insert_agent(&agent("dpo1", None), None, T0)
            .await
            .unwrap();
        store
            .insert_agent(&agent("dpo2", None), None, T0)
            .await
            .unwrap();
        assert!(
            store
                .agent_structures(&crate::support::aid("dpo1"))
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );
    })
    .await;
}

async fn session_of(store: &DynStore, token: &str, actor: &str) {
    store
        .create_session(&NewSession {
            token_hash: token,
            actor_id: actor,
            role: Role::Aidant,
            csrf_token: "csrf",
            now: T0,
            expires_at: T0 + 3600,
            provider: "agent",
            id_token_sealed: None,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn memberships_gate_the_current_structure_and_deactivation_ends_sessions() {
    each_store(|store| async move {
        let b = on(&store);
        for (id, siret, name) in [("s1", "1", "CCAS"), ("s2", "2", "MFS")] {
            store
                .insert_structure(&structure(id, siret, name), T0)
                .await
                .unwrap();
        }
        let mut closed = structure("s3", "3", "Closed");
        closed.active = false;
        store.insert_structure(&closed, T0).await.unwrap();
        store
            .insert_agent(&agent("ag1", Some("s1")), None, T0)
            .await
            .unwrap();

        store
            .add_agent_structure(&crate::support::aid("ag1"), &crate::support::sid("s2"))
            .await
            .unwrap();
        store
            .add_agent_structure(&crate::support::aid("ag1"), &crate::support::sid("s2"))
            .await
            .unwrap();
        assert_eq!(
            store
                .agent_structures(&crate::support::aid("ag1"))
                .await
                .unwrap(),
            ["s1", "s2"],
            "{b}"
        );
        assert!(
            store
                .set_current_structure(&crate::support::aid("ag1"), &crate::support::sid("s2"))
                .await
                .unwrap(),
            "{b}"
        );
        let current = store
            .find_agent(&crate::support::aid("ag1"))
            .await
            .unwrap()
            .unwrap()
            .structure_id;
        assert_eq!(current.as_ref().map(|s| s.as_str()), Some("s2"), "{b}");
        assert!(
            !store
                .set_current_structure(&crate::support::aid("ag1"), &crate::support::sid("s3"))
                .await
                .unwrap(),
            "not a member ({b})"
        );
        assert!(
            store
                .active_structure_of(&crate::support::aid("ag1"), &crate::support::sid("s2"))
                .await
                .unwrap()
                .is_some(),
            "{b}"
        );

        // A référent ends the membership: the structure is no longer the
        // agent's, though the account stays active.
        assert!(
            store
                .set_membership_active(
                    &crate::support::aid("ag1"),
                    &crate::support::sid("s2"),
                    false
                )
                .await
                .unwrap(),
            "{b}"
        );
        assert_eq!(
            store
                .agent_structures(&crate::support::aid("ag1"))
                .await
                .unwrap(),
            ["s1"],
            "{b}"
        );
        assert!(
            store
                .active_structure_of(&crate::support::aid("ag1"), &crate::support::sid("s2"))
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        assert!(
            !store
                .set_current_structure(&crate::support::aid("ag1"), &crate::support::sid("s2"))
                .await
                .unwrap(),
            "{b}"
        );
        let members = store
            .agents_of_structure(&crate::support::sid("s2"))
            .await
            .unwrap();
        assert_eq!(members.len(), 1, "{b}");
        assert!(
            !members[0].active,
            "an ended membership shows inactive ({b})"
        );
        assert!(
            store
                .find_agent(&crate::support::aid("ag1"))
                .await
                .unwrap()
                .unwrap()
                .active,
            "{b}"
        );
        assert!(
            !store
                .set_membership_active(
                    &crate::support::aid("ag1"),
                    &crate::support::sid("s9"),
                    false
                )
                .await
                .unwrap(),
            "{b}"
        );

        // Adding it again restores it.
        store
            .add_agent_structure(&crate::support::aid("ag1"), &crate::support::sid("s2"))
            .await
            .unwrap();
        assert!(
            store
                .active_structure_of(&crate::support::aid("ag1"), &crate::support::sid("s2"))
                .await
                .unwrap()
                .is_some(),
            "{b}"
        );

        // An inactive structure is nobody's active structure.
        store
            .add_agent_structure(&crate::support::aid("ag1"), &crate::support::sid("s3"))
            .await
            .unwrap();
        assert!(
            store
                .active_structure_of(&crate::support::aid("ag1"), &crate::support::sid("s3"))
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );

        // Deactivating the account ends its sessions at once.
        session_of(&store, "t-ag1", "ag1").await;
        assert!(
            store
                .set_agent_active(&crate::support::aid("ag1"), false, T0 + 5)
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            store
                .find_session("t-ag1", T0 + 6, 0)
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        assert!(
            !store
                .find_agent(&crate::support::aid("ag1"))
                .await
                .unwrap()
                .unwrap()
                .active,
            "{b}"
        );
        let members = store
            .agents_of_structure(&crate::support::sid("s1"))
            .await
            .unwrap();
        assert!(!members[0].active, "{b}");
        assert!(
            !store
                .set_agent_active(&crate::support::aid("nobody"), false, T0)
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            store
                .set_agent_active(&crate::support::aid("ag1"), true, T0 + 7)
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            store
                .find_agent(&crate::support::aid("ag1"))
                .await
                .unwrap()
                .unwrap()
                .active,
            "{b}"
        );
    })
    .await;
}

fn device(agent_id: &str, wrapped: &[u8]) -> TotpRow {
    TotpRow {
        agent_id: crate::support::aid(agent_id),
        kek_version: 1,
        wrapped_key: wrapped.to_vec(),
        sealed_secret: b"sealed-secret".to_vec(),
        last_step: 0,
        failures: 0,
        locked_until: 0,
        created_at: T0,
    }
}

async fn agent_with_device(store: &DynStore) {
    store.register_kek_version(1, T0).await.unwrap();
    store
        .insert_agent(&agent("ag1", None), None, T0)
        .await
        .unwrap();
    store.upsert_totp(&device("ag1", b"key-1")).await.unwrap();
}

#[tokio::test]
async fn a_totp_step_is_accepted_once_and_wrong_codes_lock_the_device() {
    each_store(|store| async move {
        let b = on(&store);
        agent_with_device(&store).await;
        let d = store
            .find_totp(&crate::support::aid("ag1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((d.last_step, d.failures, d.locked_until), (0, 0, 0), "{b}");
        assert_eq!(d.sealed_secret, b"sealed-secret", "{b}");

        // A step works once, and never an older one.
        assert!(
            store
                .totp_accept(&crate::support::aid("ag1"), 100)
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            !store
                .totp_accept(&crate::support::aid("ag1"), 100)
                .await
                .unwrap(),
            "replay ({b})"
        );
        assert!(
            !store
                .totp_accept(&crate::support::aid("ag1"), 99)
                .await
                .unwrap(),
            "older ({b})"
        );
        assert!(
            store
                .totp_accept(&crate::support::aid("ag1"), 101)
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            !store
                .totp_accept(&crate::support::aid("nobody"), 500)
                .await
                .unwrap(),
            "{b}"
        );

        // Three claims, the third locks until T0 + 300.
        let lock = T0 + 300;
        for _ in 0..3 {
            assert!(
                store
                    .totp_claim_attempt(&crate::support::aid("ag1"), 3, lock, T0)
                    .await
                    .unwrap(),
                "{b}"
            );
        }
        let d = store
            .find_totp(&crate::support::aid("ag1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((d.failures, d.locked_until), (3, lock), "{b}");
        assert!(
            !store
                .totp_claim_attempt(&crate::support::aid("ag1"), 3, lock, T0 + 299)
                .await
                .unwrap(),
            "{b}"
        );
        // Once the lock has passed a claim goes through again (and, still
        // over the limit, locks again).
        assert!(
            store
                .totp_claim_attempt(&crate::support::aid("ag1"), 3, T0 + 900, lock)
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            !store
                .totp_claim_attempt(&crate::support::aid("ag1"), 3, T0 + 900, lock)
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            !store
                .totp_claim_attempt(&crate::support::aid("nobody"), 3, lock, T0)
                .await
                .unwrap(),
            "{b}"
        );

        // A good code clears the count and the lock.
        assert!(
            store
                .totp_accept(&crate::support::aid("ag1"), 102)
                .await
                .unwrap(),
            "{b}"
        );
        let d = store
            .find_totp(&crate::support::aid("ag1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.last_step, d.failures, d.locked_until),
            (102, 0, 0),
            "{b}"
        );

        // Enrolling again starts the device afresh.
        store.upsert_totp(&device("ag1", b"key-2")).await.unwrap();
        let d = store
            .find_totp(&crate::support::aid("ag1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.last_step, d.wrapped_key.as_slice()),
            (0, &b"key-2"[..]),
            "{b}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_codes_get_no_more_claims_than_the_limit() {
    each_store(|store| async move {
        let b = on(&store);
        agent_with_device(&store).await;
        let claims = at_once(10, |_| {
            let store = store.clone();
            async move {
                store
                    .totp_claim_attempt(&crate::support::aid("ag1"), 3, T0 + 300, T0)
                    .await
                    .unwrap()
            }
        })
        .await;
        assert_eq!(claims.iter().filter(|c| **c).count(), 3, "{b}: {claims:?}");
        let steps = at_once(6, |_| {
            let store = store.clone();
            async move {
                store
                    .totp_accept(&crate::support::aid("ag1"), 200)
                    .await
                    .unwrap()
            }
        })
        .await;
        assert_eq!(steps.iter().filter(|s| **s).count(), 1, "{b}: {steps:?}");
    })
    .await;
}

#[tokio::test]
async fn a_totp_key_is_rewrapped_only_from_its_current_kek_version() {
    each_store(|store| async move {
        let b = on(&store);
        agent_with_device(&store).await;
        store.register_kek_version(2, T0).await.unwrap();
        let stale: Vec<_> = store
            .totp_not_at(2)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.agent_id)
            .collect();
        assert_eq!(stale, ["ag1"], "{b}");
        assert!(
            !store
                .rewrap_totp(&crate::support::aid("ag1"), 2, 2, b"other")
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            store
                .rewrap_totp(&crate::support::aid("ag1"), 1, 2, b"key-2")
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            !store
                .rewrap_totp(&crate::support::aid("ag1"), 1, 2, b"again")
                .await
                .unwrap(),
            "{b}"
        );
        assert!(store.totp_not_at(2).await.unwrap().is_empty(), "{b}");
        let d = store
            .find_totp(&crate::support::aid("ag1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.kek_version, d.wrapped_key.as_slice()),
            (2, &b"key-2"[..]),
            "{b}"
        );
        assert_eq!(
            d.sealed_secret, b"sealed-secret",
            "the secret is untouched ({b})"
        );
    })
    .await;
}
