//! The web pages: server-rendered HTML for residents, aidants, the DPO and
//! the public, French first with English available.
//!
//! Why this shape:
//! - Every page works without JavaScript: state changes are HTML forms that
//!   post, then redirect (post/redirect/get) to a page that says what
//!   happened. The forms carry the session's CSRF token.
//! - Pages never decide anything: a page calls the very use case of
//!   `service/` the JSON route calls and renders its typed view, so access
//!   checks, audit entries and error codes are the same whether a resident
//!   clicks or a program calls.
//! - One small stylesheet and one icon, served by us with long caching; no
//!   font, script or request to anyone else (CSP `default-src 'self'`).
//! - Markup comes from `maud`, which escapes every interpolated value.

use crate::error::ErrorCode;
use std::collections::HashMap;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};

use crate::AppState;
use crate::domain::Role;
use crate::error::AppError;
use crate::http::audit::RequestId;
use crate::http::session::{CurrentUser, MaybeUser};

pub mod accesses;
pub mod aidant;
pub mod consents;
pub mod dpo;
pub mod notices;
pub mod public;
pub mod resident;
pub mod sources;
pub mod stats;

/// What a page handler returns: a page, or a page explaining a refusal.
pub type PageResult = Result<Response, PageError>;

/// A page explaining a refusal or failure (boxed: a response is large and
/// travels through every `?`).
pub struct PageError(Box<Response>);

impl From<Response> for PageError {
    fn from(r: Response) -> Self {
        PageError(Box::new(r))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// The routes of the web pages.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(public::home))
        .route("/registre", get(public::register))
        .route("/journal", get(public::journal))
        .route("/statistiques", get(stats::statistics))
        .route("/accessibilite", get(public::accessibility))
        .route("/mentions-legales", get(public::legal))
        .route("/langue/{lang}", get(public::set_lang))
        .route("/static/coffre.css", get(public::stylesheet))
        .route("/static/icone.svg", get(public::icon))
        .route("/favicon.ico", get(public::favicon))
        .route("/moi", get(resident::overview))
        .route("/moi/donnees", get(resident::data))
        .route("/moi/donnees/{category}", post(resident::save_category))
        .route(
            "/moi/consentements",
            get(consents::consents).post(consents::decide),
        )
        .route("/moi/consentements/{id}/retrait", post(consents::withdraw))
        .route("/moi/consentements/{id}/retire", get(consents::withdrawn))
        .route("/moi/acces", get(accesses::accesses))
        .route("/moi/mandats", get(resident::mandates))
        .route("/moi/demandes", get(resident::requests))
        .route(
            "/moi/notifications",
            get(notices::preferences).post(notices::save),
        )
        .route("/moi/mandats/{id}/revocation", post(resident::revoke))
        .route("/moi/sources", get(sources::sources))
        .route("/moi/sources/{id}/code", post(sources::pairing_code))
        .route("/moi/sources/{id}/retrait", post(sources::revoke))
        .route("/moi/sources/{id}/opposition", post(sources::objection))
        .route(
            "/moi/sources/{id}/autoriser",
            get(sources::authorise_page).post(sources::authorise),
        )
        .route("/moi/recus", get(consents::receipts))
        .route("/moi/recus/{consent}/{n}", get(consents::receipt_file))
        .route(
            "/moi/effacement",
            get(resident::erasure).post(resident::erase),
        )
        .route("/aidant", get(aidant::overview).post(aidant::search))
        .route(
            "/aidant/mandats/nouveau",
            get(aidant::new_mandate).post(aidant::create_draft),
        )
        .route("/aidant/brouillons/{id}", get(aidant::draft))
        .route(
            "/aidant/brouillons/{id}/confirmation",
            post(aidant::confirm),
        )
        .route("/aidant/mandats/{id}", get(aidant::mandate))
        .route("/aidant/mandats/{id}/renouvellement", post(aidant::renew))
        .route("/aidant/mandats/{id}/revocation", post(aidant::revoke))
        .route("/aidant/usagers/{resident}", get(aidant::resident))
        .route(
            "/aidant/usagers/{resident}/{category}",
            post(aidant::save_category),
        )
        .route("/mandates/{id}/attestation", get(aidant::attestation))
        .route("/referent/alertes", get(aidant::alerts))
        .route("/referent/alertes/regles", post(aidant::alert_rules))
        .route("/referent/alertes/{id}", post(aidant::review_alert))
        .route("/dpo", get(dpo::overview))
        .route("/dpo/rapport", get(dpo::annual_report))
        .route(
            "/dpo/courriers",
            get(dpo::letters).post(dpo::letters_posted),
        )
        .route("/dpo/extractions/{id}", post(dpo::decide_extract))
        .route("/dpo/demandes/{id}", post(dpo::handle_request))
}

/// The page language: French unless the visitor chose English (a cookie
/// set by `/langue/en`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lang {
    Fr,
    En,
}

impl Lang {
    pub const COOKIE: &'static str = "coffre_lang";

    pub fn code(self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }

    /// The text in this language.
    pub fn t<'a>(self, fr: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Fr => fr,
            Lang::En => en,
        }
    }

    fn of(headers: &HeaderMap) -> Lang {
        match crate::http::session::cookie_value(headers, Lang::COOKIE) {
            Some("en") => Lang::En,
            _ => Lang::Fr,
        }
    }
}

/// Everything a page needs about the request: who, which language, where.
pub struct Ctx {
    pub state: AppState,
    pub lang: Lang,
    pub user: Option<CurrentUser>,
    /// The path of this page (for the language switch and "back" links).
    pub path: String,
    pub query: HashMap<String, String>,
    pub rid: Option<String>,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let query = parts
            .uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let RequestId(rid) = match RequestId::from_request_parts(parts, state).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let mut ctx = Ctx {
            state: state.clone(),
            lang: Lang::of(&parts.headers),
            user: None,
            path: parts.uri.path().to_string(),
            query,
            rid,
        };
        // A session that cannot be read (storage down) is an error page.
        ctx.user = match MaybeUser::from_request_parts(parts, state).await {
            Ok(MaybeUser(user)) => user,
            Err(e) => return Err(ctx.fail(e)),
        };
        Ok(ctx)
    }
}

/// A posted HTML form: every `name=value` pair, in order (a checkbox group
/// sends its name once per ticked box).
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form(url::form_urlencoded::parse(body).into_owned().collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field's trimmed value, `None` when absent or blank.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl Ctx {
    pub fn t<'a>(&self, fr: &'a str, en: &'a str) -> &'a str {
        self.lang.t(fr, en)
    }

    pub fn request_id(&self) -> RequestId {
        RequestId(self.rid.clone())
    }

    /// `user` as the caller a use case receives, with this page's request id.
    pub fn caller(&self, user: &CurrentUser) -> crate::service::Caller {
        crate::service::Caller::new(&user.actor_id, user.role, self.rid.clone())
    }

    /// The logged-in user if they hold one of `roles`; otherwise the page
    /// that asks them to log in (401) or says the space is not theirs (403).
    pub fn user_in(&self, roles: &[Role]) -> Result<CurrentUser, PageError> {
        match &self.user {
            None => Err(self.login_needed()),
            Some(u) if roles.contains(&u.role) => Ok(u.clone()),
            Some(_) => Err(self.fail(ErrorCode::RoleNotAllowed.into())),
        }
    }

    /// As [`Ctx::user_in`], for a posted form: its `csrf_token` must be the
    /// session's.
    pub fn form_user(&self, roles: &[Role], form: &Form) -> Result<CurrentUser, PageError> {
        let user = self.user_in(roles)?;
        let sent = form.get("csrf_token").unwrap_or_default();
        if !crate::http::session::same(sent, &user.csrf_token) {
            return Err(self.fail(ErrorCode::CsrfTokenInvalid.into()));
        }
        Ok(user)
    }

    fn login_needed(&self) -> PageError {
        let body = html! {
            h1 { (self.t("Connexion nécessaire", "Please log in")) }
            p { (self.t("Cette page montre des informations personnelles : connectez-vous d'abord.",
                         "This page shows personal information: please log in first.")) }
            (public::login_choices(self))
        };
        self.page_with(
            StatusCode::UNAUTHORIZED,
            self.t("Connexion nécessaire", "Please log in"),
            body,
        )
        .into()
    }

    /// The page for a refusal or failure: its message in the page's
    /// language, its stable code, and a way back.
    pub fn fail(&self, e: AppError) -> PageError {
        let back = self
            .query
            .get("retour")
            .map(String::as_str)
            .filter(|p| local_path(p))
            .unwrap_or("/")
            .to_string();
        self.fail_at(e, &back)
    }

    /// As [`Ctx::fail`], with the way back to the page whose form failed.
    pub fn fail_at(&self, e: AppError, back: &str) -> PageError {
        let (code, status) = e.code_and_status();
        if status.is_server_error() {
            tracing::warn!(code, error = %e, "page failed");
        }
        let message = match &e {
            AppError::NotFound => self
                .t("Cette page n'existe pas ou n'est pas accessible.", "This page does not exist or is not accessible.")
                .to_string(),
            AppError::Unauthenticated => self
                .t("Votre session a expiré : connectez-vous de nouveau.", "Your session expired: please log in again.")
                .to_string(),
            AppError::Storage(_) | AppError::Internal(_) | AppError::Integrity => self
                .t("Le service a rencontré une erreur ; rien n'a été modifié. Réessayez plus tard.",
                   "The service hit an error; nothing was changed. Please try again later.")
                .to_string(),
            other => other.message_in(self.lang == Lang::Fr),
        };
        let title = if status == StatusCode::NOT_FOUND {
            self.t("Erreur : page introuvable", "Error: page not found")
        } else if status.is_server_error() {
            self.t(
                "Erreur : service indisponible",
                "Error: service unavailable",
            )
        } else {
            self.t("Erreur : action refusée", "Error: action refused")
        };
        let body = html! {
            h1 { (title) }
            div.alert role="alert" {
                p { (message) }
                p.small { (self.t("Code de l'erreur : ", "Error code: ")) code { (code) } }
            }
            p { a href=(back) { (self.t("Revenir à la page précédente", "Back to the previous page")) } }
        };
        self.page_with(status, title, body).into()
    }

    /// A 303 to `path` saying which action succeeded (`?fait=code`), shown
    /// there as a status message.
    pub fn done(&self, path: &str, code: &str) -> Response {
        let sep = if path.contains('?') { '&' } else { '?' };
        redirect(&format!("{path}{sep}fait={code}"))
    }

    pub fn page(&self, title: &str, body: Markup) -> Response {
        self.page_with(StatusCode::OK, title, body)
    }

    /// The whole page around `body`: skip link, header with the navigation
    /// for the visitor's role, the language switch, the success message of
    /// the previous action, and the footer.
    pub fn page_with(&self, status: StatusCode, title: &str, body: Markup) -> Response {
        let lang = self.lang;
        let other = match lang {
            Lang::Fr => ("en", "English", "en"),
            Lang::En => ("fr", "Français", "fr"),
        };
        // Back to this very page (its query too, but not the message of the
        // previous action); an error page answers a POST, so its language
        // switch leads home instead.
        let here = if status.is_success() {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(self.query.iter().filter(|(k, _)| k.as_str() != "fait"))
                .finish();
            if query.is_empty() {
                self.path.clone()
            } else {
                format!("{}?{query}", self.path)
            }
        } else {
            "/".to_string()
        };
        let back_here = url::form_urlencoded::byte_serialize(here.as_bytes()).collect::<String>();
        let flash = self.query.get("fait").and_then(|c| flash_text(c, lang));
        let markup = html! {
            (DOCTYPE)
            html lang=(lang.code()) {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { @if let Some(text) = flash { (text) " — " } (title) " — coffre" }
                    link rel="stylesheet" href="/static/coffre.css";
                    link rel="icon" href="/static/icone.svg" type="image/svg+xml";
                }
                body {
                    a.skip href="#contenu" { (lang.t("Aller au contenu", "Skip to content")) }
                    header {
                        div.bar {
                            p.brand { a href="/" { "coffre" } span { (lang.t(" · vos données, vos choix", " · your data, your choices")) } }
                            a href={ "/langue/" (other.0) "?retour=" (back_here) } lang=(other.2) hreflang=(other.2) { (other.1) }
                        }
                        (self.nav())
                    }
                    main #contenu tabindex="-1" {
                        @if let Some(text) = flash {
                            div.ok role="status" { p { (text) } }
                        }
                        (body)
                    }
                    footer {
                        ul {
                            li { a href="/registre" { (lang.t("Registre des traitements", "Register of processing")) } }
                            li { a href="/journal" { (lang.t("Journal vérifiable", "Verifiable log")) } }
                            li { a href="/statistiques" { (lang.t("Statistiques ouvertes", "Open statistics")) } }
                            li { a href="/accessibilite" { (lang.t("Accessibilité : non conforme", "Accessibility: not compliant")) } }
                            li { a href="/mentions-legales" { (lang.t("Mentions légales", "Legal notice")) } }
                        }
                    }
                }
            }
        };
        let mut res = (status, maud_html(markup)).into_response();
        // Pages may show personal data: never cached anywhere.
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }

    fn nav(&self) -> Markup {
        let l = self.lang;
        let links: Vec<(&str, &str)> = match self.user.as_ref().map(|u| u.role) {
            None => vec![
                ("/", l.t("Accueil", "Home")),
                ("/registre", l.t("Les finalités", "Purposes")),
                ("/journal", l.t("Le journal", "The log")),
            ],
            Some(Role::Resident) => vec![
                ("/moi", l.t("Mon espace", "My space")),
                ("/moi/donnees", l.t("Mes données", "My data")),
                (
                    "/moi/consentements",
                    l.t("Mes consentements", "My consents"),
                ),
                ("/moi/acces", l.t("Qui a vu mes données", "Who saw my data")),
                ("/moi/mandats", l.t("Mes mandats", "My mandates")),
                ("/moi/sources", l.t("Mes sources", "My sources")),
            ],
            Some(Role::Aidant) => vec![
                ("/aidant", l.t("Mes usagers", "My residents")),
                (
                    "/aidant/mandats/nouveau",
                    l.t("Nouveau mandat", "New mandate"),
                ),
            ],
            Some(Role::Referent) => vec![
                ("/aidant", l.t("Mes usagers", "My residents")),
                (
                    "/aidant/mandats/nouveau",
                    l.t("Nouveau mandat", "New mandate"),
                ),
                ("/referent/alertes", l.t("Alertes", "Alerts")),
            ],
            Some(Role::Dpo) => vec![
                ("/dpo", l.t("Espace DPO", "DPO space")),
                ("/registre", l.t("Registre", "Register")),
            ],
            Some(_) => vec![
                ("/", l.t("Accueil", "Home")),
                ("/journal", l.t("Le journal", "The log")),
            ],
        };
        html! {
            nav aria-label=(l.t("Menu principal", "Main menu")) {
                ul {
                    @for (href, label) in &links {
                        li {
                            @if *href == self.path {
                                a href=(href) aria-current="page" { (label) }
                            } @else {
                                a href=(href) { (label) }
                            }
                        }
                    }
                    @if let Some(u) = &self.user {
                        li {
                            form method="post" action="/auth/logout" {
                                (csrf(u))
                                button.link { (l.t("Se déconnecter", "Log out")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The hidden CSRF field of every form under a session.
pub fn csrf(user: &CurrentUser) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(user.csrf_token); }
}

pub fn maud_html(m: Markup) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
}

pub fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, HeaderValue::from_static("/"))],
        )
            .into_response(),
    }
}

pub use crate::domain::paths::local_path;

/// What the previous action did, for the message at the top of the page.
fn flash_text(code: &str, l: Lang) -> Option<&'static str> {
    Some(match code {
        "opposition_source" => l.t("C'est enregistré.", "Recorded."),
        "notifications" => l.t("Vos choix sont enregistrés.", "Your choices are saved."),
        "source_retiree" => l.t(
            "L'autorisation est retirée : cette source ne peut plus rien déposer à votre sujet.",
            "The authorisation is revoked: this source can no longer deposit anything about you.",
        ),
        "donnees" => l.t(
            "Vos données ont été enregistrées. L'ancienne version est gardée dans l'historique.",
            "Your data was saved. The previous version is kept in the history.",
        ),
        "donne" => l.t(
            "Votre consentement est enregistré. Vous pouvez le retirer à tout moment ici.",
            "Your consent is recorded. You can withdraw it at any time here.",
        ),
        "refuse" => l.t(
            "Votre refus est enregistré. Il ne change rien aux services publics.",
            "Your refusal is recorded. It does not affect public services.",
        ),
        "revoque" => l.t(
            "Le mandat est révoqué : plus personne ne peut agir pour vous à ce titre.",
            "The mandate is revoked: nobody can act for you under it any more.",
        ),
        "mandat" => l.t(
            "Le mandat est créé. Imprimez l'attestation pour la personne.",
            "The mandate is created. Print the attestation for the resident.",
        ),
        "brouillon" => l.t(
            "Projet de mandat prêt : la personne doit maintenant se connecter.",
            "Mandate draft ready: the resident must now log in.",
        ),
        "revoque_aidant" => l.t("Le mandat est révoqué.", "The mandate is revoked."),
        "approuve" => l.t(
            "L'extraction est approuvée ; sa construction a commencé.",
            "The extract is approved; it is being built.",
        ),
        "rejete" => l.t(
            "L'extraction est rejetée ; le partenaire en est informé.",
            "The extract is rejected; the partner can see why.",
        ),
        "prolonge" => l.t(
            "Le délai de réponse est prolongé.",
            "The deadline is extended.",
        ),
        "cloture" => l.t("La demande est close.", "The request is closed."),
        "regles_alerte" => l.t("Les règles sont enregistrées.", "The rules are saved."),
        "alerte_examinee" => l.t(
            "L'alerte est notée comme examinée.",
            "The alert is marked reviewed.",
        ),
        "courriers_postes" => l.t(
            "Les courriers sont notés comme postés.",
            "The letters are recorded as posted.",
        ),
        "efface" => l.t(
            "Vos données sont effacées et votre session est fermée.",
            "Your data is erased and your session is closed.",
        ),
        _ => return None,
    })
}

/// Paris time, from the IANA time-zone database (`chrono-tz`), the same
/// calendar the legal deadlines are counted on (`rights::legal_deadline`).
pub fn paris(ts: i64) -> Option<chrono::NaiveDateTime> {
    let utc = chrono::DateTime::from_timestamp(ts, 0)?;
    Some(utc.with_timezone(&chrono_tz::Europe::Paris).naive_local())
}

/// A date (Paris time) as the French write it.
pub fn date(ts: i64) -> String {
    paris(ts)
        .map(|d| d.format("%d/%m/%Y").to_string())
        .unwrap_or_default()
}

/// A date and time (Paris time).
pub fn date_time(ts: i64, l: Lang) -> String {
    paris(ts)
        .map(|d| match l {
            Lang::Fr => d.format("%d/%m/%Y à %H:%M").to_string(),
            Lang::En => d.format("%Y-%m-%d %H:%M (Paris time)").to_string(),
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::paris;

    fn at(ts: i64) -> String {
        paris(ts).unwrap().format("%Y-%m-%d %H:%M").to_string()
    }

    #[test]
    fn paris_time_follows_the_eu_summer_time_rules() {
        // 2026-03-29 00:59:59 UTC is still winter (+1); 01:00 UTC is summer (+2).
        assert_eq!(at(1_774_745_999), "2026-03-29 01:59");
        assert_eq!(at(1_774_746_000), "2026-03-29 03:00");
        // 2026-10-25 00:59:59 UTC is summer; 01:00 UTC is winter again.
        assert_eq!(at(1_792_889_999), "2026-10-25 02:59");
        assert_eq!(at(1_792_890_000), "2026-10-25 02:00");
        assert_eq!(at(1_795_867_200), "2026-11-28 13:00");
    }
}
