//! `coffre keys`: creating, showing and rotating the key set, and the
//! helpers that read the unlock identity and make the keys folder private
//! (shared with `serve`, which initialises keys in demo mode).

use clap::Subcommand;

use super::{Fatal, load_keys, open_store, operator_record};
use crate::Clock;
use crate::config::Config;
use crate::crypto::custodians::{Manifest, parse_custodians, split_new_identity, write_shares};
use crate::crypto::{KeySet, UnlockIdentity, generate_unlock_identity, read_unlock_identity};

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Generate a new key set in COFFRE_KEYS_DIR, encrypted to the unlock identity.
    Init {
        /// Also create the unlock identity (age-keygen format) when it does not
        /// exist. In production, provision it yourself on a secret mount.
        #[arg(long, conflicts_with = "custodians")]
        generate_unlock_identity: bool,
        /// Hold the key set by custodians instead of one identity file: a
        /// file of `name age1…` lines. A new unlock identity is split into
        /// one Shamir share per custodian, each encrypted to their age
        /// recipient; the identity itself is never written, and `serve`
        /// starts sealed until THRESHOLD of them run `coffre unseal`.
        #[arg(long, value_name = "FILE", requires = "threshold")]
        custodians: Option<std::path::PathBuf>,
        /// Shares needed to unseal (at least 2, at most the number of
        /// custodians).
        #[arg(long, value_name = "K", requires = "custodians")]
        threshold: Option<u8>,
        /// Where the custodians' share files are written, one
        /// `NAME.share.age` each, to hand to them.
        #[arg(long, value_name = "DIR", default_value = "custodian-shares")]
        shares_out: std::path::PathBuf,
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
            custodians: Some(file),
            threshold: Some(threshold),
            shares_out,
            ..
        } => init_with_custodians(config, &file, threshold, &shares_out),
        KeysCommand::Init {
            generate_unlock_identity: generate,
            ..
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
        KeysCommand::Show if Manifest::present(&config.keys_dir) => {
            let manifest = super::custodians_manifest(config)?;
            println!(
                "held by custodians: {} of {} shares unseal it",
                manifest.threshold,
                manifest.custodians.len()
            );
            for c in &manifest.custodians {
                println!("  custodian {} ({})", c.name, c.recipient);
            }
            println!("unlock recipient: {}", manifest.unlock_recipient);
            println!(
                "audit log verifier key (signed note): {}",
                manifest.verifier_key
            );
            println!(
                "the JWKS and the KEK versions: ask the unsealed server (GET /.well-known/jwks.json)"
            );
            Ok(())
        }
        KeysCommand::Rotate { batch } if Manifest::present(&config.keys_dir) => {
            // Only the unsealed server holds the identity the custodians
            // rebuilt: the rotation runs there.
            super::admin::rotate(config, batch).await
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

/// `keys init --custodians FILE --threshold K`: the key set, encrypted to a
/// new identity that only exists split among the custodians. Order: the
/// shares first (they are what will open the set), then the key set, then
/// the manifest; a failure part-way leaves files to delete before a new
/// attempt, never a set nobody can open silently.
fn init_with_custodians(
    config: &Config,
    file: &std::path::Path,
    threshold: u8,
    shares_out: &std::path::Path,
) -> Result<(), Fatal> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Fatal::config(format!("cannot read {} ({})", file.display(), e.kind())))?;
    let custodians =
        parse_custodians(&text).map_err(|e| Fatal::config(format!("{}: {e}", file.display())))?;
    if KeySet::is_initialised(&config.keys_dir) || Manifest::present(&config.keys_dir) {
        return Err(Fatal::runtime(format!(
            "key directory {} is already initialised",
            config.keys_dir.display()
        )));
    }
    if config.unlock_identity_file.exists() {
        return Err(Fatal::config(format!(
            "an unlock identity exists at {}: with custodians no file may open the key set; move it away first",
            config.unlock_identity_file.display()
        )));
    }
    for c in &custodians {
        let path = shares_out.join(format!("{}.share.age", c.name));
        if path.exists() {
            return Err(Fatal::runtime(format!(
                "{} already exists; refusing to overwrite a share",
                path.display()
            )));
        }
    }
    private_dir(&config.keys_dir)?;
    let (identity, mut manifest, sealed) = split_new_identity(&custodians, threshold)
        .map_err(|e| Fatal::config(format!("custodians: {e}")))?;
    let written =
        write_shares(shares_out, &sealed).map_err(|e| Fatal::runtime(format!("shares: {e}")))?;
    let set = KeySet::init(&config.keys_dir, &identity)
        .map_err(|e| Fatal::runtime(format!("keys init: {e}")))?;
    manifest.verifier_key =
        crate::audit::note::NoteSigner::from_seed(&config.audit_log_name, set.signing_seed())
            .map_err(|e| Fatal::runtime(format!("signing key: {e}")))?
            .verifier_key();
    drop(set);
    drop(identity);
    manifest
        .write(&config.keys_dir)
        .map_err(|e| Fatal::runtime(format!("custodians manifest: {e}")))?;
    println!(
        "key set created in {}, held by {} custodians ({} needed to unseal); the unlock identity was never written",
        config.keys_dir.display(),
        custodians.len(),
        threshold
    );
    for path in written {
        println!("  share: {}", path.display());
    }
    println!(
        "hand each share to its custodian only; `coffre serve` starts sealed until {threshold} of them run `coffre unseal --share FILE --identity THEIR_AGE_IDENTITY`"
    );
    Ok(())
}
