//! The log's witnesses (C2SP tlog-witness): each new signed checkpoint is
//! sent with its consistency proof to every configured witness, whose
//! cosignature (tlog-cosignature) is checked against its key, stored, and
//! served with the checkpoint. A witness that refuses or is silent is
//! logged and shown on `/journal`; it never blocks a request.
//!
//! Never: trust a witness's reply without checking its signature; store or
//! log a witness's reply text (a stable code only).

use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
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

/// A request's bound: a silent witness delays nothing else for long.
const TIMEOUT: Duration = Duration::from_secs(10);

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
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|_| crate::error::AppError::internal("no HTTP client"))?;
    for w in witnesses {
        let name = w.key.name();
        let known = state.store.witness(name).await?.unwrap_or_default();
        if known.cosigned_size >= cp.tree_size {
            continue;
        }
        // Twice at most: a 409 tells the size the witness knows.
        let mut old = known.size;
        let mut outcome = Err("refused");
        for _ in 0..2 {
            if old > cp.tree_size {
                outcome = Err("witness_ahead");
                break;
            }
            let proof = if old == 0 || old == cp.tree_size {
                Vec::new()
            } else {
                state
                    .audit
                    .consistency_proof(old as u64, cp.tree_size as u64)
                    .await?
            };
            let body = add_checkpoint_body(old as u64, &proof, &cp.note);
            let url = format!("{}/add-checkpoint", w.url.as_str().trim_end_matches('/'));
            let sent = client.post(&url).body(body).send().await;
            let Ok(res) = sent else {
                outcome = Err("unreachable");
                break;
            };
            let status = res.status().as_u16();
            let reply = res.text().await.unwrap_or_default();
            match status {
                200 => {
                    outcome = reply
                        .lines()
                        .find_map(|l| match w.key.check_line(text, l) {
                            Ok(Some(_)) => Some(Ok(l.to_string())),
                            _ => None,
                        })
                        .unwrap_or(Err("bad_cosignature"));
                    break;
                }
                // The witness knows another size: its body says which.
                409 => match reply.trim().parse::<i64>() {
                    Ok(size) if size != old => {
                        state.store.witness_knows(name, size).await?;
                        old = size;
                        outcome = Err("refused_409");
                    }
                    _ => {
                        outcome = Err("refused_409");
                        break;
                    }
                },
                403 => {
                    outcome = Err("refused_403");
                    break;
                }
                404 => {
                    outcome = Err("refused_404");
                    break;
                }
                422 => {
                    outcome = Err("refused_422");
                    break;
                }
                _ => {
                    outcome = Err("refused");
                    break;
                }
            }
        }
        match outcome {
            Ok(line) => {
                state
                    .store
                    .witness_cosigned(name, cp.tree_size, &line, now)
                    .await?;
                report.cosigned += 1;
            }
            Err(code) => {
                tracing::warn!(
                    witness = name,
                    code,
                    tree_size = cp.tree_size,
                    "a witness did not cosign the checkpoint"
                );
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
