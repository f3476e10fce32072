//! The resident's data sources (`/moi/sources`): which sources may deposit
//! about them, a pairing code to give a link source at a counter, revoking
//! a link; and the approval page a link source sends the resident to
//! (`/moi/sources/{id}/autoriser`), which sends them back to the source's
//! registered redirect URI with a one-time code.

use axum::body::Bytes;
use axum::extract::Path;
use maud::html;

use super::public::{category_label, source_basis_text};
use super::resident::RESIDENT;
use super::{Ctx, Form, Lang, PageResult, csrf, date, date_time};
use crate::domain::source::Matching;
use crate::error::ErrorCode;

pub async fn sources(ctx: Ctx) -> PageResult {
    let user = ctx.user_in(RESIDENT)?;
    let l = ctx.lang;
    let mine = crate::service::sources::my_sources(&ctx.state, &ctx.caller(&user))
        .await
        .map_err(|e| ctx.fail(e))?
        .value;
    let body = html! {
        h1 { (l.t("Mes sources de données", "My data sources")) }
        p { (l.t(
            "Des services publics et des opérateurs peuvent déposer des données dans votre coffre. Chaque dépôt est inscrit au journal, et sa provenance reste attachée à la donnée. Un opérateur privé ne dépose que si vous l'y autorisez.",
            "Public services and operators may deposit data into your vault. Each deposit is logged, and its provenance stays bound to the data. A private operator deposits only if you authorise it.")) }
        @for s in &mine {
            section.card aria-labelledby={ "s-" (s.id) } {
                h2 #{ "s-" (s.id) } { (if l == Lang::Fr { &s.name_fr } else { &s.name_en }) }
                @if let Some(def) = ctx.state.sources.get(&s.id) {
                    p { (l.t(&def.description_fr, &def.description_en)) }
                    p.small {
                        (l.t("Base : ", "Basis: ")) (source_basis_text(def.basis, l)) ". "
                        (l.t("Catégories déposées : ", "Categories deposited: "))
                        (s.categories.iter().map(|c| category_label(&ctx, c)).collect::<Vec<_>>().join(", ")) "."
                    }
                }
                @if let Some(first) = s.first_deposit_at {
                    p.note role="note" {
                        strong { (l.t("Données reçues de cette source. ", "Data received from this source. ")) }
                        (l.t("Elle a déposé des données à votre sujet pour la première fois le ", "It first deposited data about you on ")) (date(first))
                        @if let Some(last) = s.last_deposit_at { (l.t(", la dernière fois le ", ", last on ")) (date(last)) }
                        (l.t(" (", " (")) (s.deposits) (l.t(" version(s)). Vous les voyez dans « Mes données », avec leur provenance.", " version(s)). You see them in \"My data\", with their provenance."))
                    }
                }
                @match s.link.as_str() {
                    "linked" => {
                        p { strong { (l.t("Autorisée", "Authorised")) } @if let Some(at) = s.linked_at { " " (l.t("depuis le ", "since ")) (date(at)) } "."
                            @if let Some(at) = s.last_deposit_at { " " (l.t("Dernier dépôt : ", "Last deposit: ")) (date_time(at, l)) "." } }
                        form method="post" action={ "/moi/sources/" (s.id) "/retrait" } {
                            (csrf(&user))
                            div.choice {
                                input type="checkbox" id={ "c-" (s.id) } name="confirm" value="yes" required;
                                label for={ "c-" (s.id) } { (l.t("Je retire mon autorisation : cette source ne pourra plus rien déposer à mon sujet.", "I revoke my authorisation: this source can no longer deposit anything about me.")) }
                            }
                            div.choice {
                                input type="checkbox" id={ "e-" (s.id) } name="erase" value="yes";
                                label for={ "e-" (s.id) } { (l.t("Effacer aussi ce qu'elle a déposé à mon sujet.", "Also erase what it deposited about me.")) }
                            }
                            p { button.danger { (l.t("Retirer l'autorisation", "Revoke the authorisation")) } }
                        }
                    }
                    "public_task" => {
                        p { (l.t("Cette source est un service public : elle vous reconnaît par votre identité, sans autorisation à donner. Vous pouvez vous opposer à ses dépôts.", "This source is a public service: it matches you by your identity, with no authorisation to give. You may object to its deposits.")) }
                        form method="post" action={ "/moi/sources/" (s.id) "/opposition" } {
                            (csrf(&user))
                            @if s.objected {
                                p { strong { (l.t("Vous vous êtes opposé(e) à ses dépôts.", "You objected to its deposits.")) } }
                                input type="hidden" name="lift" value="yes";
                                p { button { (l.t("Lever mon opposition", "Lift my objection")) } }
                            } @else {
                                p { button { (l.t("Je m'oppose à ses dépôts", "I object to its deposits")) } }
                            }
                        }
                    }
                    other => {
                        @if other == "revoked" { p { (l.t("Autorisation retirée.", "Authorisation revoked.")) } }
                        @if other == "revoked" && s.deposits > 0 {
                            // What it deposited before may still be erased.
                            form method="post" action={ "/moi/sources/" (s.id) "/retrait" } {
                                (csrf(&user))
                                input type="hidden" name="erase" value="yes";
                                div.choice {
                                    input type="checkbox" id={ "c-" (s.id) } name="confirm" value="yes" required;
                                    label for={ "c-" (s.id) } { (l.t("J'efface ce que cette source a déposé à mon sujet.", "I erase what this source deposited about me.")) }
                                }
                                p { button.danger { (l.t("Effacer ses dépôts", "Erase its deposits")) } }
                            }
                        }
                        form method="post" action={ "/moi/sources/" (s.id) "/code" } {
                            (csrf(&user))
                            p { button { (l.t("Obtenir un code à donner à cette source", "Get a code to give this source")) } }
                        }
                    }
                }
            }
        }
    };
    Ok(ctx.page(l.t("Mes sources de données", "My data sources"), body))
}

/// A pairing code, shown once, to read aloud at the source's counter.
pub async fn pairing_code(ctx: Ctx, Path(id): Path<String>, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(RESIDENT, &form)?;
    let l = ctx.lang;
    let now = ctx.state.clock.now();
    let code = crate::service::sources::start_pairing(&ctx.state, &ctx.caller(&user), &id, now)
        .await
        .map_err(|e| ctx.fail_at(e, "/moi/sources"))?
        .value;
    let body = html! {
        h1 { (l.t("Votre code", "Your code")) }
        p { (l.t("Donnez ce code à la source (au guichet, par téléphone ou sur son site). Il ne sert qu'une fois et expire à ", "Give this code to the source (at its counter, by phone or on its site). It works once and expires at "))
            (date_time(code.expires_at, l)) "." }
        p.code aria-label=(l.t("Code", "Code")) { strong { (code.pairing_code) } }
        p { a href="/moi/sources" { (l.t("Retour à mes sources", "Back to my sources")) } }
    };
    Ok(ctx.page(l.t("Votre code", "Your code"), body))
}

pub async fn revoke(ctx: Ctx, Path(id): Path<String>, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(RESIDENT, &form)?;
    if form.get("confirm") != Some("yes") {
        return Err(ctx.fail_at(ErrorCode::ConfirmationRequired.into(), "/moi/sources"));
    }
    let now = ctx.state.clock.now();
    let erase = form.get("erase") == Some("yes");
    crate::service::sources::revoke(&ctx.state, &ctx.caller(&user), &id, erase, now)
        .await
        .map_err(|e| ctx.fail_at(e, "/moi/sources"))?;
    Ok(ctx.done("/moi/sources", "source_retiree"))
}

/// The approval page a link source sends the resident to: what the source
/// will deposit, and the choice. The redirect URI is checked before
/// anything is shown: an unregistered one gets an error page, never a
/// redirect.
pub async fn authorise_page(ctx: Ctx, Path(id): Path<String>) -> PageResult {
    let user = ctx.user_in(RESIDENT)?;
    let l = ctx.lang;
    let source = ctx
        .state
        .sources
        .get(&id)
        .ok_or_else(|| ctx.fail(crate::error::AppError::NotFound))?;
    if source.matching != Matching::Link {
        return Err(ctx.fail(ErrorCode::SourceNotLinkable.into()));
    }
    let redirect_uri = ctx.query.get("redirect_uri").cloned().unwrap_or_default();
    let client_state = ctx.query.get("state").cloned().unwrap_or_default();
    if !source.redirect_allowed(&redirect_uri) {
        return Err(ctx.fail(ErrorCode::RedirectUriNotRegistered.into()));
    }
    if !crate::service::sources::valid_client_state(&client_state) {
        return Err(ctx.fail(ErrorCode::InvalidParameter.with("`state`")));
    }
    let account = crate::service::sources::approving_account(&ctx.state, &ctx.caller(&user))
        .await
        .map_err(|e| ctx.fail(e))?
        .value;
    let body = html! {
        h1 { (l.t("Autoriser ", "Authorise ")) (source.name(l == Lang::Fr)) }
        p #account {
            (l.t("Vous êtes connecté·e au coffre de ", "You are logged in to the vault of "))
            strong { (account.as_deref().unwrap_or(l.t("(nom non renseigné)", "(no name given)"))) } ". "
            (l.t("Si ce n'est pas vous, n'autorisez pas : déconnectez-vous d'abord.", "If this is not you, do not authorise: log out first."))
        }
        p { (l.t(&source.description_fr, &source.description_en)) }
        p { (l.t("Si vous acceptez, cette source pourra déposer dans votre coffre : ", "If you accept, this source may deposit into your vault: "))
            strong { (source.categories.iter().map(|c| category_label(&ctx, c)).collect::<Vec<_>>().join(", ")) } "." }
        p.small { (l.t("Responsable : ", "Controller: ")) (source.controller) ". "
            (l.t("Vous pourrez retirer cette autorisation à tout moment dans « Mes sources de données ».", "You may revoke this authorisation at any time in \"My data sources\".")) }
        form method="post" action={ "/moi/sources/" (source.id) "/autoriser" } {
            (csrf(&user))
            input type="hidden" name="redirect_uri" value=(redirect_uri);
            input type="hidden" name="state" value=(client_state);
            p { button { (l.t("J'autorise", "I authorise")) } " " a href="/moi/sources" { (l.t("Ne pas autoriser", "Do not authorise")) } }
        }
    };
    Ok(ctx.page(l.t("Autoriser une source", "Authorise a source"), body))
}

/// The approval: a one-time code, and a link back to the source's
/// registered redirect URI. A link, not a redirect: the pages' CSP
/// (`form-action 'self'`) rightly stops a form's answer from sending the
/// browser to another site, and the resident sees where they go.
pub async fn authorise(ctx: Ctx, Path(id): Path<String>, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(RESIDENT, &form)?;
    let now = ctx.state.clock.now();
    let back = crate::service::sources::authorise(
        &ctx.state,
        &ctx.caller(&user),
        &id,
        form.get("redirect_uri").unwrap_or_default(),
        form.get("state").unwrap_or_default(),
        now,
    )
    .await
    .map_err(|e| ctx.fail_at(e, "/moi/sources"))?
    .value;
    let l = ctx.lang;
    let name = ctx
        .state
        .sources
        .get(&id)
        .map(|s| s.name(l == Lang::Fr).to_string())
        .unwrap_or_default();
    let body = html! {
        h1 { (l.t("Autorisation donnée", "Authorisation given")) }
        p { (l.t("Vous pouvez la retirer à tout moment dans « Mes sources de données ».", "You may revoke it at any time in \"My data sources\".")) }
        p { a.button #continue href=(back) { (l.t("Retourner sur le site de ", "Back to the site of ")) (name) } }
    };
    Ok(ctx.page(l.t("Autorisation donnée", "Authorisation given"), body))
}

/// Objecting to a public-task source, or lifting the objection.
pub async fn objection(ctx: Ctx, Path(id): Path<String>, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(RESIDENT, &form)?;
    let caller = ctx.caller(&user);
    let done = if form.get("lift") == Some("yes") {
        crate::service::sources::lift_objection(&ctx.state, &caller, &id).await
    } else {
        crate::service::sources::object(&ctx.state, &caller, &id, ctx.state.clock.now()).await
    };
    done.map_err(|e| ctx.fail_at(e, "/moi/sources"))?;
    Ok(ctx.done("/moi/sources", "opposition_source"))
}
