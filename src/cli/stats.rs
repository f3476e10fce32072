//! `coffre stats publish`: a month's open statistics release, built,
//! hashed into the audit log and stored (`serve` also publishes last month's
//! by itself, see `serve.rs`).

use clap::Subcommand;

use super::{Fatal, build_state, load_keys, open_store};
use crate::Clock;
use crate::config::Config;
use crate::domain::stats::Period;

#[derive(Subcommand, Debug)]
pub enum StatsCommand {
    /// Publish the release of a month (by default the last whole month).
    /// A month already published is printed as it stands: releases never
    /// change.
    Publish {
        /// The month, YYYY-MM.
        #[arg(long, value_name = "YYYY-MM")]
        period: Option<String>,
        /// Publish as of this earlier time (seconds since the Unix epoch)
        /// instead of now: which months count as over.
        #[arg(long, value_name = "UNIX_SECONDS")]
        at: Option<i64>,
    },
}

pub(super) async fn run(config: Config, command: StatsCommand) -> Result<(), Fatal> {
    let StatsCommand::Publish { period, at } = command;
    let period = period
        .map(|p| {
            Period::parse(&p)
                .ok_or_else(|| Fatal::config(format!("--period {p}: a month is written YYYY-MM")))
        })
        .transpose()?;
    let store = open_store(&config).await?;
    let keys = load_keys(&config)?;
    let clock = Clock::system();
    let state = build_state(config, store.clone(), clock.clone(), false, Ok(keys)).await?;
    // An earlier time only: a later one would publish a month before it is
    // over, for ever.
    let now = match at {
        Some(t) if t > clock.now() => {
            store.close().await;
            return Err(Fatal::config("--at: a time in the future is refused"));
        }
        Some(t) => t,
        None => clock.now(),
    };
    let outcome = crate::service::stats::publish(&state, period, now).await;
    store.close().await;
    let (row, created) = outcome.map_err(|e| {
        let (code, _) = e.code_and_status();
        Fatal::runtime(format!("stats publish: {code}"))
    })?;
    let out = serde_json::json!({
        "release": row.period,
        "published": created,
        "published_at": row.published_at,
        "epsilon": row.epsilon,
        "sha256": row.sha256,
        "audit_index": row.audit_index,
    });
    println!("{out}");
    Ok(())
}
