//! Typed identifiers: one newtype per kind of id, built only through
//! `parse`, so an id reaching a service or the store is well-formed and a
//! resident's id cannot be passed where a partner's is expected.
//!
//! Every id the product creates passes (UUIDs, the seed's and the demo's
//! ids, partner and purpose ids of lower-case words joined by '-', hex
//! pseudonyms); anything else names nothing that exists, and the edges
//! answer it as they answer an unknown id.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longer than any id the product creates (a 64-character hex pseudonym),
/// short enough to bound what an unknown id can make us hash or log.
pub const MAX_ID_LEN: usize = 128;

/// Why a text is not an id. It never carries the text (it may be anything
/// a client sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("an id cannot be empty")]
    Empty,
    #[error("an id is at most {MAX_ID_LEN} characters")]
    TooLong,
    #[error("an id has ASCII letters, digits, '-', '_', '.' and ':' only")]
    Charset,
}

/// The one rule every kind of id shares.
fn check(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(IdError::Charset);
    }
    Ok(())
}

/// A newtype over `String` that can only be built valid. Serialised as the
/// bare string; deserialised through `parse`, so bad input is refused; an
/// OpenAPI string (`ToSchema`).
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check(s)?;
                Ok(Self(s.to_owned()))
            }

            /// A new id from a UUID the caller drew (the domain draws no
            /// randomness of its own); a UUID's text is always valid.
            pub fn from_uuid(id: uuid::Uuid) -> Self {
                Self(id.to_string())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                check(&s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                <String as utoipa::PartialSchema>::schema()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

id_type!(
    /// A resident (usager): a UUID, given at registration or first login.
    ResidentId
);
id_type!(
    /// A purpose of the register of processing (`policies/purposes.toml`).
    PurposeId
);
id_type!(
    /// What a partner knows a resident by: a keyed hash (hex) of the
    /// resident's id, one per partner.
    Pseudonym
);
id_type!(
    /// A consent of one resident for one purpose.
    ConsentId
);
id_type!(
    /// A mandate an aidant holds for a resident.
    MandateId
);
id_type!(
    /// A partner (recipient), chosen by the operator.
    PartnerId
);
id_type!(
    /// An agent: an aidant, a référent, the DPO, an auditor, an admin.
    AgentId
);
id_type!(
    /// A structure (a CCAS, a France Services) agents belong to.
    StructureId
);
id_type!(
    /// A partner's extract.
    ExtractId
);
id_type!(
    /// A resident's rights request (art. 15 to 22), answered by the DPO.
    RightsRequestId
);
id_type!(
    /// A mandate draft an aidant prepares before the resident confirms.
    DraftId
);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn every_id_the_product_creates_parses() {
        for id in [
            "0b9a3c1e-5d6f-4a7b-8c9d-000000000001",
            "seed-ccas-31901",
            "seed-agent-31901-2",
            "labo-mobilite",
            "inventaire-arbres-patrimoine",
            "a1d00000-0000-4000-8000-000000000001",
            &"ab12".repeat(16),
        ] {
            assert_eq!(ResidentId::parse(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn malformed_ids_are_refused() {
        assert_eq!(PurposeId::parse(""), Err(IdError::Empty));
        assert_eq!(PurposeId::parse(&"a".repeat(129)), Err(IdError::TooLong));
        for bad in ["a b", "a/b", "../x", "é", "a\n", "a%2F"] {
            assert_eq!(PartnerId::parse(bad), Err(IdError::Charset), "{bad}");
        }
    }

    #[test]
    fn serde_is_the_bare_string_and_refuses_bad_input() {
        let id: ConsentId = serde_json::from_str("\"c-1\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"c-1\"");
        assert!(serde_json::from_str::<ConsentId>("\"a b\"").is_err());
    }
}
