//! What residents are told, as they choose it (BRIEF C13): their
//! preferences event by event (`/moi/notifications`), and the weekly
//! digest of accesses for those who asked for it. The messages themselves
//! are written by the acts they report (in the act's transaction) and
//! delivered by `notify`, which applies these preferences.
//!
//! Never: let a resident turn off what guards them or what the law says
//! they must be told (`NoticeEvent::may_be_turned_off`); put a personal
//! value in a message (the digest carries a count).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::access::own_data;
use super::{Audited, Caller};
use crate::AppState;
use crate::audit::AuditEntry;
use crate::domain::Timestamp;
use crate::domain::notice::{Channel, NoticeEvent, week_of};
use crate::error::{AppResult, ErrorCode};
use crate::storage::OutboxMessage;

/// One event's choice.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventPreference {
    /// The event's stable code (`mandate.created`, `extract.included`…).
    pub event: String,
    /// `email` (a letter when there is no usable address), `post` or `off`.
    pub channel: String,
    /// False for mandates, answers to rights requests and a source's first
    /// deposit: they always reach the resident.
    pub may_be_turned_off: bool,
    /// The channels the resident may choose.
    pub channels: Vec<String>,
}

/// Every event, with the resident's choice (or its default).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NoticePreferences {
    pub events: Vec<EventPreference>,
}

/// Choices to record: event code → channel. Events left out keep theirs.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesRequest {
    #[schema(value_type = BTreeMap<String, String>)]
    pub channels: BTreeMap<String, String>,
}

fn view(chosen: &[(NoticeEvent, Channel)]) -> NoticePreferences {
    NoticePreferences {
        events: NoticeEvent::ALL
            .into_iter()
            .map(|e| {
                let channel = e.channel(chosen.iter().find(|(c, _)| *c == e).map(|(_, ch)| *ch));
                EventPreference {
                    event: e.as_str().to_string(),
                    channel: channel.as_str().to_string(),
                    may_be_turned_off: e.may_be_turned_off(),
                    channels: Channel::ALL
                        .into_iter()
                        .filter(|c| e.allows(*c))
                        .map(|c| c.as_str().to_string())
                        .collect(),
                }
            })
            .collect(),
    }
}

/// The resident's preferences.
pub async fn my_preferences(
    state: &AppState,
    caller: &Caller,
) -> AppResult<Audited<NoticePreferences>> {
    let index = own_data(state, caller, "notice.preferences.read", None).await?;
    let me = caller.resident_id()?;
    let chosen = state.store.notice_preferences(&me).await?;
    Ok(Audited::new(index, view(&chosen)))
}

/// Parses every choice before anything is recorded: an unknown event or
/// channel, or `off` for an event that cannot be turned off, refuses the
/// whole request (`invalid_notice_preference`) and changes nothing.
pub fn parse_choices(req: &PreferencesRequest) -> AppResult<Vec<(NoticeEvent, Channel)>> {
    let mut out = Vec::with_capacity(req.channels.len());
    for (event, channel) in &req.channels {
        let Some(e) = NoticeEvent::parse(event) else {
            return Err(ErrorCode::InvalidNoticePreference.with(format!("unknown event `{event}`")));
        };
        let Some(c) = Channel::parse(channel) else {
            return Err(ErrorCode::InvalidNoticePreference.with(format!(
                "unknown channel for `{event}` (email, post or off)"
            )));
        };
        if !e.allows(c) {
            return Err(
                ErrorCode::InvalidNoticePreference.with(format!("`{event}` cannot be turned off"))
            );
        }
        out.push((e, c));
    }
    Ok(out)
}

/// Records the resident's choices (audited `notice.preferences` before
/// they are stored) and answers them all.
pub async fn set_preferences(
    state: &AppState,
    caller: &Caller,
    req: &PreferencesRequest,
    now: Timestamp,
) -> AppResult<Audited<NoticePreferences>> {
    let choices = parse_choices(req)?;
    let index = own_data(state, caller, "notice.preferences", None).await?;
    let me = caller.resident_id()?;
    state
        .store
        .set_notice_preferences(&me, &choices, now)
        .await?;
    let chosen = state.store.notice_preferences(&me).await?;
    Ok(Audited::new(index, view(&chosen)))
}

/// Entries read at a time when counting a resident's week.
const DIGEST_PAGE: i64 = 200;
/// Residents read at a time.
const DIGEST_RESIDENTS: i64 = 500;

/// Whether an entry counts in the digest: an act about the resident by
/// someone else (a partner, an aidant, the DPO, the DPO reading their
/// address for a letter…), allowed or refused; not the service's own
/// notifier telling them (its read of their address for the digest itself
/// would make every week's digest count the last one).
fn counts_in_digest(e: &AuditEntry, resident: &str) -> bool {
    e.actor_id != resident && e.actor_id != NOTIFIER
}

/// The actor id of the service's own delivery of messages.
pub const NOTIFIER: &str = "notifier";

/// Writes the digest of the week before `now`'s week for every resident
/// who asked for it and whose data others touched in it: one message per
/// resident and week (its id says which, so a second run, or a second
/// process, adds nothing, and a resident already told this week is not
/// read again). A resident whose entries cannot be read is skipped and
/// logged: one damaged entry stops no one else's digest, nor the rest of
/// the hourly job. Returns how many were written.
pub async fn weekly_digests(state: &AppState, now: Timestamp) -> AppResult<u64> {
    let (week, this_monday) = week_of(now);
    let from = this_monday - 7 * 86_400;
    let told_suffix = format!("-{}", week - 1);
    let mut written = 0;
    let mut after = String::new();
    loop {
        let residents = state
            .store
            .residents_opted_in(
                NoticeEvent::AccessesDigest,
                "digest-",
                &told_suffix,
                &after,
                DIGEST_RESIDENTS,
            )
            .await?;
        let Some(last) = residents.last() else { break };
        after = last.as_str().to_string();
        for resident in &residents {
            match digest_of(state, resident, from, this_monday, week, now).await {
                Ok(true) => written += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(resident = %resident, error = %e, "weekly digest not written")
                }
            }
        }
    }
    Ok(written)
}

/// One resident's digest of `[from, to)`, written if anyone else touched
/// their data then; true when written.
async fn digest_of(
    state: &AppState,
    resident: &crate::domain::ResidentId,
    from: Timestamp,
    to: Timestamp,
    week: i64,
    now: Timestamp,
) -> AppResult<bool> {
    let mut count: u64 = 0;
    let mut before = u64::MAX;
    // Newest first; entries are stamped when decided and indexed when
    // committed, so a few may sit out of time order near the boundary:
    // the scan stops a day past it.
    'entries: loop {
        let rows = state
            .store
            .audit_entries_of(resident, before, DIGEST_PAGE)
            .await?;
        let Some((oldest, _)) = rows.last() else {
            break;
        };
        let full = rows.len() as i64 == DIGEST_PAGE;
        before = u64::try_from(*oldest).unwrap_or(0);
        for (idx, leaf) in &rows {
            let e = AuditEntry::decode(leaf)
                .map_err(|err| crate::error::AppError::internal(format!("entry {idx}: {err}")))?;
            if e.timestamp < from - 86_400 {
                break 'entries;
            }
            if e.timestamp >= from && e.timestamp < to && counts_in_digest(&e, resident.as_str()) {
                count += 1;
            }
        }
        if !full {
            break;
        }
    }
    if count == 0 {
        return Ok(false);
    }
    let mut message = OutboxMessage::new(
        NoticeEvent::AccessesDigest,
        resident,
        &format!("week-{}", week - 1),
        &count.to_string(),
        now,
    );
    message.id = format!("digest-{}-{}", resident.as_str(), week - 1);
    Ok(state.store.outbox_insert_once(&message).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Decision;

    fn entry(actor: &str, role: &str, on_behalf: Option<&str>) -> AuditEntry {
        AuditEntry {
            index: 0,
            timestamp: 0,
            actor_id: actor.into(),
            actor_role: role.into(),
            on_behalf_of: on_behalf.map(str::to_string),
            structure_id: None,
            action: "data.read".into(),
            resident_id: Some("r1".into()),
            category: None,
            purpose: None,
            legal_basis: None,
            decision: Decision::Allow,
            reason: String::new(),
            request_id: None,
        }
    }

    #[test]
    fn the_digest_counts_others_not_the_resident_nor_the_notifier() {
        assert!(!counts_in_digest(&entry("r1", "resident", None), "r1"));
        assert!(!counts_in_digest(
            &entry("notifier", "notifier", None),
            "r1"
        ));
        assert!(counts_in_digest(&entry("p1", "partner", None), "r1"));
        assert!(counts_in_digest(&entry("a1", "aidant", Some("r1")), "r1"));
        assert!(counts_in_digest(&entry("dpo", "dpo", None), "r1"));
        // The DPO reading an address for a letter is someone reading it.
        assert!(counts_in_digest(&entry("dpo-1", "notifier", None), "r1"));
    }

    #[test]
    fn off_is_refused_for_what_cannot_be_turned_off_and_nothing_is_kept() {
        let req = PreferencesRequest {
            channels: [
                ("extract.included".to_string(), "off".to_string()),
                ("mandate.created".to_string(), "off".to_string()),
            ]
            .into(),
        };
        assert!(parse_choices(&req).is_err());
        let ok = PreferencesRequest {
            channels: [
                ("extract.included".to_string(), "off".to_string()),
                ("mandate.created".to_string(), "post".to_string()),
            ]
            .into(),
        };
        assert_eq!(parse_choices(&ok).map(|v| v.len()).ok(), Some(2));
        let v = view(&[(NoticeEvent::MandateCreated, Channel::Off)]);
        // A stored choice the event does not allow is not shown as held.
        assert!(
            v.events
                .iter()
                .any(|e| e.event == "mandate.created" && e.channel == "email")
        );
    }
}
