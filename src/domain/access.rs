//! The one access decision, as a pure function: facts in (gathered by
//! `crate::service::access` with indexed queries), verdict out, with its basis or
//! its stable reason code. No I/O, time passed in through the facts.

use serde::Serialize;

use super::Role;
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
    /// The role's own remit (the DPO reading the register, an auditor the
    /// audit log): no resident's data is involved.
    Role,
}

impl Basis {
    pub fn reason(&self) -> &'static str {
        match self {
            Basis::OwnData => "own_data",
            Basis::Consent(_) => "consent",
            Basis::Mandate(_) => "mandate",
            Basis::LegalBasis(_) => "legal_basis",
            Basis::Role => "role",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow(Basis),
    /// A stable reason code.
    Deny(&'static str),
}

/// Everything the decision needs, gathered beforehand with indexed queries
/// (`crate::service::access`): who asks, to do what, on whose data, for which
/// purpose, and the facts that may allow it.
pub struct AccessQuery<'a> {
    pub actor_id: &'a str,
    pub role: Role,
    /// The casbin action, e.g. `data.read:own`, `data.read`, `audit.read`.
    pub action: &'a str,
    /// The casbin policy lets `role` do `action`.
    pub role_allows: bool,
    /// Whose data, when the action touches a resident's data.
    pub resident_id: Option<&'a str>,
    pub resident_active: bool,
    pub category: Option<&'a str>,
    /// The purpose asked for (partners always name one); `None` when none
    /// was asked or the register has no such purpose (see `purpose_asked`).
    pub purpose: Option<&'a Purpose>,
    pub purpose_asked: bool,
    /// A consent valid now for (resident, purpose, category, this partner).
    pub valid_consent: Option<String>,
    /// A mandate active now that lets this aidant act for the resident
    /// within the démarche asked for.
    pub active_mandate: Option<String>,
    /// The démarche asked for reaches the category (`policies/demarches.toml`).
    pub demarche_covers_category: bool,
    /// The resident restricted processing (art. 18).
    pub restricted: bool,
    /// The resident objected to this purpose (art. 21).
    pub objected: bool,
}

/// The reason code when the policy does not let a role do an action.
fn role_refusal(action: &str) -> &'static str {
    if action.ends_with(":own") {
        "resident_only"
    } else if action == "audit.read" {
        "auditor_only"
    } else {
        "role_not_allowed"
    }
}

/// The one access decision. Allow with its basis, or deny with a stable
/// reason code; the caller records either in the audit log before anything
/// is disclosed.
pub fn decide(q: &AccessQuery<'_>) -> Verdict {
    if !q.role_allows {
        return Verdict::Deny(role_refusal(q.action));
    }
    match q.role {
        Role::Partner => partner_decision(q),
        Role::Resident => match q.resident_id {
            Some(r) if r != q.actor_id => Verdict::Deny("not_own_data"),
            _ => Verdict::Allow(Basis::OwnData),
        },
        // An aidant learns nothing of whether an id they hold no mandate
        // for is a resident: an unknown id gets the answer of a known one
        // (the démarche's reach, which does not depend on the resident,
        // is judged first).
        Role::Aidant | Role::Referent => match q.resident_id {
            None => Verdict::Allow(Basis::Role),
            Some(_) if !q.demarche_covers_category => Verdict::Deny("outside_demarche"),
            Some(_) if !q.resident_active => Verdict::Deny("no_active_mandate"),
            Some(_) => match &q.active_mandate {
                Some(id) => Verdict::Allow(Basis::Mandate(id.clone())),
                None => Verdict::Deny("no_active_mandate"),
            },
        },
        // The DPO, auditors and admins reach what the policy gives their
        // role (register, audit log, requests), never a resident's data:
        // the policy grants them no data action.
        Role::Dpo | Role::Auditor | Role::Admin => Verdict::Allow(Basis::Role),
    }
}

fn partner_decision(q: &AccessQuery<'_>) -> Verdict {
    if q.purpose.is_none() && !q.purpose_asked {
        return Verdict::Deny("purpose_required");
    }
    let Some(purpose) = q.purpose else {
        return Verdict::Deny("unknown_purpose");
    };
    if !purpose.names_recipient(q.actor_id) {
        return Verdict::Deny("not_a_recipient");
    }
    // Some purposes reach partners only through approved extracts.
    if purpose.access == PartnerAccess::ExtractsOnly {
        return Verdict::Deny("extracts_only");
    }
    let Some(_) = q.resident_id else {
        // Listing: only the partner's own pseudonyms of reachable residents.
        return Verdict::Allow(Basis::LegalBasis(purpose.legal_basis));
    };
    match q.category {
        Some(c) if purpose.covers_category(c) => {}
        _ => return Verdict::Deny("category_outside_purpose"),
    }
    if !q.resident_active {
        return Verdict::Deny("resident_not_found");
    }
    // Restriction: the data is kept but not used; objection: not for this
    // purpose. Both take effect at once.
    if q.restricted {
        return Verdict::Deny("processing_restricted");
    }
    if q.objected {
        return Verdict::Deny("objection");
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

    fn query<'a>(reg: &'a Register, role: Role, action: &'a str) -> AccessQuery<'a> {
        AccessQuery {
            actor_id: "labo-mobilite",
            role,
            action,
            role_allows: true,
            resident_id: Some("r1"),
            resident_active: true,
            category: Some("mobility"),
            purpose: reg.get("etude-mobilite"),
            purpose_asked: true,
            valid_consent: Some("c1".into()),
            active_mandate: None,
            demarche_covers_category: true,
            restricted: false,
            objected: false,
        }
    }

    #[test]
    fn partners_need_purpose_recipient_category_and_consent_or_legal_basis() {
        let reg = Register::builtin(&Categories::builtin().unwrap()).unwrap();
        let base = |purpose: &'static str, category: &'static str| AccessQuery {
            purpose: reg.get(purpose),
            category: Some(category),
            ..query(&reg, Role::Partner, "data.read")
        };
        assert_eq!(
            decide(&base("etude-mobilite", "mobility")),
            Verdict::Allow(Basis::Consent("c1".into()))
        );
        let q = AccessQuery {
            valid_consent: None,
            ..base("etude-mobilite", "mobility")
        };
        assert_eq!(decide(&q), Verdict::Deny("no_valid_consent"));
        assert_eq!(
            decide(&base("etude-mobilite", "health")),
            Verdict::Deny("category_outside_purpose")
        );
        assert_eq!(
            decide(&base("renovation-energetique", "housing")),
            Verdict::Deny("not_a_recipient")
        );
        assert_eq!(
            decide(&base("aide-decision-publique", "housing")),
            Verdict::Deny("extracts_only")
        );
        assert_eq!(
            decide(&base("nope", "housing")),
            Verdict::Deny("unknown_purpose")
        );
        let q = AccessQuery {
            purpose_asked: false,
            ..base("nope", "housing")
        };
        assert_eq!(decide(&q), Verdict::Deny("purpose_required"));
        let q = AccessQuery {
            role_allows: false,
            ..base("etude-mobilite", "mobility")
        };
        assert_eq!(decide(&q), Verdict::Deny("role_not_allowed"));
        let q = AccessQuery {
            resident_active: false,
            ..base("etude-mobilite", "mobility")
        };
        assert_eq!(decide(&q), Verdict::Deny("resident_not_found"));
        let q = AccessQuery {
            restricted: true,
            ..base("etude-mobilite", "mobility")
        };
        assert_eq!(decide(&q), Verdict::Deny("processing_restricted"));
        let q = AccessQuery {
            actor_id: "renov-energie",
            objected: true,
            ..base("renovation-energetique", "housing")
        };
        assert_eq!(decide(&q), Verdict::Deny("objection"));
        let renov = AccessQuery {
            actor_id: "renov-energie",
            valid_consent: None,
            ..base("renovation-energetique", "housing")
        };
        assert_eq!(
            decide(&renov),
            Verdict::Allow(Basis::LegalBasis(LegalBasis::PublicTask))
        );
        // Listing (no resident): the purpose's basis.
        let list = AccessQuery {
            resident_id: None,
            category: None,
            ..base("etude-mobilite", "mobility")
        };
        assert_eq!(
            decide(&list),
            Verdict::Allow(Basis::LegalBasis(LegalBasis::Consent))
        );
    }

    #[test]
    fn residents_reach_only_their_own_data() {
        let reg = Register::builtin(&Categories::builtin().unwrap()).unwrap();
        let own = AccessQuery {
            actor_id: "r1",
            purpose: None,
            purpose_asked: false,
            ..query(&reg, Role::Resident, "data.read:own")
        };
        assert_eq!(decide(&own), Verdict::Allow(Basis::OwnData));
        let other = AccessQuery {
            resident_id: Some("r2"),
            ..own
        };
        assert_eq!(decide(&other), Verdict::Deny("not_own_data"));
        let not_allowed = AccessQuery {
            role: Role::Dpo,
            role_allows: false,
            ..other
        };
        assert_eq!(decide(&not_allowed), Verdict::Deny("resident_only"));
    }

    #[test]
    fn aidants_act_only_under_an_active_mandate() {
        let reg = Register::builtin(&Categories::builtin().unwrap()).unwrap();
        let q = AccessQuery {
            actor_id: "a1",
            purpose: None,
            purpose_asked: false,
            valid_consent: None,
            ..query(&reg, Role::Aidant, "data.read")
        };
        assert_eq!(decide(&q), Verdict::Deny("no_active_mandate"));
        let q = AccessQuery {
            active_mandate: Some("m1".into()),
            ..q
        };
        assert_eq!(decide(&q), Verdict::Allow(Basis::Mandate("m1".into())));
        let q = AccessQuery {
            resident_active: false,
            ..q
        };
        assert_eq!(decide(&q), Verdict::Deny("no_active_mandate"));
        let q = AccessQuery {
            resident_active: true,
            demarche_covers_category: false,
            ..q
        };
        assert_eq!(decide(&q), Verdict::Deny("outside_demarche"));
    }

    #[test]
    fn policy_refusals_have_stable_codes() {
        assert_eq!(role_refusal("audit.read"), "auditor_only");
        assert_eq!(role_refusal("consent.give:own"), "resident_only");
        assert_eq!(role_refusal("data.read"), "role_not_allowed");
    }
}
