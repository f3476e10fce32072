//! The DPO's space: extract requests to approve or reject, rights requests
//! to extend or close, and the register of processing.

use super::public::{category_label, purpose_title};
use super::{Ctx, Form, PageResult, csrf, date};
use crate::domain::Role;
use crate::error::ErrorCode;
use crate::service::extracts::ExtractView;
use axum::body::Bytes;
use axum::extract::Path;
use maud::html;

const DPO: &[Role] = &[Role::Dpo];

fn extract_state(state: &str, l: super::Lang) -> &'static str {
    match state {
        "requested" => l.t("à examiner", "to review"),
        "approved" => l.t("approuvée", "approved"),
        "rejected" => l.t("rejetée", "rejected"),
        "building" => l.t("en construction", "building"),
        "ready" => l.t("prête", "ready"),
        "downloaded" => l.t("téléchargée", "downloaded"),
        "expired" => l.t("expirée", "expired"),
        "failed" => l.t("échouée", "failed"),
        _ => l.t("autre", "other"),
    }
}

pub(super) fn request_kind(kind: &str, l: super::Lang) -> &'static str {
    match kind {
        "erasure" => l.t("effacement", "erasure"),
        "objection" => l.t("opposition", "objection"),
        "rectification" => l.t("rectification", "rectification"),
        "restriction" => l.t("limitation", "restriction"),
        "access" => l.t("accès", "access"),
        "portability" => l.t("portabilité", "portability"),
        _ => l.t("autre", "other"),
    }
}

pub(super) fn refusal_label(reason: &str, l: super::Lang) -> &'static str {
    match reason {
        "manifestly_unfounded" => l.t(
            "demande manifestement infondée (art. 12-5)",
            "manifestly unfounded (art. 12(5))",
        ),
        "excessive" => l.t(
            "demande excessive, notamment répétitive (art. 12-5)",
            "excessive, notably repetitive (art. 12(5))",
        ),
        "identity_not_established" => l.t(
            "identité non établie (art. 12-6)",
            "identity not established (art. 12(6))",
        ),
        "legal_obligation" => l.t(
            "obligation légale de conserver (art. 17-3-b)",
            "legal obligation to keep (art. 17(3)(b))",
        ),
        "legal_claims" => l.t(
            "constatation, exercice ou défense de droits en justice (art. 17-3-e)",
            "legal claims (art. 17(3)(e))",
        ),
        "compelling_legitimate_grounds" => l.t(
            "motifs légitimes et impérieux (art. 21-1)",
            "compelling legitimate grounds (art. 21(1))",
        ),
        _ => l.t("autre", "other"),
    }
}

pub(super) fn request_state(state: &str, l: super::Lang) -> &'static str {
    match state {
        "received" => l.t("reçue", "received"),
        "in_progress" => l.t("en cours", "in progress"),
        "extended" => l.t("délai prolongé", "extended"),
        "granted" => l.t("acceptée", "granted"),
        "refused" => l.t("refusée", "refused"),
        "closed" => l.t("close", "closed"),
        _ => l.t("autre", "other"),
    }
}

pub async fn overview(ctx: Ctx) -> PageResult {
    let user = ctx.user_in(DPO)?;
    let l = ctx.lang;
    let caller = ctx.caller(&user);
    let now = ctx.state.clock.now();
    let list = crate::service::extracts::dpo_list(&ctx.state, &caller)
        .await
        .map_err(|e| ctx.fail(e))?
        .value;
    let (extracts, budgets) = (list.extracts, list.budgets);
    let requests = crate::service::requests::all_requests(&ctx.state, &caller, now)
        .await
        .map_err(|e| ctx.fail(e))?
        .value
        .requests;
    let outbox = crate::service::notify::counts(&ctx.state)
        .await
        .map_err(|e| ctx.fail(e))?;
    let (pending, decided): (Vec<&ExtractView>, Vec<&ExtractView>) =
        extracts.iter().partition(|x| x.state == "requested");
    let body = html! {
        h1 { (l.t("Espace du délégué à la protection des données", "Data protection officer's space")) }
        p { a href="/registre" { (l.t("Le registre des traitements (article 30)", "The register of processing (article 30)")) } }
        p { a href="/dpo/rapport" { (l.t("Le rapport annuel d'activité (gouvernance des données, article 20)", "The annual activity report (Data Governance Act, article 20)")) } }
        p { (l.t("Registre appliqué : ", "Register in force: ")) code { (ctx.state.register_source.location) } " — SHA-256 " code { (ctx.state.register_source.sha256) } }
        (super::public::sources_section(&ctx))
        h2 { (l.t("Messages aux usagers", "Messages to residents")) }
        p { a href="/dpo/courriers" { (l.t("Les courriers à imprimer et poster", "Letters to print and post")) } }
        @if ctx.state.config.smtp_url.is_none() {
            p { strong { (l.t("Attention : ", "Warning: ")) } (l.t("aucun serveur de messagerie n'est configuré (smtp_url) ; les messages par e-mail restent en attente.", "no mail relay is configured (smtp_url); e-mail messages stay queued.")) }
        }
        p { (outbox.pending) (l.t(" en attente · ", " pending · ")) (outbox.sent) (l.t(" envoyés · ", " sent · ")) (outbox.failed) (l.t(" en échec · ", " failed · ")) (outbox.post) (l.t(" à envoyer par courrier (pas d'adresse e-mail, ou courrier choisi)", " to send by post (no e-mail address, or post chosen)"))
            " · " (outbox.held) (l.t(" en attente d'une extraction en cours", " waiting for an extract being built")) " · " (outbox.muted) (l.t(" non envoyés (désactivés par la personne)", " not sent (turned off by the person)")) }
        h2 { (l.t("Extractions à examiner", "Extracts to review")) }
        @if pending.is_empty() { p { (l.t("Aucune demande en attente.", "No pending request.")) } }
        @for x in &pending {
            @let id = &x.id;
            @let spec = &x.spec;
            section.card aria-labelledby={ "x-" (id) } {
                h3 #{ "x-" (id) } { (l.t("Demande de ", "Request from ")) (x.partner_id) }
                @if x.blocked.as_deref() == Some("not_a_recipient") {
                    p role="status" { strong { (l.t("Bloquée : ", "Blocked: ")) } (l.t("ce partenaire n'est plus destinataire de la finalité dans le registre ; l'approbation sera refusée.", "this partner is no longer a recipient of the purpose in the register; approval will be refused.")) }
                }
                dl {
                    dt { (l.t("Finalité", "Purpose")) }
                    dd { @if let Some(p) = ctx.state.register.get(&x.purpose) { (purpose_title(p, l)) } @else { (x.purpose) } }
                    dt { (l.t("Type", "Kind")) }
                    dd { (if x.kind == "aggregate" { l.t("agrégats (aucune case sous 11 personnes)", "aggregates (no cell under 11 people)") } else { l.t("lignes pseudonymisées", "pseudonymised rows") }) }
                    dt { (l.t("Catégories", "Categories")) }
                    dd { (spec.categories.iter().map(|c| category_label(&ctx, c)).collect::<Vec<_>>().join(", ")) }
                    dt { (l.t("Champs", "Fields")) }
                    dd { (spec.fields.join(", ")) }
                    @if !spec.group_by.is_empty() {
                        dt { (l.t("Regroupé par", "Grouped by")) }
                        dd { (spec.group_by.join(", ")) }
                    }
                    dt { (l.t("Demandée le", "Requested on")) }
                    dd { (date(x.created_at)) }
                }
                form method="post" action={ "/dpo/extractions/" (id) } {
                    (csrf(&user))
                    label for={ "reason-" (id) } { (l.t("Motif (obligatoire pour un rejet)", "Reason (required to reject)")) }
                    input type="text" id={ "reason-" (id) } name="reason" maxlength="500";
                    p {
                        button name="decision" value="approve" { (l.t("Approuver", "Approve")) }
                        " "
                        button.danger name="decision" value="reject" { (l.t("Rejeter", "Reject")) }
                    }
                }
            }
        }
        @if !decided.is_empty() {
            h2 { (l.t("Extractions déjà examinées", "Extracts already reviewed")) }
            ul {
                @for x in decided.iter().take(50) {
                    li { (x.partner_id) " — " (ctx.state.register.get(&x.purpose).map(|p| purpose_title(p, l).to_string()).unwrap_or_else(|| x.purpose.clone())) " — " (extract_state(&x.state, l))
                        " (" (x.progress.rows_done) "/" (x.progress.rows_total) ")"
                        @if x.blocked.as_deref() == Some("not_a_recipient") { " — " strong { (l.t("bloquée : plus destinataire", "blocked: no longer a recipient")) } }
                        " — " (date(x.created_at)) }
                }
            }
        }
        @if !budgets.is_empty() {
            h2 { (l.t("Budget de confidentialité des partenaires (ε)", "Partners' privacy budget (ε)")) }
            p { (l.t("Chaque agrégat bruité approuvé dépense son ε sur le budget de son partenaire ; au-delà, l'approbation est refusée.", "Each approved noisy aggregate spends its ε from its partner's budget; beyond it, approval is refused.")) }
            table {
                thead { tr { th scope="col" { (l.t("Partenaire", "Partner")) } th scope="col" { (l.t("ε dépensé", "ε spent")) } th scope="col" { (l.t("Budget", "Budget")) } } }
                tbody { @for b in &budgets { tr { td { (b.partner_id) } td { (format!("{:.2}", b.spent)) } td { (format!("{:.2}", b.budget)) } } } }
            }
        }
        h2 { (l.t("Demandes d'exercice des droits", "Rights requests")) }
        @if requests.is_empty() { p { (l.t("Aucune demande.", "No request.")) } }
        @for r in &requests {
            @let id = &r.id;
            @let open = !matches!(r.state.as_str(), "granted" | "refused" | "closed");
            section.card aria-labelledby={ "r-" (id) } {
                h3 #{ "r-" (id) } { (request_kind(&r.kind, l)) " — " (l.t("personne n° ", "resident #")) code { (r.resident_id.get(..8).unwrap_or("")) } }
                p { (l.t("Reçue le ", "Received on ")) (date(r.created_at)) " · " (l.t("à traiter avant le ", "due by ")) (date(r.due_at)) " · " (l.t("état : ", "state: ")) (request_state(&r.state, l))
                    @if r.late { " " strong { (l.t("EN RETARD", "LATE")) } } }
                @if open {
                    form method="post" action={ "/dpo/demandes/" (id) } {
                        (csrf(&user))
                        label for={ "refus-" (id) } { (l.t("Raison d'un refus (dite à la personne, avec son droit de saisir la CNIL)", "Reason for a refusal (told to the resident, with their right to complain to the CNIL)")) }
                        select id={ "refus-" (id) } name="reason" {
                            option value="" { (l.t("— choisir pour refuser", "— choose to refuse")) }
                            @for r in crate::service::rights::REFUSAL_REASONS {
                                option value=(r) { (refusal_label(r, l)) }
                            }
                        }
                        p {
                            button name="action" value="granted" { (l.t("Accepter et clore", "Grant and close")) }
                            " "
                            button.secondary name="action" value="refused" { (l.t("Refuser et clore", "Refuse and close")) }
                            " "
                            button.secondary name="action" value="extend" { (l.t("Prolonger de deux mois (complexité)", "Extend by two months (complexity)")) }
                        }
                    }
                }
            }
        }
    };
    Ok(ctx.page(l.t("Espace DPO", "DPO space"), body))
}

pub async fn decide_extract(ctx: Ctx, Path(id): Path<String>, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(DPO, &form)?;
    let caller = ctx.caller(&user);
    let now = ctx.state.clock.now();
    // A malformed id names no extract: the use case answers it as unknown.
    let id = crate::domain::ExtractId::parse(&id).ok();
    match form.get("decision") {
        Some("approve") => {
            crate::service::extracts::dpo_approve(&ctx.state, &caller, id.as_ref(), now)
                .await
                .map_err(|e| ctx.fail_at(e, "/dpo"))?;
            Ok(ctx.done("/dpo", "approuve"))
        }
        Some("reject") => {
            let reason = form.get("reason").unwrap_or_default();
            crate::service::extracts::dpo_reject(&ctx.state, &caller, id.as_ref(), reason, now)
                .await
                .map_err(|e| ctx.fail_at(e, "/dpo"))?;
            Ok(ctx.done("/dpo", "rejete"))
        }
        _ => Err(ctx.fail_at(ErrorCode::InvalidDecision.into(), "/dpo")),
    }
}

pub async fn handle_request(ctx: Ctx, Path(id): Path<String>, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(DPO, &form)?;
    let caller = ctx.caller(&user);
    let now = ctx.state.clock.now();
    // A malformed id names no request: the use case answers it as unknown.
    let id = crate::domain::RightsRequestId::parse(&id).ok();
    match form.get("action") {
        Some("extend") => {
            crate::service::requests::extend(
                &ctx.state,
                &caller,
                id.as_ref(),
                "complexity".into(),
                now,
            )
            .await
            .map_err(|e| ctx.fail_at(e, "/dpo"))?;
            Ok(ctx.done("/dpo", "prolonge"))
        }
        Some(outcome @ ("granted" | "refused")) => {
            let reason = if outcome == "refused" {
                form.text("reason")
            } else {
                None
            };
            crate::service::requests::close(
                &ctx.state,
                &caller,
                id.as_ref(),
                outcome.into(),
                reason,
                now,
            )
            .await
            .map_err(|e| ctx.fail_at(e, "/dpo"))?;
            Ok(ctx.done("/dpo", "cloture"))
        }
        _ => Err(ctx.fail(ErrorCode::InvalidAction.into())),
    }
}

/// The postal batch: one letter a page (printed with the browser), for the
/// residents who have no e-mail address; then "posted", audited.
pub async fn letters(ctx: Ctx) -> PageResult {
    let user = ctx.user_in(DPO)?;
    let l = ctx.lang;
    let caller = ctx.caller(&user);
    let (letters, without_address) = crate::service::notify::letters(&ctx.state, &caller)
        .await
        .map_err(|e| ctx.fail(e))?;
    let body = html! {
        h1 { (l.t("Courriers à envoyer", "Letters to post")) }
        div.screen-only {
            p { (l.t("Ces personnes n'ont pas d'adresse e-mail : imprimez ces lettres (une par page), mettez-les sous pli, puis indiquez qu'elles sont parties. Chaque lecture d'adresse est inscrite au journal.", "These residents have no e-mail address: print these letters (one a page), post them, then say they are posted. Each address read is in the audit log.")) }
            @if without_address > 0 {
                p { strong { (without_address) } (l.t(" message(s) sans adresse postale non plus : voir avec la structure.", " message(s) with no postal address either: see with the structure.")) }
            }
            @if letters.is_empty() { p { (l.t("Aucun courrier en attente.", "No letter waiting.")) } }
        }
        @for (n, letter) in letters.iter().enumerate() {
            article.letter aria-label={ (l.t("Courrier ", "Letter ")) (n + 1) } {
                p.address { @for line in &letter.address { (line) "\n" } }
                h2 { (letter.text.subject) }
                p.body { (letter.text.text) }
            }
        }
        @if !letters.is_empty() {
            form method="post" action="/dpo/courriers" {
                (csrf(&user))
                @for letter in &letters { input type="hidden" name="id" value=(letter.id); }
                p { button { (l.t("Ces courriers sont postés", "These letters are posted")) } }
            }
        }
        p.screen-only { a href="/dpo" { (l.t("Retour à l'espace DPO", "Back to the DPO space")) } }
    };
    Ok(ctx.page(l.t("Courriers à envoyer", "Letters to post"), body))
}

pub async fn letters_posted(ctx: Ctx, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(DPO, &form)?;
    let caller = ctx.caller(&user);
    let ids: Vec<String> = form.all("id");
    crate::service::notify::letters_posted(&ctx.state, &caller, &ids, ctx.state.clock.now())
        .await
        .map_err(|e| ctx.fail_at(e, "/dpo/courriers"))?;
    Ok(ctx.done("/dpo/courriers", "courriers_postes"))
}

/// `/dpo/rapport?annee=YYYY`: the annual transparency report (DGA art.
/// 20(2)), printable (the print style hides the navigation).
pub async fn annual_report(ctx: Ctx) -> PageResult {
    let user = ctx.user_in(DPO)?;
    let l = ctx.lang;
    let now = ctx.state.clock.now();
    let year = match ctx.query.get("annee") {
        Some(y) => crate::service::report::parse_year(y).map_err(|e| ctx.fail_at(e, "/dpo"))?,
        None => crate::service::report::default_year(now),
    };
    let caller = ctx.caller(&user);
    let report = crate::service::report::annual(&ctx.state, &caller, year, now)
        .await
        .map_err(|e| ctx.fail(e))?
        .value;
    let body = html! {
        h1 { (l.t("Rapport annuel d'activité ", "Annual activity report ")) (year) }
        p { (l.t(
            "Rapport du tiers de confiance au titre de l'article 20, paragraphe 2, du règlement européen sur la gouvernance des données : les utilisateurs des données, leurs finalités, les moyens techniques employés, les extractions et lectures, les dépôts des sources, les demandes de droits et les refus. Il ne contient aucune donnée personnelle.",
            "The trusted third party's report under article 20(2) of the EU Data Governance Act: data users, their purposes, the technical means used, extracts and reads, sources' deposits, rights requests and refusals. It holds no personal data.")) }
        form.screen-only method="get" action="/dpo/rapport" {
            label for="annee" { (l.t("Année", "Year")) }
            " " input #annee name="annee" type="number" min="2000" max="2999" value=(year);
            " " button type="submit" { (l.t("Afficher", "Show")) }
        }
        p.screen-only { a href={ "/api/v1/dpo/report?year=" (year) } { (l.t("Le même rapport en JSON", "The same report as JSON")) } }
        h2 { (l.t("Utilisateurs des données", "Data users")) }
        @for u in &report.data_users {
            h3 { (u.name) " " code { (u.partner_id) } @if !u.active { " " (l.t("(désactivé)", "(deactivated)")) } }
            p { (l.t("Responsable : ", "Controller: ")) (u.contact.join(" ; ")) }
            ul { @for p in &u.purposes { li { (p.title) " — " code { (p.id) } " (" (p.legal_basis) ", " (p.access) ")" } } }
            p {
                (l.t("Lectures autorisées : ", "Reads allowed: ")) strong { (u.reads_allowed) }
                (l.t(" ; refusées : ", "; refused: ")) strong { (u.reads_refused) }
                @if let (Some(f), Some(t)) = (u.first_access, u.last_access) {
                    (l.t(" ; du ", "; from ")) (date(f)) (l.t(" au ", " to ")) (date(t))
                }
                "."
            }
            @if !u.extracts.is_empty() {
                p { (l.t("Extractions (type/état) : ", "Extracts (kind/state): "))
                    (u.extracts.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")) }
            }
            p { (l.t("Moyens techniques : ", "Technical means: ")) (u.means.join(" ; ")) }
        }
        h2 { (l.t("Dépôts des sources", "Sources' deposits")) }
        @if report.deposits.is_empty() { p { (l.t("Aucun dépôt cette année.", "No deposit this year.")) } } @else {
            table {
                thead { tr { th scope="col" { (l.t("Source", "Source")) } th scope="col" { (l.t("Catégorie", "Category")) } th scope="col" { (l.t("Enregistrements", "Records")) } } }
                tbody { @for d in &report.deposits { tr { td { (d.name) } td { (d.category) } td { (d.records) } } } }
            }
        }
        h2 { (l.t("Demandes de droits", "Rights requests")) }
        @if report.rights_requests.is_empty() { p { (l.t("Aucune demande cette année.", "No request this year.")) } } @else {
            table {
                thead { tr { th scope="col" { (l.t("Type", "Kind")) } th scope="col" { (l.t("État", "State")) } th scope="col" { (l.t("Délai", "Deadline")) } th scope="col" { (l.t("Nombre", "Count")) } } }
                tbody { @for r in &report.rights_requests { tr { td { (r.kind) } td { (r.state) } td { (r.deadline) } td { (r.count) } } } }
            }
        }
        h2 { (l.t("Refus du coffre", "The vault's refusals")) }
        @if report.refusals.is_empty() { p { (l.t("Aucun refus cette année.", "No refusal this year.")) } } @else {
            table {
                thead { tr { th scope="col" { (l.t("Motif", "Reason")) } th scope="col" { (l.t("Nombre", "Count")) } th scope="col" { (l.t("Incident (le coffre s'est fermé)", "Incident (the vault failed closed)")) } } }
                tbody { @for r in &report.refusals { tr { td { code { (r.reason) } } td { (r.count) } td { @if r.fail_closed { (l.t("oui", "yes")) } @else { (l.t("non", "no")) } } } } }
            }
        }
        h2 { (l.t("Statistiques ouvertes publiées", "Open statistics published")) }
        @if report.statistics_releases.is_empty() { p { (l.t("Aucune publication cette année.", "No release this year.")) } } @else {
            ul { @for r in &report.statistics_releases { li { a href={ "/statistiques?periode=" (r.release) } { (r.release) } " — ε = " (r.epsilon) } } }
        }
    };
    Ok(ctx.page(l.t("Rapport annuel", "Annual report"), body))
}
