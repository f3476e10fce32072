//! Browser sessions: an opaque random cookie whose SHA-256 is stored in the
//! database (shared by every process), and the CSRF token that every
//! state-changing request under a cookie session must carry.

use crate::error::ErrorCode;
use axum::extract::{FromRequestParts, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::crypto::sha256_hex;
use crate::domain::Role;
use crate::error::{AppError, AppResult};
use crate::service::sessions;

pub const COOKIE_NAME: &str = "coffre_session";
/// Under https the cookie carries the `__Host-` prefix, which makes browsers
/// refuse it unless it is Secure, host-only and for the whole site. (On plain
/// http, e.g. the loopback demo, browsers refuse `__Host-`, hence two names.)
pub const HOST_COOKIE_NAME: &str = "__Host-coffre_session";

fn cookie_name(state: &AppState) -> &'static str {
    if state.config.is_https() {
        HOST_COOKIE_NAME
    } else {
        COOKIE_NAME
    }
}
use crate::service::sessions::SESSION_LIFETIME_SECS;
/// Purpose bound into the sealing of the ID token kept for logout.
const ID_TOKEN_SEAL: &str = "session-id-token";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Someone logged in through a browser session.
#[derive(Clone, Debug)]
pub struct CurrentUser {
    pub actor_id: String,
    pub role: Role,
    pub csrf_token: String,
    /// `demo`, `resident` or `agent`: who vouched for the login.
    pub provider: String,
    token_hash: String,
    /// The cookie value itself, to open what was sealed for this session.
    bearer: String,
    id_token_sealed: Option<String>,
}

impl CurrentUser {
    /// The caller a use case receives.
    pub fn caller(&self, rid: &crate::http::audit::RequestId) -> crate::service::Caller {
        crate::service::Caller::new(&self.actor_id, self.role, rid.0.clone())
    }

    /// The provider's ID token, kept sealed for `id_token_hint` at logout.
    pub fn id_token(&self) -> Option<String> {
        let sealed = self.id_token_sealed.as_deref()?;
        let bytes = crate::crypto::open_for_bearer(&self.bearer, ID_TOKEN_SEAL, sealed)?;
        String::from_utf8(bytes).ok()
    }
}

pub(crate) fn random_token() -> AppResult<String> {
    crate::crypto::random_token().map_err(|_| AppError::internal("system random generator failed"))
}

pub(crate) fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Compares digests rather than the tokens, so response timing says nothing
/// about how many leading bytes of a guessed token were right.
pub(crate) fn same(a: &str, b: &str) -> bool {
    !a.is_empty() && sha256_hex(a) == sha256_hex(b)
}

/// Opens a session for `actor_id` and returns the `Set-Cookie` value.
/// `provider` says who vouched for the login (`demo`, `resident`, `agent`);
/// the provider's ID token, if any, is kept sealed for logout.
pub async fn open_session(
    state: &AppState,
    actor_id: &str,
    role: Role,
    provider: &str,
    id_token: Option<&str>,
) -> AppResult<HeaderValue> {
    let token = random_token()?;
    let now = state.clock.now();
    let id_token_sealed = id_token
        .map(|t| crate::crypto::seal_for_bearer(&token, ID_TOKEN_SEAL, t.as_bytes()))
        .transpose()
        .map_err(|_| AppError::internal("sealing the ID token"))?;
    sessions::open(
        state,
        &token,
        actor_id,
        role,
        provider,
        id_token_sealed.as_deref(),
        now,
    )
    .await?;
    let secure = if state.config.is_https() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_LIFETIME_SECS}{secure}",
        cookie_name(state)
    ))
    .map_err(|_| AppError::internal("cookie header"))
}

fn clearing_cookie(state: &AppState) -> HeaderValue {
    if state.config.is_https() {
        HeaderValue::from_static(
            "__Host-coffre_session=; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=0",
        )
    } else {
        HeaderValue::from_static("coffre_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
    }
}

async fn load(parts: &Parts, state: &AppState) -> AppResult<Option<CurrentUser>> {
    let Some(token) = cookie_value(&parts.headers, cookie_name(state)) else {
        return Ok(None);
    };
    let Some(session) = sessions::find(state, token, state.clock.now()).await? else {
        return Ok(None);
    };
    Ok(Some(CurrentUser {
        actor_id: session.actor_id,
        role: session.role,
        csrf_token: session.csrf_token,
        provider: session.provider,
        token_hash: session.token_hash,
        bearer: token.to_string(),
        id_token_sealed: session.id_token_sealed,
    }))
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    /// A logged-in user; on a state-changing method the `X-CSRF-Token` header
    /// must match the session's token.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> AppResult<Self> {
        let user = load(parts, state).await?.ok_or(AppError::Unauthenticated)?;
        if !is_safe(&parts.method) {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !same(sent, &user.csrf_token) {
                return Err(ErrorCode::CsrfTokenInvalid.into());
            }
        }
        Ok(user)
    }
}

/// A session if there is one, without the CSRF check (for pages and logout,
/// which check the token themselves).
pub struct MaybeUser(pub Option<CurrentUser>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> AppResult<Self> {
        Ok(MaybeUser(load(parts, state).await?))
    }
}

#[derive(serde::Deserialize, Default, utoipa::ToSchema)]
pub struct LogoutForm {
    pub csrf_token: Option<String>,
}

/// Ends the browser session. The CSRF token comes in the `X-CSRF-Token`
/// header or, from an HTML form, in the `csrf_token` field.
#[utoipa::path(post, path = "/auth/logout", tag = "resident",
    request_body(content = LogoutForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "session ended; redirect to the home page"),
              (status = 401, body = crate::error::ErrorBody),
              (status = 403, description = "`csrf_token_invalid`", body = crate::error::ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    rid: crate::http::audit::RequestId,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> AppResult<Response> {
    let user = user.ok_or(AppError::Unauthenticated)?;
    let form: LogoutForm = serde_urlencoded_form(&body);
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(form.csrf_token)
        .unwrap_or_default();
    if !same(&sent, &user.csrf_token) {
        return Err(ErrorCode::CsrfTokenInvalid.into());
    }
    sessions::logout(
        &state,
        &user.caller(&rid),
        &user.token_hash,
        state.clock.now(),
    )
    .await?;
    // Ends the provider's session too (RP-initiated logout with
    // `id_token_hint`), so the next person at a shared computer does not
    // find the previous one still logged in at FranceConnect.
    let provider = match user.provider.as_str() {
        "resident" => state.resident_login.clone(),
        "agent" => state.agent_login.clone(),
        _ => None,
    };
    let mut location = "/".to_string();
    if let (Some(provider), Some(id_token)) = (provider, user.id_token())
        && let Some(url) = provider
            .end_session_url(&id_token, &state.config.public_url)
            .await
    {
        location = url.to_string();
    }
    let location =
        HeaderValue::from_str(&location).map_err(|_| AppError::internal("logout location"))?;
    let mut res = (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, clearing_cookie(&state));
    Ok(res)
}

/// Reads an `application/x-www-form-urlencoded` body leniently (unknown
/// fields ignored, bad bodies → defaults).
pub fn serde_urlencoded_form<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> T {
    let pairs = url::form_urlencoded::parse(body);
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
        .collect();
    serde_json::from_value(serde_json::Value::Object(map)).unwrap_or_default()
}
