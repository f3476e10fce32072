//! The real binary: bad configuration ends in one clear line, the server
//! answers right after it says it listens, and SIGTERM drains and exits.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn coffre(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffre"));
    cmd.current_dir(dir).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("COFFRE_") || k == "RUST_BACKTRACE" {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_BACKTRACE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn assert_one_clear_line(out: &Output, needle: &str) {
    assert!(!out.status.success(), "should have failed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("coffre: "))
        .collect();
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert!(lines[0].contains(needle), "{needle:?} not in {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("stack backtrace"),
        "{stderr}"
    );
}

#[test]
fn bad_configuration_exits_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = coffre(d, &["serve"], &[("COFFRE_LISTN", "x")])
        .output()
        .unwrap();
    assert_one_clear_line(&out, "COFFRE_LISTN");

    std::fs::write(d.join("coffre.toml"), "database_ur = \"sqlite://x.db\"\n").unwrap();
    let out = coffre(d, &["serve"], &[]).output().unwrap();
    assert_one_clear_line(&out, "`database_ur`");
    std::fs::remove_file(d.join("coffre.toml")).unwrap();

    let out = coffre(d, &["serve"], &[("COFFRE_DATABASE_URL", "postgres://")])
        .output()
        .unwrap();
    assert_one_clear_line(&out, "`database_url`");

    let out = coffre(
        d,
        &["migrate"],
        &[(
            "COFFRE_DATABASE_URL",
            "sqlite:///etc/hostname/sub/coffre.db",
        )],
    )
    .output()
    .unwrap();
    assert_one_clear_line(&out, "cannot create folder");

    let out = coffre(d, &["serve", "--demo"], &[("COFFRE_LISTEN", "0.0.0.0:0")])
        .output()
        .unwrap();
    assert_one_clear_line(&out, "--demo is refused");

    let out = coffre(d, &["serve", "--config", "missing.toml"], &[])
        .output()
        .unwrap();
    assert_one_clear_line(&out, "missing.toml");
}

#[test]
fn help_lists_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let out = coffre(dir.path(), &["--help"], &[]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["serve", "migrate", "version"] {
        assert!(text.contains(sub), "{text}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn demo_server_answers_when_it_says_it_listens_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = coffre(
        dir.path(),
        &["serve", "--demo"],
        &[("COFFRE_LISTEN", &listen)],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if line.contains("listening") {
            break;
        }
        assert!(Instant::now() < deadline, "no 'listening' line");
    }
    // Right after the log line, not after a retry loop.
    let res = http_get(port, "/healthz").expect("healthz unreachable right after 'listening'");
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    let res = http_get(port, "/dev/personas").unwrap();
    assert!(res.contains("\"role\":\"dpo\""), "{res}");
    assert!(
        dir.path().join("data/coffre.db").exists(),
        "SQLite file and folder created"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status after SIGTERM: {status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
