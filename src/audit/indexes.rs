//! The log's derived indexes: the resident index (`audit_by_resident`),
//! brought up to date by the writer in bulk, and the recipients index
//! (art. 19), kept beside it. Both are derived data: readers scan what is
//! not indexed yet, so a lagging or failing index slows them, hides nothing.

use tokio::sync::mpsc;

use super::log::Pending;
use crate::storage::{DynStore, StorageError};

/// The resident index (`audit_by_resident`) is brought up to date after this
/// many appended entries, and once the writer has been idle for
/// [`INDEX_WHEN_IDLE_FOR`]. In bulk, entries of one resident share index
/// pages; in every commit, each entry dirtied a page of its own inside the
/// durable transaction.
pub(super) const INDEX_EVERY: u64 = 4096;

/// How long the writer waits without anything to append before indexing
/// (so a lightly loaded server does not pay a second commit per append).
pub(super) const INDEX_WHEN_IDLE_FOR: std::time::Duration = std::time::Duration::from_millis(500);

/// Most entries one indexing transaction covers (it holds SQLite's write
/// lock for its length).
const INDEX_STEP: u64 = 16_384;

/// One indexing step; returns what is left to index as the writer counts it
/// (at least 1 while the step was full, so the next one follows).
pub(super) async fn index_residents(store: &DynStore, unindexed: u64) -> u64 {
    match store.audit_index_residents(INDEX_STEP).await {
        Ok(covered) if covered == INDEX_STEP => unindexed.max(1),
        Ok(_) => 0,
        Err(e) => {
            // Derived data: readers scan what is not indexed, so this slows
            // them down but hides nothing. Retried at the next idle moment
            // after an append, or after INDEX_EVERY more entries.
            tracing::warn!(error = %e, "audit resident index not updated");
            0
        }
    }
}

/// On PostgreSQL: brings the resident index up to date whenever the writer
/// asks (every [`INDEX_EVERY`] entries), beside it, so that its batches do
/// not wait for the step. Concurrent steps (another process's, or the
/// writer's own once idle) are harmless: rows already there are skipped
/// and the mark only moves forward. Stops with the log.
pub(super) async fn resident_indexer(
    store: DynStore,
    log: mpsc::WeakSender<Pending>,
    wake: std::sync::Arc<tokio::sync::Notify>,
) {
    loop {
        let asked = tokio::select! {
            _ = wake.notified() => true,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => false,
        };
        if log.upgrade().is_none() {
            return;
        }
        if asked {
            while index_residents(&store, 1).await > 0 {}
        }
    }
}

/// How often the recipients index catches up with the log.
const RECIPIENTS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Past this many unindexed entries the recipients index catches up even
/// under load (readers scan only a resident's own entries past the index,
/// through the resident index, so a lag costs them little).
const RECIPIENTS_MAX_LAG: u64 = 100_000;

/// Keeps the recipients index (art. 19) up to date beside the writer rather
/// than inside it, and when the log is quiet: the step decodes every entry
/// it reads, and inside the writer's loop, or under a burst, that work held
/// appends back (measured: audited partner reads 15 % slower inside the
/// writer, 8 % beside it every second). Stops with the log.
pub(super) async fn recipients_indexer(store: DynStore, log: mpsc::WeakSender<Pending>) {
    let mut tick = tokio::time::interval(RECIPIENTS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut last_size = None;
    loop {
        tick.tick().await;
        if log.upgrade().is_none() {
            return;
        }
        let Ok((upto, size)) = store.audit_recipients_cursor().await else {
            continue;
        };
        let quiet = last_size == Some(size);
        last_size = Some(size);
        if upto >= size || !(quiet || size - upto > RECIPIENTS_MAX_LAG) {
            continue;
        }
        loop {
            match index_recipients(&store, INDEX_STEP).await {
                Ok(covered) => {
                    failing = false;
                    if covered < INDEX_STEP {
                        break;
                    }
                }
                Err(e) => {
                    // Derived data: `recipients_of` scans what is not
                    // indexed. Said once per run of failures.
                    if !failing {
                        tracing::warn!(error = %e, "audit recipients index not updated");
                    }
                    failing = true;
                    break;
                }
            }
        }
    }
}

/// Whether an entry tells that a partner received a resident's data, and
/// which categories: an allowed read, or an inclusion in an extract.
pub fn received(entry: &super::AuditEntry) -> Option<(&str, &str, Vec<&str>)> {
    let resident = entry.resident_id.as_deref()?;
    let disclosed = entry.actor_role == "partner"
        && entry.decision == super::Decision::Allow
        && matches!(entry.action.as_str(), "data.read" | "extract.include");
    disclosed.then(|| {
        let categories = entry
            .category
            .as_deref()
            .map(|c| c.split(',').filter(|c| !c.is_empty()).collect())
            .unwrap_or_default();
        (resident, entry.actor_id.as_str(), categories)
    })
}

/// Reads up to `limit` committed entries past the recipients cursor into
/// the recipients index. Returns how many entries it covered.
pub async fn index_recipients(store: &DynStore, limit: u64) -> Result<u64, StorageError> {
    let (from, size) = store.audit_recipients_cursor().await?;
    let to = size.min(from.saturating_add(limit));
    if to <= from {
        return Ok(0);
    }
    let mut rows = Vec::new();
    for (idx, leaf) in store.audit_entries(from, to).await? {
        let Ok(entry) = super::AuditEntry::decode(&leaf) else {
            // `audit verify` reports it; the index must not stop on it.
            continue;
        };
        if let Some((resident, partner, mut categories)) = received(&entry) {
            // Without a category it still counts for whole-resident notices.
            if categories.is_empty() {
                categories.push("");
            }
            for c in categories {
                rows.push((
                    resident.to_string(),
                    partner.to_string(),
                    c.to_string(),
                    idx,
                ));
            }
        }
    }
    store.audit_add_recipients(from, to, &rows).await?;
    Ok(to - from)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::audit::AuditRecord;

    #[test]
    fn only_a_partners_allowed_reads_and_extract_inclusions_are_receipts() {
        let entry = |role: &str, action: &str, allow: bool, category: Option<&str>| {
            let r = AuditRecord::new("labo", role, action, 1)
                .resident(Some("r1"))
                .category(category.map(str::to_string));
            let r = if allow {
                r.allow("consent")
            } else {
                r.deny("no")
            };
            crate::audit::AuditEntry::decode(&r.encode(0).unwrap()).unwrap()
        };
        let read = entry("partner", "data.read", true, Some("contact,housing"));
        assert_eq!(
            received(&read),
            Some(("r1", "labo", vec!["contact", "housing"]))
        );
        assert_eq!(
            received(&entry("partner", "extract.include", true, None)),
            Some(("r1", "labo", vec![]))
        );
        assert_eq!(
            received(&entry("partner", "data.read", false, Some("contact"))),
            None
        );
        assert_eq!(
            received(&entry("aidant", "data.read", true, Some("contact"))),
            None
        );
        assert_eq!(
            received(&entry("partner", "residents.list", true, None)),
            None
        );
    }
}
