//! The resident's notification preferences: which channel each event's
//! messages take, and which events they turned off where the law and the
//! mandate's safeguards allow it.

use axum::extract::State;
use axum::response::Response;

use crate::AppState;
use crate::error::AppResult;
use crate::http::ApiJson;
use crate::http::audit::{RequestId, audited_json};
use crate::http::session::CurrentUser;
use crate::service::notices::{self, NoticePreferences, PreferencesRequest};

/// My notification preferences, event by event (with each event's
/// default where I chose nothing).
#[utoipa::path(get, path = "/api/v1/me/notifications", tag = "resident",
    responses((status = 200, body = NoticePreferences), (status = 403, body = crate::error::ErrorBody)))]
pub async fn my_preferences(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    Ok(audited_json(
        notices::my_preferences(&state, &user.caller(&rid)).await?,
    ))
}

/// Sets the channel of some events (`email`, `post`, or `off` where the
/// event may be turned off). All or nothing: one invalid choice refuses
/// the request and changes nothing.
#[utoipa::path(put, path = "/api/v1/me/notifications", tag = "resident", request_body = PreferencesRequest,
    responses((status = 200, body = NoticePreferences), (status = 403, body = crate::error::ErrorBody),
        (status = 422, description = "`invalid_notice_preference`", body = crate::error::ErrorBody)))]
pub async fn set_preferences(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    ApiJson(body): ApiJson<PreferencesRequest>,
) -> AppResult<Response> {
    let now = state.clock.now();
    Ok(audited_json(
        notices::set_preferences(&state, &user.caller(&rid), &body, now).await?,
    ))
}
