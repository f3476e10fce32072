//! Audit log benchmarks, each a ratio against a baseline measured in the
//! same run (BRIEF §5):
//!
//! - `group-commit`: durable appends per second on SQLite (`synchronous=FULL`)
//!   through the group-commit writer with 64 concurrent writers (entries
//!   sequenced, the integrator building tiles beside it in the same
//!   process), against the same writer limited to one transaction per
//!   entry; the time the log's lock is held per batch; how long the
//!   integrator then takes to catch up.
//! - `engine-ceiling` (also run with `group-commit`): what SQLite itself
//!   allows on this machine, with no log around it: one connection
//!   appending `audit_entries`-shaped rows, 1 against 64 per transaction
//!   (and 64 leaves packed into one row). With `group-commit`, the group
//!   commit's share of the packed ceiling (issue 24's goal: ≥ 60 %).
//! - `proofs`: inclusion and consistency proof generation in a tree of
//!   10 million entries (stored tiles). Goal: < 1 ms each.
//!
//! Run: `cargo bench --bench audit` (both) or `cargo bench --bench audit -- proofs`.
//! `COFFRE_BENCH_DATABASE_URL=postgres://…/empty_db` runs `group-commit` on
//! PostgreSQL (both logs, one after the other, in that database).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use coffre::audit::merkle::CompactRange;
use coffre::audit::{AuditLog, AuditRecord};
use coffre::storage::{DynStore, SqliteStore};

const WRITERS: usize = 64;

fn record(i: usize) -> AuditRecord {
    AuditRecord {
        timestamp: 1_795_867_200,
        actor_id: format!("0b9a3c1e-5d6f-4a7b-8c9d-{i:012}"),
        actor_role: "resident".into(),
        action: "data.read".into(),
        resident_id: Some(format!("0b9a3c1e-5d6f-4a7b-8c9d-{i:012}")),
        category: Some("contact".into()),
        allowed: true,
        reason: "own_data".into(),
        request_id: Some(format!("{i:032}")),
        ..Default::default()
    }
}

/// 64 tasks append for `dur`; returns entries per second.
async fn appends_per_second(log: Arc<AuditLog>, dur: Duration) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while start.elapsed() < dur {
                log.record(record(w * 1_000_000 + n)).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

async fn group_commit() -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let pg = std::env::var("COFFRE_BENCH_DATABASE_URL").ok();
    let backend = if pg.is_some() {
        "PostgreSQL (synchronous_commit on)"
    } else {
        "SQLite synchronous=FULL"
    };
    let open = |name: &str| {
        let path = dir.path().join(name);
        let pg = pg.clone();
        async move {
            match pg {
                // One database: the baseline's entries, then the group's,
                // in one log (appends are sequential, so each run measures
                // only its own writer).
                Some(url) => {
                    coffre::storage::open(&coffre::config::DatabaseUrl::parse(&url).unwrap())
                        .await
                        .unwrap()
                }
                None => Arc::new(SqliteStore::open(&path).await.unwrap()) as DynStore,
            }
        }
    };
    let dur = Duration::from_secs(5);
    let baseline = appends_per_second(
        AuditLog::start_with_batch(open("one.db").await, "bench/audit".into(), 1),
        dur,
    )
    .await;
    let log = AuditLog::start(open("group.db").await, "bench/audit".into());
    let metrics = coffre::audit::AuditMetrics::new().unwrap();
    log.attach_metrics(metrics.clone());
    let grouped = appends_per_second(log.clone(), dur).await;
    let behind = log.size().await.unwrap() - log.integrated_size().await.unwrap();
    let caught_up = Instant::now();
    assert!(
        log.await_integrated(log.size().await.unwrap(), Duration::from_secs(120))
            .await
    );
    let (batches, entries, lock) = metrics.sequencing();
    println!(
        "audit appends, {backend}, {WRITERS} concurrent writers, {}s each:",
        dur.as_secs()
    );
    println!("  one transaction per entry (baseline): {baseline:>10.0} entries/s");
    println!("  group commit:                         {grouped:>10.0} entries/s");
    println!("  ratio: {:.1}x", grouped / baseline);
    println!(
        "  {batches} batches, {:.1} entries per batch; the log's lock held {:.3} ms per batch on average",
        entries / batches.max(1) as f64,
        lock * 1e3 / batches.max(1) as f64
    );
    println!(
        "  integration: {behind} entries behind when the writers stopped, caught up in {:.3} s",
        caught_up.elapsed().as_secs_f64()
    );
    grouped
}

/// What SQLite itself allows on this machine, whatever the log does around
/// it: one sqlx connection appending rows shaped like `audit_entries` (the
/// same leaf bytes), `rows` per transaction (one INSERT statement between
/// BEGIN and COMMIT), for `dur`; returns rows per second. With `one_row`,
/// the rows' leaves go into a single row per transaction instead (a layout
/// with one row per batch).
async fn engine_rows_per_second(
    path: &std::path::Path,
    rows: usize,
    one_row: bool,
    dur: Duration,
) -> f64 {
    use sqlx::{ConnectOptions, Connection};
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
        .connect()
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE entries (idx INTEGER PRIMARY KEY NOT NULL, leaf BLOB NOT NULL, \
         resident_id TEXT, created_at INTEGER NOT NULL)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    // Encoded before timing: this measures the storage, not the encoding.
    let leaves: Vec<(Vec<u8>, String)> = (0..rows)
        .map(|i| {
            let r = record(i);
            (r.encode(i as u64).unwrap(), r.resident_id.unwrap())
        })
        .collect();
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < dur {
        let batch = leaves
            .iter()
            .enumerate()
            .map(|(i, (leaf, resident))| ((n + i) as i64, leaf.clone(), resident.clone()));
        let mut tx = conn.begin().await.unwrap();
        if one_row {
            sqlx::query(
                "INSERT INTO entries (idx, leaf, resident_id, created_at) VALUES ($1, $2, NULL, 0)",
            )
            .bind(n as i64)
            .bind(
                batch
                    .into_iter()
                    .flat_map(|(_, leaf, _)| leaf)
                    .collect::<Vec<u8>>(),
            )
            .execute(&mut *tx)
            .await
            .unwrap();
        } else {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO entries (idx, leaf, resident_id, created_at) ",
            );
            q.push_values(batch, |mut b, (idx, leaf, resident)| {
                b.push_bind(idx)
                    .push_bind(leaf)
                    .push_bind(resident)
                    .push_bind(0i64);
            });
            q.build().execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
        n += rows;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The ceiling of group commit on this machine's storage, measured in the
/// same run as `group-commit`: plain row inserts with no Merkle tree, no
/// channel and no concurrency, 1 against 64 rows per transaction.
async fn engine_ceiling() -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let dur = Duration::from_secs(3);
    let one = engine_rows_per_second(&dir.path().join("one.db"), 1, false, dur).await;
    let many = engine_rows_per_second(&dir.path().join("many.db"), WRITERS, false, dur).await;
    let packed = engine_rows_per_second(&dir.path().join("packed.db"), WRITERS, true, dur).await;
    println!(
        "SQLite alone (synchronous=FULL, one sqlx connection, {}s each):",
        dur.as_secs()
    );
    println!("  1 row per transaction:                {one:>10.0} rows/s");
    println!(
        "  {WRITERS} rows per transaction:               {many:>10.0} rows/s  ({:.1}x)",
        many / one
    );
    println!(
        "  {WRITERS} leaves in 1 row per transaction:    {packed:>10.0} leaves/s ({:.1}x)",
        packed / one
    );
    packed
}

async fn proofs() {
    const N: u64 = 10_000_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tree.db");
    let store: DynStore = Arc::new(SqliteStore::open(&path).await.unwrap());
    // Bulk-load the tiles of a 10M-leaf tree (entries themselves are not
    // read by proofs). Setup only: a plain connection with relaxed syncing.
    let started = Instant::now();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("PRAGMA synchronous=OFF")
        .execute(&pool)
        .await
        .unwrap();
    let mut range = CompactRange::new();
    let mut tiles = coffre::audit::tiles::TileAppender::new(0, &[]).unwrap();
    for i in 0..N {
        let leaf = ring::digest::digest(&ring::digest::SHA256, &i.to_be_bytes());
        let mut h = [0u8; 32];
        h.copy_from_slice(leaf.as_ref());
        range.append(h).unwrap();
        tiles.append(h).unwrap();
        if i % 1_000_000 == 999_999 || i + 1 == N {
            let full = tiles.take_full();
            let mut tx = pool.begin().await.unwrap();
            for (l, n, hashes) in
                full.into_iter()
                    .map(|(l, n, h)| (l, n, h.concat()))
                    .chain(if i + 1 == N {
                        tiles.edge_tiles()
                    } else {
                        Vec::new()
                    })
            {
                sqlx::query("INSERT INTO audit_tiles (level, idx, hashes) VALUES ($1, $2, $3)")
                    .bind(i64::from(l))
                    .bind(n as i64)
                    .bind(hashes)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }
    }
    for table in ["audit_head", "audit_integration"] {
        sqlx::query(&format!("UPDATE {table} SET size = $1"))
            .bind(N as i64)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    println!(
        "proofs: built a {N}-leaf tree in {:.0}s",
        started.elapsed().as_secs_f64()
    );

    let log = AuditLog::start(store, "bench/audit".into());
    let root = log.root(N).await.unwrap();
    assert_eq!(
        root,
        range.root(),
        "stored tree disagrees with the in-memory one"
    );
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (name, kind) in [("inclusion", 0), ("consistency", 1)] {
        let mut times = Vec::new();
        for _ in 0..2000 {
            let a = next() % N;
            let t = Instant::now();
            if kind == 0 {
                log.inclusion_proof(a, N).await.unwrap();
            } else {
                log.consistency_proof(a.max(1), N).await.unwrap();
            }
            times.push(t.elapsed());
        }
        times.sort();
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        let p99 = times[times.len() * 99 / 100];
        println!(
            "  {name} proof at {N} entries: mean {:.3} ms, p99 {:.3} ms (goal < 1 ms: {})",
            mean.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            if mean < Duration::from_millis(1) {
                "MET"
            } else {
                "NOT MET"
            }
        );
    }
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
    let grouped = want("group-commit").then(|| rt.block_on(group_commit()));
    if want("group-commit") || want("engine-ceiling") {
        let packed = rt.block_on(engine_ceiling());
        if let Some(grouped) = grouped {
            let share = grouped / packed;
            println!(
                "group commit / SQLite's packed ceiling, same run: {:.0} % (goal >= 60 %: {})",
                share * 100.0,
                if share >= 0.6 { "MET" } else { "NOT MET" }
            );
        }
    }
    if want("proofs") {
        rt.block_on(proofs());
    }
}
