//! The one access decision, as a pure function: facts in (gathered by
//! `crate::access` with indexed queries), verdict out, with its basis or
//! its stable reason code. No I/O, time passed in through the facts.

use serde::Serialize;

use super::purpose::{LegalBasis, PartnerAccess, Purpose};

/// Why access is allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Basis {
    /// The resident acting on their own data.
    OwnData,
    /// A valid consent (its id).
    Consent(String),
    /// An active mandate (its id).
    Mandate(String),
    /// The purpose's legal basis (public task, legal obligation…).
    LegalBasis(LegalBasis),
}

impl Basis {
    pub fn reason(&self) -> &'static str {
        match self {
            Basis::OwnData => "own_data",
            Basis::Consent(_) => "consent",
            Basis::Mandate(_) => "mandate",
            Basis::LegalBasis(_) => "legal_basis",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow(Basis),
    /// A stable reason code.
    Deny(&'static str),
}

/// What a partner asks: read `category` of a resident for `purpose`.
pub struct PartnerRead<'a> {
    pub partner_id: &'a str,
    /// The casbin policy lets partners do `data.read`.
    pub role_allows: bool,
    pub purpose: Option<&'a Purpose>,
    pub category: &'a str,
    pub resident_active: bool,
    /// A consent valid now for (resident, purpose, category, this partner).
    pub valid_consent: Option<String>,
}

/// The decision for a partner listing the residents it may read for a
/// purpose (the listing itself discloses only its own pseudonyms).
pub fn partner_list(partner_id: &str, role_allows: bool, purpose: Option<&Purpose>) -> Verdict {
    if !role_allows {
        return Verdict::Deny("role_not_allowed");
    }
    let Some(purpose) = purpose else {
        return Verdict::Deny("unknown_purpose");
    };
    if !purpose.names_recipient(partner_id) {
        return Verdict::Deny("not_a_recipient");
    }
    if purpose.access == PartnerAccess::ExtractsOnly {
        return Verdict::Deny("extracts_only");
    }
    Verdict::Allow(Basis::LegalBasis(purpose.legal_basis))
}

/// The decision for a partner reading one resident's category.
pub fn partner_read(q: &PartnerRead<'_>) -> Verdict {
    if let Verdict::Deny(reason) = partner_list(q.partner_id, q.role_allows, q.purpose) {
        return Verdict::Deny(reason);
    }
    let Some(purpose) = q.purpose else {
        return Verdict::Deny("unknown_purpose");
    };
    if !purpose.covers_category(q.category) {
        return Verdict::Deny("category_outside_purpose");
    }
    if !q.resident_active {
        return Verdict::Deny("resident_not_found");
    }
    if purpose.legal_basis.needs_consent() {
        return match &q.valid_consent {
            Some(id) => Verdict::Allow(Basis::Consent(id.clone())),
            None => Verdict::Deny("no_valid_consent"),
        };
    }
    Verdict::Allow(Basis::LegalBasis(purpose.legal_basis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::category::Categories;
    use crate::domain::purpose::Register;

    #[test]
    fn every_condition_has_its_reason() {
        let reg = Register::builtin(&Categories::builtin().unwrap()).unwrap();
        let base = |purpose: &'static str, category: &'static str| PartnerRead {
            partner_id: "labo-mobilite",
            role_allows: true,
            purpose: reg.get(purpose),
            category,
            resident_active: true,
            valid_consent: Some("c1".into()),
        };
        assert_eq!(
            partner_read(&base("etude-mobilite", "mobility")),
            Verdict::Allow(Basis::Consent("c1".into()))
        );
        let mut q = base("etude-mobilite", "mobility");
        q.valid_consent = None;
        assert_eq!(partner_read(&q), Verdict::Deny("no_valid_consent"));
        assert_eq!(
            partner_read(&base("etude-mobilite", "health")),
            Verdict::Deny("category_outside_purpose")
        );
        assert_eq!(
            partner_read(&base("renovation-energetique", "housing")),
            Verdict::Deny("not_a_recipient")
        );
        assert_eq!(
            partner_read(&base("aide-decision-publique", "housing")),
            Verdict::Deny("extracts_only")
        );
        assert_eq!(
            partner_read(&base("nope", "housing")),
            Verdict::Deny("unknown_purpose")
        );
        let mut q = base("etude-mobilite", "mobility");
        q.role_allows = false;
        assert_eq!(partner_read(&q), Verdict::Deny("role_not_allowed"));
        let renov = PartnerRead {
            partner_id: "renov-energie",
            valid_consent: None,
            ..base("renovation-energetique", "housing")
        };
        assert_eq!(
            partner_read(&renov),
            Verdict::Allow(Basis::LegalBasis(LegalBasis::PublicTask))
        );
    }
}
