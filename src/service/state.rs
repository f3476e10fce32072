//! The state every use case runs in, shared by all requests of one
//! process: configuration, the store, the clock, the reviewed policy files,
//! the audit log's writer, the vault (or why it is unavailable), the login
//! providers and two per-process caches. Nothing in here would break
//! several processes sharing one PostgreSQL: sessions and data live in the
//! database.

use std::sync::Arc;

use crate::audit::{self, AuditLog};
use crate::config::{self, Config};
use crate::domain::category::Categories;
use crate::domain::purpose::Register;
use crate::service::vault::Vault;
use crate::storage::DynStore;
use crate::{Clock, domain, error, oidc, service};

/// Everything a use case may need.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<AppInner>,
}

pub struct AppInner {
    pub config: Config,
    pub store: DynStore,
    pub clock: Clock,
    /// Demo mode: the development login is enabled (loopback only).
    pub demo: bool,
    pub categories: Arc<Categories>,
    /// The register of processing (`policies/purposes.toml`).
    pub register: Arc<Register>,
    /// The register of data sources (`policies/sources.toml`).
    pub sources: Arc<domain::source::Sources>,
    /// Where the register was read and the hash of its files.
    pub register_source: RegisterSource,
    /// The territory's communes (`policies/territory.toml`): the public
    /// domain of counts by commune.
    pub territory: Arc<domain::territory::Territory>,
    /// The démarches of mandates and the categories each reaches
    /// (`policies/demarches.toml`).
    pub demarches: Arc<domain::mandate::Demarches>,
    /// The casbin policy (roles × actions, `policies/model.conf` + `policy.csv`).
    pub policy: Arc<casbin::Enforcer>,
    /// This process's audit log writer (group commit).
    pub audit: Arc<AuditLog>,
    /// This process's reader of deposit lines' facts (one statement for
    /// the lines in flight).
    pub deposit_facts: service::deposit_reader::FactsReader,
    /// This process's metrics (`/metrics` on `metrics_listen`): counters
    /// of this process, never read by a decision.
    pub metrics: Arc<service::metrics::Metrics>,
    /// The vault: open, sealed (custodians have not unsealed this process
    /// yet; routes fail closed with `sealed`), or unavailable and why
    /// (keys missing or undecryptable; `keys_unavailable`). Changes only
    /// through `service::seal`.
    vault: std::sync::RwLock<service::seal::VaultSlot>,
    /// The custodians' shares received so far, when the key set is held
    /// by custodians (`keys init --custodians`).
    pub custodians: Option<service::seal::Custodians>,
    /// The residents' OpenID provider, when configured.
    pub resident_login: Option<Arc<oidc::IdentityProvider>>,
    /// The agents' OpenID provider, when configured.
    pub agent_login: Option<Arc<oidc::IdentityProvider>>,
    /// Partner access tokens this process has verified (a cache of
    /// signature checks only; see `VerifiedTokens`).
    pub partner_tokens: service::partners::VerifiedTokens,
    /// (partner, pseudonym) → resident, as this process has resolved them:
    /// a pseudonym stands for one resident forever (see `partner_pseudonyms`).
    /// A bounded cache (`quick_cache`): only facts that cannot change are
    /// kept in a process, never state that can (consents, mandates, whether
    /// a partner is active), so processes sharing a database never disagree.
    pub pseudonyms: quick_cache::sync::Cache<(String, String), crate::domain::ResidentId>,
}

impl AppState {
    /// `keys` is the loaded key set, or the one-line reason it could not be
    /// loaded.
    pub async fn new(
        config: Config,
        store: DynStore,
        clock: Clock,
        demo: bool,
        keys: impl Into<service::seal::VaultAtStart>,
    ) -> Result<Self, String> {
        let (categories_text, categories_file) = policy_text(
            &config.policies_dir,
            "categories.toml",
            domain::category::BUILTIN_CATEGORIES,
        )?;
        let categories = Arc::new(
            Categories::parse(&categories_text).map_err(|e| format!("{categories_file} {e}"))?,
        );
        let (purposes_text, purposes_file) = policy_text(
            &config.policies_dir,
            "purposes.toml",
            domain::purpose::BUILTIN_PURPOSES,
        )?;
        let register = Arc::new(
            Register::parse(&purposes_text, &categories)
                .map_err(|e| format!("{purposes_file} {e}"))?,
        );
        let (sources_text, sources_file) = policy_text(
            &config.policies_dir,
            "sources.toml",
            domain::source::BUILTIN_SOURCES,
        )?;
        let sources = Arc::new(
            domain::source::Sources::parse(&sources_text, &categories)
                .map_err(|e| format!("{sources_file} {e}"))?,
        );
        let (demarches_text, demarches_file) = policy_text(
            &config.policies_dir,
            "demarches.toml",
            domain::mandate::BUILTIN_DEMARCHES,
        )?;
        let demarches = Arc::new(
            domain::mandate::Demarches::parse(&demarches_text, &categories)
                .map_err(|e| format!("{demarches_file} {e}"))?,
        );
        let (territory_text, territory_file) = policy_text(
            &config.policies_dir,
            "territory.toml",
            domain::territory::BUILTIN_TERRITORY,
        )?;
        let territory = Arc::new(
            domain::territory::Territory::parse(&territory_text)
                .map_err(|e| format!("{territory_file} {e}"))?,
        );
        let (model_text, model_file) = policy_text(
            &config.policies_dir,
            "model.conf",
            service::access::BUILTIN_MODEL,
        )?;
        let (policy_csv, policy_file) = policy_text(
            &config.policies_dir,
            "policy.csv",
            service::access::BUILTIN_POLICY,
        )?;
        let policy = Arc::new(
            service::access::load_policy(&model_text, &policy_csv)
                .await
                .map_err(|e| format!("{model_file} / {policy_file}: {e}"))?,
        );
        // Which register this process applies, for the operator (log), the
        // DPO (their page) and monitoring (`/readyz`): where it was read
        // and a hash of all seven files as read.
        let register_source = {
            let mut h = ring::digest::Context::new(&ring::digest::SHA256);
            for text in [
                &purposes_text,
                &sources_text,
                &categories_text,
                &demarches_text,
                &territory_text,
                &model_text,
                &policy_csv,
            ] {
                h.update(&(text.len() as u64).to_be_bytes());
                h.update(text.as_bytes());
            }
            RegisterSource {
                location: if purposes_file.ends_with("(built in)") {
                    "built in".to_string()
                } else {
                    std::fs::canonicalize(&config.policies_dir)
                        .unwrap_or_else(|_| config.policies_dir.clone())
                        .display()
                        .to_string()
                },
                sha256: hex::encode(h.finish().as_ref()),
            }
        };
        if register_source.location == "built in" {
            tracing::warn!(
                sha256 = %register_source.sha256,
                "register of processing: the built-in copy (no policies folder); set COFFRE_POLICIES_DIR to a reviewed one"
            );
        } else {
            tracing::info!(
                location = %register_source.location,
                sha256 = %register_source.sha256,
                "register of processing loaded"
            );
        }
        let audit = AuditLog::start(store.clone(), config.audit_log_name.clone());
        let audit_metrics =
            crate::audit::AuditMetrics::new().map_err(|e| format!("metrics: {e}"))?;
        audit.attach_metrics(audit_metrics.clone());
        let metrics = Arc::new(
            service::metrics::Metrics::new(&audit_metrics).map_err(|e| format!("metrics: {e}"))?,
        );
        let (vault, custodians) = match keys.into() {
            service::seal::VaultAtStart::Loaded(k) => (
                service::seal::VaultSlot::Open(Arc::new(Vault::new(
                    store.clone(),
                    k,
                    categories.clone(),
                    metrics.clone(),
                ))),
                None,
            ),
            service::seal::VaultAtStart::Sealed { manifest, keys_dir } => (
                service::seal::VaultSlot::Sealed,
                Some(service::seal::Custodians::new(manifest, keys_dir)),
            ),
            service::seal::VaultAtStart::Unavailable(reason) => {
                (service::seal::VaultSlot::Unavailable(reason), None)
            }
        };
        let vault = std::sync::RwLock::new(vault);
        let deposit_facts = service::deposit_reader::FactsReader::start(store.clone());
        let http = oidc::http_client()?;
        let provider = |kind, c: &Option<config::OidcClient>| {
            c.as_ref()
                .map(|c| {
                    oidc::IdentityProvider::new(kind, c, &config.public_url, http.clone())
                        .map(Arc::new)
                })
                .transpose()
        };
        let resident_login = provider(oidc::LoginKind::Resident, &config.resident_oidc)?;
        let agent_login = provider(oidc::LoginKind::Agent, &config.agent_oidc)?;
        Ok(Self {
            inner: Arc::new(AppInner {
                config,
                store,
                clock,
                demo,
                categories,
                register,
                sources,
                register_source,
                demarches,
                territory,
                policy,
                audit,
                deposit_facts,
                metrics,
                vault,
                custodians,
                resident_login,
                agent_login,
                partner_tokens: Default::default(),
                pseudonyms: quick_cache::sync::Cache::new(
                    service::partners::MAX_REMEMBERED_PSEUDONYMS,
                ),
            }),
        })
    }

    /// The vault, or 503 `sealed` or `keys_unavailable`.
    pub fn vault(&self) -> Result<Arc<Vault>, error::AppError> {
        match &*self.slot() {
            service::seal::VaultSlot::Open(v) => Ok(v.clone()),
            service::seal::VaultSlot::Sealed => Err(error::ErrorCode::Sealed.into()),
            service::seal::VaultSlot::Unavailable(_) => {
                Err(error::ErrorCode::KeysUnavailable.into())
            }
        }
    }

    fn slot(&self) -> std::sync::RwLockReadGuard<'_, service::seal::VaultSlot> {
        // A poisoned lock only means a panic while swapping Arcs; the slot
        // inside is still whole.
        match self.inner.vault.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub(crate) fn set_vault(&self, slot: service::seal::VaultSlot) {
        match self.inner.vault.write() {
            Ok(mut g) => *g = slot,
            Err(p) => *p.into_inner() = slot,
        }
    }

    /// Custodians have not unsealed this process (yet, or since `seal`).
    pub fn is_sealed(&self) -> bool {
        matches!(&*self.slot(), service::seal::VaultSlot::Sealed)
    }

    /// The signer of audit checkpoints (the vault's Ed25519 key, named after
    /// the log), or 503 `sealed` or `keys_unavailable`.
    pub fn checkpoint_signer(&self) -> Result<audit::note::NoteSigner, error::AppError> {
        let set = self.vault()?.keys().current();
        audit::note::NoteSigner::from_seed(&self.config.audit_log_name, set.signing_seed())
            .map_err(|e| error::AppError::internal(format!("checkpoint signer: {e}")))
    }

    /// Why the keys are unavailable, if they are (sealed is not
    /// unavailable: see [`Self::is_sealed`]).
    pub fn keys_problem(&self) -> Option<String> {
        match &*self.slot() {
            service::seal::VaultSlot::Unavailable(reason) => Some(reason.clone()),
            _ => None,
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.inner
    }
}

/// Where the register of processing (and the other policy files) came
/// from: a folder, or `built in`; and the SHA-256 of the five files as read.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RegisterSource {
    pub location: String,
    pub sha256: String,
}

/// A reviewed policy file: from the policies folder when it is there (a
/// deployment's reviewed copy), else the copy built into the binary.
fn policy_text(
    dir: &std::path::Path,
    name: &str,
    builtin: &str,
) -> Result<(String, String), String> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((text, path.display().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok((builtin.to_string(), format!("{name} (built in)")))
        }
        Err(e) => Err(format!("{}: cannot read ({})", path.display(), e.kind())),
    }
}
