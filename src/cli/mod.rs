//! The command line: parses arguments, loads configuration, starts tracing
//! and runs one subcommand. Every failure ends as one clear line on stderr
//! and a non-zero exit code, never a panic or a backtrace.
//!
//! `mod.rs` holds the clap `Cli` and `Command`, `main`, the dispatch and the
//! helpers the families share (opening the store, loading keys, building
//! the state, recording an operator's act). One file per command family:
//! `serve` (the server, its background jobs, signals and the demo banner),
//! `keys`, `audit`, `partners`, `residents`, `agents` (agents and
//! structures), `retention` and `seed`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use std::sync::Arc;

use crate::config::{Config, LogFormat};
use crate::crypto::LiveKeys;
use crate::{AppState, Clock};

mod admin;
mod agents;
mod audit;
mod backup;
mod import;
mod keys;
mod partners;
mod progress;
mod residents;
mod retention;
mod seed;
mod serve;
mod sources;
mod stats;

pub use agents::{AgentCommand, StructureCommand};
pub use audit::AuditCommand;
pub use keys::KeysCommand;
pub use partners::PartnerCommand;
pub use residents::ResidentCommand;
pub use retention::RetentionCommand;
pub use sources::SourceCommand;
pub use stats::StatsCommand;

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
pub enum OutboxCommand {
    /// Counts by state.
    Status {
        #[arg(long)]
        json: bool,
    },
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
    /// Client credentials for the data sources of policies/sources.toml.
    #[command(subcommand)]
    Source(SourceCommand),
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
    /// Open statistics: publish a month's release (CSV, data package, its
    /// SHA-256 in the audit log, its ε charged to the public ledger).
    #[command(subcommand)]
    Stats(StatsCommand),
    /// Deposit a file as one of the agglomération's own sources: NDJSON
    /// (one deposit a line, as the deposit stream takes) or CSV with a
    /// header (columns `id`, `category`, `observed_at`, `handle` or
    /// `pivot.<member>`, then the category's fields); prints one answer a
    /// line and a summary; safe to rerun.
    Import {
        /// The source's id in policies/sources.toml, e.g. regie-eau.
        #[arg(long)]
        source: String,
        /// The file.
        #[arg(long, value_name = "FILE")]
        file: std::path::PathBuf,
        /// The file's format; by default CSV when its name ends in `.csv`,
        /// NDJSON otherwise.
        #[arg(long, value_enum)]
        format: Option<import::ImportFormat>,
    },
    /// Copy the database (SQLite, while serving), the key files, the
    /// policies and the latest checkpoint into a new folder, with a
    /// manifest of SHA-256 hashes. PostgreSQL: everything but the database
    /// (use pg_dump).
    Backup {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Restore a backup into the configured (empty) locations; refused if
    /// any file differs from the manifest.
    Restore {
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
    },
    /// A custodian submits their share to the running server (over its
    /// local admin socket): decrypted here with their own age identity.
    Unseal {
        /// Their share file (`NAME.share.age`, from `keys init --custodians`).
        #[arg(long, value_name = "FILE")]
        share: PathBuf,
        /// Their age identity (age-keygen format, mode 0600).
        #[arg(long, value_name = "FILE")]
        identity: PathBuf,
    },
    /// Residents' notices (the outbox): how many are pending, sent,
    /// failed, or waiting for a postal letter.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Seal the running server again: its keys are dropped from memory and
    /// every data route answers 503 `sealed` until the custodians unseal it.
    Seal,
    /// Whether the running server is sealed, and how many shares it has.
    SealStatus,
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
        Command::Serve { demo } => serve::serve(config, demo).await,
        Command::Migrate => {
            let store = crate::storage::open(&config.database_url)
                .await
                .map_err(|e| Fatal::runtime(e.to_string()))?;
            store.close().await;
            println!("migrations applied to {}", config.database_url.redacted());
            Ok(())
        }
        Command::Version => Ok(()),
        Command::Keys(k) => keys::keys_command(&config, k).await,
        Command::Unseal { share, identity } => admin::unseal(&config, &share, &identity).await,
        Command::Seal => admin::seal(&config).await,
        Command::Outbox(OutboxCommand::Status { json }) => {
            let store = open_store(&config).await?;
            let counts = store.outbox_counts().await;
            store.close().await;
            let c = counts.map_err(|e| Fatal::runtime(e.to_string()))?;
            if json {
                println!("{}", serde_json::to_string(&c).unwrap_or_default());
            } else {
                println!(
                    "outbox: {} pending, {} sent, {} failed, {} waiting for a letter, {} held (an extract being built), {} turned off by the resident{}",
                    c.pending,
                    c.sent,
                    c.failed,
                    c.post,
                    c.held,
                    c.muted,
                    if config.smtp_url.is_none() {
                        " (no smtp_url: e-mail notices stay queued)"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
        Command::SealStatus => admin::status(&config).await,
        Command::Backup { out } => backup::backup(&config, &out).await,
        Command::Restore { from } => backup::restore(&config, &from).await,
        Command::Audit(a) => audit::audit_command(config, a).await,
        Command::Partner(PartnerCommand::Add {
            id,
            name,
            age_recipient,
            jwks_file,
            json,
        }) => {
            partners::partner_add(
                &config,
                &id,
                &name,
                age_recipient.as_deref(),
                jwks_file.as_deref(),
                json,
            )
            .await
        }
        Command::Source(command) => sources::run(config, command).await,
        Command::Partner(PartnerCommand::Deactivate { id }) => {
            partners::partner_set_active(config, &id, false).await
        }
        Command::Partner(PartnerCommand::Activate { id }) => {
            partners::partner_set_active(config, &id, true).await
        }
        Command::Agent(AgentCommand::Add {
            email,
            role,
            name,
            structure,
            no_mandates,
            json,
        }) => {
            agents::agent_add(
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
            agents::agent_join(config, &email, &structure).await
        }
        Command::Agent(AgentCommand::Totp { email }) => agents::agent_totp(config, &email).await,
        Command::Agent(AgentCommand::Deactivate { email }) => {
            agents::agent_deactivate(config, &email).await
        }
        Command::Structure(StructureCommand::Add {
            siret,
            name,
            demarches,
            json,
        }) => agents::structure_add(&config, &siret, &name, &demarches, json).await,
        Command::Seed { residents, seed } => seed::seed_command(config, residents, seed).await,
        Command::Import {
            source,
            file,
            format,
        } => import::import_command(config, source, file, format).await,
        Command::Retention(RetentionCommand::Run { at }) => {
            retention::retention_run(config, at).await
        }
        Command::Stats(command) => stats::run(config, command).await,
        Command::Resident(ResidentCommand::Erase { id }) => {
            residents::resident_erase(config, id).await
        }
    }
}

/// An operator's act from the command line. The CLI does not know who runs
/// it, so the actor is `cli` (the host's own logs say which account ran it).
fn operator_record(action: &str, resident: Option<&str>, now: i64) -> crate::audit::AuditRecord {
    crate::audit::AuditRecord::new("cli", "admin", action, now)
        .resident(resident)
        .allow("operator")
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
    keys: impl Into<crate::service::seal::VaultAtStart>,
) -> Result<AppState, Fatal> {
    AppState::new(config, store, clock, demo, keys)
        .await
        .map_err(Fatal::config)
}

fn load_keys(config: &Config) -> Result<Arc<LiveKeys>, Fatal> {
    if crate::crypto::custodians::Manifest::present(&config.keys_dir) {
        return Err(Fatal::runtime(format!(
            "the key set in {} is held by custodians: no file opens it, so this command cannot run outside the unsealed server",
            config.keys_dir.display()
        )));
    }
    LiveKeys::load(config.keys_dir.clone(), config.unlock_identity_file.clone())
        .map(Arc::new)
        .map_err(|e| Fatal::runtime(format!("keys: {e}")))
}

/// The custodians' manifest of the keys folder (it must be there).
fn custodians_manifest(config: &Config) -> Result<crate::crypto::custodians::Manifest, Fatal> {
    crate::crypto::custodians::Manifest::read(&config.keys_dir)
        .map_err(|e| Fatal::config(format!("custodians: {e}")))?
        .ok_or_else(|| {
            Fatal::config(format!(
                "{} holds no custodians manifest",
                config.keys_dir.display()
            ))
        })
}

/// The audit log's verifier key: the custodians' manifest publishes it
/// (no key needed); else derived from the signing key.
fn verifier_key(config: &Config) -> Result<String, Fatal> {
    if crate::crypto::custodians::Manifest::present(&config.keys_dir) {
        return Ok(custodians_manifest(config)?.verifier_key);
    }
    let keys = load_keys(config)?;
    Ok(crate::audit::note::NoteSigner::from_seed(
        &config.audit_log_name,
        keys.current().signing_seed(),
    )
    .map_err(|e| Fatal::runtime(format!("signing key: {e}")))?
    .verifier_key())
}
