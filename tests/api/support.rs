//! Test harness: builds the real router over a fresh database on each
//! backend. SQLite always; PostgreSQL when `COFFRE_TEST_POSTGRES_URL` is set
//! (each test in its own database, dropped afterwards), and a loud notice on
//! stderr when it is not.

use std::future::Future;
use std::io::Write;
use std::sync::Once;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use std::sync::Arc;

use coffre::crypto::{KeySet, LiveKeys};
use coffre::storage::{self, DynStore};
use coffre::{AppState, Clock, Config};
use http_body_util::BodyExt;
use tower::ServiceExt;

pub const PG_ENV: &str = "COFFRE_TEST_POSTGRES_URL";
/// 2026-11-28T12:00:00Z: tests run at a fixed, known time.
pub const T0: i64 = 1_795_867_200;

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub store: DynStore,
    pub clock: Clock,
    pub backend: &'static str,
    pub dir: tempfile::TempDir,
    pub database_url: String,
    pub keys: Arc<LiveKeys>,
    /// For apps built with [`Setup::live`]: the bound listener, until
    /// [`TestApp::serve`] takes it.
    listener: std::sync::Mutex<Option<std::net::TcpListener>>,
}

/// A change to the configuration of a test app.
pub type Configure = Arc<dyn Fn(&mut Config) + Send + Sync>;

/// How to build a test app beyond the defaults.
#[derive(Clone, Default)]
pub struct Setup {
    pub demo: bool,
    /// Bind a loopback listener first, and make it the public URL.
    pub live: bool,
    /// Changes to the configuration (after the public URL is set).
    pub configure: Option<Configure>,
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl TestResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): status {} body {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the JSON error model with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert!(
            self.header("content-type")
                .unwrap_or_default()
                .starts_with("application/json"),
            "error is not JSON: {:?}",
            self.headers
        );
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "body: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}

impl TestApp {
    pub async fn request(&self, req: Request<Body>) -> TestResponse {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.request(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> TestResponse {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.request(b.body(body.into()).unwrap()).await
    }

    /// Logs in through the demo login and returns (cookie header, csrf token).
    pub async fn login(&self, persona: &str) -> Session {
        let res = self
            .send(
                Method::POST,
                "/dev/login",
                &[("content-type", "application/x-www-form-urlencoded")],
                format!("persona={persona}"),
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
        let set_cookie = res.header("set-cookie").unwrap();
        let cookie = set_cookie.split(';').next().unwrap().to_string();
        let me = self
            .send(
                Method::GET,
                "/api/v1/me",
                &[("cookie", &cookie)],
                Body::empty(),
            )
            .await;
        assert_eq!(me.status, StatusCode::OK, "{}", me.text());
        let csrf = me.json()["csrf_token"].as_str().unwrap().to_string();
        Session { cookie, csrf }
    }

    /// A partner's access token (client credentials, `client_secret_basic`).
    pub async fn partner_token(&self, client_id: &str, secret: &str) -> String {
        use base64::Engine;
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"));
        let res = self
            .send(
                Method::POST,
                "/oauth/token",
                &[
                    ("authorization", &format!("Basic {basic}")),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                "grant_type=client_credentials",
            )
            .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
        res.json()["access_token"].as_str().unwrap().to_string()
    }

    /// A request under a session, with the CSRF header.
    pub async fn as_user(
        &self,
        s: &Session,
        method: Method,
        path: &str,
        json: Option<serde_json::Value>,
    ) -> TestResponse {
        let mut headers = vec![
            ("cookie", s.cookie.as_str()),
            ("x-csrf-token", s.csrf.as_str()),
        ];
        let body = match json {
            Some(v) => {
                headers.push(("content-type", "application/json"));
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(method, path, &headers, body).await
    }
}

pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

fn notice_once(msg: &str) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| notice(msg));
}

/// A loud notice on the process's stderr (a skipped peer, for instance).
pub fn notice(msg: &str) {
    // Written to the process's stderr directly, not through `eprintln!`,
    // so the test harness's output capture cannot hide it.
    let _ = writeln!(
        std::io::stderr(),
        "\n\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n!!! {msg}\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
}

/// A fresh PostgreSQL database for one test, dropped by [`PgDatabase::drop_now`].
pub struct PgDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create() -> Option<PgDatabase> {
        let Ok(admin_url) = std::env::var(PG_ENV) else {
            notice_once(
                "SKIPPED: PostgreSQL variants of the storage tests (COFFRE_TEST_POSTGRES_URL is not set; .ci/run sets it)",
            );
            return None;
        };
        let name = format!("coffre_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx_connect(&admin_url).await;
        sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot create test database on {PG_ENV}: {e}"));
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&format!("/{name}"));
        Some(PgDatabase {
            admin_url,
            name,
            url: url.to_string(),
        })
    }

    pub async fn drop_now(self) {
        let mut admin = sqlx_connect(&self.admin_url).await;
        let _ = sqlx::Executor::execute(
            &mut admin,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str(),
        )
        .await;
    }
}

async fn sqlx_connect(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{PG_ENV} is set but PostgreSQL is unreachable: {e}"))
}

pub async fn build_app(database_url: &str, backend: &'static str, demo: bool) -> TestApp {
    build_app_with(
        database_url,
        backend,
        &Setup {
            demo,
            ..Setup::default()
        },
    )
    .await
}

pub async fn build_app_with(database_url: &str, backend: &'static str, setup: &Setup) -> TestApp {
    let demo = setup.demo;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(database_url, &dir.path().join("keys")).unwrap();
    let listener = if setup.live {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        config.public_url =
            url::Url::parse(&format!("http://{}", l.local_addr().unwrap())).unwrap();
        Some(l)
    } else {
        None
    };
    if let Some(configure) = &setup.configure {
        configure(&mut config);
    }
    let store = storage::open(&config.database_url).await.unwrap();
    let clock = Clock::fixed(T0);
    let keys = Arc::new(LiveKeys::in_memory(KeySet::generate_in_memory().unwrap()));
    let state = AppState::new(config, store.clone(), clock.clone(), demo, Ok(keys.clone()))
        .await
        .unwrap();
    state
        .vault()
        .unwrap()
        .register_kek_versions(T0)
        .await
        .unwrap();
    if demo {
        coffre::demo::seed_if_empty(&state).await.unwrap();
    }
    TestApp {
        router: coffre::app(state.clone()),
        state,
        store,
        clock,
        backend,
        dir,
        database_url: database_url.to_string(),
        keys,
        listener: std::sync::Mutex::new(listener),
    }
}

impl TestApp {
    /// A test app around a state built by the test itself (e.g. sealed).
    pub fn from_state(
        state: AppState,
        store: DynStore,
        clock: Clock,
        backend: &'static str,
        dir: tempfile::TempDir,
        database_url: &str,
        keys: Arc<LiveKeys>,
    ) -> TestApp {
        TestApp {
            router: coffre::app(state.clone()),
            state,
            store,
            clock,
            backend,
            dir,
            database_url: database_url.to_string(),
            keys,
            listener: std::sync::Mutex::new(None),
        }
    }

    /// The same database, keys and clock under another configuration: a
    /// restart of the service (e.g. with another register).
    pub async fn restart_with(&self, configure: impl Fn(&mut Config)) -> TestApp {
        let mut config = self.state.config.clone();
        configure(&mut config);
        let state = AppState::new(
            config,
            self.store.clone(),
            self.clock.clone(),
            self.state.demo,
            Ok(self.keys.clone()),
        )
        .await
        .unwrap();
        TestApp::from_state(
            state,
            self.store.clone(),
            self.clock.clone(),
            self.backend,
            tempfile::tempdir().unwrap(),
            &self.database_url,
            self.keys.clone(),
        )
    }

    /// Serves the app on its listener (built with [`Setup::live`]) and
    /// returns its base URL, e.g. `http://127.0.0.1:41234`.
    pub fn serve(&self) -> String {
        let listener = self
            .listener
            .lock()
            .unwrap()
            .take()
            .expect("built with Setup { live: true, .. } and served once");
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let router = self.router.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        base
    }
}

/// Runs `test` against a fresh demo app on SQLite, then on PostgreSQL when
/// configured. A panic inside `test` still drops the PostgreSQL database.
pub async fn each_backend<F, Fut>(test: F)
where
    F: Fn(TestApp) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    each_backend_with(true, test).await;
}

pub async fn each_backend_with<F, Fut>(demo: bool, test: F)
where
    F: Fn(TestApp) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    each_backend_setup(
        Setup {
            demo,
            ..Setup::default()
        },
        test,
    )
    .await;
}

pub async fn each_backend_setup<F, Fut>(setup: Setup, test: F)
where
    F: Fn(TestApp) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let sqlite_dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", sqlite_dir.path().join("coffre.db").display());
    let app = build_app_with(&url, "sqlite", &setup).await;
    test(app).await;

    if let Some(db) = PgDatabase::create().await {
        let app = build_app_with(&db.url, "postgres", &setup).await;
        let store = app.store.clone();
        let outcome = tokio::spawn(test(app)).await;
        store.close().await;
        db.drop_now().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

impl TestApp {
    /// Where `marker` is stored in clear, as `table.column` names: on
    /// SQLite, anywhere in the database file (and its WAL); on PostgreSQL,
    /// in any column of any table, a text column read as text and a binary
    /// one as its bytes. Empty when the marker is nowhere in clear.
    pub async fn stored_in_clear(&self, marker: &str) -> Vec<String> {
        if self.backend == "sqlite" {
            let path = self
                .database_url
                .trim_start_matches("sqlite://")
                .split('?')
                .next()
                .unwrap()
                .to_string();
            let mut found = Vec::new();
            for file in [path.clone(), format!("{path}-wal")] {
                let bytes = std::fs::read(&file).unwrap_or_default();
                if bytes.windows(marker.len()).any(|w| w == marker.as_bytes()) {
                    found.push(file);
                }
            }
            return found;
        }
        let pool = self.raw_pool().await;
        let columns: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = current_schema() ORDER BY table_name, column_name",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(columns.len() > 50, "{columns:?}");
        let mut found = Vec::new();
        for (table, column, kind) in columns {
            let test = if kind == "bytea" {
                format!("position(convert_to($1, 'UTF8') in \"{column}\") > 0")
            } else {
                format!("strpos(CAST(\"{column}\" AS TEXT), $1) > 0")
            };
            let (n,): (i64,) =
                sqlx::query_as(&format!("SELECT COUNT(*) FROM \"{table}\" WHERE {test}"))
                    .bind(marker)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            if n > 0 {
                found.push(format!("{table}.{column}"));
            }
        }
        found
    }

    /// A pool of the test database's own, for what the service would never
    /// do (tamper with the log, drop a table, flip a flag).
    pub async fn raw_pool(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.database_url).await.unwrap()
    }

    /// The audit log can no longer commit (its entries' table is gone).
    pub async fn audit_down(&self) {
        let p = self.raw_pool().await;
        sqlx::query("DROP TABLE audit_entries")
            .execute(&p)
            .await
            .unwrap();
        p.close().await;
    }

    /// The last entry of the audit log, decoded.
    pub async fn last_entry(&self) -> coffre::audit::AuditEntry {
        let size = self.state.audit.size().await.unwrap();
        let (_, leaf) = self
            .store
            .audit_entries(size - 1, size)
            .await
            .unwrap()
            .pop()
            .unwrap();
        coffre::audit::AuditEntry::decode(&leaf).unwrap()
    }

    /// A mandate of the demo's CCAS, made by its first aidant, at the
    /// app's clock: its id.
    pub async fn mandate(
        &self,
        resident: &str,
        demarches: &[coffre::domain::Demarche],
        days: i64,
    ) -> String {
        self.try_mandate_by(
            "a1d00000-0000-4000-8000-000000000001",
            resident,
            demarches,
            days,
        )
        .await
        .unwrap()
        .id
        .into_string()
    }

    /// A mandate of the demo's CCAS made by `agent` (an aidant or its
    /// référent) at the app's clock, or why it was refused.
    pub async fn try_mandate_by(
        &self,
        agent: &str,
        resident: &str,
        demarches: &[coffre::domain::Demarche],
        days: i64,
    ) -> coffre::error::AppResult<coffre::storage::MandateRow> {
        let structure = self
            .store
            .find_structure(&crate::support::sid(coffre::demo::STRUCTURE_CCAS))
            .await
            .unwrap()
            .unwrap();
        coffre::service::mandates::create(
            &self.state,
            coffre::service::mandates::NewMandate {
                aidant_id: &crate::support::aid(agent),
                structure: &structure,
                resident_id: &crate::support::resident_id(resident),
                demarches,
                duration_days: days,
                renews: None,
            },
            self.clock.now(),
        )
        .await
        .map(|(m, _)| m)
    }
}

/// Démarches from a fixture's comma-joined codes.
pub fn demarches(codes: &str) -> Vec<coffre::domain::Demarche> {
    codes
        .split(',')
        .map(|c| coffre::domain::Demarche::parse(c).unwrap())
        .collect()
}

/// Recorded data categories from a fixture's comma-joined names.
pub fn categories(names: &str) -> Vec<coffre::domain::category::Category> {
    names
        .split(',')
        .filter(|n| !n.is_empty())
        .map(|n| coffre::domain::category::Category::recorded(n).unwrap())
        .collect()
}

/// A fixture's comma-joined form of recorded categories or démarches.
pub fn joined<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// An extract id a test holds as text.
pub fn eid(id: &str) -> coffre::domain::ExtractId {
    coffre::domain::ExtractId::parse(id).unwrap()
}

/// A rights request id a test holds as text.
pub fn rid(id: &str) -> coffre::domain::RightsRequestId {
    coffre::domain::RightsRequestId::parse(id).unwrap()
}

/// A consent id a test holds as text.
pub fn cid(id: &str) -> coffre::domain::ConsentId {
    coffre::domain::ConsentId::parse(id).unwrap()
}

/// A mandate id a test holds as text.
pub fn mid(id: &str) -> coffre::domain::MandateId {
    coffre::domain::MandateId::parse(id).unwrap()
}

/// A mandate draft id a test holds as text.
pub fn did(id: &str) -> coffre::domain::DraftId {
    coffre::domain::DraftId::parse(id).unwrap()
}

/// An agent id a test holds as text.
pub fn aid(id: &str) -> coffre::domain::AgentId {
    coffre::domain::AgentId::parse(id).unwrap()
}

/// A structure id a test holds as text.
pub fn sid(id: &str) -> coffre::domain::StructureId {
    coffre::domain::StructureId::parse(id).unwrap()
}

/// A partner id a test holds as text.
pub fn pid(id: &str) -> coffre::domain::PartnerId {
    coffre::domain::PartnerId::parse(id).unwrap()
}

/// A pseudonym a test holds as text.
pub fn psd(p: &str) -> coffre::domain::Pseudonym {
    coffre::domain::Pseudonym::parse(p).unwrap()
}

/// A resident id from a test's text (a constant, a row's id): the tests'
/// ids are all well-formed.
pub fn resident_id(id: impl AsRef<str>) -> coffre::domain::ResidentId {
    coffre::domain::ResidentId::parse(id.as_ref()).expect("a test's resident id is well-formed")
}

pub fn purpose_id(id: impl AsRef<str>) -> coffre::domain::PurposeId {
    coffre::domain::PurposeId::parse(id.as_ref()).expect("a test's purpose id is well-formed")
}
