//! Data sources: their client credentials, the residents' links to them,
//! and the one-time codes (pairing and authorisation) that make a link.
//! The register of what each source may deposit is policy
//! (`domain::source`), not data.
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::StorageResult;
use crate::domain::Timestamp;

/// A source's credentials (apart from the partners' by design).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SourceClientRow {
    pub id: String,
    pub name: String,
    pub client_id: String,
    pub client_secret_hash: String,
    pub active: bool,
}

/// A resident's link to a source.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SourceLinkRow {
    pub source_id: String,
    pub resident_id: String,
    pub handle: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub last_deposit_at: Option<Timestamp>,
}

/// Which way a one-time link code was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkCodeKind {
    /// Read aloud at a counter or by phone.
    Pairing,
    /// Sent to the source's registered redirect URI.
    Authorisation,
}

impl LinkCodeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LinkCodeKind::Pairing => "pairing",
            LinkCodeKind::Authorisation => "authorisation",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "pairing" => Some(LinkCodeKind::Pairing),
            "authorisation" => Some(LinkCodeKind::Authorisation),
            _ => None,
        }
    }
}

/// A one-time code, as taken (consumed) by a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakenLinkCode {
    pub resident_id: String,
    pub kind: LinkCodeKind,
    pub redirect_uri: Option<String>,
    pub expires_at: Timestamp,
}

#[async_trait]
pub trait SourceStore: Send + Sync {
    /// Registers a source's credentials; `Conflict` if the id or client id
    /// is taken.
    async fn insert_source_client(&self, s: &SourceClientRow, now: Timestamp) -> StorageResult<()>;
    async fn find_source_client_by_client_id(
        &self,
        client_id: &str,
    ) -> StorageResult<Option<SourceClientRow>>;
    async fn find_source_client(&self, id: &str) -> StorageResult<Option<SourceClientRow>>;
    /// `false` if there is no such source.
    async fn set_source_client_active(&self, id: &str, active: bool) -> StorageResult<bool>;
    /// Stores a one-time code (its digest) for an active resident; `false`
    /// if the resident is not active (erased or unknown).
    #[allow(clippy::too_many_arguments)]
    async fn insert_link_code(
        &self,
        code_digest: &str,
        source_id: &str,
        resident_id: &str,
        kind: LinkCodeKind,
        redirect_uri: Option<&str>,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> StorageResult<bool>;
    /// Consumes a code of this source, whatever its expiry (an expired code
    /// is gone once tried): one statement, so two exchanges of one code
    /// cannot both get it. `None` if there is no such code for this source.
    async fn take_link_code(
        &self,
        code_digest: &str,
        source_id: &str,
    ) -> StorageResult<Option<TakenLinkCode>>;
    /// Makes or renews the link of an active resident to a source with its
    /// handle (a revoked link stands again, with the same handle). `false`
    /// if the resident is not active.
    async fn link_source(
        &self,
        source_id: &str,
        resident_id: &str,
        handle: &str,
        now: Timestamp,
    ) -> StorageResult<bool>;
    /// Revokes a standing link; `false` if there was none.
    async fn revoke_source_link(
        &self,
        source_id: &str,
        resident_id: &str,
        now: Timestamp,
    ) -> StorageResult<bool>;
    /// Every link of a resident, standing or revoked, by source id.
    async fn source_links_of(&self, resident_id: &str) -> StorageResult<Vec<SourceLinkRow>>;
    /// The link a handle names for a source, if any.
    async fn source_link_by_handle(
        &self,
        source_id: &str,
        handle: &str,
    ) -> StorageResult<Option<SourceLinkRow>>;
    /// Deletes expired codes; returns how many.
    async fn purge_link_codes(&self, now: Timestamp) -> StorageResult<u64>;
}

pub(crate) const LINK_COLUMNS: &str =
    "source_id, resident_id, handle, created_at, revoked_at, last_deposit_at";

/// `impl SourceStore` for a backend (see `storage::impl_store!`).
macro_rules! impl_source_store {
    ($store:ty) => {
    #[async_trait::async_trait]
    impl $crate::storage::SourceStore for $store {
        async fn insert_source_client(
            &self,
            s: &$crate::storage::SourceClientRow,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO source_clients (id, name, client_id, client_secret_hash, active, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&s.id)
            .bind(&s.name)
            .bind(&s.client_id)
            .bind(&s.client_secret_hash)
            .bind(s.active)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn find_source_client_by_client_id(
            &self,
            client_id: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::SourceClientRow>> {
            Ok(sqlx::query_as(
                "SELECT id, name, client_id, client_secret_hash, active FROM source_clients WHERE client_id = $1",
            )
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn find_source_client(
            &self,
            id: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::SourceClientRow>> {
            Ok(sqlx::query_as(
                "SELECT id, name, client_id, client_secret_hash, active FROM source_clients WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn set_source_client_active(
            &self,
            id: &str,
            active: bool,
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query("UPDATE source_clients SET active = $2 WHERE id = $1")
                .bind(id)
                .bind(active)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn insert_link_code(
            &self,
            code_digest: &str,
            source_id: &str,
            resident_id: &str,
            kind: $crate::storage::LinkCodeKind,
            redirect_uri: Option<&str>,
            now: $crate::domain::Timestamp,
            expires_at: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            // The resident's state is checked in the same statement: no code
            // outlives an erasure that committed before it.
            let done = sqlx::query(
                "INSERT INTO source_link_codes (code_digest, source_id, resident_id, kind, redirect_uri, created_at, expires_at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS \
                   (SELECT 1 FROM residents WHERE id = $3 AND status = 'active')",
            )
            .bind(code_digest)
            .bind(source_id)
            .bind(resident_id)
            .bind(kind.as_str())
            .bind(redirect_uri)
            .bind(now)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn take_link_code(
            &self,
            code_digest: &str,
            source_id: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::TakenLinkCode>> {
            let row: Option<(String, String, Option<String>, i64)> = sqlx::query_as(
                "DELETE FROM source_link_codes WHERE code_digest = $1 AND source_id = $2 \
                 RETURNING resident_id, kind, redirect_uri, expires_at",
            )
            .bind(code_digest)
            .bind(source_id)
            .fetch_optional(&self.pool)
            .await?;
            row.map(|(resident_id, kind, redirect_uri, expires_at)| {
                let kind = $crate::storage::sources::link_code_kind(&kind)?;
                Ok($crate::storage::TakenLinkCode {
                    resident_id,
                    kind,
                    redirect_uri,
                    expires_at,
                })
            })
            .transpose()
        }

        async fn link_source(
            &self,
            source_id: &str,
            resident_id: &str,
            handle: &str,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query(
                "INSERT INTO source_links (source_id, resident_id, handle, created_at) \
                 SELECT $1, $2, $3, $4 WHERE EXISTS \
                   (SELECT 1 FROM residents WHERE id = $2 AND status = 'active') \
                 ON CONFLICT (source_id, resident_id) DO UPDATE SET revoked_at = NULL",
            )
            .bind(source_id)
            .bind(resident_id)
            .bind(handle)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn revoke_source_link(
            &self,
            source_id: &str,
            resident_id: &str,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query(
                "UPDATE source_links SET revoked_at = $3 \
                 WHERE source_id = $1 AND resident_id = $2 AND revoked_at IS NULL",
            )
            .bind(source_id)
            .bind(resident_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn source_links_of(
            &self,
            resident_id: &str,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::SourceLinkRow>> {
            Ok(sqlx::query_as(&format!(
                "SELECT {} FROM source_links WHERE resident_id = $1 ORDER BY source_id",
                $crate::storage::sources::LINK_COLUMNS
            ))
            .bind(resident_id)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn source_link_by_handle(
            &self,
            source_id: &str,
            handle: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::SourceLinkRow>> {
            Ok(sqlx::query_as(&format!(
                "SELECT {} FROM source_links WHERE source_id = $1 AND handle = $2",
                $crate::storage::sources::LINK_COLUMNS
            ))
            .bind(source_id)
            .bind(handle)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn purge_link_codes(
            &self,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<u64> {
            let done = sqlx::query("DELETE FROM source_link_codes WHERE expires_at <= $1")
                .bind(now)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected())
        }
    }
    };
}
pub(crate) use impl_source_store;

/// A stored code kind, or an integrity error (only this module writes it).
pub(crate) fn link_code_kind(s: &str) -> StorageResult<LinkCodeKind> {
    LinkCodeKind::parse(s)
        .ok_or_else(|| super::StorageError::Integrity(format!("unknown link code kind `{s}`")))
}
