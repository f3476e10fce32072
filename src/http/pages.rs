//! The few server-rendered pages of the foundation: a home page that lets a
//! newcomer click through the demo without JavaScript.

use axum::extract::State;
use axum::response::Html;

use crate::AppState;
use crate::http::session::MaybeUser;

/// HTML-escapes text for the server-rendered pages.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub async fn home(State(state): State<AppState>, MaybeUser(user): MaybeUser) -> Html<String> {
    let mut body = String::new();
    body.push_str("<h1>coffre</h1><p lang=\"fr\">Registre des consentements et coffre-fort de vos données personnelles, tenu par la collectivité en tiers de confiance.</p><p lang=\"en\">Consent registry and encrypted personal-data vault.</p>");
    if let Some(u) = &user {
        body.push_str(&format!(
            "<p>Connecté·e : <code>{}</code> ({})</p><form method=\"post\" action=\"/auth/logout\"><input type=\"hidden\" name=\"csrf_token\" value=\"{}\"><button>Se déconnecter</button></form>",
            escape(&u.actor_id),
            u.role.as_str(),
            escape(&u.csrf_token)
        ));
    }
    if state.demo {
        body.push_str("<h2>Démonstration</h2><p><strong>Mode démo :</strong> personnes fictives, connexion sans mot de passe.</p><ul>");
        for p in crate::demo::personas()
            .into_iter()
            .filter(|p| p.client_id.is_none())
        {
            body.push_str(&format!(
                "<li><form method=\"post\" action=\"/dev/login\"><input type=\"hidden\" name=\"persona\" value=\"{}\"><button>Se connecter : {} ({})</button></form></li>",
                escape(&p.id),
                escape(&p.name),
                p.role.as_str()
            ));
        }
        body.push_str("</ul>");
    }
    body.push_str("<h2>API</h2><ul><li><a href=\"/api/openapi.json\">OpenAPI</a></li><li><a href=\"/healthz\">/healthz</a></li><li><a href=\"/readyz\">/readyz</a></li></ul>");
    Html(format!(
        "<!doctype html><html lang=\"fr\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>coffre</title></head><body><main>{body}</main></body></html>"
    ))
}

fn basis_fr(b: crate::domain::purpose::LegalBasis) -> &'static str {
    use crate::domain::purpose::LegalBasis::*;
    match b {
        Consent => "consentement (art. 6-1-a)",
        ExplicitConsent => "consentement explicite (art. 9-2-a)",
        PublicTask => "mission de service public (art. 6-1-e)",
        LegalObligation => "obligation légale (art. 6-1-c)",
        VitalInterest => "intérêts vitaux (art. 6-1-d)",
        Contract => "contrat (art. 6-1-b)",
    }
}

/// The register of processing (GDPR art. 30), printable: one section per
/// purpose, from `policies/purposes.toml`. Public, like `/api/v1/purposes`.
pub async fn register(State(state): State<AppState>) -> Html<String> {
    let mut body = String::from(
        "<h1>Registre des activités de traitement</h1><p>Article 30 du RGPD. Chaque finalité ci-dessous est tenue à jour par le délégué à la protection des données ; toute modification de son texte crée une nouvelle version de l'information, et chaque consentement garde la version sous laquelle il a été donné.</p>",
    );
    for p in state.register.all() {
        let recipients = if p.recipients.is_empty() {
            "aucun (le responsable seul)".to_string()
        } else {
            p.recipients.join(", ")
        };
        body.push_str(&format!(
            "<section><h2>{title}</h2><p>{desc}</p><dl>\
             <dt>Identifiant</dt><dd><code>{id}</code> (version de l'information <code>{version}</code>)</dd>\
             <dt>Responsable</dt><dd>{controller}</dd>\
             <dt>Base légale</dt><dd>{basis}</dd>\
             <dt>Catégories de données</dt><dd>{cats}</dd>\
             <dt>Destinataires</dt><dd>{recipients}</dd>\
             <dt>Conservation</dt><dd>{days} jours</dd>\
             <dt>Données sensibles (art. 9)</dt><dd>{special}</dd>\
             <dt>Le retrait du consentement efface les données</dt><dd>{erases}</dd>\
             </dl></section>",
            title = escape(&p.title_fr),
            desc = escape(&p.description_fr),
            id = escape(&p.id),
            version = escape(&p.notice_version),
            controller = escape(&p.controller),
            basis = basis_fr(p.legal_basis),
            cats = escape(&p.categories.join(", ")),
            recipients = escape(&recipients),
            days = p.retention_days,
            special = if p.special_category { "oui" } else { "non" },
            erases = if p.withdrawal_erases { "oui" } else { "non" },
        ));
    }
    Html(format!(
        "<!doctype html><html lang=\"fr\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Registre des traitements — coffre</title></head><body><main>{body}</main></body></html>"
    ))
}
