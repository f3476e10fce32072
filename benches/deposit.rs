//! Deposit benchmark (issue 21): a data source's NDJSON stream over HTTP
//! into a seeded territory, deposits per second against a ceiling measured
//! in the same run, and the server's peak memory at each stream length.
//! Goal: at least 50 % of the ceiling, and the same peak memory at 100 k
//! and 1 M lines.
//!
//! Set-up (not timed): in a fresh folder, `coffre keys init` and
//! `coffre seed --residents R` (release binary), credentials for the link
//! source `energie-locale` (`coffre source add`), then every resident linked
//! to it through the storage layer with the handle the product gives
//! (`link_source`, as `coffre serve --demo` links its resident). That
//! database is the snapshot every run starts from.
//!
//! For each stream length L, three runs, each on a fresh copy of the
//! snapshot: the stream, then the ceiling twice in the batch size the
//! server used (the disk's commit latency drifts with other work on the
//! machine; the stream is compared with the mean of the two).
//!
//! - **ceiling**: one sqlx connection with the product's SQLite settings
//!   (WAL, `synchronous=FULL`, the same pragmas) seals the first
//!   min(L, `COFFRE_BENCH_DEPOSIT_CEILING_LINES`) of the same deposits
//!   with the vault's `Sealer` (each resident's data key unwrapped once
//!   beforehand) and inserts the same `personal_records` and
//!   `source_deposits` rows with the product's SQL (one multi-row statement per table), in transactions of
//!   the batch size the product's audit log writer committed deposits in during the
//!   stream (its mean over the stream, from the writer's report in the
//!   server's log, rounded up): no HTTP, no parsing, no checks, no audit
//!   entry.
//! - **coffre**: the release `coffre serve` as a child process; one
//!   `POST /api/v1/source/deposits` whose body is generated lazily (a
//!   streaming request body, chunked; never more than one chunk of lines in
//!   memory), cycling over the linked residents with distinct source record
//!   ids, so that every line is `accepted`. The answer is read as it comes,
//!   line by line: every line must be exactly `{"line":n,"id":…,
//!   "status":"accepted"}` in order, and the summary must count L accepted.
//!   The server's peak memory is its own `VmHWM` (`/proc/PID/status`), read
//!   before it is stopped: the load generator (this process) is not in it.
//!   The mark is reset (`/proc/PID/clear_refs`, 5) once the server is up
//!   and idle, so the figure is the stream's peak, not start-up's (printed
//!   beside it), with the RSS at every tenth of the stream.
//!
//! The stream is one request with one token, checked when it begins; as
//! it goes the server only asks again whether the source is still active,
//! so a stream may outlast the token's 300 s.
//!
//! Run: `cargo bench --bench deposit`
//! Knobs: `COFFRE_BENCH_DEPOSIT_LINES` (comma-separated stream lengths,
//! default `100000,1000000`), `COFFRE_BENCH_DEPOSIT_RESIDENTS` (default
//! 50000), `COFFRE_BENCH_DEPOSIT_CEILING_LINES` (caps the ceiling's length;
//! default 50000). SQLite only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use base64::Engine;
use coffre::crypto::{LiveKeys, SealContext, SealProvenance, Sealer, WrappedDataKey};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use sqlx::Row;

const SOURCE: &str = "energie-locale";
/// Its legal basis in the register (policies/sources.toml).
const BASIS: &str = "resident_authorisation";
/// Lines per chunk of the request body.
const CHUNK_LINES: u64 = 256;
const HEATING: [&str; 5] = ["electric", "gas", "heat_pump", "wood", "oil"];
const LABELS: [&str; 7] = ["A", "B", "C", "D", "E", "F", "G"];

/// The child server, stopped even when the benchmark panics.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The run folder's layout, as `coffre` is told it by the environment.
struct Run {
    dir: PathBuf,
}

impl Run {
    fn db(&self) -> PathBuf {
        self.dir.join("data/coffre.db")
    }
    fn snapshot(&self) -> PathBuf {
        self.dir.join("seeded.db")
    }
    fn keys(&self) -> PathBuf {
        self.dir.join("keys")
    }
    fn unlock(&self) -> PathBuf {
        self.dir.join("unlock.key")
    }
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_coffre"));
        c.args(args)
            .current_dir(&self.dir)
            // coffre refuses unknown COFFRE_* variables, such as this
            // benchmark's own knobs.
            .env_clear()
            .env(
                "COFFRE_DATABASE_URL",
                format!("sqlite://{}", self.db().display()),
            )
            .env("COFFRE_KEYS_DIR", self.keys())
            // Outside the keys folder, as in production.
            .env("COFFRE_UNLOCK_IDENTITY_FILE", self.unlock())
            .env("RUST_LOG", "warn");
        c
    }
    /// Runs a `coffre` command to its end; its standard output.
    fn coffre(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "coffre {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
    /// A fresh copy of the seeded snapshot at `to` (its WAL files gone).
    fn restore(&self, to: &Path) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", to.display()));
        }
        std::fs::copy(self.snapshot(), to).unwrap();
    }
}

/// A field of `/proc/PID/status`, in MB.
fn proc_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)
                    .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds a process has used (user + system, `/proc/PID/stat`).
fn proc_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces), from field 3.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (12 and 13 here), in clock
    // ticks (100 per second on Linux).
    (ticks(11) + ticks(12)) / 100.0
}

/// The deposit of line `i` (0-based): the resident, the source's record id
/// and the fields. The same for the ceiling and the stream.
fn deposit_of(i: u64, residents: u64) -> (usize, String, Map<String, Value>) {
    let fields = json!({
        "heating": HEATING[(i % 5) as usize],
        "annual_kwh": 1_000 + (i * 7_919) % 20_000,
        "energy_label": LABELS[(i % 7) as usize],
        "renovation_interest": i.is_multiple_of(3),
    });
    let Value::Object(fields) = fields else {
        unreachable!()
    };
    ((i % residents) as usize, format!("m-{i:08}"), fields)
}

/// The ceiling: the same deposits sealed and inserted, `batch` per
/// transaction with one multi-row statement per table (the product's SQL),
/// on one connection with the product's settings. Returns rows per second.
async fn ceiling(
    run: &Run,
    keys: &LiveKeys,
    residents: &[String],
    lines: u64,
    batch: u64,
    observed_at: i64,
) -> f64 {
    use sqlx::ConnectOptions;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    let path = run.dir.join("ceiling.db");
    run.restore(&path);
    // The product's settings (storage/sqlite.rs).
    let mut conn = SqliteConnectOptions::new()
        .filename(&path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5))
        .pragma("secure_delete", "ON")
        .pragma("cache_size", "-32768")
        .pragma("mmap_size", "0")
        .connect()
        .await
        .unwrap();
    // Each resident's sealer and latest energy version, once: no per-row
    // lookups.
    let set = keys.current();
    let mut sealers: std::collections::HashMap<String, Sealer> =
        sqlx::query("SELECT resident_id, kek_version, wrapped FROM data_keys")
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .map(|row| {
                let resident: String = row.get(0);
                let wrapped = WrappedDataKey {
                    kek_version: u32::try_from(row.get::<i64, _>(1)).unwrap(),
                    bytes: row.get(2),
                };
                let sealer = set
                    .unwrap_data_key(&resident, &wrapped)
                    .unwrap()
                    .sealer()
                    .unwrap();
                (resident, sealer)
            })
            .collect();
    let sealers: Vec<Sealer> = residents
        .iter()
        .map(|r| sealers.remove(r).unwrap())
        .collect();
    let latest: std::collections::HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT resident_id, MAX(version) FROM personal_records WHERE category = 'energy' GROUP BY resident_id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut versions: Vec<i64> = residents
        .iter()
        .map(|r| latest.get(r).copied().unwrap_or(0))
        .collect();
    let digest_domain = format!("source-deposit:{SOURCE}");
    let n = residents.len() as u64;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(batch as usize);
    for i in 0..lines {
        let (r, record_id_of_source, fields) = deposit_of(i, n);
        let resident = residents[r].as_str();
        versions[r] += 1;
        let version = versions[r];
        let record_id = uuid::Uuid::new_v4().to_string();
        let now = observed_at;
        let plaintext = serde_json::to_vec(&fields).unwrap();
        let sealed = sealers[r]
            .seal(
                &SealContext {
                    resident_id: resident,
                    category: "energy",
                    record_id: &record_id,
                    version,
                    // The provenance is bound into the seal, as the
                    // product seals a deposit (envelope format 2).
                    provenance: Some(SealProvenance {
                        source_id: SOURCE,
                        source_record_id: &record_id_of_source,
                        basis: BASIS,
                        observed_at,
                        deposited_at: now,
                    }),
                },
                &plaintext,
            )
            .unwrap();
        let canonical = json!({"category": "energy", "fields": fields, "observed_at": observed_at});
        let digest = set.pseudonym(&digest_domain, canonical.to_string().as_bytes());
        pending.push((record_id, r, version, sealed, record_id_of_source, digest));
        if (i + 1) % batch == 0 || i + 1 == lines {
            // The product's SQL (`record_deposits`): one multi-row statement
            // per table and transaction.
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .unwrap();
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO personal_records \
                 (id, resident_id, category, version, sealed, created_at, origin, \
                  source_id, source_record_id, observed_at, source_basis) ",
            );
            q.push_values(
                &pending,
                |mut b, (record_id, r, version, sealed, of_source, _)| {
                    b.push_bind(record_id)
                        .push_bind(residents[*r].as_str())
                        .push_bind("energy")
                        .push_bind(*version)
                        .push_bind(sealed)
                        .push_bind(observed_at)
                        .push_bind("source")
                        .push_bind(SOURCE)
                        .push_bind(of_source)
                        .push_bind(observed_at)
                        .push_bind(BASIS);
                },
            );
            q.build().execute(&mut conn).await.unwrap();
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO source_deposits \
                 (source_id, source_record_id, resident_id, category, content_digest, record_id, deposited_at) ",
            );
            q.push_values(
                &pending,
                |mut b, (record_id, r, _, _, of_source, digest)| {
                    b.push_bind(SOURCE)
                        .push_bind(of_source)
                        .push_bind(residents[*r].as_str())
                        .push_bind("energy")
                        .push_bind(digest)
                        .push_bind(record_id)
                        .push_bind(observed_at);
                },
            );
            q.push(
                " ON CONFLICT (source_id, source_record_id) DO UPDATE SET \
                 resident_id = excluded.resident_id, category = excluded.category, \
                 content_digest = excluded.content_digest, record_id = excluded.record_id, \
                 deposited_at = excluded.deposited_at",
            );
            q.build().execute(&mut conn).await.unwrap();
            sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
            pending.clear();
        }
    }
    let rate = lines as f64 / started.elapsed().as_secs_f64();
    sqlx::Connection::close(conn).await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    rate
}

/// What one streamed run measured.
struct Streamed {
    rate: f64,
    /// Deposits per transaction, as the server's audit log writer committed
    /// them.
    mean_batch: f64,
    /// The server's CPU over the stream, in cores (CPU seconds / seconds).
    server_cores: f64,
    idle_mb: f64,
    /// VmHWM before the stream (start-up included).
    start_peak_mb: f64,
    /// VmHWM over the stream alone.
    peak_mb: f64,
    /// (lines answered, seconds since the start, server RSS MB) every tenth.
    marks: Vec<(u64, f64, f64)>,
}

/// The last report of the server's audit log writer about the deposits it stored, in its log: (deposits,
/// transactions).
fn writer_report(log: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(log).unwrap();
    let found = text
        .lines()
        .rev()
        .find(|l| l.contains("deposits carried since its last report"))
        .unwrap_or_else(|| panic!("no report of the deposits stored in {}", log.display()));
    // Without the terminal's colours (ESC [ … m).
    let mut line = String::with_capacity(found.len());
    let mut in_escape = false;
    for c in found.chars() {
        match (in_escape, c) {
            (false, '\u{1b}') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, c) => line.push(c),
        }
    }
    let field = |name: &str| -> u64 {
        for pattern in [format!("{name}="), format!("\"{name}\":")] {
            if let Some(at) = line.find(&pattern) {
                let digits: String = line[at + pattern.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                return digits.parse().unwrap();
            }
        }
        panic!("no {name} in {line}")
    };
    (field("deposits"), field("transactions"))
}

/// Starts `coffre serve` on the snapshot's copy and waits until it is ready.
async fn start_server(run: &Run) -> (Server, String, PathBuf) {
    run.restore(&run.db());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let log = run.dir.join(format!("coffre-{port}.log"));
    let child = run
        .command(&["serve"])
        .env("COFFRE_LISTEN", &addr)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let server = Server(child);
    let http = reqwest::Client::new();
    for _ in 0..1200 {
        if http
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return (server, addr, log);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "coffre did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// One deposit stream of `lines` lines to a fresh server.
async fn stream(
    run: &Run,
    credentials: &(String, String),
    handles: Arc<Vec<String>>,
    lines: u64,
    observed_at: i64,
) -> Streamed {
    let (server, addr, log) = start_server(run).await;
    let pid = server.0.id();
    // A token, as a source gets one (client_secret_basic).
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", credentials.0, credentials.1));
    let token: Value = reqwest::Client::new()
        .post(format!("http://{addr}/oauth/token"))
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_mb = proc_mb(pid, "VmRSS");
    let start_peak_mb = proc_mb(pid, "VmHWM");
    // The stream's own peak: the high-water mark is reset to the current
    // RSS (Linux >= 4.0), so what start-up used and freed is not in it.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();

    // The request body, made as it is sent: CHUNK_LINES lines at a time.
    let n = handles.len() as u64;
    let body_stream = futures_util::stream::unfold(0u64, move |next| {
        let handles = handles.clone();
        async move {
            if next >= lines {
                return None;
            }
            let end = (next + CHUNK_LINES).min(lines);
            let mut buf = Vec::with_capacity(200 * CHUNK_LINES as usize);
            for i in next..end {
                let (r, id, fields) = deposit_of(i, n);
                serde_json::to_writer(
                    &mut buf,
                    &json!({"id": id, "handle": handles[r], "category": "energy", "fields": fields, "observed_at": observed_at}),
                )
                .unwrap();
                buf.push(b'\n');
            }
            Some((
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(buf))),
                end,
            ))
        }
    });
    let body = http_body_util::StreamBody::new(body_stream);
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, _>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = axum::http::Request::post("/api/v1/source/deposits")
        .header("host", &addr)
        .header("authorization", format!("Bearer {bearer}"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .unwrap();

    let started = Instant::now();
    let cpu_before = proc_cpu_secs(pid);
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut answer = response.into_body();
    let mut pending: Vec<u8> = Vec::new();
    let mut answered = 0u64;
    let mut summary: Option<Value> = None;
    let mut marks = Vec::new();
    let tenth = (lines / 10).max(1);
    while let Some(frame) = answer.frame().await {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        let mut start = 0;
        while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
            let line = &pending[start..start + nl];
            start += nl + 1;
            assert!(summary.is_none(), "a line after the summary");
            if answered == lines {
                summary = Some(serde_json::from_slice(line).unwrap());
                continue;
            }
            assert!(
                !line.starts_with(br#"{"error""#),
                "the server stopped the stream after {answered} lines ({:.0} s): {} (a stream outliving its token's 300 s is stopped by the token recheck)",
                started.elapsed().as_secs_f64(),
                String::from_utf8_lossy(line)
            );
            let expected = format!(
                r#"{{"line":{},"id":"m-{answered:08}","status":"accepted"}}"#,
                answered + 1
            );
            assert!(
                line == expected.as_bytes(),
                "line {}: {}",
                answered + 1,
                String::from_utf8_lossy(line)
            );
            answered += 1;
            if answered.is_multiple_of(tenth) {
                marks.push((
                    answered,
                    started.elapsed().as_secs_f64(),
                    proc_mb(pid, "VmRSS"),
                ));
            }
        }
        pending.drain(..start);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cores = (proc_cpu_secs(pid) - cpu_before) / elapsed;
    assert!(pending.is_empty(), "an unfinished answer line");
    assert_eq!(answered, lines);
    let summary = summary.expect("no summary line");
    assert_eq!(
        summary,
        json!({"summary": {"accepted": lines, "unchanged": 0, "rejected": 0}})
    );
    let peak_mb = proc_mb(pid, "VmHWM");
    // The audit log's writer reports its deposits once idle for a second: how many
    // transactions the stream's deposits took.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(server);
    let (deposits, transactions) = writer_report(&log);
    assert_eq!(deposits, lines, "the audit log writer's report");
    Streamed {
        rate: lines as f64 / elapsed,
        mean_batch: deposits as f64 / transactions as f64,
        server_cores,
        idle_mb,
        start_peak_mb,
        peak_mb,
        marks,
    }
}

fn main() {
    let sizes: Vec<u64> = std::env::var("COFFRE_BENCH_DEPOSIT_LINES")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("COFFRE_BENCH_DEPOSIT_LINES: numbers")
        })
        .collect();
    let residents_n = env_u64("COFFRE_BENCH_DEPOSIT_RESIDENTS", 50_000);
    let ceiling_cap = env_u64("COFFRE_BENCH_DEPOSIT_CEILING_LINES", 50_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Removed at the end; kept after a failure, to look into.
        let run = Run {
            dir: std::env::temp_dir().join(format!("coffre-bench-deposit-{}", std::process::id())),
        };
        std::fs::create_dir_all(&run.dir).unwrap();
        let t = Instant::now();
        run.coffre(&["keys", "init", "--generate-unlock-identity"]);
        run.coffre(&["seed", "--residents", &residents_n.to_string()]);
        let added: Value = serde_json::from_str(
            run.coffre(&["source", "add", "--id", SOURCE, "--name", "Bench", "--json"])
                .trim(),
        )
        .unwrap();
        let credentials = (
            added["client_id"].as_str().unwrap().to_string(),
            added["client_secret"].as_str().unwrap().to_string(),
        );
        // Every resident linked, with the handle the product gives
        // (service::sources::handle_of), through the storage layer.
        let keys = LiveKeys::load(run.keys(), run.unlock()).unwrap();
        let store = coffre::storage::SqliteStore::open(&run.db()).await.unwrap();
        let reader = sqlx::SqlitePool::connect(&format!("sqlite://{}", run.db().display()))
            .await
            .unwrap();
        let residents: Vec<String> =
            sqlx::query_scalar("SELECT id FROM residents WHERE status = 'active' ORDER BY id")
                .fetch_all(&reader)
                .await
                .unwrap();
        reader.close().await;
        assert_eq!(residents.len() as u64, residents_n);
        let link_time = chrono_now();
        let set = keys.current();
        let mut handles = Vec::with_capacity(residents.len());
        for r in &residents {
            let handle = set.pseudonym(&format!("source-handle:{SOURCE}"), r.as_bytes());
            assert!(
                coffre::storage::SourceStore::link_source(
                    &store,
                    SOURCE,
                    &coffre::domain::ResidentId::parse(r).expect("a seeded resident id"),
                    &handle,
                    link_time,
                )
                    .await
                    .unwrap()
            );
            handles.push(handle);
        }
        let handles = Arc::new(handles);
        coffre::storage::InstanceStore::close(&store).await;
        // Everything into the database file before it is copied (a copy
        // of the file alone misses what is still in the WAL), then checked
        // in the copy.
        let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", run.db().display()))
            .await
            .unwrap();
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(busy, 0, "the WAL checkpoint was blocked");
        db.close().await;
        std::fs::copy(run.db(), run.snapshot()).unwrap();
        let snapshot = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}?mode=ro",
            run.snapshot().display()
        ))
        .await
        .unwrap();
        let linked: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM source_links WHERE source_id = $1 AND revoked_at IS NULL",
        )
        .bind(SOURCE)
        .fetch_one(&snapshot)
        .await
        .unwrap();
        snapshot.close().await;
        assert_eq!(linked as u64, residents_n, "links in the snapshot");
        println!(
            "deposit: SQLite synchronous=FULL, {residents_n} seeded residents linked to `{SOURCE}` (set-up {:.0} s); the ceiling commits in the stream's own batch size",
            t.elapsed().as_secs_f64()
        );

        let mut peaks = Vec::new();
        for &lines in &sizes {
            // Observed now: after the seeded values (a resident's own
            // writing observed later would stand against it).
            let observed_at = chrono_now();
            // The ceiling commits as many rows per transaction as the
            // server's audit log writer did over the stream (its mean,
            // rounded up: a larger batch only raises the ceiling), so it
            // runs after the stream, twice (the disk's commit latency
            // drifts with other work on the machine), and the stream's
            // rate is compared with their mean.
            let ceiling_lines = lines.min(ceiling_cap);
            let s = stream(&run, &credentials, handles.clone(), lines, observed_at).await;
            let batch = (s.mean_batch.ceil() as u64).max(1);
            let before = ceiling(&run, &keys, &residents, ceiling_lines, batch, observed_at).await;
            let after = ceiling(&run, &keys, &residents, ceiling_lines, batch, observed_at).await;
            let ceiling_rate = (before + after) / 2.0;
            println!(
                "  {lines} lines: the server committed {:.2} deposits per transaction on average; ceiling (seal + insert, the first {ceiling_lines} of the same rows, {batch} per transaction, no HTTP, no checks) {before:.0} and {after:.0} rows/s: mean {ceiling_rate:.0} rows/s",
                s.mean_batch
            );
            let ratio = s.rate / ceiling_rate;
            println!(
                "  {lines} lines: coffre over HTTP, every line accepted: {:.0} deposits/s in {:.0} s, the server using {:.2} cores; ratio {ratio:.3} (against each ceiling run alone: {:.3} / {:.3}; goal ≥ 0.50: {})",
                s.rate,
                lines as f64 / s.rate,
                s.server_cores,
                s.rate / before,
                s.rate / after,
                if ratio >= 0.5 { "MET" } else { "NOT MET" }
            );
            let marks: Vec<String> = s
                .marks
                .iter()
                .map(|(n, secs, rss)| format!("{n}@{secs:.0}s:{rss:.1}"))
                .collect();
            println!(
                "  {lines} lines: server RSS before the stream {:.1} MB (start-up peak {:.1} MB); peak during the stream (VmHWM reset before it) {:.1} MB; lines@seconds:RSS MB {}",
                s.idle_mb,
                s.start_peak_mb,
                s.peak_mb,
                marks.join(" ")
            );
            peaks.push((lines, s.peak_mb));
        }
        std::fs::remove_dir_all(&run.dir).unwrap();
        if peaks.len() > 1 {
            let (min, max) = peaks.iter().fold((f64::MAX, 0.0f64), |(lo, hi), (_, p)| {
                (lo.min(*p), hi.max(*p))
            });
            let list: Vec<String> = peaks
                .iter()
                .map(|(n, p)| format!("{n} lines {p:.1} MB"))
                .collect();
            println!(
                "  server peak memory: {} (spread {:.1} MB, {:.1} %)",
                list.join(", "),
                max - min,
                (max - min) / min * 100.0
            );
        }
    });
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
