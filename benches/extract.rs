//! Extract benchmark (BRIEF §5): a records extract over a seeded territory
//! against a raw scan + AEAD of the same bytes, in the same run (goal:
//! within 3×).
//!
//! The extract is the product's: the cohort in pages, each resident's
//! current records opened through the vault, one audit entry per included
//! resident (so they see it among their accesses), CSV encrypted with age to
//! the partner. The baseline reads the same sealed housing records and
//! wrapped data keys in one scan, unwraps and opens them (AES-256-GCM), and
//! writes the same CSV through age: no audit, no per-resident queries.
//!
//! Run on a seeded database (it gives the partner an age recipient and adds
//! one extract to it):
//!   coffre keys init --generate-unlock-identity && coffre seed --residents 1000000
//!   COFFRE_BENCH_SEEDED_DIR=/that/folder cargo bench --bench extract
//! On PostgreSQL, seed with `COFFRE_DATABASE_URL=postgres://…` in that folder
//! and pass the same URL as `COFFRE_BENCH_DATABASE_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use coffre::crypto::{LiveKeys, SealContext, WrappedDataKey};
use coffre::{AppState, Clock, Config};
use sqlx::Row;

const AGE_RECIPIENT: &str = "age1aa5hcahrcyn7lyjg7hzy6gjzf54uut5l3u6wycxwtyvkughqqf3skqta67";

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let Ok(dir) = std::env::var("COFFRE_BENCH_SEEDED_DIR") else {
        eprintln!(
            "extract: set COFFRE_BENCH_SEEDED_DIR to a folder where `coffre seed` ran (see the header of benches/extract.rs)"
        );
        return;
    };
    let dir = PathBuf::from(dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = std::env::var("COFFRE_BENCH_DATABASE_URL")
            .unwrap_or_else(|_| format!("sqlite://{}", dir.join("data/coffre.db").display()));
        let config = Config::for_tests(&url, &dir.join("keys")).unwrap();
        let store = coffre::storage::open(&config.database_url).await.unwrap();
        let keys = Arc::new(LiveKeys::load(dir.join("keys"), dir.join("keys/unlock.key")).unwrap());
        let clock = Clock::system();
        let state = AppState::new(config, store.clone(), clock.clone(), false, Ok(keys.clone())).await.unwrap();
        let n = store.count_residents().await.unwrap();
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        // `coffre seed` registers the partner without an age recipient.
        sqlx::query("UPDATE partners SET age_recipient = $1 WHERE id = 'renov-energie'")
            .bind(AGE_RECIPIENT)
            .execute(&pool)
            .await
            .unwrap();
        if store.find_partner(&coffre::domain::PartnerId::parse("renov-energie").unwrap()).await.unwrap().is_none() {
            store
                .insert_partner(
                    &coffre::storage::PartnerRow {
                        id: coffre::domain::PartnerId::parse("renov-energie").unwrap(),
                        name: "Guichet rénovation".into(),
                        client_id: "bench-renov".into(),
                        client_secret_hash: "!".into(),
                        age_recipient: Some(AGE_RECIPIENT.into()),
                        active: true,
                        client_jwks: None,
                    },
                    clock.now(),
                )
                .await
                .unwrap();
        }
        let out_dir = tempfile::tempdir().unwrap();

        // Baseline: one scan, AEAD, the same CSV through age.
        let t = Instant::now();
        let recipient: age::x25519::Recipient = AGE_RECIPIENT.parse().unwrap();
        let file = std::fs::File::create(out_dir.path().join("baseline.age")).unwrap();
        let mut w = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .unwrap()
            .wrap_output(std::io::BufWriter::new(file))
            .unwrap();
        let set = keys.current();
        let mut rows = 0u64;
        let csv = coffre::domain::extract::CsvRows::default();
        let mut after = String::new();
        loop {
            let page = sqlx::query(
                "SELECT r.resident_id, r.id, r.version, r.sealed, k.kek_version, k.wrapped FROM personal_records r \
                 JOIN data_keys k ON k.resident_id = r.resident_id \
                 WHERE r.category = 'housing' AND r.resident_id > $1 ORDER BY r.resident_id LIMIT 5000",
            )
            .bind(&after)
            .fetch_all(&pool)
            .await
            .unwrap();
            let Some(last) = page.last() else { break };
            after = last.get::<String, _>(0);
            for row in &page {
                let resident: String = row.get(0);
                let record_id: String = row.get(1);
                let version: i64 = row.get(2);
                let sealed: Vec<u8> = row.get(3);
                let kek: i64 = row.get(4);
                let wrapped: Vec<u8> = row.get(5);
                let dk = set
                    .unwrap_data_key(&resident, &WrappedDataKey { kek_version: kek as u32, bytes: wrapped })
                    .unwrap();
                let plain = dk
                    .sealer()
                    .unwrap()
                    .open(&SealContext { resident_id: &resident, category: "housing", record_id: &record_id, version, provenance: None }, &sealed)
                    .unwrap();
                let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&plain).unwrap();
                let pseudonym = set.pseudonym("partner:renov-energie", resident.as_bytes());
                let mut line = vec![pseudonym];
                for f in ["commune_insee", "construction_year", "dwelling_type", "postal_code", "surface_m2", "tenure"] {
                    line.push(fields.get(f).map(coffre::domain::extract::text_of).unwrap_or_default());
                }
                w.write_all(&csv.row(&line).unwrap()).unwrap();
                rows += 1;
            }
        }
        w.finish().unwrap().flush().unwrap();
        let baseline = t.elapsed().as_secs_f64();
        pool.close().await;
        println!("extract: {n} residents; baseline (scan + AEAD + age, {rows} rows): {baseline:.1} s");

        // The product's extract.
        let row = coffre::service::extracts::request(
            &state,
            "renov-energie",
            serde_json::from_value(serde_json::json!({"purpose": "renovation-energetique", "kind": "records", "categories": ["housing"]})).unwrap(),
            clock.now(),
        )
        .await
        .unwrap();
        store.extract_transition(&row.id, coffre::domain::extract::ExtractState::Requested, coffre::domain::extract::ExtractState::Approved, None, clock.now()).await.unwrap();
        let t = Instant::now();
        coffre::service::extract_build::build(&state, &row.id, clock.now()).await.unwrap();
        let built = t.elapsed().as_secs_f64();
        let done = store.find_extract(&row.id).await.unwrap().unwrap();
        let manifest: serde_json::Value = serde_json::from_str(done.manifest.as_deref().unwrap()).unwrap();
        println!(
            "extract: coffre records extract ({} residents): {built:.1} s; ratio {:.2}× the baseline (goal ≤ 3×: {}); peak RSS {:.0} MB",
            manifest["cohort_size"],
            built / baseline,
            if built / baseline <= 3.0 { "MET" } else { "NOT MET" },
            peak_rss_mb()
        );
        let _ = std::fs::remove_file(coffre::service::extracts::file_path(&state, &row.id));
        store.close().await;
    });
}
