//! The resident's consents: give, refuse, withdraw (and what a withdrawal
//! means), and the signed receipt of every decision, to keep.

use crate::error::ErrorCode;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::header::{self, HeaderValue};
use axum::response::IntoResponse;
use maud::html;

use super::public::{basis_text, category_label, purpose_title};
use super::resident::{RESIDENT, state_badge, state_label};
use super::{Ctx, Form, PageError, PageResult, csrf, date};
use crate::domain::consent::GiveRequest;
use crate::error::AppError;
use crate::http::session::CurrentUser;
use crate::service::consents::Decision;

async fn my_consents(
    ctx: &Ctx,
    user: &CurrentUser,
) -> Result<Vec<crate::service::consents::ConsentWithHistory>, PageError> {
    let now = ctx.state.clock.now();
    crate::service::consents::my_consents(&ctx.state, &ctx.caller(user), now)
        .await
        .map(|done| done.value.consents)
        .map_err(|e| ctx.fail(e))
}

pub async fn consents(ctx: Ctx) -> PageResult {
    let user = ctx.user_in(RESIDENT)?;
    let l = ctx.lang;
    let consents = my_consents(&ctx, &user).await?;
    let of = |purpose: &str| {
        consents
            .iter()
            .map(|c| &c.consent)
            .find(|c| c.purpose == purpose)
    };
    let (asked, public): (Vec<_>, Vec<_>) = ctx
        .state
        .register
        .all()
        .partition(|p| p.legal_basis.needs_consent());
    let body = html! {
        h1 { (l.t("Mes consentements", "My consents")) }
        p { (l.t("Pour chaque finalité ci-dessous, vous choisissez. Rien n'est coché d'avance. Vous pouvez retirer votre consentement à tout moment, en un clic ; ce retrait vaut pour l'avenir.",
                  "For each purpose below, you choose. Nothing is ticked in advance. You can withdraw your consent at any time, in one click; the withdrawal applies from then on.")) }
        @for p in &asked {
            @let current = of(p.id.as_str());
            @let state = current.map(|c| c.state.as_str()).unwrap_or("");
            section.card aria-labelledby={ "f-" (p.id) } {
                h2 #{ "f-" (p.id) } { (purpose_title(p, l)) }
                p { (l.t(&p.description_fr, &p.description_en)) }
                p.small {
                    (l.t("Responsable : ", "Controller: ")) (p.controller) ". "
                    @if p.recipients.is_empty() { (l.t("Aucun partenaire ne reçoit ces données.", "No partner receives this data.")) }
                    @else { (l.t("Partenaires destinataires : ", "Receiving partners: ")) (p.recipients.join(", ")) "." }
                    " " (l.t("Durée maximale : ", "Longest duration: ")) (p.max_consent_days) (l.t(" jours.", " days."))
                }
                p {
                    (l.t("Votre choix actuel : ", "Your current choice: "))
                    @if let Some(c) = current {
                        (state_badge(state, l))
                        @if state == "given" {
                            " " (l.t("jusqu'au ", "until ")) (date(c.valid_until.unwrap_or(0)))
                            " — " (c.categories.iter().map(|c| category_label(&ctx, c)).collect::<Vec<_>>().join(", "))
                        }
                    } @else {
                        (l.t("aucun", "none"))
                    }
                }
                @if state == "given" {
                    @if let Some(c) = current {
                        form method="post" action={ "/moi/consentements/" (c.id) "/retrait" } {
                            (csrf(&user))
                            button.danger { (l.t("Retirer mon consentement", "Withdraw my consent")) }
                        }
                    }
                } @else {
                    form method="post" action="/moi/consentements" {
                        (csrf(&user))
                        input type="hidden" name="purpose" value=(p.id);
                        fieldset {
                            legend { (l.t("Données que j'accepte de partager pour cette finalité", "Data I agree to share for this purpose")) }
                            @for c in &p.categories {
                                div.choice {
                                    input type="checkbox" id={ "cat-" (p.id) "-" (c) } name="categories" value=(c);
                                    label for={ "cat-" (p.id) "-" (c) } { (category_label(&ctx, c)) }
                                }
                            }
                        }
                        @if p.special_category {
                            div.choice {
                                input type="checkbox" id={ "explicit-" (p.id) } name="explicit" value="true";
                                label for={ "explicit-" (p.id) } { (l.t("J'accepte expressément que mes données de santé soient utilisées pour cette finalité.", "I expressly agree that my health data be used for this purpose.")) }
                            }
                        }
                        p {
                            button name="decision" value="given" { (l.t("Je donne mon consentement", "I give my consent")) }
                            " "
                            button.secondary name="decision" value="refused" { (l.t("Je refuse", "I refuse")) }
                        }
                    }
                }
            }
        }
        h2 { (l.t("Sans consentement : les missions de service public", "Without consent: public tasks")) }
        p { (l.t("Ces traitements ne reposent pas sur votre consentement mais sur une mission de service public. Refuser ou retirer un consentement ci-dessus ne les change pas. Vous pouvez vous y opposer en écrivant au délégué à la protection des données.",
                  "This processing does not rest on your consent but on a public task. Refusing or withdrawing a consent above does not change it. You can object to it by writing to the data protection officer.")) }
        ul {
            @for p in &public {
                li { strong { (purpose_title(p, l)) } " — " (basis_text(p.legal_basis, l)) }
            }
        }
    };
    Ok(ctx.page(l.t("Mes consentements", "My consents"), body))
}

pub async fn decide(ctx: Ctx, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(RESIDENT, &form)?;
    let decision = form.get("decision").unwrap_or_default().to_string();
    let categories = form.all("categories");
    if decision == "given" && categories.is_empty() {
        return Err(ctx.fail_at(ErrorCode::CategoriesRequired.into(), "/moi/consentements"));
    }
    let back = "/moi/consentements";
    let explicit = form.get("explicit") == Some("true");
    let chosen = match decision.as_str() {
        "given" => Decision::Give(GiveRequest {
            categories: Some(categories),
            until: None,
            explicit,
        }),
        "refused" => Decision::Refuse,
        _ => {
            return Err(ctx.fail_at(
                ErrorCode::InvalidForm.with("decision: `given` or `refused`"),
                back,
            ));
        }
    };
    let purpose = form.get("purpose").unwrap_or_default();
    let _receipt =
        crate::service::consents::decide_own(&ctx.state, &ctx.caller(&user), purpose, || {
            Ok(chosen)
        })
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(ctx.done(
        "/moi/consentements",
        if decision == "given" {
            "donne"
        } else {
            "refuse"
        },
    ))
}

pub async fn withdraw(ctx: Ctx, Path(id): Path<String>, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(RESIDENT, &form)?;
    let back = "/moi/consentements";
    // A malformed id names no consent: the use case answers it as unknown.
    let consent = crate::domain::ConsentId::parse(&id).ok();
    let _receipt =
        crate::service::consents::withdraw_own(&ctx.state, &ctx.caller(&user), consent.as_ref())
            .await
            .map_err(|e| ctx.fail_at(e, back))?;
    // The consent's id, not its purpose, goes in the address: a purpose
    // (health, say) says something about the person.
    Ok(super::redirect(&format!("/moi/consentements/{id}/retire")))
}

/// After a withdrawal: what it means, and how to give consent again.
pub async fn withdrawn(ctx: Ctx, Path(id): Path<String>) -> PageResult {
    let user = ctx.user_in(RESIDENT)?;
    let l = ctx.lang;
    // Only the person's own consent, and only once withdrawn; a malformed
    // id names none.
    let id = crate::domain::ConsentId::parse(&id).map_err(|_| ctx.fail(AppError::NotFound))?;
    let consent = crate::service::consents::own_withdrawn(&ctx.state, &ctx.caller(&user), &id)
        .await
        .map_err(|e| ctx.fail(e))?;
    let purpose = ctx.state.register.get(consent.purpose.as_str());
    let title = l.t("Consentement retiré", "Consent withdrawn");
    let body = html! {
        h1 { (title) }
        div.ok role="status" {
            p {
                (l.t("Votre consentement est retiré", "Your consent is withdrawn"))
                @if let Some(p) = purpose { (l.t(" pour « ", " for \"")) (purpose_title(p, l)) (l.t(" »", "\"")) }
                (l.t(", dès maintenant. Plus aucun partenaire ne peut utiliser vos données à ce titre.", ", from now on. No partner may use your data for it any more."))
            }
            @if purpose.is_some_and(|p| p.withdrawal_erases) {
                p { (l.t("Les données gardées uniquement pour cette finalité sont effacées.", "Data kept only for this purpose is erased.")) }
            }
            p { (l.t("Ce qui a été fait avant le retrait reste licite : le retrait vaut pour l'avenir.", "What was done before the withdrawal remains lawful: the withdrawal applies from now on.")) }
        }
        h2 { (l.t("Changer d'avis", "Changing your mind")) }
        p { (l.t("Vous pouvez redonner votre consentement quand vous voulez : retournez sur « Mes consentements », cochez les données à partager et choisissez « Je donne mon consentement ». Un reçu signé prouve chacun de vos choix.",
                  "You can give your consent again whenever you want: go back to \"My consents\", tick the data to share and choose \"I give my consent\". A signed receipt proves each of your choices.")) }
        p { a href="/moi/consentements" { (l.t("Retour à mes consentements", "Back to my consents")) } }
    };
    Ok(ctx.page(title, body))
}

/// "Vous avez consulté" for my own acts, "Awa Diallo a consulté" for others.
async fn receipts_of(
    ctx: &Ctx,
    user: &CurrentUser,
    consent: &str,
) -> Result<Vec<String>, PageError> {
    // A malformed id names no consent: the use case answers it as unknown.
    let consent = crate::domain::ConsentId::parse(consent).ok();
    crate::service::consents::receipts(&ctx.state, &ctx.caller(user), consent.as_ref())
        .await
        .map(|done| done.value.receipts)
        .map_err(|e| ctx.fail(e))
}

pub async fn receipts(ctx: Ctx) -> PageResult {
    let user = ctx.user_in(RESIDENT)?;
    let l = ctx.lang;
    // One receipt per event of the history, in the same order: the page
    // needs no second read (each would be another audited access).
    let items = my_consents(&ctx, &user).await?;
    let body = html! {
        h1 { (l.t("Mes reçus", "My receipts")) }
        p { (l.t("Chaque fois que vous donnez, refusez ou retirez un consentement, vous recevez un reçu signé par la collectivité (format « Consent Receipt » de Kantara, signé en JWS). Gardez-le : il prouve votre choix, même sans nous.",
                  "Each time you give, refuse or withdraw a consent, you get a receipt signed by the authority (Kantara Consent Receipt, signed as JWS). Keep it: it proves your choice, even without us.")) }
        p.small { (l.t("La clé qui vérifie les signatures : ", "The key that checks the signatures: ")) a href="/.well-known/jwks.json" { "/.well-known/jwks.json" } }
        @if items.is_empty() { p { (l.t("Aucun reçu pour l'instant.", "No receipt yet.")) } }
        @for c in &items {
            @let purpose = ctx.state.register.get(&c.consent.purpose);
            section.card {
                h2 { @if let Some(p) = purpose { (purpose_title(p, l)) } @else { (c.consent.purpose) } }
                ol {
                    @for (i, h) in c.history.iter().enumerate() {
                        li { a href={ "/moi/recus/" (c.consent.id) "/" (i + 1) } download {
                            (l.t("Reçu : ", "Receipt: ")) (state_label(&h.state, l)) (l.t(" le ", " on ")) (date(h.at)) (l.t(" (fichier JWS)", " (JWS file)")) } }
                    }
                }
            }
        }
    };
    Ok(ctx.page(l.t("Mes reçus", "My receipts"), body))
}

/// One receipt, as a file to keep (`application/jose`).
pub async fn receipt_file(ctx: Ctx, Path((consent, number)): Path<(String, usize)>) -> PageResult {
    let user = ctx.user_in(RESIDENT)?;
    let rs = receipts_of(&ctx, &user, &consent).await?;
    let jws = number
        .checked_sub(1)
        .and_then(|i| rs.get(i))
        .ok_or_else(|| ctx.fail(AppError::NotFound))?;
    let disposition = format!("attachment; filename=\"recu-{consent}-{number}.jws\"");
    let mut res = jws.clone().into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jose"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}
