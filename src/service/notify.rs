//! Telling residents what is done in their name (BRIEF C13): the delivery
//! of the outbox's messages by e-mail.
//!
//! Owns: the SMTP transport (`lettre`), the delivery of due messages
//! (claimed under a lease, so that several processes never take one
//! message at once), retries with backoff, and the outbox's counts.
//!
//! Each message is delivered in this order: the notifier's decision
//! (actor `notifier`, purpose `information-des-personnes`, category
//! `contact`) is recorded in the audit log, then the contact address is
//! opened, then the message is sent. Its `Message-ID` is made of the
//! outbox id, so a retry after a lost acknowledgement is the same message.
//!
//! Never: put a personal value in a message body, a log line or an error
//! (the address is only in the envelope and the `To` header; an SMTP
//! server's reply, which may quote it, is reduced to a code).

use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::AppState;
use crate::domain::access::INFORMATION_PURPOSE;
use crate::domain::notice::{MAX_ATTEMPTS, render, retry_after};
use crate::domain::{Role, Timestamp};
use crate::error::{AppError, AppResult};
use crate::service::access::{AccessRequest, decide};
use crate::storage::{OutboxClaim, OutboxCounts};

/// A worker's lease on the messages it claimed (seconds): long enough for
/// an SMTP exchange; a worker that died is relieved after it.
pub const LEASE_SECS: i64 = 300;
/// Messages claimed at a time by one worker.
pub const BATCH: i64 = 20;

/// The SMTP relay and the From address.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The right-hand side of Message-IDs.
    domain: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// The configured relay, or `None` when `smtp_url` is unset (messages
    /// then stay queued). A bad URL is an error naming no secret.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Mailer>, String> {
        let Some(url) = &config.smtp_url else {
            return Ok(None);
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
            .map_err(|_| "smtp_url: not a usable SMTP URL".to_string())?
            .timeout(Some(Duration::from_secs(20)))
            .build();
        let from: Mailbox = config
            .smtp_from
            .parse()
            .map_err(|_| "smtp_from: not an e-mail address".to_string())?;
        let domain = from.email.domain().to_string();
        Ok(Some(Mailer {
            transport,
            from,
            domain,
        }))
    }
}

/// `Auto-Submitted: auto-generated` (RFC 3834): no auto-reply loops.
#[derive(Clone)]
struct AutoSubmitted;

impl lettre::message::header::Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_string())
    }
}

/// What one run of the worker did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryReport {
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
    /// No e-mail address: left for the postal batch.
    pub post: u64,
}

/// Delivers the messages due at `now` (one batch). Without a mailer,
/// nothing is claimed: messages wait for one.
pub async fn deliver_due(
    state: &AppState,
    mailer: &Mailer,
    now: Timestamp,
) -> AppResult<DeliveryReport> {
    let mut report = DeliveryReport::default();
    for claim in state.store.outbox_claim(now, LEASE_SECS, BATCH).await? {
        match deliver_one(state, mailer, &claim, now).await {
            Ok(Outcome::Sent) => {
                state.store.outbox_sent(&claim.id, now).await?;
                report.sent += 1;
            }
            Ok(Outcome::Post) => {
                state
                    .store
                    .outbox_settle(&claim.id, "post", "no_email")
                    .await?;
                report.post += 1;
            }
            Ok(Outcome::Gone(code)) => {
                state.store.outbox_settle(&claim.id, "failed", code).await?;
                report.failed += 1;
            }
            Err(code) if claim.attempts >= MAX_ATTEMPTS => {
                tracing::warn!(message = %claim.id, error = code, "notice given up");
                state.store.outbox_settle(&claim.id, "failed", code).await?;
                report.failed += 1;
            }
            Err(code) => {
                let next = now + retry_after(claim.attempts);
                tracing::info!(message = %claim.id, error = code, next, "notice not delivered; will retry");
                state.store.outbox_retry(&claim.id, next, code).await?;
                report.retried += 1;
            }
        }
    }
    Ok(report)
}

enum Outcome {
    Sent,
    /// No e-mail address: a letter.
    Post,
    /// Nobody to tell any more (erased), or the address refused for good.
    Gone(&'static str),
}

/// One message. `Err` is a stable code of a failure worth a retry.
async fn deliver_one(
    state: &AppState,
    mailer: &Mailer,
    claim: &OutboxClaim,
    now: Timestamp,
) -> Result<Outcome, &'static str> {
    // The decision first, recorded before the address is opened.
    let request = AccessRequest {
        resident_id: Some(claim.resident_id.as_str()),
        category: Some("contact"),
        purpose_id: Some(INFORMATION_PURPOSE),
        request_id: Some(format!("outbox:{}", claim.id)),
        ..AccessRequest::new("notifier", Role::Notifier, "notice.address")
    };
    match decide(state, request).await {
        Ok(_) => {}
        Err(AppError::Coded { code, .. }) if code.status().as_u16() == 403 => {
            return Ok(Outcome::Gone("resident_gone"));
        }
        Err(_) => return Err("audit_or_store_unavailable"),
    }
    let vault = state.vault().map_err(|_| "vault_unavailable")?;
    let contact = state
        .categories
        .category("contact")
        .map_err(|_| "no_contact_category")?;
    let record = vault
        .read_current_category(&claim.resident_id, &contact)
        .await
        .map_err(|_| "vault_read_failed")?;
    let Some(to) = record
        .as_ref()
        .and_then(|r| r.fields.get("email"))
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse::<lettre::Address>().ok())
    else {
        return Ok(Outcome::Post);
    };
    let login = state
        .config
        .public_url
        .join("/moi/mandats")
        .map(|u| u.to_string())
        .unwrap_or_else(|_| state.config.public_url.to_string());
    let text = render(claim.event, &claim.actor_name, claim.created_at, &login);
    let date = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(now).unwrap_or(0));
    let message = Message::builder()
        .from(mailer.from.clone())
        .to(Mailbox::new(None, to))
        .subject(text.subject)
        .date(date)
        .message_id(Some(format!("<{}@{}>", claim.id, mailer.domain)))
        .header(AutoSubmitted)
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(text.text),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(text.html),
                ),
        )
        .map_err(|_| "message_build_failed")?;
    match mailer.transport.send(message).await {
        Ok(_) => Ok(Outcome::Sent),
        // The reply may quote the address: only its class is kept.
        Err(e) if e.is_permanent() => Ok(Outcome::Gone("smtp_rejected")),
        Err(_) => Err("smtp_unavailable"),
    }
}

/// The outbox's counts (`coffre outbox status`, metrics, the DPO).
pub async fn counts(state: &AppState) -> AppResult<OutboxCounts> {
    Ok(state.store.outbox_counts().await?)
}
