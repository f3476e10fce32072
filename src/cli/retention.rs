//! `coffre retention run`: the retention purge run once from the command
//! line (`serve` also runs it every hour, see `serve.rs`).

use clap::Subcommand;

use super::{Fatal, build_state, load_keys, open_store};
use crate::Clock;
use crate::config::Config;

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

pub(super) async fn retention_run(config: Config, at: Option<i64>) -> Result<(), Fatal> {
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
