//! `/metrics` (BRIEF C14, issue 25): what an operator's scraper sees after
//! some traffic — requests by route template, decisions by verdict and
//! reason, the audit log's batches and size, vault operations, the pool —
//! and that no label carries an id, whatever the clients sent. The scrape
//! passes `promtool check metrics` (Debian's `prometheus`; `.ci/run`
//! installs it).

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::support::{TestApp, each_backend, notice};

const AWA: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000001";

async fn scrape(app: &TestApp) -> String {
    let res = coffre::metrics_app(app.state.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// The value of the sample `name{labels}` (labels as printed, in order).
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Every label value of every sample.
fn label_values(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((labels, _)) = rest.rsplit_once('}') else {
            continue;
        };
        for pair in labels.split("\",") {
            if let Some((_, v)) = pair.split_once("=\"") {
                out.push(v.trim_end_matches('"').to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn metrics_count_requests_decisions_and_the_log_and_name_no_one() {
    each_backend(|app| async move {
        let token = app
            .partner_token(
                "demo-renov-energie",
                "demo-secret-renov-energie-not-for-production",
            )
            .await;
        let bearer = format!("Bearer {token}");
        let pseudonym = app
            .keys
            .current()
            .pseudonym("partner:renov-energie", AWA.as_bytes());
        // Traffic: a health check, a partner's read for a purpose of its
        // own and one for a purpose it is no recipient of (refused), a path
        // no route matches (holding an id), an odd method, a resident's own
        // read of their data.
        assert_eq!(app.get("/healthz").await.status, 200);
        // (The listing makes the partner's pseudonyms known.)
        let listed = app
            .send(
                Method::GET,
                "/api/v1/partner/residents?purpose=renovation-energetique",
                &[("authorization", bearer.as_str())],
                "",
            )
            .await;
        assert_eq!(listed.status, 200, "{}", listed.text());
        for purpose in ["renovation-energetique", "etude-mobilite"] {
            let res = app
                .send(
                    Method::GET,
                    &format!("/api/v1/partner/residents/{pseudonym}/data/housing?purpose={purpose}"),
                    &[("authorization", bearer.as_str())],
                    "",
                )
                .await;
            let expected = if purpose == "etude-mobilite" { 403 } else { 200 };
            assert_eq!(res.status, expected, "{purpose}: {}", res.text());
        }
        let probe = "0b9a3c1e-5d6f-4a7b-8c9d-00000000dead";
        assert_eq!(app.get(&format!("/api/v1/nothing/{probe}")).await.status, 404);
        app.send(Method::from_bytes(b"BREW").unwrap(), "/healthz", &[], "")
            .await;
        let awa = app.login(AWA).await;
        let own = app.as_user(&awa, Method::GET, "/api/v1/me/data", None).await;
        assert_eq!(own.status, 200, "{}", own.text());

        let text = scrape(&app).await;
        // Requests, by route template and status.
        assert!(
            sample(
                &text,
                "coffre_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}"
            )
            .is_some_and(|n| n >= 1.0),
            "{text}"
        );
        assert!(
            sample(
                &text,
                "coffre_http_requests_total{method=\"GET\",route=\"/api/v1/partner/residents/{pseudonym}/data/{category}\",status=\"403\"}"
            )
            .is_some_and(|n| n >= 1.0),
            "{text}"
        );
        assert!(
            sample(
                &text,
                "coffre_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"
            )
            .is_some_and(|n| n >= 1.0),
            "{text}"
        );
        assert!(text.contains("method=\"other\""), "{text}");
        assert!(
            text.contains("coffre_http_request_duration_seconds_bucket{method=\"GET\",route=\"/healthz\",le=\"0.0005\"}"),
            "{text}"
        );
        // Decisions, by verdict and reason code.
        assert!(
            sample(
                &text,
                "coffre_access_decisions_total{reason=\"not_a_recipient\",verdict=\"deny\"}"
            )
            .is_some_and(|n| n >= 1.0),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("coffre_access_decisions_total{") && l.contains("verdict=\"allow\"")),
            "{text}"
        );
        // The log: batches committed, its size, no failure.
        assert!(sample(&text, "coffre_audit_batches_total").is_some_and(|n| n >= 1.0), "{text}");
        assert!(text.contains("coffre_audit_batch_entries_bucket{le=\"1\"}"), "{text}");
        assert!(text.contains("coffre_audit_commit_duration_seconds_count"), "{text}");
        assert_eq!(sample(&text, "coffre_audit_append_failures_total"), Some(0.0), "{text}");
        let size = app.state.audit.size().await.unwrap() as f64;
        assert!(sample(&text, "coffre_audit_tree_size").is_some_and(|n| n >= 1.0 && n <= size), "{text}");
        // The vault, the pool, the keys.
        assert!(
            sample(&text, "coffre_vault_operations_total{operation=\"open\"}").is_some_and(|n| n >= 1.0),
            "{text}"
        );
        assert!(text.contains("coffre_db_pool_connections{state=\"idle\"}"), "{text}");
        assert!(text.contains("coffre_db_pool_connections{state=\"in_use\"}"), "{text}");
        assert_eq!(sample(&text, "coffre_keys_loaded"), Some(1.0), "{text}");

        // No label carries an id: not those of this traffic, nor anything
        // shaped like one (a UUID, a long hex string, a number other than a
        // status).
        let labels = label_values(&text);
        assert!(!labels.is_empty());
        for v in &labels {
            for id in [AWA, probe, pseudonym.as_str(), "demo-renov-energie", token.as_str()] {
                assert!(!v.contains(id), "label {v:?} carries an id\n{text}");
            }
            let hexish = v.chars().filter(char::is_ascii_hexdigit).count();
            assert!(hexish < 16 || v.starts_with('/'), "label {v:?} looks like an id");
            if v.starts_with('/') {
                // A route template: literal segments and {placeholders}.
                for segment in v.split('/').filter(|s| !s.is_empty()) {
                    assert!(
                        segment.starts_with('{') || !segment.chars().any(|c| c.is_ascii_digit()) || segment == "v1",
                        "route label {v:?} has a concrete segment {segment:?}"
                    );
                }
            }
        }
        assert!(!text.contains(probe) && !text.contains(AWA) && !text.contains(&pseudonym));

        promtool_check(&text);
    })
    .await;
}

/// `promtool check metrics` on a scrape (Prometheus's own linter: names,
/// types, help texts, suffixes).
fn promtool_check(text: &str) {
    use std::io::Write;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        notice(
            "SKIPPED: promtool check metrics (promtool not installed; .ci/run installs Debian's prometheus)",
        );
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_metrics_router_serves_metrics_and_nothing_else() {
    each_backend(|app| async move {
        for path in ["/", "/healthz", "/api/v1/me", "/metrics/x"] {
            let res = coffre::metrics_app(app.state.clone())
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(res.status(), 404, "{path}");
        }
        // And the public router does not serve them.
        assert_eq!(app.get("/metrics").await.status, 404);
    })
    .await;
}

/// The real binary: `COFFRE_METRICS_LISTEN` opens a second listener that
/// serves `/metrics`; the public one does not.
#[test]
fn the_binary_serves_metrics_on_their_own_listener_only() {
    use crate::binary::{free_port, http, start_demo, stop};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics_port = free_port();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let child = start_demo(
        dir.path(),
        port,
        &[("COFFRE_METRICS_LISTEN", metrics_listen.as_str())],
    );
    let (status, _, _) = http(port, "GET", "/healthz", &[], "").unwrap();
    assert_eq!(status, 200);
    let (status, _, _) = http(port, "GET", "/metrics", &[], "").unwrap();
    assert_eq!(status, 404);
    let (status, head, body) = http(metrics_port, "GET", "/metrics", &[], "").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("version=0.0.4"), "{head}");
    assert!(
        body.contains(
            "coffre_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
        ),
        "{body}"
    );
    assert!(stop(child).success());
}

/// A log that cannot commit shows in the failures counter (every caller of
/// the batch was refused), and the scrape still answers.
#[tokio::test]
async fn a_failed_audit_commit_is_counted() {
    each_backend(|app| async move {
        let awa = app.login(AWA).await;
        app.audit_down().await;
        app.as_user(&awa, Method::GET, "/api/v1/me/data", None)
            .await
            .assert_error(503, "audit_unavailable");
        let text = scrape(&app).await;
        assert!(
            sample(&text, "coffre_audit_append_failures_total").is_some_and(|n| n >= 1.0),
            "{text}"
        );
        assert!(
            sample(
                &text,
                "coffre_http_requests_total{method=\"GET\",route=\"/api/v1/me/data\",status=\"503\"}"
            )
            .is_some_and(|n| n >= 1.0),
            "{text}"
        );
        // Nothing was allowed after the failure: the own read's decision
        // was not recorded, so it is not counted either.
        assert_eq!(
            sample(&text, "coffre_access_decisions_total{reason=\"own_data\",verdict=\"allow\"}"),
            None,
            "{text}"
        );
    })
    .await;
}
