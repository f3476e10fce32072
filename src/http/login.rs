//! Browser login through OpenID Connect over HTTP: the two legs' routes,
//! the cookie that binds a login to the browser that started it, and the
//! session cookie at the end. The rules are in `service::login`.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::AppState;
use crate::domain::DraftId;
use crate::error::{AppError, AppResult};
use crate::http::audit::RequestId;
use crate::http::session::{MaybeUser, cookie_value, open_session, random_token};
use crate::oidc::LoginKind;
use crate::service::login::{self as login_service, CallbackQuery, LoginDone};

use crate::service::login::LOGIN_ATTEMPT_SECS;

#[derive(Deserialize, Default, utoipa::IntoParams)]
pub struct LoginQuery {
    /// A mandate draft the resident logs in to confirm, in the aidant's
    /// browser session: the login then opens no resident session.
    pub mandate_draft: Option<String>,
    /// A page of the resident's space (`/moi…`) to come back to once
    /// logged in, e.g. a source's approval page; anything else is ignored.
    pub next: Option<String>,
}

const LOGIN_COOKIE: &str = "coffre_login";
const HOST_LOGIN_COOKIE: &str = "__Host-coffre_login";

fn login_cookie_name(state: &AppState) -> &'static str {
    if state.config.is_https() {
        HOST_LOGIN_COOKIE
    } else {
        LOGIN_COOKIE
    }
}

fn login_cookie(state: &AppState, value: &str, max_age: i64) -> AppResult<HeaderValue> {
    let secure = if state.config.is_https() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        login_cookie_name(state)
    ))
    .map_err(|_| AppError::internal("login cookie header"))
}

/// Starts a resident's login at the residents' provider.
#[utoipa::path(get, path = "/auth/login", tag = "resident", params(LoginQuery),
    responses((status = 303, description = "redirect to the identity provider"),
              (status = 503, description = "`login_not_configured`, `identity_provider_unavailable`", body = crate::error::ErrorBody)))]
pub async fn resident_login(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    rid: RequestId,
    Query(q): Query<LoginQuery>,
) -> AppResult<Response> {
    let draft = match q.mandate_draft {
        None => None,
        Some(id) => {
            let caller = user.as_ref().map(|u| u.caller(&rid));
            Some(
                login_service::mandate_draft_of(
                    &state,
                    caller.as_ref(),
                    DraftId::parse(&id).ok().as_ref(),
                )
                .await?
                .id,
            )
        }
    };
    start(&state, LoginKind::Resident, draft, q.next.as_deref()).await
}

/// Starts an agent's login at the agents' provider.
#[utoipa::path(get, path = "/auth/agent/login", tag = "agent",
    responses((status = 303, description = "redirect to the agents' identity provider"),
              (status = 503, description = "`agent_login_not_configured`, `identity_provider_unavailable`", body = crate::error::ErrorBody)))]
pub async fn agent_login(State(state): State<AppState>) -> AppResult<Response> {
    start(&state, LoginKind::Agent, None, None).await
}

async fn start(
    state: &AppState,
    kind: LoginKind,
    mandate_draft: Option<DraftId>,
    return_to: Option<&str>,
) -> AppResult<Response> {
    let browser = random_token()?;
    let url = login_service::start(
        state,
        kind,
        mandate_draft,
        return_to,
        &browser,
        state.clock.now(),
    )
    .await?;
    let location =
        HeaderValue::from_str(&url).map_err(|_| AppError::internal("authorization URL"))?;
    let mut res = (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        login_cookie(state, &browser, LOGIN_ATTEMPT_SECS)?,
    );
    Ok(res)
}

/// The residents' provider sends the browser back here.
#[utoipa::path(get, path = "/auth/callback", tag = "resident", params(CallbackQuery),
    responses((status = 303, description = "logged in; session cookie set"),
              (status = 400, description = "`oidc_state_invalid`", body = crate::error::ErrorBody),
              (status = 401, description = "`oidc_login_refused`, `oidc_code_rejected`, `oidc_id_token_invalid`, `oidc_userinfo_invalid`", body = crate::error::ErrorBody),
              (status = 503, description = "`login_not_configured`, `identity_provider_unavailable`, `keys_unavailable`", body = crate::error::ErrorBody)))]
pub async fn resident_callback(
    State(state): State<AppState>,
    rid: RequestId,
    MaybeUser(user): MaybeUser,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> AppResult<Response> {
    let caller = user.as_ref().map(|u| u.caller(&rid));
    callback(
        &state,
        LoginKind::Resident,
        rid,
        caller.as_ref(),
        &headers,
        q,
    )
    .await
}

/// The agents' provider sends the browser back here.
#[utoipa::path(get, path = "/auth/agent/callback", tag = "agent", params(CallbackQuery),
    responses((status = 303, description = "logged in; session cookie set"),
              (status = 400, description = "`oidc_state_invalid`", body = crate::error::ErrorBody),
              (status = 401, description = "`oidc_login_refused`, `oidc_code_rejected`, `oidc_id_token_invalid`, `oidc_userinfo_invalid`", body = crate::error::ErrorBody),
              (status = 403, description = "`agent_unknown`, `agent_inactive`, `agent_email_unverified`", body = crate::error::ErrorBody),
              (status = 503, description = "`agent_login_not_configured`, `identity_provider_unavailable`", body = crate::error::ErrorBody)))]
pub async fn agent_callback(
    State(state): State<AppState>,
    rid: RequestId,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> AppResult<Response> {
    callback(&state, LoginKind::Agent, rid, None, &headers, q).await
}

async fn callback(
    state: &AppState,
    kind: LoginKind,
    rid: RequestId,
    user: Option<&crate::service::Caller>,
    headers: &HeaderMap,
    q: CallbackQuery,
) -> AppResult<Response> {
    let browser = cookie_value(headers, login_cookie_name(state)).unwrap_or_default();
    let now = state.clock.now();
    match login_service::callback(state, kind, rid.0, user, browser, q, now).await? {
        LoginDone::Session {
            actor_id,
            role,
            id_token,
            return_to,
        } => {
            let cookie =
                open_session(state, &actor_id, role, kind.as_str(), Some(&id_token)).await?;
            let location = HeaderValue::from_str(return_to.as_deref().unwrap_or("/"))
                .map_err(|_| AppError::internal("return location"))?;
            let mut res = (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
            res.headers_mut().append(header::SET_COOKIE, cookie);
            res.headers_mut()
                .append(header::SET_COOKIE, login_cookie(state, "", 0)?);
            Ok(res)
        }
        LoginDone::Draft { draft_id } => {
            let location = HeaderValue::from_str(&format!("/aidant/brouillons/{draft_id}"))
                .map_err(|_| AppError::internal("draft location"))?;
            let mut res = (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
            res.headers_mut()
                .append(header::SET_COOKIE, login_cookie(state, "", 0)?);
            Ok(res)
        }
    }
}
