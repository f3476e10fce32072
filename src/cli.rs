//! The command line: parses arguments, loads configuration, starts tracing
//! and runs one subcommand. Every failure ends as one clear line on stderr
//! and a non-zero exit code, never a panic or a backtrace.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};
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
        .with_writer(std::io::stderr);
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
    let store = crate::storage::open(&config.database_url)
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    if demo {
        let seeded = crate::demo::seed_if_empty(store.as_ref(), clock.now())
            .await
            .map_err(|e| Fatal::runtime(format!("demo seeding failed: {e}")))?;
        if seeded {
            tracing::info!("demo territory seeded");
        }
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Fatal::runtime(format!("cannot listen on {} ({e})", config.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    let drain = Duration::from_secs(config.shutdown_timeout_secs);
    tracing::info!(
        address = %local,
        database = %config.database_url.redacted(),
        startup_ms = started.elapsed().as_millis() as u64,
        demo,
        "listening"
    );
    if demo {
        print_demo_banner(&local);
    }
    let state = AppState::new(config, store.clone(), clock, demo);
    let router = crate::app(state);
    let result = crate::serve(listener, router, crate::shutdown_signal(), drain).await;
    store.close().await;
    result.map_err(|e| Fatal::runtime(format!("server error: {e}")))
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
    out.push_str("  Demo partners (OAuth2 client credentials):\n");
    for p in crate::demo::PARTNERS {
        out.push_str(&format!(
            "    {:<16} client_id={} client_secret={}\n",
            p.id, p.client_id, p.client_secret
        ));
    }
    println!("{out}");
}
