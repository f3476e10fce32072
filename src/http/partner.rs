//! Partners over HTTP: `POST /oauth/token`, the `Partner` extractor (a
//! valid bearer token of a partner still active) and the partner's routes.
//! The rules are in `service::partners`.

use crate::error::ErrorCode;
use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::domain::Role;
use crate::error::{AppError, AppResult};
use crate::http::audit::audited_json;
use crate::http::session::serde_urlencoded_form;
use crate::service::partners::{
    self, PartnerRecord, ReachableResidents, TokenHolder, TokenRequest, TokenResponse,
};

pub use crate::service::partners::{AUDIENCE, TOKEN_LIFETIME_SECS};

/// `client_secret_basic`: `Authorization: Basic base64(client_id:secret)`.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

/// Issues an access token to a registered partner (client credentials,
/// authenticated with `client_secret_basic` or `private_key_jwt`).
#[utoipa::path(post, path = "/oauth/token", tag = "partner",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = TokenResponse),
              (status = 400, description = "`unsupported_grant_type`", body = crate::error::ErrorBody),
              (status = 401, description = "`invalid_client`", body = crate::error::ErrorBody)))]
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> AppResult<Json<TokenResponse>> {
    let form: TokenRequest = serde_urlencoded_form(&body);
    Ok(Json(
        partners::issue_token(&state, &form, basic_credentials(&headers)).await?,
    ))
}

/// A partner authenticated by a valid access token, and still active.
#[derive(Clone, Debug)]
pub struct Partner {
    pub id: String,
    pub purposes: Vec<String>,
}

impl Partner {
    /// The caller a use case receives.
    pub fn caller(&self, rid: &crate::http::audit::RequestId) -> crate::service::Caller {
        crate::service::Caller::new(&self.id, Role::Partner, rid.0.clone())
    }
}

/// A valid access token, **not yet checked** against the database: its
/// partner may have been deactivated since. A route taking it must check
/// `partners.active` itself before anything else, as [`resident_data`] does
/// in the same query as the record; every other route takes [`Partner`].
#[derive(Clone, Debug)]
pub(crate) struct PartnerToken(TokenHolder);

/// The bearer token of a request (`Authorization: Bearer …`), partners' and
/// sources' alike.
pub(crate) fn bearer(parts: &Parts) -> AppResult<&str> {
    parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(AppError::Unauthenticated)
}

impl FromRequestParts<AppState> for PartnerToken {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> AppResult<Self> {
        let token = bearer(parts)?;
        Ok(PartnerToken(partners::verify_token(
            state,
            token,
            state.clock.now(),
        )?))
    }
}

impl FromRequestParts<AppState> for Partner {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> AppResult<Self> {
        let PartnerToken(token) = PartnerToken::from_request_parts(parts, state).await?;
        let holder = partners::active_partner(state, token).await?;
        Ok(Partner {
            id: holder.id,
            purposes: holder.purposes,
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct PartnerInfo {
    pub id: String,
    /// Purposes this partner is a recipient of (from its token).
    pub purposes: Vec<String>,
}

/// Who the token belongs to, and the purposes it carries.
#[utoipa::path(get, path = "/api/v1/partner/me", tag = "partner",
    responses((status = 200, body = PartnerInfo),
              (status = 401, description = "`unauthenticated`, `invalid_token`", body = crate::error::ErrorBody)))]
pub async fn me(partner: Partner) -> Json<PartnerInfo> {
    Json(PartnerInfo {
        id: partner.id,
        purposes: partner.purposes,
    })
}

fn query_value<'a>(
    q: &'a std::collections::HashMap<String, String>,
    name: &'static str,
) -> AppResult<&'a str> {
    q.get(name)
        .map(String::as_str)
        .ok_or_else(|| ErrorCode::MissingParameter.with(format!("`{name}`")))
}

fn small_number(
    q: &std::collections::HashMap<String, String>,
    name: &'static str,
    default: i64,
    max: i64,
) -> AppResult<i64> {
    match q.get(name) {
        None => Ok(default),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=max).contains(n))
            .ok_or_else(|| {
                ErrorCode::InvalidParameter
                    .with(format!("`{name}` must be a whole number from 0 to {max}"))
            }),
    }
}

/// The residents this partner may read for `purpose` (paginated), under
/// this partner's own pseudonyms. The listing itself is audited.
#[utoipa::path(get, path = "/api/v1/partner/residents", tag = "partner",
    params(("purpose" = String, Query,), ("offset" = Option<i64>, Query,), ("limit" = Option<i64>, Query, description = "at most 1000, default 100")),
    responses((status = 200, body = ReachableResidents),
              (status = 401, body = crate::error::ErrorBody),
              (status = 403, description = "`not_a_recipient`, `extracts_only`, `unknown_purpose`", body = crate::error::ErrorBody)))]
pub async fn residents(
    State(state): State<AppState>,
    partner: Partner,
    rid: crate::http::audit::RequestId,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> AppResult<axum::response::Response> {
    let purpose_id = query_value(&q, "purpose")?;
    let offset = small_number(&q, "offset", 0, i64::MAX / 2)?;
    let limit = small_number(&q, "limit", 100, 1000)?;
    let now = state.clock.now();
    Ok(audited_json(
        partners::list_residents(
            &state,
            &partner.caller(&rid),
            purpose_id,
            offset,
            limit,
            now,
        )
        .await?,
    ))
}

/// One category of one resident, for a purpose: decided (policy, register,
/// consent or legal basis), audited, then opened.
#[utoipa::path(get, path = "/api/v1/partner/residents/{pseudonym}/data/{category}", tag = "partner",
    params(("pseudonym" = String, Path,), ("category" = String, Path,), ("purpose" = String, Query,)),
    responses((status = 200, body = PartnerRecord),
              (status = 403, description = "`no_valid_consent`, `not_a_recipient`, `category_outside_purpose`, `extracts_only`, `unknown_purpose`", body = crate::error::ErrorBody),
              (status = 404, description = "the resident has no data in this category", body = crate::error::ErrorBody),
              (status = 422, description = "`unknown_pseudonym`", body = crate::error::ErrorBody)))]
pub(crate) async fn resident_data(
    State(state): State<AppState>,
    PartnerToken(partner): PartnerToken,
    rid: crate::http::audit::RequestId,
    axum::extract::Path((pseudonym, category)): axum::extract::Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> AppResult<axum::response::Response> {
    let purpose = q.get("purpose").map(String::as_str);
    Ok(audited_json(
        partners::read_resident_data(
            &state,
            partner,
            rid.0,
            // A malformed pseudonym stands for nobody, as an unknown one.
            crate::domain::Pseudonym::parse(&pseudonym).ok(),
            &category,
            purpose,
        )
        .await?,
    ))
}
