//! Storage tests per aggregate, against the real store alone (no router, no
//! keys) on SQLite and, when `COFFRE_TEST_POSTGRES_URL` is set, PostgreSQL:
//! the contracts the services rely on. Round trips, uniqueness conflicts,
//! the check-then-act methods that must let exactly one caller win, orders
//! and limits, and what the erasure reaches. One file per aggregate of
//! `src/storage/`.

mod access;
mod agents;
mod audit;
mod consents;
mod deposits;
mod extracts;
mod instance;
mod mandates;
mod partners;
mod records;
mod residents;
mod rights;
mod seed;
mod sessions;
mod sources;

use std::future::Future;

use coffre::config::DatabaseUrl;
use coffre::storage::{
    self, AgentRow, ConsentEventRow, ConsentRow, DataKeyRow, DynStore, MandateRow, NotificationRow,
    PartnerRow, RecordRow, StorageError, StorageResult, StructureRow,
};

use crate::support::PgDatabase;
pub use crate::support::T0;

/// Runs `test` against a freshly migrated store on SQLite, then on
/// PostgreSQL when configured (in a database of its own, dropped
/// afterwards even when `test` panics).
pub async fn each_store<F, Fut>(test: F)
where
    F: Fn(DynStore) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coffre.db");
    let store = storage::open(&DatabaseUrl::Sqlite { path }).await.unwrap();
    test(store.clone()).await;
    store.close().await;

    if let Some(db) = PgDatabase::create().await {
        let url = db.url.clone();
        let store = storage::open(&DatabaseUrl::Postgres { url }).await.unwrap();
        let outcome = tokio::spawn(test(store.clone())).await;
        store.close().await;
        db.drop_now().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// The backend's name, for assertion messages.
pub fn on(store: &DynStore) -> &'static str {
    store.backend().as_str()
}

/// Fails unless `result` is a uniqueness or foreign-key conflict.
#[track_caller]
pub fn assert_conflict<T: std::fmt::Debug>(result: StorageResult<T>, what: &str) {
    match result {
        Err(StorageError::Conflict(_)) => {}
        other => panic!("{what}: expected a conflict, got {other:?}"),
    }
}

/// Fails unless `result` is `NotFound`.
#[track_caller]
pub fn assert_not_found<T: std::fmt::Debug>(result: StorageResult<T>, what: &str) {
    match result {
        Err(StorageError::NotFound) => {}
        other => panic!("{what}: expected not found, got {other:?}"),
    }
}

/// Runs `n` copies of `call` at once; their outcomes.
pub async fn at_once<T, F, Fut>(n: usize, call: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(call(i))).collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

pub async fn residents(store: &DynStore, ids: &[&str]) {
    for id in ids {
        store
            .insert_resident(&crate::support::resident_id(id), T0)
            .await
            .unwrap();
    }
}

pub fn structure(id: &str, siret: &str, name: &str) -> StructureRow {
    StructureRow {
        id: crate::support::sid(id),
        siret: siret.into(),
        name: name.into(),
        allowed_demarches: crate::support::demarches("famille,logement"),
        active: true,
    }
}

pub fn agent(id: &str, structure_id: Option<&str>) -> AgentRow {
    AgentRow {
        id: crate::support::aid(id),
        role: coffre::domain::Role::Aidant,
        display_name: format!("Agent {id}"),
        structure_id: structure_id.map(crate::support::sid),
        active: true,
        can_create_mandates: true,
    }
}

/// Structure `s1` with aidant `ag1` in it.
pub async fn structure_with_aidant(store: &DynStore) {
    store
        .insert_structure(&structure("s1", "11111111111111", "CCAS"), T0)
        .await
        .unwrap();
    store
        .insert_agent(&agent("ag1", Some("s1")), None, T0)
        .await
        .unwrap();
}

pub fn partner(id: &str) -> PartnerRow {
    PartnerRow {
        id: crate::support::pid(id),
        name: format!("Partner {id}"),
        client_id: format!("client-{id}"),
        client_secret_hash: "hash".into(),
        age_recipient: None,
        active: true,
        client_jwks: None,
    }
}

pub fn mandate(id: &str, resident: &str, created_at: i64, expires_at: i64) -> MandateRow {
    MandateRow {
        id: crate::support::mid(id),
        resident_id: crate::support::resident_id(resident),
        structure_id: crate::support::sid("s1"),
        aidant_id: crate::support::aid("ag1"),
        duration_days: 31,
        template_version: "v1".into(),
        renews: None,
        created_at,
        expires_at,
    }
}

/// KEK version 1 registered and a data key under it for each resident.
pub async fn data_keys(store: &DynStore, residents: &[&str]) {
    store.register_kek_version(1, T0).await.unwrap();
    for r in residents {
        let key = DataKeyRow {
            resident_id: crate::support::resident_id(r),
            kek_version: 1,
            wrapped: format!("wrapped-{r}").into_bytes(),
        };
        assert!(store.insert_data_key(&key, T0).await.unwrap());
    }
}

pub fn record(id: &str, category: &str, version: i64, created_at: i64) -> RecordRow {
    RecordRow {
        id: id.into(),
        category: category.into(),
        version,
        sealed: format!("sealed-{id}").into_bytes(),
        created_at,
        origin: Default::default(),
    }
}

pub fn notice(id: &str, partner_id: &str, kind: &str, created_at: i64) -> NotificationRow {
    NotificationRow {
        id: id.into(),
        partner_id: crate::support::pid(partner_id),
        pseudonym: crate::support::psd(&format!("ps-{id}")),
        kind: kind.parse().unwrap(),
        category: coffre::domain::category::Category::recorded("contact"),
        created_at,
        fetched_at: None,
    }
}

/// A consent decision as the consent service records it.
pub struct Decision<'a> {
    pub resident: &'a str,
    pub purpose: &'a str,
    pub state: &'a str,
    pub categories: &'a str,
    pub valid_until: Option<i64>,
    pub notice_version: &'a str,
    pub at: i64,
}

impl Decision<'_> {
    /// `state` of `resident` for `purpose`, covering `categories`, valid
    /// until `T0 + 1000`, under notice `v1`, decided at `T0`.
    pub fn new<'a>(resident: &'a str, purpose: &'a str, state: &'a str) -> Decision<'a> {
        Decision {
            resident,
            purpose,
            state,
            categories: "contact",
            valid_until: Some(T0 + 1000),
            notice_version: "v1",
            at: T0,
        }
    }

    pub fn rows(&self, audit_index: i64) -> (ConsentRow, ConsentEventRow) {
        let consent_id = crate::support::cid(&format!("c-{}-{}", self.resident, self.purpose));
        let current = ConsentRow {
            id: consent_id.clone(),
            resident_id: crate::support::resident_id(self.resident),
            purpose: crate::support::purpose_id(self.purpose),
            state: self.state.parse().unwrap(),
            categories: crate::support::categories(self.categories),
            valid_until: self.valid_until,
            notice_version: self.notice_version.into(),
            updated_at: self.at,
            seq: 0,
        };
        let event = ConsentEventRow {
            id: format!("{consent_id}-e{audit_index}"),
            consent_id,
            purpose: crate::support::purpose_id(self.purpose),
            state: self.state.parse().unwrap(),
            categories: crate::support::categories(self.categories),
            valid_until: self.valid_until,
            notice_version: self.notice_version.into(),
            actor_id: self.resident.into(),
            actor_role: coffre::domain::Role::Resident,
            structure_id: None,
            audit_index,
            receipt: "receipt".into(),
            created_at: self.at,
        };
        (current, event)
    }

    /// Records the decision on top of the consent's current sequence
    /// (`None`: the first decision).
    pub async fn record(
        &self,
        store: &DynStore,
        expected_seq: Option<i64>,
        audit_index: i64,
    ) -> StorageResult<()> {
        let (current, event) = self.rows(audit_index);
        store
            .record_consent_event(&current, expected_seq, &event)
            .await
    }
}
