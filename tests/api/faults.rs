//! Faults of the machine under the real binary: a full disk under the
//! database, a full disk under the process's own log. Each: nothing answered
//! 200 without its entry committed, every acknowledged entry present after a
//! restart, `audit verify` passes, and the service recovers by itself when
//! the fault clears. (SIGKILL during a write burst is in `cli.rs`.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::notice;

const AWA: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000001";

fn coffre(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffre"));
    cmd.current_dir(dir).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("COFFRE_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request on a fresh connection: (status, head, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, head.to_string(), body.to_string()))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Starts the demo and waits for "listening"; stderr keeps being drained.
fn start_demo(dir: &Path, port: u16) -> Child {
    let mut child = coffre(dir, &["serve", "--demo"])
        .env("COFFRE_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if line.contains("listening") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    child
}

fn stop(mut child: Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap()
}

/// (cookie, csrf) of a demo persona.
fn login(port: u16, persona: &str) -> (String, String) {
    let (_, head, _) = http(
        port,
        "POST",
        "/dev/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        &format!("persona={persona}"),
    )
    .unwrap();
    let cookie = header(&head, "set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let (_, _, me) = http(port, "GET", "/api/v1/me", &[("cookie", &cookie)], "").unwrap();
    let me: serde_json::Value = serde_json::from_str(&me).unwrap();
    (cookie, me["csrf_token"].as_str().unwrap().to_string())
}

/// A tmpfs of `size` mounted at `at`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` with one file until ENOSPC.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // Smaller writes take the last pages.
    while f.write_all(&chunk[..512]).is_ok() {}
    let _ = f.sync_all();
    path
}

/// The full disk (issue 19 §1): once a commit failed with SQLITE_FULL the
/// writer's connection stayed inside a failed transaction; later entries
/// were acknowledged, never committed, and data was served against them.
#[test]
fn a_full_disk_under_the_database_acknowledges_nothing_uncommitted_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(tmpfs) = Tmpfs::mount(&data, "16m") else {
        notice(
            "SKIPPED: faults::a_full_disk_under_the_database… (cannot mount a tmpfs: run as root, as .ci/run does)",
        );
        return;
    };
    let port = free_port();
    let child = start_demo(dir.path(), port);
    let (cookie, csrf) = login(port, AWA);
    let filler = fill(&data);

    // Writers and readers until every one of them has been refused a few
    // times (the disk is full), then the disk is freed and they go on until
    // each is served again.
    let acknowledged = Arc::new(Mutex::new(Vec::<(u64, &'static str)>::new()));
    let refused = Arc::new(Mutex::new(0u64));
    let freed = Arc::new(AtomicBool::new(false));
    let recovered = Arc::new(Mutex::new(0u64));
    let mut clients = Vec::new();
    for c in 0..6u64 {
        let (cookie, csrf) = (cookie.clone(), csrf.clone());
        let (acknowledged, refused, freed, recovered) = (
            acknowledged.clone(),
            refused.clone(),
            freed.clone(),
            recovered.clone(),
        );
        clients.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(90);
            let mut served_after_free = 0;
            for i in 0u64.. {
                if Instant::now() > deadline || served_after_free >= 5 {
                    break;
                }
                let headers = [
                    ("cookie", cookie.as_str()),
                    ("x-csrf-token", csrf.as_str()),
                    ("content-type", "application/json"),
                ];
                let (res, action) = if c % 2 == 0 {
                    let body = format!(
                        "{{\"phone\":\"06{:08}\",\"postal_address\":\"{}\"}}",
                        c * 10_000_000 + i,
                        "x".repeat(290)
                    );
                    (
                        http(port, "PUT", "/api/v1/me/data/contact", &headers, &body),
                        "data.write",
                    )
                } else {
                    (
                        http(port, "GET", "/api/v1/me/data/identity", &headers, ""),
                        "data.read",
                    )
                };
                match res {
                    Some((200, head, body)) => {
                        let idx = header(&head, "x-audit-entry")
                            .unwrap_or_else(|| panic!("200 without an entry: {head}"))
                            .parse()
                            .unwrap();
                        acknowledged.lock().unwrap().push((idx, action));
                        if action == "data.read" {
                            assert!(body.contains("Diallo"), "{body}");
                        }
                        if freed.load(Ordering::SeqCst) {
                            served_after_free += 1;
                        }
                    }
                    Some((409, ..)) => {}
                    Some((status, _, body)) => {
                        assert_eq!(status, 503, "{body}");
                        assert!(
                            !body.contains("Diallo") && !body.contains("06"),
                            "a refusal quoted data: {body}"
                        );
                        *refused.lock().unwrap() += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    None => panic!("the server stopped answering"),
                }
            }
            if served_after_free >= 5 {
                *recovered.lock().unwrap() += 1;
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while *refused.lock().unwrap() < 30 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused_while_full = *refused.lock().unwrap();
    std::fs::remove_file(&filler).unwrap();
    freed.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    assert!(
        refused_while_full >= 30,
        "the full disk refused only {refused_while_full} requests"
    );
    assert_eq!(
        *recovered.lock().unwrap(),
        6,
        "every client is served again once space returns, without a restart"
    );
    assert!(stop(child).success());

    // Every acknowledged entry is in the log, as what it said it was.
    let out = coffre(dir.path(), &["audit", "verify"]).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let size: u64 = text
        .split("audit log OK: ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in {text}"));
    let acknowledged = acknowledged.lock().unwrap().clone();
    let port = free_port();
    let child = start_demo(dir.path(), port);
    let (auditor, _) = login(port, "a1d00000-0000-4000-8000-000000000005");
    let mut by_index = std::collections::HashMap::new();
    let mut from = 0;
    while from < size {
        let to = (from + 1000).min(size);
        let (status, _, body) = http(
            port,
            "GET",
            &format!("/api/v1/audit/entries?from={from}&to={to}"),
            &[("cookie", &auditor)],
            "",
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        for e in v["entries"].as_array().unwrap() {
            by_index.insert(e["index"].as_u64().unwrap(), e.clone());
        }
        from = to;
    }
    for (idx, action) in &acknowledged {
        let e = by_index
            .get(idx)
            .unwrap_or_else(|| panic!("acknowledged entry {idx} lost (log of {size})"));
        assert_eq!(e["action"], *action, "entry {idx}: {e}");
        assert_eq!(e["decision"], "allow", "entry {idx}: {e}");
    }
    assert!(stop(child).success());
    drop(tmpfs);
}

/// The process's own log on a full filesystem (issue 19 §1): a failed log
/// write was reported with `eprintln!`, which panicked, and the panic hook's
/// own `eprintln!` aborted the process (SIGABRT). `/dev/full` fails every
/// write with ENOSPC.
#[test]
fn a_full_disk_under_the_log_does_not_stop_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full");
    let (Ok(out), Ok(err)) = (full(), full()) else {
        notice("SKIPPED: faults::a_full_disk_under_the_log… (no /dev/full)");
        return;
    };
    let mut child = coffre(dir.path(), &["serve", "--demo"])
        .env("COFFRE_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the server died while starting with its log on a full disk: {status}");
        }
        if http(port, "GET", "/healthz", &[], "").is_some_and(|(s, ..)| s == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Requests that log: served, refused, not found, a write.
    let (cookie, csrf) = login(port, AWA);
    for _ in 0..20 {
        let (s, ..) = http(port, "GET", "/api/v1/me/data", &[("cookie", &cookie)], "").unwrap();
        assert_eq!(s, 200);
        let (s, ..) = http(port, "GET", "/nowhere", &[], "").unwrap();
        assert_eq!(s, 404);
        let (s, ..) = http(port, "GET", "/api/v1/me/data", &[], "").unwrap();
        assert_eq!(s, 401);
        let (s, ..) = http(
            port,
            "PUT",
            "/api/v1/me/data/contact",
            &[
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
                ("content-type", "application/json"),
            ],
            "{\"phone\":\"0611111111\"}",
        )
        .unwrap();
        assert_eq!(s, 200);
    }
    assert!(child.try_wait().unwrap().is_none(), "the server died");
    let status = stop(child);
    assert!(status.success(), "exit after SIGTERM: {status}");
}

/// A PostgreSQL cluster of the test's own (so stopping it disturbs no other
/// test), run by the `postgres` system user; stopped on drop.
struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PrivatePostgres {
    fn start() -> Result<PrivatePostgres, String> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("no /usr/lib/postgresql ({e})"))?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("pg_ctl").exists())
            .ok_or("no pg_ctl")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("pg");
        std::fs::create_dir(&data).map_err(|e| e.to_string())?;
        let run = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("chmod")
                .args(["755", dir.path().to_str().unwrap_or("")])
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err("chmod".into());
            }
            let out = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{args:?}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        let chown = Command::new("chown")
            .args(["postgres", data.to_str().unwrap_or("")])
            .status()
            .map_err(|e| e.to_string())?;
        if !chown.success() {
            return Err("chown (not root?)".into());
        }
        let initdb = bin.join("initdb");
        run(&[
            initdb.to_str().unwrap_or(""),
            "-D",
            data.to_str().unwrap_or(""),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ])?;
        let pg = PrivatePostgres {
            bin,
            data,
            port: free_port(),
            _dir: dir,
        };
        pg.ctl("start")?;
        Ok(pg)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn ctl(&self, action: &str) -> Result<(), String> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.data.display()
        );
        let log = self.data.join("server.log");
        let mut args = vec![
            self.bin.join("pg_ctl").display().to_string(),
            "-D".into(),
            self.data.display().to_string(),
            "-w".into(),
        ];
        if action == "start" {
            args.extend(["-o".into(), opts, "-l".into(), log.display().to_string()]);
        } else {
            args.extend(["-m".into(), "fast".into()]);
        }
        args.push(action.into());
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(&args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl {action}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.ctl("stop");
    }
}

/// PostgreSQL stopped and restarted under load (issue 19): nothing answered
/// 200 without its entry committed, every acknowledged entry present after,
/// `audit verify` passes, and the service recovers without a restart.
#[test]
fn a_postgres_restart_under_load_acknowledges_nothing_uncommitted_and_recovers() {
    if std::env::var(crate::support::PG_ENV).is_err() {
        notice(
            "SKIPPED: faults::a_postgres_restart_under_load… (COFFRE_TEST_POSTGRES_URL is not set; .ci/run sets it)",
        );
        return;
    }
    let pg = PrivatePostgres::start().unwrap_or_else(|e| {
        panic!("COFFRE_TEST_POSTGRES_URL is set but a private PostgreSQL cannot start: {e}")
    });
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = pg.url();
    let mut child = coffre(dir.path(), &["serve", "--demo"])
        .env("COFFRE_LISTEN", format!("127.0.0.1:{port}"))
        .env("COFFRE_DATABASE_URL", &url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            if line.contains("listening") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
    }
    let (cookie, csrf) = login(port, AWA);

    let acknowledged = Arc::new(Mutex::new(Vec::<(u64, &'static str)>::new()));
    let down = Arc::new(AtomicBool::new(false));
    let back = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(Mutex::new(0u64));
    let recovered = Arc::new(Mutex::new(0u64));
    let mut clients = Vec::new();
    for c in 0..6u64 {
        let (cookie, csrf) = (cookie.clone(), csrf.clone());
        let (acknowledged, down, back, refused, recovered) = (
            acknowledged.clone(),
            down.clone(),
            back.clone(),
            refused.clone(),
            recovered.clone(),
        );
        clients.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(90);
            let mut served_after = 0;
            for i in 0u64.. {
                if Instant::now() > deadline || served_after >= 5 {
                    break;
                }
                let headers = [
                    ("cookie", cookie.as_str()),
                    ("x-csrf-token", csrf.as_str()),
                    ("content-type", "application/json"),
                ];
                let (res, action) = if c % 2 == 0 {
                    let body = format!("{{\"phone\":\"06{:08}\"}}", c * 10_000_000 + i);
                    (
                        http(port, "PUT", "/api/v1/me/data/contact", &headers, &body),
                        "data.write",
                    )
                } else {
                    (
                        http(port, "GET", "/api/v1/me/data/identity", &headers, ""),
                        "data.read",
                    )
                };
                match res {
                    Some((200, head, _)) => {
                        let idx = header(&head, "x-audit-entry")
                            .unwrap_or_else(|| panic!("200 without an entry: {head}"))
                            .parse()
                            .unwrap();
                        acknowledged.lock().unwrap().push((idx, action));
                        if back.load(Ordering::SeqCst) {
                            served_after += 1;
                        }
                    }
                    Some((409, ..)) => {}
                    Some((status, _, body)) => {
                        assert_eq!(status, 503, "{body}");
                        assert!(!body.contains("Diallo"), "{body}");
                        if down.load(Ordering::SeqCst) {
                            *refused.lock().unwrap() += 1;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    None => panic!("the server stopped answering"),
                }
            }
            if served_after >= 5 {
                *recovered.lock().unwrap() += 1;
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    down.store(true, Ordering::SeqCst);
    pg.ctl("stop").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    pg.ctl("start").unwrap();
    back.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    assert!(
        *refused.lock().unwrap() > 0,
        "no request was refused while PostgreSQL was down"
    );
    assert_eq!(
        *recovered.lock().unwrap(),
        6,
        "every client is served again after the restart, without restarting coffre"
    );
    assert!(stop(child).success());

    let out = coffre(dir.path(), &["audit", "verify"])
        .env("COFFRE_DATABASE_URL", &url)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let size: u64 = text
        .split("audit log OK: ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in {text}"));
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 10, "{}", acknowledged.len());
    // Read the acknowledged entries back through a fresh server.
    let port = free_port();
    let mut child = coffre(dir.path(), &["serve", "--demo"])
        .env("COFFRE_LISTEN", format!("127.0.0.1:{port}"))
        .env("COFFRE_DATABASE_URL", &url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = lines.next().expect("no listening").unwrap();
            if line.contains("listening") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
    }
    let (auditor, _) = login(port, "a1d00000-0000-4000-8000-000000000005");
    let mut by_index = std::collections::HashMap::new();
    let mut from = 0;
    while from < size {
        let to = (from + 1000).min(size);
        let (status, _, body) = http(
            port,
            "GET",
            &format!("/api/v1/audit/entries?from={from}&to={to}"),
            &[("cookie", &auditor)],
            "",
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        for e in v["entries"].as_array().unwrap() {
            by_index.insert(e["index"].as_u64().unwrap(), e["action"].clone());
        }
        from = to;
    }
    for (idx, action) in &acknowledged {
        assert_eq!(
            by_index.get(idx).and_then(|a| a.as_str()),
            Some(*action),
            "acknowledged entry {idx} (log of {size})"
        );
    }
    assert!(stop(child).success());
}
