//! The few server-rendered pages of the foundation: a home page that lets a
//! newcomer click through the demo without JavaScript.

use axum::extract::State;
use axum::response::Html;

use crate::AppState;
use crate::http::session::MaybeUser;

fn escape(s: &str) -> String {
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
