//! `coffre seed`: a deterministic synthetic territory, streamed into the
//! database in large transactions, memory flat in the number of residents.
//!
//! Modelled on the source document's periurban agglomeration: 36 communes
//! (synthetic names and INSEE-format codes 31901–31936, which no real
//! commune uses, weighted like a central town, a ring of mid-sized communes
//! and small villages), an age pyramid, households, data in every category
//! but health, and consents at plausible rates per purpose. Identities are
//! drawn from lists of common French first and last names; every value is
//! fictional. The same `--seed` gives the same people, data and consents
//! (ids included); keys and nonces are random, as always.

use crate::AppState;
use crate::audit::AuditRecord;
use crate::crypto::{DataKey, SealContext};
use crate::domain::Demarche;
use crate::domain::consent::{ConsentState, Recorded};
use crate::domain::{Role, Timestamp};
use crate::error::ErrorCode;
use crate::error::{AppError, AppResult};
use crate::service::consents::Actor;
use crate::storage::{
    AgentRow, ConsentEventRow, ConsentRow, DataKeyRow, MandateRow, PartnerRow, RecordRow,
    SeedBatch, StructureRow,
};
use serde_json::{Value, json};

/// SplitMix64: small, fast, deterministic; not for secrets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut x = self.below(total);
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

const GIVEN_F: &[&str] = &[
    "Marie",
    "Nathalie",
    "Isabelle",
    "Sylvie",
    "Catherine",
    "Martine",
    "Christine",
    "Sophie",
    "Julie",
    "Camille",
    "Léa",
    "Manon",
    "Chloé",
    "Inès",
    "Jade",
    "Louise",
    "Emma",
    "Alice",
    "Lina",
    "Rose",
];
const GIVEN_M: &[&str] = &[
    "Jean",
    "Pierre",
    "Michel",
    "Philippe",
    "Alain",
    "Nicolas",
    "Christophe",
    "Laurent",
    "Julien",
    "Thomas",
    "Lucas",
    "Hugo",
    "Louis",
    "Gabriel",
    "Arthur",
    "Jules",
    "Adam",
    "Raphaël",
    "Léo",
    "Paul",
];
const FAMILY: &[&str] = &[
    "Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois", "Moreau",
    "Laurent", "Simon", "Michel", "Lefebvre", "Leroy", "Roux", "David", "Bertrand", "Morel",
    "Fournier", "Girard", "Garcia", "Fabre", "Roussel", "Mercier", "Blanc", "Guerin", "Boyer",
    "Lopez", "Faure", "Andre", "Sanchez", "Rey", "Castel", "Bonnet", "Mas", "Cazals", "Delmas",
    "Azema", "Vidal", "Barthe",
];
/// Age bands (lower bound, weight ‰), a periurban pyramid.
const AGES: &[(u64, u64)] = &[
    (0, 58),
    (5, 64),
    (10, 66),
    (15, 62),
    (20, 52),
    (25, 55),
    (30, 62),
    (35, 68),
    (40, 70),
    (45, 70),
    (50, 68),
    (55, 64),
    (60, 60),
    (65, 55),
    (70, 48),
    (75, 35),
    (80, 25),
    (85, 18),
];
const INTERESTS: &[&str] = &[
    "théâtre",
    "cinéma",
    "randonnée",
    "musique",
    "lecture",
    "danse",
    "sport",
    "jardinage",
    "patrimoine",
    "photographie",
];
const ALLERGENS: &[&str] = &[
    "gluten",
    "arachides",
    "lait",
    "œufs",
    "fruits à coque",
    "poisson",
];

/// The 36 synthetic communes: (code, postal code, weight).
fn communes() -> Vec<(String, String, u64)> {
    (1..=36u64)
        .map(|i| {
            let weight = match i {
                1 => 120,     // the central town
                2..=8 => 45,  // the first ring
                9..=16 => 18, // bourgs
                _ => 6,       // villages
            };
            (
                format!("319{i:02}"),
                format!("31{:03}", 300 + i * 10),
                weight,
            )
        })
        .collect()
}

/// How many residents were written, and how.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SeedReport {
    pub residents: u64,
    pub records: u64,
    pub consents: u64,
    pub structures: u64,
    pub agents: u64,
    pub mandates: u64,
    /// Partners the register names that did not exist yet, with their
    /// client credentials (shown once, as `coffre partner add` does).
    pub partners: Vec<SeededPartner>,
    pub seconds: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SeededPartner {
    pub id: String,
    pub client_id: String,
    pub client_secret: String,
}

/// The CCAS of a commune of the territory.
pub fn structure_id(insee: &str) -> AppResult<crate::domain::StructureId> {
    crate::domain::StructureId::parse(&format!("seed-ccas-{insee}"))
        .map_err(|e| AppError::internal(format!("seed structure id: {e}")))
}

/// Agent `k` of a commune's CCAS: 0 is its référent, 1 and 2 its aidants.
pub fn agent_id(insee: &str, k: u64) -> AppResult<crate::domain::AgentId> {
    crate::domain::AgentId::parse(&format!("seed-agent-{insee}-{k}"))
        .map_err(|e| AppError::internal(format!("seed agent id: {e}")))
}

/// The démarches a CCAS handles for the people it helps.
const CCAS_DEMARCHES: [Demarche; 4] = [
    Demarche::Social,
    Demarche::Logement,
    Demarche::Papiers,
    Demarche::Argent,
];

/// The territory's services: one CCAS per commune, each with a référent and
/// two aidants, and the partners the register names as recipients. Only
/// what is missing is created.
async fn seed_directory(
    state: &AppState,
    communes: &[(String, String, u64)],
    rng: &mut Rng,
    now: Timestamp,
    report: &mut SeedReport,
) -> AppResult<()> {
    for (n, (insee, _, _)) in communes.iter().enumerate() {
        let sid = structure_id(insee)?;
        if state.store.find_structure(&sid).await?.is_none() {
            state
                .store
                .insert_structure(
                    &StructureRow {
                        id: sid.clone(),
                        // INSEE-format but synthetic: no real SIRET starts 2631900.
                        siret: format!("2631900{n:02}00019"),
                        name: format!("CCAS de la commune {insee} (synthétique)"),
                        allowed_demarches: Demarche::ALL.to_vec(),
                        active: true,
                    },
                    now,
                )
                .await?;
            report.structures += 1;
        }
        for k in 0..3 {
            let id = agent_id(insee, k)?;
            let given = if rng.chance(50) {
                rng.pick(GIVEN_F)
            } else {
                rng.pick(GIVEN_M)
            };
            let name = format!("{given} {}", rng.pick(FAMILY));
            if state.store.find_agent(&id).await?.is_some() {
                continue;
            }
            let role = if k == 0 { Role::Referent } else { Role::Aidant };
            state
                .store
                .insert_agent(
                    &AgentRow {
                        id,
                        role,
                        display_name: name,
                        structure_id: Some(sid.clone()),
                        active: true,
                        can_create_mandates: true,
                    },
                    None,
                    now,
                )
                .await?;
            report.agents += 1;
        }
    }
    let mut recipients: Vec<&str> = state
        .register
        .all()
        .flat_map(|p| p.recipients.iter().map(String::as_str))
        .collect();
    recipients.sort_unstable();
    recipients.dedup();
    for id in recipients {
        let typed = crate::domain::PartnerId::parse(id)
            .map_err(|e| AppError::internal(format!("seed partner id: {e}")))?;
        if state.store.find_partner(&typed).await?.is_some() {
            continue;
        }
        let secret = crate::crypto::random_token()
            .map_err(|_| AppError::internal("system random generator failed"))?;
        let client_id = format!("seed-{id}");
        state
            .store
            .insert_partner(
                &PartnerRow {
                    id: typed,
                    name: id.into(),
                    client_id: client_id.clone(),
                    client_secret_hash: crate::crypto::sha256_hex(&secret),
                    age_recipient: None,
                    active: true,
                    client_jwks: None,
                },
                now,
            )
            .await?;
        report.partners.push(SeededPartner {
            id: id.into(),
            client_id,
            client_secret: secret,
        });
    }
    Ok(())
}

/// Residents per transaction.
pub const BATCH: u64 = 2_000;

fn resident_id(seed: u64, i: u64) -> String {
    let mut r = Rng(seed ^ i.wrapping_mul(0xd6e8_feb8_6659_fd93));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        r.next() as u32,
        r.next() as u16,
        r.next() as u16 & 0xfff,
        r.next() as u16 & 0xfff,
        r.next() & 0xffff_ffff_ffff
    )
}

/// Seeds `n` residents with `seed`, calling `progress(done, n)` after each
/// transaction. Refused when the database already has residents.
pub async fn seed(
    state: &AppState,
    n: u64,
    seed: u64,
    now: Timestamp,
    progress: impl FnMut(u64, u64),
) -> AppResult<SeedReport> {
    if state.store.has_residents().await? {
        return Err(ErrorCode::NotEmpty.into());
    }
    seed_territory(state, n, seed, now, progress).await
}

/// Seeds `n` residents (and the services around them) beside whatever the
/// database holds: the demo's small territory next to its personas.
pub async fn seed_territory(
    state: &AppState,
    n: u64,
    seed: u64,
    now: Timestamp,
    mut progress: impl FnMut(u64, u64),
) -> AppResult<SeedReport> {
    let started = std::time::Instant::now();
    let vault = state.vault()?;
    vault.register_kek_versions(now).await?;
    let keys = vault.keys().current();
    let kek = keys.current_kek_version();
    let communes = communes();
    let weights: Vec<u64> = communes.iter().map(|c| c.2).collect();
    let purposes: Vec<(&str, u64)> = vec![
        ("etude-mobilite", 22),
        ("agenda-culturel", 35),
        ("cantine-scolaire", 0), // households with children: below
        ("sante-territoriale", 7),
        ("inventaire-arbres-patrimoine", 9),
        ("aide-decision-publique", 14),
    ];
    let mut report = SeedReport::default();
    let mut rng = Rng(seed);
    seed_directory(state, &communes, &mut Rng(seed ^ 0x5eed), now, &mut report).await?;
    let mut household_left = 0u64;
    let mut household = (1u64, 1u64, 0u64, 0usize); // size, adults, children, commune
    let mut i = 0u64;
    while i < n {
        let mut batch = SeedBatch {
            now,
            ..SeedBatch::default()
        };
        let end = (i + BATCH).min(n);
        // Mandates of this batch, made once its residents exist.
        let mut mandates: Vec<(crate::domain::ResidentId, usize, Vec<Demarche>, u64)> = Vec::new();
        for k in i..end {
            if household_left == 0 {
                let size = 1 + rng.weighted(&[36, 33, 14, 12, 5]) as u64;
                let adults = if size == 1 {
                    1
                } else {
                    1 + u64::from(rng.chance(75))
                }
                .min(size);
                household = (size, adults, size - adults, rng.weighted(&weights));
                household_left = size;
            }
            household_left -= 1;
            let (size, adults, children, commune) = household;
            let (insee, postal, _) = &communes[commune];
            let id = resident_id(seed, k);
            let typed = crate::domain::ResidentId::parse(&id)
                .map_err(|e| AppError::internal(format!("seed resident id: {e}")))?;
            let female = rng.chance(51);
            let band = AGES[rng.weighted(&AGES.iter().map(|a| a.1).collect::<Vec<_>>())].0;
            let age = band + rng.below(5);
            let year = 2026 - age as i64;
            let given = if female {
                rng.pick(GIVEN_F)
            } else {
                rng.pick(GIVEN_M)
            };
            let family = rng.pick(FAMILY);
            let tenure = *rng.pick(&[
                "owner",
                "owner",
                "owner",
                "tenant",
                "tenant",
                "social_tenant",
                "hosted",
            ]);
            let mut records: Vec<(&str, Value)> = vec![
                (
                    "identity",
                    json!({"given_name": given, "family_name": family, "birthdate": format!("{year}-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28)), "gender": if female { "female" } else { "male" }, "birthcountry": "99100"}),
                ),
                (
                    "contact",
                    json!({"email": format!("{}.{}.{k}@example.org", given.to_lowercase(), family.to_lowercase()), "commune_insee": insee, "preferred_channel": *rng.pick(&["email", "email", "phone", "post"])}),
                ),
                (
                    "household",
                    json!({"size": size, "adults": adults, "children": children, "single_parent": adults == 1 && children > 0}),
                ),
                (
                    "housing",
                    json!({"tenure": tenure, "dwelling_type": if tenure == "owner" { "house" } else { *rng.pick(&["flat", "house"]) }, "surface_m2": 25 + rng.below(140), "construction_year": 1950 + rng.below(74) as i64, "commune_insee": insee, "postal_code": postal}),
                ),
                (
                    "energy",
                    json!({"heating": *rng.pick(&["electric", "gas", "heat_pump", "wood", "oil"]), "annual_kwh": 3_000 + rng.below(20_000), "energy_label": *rng.pick(&["B", "C", "D", "D", "E", "F"]), "renovation_interest": rng.chance(30)}),
                ),
                (
                    "income",
                    json!({"annual_income_eur": 9_000 + rng.below(60_000), "tax_shares": 1 + adults + children / 2}),
                ),
                (
                    "mobility",
                    json!({"commute_mode": *rng.pick(&["car", "car", "car", "bus", "bike", "carpool", "none"]), "commute_km": rng.below(40), "has_car": rng.chance(85)}),
                ),
            ];
            if age < 12 {
                records.push(("school", json!({"school": format!("École de la commune {}", &insee[3..]), "diet": *rng.pick(&["standard", "standard", "vegetarian", "no_pork"]), "allergens": if rng.chance(10) { vec![*rng.pick(ALLERGENS)] } else { Vec::<&str>::new() }})));
            }
            if rng.chance(40) {
                records.push(("culture", json!({"interests": [*rng.pick(INTERESTS), *rng.pick(INTERESTS)], "newsletter": rng.chance(50)})));
            }
            if rng.chance(8) {
                records.push((
                    "environment",
                    json!({"observations": rng.below(30), "volunteer": rng.chance(30)}),
                ));
            }
            // Seal: one data key per resident, wrapped by the KEK.
            let dk = DataKey::generate().map_err(|_| AppError::internal("data key"))?;
            let wrapped = keys
                .wrap_data_key_at(&id, &dk, kek)
                .map_err(|_| AppError::internal("wrapping a data key"))?;
            batch.data_keys.push(DataKeyRow {
                resident_id: typed.clone(),
                kek_version: i64::from(wrapped.kek_version),
                wrapped: wrapped.bytes,
            });
            let sealer = dk.sealer().map_err(|_| AppError::internal("sealer"))?;
            for (category, value) in records {
                let cat = state
                    .categories
                    .category(category)
                    .map_err(|_| AppError::internal("seed category"))?;
                let fields = state
                    .categories
                    .validate(&cat, &value)
                    .map_err(|e| AppError::internal(format!("seed data invalid: {e}")))?;
                let record_id = format!("{id}-{category}");
                let plain = serde_json::to_vec(&fields).map_err(|_| AppError::internal("json"))?;
                let sealed = sealer
                    .seal(
                        &SealContext {
                            resident_id: &id,
                            category,
                            record_id: &record_id,
                            version: 1,
                            provenance: None,
                        },
                        &plain,
                    )
                    .map_err(|_| AppError::internal("sealing"))?;
                batch.records.push((
                    id.clone(),
                    RecordRow {
                        id: record_id,
                        category: category.into(),
                        version: 1,
                        sealed,
                        created_at: now,
                        origin: Default::default(),
                    },
                ));
            }
            // Consents: adults decide; the canteen for households with children.
            if age >= 18 {
                for (purpose_id, rate) in &purposes {
                    let rate = if *purpose_id == "cantine-scolaire" {
                        if children > 0 { 55 } else { 0 }
                    } else {
                        *rate
                    };
                    if !rng.chance(rate) {
                        continue;
                    }
                    let Some(purpose) = state.register.get(purpose_id) else {
                        continue;
                    };
                    let until = now + i64::from(purpose.max_consent_days) * 86_400;
                    let recorded = Recorded {
                        state: ConsentState::Given,
                        categories: purpose.categories.clone(),
                        valid_until: Some(until),
                    };
                    let consent_id = crate::domain::ConsentId::parse(&format!("{id}-{purpose_id}"))
                        .map_err(|e| AppError::internal(format!("seed consent id: {e}")))?;
                    let event_id = format!("{consent_id}-1");
                    let actor = Actor {
                        id: id.clone(),
                        role: Role::Resident,
                        structure_id: None,
                        request_id: None,
                    };
                    let claims = crate::service::consents::receipt_claims(
                        state,
                        purpose,
                        &keys,
                        &typed,
                        consent_id.as_str(),
                        &event_id,
                        &recorded,
                        0,
                        &actor,
                        now,
                    );
                    let receipt = crate::crypto::jws::sign(&keys, &claims)
                        .map_err(|_| AppError::internal("receipt"))?;
                    let categories = state
                        .categories
                        .all_of(&purpose.categories)
                        .map_err(|e| AppError::internal(format!("seed purpose invalid: {e}")))?;
                    batch.consents.push(ConsentRow {
                        id: consent_id.clone(),
                        resident_id: typed.clone(),
                        purpose: purpose.id.clone(),
                        state: ConsentState::Given,
                        categories: categories.clone(),
                        valid_until: Some(until),
                        notice_version: purpose.notice_version.clone(),
                        updated_at: now,
                        seq: 1,
                    });
                    batch.events.push(ConsentEventRow {
                        id: event_id,
                        consent_id,
                        purpose: purpose.id.clone(),
                        state: ConsentState::Given,
                        categories,
                        valid_until: Some(until),
                        notice_version: purpose.notice_version.clone(),
                        actor_id: id.clone(),
                        actor_role: Role::Resident,
                        structure_id: None,
                        audit_index: 0,
                        receipt,
                        created_at: now,
                    });
                }
            }
            // Older people are the ones most often helped under a mandate.
            let mandated = if age >= 75 {
                rng.chance(15)
            } else {
                age >= 18 && rng.chance(1)
            };
            if mandated {
                let first = rng.below(CCAS_DEMARCHES.len() as u64) as usize;
                let mut ds = vec![CCAS_DEMARCHES[first]];
                if rng.chance(50) {
                    ds.push(CCAS_DEMARCHES[(first + 1) % CCAS_DEMARCHES.len()]);
                }
                mandates.push((typed.clone(), commune, ds, 1 + rng.below(2)));
            }
            batch.residents.push(id);
        }
        report.records += batch.records.len() as u64;
        report.consents += batch.consents.len() as u64;
        state.store.seed_batch(&batch).await?;
        for (resident, commune, demarches, aidant) in mandates {
            let insee = &communes[commune].0;
            let days = if demarches.len() > 1 { 365 } else { 182 };
            let row = MandateRow {
                id: crate::domain::MandateId::parse(&format!("{resident}-mandate"))
                    .map_err(|e| AppError::internal(format!("seed mandate id: {e}")))?,
                resident_id: resident,
                structure_id: structure_id(insee)?,
                aidant_id: agent_id(insee, aidant)?,
                duration_days: days,
                template_version: crate::domain::mandate::TEMPLATE_VERSION.to_string(),
                renews: None,
                created_at: now,
                expires_at: now + days * 86_400,
            };
            // Seeded history, not an act: no message to the fictional residents.
            state
                .store
                .create_mandate(&row, &demarches, now, &Default::default())
                .await?;
            report.mandates += 1;
        }
        report.residents = end;
        progress(end, n);
        i = end;
    }
    state
        .audit
        .record(AuditRecord::new("cli", "admin", "seed", now).allow(&format!("count:{n}")))
        .await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        assert_eq!(resident_id(7, 1), resident_id(7, 1));
        assert_ne!(resident_id(7, 1), resident_id(7, 2));
        assert_ne!(resident_id(7, 1), resident_id(8, 1));
        assert_eq!(communes().len(), 36);
    }
}
