//! `coffre resident`: the DPO's acts on one resident (erasure, with the
//! art. 19 notices to recipients).

use clap::Subcommand;

use super::{Fatal, build_state, load_keys, open_store, record_operator_act};
use crate::Clock;
use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum ResidentCommand {
    /// Erase a resident: destroy their data key and delete their data (crypto-shredding).
    Erase {
        /// The resident's internal id.
        id: String,
    },
}

pub(super) async fn resident_erase(config: Config, id: String) -> Result<(), Fatal> {
    let store = open_store(&config).await?;
    let keys = load_keys(&config)?;
    let state = build_state(config, store.clone(), Clock::system(), false, Ok(keys)).await?;
    record_operator_act(&state, "erasure", Some(&id)).await?;
    // Not a resident's id: it names no one, answered as an unknown id.
    let Ok(resident) = crate::domain::ResidentId::parse(&id) else {
        store.close().await;
        return Err(Fatal::runtime(format!("no active resident {id}")));
    };
    // The recipients are told (art. 19), in the erasure's transaction.
    let erased = crate::service::rights::apply_with_notices(
        &state,
        &resident,
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
