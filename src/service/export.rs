//! The export of everything held about a resident (GDPR arts. 15 and 20):
//! one JSON document (schema `coffre-export/1`, documented in README),
//! streamed as it is written, optionally encrypted with age to a
//! passphrase; every audit entry about the resident comes with its
//! inclusion proof in a signed checkpoint.

use crate::error::ErrorCode;
use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::audit::AuditEntry;
use crate::domain::Timestamp;
use crate::error::{AppError, AppResult};
use crate::service::access::own_data;
use crate::service::{Audited, Caller};

/// The least length of an export passphrase.
pub const PASSPHRASE_MIN: usize = 12;

/// An export under way: its chunks as they are written, and whether it is
/// an age file. A failure cuts the stream (no closing brace, or an age
/// file that fails its final check), never a partial success.
pub struct Export {
    pub chunks: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
    pub encrypted: bool,
}

/// Starts the export of everything held about the caller: refused before
/// the first byte without keys, recorded before anything is read.
pub async fn start(
    state: &AppState,
    caller: &Caller,
    passphrase: Option<String>,
    now: Timestamp,
) -> AppResult<Audited<Export>> {
    if passphrase
        .as_ref()
        .is_some_and(|p| p.chars().count() < PASSPHRASE_MIN)
    {
        return Err(ErrorCode::PassphraseTooShort.with(format!("≥ {PASSPHRASE_MIN}")));
    }
    // Fail closed before the first byte: no keys, no export.
    state.vault()?;
    let entry = own_data(state, caller, "export", None).await?;
    let resident = caller.resident_id()?;
    let (tx, chunks) = tokio::sync::mpsc::channel(8);
    let channel = Channel { tx };
    let encrypted = passphrase.is_some();
    let sink = match passphrase {
        None => Sink::Plain(channel),
        Some(p) => {
            let out = Collected::default();
            let encryptor =
                age::Encryptor::with_user_passphrase(age::secrecy::SecretString::from(p));
            let writer = encryptor
                .wrap_output(out.clone())
                .map_err(|_| AppError::internal("age encryptor"))?;
            Sink::Age(channel, Box::new(writer), out)
        }
    };
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = write_export(&state, &resident, sink, now).await {
            tracing::warn!(resident = %resident, error = %e, "export interrupted");
        }
    });
    Ok(Audited::new(entry, Export { chunks, encrypted }))
}

/// Where the export's bytes go: straight to the client, or through age.
struct Channel {
    tx: tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
}

/// A `Write` whose bytes are collected, for age's synchronous writer.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<u8>>>);

impl Write for Collected {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Collected {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

enum Sink {
    Plain(Channel),
    Age(
        Channel,
        Box<age::stream::StreamWriter<Collected>>,
        Collected,
    ),
}

impl Sink {
    async fn put(&mut self, bytes: &[u8]) -> Result<(), std::io::Error> {
        match self {
            Sink::Plain(c) => c.send(bytes.to_vec()).await,
            Sink::Age(c, w, out) => {
                w.write_all(bytes)?;
                let chunk = out.take();
                if chunk.is_empty() {
                    Ok(())
                } else {
                    c.send(chunk).await
                }
            }
        }
    }

    async fn json(&mut self, v: &impl Serialize) -> Result<(), std::io::Error> {
        let bytes = serde_json::to_vec(v).map_err(std::io::Error::other)?;
        self.put(&bytes).await
    }

    async fn finish(self) -> Result<(), std::io::Error> {
        match self {
            Sink::Plain(_) => Ok(()),
            Sink::Age(c, w, out) => {
                w.finish()?;
                let chunk = out.take();
                c.send(chunk).await
            }
        }
    }
}

impl Channel {
    async fn send(&self, bytes: Vec<u8>) -> Result<(), std::io::Error> {
        self.tx
            .send(Ok(bytes))
            .await
            .map_err(|_| std::io::Error::other("client went away"))
    }
}

async fn write_export(
    state: &AppState,
    resident: &crate::domain::ResidentId,
    mut out: Sink,
    now: Timestamp,
) -> Result<(), std::io::Error> {
    let io = |e: AppError| std::io::Error::other(format!("{:?}", e.code_and_status().0));
    out.put(b"{\"schema\":\"coffre-export/1\",\"resident_id\":")
        .await?;
    out.json(&resident).await?;
    out.put(format!(",\"generated_at\":{now},\"records\":{{").as_bytes())
        .await?;
    // Every category, every version (one category in memory at a time).
    let vault = state.vault().map_err(io)?;
    let mut first = true;
    for name in state.categories.names() {
        let category = vault
            .categories()
            .category(name)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let history = vault
            .read_history(resident, &category)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if history.is_empty() {
            continue;
        }
        if !first {
            out.put(b",").await?;
        }
        first = false;
        out.json(&name).await?;
        out.put(b":").await?;
        out.json(&history).await?;
    }
    // The sources (art. 15(1)(g)): who may deposit about me, on what
    // basis, whether I linked or objected, and what each deposited.
    out.put(b"},\"sources\":").await?;
    let sources = crate::service::sources::sources_of(state, resident)
        .await
        .map_err(io)?;
    out.json(&sources).await?;
    out.put(b",\"consents\":[").await?;
    let consents = state
        .store
        .consents_of(resident)
        .await
        .map_err(|e| io(e.into()))?;
    for (i, row) in consents.iter().enumerate() {
        if i > 0 {
            out.put(b",").await?;
        }
        let events = state
            .store
            .consent_events(&row.id)
            .await
            .map_err(|e| io(e.into()))?;
        let view = crate::service::consents::view(row, now);
        let history: Vec<Value> = events
            .into_iter()
            .map(|e| {
                json!({"state": e.state.as_str(), "categories": crate::service::consents::category_names(&e.categories),
                       "valid_until": e.valid_until, "notice_version": e.notice_version,
                       "recorded_by": e.actor_role.as_str(), "structure_id": e.structure_id,
                       "audit_index": e.audit_index, "at": e.created_at, "receipt": e.receipt})
            })
            .collect();
        out.json(&json!({"consent": view, "history": history}))
            .await?;
    }
    out.put(b"],\"mandates\":[").await?;
    let mandates = state
        .store
        .mandates_of_resident(resident)
        .await
        .map_err(|e| io(e.into()))?;
    for (i, m) in mandates.iter().enumerate() {
        if i > 0 {
            out.put(b",").await?;
        }
        out.json(
            &crate::service::mandates::view(state, m, now)
                .await
                .map_err(io)?,
        )
        .await?;
    }
    let (restricted, _) = state
        .store
        .rights_state(resident, None)
        .await
        .map_err(|e| io(e.into()))?;
    let objections = state
        .store
        .objections_of(resident)
        .await
        .map_err(|e| io(e.into()))?;
    out.put(format!("],\"restricted\":{restricted},\"objections\":").as_bytes())
        .await?;
    out.json(
        &objections
            .iter()
            .map(|(p, t)| json!({"purpose": p, "since": t}))
            .collect::<Vec<_>>(),
    )
    .await?;
    out.put(b",\"requests\":[").await?;
    let requests = state
        .store
        .rights_requests_of(resident)
        .await
        .map_err(|e| io(e.into()))?;
    for (i, r) in requests.into_iter().enumerate() {
        if i > 0 {
            out.put(b",").await?;
        }
        out.json(
            &crate::service::requests::request_view(state, r, now)
                .await
                .map_err(io)?,
        )
        .await?;
    }
    // Every decision about me in the audit log, each with its inclusion
    // proof in the signed checkpoint given first; paged, newest first.
    let signer = state.checkpoint_signer().map_err(io)?;
    let cp = state
        .audit
        .checkpoint(&signer, now)
        .await
        .map_err(|e| io(e.into()))?;
    let tree_size = cp.tree_size as u64;
    out.put(b"],\"accesses\":{\"checkpoint\":").await?;
    out.json(&cp.note).await?;
    out.put(format!(",\"tree_size\":{tree_size},\"entries\":[").as_bytes())
        .await?;
    let mut before = u64::MAX;
    let mut first = true;
    // The extracts I was included in, gathered on the way (one per extract).
    let mut extracts: Vec<Value> = Vec::new();
    loop {
        let rows = state
            .store
            .audit_entries_of(resident, before, 100)
            .await
            .map_err(|e| io(e.into()))?;
        for (idx, leaf) in &rows {
            let idx = *idx as u64;
            let fields =
                AuditEntry::decode(leaf).map_err(|e| std::io::Error::other(e.to_string()))?;
            if matches!(
                fields.action.as_str(),
                "extract.include" | "extract.aggregate"
            ) {
                extracts.push(json!({
                    "extract": fields.reason.strip_prefix("extract:").unwrap_or(&fields.reason),
                    "partner": fields.actor_id,
                    "purpose": fields.purpose,
                    "categories": fields.category,
                    "at": fields.timestamp,
                    "audit_index": idx,
                }));
            }
            let proof = if idx < tree_size {
                let p = state
                    .audit
                    .inclusion_proof(idx, tree_size)
                    .await
                    .map_err(|e| io(e.into()))?;
                Some(p.iter().map(|h| STANDARD.encode(h)).collect::<Vec<_>>())
            } else {
                None
            };
            if !first {
                out.put(b",").await?;
            }
            first = false;
            out.json(&json!({"index": idx, "leaf": STANDARD.encode(leaf), "fields": fields, "proof": proof}))
                .await?;
        }
        match rows.last() {
            Some((last, _)) if rows.len() == 100 => before = *last as u64,
            _ => break,
        }
    }
    out.put(b"]},\"extracts\":").await?;
    out.json(&extracts).await?;
    out.put(b"}").await?;
    out.finish().await
}
