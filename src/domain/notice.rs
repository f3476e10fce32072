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
    /// A mandate in the resident's name reached its end date (told by the
    /// hourly job).
    MandateEnded,
    /// The DPO answered the resident's rights request (granted, refused
    /// or closed).
    RightsAnswered,
    /// The DPO extended the deadline of the resident's rights request.
    RightsExtended,
    /// A consent the resident gave ends within 30 days.
    ConsentExpiring,
    /// The resident's values went to a partner in a records extract
    /// (under the partner's pseudonym): they learn who received them, so
    /// that they may object, withdraw, or ask that a later correction be
    /// passed on (art. 19). Aggregate extracts only count: no message.
    ExtractIncluded,
    /// A source deposited data about the resident for the first time
    /// (art. 14: data not obtained from the person).
    SourceFirstDeposit,
    /// The week's accesses to the resident's data by others, counted
    /// (only for residents who asked for it).
    AccessesDigest,
}

/// How a resident wants an event's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// By e-mail, or by post when there is no usable address.
    Email,
    /// By post (a letter the CCAS prints).
    Post,
    /// Not at all (only events the resident may turn off).
    Off,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Email, Channel::Post, Channel::Off];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Post => "post",
            Channel::Off => "off",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl NoticeEvent {
    pub const ALL: [NoticeEvent; 10] = [
        NoticeEvent::MandateCreated,
        NoticeEvent::MandateRenewed,
        NoticeEvent::MandateRevoked,
        NoticeEvent::MandateEnded,
        NoticeEvent::RightsAnswered,
        NoticeEvent::RightsExtended,
        NoticeEvent::ConsentExpiring,
        NoticeEvent::ExtractIncluded,
        NoticeEvent::SourceFirstDeposit,
        NoticeEvent::AccessesDigest,
    ];

    /// Whether the resident may stop these messages. Never for what
    /// guards them or what the law says they must be told: a mandate in
    /// their name (the safeguard against an aidant's abuse), the answer to
    /// their request (art. 12) and a source's first deposit (art. 14).
    pub fn may_be_turned_off(self) -> bool {
        matches!(
            self,
            NoticeEvent::ConsentExpiring
                | NoticeEvent::ExtractIncluded
                | NoticeEvent::AccessesDigest
        )
    }

    /// The channel before the resident chooses: e-mail (a letter without
    /// an address); the digest only for those who ask for it.
    pub fn default_channel(self) -> Channel {
        match self {
            NoticeEvent::AccessesDigest => Channel::Off,
            _ => Channel::Email,
        }
    }

    /// The channel a resident may choose for this event.
    pub fn allows(self, channel: Channel) -> bool {
        channel != Channel::Off || self.may_be_turned_off()
    }

    /// The channel that applies: the resident's choice when the event
    /// allows it (`off` for a mandate is not a choice), else the default.
    pub fn channel(self, chosen: Option<Channel>) -> Channel {
        chosen
            .filter(|c| self.allows(*c))
            .unwrap_or(self.default_channel())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NoticeEvent::MandateCreated => "mandate.created",
            NoticeEvent::MandateRenewed => "mandate.renewed",
            NoticeEvent::MandateRevoked => "mandate.revoked",
            NoticeEvent::MandateEnded => "mandate.ended",
            NoticeEvent::RightsAnswered => "rights.answered",
            NoticeEvent::RightsExtended => "rights.extended",
            NoticeEvent::ConsentExpiring => "consent.expiring",
            NoticeEvent::ExtractIncluded => "extract.included",
            NoticeEvent::SourceFirstDeposit => "source.first_deposit",
            NoticeEvent::AccessesDigest => "accesses.digest",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// Where the resident sees the details, after logging in.
    pub fn path(self) -> &'static str {
        match self {
            NoticeEvent::MandateCreated
            | NoticeEvent::MandateRenewed
            | NoticeEvent::MandateRevoked
            | NoticeEvent::MandateEnded => "/moi/mandats",
            NoticeEvent::RightsAnswered | NoticeEvent::RightsExtended => "/moi/demandes",
            NoticeEvent::ConsentExpiring => "/moi/consentements",
            NoticeEvent::ExtractIncluded | NoticeEvent::AccessesDigest => "/moi/acces",
            NoticeEvent::SourceFirstDeposit => "/moi/sources",
        }
    }

    fn texts(self) -> Texts {
        // The sentence ends with who acted.
        const MANDATE_FR: &str = "Pour voir le détail, ou révoquer ce mandat, connectez-vous";
        const MANDATE_EN: &str = "To see the details, or revoke this mandate, log in";
        const ASKED_FR: &str = "Si vous n'êtes pas à l'origine de cette démarche, contactez la structure ou le délégué à la protection des données.";
        const ASKED_EN: &str =
            "If you did not ask for this, contact the structure or the data protection officer.";
        const RIGHTS_FR: &str = "Pour lire la réponse, connectez-vous";
        const RIGHTS_EN: &str = "To read the answer, log in";
        const CNIL_FR: &str = "Vous pouvez aussi saisir la CNIL (www.cnil.fr).";
        const CNIL_EN: &str = "You may also complain to the CNIL (www.cnil.fr).";
        match self {
            NoticeEvent::MandateCreated => Texts {
                subject: (
                    "Un mandat a été créé en votre nom",
                    "A mandate was created in your name",
                ),
                sentence: (
                    "Un aidant a créé un mandat pour agir en votre nom. Structure :",
                    "An aidant created a mandate to act in your name. Structure:",
                ),
                action: (MANDATE_FR, MANDATE_EN),
                after: (ASKED_FR, ASKED_EN),
            },
            NoticeEvent::MandateRenewed => Texts {
                subject: (
                    "Un mandat en votre nom a été renouvelé",
                    "A mandate in your name was renewed",
                ),
                sentence: (
                    "Un mandat pour agir en votre nom a été renouvelé. Structure :",
                    "A mandate to act in your name was renewed. Structure:",
                ),
                action: (MANDATE_FR, MANDATE_EN),
                after: (ASKED_FR, ASKED_EN),
            },
            NoticeEvent::MandateRevoked => Texts {
                subject: (
                    "Un mandat en votre nom a été révoqué",
                    "A mandate in your name was revoked",
                ),
                sentence: (
                    "Un mandat pour agir en votre nom a été révoqué. Structure :",
                    "A mandate to act in your name was revoked. Structure:",
                ),
                action: (MANDATE_FR, MANDATE_EN),
                after: (ASKED_FR, ASKED_EN),
            },
            NoticeEvent::MandateEnded => Texts {
                subject: (
                    "Un mandat en votre nom a pris fin",
                    "A mandate in your name has ended",
                ),
                sentence: (
                    "Un mandat pour agir en votre nom est arrivé à sa date de fin : l'aidant ne peut plus agir pour vous. Structure :",
                    "A mandate to act in your name reached its end date: the aidant can no longer act for you. Structure:",
                ),
                action: (
                    "Pour voir vos mandats, connectez-vous",
                    "To see your mandates, log in",
                ),
                after: (
                    "Pour continuer à être aidé(e), demandez à la structure de le renouveler avec vous.",
                    "To go on being helped, ask the structure to renew it with you.",
                ),
            },
            NoticeEvent::RightsAnswered => Texts {
                subject: (
                    "Votre demande a reçu une réponse",
                    "Your request was answered",
                ),
                sentence: (
                    "Votre demande d'exercice de vos droits a reçu une réponse. De :",
                    "Your request to exercise your rights was answered. From:",
                ),
                action: (RIGHTS_FR, RIGHTS_EN),
                after: (CNIL_FR, CNIL_EN),
            },
            NoticeEvent::ConsentExpiring => Texts {
                subject: (
                    "Un de vos consentements arrive à échéance",
                    "One of your consents is about to end",
                ),
                sentence: (
                    "Un consentement que vous avez donné prend fin dans moins de 30 jours. Finalité :",
                    "A consent you gave ends in less than 30 days. Purpose:",
                ),
                action: (
                    "Pour le renouveler, ou le laisser prendre fin, connectez-vous",
                    "To renew it, or let it end, log in",
                ),
                after: (
                    "Sans action de votre part, il prendra fin à sa date et vos données ne seront plus utilisées pour cette finalité.",
                    "If you do nothing, it ends on its date and your data is no longer used for this purpose.",
                ),
            },
            NoticeEvent::ExtractIncluded => Texts {
                subject: (
                    "Vos données ont été transmises dans une extraction",
                    "Your data was sent in an extract",
                ),
                sentence: (
                    "Des données vous concernant ont été transmises, sous pseudonyme, dans une extraction approuvée par le délégué à la protection des données. Destinataire :",
                    "Data about you was sent, under a pseudonym, in an extract approved by the data protection officer. Recipient:",
                ),
                action: (
                    "Pour voir le détail, vous opposer à ce traitement ou retirer votre consentement, connectez-vous",
                    "To see the details, object to this processing or withdraw your consent, log in",
                ),
                after: (
                    "Si vous corrigez ou effacez ces données, le destinataire en sera informé (article 19 du RGPD).",
                    "If you correct or erase this data, the recipient is told (GDPR article 19).",
                ),
            },
            NoticeEvent::SourceFirstDeposit => Texts {
                subject: (
                    "Une source a déposé des données à votre sujet",
                    "A source deposited data about you",
                ),
                sentence: (
                    "Une source a déposé pour la première fois des données à votre sujet dans votre coffre (article 14 du RGPD). Source :",
                    "A source deposited data about you into your vault for the first time (GDPR article 14). Source:",
                ),
                action: (
                    "Pour voir ces données et leur provenance, ou vous y opposer, connectez-vous",
                    "To see this data and where it came from, or object to it, log in",
                ),
                after: (
                    "Si vous ne connaissez pas cette source, contactez le délégué à la protection des données.",
                    "If you do not know this source, contact the data protection officer.",
                ),
            },
            NoticeEvent::AccessesDigest => Texts {
                subject: (
                    "Les accès à vos données cette semaine",
                    "Accesses to your data this week",
                ),
                sentence: (
                    "Accès à vos données par d'autres que vous, inscrits au journal au cours de la semaine écoulée :",
                    "Accesses to your data by others than you, recorded in the log over the past week:",
                ),
                action: (
                    "Pour voir qui, quand et pourquoi, connectez-vous",
                    "To see who, when and why, log in",
                ),
                after: (
                    "Vous recevez ce résumé parce que vous l'avez demandé ; vous pouvez l'arrêter dans vos préférences de notification.",
                    "You receive this digest because you asked for it; you can stop it in your notification preferences.",
                ),
            },
            NoticeEvent::RightsExtended => Texts {
                subject: (
                    "Le délai de réponse à votre demande est prolongé",
                    "The deadline of your request is extended",
                ),
                sentence: (
                    "Le délai de réponse à votre demande d'exercice de vos droits a été prolongé de deux mois (article 12-3 du RGPD). De :",
                    "The deadline to answer your request to exercise your rights was extended by two months (GDPR article 12(3)). From:",
                ),
                action: (RIGHTS_FR, RIGHTS_EN),
                after: (CNIL_FR, CNIL_EN),
            },
        }
    }
}

/// (French, English) pairs of a message's parts.
struct Texts {
    subject: (&'static str, &'static str),
    sentence: (&'static str, &'static str),
    action: (&'static str, &'static str),
    after: (&'static str, &'static str),
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

/// The message of `event`, done by `actor_name` at `at`; `base_url` is the
/// service's public address (the event's page is joined to it).
pub fn render(event: NoticeEvent, actor_name: &str, at: i64, base_url: &str) -> Rendered {
    let t = event.texts();
    let when = paris(at);
    let link = format!("{}{}", base_url.trim_end_matches('/'), event.path());
    let text = format!(
        "Bonjour,\n\n{} {actor_name}.\nDate : {when} (heure de Paris).\n\n\
         {} : {link}\n{}\n\n\
         Ce message est envoyé automatiquement ; n'y répondez pas.\n\n\
         ---\n\nHello,\n\n{} {actor_name}.\nDate: {when} (Paris time).\n\n\
         {}: {link}\n{}\n\n\
         This message is sent automatically; do not reply to it.\n",
        t.sentence.0, t.action.0, t.after.0, t.sentence.1, t.action.1, t.after.1
    );
    let (a, u, w) = (escape(actor_name), escape(&link), escape(&when));
    let html = format!(
        "<!DOCTYPE html><html lang=\"fr\"><body>\
         <p>Bonjour,</p><p>{} {a}.<br>Date : {w} (heure de Paris).</p>\
         <p><a href=\"{u}\">{}</a>.</p><p>{}</p>\
         <p>Ce message est envoyé automatiquement ; n'y répondez pas.</p><hr>\
         <div lang=\"en\"><p>Hello,</p><p>{} {a}.<br>Date: {w} (Paris time).</p>\
         <p><a href=\"{u}\">{}</a>.</p><p>{}</p>\
         <p>This message is sent automatically; do not reply to it.</p></div></body></html>",
        t.sentence.0,
        escape(t.action.0),
        escape(t.after.0),
        t.sentence.1,
        escape(t.action.1),
        escape(t.after.1)
    );
    Rendered {
        subject: format!("{} / {}", t.subject.0, t.subject.1),
        text,
        html,
    }
}

/// The e-mail to a structure's alert mailbox about an alert raised at
/// `at`: its kind and where to see it, never the aidant's or the
/// resident's name (the référent sees them after logging in).
pub fn render_alert(
    kind: crate::domain::alert::AlertKind,
    structure_name: &str,
    at: i64,
    base_url: &str,
) -> Rendered {
    use crate::domain::alert::AlertKind;
    let (fr, en) = match kind {
        AlertKind::OutOfHours => (
            "un mandat a été créé en dehors des horaires d'ouverture",
            "a mandate was created outside opening hours",
        ),
        AlertKind::Burst => (
            "un aidant a créé de nombreux mandats en peu de temps",
            "an aidant created many mandates in a short time",
        ),
        AlertKind::NightAct => (
            "un aidant a agi pour un usager la nuit",
            "an aidant acted on behalf of a resident at night",
        ),
        AlertKind::OutsideCommune => (
            "un mandat a été créé pour une personne qui n'habite pas une commune de la structure",
            "a mandate was created for a person who lives outside the structure's communes",
        ),
        AlertKind::CommuneUnknown => (
            "un mandat a été créé pour une personne dont la commune n'a pas pu être vérifiée",
            "a mandate was created for a person whose commune could not be checked",
        ),
    };
    let when = paris(at);
    let link = format!("{}/referent/alertes", base_url.trim_end_matches('/'));
    let text = format!(
        "Bonjour,\n\nUne alerte a été levée pour {structure_name} : {fr}.\n\
         Date : {when} (heure de Paris).\n\n\
         Pour voir l'aidant et l'acte concernés, et marquer l'alerte comme examinée, connectez-vous : {link}\n\n\
         Ce message est envoyé automatiquement ; n'y répondez pas.\n\n---\n\n\
         Hello,\n\nAn alert was raised for {structure_name}: {en}.\nDate: {when} (Paris time).\n\n\
         To see the aidant and the act, and mark the alert reviewed, log in: {link}\n\n\
         This message is sent automatically; do not reply to it.\n"
    );
    let (s, u, w) = (escape(structure_name), escape(&link), escape(&when));
    let html = format!(
        "<!DOCTYPE html><html lang=\"fr\"><body>\
         <p>Bonjour,</p><p>Une alerte a été levée pour {s} : {fr}.<br>Date : {w} (heure de Paris).</p>\
         <p><a href=\"{u}\">Voir l'alerte</a>.</p>\
         <p>Ce message est envoyé automatiquement ; n'y répondez pas.</p><hr>\
         <div lang=\"en\"><p>Hello,</p><p>An alert was raised for {s}: {en}.<br>Date: {w} (Paris time).</p>\
         <p><a href=\"{u}\">See the alert</a>.</p>\
         <p>This message is sent automatically; do not reply to it.</p></div></body></html>"
    );
    Rendered {
        subject: "Alerte sur l'activité d'un aidant / Alert about an aidant's activity".into(),
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

/// The number of the week `at` falls in, weeks starting on Monday 00:00
/// UTC (1970-01-05 is week 0's Monday), and that week's first second.
pub fn week_of(at: i64) -> (i64, i64) {
    const FIRST_MONDAY: i64 = 4 * 86_400;
    const WEEK: i64 = 7 * 86_400;
    let week = (at - FIRST_MONDAY).div_euclid(WEEK);
    (week, FIRST_MONDAY + week * WEEK)
}

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
            "https://coffre.example/",
        );
        assert!(r.text.contains("https://coffre.example/moi/mandats"));
        assert!(r.subject.starts_with("Un mandat a été créé"));
        let fr = r.text.find("Bonjour").unwrap_or(usize::MAX);
        let en = r.text.find("Hello").unwrap_or(0);
        assert!(fr < en);
        assert!(r.text.contains("01/07/2026 12:00"), "{}", r.text);
        assert!(r.html.contains("CCAS &lt;b&gt;") && !r.html.contains("<b>"));
    }

    #[test]
    fn what_may_be_turned_off_and_the_channels() {
        for e in NoticeEvent::ALL {
            assert!(e.allows(Channel::Email) && e.allows(Channel::Post));
            assert!(e.allows(e.default_channel()));
        }
        for e in [
            NoticeEvent::MandateCreated,
            NoticeEvent::MandateRenewed,
            NoticeEvent::MandateRevoked,
            NoticeEvent::MandateEnded,
            NoticeEvent::RightsAnswered,
            NoticeEvent::RightsExtended,
            NoticeEvent::SourceFirstDeposit,
        ] {
            assert!(!e.allows(Channel::Off), "{e:?}");
        }
        assert!(NoticeEvent::ExtractIncluded.allows(Channel::Off));
        assert_eq!(NoticeEvent::AccessesDigest.default_channel(), Channel::Off);
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
        assert_eq!(Channel::parse("pigeon"), None);
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2026-12-07 is a Monday.
        let monday = 1_796_601_600;
        let (w, start) = week_of(monday + 3600);
        assert_eq!(start, monday);
        assert_eq!(week_of(monday - 1).0, w - 1);
        assert_eq!(week_of(monday + 7 * 86_400 - 1), (w, monday));
    }

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_after(1), 30);
        assert_eq!(retry_after(2), 60);
        assert_eq!(retry_after(30), 3600);
        assert_eq!(retry_after(0), 30);
    }
}
