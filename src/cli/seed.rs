//! `coffre seed`: the command wrapper around `crate::seed`, with its
//! progress bar on stderr and the report on stdout.

use super::{Fatal, build_state, load_keys, open_store};
use crate::Clock;
use crate::config::Config;

pub(super) async fn seed_command(config: Config, residents: u64, seed: u64) -> Result<(), Fatal> {
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
