//! The command line: parses arguments, loads configuration, starts tracing
//! and runs one subcommand. Every failure ends as one clear line on stderr
//! and a non-zero exit code, never a panic or a backtrace.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use std::sync::Arc;

use crate::config::{Config, LogFormat};
use crate::crypto::{
    KeyError, KeySet, LiveKeys, UnlockIdentity, generate_unlock_identity, read_unlock_identity,
};
use crate::{AppState, Clock};

#[derive(Parser, Debug)]
#[command(
    name = "coffre",
    version,
    about = "Registre des consentements et coffre-fort de données personnelles (tiers de confiance).\nConsent registry and encrypted personal-data vault run by a local authority.",
    long_about = None,
    after_help = "Configuration: built-in defaults, then coffre.toml (or --config FILE), then COFFRE_* environment variables.\nQuick start: coffre serve --demo   (then open http://127.0.0.1:8080/)"
)]
pub struct Cli {
    /// Configuration file (default: ./coffre.toml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server (applies pending migrations first).
    Serve {
        /// Seed a small fictional territory into an empty database and enable
        /// the development login. Refused unless listening on loopback.
        #[arg(long)]
        demo: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the version and exit.
    Version,
    /// Manage the key set (KEK ring, signing key, pseudonymisation key).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The audit log: verify it, print its checkpoint or verifier key.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Register partners (OAuth2 clients).
    #[command(subcommand)]
    Partner(PartnerCommand),
    /// Act on one resident (DPO operations).
    #[command(subcommand)]
    Resident(ResidentCommand),
    /// Register agents (aidants, référents, DPO, auditors, admins).
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Register structures habilitées.
    #[command(subcommand)]
    Structure(StructureCommand),
    /// Retention: delete what its retention period no longer justifies.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Seed a deterministic synthetic territory into an empty database.
    Seed {
        /// How many residents.
        #[arg(long)]
        residents: u64,
        /// The same seed gives the same territory.
        #[arg(long, default_value_t = 2026)]
        seed: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Register an agent who will log in through the agents' OpenID
    /// provider with this e-mail. The role is coffre's, never the
    /// provider's. The e-mail is kept only as a keyed digest.
    Add {
        /// The e-mail the agents' provider will vouch for.
        #[arg(long)]
        email: String,
        /// aidant, referent, dpo, auditor or admin.
        #[arg(long)]
        role: String,
        /// How to greet the agent (shown to residents as the aidant's name).
        #[arg(long)]
        name: String,
        /// The structure (id or SIRET) an aidant or référent works for.
        #[arg(long)]
        structure: Option<String>,
        /// The aidant may act under mandates but not create them.
        #[arg(long)]
        no_mandates: bool,
        /// Print `{"id"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a structure (id or SIRET) to an aidant's or référent's; they
    /// pick their current one at `PUT /api/v1/aidant/structure`.
    Join {
        #[arg(long)]
        email: String,
        #[arg(long)]
        structure: String,
    },
    /// Give an agent a new TOTP secret (their step-up for mandates) and
    /// print its `otpauth://` URI once, for an authenticator or a card.
    Totp {
        #[arg(long)]
        email: String,
    },
    /// Deactivate an agent: their sessions end and every act is refused.
    Deactivate {
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RetentionCommand {
    /// Run the purge once (`serve` also runs it every hour) and print what
    /// was deleted, as counts.
    Run {
        /// Run as of this time (seconds since the Unix epoch) instead of now.
        #[arg(long, value_name = "UNIX_SECONDS")]
        at: Option<i64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum StructureCommand {
    /// Register a structure habilitée (CCAS, France Services…).
    Add {
        /// 14 digits, valid check digit.
        #[arg(long)]
        siret: String,
        #[arg(long)]
        name: String,
        /// Comma-separated démarches the structure's aidants may take on
        /// (papiers, famille, social, travail, logement, transports, argent,
        /// justice, etranger, loisirs).
        #[arg(long)]
        demarches: String,
        /// Print `{"id"}` as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Generate a new key set in COFFRE_KEYS_DIR, encrypted to the unlock identity.
    Init {
        /// Also create the unlock identity (age-keygen format) when it does not
        /// exist. In production, provision it yourself on a secret mount.
        #[arg(long)]
        generate_unlock_identity: bool,
    },
    /// Print only public parts: the JWKS and the audit log's signed-note verifier key.
    Show,
    /// Add a KEK version and re-wrap every data key under it (online,
    /// resumable; data is not re-encrypted), then retire unused versions.
    Rotate {
        /// Data keys re-wrapped per transaction.
        #[arg(long, default_value_t = 1000)]
        batch: i64,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute the Merkle tree from the stored entries and check every
    /// checkpoint; exit 1 naming the first bad index.
    Verify {
        /// Also check against a checkpoint kept outside the database.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// Verifier key (`name+hexid+base64`) to trust instead of the local
        /// key set, e.g. for an auditor without the keys folder.
        #[arg(long, value_name = "VKEY")]
        key: Option<String>,
    },
    /// Print the latest signed checkpoint (signing a new one if the log grew).
    Checkpoint,
    /// Print the checkpoint verifier key in signed-note form.
    Key,
    /// Rebuild the index of each resident's entries (`audit_by_resident`,
    /// derived data outside the tree) from the entries themselves.
    Reindex,
}

#[derive(Subcommand, Debug)]
pub enum PartnerCommand {
    /// Register a partner and print its client id and secret, once. Its
    /// purposes are those of policies/purposes.toml that name it as recipient.
    Add {
        /// Partner id as the register's `recipients` name it, e.g. labo-mobilite.
        #[arg(long)]
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// age X25519 recipient (age1…) that extracts will be encrypted to.
        #[arg(long)]
        age_recipient: Option<String>,
        /// A JWKS file with the partner's public keys: the partner then
        /// authenticates with `private_key_jwt` and gets no client secret.
        #[arg(long, value_name = "FILE")]
        jwks_file: Option<PathBuf>,
        /// Print `{"client_id", "client_secret"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Deactivate a partner (contract ended, credentials leaked): its
    /// tokens, even unexpired ones, and its extract downloads are refused
    /// from the next request on, in every process.
    Deactivate {
        #[arg(long)]
        id: String,
    },
    /// Reactivate a deactivated partner, with the credentials it had.
    Activate {
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ResidentCommand {
    /// Erase a resident: destroy their data key and delete their data (crypto-shredding).
    Erase {
        /// The resident's internal id.
        id: String,
    },
}

/// A failure that ends the process with one line.
#[derive(Debug)]
pub struct Fatal {
    pub message: String,
    pub code: u8,
}

impl Fatal {
    fn config(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 2,
        }
    }
    fn runtime(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // A panic's message can quote data (a value being parsed, say): log
    // where it happened, never what it said.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        // Never `eprintln!` here: it panics when stderr cannot be written
        // (a full disk under a redirected log), and a panic inside the panic
        // hook aborts the process.
        let _ = writeln!(
            std::io::stderr(),
            "coffre: internal error (panic at {at}); details withheld"
        );
        tracing::error!(at, "panic");
    }));
    let cli = Cli::parse();
    if let Command::Version = cli.command {
        println!("coffre {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coffre: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            eprintln!("coffre: {}", fatal.message);
            tracing::error!(message = %fatal.message, "exiting");
            ExitCode::from(fatal.code)
        }
    }
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // On a write error (the log's disk full) tracing-subscriber would
        // report it with `eprintln!`, which panics on the same full stderr:
        // a lost log line must not take the service down.
        .log_internal_errors(false);
    // A second init (tests) is harmless: try_init reports and we ignore it.
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

pub async fn run(cli: Cli) -> Result<(), Fatal> {
    let config = Config::load(cli.config.as_deref()).map_err(|e| Fatal::config(e.to_string()))?;
    init_tracing(&config);
    match cli.command {
        Command::Serve { demo } => serve(config, demo).await,
        Command::Migrate => {
            let store = crate::storage::open(&config.database_url)
                .await
                .map_err(|e| Fatal::runtime(e.to_string()))?;
            store.close().await;
            println!("migrations applied to {}", config.database_url.redacted());
            Ok(())
        }
        Command::Version => Ok(()),
        Command::Keys(k) => keys_command(&config, k).await,
        Command::Audit(a) => audit_command(config, a).await,
        Command::Partner(PartnerCommand::Add {
            id,
            name,
            age_recipient,
            jwks_file,
            json,
        }) => {
            partner_add(
                &config,
                &id,
                &name,
                age_recipient.as_deref(),
                jwks_file.as_deref(),
                json,
            )
            .await
        }
        Command::Partner(PartnerCommand::Deactivate { id }) => {
            partner_set_active(config, &id, false).await
        }
        Command::Partner(PartnerCommand::Activate { id }) => {
            partner_set_active(config, &id, true).await
        }
        Command::Agent(AgentCommand::Add {
            email,
            role,
            name,
            structure,
            no_mandates,
            json,
        }) => {
            agent_add(
                config,
                &email,
                &role,
                &name,
                structure.as_deref(),
                !no_mandates,
                json,
            )
            .await
        }
        Command::Agent(AgentCommand::Join { email, structure }) => {
            agent_join(config, &email, &structure).await
        }
        Command::Agent(AgentCommand::Totp { email }) => agent_totp(config, &email).await,
        Command::Agent(AgentCommand::Deactivate { email }) => {
            agent_deactivate(config, &email).await
        }
        Command::Structure(StructureCommand::Add {
            siret,
            name,
            demarches,
            json,
        }) => structure_add(&config, &siret, &name, &demarches, json).await,
        Command::Seed { residents, seed } => {
            let store = open_store(&config).await?;
            let keys = load_keys(&config)?;
            let clock = Clock::system();
            let state = build_state(config, store.clone(), clock.clone(), false, Ok(keys)).await?;
            let started = std::time::Instant::now();
            let report = crate::seed::seed(&state, residents, seed, clock.now(), |done, total| {
                // A progress bar on stderr, one line redrawn.
                let width = 40u64;
                let filled = (done * width).checked_div(total).unwrap_or(width);
                let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
                eprint!(
                    "\r[{}{}] {done}/{total} residents, {rate:.0}/s",
                    "#".repeat(filled as usize),
                    " ".repeat((width - filled) as usize)
                );
            })
            .await
            .map_err(|e| Fatal::runtime(format!("seed: {e}")))?;
            eprintln!();
            store.close().await;
            println!(
                "{}",
                serde_json::to_string(&report).map_err(|e| Fatal::runtime(e.to_string()))?
            );
            Ok(())
        }
        Command::Retention(RetentionCommand::Run { at }) => {
            let store = open_store(&config).await?;
            let keys = load_keys(&config)?;
            let clock = Clock::system();
            let state = build_state(config, store.clone(), clock.clone(), false, Ok(keys)).await?;
            let now = at.unwrap_or_else(|| clock.now());
            let report = crate::service::rights::run_retention(&state, now)
                .await
                .map_err(|e| Fatal::runtime(format!("retention: {e}")))?;
            store.close().await;
            println!(
                "{}",
                serde_json::to_string(&report).map_err(|e| Fatal::runtime(e.to_string()))?
            );
            Ok(())
        }
        Command::Resident(ResidentCommand::Erase { id }) => {
            let store = open_store(&config).await?;
            let keys = load_keys(&config)?;
            let state =
                build_state(config, store.clone(), Clock::system(), false, Ok(keys)).await?;
            record_operator_act(&state, "erasure", Some(&id)).await?;
            // The recipients are told (art. 19), in the erasure's transaction.
            let erased = crate::service::rights::apply_with_notices(
                &state,
                &id,
                crate::service::rights::Change::Erasure,
                state.clock.now(),
            )
            .await
            .map_err(|e| Fatal::runtime(e.to_string()))?
            .erased;
            store.close().await;
            if erased {
                println!("resident {id} erased: data key destroyed, records deleted");
                Ok(())
            } else {
                Err(Fatal::runtime(format!("no active resident {id}")))
            }
        }
    }
}

async fn agent_add(
    config: Config,
    email: &str,
    role: &str,
    name: &str,
    structure: Option<&str>,
    can_create_mandates: bool,
    json: bool,
) -> Result<(), Fatal> {
    use crate::domain::Role;
    let email = email.trim();
    let valid_email = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'))
        && !email.chars().any(char::is_whitespace);
    if !valid_email {
        return Err(Fatal::config("--email: not an e-mail address"));
    }
    let role = Role::parse(role)
        .filter(|r| r.is_agent())
        .ok_or_else(|| Fatal::config("--role: aidant, referent, dpo, auditor or admin"))?;
    if name.trim().is_empty() || name.len() > 100 {
        return Err(Fatal::config("--name: 1 to 100 characters"));
    }
    let store = open_store(&config).await?;
    let structure_id = match structure {
        None if matches!(role, Role::Aidant | Role::Referent) => {
            return Err(Fatal::config(
                "--structure: required for an aidant or a référent",
            ));
        }
        None => None,
        Some(s) => {
            let found = store
                .list_structures()
                .await
                .map_err(|e| Fatal::runtime(e.to_string()))?
                .into_iter()
                .find(|r| r.id == s || r.siret == s)
                .ok_or_else(|| Fatal::config(format!("--structure: no structure `{s}`")))?;
            Some(found.id)
        }
    };
    let keys = load_keys(&config)?;
    let state = build_state(config, store.clone(), Clock::system(), false, Ok(keys)).await?;
    let digest = crate::service::login::agent_email_digest(&state, email)
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    let id = uuid::Uuid::new_v4().to_string();
    record_operator_act(&state, "agent.add", None).await?;
    store
        .insert_agent(
            &crate::storage::AgentRow {
                id: id.clone(),
                role: role.as_str().to_string(),
                display_name: name.trim().to_string(),
                structure_id,
                active: true,
                can_create_mandates,
            },
            Some(&digest),
            state.clock.now(),
        )
        .await
        .map_err(|e| match e {
            crate::storage::StorageError::Conflict(_) => {
                Fatal::runtime("an agent with this e-mail already exists")
            }
            other => Fatal::runtime(other.to_string()),
        })?;
    store.close().await;
    if json {
        println!("{}", serde_json::json!({"id": id, "role": role.as_str()}));
    } else {
        println!("agent {id} registered as {}", role.as_str());
    }
    Ok(())
}

/// Reads and checks a partner's JWKS: public asymmetric keys only, each
/// usable for signature verification.
fn read_client_jwks(path: &std::path::Path) -> Result<String, Fatal> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Fatal::config(format!("--jwks-file {}: {e}", path.display())))?;
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text)
        .map_err(|e| Fatal::config(format!("--jwks-file {}: not a JWKS ({e})", path.display())))?;
    if set.keys.is_empty() {
        return Err(Fatal::config("--jwks-file: no key in the set"));
    }
    for key in &set.keys {
        let decoding = jsonwebtoken::DecodingKey::from_jwk(key)
            .map_err(|_| Fatal::config("--jwks-file: a key cannot verify signatures"))?;
        if decoding.family() == jsonwebtoken::AlgorithmFamily::Hmac {
            return Err(Fatal::config(
                "--jwks-file: symmetric (oct) keys are refused; register public keys",
            ));
        }
    }
    let raw: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Fatal::config(format!("--jwks-file: {e}")))?;
    for key in raw["keys"].as_array().into_iter().flatten() {
        if ["d", "p", "q", "dp", "dq", "qi"]
            .iter()
            .any(|f| key.get(f).is_some())
        {
            return Err(Fatal::config(
                "--jwks-file: the file holds a private key; register the public part only",
            ));
        }
    }
    serde_json::to_string(&set).map_err(|e| Fatal::runtime(e.to_string()))
}

/// The agent with this e-mail, with a state ready to act for the CLI.
async fn agent_by_email(
    config: Config,
    email: &str,
) -> Result<(AppState, crate::storage::AgentRow), Fatal> {
    let store = open_store(&config).await?;
    let keys = load_keys(&config)?;
    let state = build_state(config, store, Clock::system(), false, Ok(keys)).await?;
    let digest = crate::service::login::agent_email_digest(&state, email)
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    let agent = state
        .store
        .find_agent_by_email_digest(&digest)
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))?
        .ok_or_else(|| Fatal::runtime("no agent with this e-mail"))?;
    Ok((state, agent))
}

async fn agent_join(config: Config, email: &str, structure: &str) -> Result<(), Fatal> {
    let (state, agent) = agent_by_email(config, email).await?;
    let found = state
        .store
        .list_structures()
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))?
        .into_iter()
        .find(|s| s.id == structure || s.siret == structure)
        .ok_or_else(|| Fatal::config(format!("--structure: no structure `{structure}`")))?;
    record_operator_act(&state, "agent.join", None).await?;
    state
        .store
        .add_agent_structure(&agent.id, &found.id)
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    state.store.close().await;
    println!("agent {} now also works for {}", agent.id, found.id);
    Ok(())
}

async fn agent_totp(config: Config, email: &str) -> Result<(), Fatal> {
    let (state, agent) = agent_by_email(config, email).await?;
    record_operator_act(&state, "agent.totp", None).await?;
    // The TOTP key is wrapped under the current KEK, which must be known
    // to the database (as `serve` does at start).
    state
        .vault()
        .map_err(|e| Fatal::runtime(e.to_string()))?
        .register_kek_versions(state.clock.now())
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    let secret = crate::service::mandates::enroll_totp(&state, &agent.id, state.clock.now())
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    state.store.close().await;
    println!(
        "{}",
        crate::service::mandates::otpauth_uri("coffre", &agent.display_name, &secret)
    );
    Ok(())
}

async fn agent_deactivate(config: Config, email: &str) -> Result<(), Fatal> {
    let (state, agent) = agent_by_email(config, email).await?;
    record_operator_act(&state, "agent.deactivate", None).await?;
    state
        .store
        .set_agent_active(&agent.id, false, state.clock.now())
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    state.store.close().await;
    println!("agent {} deactivated; their sessions ended", agent.id);
    Ok(())
}

async fn structure_add(
    config: &Config,
    siret: &str,
    name: &str,
    demarches: &str,
    json: bool,
) -> Result<(), Fatal> {
    let siret = crate::domain::Siret::parse(siret.trim())
        .map_err(|m| Fatal::config(format!("--siret: {m}")))?;
    if name.trim().is_empty() || name.len() > 200 {
        return Err(Fatal::config("--name: 1 to 200 characters"));
    }
    let ds = crate::domain::mandate::parse_demarches(demarches.split(','))
        .map_err(|m| Fatal::config(format!("--demarches: {m}")))?;
    if ds.is_empty() {
        return Err(Fatal::config("--demarches: at least one"));
    }
    let store = open_store(config).await?;
    let clock = Clock::system();
    let audit = crate::audit::AuditLog::start(store.clone(), config.audit_log_name.clone());
    audit
        .record(operator_record("structure.add", None, clock.now()))
        .await
        .map_err(|e| Fatal::runtime(format!("refusing to act unaudited: {e}")))?;
    let id = uuid::Uuid::new_v4().to_string();
    store
        .insert_structure(
            &crate::storage::StructureRow {
                id: id.clone(),
                siret: siret.as_str().to_string(),
                name: name.trim().to_string(),
                allowed_demarches: ds.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(","),
                active: true,
            },
            clock.now(),
        )
        .await
        .map_err(|e| match e {
            crate::storage::StorageError::Conflict(_) => {
                Fatal::runtime("a structure with this SIRET already exists")
            }
            other => Fatal::runtime(other.to_string()),
        })?;
    store.close().await;
    if json {
        println!("{}", serde_json::json!({"id": id}));
    } else {
        println!("structure {id} registered");
    }
    Ok(())
}

async fn partner_add(
    config: &Config,
    id: &str,
    name: &str,
    age_recipient: Option<&str>,
    jwks_file: Option<&std::path::Path>,
    json: bool,
) -> Result<(), Fatal> {
    use std::str::FromStr;
    let client_jwks = match jwks_file {
        None => None,
        Some(path) => Some(read_client_jwks(path)?),
    };
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(Fatal::config(
            "--id: lower-case letters, digits and '-' only",
        ));
    }
    if name.trim().is_empty() || name.len() > 200 {
        return Err(Fatal::config("--name: 1 to 200 characters"));
    }
    if let Some(r) = age_recipient {
        age::x25519::Recipient::from_str(r)
            .map_err(|_| Fatal::config("--age-recipient: not an age X25519 recipient (age1…)"))?;
    }
    let mut suffix = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut suffix)
        .map_err(|_| Fatal::runtime("system random generator failed"))?;
    let client_secret = crate::crypto::random_token()
        .map_err(|_| Fatal::runtime("system random generator failed"))?;
    let client_id = format!("{id}-{}", hex::encode(suffix));
    let store = open_store(config).await?;
    let row = crate::storage::PartnerRow {
        id: id.to_string(),
        name: name.trim().to_string(),
        client_id: client_id.clone(),
        // With keys, no secret works: no digest equals "!".
        client_secret_hash: if client_jwks.is_some() {
            "!".to_string()
        } else {
            crate::crypto::sha256_hex(&client_secret)
        },
        age_recipient: age_recipient.map(str::to_string),
        active: true,
        client_jwks: client_jwks.clone(),
    };
    // Refused before it is recorded: the log keeps acts, not failed tries
    // (a concurrent add still fails on the key, below).
    let exists = store
        .find_partner(id)
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))?
        .is_some();
    if exists {
        store.close().await;
        return Err(Fatal::runtime(format!("partner `{id}` already exists")));
    }
    let clock = Clock::system();
    let audit = crate::audit::AuditLog::start(store.clone(), config.audit_log_name.clone());
    audit
        .record(partner_act("partner.add", id, clock.now()))
        .await
        .map_err(|e| Fatal::runtime(format!("refusing to act unaudited: {e}")))?;
    store
        .insert_partner(&row, clock.now())
        .await
        .map_err(|e| match e {
            crate::storage::StorageError::Conflict(_) => {
                Fatal::runtime(format!("partner `{id}` already exists"))
            }
            other => Fatal::runtime(other.to_string()),
        })?;
    store.close().await;
    if client_jwks.is_some() {
        if json {
            println!("{}", serde_json::json!({"client_id": client_id}));
        } else {
            println!("partner {id} registered for private_key_jwt (no secret).");
            println!("client_id={client_id}");
        }
    } else if json {
        println!(
            "{}",
            serde_json::json!({"client_id": client_id, "client_secret": client_secret})
        );
    } else {
        println!(
            "partner {id} registered. Keep the secret now: it is not stored and cannot be shown again."
        );
        println!("client_id={client_id}");
        println!("client_secret={client_secret}");
    }
    Ok(())
}

async fn partner_set_active(config: Config, id: &str, active: bool) -> Result<(), Fatal> {
    let store = open_store(&config).await?;
    let result = partner_set_active_in(&config, &store, id, active).await;
    store.close().await;
    result?;
    if active {
        println!("partner {id} activated");
    } else {
        println!("partner {id} deactivated; its tokens and downloads are refused from now on");
    }
    Ok(())
}

async fn partner_set_active_in(
    config: &Config,
    store: &crate::storage::DynStore,
    id: &str,
    active: bool,
) -> Result<(), Fatal> {
    let known = store
        .find_partner(id)
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))?
        .is_some();
    if !known {
        return Err(Fatal::runtime(format!("no partner `{id}`")));
    }
    let action = if active {
        "partner.activate"
    } else {
        "partner.deactivate"
    };
    let audit = crate::audit::AuditLog::start(store.clone(), config.audit_log_name.clone());
    audit
        .record(partner_act(action, id, Clock::system().now()))
        .await
        .map_err(|e| Fatal::runtime(format!("refusing to act unaudited: {e}")))?;
    let changed = store
        .set_partner_active(id, active)
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    if !changed {
        return Err(Fatal::runtime(format!("no partner `{id}`")));
    }
    Ok(())
}

/// An operator's act from the command line. The CLI does not know who runs
/// it, so the actor is `cli` (the host's own logs say which account ran it).
fn operator_record(action: &str, resident: Option<&str>, now: i64) -> crate::audit::AuditRecord {
    crate::audit::AuditRecord {
        timestamp: now,
        actor_id: "cli".into(),
        actor_role: "admin".into(),
        action: action.into(),
        resident_id: resident.map(str::to_string),
        allowed: true,
        reason: "operator".into(),
        ..Default::default()
    }
}

/// An operator's act on a partner, which the entry names as its resource
/// (`partner:{id}`, as an extract is `extract:{id}`): a partner id is not
/// personal data.
fn partner_act(action: &str, partner_id: &str, now: i64) -> crate::audit::AuditRecord {
    crate::audit::AuditRecord {
        category: Some(format!("partner:{partner_id}")),
        ..operator_record(action, None, now)
    }
}

async fn record_operator_act(
    state: &AppState,
    action: &str,
    resident: Option<&str>,
) -> Result<u64, Fatal> {
    state
        .audit
        .record(operator_record(action, resident, state.clock.now()))
        .await
        .map_err(|e| Fatal::runtime(format!("refusing to act unaudited: {e}")))
}

async fn open_store(config: &Config) -> Result<crate::storage::DynStore, Fatal> {
    crate::storage::open(&config.database_url)
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))
}

async fn build_state(
    config: Config,
    store: crate::storage::DynStore,
    clock: Clock,
    demo: bool,
    keys: Result<Arc<LiveKeys>, String>,
) -> Result<AppState, Fatal> {
    AppState::new(config, store, clock, demo, keys)
        .await
        .map_err(Fatal::config)
}

fn load_keys(config: &Config) -> Result<Arc<LiveKeys>, Fatal> {
    LiveKeys::load(config.keys_dir.clone(), config.unlock_identity_file.clone())
        .map(Arc::new)
        .map_err(|e| Fatal::runtime(format!("keys: {e}")))
}

fn read_unlock(config: &Config) -> Result<UnlockIdentity, Fatal> {
    read_unlock_identity(&config.unlock_identity_file)
        .map_err(|e| Fatal::runtime(format!("unlock identity: {e}")))
}

/// Makes sure the keys folder exists with owner-only access.
fn private_dir(dir: &std::path::Path) -> Result<(), Fatal> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                Fatal::runtime(format!("cannot create {} ({})", dir.display(), e.kind()))
            })?;
    } else if !KeySet::is_initialised(dir) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            Fatal::runtime(format!("cannot restrict {} ({})", dir.display(), e.kind()))
        })?;
    }
    Ok(())
}

async fn keys_command(config: &Config, command: KeysCommand) -> Result<(), Fatal> {
    match command {
        KeysCommand::Init {
            generate_unlock_identity: generate,
        } => {
            private_dir(&config.keys_dir)?;
            let unlock = if generate && !config.unlock_identity_file.exists() {
                let id = generate_unlock_identity(&config.unlock_identity_file)
                    .map_err(|e| Fatal::runtime(format!("unlock identity: {e}")))?;
                println!(
                    "created unlock identity {} (public key {}); move it to a secret mount and keep a copy offline",
                    config.unlock_identity_file.display(),
                    id.recipient()
                );
                id
            } else if !config.unlock_identity_file.exists() {
                return Err(Fatal::runtime(format!(
                    "no unlock identity at {}: create one with `age-keygen -o {}` (or pass --generate-unlock-identity)",
                    config.unlock_identity_file.display(),
                    config.unlock_identity_file.display()
                )));
            } else {
                read_unlock(config)?
            };
            let set = KeySet::init(&config.keys_dir, &unlock)
                .map_err(|e| Fatal::runtime(format!("keys init: {e}")))?;
            println!(
                "key set created in {} (KEK version {}); public parts: coffre keys show",
                config.keys_dir.display(),
                set.current_kek_version()
            );
            Ok(())
        }
        KeysCommand::Show => {
            let keys = load_keys(config)?;
            let set = keys.current();
            let jwks = crate::crypto::jwks(&set);
            println!(
                "{}",
                serde_json::to_string_pretty(&jwks).unwrap_or_default()
            );
            let signer = crate::audit::note::NoteSigner::from_seed(
                &config.audit_log_name,
                set.signing_seed(),
            )
            .map_err(|e| Fatal::runtime(format!("signing key: {e}")))?;
            println!(
                "audit log verifier key (signed note): {}",
                signer.verifier_key()
            );
            println!(
                "KEK versions: {:?} (current {})",
                set.kek_versions(),
                set.current_kek_version()
            );
            Ok(())
        }
        KeysCommand::Rotate { batch } => {
            if batch < 1 {
                return Err(Fatal::config("--batch must be at least 1"));
            }
            let unlock = read_unlock(config)?;
            let mut set = KeySet::load(&config.keys_dir, &unlock)
                .map_err(|e| Fatal::runtime(format!("keys: {e}")))?;
            let store = open_store(config).await?;
            let clock = Clock::system();
            let audit = crate::audit::AuditLog::start(store.clone(), config.audit_log_name.clone());
            audit
                .record(operator_record("keys.rotate", None, clock.now()))
                .await
                .map_err(|e| Fatal::runtime(format!("refusing to rotate unaudited: {e}")))?;
            let report = crate::service::vault::rotate(
                &store,
                &mut set,
                &config.keys_dir,
                &unlock,
                batch,
                clock.now(),
                |done, total| {
                    if total > 0 {
                        println!("re-wrapped {done} / {total} data keys");
                    }
                },
            )
            .await
            .map_err(|e| Fatal::runtime(format!("rotation stopped (run again to resume): {e}")))?;
            store.close().await;
            println!(
                "rotation complete: current KEK version {}{}; {} data keys re-wrapped; retired {:?}",
                report.target_version,
                if report.added_version {
                    " (new)"
                } else {
                    " (resumed)"
                },
                report.rewrapped,
                report.retired
            );
            Ok(())
        }
    }
}

async fn audit_command(config: Config, command: AuditCommand) -> Result<(), Fatal> {
    match command {
        AuditCommand::Verify { checkpoint, key } => {
            let store = open_store(&config).await?;
            let verifier_key = match key {
                Some(k) => k,
                None => {
                    let keys = load_keys(&config)?;
                    crate::audit::note::NoteSigner::from_seed(
                        &config.audit_log_name,
                        keys.current().signing_seed(),
                    )
                    .map_err(|e| Fatal::runtime(format!("signing key: {e}")))?
                    .verifier_key()
                }
            };
            let verifier = crate::audit::note::NoteVerifier::parse(&verifier_key)
                .map_err(|e| Fatal::config(format!("--key: {e}")))?;
            let external = match checkpoint {
                Some(path) => Some(std::fs::read_to_string(&path).map_err(|e| {
                    Fatal::config(format!("cannot read {} ({})", path.display(), e.kind()))
                })?),
                None => None,
            };
            let outcome = crate::audit::verify::verify(
                &store,
                &verifier,
                &config.audit_log_name,
                external.as_deref(),
            )
            .await;
            store.close().await;
            match outcome {
                Ok(r) => {
                    use base64::Engine;
                    if external.is_none() {
                        println!(
                            "note: without --checkpoint FILE (a checkpoint kept outside this database), a log cut after its last stored checkpoint cannot be detected"
                        );
                    }
                    println!(
                        "audit log OK: {} entries, root {}, {} signed checkpoints verified and consistent",
                        r.size,
                        base64::engine::general_purpose::STANDARD.encode(r.root),
                        r.checkpoints
                    );
                    Ok(())
                }
                Err(e) => Err(Fatal::runtime(format!(
                    "audit log verification FAILED: {e}"
                ))),
            }
        }
        AuditCommand::Reindex => {
            let store = open_store(&config).await?;
            let outcome = async {
                store.audit_reset_resident_index().await?;
                let mut covered = 0u64;
                loop {
                    match store.audit_index_residents(100_000).await? {
                        0 => break,
                        n => covered += n,
                    }
                }
                while crate::audit::log::index_recipients(&store, 100_000).await? > 0 {}
                Ok(covered)
            }
            .await;
            store.close().await;
            let covered = outcome.map_err(|e: crate::storage::StorageError| {
                Fatal::runtime(format!("reindexing the audit log: {e}"))
            })?;
            println!(
                "audit log: the resident and recipients indexes cover {covered} entries again"
            );
            Ok(())
        }
        AuditCommand::Checkpoint => {
            let store = open_store(&config).await?;
            let keys = load_keys(&config)?;
            let state =
                build_state(config, store.clone(), Clock::system(), false, Ok(keys)).await?;
            let signer = state
                .checkpoint_signer()
                .map_err(|e| Fatal::runtime(e.to_string()))?;
            let row = state
                .audit
                .checkpoint(&signer, state.clock.now())
                .await
                .map_err(|e| Fatal::runtime(e.to_string()))?;
            store.close().await;
            print!("{}", row.note);
            Ok(())
        }
        AuditCommand::Key => {
            let keys = load_keys(&config)?;
            let signer = crate::audit::note::NoteSigner::from_seed(
                &config.audit_log_name,
                keys.current().signing_seed(),
            )
            .map_err(|e| Fatal::runtime(format!("signing key: {e}")))?;
            println!("{}", signer.verifier_key());
            Ok(())
        }
    }
}

/// At `serve`: loads the key set, initialising it first in demo mode.
/// Insecure permissions stop the start; any other failure leaves the
/// service up but failing closed (readyz 503, `keys_unavailable`).
fn prepare_keys(config: &Config, demo: bool) -> Result<Result<Arc<LiveKeys>, String>, Fatal> {
    let dir = &config.keys_dir;
    if demo && !KeySet::is_initialised(dir) {
        private_dir(dir)?;
        let unlock = if config.unlock_identity_file.exists() {
            read_unlock(config)?
        } else {
            let id = generate_unlock_identity(&config.unlock_identity_file)
                .map_err(|e| Fatal::runtime(format!("unlock identity: {e}")))?;
            tracing::warn!(
                path = %config.unlock_identity_file.display(),
                "DEMO: generated an unlock identity BESIDE the keys it protects. Never do this in production: the unlock identity belongs on a separate secret mount."
            );
            id
        };
        KeySet::init(dir, &unlock).map_err(|e| Fatal::runtime(format!("keys init: {e}")))?;
        tracing::warn!(dir = %dir.display(), "DEMO: key set generated");
    }
    if !demo && config.unlock_identity_file.starts_with(dir) {
        tracing::warn!(
            path = %config.unlock_identity_file.display(),
            "the unlock identity is inside the keys folder: whoever copies the folder can decrypt every key. Set COFFRE_UNLOCK_IDENTITY_FILE to a separate secret mount."
        );
    }
    match LiveKeys::load(dir.clone(), config.unlock_identity_file.clone()) {
        Ok(keys) => Ok(Ok(Arc::new(keys))),
        Err(e @ KeyError::InsecurePermissions { .. }) => Err(Fatal::config(format!("keys: {e}"))),
        Err(e) => {
            let reason = format!("keys unavailable: {e}");
            tracing::error!(
                "{reason}; serving with every data route closed (readyz 503) until fixed — see `coffre keys init`"
            );
            Ok(Err(reason))
        }
    }
}

async fn serve(config: Config, demo: bool) -> Result<(), Fatal> {
    if demo && !config.listen.ip().is_loopback() {
        return Err(Fatal::config(format!(
            "--demo is refused on {}: demo mode enables a password-less login and listens on loopback only (use 127.0.0.1 or ::1)",
            config.listen
        )));
    }
    let started = std::time::Instant::now();
    let clock = Clock::system();
    let keys = prepare_keys(&config, demo)?;
    if demo {
        refuse_demo_public_url(&config)?;
    }
    let store = open_store(&config).await?;
    if demo {
        refuse_foreign_database_in_demo(&store).await?;
    }
    let listen = config.listen;
    let drain = Duration::from_secs(config.shutdown_timeout_secs);
    let database = config.database_url.redacted();
    let state = build_state(config, store.clone(), clock, demo, keys).await?;
    if let Ok(vault) = state.vault() {
        vault
            .register_kek_versions(state.clock.now())
            .await
            .map_err(|e| Fatal::runtime(e.to_string()))?;
    }
    if demo {
        let seeded = crate::demo::seed_if_empty(&state)
            .await
            .map_err(|e| Fatal::runtime(format!("demo seeding failed: {e}")))?;
        if seeded {
            let now = state.clock.now();
            let report = crate::seed::seed_territory(
                &state,
                crate::demo::TERRITORY_RESIDENTS,
                2026,
                now,
                |_, _| {},
            )
            .await
            .map_err(|e| Fatal::runtime(format!("demo seeding failed: {e}")))?;
            crate::demo::request_pending_extract(&state, now)
                .await
                .map_err(|e| Fatal::runtime(format!("demo seeding failed: {e}")))?;
            tracing::info!(
                residents = report.residents,
                mandates = report.mandates,
                "demo territory seeded"
            );
        }
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Fatal::runtime(format!("cannot listen on {listen} ({e})")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    let shutdown = crate::shutdown_signal()
        .map_err(|e| Fatal::runtime(format!("cannot install the SIGTERM handler ({e})")))?;
    tracing::info!(
        address = %local,
        database = %database,
        startup_ms = started.elapsed().as_millis() as u64,
        demo,
        "listening"
    );
    if demo {
        print_demo_banner(&local);
    }
    spawn_session_purge(state.clone());
    spawn_checkpointer(state.clone());
    let router = crate::app(state);
    let result = crate::serve(listener, router, shutdown, drain).await;
    store.close().await;
    result.map_err(|e| Fatal::runtime(format!("server error: {e}")))
}

/// Demo mode's password-less logins must only ever reach a browser on this
/// machine: a public URL elsewhere (or behind a TLS front) means a real
/// deployment.
fn refuse_demo_public_url(config: &Config) -> Result<(), Fatal> {
    let loopback = match config.public_url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if loopback {
        return Ok(());
    }
    Err(Fatal::config(format!(
        "--demo is refused with the public URL {}: demo mode enables password-less logins and serves this machine only (use http://127.0.0.1:PORT)",
        config.public_url
    )))
}

/// Demo mode on a database it did not seed would open that database's
/// DPO and auditor views to anyone: refused.
async fn refuse_foreign_database_in_demo(store: &crate::storage::DynStore) -> Result<(), Fatal> {
    let runtime = |e: crate::storage::StorageError| Fatal::runtime(e.to_string());
    if store
        .has_instance_mark(crate::demo::DEMO_MARK)
        .await
        .map_err(runtime)?
        || store.is_blank().await.map_err(runtime)?
    {
        return Ok(());
    }
    Err(Fatal::config(
        "--demo is refused on this database: it was not seeded by the demo (demo mode enables password-less logins). Use an empty database, or serve without --demo",
    ))
}

/// Deletes expired sessions every ten minutes (any process may do it; the
/// delete is idempotent, so several processes sharing PostgreSQL are fine).
fn spawn_session_purge(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        let mut round: u64 = 0;
        loop {
            tick.tick().await;
            round += 1;
            // The whole retention job at start and then every hour;
            // expired sessions every ten minutes.
            if round % 6 == 1 {
                if let Err(e) =
                    crate::service::rights::run_retention(&state, state.clock.now()).await
                {
                    tracing::warn!(error = %e, "retention run failed");
                }
                continue;
            }
            match state
                .store
                .purge_expired_sessions(
                    state.clock.now(),
                    state.clock.now() - crate::service::sessions::SESSION_IDLE_SECS,
                )
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::debug!(n, "expired sessions purged"),
                Err(e) => tracing::warn!(error = %e, "session purge failed"),
            }
        }
    });
}

/// Signs a new checkpoint each second the log grew (any process may; the
/// same tree size always yields the same signed note, Ed25519 being
/// deterministic, so concurrent processes agree).
fn spawn_checkpointer(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let Ok(signer) = state.checkpoint_signer() else {
                continue;
            };
            if let Err(e) = state.audit.checkpoint(&signer, state.clock.now()).await {
                tracing::warn!(error = %e, "checkpoint failed");
            }
        }
    });
}

fn print_demo_banner(local: &std::net::SocketAddr) {
    let mut out = String::new();
    out.push_str("\n  ================================================================\n");
    out.push_str("  MODE DÉMO / DEMO MODE — fictional people, password-less login.\n");
    out.push_str("  Never expose this instance: it listens on loopback only.\n");
    out.push_str("  ================================================================\n");
    out.push_str(&format!("  Open      http://{local}/\n"));
    out.push_str(&format!("  Personas  curl http://{local}/dev/personas\n"));
    out.push_str(&format!(
        "  Log in    curl -i -d persona={} http://{local}/dev/login\n",
        crate::demo::RESIDENTS[0].id
    ));
    out.push_str(&format!("  API       http://{local}/api/openapi.json\n"));
    out.push_str(&format!(
        "  Aidants' TOTP (any authenticator app): {}\n",
        crate::service::mandates::otpauth_uri(
            "coffre-demo",
            "aidants",
            crate::demo::DEMO_TOTP_SECRET
        )
    ));
    out.push_str("  Demo partners (OAuth2 client credentials):\n");
    for p in crate::demo::PARTNERS {
        out.push_str(&format!(
            "    {:<16} client_id={} client_secret={}\n",
            p.id, p.client_id, p.client_secret
        ));
        out.push_str(&format!(
            "    {:<16} age identity (decrypts its extracts): {}\n",
            "", p.age_identity
        ));
    }
    // The banner is a courtesy: a stdout that cannot be written (closed,
    // or on a full disk) must not stop the server.
    let _ = writeln!(std::io::stdout(), "{out}");
}
