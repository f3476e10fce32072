//! OpenID Connect login against a real provider: `oidc-provider` (the npm
//! package FranceConnect runs on), started from `tests/oidc/provider.mjs`.
//! Without Node.js or its packages these tests say SKIPPED loudly; `.ci/run`
//! installs them.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use coffre::config::OidcClient;
use reqwest::StatusCode;
use reqwest::header::{LOCATION, SET_COOKIE};
use secrecy::SecretString;

use crate::support::{self, Setup, TestApp};

/// The running provider: its two issuers and the static clients' secret.
pub struct Peer {
    pub resident: String,
    pub agent: String,
    pub secret: String,
    _child: Mutex<Child>,
}

/// Starts the provider once per test process; `None` (with a loud notice)
/// when Node.js or the provider's packages are missing.
pub fn peer() -> Option<&'static Peer> {
    static PEER: OnceLock<Option<Peer>> = OnceLock::new();
    PEER.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        if !dir.join("node_modules/oidc-provider").is_dir() {
            support::notice(
                "SKIPPED: OpenID Connect tests (tests/oidc/node_modules is missing: run `npm ci --prefix tests/oidc`; .ci/run does)",
            );
            return None;
        }
        let child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // The provider's own log, for when a test here fails.
            .stderr(
                std::fs::File::create(std::env::temp_dir().join("coffre-oidc-provider.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn();
        let Ok(mut child) = child else {
            support::notice("SKIPPED: OpenID Connect tests (Node.js is not installed; .ci/run needs it)");
            return None;
        };
        let mut line = String::new();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        // Keep draining its stdout: the provider logs there, and a closed
        // pipe would kill it.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("provider did not start ({e}): {line:?}"));
        Some(Peer {
            resident: v["resident"].as_str().unwrap().to_string(),
            agent: v["agent"].as_str().unwrap().to_string(),
            secret: v["secret"].as_str().unwrap().to_string(),
            _child: Mutex::new(child),
        })
    })
    .as_ref()
}

/// The provider's test switches (forged tokens, code lifetime) are global:
/// the tests that use the provider take turns.
pub async fn turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: OnceLock<tokio::sync::Mutex<()>> = OnceLock::new();
    TURN.get_or_init(|| tokio::sync::Mutex::new(()))
        .lock()
        .await
}

/// A live coffre configured against the provider, at the real current time
/// (the provider's tokens carry real timestamps).
pub fn setup(peer: &'static Peer) -> Setup {
    setup_with_issuer(peer, peer.resident.clone())
}

fn setup_with_issuer(peer: &'static Peer, resident_issuer: String) -> Setup {
    Setup {
        demo: false,
        live: true,
        configure: Some(Arc::new(move |config| {
            config.resident_oidc = Some(OidcClient {
                issuer: url::Url::parse(&resident_issuer).unwrap(),
                client_id: "coffre-resident".into(),
                client_secret: SecretString::from(peer.secret.clone()),
                scopes:
                    "openid given_name family_name birthdate gender birthplace birthcountry email"
                        .split(' ')
                        .map(str::to_string)
                        .collect(),
                acr_values: Some("eidas1".into()),
            });
            config.agent_oidc = Some(OidcClient {
                issuer: url::Url::parse(&peer.agent).unwrap(),
                client_id: "coffre-agent".into(),
                client_secret: SecretString::from(peer.secret.clone()),
                scopes: vec![
                    "openid".into(),
                    "email".into(),
                    "given_name".into(),
                    "family_name".into(),
                ],
                acr_values: None,
            });
        })),
    }
}

fn real_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A browser: keeps cookies, follows no redirect by itself.
pub struct Browser {
    pub http: reqwest::Client,
    pub base: String,
    pub jar: Arc<reqwest::cookie::Jar>,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        Self {
            http: reqwest::Client::builder()
                .cookie_provider(jar.clone())
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_string(),
            jar,
        }
    }

    /// Puts a `Set-Cookie` value in the jar, as if coffre had sent it.
    pub fn set_cookie(&self, set_cookie: &str) {
        self.jar
            .add_cookie_str(set_cookie, &url::Url::parse(&self.base).unwrap());
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.http.get(url).send().await.unwrap()
    }

    /// `GET /auth/login` (or the agent's): the provider's authorization URL.
    pub async fn start(&self, path: &str) -> String {
        let res = self.get(&format!("{}{path}", self.base)).await;
        assert_eq!(
            res.status(),
            StatusCode::SEE_OTHER,
            "{}",
            res.text().await.unwrap()
        );
        res.headers()[LOCATION].to_str().unwrap().to_string()
    }

    /// Walks through the provider as `sub` until it sends the browser back to
    /// coffre; returns that callback URL (not yet visited).
    pub async fn authorize(&self, authorize_url: &str, sub: &str) -> url::Url {
        let mut url = url::Url::parse(authorize_url).unwrap();
        for _ in 0..10 {
            if url.as_str().starts_with(&self.base) {
                return url;
            }
            if url.path().starts_with("/interaction/") {
                url.query_pairs_mut().append_pair("sub", sub);
            }
            let mut res = self.get(url.as_str()).await;
            if res.status() == StatusCode::OK {
                // The provider's self-submitting form (ending the previous
                // person's provider session before another logs in): submit
                // it as the browser's script would.
                let html = res.text().await.unwrap();
                let (action, fields) = auto_form(&html)
                    .unwrap_or_else(|| panic!("provider answered 200 at {url}: {html}"));
                res = self.http.post(action).form(&fields).send().await.unwrap();
            }
            assert!(
                res.status().is_redirection(),
                "provider answered {} at {url}: {}",
                res.status(),
                res.text().await.unwrap()
            );
            let next = res.headers()[LOCATION].to_str().unwrap().to_string();
            url = url.join(&next).unwrap();
        }
        panic!("too many redirects at the provider");
    }

    /// The whole login as `sub`; returns coffre's answer to the callback.
    pub async fn login(&self, path: &str, sub: &str) -> reqwest::Response {
        let authorize = self.start(path).await;
        let callback = self.authorize(&authorize, sub).await;
        self.get(callback.as_str()).await
    }

    pub async fn me(&self) -> reqwest::Response {
        self.get(&format!("{}/api/v1/me", self.base)).await
    }
}

/// The action and hidden fields of a self-submitting HTML form.
fn auto_form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let attr = |tag: &str, name: &str| {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        Some(tag[start..start + tag[start..].find('"')?].to_string())
    };
    let form = &html[html.find("<form")?..];
    let action = attr(&form[..form.find('>')?], "action")?;
    let fields = form
        .split("<input")
        .skip(1)
        .filter_map(|i| Some((attr(i, "name")?, attr(i, "value")?)))
        .collect();
    Some((action, fields))
}

async fn assert_error(res: reqwest::Response, status: u16, code: &str) {
    let got = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("status {got}, body not JSON: {text:?}"));
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
}

async fn tamper(issuer: &str, query: &str) {
    let res = reqwest::Client::new()
        .post(format!("{issuer}/test/{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

fn audit_reasons(entries: &[coffre::audit::AuditEntry], action: &str) -> Vec<(bool, String)> {
    entries
        .iter()
        .filter(|e| e.action == action)
        .map(|e| {
            (
                e.decision == coffre::audit::Decision::Allow,
                e.reason.clone(),
            )
        })
        .collect()
}

async fn all_entries(app: &TestApp) -> Vec<coffre::audit::AuditEntry> {
    let size = app.state.audit.size().await.unwrap();
    app.store
        .audit_entries(0, size)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, leaf)| coffre::audit::AuditEntry::decode(&leaf).unwrap())
        .collect()
}

#[tokio::test]
async fn a_resident_logs_in_is_created_once_gets_their_identity_and_logs_out() {
    let Some(peer) = peer() else { return };
    let _turn = turn().await;
    support::each_backend_setup(setup(peer), |app| async move {
        app.clock.set(real_now());
        let base = app.serve();
        let browser = Browser::new(&base);

        let authorize = browser.start("/auth/login").await;
        let u = url::Url::parse(&authorize).unwrap();
        let q: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["acr_values"], "eidas1");
        assert_eq!(q["redirect_uri"], format!("{base}/auth/callback"));
        for scope in [
            "openid",
            "given_name",
            "birthplace",
            "birthcountry",
            "email",
        ] {
            assert!(q["scope"].split(' ').any(|s| s == scope), "{scope}");
        }
        assert!(q.contains_key("nonce") && q.contains_key("state"));

        let callback = browser.authorize(&authorize, "alice").await;
        let res = browser.get(callback.as_str()).await;
        assert_eq!(
            res.status(),
            StatusCode::SEE_OTHER,
            "{}",
            res.text().await.unwrap()
        );
        let cookies: Vec<_> = res.headers().get_all(SET_COOKIE).iter().collect();
        assert!(cookies.iter().any(|c| {
            let c = c.to_str().unwrap();
            c.starts_with("coffre_session=") && c.contains("HttpOnly") && c.contains("SameSite=Lax")
        }));

        let me: serde_json::Value = browser.me().await.json().await.unwrap();
        assert_eq!(me["role"], "resident");
        let alice = me["id"].as_str().unwrap().to_string();

        let identity: serde_json::Value = browser
            .get(&format!("{base}/api/v1/me/data/identity"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(identity["current"]["fields"]["given_name"], "Alice");
        assert_eq!(identity["current"]["fields"]["family_name"], "Martin");
        assert_eq!(identity["current"]["fields"]["birthdate"], "1950-03-02");
        assert_eq!(identity["current"]["fields"]["birthplace"], "16015");
        assert_eq!(identity["current"]["fields"]["birthcountry"], "99100");
        assert_eq!(identity["current"]["version"], 1);
        // C11: her pivot identity is registered (its keyed digest only), so
        // a public-task source can match her.
        let pivot = coffre::domain::deposit::PivotIdentity {
            family_name: "MARTIN".into(),
            given_names: "alice".into(),
            birthdate: "1950-03-02".into(),
            birthplace: "16015".into(),
            birthcountry: "99100".into(),
            gender: "female".into(),
        };
        let digest = app
            .keys
            .current()
            .pseudonym("pivot", pivot.canonical().unwrap().as_bytes());
        assert_eq!(
            app.store
                .resident_by_pivot(&digest)
                .await
                .unwrap()
                .as_ref().map(|r| r.as_str()),
            Some(alice.as_str())
        );
        let contact: serde_json::Value = browser
            .get(&format!("{base}/api/v1/me/data/contact"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            contact["current"]["fields"]["email"],
            "alice.martin@example.org"
        );

        // The provider's subject is stored only as a keyed digest.
        let digest = app
            .keys
            .current()
            .pseudonym(&format!("oidc-sub:{}", peer.resident), b"alice");
        let (again, created) = app
            .store
            .resident_for_login(&digest, &crate::support::resident_id("unused"), app.clock.now())
            .await
            .unwrap();
        assert_eq!((again.as_str(), created), (alice.as_str(), false));

        // Logout ends the provider's session too, with id_token_hint.
        let csrf = me["csrf_token"].as_str().unwrap();
        let res = browser
            .http
            .post(format!("{base}/auth/logout"))
            .header("x-csrf-token", csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let location = url::Url::parse(res.headers()[LOCATION].to_str().unwrap()).unwrap();
        assert!(location.as_str().starts_with(&peer.resident), "{location}");
        let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
        assert!(q["id_token_hint"].split('.').count() == 3);
        assert_eq!(q["post_logout_redirect_uri"], format!("{base}/"));
        assert_eq!(browser.me().await.status(), StatusCode::UNAUTHORIZED);

        // The same person again: the same resident, no new identity version;
        // started from a page of her space (a source's approval page), the
        // login brings her back to it.
        let approval = "/moi/sources/energie-locale/autoriser?state=s1&redirect_uri=https%3A%2F%2Fenergie-locale.example%2Fcoffre%2Fretour";
        let next = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("next", approval)
            .finish();
        let res = browser.login(&format!("/auth/login?{next}"), "alice").await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(res.headers()[LOCATION].to_str().unwrap(), approval);
        let me: serde_json::Value = browser.me().await.json().await.unwrap();
        assert_eq!(me["id"], alice.as_str());
        let identity: serde_json::Value = browser
            .get(&format!("{base}/api/v1/me/data/identity"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(identity["current"]["version"], 1);

        // Someone else: another resident.
        let other = Browser::new(&base);
        assert_eq!(
            other.login("/auth/login", "bob").await.status(),
            StatusCode::SEE_OTHER
        );
        let me: serde_json::Value = other.me().await.json().await.unwrap();
        assert_ne!(me["id"], alice.as_str());

        let entries = all_entries(&app).await;
        assert_eq!(
            audit_reasons(&entries, "login"),
            vec![
                (true, "oidc_resident".to_string()),
                (true, "oidc_resident".to_string()),
                (true, "oidc_resident".to_string())
            ]
        );
        assert_eq!(audit_reasons(&entries, "resident.create").len(), 2);
    })
    .await;
}

#[tokio::test]
async fn forged_state_replayed_callbacks_and_codes_are_refused() {
    let Some(peer) = peer() else { return };
    let _turn = turn().await;
    let app = support::build_app_with(
        &format!(
            "sqlite://{}",
            tempfile::tempdir().unwrap().keep().join("c.db").display()
        ),
        "sqlite",
        &setup(peer),
    )
    .await;
    app.clock.set(real_now());
    let base = app.serve();
    let browser = Browser::new(&base);

    // A state coffre never issued.
    let authorize = browser.start("/auth/login").await;
    let callback = browser.authorize(&authorize, "alice").await;
    let mut forged = callback.clone();
    let code = callback
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    forged.set_query(Some(&format!("code={code}&state=forged-state")));
    assert_error(
        browser.get(forged.as_str()).await,
        400,
        "oidc_state_invalid",
    )
    .await;

    // The genuine callback, from another browser (no login cookie): refused,
    // and the state is spent.
    let stranger = Browser::new(&base);
    assert_error(
        stranger.get(callback.as_str()).await,
        400,
        "oidc_state_invalid",
    )
    .await;
    assert_error(
        browser.get(callback.as_str()).await,
        400,
        "oidc_state_invalid",
    )
    .await;

    // A used code under a fresh state: the provider refuses it.
    let authorize = browser.start("/auth/login").await;
    let first = browser.authorize(&authorize, "alice").await;
    let res = browser.get(first.as_str()).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let used_code = first
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let authorize = browser.start("/auth/login").await;
    let fresh = browser.authorize(&authorize, "alice").await;
    let fresh_state = fresh
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let mut replay = fresh.clone();
    replay.set_query(Some(&format!("code={used_code}&state={fresh_state}")));
    assert_error(
        browser.get(replay.as_str()).await,
        401,
        "oidc_code_rejected",
    )
    .await;

    // An expired code.
    tamper(&peer.resident, "code-ttl?seconds=1").await;
    let authorize = browser.start("/auth/login").await;
    let late = browser.authorize(&authorize, "alice").await;
    tamper(&peer.resident, "code-ttl?seconds=60").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_error(browser.get(late.as_str()).await, 401, "oidc_code_rejected").await;

    // The person cancelled at the provider.
    let authorize = browser.start("/auth/login").await;
    let state = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let res = browser
        .get(&format!(
            "{base}/auth/callback?error=access_denied&state={state}"
        ))
        .await;
    assert_error(res, 401, "oidc_login_refused").await;

    let entries = all_entries(&app).await;
    let logins = audit_reasons(&entries, "login");
    assert!(
        logins.contains(&(false, "oidc_code_rejected".into())),
        "{logins:?}"
    );
    assert!(
        logins.contains(&(false, "oidc_login_refused".into())),
        "{logins:?}"
    );
    // Nobody was logged in by any of this but the one genuine login.
    assert_eq!(logins.iter().filter(|(ok, _)| *ok).count(), 1);
}

#[tokio::test]
async fn forged_id_tokens_are_refused_and_a_faithful_one_accepted() {
    let Some(peer) = peer() else { return };
    let _turn = turn().await;
    let app = support::build_app_with(
        &format!(
            "sqlite://{}",
            tempfile::tempdir().unwrap().keep().join("c.db").display()
        ),
        "sqlite",
        &setup(peer),
    )
    .await;
    app.clock.set(real_now());
    let base = app.serve();
    for mode in [
        "alg-none",
        "foreign-key",
        "unknown-kid",
        "wrong-issuer",
        "wrong-audience",
        "wrong-nonce",
        "expired",
    ] {
        let browser = Browser::new(&base);
        let authorize = browser.start("/auth/login").await;
        let callback = browser.authorize(&authorize, "alice").await;
        tamper(&peer.resident, &format!("tamper?mode={mode}")).await;
        let res = browser.get(callback.as_str()).await;
        assert_eq!(res.status().as_u16(), 401, "{mode}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "oidc_id_token_invalid",
            "{mode}: {body}"
        );
        assert_eq!(
            browser.me().await.status(),
            StatusCode::UNAUTHORIZED,
            "{mode}"
        );
    }
    // The forging harness itself keeps a faithful token valid.
    let browser = Browser::new(&base);
    let authorize = browser.start("/auth/login").await;
    let callback = browser.authorize(&authorize, "alice").await;
    tamper(&peer.resident, "tamper?mode=resigned").await;
    assert_eq!(
        browser.get(callback.as_str()).await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(browser.me().await.status(), StatusCode::OK);

    // A login left unfinished for more than ten minutes (coffre's clock,
    // a parameter) is refused.
    let browser = Browser::new(&base);
    let authorize = browser.start("/auth/login").await;
    let callback = browser.authorize(&authorize, "alice").await;
    app.clock.advance(2 * 3600);
    assert_error(
        browser.get(callback.as_str()).await,
        400,
        "oidc_state_invalid",
    )
    .await;
}

#[tokio::test]
async fn an_issuer_that_is_not_the_configured_one_is_refused_at_discovery() {
    let Some(peer) = peer() else { return };
    let _turn = turn().await;
    // Same provider, reached under another name: its discovery document
    // names a different issuer.
    let other_name = peer.resident.replace("127.0.0.1", "localhost");
    let app = support::build_app_with(
        &format!(
            "sqlite://{}",
            tempfile::tempdir().unwrap().keep().join("c.db").display()
        ),
        "sqlite",
        &setup_with_issuer(peer, other_name),
    )
    .await;
    let base = app.serve();
    let res = Browser::new(&base).get(&format!("{base}/auth/login")).await;
    assert_error(res, 503, "identity_provider_unavailable").await;
}

#[tokio::test]
async fn agents_log_in_with_the_role_coffre_gives_them_and_strangers_are_refused() {
    let Some(peer) = peer() else { return };
    let _turn = turn().await;
    support::each_backend_setup(setup(peer), |app| async move {
        app.clock.set(real_now());
        let base = app.serve();
        let digest = coffre::service::login::agent_email_digest(
            &app.state,
            "Claire.Aidante@ccas.example.org",
        )
        .unwrap();
        app.store
            .insert_agent(
                &coffre::storage::AgentRow {
                    id: crate::support::aid("agent-claire"),
                    role: coffre::domain::Role::Dpo,
                    display_name: "Claire".into(),
                    structure_id: None,
                    active: true,
                    can_create_mandates: true,
                },
                Some(&digest),
                app.clock.now(),
            )
            .await
            .unwrap();

        let browser = Browser::new(&base);
        let res = browser.login("/auth/agent/login", "claire").await;
        assert_eq!(
            res.status(),
            StatusCode::SEE_OTHER,
            "{}",
            res.text().await.unwrap()
        );
        let me: serde_json::Value = browser.me().await.json().await.unwrap();
        assert_eq!(
            (me["id"].as_str(), me["role"].as_str()),
            (Some("agent-claire"), Some("dpo"))
        );

        // An e-mail coffre does not know: refused, and audited.
        let stranger = Browser::new(&base);
        assert_error(
            stranger.login("/auth/agent/login", "denis").await,
            403,
            "agent_unknown",
        )
        .await;
        assert_eq!(stranger.me().await.status(), StatusCode::UNAUTHORIZED);

        // The resident login route does not accept the agent provider's
        // callback, nor the other way round.
        let authorize = stranger.start("/auth/agent/login").await;
        let callback = stranger.authorize(&authorize, "claire").await;
        let mut crossed = callback.clone();
        crossed.set_path("/auth/callback");
        assert_error(
            stranger.get(crossed.as_str()).await,
            400,
            "oidc_state_invalid",
        )
        .await;

        let entries = all_entries(&app).await;
        let logins = audit_reasons(&entries, "login");
        assert!(logins.contains(&(true, "oidc_agent".into())), "{logins:?}");
        assert!(
            logins.contains(&(false, "agent_unknown".into())),
            "{logins:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn without_configuration_the_login_routes_say_so_and_the_rest_runs() {
    support::each_backend(|app| async move {
        app.get("/auth/login")
            .await
            .assert_error(503, "login_not_configured");
        app.get("/auth/agent/login")
            .await
            .assert_error(503, "agent_login_not_configured");
        app.get("/auth/callback?code=x&state=y")
            .await
            .assert_error(503, "login_not_configured");
        assert_eq!(app.get("/healthz").await.status, 200);
    })
    .await;
}

/// The creation flow of BRIEF C6: the aidant drafts, the resident logs in
/// with OpenID Connect in the aidant's browser (no resident session opens),
/// the recap names them, the aidant confirms with TOTP. Renewal needs the
/// same resident's fresh login.
#[tokio::test]
async fn a_mandate_is_made_with_the_residents_login_in_the_aidants_browser() {
    let Some(peer) = peer() else { return };
    let _turn = turn().await;
    support::each_backend_setup(setup(peer), |app| async move {
        app.clock.set(real_now());
        let base = app.serve();
        let now = app.clock.now();
        app.store
            .insert_structure(
                &coffre::storage::StructureRow {
                    id: crate::support::sid("ccas"),
                    siret: "26340001200013".into(),
                    name: "CCAS de test".into(),
                    allowed_demarches: crate::support::demarches("logement,papiers"),
                    active: true,
                },
                now,
            )
            .await
            .unwrap();
        app.store
            .insert_agent(
                &coffre::storage::AgentRow {
                    id: crate::support::aid("aidant-1"),
                    role: coffre::domain::Role::Aidant,
                    display_name: "Camille".into(),
                    structure_id: Some(crate::support::sid("ccas")),
                    active: true,
                    can_create_mandates: true,
                },
                None,
                now,
            )
            .await
            .unwrap();
        let secret = coffre::service::mandates::enroll_totp(
            &app.state,
            &crate::support::aid("aidant-1"),
            now,
        )
        .await
        .unwrap();
        let totp = |offset: i64| {
            let t = real_now();
            coffre::domain::mandate::totp::code(
                &secret,
                coffre::domain::mandate::totp::step_at(t) + offset,
            )
        };
        let cookie = coffre::http::session::open_session(
            &app.state,
            "aidant-1",
            coffre::domain::Role::Aidant,
            "agent",
            None,
        )
        .await
        .unwrap();
        let desk = Browser::new(&base);
        desk.set_cookie(cookie.to_str().unwrap());
        let me: serde_json::Value = desk.me().await.json().await.unwrap();
        let csrf = me["csrf_token"].as_str().unwrap().to_string();
        let post = |path: String, body: serde_json::Value| {
            let desk = &desk;
            let csrf = csrf.clone();
            async move {
                desk.http
                    .post(format!("{}{path}", desk.base))
                    .header("x-csrf-token", csrf)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
            }
        };

        // Outside the structure's démarches: refused.
        let res = post(
            "/api/v1/mandates/drafts".into(),
            serde_json::json!({"demarches": ["argent"], "duration_days": 31}),
        )
        .await;
        assert_error(res, 422, "demarche_not_allowed").await;
        let res = post(
            "/api/v1/mandates/drafts".into(),
            serde_json::json!({"demarches": ["logement"], "duration_days": 30}),
        )
        .await;
        assert_error(res, 422, "invalid_duration").await;

        let res = post(
            "/api/v1/mandates/drafts".into(),
            serde_json::json!({"demarches": ["logement", "papiers"], "duration_days": 182}),
        )
        .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let draft: serde_json::Value = res.json().await.unwrap();
        let draft_id = draft["id"].as_str().unwrap().to_string();
        // Confirming before the resident logged in: refused.
        let res = post(
            format!("/api/v1/mandates/drafts/{draft_id}/confirm"),
            serde_json::json!({"resident_confirmed": true, "totp": totp(0)}),
        )
        .await;
        assert_error(res, 409, "resident_login_required").await;

        // The resident logs in, in the aidant's browser.
        let login = desk.start(draft["resident_login"].as_str().unwrap()).await;
        let callback = desk.authorize(&login, "alice").await;
        let res = desk.get(callback.as_str()).await;
        assert_eq!(
            res.status(),
            StatusCode::SEE_OTHER,
            "{}",
            res.text().await.unwrap()
        );
        // Back to the draft's page, where the recap is read together.
        assert_eq!(
            res.headers()[LOCATION],
            format!("/aidant/brouillons/{draft_id}").as_str()
        );
        // The desk is still the aidant's session.
        let me: serde_json::Value = desk.me().await.json().await.unwrap();
        assert_eq!(me["id"], "aidant-1");
        let recap: serde_json::Value = desk
            .get(&format!("{base}/api/v1/mandates/drafts/{draft_id}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(recap["resident_name"], "Alice Martin");
        assert!(recap["recap_fr"].as_str().unwrap().contains("CCAS de test"));
        let alice = recap["resident_id"].as_str().unwrap().to_string();

        // Another browser cannot attach a resident to this draft.
        let stranger = Browser::new(&base);
        let res = stranger
            .get(&format!("{base}/auth/login?mandate_draft={draft_id}"))
            .await;
        assert_error(res, 403, "mandate_draft_invalid").await;

        // The resident must tick the recap; the aidant's code must be right.
        let res = post(
            format!("/api/v1/mandates/drafts/{draft_id}/confirm"),
            serde_json::json!({"resident_confirmed": false, "totp": totp(0)}),
        )
        .await;
        assert_error(res, 422, "resident_confirmation_required").await;
        let res = post(
            format!("/api/v1/mandates/drafts/{draft_id}/confirm"),
            serde_json::json!({"resident_confirmed": true, "totp": "000000"}),
        )
        .await;
        assert_error(res, 403, "totp_invalid").await;
        let res = post(
            format!("/api/v1/mandates/drafts/{draft_id}/confirm"),
            serde_json::json!({"resident_confirmed": true, "totp": totp(0)}),
        )
        .await;
        assert_eq!(
            res.status(),
            StatusCode::CREATED,
            "{}",
            res.text().await.unwrap()
        );
        let mandate: serde_json::Value = res.json().await.unwrap();
        assert_eq!(mandate["resident_id"], alice.as_str());
        assert_eq!(mandate["state"], "active");
        assert_eq!(mandate["duration_days"], 182);
        let mandate_id = mandate["id"].as_str().unwrap().to_string();

        // Renewal: a fresh login, and only by the same person.
        let res = post(
            format!("/api/v1/mandates/{mandate_id}/renew"),
            serde_json::json!({}),
        )
        .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let renewal: serde_json::Value = res.json().await.unwrap();
        let renewal_id = renewal["id"].as_str().unwrap().to_string();
        let login = desk
            .start(renewal["resident_login"].as_str().unwrap())
            .await;
        let callback = desk.authorize(&login, "bob").await;
        assert_error(
            desk.get(callback.as_str()).await,
            403,
            "renewal_other_resident",
        )
        .await;
        let login = desk
            .start(renewal["resident_login"].as_str().unwrap())
            .await;
        let callback = desk.authorize(&login, "alice").await;
        assert_eq!(
            desk.get(callback.as_str()).await.status(),
            StatusCode::SEE_OTHER
        );
        let res = post(
            format!("/api/v1/mandates/drafts/{renewal_id}/confirm"),
            serde_json::json!({"resident_confirmed": true, "totp": totp(1)}),
        )
        .await;
        assert_eq!(
            res.status(),
            StatusCode::CREATED,
            "{}",
            res.text().await.unwrap()
        );
        let renewed: serde_json::Value = res.json().await.unwrap();
        assert_eq!(renewed["renews"], mandate_id.as_str());
        let old: serde_json::Value = desk
            .get(&format!("{base}/api/v1/mandates/{mandate_id}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(old["state"], "revoked");
        assert!(
            old["demarches"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["revoked_by"] == "superseded")
        );
    })
    .await;
}
