//! A resident's own data: read, correct (a new version each time, history
//! kept), erase. Only the resident themself reaches these routes.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::AppResult;
use axum::response::Response;

use crate::http::ApiJson;
use crate::http::audit::{RequestId, audited_json, with_entry};
use crate::http::session::CurrentUser;
use crate::service::data::{self, Erased, MyCategory, MyData};
use crate::service::vault::RecordView;

/// Everything the vault holds about me (latest version of each category).
#[utoipa::path(get, path = "/api/v1/me/data", tag = "resident",
    responses((status = 200, body = MyData),
              (status = 401, body = crate::error::ErrorBody),
              (status = 403, description = "`resident_only`", body = crate::error::ErrorBody),
              (status = 503, description = "`keys_unavailable`", body = crate::error::ErrorBody)))]
pub async fn my_data(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    Ok(audited_json(
        data::my_data(&state, &user.caller(&rid)).await?,
    ))
}

/// One category of my data, with its history of corrections.
#[utoipa::path(get, path = "/api/v1/me/data/{category}", tag = "resident",
    params(("category" = String, Path, description = "a data category, e.g. `contact`")),
    responses((status = 200, body = MyCategory),
              (status = 422, description = "`unknown_category`", body = crate::error::ErrorBody)))]
pub async fn my_category(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(category): Path<String>,
) -> AppResult<Response> {
    Ok(audited_json(
        data::my_category(&state, &user.caller(&rid), &category).await?,
    ))
}

/// Stores a new version of one category (the body is the object of its
/// fields). Earlier versions are kept. Refused values change nothing.
#[utoipa::path(put, path = "/api/v1/me/data/{category}", tag = "resident",
    params(("category" = String, Path, description = "a data category, e.g. `contact`")),
    request_body(content = Object, description = "the category's fields, e.g. {\"email\": \"…\", \"phone\": \"…\"}"),
    responses((status = 200, body = RecordView),
              (status = 400, description = "`invalid_json`", body = crate::error::ErrorBody),
              (status = 403, description = "`csrf_token_invalid`, `resident_only`", body = crate::error::ErrorBody),
              (status = 409, description = "`concurrent_update`", body = crate::error::ErrorBody),
              (status = 415, description = "`unsupported_media_type`", body = crate::error::ErrorBody),
              (status = 422, description = "`unknown_category`, `unknown_field`, `invalid_field`, `invalid_record`", body = crate::error::ErrorBody)))]
pub async fn put_my_category(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(category): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> AppResult<Response> {
    let now = state.clock.now();
    let done = data::rectify_own(&state, &user.caller(&rid), &category, &body, now).await?;
    Ok(with_notified(
        with_entry(done.entry, Json(done.value.record)),
        &done.value.notified,
    ))
}

/// Names the partners told of a rectification (art. 19) to the resident,
/// in `X-Notified-Partners`.
pub fn with_notified(mut res: Response, notified: &[String]) -> Response {
    if !notified.is_empty()
        && let Ok(v) = axum::http::HeaderValue::from_str(&notified.join(","))
    {
        res.headers_mut().insert("x-notified-partners", v);
    }
    res
}

/// Erases all my data now: my data key is destroyed (crypto-shredding), my
/// records deleted and my sessions ended. The audit log keeps only
/// identifiers.
#[utoipa::path(post, path = "/api/v1/me/erasure", tag = "resident",
    responses((status = 200, body = Erased),
              (status = 403, description = "`csrf_token_invalid`, `resident_only`", body = crate::error::ErrorBody)))]
pub async fn erase_me(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    let now = state.clock.now();
    Ok(audited_json(
        data::erase_own(&state, &user.caller(&rid), now).await?,
    ))
}

#[derive(Serialize, ToSchema)]
pub struct CategoryInfo {
    pub id: String,
    pub label_fr: String,
    pub label_en: String,
    /// GDPR art. 9 special category.
    pub special: bool,
    pub fields: Vec<String>,
}

/// The data categories the vault accepts, and their fields.
#[utoipa::path(get, path = "/api/v1/categories", tag = "public",
    responses((status = 200, body = [CategoryInfo])))]
pub async fn categories(State(state): State<AppState>) -> Json<Vec<CategoryInfo>> {
    Json(
        state
            .categories
            .iter()
            .map(|(id, def)| CategoryInfo {
                id: id.to_string(),
                label_fr: def.label_fr.clone(),
                label_en: def.label_en.clone(),
                special: def.special,
                fields: def.fields.keys().cloned().collect(),
            })
            .collect(),
    )
}

/// The public signing key (receipts, attestations, tokens, checkpoints).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "public",
    responses((status = 200, description = "JWKS with the Ed25519 signing key"),
              (status = 503, description = "`keys_unavailable`", body = crate::error::ErrorBody)))]
pub async fn jwks(State(state): State<AppState>) -> AppResult<Json<Value>> {
    let set = state.vault()?.keys().current();
    Ok(Json(crate::crypto::jwks(&set)))
}
