//! The encrypted personal-data vault: envelope encryption per resident on
//! top of the store, rectification history, crypto-shredding erasure and
//! online KEK rotation.
//!
//! Plaintext exists only in memory, inside `Zeroizing` buffers, between
//! `open` and the response; it is never logged. Access decisions and audit
//! happen before these functions are called; the vault does not decide who
//! may read.

use crate::error::ErrorCode;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::metrics::{Metrics, VaultOp};
use crate::crypto::{
    CryptoError, DataKey, KeyError, KeySet, LiveKeys, SealContext, SealProvenance, UnlockIdentity,
    WrappedDataKey,
};
use crate::domain::Timestamp;
use crate::domain::category::{Categories, Category, RecordError};
use crate::storage::{DataKeyRow, DynStore, RecordOrigin, RecordRow, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("no active resident with this id")]
    NoSuchResident,
    #[error("another update of this category happened at the same time")]
    ConcurrentUpdate,
}

/// One version of one record, opened.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RecordView {
    pub category: String,
    pub version: i64,
    /// When this version was written (seconds since the Unix epoch).
    pub created_at: i64,
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    /// Where this version came from when a data source deposited it (GDPR
    /// art. 15(1)(g)); absent when the resident, or an aidant for them,
    /// wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<RecordSource>,
}

/// The provenance of a deposited version.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RecordSource {
    /// The source's id in the register of sources.
    pub id: String,
    /// When the source observed the data (seconds since the Unix epoch).
    pub observed_at: i64,
}

pub struct Vault {
    store: DynStore,
    keys: Arc<LiveKeys>,
    categories: Arc<Categories>,
    metrics: Arc<Metrics>,
}

impl Vault {
    pub fn new(
        store: DynStore,
        keys: Arc<LiveKeys>,
        categories: Arc<Categories>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            keys,
            categories,
            metrics,
        }
    }

    pub fn categories(&self) -> &Categories {
        &self.categories
    }

    pub fn keys(&self) -> &LiveKeys {
        &self.keys
    }

    /// Makes sure every KEK version this process holds is registered, so a
    /// data key can reference it.
    pub async fn register_kek_versions(&self, now: Timestamp) -> Result<(), VaultError> {
        for v in self.keys.current().kek_versions() {
            self.store.register_kek_version(i64::from(v), now).await?;
        }
        Ok(())
    }

    async fn data_key(
        &self,
        resident_id: &crate::domain::ResidentId,
        create: bool,
        now: Timestamp,
    ) -> Result<Option<DataKey>, VaultError> {
        if let Some(row) = self.store.find_data_key(resident_id).await? {
            return Ok(Some(self.unwrap(resident_id, &row)?));
        }
        if !create {
            return Ok(None);
        }
        let version = self
            .store
            .current_kek_version()
            .await?
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or_else(|| self.keys.current().current_kek_version());
        let dk = DataKey::generate()?;
        let wrapped = self.keys.with_version(version)?.wrap_data_key_at(
            resident_id.as_str(),
            &dk,
            version,
        )?;
        let row = DataKeyRow {
            resident_id: resident_id.clone(),
            kek_version: i64::from(wrapped.kek_version),
            wrapped: wrapped.bytes,
        };
        if self.store.insert_data_key(&row, now).await? {
            return Ok(Some(dk));
        }
        // Lost a race with a concurrent first write, or the resident is gone.
        match self.store.find_data_key(resident_id).await? {
            Some(row) => Ok(Some(self.unwrap(resident_id, &row)?)),
            None => Err(VaultError::NoSuchResident),
        }
    }

    fn unwrap(
        &self,
        resident_id: &crate::domain::ResidentId,
        row: &DataKeyRow,
    ) -> Result<DataKey, VaultError> {
        let kek_version = u32::try_from(row.kek_version).map_err(|_| CryptoError::Integrity)?;
        let wrapped = WrappedDataKey {
            kek_version,
            bytes: row.wrapped.clone(),
        };
        self.keys
            .unwrap_data_key(resident_id.as_str(), &wrapped)
            .map_err(|e| log_crypto(e, resident_id, "data key"))
    }

    /// Validates and stores a new version of one category's record.
    pub async fn write(
        &self,
        resident_id: &crate::domain::ResidentId,
        category: &Category,
        submitted: &Value,
        now: Timestamp,
    ) -> Result<RecordView, VaultError> {
        self.write_with_notices(resident_id, category, submitted, now, &[])
            .await
    }

    /// As [`Vault::write`], with the art. 19 notices of this rectification
    /// written in the same transaction as the new version.
    pub async fn write_with_notices(
        &self,
        resident_id: &crate::domain::ResidentId,
        category: &Category,
        submitted: &Value,
        now: Timestamp,
        notices: &[crate::storage::NotificationRow],
    ) -> Result<RecordView, VaultError> {
        let fields = self.categories.validate(category, submitted)?;
        if !self.store.resident_exists(resident_id).await? {
            return Err(VaultError::NoSuchResident);
        }
        let dk = self
            .data_key(resident_id, true, now)
            .await?
            .ok_or(VaultError::NoSuchResident)?;
        let version = self
            .store
            .latest_record_version(resident_id, category.as_str())
            .await?
            + 1;
        let record_id = uuid::Uuid::new_v4().to_string();
        let plaintext =
            Zeroizing::new(serde_json::to_vec(&fields).map_err(|_| CryptoError::Internal)?);
        let sealed = dk.sealer()?.seal(
            &SealContext {
                resident_id: resident_id.as_str(),
                category: category.as_str(),
                record_id: &record_id,
                version,
                provenance: None,
            },
            &plaintext,
        )?;
        self.metrics.vault(VaultOp::Seal, 1);
        let row = RecordRow {
            id: record_id,
            category: category.as_str().to_string(),
            version,
            sealed,
            created_at: now,
            origin: RecordOrigin::default(),
        };
        match self.store.insert_record(resident_id, &row, notices).await {
            Ok(()) => {}
            Err(StorageError::Conflict(_)) => return Err(VaultError::ConcurrentUpdate),
            Err(StorageError::NotFound) => return Err(VaultError::NoSuchResident),
            Err(e) => return Err(e.into()),
        }
        Ok(RecordView {
            category: row.category,
            version,
            created_at: now,
            fields,
            source: None,
        })
    }

    /// A new version of `category` for a deposit: the fields (already
    /// validated) sealed under the resident's data key for the version after
    /// the latest, with a fresh record id, and bound to `origin` (its
    /// deposit time is `now`, the version's creation). The caller stores it
    /// with that origin; if another version took the number meanwhile, it
    /// seals again. `known`: the resident's wrapped data key and latest
    /// version when the caller has just read them (a deposit's facts,
    /// `DepositStore::deposit_facts`); read here otherwise. A stale
    /// version only makes the store answer `VersionTaken` (seal again).
    pub async fn seal_after(
        &self,
        resident_id: &crate::domain::ResidentId,
        category: &Category,
        fields: &serde_json::Map<String, Value>,
        origin: RecordOrigin,
        known: Option<(&DataKeyRow, i64)>,
        now: Timestamp,
    ) -> Result<RecordRow, VaultError> {
        // A key read before may have been rewrapped since (a KEK
        // rotation): then it is read afresh, as when none was handed in.
        let known = known.and_then(|(row, latest)| {
            let wrapped = WrappedDataKey {
                kek_version: u32::try_from(row.kek_version).ok()?,
                bytes: row.wrapped.clone(),
            };
            let dk = self
                .keys
                .unwrap_data_key(resident_id.as_str(), &wrapped)
                .ok()?;
            Some((dk, latest))
        });
        let (dk, latest) = match known {
            Some(known) => known,
            None => (
                self.data_key(resident_id, true, now)
                    .await?
                    .ok_or(VaultError::NoSuchResident)?,
                self.store
                    .latest_record_version(resident_id, category.as_str())
                    .await?,
            ),
        };
        let version = latest + 1;
        let record_id = uuid::Uuid::new_v4().to_string();
        let plaintext =
            Zeroizing::new(serde_json::to_vec(fields).map_err(|_| CryptoError::Internal)?);
        let sealed = dk.sealer()?.seal(
            &SealContext {
                resident_id: resident_id.as_str(),
                category: category.as_str(),
                record_id: &record_id,
                version,
                provenance: seal_provenance(&origin, now),
            },
            &plaintext,
        )?;
        self.metrics.vault(VaultOp::Seal, 1);
        Ok(RecordRow {
            id: record_id,
            category: category.as_str().to_string(),
            version,
            sealed,
            created_at: now,
            origin,
        })
    }

    fn open_rows(
        &self,
        resident_id: &crate::domain::ResidentId,
        dk: &DataKey,
        rows: Vec<RecordRow>,
    ) -> Result<Vec<RecordView>, VaultError> {
        let sealer = dk.sealer()?;
        self.metrics.vault(VaultOp::Open, rows.len() as u64);
        rows.into_iter()
            .map(|row| {
                let plaintext = Zeroizing::new(
                    sealer
                        .open(
                            &SealContext {
                                resident_id: resident_id.as_str(),
                                category: &row.category,
                                record_id: &row.id,
                                version: row.version,
                                provenance: seal_provenance(&row.origin, row.created_at),
                            },
                            &row.sealed,
                        )
                        .map_err(|e| log_crypto(e, resident_id, &row.category))?,
                );
                let fields: Map<String, Value> = serde_json::from_slice(&plaintext)
                    .map_err(|_| log_crypto(CryptoError::Integrity, resident_id, &row.category))?;
                // The origin shown is the one the seal has just vouched for.
                let source = match (row.origin.source_id, row.origin.observed_at) {
                    (Some(id), Some(observed_at)) => Some(RecordSource { id, observed_at }),
                    _ => None,
                };
                Ok(RecordView {
                    category: row.category,
                    version: row.version,
                    created_at: row.created_at,
                    fields,
                    source,
                })
            })
            .collect()
    }

    /// The latest version of every category the resident has.
    pub async fn read_current(
        &self,
        resident_id: &crate::domain::ResidentId,
    ) -> Result<Vec<RecordView>, VaultError> {
        let Some(dk) = self.data_key(resident_id, false, 0).await? else {
            return Ok(Vec::new());
        };
        let rows = self.store.current_records(resident_id).await?;
        self.open_rows(resident_id, &dk, rows)
    }

    /// The current records of `categories` for a page of residents, read in
    /// one query and opened with each resident's own key (extracts). A
    /// resident without records in those categories is absent.
    pub async fn read_page(
        &self,
        residents: &[crate::domain::ResidentId],
        categories: &[String],
    ) -> Result<std::collections::HashMap<crate::domain::ResidentId, Vec<RecordView>>, VaultError>
    {
        let rows = self
            .store
            .current_records_of_page(residents, categories)
            .await?;
        let mut out: std::collections::HashMap<crate::domain::ResidentId, Vec<RecordView>> =
            std::collections::HashMap::with_capacity(residents.len());
        let mut rows = rows.into_iter().peekable();
        while let Some(first) = rows.next() {
            let resident = first.resident_id.clone();
            let dk = self.unwrap_page_key(&first)?;
            let mut own = vec![record_row(first)];
            while let Some(next) = rows.next_if(|r| r.resident_id == resident) {
                own.push(record_row(next));
            }
            let opened = self.open_rows(&resident, &dk, own)?;
            out.insert(resident, opened);
        }
        Ok(out)
    }

    /// The data key read beside a record (one row carries both).
    fn unwrap_page_key(&self, row: &crate::storage::PageRecordRow) -> Result<DataKey, VaultError> {
        self.unwrap(
            &row.resident_id,
            &DataKeyRow {
                resident_id: row.resident_id.clone(),
                kek_version: row.kek_version,
                wrapped: row.wrapped.clone(),
            },
        )
    }

    /// Opens one sealed record read with its wrapped data key (a partner's
    /// read, [`crate::storage::Store::partner_read`]).
    pub fn open_record(
        &self,
        row: crate::storage::PageRecordRow,
    ) -> Result<RecordView, VaultError> {
        let resident = row.resident_id.clone();
        let dk = self.unwrap_page_key(&row)?;
        self.open_rows(&resident, &dk, vec![record_row(row)])?
            .pop()
            .ok_or_else(|| VaultError::from(CryptoError::Integrity))
    }

    /// The latest version of one category, if the resident has it.
    pub async fn read_current_category(
        &self,
        resident_id: &crate::domain::ResidentId,
        category: &Category,
    ) -> Result<Option<RecordView>, VaultError> {
        // The record with its wrapped data key, in one query.
        let mut page = self
            .read_page(
                std::slice::from_ref(resident_id),
                &[category.as_str().to_string()],
            )
            .await?;
        Ok(page
            .remove(resident_id)
            .and_then(|records| records.into_iter().next()))
    }

    /// Every version of one category, newest first (empty when none).
    pub async fn read_history(
        &self,
        resident_id: &crate::domain::ResidentId,
        category: &Category,
    ) -> Result<Vec<RecordView>, VaultError> {
        let Some(dk) = self.data_key(resident_id, false, 0).await? else {
            return Ok(Vec::new());
        };
        let rows = self
            .store
            .record_history(resident_id, category.as_str())
            .await?;
        self.open_rows(resident_id, &dk, rows)
    }

    /// Crypto-shredding erasure: the data key and every record go in one
    /// transaction. `false` if there was no active resident.
    /// `notices`: the art. 19 notices to the recipients, in the same
    /// transaction.
    pub async fn erase(
        &self,
        resident_id: &crate::domain::ResidentId,
        now: Timestamp,
        notices: &[crate::storage::NotificationRow],
    ) -> Result<bool, VaultError> {
        let erased = self.store.erase_resident(resident_id, now, notices).await?;
        if erased {
            self.metrics.vault(VaultOp::Erase, 1);
        }
        Ok(erased)
    }
}

/// Integrity failures are logged with identifiers only, then reported with
/// the stable code `integrity_error`.
fn log_crypto(e: CryptoError, resident_id: &crate::domain::ResidentId, what: &str) -> VaultError {
    tracing::error!(code = "integrity_error", resident = resident_id.as_str(), what, error = %e, "vault integrity failure");
    VaultError::Crypto(e)
}

/// What a rotation did.
#[derive(Debug, Default)]
pub struct RotationReport {
    pub target_version: u32,
    pub added_version: bool,
    pub rewrapped: u64,
    pub retired: Vec<u32>,
}

/// `coffre keys rotate`: adds a KEK version (unless an earlier rotation is
/// unfinished, which is then resumed), re-wraps every data key under it in
/// batches, then retires versions nothing uses any more. Data is never
/// re-encrypted. Safe to interrupt and run again; safe while servers run
/// (they follow through [`LiveKeys`] and the `kek_versions` table).
pub async fn rotate(
    store: &DynStore,
    set: &mut KeySet,
    dir: &Path,
    unlock: &UnlockIdentity,
    batch: i64,
    now: Timestamp,
    mut progress: impl FnMut(u64, u64),
) -> Result<RotationReport, VaultError> {
    let mut report = RotationReport::default();
    for v in set.kek_versions() {
        store.register_kek_version(i64::from(v), now).await?;
    }
    let unfinished = set.kek_versions().len() > 1;
    if !unfinished {
        let v = set.add_kek_version(dir, unlock)?;
        store.register_kek_version(i64::from(v), now).await?;
        report.added_version = true;
    }
    let target = set.current_kek_version();
    report.target_version = target;
    let target_i = i64::from(target);

    // Servers may still wrap a few new keys under an old version until they
    // notice the new one; the retire step below refuses while any remain, so
    // loop until it succeeds.
    for _round in 0..10 {
        let total = u64::try_from(store.count_data_keys_not_at(target_i).await?).unwrap_or(0);
        let mut done = 0u64;
        progress(done, total);
        loop {
            let rows = store.data_keys_not_at(target_i, batch).await?;
            if rows.is_empty() {
                break;
            }
            let mut rewrapped = Vec::with_capacity(rows.len());
            for row in rows {
                let old = u32::try_from(row.kek_version).map_err(|_| CryptoError::Integrity)?;
                let dk = set.unwrap_data_key(
                    row.resident_id.as_str(),
                    &WrappedDataKey {
                        kek_version: old,
                        bytes: row.wrapped,
                    },
                )?;
                let fresh = set.wrap_data_key_at(row.resident_id.as_str(), &dk, target)?;
                rewrapped.push((
                    DataKeyRow {
                        resident_id: row.resident_id,
                        kek_version: target_i,
                        wrapped: fresh.bytes,
                    },
                    row.kek_version,
                ));
            }
            done += store.rewrap_data_keys(&rewrapped, now).await?;
            report.rewrapped += rewrapped.len() as u64;
            progress(done, total.max(done));
        }
        // Agents' TOTP keys are wrapped like residents' data keys.
        for row in store.totp_not_at(target_i).await? {
            let old = u32::try_from(row.kek_version).map_err(|_| CryptoError::Integrity)?;
            let subject = format!("agent:{}", row.agent_id);
            let dk = set.unwrap_data_key(
                &subject,
                &WrappedDataKey {
                    kek_version: old,
                    bytes: row.wrapped_key,
                },
            )?;
            let fresh = set.wrap_data_key_at(&subject, &dk, target)?;
            if store
                .rewrap_totp(&row.agent_id, row.kek_version, target_i, &fresh.bytes)
                .await?
            {
                report.rewrapped += 1;
            }
        }
        let mut all_retired = true;
        for v in set.kek_versions() {
            if v == target {
                continue;
            }
            if store.unregister_kek_version(i64::from(v)).await? {
                set.retire_kek_version(dir, v)?;
                report.retired.push(v);
            } else {
                all_retired = false;
            }
        }
        if all_retired {
            return Ok(report);
        }
    }
    Err(VaultError::Storage(StorageError::Other(
        "data keys keep appearing under an old KEK version; are servers running with an old keys folder?".into(),
    )))
}

fn record_row(r: crate::storage::PageRecordRow) -> RecordRow {
    RecordRow {
        id: r.id,
        category: r.category,
        version: r.version,
        sealed: r.sealed,
        created_at: r.created_at,
        origin: r.origin,
    }
}

/// The provenance a version's seal was made with: a deposit's when its row
/// names a source, the deposit time being the version's creation. A row
/// naming a source with a part missing (only an edit of the database makes
/// one) gets a provenance that opens nothing.
fn seal_provenance(origin: &RecordOrigin, deposited_at: Timestamp) -> Option<SealProvenance<'_>> {
    let source_id = origin.source_id.as_deref()?;
    Some(SealProvenance {
        source_id,
        source_record_id: origin.source_record_id.as_deref().unwrap_or_default(),
        basis: origin.source_basis.as_deref().unwrap_or_default(),
        observed_at: origin.observed_at.unwrap_or(Timestamp::MIN),
        deposited_at,
    })
}

/// How a vault failure reaches the person: a missing key is 503
/// `keys_unavailable`, a failed integrity check 500, a bad record 422.
impl From<VaultError> for crate::error::AppError {
    fn from(e: crate::service::vault::VaultError) -> Self {
        use crate::crypto::CryptoError;
        use crate::error::AppError;
        use VaultError as V;
        match e {
            V::Storage(s) => AppError::Storage(s),
            V::Crypto(CryptoError::Integrity) => AppError::Integrity,
            V::Crypto(CryptoError::UnknownKekVersion { .. }) | V::Keys(_) => {
                ErrorCode::KeysUnavailable.into()
            }
            V::Crypto(other) => AppError::internal(other.to_string()),
            V::Record(r) => r.into(),
            V::NoSuchResident => AppError::NotFound,
            V::ConcurrentUpdate => ErrorCode::ConcurrentUpdate.into(),
        }
    }
}
