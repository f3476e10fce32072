//! The development login of demo mode: pick a persona, get a session. Only
//! mounted when `serve --demo` runs, which itself is refused off loopback.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::demo::{self, PersonaView};
use crate::error::{AppError, AppResult};
use crate::http::session::{open_session, serde_urlencoded_form};

/// The demo personas: residents, aidants, a DPO, an auditor, and the demo
/// partners with their client credentials.
#[utoipa::path(get, path = "/dev/personas", tag = "demo",
    responses((status = 200, body = [PersonaView])))]
pub async fn personas() -> Json<Vec<PersonaView>> {
    Json(demo::personas())
}

#[derive(serde::Deserialize, Default, utoipa::ToSchema)]
pub struct DevLoginForm {
    /// A persona id from `GET /dev/personas`.
    pub persona: Option<String>,
}

/// Logs in as a demo persona (form field `persona`); answers 303 to `/` with
/// the session cookie.
#[utoipa::path(post, path = "/dev/login", tag = "demo",
    request_body(content = DevLoginForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "logged in; session cookie set"),
              (status = 422, description = "`unknown_persona`", body = crate::error::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    rid: crate::http::audit::RequestId,
    body: axum::body::Bytes,
) -> AppResult<Response> {
    let form: DevLoginForm = serde_urlencoded_form(&body);
    let id = form.persona.unwrap_or_default();
    let persona = demo::find_login_persona(&id).ok_or_else(|| {
        AppError::unprocessable(
            "unknown_persona",
            "Ce profil de démonstration n'existe pas. / No such demo persona.",
        )
    })?;
    state
        .audit
        .record(crate::audit::AuditRecord {
            timestamp: state.clock.now(),
            actor_id: persona.id.to_string(),
            actor_role: persona.role.as_str().to_string(),
            action: "login".into(),
            allowed: true,
            reason: "demo_login".into(),
            request_id: rid.0,
            ..Default::default()
        })
        .await?;
    let cookie = open_session(&state, persona.id, persona.role, "demo", None).await?;
    tracing::info!(
        actor = persona.id,
        role = persona.role.as_str(),
        "demo login"
    );
    let mut res = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    res.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(res)
}
