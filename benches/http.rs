//! HTTP benchmark (BRIEF §5): audited partner reads per second over HTTP
//! against a bare axum JSON handler, with the same load generator in the
//! same run. Goal: at least 40 %.
//!
//! Both servers run in this process on loopback, with keep-alive
//! connections from a small closed-loop load client (C tasks, each sending
//! its next request when the last one answered). The partner read is the
//! real one: bearer token verified (EdDSA), pseudonym resolved, the one
//! access decision (casbin, register, consent or legal basis) recorded
//! durably in the audit log (group commit, SQLite `synchronous=FULL` or
//! PostgreSQL), then the record opened from the vault.
//!
//! Run: `cargo bench --bench http`
//! Knobs: `COFFRE_BENCH_SECS` (default 5), `COFFRE_BENCH_CONCURRENCY`
//! (default 32), `COFFRE_BENCH_DATABASE_URL` (default a fresh SQLite file;
//! a `postgres://` URL of an empty database for PostgreSQL).
//!
//! `COFFRE_BENCH_PROCESSES=2` (with a PostgreSQL URL): the reads go to two
//! real `coffre serve` processes (the release binary) sharing the database
//! and the keys, alternately, as behind a load balancer; the bare baseline
//! stays in this process. `COFFRE_BENCH_PROCESSES=1`: one such process, the
//! comparison for two (unset, this process serves the reads itself).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::get;
use base64::Engine;
use coffre::crypto::{KeySet, LiveKeys};
use coffre::{AppState, Clock, Config};

/// Child servers, stopped even when the benchmark panics.
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    base
}

/// Closed-loop load: `concurrency` tasks for `secs` seconds; returns
/// (requests per second, p50 ms, p99 ms). Every answer must be 200.
async fn load(
    urls: &[String],
    bearer: Option<&str>,
    concurrency: u64,
    secs: u64,
) -> (f64, f64, f64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency as usize)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let (client, stop, done) = (client.clone(), stop.clone(), done.clone());
        let url = urls[task as usize % urls.len()].clone();
        let bearer = bearer.map(str::to_string);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut req = client.get(&url);
                if let Some(b) = &bearer {
                    req = req.bearer_auth(b);
                }
                let res = req.send().await.unwrap();
                assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
                res.bytes().await.unwrap();
                latencies.push(t.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
            latencies
        }));
    }
    // Warm-up (connections, caches), then the measured window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start_count = done.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let count = done.load(Ordering::Relaxed) - start_count;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1e3;
    (count as f64 / elapsed, pct(0.50), pct(0.99))
}

async fn coffre_app(database_url: &str, dir: &std::path::Path) -> AppState {
    let config = Config::for_tests(database_url, &dir.join("keys")).unwrap();
    let store = coffre::storage::open(&config.database_url).await.unwrap();
    let keys = Arc::new(LiveKeys::in_memory(KeySet::generate_in_memory().unwrap()));
    let clock = Clock::system();
    let state = AppState::new(config, store, clock.clone(), true, Ok(keys))
        .await
        .unwrap();
    state
        .vault()
        .unwrap()
        .register_kek_versions(clock.now())
        .await
        .unwrap();
    coffre::demo::seed_if_empty(&state).await.unwrap();
    state
}

fn main() {
    let secs = env_u64("COFFRE_BENCH_SECS", 5);
    let concurrency = env_u64("COFFRE_BENCH_CONCURRENCY", 32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let database_url = std::env::var("COFFRE_BENCH_DATABASE_URL")
            .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("bench.db").display()));
        let backend = if database_url.starts_with("postgres") {
            "PostgreSQL"
        } else {
            "SQLite"
        };
        // Set (even to 1): the reads go to that many `coffre serve` child
        // processes; unset: this process serves them too.
        let processes = std::env::var("COFFRE_BENCH_PROCESSES")
            .ok()
            .map(|_| env_u64("COFFRE_BENCH_PROCESSES", 1).max(1));
        let mut children = Children(Vec::new());
        let (state, coffre_bases): (AppState, Vec<String>) = if let Some(processes) = processes {
            // This process watches the log through a store and log of its
            // own: a second writer on a SQLite file would contend with the
            // child's.
            assert!(
                backend == "PostgreSQL",
                "coffre processes apart from this one need PostgreSQL"
            );
            // The processes need the keys on disk: the first one generates
            // them (demo mode) in a fresh folder, then the others load them.
            let run = dir.path().join("run");
            std::fs::create_dir_all(&run).unwrap();
            let mut bases = Vec::new();
            for _ in 0..processes {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                let base = format!("http://127.0.0.1:{port}");
                let child = std::process::Command::new(env!("CARGO_BIN_EXE_coffre"))
                    .args(["serve", "--demo"])
                    .current_dir(&run)
                    // coffre refuses unknown COFFRE_* variables, such as
                    // this benchmark's own knobs.
                    .env_clear()
                    .env("COFFRE_DATABASE_URL", &database_url)
                    .env("COFFRE_LISTEN", format!("127.0.0.1:{port}"))
                    // One public URL for all, as behind a load balancer:
                    // it is the tokens' issuer.
                    .env("COFFRE_PUBLIC_URL", bases.first().unwrap_or(&base))
                    .env("COFFRE_KEYS_DIR", run.join("keys"))
                    .env("RUST_LOG", "warn")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::fs::File::create(run.join(format!("coffre-{port}.log"))).unwrap())
                    .spawn()
                    .unwrap();
                children.0.push(child);
                let http = reqwest::Client::new();
                let mut ready = false;
                for _ in 0..1200 {
                    if http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
                        ready = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                assert!(
                    ready,
                    "coffre did not start: {}",
                    std::fs::read_to_string(run.join(format!("coffre-{port}.log"))).unwrap_or_default()
                );
                bases.push(base);
            }
            // This process only watches the audit log grow: no keys of its
            // own are registered, nothing is seeded by it.
            let config = Config::for_tests(&database_url, &dir.path().join("keys")).unwrap();
            let store = coffre::storage::open(&config.database_url).await.unwrap();
            let keys = Arc::new(LiveKeys::in_memory(KeySet::generate_in_memory().unwrap()));
            let observer = AppState::new(config, store, Clock::system(), false, Ok(keys))
                .await
                .unwrap();
            (observer, bases)
        } else {
            let state = coffre_app(&database_url, dir.path()).await;
            let base = serve(coffre::app(state.clone())).await;
            (state, vec![base])
        };
        let coffre_base = coffre_bases[0].clone();

        // The baseline: a bare axum handler answering a JSON body of the
        // same shape and size as a partner read.
        fn record_json() -> Json<serde_json::Value> {
            Json(serde_json::json!({
                "pseudonym": "3f1c0e7a5b9d2c4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e",
                "category": "housing",
                "version": 1,
                "fields": {"tenure": "social_tenant", "dwelling_type": "apartment", "surface_m2": 62, "commune_insee": "16015"}
            }))
        }
        // Two floors on the same server, for the analysis: the same bare
        // handler plus only one of the two things an audited read cannot do
        // without, one statement through the store's pool, or one durable
        // append through the audit log's group-commit writer.
        let (floor_store, floor_audit) = (state.store.clone(), state.audit.clone());
        let next_floor_entry = Arc::new(AtomicU64::new(0));
        let bare = axum::Router::new()
            .route("/record", get(|| async { record_json() }))
            .route(
                "/one-statement",
                get(move || {
                    let store = floor_store.clone();
                    async move {
                        store.ping().await.unwrap();
                        record_json()
                    }
                }),
            )
            .route(
                "/one-audit-append",
                get(move || {
                    let (audit, next) = (floor_audit.clone(), next_floor_entry.clone());
                    async move {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        audit
                            .record(coffre::audit::AuditRecord {
                                timestamp: 1_795_867_200,
                                actor_id: "demo-renov-energie".into(),
                                actor_role: "partner".into(),
                                action: "bench.floor".into(),
                                allowed: true,
                                reason: "bench".into(),
                                request_id: Some(format!("{n:032}")),
                                ..Default::default()
                            })
                            .await
                            .unwrap();
                        record_json()
                    }
                }),
            );
        let bare_base = serve(bare).await;

        // A partner token and one resident's pseudonym for it.
        let http = reqwest::Client::new();
        let basic = base64::engine::general_purpose::STANDARD
            .encode("demo-renov-energie:demo-secret-renov-energie-not-for-production");
        let token: serde_json::Value = http
            .post(format!("{coffre_base}/oauth/token"))
            .header("authorization", format!("Basic {basic}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let bearer = token["access_token"].as_str().unwrap().to_string();
        let list: serde_json::Value = http
            .get(format!(
                "{coffre_base}/api/v1/partner/residents?purpose=renovation-energetique"
            ))
            .bearer_auth(&bearer)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let pseudonym = list["residents"][0].as_str().unwrap().to_string();
        let read_urls: Vec<String> = coffre_bases
            .iter()
            .map(|b| format!("{b}/api/v1/partner/residents/{pseudonym}/data/housing?purpose=renovation-energetique"))
            .collect();

        if let Some(processes) = processes {
            println!(
                "http: {backend}, {concurrency} concurrent keep-alive clients, {secs} s per run, reads spread over {processes} coffre process(es) sharing the database"
            );
        } else {
            println!(
                "http: {backend}, {concurrency} concurrent keep-alive clients, {secs} s per run, this process serves both"
            );
        }
        let audit_before = state.audit.size().await.unwrap();
        let (bare_rps, bare_p50, bare_p99) =
            load(&[format!("{bare_base}/record")], None, concurrency, secs).await;
        println!(
            "  bare axum JSON handler     {bare_rps:>9.0} req/s  p50 {bare_p50:.2} ms  p99 {bare_p99:.2} ms"
        );
        let (read_rps, read_p50, read_p99) =
            load(&read_urls, Some(&bearer), concurrency, secs).await;
        println!(
            "  audited partner read      {read_rps:>9.0} req/s  p50 {read_p50:.2} ms  p99 {read_p99:.2} ms"
        );
        let audited = state.audit.size().await.unwrap() - audit_before;
        println!("  audit entries written during the reads: {audited}");
        println!(
            "  ratio audited / bare: {:.3} (goal ≥ 0.40: {})",
            read_rps / bare_rps,
            if read_rps / bare_rps >= 0.40 { "met" } else { "NOT met" }
        );
        if processes.is_none() {
            println!("  floors (the bare handler plus one thing an audited read must do):");
            for (path, what) in [
                ("one-statement", "+ one SELECT through the store's pool"),
                ("one-audit-append", "+ one durable audit append"),
            ] {
                let (rps, p50, p99) =
                    load(&[format!("{bare_base}/{path}")], None, concurrency, secs).await;
                println!(
                    "    {what:<40} {rps:>9.0} req/s  p50 {p50:.2} ms  p99 {p99:.2} ms  ratio {:.3}",
                    rps / bare_rps
                );
            }
        }
        drop(children);
        state.store.close().await;
    });
}
