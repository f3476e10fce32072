//! The resident's notification preferences (`/moi/notifications`): for
//! each event, e-mail or post, or nothing where the event may be turned
//! off. The same use cases as `GET`/`PUT /api/v1/me/notifications`.

use axum::body::Bytes;
use maud::html;

use super::resident::RESIDENT;
use super::{Ctx, Form, Lang, PageResult, csrf};
use crate::service::notices::{self, PreferencesRequest};

/// What an event is, for the resident.
fn event_label(event: &str, l: Lang) -> &'static str {
    match event {
        "mandate.created" => l.t(
            "Un mandat est créé en mon nom",
            "A mandate is created in my name",
        ),
        "mandate.renewed" => l.t(
            "Un mandat en mon nom est renouvelé",
            "A mandate in my name is renewed",
        ),
        "mandate.revoked" => l.t(
            "Un mandat en mon nom est révoqué",
            "A mandate in my name is revoked",
        ),
        "mandate.ended" => l.t(
            "Un mandat en mon nom arrive à sa date de fin",
            "A mandate in my name reaches its end date",
        ),
        "rights.answered" => l.t(
            "Ma demande d'exercice de mes droits reçoit une réponse",
            "My request to exercise my rights is answered",
        ),
        "rights.extended" => l.t(
            "Le délai de réponse à ma demande est prolongé",
            "The deadline of my request is extended",
        ),
        "consent.expiring" => l.t(
            "Un de mes consentements prend fin dans moins de 30 jours",
            "One of my consents ends within 30 days",
        ),
        "extract.included" => l.t(
            "Mes données sont transmises à un partenaire dans une extraction",
            "My data is sent to a partner in an extract",
        ),
        "source.first_deposit" => l.t(
            "Une source dépose pour la première fois des données à mon sujet",
            "A source deposits data about me for the first time",
        ),
        "accesses.digest" => l.t(
            "Résumé hebdomadaire des accès à mes données",
            "Weekly digest of accesses to my data",
        ),
        _ => l.t("Autre événement", "Other event"),
    }
}

fn channel_label(channel: &str, l: Lang) -> &'static str {
    match channel {
        "email" => l.t(
            "Par courriel (par courrier si je n'ai pas d'adresse)",
            "By e-mail (by post if I have no address)",
        ),
        "post" => l.t("Par courrier postal", "By post"),
        _ => l.t("Ne pas me prévenir", "Do not tell me"),
    }
}

pub async fn preferences(ctx: Ctx) -> PageResult {
    let user = ctx.user_in(RESIDENT)?;
    let l = ctx.lang;
    let prefs = notices::my_preferences(&ctx.state, &ctx.caller(&user))
        .await
        .map_err(|e| ctx.fail(e))?
        .value;
    let body = html! {
        h1 { (l.t("Mes notifications", "My notifications")) }
        p { (l.t(
            "Choisissez comment être prévenu(e) de ce qui se passe en votre nom. Les messages ne contiennent aucune de vos données : ils disent ce qui s'est passé, quand, qui a agi, et où vous connecter pour voir le détail. Votre adresse électronique et votre adresse postale sont celles de « Mes données ».",
            "Choose how you are told of what happens in your name. Messages carry none of your data: they say what happened, when, who acted, and where to log in to see the details. Your e-mail and postal addresses are those of \"My data\".")) }
        form method="post" action="/moi/notifications" {
            (csrf(&user))
            @for e in &prefs.events {
                fieldset.card {
                    legend { (event_label(&e.event, l)) }
                    @if !e.may_be_turned_off {
                        p.small { (l.t("Vous serez toujours prévenu(e) : c'est une protection ou une obligation de la loi.", "You are always told: it is a safeguard or a legal duty.")) }
                    }
                    @for c in &e.channels {
                        div.choice {
                            input type="radio" id={ (e.event) "-" (c) } name=(e.event) value=(c) checked[*c == e.channel];
                            label for={ (e.event) "-" (c) } { (channel_label(c, l)) }
                        }
                    }
                }
            }
            p { button { (l.t("Enregistrer mes choix", "Save my choices")) } }
        }
    };
    Ok(ctx.page(l.t("Mes notifications", "My notifications"), body))
}

pub async fn save(ctx: Ctx, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(RESIDENT, &form)?;
    let channels = crate::domain::notice::NoticeEvent::ALL
        .into_iter()
        .filter_map(|e| {
            form.get(e.as_str())
                .map(|c| (e.as_str().to_string(), c.to_string()))
        })
        .collect();
    let now = ctx.state.clock.now();
    notices::set_preferences(
        &ctx.state,
        &ctx.caller(&user),
        &PreferencesRequest { channels },
        now,
    )
    .await
    .map_err(|e| ctx.fail_at(e, "/moi/notifications"))?;
    Ok(ctx.done("/moi/notifications", "notifications"))
}
