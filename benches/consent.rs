//! Consent benchmarks (BRIEF §5 style: figures next to a baseline measured
//! in the same run):
//!
//! - `validity`: the access decision's question — a valid consent for
//!   (resident, purpose, category, recipient) at t? — at 1 million residents
//!   × 3 consents, against a bare `SELECT 1` round trip. Goal: < 100 µs.
//! - `decisions`: consent decisions with signed receipts (audited, durable)
//!   per second with 64 concurrent residents, against signing the receipt
//!   alone.
//!
//! Run: `cargo bench --bench consent` or `cargo bench --bench consent -- validity`.
//! `COFFRE_BENCH_DATABASE_URL=postgres://…/empty_db` runs them on PostgreSQL.
//! `COFFRE_BENCH_CONSENT_DIR=/some/folder` (SQLite) keeps the seeded million
//! there and reuses it on the next run (seeding takes minutes); on
//! PostgreSQL a database already holding the million is reused likewise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use coffre::crypto::{KeySet, LiveKeys};
use coffre::domain::Role;
use coffre::domain::consent::GiveRequest;
use coffre::service::consents::{Actor, Decision, decide, valid_consent};
use coffre::storage::{DynStore, SqliteStore};
use coffre::{AppState, Clock, Config};

const NOW: i64 = 1_795_867_200;
const PURPOSES: [(&str, &str); 3] = [
    ("etude-mobilite", "mobility,household,housing"),
    ("agenda-culturel", "culture,contact"),
    ("cantine-scolaire", "school,household,contact"),
];

fn postgres_url() -> Option<String> {
    std::env::var("COFFRE_BENCH_DATABASE_URL").ok()
}

async fn state(dir: &std::path::Path) -> (AppState, DynStore) {
    let url = postgres_url().unwrap_or_else(|| format!("sqlite://{}", dir.join("c.db").display()));
    let config = Config::for_tests(&url, &dir.join("keys")).unwrap();
    let store: DynStore = match postgres_url() {
        Some(_) => coffre::storage::open(&config.database_url).await.unwrap(),
        None => Arc::new(SqliteStore::open(&dir.join("c.db")).await.unwrap()),
    };
    let keys = Arc::new(LiveKeys::in_memory(KeySet::generate_in_memory().unwrap()));
    let state = AppState::new(config, store.clone(), Clock::fixed(NOW), false, Ok(keys))
        .await
        .unwrap();
    state
        .vault()
        .unwrap()
        .register_kek_versions(NOW)
        .await
        .unwrap();
    (state, store)
}

fn resident(i: u64) -> coffre::domain::ResidentId {
    let id = format!(
        "{:08x}-0000-4000-8000-{:012x}",
        i.wrapping_mul(2_654_435_761) & 0xffff_ffff,
        i
    );
    coffre::domain::ResidentId::parse(&id).expect("a UUID-shaped id")
}

async fn validity() {
    const N: u64 = 1_000_000;
    let temp = tempfile::tempdir().unwrap();
    let dir = match std::env::var("COFFRE_BENCH_CONSENT_DIR") {
        Ok(kept) => {
            std::fs::create_dir_all(&kept).unwrap();
            std::path::PathBuf::from(kept)
        }
        Err(_) => temp.path().to_path_buf(),
    };
    let (state, store) = state(&dir).await;
    let seeded = store.count_residents().await.unwrap();
    assert!(
        seeded == 0 || seeded == N as i64,
        "the database holds {seeded} residents: give an empty one, or one seeded by this benchmark"
    );
    // The bench's own plain connections to the same file (bulk load, checkpoint).
    let sqlite_url = format!("sqlite://{}", dir.join("c.db").display());
    let started = Instant::now();
    macro_rules! insert_all {
        ($db:ty, $pool:expr) => {
    for chunk in (0..N).collect::<Vec<_>>().chunks(50_000) {
        let mut tx = $pool.begin().await.unwrap();
        for rows in chunk.chunks(1000) {
            let mut q = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO residents (id, status, created_at) ",
            );
            q.push_values(rows, |mut b, i| {
                b.push_bind(resident(*i)).push_bind("active").push_bind(NOW);
            });
            q.build().execute(&mut *tx).await.unwrap();
            let mut q = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO consents (id, resident_id, purpose, state, categories, valid_until, notice_version, updated_at, seq) ",
            );
            q.push_values(
                rows.iter()
                    .flat_map(|i| PURPOSES.iter().map(move |p| (*i, p))),
                |mut b, (i, (purpose, cats))| {
                    b.push_bind(format!("{}-{purpose}", resident(i)))
                        .push_bind(resident(i))
                        .push_bind(*purpose)
                        .push_bind(if i.is_multiple_of(5) {
                            "withdrawn"
                        } else {
                            "given"
                        })
                        .push_bind(*cats)
                        .push_bind(NOW + 30 * 86_400)
                        .push_bind(state.register.get(purpose).unwrap().notice_version.clone())
                        .push_bind(NOW)
                        .push_bind(1i64);
                },
            );
            q.build().execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
        };
    }
    match postgres_url() {
        _ if seeded > 0 => {}
        Some(url) => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            insert_all!(sqlx::Postgres, pool);
            // Statistics, as autovacuum would gather them a little later:
            // without them the planner guesses a bitmap scan.
            sqlx::query("ANALYZE residents, consents")
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        None => {
            let pool = sqlx::SqlitePool::connect(&sqlite_url).await.unwrap();
            sqlx::query("PRAGMA synchronous=OFF")
                .execute(&pool)
                .await
                .unwrap();
            insert_all!(sqlx::Sqlite, pool);
            pool.close().await;
        }
    }
    if seeded == 0 {
        println!(
            "validity: seeded {N} residents x 3 consents in {:.0}s",
            started.elapsed().as_secs_f64()
        );
    } else {
        println!("validity: reusing {N} residents x 3 consents seeded earlier");
    }
    if postgres_url().is_none() {
        // A bulk load leaves a WAL of the size of the database: move it into
        // the database file, as the server's checkpoints do in steady state,
        // so that reads go to the database file, not through the WAL index.
        let pool = sqlx::SqlitePool::connect(&sqlite_url).await.unwrap();
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(busy, 0, "the WAL checkpoint was blocked");
        pool.close().await;
    }

    let purpose = state.register.get("etude-mobilite").unwrap().clone();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % N
    };
    let rounds = 50_000;
    // Warm-up, as a server that has been answering for a while: the pool's
    // connections are open, their statements prepared, the page caches
    // filled (with recycled pages, not fresh allocations). Then each figure
    // is measured over as many lookups again, on fresh random residents.
    // `ask` is the question as a partner's read asks it: is this resident's
    // consent to the mobility study valid for its lab, now?
    let ask = |r: coffre::domain::ResidentId| {
        let (store, purpose) = (&store, &purpose);
        async move {
            valid_consent(
                store.as_ref(),
                purpose,
                &r,
                "mobility",
                Some("labo-mobilite"),
                NOW,
            )
            .await
            .unwrap()
        }
    };
    for _ in 0..rounds {
        ask(resident(next())).await;
        store.ping().await.unwrap();
    }
    // Baseline: the cheapest possible round trip to the same database.
    let t = Instant::now();
    for _ in 0..rounds {
        store.ping().await.unwrap();
    }
    let ping = t.elapsed() / rounds;
    let mut times = Vec::with_capacity(rounds as usize);
    let mut yes = 0;
    for _ in 0..rounds {
        let r = resident(next());
        let t = Instant::now();
        if ask(r).await.is_some() {
            yes += 1;
        }
        times.push(t.elapsed());
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / rounds;
    let p99 = times[times.len() * 99 / 100];
    println!(
        "  bare SELECT 1 round trip (baseline): {:.1} µs",
        ping.as_secs_f64() * 1e6
    );
    println!(
        "  validity query at {N} residents x 3 consents: mean {:.1} µs, p99 {:.1} µs ({:.1}x the baseline; {yes}/{rounds} valid) (goal < 100 µs: {})",
        mean.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        mean.as_secs_f64() / ping.as_secs_f64(),
        if mean < Duration::from_micros(100) {
            "MET"
        } else {
            "NOT MET"
        }
    );
}

async fn decisions() {
    const RESIDENTS: u64 = 64;
    let dir = tempfile::tempdir().unwrap();
    let (state, store) = state(dir.path()).await;
    for i in 0..RESIDENTS {
        store.insert_resident(&resident(i), NOW).await.unwrap();
    }
    // Baseline: signing the receipt alone.
    let keys = state.vault().unwrap().keys().current();
    let claims = serde_json::json!({"version": "KI-CR-v1.1.0", "jurisdiction": "FR", "consentTimestamp": NOW});
    let t = Instant::now();
    let mut signed = 0u64;
    while t.elapsed() < Duration::from_secs(2) {
        coffre::crypto::jws::sign(&keys, &claims).unwrap();
        signed += 1;
    }
    let sign_rate = signed as f64 / t.elapsed().as_secs_f64();

    let dur = Duration::from_secs(5);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..RESIDENTS {
        let state = state.clone();
        tasks.push(tokio::spawn(async move {
            let r = resident(i);
            let actor = Actor {
                id: r.to_string(),
                role: Role::Resident,
                structure_id: None,
                request_id: None,
            };
            let mut n = 0u64;
            while started.elapsed() < dur {
                let d = if n.is_multiple_of(2) {
                    Decision::Give(GiveRequest::default())
                } else {
                    Decision::Withdraw
                };
                decide(
                    &state,
                    &actor,
                    &r,
                    state.register.get("etude-mobilite").unwrap(),
                    d,
                )
                .await
                .unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    println!(
        "consent decisions with receipts (audited, durable, SQLite synchronous=FULL), 64 residents at once:"
    );
    println!("  receipt signing alone (baseline): {sign_rate:>9.0} /s");
    println!(
        "  full decisions:                   {rate:>9.0} /s  ({:.3} of the baseline)",
        rate / sign_rate
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let want = |name: &str| {
        !args.iter().skip(1).any(|a| !a.starts_with('-')) || args.iter().any(|a| a == name)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if want("decisions") {
        rt.block_on(decisions());
    }
    if want("validity") {
        // On a runtime worker, as a request handler would run it.
        rt.block_on(async { tokio::spawn(validity()).await.unwrap() });
    }
}
