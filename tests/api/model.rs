//! The one access decision against a small reference model (issue 19):
//! proptest draws an actor, a resident (active, erased or unknown), a
//! purpose and a category, a consent (none, given under the current or an
//! older notice, expired, refused, withdrawn), a restriction, an objection
//! and a mandate (none, live, revoked, expired, another démarche, another
//! structure), stores that state through the real store, and asks
//! `coffre::service::access::evaluate` — the function every route goes through. The
//! model below is written from BRIEF's rules and the register's text
//! (`policies/*.toml`), not from the code.

use std::collections::BTreeMap;

use coffre::domain::access::{Denial, Verdict};
use coffre::domain::{Demarche, Role};
use coffre::service::access::{AccessRequest, evaluate};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::support::{TestApp, each_backend_setup};

const AIDANT: &str = "a1d00000-0000-4000-8000-000000000001";
const DPO: &str = "a1d00000-0000-4000-8000-000000000004";
const AUDITOR: &str = "a1d00000-0000-4000-8000-000000000005";
const PARTNERS: [&str; 3] = ["renov-energie", "labo-mobilite", "observatoire-sante"];
const CATEGORIES: [&str; 8] = [
    "identity",
    "contact",
    "housing",
    "household",
    "mobility",
    "income",
    "health",
    "culture",
];
const DEMARCHES: [&str; 3] = ["logement", "famille", "social"];

/// The register, as its text says.
#[derive(Debug)]
struct PurposeText {
    basis: String,
    categories: Vec<String>,
    recipients: Vec<String>,
    access: String,
}

fn register() -> BTreeMap<String, PurposeText> {
    let doc: toml::Value = toml::from_str(include_str!("../../policies/purposes.toml")).unwrap();
    let mut out = BTreeMap::new();
    for p in doc["purpose"].as_array().unwrap() {
        let list = |k: &str| -> Vec<String> {
            p[k].as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        out.insert(
            p["id"].as_str().unwrap().to_string(),
            PurposeText {
                basis: p["legal_basis"].as_str().unwrap().to_string(),
                categories: list("categories"),
                recipients: list("recipients"),
                access: p["access"].as_str().unwrap().to_string(),
            },
        );
    }
    out
}

fn demarches() -> BTreeMap<String, Vec<String>> {
    let doc: toml::Value = toml::from_str(include_str!("../../policies/demarches.toml")).unwrap();
    doc.as_table()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v["categories"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

#[derive(Clone, Debug)]
enum Actor {
    Partner(usize),
    Aidant,
    /// The resident themself (`true`) or another one.
    Resident(bool),
    Dpo,
    Auditor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Existence {
    Active,
    Erased,
    Unknown,
}

#[derive(Clone, Debug)]
enum ConsentCase {
    None,
    /// Categories given (a subset of the purpose's), days left (negative:
    /// expired), under the current notice or not.
    Given(Vec<usize>, i64, bool),
    Refused,
    Withdrawn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MandateCase {
    None,
    Live,
    Revoked,
    Expired,
    /// Live, but with another structure.
    OtherStructure,
}

#[derive(Clone, Debug)]
struct Case {
    actor: Actor,
    existence: Existence,
    purpose: usize,
    category: usize,
    consent: ConsentCase,
    restricted: bool,
    objected: bool,
    mandate: MandateCase,
    /// The démarche the mandate holds and the one asked for.
    held: usize,
    asked: usize,
    /// Draws biased towards allows (else most cases are trivial refusals):
    /// the category among the purpose's, the partner among its recipients,
    /// the consent covering the category, the démarche asked the one held.
    category_from_purpose: bool,
    partner_from_purpose: bool,
    consent_covers: bool,
}

fn case() -> impl Strategy<Value = Case> {
    let actor = prop_oneof![
        4 => (0..PARTNERS.len()).prop_map(Actor::Partner),
        3 => Just(Actor::Aidant),
        1 => any::<bool>().prop_map(Actor::Resident),
        1 => Just(Actor::Dpo),
        1 => Just(Actor::Auditor),
    ];
    let existence = prop_oneof![
        6 => Just(Existence::Active),
        1 => Just(Existence::Erased),
        1 => Just(Existence::Unknown),
    ];
    let consent = prop_oneof![
        2 => Just(ConsentCase::None),
        5 => (
            proptest::collection::vec(0..8usize, 1..4),
            prop_oneof![Just(-30i64), Just(-1), Just(1), Just(200)],
            prop::bool::weighted(0.7),
        )
            .prop_map(|(c, d, n)| ConsentCase::Given(c, d, n)),
        1 => Just(ConsentCase::Refused),
        1 => Just(ConsentCase::Withdrawn),
    ];
    let mandate = prop_oneof![
        2 => Just(MandateCase::None),
        4 => Just(MandateCase::Live),
        1 => Just(MandateCase::Revoked),
        1 => Just(MandateCase::Expired),
        1 => Just(MandateCase::OtherStructure),
    ];
    (
        actor,
        existence,
        0..9usize,
        0..CATEGORIES.len(),
        consent,
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        mandate,
        0..DEMARCHES.len(),
        0..DEMARCHES.len(),
        (
            prop::bool::weighted(0.8),
            prop::bool::weighted(0.8),
            prop::bool::weighted(0.7),
            prop::bool::weighted(0.7),
        ),
    )
        .prop_map(
            |(
                actor,
                existence,
                purpose,
                category,
                consent,
                restricted,
                objected,
                mandate,
                held,
                asked,
                (category_from_purpose, partner_from_purpose, consent_covers, same_demarche),
            )| Case {
                actor,
                existence,
                purpose,
                category,
                consent,
                restricted,
                objected,
                mandate,
                held,
                asked: if same_demarche { held } else { asked },
                category_from_purpose,
                partner_from_purpose,
                consent_covers,
            },
        )
}

/// BRIEF's rules. `purpose` is `None` for an id the register lacks.
fn model(
    c: &Case,
    purpose: Option<&PurposeText>,
    partner: &str,
    category: &str,
    consent_categories: &[String],
    demarche_reach: &BTreeMap<String, Vec<String>>,
) -> bool {
    let active = c.existence == Existence::Active;
    match &c.actor {
        // A resident reaches their own data, never another's.
        Actor::Resident(own) => *own,
        // The DPO and auditors never read a resident's data.
        Actor::Dpo | Actor::Auditor => false,
        // An aidant: a live mandate of their current structure for this
        // resident, within a démarche that reaches the category.
        Actor::Aidant => {
            let asked = DEMARCHES[c.asked];
            active
                && demarche_reach[asked].iter().any(|x| x == category)
                && c.mandate == MandateCase::Live
                && c.held == c.asked
        }
        // A partner: a purpose of the register naming it, open to direct
        // reads, using the category; the resident active, not restricting
        // nor objecting; and, for a purpose resting on consent, a consent
        // given under the purpose's current notice, not expired, covering
        // the category.
        Actor::Partner(_) => {
            let Some(purpose) = purpose else {
                return false;
            };
            let on_consent = matches!(purpose.basis.as_str(), "consent" | "explicit_consent");
            let consented = match &c.consent {
                ConsentCase::Given(_, days, current_notice) => {
                    *days > 0 && *current_notice && consent_categories.iter().any(|x| x == category)
                }
                _ => false,
            };
            purpose.recipients.iter().any(|r| r == partner)
                && purpose.access == "records"
                && purpose.categories.iter().any(|x| x == category)
                && active
                && !c.restricted
                && !c.objected
                && (!on_consent || consented)
        }
    }
}

async fn run_case(
    app: &TestApp,
    n: usize,
    c: &Case,
    register: &BTreeMap<String, PurposeText>,
    reach: &BTreeMap<String, Vec<String>>,
) -> Result<bool, TestCaseError> {
    let now = app.clock.now();
    let resident = format!("0c0c0000-0000-4000-8000-{n:012}");
    let ids: Vec<&String> = register.keys().collect();
    let (purpose_id, purpose) = match ids.get(c.purpose) {
        Some(id) => (id.to_string(), register.get(*id)),
        None => ("not-in-the-register".to_string(), None),
    };
    let category = match purpose {
        Some(p) if c.category_from_purpose => {
            p.categories[c.category % p.categories.len()].as_str()
        }
        _ => CATEGORIES[c.category],
    };
    let partner = match (&c.actor, purpose) {
        (Actor::Partner(i), Some(p)) if c.partner_from_purpose && !p.recipients.is_empty() => {
            p.recipients[i % p.recipients.len()].as_str()
        }
        (Actor::Partner(i), _) => PARTNERS[*i],
        _ => "",
    };
    if c.existence != Existence::Unknown {
        app.store
            .insert_resident(&crate::support::resident_id(&resident), now)
            .await
            .unwrap();
    }
    // A consent, stored as the registry stores one.
    let mut consent_categories = Vec::new();
    if let (Some(p), true) = (purpose, c.existence != Existence::Unknown) {
        let state = match &c.consent {
            ConsentCase::None => None,
            ConsentCase::Given(..) => Some("given"),
            ConsentCase::Refused => Some("refused"),
            ConsentCase::Withdrawn => Some("withdrawn"),
        };
        if let Some(state) = state {
            let (until, notice) = match &c.consent {
                ConsentCase::Given(cats, days, current) => {
                    consent_categories = cats
                        .iter()
                        .map(|i| CATEGORIES[*i].to_string())
                        .chain(c.consent_covers.then(|| category.to_string()))
                        .filter(|x| p.categories.contains(x))
                        .collect();
                    consent_categories.sort();
                    consent_categories.dedup();
                    let notice = if *current {
                        app.state
                            .register
                            .get(&purpose_id)
                            .unwrap()
                            .notice_version
                            .clone()
                    } else {
                        "an-older-notice".to_string()
                    };
                    (Some(now + days * 86_400), notice)
                }
                _ => (
                    None,
                    app.state
                        .register
                        .get(&purpose_id)
                        .unwrap()
                        .notice_version
                        .clone(),
                ),
            };
            let id = crate::support::cid(&uuid::Uuid::new_v4().to_string());
            let row = coffre::storage::ConsentRow {
                id: id.clone(),
                resident_id: crate::support::resident_id(resident.clone()),
                purpose: crate::support::purpose_id(&purpose_id),
                state: state.parse().unwrap(),
                categories: crate::support::categories(&consent_categories.join(",")),
                valid_until: until,
                notice_version: notice.clone(),
                updated_at: now,
                seq: 1,
            };
            let event = coffre::storage::ConsentEventRow {
                id: uuid::Uuid::new_v4().to_string(),
                consent_id: id,
                purpose: crate::support::purpose_id(&purpose_id),
                state: state.parse().unwrap(),
                categories: row.categories.clone(),
                valid_until: until,
                notice_version: notice,
                actor_id: resident.clone(),
                actor_role: coffre::domain::Role::Resident,
                structure_id: None,
                audit_index: 0,
                receipt: "-".into(),
                created_at: now,
            };
            app.store
                .record_consent_event(&row, None, &event)
                .await
                .unwrap();
        }
    }
    if c.existence != Existence::Unknown {
        if c.restricted {
            app.store
                .set_restricted(&crate::support::resident_id(&resident), Some(now), &[])
                .await
                .unwrap();
        }
        if c.objected {
            app.store
                .add_objection(
                    &crate::support::resident_id(&resident),
                    coffre::domain::rights::ObjectionTo::Purpose(&crate::support::purpose_id(
                        &purpose_id,
                    )),
                    now,
                )
                .await
                .unwrap();
        }
        // A mandate.
        if c.mandate != MandateCase::None {
            let structure_id = if c.mandate == MandateCase::OtherStructure {
                "model-other-structure"
            } else {
                coffre::demo::STRUCTURE_CCAS
            };
            let structure = app
                .store
                .find_structure(&crate::support::sid(structure_id))
                .await
                .unwrap()
                .unwrap();
            let made_at = if c.mandate == MandateCase::Expired {
                now - 40 * 86_400
            } else {
                now
            };
            let (m, _) = coffre::service::mandates::create(
                &app.state,
                coffre::service::mandates::NewMandate {
                    aidant_id: &crate::support::aid(AIDANT),
                    structure: &structure,
                    resident_id: &crate::support::resident_id(&resident),
                    demarches: &[Demarche::parse(DEMARCHES[c.held]).unwrap()],
                    duration_days: 31,
                    renews: None,
                },
                made_at,
            )
            .await
            .unwrap();
            if c.mandate == MandateCase::Revoked {
                app.store
                    .revoke_authorisations(&m.id, None, "resident", now, &[])
                    .await
                    .unwrap();
            }
        }
        if c.existence == Existence::Erased {
            app.store
                .erase_resident(&crate::support::resident_id(&resident), now, &[])
                .await
                .unwrap();
        }
    }

    let other = "0c0c0000-0000-4000-8000-ffffffffffff";
    let (actor, role, asked_resident, own) = match &c.actor {
        Actor::Partner(_) => (partner, Role::Partner, resident.as_str(), false),
        Actor::Aidant => (AIDANT, Role::Aidant, resident.as_str(), false),
        Actor::Resident(true) => (resident.as_str(), Role::Resident, resident.as_str(), true),
        Actor::Resident(false) => (other, Role::Resident, resident.as_str(), true),
        Actor::Dpo => (DPO, Role::Dpo, resident.as_str(), false),
        Actor::Auditor => (AUDITOR, Role::Auditor, resident.as_str(), false),
    };
    let ccas = crate::support::sid(coffre::demo::STRUCTURE_CCAS);
    let demarche = Demarche::parse(DEMARCHES[c.asked]).unwrap();
    let req = AccessRequest {
        own,
        resident_id: Some(asked_resident),
        category: Some(category),
        purpose_id: matches!(c.actor, Actor::Partner(_)).then_some(purpose_id.as_str()),
        structure_id: matches!(c.actor, Actor::Aidant).then_some(&ccas),
        demarche: matches!(c.actor, Actor::Aidant).then_some(demarche),
        ..AccessRequest::new(actor, role, "data.read")
    };
    let (verdict, _) = evaluate(&app.state, &req).await.unwrap();
    let allowed = matches!(verdict, Verdict::Allow(_));
    let expected = model(c, purpose, partner, category, &consent_categories, reach);
    prop_assert_eq!(
        allowed,
        expected,
        "case {:?}: decision {:?}, model says {}",
        c,
        verdict,
        expected
    );
    Ok(allowed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_agrees_with_a_reference_model_of_the_rules() {
    each_backend_setup(
        crate::support::Setup {
            demo: true,
            ..Default::default()
        },
        |app| async move {
            app.store
                .insert_structure(
                    &coffre::storage::StructureRow {
                        id: crate::support::sid("model-other-structure"),
                        siret: "73282932000074".into(),
                        name: "Other".into(),
                        allowed_demarches: crate::support::demarches(&DEMARCHES.join(",")),
                        active: true,
                    },
                    app.clock.now(),
                )
                .await
                .unwrap();
            let register = register();
            let reach = demarches();
            let cases = if app.backend == "sqlite" { 2000 } else { 300 };
            let mut runner = TestRunner::new(Config {
                cases,
                failure_persistence: None,
                ..Config::default()
            });
            let counter = std::sync::atomic::AtomicUsize::new(0);
            let handle = tokio::runtime::Handle::current();
            let allowed = std::sync::atomic::AtomicUsize::new(0);
            let result = tokio::task::block_in_place(|| {
                runner.run(&case(), |c| {
                    let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    handle.block_on(async {
                        if run_case(&app, n, &c, &register, &reach).await? {
                            allowed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Ok(())
                    })
                })
            });
            if let Err(e) = result {
                panic!("{e}");
            }
            // The draw reaches both outcomes often enough to mean something.
            let allowed = allowed.load(std::sync::atomic::Ordering::SeqCst);
            eprintln!("MODEL {} allowed {allowed} of {cases} cases", app.backend);
            assert!(
                allowed > cases as usize / 20 && allowed < cases as usize / 2,
                "{allowed} allowed of {cases}"
            );
        },
    )
    .await;
}

/// Facts read with a partner's record are used by the decision only for
/// the very (resident, purpose) they were read for: favourable facts of
/// another resident, or of another purpose, never decide (kills the
/// mutants cargo-mutants left on that filter).
#[tokio::test]
async fn facts_handed_in_for_another_resident_or_purpose_are_not_used() {
    crate::support::each_backend(|app| async move {
        let now = app.clock.now();
        let resident = "0c0c0000-0000-4000-8000-aaaaaaaaaaaa";
        app.store
            .insert_resident(&crate::support::resident_id(resident), now)
            .await
            .unwrap();
        let purpose = app.state.register.get("etude-mobilite").unwrap();
        // Everything a read would need, for someone else, or for another
        // purpose of the same resident.
        let favourable = |r: &str, p: &str| coffre::storage::PartnerReadFacts {
            resident_id: crate::support::resident_id(r),
            purpose: Some(crate::support::purpose_id(p)),
            resident_active: true,
            consent: Some(coffre::storage::ConsentForDecision {
                id: crate::support::cid("forged"),
                state: "given".parse().unwrap(),
                categories: crate::support::categories("mobility,household,housing"),
                valid_until: Some(now + 86_400),
                notice_version: purpose.notice_version.clone(),
            }),
            restricted: false,
            objected: false,
        };
        for facts in [
            favourable("0c0c0000-0000-4000-8000-bbbbbbbbbbbb", "etude-mobilite"),
            favourable(resident, "agenda-culturel"),
        ] {
            let req = AccessRequest {
                resident_id: Some(resident),
                category: Some("mobility"),
                purpose_id: Some("etude-mobilite"),
                partner_facts: Some(facts),
                ..AccessRequest::new("labo-mobilite", Role::Partner, "data.read")
            };
            let (verdict, _) = evaluate(&app.state, &req).await.unwrap();
            assert_eq!(verdict, Verdict::Deny(Denial::NoValidConsent));
        }
        // The same facts for the very pair asked are used.
        let req = AccessRequest {
            resident_id: Some(resident),
            category: Some("mobility"),
            purpose_id: Some("etude-mobilite"),
            partner_facts: Some(favourable(resident, "etude-mobilite")),
            ..AccessRequest::new("labo-mobilite", Role::Partner, "data.read")
        };
        let (verdict, _) = evaluate(&app.state, &req).await.unwrap();
        assert!(matches!(verdict, Verdict::Allow(_)), "{verdict:?}");
    })
    .await;
}

/// The decision's record names a resident only when one exists (a probe for
/// an unknown id leaves no trace of it), and a refusal says why in words.
#[tokio::test]
async fn a_refusal_names_no_unknown_resident_and_says_why() {
    crate::support::each_backend(|app| async move {
        let known = "0b9a3c1e-5d6f-4a7b-8c9d-000000000003";
        let unknown = "0c0c0000-0000-4000-8000-cccccccccccc";
        for (resident, named) in [(unknown, false), (known, true)] {
            let req = AccessRequest {
                resident_id: Some(resident),
                category: Some("housing"),
                structure_id: Some(&crate::support::sid(coffre::demo::STRUCTURE_CCAS)),
                demarche: Some(Demarche::Logement),
                ..AccessRequest::new(AIDANT, Role::Aidant, "data.read")
            };
            let e = coffre::service::access::decide(&app.state, req)
                .await
                .unwrap_err();
            let (code, status) = e.code_and_status();
            assert_eq!((code, status.as_u16()), ("no_active_mandate", 403));
            assert!(e.to_string().contains("mandat"), "{e}");
            let entry = app.last_entry().await;
            assert_eq!(entry.resident_id.as_deref(), named.then_some(resident));
            assert_eq!(entry.on_behalf_of.as_deref(), named.then_some(resident));
        }
    })
    .await;
}
