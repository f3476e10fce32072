//! The register of processing (`policies/purposes.toml`, GDPR art. 30):
//! purposes with their legal basis, categories, recipients and retention.
//!
//! Loaded and validated at start; a bad register stops the start naming the
//! line. Each purpose has a notice version: a hash of everything a resident
//! is told, so a consent records exactly what it was given under.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::category::Categories;
use super::ids::PurposeId;

pub const BUILTIN_PURPOSES: &str = include_str!("../../policies/purposes.toml");

/// GDPR art. 6 (and art. 9 for explicit consent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LegalBasis {
    Consent,
    /// Art. 9(2)(a): special categories need an explicit consent.
    ExplicitConsent,
    PublicTask,
    LegalObligation,
    VitalInterest,
    Contract,
}

impl LegalBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            LegalBasis::Consent => "consent",
            LegalBasis::ExplicitConsent => "explicit_consent",
            LegalBasis::PublicTask => "public_task",
            LegalBasis::LegalObligation => "legal_obligation",
            LegalBasis::VitalInterest => "vital_interest",
            LegalBasis::Contract => "contract",
        }
    }

    /// Whether processing under this basis needs the resident's consent.
    pub fn needs_consent(self) -> bool {
        matches!(self, LegalBasis::Consent | LegalBasis::ExplicitConsent)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartnerAccess {
    /// Partners may read one resident's data (when allowed).
    Records,
    /// Pseudonymised or aggregated extracts only.
    ExtractsOnly,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Purpose {
    // Checked further at load: lower-case words joined by '-' (a plain
    // comment: a doc comment would change the OpenAPI document).
    #[schema(value_type = String)]
    pub id: PurposeId,
    pub title_fr: String,
    pub title_en: String,
    pub description_fr: String,
    pub description_en: String,
    pub controller: String,
    pub legal_basis: LegalBasis,
    pub categories: Vec<String>,
    /// Partner ids; empty when only the controller processes the data.
    pub recipients: Vec<String>,
    pub retention_days: u32,
    /// Longest consent allowed (0 when the basis is not consent).
    pub max_consent_days: u32,
    pub special_category: bool,
    /// W3C DPV purpose IRI.
    pub dpv_purpose: String,
    /// Withdrawing consent erases the data held only for this purpose.
    pub withdrawal_erases: bool,
    pub access: PartnerAccess,
    /// Hash of the notice text (computed, not read from the file).
    #[serde(default, skip_deserializing)]
    pub notice_version: String,
}

impl Purpose {
    /// Everything a resident is told about the purpose, hashed: any change
    /// of wording, categories, recipients or durations is a new version.
    fn compute_notice_version(&self) -> String {
        let mut text = String::new();
        let parts: [&str; 14] = [
            self.id.as_str(),
            &self.title_fr,
            &self.title_en,
            &self.description_fr,
            &self.description_en,
            &self.controller,
            self.legal_basis.as_str(),
            &self.categories.join(","),
            &self.recipients.join(","),
            &self.retention_days.to_string(),
            &self.max_consent_days.to_string(),
            &self.special_category.to_string(),
            &self.dpv_purpose,
            &self.withdrawal_erases.to_string(),
        ];
        for part in parts {
            text.push_str(&format!("{}:{}\n", part.len(), part));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        hex::encode(&digest.as_ref()[..16])
    }

    pub fn covers_category(&self, category: &str) -> bool {
        self.categories.iter().any(|c| c == category)
    }

    pub fn names_recipient(&self, partner_id: &str) -> bool {
        self.recipients.iter().any(|r| r == partner_id)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterFile {
    purpose: Vec<Purpose>,
}

#[derive(Clone, Debug)]
pub struct Register {
    purposes: BTreeMap<String, Purpose>,
}

/// A purpose id of the register's shape (lower-case words joined by '-'),
/// the one rule for the register's ids and for ids a client names where
/// only a purpose may stand (never a source's `source:…`).
pub fn register_id(text: &str) -> Option<PurposeId> {
    let shaped = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    shaped.then(|| PurposeId::parse(text).ok()).flatten()
}

fn line_of(text: &str, needle: &str) -> usize {
    text.find(needle)
        .map(|at| text[..at].lines().count() + 1)
        .unwrap_or(0)
}

impl Register {
    /// Parses and validates a register against the data categories.
    pub fn parse(text: &str, categories: &Categories) -> Result<Self, String> {
        let file: RegisterFile = super::parse_policy(text)?;
        let mut purposes = BTreeMap::new();
        for mut p in file.purpose {
            let at = line_of(text, &format!("id = \"{}\"", p.id));
            let fail = |m: String| format!("line {at}: purpose `{}`: {m}", p.id);
            if register_id(p.id.as_str()).is_none() {
                return Err(fail("ids are lower-case words joined by '-'".into()));
            }
            if p.categories.is_empty() {
                return Err(fail("names no data category".into()));
            }
            for c in &p.categories {
                if categories.category(c).is_err() {
                    return Err(fail(format!("unknown data category `{c}`")));
                }
            }
            let special = p.categories.iter().any(|c| {
                categories
                    .category(c)
                    .ok()
                    .and_then(|c| categories.def(&c).map(|d| d.special))
                    .unwrap_or(false)
            });
            if special && !p.special_category {
                return Err(fail(
                    "uses a special category but special_category = false".into(),
                ));
            }
            if p.special_category && p.legal_basis == LegalBasis::Consent {
                return Err(fail(
                    "special categories need explicit_consent, not consent".into(),
                ));
            }
            if p.legal_basis.needs_consent() && p.max_consent_days == 0 {
                return Err(fail("a consent purpose needs max_consent_days > 0".into()));
            }
            if !p.legal_basis.needs_consent() && p.max_consent_days != 0 {
                return Err(fail(
                    "max_consent_days must be 0 when the basis is not consent".into(),
                ));
            }
            if p.retention_days == 0 {
                return Err(fail("retention_days must be positive".into()));
            }
            if !p.dpv_purpose.starts_with("https://w3id.org/dpv") {
                return Err(fail("dpv_purpose must be a W3C DPV IRI".into()));
            }
            for text in [
                &p.title_fr,
                &p.title_en,
                &p.description_fr,
                &p.description_en,
            ] {
                if text.trim().is_empty() {
                    return Err(fail(
                        "titles and descriptions are required in French and English".into(),
                    ));
                }
            }
            p.notice_version = p.compute_notice_version();
            let id = p.id.to_string();
            if purposes.insert(id.clone(), p).is_some() {
                return Err(format!("line {at}: purpose `{id}` is declared twice"));
            }
        }
        if purposes.is_empty() {
            return Err("the register declares no purpose".into());
        }
        Ok(Self { purposes })
    }

    pub fn builtin(categories: &Categories) -> Result<Self, String> {
        Self::parse(BUILTIN_PURPOSES, categories)
    }

    /// The purpose of the register named `id`: the one place a purpose id
    /// from outside (a path, a body, a token's request) is checked, so
    /// services below take the `PurposeId` of the purpose found here.
    pub fn get(&self, id: &str) -> Option<&Purpose> {
        self.purposes.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Purpose> {
        self.purposes.values()
    }

    /// The purposes naming this partner as a recipient.
    pub fn purposes_of_partner<'a>(
        &'a self,
        partner_id: &'a str,
    ) -> impl Iterator<Item = &'a Purpose> + 'a {
        self.purposes
            .values()
            .filter(move |p| p.names_recipient(partner_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cats() -> Categories {
        Categories::builtin().unwrap()
    }

    #[test]
    fn builtin_register_is_valid_and_rich_enough() {
        let r = Register::builtin(&cats()).unwrap();
        assert!(r.all().count() >= 8);
        let health = r.get("sante-territoriale").unwrap();
        assert!(health.special_category);
        assert_eq!(health.legal_basis, LegalBasis::ExplicitConsent);
        assert!(r.all().any(|p| p.legal_basis == LegalBasis::PublicTask));
        assert_eq!(r.get("etude-mobilite").unwrap().notice_version.len(), 32);
    }

    #[test]
    fn changing_the_text_changes_the_notice_version() {
        let a = Register::builtin(&cats()).unwrap();
        let edited = BUILTIN_PURPOSES.replacen(
            "Un laboratoire de recherche",
            "Un laboratoire universitaire",
            1,
        );
        let b = Register::parse(&edited, &cats()).unwrap();
        assert_ne!(
            a.get("etude-mobilite").unwrap().notice_version,
            b.get("etude-mobilite").unwrap().notice_version
        );
        assert_eq!(
            a.get("agenda-culturel").unwrap().notice_version,
            b.get("agenda-culturel").unwrap().notice_version
        );
    }

    #[test]
    fn a_bad_register_names_the_line() {
        let bad = BUILTIN_PURPOSES.replacen(
            "categories = [\"mobility\"",
            "categories = [\"teleportation\"",
            1,
        );
        let e = Register::parse(&bad, &cats()).unwrap_err();
        assert!(e.starts_with("line ") && e.contains("teleportation"), "{e}");
        let e = Register::parse("[[purpose]]\nid = 3\n", &cats()).unwrap_err();
        assert!(e.starts_with("line 2"), "{e}");
        let bad = BUILTIN_PURPOSES.replacen(
            "legal_basis = \"explicit_consent\"",
            "legal_basis = \"consent\"",
            1,
        );
        assert!(
            Register::parse(&bad, &cats())
                .unwrap_err()
                .contains("explicit_consent")
        );
    }
}
