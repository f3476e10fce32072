//! The log's witnesses (C2SP tlog-witness): each new signed checkpoint is
//! sent with its consistency proof to every configured witness, whose
//! cosignature (tlog-cosignature) is checked against its key, stored, and
//! served with the checkpoint. A witness that refuses or is silent is
//! logged and shown on `/journal`; it never blocks a request.
//!
//! Never: trust a witness's reply without checking its signature; store or
//! log a witness's reply text (a stable code only).

use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::note::SIG_PREFIX;
use crate::audit::witness::{WitnessKey, add_checkpoint_body};
use crate::domain::Timestamp;
use crate::error::AppResult;

/// One configured witness: its cosignature key and where to submit.
#[derive(Clone, Debug)]
pub struct Witness {
    pub key: WitnessKey,
    pub url: url::Url,
}

/// Parses a witnesses file: one `VKEY URL` line each; blank lines and
/// `#` comments allowed. A bad line is named.
pub fn parse_witnesses(text: &str) -> Result<Vec<Witness>, String> {
    let mut out: Vec<Witness> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (vkey, url) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("line {}: expected `VKEY URL`", n + 1))?;
        let key = WitnessKey::parse(vkey).map_err(|e| format!("line {}: {e}", n + 1))?;
        let url = url::Url::parse(url.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| format!("line {}: expected an http(s) URL", n + 1))?;
        if out.iter().any(|w| w.key.name() == key.name()) {
            return Err(format!("line {}: witness {} twice", n + 1, key.name()));
        }
        out.push(Witness { key, url });
    }
    Ok(out)
}

/// The configured witnesses (none without `witnesses_file`).
pub fn load(config: &crate::config::Config) -> Result<Vec<Witness>, String> {
    let Some(path) = &config.witnesses_file else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("witnesses_file {}: {}", path.display(), e.kind()))?;
    parse_witnesses(&text).map_err(|e| format!("witnesses_file {}: {e}", path.display()))
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundReport {
    pub cosigned: u64,
    pub refused: u64,
    pub unreachable: u64,
}

/// The HTTP client of the rounds, built once per process (its TLS roots
/// and connections are kept): the project's client for outside services,
/// no redirects and bounded time, so a silent witness delays nothing else
/// for long.
fn client() -> AppResult<&'static reqwest::Client> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let built = crate::oidc::http_client()
        .map_err(|_| crate::error::AppError::internal("no HTTP client"))?;
    Ok(CLIENT.get_or_init(|| built))
}

/// Sends the latest signed checkpoint to every witness that has not
/// cosigned it yet, with the consistency proof from the size it knows.
pub async fn round(
    state: &AppState,
    witnesses: &[Witness],
    now: Timestamp,
) -> AppResult<RoundReport> {
    let mut report = RoundReport::default();
    // A fresh checkpoint if the log grew (the latest signed one while
    // sealed).
    let cp = crate::service::journal::checkpoint(state, now).await?;
    if cp.tree_size == 0 {
        return Ok(report);
    }
    let Some(split) = cp.note.rfind("\n\n") else {
        return Ok(report);
    };
    let text = &cp.note[..split + 1];
    let client = client()?;
    for w in witnesses {
        let name = w.key.name();
        // One witness's trouble (a bad reply, a proof that cannot be read)
        // is its failure, never the round's: the others are still asked.
        let outcome = match submit(state, client, w, &cp, text).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(witness = name, error = %e, "witness round step failed");
                Err("internal")
            }
        };
        match outcome {
            Ok(Some(line)) => {
                state
                    .store
                    .witness_cosigned(name, cp.tree_size, &line, now)
                    .await?;
                report.cosigned += 1;
            }
            // Nothing to do (already cosigned, or another process ahead).
            Ok(None) => {}
            Err(code) => {
                if code == "witness_ahead" {
                    // It cosigned a larger tree under this key than this
                    // database holds: a fork, or a database rolled back.
                    tracing::error!(
                        witness = name,
                        tree_size = cp.tree_size,
                        "a witness has cosigned a larger tree than this log holds: fork or rollback"
                    );
                } else {
                    tracing::warn!(
                        witness = name,
                        code,
                        tree_size = cp.tree_size,
                        "a witness did not cosign the checkpoint"
                    );
                }
                state.store.witness_failed(name, code, now).await?;
                if code == "unreachable" {
                    report.unreachable += 1;
                } else {
                    report.refused += 1;
                }
            }
        }
    }
    Ok(report)
}

/// The largest reply read from a witness (a cosignature line is under a
/// hundred bytes): a hostile one cannot fill the memory.
const MAX_REPLY: usize = 16 * 1024;

/// Asks one witness to cosign `cp`: `Some(line)` when it did (its line
/// checked against its key), `None` when there was nothing to ask, or the
/// stable code of its refusal.
async fn submit(
    state: &AppState,
    client: &reqwest::Client,
    w: &Witness,
    cp: &crate::storage::CheckpointRow,
    text: &str,
) -> AppResult<Result<Option<String>, &'static str>> {
    let name = w.key.name();
    let known = state.store.witness(name).await?.unwrap_or_default();
    if known.cosigned_size >= cp.tree_size {
        return Ok(Ok(None));
    }
    let url = format!("{}/add-checkpoint", w.url.as_str().trim_end_matches('/'));
    // Twice at most: a 409 tells the size the witness knows.
    let mut old = u64::try_from(known.size).unwrap_or(0);
    let size = u64::try_from(cp.tree_size).unwrap_or(0);
    for _ in 0..2 {
        if old > size {
            // Ahead of this checkpoint: of the log too, or only of this
            // process's view (another process is submitting a newer one)?
            return Ok(if old <= state.audit.integrated_size().await? {
                Ok(None)
            } else {
                Err("witness_ahead")
            });
        }
        let proof = if old == 0 || old == size {
            Vec::new()
        } else {
            state.audit.consistency_proof(old, size).await?
        };
        let body = add_checkpoint_body(old, &proof, &cp.note);
        let Ok(mut res) = client.post(&url).body(body).send().await else {
            return Ok(Err("unreachable"));
        };
        let status = res.status().as_u16();
        let mut reply = Vec::new();
        while let Ok(Some(chunk)) = res.chunk().await {
            reply.extend_from_slice(&chunk);
            if reply.len() > MAX_REPLY {
                return Ok(Err("reply_too_long"));
            }
        }
        let reply = String::from_utf8_lossy(&reply);
        match status {
            200 => {
                let line = reply.lines().take(16).find_map(|l| {
                    let l = l.trim_end();
                    match w.key.check_line(text, l) {
                        // Rebuilt from its parts: nothing of the reply
                        // but the checked signature is kept.
                        Ok(Some(_)) => l
                            .rsplit_once(' ')
                            .map(|(_, b64)| format!("{SIG_PREFIX}{name} {b64}")),
                        _ => None,
                    }
                });
                return Ok(line.map(Some).ok_or("bad_cosignature"));
            }
            // The witness knows another size: its body says which (plain
            // decimal digits only). Used for this round's retry only, never
            // stored: the body is unsigned, and a size kept from it (a
            // hostile witness, or anyone on a plain-HTTP path) would stop
            // every later round at `witness_ahead`.
            409 => {
                let said = reply.trim();
                let size_said = (!said.is_empty() && said.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| said.parse::<u64>().ok())
                    .flatten()
                    .filter(|n| i64::try_from(*n).is_ok());
                match size_said {
                    Some(n) if n != old => old = n,
                    _ => return Ok(Err("refused_409")),
                }
            }
            403 => return Ok(Err("refused_403")),
            404 => return Ok(Err("refused_404")),
            422 => return Ok(Err("refused_422")),
            _ => return Ok(Err("refused")),
        }
    }
    Ok(Err("refused_409"))
}

/// A witness as `/journal` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WitnessStatus {
    pub name: String,
    /// The largest checkpoint it cosigned (0: none yet).
    pub cosigned_size: i64,
    pub last_ok_at: Option<i64>,
    /// Why its last try failed (`unreachable`, `refused_409`,
    /// `refused_422`, `bad_cosignature`…), when it did after its last
    /// cosignature.
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
}

/// Every witness the log has tried, with its state.
pub async fn statuses(state: &AppState) -> AppResult<Vec<WitnessStatus>> {
    Ok(state
        .store
        .witnesses()
        .await?
        .into_iter()
        .map(|w| WitnessStatus {
            name: w.name,
            cosigned_size: w.cosigned_size,
            last_ok_at: w.last_ok_at,
            last_error: w.last_error,
            last_error_at: w.last_error_at,
        })
        .collect())
}
