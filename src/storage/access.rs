//! What one access decision reads: a partner's read of one category of one
//! resident gathers the partner's activity, the resident's status,
//! consent, restriction and objection, and the current sealed record in
//! one statement, across the aggregates, because it is the busiest route.
//!
//! Storage stores and fetches; it never decides who may do what: the facts
//! go to `access::decide`.

use async_trait::async_trait;

use super::{ConsentForDecision, PageRecordRow, StorageResult};

/// See [`AccessStore::partner_read_facts`]. All false / none for an unknown
/// resident.
#[derive(Clone, Debug)]
pub struct PartnerReadFacts {
    /// The (resident, purpose) these facts were read for: a decision uses
    /// facts handed to it only for the same pair.
    pub resident_id: crate::domain::ResidentId,
    /// The purpose of the register asked for; `None` when the purpose asked
    /// is not in the register (no consent or objection can match it).
    pub purpose: Option<crate::domain::PurposeId>,
    pub resident_active: bool,
    pub consent: Option<ConsentForDecision>,
    pub restricted: bool,
    pub objected: bool,
}

impl PartnerReadFacts {
    /// The facts of a resident who does not exist: nothing is allowed.
    pub fn unknown_resident(
        resident_id: &crate::domain::ResidentId,
        purpose: Option<&crate::domain::PurposeId>,
    ) -> Self {
        Self {
            resident_id: resident_id.clone(),
            purpose: purpose.cloned(),
            resident_active: false,
            consent: None,
            restricted: false,
            objected: false,
        }
    }
}

/// Everything a partner's read of one category needs from the database,
/// read in one statement ([`AccessStore::partner_read`]): the busiest route
/// pays one round trip to the database instead of three.
#[derive(Clone, Debug)]
pub struct PartnerRead {
    /// The partner exists and is active (checked on every request).
    pub partner_active: bool,
    pub facts: PartnerReadFacts,
    /// The current version of the category, still sealed, with the
    /// resident's wrapped data key. It is opened only after the decision
    /// allowed the read and was recorded.
    pub record: Option<PageRecordRow>,
}

/// The columns of [`PartnerReadFacts`] as both
/// [`AccessStore::partner_read_facts`] and [`AccessStore::partner_read`]
/// select them (same aliases). All null when the resident does not exist.
#[derive(sqlx::FromRow)]
pub(crate) struct FactColumns {
    pub(crate) status: Option<String>,
    pub(crate) restricted_at: Option<i64>,
    pub(crate) objections: Option<i64>,
    pub(crate) consent_id: Option<crate::domain::ConsentId>,
    pub(crate) consent_state: Option<crate::domain::consent::ConsentState>,
    pub(crate) consent_categories: Option<super::columns::CategoryList>,
    pub(crate) consent_valid_until: Option<i64>,
    pub(crate) consent_notice_version: Option<String>,
}

impl FactColumns {
    pub(crate) fn into_facts(
        self,
        resident_id: &crate::domain::ResidentId,
        purpose: Option<&crate::domain::PurposeId>,
    ) -> PartnerReadFacts {
        let Some(status) = self.status else {
            return PartnerReadFacts::unknown_resident(resident_id, purpose);
        };
        let consent = match (
            self.consent_id,
            self.consent_state,
            self.consent_categories,
            self.consent_notice_version,
        ) {
            (Some(id), Some(state), Some(categories), Some(notice_version)) => {
                Some(ConsentForDecision {
                    id,
                    state,
                    categories: categories.into(),
                    valid_until: self.consent_valid_until,
                    notice_version,
                })
            }
            _ => None,
        };
        PartnerReadFacts {
            resident_id: resident_id.clone(),
            purpose: purpose.cloned(),
            resident_active: status == "active",
            consent,
            restricted: self.restricted_at.is_some(),
            objected: self.objections.unwrap_or(0) > 0,
        }
    }
}

/// The row of [`AccessStore::partner_read`]'s statement.
#[derive(sqlx::FromRow)]
pub(crate) struct PartnerReadRow {
    pub(crate) partner_active: bool,
    #[sqlx(flatten)]
    pub(crate) facts: FactColumns,
    pub(crate) kek_version: Option<i64>,
    pub(crate) wrapped: Option<Vec<u8>>,
    pub(crate) record_id: Option<String>,
    pub(crate) record_category: Option<String>,
    pub(crate) record_version: Option<i64>,
    pub(crate) sealed: Option<Vec<u8>>,
    pub(crate) record_created_at: Option<i64>,
    #[sqlx(flatten)]
    pub(crate) record_origin: super::RecordOrigin,
}

impl PartnerReadRow {
    pub(crate) fn into_read(
        self,
        resident_id: &crate::domain::ResidentId,
        purpose: Option<&crate::domain::PurposeId>,
    ) -> PartnerRead {
        let record = match (
            self.kek_version,
            self.wrapped,
            self.record_id,
            self.record_category,
            self.record_version,
            self.sealed,
            self.record_created_at,
        ) {
            (
                Some(kek_version),
                Some(wrapped),
                Some(id),
                Some(category),
                Some(version),
                Some(sealed),
                Some(created_at),
            ) => Some(PageRecordRow {
                resident_id: resident_id.clone(),
                kek_version,
                wrapped,
                id,
                category,
                version,
                sealed,
                created_at,
                origin: self.record_origin,
            }),
            _ => None,
        };
        PartnerRead {
            partner_active: self.partner_active,
            facts: self.facts.into_facts(resident_id, purpose),
            record,
        }
    }
}

/// What one access decision reads, across aggregates, in one statement.
#[async_trait]
pub trait AccessStore: Send + Sync {
    /// Everything a partner's read for `purpose` must know of a resident, in
    /// one query (it runs on every partner read): whether the resident is
    /// active, the consent for the purpose, restriction and objection.
    /// `purpose` is `None` when the one asked is not in the register.
    async fn partner_read_facts(
        &self,
        resident_id: &crate::domain::ResidentId,
        purpose: Option<&crate::domain::PurposeId>,
    ) -> StorageResult<PartnerReadFacts>;
    /// A partner's read of one category of one resident, in one statement:
    /// whether the partner is active, [`AccessStore::partner_read_facts`],
    /// and the current sealed record with its wrapped key. Absent partner:
    /// all false.
    async fn partner_read(
        &self,
        partner_id: &crate::domain::PartnerId,
        resident_id: &crate::domain::ResidentId,
        purpose: Option<&crate::domain::PurposeId>,
        category: &str,
    ) -> StorageResult<PartnerRead>;
}

/// `impl AccessStore` for a backend (see `storage::impl_store!`).
macro_rules! impl_access_store {
    ($store:ty) => {
    #[async_trait::async_trait]
    impl $crate::storage::AccessStore for $store {
        async fn partner_read_facts(
            &self,
            resident_id: &$crate::domain::ResidentId,
            purpose: Option<&$crate::domain::PurposeId>,
        ) -> $crate::storage::StorageResult<$crate::storage::PartnerReadFacts> {
            let row: Option<$crate::storage::access::FactColumns> = sqlx::query_as(
                "SELECT r.status, r.restricted_at, \
                   (SELECT COUNT(*) FROM objections o WHERE o.resident_id = r.id AND o.purpose = $2) AS objections, \
                   c.id AS consent_id, c.state AS consent_state, c.categories AS consent_categories, \
                   c.valid_until AS consent_valid_until, c.notice_version AS consent_notice_version \
                 FROM residents r LEFT JOIN consents c ON c.resident_id = r.id AND c.purpose = $2 \
                 WHERE r.id = $1",
            )
            .bind(resident_id)
            .bind(purpose)
            .fetch_optional(&self.pool)
            .await?;
            Ok(match row {
                Some(row) => row.into_facts(resident_id, purpose),
                None => $crate::storage::PartnerReadFacts::unknown_resident(resident_id, purpose),
            })
        }

        async fn partner_read(
            &self,
            partner_id: &$crate::domain::PartnerId,
            resident_id: &$crate::domain::ResidentId,
            purpose: Option<&$crate::domain::PurposeId>,
            category: &str,
        ) -> $crate::storage::StorageResult<$crate::storage::PartnerRead> {
            // Every join is on a primary key or an index: the partner, the
            // resident, the (resident, purpose) consent, the data key, and
            // the latest version of (resident, category).
            let row: Option<$crate::storage::access::PartnerReadRow> = sqlx::query_as(
                "SELECT p.active AS partner_active, r.status, r.restricted_at, \
                   (SELECT COUNT(*) FROM objections o WHERE o.resident_id = r.id AND o.purpose = $3) AS objections, \
                   c.id AS consent_id, c.state AS consent_state, c.categories AS consent_categories, \
                   c.valid_until AS consent_valid_until, c.notice_version AS consent_notice_version, \
                   k.kek_version, k.wrapped, pr.id AS record_id, pr.category AS record_category, \
                   pr.version AS record_version, pr.sealed, pr.created_at AS record_created_at, \
                   pr.source_id, pr.source_record_id, pr.source_basis, pr.observed_at \
                 FROM partners p \
                 LEFT JOIN residents r ON r.id = $2 \
                 LEFT JOIN consents c ON c.resident_id = r.id AND c.purpose = $3 \
                 LEFT JOIN data_keys k ON k.resident_id = r.id \
                 LEFT JOIN personal_records pr ON pr.resident_id = r.id AND pr.category = $4 \
                   AND pr.version = (SELECT MAX(l.version) FROM personal_records l \
                                     WHERE l.resident_id = r.id AND l.category = $4) \
                 WHERE p.id = $1",
            )
            .bind(partner_id)
            .bind(resident_id)
            .bind(purpose)
            .bind(category)
            .fetch_optional(&self.pool)
            .await?;
            Ok(match row {
                Some(row) => row.into_read(resident_id, purpose),
                // No such partner: it reads nothing.
                None => $crate::storage::PartnerRead {
                    partner_active: false,
                    facts: $crate::storage::PartnerReadFacts::unknown_resident(resident_id, purpose),
                    record: None,
                },
            })
        }
    }
    };
}
pub(crate) use impl_access_store;
