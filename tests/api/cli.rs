//! The real binary: bad configuration ends in one clear line, the server
//! answers right after it says it listens, and SIGTERM drains and exits.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::binary::{
    assert_acknowledged_entries_are_in_the_log, coffre, free_port, header, http, start_demo, stop,
};

/// The command succeeded (else its stderr is the failure message); its stdout.
fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
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

/// Starts `coffre` with `args` on a free loopback port and returns once it
/// logged "listening": (the process, its port, the rest of its stderr).
// The caller waits for the process (`assert_stops_cleanly_on_sigterm`).
#[allow(clippy::zombie_processes)]
fn serve_until_listening(
    dir: &Path,
    args: &[&str],
) -> (
    std::process::Child,
    u16,
    std::io::Lines<BufReader<std::process::ChildStderr>>,
) {
    serve_with_env_until_listening(dir, args, &[])
}

/// [`serve_until_listening`] with more environment.
#[allow(clippy::zombie_processes)]
fn serve_with_env_until_listening(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (
    std::process::Child,
    u16,
    std::io::Lines<BufReader<std::process::ChildStderr>>,
) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut all = vec![("COFFRE_LISTEN", listen.as_str())];
    all.extend_from_slice(env);
    let mut child = coffre(dir, args, &all)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if line.contains("listening") && !line.contains("admin socket") {
            return (child, port, lines);
        }
        assert!(Instant::now() < deadline, "no 'listening' line");
    }
}

/// Sends SIGTERM and expects a clean exit (drained, status 0) within 15 s.
fn assert_stops_cleanly_on_sigterm(
    mut child: std::process::Child,
    stderr: std::io::Lines<BufReader<std::process::ChildStderr>>,
) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Keep reading stderr so the child never blocks on a full pipe.
    let drained = std::thread::spawn(move || stderr.map_while(Result::ok).count());
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
        std::thread::sleep(Duration::from_millis(20));
    }
    drained.join().unwrap();
}

#[test]
fn demo_server_answers_when_it_says_it_listens_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (child, port, stderr) = serve_until_listening(dir.path(), &["serve", "--demo"]);
    // Right after the log line, not after a retry loop.
    let res = http_get(port, "/healthz").expect("healthz unreachable right after 'listening'");
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    let res = http_get(port, "/dev/personas").unwrap();
    assert!(res.contains("\"role\":\"dpo\""), "{res}");
    assert!(
        dir.path().join("data/coffre.db").exists(),
        "SQLite file and folder created"
    );
    assert_stops_cleanly_on_sigterm(child, stderr);
}

/// A supervisor may send SIGTERM the instant the server says it listens: the
/// handler must already be installed then (a lazily installed one left a
/// window in which SIGTERM killed the process instead of draining it).
#[test]
fn sigterm_right_after_listening_drains_and_exits_cleanly() {
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let (child, _, stderr) = serve_until_listening(dir.path(), &["serve"]);
        assert_stops_cleanly_on_sigterm(child, stderr);
    }
}

#[test]
fn kill_9_during_a_write_burst_loses_no_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = start_demo(dir.path(), port, &[]);
    let persona = "persona=0b9a3c1e-5d6f-4a7b-8c9d-000000000001";
    let (_, head, _) = http(
        port,
        "POST",
        "/dev/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        persona,
    )
    .unwrap();
    let cookie = header(&head, "set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let (_, _, me) = http(port, "GET", "/api/v1/me", &[("cookie", &cookie)], "").unwrap();
    let csrf: serde_json::Value = serde_json::from_str(&me).unwrap();
    let csrf = csrf["csrf_token"].as_str().unwrap().to_string();

    // Eight clients write (each write is audited) until the server dies.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (cookie, csrf, acknowledged) = (cookie.clone(), csrf.clone(), acknowledged.clone());
        clients.push(std::thread::spawn(move || {
            for i in 0.. {
                let body = format!("{{\"phone\":\"06{:08}\"}}", c * 1_000_000 + i);
                let headers = [
                    ("cookie", cookie.as_str()),
                    ("x-csrf-token", csrf.as_str()),
                    ("content-type", "application/json"),
                ];
                match http(port, "PUT", "/api/v1/me/data/contact", &headers, &body) {
                    Some((200, head, _)) => {
                        let idx = header(&head, "x-audit-entry").unwrap().parse().unwrap();
                        acknowledged.lock().unwrap().push(idx);
                    }
                    Some((409, ..)) => {} // two writers raced on one category: refused, nothing acknowledged
                    _ => return,
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    for c in clients {
        c.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 10,
        "too few writes before the kill: {}",
        acknowledged.len()
    );

    let acknowledged: Vec<(u64, &str)> = acknowledged
        .iter()
        .map(|idx| (*idx, "data.write"))
        .collect();
    assert_acknowledged_entries_are_in_the_log(dir.path(), &[], &acknowledged);
}

#[test]
fn keys_lifecycle_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let unlock = d.join("secret/unlock.key");
    std::fs::create_dir_all(d.join("secret")).unwrap();
    let env = [("COFFRE_UNLOCK_IDENTITY_FILE", unlock.to_str().unwrap())];

    // No unlock identity yet: init explains how to make one.
    let out = coffre(d, &["keys", "init"], &env).output().unwrap();
    assert_one_clear_line(&out, "age-keygen");
    let out = coffre(d, &["keys", "init", "--generate-unlock-identity"], &env)
        .output()
        .unwrap();
    succeeded(&out);
    // A second init refuses to overwrite key material.
    let out = coffre(d, &["keys", "init"], &env).output().unwrap();
    assert_one_clear_line(&out, "already initialised");

    let out = coffre(d, &["keys", "show"], &env).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("\"kty\": \"OKP\"") && shown.contains("verifier key"),
        "{shown}"
    );
    assert!(!shown.contains("AGE-SECRET-KEY"), "secret printed: {shown}");

    let out = coffre(d, &["keys", "rotate"], &env).output().unwrap();
    succeeded(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("current KEK version 2"));
    assert_no_progress_bar(&out);

    // Group-readable key files stop the start with one line.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        d.join("keys/signing.age"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let out = coffre(d, &["serve"], &env).output().unwrap();
    assert_one_clear_line(&out, "group or others");
}

#[test]
fn undecryptable_keys_leave_the_service_up_but_closed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let unlock = d.join("unlock.key");
    let env = [("COFFRE_UNLOCK_IDENTITY_FILE", unlock.to_str().unwrap())];
    let out = coffre(d, &["keys", "init", "--generate-unlock-identity"], &env)
        .output()
        .unwrap();
    assert!(out.status.success());
    // Replace the unlock identity by another one: the key files no longer open.
    std::fs::remove_file(&unlock).unwrap();
    let other = d.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let env2 = [
        ("COFFRE_UNLOCK_IDENTITY_FILE", unlock.to_str().unwrap()),
        ("COFFRE_KEYS_DIR", other.to_str().unwrap()),
    ];
    assert!(
        coffre(d, &["keys", "init", "--generate-unlock-identity"], &env2)
            .output()
            .unwrap()
            .status
            .success()
    );

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = coffre(d, &["serve"], &[env[0], ("COFFRE_LISTEN", &listen)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut keys_line = None;
    loop {
        let line = lines.next().expect("server exited").unwrap();
        if line.contains("keys unavailable") {
            keys_line = Some(line.clone());
        }
        if line.contains("listening") {
            break;
        }
    }
    assert!(keys_line.is_some_and(|l| l.contains("cannot be decrypted")));
    std::thread::spawn(move || for _ in lines {});
    let res = http_get(port, "/readyz").unwrap();
    assert!(
        res.starts_with("HTTP/1.1 503") && res.contains("keys_unavailable"),
        "{res}"
    );
    let res = http_get(port, "/healthz").unwrap();
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    let res = http_get(port, "/.well-known/jwks.json").unwrap();
    assert!(res.contains("keys_unavailable"), "{res}");
    stop(child);
}

#[test]
fn a_bad_purposes_register_stops_the_start_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("policies")).unwrap();
    let good = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/purposes.toml"
    ))
    .unwrap();
    let bad = good.replacen("legal_basis = \"consent\"", "legal_basis = \"whim\"", 1);
    std::fs::write(d.join("policies/purposes.toml"), bad).unwrap();
    let out = coffre(d, &["serve"], &[]).output().unwrap();
    assert_one_clear_line(&out, "purposes.toml line ");
}

/// C11: a source the register cannot allow (pivot matching for a source
/// on the resident's authorisation) stops the start, naming its line and id.
#[test]
fn a_bad_sources_register_stops_the_start_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("policies")).unwrap();
    let good = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/sources.toml"
    ))
    .unwrap();
    let bad = good.replacen(
        "basis = \"resident_authorisation\"\nmatching = \"link\"",
        "basis = \"resident_authorisation\"\nmatching = \"pivot\"",
        1,
    );
    assert_ne!(bad, good);
    std::fs::write(d.join("policies/sources.toml"), bad).unwrap();
    let out = coffre(d, &["serve"], &[]).output().unwrap();
    assert_one_clear_line(&out, "sources.toml line ");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("source `energie-locale`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn partner_add_prints_credentials_once_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = coffre(
        d,
        &[
            "partner",
            "add",
            "--id",
            "observatoire-sante",
            "--name",
            "Observatoire régional de santé",
            "--json",
        ],
        &[],
    )
    .output()
    .unwrap();
    succeeded(&out);
    let creds: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        creds["client_id"]
            .as_str()
            .unwrap()
            .starts_with("observatoire-sante-")
    );
    assert!(creds["client_secret"].as_str().unwrap().len() >= 43);
    let out = coffre(
        d,
        &[
            "partner",
            "add",
            "--id",
            "observatoire-sante",
            "--name",
            "Twice",
        ],
        &[],
    )
    .output()
    .unwrap();
    assert_one_clear_line(&out, "already exists");
    let out = coffre(d, &["partner", "add", "--id", "Bad Id", "--name", "x"], &[])
        .output()
        .unwrap();
    assert_one_clear_line(&out, "--id");
    let out = coffre(
        d,
        &[
            "partner",
            "add",
            "--id",
            "ok",
            "--name",
            "x",
            "--age-recipient",
            "age1nope",
        ],
        &[],
    )
    .output()
    .unwrap();
    assert_one_clear_line(&out, "--age-recipient");

    // Deactivation and reactivation, each audited; an unknown id is refused.
    for (verb, says) in [
        ("deactivate", "partner observatoire-sante deactivated"),
        ("activate", "partner observatoire-sante activated"),
    ] {
        let out = coffre(d, &["partner", verb, "--id", "observatoire-sante"], &[])
            .output()
            .unwrap();
        assert!(succeeded(&out).contains(says));
    }
    let out = coffre(d, &["partner", "deactivate", "--id", "nobody"], &[])
        .output()
        .unwrap();
    assert_one_clear_line(&out, "no partner `nobody`");
    // The log names the partner each act concerned, and nothing else.
    let acts: Vec<(String, Option<String>)> =
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let url = format!("sqlite://{}", d.join("data/coffre.db").display());
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            let leaves: Vec<(Vec<u8>,)> =
                sqlx::query_as("SELECT leaf FROM audit_entries ORDER BY idx")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            pool.close().await;
            leaves
                .iter()
                .map(|(leaf,)| coffre::audit::AuditEntry::decode(leaf).unwrap())
                .filter(|e| e.action.starts_with("partner."))
                .map(|e| (e.action, e.category))
                .collect()
        });
    let partner = Some("partner:observatoire-sante".to_string());
    assert_eq!(
        acts,
        vec![
            ("partner.add".to_string(), partner.clone()),
            ("partner.deactivate".to_string(), partner.clone()),
            ("partner.activate".to_string(), partner),
        ]
    );
}

#[test]
fn agent_add_bootstraps_agents_by_email_digest_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let init = coffre(d, &["keys", "init", "--generate-unlock-identity"], &[])
        .output()
        .unwrap();
    succeeded(&init);
    let add = |args: &[&str]| {
        let mut all = vec!["agent", "add"];
        all.extend_from_slice(args);
        coffre(d, &all, &[]).output().unwrap()
    };
    let out = add(&[
        "--email",
        "dpo@agglo.example.fr",
        "--role",
        "dpo",
        "--name",
        "Claire",
        "--json",
    ]);
    succeeded(&out);
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["role"], "dpo");
    // The e-mail is matched case-insensitively, and never stored in clear.
    assert_one_clear_line(
        &add(&[
            "--email",
            "DPO@agglo.example.fr",
            "--role",
            "auditor",
            "--name",
            "Twice",
        ]),
        "already exists",
    );
    let db = std::fs::read(d.join("data/coffre.db")).unwrap();
    let wal = std::fs::read(d.join("data/coffre.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes.windows(15).any(|w| w == b"dpo@agglo.examp"),
            "e-mail stored in clear"
        );
    }
    assert_one_clear_line(
        &add(&["--email", "x@y.fr", "--role", "resident", "--name", "x"]),
        "--role",
    );
    assert_one_clear_line(
        &add(&["--email", "not-an-email", "--role", "dpo", "--name", "x"]),
        "--email",
    );
    assert_one_clear_line(
        &add(&["--email", "a@ccas.fr", "--role", "aidant", "--name", "x"]),
        "--structure",
    );
}

#[test]
fn partner_add_with_public_keys_gives_no_secret_and_refuses_private_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let public = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k1","alg":"EdDSA"}]}"#;
    let private = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","kid":"k1"}]}"#;
    let symmetric = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"k1","alg":"HS256"}]}"#;
    for (name, text) in [
        ("public.json", public),
        ("private.json", private),
        ("oct.json", symmetric),
    ] {
        std::fs::write(d.join(name), text).unwrap();
    }
    let add = |id: &str, file: &str| {
        coffre(
            d,
            &[
                "partner",
                "add",
                "--id",
                id,
                "--name",
                "Labo",
                "--jwks-file",
                file,
                "--json",
            ],
            &[],
        )
        .output()
        .unwrap()
    };
    let out = add("labo-a", "public.json");
    succeeded(&out);
    let creds: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(creds["client_id"].as_str().unwrap().starts_with("labo-a-"));
    assert!(creds.get("client_secret").is_none());
    assert_one_clear_line(&add("labo-b", "private.json"), "private key");
    assert_one_clear_line(&add("labo-c", "oct.json"), "symmetric");
    assert_one_clear_line(&add("labo-d", "missing.json"), "--jwks-file");
}

#[test]
fn structures_aidants_and_totp_cards_are_bootstrapped_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| coffre(d, args, &[]).output().unwrap();
    succeeded(&run(&["keys", "init", "--generate-unlock-identity"]));
    assert_one_clear_line(
        &run(&[
            "structure",
            "add",
            "--siret",
            "26340001200012",
            "--name",
            "CCAS",
            "--demarches",
            "logement",
        ]),
        "--siret",
    );
    assert_one_clear_line(
        &run(&[
            "structure",
            "add",
            "--siret",
            "26340001200013",
            "--name",
            "CCAS",
            "--demarches",
            "logement,nope",
        ]),
        "--demarches",
    );
    let out = succeeded(&run(&[
        "structure",
        "add",
        "--siret",
        "26340001200013",
        "--name",
        "CCAS",
        "--demarches",
        "logement,papiers",
        "--json",
    ]));
    let structure: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = structure["id"].as_str().unwrap();
    succeeded(&run(&[
        "agent",
        "add",
        "--email",
        "camille@ccas.example.fr",
        "--role",
        "aidant",
        "--name",
        "Camille",
        "--structure",
        "26340001200013",
    ]));
    let uri = succeeded(&run(&[
        "agent",
        "totp",
        "--email",
        "camille@ccas.example.fr",
    ]));
    assert!(
        uri.starts_with("otpauth://totp/coffre:Camille?secret="),
        "{uri}"
    );
    assert!(uri.contains("&digits=6&period=30"));
    succeeded(&run(&[
        "agent",
        "deactivate",
        "--email",
        "camille@ccas.example.fr",
    ]));
    assert_one_clear_line(
        &run(&["agent", "totp", "--email", "nobody@ccas.example.fr"]),
        "no agent",
    );
    assert!(!id.is_empty());
}

#[test]
fn retention_run_prints_what_it_deleted_as_counts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = coffre(d, &["keys", "init", "--generate-unlock-identity"], &[])
        .output()
        .unwrap();
    succeeded(&out);
    let out = coffre(d, &["retention", "run", "--at", "1900000000"], &[])
        .output()
        .unwrap();
    succeeded(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in [
        "superseded_versions",
        "records_without_consent",
        "sessions",
        "logins_and_drafts",
        "ended_mandates",
        "extract_files",
    ] {
        assert_eq!(report[k], 0, "{k}");
    }
    // The log still verifies after a retention run.
    let out = coffre(d, &["audit", "verify"], &[]).output().unwrap();
    succeeded(&out);
}

/// Issue 19 §9: `serve --demo` on a database it did not seed enabled
/// password-less DPO and auditor logins on it; an https public URL was
/// accepted too.
#[test]
fn demo_mode_refuses_a_database_it_did_not_seed_and_a_public_url() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    succeeded(
        &coffre(d, &["keys", "init", "--generate-unlock-identity"], &[])
            .output()
            .unwrap(),
    );
    succeeded(
        &coffre(
            d,
            &[
                "agent",
                "add",
                "--email",
                "dpo@agglo.example.fr",
                "--role",
                "dpo",
                "--name",
                "Claire",
            ],
            &[],
        )
        .output()
        .unwrap(),
    );
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let out = coffre(d, &["serve", "--demo"], &[("COFFRE_LISTEN", &listen)])
        .output()
        .unwrap();
    assert_one_clear_line(&out, "not seeded by the demo");
    assert_eq!(out.status.code(), Some(2));

    // A fresh demo is refused a public URL off this machine.
    let fresh = tempfile::tempdir().unwrap();
    for url in ["https://coffre.agglo.example.fr", "http://192.0.2.10:8080"] {
        let out = coffre(
            fresh.path(),
            &["serve", "--demo"],
            &[("COFFRE_LISTEN", &listen), ("COFFRE_PUBLIC_URL", url)],
        )
        .output()
        .unwrap();
        assert_one_clear_line(&out, "public URL");
    }
    assert!(
        !fresh.path().join("data/coffre.db").exists(),
        "refused before anything was created"
    );
}

/// Issue 27 §5: the documented `policies_dir` / `COFFRE_POLICIES_DIR` was
/// refused as an unknown key, and without `./policies` the built-in
/// register was used silently.
#[test]
fn the_policies_folder_is_accepted_and_the_register_in_force_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let reviewed = d.join("reviewed-register");
    std::fs::create_dir(&reviewed).unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for f in std::fs::read_dir(&repo).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, reviewed.join(f.file_name().unwrap())).unwrap();
    }
    let canonical = std::fs::canonicalize(&reviewed).unwrap();
    // From the environment, and from coffre.toml.
    for how in ["env", "file"] {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut env = vec![("COFFRE_LISTEN", listen.as_str())];
        let reviewed_str = reviewed.to_str().unwrap().to_string();
        if how == "env" {
            env.push(("COFFRE_POLICIES_DIR", reviewed_str.as_str()));
            let _ = std::fs::remove_file(d.join("coffre.toml"));
        } else {
            std::fs::write(
                d.join("coffre.toml"),
                format!("policies_dir = {reviewed_str:?}\n"),
            )
            .unwrap();
        }
        let mut child = coffre(d, &["serve", "--demo"], &env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut logged = false;
        loop {
            let line = lines.next().expect("exited before listening").unwrap();
            if line.contains("register of processing loaded")
                && line.contains(canonical.to_str().unwrap())
            {
                logged = true;
            }
            if line.contains("listening") {
                break;
            }
        }
        assert!(logged, "the start logs the register's folder ({how})");
        let res = http_get(port, "/readyz").unwrap();
        let body = res.split("\r\n\r\n").nth(1).unwrap_or("");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v["register"]["location"],
            canonical.to_str().unwrap(),
            "{how}: {v}"
        );
        assert_eq!(v["register"]["sha256"].as_str().unwrap().len(), 64);
        assert_stops_cleanly_on_sigterm(child, lines);
    }
    let _ = std::fs::remove_file(d.join("coffre.toml"));
    // Set to a folder without a register: refused, naming the key.
    let out = coffre(
        d,
        &["serve"],
        &[("COFFRE_POLICIES_DIR", d.join("nowhere").to_str().unwrap())],
    )
    .output()
    .unwrap();
    assert_one_clear_line(&out, "policies_dir");
}

/// A progress bar is for a terminal: redrawn lines (`\r`, erase-line) and
/// its rate and time left never reach a pipe or a log.
fn assert_no_progress_bar(out: &std::process::Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains('\r') && !err.contains("\x1b[2K") && !err.contains(" left"),
        "{err}"
    );
}

/// C11: `coffre import` deposits a file as one of the agglomération's own
/// sources through the deposit use case: one answer a line and a summary,
/// the same refusals, safe to rerun; an unknown source is one clear line.
#[test]
fn import_deposits_a_file_line_by_line_and_reports_each() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let unlock = d.join("secret/unlock.key");
    std::fs::create_dir_all(d.join("secret")).unwrap();
    let env = [("COFFRE_UNLOCK_IDENTITY_FILE", unlock.to_str().unwrap())];
    succeeded(
        &coffre(d, &["keys", "init", "--generate-unlock-identity"], &env)
            .output()
            .unwrap(),
    );
    // A small territory: its report on stdout, no progress bar in a pipe.
    let out = coffre(d, &["seed", "--residents", "20"], &env)
        .output()
        .unwrap();
    succeeded(&out);
    assert_no_progress_bar(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["residents"], 20, "{report}");
    let pivot = r#"{"family_name":"Nobody","given_names":"Jo","birthdate":"1970-01-01","birthplace":"31555","gender":"male"}"#;
    let file = d.join("releves.ndjson");
    std::fs::write(
        &file,
        format!(
            "{{\"id\":\"c-1\",\"pivot\":{pivot},\"category\":\"energy\",\"fields\":{{\"heating\":\"gas\"}},\"observed_at\":1}}\n\
             not json\n\
             \n\
             {{\"id\":\"c-2\",\"pivot\":{pivot},\"category\":\"income\",\"fields\":{{\"x\":1}},\"observed_at\":1}}\n\
             {{\"id\":\"c-3\",\"pad\":\"{}\"}}\n",
            "x".repeat(200_000)
        ),
    )
    .unwrap();
    let run = || {
        coffre(
            d,
            &[
                "import",
                "--source",
                "regie-eau",
                "--file",
                file.to_str().unwrap(),
            ],
            &env,
        )
        .output()
        .unwrap()
    };
    for _ in 0..2 {
        let out = run();
        succeeded(&out);
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let codes: Vec<_> = lines[..4]
            .iter()
            .map(|l| {
                (
                    l["line"].as_u64().unwrap(),
                    l["code"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            codes,
            [
                (1, "unknown_pivot".to_string()),
                (2, "invalid_json".to_string()),
                (4, "category_not_deposited".to_string()),
                (5, "line_too_long".to_string())
            ]
        );
        assert_eq!(lines[4]["summary"]["rejected"], 4);
        // Not a terminal: no progress bar (only the log lines).
        assert_no_progress_bar(&out);
    }
    // The same as CSV with a header: each row is the line a source would
    // stream, its cells typed by the category (4200 an integer, so the
    // first row passes validation and is refused only for its unknown
    // person), quoted cells read as RFC 4180 says.
    let csv = d.join("releves.csv");
    std::fs::write(
        &csv,
        "id,category,observed_at,pivot.family_name,pivot.given_names,pivot.birthdate,pivot.birthplace,pivot.gender,annual_kwh,heating\n\
         c-1,energy,1,Nobody,Jo,1970-01-01,31555,male,4200,gas\n\
         c-2,energy,1,Nobody,Jo,1970-01-01,31555,male,beaucoup,gas\n\
         c-3,income,1,Nobody,Jo,1970-01-01,31555,male,1,\n\
         \"c-4\",energy,1,\"Nobody, \"\"Jo\"\"\",Jo,1970-01-01,31555,male,1,\"gas\nand wood\"\n\
         c-5,energy,1,Nobody,Jo,1970-01-01,31555,male,1,gas,extra\n",
    )
    .unwrap();
    let out = coffre(
        d,
        &[
            "import",
            "--source",
            "regie-eau",
            "--file",
            csv.to_str().unwrap(),
        ],
        &env,
    )
    .output()
    .unwrap();
    succeeded(&out);
    assert_no_progress_bar(&out);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let codes: Vec<_> = lines[..5]
        .iter()
        .map(|l| {
            (
                l["line"].as_u64().unwrap(),
                l["id"].as_str().unwrap_or("").to_string(),
                l["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        (2, "c-1", "unknown_pivot"),
        (3, "c-2", "invalid_field"),
        (4, "c-3", "category_not_deposited"),
        (5, "c-4", "invalid_field"),
        (7, "", "invalid_deposit"),
    ];
    assert_eq!(
        codes,
        expected.map(|(l, id, c)| (l, id.to_string(), c.to_string()))
    );
    assert_eq!(lines[5]["summary"]["rejected"], 5);
    // An unclosed quote would make the rest of the file one record held in
    // memory: past the line limit the import stops, with the line after
    // which it happened; the rows before were answered.
    let runaway = d.join("runaway.csv");
    std::fs::write(
        &runaway,
        format!(
            "id,category,observed_at,pivot.family_name,heating\nc-1,energy,1,Nobody,gas\n\"c-2,energy,1,Nobody,gas\n{}",
            "x,y,z\n".repeat(50_000)
        ),
    )
    .unwrap();
    let out = coffre(
        d,
        &[
            "import",
            "--source",
            "regie-eau",
            "--file",
            runaway.to_str().unwrap(),
        ],
        &env,
    )
    .output()
    .unwrap();
    assert_one_clear_line(&out, "after line 2 runs past 65536 bytes");
    let answered = String::from_utf8_lossy(&out.stdout);
    assert_eq!(answered.lines().count(), 1, "{answered}");
    assert!(answered.contains("\"id\":\"c-1\""), "{answered}");
    let out = coffre(
        d,
        &[
            "import",
            "--source",
            "ghost",
            "--file",
            file.to_str().unwrap(),
        ],
        &env,
    )
    .output()
    .unwrap();
    assert_one_clear_line(&out, "not in sources.toml");
}

/// Custodians through the binary (issue 25): `keys init --custodians`,
/// a server that starts sealed, `coffre unseal` over the 0600 admin socket
/// (a wrong and a repeated share refused), `seal`, `seal-status`, `keys
/// rotate` refused while sealed and run inside the unsealed server, and no
/// identity in clear anywhere in the service's folder.
#[test]
fn custodians_unseal_a_server_through_its_admin_socket() {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The custodians' own identities live elsewhere (their own machines).
    let theirs = tempfile::tempdir().unwrap();
    let mut list = String::from("# DSI custodians\n");
    let mut identity_files = Vec::new();
    for name in ["dsi-alice", "dsi-bob", "dgs-carole"] {
        let id = age::x25519::Identity::generate();
        let path = theirs.path().join(format!("{name}.key"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        use secrecy::ExposeSecret;
        writeln!(f, "{}", id.to_string().expose_secret()).unwrap();
        list.push_str(&format!("{name} {}\n", id.to_public()));
        identity_files.push(path);
    }
    std::fs::write(d.join("custodians.txt"), &list).unwrap();
    let socket = d.join("run/admin.sock");
    let env = [("COFFRE_ADMIN_SOCKET", socket.to_str().unwrap())];

    let out = coffre(
        d,
        &[
            "keys",
            "init",
            "--custodians",
            "custodians.txt",
            "--threshold",
            "4",
        ],
        &env,
    )
    .output()
    .unwrap();
    assert_one_clear_line(&out, "threshold");
    let out = coffre(
        d,
        &[
            "keys",
            "init",
            "--custodians",
            "custodians.txt",
            "--threshold",
            "2",
        ],
        &env,
    )
    .output()
    .unwrap();
    let text = succeeded(&out);
    assert!(text.contains("never written"), "{text}");
    assert!(!d.join("keys/unlock.key").exists());
    let share = |name: &str| d.join(format!("custodian-shares/{name}.share.age"));
    let id_of = |i: usize| identity_files[i].to_str().unwrap().to_string();
    let out = coffre(
        d,
        &["seal-status"],
        &[("COFFRE_ADMIN_SOCKET", "data/admin.sock")],
    )
    .output()
    .unwrap();
    assert_one_clear_line(&out, "absolute");
    let out = coffre(d, &["keys", "show"], &env).output().unwrap();
    let shown = succeeded(&out);
    assert!(
        shown.contains("2 of 3") && shown.contains("dsi-bob"),
        "{shown}"
    );

    let (child, port, lines) = serve_with_env_until_listening(d, &["serve"], &env);
    let drained = std::thread::spawn(move || lines.map_while(Result::ok).count());
    let folder = std::fs::metadata(d.join("run")).unwrap();
    assert_eq!(folder.permissions().mode() & 0o777, 0o700);
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let res = http_get(port, "/readyz").unwrap();
    assert!(
        res.starts_with("HTTP/1.1 503") && res.contains("\"sealed\""),
        "{res}"
    );
    let res = http_get(port, "/api/v1/me/data").unwrap();
    assert!(
        res.starts_with("HTTP/1.1 503") && res.contains("\"sealed\""),
        "{res}"
    );
    let res = http_get(port, "/api/v1/audit/key").unwrap();
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    let out = coffre(d, &["seal-status"], &env).output().unwrap();
    assert!(succeeded(&out).contains("sealed: 0 of 2"));
    let out = coffre(d, &["keys", "rotate"], &env).output().unwrap();
    assert_one_clear_line(&out, "sealed");

    // Bob's share with Alice's identity: it does not even decrypt.
    let unseal = |share_of: &str, id: usize| {
        coffre(
            d,
            &[
                "unseal",
                "--share",
                share(share_of).to_str().unwrap(),
                "--identity",
                &id_of(id),
            ],
            &env,
        )
        .output()
        .unwrap()
    };
    assert_one_clear_line(&unseal("dsi-bob", 0), "cannot decrypt");
    let out = unseal("dsi-alice", 0);
    assert!(succeeded(&out).contains("1 of 2"));
    assert_one_clear_line(&unseal("dsi-alice", 0), "repeated_share");
    let out = unseal("dgs-carole", 2);
    assert!(succeeded(&out).contains("unsealed"));
    let res = http_get(port, "/readyz").unwrap();
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");

    let out = coffre(d, &["keys", "rotate"], &env).output().unwrap();
    assert!(succeeded(&out).contains("current KEK version 2"));
    assert!(d.join("keys/kek-v2.age").exists());

    let out = coffre(d, &["seal"], &env).output().unwrap();
    succeeded(&out);
    let res = http_get(port, "/readyz").unwrap();
    assert!(res.contains("\"sealed\""), "{res}");
    // The rotated set opens again with a quorum.
    succeeded(&unseal("dsi-bob", 1));
    succeeded(&unseal("dsi-alice", 0));
    let res = http_get(port, "/readyz").unwrap();
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");

    stop(child);
    drained.join().unwrap();
    assert!(!socket.exists(), "the socket is removed at a clean stop");
    // The audit log holds every submission, with names, never a share.
    let out = coffre(d, &["audit", "verify"], &[]).output().unwrap();
    succeeded(&out);
    // A backup carries the custodians' manifest (without it a restored
    // set could never be unsealed), and no share.
    let out = coffre(d, &["backup", "--out", "backup"], &[])
        .output()
        .unwrap();
    succeeded(&out);
    let listed = std::fs::read_to_string(d.join("backup/MANIFEST")).unwrap();
    assert!(listed.contains("  keys/custodians.json\n"), "{listed}");
    assert!(!listed.contains("share"), "{listed}");
    // No identity in clear anywhere in the service's folder.
    fn walk(p: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(p).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut all = Vec::new();
    walk(d, &mut all);
    for path in all {
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !bytes.windows(16).any(|w| w == b"AGE-SECRET-KEY-1"),
            "{} holds an identity in clear",
            path.display()
        );
    }
}
