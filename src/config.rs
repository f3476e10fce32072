//! Configuration in layers: built-in defaults → `coffre.toml` (or `--config
//! FILE`) → `COFFRE_*` environment variables.
//!
//! Every key has one name (`listen`) in the file and one in the environment
//! (`COFFRE_LISTEN`). Unknown keys and malformed values are refused with one
//! line naming the key and where it came from. Secrets are wrapped so that
//! `Debug` and logs never show them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::SecretString;

/// The files of a policies folder (the register and its companions).
pub const POLICY_FILES: [&str; 7] = [
    "purposes.toml",
    "sources.toml",
    "categories.toml",
    "demarches.toml",
    "territory.toml",
    "model.conf",
    "policy.csv",
];

/// Environment variables with this prefix belong to the test harness, not to
/// the service; they are ignored rather than refused.
const TEST_ENV_PREFIX: &str = "COFFRE_TEST_";

/// Every configuration key, its default and a one-line description (used by
/// `--help` and the README table).
pub const KEYS: &[(&str, Option<&str>, &str)] = &[
    (
        "database_url",
        Some("sqlite://data/coffre.db"),
        "sqlite://PATH (embedded, default) or postgres://… (multi-instance)",
    ),
    (
        "listen",
        Some("127.0.0.1:8080"),
        "address:port to listen on",
    ),
    (
        "metrics_listen",
        None,
        "address:port of the Prometheus /metrics listener; off when unset; keep it off the public network",
    ),
    (
        "extracts_dir",
        Some("data/extracts"),
        "folder of the encrypted extract files (age, for partners)",
    ),
    (
        "keys_dir",
        Some("keys"),
        "folder of the age-encrypted key files",
    ),
    (
        "policies_dir",
        None,
        "folder of the reviewed register (purposes.toml, sources.toml, categories.toml, demarches.toml, territory.toml, model.conf, policy.csv); default ./policies if present, else the built-in copies; when set, the folder must hold all seven",
    ),
    (
        "unlock_identity_file",
        None,
        "age identity (age-keygen format) that decrypts the key files; default KEYS_DIR/unlock.key",
    ),
    (
        "admin_socket",
        Some("/run/coffre/admin.sock"),
        "absolute path of the Unix socket (0600, in a 0700 folder) where custodians submit their shares (`coffre unseal`) and the operator seals; only when the key set is held by custodians",
    ),
    (
        "smtp_url",
        None,
        "SMTP relay for residents' notices: smtp://HOST:PORT (plain, loopback or trusted network), smtp://HOST:PORT?tls=required (STARTTLS) or smtps://HOST:PORT; user:password@ allowed (secret); unset: notices stay queued",
    ),
    (
        "smtp_from",
        None,
        "the From address of residents' notices (required with smtp_url)",
    ),
    (
        "witnesses_file",
        None,
        "file of the audit log's witnesses (C2SP tlog-witness): one `VKEY URL` line each, the witness's cosignature verifier key and its submission URL; unset: no witness",
    ),
    (
        "public_url",
        None,
        "URL users reach the service at; default http://LISTEN",
    ),
    (
        "audit_log_name",
        None,
        "origin line of audit checkpoints; default HOST/coffre/audit from the public URL",
    ),
    ("oidc_issuer", None, "residents' OpenID Connect issuer URL"),
    (
        "oidc_client_id",
        None,
        "residents' OpenID Connect client id",
    ),
    (
        "oidc_client_secret",
        None,
        "residents' OpenID Connect client secret (secret)",
    ),
    (
        "oidc_scopes",
        Some("openid given_name family_name birthdate gender birthplace birthcountry email"),
        "scopes asked of the residents' provider (FranceConnect's identity pivot)",
    ),
    (
        "oidc_acr_values",
        Some("eidas1"),
        "acr_values asked of the residents' provider and required of its ID tokens; empty for none",
    ),
    (
        "agent_oidc_issuer",
        None,
        "agents' OpenID Connect issuer URL",
    ),
    (
        "agent_oidc_client_id",
        None,
        "agents' OpenID Connect client id",
    ),
    (
        "agent_oidc_client_secret",
        None,
        "agents' OpenID Connect client secret (secret)",
    ),
    (
        "agent_oidc_scopes",
        Some("openid email given_name family_name"),
        "scopes asked of the agents' provider",
    ),
    (
        "agent_oidc_acr_values",
        None,
        "acr_values asked of the agents' provider; unset for none",
    ),
    ("log_format", Some("human"), "human or json"),
    (
        "log_filter",
        Some("info"),
        "tracing filter, e.g. info,coffre=debug",
    ),
    (
        "max_body_bytes",
        Some("1048576"),
        "largest accepted request body in bytes",
    ),
    (
        "stats_release_epsilon",
        Some("1"),
        "privacy loss (ε) each monthly open-statistics release spends, 0.01 to 5",
    ),
    (
        "stats_annual_epsilon",
        Some("12"),
        "the most ε the open-statistics releases of one calendar year may spend together",
    ),
    (
        "max_deposit_bytes",
        Some("1073741824"),
        "largest accepted deposit stream (POST /api/v1/source/deposits) in bytes",
    ),
    (
        "shutdown_timeout_secs",
        Some("10"),
        "how long in-flight requests may drain at shutdown",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {message}")]
    File { path: String, message: String },
    #[error("unknown configuration key `{key}` in {origin}")]
    UnknownKey { key: String, origin: String },
    #[error("configuration key `{key}` (from {origin}): {message}")]
    Invalid {
        key: &'static str,
        origin: String,
        message: String,
    },
}

#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file; the file and its folder are created when missing.
    Sqlite { path: PathBuf },
    /// A PostgreSQL URL; it may carry a password, so it is never printed.
    Postgres { url: String },
}

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if let Some(rest) = raw
            .strip_prefix("sqlite://")
            .or_else(|| raw.strip_prefix("sqlite:"))
        {
            let path = rest.split('?').next().unwrap_or_default();
            if path.is_empty() || path == ":memory:" {
                return Err("a SQLite URL must name a file, e.g. sqlite://data/coffre.db".into());
            }
            return Ok(Self::Sqlite {
                path: PathBuf::from(path),
            });
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            let parsed = url::Url::parse(raw).map_err(|e| format!("malformed URL ({e})"))?;
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err("a PostgreSQL URL needs a host".into());
            }
            return Ok(Self::Postgres { url: raw.into() });
        }
        Err("expected sqlite://PATH or postgres://…".into())
    }

    /// A form safe to log: the password is masked.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite { path } => format!("sqlite://{}", path.display()),
            Self::Postgres { url } => match url::Url::parse(url) {
                Ok(mut u) => {
                    if u.password().is_some() {
                        let _ = u.set_password(Some("***"));
                    }
                    // libpq also takes the password as a query parameter.
                    let pairs: Vec<(String, String)> = u
                        .query_pairs()
                        .map(|(k, v)| {
                            let v = if k.eq_ignore_ascii_case("password") {
                                "***".into()
                            } else {
                                v.into_owned()
                            };
                            (k.into_owned(), v)
                        })
                        .collect();
                    if !pairs.is_empty() {
                        u.query_pairs_mut().clear().extend_pairs(pairs);
                    }
                    u.to_string()
                }
                Err(_) => "postgres://***".into(),
            },
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// One OpenID Connect client registration (residents' or agents').
#[derive(Clone)]
pub struct OidcClient {
    pub issuer: url::Url,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Scopes asked for, `openid` first.
    pub scopes: Vec<String>,
    /// `acr_values` sent with the request and required of the ID token.
    pub acr_values: Option<String>,
}

impl fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcClient")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: DatabaseUrl,
    pub listen: SocketAddr,
    /// Where `/metrics` is served, apart from the public listener; `None`:
    /// not served.
    pub metrics_listen: Option<SocketAddr>,
    pub keys_dir: PathBuf,
    pub policies_dir: PathBuf,
    /// `policies_dir` was configured (not the default).
    pub policies_dir_explicit: bool,
    pub extracts_dir: PathBuf,
    pub unlock_identity_file: PathBuf,
    /// The local admin socket of a custodians' key set (unseal, seal,
    /// rotate), never the public listener.
    pub admin_socket: PathBuf,
    /// The SMTP relay of residents' notices (may hold a password); `None`:
    /// notices stay queued.
    pub smtp_url: Option<SecretString>,
    pub smtp_from: String,
    /// The audit log's witnesses (one `VKEY URL` line each); `None`: none.
    pub witnesses_file: Option<PathBuf>,
    pub public_url: url::Url,
    pub audit_log_name: String,
    pub resident_oidc: Option<OidcClient>,
    pub agent_oidc: Option<OidcClient>,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub max_body_bytes: usize,
    /// ε each monthly open-statistics release spends.
    pub stats_release_epsilon: f64,
    /// The most ε the releases of one calendar year may spend together.
    pub stats_annual_epsilon: f64,
    /// A data source's deposit stream is read a line at a time, so it may
    /// be far larger than any other body.
    pub max_deposit_bytes: usize,
    pub shutdown_timeout_secs: u64,
}

/// A raw value and where it came from, so errors can say which layer to fix.
struct RawValue {
    value: String,
    source: String,
}

impl Config {
    /// Loads the configuration the way `coffre` does at start: defaults, then
    /// the file (explicit `--config`, else `coffre.toml` when present), then
    /// the process environment.
    pub fn load(explicit_file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(explicit_file, &env)
    }

    /// Same as [`Config::load`] with the environment passed in (tests).
    pub fn load_from(
        explicit_file: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let mut raw: BTreeMap<&'static str, RawValue> = BTreeMap::new();
        for (key, default, _) in KEYS {
            if let Some(d) = default {
                raw.insert(
                    key,
                    RawValue {
                        value: (*d).to_string(),
                        source: "built-in default".into(),
                    },
                );
            }
        }

        let file = match explicit_file {
            Some(p) => Some(p.to_path_buf()),
            None => {
                let default = PathBuf::from("coffre.toml");
                default.exists().then_some(default)
            }
        };
        if let Some(path) = file {
            layer_file(&path, &mut raw)?;
        }
        layer_env(env, &mut raw)?;
        Self::from_raw(&raw)
    }

    fn from_raw(raw: &BTreeMap<&'static str, RawValue>) -> Result<Self, ConfigError> {
        let get = |key: &'static str| raw.get(key).map(|v| (v.value.as_str(), v.source.as_str()));
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            key,
            origin: raw
                .get(key)
                .map(|v| v.source.clone())
                .unwrap_or_else(|| "built-in default".into()),
            message,
        };

        let database_url = match get("database_url") {
            Some((v, _)) => DatabaseUrl::parse(v).map_err(|m| invalid("database_url", m))?,
            None => return Err(invalid("database_url", "missing".into())),
        };
        let listen: SocketAddr = match get("listen") {
            Some((v, _)) => v.parse().map_err(|_| {
                invalid(
                    "listen",
                    "expected ADDRESS:PORT, e.g. 127.0.0.1:8080".into(),
                )
            })?,
            None => return Err(invalid("listen", "missing".into())),
        };
        let metrics_listen: Option<SocketAddr> = match get("metrics_listen") {
            Some((v, _)) if !v.is_empty() => Some(v.parse().map_err(|_| {
                invalid(
                    "metrics_listen",
                    "expected ADDRESS:PORT, e.g. 127.0.0.1:9464".into(),
                )
            })?),
            _ => None,
        };
        let keys_dir = PathBuf::from(get("keys_dir").map(|(v, _)| v).unwrap_or("keys"));
        // Set explicitly, the folder must be there (a reviewed register that
        // silently fell back to the built-in one would be a different
        // processing than the one reviewed).
        let policies_dir_explicit = get("policies_dir").is_some();
        let policies_dir = PathBuf::from(get("policies_dir").map(|(v, _)| v).unwrap_or("policies"));
        if policies_dir_explicit {
            // All of it: a missing file would fall back to its built-in
            // copy while the register's location named the folder.
            for file in POLICY_FILES {
                if !policies_dir.join(file).is_file() {
                    return Err(invalid(
                        "policies_dir",
                        format!("{} holds no {file}", policies_dir.display()),
                    ));
                }
            }
        }
        let extracts_dir = PathBuf::from(
            get("extracts_dir")
                .map(|(v, _)| v)
                .unwrap_or("data/extracts"),
        );
        let unlock_identity_file = get("unlock_identity_file")
            .map(|(v, _)| PathBuf::from(v))
            .unwrap_or_else(|| keys_dir.join("unlock.key"));
        let admin_socket = PathBuf::from(
            get("admin_socket")
                .map(|(v, _)| v)
                .unwrap_or("/run/coffre/admin.sock"),
        );
        let smtp_url = match get("smtp_url") {
            Some((v, _)) if !v.is_empty() => {
                // The value may hold a password: never echoed.
                check_smtp_url(v).map_err(|m| invalid("smtp_url", m.into()))?;
                Some(SecretString::from(v.to_string()))
            }
            _ => None,
        };
        if smtp_url.is_some() && get("smtp_from").is_none() {
            return Err(invalid(
                "smtp_from",
                "required with smtp_url: a no-reply address of the authority's domain".into(),
            ));
        }
        let smtp_from = get("smtp_from")
            .map(|(v, _)| v)
            .unwrap_or("coffre@localhost")
            .to_string();
        if smtp_from.parse::<lettre::Address>().is_err() {
            return Err(invalid("smtp_from", "expected an e-mail address".into()));
        }
        let witnesses_file = get("witnesses_file")
            .filter(|(v, _)| !v.is_empty())
            .map(|(v, _)| PathBuf::from(v));
        if !admin_socket.is_absolute() {
            return Err(invalid(
                "admin_socket",
                "expected an absolute path, e.g. /run/coffre/admin.sock".into(),
            ));
        }

        let public_url = match get("public_url") {
            Some((v, _)) => parse_http_url(v).map_err(|m| invalid("public_url", m))?,
            None => {
                parse_http_url(&format!("http://{listen}")).map_err(|m| invalid("listen", m))?
            }
        };
        let audit_log_name = match get("audit_log_name") {
            Some((v, _)) => {
                if v.is_empty() || v.contains('\n') || v.contains('+') || v.contains(' ') {
                    return Err(invalid(
                        "audit_log_name",
                        "must be one non-empty line without spaces or '+'".into(),
                    ));
                }
                v.to_string()
            }
            None => default_log_name(&public_url),
        };

        let resident_oidc = oidc_client(
            raw,
            (
                "oidc_issuer",
                "oidc_client_id",
                "oidc_client_secret",
                "oidc_scopes",
                "oidc_acr_values",
            ),
            &invalid,
        )?;
        let agent_oidc = oidc_client(
            raw,
            (
                "agent_oidc_issuer",
                "agent_oidc_client_id",
                "agent_oidc_client_secret",
                "agent_oidc_scopes",
                "agent_oidc_acr_values",
            ),
            &invalid,
        )?;

        let log_format = match get("log_format").map(|(v, _)| v) {
            Some("human") | None => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some(_) => return Err(invalid("log_format", "expected `human` or `json`".into())),
        };
        let log_filter = get("log_filter")
            .map(|(v, _)| v)
            .unwrap_or("info")
            .to_string();
        tracing_subscriber::EnvFilter::try_new(&log_filter)
            .map_err(|e| invalid("log_filter", format!("invalid filter ({e})")))?;

        let max_body_bytes: usize = parse_number(get("max_body_bytes"), 1_048_576)
            .map_err(|m| invalid("max_body_bytes", m))?;
        if max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "must be at least 1024".into()));
        }
        let max_deposit_bytes: usize = parse_number(get("max_deposit_bytes"), 1 << 30)
            .map_err(|m| invalid("max_deposit_bytes", m))?;
        if max_deposit_bytes < max_body_bytes {
            return Err(invalid(
                "max_deposit_bytes",
                "must be at least max_body_bytes".into(),
            ));
        }
        let stats_release_epsilon: f64 = parse_number(get("stats_release_epsilon"), 1.0)
            .map_err(|m| invalid("stats_release_epsilon", m))?;
        if !(0.01..=5.0).contains(&stats_release_epsilon) {
            return Err(invalid(
                "stats_release_epsilon",
                "must be between 0.01 and 5".into(),
            ));
        }
        let stats_annual_epsilon: f64 = parse_number(get("stats_annual_epsilon"), 12.0)
            .map_err(|m| invalid("stats_annual_epsilon", m))?;
        if !(stats_release_epsilon..=60.0).contains(&stats_annual_epsilon) {
            return Err(invalid(
                "stats_annual_epsilon",
                "must be at least stats_release_epsilon and at most 60".into(),
            ));
        }
        let shutdown_timeout_secs: u64 = parse_number(get("shutdown_timeout_secs"), 10)
            .map_err(|m| invalid("shutdown_timeout_secs", m))?;

        Ok(Self {
            database_url,
            listen,
            metrics_listen,
            keys_dir,
            policies_dir,
            policies_dir_explicit,
            extracts_dir,
            unlock_identity_file,
            admin_socket,
            smtp_url,
            smtp_from,
            witnesses_file,
            public_url,
            audit_log_name,
            resident_oidc,
            agent_oidc,
            log_format,
            log_filter,
            max_body_bytes,
            stats_release_epsilon,
            stats_annual_epsilon,
            max_deposit_bytes,
            shutdown_timeout_secs,
        })
    }

    /// A configuration for tests and benchmarks: the defaults with the given
    /// database and keys folder; nothing is read from the process.
    pub fn for_tests(database_url: &str, keys_dir: &Path) -> Result<Self, ConfigError> {
        let env = [
            ("COFFRE_DATABASE_URL".to_string(), database_url.to_string()),
            (
                "COFFRE_KEYS_DIR".to_string(),
                keys_dir.display().to_string(),
            ),
            (
                "COFFRE_EXTRACTS_DIR".to_string(),
                keys_dir
                    .parent()
                    .unwrap_or(keys_dir)
                    .join("extracts")
                    .display()
                    .to_string(),
            ),
        ];
        let mut raw = BTreeMap::new();
        for (key, default, _) in KEYS {
            if let Some(d) = default {
                raw.insert(
                    *key,
                    RawValue {
                        value: (*d).to_string(),
                        source: "built-in default".into(),
                    },
                );
            }
        }
        layer_env(&env, &mut raw)?;
        Self::from_raw(&raw)
    }

    pub fn is_https(&self) -> bool {
        self.public_url.scheme() == "https"
    }

    /// The public URL without its trailing slash: the issuer of every token,
    /// receipt and attestation coffre signs, and the base of its links.
    pub fn public_base(&self) -> &str {
        self.public_url.as_str().trim_end_matches('/')
    }
}

fn default_log_name(public_url: &url::Url) -> String {
    let host = public_url.host_str().unwrap_or("localhost");
    let path = public_url.path().trim_matches('/');
    if path.is_empty() {
        format!("{host}/coffre/audit")
    } else {
        format!("{host}/{path}/audit")
    }
}

fn parse_http_url(v: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(v).map_err(|e| format!("malformed URL ({e})"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err("expected an http:// or https:// URL".into());
    }
    if u.host_str().is_none() {
        return Err("the URL needs a host".into());
    }
    Ok(u)
}

fn parse_number<T: std::str::FromStr>(v: Option<(&str, &str)>, default: T) -> Result<T, String> {
    match v {
        Some((s, _)) => s
            .trim()
            .parse()
            .map_err(|_| format!("expected a whole number, got {s:?}")),
        None => Ok(default),
    }
}

type InvalidFn<'a> = dyn Fn(&'static str, String) -> ConfigError + 'a;

fn oidc_client(
    raw: &BTreeMap<&'static str, RawValue>,
    (issuer_key, id_key, secret_key, scopes_key, acr_key): (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    ),
    invalid: &InvalidFn<'_>,
) -> Result<Option<OidcClient>, ConfigError> {
    let scopes: Vec<String> = raw
        .get(scopes_key)
        .map(|v| v.value.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if scopes.first().map(String::as_str) != Some("openid") {
        return Err(invalid(
            scopes_key,
            "must start with `openid` (space-separated scopes)".into(),
        ));
    }
    let acr_values = raw
        .get(acr_key)
        .map(|v| v.value.trim().to_string())
        .filter(|v| !v.is_empty());
    let issuer = raw.get(issuer_key).map(|v| v.value.clone());
    let id = raw.get(id_key).map(|v| v.value.clone());
    let secret = raw.get(secret_key).map(|v| v.value.clone());
    match (issuer, id) {
        (None, None) => Ok(None),
        (Some(issuer), Some(client_id)) => {
            let issuer = parse_http_url(&issuer).map_err(|m| invalid(issuer_key, m))?;
            if client_id.is_empty() {
                return Err(invalid(id_key, "must not be empty".into()));
            }
            Ok(Some(OidcClient {
                issuer,
                client_id,
                client_secret: SecretString::from(secret.unwrap_or_default()),
                scopes,
                acr_values,
            }))
        }
        (Some(_), None) => Err(invalid(
            id_key,
            format!("required when {issuer_key} is set"),
        )),
        (None, Some(_)) => Err(invalid(
            issuer_key,
            format!("required when {id_key} is set"),
        )),
    }
}

fn known_key(key: &str) -> Option<&'static str> {
    KEYS.iter().map(|(k, _, _)| *k).find(|k| *k == key)
}

fn layer_file(path: &Path, raw: &mut BTreeMap<&'static str, RawValue>) -> Result<(), ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: shown.clone(),
        message: format!("cannot read ({})", e.kind()),
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::File {
            path: shown.clone(),
            message: e.message().to_string(),
        })?;
    for (key, value) in table {
        let Some(known) = known_key(&key) else {
            return Err(ConfigError::UnknownKey {
                key,
                origin: shown.clone(),
            });
        };
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(ConfigError::Invalid {
                    key: known,
                    origin: shown.clone(),
                    message: "expected a string or a number".into(),
                });
            }
        };
        raw.insert(
            known,
            RawValue {
                value,
                source: shown.clone(),
            },
        );
    }
    Ok(())
}

fn layer_env(
    env: &[(String, String)],
    raw: &mut BTreeMap<&'static str, RawValue>,
) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(suffix) = name.strip_prefix("COFFRE_") else {
            continue;
        };
        if name.starts_with(TEST_ENV_PREFIX) {
            continue;
        }
        let lowered = suffix.to_ascii_lowercase();
        let Some(known) = known_key(&lowered) else {
            return Err(ConfigError::UnknownKey {
                key: name.clone(),
                origin: "the environment".into(),
            });
        };
        raw.insert(
            known,
            RawValue {
                value: value.clone(),
                source: format!("environment variable {name}"),
            },
        );
    }
    Ok(())
}

/// This machine: `localhost` or a loopback address. (For a scheme the url
/// crate does not know, such as `smtp`, an IP literal stays a domain.)
pub fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => {
            d.eq_ignore_ascii_case("localhost")
                || d.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// An SMTP relay URL coffre accepts: `smtps://`, or `smtp://` with
/// `tls=required` (STARTTLS); plain `smtp://` only to this machine and
/// without credentials (a password never crosses a network in clear);
/// never `tls=opportunistic` (downgradable).
fn check_smtp_url(v: &str) -> Result<(), &'static str> {
    let u = url::Url::parse(v).map_err(|_| "expected smtp://HOST:PORT or smtps://HOST:PORT")?;
    let host = u
        .host()
        .ok_or("expected smtp://HOST:PORT or smtps://HOST:PORT")?;
    let tls = u
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    match (u.scheme(), tls.as_deref()) {
        ("smtps", _) => Ok(()),
        ("smtp", Some("required")) => Ok(()),
        ("smtp", Some(_)) => Err("tls must be `required` (opportunistic TLS can be stripped)"),
        ("smtp", None) => {
            if !is_loopback_host(&host) {
                Err("plain smtp:// only to this machine: use smtps:// or smtp://…?tls=required")
            } else if !u.username().is_empty() || u.password().is_some() {
                Err("credentials need TLS: use smtps:// or smtp://…?tls=required")
            } else {
                Ok(())
            }
        }
        _ => Err("expected smtp://HOST:PORT or smtps://HOST:PORT"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::load_from(Some(Path::new("/nonexistent-ok")), &[]);
        assert!(c.is_err(), "an explicit missing file is an error");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("coffre.toml");
        std::fs::write(&f, "").unwrap();
        let c = Config::load_from(Some(&f), &[]).unwrap();
        assert_eq!(
            c.database_url,
            DatabaseUrl::Sqlite {
                path: "data/coffre.db".into()
            }
        );
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.audit_log_name, "127.0.0.1/coffre/audit");
    }

    #[test]
    fn env_overrides_file_and_unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "listen = \"127.0.0.1:9000\"\n").unwrap();
        let c = Config::load_from(Some(&f), &env(&[("COFFRE_LISTEN", "127.0.0.1:9001")])).unwrap();
        assert_eq!(c.listen.port(), 9001);

        std::fs::write(&f, "lisen = \"x\"\n").unwrap();
        let e = Config::load_from(Some(&f), &[]).unwrap_err().to_string();
        assert!(e.contains("`lisen`"), "{e}");

        std::fs::write(&f, "").unwrap();
        let e = Config::load_from(Some(&f), &env(&[("COFFRE_LISTN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("COFFRE_LISTN"), "{e}");
        // The test harness's own variables are not the service's business.
        Config::load_from(Some(&f), &env(&[("COFFRE_TEST_POSTGRES_URL", "x")])).unwrap();
    }

    #[test]
    fn malformed_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "").unwrap();
        for (k, v, key) in [
            ("COFFRE_DATABASE_URL", "mysql://x", "database_url"),
            ("COFFRE_DATABASE_URL", "postgres://", "database_url"),
            ("COFFRE_LISTEN", "nowhere", "listen"),
            ("COFFRE_PUBLIC_URL", "ftp://x", "public_url"),
            ("COFFRE_MAX_BODY_BYTES", "lots", "max_body_bytes"),
            ("COFFRE_OIDC_ISSUER", "https://id.example", "oidc_client_id"),
        ] {
            let e = Config::load_from(Some(&f), &env(&[(k, v)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("`{key}`")), "{k}={v}: {e}");
        }
    }

    #[test]
    fn smtp_relays_must_protect_what_they_carry() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "").unwrap();
        let from = ("COFFRE_SMTP_FROM", "ne-pas-repondre@agglo.example");
        for ok in [
            "smtp://127.0.0.1:25",
            "smtp://localhost:2525",
            "smtps://relay.example:465",
            "smtp://u:p@relay.example:587?tls=required",
        ] {
            Config::load_from(Some(&f), &env(&[("COFFRE_SMTP_URL", ok), from]))
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "smtp://relay.example:25",
            "smtp://u:hunter2@127.0.0.1:25",
            "smtp://relay.example:587?tls=opportunistic",
            "http://relay.example",
        ] {
            let e = Config::load_from(Some(&f), &env(&[("COFFRE_SMTP_URL", bad), from]))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("`smtp_url`") && !e.contains("hunter2"),
                "{bad}: {e}"
            );
        }
        // A relay needs a real From address.
        let e = Config::load_from(
            Some(&f),
            &env(&[("COFFRE_SMTP_URL", "smtps://relay.example")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`smtp_from`"), "{e}");
    }

    #[test]
    fn secrets_and_passwords_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "").unwrap();
        let c = Config::load_from(
            Some(&f),
            &env(&[
                ("COFFRE_OIDC_ISSUER", "https://id.example"),
                ("COFFRE_OIDC_CLIENT_ID", "coffre"),
                ("COFFRE_OIDC_CLIENT_SECRET", "hunter2-very-secret"),
                (
                    "COFFRE_DATABASE_URL",
                    "postgres://u:pw-secret@db/coffre?sslmode=require&password=qs-secret",
                ),
            ]),
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            !shown.contains("pw-secret") && !shown.contains("qs-secret"),
            "{shown}"
        );
    }
}
