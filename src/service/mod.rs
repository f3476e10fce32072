//! The use cases: one function per thing a person, a partner or a job does.
//!
//! A use case takes typed input and `now`, opens the unit of work, asks the
//! one access decision, writes the audit record before anything is
//! disclosed or changed, and returns a typed view. This layer is the only
//! caller of storage and of the audit log: `http/` and `web/` call it and
//! render what it returns, so two routes that do the same thing share one
//! rule.

pub mod access;
pub mod agents;
pub mod alerts;
pub mod consents;
pub mod data;
pub mod deposit_reader;
pub mod deposits;
pub mod drafts;
pub mod export;
pub mod extract_build;
pub mod extracts;
pub mod journal;
pub mod login;
pub mod mandates;
pub mod metrics;
pub mod noise;
pub mod notices;
pub mod notify;
pub mod partners;
pub mod report;
pub mod requests;
pub mod rights;
pub mod seal;
pub mod sessions;
pub mod sources;
pub mod state;
pub mod stats;
mod stats_build;
pub mod structures;
pub mod vault;
pub mod witness;

use crate::audit::AuditRecord;
use crate::domain::{Role, Timestamp};

/// Who is acting, as every use case receives it: a logged-in person, a
/// partner, or the operator. Built by `http/`/`web/` from the session or
/// token, and by `cli/` for operator commands.
#[derive(Clone, Debug)]
pub struct Caller {
    pub actor_id: String,
    pub role: Role,
    /// The request id, to tie audit entries to the service's logs.
    pub request_id: Option<String>,
}

impl Caller {
    /// The caller as an agent: `None` when their id is no agent id (it then
    /// names no agent, as an unknown one does).
    pub fn agent_id(&self) -> Option<crate::domain::AgentId> {
        crate::domain::AgentId::parse(&self.actor_id).ok()
    }

    /// The caller as a resident, acting on their own data: refused
    /// `resident_only` when they are not a resident (or their id is no
    /// resident id, which names no one). Call it only after the decision
    /// that records refusals (`access::own_data` and its kin): this
    /// refusal of its own is not recorded. (Only residents hold `…:own`
    /// actions, and a resident's session id is always a resident id, so
    /// after an allowed decision it cannot fail.)
    pub fn resident_id(&self) -> crate::error::AppResult<crate::domain::ResidentId> {
        match (self.role, crate::domain::ResidentId::parse(&self.actor_id)) {
            (Role::Resident, Ok(id)) => Ok(id),
            _ => Err(crate::error::ErrorCode::ResidentOnly.into()),
        }
    }

    /// The caller as a partner: `None` when their id is no partner id (it
    /// then names no partner, as an unknown one does).
    pub fn partner_id(&self) -> Option<crate::domain::PartnerId> {
        crate::domain::PartnerId::parse(&self.actor_id).ok()
    }

    pub fn new(actor_id: impl Into<String>, role: Role, request_id: Option<String>) -> Self {
        Self {
            actor_id: actor_id.into(),
            role,
            request_id,
        }
    }

    /// An audit record of this caller doing `action` at `now`.
    pub fn record(&self, action: &str, now: Timestamp) -> AuditRecord {
        AuditRecord::new(&self.actor_id, self.role.as_str(), action, now).request(&self.request_id)
    }
}

/// A use case's answer and the index of the audit entry that recorded the
/// decision behind it (sent as `X-Audit-Entry`, so a client can ask for its
/// inclusion proof).
#[derive(Debug)]
pub struct Audited<T> {
    pub entry: u64,
    pub value: T,
}

impl<T> Audited<T> {
    pub fn new(entry: u64, value: T) -> Self {
        Self { entry, value }
    }
}
