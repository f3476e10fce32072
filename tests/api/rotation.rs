//! KEK rotation over 10,000 residents: every value stays readable, and an
//! interrupted rotation resumes and completes.

use std::sync::Arc;

use coffre::crypto::{
    DataKey, KeySet, LiveKeys, SealContext, WrappedDataKey, generate_unlock_identity, open,
    read_unlock_identity, seal,
};
use coffre::storage::DynStore;

use crate::support::{T0, TestApp, each_backend_with};

const RESIDENTS: usize = 10_000;

/// Fills the vault quickly: residents, wrapped data keys and one sealed
/// record each, in one transaction.
async fn fill(app: &TestApp, set: &KeySet) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app.database_url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    for i in 0..RESIDENTS {
        let id = format!("r-{i:05}");
        let dk = DataKey::generate().unwrap();
        let w = set.wrap_data_key(&id, &dk).unwrap();
        let record_id = format!("rec-{i:05}");
        let sealed = seal(
            &dk,
            &SealContext {
                resident_id: &id,
                category: "contact",
                record_id: &record_id,
                version: 1,
                provenance: None,
            },
            format!("{{\"email\":\"r{i}@example.org\"}}").as_bytes(),
        )
        .unwrap();
        sqlx::query("INSERT INTO residents (id, status, created_at) VALUES ($1, 'active', $2)")
            .bind(&id)
            .bind(T0)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("INSERT INTO data_keys (resident_id, kek_version, wrapped, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(i64::from(w.kek_version))
            .bind(w.bytes)
            .bind(T0)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("INSERT INTO personal_records (id, resident_id, category, version, sealed, created_at) VALUES ($1, $2, 'contact', 1, $3, $4)")
            .bind(&record_id)
            .bind(&id)
            .bind(sealed)
            .bind(T0)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    pool.close().await;
}

/// Opens every record with the key set as it is on disk now.
async fn assert_all_readable(app: &TestApp, set: &KeySet, expected_version: i64) {
    let pool = sqlx::AnyPool::connect(&app.database_url).await.unwrap();
    type Row = (String, i64, Vec<u8>, String, Vec<u8>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT k.resident_id, k.kek_version, k.wrapped, r.id, r.sealed FROM data_keys k \
         JOIN personal_records r ON r.resident_id = k.resident_id AND r.category = 'contact' \
         WHERE k.resident_id LIKE 'r-%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), RESIDENTS);
    for (id, version, wrapped, record_id, sealed) in rows {
        assert_eq!(version, expected_version, "{id} not re-wrapped");
        let dk = set
            .unwrap_data_key(
                &id,
                &WrappedDataKey {
                    kek_version: version as u32,
                    bytes: wrapped,
                },
            )
            .unwrap();
        let plain = open(
            &dk,
            &SealContext {
                resident_id: &id,
                category: "contact",
                record_id: &record_id,
                version: 1,
                provenance: None,
            },
            &sealed,
        )
        .unwrap();
        let n = id.trim_start_matches("r-").trim_start_matches('0');
        let n = if n.is_empty() { "0" } else { n };
        assert_eq!(
            String::from_utf8(plain).unwrap(),
            format!("{{\"email\":\"r{n}@example.org\"}}")
        );
    }
    pool.close().await;
}

#[tokio::test]
async fn rotation_over_ten_thousand_residents_resumes_after_interruption() {
    each_backend_with(false, |app| async move {
        let dir = app.dir.path().join("disk-keys");
        let unlock_path = app.dir.path().join("unlock.key");
        let unlock = generate_unlock_identity(&unlock_path).unwrap();
        let mut set = KeySet::init(&dir, &unlock).unwrap();
        let store: DynStore = app.store.clone();
        store.register_kek_version(1, T0).await.unwrap();
        fill(&app, &set).await;

        // First run: stop it after the first batch, as a crash would.
        let interrupted = {
            let store = store.clone();
            let dir = dir.clone();
            let unlock_path = unlock_path.clone();
            tokio::spawn(async move {
                let unlock = read_unlock_identity(&unlock_path).unwrap();
                let mut set = KeySet::load(&dir, &unlock).unwrap();
                coffre::service::vault::rotate(
                    &store,
                    &mut set,
                    &dir,
                    &unlock,
                    1000,
                    T0,
                    |done, _| {
                        assert!(done < 2000, "simulated crash");
                    },
                )
                .await
            })
            .await
        };
        assert!(
            interrupted.is_err(),
            "the first run should have been interrupted"
        );
        let (left,) = (store.count_data_keys_not_at(2).await.unwrap(),);
        assert!(
            left > 0 && left < RESIDENTS as i64,
            "partial progress expected, {left} left"
        );

        // A server running meanwhile follows the rotation by reloading.
        let live = LiveKeys::load(dir.clone(), unlock_path.clone()).unwrap();
        assert!(live.with_version(2).is_ok());

        // Second run resumes: no third version, everything at version 2, v1 retired.
        set = KeySet::load(&dir, &unlock).unwrap();
        let report =
            coffre::service::vault::rotate(&store, &mut set, &dir, &unlock, 1000, T0, |_, _| {})
                .await
                .unwrap();
        assert!(!report.added_version);
        assert_eq!(report.target_version, 2);
        assert_eq!(report.retired, vec![1]);
        assert!(
            !dir.join("kek-v1.age").exists(),
            "retired KEK file still present"
        );
        let fresh = KeySet::load(&dir, &unlock).unwrap();
        assert_eq!(fresh.kek_versions(), vec![2]);
        assert_all_readable(&app, &fresh, 2).await;

        // The next rotation starts a new version.
        let report =
            coffre::service::vault::rotate(&store, &mut set, &dir, &unlock, 5000, T0, |_, _| {})
                .await
                .unwrap();
        assert!(report.added_version);
        assert_eq!(report.target_version, 3);
        assert_eq!(report.rewrapped, RESIDENTS as u64);
        let fresh = KeySet::load(&dir, &unlock).unwrap();
        assert_all_readable(&app, &fresh, 3).await;
        let _ = Arc::new(fresh);
    })
    .await;
}

#[tokio::test]
async fn rotation_rewraps_the_agents_totp_keys_too() {
    each_backend_with(false, |app| async move {
        let dir = app.dir.path().join("disk-keys");
        let unlock = generate_unlock_identity(&app.dir.path().join("unlock.key")).unwrap();
        let mut set = KeySet::init(&dir, &unlock).unwrap();
        let store: DynStore = app.store.clone();
        store.register_kek_version(1, T0).await.unwrap();
        store
            .insert_agent(
                &coffre::storage::AgentRow {
                    id: crate::support::aid("aidant-1"),
                    role: coffre::domain::Role::Dpo,
                    display_name: "A".into(),
                    structure_id: None,
                    active: true,
                    can_create_mandates: true,
                },
                None,
                T0,
            )
            .await
            .unwrap();
        let ctx = coffre::crypto::SealContext {
            resident_id: "aidant-1",
            category: "totp",
            record_id: "aidant-1",
            version: 1,
            provenance: None,
        };
        let dk = coffre::crypto::DataKey::generate().unwrap();
        let wrapped = set.wrap_data_key("agent:aidant-1", &dk).unwrap();
        store
            .upsert_totp(&coffre::storage::TotpRow {
                agent_id: crate::support::aid("aidant-1"),
                kek_version: 1,
                wrapped_key: wrapped.bytes,
                sealed_secret: coffre::crypto::seal(&dk, &ctx, b"12345678901234567890").unwrap(),
                last_step: 0,
                failures: 0,
                locked_until: 0,
                created_at: T0,
            })
            .await
            .unwrap();
        let report =
            coffre::service::vault::rotate(&store, &mut set, &dir, &unlock, 100, T0, |_, _| {})
                .await
                .unwrap();
        assert_eq!(report.retired, vec![1]);
        let row = store
            .find_totp(&crate::support::aid("aidant-1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.kek_version, 2);
        let fresh = KeySet::load(&dir, &unlock).unwrap();
        let dk = fresh
            .unwrap_data_key(
                "agent:aidant-1",
                &coffre::crypto::WrappedDataKey {
                    kek_version: 2,
                    bytes: row.wrapped_key,
                },
            )
            .unwrap();
        assert_eq!(
            coffre::crypto::open(&dk, &ctx, &row.sealed_secret).unwrap(),
            b"12345678901234567890"
        );
    })
    .await;
}
