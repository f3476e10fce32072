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
    pub resident_id: crate::domain::ResidentId,
    pub handle: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
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

/// A one-time code as stored, read by the exchange before it consumes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakenLinkCode {
    pub resident_id: crate::domain::ResidentId,
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
    /// Stores a one-time code (its digest) for an active resident, replacing
    /// the resident's waiting code of the same kind for this source (one at a
    /// time); `false` if the resident is not active (erased or unknown).
    #[allow(clippy::too_many_arguments)]
    async fn insert_link_code(
        &self,
        code_digest: &str,
        source_id: &str,
        resident_id: &crate::domain::ResidentId,
        kind: LinkCodeKind,
        redirect_uri: Option<&str>,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> StorageResult<bool>;
    /// A code of this source, without consuming it (the exchange decides
    /// and records before it consumes).
    async fn peek_link_code(
        &self,
        code_digest: &str,
        source_id: &str,
    ) -> StorageResult<Option<TakenLinkCode>>;
    /// The exchange, in one transaction: consumes the code (still unexpired
    /// at `now`, still the resident's) and makes or renews the link of the
    /// still active resident. `false` if the code is gone or expired, or the
    /// resident erased: nothing changed then but the code's consumption.
    async fn exchange_link_code(
        &self,
        code_digest: &str,
        source_id: &str,
        resident_id: &crate::domain::ResidentId,
        handle: &str,
        now: Timestamp,
    ) -> StorageResult<bool>;
    /// Makes or renews the link of an active resident to a source with its
    /// handle (a revoked link stands again, with the same handle). `false`
    /// if the resident is not active.
    async fn link_source(
        &self,
        source_id: &str,
        resident_id: &crate::domain::ResidentId,
        handle: &str,
        now: Timestamp,
    ) -> StorageResult<bool>;
    /// Revokes a standing link and deletes the codes still waiting to be
    /// exchanged, in one transaction (a code handed out before cannot bring
    /// the link back); `false` if there was neither.
    async fn revoke_source_link(
        &self,
        source_id: &str,
        resident_id: &crate::domain::ResidentId,
        now: Timestamp,
    ) -> StorageResult<bool>;
    /// Every link of a resident, standing or revoked, by source id.
    async fn source_links_of(
        &self,
        resident_id: &crate::domain::ResidentId,
    ) -> StorageResult<Vec<SourceLinkRow>>;
    /// The link a handle names for a source, if any.
    async fn source_link_by_handle(
        &self,
        source_id: &str,
        handle: &str,
    ) -> StorageResult<Option<SourceLinkRow>>;
    /// Whether codes of this source wait to be exchanged for the resident.
    async fn has_link_codes(
        &self,
        source_id: &str,
        resident_id: &crate::domain::ResidentId,
    ) -> StorageResult<bool>;
    /// Deletes expired codes; returns how many.
    async fn purge_link_codes(&self, now: Timestamp) -> StorageResult<u64>;
}

pub(crate) const LINK_COLUMNS: &str = "source_id, resident_id, handle, created_at, revoked_at";

/// Makes or renews an active resident's link (a revoked one stands again,
/// with the same handle); the resident row share-locked on PostgreSQL, so
/// no link outlives a concurrent erasure. Binds: source, resident, handle,
/// now.
macro_rules! link_upsert_sql {
    ($for_share:literal) => {
        concat!(
            "INSERT INTO source_links (source_id, resident_id, handle, created_at) \
             SELECT $1, $2, $3, $4 WHERE EXISTS \
               (SELECT 1 FROM residents WHERE id = $2 AND status = 'active'",
            $for_share,
            ") ON CONFLICT (source_id, resident_id) DO UPDATE SET revoked_at = NULL, created_at = excluded.created_at",
        )
    };
}
pub(crate) use link_upsert_sql;

/// `impl SourceStore` for a backend (see `storage::impl_store!`).
macro_rules! impl_source_store {
    ($store:ty, $for_share:literal) => {
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
            resident_id: &$crate::domain::ResidentId,
            kind: $crate::storage::LinkCodeKind,
            redirect_uri: Option<&str>,
            now: $crate::domain::Timestamp,
            expires_at: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            // The resident row is share-locked (PostgreSQL) or checked in the
            // same statement (SQLite), so a concurrent erasure either waits for
            // this insert or makes it insert nothing: no code outlives it.
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "DELETE FROM source_link_codes WHERE source_id = $1 AND resident_id = $2 AND kind = $3",
            )
            .bind(source_id)
            .bind(resident_id)
            .bind(kind.as_str())
            .execute(&mut *tx)
            .await?;
            let done = sqlx::query(concat!(
                "INSERT INTO source_link_codes (code_digest, source_id, resident_id, kind, redirect_uri, created_at, expires_at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS \
                   (SELECT 1 FROM residents WHERE id = $3 AND status = 'active'", $for_share, ")",
            ))
            .bind(code_digest)
            .bind(source_id)
            .bind(resident_id)
            .bind(kind.as_str())
            .bind(redirect_uri)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(done.rows_affected() == 1)
        }

        async fn peek_link_code(
            &self,
            code_digest: &str,
            source_id: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::TakenLinkCode>> {
            let row: Option<($crate::domain::ResidentId, String, Option<String>, i64)> = sqlx::query_as(
                "SELECT resident_id, kind, redirect_uri, expires_at FROM source_link_codes \
                 WHERE code_digest = $1 AND source_id = $2",
            )
            .bind(code_digest)
            .bind(source_id)
            .fetch_optional(&self.pool)
            .await?;
            row.map($crate::storage::sources::taken_link_code).transpose()
        }

        async fn exchange_link_code(
            &self,
            code_digest: &str,
            source_id: &str,
            resident_id: &$crate::domain::ResidentId,
            handle: &str,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            let mut tx = self.pool.begin().await?;
            // The first statement writes: the code is this exchange's alone.
            let taken = sqlx::query(
                "DELETE FROM source_link_codes \
                 WHERE code_digest = $1 AND source_id = $2 AND resident_id = $3 AND expires_at > $4",
            )
            .bind(code_digest)
            .bind(source_id)
            .bind(resident_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if taken.rows_affected() != 1 {
                tx.commit().await?;
                return Ok(false);
            }
            let linked = sqlx::query($crate::storage::sources::link_upsert_sql!($for_share))
            .bind(source_id)
            .bind(resident_id)
            .bind(handle)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(linked.rows_affected() == 1)
        }

        async fn link_source(
            &self,
            source_id: &str,
            resident_id: &$crate::domain::ResidentId,
            handle: &str,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query($crate::storage::sources::link_upsert_sql!($for_share))
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
            resident_id: &$crate::domain::ResidentId,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            let mut tx = self.pool.begin().await?;
            // Codes first: on PostgreSQL this waits for an exchange in
            // progress to commit, so the update below sees its link.
            let codes = sqlx::query(
                "DELETE FROM source_link_codes WHERE source_id = $1 AND resident_id = $2",
            )
            .bind(source_id)
            .bind(resident_id)
            .execute(&mut *tx)
            .await?;
            let link = sqlx::query(
                "UPDATE source_links SET revoked_at = $3 \
                 WHERE source_id = $1 AND resident_id = $2 AND revoked_at IS NULL",
            )
            .bind(source_id)
            .bind(resident_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(codes.rows_affected() + link.rows_affected() > 0)
        }

        async fn source_links_of(
            &self,
            resident_id: &$crate::domain::ResidentId,
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

        async fn has_link_codes(
            &self,
            source_id: &str,
            resident_id: &$crate::domain::ResidentId,
        ) -> $crate::storage::StorageResult<bool> {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM source_link_codes WHERE source_id = $1 AND resident_id = $2",
            )
            .bind(source_id)
            .bind(resident_id)
            .fetch_one(&self.pool)
            .await?;
            Ok(n > 0)
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

/// A code's row as read back (resident, kind, redirect URI, expiry).
pub(crate) fn taken_link_code(
    (resident_id, kind, redirect_uri, expires_at): (
        crate::domain::ResidentId,
        String,
        Option<String>,
        i64,
    ),
) -> StorageResult<TakenLinkCode> {
    Ok(TakenLinkCode {
        resident_id,
        kind: link_code_kind(&kind)?,
        redirect_uri,
        expires_at,
    })
}

/// A stored code kind, or an integrity error (only this module writes it).
pub(crate) fn link_code_kind(s: &str) -> StorageResult<LinkCodeKind> {
    LinkCodeKind::parse(s)
        .ok_or_else(|| super::StorageError::Integrity(format!("unknown link code kind `{s}`")))
}
