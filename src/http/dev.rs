//! The development login of demo mode: pick a persona, get a session. Only
//! mounted when `serve --demo` runs, which itself is refused off loopback.

use crate::error::ErrorCode;
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
    /// A page of the resident's space to come back to (as `/auth/login`'s
    /// `next`); anything else is ignored.
    pub next: Option<String>,
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
    let persona =
        demo::find_login_persona(&id).ok_or_else(|| AppError::from(ErrorCode::UnknownPersona))?;
    let caller = crate::service::Caller::new(persona.id, persona.role, rid.0);
    crate::service::login::record_demo_login(&state, &caller, state.clock.now()).await?;
    let cookie = open_session(&state, persona.id, persona.role, "demo", None).await?;
    tracing::info!(
        actor = persona.id,
        role = persona.role.as_str(),
        "demo login"
    );
    // Only a resident persona goes back to a page of the resident's space.
    let return_to = form
        .next
        .as_deref()
        .filter(|_| persona.role == crate::domain::Role::Resident)
        .and_then(crate::domain::paths::resident_return_path);
    let location = header::HeaderValue::from_str(return_to.as_deref().unwrap_or("/"))
        .map_err(|_| AppError::internal("return location"))?;
    let mut res = (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
    res.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(res)
}

#[derive(serde::Deserialize, Default, utoipa::ToSchema)]
pub struct DevMandateLoginForm {
    /// The aidant's live mandate draft.
    pub draft: Option<String>,
    /// A demo resident persona, standing in for their FranceConnect login.
    pub persona: Option<String>,
    pub csrf_token: Option<String>,
}

/// Demo mode's stand-in for the resident's FranceConnect login during the
/// mandate journey: attaches a demo resident to the logged-in aidant's
/// draft, exactly as `/auth/callback` does after a real login, and goes back
/// to the draft page.
#[utoipa::path(post, path = "/dev/mandate-login", tag = "demo",
    request_body(content = DevMandateLoginForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "resident attached; back to the draft page"),
              (status = 403, description = "`csrf_token_invalid`, `mandate_draft_invalid`, `renewal_other_resident`", body = crate::error::ErrorBody),
              (status = 422, description = "`unknown_persona`", body = crate::error::ErrorBody)))]
pub async fn mandate_login(
    State(state): State<AppState>,
    crate::http::session::MaybeUser(user): crate::http::session::MaybeUser,
    rid: crate::http::audit::RequestId,
    body: axum::body::Bytes,
) -> AppResult<Response> {
    let form: DevMandateLoginForm = serde_urlencoded_form(&body);
    let user = user.ok_or(AppError::Unauthenticated)?;
    if !crate::http::session::same(form.csrf_token.as_deref().unwrap_or(""), &user.csrf_token) {
        return Err(ErrorCode::CsrfTokenInvalid.into());
    }
    let persona = form
        .persona
        .as_deref()
        .and_then(|id| demo::RESIDENTS.iter().find(|p| p.id == id))
        .ok_or_else(|| AppError::from(ErrorCode::UnknownPersona))?;
    let draft = crate::service::login::mandate_draft_of(
        &state,
        Some(&user.caller(&rid)),
        form.draft
            .as_deref()
            .and_then(|d| crate::domain::DraftId::parse(d).ok())
            .as_ref(),
    )
    .await?;
    crate::service::login::attach_demo_resident(
        &state,
        &draft,
        &crate::domain::ResidentId::parse(persona.id)
            .map_err(|_| AppError::from(ErrorCode::UnknownPersona))?,
        rid.0,
        state.clock.now(),
    )
    .await?;
    let location = header::HeaderValue::from_str(&format!("/aidant/brouillons/{}", draft.id))
        .map_err(|_| AppError::internal("draft location"))?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response())
}
