//! `coffre source`: client credentials for the data sources of
//! `policies/sources.toml`, deactivating and reactivating them; each act is
//! audited with the source as its resource, by `service::sources`.

use clap::Subcommand;

use super::{Fatal, build_state, open_store};
use crate::Clock;
use crate::config::Config;
use crate::domain::Role;
use crate::error::AppError;
use crate::service::Caller;
use crate::service::sources;

#[derive(Subcommand, Debug)]
pub enum SourceCommand {
    /// Give a source of policies/sources.toml its client credentials and
    /// print them, once (client_credentials with `client_secret_basic`).
    Add {
        /// The source's id in policies/sources.toml, e.g. energie-locale.
        #[arg(long)]
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Print `{"client_id", "client_secret"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Deactivate a source: its tokens, even unexpired ones, are refused
    /// from the next request on, in every process.
    Deactivate {
        #[arg(long)]
        id: String,
    },
    /// Reactivate a deactivated source, with the credentials it had.
    Activate {
        #[arg(long)]
        id: String,
    },
}

fn fatal(e: AppError) -> Fatal {
    let (code, status) = e.code_and_status();
    if status.is_server_error() {
        Fatal::runtime(format!("{code}: {e}"))
    } else {
        Fatal::config(format!("{code}: {}", e.message_in(false)))
    }
}

pub(super) async fn run(config: Config, command: SourceCommand) -> Result<(), Fatal> {
    let store = open_store(&config).await?;
    // Credentials need no keys: the vault stays shut.
    let state = build_state(
        config,
        store.clone(),
        Clock::system(),
        false,
        Err("not needed to register a source".into()),
    )
    .await?;
    let operator = Caller::new("cli", Role::Admin, None);
    let now = state.clock.now();
    let result = match command {
        SourceCommand::Add { id, name, json } => {
            sources::register_client(&state, &operator, &id, &name, now)
                .await
                .map(|done| {
                    let c = done.value;
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"client_id": c.client_id, "client_secret": c.client_secret})
                        );
                    } else {
                        println!(
                            "source {id} registered. Keep the secret now: it is not stored and cannot be shown again."
                        );
                        println!("client_id={}", c.client_id);
                        println!("client_secret={}", c.client_secret);
                    }
                })
        }
        SourceCommand::Deactivate { id } => {
            sources::set_client_active(&state, &operator, &id, false, now)
                .await
                .map(|_| println!("source {id} deactivated; its tokens are refused from now on"))
        }
        SourceCommand::Activate { id } => sources::set_client_active(&state, &operator, &id, true, now)
            .await
            .map(|_| println!("source {id} activated")),
    };
    store.close().await;
    result.map_err(fatal)
}
