//! `coffre audit`: verifying the log, printing its checkpoint or verifier
//! key, rebuilding its derived indexes.

use std::path::PathBuf;

use clap::Subcommand;

use super::{Fatal, build_state, load_keys, open_store};
use crate::Clock;
use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute the Merkle tree from the stored entries and check every
    /// checkpoint; exit 1 naming the first bad index.
    Verify {
        /// Also check against a checkpoint kept outside the database.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// Verifier key (`name+hexid+base64`) to trust instead of the local
        /// key set, e.g. for an auditor without the keys folder.
        #[arg(long, value_name = "VKEY")]
        key: Option<String>,
        /// A witness's cosignature verifier key (C2SP tlog-cosignature);
        /// repeat for each witness trusted.
        #[arg(long = "witness", value_name = "VKEY")]
        witnesses: Vec<String>,
        /// Refuse the checkpoint (the one of --checkpoint, else the latest
        /// stored with its cosignatures) unless at least K of the
        /// --witness keys validly cosigned it.
        #[arg(long, value_name = "K")]
        quorum: Option<usize>,
    },
    /// Print the latest signed checkpoint (signing a new one if the log grew).
    Checkpoint,
    /// Print the checkpoint verifier key in signed-note form.
    Key,
    /// Rebuild the index of each resident's entries (`audit_by_resident`,
    /// derived data outside the tree) from the entries themselves.
    Reindex,
}

pub(super) async fn audit_command(config: Config, command: AuditCommand) -> Result<(), Fatal> {
    match command {
        AuditCommand::Verify {
            checkpoint,
            key,
            witnesses,
            quorum,
        } => {
            let witness_keys = witnesses
                .iter()
                .map(|w| crate::audit::witness::WitnessKey::parse(w))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Fatal::config(format!("--witness: {e}")))?;
            if quorum.is_none() && !witness_keys.is_empty() {
                return Err(Fatal::config("--witness needs --quorum K".to_string()));
            }
            // One witness counts once: the same key twice (or under two
            // names, which its signatures do not bind) is refused.
            for (i, a) in witness_keys.iter().enumerate() {
                if witness_keys[..i]
                    .iter()
                    .any(|b| b.public_key() == a.public_key())
                {
                    return Err(Fatal::config(format!(
                        "--witness {}: the same key is given twice",
                        a.name()
                    )));
                }
            }
            if let Some(k) = quorum
                && (k == 0 || k > witness_keys.len())
            {
                return Err(Fatal::config(format!(
                    "--quorum {k}: needs 1 to {} (the --witness keys given)",
                    witness_keys.len()
                )));
            }
            let store = open_store(&config).await?;
            let verifier_key = match key {
                Some(k) => k,
                None => super::verifier_key(&config)?,
            };
            let verifier = crate::audit::note::NoteVerifier::parse(&verifier_key)
                .map_err(|e| Fatal::config(format!("--key: {e}")))?;
            let external = match checkpoint {
                Some(path) => Some(std::fs::read_to_string(&path).map_err(|e| {
                    Fatal::config(format!("cannot read {} ({})", path.display(), e.kind()))
                })?),
                None => None,
            };
            if let Some(k) = quorum {
                // What the auditor kept, or else what the database serves.
                let note = match &external {
                    Some(note) => Some(note.clone()),
                    // The latest checkpoint witnesses cosigned (a newer
                    // one may not be cosigned yet).
                    // A database that cannot be read is an error, not a
                    // checkpoint lacking cosignatures.
                    None => {
                        let unreadable = |e: crate::storage::StorageError| {
                            Fatal::runtime(format!("cannot read the checkpoints: {e}"))
                        };
                        match store
                            .latest_cosigned_checkpoint()
                            .await
                            .map_err(unreadable)?
                        {
                            Some(cp) => Some(
                                crate::service::journal::cosigned(&store, &cp)
                                    .await
                                    .map_err(unreadable)?,
                            ),
                            None => None,
                        }
                    }
                };
                let got = note
                    .as_deref()
                    .map(|n| crate::audit::witness::cosigners(n, &witness_keys));
                match got {
                    Some(Ok(n)) if n >= k => {
                        println!(
                            "checkpoint cosigned by {n} of the {} witnesses given (quorum {k})",
                            witness_keys.len()
                        );
                    }
                    Some(Ok(n)) => {
                        store.close().await;
                        return Err(Fatal {
                            message: format!(
                                "audit checkpoint REFUSED: cosigned by {n} of the witnesses given, the quorum is {k}"
                            ),
                            code: 4,
                        });
                    }
                    Some(Err(e)) => {
                        store.close().await;
                        return Err(Fatal {
                            message: format!(
                                "audit checkpoint REFUSED: a cosignature does not verify ({e})"
                            ),
                            code: 4,
                        });
                    }
                    None => {
                        store.close().await;
                        return Err(Fatal {
                            message:
                                "audit checkpoint REFUSED: no checkpoint to check the quorum of"
                                    .into(),
                            code: 4,
                        });
                    }
                }
            }
            let outcome = crate::audit::verify::verify(
                &store,
                &verifier,
                &config.audit_log_name,
                external.as_deref(),
            )
            .await;
            store.close().await;
            match outcome {
                Ok(r) => {
                    use base64::Engine;
                    if external.is_none() {
                        println!(
                            "note: without --checkpoint FILE (a checkpoint kept outside this database), a log cut after its last stored checkpoint cannot be detected"
                        );
                    }
                    println!(
                        "audit log OK: {} entries in the tree (and {} sequenced, checked, awaiting integration), root {}, {} signed checkpoints verified and consistent",
                        r.size,
                        r.pending,
                        base64::engine::general_purpose::STANDARD.encode(r.root),
                        r.checkpoints
                    );
                    Ok(())
                }
                Err(e @ crate::audit::verify::VerifyFailure::Rollback { .. }) => Err(Fatal {
                    message: format!("audit log ROLLED BACK: {e}"),
                    code: 3,
                }),
                Err(e) => Err(Fatal::runtime(format!(
                    "audit log verification FAILED: {e}"
                ))),
            }
        }
        AuditCommand::Reindex => {
            let store = open_store(&config).await?;
            let outcome = async {
                store.audit_reset_resident_index().await?;
                let mut covered = 0u64;
                loop {
                    match store.audit_index_residents(100_000).await? {
                        0 => break,
                        n => covered += n,
                    }
                }
                while crate::audit::indexes::index_recipients(&store, 100_000).await? > 0 {}
                Ok(covered)
            }
            .await;
            store.close().await;
            let covered = outcome.map_err(|e: crate::storage::StorageError| {
                Fatal::runtime(format!("reindexing the audit log: {e}"))
            })?;
            println!(
                "audit log: the resident and recipients indexes cover {covered} entries again"
            );
            Ok(())
        }
        AuditCommand::Checkpoint => {
            let store = open_store(&config).await?;
            let keys = load_keys(&config)?;
            let state =
                build_state(config, store.clone(), Clock::system(), false, Ok(keys)).await?;
            let signer = state
                .checkpoint_signer()
                .map_err(|e| Fatal::runtime(e.to_string()))?;
            let row = state
                .audit
                .checkpoint(&signer, state.clock.now())
                .await
                .map_err(|e| Fatal::runtime(e.to_string()))?;
            store.close().await;
            print!("{}", row.note);
            Ok(())
        }
        AuditCommand::Key => {
            println!("{}", super::verifier_key(&config)?);
            Ok(())
        }
    }
}
