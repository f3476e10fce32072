//! Pure domain types and rules: no I/O, no clock (time is passed in).
//!
//! Types here can only be built valid; the rest of the code never re-checks.

/// A closed set of codes, stored and sent as text: `ALL`, `as_str`,
/// `parse` (an unknown code is `None`) and `Display`.
macro_rules! code_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $code:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $code,)+
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|x| x.as_str() == s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::domain::UnknownCode;
            fn from_str(s: &str) -> Result<Self, $crate::domain::UnknownCode> {
                Self::parse(s).ok_or($crate::domain::UnknownCode(stringify!($name)))
            }
        }
    };
}

/// A text that is not one of a closed set's codes; names the set, not the
/// text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a {0} code")]
pub struct UnknownCode(pub &'static str);

/// `Display` and `FromStr` through the codes of an enum that has `as_str`
/// and `parse` of its own.
macro_rules! code_text {
    ($name:ty) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::domain::UnknownCode;
            fn from_str(s: &str) -> Result<Self, $crate::domain::UnknownCode> {
                Self::parse(s).ok_or($crate::domain::UnknownCode(stringify!($name)))
            }
        }
    };
}

code_text!(Role);
code_text!(Demarche);
code_text!(consent::ConsentState);

pub mod access;
pub mod alert;
pub mod category;
pub mod consent;
pub mod deposit;
pub mod extract;
pub mod ids;
pub mod mandate;
pub mod notice;
pub mod paths;
pub mod purpose;
pub mod rights;
pub mod source;
pub mod stats;
pub mod territory;

pub use ids::{
    AgentId, ConsentId, DraftId, ExtractId, IdError, MandateId, PartnerId, Pseudonym, PurposeId,
    ResidentId, RightsRequestId, StructureId,
};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Parses a reviewed TOML policy file; a failure names the line.
pub fn parse_policy<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
            .unwrap_or(0);
        format!("line {line}: {}", e.message())
    })
}

/// Seconds since the Unix epoch. Domain functions take `now: Timestamp` as an
/// argument so tests control time.
pub type Timestamp = i64;

/// What someone acting on the service is. Roles come from coffre's own
/// database, never from identity-provider claims alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// usager: a natural person whose data is held.
    Resident,
    /// aidant habilité: acts for residents under a mandate.
    Aidant,
    /// référent: manages a structure's aidants.
    Referent,
    /// délégué à la protection des données.
    Dpo,
    /// auditeur: reads the audit log.
    Auditor,
    /// operator of the service.
    Admin,
    /// partenaire: an OAuth2 client with declared purposes.
    Partner,
    /// source de données: deposits residents' data (BRIEF C11); never reads.
    Source,
    /// The service's own notifier (BRIEF C13): reads a resident's contact
    /// address, for the information purpose only, to tell them of acts
    /// done in their name.
    Notifier,
    /// The service's supervision of mandates (BRIEF C13): reads a
    /// resident's commune, for the supervision purpose only, to alert a
    /// référent when a mandate reaches beyond the structure's communes.
    Supervisor,
}

impl Role {
    pub const ALL: [Role; 10] = [
        Role::Resident,
        Role::Aidant,
        Role::Referent,
        Role::Dpo,
        Role::Auditor,
        Role::Admin,
        Role::Partner,
        Role::Source,
        Role::Notifier,
        Role::Supervisor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Resident => "resident",
            Role::Aidant => "aidant",
            Role::Referent => "referent",
            Role::Dpo => "dpo",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
            Role::Partner => "partner",
            Role::Source => "source",
            Role::Notifier => "notifier",
            Role::Supervisor => "supervisor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Agents log in through the agents' identity provider.
    pub fn is_agent(self) -> bool {
        matches!(
            self,
            Role::Aidant | Role::Referent | Role::Dpo | Role::Auditor | Role::Admin
        )
    }
}

/// The 10 Aidants Connect démarches (themes a mandate can cover).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Demarche {
    Papiers,
    Famille,
    Social,
    Travail,
    Logement,
    Transports,
    Argent,
    Justice,
    Etranger,
    Loisirs,
}

impl Demarche {
    pub const ALL: [Demarche; 10] = [
        Demarche::Papiers,
        Demarche::Famille,
        Demarche::Social,
        Demarche::Travail,
        Demarche::Logement,
        Demarche::Transports,
        Demarche::Argent,
        Demarche::Justice,
        Demarche::Etranger,
        Demarche::Loisirs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Demarche::Papiers => "papiers",
            Demarche::Famille => "famille",
            Demarche::Social => "social",
            Demarche::Travail => "travail",
            Demarche::Logement => "logement",
            Demarche::Transports => "transports",
            Demarche::Argent => "argent",
            Demarche::Justice => "justice",
            Demarche::Etranger => "etranger",
            Demarche::Loisirs => "loisirs",
        }
    }

    pub fn parse(s: &str) -> Option<Demarche> {
        Demarche::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// A SIRET: 14 digits with a valid Luhn checksum (La Poste's SIRETs are the
/// documented exception and are accepted by their SIREN prefix).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Siret(String);

impl Siret {
    pub fn parse(s: &str) -> Result<Siret, &'static str> {
        if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err("a SIRET is 14 digits");
        }
        let la_poste = s.starts_with("356000000");
        if !la_poste && !luhn_valid(s) {
            return Err("this SIRET's check digit is wrong");
        }
        Ok(Siret(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Siret {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Siret::parse(&s)
    }
}

impl From<Siret> for String {
    fn from(s: Siret) -> String {
        s.0
    }
}

fn luhn_valid(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siret_checks_luhn() {
        assert!(Siret::parse("73282932000074").is_ok());
        assert!(Siret::parse("73282932000075").is_err());
        assert!(Siret::parse("1234").is_err());
    }

    #[test]
    fn roles_and_demarches_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        for d in Demarche::ALL {
            assert_eq!(Demarche::parse(d.as_str()), Some(d));
        }
    }
}
