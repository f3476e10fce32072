//! `coffre seed`: the command wrapper around `crate::seed`, with its
//! progress bar on stderr (a terminal only) and the report on stdout.

use super::{Fatal, build_state, load_keys, open_store};
use crate::Clock;
use crate::config::Config;

pub(super) async fn seed_command(config: Config, residents: u64, seed: u64) -> Result<(), Fatal> {
    let store = open_store(&config).await?;
    let keys = load_keys(&config)?;
    let clock = Clock::system();
    let state = build_state(config, store.clone(), clock.clone(), false, Ok(keys)).await?;
    let bar = super::progress::bar(residents, "residents");
    let report = crate::seed::seed(&state, residents, seed, clock.now(), |done, _| {
        bar.set_position(done);
    })
    .await
    .map_err(|e| Fatal::runtime(format!("seed: {e}")));
    bar.finish_and_clear();
    let report = report?;
    store.close().await;
    println!(
        "{}",
        serde_json::to_string(&report).map_err(|e| Fatal::runtime(e.to_string()))?
    );
    Ok(())
}
