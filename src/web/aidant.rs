//! The aidant's space: residents under active mandate, the mandate journey
//! (démarches and duration → the resident logs in → recap and TOTP →
//! printable attestation), renew, revoke, and acting within a démarche.

use crate::error::ErrorCode;
use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::Path;
use maud::html;

use super::public::category_label;
use super::resident::{category_fields, posted_record, state_badge};
use super::{Ctx, Form, PageError, PageResult, csrf, date};
use crate::domain::Role;
use crate::domain::mandate::DURATIONS;
use crate::domain::{Demarche, DraftId, MandateId};
use crate::error::AppError;
use crate::http::session::CurrentUser;
use crate::service::agents::RevokeRequest;
use crate::service::drafts::{ConfirmRequest, DraftRequest, RenewRequest};

const AIDANTS: &[Role] = &[Role::Aidant, Role::Referent];

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

pub async fn overview(ctx: Ctx) -> PageResult {
    let user = ctx.user_in(AIDANTS)?;
    overview_page(ctx, user, None).await
}

/// The list filtered by a search. Posted, not in the address: a name
/// typed in it must not land in proxies' logs or the browser's history.
pub async fn search(ctx: Ctx, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(AIDANTS, &form)?;
    let wanted = form.get("q").map(str::to_string);
    overview_page(ctx, user, wanted).await
}

async fn overview_page(ctx: Ctx, user: CurrentUser, wanted: Option<String>) -> PageResult {
    let l = ctx.lang;
    let agent = crate::service::mandates::agent_context(&ctx.state, &user.actor_id, user.role)
        .await
        .map_err(|e| ctx.fail(e))?;
    let all = crate::service::agents::mandated_residents(&ctx.state, &ctx.caller(&user))
        .await
        .map_err(|e| ctx.fail(e))?
        .value;
    // One line per mandate: its person and its live démarches, filtered
    // by the search (a name, a commune code or a mandate number).
    let wanted = wanted
        .map(|q| q.trim().to_lowercase())
        .filter(|q| !q.is_empty());
    struct Line {
        resident: String,
        name: Option<String>,
        commune: Option<String>,
        demarches: Vec<String>,
        expires: i64,
    }
    let mut mandates: BTreeMap<String, Line> = BTreeMap::new();
    for a in all.authorisations {
        let e = mandates.entry(a.mandate_id).or_insert_with(|| Line {
            resident: a.resident_id,
            name: a.name,
            commune: a.commune_insee,
            demarches: Vec::new(),
            expires: i64::MAX,
        });
        e.demarches.push(a.demarche);
        e.expires = e.expires.min(a.expires_at);
    }
    let mut shown: Vec<(&String, &Line)> = mandates
        .iter()
        .filter(|(mandate, line)| match &wanted {
            None => true,
            Some(q) => {
                line.name
                    .as_deref()
                    .unwrap_or("")
                    .to_lowercase()
                    .contains(q.as_str())
                    || line.commune.as_deref() == Some(q.as_str())
                    || mandate.starts_with(q.as_str())
            }
        })
        .collect();
    shown.sort_by_key(|(_, line)| line.name.as_deref().unwrap_or("~").to_lowercase());
    // Ended mandates, one line each, without names.
    let mut ended: BTreeMap<String, (String, Vec<String>, i64, bool)> = BTreeMap::new();
    for a in all.ended {
        let e = ended
            .entry(a.mandate_id)
            .or_insert_with(|| (a.resident_id, Vec::new(), a.ended_at, a.revoked));
        e.1.push(a.demarche);
        e.2 = e.2.max(a.ended_at);
    }
    let soon = ctx.state.clock.now() + 30 * 86_400;
    let body = html! {
        h1 { (l.t("Mes usagers", "My residents")) }
        p { (l.t("Structure : ", "Structure: ")) strong { (agent.structure.name) } }
        p { a.button href="/aidant/mandats/nouveau" { (l.t("Créer un mandat", "Create a mandate")) } }
        h2 { (l.t("Personnes sous mandat actif", "People under an active mandate")) }
        form method="post" action="/aidant" role="search" {
            (csrf(&user))
            label for="q" { (l.t("Chercher une personne (nom, code commune ou n° de mandat)", "Find a person (name, commune code or mandate number)")) }
            " " input #q type="search" name="q" value=(wanted.clone().unwrap_or_default());
            " " button { (l.t("Chercher", "Search")) }
        }
        @if mandates.is_empty() { p { (l.t("Aucun mandat actif dans votre structure.", "No active mandate in your structure.")) } }
        @else if shown.is_empty() { p { (l.t("Personne ne correspond à cette recherche.", "Nobody matches this search.")) } }
        ul.plain {
            @for (mandate, line) in &shown {
                li.card {
                    h3 { a href={ "/aidant/mandats/" (mandate) } {
                        @match &line.name { Some(n) => (n), None => { (l.t("Personne n° ", "Resident #")) (short(&line.resident)) } }
                    } }
                    p {
                        @if let Some(c) = &line.commune { (l.t("Commune ", "Commune ")) (c) " · " }
                        (l.t("Mandat ", "Mandate ")) code { (short(mandate)) } " · "
                        (l.t("jusqu'au ", "until ")) (date(line.expires))
                        @if line.expires < soon { " " strong { (l.t("(expire bientôt)", "(expires soon)")) } } }
                    p { (l.t("Démarches : ", "Démarches: "))
                        @for (i, d) in line.demarches.iter().enumerate() {
                            @if i > 0 { ", " }
                            a href={ "/aidant/usagers/" (line.resident) "?demarche=" (d) } { (demarche_label(&ctx, d)) }
                        }
                    }
                }
            }
        }
        @if !ended.is_empty() {
            h2 { (l.t("Mandats terminés", "Ended mandates")) }
            p.small { (l.t("Un mandat terminé ne permet plus de lire le coffre de la personne : son nom n'est donc plus affiché. Pour agir à nouveau, créez un mandat avec elle.",
                           "An ended mandate no longer allows reading the person's vault, so their name is no longer shown. To act again, create a mandate with them.")) }
            ul.plain {
                @for (mandate, (resident, demarches, ended_at, revoked)) in &ended {
                    li {
                        a href={ "/aidant/mandats/" (mandate) } { (l.t("Mandat ", "Mandate ")) (short(mandate)) }
                        " · " (l.t("personne n° ", "resident #")) code { (short(resident)) }
                        " · " (if *revoked { l.t("révoqué le ", "revoked on ") } else { l.t("expiré le ", "expired on ") }) (date(*ended_at))
                        " · " (demarches.iter().map(|d| demarche_label(&ctx, d)).collect::<Vec<_>>().join(", "))
                    }
                }
            }
        }
    };
    Ok(ctx.page(l.t("Mes usagers", "My residents"), body))
}

fn demarche_label(ctx: &Ctx, code: &str) -> String {
    Demarche::parse(code)
        .and_then(|d| ctx.state.demarches.get(d))
        .map(|d| ctx.t(&d.label_fr, &d.label_en).to_string())
        .unwrap_or_else(|| code.to_string())
}

pub async fn new_mandate(ctx: Ctx) -> PageResult {
    let user = ctx.user_in(AIDANTS)?;
    let l = ctx.lang;
    let agent = crate::service::mandates::agent_context(&ctx.state, &user.actor_id, user.role)
        .await
        .map_err(|e| ctx.fail(e))?;
    let allowed = agent.allowed_demarches();
    let body = html! {
        h1 { (l.t("Créer un mandat", "Create a mandate")) }
        ol.small {
            li aria-current="step" { strong { (l.t("Les démarches et la durée", "Démarches and duration")) } }
            li { (l.t("La personne se connecte", "The resident logs in")) }
            li { (l.t("Récapitulatif, accord de la personne et votre code", "Recap, the resident's agreement and your code")) }
        }
        form method="post" action="/aidant/mandats/nouveau" {
            (csrf(&user))
            fieldset {
                legend { (l.t("Démarches que la personne vous confie (au moins une)", "Démarches the resident entrusts to you (at least one)")) }
                @for (code, def) in ctx.state.demarches.all() {
                    @if Demarche::parse(code).is_some_and(|d| allowed.contains(&d)) {
                        div.choice {
                            input type="checkbox" id={ "d-" (code) } name="demarches" value=(code);
                            label for={ "d-" (code) } { (l.t(&def.label_fr, &def.label_en)) span.hint lang="fr" { (def.description_fr) } }
                        }
                    }
                }
            }
            fieldset {
                legend { (l.t("Durée du mandat (obligatoire)", "Mandate duration (required)")) }
                @for d in DURATIONS {
                    div.choice {
                        input type="radio" id={ "t-" (d) } name="duration_days" value=(d) required;
                        label for={ "t-" (d) } { (duration_label(&ctx, d)) }
                    }
                }
            }
            p { button { (l.t("Continuer", "Continue")) } }
        }
    };
    Ok(ctx.page(
        l.t(
            "Étape 1 sur 3 : démarches et durée — Créer un mandat",
            "Step 1 of 3: démarches and duration — Create a mandate",
        ),
        body,
    ))
}

fn duration_label(ctx: &Ctx, days: i64) -> String {
    match days {
        1 => ctx
            .t(
                "1 jour (une démarche ponctuelle)",
                "1 day (a one-off démarche)",
            )
            .to_string(),
        31 => ctx.t("1 mois", "1 month").to_string(),
        182 => ctx.t("6 mois", "6 months").to_string(),
        365 => ctx.t("12 mois", "12 months").to_string(),
        d => format!("{d} {}", ctx.t("jours", "days")),
    }
}

pub async fn create_draft(ctx: Ctx, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(AIDANTS, &form)?;
    let duration: i64 = form
        .get("duration_days")
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    let req = DraftRequest {
        demarches: form.all("demarches"),
        duration_days: duration,
    };
    let draft = crate::service::drafts::create_draft(&ctx.state, &ctx.caller(&user), req)
        .await
        .map_err(|e| ctx.fail(e))?
        .value;
    Ok(ctx.done(&format!("/aidant/brouillons/{}", draft.id), "brouillon"))
}

pub async fn draft(ctx: Ctx, Path(id): Path<String>) -> PageResult {
    let user = ctx.user_in(AIDANTS)?;
    let l = ctx.lang;
    let d =
        crate::service::drafts::get_draft(&ctx.state, &ctx.caller(&user), draft_id(&id).as_ref())
            .await
            .map_err(|e| ctx.fail(e))?
            .value;
    let logged_in = d.resident_id.is_some();
    let body = html! {
        h1 { (l.t("Créer un mandat", "Create a mandate")) }
        ol.small {
            li { (l.t("Les démarches et la durée", "Démarches and duration")) " ✓" }
            @if logged_in {
                li { (l.t("La personne se connecte", "The resident logs in")) " ✓" }
                li aria-current="step" { strong { (l.t("Récapitulatif, accord de la personne et votre code", "Recap, the resident's agreement and your code")) } }
            } @else {
                li aria-current="step" { strong { (l.t("La personne se connecte", "The resident logs in")) } }
                li { (l.t("Récapitulatif, accord de la personne et votre code", "Recap, the resident's agreement and your code")) }
            }
        }
        p.note { (l.t("Ce projet de mandat expire le ", "This draft expires on ")) (super::date_time(d.expires_at, l)) "." }
        @if !logged_in {
            h2 { (l.t("La personne se connecte", "The resident logs in")) }
            p { (l.t("Sur cet écran, la personne se connecte elle-même avec FranceConnect : c'est ce qui prouve son identité. Sa connexion n'ouvre pas de session pour elle ; la vôtre continue.",
                      "On this screen, the resident logs in themselves with FranceConnect: that proves who they are. Their login opens no session for them; yours goes on.")) }
            @if ctx.state.resident_login.is_some() {
                p { a.button href=(d.resident_login) { (l.t("Connexion de la personne avec FranceConnect", "Resident's login with FranceConnect")) } }
            }
            @if ctx.state.demo {
                form method="post" action="/dev/mandate-login" {
                    (csrf(&user))
                    input type="hidden" name="draft" value=(id);
                    label for="persona" { (l.t("Démonstration : la personne qui se connecte", "Demo: the resident who logs in")) }
                    select #persona name="persona" {
                        @for p in crate::demo::RESIDENTS { option value=(p.id) { (p.name) } }
                    }
                    p { button.secondary { (l.t("Connexion de démonstration", "Demo login")) } }
                }
            }
            p { a href={ "/aidant/brouillons/" (id) } { (l.t("La personne s'est connectée : actualiser", "The resident has logged in: refresh")) } }
        } @else {
            h2 { (l.t("Récapitulatif à lire avec la personne", "Recap to read with the resident")) }
            @if let Some(name) = &d.resident_name {
                p { (l.t("Personne : ", "Resident: ")) strong { (name) } }
            }
            blockquote.note lang="fr" { p { (d.recap_fr) } }
            form method="post" action={ "/aidant/brouillons/" (id) "/confirmation" } {
                (csrf(&user))
                div.choice {
                    input type="checkbox" id="resident_confirmed" name="resident_confirmed" value="true" required;
                    label for="resident_confirmed" { (l.t("La personne a lu le récapitulatif et donne son accord (case cochée par elle).", "The resident read the recap and agrees (ticked by them).")) }
                }
                label for="totp" { (l.t("Votre code à usage unique (application d'authentification)", "Your one-time code (authenticator app)")) span.hint #totp-aide { (l.t("6 chiffres, obligatoire", "6 digits, required")) } }
                input #totp type="text" name="totp" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" maxlength="6" required aria-describedby="totp-aide";
                p { button { (l.t("Créer le mandat", "Create the mandate")) } }
            }
        }
    };
    let title = if logged_in {
        l.t(
            "Étape 3 sur 3 : récapitulatif et code — Créer un mandat",
            "Step 3 of 3: recap and code — Create a mandate",
        )
    } else {
        l.t(
            "Étape 2 sur 3 : la personne se connecte — Créer un mandat",
            "Step 2 of 3: the resident logs in — Create a mandate",
        )
    };
    Ok(ctx.page(title, body))
}

pub async fn confirm(ctx: Ctx, Path(id): Path<String>, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(AIDANTS, &form)?;
    let req = ConfirmRequest {
        resident_confirmed: form.get("resident_confirmed") == Some("true"),
        totp: form.get("totp").unwrap_or_default().trim().to_string(),
    };
    let m = crate::service::drafts::confirm_draft(
        &ctx.state,
        &ctx.caller(&user),
        draft_id(&id).as_ref(),
        req,
    )
    .await
    .map_err(|e| ctx.fail(e))?
    .value;
    Ok(ctx.done(&format!("/aidant/mandats/{}", m.id), "mandat"))
}

pub async fn mandate(ctx: Ctx, Path(id): Path<String>) -> PageResult {
    let user = ctx.user_in(AIDANTS)?;
    let l = ctx.lang;
    let m = crate::service::agents::get_mandate(
        &ctx.state,
        &ctx.caller(&user),
        mandate_id(&id).as_ref(),
    )
    .await
    .map_err(|e| ctx.fail(e))?
    .value;
    let active = m.state.as_str() == "active";
    let body = html! {
        h1 { (l.t("Mandat ", "Mandate ")) (short(&id)) " " (state_badge(m.state.as_str(), l)) }
        p { (m.structure_name) " · " (l.t("conclu le ", "agreed on ")) (date(m.created_at)) " · " (l.t("jusqu'au ", "until ")) (date(m.expires_at)) }
        p { a href={ "/mandates/" (id) "/attestation" } { (l.t("Attestation imprimable", "Printable attestation")) } }
        h2 { (l.t("Démarches", "Démarches")) }
        ul {
            @for d in &m.demarches {
                li {
                    span lang="fr" { (d.label_fr) } " " (state_badge(d.state.as_str(), l))
                    @if d.state.as_str() == "active" {
                        " — " a href={ "/aidant/usagers/" (m.resident_id) "?demarche=" (d.demarche) } { (l.t("agir dans cette démarche", "act within this démarche")) }
                    }
                }
            }
        }
        h2 { (l.t("Renouveler", "Renew")) }
        form method="post" action={ "/aidant/mandats/" (id) "/renouvellement" } {
            (csrf(&user))
            p { (l.t("Un renouvellement crée un nouveau projet de mandat que la même personne confirme en se connectant.", "A renewal makes a new draft that the same resident confirms by logging in.")) }
            button.secondary { (l.t("Renouveler ce mandat", "Renew this mandate")) }
        }
        @if active {
            h2 { (l.t("Révoquer", "Revoke")) }
            form method="post" action={ "/aidant/mandats/" (id) "/revocation" } {
                (csrf(&user))
                @if user.role == Role::Aidant {
                    label for="totp-revoke" { (l.t("Votre code à usage unique", "Your one-time code")) }
                    input #totp-revoke type="text" name="totp" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" maxlength="6" required;
                }
                p { button.danger { (l.t("Révoquer tout le mandat", "Revoke the whole mandate")) } }
            }
        }
    };
    Ok(ctx.page(
        &format!("{} {}", l.t("Mandat", "Mandate"), short(&id)),
        body,
    ))
}

pub async fn renew(ctx: Ctx, Path(id): Path<String>, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(AIDANTS, &form)?;
    let d = crate::service::drafts::renew(
        &ctx.state,
        &ctx.caller(&user),
        mandate_id(&id).as_ref(),
        RenewRequest::default(),
    )
    .await
    .map_err(|e| ctx.fail(e))?
    .value;
    Ok(ctx.done(&format!("/aidant/brouillons/{}", d.id), "brouillon"))
}

pub async fn revoke(ctx: Ctx, Path(id): Path<String>, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(AIDANTS, &form)?;
    let req = RevokeRequest {
        demarche: None,
        totp: form.text("totp"),
    };
    crate::service::agents::agent_revoke(
        &ctx.state,
        &ctx.caller(&user),
        mandate_id(&id).as_ref(),
        req,
    )
    .await
    .map_err(|e| ctx.fail_at(e, &format!("/aidant/mandats/{id}")))?;
    Ok(ctx.done(&format!("/aidant/mandats/{id}"), "revoque_aidant"))
}

fn demarche_of(ctx: &Ctx) -> Result<(Demarche, String), PageError> {
    let code = ctx.query.get("demarche").cloned().unwrap_or_default();
    Demarche::parse(&code)
        .map(|d| (d, code))
        .ok_or_else(|| ctx.fail(ErrorCode::UnknownDemarche.into()))
}

/// Acting within one démarche: the resident's categories it reaches, each
/// read (and audited) through the same route as the API.
pub async fn resident(ctx: Ctx, Path(resident): Path<String>) -> PageResult {
    let user = ctx.user_in(AIDANTS)?;
    let l = ctx.lang;
    let (demarche, code) = demarche_of(&ctx)?;
    let def = ctx
        .state
        .demarches
        .get(demarche)
        .ok_or_else(|| ctx.fail(AppError::NotFound))?;
    let mut sections = Vec::new();
    let caller = ctx.caller(&user);
    for c in &def.categories {
        let read =
            crate::service::agents::read_on_behalf(&ctx.state, &caller, &resident, c, demarche)
                .await;
        let record = match read {
            Ok(done) => Some(done.value),
            Err(AppError::NotFound) => None,
            Err(e) => return Err(ctx.fail(e)),
        };
        sections.push((c.clone(), record));
    }
    let body = html! {
        h1 { (l.t(&def.label_fr, &def.label_en)) }
        p { (l.t("Personne n° ", "Resident #")) code { (short(&resident)) } ". "
            (l.t("Chaque lecture et chaque modification est inscrite au journal, au nom de votre structure ; la personne la voit dans son espace.",
                 "Every read and change is logged under your structure's name; the resident sees it in their space.")) }
        @for (c, record) in &sections {
            @let fields = record.as_ref().map(|r| &r.fields);
            section.card aria-labelledby={ "c-" (c) } {
                h2 #{ "c-" (c) } { (category_label(&ctx, c)) }
                form method="post" action={ "/aidant/usagers/" (resident) "/" (c) "?demarche=" (code) } {
                    (csrf(&user))
                    (category_fields(&ctx, c, fields, false, None))
                    p { button { (l.t("Enregistrer pour la personne", "Save for the resident")) } }
                }
            }
        }
    };
    Ok(ctx.page(
        &format!(
            "{} — {} {}",
            l.t(&def.label_fr, &def.label_en),
            l.t("personne n°", "resident #"),
            short(&resident)
        ),
        body,
    ))
}

pub async fn save_category(
    ctx: Ctx,
    Path((resident, category)): Path<(String, String)>,
    body: Bytes,
) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(AIDANTS, &form)?;
    let (demarche, code) = demarche_of(&ctx)?;
    let back = format!("/aidant/usagers/{resident}?demarche={code}");
    let record = posted_record(&ctx, &category, &form).map_err(|(_, e)| ctx.fail_at(e, &back))?;
    crate::service::agents::write_on_behalf(
        &ctx.state,
        &ctx.caller(&user),
        &resident,
        &category,
        demarche,
        record,
    )
    .await
    .map_err(|e| ctx.fail(e))?;
    Ok(ctx.done(
        &format!("/aidant/usagers/{resident}?demarche={code}"),
        "donnees",
    ))
}

/// The printable attestation of a mandate, for the resident (their own) or
/// an agent of the mandate's structure.
pub async fn attestation(ctx: Ctx, Path(id): Path<String>) -> PageResult {
    let l = ctx.lang;
    let user: CurrentUser = ctx.user_in(&[Role::Resident, Role::Aidant, Role::Referent])?;
    // A malformed id names no mandate.
    let id = MandateId::parse(&id).map_err(|_| ctx.fail(AppError::NotFound))?;
    let state = &ctx.state;
    let attestation =
        crate::service::agents::attestation(state, &ctx.caller(&user), &id, state.clock.now())
            .await
            .map_err(|e| ctx.fail(e))?
            .value;
    let v = &attestation.mandate;
    let verify = format!("{}/api/v1/mandates/verify", state.config.public_base());
    let title = l.t("Attestation de mandat", "Mandate attestation");
    let body = html! {
        h1 { (title) }
        p { (l.t("Mandat n° ", "Mandate no. ")) code { (v.id) } (l.t(", conclu le ", ", made on ")) (date(v.created_at)) (l.t(" avec ", " with ")) strong { (v.structure_name) } (l.t(", valable jusqu'au ", ", valid until ")) (date(v.expires_at)) "." }
        p { (l.t("La personne autorise les aidants habilités de cette structure à réaliser à sa place les démarches suivantes :", "The resident authorises this structure's aidants to do the following démarches for them:")) }
        ul {
            @for d in &v.demarches {
                li { span lang="fr" { (d.label_fr) } " " (state_badge(d.state.as_str(), l)) }
            }
        }
        p { (l.t("Modèle de mandat : ", "Mandate template: ")) (attestation.template_version) ". "
            (l.t("Chaque action faite au titre de ce mandat est enregistrée dans un journal vérifiable.", "Every action under this mandate is written to a verifiable log.")) }
        p { (l.t("Vérifier cette attestation : ", "Verify this attestation: ")) a href=(v.verify_url) { (verify) } }
    };
    Ok(ctx.page(title, body))
}

/// The mandate a path names; a malformed id names none, and the use case
/// answers it as an unknown one.
fn mandate_id(raw: &str) -> Option<MandateId> {
    MandateId::parse(raw).ok()
}

/// The draft a path names, as [`mandate_id`].
fn draft_id(raw: &str) -> Option<DraftId> {
    DraftId::parse(raw).ok()
}

fn alert_kind(kind: &str, l: super::Lang) -> &'static str {
    match kind {
        "out_of_hours" => l.t(
            "mandat créé en dehors des horaires d'ouverture",
            "mandate created outside opening hours",
        ),
        "burst" => l.t(
            "nombreux mandats en peu de temps",
            "many mandates in a short time",
        ),
        "night_act" => l.t("acte pour un usager la nuit", "act on behalf at night"),
        "outside_commune" => l.t(
            "mandat pour une personne hors des communes de la structure",
            "mandate for a person outside the structure's communes",
        ),
        "commune_unknown" => l.t(
            "mandat pour une personne dont la commune n'a pas pu être vérifiée",
            "mandate for a person whose commune could not be checked",
        ),
        _ => l.t("autre", "other"),
    }
}

/// The référent's alerts about their structure's aidants.
pub async fn alerts(ctx: Ctx) -> PageResult {
    let user = ctx.user_in(&[Role::Referent])?;
    let l = ctx.lang;
    let caller = ctx.caller(&user);
    let view = crate::service::alerts::list(&ctx.state, &caller)
        .await
        .map_err(|e| ctx.fail(e))?
        .value;
    let (open, reviewed): (Vec<_>, Vec<_>) =
        view.alerts.iter().partition(|a| a.reviewed_at.is_none());
    let body = html! {
        h1 { (l.t("Alertes sur l'activité des aidants", "Alerts about the aidants' activity")) }
        p { (l.t("Horaires d'ouverture (heure de Paris) : ", "Opening hours (Paris time): ")) code { (view.hours) }
            " · " (l.t("alerte au-delà de ", "alert beyond ")) (view.burst_max) (l.t(" mandats par aidant en ", " mandates by one aidant within ")) (view.burst_minutes) " min" }
        h2 { (l.t("À examiner", "To review")) }
        @if open.is_empty() { p { (l.t("Aucune alerte à examiner.", "No alert to review.")) } }
        @for a in &open {
            section.card aria-labelledby={ "al-" (a.id) } {
                h3 #{ "al-" (a.id) } { (alert_kind(&a.kind, l)) }
                dl {
                    dt { (l.t("Aidant", "Aidant")) }
                    dd { (a.aidant_name) }
                    dt { (l.t("Quand", "When")) }
                    dd { (date(a.created_at)) }
                    dt { (l.t("Acte", "Act")) }
                    dd {
                        @if let Some(m) = a.subject.strip_prefix("mandate:") {
                            a href={ "/aidant/mandats/" (m) } { (l.t("le mandat", "the mandate")) }
                        } @else if let Some(n) = a.subject.strip_prefix("audit:") {
                            (l.t("entrée du journal n° ", "audit entry #")) (n)
                        } @else if let Some(c) = a.subject.strip_prefix("consent:") {
                            (l.t("consentement n° ", "consent #")) code { (c.get(..8).unwrap_or(c)) }
                        } @else {
                            (a.subject)
                        }
                    }
                }
                form method="post" action={ "/referent/alertes/" (a.id) } {
                    (csrf(&user))
                    button { (l.t("Marquer comme examinée", "Mark reviewed")) }
                }
            }
        }
        h2 #regles { (l.t("Règles et adresse d'alerte", "Rules and alert address")) }
        p { @if let Some(a) = &view.alert_email {
                (l.t("Les alertes sont aussi envoyées à ", "Alerts are also sent to ")) strong { (a) } "."
            } @else {
                (l.t("Aucune adresse de la structure : les alertes ne sont que sur cette page.", "No structure address: alerts are on this page only."))
            } }
        form method="post" action="/referent/alertes/regles" {
            (csrf(&user))
            div.field {
                label for="hours" { (l.t("Horaires d'ouverture (heure de Paris)", "Opening hours (Paris time)")) }
                p.hint #hours-hint { (l.t("Par exemple : mon-fri 08:30-12:00,13:30-17:30; sat 09:00-12:00", "For example: mon-fri 08:30-12:00,13:30-17:30; sat 09:00-12:00")) }
                input type="text" id="hours" name="hours" value=(view.hours) aria-describedby="hours-hint" required;
            }
            div.field {
                label for="burst_max" { (l.t("Alerte au-delà de ce nombre de mandats par aidant…", "Alert beyond this many mandates by one aidant…")) }
                input type="number" id="burst_max" name="burst_max" value=(view.burst_max) min="1" max="100" inputmode="numeric" required;
            }
            div.field {
                label for="burst_minutes" { (l.t("…en ce nombre de minutes", "…within this many minutes")) }
                input type="number" id="burst_minutes" name="burst_minutes" value=(view.burst_minutes) min="1" max="1440" inputmode="numeric" required;
            }
            div.field {
                label for="alert_email" { (l.t("Adresse de la structure pour les alertes (facultative ; une boîte de service, pas une adresse personnelle)", "The structure's address for alerts (optional; a service mailbox, not a personal address)")) }
                input type="email" id="alert_email" name="alert_email" value=(view.alert_email.as_deref().unwrap_or("")) autocomplete="off";
            }
            div.field {
                label for="communes" { (l.t("Communes servies (codes INSEE séparés par des espaces ; vide : pas de contrôle)", "Communes served (INSEE codes separated by spaces; empty: no check)")) }
                input type="text" id="communes" name="communes" value=(view.communes.join(" ")) inputmode="numeric";
            }
            p { button { (l.t("Enregistrer les règles", "Save the rules")) } }
        }
        @if !reviewed.is_empty() {
            h2 { (l.t("Déjà examinées", "Already reviewed")) }
            ul {
                @for a in reviewed.iter().take(50) {
                    li { (alert_kind(&a.kind, l)) " — " (a.aidant_name) " — " (date(a.created_at)) }
                }
            }
        }
    };
    Ok(ctx.page(l.t("Alertes", "Alerts"), body))
}

/// The référent sets the structure's rules and alert address.
pub async fn alert_rules(ctx: Ctx, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(&[Role::Referent], &form)?;
    let caller = ctx.caller(&user);
    let number = |name: &str| {
        form.get(name)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    let request = crate::service::alerts::AlertRulesRequest {
        hours: form.get("hours").unwrap_or("").to_string(),
        burst_max: number("burst_max"),
        burst_minutes: number("burst_minutes"),
        alert_email: form.get("alert_email").map(str::to_string),
        communes: Some(
            form.get("communes")
                .unwrap_or("")
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect(),
        ),
    };
    crate::service::alerts::set_rules(&ctx.state, &caller, request, ctx.state.clock.now())
        .await
        .map_err(|e| ctx.fail_at(e, "/referent/alertes"))?;
    Ok(ctx.done("/referent/alertes", "regles_alerte"))
}

pub async fn review_alert(ctx: Ctx, Path(id): Path<String>, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(&[Role::Referent], &form)?;
    let caller = ctx.caller(&user);
    crate::service::alerts::review(&ctx.state, &caller, &id, ctx.state.clock.now())
        .await
        .map_err(|e| ctx.fail_at(e, "/referent/alertes"))?;
    Ok(ctx.done("/referent/alertes", "alerte_examinee"))
}
