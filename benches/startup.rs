//! Start-up time and idle memory (BRIEF §5: start-up under 200 ms on an
//! existing database, idle server under 30 MB RSS), of the real release
//! binary, with the cost of merely starting a process measured in the same
//! run as the baseline (`coffre --version`).
//!
//! The database is created once (`serve --demo` on an empty one, which
//! also seeds the demo territory); then the server is started `RUNS` times
//! on it. Start-up is the time from spawning the process until `/healthz`
//! answers (polled every millisecond); idle RSS is read from
//! `/proc/PID/status` two seconds later.
//!
//! Run: `cargo bench --bench startup`
//! Knobs: `COFFRE_BENCH_DATABASE_URL` (default a fresh SQLite file; a
//! `postgres://` URL of an empty database for PostgreSQL),
//! `COFFRE_BENCH_RUNS` (default 5).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_coffre");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /healthz` answered 200, over a plain socket (no client start-up
/// cost in the measurement).
fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
}

fn start(dir: &Path, database_url: &str, port: u16) -> Child {
    Command::new(BIN)
        .args(["serve", "--demo"])
        .current_dir(dir)
        // coffre refuses unknown COFFRE_* variables, such as
        // this benchmark's own knobs.
        .env_clear()
        .env("COFFRE_DATABASE_URL", database_url)
        .env("COFFRE_LISTEN", format!("127.0.0.1:{port}"))
        .env("COFFRE_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("COFFRE_KEYS_DIR", dir.join("keys"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_healthy(port: u16, limit: Duration) -> Duration {
    let t = Instant::now();
    while !healthy(port) {
        assert!(t.elapsed() < limit, "the server did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    t.elapsed()
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("COFFRE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let database_url = std::env::var("COFFRE_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("coffre.db").display()));
    let backend = if database_url.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };

    // The baseline: starting the same binary to print its version.
    let mut exec = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let ok = Command::new(BIN)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok);
        exec.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // Create the database (migrations, keys, demo territory) once.
    let port = free_port();
    let first = start(dir.path(), &database_url, port);
    let created = wait_healthy(port, Duration::from_secs(120));
    stop(first);

    let mut startup = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let port = free_port();
        let t = Instant::now();
        let child = start(dir.path(), &database_url, port);
        wait_healthy(port, Duration::from_secs(30));
        startup.push(t.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_secs(2));
        rss.push(rss_kib(child.id()) as f64 / 1024.0);
        stop(child);
    }
    let (exec_ms, startup_ms, rss_mb) = (median(exec), median(startup), median(rss));
    println!("startup: {backend}, release binary, median of {runs} runs");
    println!("  baseline `coffre --version`       {exec_ms:>7.1} ms");
    println!(
        "  first start (creates the database, demo territory) {:.0} ms",
        created.as_secs_f64() * 1e3
    );
    println!(
        "  start on the existing database    {startup_ms:>7.1} ms  ({:.1}× the bare exec; goal < 200 ms: {})",
        startup_ms / exec_ms,
        if startup_ms < 200.0 { "met" } else { "NOT met" }
    );
    println!(
        "  idle RSS after 2 s                {rss_mb:>7.1} MB  (goal < 30 MB: {})",
        if rss_mb < 30.0 { "met" } else { "NOT met" }
    );
}
