//! This process's metrics, in the Prometheus text format, for an operator's
//! scraper on a listener of their own (`metrics_listen`, never the public
//! one): requests by route template and status with their latency, the one
//! access decision's verdicts by reason code, the audit log's batches
//! (size, commit time, failures) and size, vault operations, the database
//! pool, and whether the keys are loaded.
//!
//! Every label is a route template, an HTTP method, a status, a verdict, a
//! reason code or an operation name: a closed set, never an id or a value,
//! so a scrape names no one and its size is bounded. Counters count this
//! process only (several processes sharing PostgreSQL are scraped each);
//! nothing here is ever read by a decision.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::AppState;
use crate::audit::AuditMetrics;

/// The methods a route may answer; any other is counted as `other`, so a
/// client cannot grow the label set.
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

/// The label of a request no route matched (its path is not a label: it is
/// whatever the client sent).
pub const UNMATCHED: &str = "unmatched";

/// The vault's operations, as counted (`coffre_vault_operations_total`).
#[derive(Clone, Copy, Debug)]
pub enum VaultOp {
    /// A value sealed (written or deposited).
    Seal,
    /// A value opened (read).
    Open,
    /// A resident's values erased (their data key destroyed or rows removed).
    Erase,
}

impl VaultOp {
    fn as_str(self) -> &'static str {
        match self {
            Self::Seal => "seal",
            Self::Open => "open",
            Self::Erase => "erase",
        }
    }
}

/// Why a scrape was not rendered.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Another scrape is being rendered (each reads the database once; a
    /// flood of scrapes must not take the pool from the service).
    #[error("another scrape is in progress")]
    Busy,
    #[error("metrics not encoded: {0}")]
    Encode(String),
}

/// The registry and the instruments the service records into.
pub struct Metrics {
    scraping: tokio::sync::Mutex<()>,
    registry: Registry,
    http_requests: IntCounterVec,
    http_seconds: HistogramVec,
    decisions: IntCounterVec,
    refusals: IntCounterVec,
    vault_operations: IntCounterVec,
    audit_tree_size: IntGauge,
    pool_connections: IntGaugeVec,
    keys_loaded: IntGauge,
    sealed: IntGauge,
    outbox: IntGaugeVec,
}

impl Metrics {
    /// The instruments, registered, with the audit log's own (`audit`).
    pub fn new(audit: &AuditMetrics) -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("coffre".into()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by method, route template and status.",
            ),
            &["method", "route", "status"],
        )?;
        let http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer an HTTP request, by method and route template.",
            )
            .buckets(prometheus::exponential_buckets(0.000_5, 2.0, 15)?),
            &["method", "route"],
        )?;
        let decisions = IntCounterVec::new(
            Opts::new(
                "access_decisions_total",
                "Verdicts of the one access decision, recorded, by verdict and reason code.",
            ),
            &["verdict", "reason"],
        )?;
        let refusals = IntCounterVec::new(
            Opts::new(
                "refusals_total",
                "Refusals recorded through service::access::deny (outside the one decision: a wrong code, a lockout…), by error code; a use case's own refusal entries are not counted here.",
            ),
            &["code"],
        )?;
        let vault_operations = IntCounterVec::new(
            Opts::new(
                "vault_operations_total",
                "Values sealed and opened, and residents' values erased, by the vault.",
            ),
            &["operation"],
        )?;
        let audit_tree_size = IntGauge::new(
            "audit_tree_size",
            "Entries in the audit log (sequenced: acknowledged, integrated into the tree or not), read at the scrape.",
        )?;
        let pool_connections = IntGaugeVec::new(
            Opts::new(
                "db_pool_connections",
                "Connections of the shared database pool, by state (idle, in use).",
            ),
            &["state"],
        )?;
        let keys_loaded = IntGauge::new(
            "keys_loaded",
            "1 when the vault's keys are loaded, 0 when every data route fails closed.",
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_seconds.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(refusals.clone()))?;
        registry.register(Box::new(vault_operations.clone()))?;
        registry.register(Box::new(audit_tree_size.clone()))?;
        registry.register(Box::new(pool_connections.clone()))?;
        let sealed = IntGauge::new(
            "vault_sealed",
            "1 while the vault waits for its custodians' shares (every data route answers 503 sealed).",
        )?;
        registry.register(Box::new(keys_loaded.clone()))?;
        registry.register(Box::new(sealed.clone()))?;
        let outbox = IntGaugeVec::new(
            Opts::new(
                "outbox_messages",
                "Residents' notices in the outbox, by state (pending, sent, failed, post), read at the scrape.",
            ),
            &["state"],
        )?;
        registry.register(Box::new(outbox.clone()))?;
        for collector in audit.collectors() {
            registry.register(collector)?;
        }
        Ok(Self {
            scraping: tokio::sync::Mutex::new(()),
            registry,
            http_requests,
            http_seconds,
            decisions,
            refusals,
            vault_operations,
            audit_tree_size,
            pool_connections,
            keys_loaded,
            sealed,
            outbox,
        })
    }

    /// One answered request. `route` is the matched route's template
    /// (`None`: no route matched).
    pub fn request(&self, method: &str, route: Option<&str>, status: u16, took: Duration) {
        let method = METHODS
            .iter()
            .find(|m| **m == method)
            .copied()
            .unwrap_or("other");
        let route = route.unwrap_or(UNMATCHED);
        self.http_requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.http_seconds
            .with_label_values(&[method, route])
            .observe(took.as_secs_f64());
    }

    /// A verdict of the one decision, once recorded. `reason` is a code of
    /// `domain::access` (a basis or a denial).
    pub fn decision(&self, allowed: bool, reason: &'static str) {
        let verdict = if allowed { "allow" } else { "deny" };
        self.decisions.with_label_values(&[verdict, reason]).inc();
    }

    /// A refusal recorded outside the decision; `code` is a catalogue code.
    pub fn refusal(&self, code: &'static str) {
        self.refusals.with_label_values(&[code]).inc();
    }

    pub fn vault(&self, op: VaultOp, values: u64) {
        self.vault_operations
            .with_label_values(&[op.as_str()])
            .inc_by(values);
    }

    /// The scrape: the gauges read now, then every family in the text
    /// format. The log's size is read from the database (the log is
    /// shared by every process).
    pub async fn render(&self, state: &AppState) -> Result<String, ScrapeError> {
        let Ok(_one_at_a_time) = self.scraping.try_lock() else {
            return Err(ScrapeError::Busy);
        };
        match state.audit.size().await {
            Ok(size) => self
                .audit_tree_size
                .set(i64::try_from(size).unwrap_or(i64::MAX)),
            Err(e) => tracing::warn!(error = %e, "metrics: audit log size not read"),
        }
        let (open, idle) = state.store.pool_usage();
        let idle = i64::try_from(idle).unwrap_or(i64::MAX);
        self.pool_connections.with_label_values(&["idle"]).set(idle);
        self.pool_connections
            .with_label_values(&["in_use"])
            .set((i64::from(open) - idle).max(0));
        self.keys_loaded.set(i64::from(state.vault().is_ok()));
        self.sealed.set(i64::from(state.is_sealed()));
        match state.store.outbox_counts().await {
            Ok(c) => {
                for (name, n) in [
                    ("pending", c.pending),
                    ("sent", c.sent),
                    ("failed", c.failed),
                    ("post", c.post),
                    ("held", c.held),
                    ("muted", c.muted),
                ] {
                    self.outbox.with_label_values(&[name]).set(n);
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: outbox not read"),
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| ScrapeError::Encode(e.to_string()))?;
        String::from_utf8(out).map_err(|e| ScrapeError::Encode(e.to_string()))
    }
}
