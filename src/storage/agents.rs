//! Agents and the structures they act for: structures and their
//! démarches, agents, memberships (an agent may belong to several
//! structures, one of them current), and agents' TOTP devices with their
//! one-use-per-step and lockout counters.
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::StorageResult;
use super::columns::DemarcheList;
use crate::domain::{AgentId, Demarche, Role, StructureId, Timestamp};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StructureRow {
    pub id: StructureId,
    pub siret: String,
    pub name: String,
    #[sqlx(try_from = "DemarcheList")]
    pub allowed_demarches: Vec<Demarche>,
    pub active: bool,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AgentRow {
    pub id: AgentId,
    pub role: Role,
    pub display_name: String,
    /// The current structure (aidants and référents).
    pub structure_id: Option<StructureId>,
    pub active: bool,
    pub can_create_mandates: bool,
}

/// An agent's TOTP device: the secret sealed under its own wrapped data key.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TotpRow {
    pub agent_id: AgentId,
    pub kek_version: i64,
    pub wrapped_key: Vec<u8>,
    pub sealed_secret: Vec<u8>,
    pub last_step: i64,
    pub failures: i64,
    pub locked_until: i64,
    pub created_at: i64,
}

/// Agents, structures, memberships and TOTP devices.
#[async_trait]
pub trait AgentStore: Send + Sync {
    async fn insert_structure(&self, s: &StructureRow, now: Timestamp) -> StorageResult<()>;
    async fn list_structures(&self) -> StorageResult<Vec<StructureRow>>;
    async fn find_structure(&self, id: &StructureId) -> StorageResult<Option<StructureRow>>;
    async fn set_structure_demarches(
        &self,
        structure_id: &StructureId,
        demarches: &[Demarche],
    ) -> StorageResult<()>;
    async fn insert_agent(
        &self,
        a: &AgentRow,
        email_digest: Option<&str>,
        now: Timestamp,
    ) -> StorageResult<()>;
    async fn find_agent(&self, id: &AgentId) -> StorageResult<Option<AgentRow>>;
    async fn find_agent_by_email_digest(&self, digest: &str) -> StorageResult<Option<AgentRow>>;
    async fn agent_structures(&self, agent_id: &AgentId) -> StorageResult<Vec<StructureId>>;
    /// Adds a structure to an agent's (idempotent).
    async fn add_agent_structure(
        &self,
        agent_id: &AgentId,
        structure_id: &StructureId,
    ) -> StorageResult<()>;
    /// Makes one of the agent's structures the current one.
    async fn set_current_structure(
        &self,
        agent_id: &AgentId,
        structure_id: &StructureId,
    ) -> StorageResult<bool>;
    /// The agents who belong to a structure; `active` is false when either
    /// the account or the membership is.
    async fn agents_of_structure(&self, structure_id: &StructureId)
    -> StorageResult<Vec<AgentRow>>;
    /// Ends or restores one agent's membership of one structure (a
    /// référent's act); the account itself is untouched. False when the
    /// agent does not belong to the structure.
    async fn set_membership_active(
        &self,
        agent_id: &AgentId,
        structure_id: &StructureId,
        active: bool,
    ) -> StorageResult<bool>;
    /// The structure, if it is active and the agent belongs to it actively.
    async fn active_structure_of(
        &self,
        agent_id: &AgentId,
        structure_id: &StructureId,
    ) -> StorageResult<Option<StructureRow>>;
    async fn set_agent_active(
        &self,
        agent_id: &AgentId,
        active: bool,
        now: Timestamp,
    ) -> StorageResult<bool>;
    async fn upsert_totp(&self, row: &TotpRow) -> StorageResult<()>;
    async fn find_totp(&self, agent_id: &AgentId) -> StorageResult<Option<TotpRow>>;
    /// TOTP devices whose key is wrapped under another KEK version.
    async fn totp_not_at(&self, version: i64) -> StorageResult<Vec<TotpRow>>;
    /// Re-wraps a TOTP device's key if it is still under `old_version`.
    async fn rewrap_totp(
        &self,
        agent_id: &AgentId,
        old_version: i64,
        version: i64,
        wrapped: &[u8],
    ) -> StorageResult<bool>;
    /// Accepts time step `step` for the agent if it is newer than the last
    /// one accepted (no replay); resets the failure count.
    async fn totp_accept(&self, agent_id: &AgentId, step: i64) -> StorageResult<bool>;
    /// Claims one attempt before a code is evaluated, counting it as a
    /// failure until [`AgentStore::totp_accept`] clears the count: false
    /// while the device is locked at `now`; the claim that reaches
    /// `max_failures` locks it until `lock_until`. One statement, so
    /// parallel wrong codes cannot all be evaluated before the lock.
    async fn totp_claim_attempt(
        &self,
        agent_id: &AgentId,
        max_failures: i64,
        lock_until: Timestamp,
        now: Timestamp,
    ) -> StorageResult<bool>;
}

/// `impl AgentStore` for a backend (see `storage::impl_store!`).
macro_rules! impl_agent_store {
    ($store:ty) => {
    #[async_trait::async_trait]
    impl $crate::storage::AgentStore for $store {
        async fn insert_structure(
            &self,
            s: &$crate::storage::StructureRow,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO structures (id, siret, name, allowed_demarches, active, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&s.id)
            .bind(&s.siret)
            .bind(&s.name)
            .bind($crate::storage::columns::joined(&s.allowed_demarches))
            .bind(s.active)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn list_structures(
            &self,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::StructureRow>> {
            Ok(sqlx::query_as(
                "SELECT id, siret, name, allowed_demarches, active FROM structures ORDER BY name",
            )
            .fetch_all(&self.pool)
            .await?)
        }

        async fn find_structure(
            &self,
            id: &$crate::domain::StructureId,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::StructureRow>> {
            Ok(sqlx::query_as(
                "SELECT id, siret, name, allowed_demarches, active FROM structures WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn set_structure_demarches(
            &self,
            structure_id: &$crate::domain::StructureId,
            demarches: &[$crate::domain::Demarche],
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query("UPDATE structures SET allowed_demarches = $2 WHERE id = $1")
                .bind(structure_id)
                .bind($crate::storage::columns::joined(demarches))
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn insert_agent(
            &self,
            a: &$crate::storage::AgentRow,
            email_digest: Option<&str>,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO agents (id, role, display_name, email_digest, structure_id, active, created_at, \
                 can_create_mandates, habilitated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7)",
            )
            .bind(&a.id)
            .bind(a.role)
            .bind(&a.display_name)
            .bind(email_digest)
            .bind(&a.structure_id)
            .bind(a.active)
            .bind(now)
            .bind(a.can_create_mandates)
            .execute(&self.pool)
            .await?;
            if let Some(structure) = &a.structure_id {
                sqlx::query(
                    "INSERT INTO agent_structures (agent_id, structure_id) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&a.id)
                .bind(structure)
                .execute(&self.pool)
                .await?;
            }
            Ok(())
        }

        async fn find_agent(
            &self,
            id: &$crate::domain::AgentId,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::AgentRow>> {
            Ok(sqlx::query_as(
                "SELECT id, role, display_name, structure_id, active, can_create_mandates FROM agents WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn find_agent_by_email_digest(
            &self,
            digest: &str,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::AgentRow>> {
            Ok(sqlx::query_as(
                "SELECT id, role, display_name, structure_id, active, can_create_mandates FROM agents WHERE email_digest = $1",
            )
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn agent_structures(&self, agent_id: &$crate::domain::AgentId) -> $crate::storage::StorageResult<Vec<$crate::domain::StructureId>> {
            let rows: Vec<($crate::domain::StructureId,)> = sqlx::query_as(
                "SELECT structure_id FROM agent_structures WHERE agent_id = $1 AND active ORDER BY structure_id",
            )
            .bind(agent_id)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(|(s,)| s).collect())
        }

        async fn add_agent_structure(
            &self,
            agent_id: &$crate::domain::AgentId,
            structure_id: &$crate::domain::StructureId,
        ) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO agent_structures (agent_id, structure_id) VALUES ($1, $2) \
                 ON CONFLICT (agent_id, structure_id) DO UPDATE SET active = TRUE",
            )
            .bind(agent_id)
            .bind(structure_id)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn set_current_structure(
            &self,
            agent_id: &$crate::domain::AgentId,
            structure_id: &$crate::domain::StructureId,
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query(
                "UPDATE agents SET structure_id = $2 WHERE id = $1 AND EXISTS \
                 (SELECT 1 FROM agent_structures WHERE agent_id = $1 AND structure_id = $2 AND active)",
            )
            .bind(agent_id)
            .bind(structure_id)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn agents_of_structure(
            &self,
            structure_id: &$crate::domain::StructureId,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::AgentRow>> {
            Ok(sqlx::query_as(
                "SELECT a.id, a.role, a.display_name, a.structure_id, \
                 (a.active AND s.active) AS active, a.can_create_mandates \
                 FROM agents a JOIN agent_structures s ON s.agent_id = a.id \
                 WHERE s.structure_id = $1 ORDER BY a.display_name, a.id",
            )
            .bind(structure_id)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn set_membership_active(
            &self,
            agent_id: &$crate::domain::AgentId,
            structure_id: &$crate::domain::StructureId,
            active: bool,
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query(
                "UPDATE agent_structures SET active = $3 WHERE agent_id = $1 AND structure_id = $2",
            )
            .bind(agent_id)
            .bind(structure_id)
            .bind(active)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn active_structure_of(
            &self,
            agent_id: &$crate::domain::AgentId,
            structure_id: &$crate::domain::StructureId,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::StructureRow>> {
            Ok(sqlx::query_as(
                "SELECT s.id, s.siret, s.name, s.allowed_demarches, s.active FROM structures s \
                 JOIN agent_structures m ON m.structure_id = s.id \
                 WHERE s.id = $2 AND m.agent_id = $1 AND m.active AND s.active",
            )
            .bind(agent_id)
            .bind(structure_id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn set_agent_active(
            &self,
            agent_id: &$crate::domain::AgentId,
            active: bool,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query(
                "UPDATE agents SET active = $2, deactivated_at = CASE WHEN $2 THEN NULL ELSE $3 END \
                 WHERE id = $1",
            )
            .bind(agent_id)
            .bind(active)
            .bind(now)
            .execute(&self.pool)
            .await?;
            if !active {
                sqlx::query("DELETE FROM sessions WHERE actor_id = $1")
                    .bind(agent_id)
                    .execute(&self.pool)
                    .await?;
            }
            Ok(done.rows_affected() == 1)
        }

        async fn upsert_totp(&self, r: &$crate::storage::TotpRow) -> $crate::storage::StorageResult<()> {
            sqlx::query(
                "INSERT INTO totp_devices (agent_id, kek_version, wrapped_key, sealed_secret, last_step, failures, locked_until, created_at) \
                 VALUES ($1, $2, $3, $4, 0, 0, 0, $5) \
                 ON CONFLICT (agent_id) DO UPDATE SET kek_version = $2, wrapped_key = $3, sealed_secret = $4, \
                 last_step = 0, failures = 0, locked_until = 0, created_at = $5",
            )
            .bind(&r.agent_id)
            .bind(r.kek_version)
            .bind(&r.wrapped_key)
            .bind(&r.sealed_secret)
            .bind(r.created_at)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn find_totp(
            &self,
            agent_id: &$crate::domain::AgentId,
        ) -> $crate::storage::StorageResult<Option<$crate::storage::TotpRow>> {
            Ok(sqlx::query_as(
                "SELECT agent_id, kek_version, wrapped_key, sealed_secret, last_step, failures, locked_until, created_at \
                 FROM totp_devices WHERE agent_id = $1",
            )
            .bind(agent_id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn totp_not_at(
            &self,
            version: i64,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::TotpRow>> {
            Ok(sqlx::query_as(
                "SELECT agent_id, kek_version, wrapped_key, sealed_secret, last_step, failures, locked_until, created_at \
                 FROM totp_devices WHERE kek_version <> $1",
            )
            .bind(version)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn rewrap_totp(
            &self,
            agent_id: &$crate::domain::AgentId,
            old_version: i64,
            version: i64,
            wrapped: &[u8],
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query(
                "UPDATE totp_devices SET kek_version = $3, wrapped_key = $4 WHERE agent_id = $1 AND kek_version = $2",
            )
            .bind(agent_id)
            .bind(old_version)
            .bind(version)
            .bind(wrapped)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn totp_accept(&self, agent_id: &$crate::domain::AgentId, step: i64) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query(
                "UPDATE totp_devices SET last_step = $2, failures = 0, locked_until = 0 \
                 WHERE agent_id = $1 AND last_step < $2",
            )
            .bind(agent_id)
            .bind(step)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn totp_claim_attempt(
            &self,
            agent_id: &$crate::domain::AgentId,
            max_failures: i64,
            lock_until: $crate::domain::Timestamp,
            now: $crate::domain::Timestamp,
        ) -> $crate::storage::StorageResult<bool> {
            let done = sqlx::query(
                "UPDATE totp_devices SET failures = failures + 1, \
                 locked_until = CASE WHEN failures + 1 >= $2 THEN $3 ELSE locked_until END \
                 WHERE agent_id = $1 AND locked_until <= $4",
            )
            .bind(agent_id)
            .bind(max_failures)
            .bind(lock_until)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }
    }
    };
}
pub(crate) use impl_agent_store;
