//! Driving the real `coffre` binary: commands, a demo server on a free
//! loopback port, plain HTTP/1.1 requests, demo logins, and the check that
//! every entry a server acknowledged is in its verified log (used by the
//! CLI tests and the fault tests).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

pub const AUDITOR: &str = "a1d00000-0000-4000-8000-000000000005";

/// The binary, in `dir`, with no `COFFRE_*` variable of the test's own
/// environment, and `env` set.
pub fn coffre(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// SIGTERM, then the exit status.
pub fn stop(mut child: Child) -> ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap()
}

/// One HTTP/1.1 request on a fresh connection: (status, head, body).
pub fn http(
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

/// A response header's value (names compared case-insensitively).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `serve --demo` on `port` with `env`, once it logged "listening"; its
/// stderr keeps being drained so it never blocks on a full pipe.
pub fn start_demo(dir: &Path, port: u16, env: &[(&str, &str)]) -> Child {
    let listen = format!("127.0.0.1:{port}");
    let mut all = vec![("COFFRE_LISTEN", listen.as_str())];
    all.extend_from_slice(env);
    let mut child = coffre(dir, &["serve", "--demo"], &all)
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

/// A demo persona's (cookie, CSRF token).
pub fn login(port: u16, persona: &str) -> (String, String) {
    let (status, head, body) = http(
        port,
        "POST",
        "/dev/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        &format!("persona={persona}"),
    )
    .unwrap();
    let cookie = header(&head, "set-cookie")
        .unwrap_or_else(|| panic!("login refused: {status} {body}"))
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let (_, _, me) = http(port, "GET", "/api/v1/me", &[("cookie", &cookie)], "").unwrap();
    let me: serde_json::Value = serde_json::from_str(&me).unwrap();
    (cookie, me["csrf_token"].as_str().unwrap().to_string())
}

/// After a fault: `coffre audit verify` passes on the database of `dir`
/// (and `env`), and every entry a server acknowledged (index, action) reads
/// back from a fresh server as that action, allowed.
pub fn assert_acknowledged_entries_are_in_the_log(
    dir: &Path,
    env: &[(&str, &str)],
    acknowledged: &[(u64, &str)],
) {
    let out = coffre(dir, &["audit", "verify"], env).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // Entries in the tree, and those sequenced after it (acknowledged, not
    // yet integrated when the process stopped): all of them are the log.
    let number_after = |marker: &str| -> u64 {
        text.split(marker)
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {marker:?} in {text}"))
    };
    let size = number_after("audit log OK: ") + number_after("entries in the tree (and ");
    let port = free_port();
    let child = start_demo(dir, port, env);
    let (auditor, _) = login(port, AUDITOR);
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
    for (idx, action) in acknowledged {
        let e = by_index
            .get(idx)
            .unwrap_or_else(|| panic!("acknowledged entry {idx} lost (log of {size})"));
        assert_eq!(e["action"], *action, "entry {idx}: {e}");
        assert_eq!(e["decision"], "allow", "entry {idx}: {e}");
    }
    assert!(stop(child).success());
}
