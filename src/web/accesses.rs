//! Who saw my data: every decision about the resident in the audit log,
//! told in sentences, with the actors named.

use crate::error::ErrorCode;
use maud::html;

use super::public::{category_label, purpose_title};
use super::resident::RESIDENT;
use super::{Ctx, Lang, PageResult, date_time};
use crate::audit::AuditEntry;

fn sentence(who: &str, action: &str, l: Lang) -> String {
    if who != l.t("Vous", "You") {
        return format!("{who} {action}");
    }
    match l {
        Lang::Fr => {
            let own = if let Some(rest) = action.strip_prefix("a ") {
                format!("avez {rest}")
            } else if let Some(rest) = action.strip_prefix("s'est ") {
                format!("vous êtes {rest}")
            } else if let Some(rest) = action.strip_prefix("vous a ") {
                format!("avez été {rest}")
            } else {
                action.to_string()
            };
            format!("Vous {own}")
        }
        Lang::En => format!("You {action}"),
    }
}

/// Who did something about me, in words: me, a named aidant of a named
/// structure, a named partner, or the service itself. `seen` keeps the
/// names already looked up for this page: a page of 100 entries names the
/// same few actors again and again.
async fn who(
    ctx: &Ctx,
    me: &str,
    e: &AuditEntry,
    seen: &mut std::collections::HashMap<(String, Option<String>), String>,
) -> String {
    let key = (e.actor_id.clone(), e.structure_id.clone());
    if let Some(name) = seen.get(&key) {
        return name.clone();
    }
    let name = who_uncached(ctx, me, e).await;
    seen.insert(key, name.clone());
    name
}

async fn who_uncached(ctx: &Ctx, me: &str, e: &AuditEntry) -> String {
    let l = ctx.lang;
    let actor = e.actor_id.as_str();
    let role = e.actor_role.as_str();
    if actor == me {
        return l.t("Vous", "You").to_string();
    }
    match role {
        "partner" => {
            match crate::service::journal::actor_name(&ctx.state, actor, role, None)
                .await
                .name
            {
                Some(name) => format!("{} {}", l.t("Le partenaire", "Partner"), name),
                None => l.t("Un partenaire", "A partner").to_string(),
            }
        }
        "aidant" | "referent" | "dpo" | "auditor" | "admin" => {
            let named = crate::service::journal::actor_name(
                &ctx.state,
                actor,
                role,
                e.structure_id.as_deref(),
            )
            .await;
            let name = named.name.unwrap_or_else(|| actor.to_string());
            let what = match role {
                "aidant" => l.t("aidant", "aidant"),
                "referent" => l.t("référent", "referent"),
                "dpo" => l.t(
                    "le délégué à la protection des données",
                    "the data protection officer",
                ),
                "auditor" => l.t("auditeur", "auditor"),
                _ => l.t("administrateur", "administrator"),
            };
            let structure = named
                .structure
                .map(|st| format!(" ({st})"))
                .unwrap_or_default();
            format!("{name}, {what}{structure}")
        }
        "system" | "service" => l
            .t(
                "Le service (tâche automatique)",
                "The service (automatic task)",
            )
            .to_string(),
        _ => l.t("Le service", "The service").to_string(),
    }
}

fn action_text(action: &str, l: Lang) -> &'static str {
    match action {
        "data.read" => l.t("a consulté", "read"),
        "data.write" => l.t("a modifié", "changed"),
        "consent.give" => l.t(
            "a enregistré un choix de consentement",
            "recorded a consent choice",
        ),
        "consent.refuse" => l.t("a enregistré un refus", "recorded a refusal"),
        "consent.withdraw" => l.t("a retiré un consentement", "withdrew a consent"),
        "consent.read" => l.t("a consulté les reçus", "read the receipts"),
        "audit.read" => l.t("a consulté le journal des accès", "read the access log"),
        "extract.include" => l.t(
            "vous a inclus dans une extraction",
            "included you in an extract",
        ),
        "stats.count" => l.t(
            "a lu votre commune pour la compter dans les statistiques publiques",
            "read your commune to count it in the open statistics",
        ),
        "extract.aggregate" => l.t(
            "a lu votre dossier pour des statistiques agrégées",
            "read your record for aggregate statistics",
        ),
        "mandate.create" => l.t("a créé un mandat", "created a mandate"),
        "mandate.revoke" => l.t("a révoqué un mandat", "revoked a mandate"),
        "mandate.renew" => l.t("a renouvelé un mandat", "renewed a mandate"),
        "mandate.recap" => l.t(
            "a affiché le récapitulatif du mandat",
            "showed the mandate recap",
        ),
        "mandate.resident_login" => l.t("s'est connecté pour un mandat", "logged in for a mandate"),
        "mandate.read" => l.t("a consulté un mandat", "read a mandate"),
        "login" => l.t("s'est connecté", "logged in"),
        "logout" => l.t("s'est déconnecté", "logged out"),
        "retention.purge" => l.t(
            "a effacé des données arrivées au terme de leur conservation",
            "erased data at the end of its retention",
        ),
        "erasure.purpose" => l.t(
            "a effacé des données après un retrait",
            "erased data after a withdrawal",
        ),
        "rights.request" => l.t("a demandé à exercer un droit", "asked to exercise a right"),
        "rights.manage" | "rights.read" => l.t(
            "a traité une demande d'exercice de vos droits",
            "handled a rights request",
        ),
        "resident.create" => l.t("a créé votre compte", "created your account"),
        _ => l.t("a agi sur votre dossier", "acted on your file"),
    }
}

pub async fn accesses(ctx: Ctx) -> PageResult {
    let user = ctx.user_in(RESIDENT)?;
    let l = ctx.lang;
    let before = match ctx.query.get("avant") {
        Some(b) => b
            .parse::<u64>()
            .map_err(|_| ctx.fail(ErrorCode::InvalidParameter.with("`before`: a whole number")))?,
        None => u64::MAX,
    };
    let now = ctx.state.clock.now();
    let all = crate::service::journal::my_accesses(&ctx.state, &ctx.caller(&user), before, now)
        .await
        .map_err(|e| ctx.fail(e))?
        .value
        .accesses;
    let mut rows = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for a in &all {
        let f = &a.entry.fields;
        // My own look at my own space is not news to me.
        let own_read = f.actor_id == user.actor_id
            && matches!(
                f.action.as_str(),
                "data.read" | "audit.read" | "consent.read" | "mandate.read" | "rights.read"
            );
        if own_read {
            continue;
        }
        let who = who(&ctx, &user.actor_id, f, &mut seen).await;
        rows.push((a.entry.index, f, who, a.proof.is_some(), a.pending));
    }
    let oldest = all.last().map(|a| a.entry.index);
    let body = html! {
        h1 { (l.t("Qui a vu mes données", "Who saw my data")) }
        p { (l.t("Chaque consultation, modification ou refus d'accès vous concernant est inscrit dans le journal vérifiable, avec la raison. Les plus récents d'abord ; vos propres consultations de votre espace ne sont pas répétées ici.",
                  "Every read, change or refused access about you is written to the verifiable log, with the reason. Newest first; your own visits to your space are not repeated here.")) }
        @if rows.is_empty() {
            p { (l.t("Aucun accès pour l'instant.", "No access yet.")) }
        }
        ol.plain {
            @for (index, f, who, proved, pending) in &rows {
                @let allowed = f.decision == crate::audit::Decision::Allow;
                li.card {
                    h2 {
                        (sentence(who, action_text(&f.action, l), l))
                        @if let Some(c) = f.category.as_deref().filter(|c| !c.starts_with("extract:")) { " — " (category_label(&ctx, c)) }
                        @if !allowed { " " (l.t("(refusé)", "(refused)")) }
                    }
                    p { (date_time(f.timestamp, l)) }
                    @if let Some(p) = f.purpose.as_deref() {
                        p { (l.t("Finalité : ", "Purpose: "))
                            @if let Some(def) = ctx.state.register.get(p) { (purpose_title(def, l)) } @else { (p) } }
                    }
                    @if let Some(b) = f.on_behalf_of.as_deref().filter(|b| *b == user.actor_id && f.actor_id != user.actor_id) {
                        @let _ = b;
                        p { (l.t("Au titre de votre mandat.", "Under your mandate.")) }
                    }
                    p.small { (l.t("Raison : ", "Reason: ")) code { (f.reason) } " · " (l.t("entrée n° ", "entry #")) (index)
                        @if *proved { " · " (l.t("preuve d'inclusion disponible", "inclusion proof available")) }
                        @if *pending { " · " (l.t("inscrite, en cours d'intégration à l'arbre du journal (sa preuve suit dans un instant)", "written, being integrated into the log's tree (its proof follows in a moment)")) } }
                }
            }
        }
        @if let Some(o) = oldest.filter(|_| all.len() >= 100) {
            p { a href={ "/moi/acces?avant=" (o) } { (l.t("Accès plus anciens", "Older accesses")) } }
        }
        p.small { a href="/api/v1/me/accesses" { (l.t("Les mêmes entrées avec leurs preuves (JSON)", "The same entries with their proofs (JSON)")) } }
    };
    Ok(ctx.page(l.t("Qui a vu mes données", "Who saw my data"), body))
}
