//! The logged-in user's own view of themselves.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::domain::Role;
use crate::error::AppResult;
use crate::http::audit::RequestId;
use crate::http::session::CurrentUser;

#[derive(Serialize, ToSchema)]
pub struct Me {
    /// Internal identifier (pseudonymous).
    pub id: String,
    pub role: Role,
    /// How to greet the user, when known.
    pub display_name: Option<String>,
    /// Send back as `X-CSRF-Token` on every state-changing request made with
    /// this session cookie.
    pub csrf_token: String,
}

/// Who is logged in, and the session's CSRF token.
#[utoipa::path(get, path = "/api/v1/me", tag = "resident",
    responses((status = 200, body = Me), (status = 401, body = crate::error::ErrorBody)))]
pub async fn me(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Json<Me>> {
    let mut display_name =
        crate::service::sessions::agent_display_name(&state, &user.caller(&rid)).await?;
    if display_name.is_none() && state.demo {
        display_name = crate::demo::find_login_persona(&user.actor_id).map(|p| p.name.to_string());
    }
    Ok(Json(Me {
        id: user.actor_id,
        role: user.role,
        display_name,
        csrf_token: user.csrf_token,
    }))
}
