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
use crate::domain::notice::{Channel, MAX_ATTEMPTS, render, retry_after};
use crate::domain::{Role, Timestamp};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::service::access::{AccessRequest, decide};
use crate::storage::{OutboxClaim, OutboxCounts};

/// A worker's lease on the messages it claimed (seconds): longer than a
/// whole batch at the per-message bound below, so that a live worker never
/// sees its lease lapse; a worker that died is relieved after it. (A worker
/// that dies between an SMTP acknowledgement and marking the message sent
/// makes the next one send it again, with the same Message-ID: delivery is
/// at least once.)
pub const LEASE_SECS: i64 = 1800;
/// Messages claimed at a time by one worker.
pub const BATCH: i64 = 20;
/// The longest one message may take, SMTP exchange included.
const PER_MESSAGE: Duration = Duration::from_secs(60);

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

/// The register and the policy let the notifier read addresses (else
/// every message would be refused): the one-line reason when they do not.
pub fn check_ready(state: &AppState) -> Result<(), String> {
    if state.register.get(INFORMATION_PURPOSE).is_none()
        || !crate::service::access::role_may(state, Role::Notifier.as_str(), "notice.address")
    {
        return Err(format!(
            "smtp_url is set but the register has no purpose `{INFORMATION_PURPOSE}` or the policy no `p, notifier, notice.address`: residents' notices could not be sent"
        ));
    }
    Ok(())
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
    /// No usable e-mail address, or the resident prefers post: left for
    /// the postal batch.
    pub post: u64,
    /// The resident turned these messages off: not sent, nothing opened.
    pub muted: u64,
}

/// Delivers the messages due at `now` (one batch). Without a mailer,
/// nothing is claimed: messages wait for one.
pub async fn deliver_due(
    state: &AppState,
    mailer: &Mailer,
    now: Timestamp,
) -> AppResult<DeliveryReport> {
    let mut report = DeliveryReport::default();
    let token = uuid::Uuid::new_v4().to_string();
    for claim in state
        .store
        .outbox_claim(&token, now, LEASE_SECS, BATCH)
        .await?
    {
        let outcome = tokio::time::timeout(PER_MESSAGE, deliver_one(state, mailer, &claim, now))
            .await
            .unwrap_or(Outcome::Retry("timeout", true));
        match outcome {
            Outcome::Sent => {
                if state.store.outbox_sent(&claim, now).await? {
                    report.sent += 1;
                } else {
                    tracing::warn!(notice = %claim.id, "a notice was sent after its lease lapsed");
                }
            }
            Outcome::Post(code) => {
                state.store.outbox_settle(&claim, "post", code).await?;
                report.post += 1;
            }
            Outcome::Muted => {
                state
                    .store
                    .outbox_settle(&claim, "muted", "turned_off")
                    .await?;
                report.muted += 1;
            }
            Outcome::Gone(code) => {
                state.store.outbox_settle(&claim, "failed", code).await?;
                report.failed += 1;
            }
            Outcome::Retry(code, true) if claim.attempts >= MAX_ATTEMPTS => {
                tracing::warn!(notice = %claim.id, error = code, "notice given up");
                state.store.outbox_settle(&claim, "failed", code).await?;
                report.failed += 1;
            }
            Outcome::Retry(code, counted) => {
                let next = now + retry_after(claim.attempts);
                tracing::warn!(notice = %claim.id, error = code, next, "notice not delivered; will retry");
                state
                    .store
                    .outbox_retry(&claim, next, code, counted)
                    .await?;
                report.retried += 1;
            }
        }
    }
    Ok(report)
}

enum Outcome {
    Sent,
    /// The resident turned this event's messages off.
    Muted,
    /// A letter instead (a stable code says why).
    Post(&'static str),
    /// Nobody to tell any more (erased), or a message that can never be
    /// built.
    Gone(&'static str),
    /// Try again later; `false`: the failure was ours (audit log, store,
    /// vault), so the attempt is not counted against the message.
    Retry(&'static str, bool),
}

/// The service's public address, which a message's link starts with.
fn public_base(state: &AppState) -> String {
    state.config.public_url.to_string()
}

/// The e-mail address of a contact version, if it is one a relay may be
/// given (no domain literal: `x@[10.0.0.5]` would make the relay deliver
/// to an internal host).
fn address_of(fields: &serde_json::Map<String, serde_json::Value>) -> Option<lettre::Address> {
    usable_address(fields.get("email")?.as_str()?)
}

/// `text` as an address a relay may be given: a domain name of at least
/// two labels, never an IP address, bracketed or not (`x@[10.0.0.5]`,
/// `x@10.0.0.5`, `x@localhost` would make the relay deliver to an internal
/// host).
pub fn usable_address(text: &str) -> Option<lettre::Address> {
    let a: lettre::Address = text.parse().ok()?;
    let domain = a.domain();
    let bare = domain.trim_start_matches('[').trim_end_matches(']');
    let is_ip = bare.parse::<std::net::IpAddr>().is_ok()
        || bare
            .strip_prefix("IPv6:")
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok());
    let named = domain.contains('.')
        && !domain.starts_with('[')
        && !domain.ends_with('.')
        && domain
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.chars().any(|c| c.is_ascii_alphabetic()));
    (named && !is_ip).then_some(a)
}

/// One message.
async fn deliver_one(
    state: &AppState,
    mailer: &Mailer,
    claim: &OutboxClaim,
    now: Timestamp,
) -> Outcome {
    // The resident's choice first: a message turned off opens nothing. A
    // choice the event does not allow (`off` for a mandate) is not one.
    let chosen = match state
        .store
        .notice_preference(&claim.resident_id, claim.event)
        .await
    {
        Ok(c) => claim.event.channel(c),
        Err(_) => return Outcome::Retry("store_unavailable", false),
    };
    // The digest's default is off, but it is written only for those who
    // asked for it: a choice withdrawn since mutes it here.
    if chosen == Channel::Off {
        return Outcome::Muted;
    }
    // The decision first, recorded before the address is opened.
    let request = AccessRequest {
        resident_id: Some(claim.resident_id.as_str()),
        category: Some("contact"),
        purpose_id: Some(INFORMATION_PURPOSE),
        request_id: Some(format!("outbox:{}", claim.id)),
        ..AccessRequest::new(
            crate::service::notices::NOTIFIER,
            Role::Notifier,
            "notice.address",
        )
    };
    match decide(state, request).await {
        Ok(_) => {}
        Err(AppError::Coded {
            code: ErrorCode::ResidentNotFound,
            ..
        }) => return Outcome::Gone("resident_gone"),
        // Any other refusal is a misconfigured register or policy: loud,
        // and the message waits for the fix.
        Err(AppError::Coded { code, .. }) if code.status().as_u16() == 403 => {
            tracing::error!(
                reason = code.code(),
                "the notifier was refused: check the register (information-des-personnes) and the policy (notifier, notice.address)"
            );
            return Outcome::Retry("notifier_refused", false);
        }
        Err(_) => return Outcome::Retry("audit_or_store_unavailable", false),
    }
    let Ok(vault) = state.vault() else {
        return Outcome::Retry("vault_unavailable", false);
    };
    let Ok(contact) = state.categories.category("contact") else {
        return Outcome::Gone("no_contact_category");
    };
    // Newest first. The address the resident had before the act is told,
    // not only the one held now: an aidant who changed it right after
    // creating the mandate must not be the only one to hear of it.
    let Ok(history) = vault.read_history(&claim.resident_id, &contact).await else {
        return Outcome::Retry("vault_read_failed", false);
    };
    let current = history.first();
    // Post when the resident prefers it (for this event, or in their
    // contact record) and has a postal address to write to; without one,
    // e-mail still reaches them (a message that cannot be turned off is
    // never parked where it cannot be printed).
    let prefers_post = chosen == Channel::Post
        || current
            .and_then(|r| r.fields.get("preferred_channel"))
            .and_then(|v| v.as_str())
            == Some("post");
    let has_postal = current
        .and_then(|r| r.fields.get("postal_address"))
        .and_then(|v| v.as_str())
        .is_some_and(|a| !a.trim().is_empty());
    if prefers_post && has_postal {
        return Outcome::Post("prefers_post");
    }
    // The version held before the act's second, every version of that
    // very second (their order within it is unknown), and the current one.
    let before = history.iter().find(|r| r.created_at < claim.created_at);
    let same_second = history.iter().filter(|r| r.created_at == claim.created_at);
    let mut to: Vec<lettre::Address> = Vec::new();
    for version in before.into_iter().chain(same_second).chain(current) {
        if let Some(a) = address_of(&version.fields)
            && !to.contains(&a)
        {
            to.push(a);
        }
    }
    if to.is_empty() {
        // Neither address: the DPO sees it failed, rather than a letter
        // that could never be printed.
        return if has_postal {
            Outcome::Post("no_email")
        } else {
            Outcome::Gone("no_address")
        };
    }
    let text = render(
        claim.event,
        &claim.actor_name,
        claim.created_at,
        &public_base(state),
    );
    let Some(message) = compose(mailer, to, text, &claim.id, now) else {
        return Outcome::Gone("message_build_failed");
    };
    send(mailer, message).await
}

/// A message of coffre's: From, To, subject, Date, a `Message-ID` made of
/// `id` (a retry is the same message), `Auto-Submitted`, plain text and
/// HTML.
fn compose(
    mailer: &Mailer,
    to: Vec<lettre::Address>,
    text: crate::domain::notice::Rendered,
    id: &str,
    now: Timestamp,
) -> Option<Message> {
    let date = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(now).unwrap_or(0));
    let mut builder = Message::builder()
        .from(mailer.from.clone())
        .subject(text.subject)
        .date(date)
        .message_id(Some(format!("<{id}@{}>", mailer.domain)))
        .header(AutoSubmitted);
    for a in to {
        builder = builder.to(Mailbox::new(None, a));
    }
    builder
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
        .ok()
}

async fn send(mailer: &Mailer, message: Message) -> Outcome {
    match mailer.transport.send(message).await {
        Ok(_) => Outcome::Sent,
        // A relay's refusal (5xx) is retried too: a bad login, a sender
        // the relay does not accept or TLS it requires would otherwise
        // fail every message at once; the retries are logged, and the
        // message is given up after MAX_ATTEMPTS. The reply may quote the
        // address: only its class is kept.
        Err(e) if e.is_permanent() => Outcome::Retry("smtp_rejected", true),
        Err(_) => Outcome::Retry("smtp_unavailable", true),
    }
}

/// E-mails the alerts due to their structures' mailboxes (one batch): the
/// alert's kind, its date and the link to the référent's page, no name.
/// Claimed under a lease as the residents' messages are; a structure whose
/// mailbox was removed since gets none (`failed`).
pub async fn deliver_alerts(
    state: &AppState,
    mailer: &Mailer,
    now: Timestamp,
) -> AppResult<DeliveryReport> {
    let mut report = DeliveryReport::default();
    let token = uuid::Uuid::new_v4().to_string();
    let mut structures: std::collections::HashMap<String, (Option<lettre::Address>, String)> =
        std::collections::HashMap::new();
    for claim in state
        .store
        .alert_mail_claim(&token, now, LEASE_SECS, BATCH)
        .await?
    {
        // The structure's mailbox and name, read once per structure of the
        // batch; a store that cannot be read is a retry of this alert, not
        // the end of the batch (whose other claims would wait their lease).
        let key = claim.structure_id.to_string();
        if !structures.contains_key(&key) {
            match structure_mail(state, &claim.structure_id).await {
                Ok(found) => {
                    structures.insert(key.clone(), found);
                }
                Err(e) => {
                    tracing::warn!(alert = %claim.id, error = %e, "alert e-mail: structure unreadable")
                }
            }
        }
        let outcome = match structures.get(&key) {
            None => Outcome::Retry("store_unavailable", false),
            Some((None, _)) => Outcome::Gone("no_mailbox"),
            Some((Some(to), name)) => {
                let text = crate::domain::notice::render_alert(
                    claim.kind,
                    name,
                    claim.created_at,
                    &public_base(state),
                );
                match compose(
                    mailer,
                    vec![to.clone()],
                    text,
                    &format!("alert-{}", claim.id),
                    now,
                ) {
                    Some(message) => tokio::time::timeout(PER_MESSAGE, send(mailer, message))
                        .await
                        .unwrap_or(Outcome::Retry("timeout", true)),
                    None => Outcome::Gone("message_build_failed"),
                }
            }
        };
        match outcome {
            Outcome::Sent => {
                state.store.alert_mail_settle(&claim, "sent", now).await?;
                report.sent += 1;
            }
            Outcome::Retry(code, _) if claim.mail_attempts < MAX_ATTEMPTS => {
                tracing::warn!(alert = %claim.id, error = code, "alert e-mail not delivered; will retry");
                state
                    .store
                    .alert_mail_settle(&claim, "pending", now + retry_after(claim.mail_attempts))
                    .await?;
                report.retried += 1;
            }
            _ => {
                state.store.alert_mail_settle(&claim, "failed", now).await?;
                report.failed += 1;
            }
        }
    }
    Ok(report)
}

/// A structure's alert mailbox (when a relay may be given it) and name.
async fn structure_mail(
    state: &AppState,
    structure: &crate::domain::StructureId,
) -> Result<(Option<lettre::Address>, String), crate::storage::StorageError> {
    let mailbox = state
        .store
        .alert_rules(structure)
        .await?
        .and_then(|r| r.alert_email)
        .and_then(|a| usable_address(&a));
    let name = state
        .store
        .find_structure(structure)
        .await?
        .map(|s| s.name)
        .unwrap_or_default();
    Ok((mailbox, name))
}

/// A postal letter, as the DPO prints it: the address block and the text.
#[derive(Debug, Clone)]
pub struct Letter {
    pub id: String,
    /// The addressee's name (from `identity`), then the postal address's
    /// lines (from `contact`).
    pub address: Vec<String>,
    pub text: crate::domain::notice::Rendered,
}

/// At most this many letters a batch (a page to print).
pub const LETTERS_PER_BATCH: i64 = 30;

/// The letters waiting to be printed, for the DPO (`/dpo/courriers`). Each
/// letter's name and address are read through the notifier's decision
/// (purpose `information-des-personnes`, categories `identity` and
/// `contact`), each recorded before the record is opened. A resident with
/// no postal address is left out (and counted).
pub async fn letters(
    state: &AppState,
    caller: &crate::service::Caller,
) -> AppResult<(Vec<Letter>, usize)> {
    crate::service::access::role_action(state, caller, "notice.letters").await?;
    let vault = state.vault()?;
    let mut out = Vec::new();
    let mut without_address = 0;
    // A few more than a batch: a letter whose address went meanwhile is
    // left out without holding back those after it.
    for claim in state.store.outbox_letters(LETTERS_PER_BATCH * 2).await? {
        if out.len() as i64 >= LETTERS_PER_BATCH {
            break;
        }
        // The DPO reads, as the notifier (the service's information duty),
        // each decision recorded before the records are opened; a refusal
        // (an erased resident) leaves that letter out, an unavailable
        // audit log stops the batch.
        let mut refused = false;
        for category in ["identity", "contact"] {
            let asked = decide(
                state,
                AccessRequest {
                    resident_id: Some(claim.resident_id.as_str()),
                    category: Some(category),
                    purpose_id: Some(INFORMATION_PURPOSE),
                    request_id: caller.request_id.clone(),
                    ..AccessRequest::new(&caller.actor_id, Role::Notifier, "notice.address")
                },
            )
            .await;
            match asked {
                Ok(_) => {}
                Err(AppError::Coded { code, .. }) if code.status().as_u16() == 403 => {
                    refused = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if refused {
            without_address += 1;
            continue;
        }
        let page = vault
            .read_page(
                std::slice::from_ref(&claim.resident_id),
                &["identity".to_string(), "contact".to_string()],
            )
            .await?;
        let records = page.get(&claim.resident_id);
        let field = |category: &str, name: &str| {
            records
                .and_then(|rs| rs.iter().find(|r| r.category == category))
                .and_then(|r| r.fields.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let Some(postal) = field("contact", "postal_address") else {
            without_address += 1;
            continue;
        };
        let name = [
            field("identity", "given_name"),
            field("identity", "family_name"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        let mut address = vec![name];
        address.extend(postal.split(',').map(|l| l.trim().to_string()));
        out.push(Letter {
            id: claim.id.clone(),
            address,
            text: render(
                claim.event,
                &claim.actor_name,
                claim.created_at,
                &public_base(state),
            ),
        });
    }
    Ok((out, without_address))
}

/// The DPO marks printed letters as posted: each one audited
/// (`notice.letter_posted`, by the DPO, about its resident) before it is
/// marked. Ids not waiting for a letter are ignored. Answers how many.
pub async fn letters_posted(
    state: &AppState,
    caller: &crate::service::Caller,
    ids: &[String],
    now: Timestamp,
) -> AppResult<u64> {
    crate::service::access::role_action(state, caller, "notice.letters").await?;
    let waiting = state.store.outbox_letters(LETTERS_PER_BATCH * 4).await?;
    let mut done = 0;
    for claim in waiting.iter().filter(|c| ids.contains(&c.id)) {
        state
            .audit
            .record(
                crate::audit::AuditRecord::new(
                    &caller.actor_id,
                    caller.role.as_str(),
                    "notice.letter_posted",
                    now,
                )
                .resident(claim.resident_id.as_str())
                .request(caller.request_id.clone())
                .allow("role"),
            )
            .await?;
        if state.store.outbox_posted(&claim.id, now).await? {
            done += 1;
        }
    }
    Ok(done)
}

/// The outbox's counts (`coffre outbox status`, metrics, the DPO).
pub async fn counts(state: &AppState) -> AppResult<OutboxCounts> {
    Ok(state.store.outbox_counts().await?)
}

#[cfg(test)]
mod tests {
    use super::usable_address;

    #[test]
    fn only_named_domains_are_given_to_the_relay() {
        assert!(usable_address("awa@example.org").is_some());
        assert!(usable_address("alertes@ccas.mairie.example").is_some());
        for bad in [
            "x@[10.0.0.5]",
            "x@10.0.0.5",
            "x@[IPv6:::1]",
            "x@localhost",
            "x@intranet",
            "x@example.",
            "x@127.0.0.1",
            "pas une adresse",
            "x@example.org\r\nBcc: y@example.org",
        ] {
            assert!(usable_address(bad).is_none(), "{bad}");
        }
    }
}
