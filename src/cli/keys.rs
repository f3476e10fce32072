//! `coffre keys`: creating, showing and rotating the key set, and the
//! helpers that read the unlock identity and make the keys folder private
//! (shared with `serve`, which initialises keys in demo mode).

use clap::Subcommand;

use super::{Fatal, load_keys, open_store, operator_record};
use crate::Clock;
use crate::config::Config;
use crate::crypto::{KeySet, UnlockIdentity, generate_unlock_identity, read_unlock_identity};

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

pub(super) fn read_unlock(config: &Config) -> Result<UnlockIdentity, Fatal> {
    read_unlock_identity(&config.unlock_identity_file)
        .map_err(|e| Fatal::runtime(format!("unlock identity: {e}")))
}

/// Makes sure the keys folder exists with owner-only access.
pub(super) fn private_dir(dir: &std::path::Path) -> Result<(), Fatal> {
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

pub(super) async fn keys_command(config: &Config, command: KeysCommand) -> Result<(), Fatal> {
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
            let bar = super::progress::bar(0, "data keys");
            let report = crate::service::vault::rotate(
                &store,
                &mut set,
                &config.keys_dir,
                &unlock,
                batch,
                clock.now(),
                |done, total| {
                    bar.set_length(total);
                    bar.set_position(done);
                },
            )
            .await
            .map_err(|e| Fatal::runtime(format!("rotation stopped (run again to resume): {e}")));
            bar.finish_and_clear();
            let report = report?;
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
