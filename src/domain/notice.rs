//! Messages to residents about what happens in their name (BRIEF C13):
//! the events, and the text of a message, French first then English.
//!
//! A message carries no personal value: the event, its date (Paris time),
//! who acted (a structure's or a partner's public name) and where to log
//! in. Never the resident's name, data, or the content of a category.

use chrono::TimeZone;

/// What a message reports. Mandate events cannot be turned off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoticeEvent {
    /// An aidant created a mandate in the resident's name.
    MandateCreated,
    /// A mandate in the resident's name was renewed.
    MandateRenewed,
    /// A mandate in the resident's name was revoked (by the resident, the
    /// aidant or the structure's référent).
    MandateRevoked,
}

impl NoticeEvent {
    pub const ALL: [NoticeEvent; 3] = [
        NoticeEvent::MandateCreated,
        NoticeEvent::MandateRenewed,
        NoticeEvent::MandateRevoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NoticeEvent::MandateCreated => "mandate.created",
            NoticeEvent::MandateRenewed => "mandate.renewed",
            NoticeEvent::MandateRevoked => "mandate.revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }

    fn texts(self) -> (&'static str, &'static str, &'static str, &'static str) {
        // (subject fr, subject en, sentence fr, sentence en); the sentence
        // ends with the acting structure's name.
        match self {
            NoticeEvent::MandateCreated => (
                "Un mandat a été créé en votre nom",
                "A mandate was created in your name",
                "Un aidant a créé un mandat pour agir en votre nom. Structure :",
                "An aidant created a mandate to act in your name. Structure:",
            ),
            NoticeEvent::MandateRenewed => (
                "Un mandat en votre nom a été renouvelé",
                "A mandate in your name was renewed",
                "Un mandat pour agir en votre nom a été renouvelé. Structure :",
                "A mandate to act in your name was renewed. Structure:",
            ),
            NoticeEvent::MandateRevoked => (
                "Un mandat en votre nom a été révoqué",
                "A mandate in your name was revoked",
                "Un mandat pour agir en votre nom a été révoqué. Structure :",
                "A mandate to act in your name was revoked. Structure:",
            ),
        }
    }
}

/// A message, ready for a transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// `français / English`.
    pub subject: String,
    pub text: String,
    pub html: String,
}

fn paris(at: i64) -> String {
    match chrono::Utc.timestamp_opt(at, 0).single() {
        Some(utc) => utc
            .with_timezone(&chrono_tz::Europe::Paris)
            .format("%d/%m/%Y %H:%M")
            .to_string(),
        None => "-".to_string(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The message of `event`, done by `actor_name` at `at`; `login_url` is
/// where the resident sees the details after logging in.
pub fn render(event: NoticeEvent, actor_name: &str, at: i64, login_url: &str) -> Rendered {
    let (subject_fr, subject_en, fr, en) = event.texts();
    let when = paris(at);
    let text = format!(
        "Bonjour,\n\n{fr} {actor_name}.\nDate : {when} (heure de Paris).\n\n\
         Pour voir le détail, ou révoquer ce mandat, connectez-vous : {login_url}\n\
         Si vous n'êtes pas à l'origine de cette démarche, contactez la structure ou le délégué à la protection des données.\n\n\
         Ce message est envoyé automatiquement ; n'y répondez pas.\n\n\
         ---\n\nHello,\n\n{en} {actor_name}.\nDate: {when} (Paris time).\n\n\
         To see the details, or revoke this mandate, log in: {login_url}\n\
         If you did not ask for this, contact the structure or the data protection officer.\n\n\
         This message is sent automatically; do not reply to it.\n"
    );
    let (a, u, w) = (escape(actor_name), escape(login_url), escape(&when));
    let html = format!(
        "<!DOCTYPE html><html lang=\"fr\"><body>\
         <p>Bonjour,</p><p>{fr} {a}.<br>Date : {w} (heure de Paris).</p>\
         <p>Pour voir le détail, ou révoquer ce mandat, <a href=\"{u}\">connectez-vous</a>.</p>\
         <p>Si vous n'êtes pas à l'origine de cette démarche, contactez la structure ou le délégué à la protection des données.</p>\
         <p>Ce message est envoyé automatiquement ; n'y répondez pas.</p><hr>\
         <div lang=\"en\"><p>Hello,</p><p>{en} {a}.<br>Date: {w} (Paris time).</p>\
         <p>To see the details, or revoke this mandate, <a href=\"{u}\">log in</a>.</p>\
         <p>If you did not ask for this, contact the structure or the data protection officer.</p>\
         <p>This message is sent automatically; do not reply to it.</p></div></body></html>"
    );
    Rendered {
        subject: format!("{subject_fr} / {subject_en}"),
        text,
        html,
    }
}

/// When a failed delivery is tried again: 30 s, doubling, at most an hour.
pub fn retry_after(attempts: i64) -> i64 {
    let exp = attempts.clamp(1, 8) - 1;
    (30_i64 << exp).min(3600)
}

/// After this many failed attempts (about a day and a half of retries), a
/// message is `failed` and shown to the DPO.
pub const MAX_ATTEMPTS: i64 = 40;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        for e in NoticeEvent::ALL {
            assert_eq!(NoticeEvent::parse(e.as_str()), Some(e));
        }
        assert_eq!(NoticeEvent::parse("mandate.eaten"), None);
    }

    #[test]
    fn french_first_then_english_paris_time_no_markup_injection() {
        // 2026-07-01 10:00 UTC is 12:00 in Paris (summer time).
        let r = render(
            NoticeEvent::MandateCreated,
            "CCAS <b>",
            1_782_900_000,
            "https://coffre.example/moi/mandats",
        );
        assert!(r.subject.starts_with("Un mandat a été créé"));
        let fr = r.text.find("Bonjour").unwrap_or(usize::MAX);
        let en = r.text.find("Hello").unwrap_or(0);
        assert!(fr < en);
        assert!(r.text.contains("01/07/2026 12:00"), "{}", r.text);
        assert!(r.html.contains("CCAS &lt;b&gt;") && !r.html.contains("<b>"));
    }

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_after(1), 30);
        assert_eq!(retry_after(2), 60);
        assert_eq!(retry_after(30), 3600);
        assert_eq!(retry_after(0), 30);
    }
}
