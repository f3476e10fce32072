//! One audit entry and its canonical byte encoding (the Merkle leaf).
//!
//! An entry names who did what to whose data, why, and what was decided —
//! with identifiers, categories and codes only, never a personal value.
//!
//! Encoding, version 1 (all integers big-endian):
//! `0x01 ‖ u64 index ‖ i64 timestamp ‖ u8 decision (0 deny, 1 allow)` then,
//! in this order, each text field as `u8 present ‖ u16 length ‖ UTF-8`:
//! actor_id, actor_role, on_behalf_of, structure_id, action, resident_id,
//! category, purpose, legal_basis, reason, request_id. Decoding refuses
//! trailing bytes, so one entry has exactly one encoding.

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::Timestamp;

pub const ENCODING_VERSION: u8 = 1;
const MAX_FIELD: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
}

/// What a caller asks to record; the log assigns the index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditRecord {
    pub timestamp: Timestamp,
    /// Internal id of whoever acted (resident, agent, partner, `system`).
    pub actor_id: String,
    pub actor_role: String,
    /// The resident an aidant acted for, under a mandate.
    pub on_behalf_of: Option<String>,
    pub structure_id: Option<String>,
    /// Stable action code, e.g. `data.read`, `data.write`, `erasure`.
    pub action: String,
    /// The resident whose data is concerned.
    pub resident_id: Option<String>,
    pub category: Option<String>,
    pub purpose: Option<String>,
    pub legal_basis: Option<String>,
    pub allowed: bool,
    /// Stable reason code of the decision, e.g. `own_data`, `resident_only`.
    pub reason: String,
    pub request_id: Option<String>,
}

/// An entry as stored: its index in the log and its decoded fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct AuditEntry {
    pub index: u64,
    pub timestamp: Timestamp,
    pub actor_id: String,
    pub actor_role: String,
    pub on_behalf_of: Option<String>,
    pub structure_id: Option<String>,
    pub action: String,
    pub resident_id: Option<String>,
    pub category: Option<String>,
    pub purpose: Option<String>,
    pub legal_basis: Option<String>,
    pub decision: Decision,
    pub reason: String,
    pub request_id: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("unknown leaf encoding version {0}")]
    UnknownVersion(u8),
    #[error("truncated or malformed leaf")]
    Malformed,
    #[error("a field is longer than {MAX_FIELD} bytes")]
    FieldTooLong,
}

fn put(buf: &mut Vec<u8>, field: Option<&str>) -> Result<(), EntryError> {
    match field {
        None => buf.push(0),
        Some(s) => {
            let len = u16::try_from(s.len()).map_err(|_| EntryError::FieldTooLong)?;
            if s.len() > MAX_FIELD {
                return Err(EntryError::FieldTooLong);
            }
            buf.push(1);
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(s.as_bytes());
        }
    }
    Ok(())
}

/// A text field of a record, however the caller holds it.
pub trait Field {
    fn field(self) -> Option<String>;
}
impl Field for &str {
    fn field(self) -> Option<String> {
        Some(self.to_string())
    }
}
impl Field for String {
    fn field(self) -> Option<String> {
        Some(self)
    }
}
impl Field for &String {
    fn field(self) -> Option<String> {
        Some(self.clone())
    }
}
impl Field for Option<&str> {
    fn field(self) -> Option<String> {
        self.map(str::to_string)
    }
}
impl Field for Option<String> {
    fn field(self) -> Option<String> {
        self
    }
}
impl Field for &Option<String> {
    fn field(self) -> Option<String> {
        self.clone()
    }
}

/// An id of `domain::ids` is recorded as its text.
macro_rules! id_field {
    ($($ty:ty),*) => {$(
        impl Field for &$ty {
            fn field(self) -> Option<String> {
                Some(self.to_string())
            }
        }
        impl Field for Option<$ty> {
            fn field(self) -> Option<String> {
                self.map(<$ty>::into_string)
            }
        }
        impl Field for &Option<$ty> {
            fn field(self) -> Option<String> {
                self.as_ref().map(ToString::to_string)
            }
        }
        impl Field for Option<&$ty> {
            fn field(self) -> Option<String> {
                self.map(ToString::to_string)
            }
        }
    )*};
}
id_field!(
    crate::domain::StructureId,
    crate::domain::AgentId,
    crate::domain::ResidentId,
    crate::domain::PurposeId
);

/// The one builder of audit records: who acted, what they did and when,
/// then the optional fields. A record starts as a refusal with no reason:
/// it says "allowed" only where [`AuditRecord::allow`] says so.
impl AuditRecord {
    pub fn new(actor_id: &str, actor_role: &str, action: &str, timestamp: Timestamp) -> Self {
        Self {
            timestamp,
            actor_id: actor_id.to_string(),
            actor_role: actor_role.to_string(),
            action: action.to_string(),
            ..Self::default()
        }
    }
    /// Who acted, once known (a login is recorded for an `anonymous`
    /// caller until the provider has said who it is).
    pub fn by(mut self, actor_id: &str, actor_role: &str) -> Self {
        self.actor_id = actor_id.to_string();
        self.actor_role = actor_role.to_string();
        self
    }
    /// Another action of the same actor, at the same time.
    pub fn action(mut self, action: &str) -> Self {
        self.action = action.to_string();
        self
    }
    /// Allowed, for this stable reason.
    pub fn allow(mut self, reason: &str) -> Self {
        self.allowed = true;
        self.reason = reason.to_string();
        self
    }
    /// Refused, for this stable reason.
    pub fn deny(mut self, reason: &str) -> Self {
        self.allowed = false;
        self.reason = reason.to_string();
        self
    }
    /// The resident whose data is concerned.
    pub fn resident(mut self, id: impl Field) -> Self {
        self.resident_id = id.field();
        self
    }
    /// The resident an aidant acted for, under a mandate.
    pub fn on_behalf_of(mut self, id: impl Field) -> Self {
        self.on_behalf_of = id.field();
        self
    }
    pub fn structure(mut self, id: impl Field) -> Self {
        self.structure_id = id.field();
        self
    }
    pub fn category(mut self, c: impl Field) -> Self {
        self.category = c.field();
        self
    }
    pub fn purpose(mut self, p: impl Field) -> Self {
        self.purpose = p.field();
        self
    }
    pub fn legal_basis(mut self, b: impl Field) -> Self {
        self.legal_basis = b.field();
        self
    }
    pub fn request(mut self, id: impl Field) -> Self {
        self.request_id = id.field();
        self
    }
}

impl AuditRecord {
    /// The canonical leaf bytes of this record at `index`.
    pub fn encode(&self, index: u64) -> Result<Vec<u8>, EntryError> {
        let mut b = Vec::with_capacity(128);
        b.push(ENCODING_VERSION);
        b.extend_from_slice(&index.to_be_bytes());
        b.extend_from_slice(&self.timestamp.to_be_bytes());
        b.push(u8::from(self.allowed));
        put(&mut b, Some(&self.actor_id))?;
        put(&mut b, Some(&self.actor_role))?;
        put(&mut b, self.on_behalf_of.as_deref())?;
        put(&mut b, self.structure_id.as_deref())?;
        put(&mut b, Some(&self.action))?;
        put(&mut b, self.resident_id.as_deref())?;
        put(&mut b, self.category.as_deref())?;
        put(&mut b, self.purpose.as_deref())?;
        put(&mut b, self.legal_basis.as_deref())?;
        put(&mut b, Some(&self.reason))?;
        put(&mut b, self.request_id.as_deref())?;
        Ok(b)
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EntryError> {
        if self.rest.len() < n {
            return Err(EntryError::Malformed);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, EntryError> {
        Ok(self.take(1)?[0])
    }

    fn eight(&mut self) -> Result<[u8; 8], EntryError> {
        self.take(8)?.try_into().map_err(|_| EntryError::Malformed)
    }

    fn field(&mut self) -> Result<Option<String>, EntryError> {
        match self.u8()? {
            0 => Ok(None),
            1 => {
                let len: [u8; 2] = self
                    .take(2)?
                    .try_into()
                    .map_err(|_| EntryError::Malformed)?;
                let bytes = self.take(usize::from(u16::from_be_bytes(len)))?;
                String::from_utf8(bytes.to_vec())
                    .map(Some)
                    .map_err(|_| EntryError::Malformed)
            }
            _ => Err(EntryError::Malformed),
        }
    }

    fn required(&mut self) -> Result<String, EntryError> {
        self.field()?.ok_or(EntryError::Malformed)
    }
}

impl AuditEntry {
    pub fn decode(leaf: &[u8]) -> Result<AuditEntry, EntryError> {
        let mut r = Reader { rest: leaf };
        let version = r.u8()?;
        if version != ENCODING_VERSION {
            return Err(EntryError::UnknownVersion(version));
        }
        let index = u64::from_be_bytes(r.eight()?);
        let timestamp = i64::from_be_bytes(r.eight()?);
        let decision = match r.u8()? {
            0 => Decision::Deny,
            1 => Decision::Allow,
            _ => return Err(EntryError::Malformed),
        };
        let entry = AuditEntry {
            index,
            timestamp,
            decision,
            actor_id: r.required()?,
            actor_role: r.required()?,
            on_behalf_of: r.field()?,
            structure_id: r.field()?,
            action: r.required()?,
            resident_id: r.field()?,
            category: r.field()?,
            purpose: r.field()?,
            legal_basis: r.field()?,
            reason: r.required()?,
            request_id: r.field()?,
        };
        if !r.rest.is_empty() {
            return Err(EntryError::Malformed);
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AuditRecord {
        AuditRecord {
            timestamp: 1_795_867_200,
            actor_id: "a1d0".into(),
            actor_role: "aidant".into(),
            on_behalf_of: Some("r-1".into()),
            structure_id: Some("s-1".into()),
            action: "data.read".into(),
            resident_id: Some("r-1".into()),
            category: Some("contact".into()),
            purpose: None,
            legal_basis: Some("public_task".into()),
            allowed: true,
            reason: "mandate".into(),
            request_id: Some("req-9".into()),
        }
    }

    /// The one builder sets each field it names, from every kind of text
    /// a caller holds (found by cargo-mutants: a builder method or a
    /// `Field` conversion that dropped its value survived the unit tests).
    #[test]
    // The borrows are the point: each is another `Field` impl.
    #[allow(clippy::needless_borrows_for_generic_args)]
    fn the_builder_sets_every_field_from_every_kind_of_text() {
        let resident = crate::domain::ResidentId::parse("r-1").unwrap();
        let agent = crate::domain::AgentId::parse("a-2").unwrap();
        let structure = crate::domain::StructureId::parse("s-1").unwrap();
        let request = Some("req-9".to_string());
        let built = AuditRecord::new("anonymous", "resident", "login", 1_795_867_200)
            .by("a1d0", "aidant")
            .action("data.read")
            .deny("first")
            .allow("mandate")
            .on_behalf_of(&resident)
            .resident(Some(&resident))
            .structure(&structure)
            .category("contact".to_string())
            .purpose(Option::<&str>::None)
            .legal_basis(&"public_task".to_string())
            .request(&request);
        assert_eq!(built, sample());
        // Each remaining kind of text, and the typed ids.
        let f = |r: AuditRecord| r.category;
        let base = || AuditRecord::new("x", "y", "z", 0);
        assert_eq!(f(base().category("c")), Some("c".into()));
        assert_eq!(f(base().category(Some("c"))), Some("c".into()));
        assert_eq!(f(base().category(Some("c".to_string()))), Some("c".into()));
        assert_eq!(f(base().category(&Some("c".to_string()))), Some("c".into()));
        assert_eq!(f(base().category(Option::<String>::None)), None);
        assert_eq!(f(base().category(&agent)), Some("a-2".into()));
        assert_eq!(f(base().category(Some(agent.clone()))), Some("a-2".into()));
        assert_eq!(f(base().category(&Some(structure))), Some("s-1".into()));
        assert_eq!(f(base().category(Some(resident))), Some("r-1".into()));
        // A refusal undoes an earlier allow.
        let refused = base().allow("a").deny("b");
        assert!(!refused.allowed);
        assert_eq!(refused.reason, "b");
    }

    /// A field of exactly the limit is encoded; one byte more is refused.
    #[test]
    fn a_field_may_reach_the_limit_but_not_pass_it() {
        let at = AuditRecord::new(&"a".repeat(MAX_FIELD), "r", "x", 0);
        assert!(at.encode(0).is_ok());
        let past = AuditRecord::new(&"a".repeat(MAX_FIELD + 1), "r", "x", 0);
        assert_eq!(past.encode(0), Err(EntryError::FieldTooLong));
    }

    /// A refusal is decoded as a refusal (the leaf's decision byte 0).
    #[test]
    fn a_refusal_round_trips_as_a_refusal() {
        let mut r = sample();
        r.allowed = false;
        let e = AuditEntry::decode(&r.encode(7).unwrap()).unwrap();
        assert_eq!(e.decision, Decision::Deny);
        assert_eq!(e.index, 7);
    }

    #[test]
    fn round_trip_and_canonical() {
        let leaf = sample().encode(42).unwrap();
        let e = AuditEntry::decode(&leaf).unwrap();
        assert_eq!(e.index, 42);
        assert_eq!(e.decision, Decision::Allow);
        assert_eq!(e.on_behalf_of.as_deref(), Some("r-1"));
        assert_eq!(e.purpose, None);
        let mut longer = leaf.clone();
        longer.push(0);
        assert_eq!(AuditEntry::decode(&longer), Err(EntryError::Malformed));
        assert_eq!(
            AuditEntry::decode(&leaf[..leaf.len() - 1]),
            Err(EntryError::Malformed)
        );
    }
}
