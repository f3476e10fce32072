//! The demo territory that `coffre serve --demo` seeds into an empty
//! database, and the personas of the development login.
//!
//! Everyone here is fictional. Demo mode is refused on non-loopback
//! addresses, so the well-known demo partner secrets below never guard
//! anything real.

use serde::Serialize;
use utoipa::ToSchema;

use serde_json::json;

use crate::AppState;
use crate::domain::{Demarche, Role, Timestamp};
use crate::error::{AppError, AppResult};
use crate::storage::{AgentRow, PartnerRow, StorageResult, Store, StructureRow};

#[derive(Clone, Copy, Debug)]
pub struct Persona {
    pub id: &'static str,
    pub role: Role,
    pub name: &'static str,
}

pub const RESIDENTS: [Persona; 3] = [
    Persona {
        id: "0b9a3c1e-5d6f-4a7b-8c9d-000000000001",
        role: Role::Resident,
        name: "Awa Diallo (usagère)",
    },
    Persona {
        id: "0b9a3c1e-5d6f-4a7b-8c9d-000000000002",
        role: Role::Resident,
        name: "Jean-Pierre Martin (usager)",
    },
    Persona {
        id: "0b9a3c1e-5d6f-4a7b-8c9d-000000000003",
        role: Role::Resident,
        name: "Lucie Bernard (usagère)",
    },
];

/// The instance mark of a database seeded by the demo.
pub const DEMO_MARK: &str = "demo";

pub const STRUCTURE_CCAS: &str = "5e1f0000-0000-4000-8000-00000000cca5";

pub const AGENTS: [Persona; 5] = [
    Persona {
        id: "a1d00000-0000-4000-8000-000000000001",
        role: Role::Aidant,
        name: "Camille Roux (aidante, CCAS)",
    },
    Persona {
        id: "a1d00000-0000-4000-8000-000000000002",
        role: Role::Aidant,
        name: "Karim Benali (aidant, CCAS)",
    },
    Persona {
        id: "a1d00000-0000-4000-8000-000000000003",
        role: Role::Referent,
        name: "Sophie Lambert (référente, CCAS)",
    },
    Persona {
        id: "a1d00000-0000-4000-8000-000000000004",
        role: Role::Dpo,
        name: "Claire Fontaine (déléguée à la protection des données)",
    },
    Persona {
        id: "a1d00000-0000-4000-8000-000000000005",
        role: Role::Auditor,
        name: "Auditeur citoyen",
    },
];

/// A demo partner: an OAuth2 client whose (demo-only) secret is printed at
/// start so a newcomer can ask for a token.
#[derive(Clone, Copy, Debug)]
pub struct DemoPartner {
    pub id: &'static str,
    pub name: &'static str,
    pub client_id: &'static str,
    pub client_secret: &'static str,
    /// The partner's age identity (published: demo only), so a newcomer can
    /// decrypt an extract; its recipient is registered with the partner.
    pub age_identity: &'static str,
    pub age_recipient: &'static str,
}

pub const PARTNERS: [DemoPartner; 2] = [
    DemoPartner {
        id: "labo-mobilite",
        name: "Laboratoire d'études de la mobilité (université)",
        client_id: "demo-labo-mobilite",
        client_secret: "demo-secret-labo-mobilite-not-for-production",
        age_identity: "AGE-SECRET-KEY-1GQLPJM5Q9LEJ5UE56CHRNRUFCC4Z6HP6GVQ8ZKDLHULFV2J66Y9QYDUKW7",
        age_recipient: "age196qmptqqmzxszlc2s5h9jdq8a0fzlyg8a86gkythyt08jtnlrfasmrztrn",
    },
    DemoPartner {
        id: "renov-energie",
        name: "Guichet rénovation énergétique",
        client_id: "demo-renov-energie",
        client_secret: "demo-secret-renov-energie-not-for-production",
        age_identity: "AGE-SECRET-KEY-1DJVHAERE0YQ88E09H5KL4GPFX9HVGKDRA9SDCAPYVH58HJ3TFZCS28RD5T",
        age_recipient: "age1aa5hcahrcyn7lyjg7hzy6gjzf54uut5l3u6wycxwtyvkughqqf3skqta67",
    },
];

/// A data source of the demo (the built-in register's two), with its
/// published client credentials.
pub struct DemoSource {
    pub id: &'static str,
    pub name: &'static str,
    pub client_id: &'static str,
    pub client_secret: &'static str,
}

pub const SOURCES: [DemoSource; 2] = [
    DemoSource {
        id: "regie-eau",
        name: "Régie des eaux de l'agglomération",
        client_id: "src-demo-regie-eau",
        client_secret: "demo-secret-regie-eau-not-for-production",
    },
    DemoSource {
        id: "energie-locale",
        name: "Énergie Locale (fournisseur d'électricité)",
        client_id: "src-demo-energie-locale",
        client_secret: "demo-secret-energie-locale-not-for-production",
    },
];

/// One entry of `GET /dev/personas`.
#[derive(Serialize, ToSchema)]
pub struct PersonaView {
    pub id: String,
    pub role: Role,
    pub name: String,
    /// Partners and sources only: the OAuth2 client credentials of the demo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Partners only: the age identity that decrypts their extracts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_identity: Option<String>,
}

pub fn personas() -> Vec<PersonaView> {
    let people = RESIDENTS.iter().chain(AGENTS.iter()).map(|p| PersonaView {
        id: p.id.into(),
        role: p.role,
        name: p.name.into(),
        client_id: None,
        client_secret: None,
        age_identity: None,
    });
    let partners = PARTNERS.iter().map(|p| PersonaView {
        id: p.id.into(),
        role: Role::Partner,
        name: p.name.into(),
        client_id: Some(p.client_id.into()),
        client_secret: Some(p.client_secret.into()),
        age_identity: Some(p.age_identity.into()),
    });
    let sources = SOURCES.iter().map(|s| PersonaView {
        id: s.id.into(),
        role: Role::Source,
        name: s.name.into(),
        client_id: Some(s.client_id.into()),
        client_secret: Some(s.client_secret.into()),
        age_identity: None,
    });
    people.chain(partners).chain(sources).collect()
}

/// A person one can log in as through `POST /dev/login` (partners use
/// their client credentials instead).
pub fn find_login_persona(id: &str) -> Option<Persona> {
    RESIDENTS
        .iter()
        .chain(AGENTS.iter())
        .find(|p| p.id == id)
        .copied()
}

/// Seeds the demo territory into an empty database, with the residents' data
/// sealed in the vault when the keys are loaded.
pub async fn seed_if_empty(state: &AppState) -> AppResult<bool> {
    let now = state.clock.now();
    if !seed_directory(state.store.as_ref(), now).await? {
        return Ok(false);
    }
    let Ok(vault) = state.vault() else {
        return Ok(true);
    };
    let data = [
        (
            RESIDENTS[0].id,
            json!({"given_name": "Awa", "family_name": "Diallo", "birthdate": "1987-04-12", "gender": "female", "birthcountry": "99100"}),
            json!({"email": "awa.diallo@example.org", "phone": "0612345678", "postal_address": "12 rue des Platanes, 31310 commune 31901", "commune_insee": "31901"}),
            json!({"tenure": "social_tenant", "dwelling_type": "flat", "surface_m2": 64, "construction_year": 1972, "commune_insee": "31901", "postal_code": "31310"}),
        ),
        (
            RESIDENTS[1].id,
            json!({"given_name": "Jean-Pierre", "family_name": "Martin", "birthdate": "1946-11-02", "gender": "male", "birthcountry": "99100"}),
            json!({"phone": "0561000000", "postal_address": "3 chemin du Mas, 31390 commune 31909", "commune_insee": "31909", "preferred_channel": "post"}),
            json!({"tenure": "owner", "dwelling_type": "house", "surface_m2": 95, "construction_year": 1958, "commune_insee": "31909", "postal_code": "31390"}),
        ),
        (
            RESIDENTS[2].id,
            json!({"given_name": "Lucie", "family_name": "Bernard", "birthdate": "1999-06-30", "gender": "female", "birthcountry": "99100"}),
            json!({"email": "lucie.bernard@example.org", "postal_address": "8 allée des Tilleuls, 31310 commune 31901", "commune_insee": "31901"}),
            json!({"tenure": "tenant", "dwelling_type": "flat", "surface_m2": 38, "construction_year": 2004, "commune_insee": "31901", "postal_code": "31310"}),
        ),
    ];
    for (id, identity, contact, housing) in data {
        for (category, record) in [
            ("identity", identity),
            ("contact", contact),
            ("housing", housing),
        ] {
            let c = vault
                .categories()
                .category(category)
                .map_err(crate::service::vault::VaultError::from)?;
            vault.write(&demo_id(id)?, &c, &record, now).await?;
        }
    }
    seed_consents(state).await?;
    seed_mandates(state, now).await?;
    seed_sources(state, now).await?;
    Ok(true)
}

/// The sources' side of the demo: the residents' pivot identities (their
/// keyed digests, birthplace Toulouse) and Lucie linked to the electricity
/// supplier.
async fn seed_sources(state: &AppState, now: Timestamp) -> AppResult<()> {
    use crate::domain::deposit::PivotIdentity;
    let pivots = [
        (RESIDENTS[0].id, "Diallo", "Awa", "1987-04-12", "female"),
        (
            RESIDENTS[1].id,
            "Martin",
            "Jean-Pierre",
            "1946-11-02",
            "male",
        ),
        (RESIDENTS[2].id, "Bernard", "Lucie", "1999-06-30", "female"),
    ];
    for (id, family, given, birthdate, gender) in pivots {
        let pivot = PivotIdentity {
            family_name: family.into(),
            given_names: given.into(),
            birthdate: birthdate.into(),
            birthplace: "31555".into(),
            birthcountry: "99100".into(),
            gender: gender.into(),
        };
        crate::service::deposits::register_pivot(state, &demo_id(id)?, &pivot).await?;
    }
    // Lucie linked the electricity supplier; the deposits are the
    // newcomer's to send (README, "Data sources"), by her handle or by a
    // resident's pivot for the water utility.
    crate::service::sources::link_for_demo(
        state,
        "energie-locale",
        &demo_id(RESIDENTS[2].id)?,
        now,
    )
    .await?;
    Ok(())
}

/// The demo agents' TOTP secret (published: demo only). Any authenticator
/// app takes the URI the demo banner prints.
pub const DEMO_TOTP_SECRET: &[u8] = b"coffre-demo-totp-not-for-production";

/// TOTP devices for the demo's aidants and référente, and one mandate: Awa
/// asked the CCAS for help with housing and papers, for a year.
async fn seed_mandates(state: &AppState, now: Timestamp) -> AppResult<()> {
    for agent in AGENTS
        .iter()
        .filter(|a| matches!(a.role, Role::Aidant | Role::Referent))
    {
        crate::service::mandates::enroll_totp_secret(
            state,
            &demo_id(agent.id)?,
            DEMO_TOTP_SECRET,
            now,
        )
        .await?;
    }
    let structure = state
        .store
        .find_structure(&demo_id(STRUCTURE_CCAS)?)
        .await?
        .ok_or_else(|| crate::error::AppError::internal("demo structure missing"))?;
    // The CCAS's opening hours and alert mailbox, before its first
    // mandate; then one alert for its référent to review (raised below
    // whatever the hour the demo starts at).
    state
        .store
        .set_alert_rules(
            &structure.id,
            &crate::storage::AlertRulesRow {
                hours: "mon-fri 08:30-12:00,13:30-17:30".into(),
                burst_max: i64::from(crate::domain::alert::DEFAULT_BURST_MAX),
                burst_minutes: i64::from(crate::domain::alert::DEFAULT_BURST_MINUTES),
                // Mailed only when the demo runs with `smtp_url`.
                alert_email: Some("alertes-ccas@example.org".into()),
                // No commune check in the demo: its residents live in two
                // communes and every persona may be helped by the CCAS.
                communes: Default::default(),
            },
            true,
            true,
            now,
        )
        .await?;
    crate::service::mandates::create(
        state,
        crate::service::mandates::NewMandate {
            aidant_id: &demo_id(AGENTS[0].id)?,
            structure: &structure,
            resident_id: &demo_id(RESIDENTS[0].id)?,
            demarches: &[Demarche::Logement, Demarche::Papiers],
            duration_days: 365,
            renews: None,
        },
        now,
    )
    .await?;
    if state
        .store
        .structure_alerts(&structure.id, 1)
        .await?
        .is_empty()
    {
        let mandate = state
            .store
            .mandates_of_resident(&demo_id(RESIDENTS[0].id)?)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| crate::error::AppError::internal("demo mandate missing"))?;
        state
            .store
            .insert_alert(&crate::storage::AlertRow::new(
                &structure.id,
                &demo_id(AGENTS[0].id)?,
                crate::domain::alert::AlertKind::OutOfHours,
                format!("mandate:{}", mandate.id),
                now,
            ))
            .await?;
    }
    Ok(())
}

/// Given, refused and withdrawn consents, as the residents themselves did.
async fn seed_consents(state: &AppState) -> AppResult<()> {
    use crate::domain::consent::GiveRequest;
    use crate::service::consents::{Actor, Decision, decide};
    let give = || Decision::Give(GiveRequest::default());
    let script = [
        (RESIDENTS[0].id, "etude-mobilite", give()),
        (RESIDENTS[0].id, "agenda-culturel", give()),
        (RESIDENTS[1].id, "etude-mobilite", give()),
        (RESIDENTS[1].id, "etude-mobilite", Decision::Withdraw),
        (RESIDENTS[1].id, "inventaire-arbres-patrimoine", give()),
        (RESIDENTS[2].id, "agenda-culturel", Decision::Refuse),
        (
            RESIDENTS[2].id,
            "sante-territoriale",
            Decision::Give(GiveRequest {
                explicit: true,
                ..GiveRequest::default()
            }),
        ),
    ];
    for (resident, purpose, decision) in script {
        let actor = Actor {
            id: resident.to_string(),
            role: Role::Resident,
            structure_id: None,
            request_id: None,
        };
        let purpose = crate::service::consents::purpose(state, purpose)?;
        decide(state, &actor, &demo_id(resident)?, purpose, decision).await?;
    }
    Ok(())
}

/// Seeds people and organisations when the database holds no resident and
/// no structure. Returns whether anything was seeded.
pub async fn seed_directory(store: &dyn Store, now: Timestamp) -> StorageResult<bool> {
    if store.has_residents().await? || !store.list_structures().await?.is_empty() {
        return Ok(false);
    }
    // Marked first: `serve --demo` later accepts this database as its own.
    store.set_instance_mark(DEMO_MARK, now).await?;
    store
        .insert_structure(
            &StructureRow {
                id: demo_id(STRUCTURE_CCAS)?,
                siret: "26340001200013".into(),
                name: "CCAS de l'Agglo (démo)".into(),
                allowed_demarches: Demarche::ALL.to_vec(),
                active: true,
            },
            now,
        )
        .await?;
    for p in RESIDENTS {
        store.insert_resident(&demo_id(p.id)?, now).await?;
    }
    for p in AGENTS {
        let structure_id = match p.role {
            Role::Aidant | Role::Referent => Some(demo_id(STRUCTURE_CCAS)?),
            _ => None,
        };
        store
            .insert_agent(
                &AgentRow {
                    id: demo_id(p.id)?,
                    role: p.role,
                    display_name: p.name.into(),
                    structure_id,
                    active: true,
                    can_create_mandates: true,
                },
                None,
                now,
            )
            .await?;
    }
    for p in PARTNERS {
        store
            .insert_partner(
                &PartnerRow {
                    id: demo_id(p.id)?,
                    name: p.name.into(),
                    client_id: p.client_id.into(),
                    client_secret_hash: crate::crypto::sha256_hex(p.client_secret),
                    age_recipient: Some(p.age_recipient.into()),
                    active: true,
                    client_jwks: None,
                },
                now,
            )
            .await?;
    }
    for s in SOURCES {
        store
            .insert_source_client(
                &crate::storage::SourceClientRow {
                    id: s.id.into(),
                    name: s.name.into(),
                    client_id: s.client_id.into(),
                    client_secret_hash: crate::crypto::sha256_hex(s.client_secret),
                    active: true,
                },
                now,
            )
            .await?;
    }
    Ok(true)
}

/// Residents of the demo's synthetic territory, seeded beside the personas
/// by `coffre serve --demo` (the same generator as `coffre seed`).
pub const TERRITORY_RESIDENTS: u64 = 300;

/// An extract request waiting for the DPO: the mobility lab asks how many
/// residents commute each way, by commune (aggregated, no cell under 11).
pub async fn request_pending_extract(state: &AppState, now: Timestamp) -> AppResult<()> {
    let req: crate::service::extracts::ExtractRequest = serde_json::from_value(json!({
        "purpose": "etude-mobilite",
        "kind": "aggregate",
        "categories": ["mobility", "housing"],
        "group_by": ["housing.commune_insee", "mobility.commute_mode"],
    }))
    .map_err(|e| AppError::internal(format!("demo extract: {e}")))?;
    crate::service::extracts::request(state, PARTNERS[0].id, req, now).await?;
    Ok(())
}

/// A demo persona's or structure's id, typed (every one of them is a valid
/// id; a broken constant is an integrity error, not a panic).
fn demo_id<T: std::str::FromStr<Err = crate::domain::IdError>>(s: &str) -> StorageResult<T> {
    s.parse()
        .map_err(|e| crate::storage::StorageError::Integrity(format!("demo id: {e}")))
}
