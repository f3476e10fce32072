//! Public pages: home, the register of processing, the audit log and how to
//! verify it, the accessibility statement, the legal notice; and the two
//! static files every page uses.

use axum::extract::Path;
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::{Ctx, Lang, PageResult, redirect};
use crate::domain::Role;
use crate::domain::purpose::{LegalBasis, Purpose};

const STYLESHEET: &str = include_str!("coffre.css");
const ICON: &str = include_str!("icone.svg");

pub async fn stylesheet() -> Response {
    static_file("text/css; charset=utf-8", STYLESHEET)
}

pub async fn icon() -> Response {
    static_file("image/svg+xml", ICON)
}

/// Browsers ask for `/favicon.ico` on their own: the same icon.
pub async fn favicon() -> Response {
    static_file("image/svg+xml", ICON)
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            ),
        ],
        body,
    )
        .into_response()
}

/// Chooses the page language (a cookie), then goes back where the visitor
/// was. Only paths of this site are followed.
pub async fn set_lang(ctx: Ctx, Path(lang): Path<String>) -> Response {
    let lang = if lang == "en" { Lang::En } else { Lang::Fr };
    let back = ctx
        .query
        .get("retour")
        .map(String::as_str)
        .filter(|p| super::local_path(p))
        .unwrap_or("/");
    let mut res = redirect(back);
    let secure = if ctx.state.config.is_https() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{}={}; Path=/; SameSite=Lax; Max-Age=31536000{secure}",
        Lang::COOKIE,
        lang.code()
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// How to log in: FranceConnect for residents, the agents' provider, and
/// in demo mode the demo personas.
pub fn login_choices(ctx: &Ctx) -> Markup {
    let l = ctx.lang;
    // A page of the resident's space asked for a login: come back to it
    // (a source's approval page keeps its request).
    let here = if ctx.query.is_empty() {
        ctx.path.clone()
    } else {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(ctx.query.iter())
            .finish();
        format!("{}?{query}", ctx.path)
    };
    let next = crate::domain::paths::resident_return_path(&here);
    let resident_login = match &next {
        Some(next) => format!(
            "/auth/login?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("next", next)
                .finish()
        ),
        None => "/auth/login".to_string(),
    };
    html! {
        @if ctx.state.resident_login.is_some() {
            p { a.button href=(resident_login) { (l.t("Me connecter avec FranceConnect", "Log in with FranceConnect")) } }
        }
        @if ctx.state.agent_login.is_some() {
            p { a href="/auth/agent/login" { (l.t("Connexion des agents et aidants", "Staff and aidant login")) } }
        }
        @if ctx.state.resident_login.is_none() && ctx.state.agent_login.is_none() && !ctx.state.demo {
            p { (l.t("La connexion n'est pas encore configurée sur ce serveur.", "Login is not configured on this server yet.")) }
        }
        @if ctx.state.demo {
            section aria-labelledby="demo" {
                h2 #demo { (l.t("Démonstration", "Demo")) }
                p { (l.t("Mode démonstration : personnes fictives, connexion sans mot de passe.", "Demo mode: fictitious people, login without a password.")) }
                ul.personas {
                    @for p in crate::demo::personas().into_iter().filter(|p| p.client_id.is_none()) {
                        li {
                            form method="post" action="/dev/login" {
                                input type="hidden" name="persona" value=(p.id);
                                @if let Some(next) = &next {
                                    input type="hidden" name="next" value=(next);
                                }
                                button { (l.t("Se connecter en tant que ", "Log in as ")) (p.name) }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub async fn home(ctx: Ctx) -> PageResult {
    let l = ctx.lang;
    let space = match ctx.user.as_ref().map(|u| u.role) {
        Some(Role::Resident) => Some(("/moi", l.t("Aller à mon espace", "Go to my space"))),
        Some(Role::Aidant) | Some(Role::Referent) => Some((
            "/aidant",
            l.t("Aller à l'espace aidant", "Go to the aidant space"),
        )),
        Some(Role::Dpo) => Some(("/dpo", l.t("Aller à l'espace DPO", "Go to the DPO space"))),
        Some(_) => Some(("/journal", l.t("Voir le journal", "See the log"))),
        None => None,
    };
    let body = html! {
        h1 { (l.t("Vos données personnelles, sous votre contrôle", "Your personal data, under your control")) }
        p.lead { (l.t(
            "La collectivité garde vos données chiffrées, en tiers de confiance. Vous choisissez, finalité par finalité, qui peut les utiliser, vous voyez qui les a consultées, et vous pouvez tout retirer.",
            "The local authority keeps your data encrypted, as a trusted third party. You choose, purpose by purpose, who may use it, you see who looked at it, and you can take everything back.")) }
        @if let Some((href, label)) = space {
            p { a.button href=(href) { (label) } }
        } @else {
            (login_choices(&ctx))
        }
        h2 { (l.t("Ce que vous pouvez faire", "What you can do")) }
        ul {
            li { (l.t("voir et corriger vos données ;", "see and correct your data;")) }
            li { (l.t("donner, refuser ou retirer votre consentement, à tout moment ;", "give, refuse or withdraw your consent, at any time;")) }
            li { (l.t("savoir qui a consulté vos données, quand et pourquoi ;", "know who looked at your data, when and why;")) }
            li { (l.t("être aidé par un aidant d'une structure habilitée (mandat) ;", "be helped by an aidant of an authorised structure (mandate);")) }
            li { (l.t("tout effacer.", "erase everything.")) }
        }
        p { a href="/registre" { (l.t("Toutes les finalités, expliquées simplement", "All purposes, explained simply")) } }
    };
    Ok(ctx.page(l.t("Accueil", "Home"), body))
}

pub fn basis_text(b: LegalBasis, l: Lang) -> &'static str {
    use LegalBasis::*;
    match b {
        Consent => l.t(
            "votre consentement (RGPD art. 6-1-a)",
            "your consent (GDPR art. 6-1-a)",
        ),
        ExplicitConsent => l.t(
            "votre consentement explicite (RGPD art. 9-2-a)",
            "your explicit consent (GDPR art. 9-2-a)",
        ),
        PublicTask => l.t(
            "une mission de service public (RGPD art. 6-1-e)",
            "a public task (GDPR art. 6-1-e)",
        ),
        LegalObligation => l.t(
            "une obligation légale (RGPD art. 6-1-c)",
            "a legal obligation (GDPR art. 6-1-c)",
        ),
        VitalInterest => l.t(
            "des intérêts vitaux (RGPD art. 6-1-d)",
            "vital interests (GDPR art. 6-1-d)",
        ),
        Contract => l.t(
            "un contrat (RGPD art. 6-1-b)",
            "a contract (GDPR art. 6-1-b)",
        ),
    }
}

pub fn purpose_title(p: &Purpose, l: Lang) -> &str {
    l.t(&p.title_fr, &p.title_en)
}

pub fn category_label(ctx: &Ctx, name: &str) -> String {
    ctx.state
        .categories
        .def_named(name)
        .map(|d| ctx.t(&d.label_fr, &d.label_en).to_string())
        .unwrap_or_else(|| name.to_string())
}

/// The register of processing (GDPR art. 30), printable: one section per
/// purpose, from `policies/purposes.toml`. Public, like `/api/v1/purposes`.
pub async fn register(ctx: Ctx) -> PageResult {
    let l = ctx.lang;
    let body = html! {
        h1 { (l.t("Registre des activités de traitement", "Register of processing activities")) }
        p { (l.t(
            "Article 30 du RGPD. Chaque finalité est tenue à jour par le délégué à la protection des données ; toute modification de son texte crée une nouvelle version de l'information, et chaque consentement garde la version sous laquelle il a été donné.",
            "GDPR article 30. The data protection officer keeps each purpose up to date; any change of its text makes a new notice version, and each consent keeps the version it was given under.")) }
        p { (l.t(
            "Les traitements fondés sur une mission de service public ne vous demandent pas votre consentement, et refuser un consentement ailleurs ne les change jamais.",
            "Processing based on a public task never asks for your consent, and refusing a consent elsewhere never changes it.")) }
        @for p in ctx.state.register.all() {
            section.card aria-labelledby={ "p-" (p.id) } {
                h2 #{ "p-" (p.id) } { (purpose_title(p, l)) }
                p { (l.t(&p.description_fr, &p.description_en)) }
                dl {
                    dt { (l.t("Identifiant", "Identifier")) }
                    dd { code { (p.id) } " " (l.t("(version de l'information ", "(notice version ")) code { (p.notice_version) } ")" }
                    dt { (l.t("Responsable", "Controller")) }
                    dd { (p.controller) }
                    dt { (l.t("Base légale", "Legal basis")) }
                    dd { (basis_text(p.legal_basis, l)) }
                    dt { (l.t("Catégories de données", "Data categories")) }
                    dd { (p.categories.iter().map(|c| category_label(&ctx, c)).collect::<Vec<_>>().join(", ")) }
                    dt { (l.t("Destinataires", "Recipients")) }
                    dd {
                        @if p.recipients.is_empty() { (l.t("aucun (le responsable seul)", "none (the controller only)")) }
                        @else { (p.recipients.join(", ")) }
                    }
                    dt { (l.t("Conservation", "Retention")) }
                    dd { (p.retention_days) (l.t(" jours", " days")) }
                    @if p.legal_basis.needs_consent() {
                        dt { (l.t("Durée maximale du consentement", "Maximum consent period")) }
                        dd { (p.max_consent_days) (l.t(" jours", " days")) }
                    }
                    dt { (l.t("Données sensibles (art. 9)", "Special category (art. 9)")) }
                    dd { (if p.special_category { l.t("oui", "yes") } else { l.t("non", "no") }) }
                    dt { (l.t("Le retrait du consentement efface les données", "Withdrawing consent erases the data")) }
                    dd { (if p.withdrawal_erases { l.t("oui", "yes") } else { l.t("non", "no") }) }
                }
            }
        }
        (sources_section(&ctx))
    };
    Ok(ctx.page(
        l.t("Registre des traitements", "Register of processing"),
        body,
    ))
}

/// The register of data sources (`policies/sources.toml`), beside the
/// purposes: who may deposit which data, on what basis, how they name a
/// resident, how long it is kept. On `/registre` and the DPO's page.
pub fn sources_section(ctx: &Ctx) -> Markup {
    let l = ctx.lang;
    html! {
        h2 #sources { (l.t("Sources de données", "Data sources")) }
        p { (l.t(
            "Les services publics et les opérateurs qui déposent des données dans le coffre. Une source dépose, elle ne lit jamais ; chaque dépôt est inscrit au journal et sa provenance reste attachée à la donnée.",
            "The public services and operators that deposit data into the vault. A source deposits, it never reads; each deposit is logged and its provenance stays bound to the data.")) }
        @if ctx.state.sources.all().next().is_none() {
            p { (l.t("Aucune source n'est déclarée.", "No source is declared.")) }
        }
        @for s in ctx.state.sources.all() {
            section.card aria-labelledby={ "s-" (s.id) } {
                h3 #{ "s-" (s.id) } { (s.name(l == Lang::Fr)) }
                p { (l.t(&s.description_fr, &s.description_en)) }
                dl {
                    dt { (l.t("Identifiant", "Identifier")) }
                    dd { code { (s.id) } }
                    dt { (l.t("Responsable", "Controller")) }
                    dd { (s.controller) }
                    dt { (l.t("Base", "Basis")) }
                    dd { (source_basis_text(s.basis, l)) }
                    dt { (l.t("Catégories déposées", "Categories deposited")) }
                    dd { (s.categories.iter().map(|c| category_label(ctx, c)).collect::<Vec<_>>().join(", ")) }
                    dt { (l.t("Conservation", "Retention")) }
                    dd { (s.retention_days) (l.t(" jours", " days")) }
                }
            }
        }
    }
}

pub fn source_basis_text(b: crate::domain::source::SourceBasis, l: Lang) -> &'static str {
    use crate::domain::source::SourceBasis::*;
    match b {
        ResidentAuthorisation => l.t(
            "votre autorisation, que vous pouvez retirer à tout moment",
            "your authorisation, which you may revoke at any time",
        ),
        PublicTask => l.t(
            "une mission de service public (RGPD art. 6-1-e) ; vous pouvez vous opposer",
            "a public task (GDPR art. 6-1-e); you may object",
        ),
    }
}

/// The current signed checkpoint of the audit log and, in plain words, how
/// anyone can check that the log was never rewritten.
pub async fn journal(ctx: Ctx) -> PageResult {
    let l = ctx.lang;
    let (cp, note) = crate::service::journal::checkpoint_note(&ctx.state, ctx.state.clock.now())
        .await
        .map_err(|e| ctx.fail(e))?;
    let key = crate::service::journal::verifier_key(&ctx.state).map_err(|e| ctx.fail(e))?;
    let witnesses = crate::service::witness::statuses(&ctx.state)
        .await
        .map_err(|e| ctx.fail(e))?;
    let body = html! {
        h1 { (l.t("Le journal vérifiable", "The verifiable log")) }
        p { (l.t(
            "Chaque consultation, modification ou refus d'accès à des données personnelles est inscrit dans un journal. Le journal ne contient aucune donnée personnelle : seulement des identifiants, des catégories et des finalités.",
            "Every read, change or refused access to personal data is written to a log. The log holds no personal data: only identifiers, categories and purposes.")) }
        p { (l.t(
            "Ce journal est construit comme ceux de la transparence des certificats (RFC 9162) : chaque état est résumé par une empreinte signée, le « point de contrôle ». Si une seule entrée passée était modifiée, supprimée ou ajoutée, les preuves ne correspondraient plus.",
            "The log is built like Certificate Transparency's (RFC 9162): each state is summed up by a signed fingerprint, the checkpoint. If a single past entry were changed, removed or added, the proofs would no longer match.")) }
        h2 { (l.t("Point de contrôle actuel", "Current checkpoint")) }
        p { (l.t("Taille de l'arbre : ", "Tree size: ")) strong { (cp.tree_size) } }
        pre { code { (note) } }
        p { a href="/api/v1/audit/checkpoint" { (l.t("Ce point de contrôle en texte brut", "This checkpoint as plain text")) } }
        h2 { (l.t("Les témoins", "The witnesses")) }
        p { (l.t(
            "L'exploitant signe lui-même ses points de contrôle : il pourrait, en théorie, montrer un historique à un auditeur et un autre à un juge. Des témoins indépendants l'en empêchent. Avant de contresigner un point de contrôle, chaque témoin vérifie qu'il prolonge celui qu'il a vu la fois précédente, sans rien réécrire. Un point de contrôle contresigné par plusieurs témoins est donc le même pour tout le monde.",
            "The operator signs its own checkpoints: in theory it could show one history to an auditor and another to a judge. Independent witnesses prevent this. Before cosigning a checkpoint, each witness checks that it extends the one it saw last time, rewriting nothing. A checkpoint cosigned by several witnesses is therefore the same for everyone.")) }
        @if witnesses.is_empty() {
            p { (l.t("Aucun témoin n'est configuré pour ce service.", "No witness is configured for this service.")) }
        } @else {
            table {
                thead { tr { th scope="col" { (l.t("Témoin", "Witness")) } th scope="col" { (l.t("Dernier point contresigné", "Last cosigned checkpoint")) } th scope="col" { (l.t("État", "State")) } } }
                tbody {
                    @for w in &witnesses {
                        tr {
                            td { code { (w.name) } }
                            td { (w.cosigned_size) @if let Some(at) = w.last_ok_at { " (" (super::date_time(at, l)) ")" } }
                            td { @if let Some(e) = &w.last_error {
                                    (l.t("refus ou silence : ", "refused or silent: ")) code { (e) }
                                } @else { (l.t("à jour", "up to date")) } }
                        }
                    }
                }
            }
        }
        h2 { (l.t("Clé de vérification", "Verifier key")) }
        pre { code { (key) } }
        h2 { (l.t("Comment vérifier", "How to verify")) }
        ol {
            li { (l.t("Gardez une copie du point de contrôle d'aujourd'hui.", "Keep a copy of today's checkpoint.")) }
            li { (l.t("Plus tard, demandez une preuve de cohérence entre votre copie et le point de contrôle du moment : ", "Later, ask for a consistency proof between your copy and the checkpoint of the day: "))
                 code { "/api/v1/audit/proofs/consistency?from=A&to=B" } "." }
            li { (l.t("Vérifiez la signature avec la clé ci-dessus (format « signed note » C2SP) et la preuve (RFC 9162). Un résident peut aussi vérifier chaque accès à ses données : chacun vient avec sa preuve d'inclusion.",
                       "Check the signature with the key above (C2SP signed-note form) and the proof (RFC 9162). A resident can also check each access to their data: each comes with its inclusion proof.")) }
            li { (l.t("L'exploitant peut tout revérifier avec ", "The operator can re-check everything with ")) code { "coffre audit verify --checkpoint FICHIER" } "." }
        }
    };
    Ok(ctx.page(l.t("Journal vérifiable", "Verifiable log"), body))
}

/// The accessibility statement (RGAA 4.1 declaration).
pub async fn accessibility(ctx: Ctx) -> PageResult {
    let l = ctx.lang;
    let body = html! {
        h1 { (l.t("Déclaration d'accessibilité", "Accessibility statement")) }
        p { (l.t(
            "La collectivité s'engage à rendre ses services numériques accessibles, conformément à l'article 47 de la loi n° 2005-102 du 11 février 2005. Cette déclaration s'applique au service coffre.",
            "The local authority is committed to making its digital services accessible, under article 47 of French law 2005-102 of 11 February 2005. This statement covers the coffre service.")) }
        h2 { (l.t("État de conformité", "Compliance status")) }
        p { (l.t(
            "Le service est non conforme avec le référentiel général d'amélioration de l'accessibilité (RGAA), version 4.1 : aucun audit de conformité n'a encore été réalisé. Sans audit, la loi impose cette mention, même si les contrôles ci-dessous passent.",
            "The service is not compliant with the French accessibility framework (RGAA) version 4.1: no compliance audit has been done yet. Without an audit, the law requires this wording, even though the checks below pass.")) }
        p { (l.t("Déclaration établie le 28 novembre 2026.", "Statement made on 28 November 2026.")) }
        h2 { (l.t("Ce qui est vérifié", "What is checked")) }
        ul {
            li { (l.t("chaque page est contrôlée automatiquement à chaque modification, dans un vrai navigateur, avec axe-core (règles RGAA 4 et WCAG 2 niveau AA) ;",
                       "every page is checked automatically at each change, in a real browser, with axe-core (RGAA 4 and WCAG 2 level AA rules);")) }
            li { (l.t("les parcours de consentement et de mandat sont parcourus au clavier seul ;", "the consent and mandate journeys are walked with the keyboard only;")) }
            li { (l.t("les pages s'affichent sans défilement horizontal sur un écran de 320 pixels de large ;", "pages show without horizontal scrolling on a 320-pixel-wide screen;")) }
            li { (l.t("chaque page tient en 3 requêtes et moins de 30 Ko, et fonctionne sans JavaScript.", "each page takes at most 3 requests and under 30 KB, and works without JavaScript.")) }
        }
        h2 { (l.t("Contenus non accessibles connus", "Known inaccessible content")) }
        ul {
            li { (l.t("« Mes données » réaffiche une saisie refusée avec vos valeurs et le champ en cause ; les autres formulaires (consentements, mandats, espace de l'aidant) mènent à une page d'erreur avec un lien de retour, où il faut saisir de nouveau (RGAA 11.10) ;",
                       "\"My data\" shows a refused form again with your values and the field at fault; the other forms (consents, mandates, the aidant's space) lead to an error page with a link back, where you type again (RGAA 11.10);")) }
            li { (l.t("les libellés des démarches ne sont qu'en français ;", "démarche labels are in French only;")) }
            li { (l.t("la session se ferme après 30 minutes sans activité, pour la sécurité de vos données ; la page « Mes données » l'annonce, mais le délai ne peut pas être prolongé (RGAA 13.1).", "the session closes after 30 idle minutes, for the safety of your data; the \"My data\" page says so, but the limit cannot be extended (RGAA 13.1).")) }
        }
        h2 { (l.t("Environnement de test", "Test environment")) }
        p { (l.t("Chromium 156 (paquet Debian), sans lecteur d'écran ; axe-core 4.14 ; navigation au clavier automatisée (Playwright).",
                  "Chromium 156 (Debian package), without a screen reader; axe-core 4.14; automated keyboard navigation (Playwright).")) }
        h2 { (l.t("Technologies utilisées", "Technologies used")) }
        p { "HTML5, CSS." }
        h2 { (l.t("Retour d'information et contact", "Feedback and contact")) }
        p { (l.t(
            "Si vous n'arrivez pas à accéder à un contenu ou à un service, écrivez au délégué à la protection des données de la collectivité (son adresse figure dans le registre des traitements), ou rendez-vous dans une structure d'aide (CCAS, France services) : un aidant peut faire la démarche avec vous.",
            "If you cannot reach some content or service, write to the local authority's data protection officer (their address is in the register of processing), or visit a help desk (CCAS, France services): an aidant can do it with you.")) }
        h2 { (l.t("Voies de recours", "Remedies")) }
        p { (l.t(
            "Si vous nous avez signalé un défaut d'accessibilité sans obtenir de réponse satisfaisante, vous pouvez écrire au Défenseur des droits (formulaire en ligne, délégué dans votre région, ou courrier gratuit : Défenseur des droits, Libre réponse 71120, 75342 Paris CEDEX 07).",
            "If you reported an accessibility problem and got no satisfying answer, you can write to the Défenseur des droits (online form, regional delegate, or free post: Défenseur des droits, Libre réponse 71120, 75342 Paris CEDEX 07).")) }
    };
    Ok(ctx.page(l.t("Accessibilité", "Accessibility"), body))
}

pub async fn legal(ctx: Ctx) -> PageResult {
    let l = ctx.lang;
    let body = html! {
        h1 { (l.t("Mentions légales", "Legal notice")) }
        h2 { (l.t("Éditeur", "Publisher")) }
        p { (l.t(
            "Ce service est édité par la collectivité qui l'exploite, en tiers de confiance des données de son territoire. Le responsable de chaque traitement est nommé dans le registre des traitements.",
            "This service is published by the local authority that runs it, as trusted third party for the data of its territory. The controller of each processing is named in the register of processing.")) }
        h2 { (l.t("Données personnelles", "Personal data")) }
        p { (l.t(
            "Vos données sont chiffrées, chacune avec une clé qui vous est propre. Vous pouvez à tout moment les consulter, les corriger, les exporter, limiter leur usage, vous opposer à un traitement ou les effacer depuis votre espace. Pour toute question, écrivez au délégué à la protection des données ; vous pouvez aussi saisir la CNIL.",
            "Your data is encrypted, each with a key of your own. At any time you can see, correct, export, restrict, object to or erase it from your space. For any question, write to the data protection officer; you can also complain to the CNIL.")) }
        p { a href="/registre" { (l.t("Le registre des traitements", "The register of processing")) } }
        h2 { (l.t("Cookies", "Cookies")) }
        p { (l.t(
            "Ce site dépose uniquement les cookies nécessaires : la session de connexion, la protection de la connexion, et la langue choisie. Aucun cookie de mesure d'audience ni de publicité.",
            "This site sets only necessary cookies: the login session, the login protection, and the chosen language. No analytics or advertising cookie.")) }
        h2 { (l.t("Hébergement et code", "Hosting and code")) }
        p { (l.t("Logiciel libre sous licence EUPL-1.2.", "Free software under the EUPL-1.2 licence.")) }
    };
    Ok(ctx.page(l.t("Mentions légales", "Legal notice"), body))
}
