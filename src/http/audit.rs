//! The audit log over HTTP: the signed checkpoint, proofs, the auditor's
//! view of entries, and a resident's own accesses with inclusion proofs.
//! Also the request id extractor and the `X-Audit-Entry` answer every
//! audited route gives.

use crate::error::ErrorCode;
use std::collections::HashMap;

use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::audit::tiles::TileRef;
use crate::error::AppResult;
use crate::http::session::CurrentUser;
use crate::service::journal::{self, ConsistencyProof, Entries, InclusionProof, MyAccesses};

/// The request id (set by the middleware), to tie audit entries to logs.
pub struct RequestId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestId(
            parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(64).collect()),
        ))
    }
}

/// The `X-Audit-Entry` header: the index of the entry that recorded this
/// request's decision, so a client can ask for its inclusion proof.
pub fn with_entry(index: u64, body: impl IntoResponse) -> Response {
    ([("x-audit-entry", index.to_string())], body).into_response()
}

/// A use case's audited answer as JSON, with its `X-Audit-Entry`.
pub fn audited_json<T: serde::Serialize>(done: crate::service::Audited<T>) -> Response {
    with_entry(done.entry, Json(done.value))
}

fn number(q: &HashMap<String, String>, name: &'static str) -> AppResult<u64> {
    let raw = q
        .get(name)
        .ok_or_else(|| ErrorCode::MissingParameter.with(format!("`{name}`")))?;
    raw.parse()
        .map_err(|_| ErrorCode::InvalidParameter.with(format!("`{name}`: a whole number")))
}

/// The latest signed checkpoint (C2SP tlog-checkpoint as a signed note).
#[utoipa::path(get, path = "/api/v1/audit/checkpoint", tag = "audit",
    responses((status = 200, description = "signed note: origin, tree size, base64 root hash, signature", content_type = "text/plain"),
              (status = 503, description = "`keys_unavailable`, `audit_unavailable`", body = crate::error::ErrorBody)))]
pub async fn checkpoint(State(state): State<AppState>) -> AppResult<Response> {
    let (_, note) = journal::checkpoint_note(&state, state.clock.now()).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response())
}

/// The checkpoint at the C2SP tlog-tiles location (`/audit/checkpoint`,
/// beside the tiles): the latest one witnesses cosigned, with their
/// cosignatures (the latest signed while none has).
pub async fn tlog_checkpoint(State(state): State<AppState>) -> AppResult<Response> {
    let note = journal::witnessed_note(&state, state.clock.now()).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        note,
    )
        .into_response())
}

/// A hash tile (`/audit/tile/<L>/<N>[.p/<W>]`, C2SP tlog-tiles), for
/// anyone; full tiles never change and are cached for a year.
pub async fn hash_tile(
    State(state): State<AppState>,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> AppResult<Response> {
    let tile = TileRef::parse(&path).ok_or(crate::error::AppError::NotFound)?;
    let bytes = journal::hash_tile(&state, &tile).await?;
    Ok(tile_response(&tile, bytes))
}

/// An entry bundle (`/audit/tile/entries/<N>[.p/<W>]`), for auditors and
/// the DPO (the entries name residents by id), audited.
pub async fn entry_bundle(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> AppResult<Response> {
    let tile =
        TileRef::parse(&format!("entries/{path}")).ok_or(crate::error::AppError::NotFound)?;
    let bundle = journal::entry_bundle(&state, &user.caller(&rid), &tile).await?;
    let mut res = with_entry(bundle.entry, tile_response(&tile, bundle.value));
    // Personal identifiers: never in a shared cache.
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("private, no-store"),
    );
    Ok(res)
}

fn tile_response(tile: &TileRef, bytes: Vec<u8>) -> Response {
    let cache = if tile.is_full() {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=60"
    };
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, cache),
        ],
        bytes,
    )
        .into_response()
}

/// The verifier key of checkpoints, in signed-note form (`name+hexid+base64`).
#[utoipa::path(get, path = "/api/v1/audit/key", tag = "audit",
    responses((status = 200, description = "verifier key", content_type = "text/plain")))]
pub async fn key(State(state): State<AppState>) -> AppResult<Response> {
    let key = journal::verifier_key(&state)?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{key}\n"),
    )
        .into_response())
}

/// RFC 9162 inclusion proof of one entry in the tree of `tree_size`.
#[utoipa::path(get, path = "/api/v1/audit/proofs/inclusion", tag = "audit",
    params(("leaf_index" = u64, Query,), ("tree_size" = u64, Query,)),
    responses((status = 200, body = InclusionProof),
              (status = 400, description = "`missing_parameter`, `invalid_parameter`", body = crate::error::ErrorBody),
              (status = 422, description = "`leaf_index_out_of_range`, `tree_size_too_large`", body = crate::error::ErrorBody)))]
pub async fn inclusion(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> AppResult<Json<InclusionProof>> {
    let leaf_index = number(&q, "leaf_index")?;
    let tree_size = number(&q, "tree_size")?;
    Ok(Json(
        journal::inclusion(&state, leaf_index, tree_size).await?,
    ))
}

/// RFC 9162 consistency proof between two tree sizes.
#[utoipa::path(get, path = "/api/v1/audit/proofs/consistency", tag = "audit",
    params(("from" = u64, Query,), ("to" = u64, Query,)),
    responses((status = 200, body = ConsistencyProof),
              (status = 400, description = "`missing_parameter`, `invalid_parameter`", body = crate::error::ErrorBody),
              (status = 422, description = "`invalid_range`, `tree_size_too_large`", body = crate::error::ErrorBody)))]
pub async fn consistency(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> AppResult<Json<ConsistencyProof>> {
    let from = number(&q, "from")?;
    let to = number(&q, "to")?;
    Ok(Json(journal::consistency(&state, from, to).await?))
}

/// Entries with index in [from, to) (at most 1000), for auditors and the DPO.
#[utoipa::path(get, path = "/api/v1/audit/entries", tag = "audit",
    params(("from" = u64, Query,), ("to" = u64, Query,)),
    responses((status = 200, body = Entries),
              (status = 403, description = "`auditor_only`", body = crate::error::ErrorBody),
              (status = 422, description = "`invalid_range`", body = crate::error::ErrorBody)))]
pub async fn entries(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Query(q): Query<HashMap<String, String>>,
) -> AppResult<Response> {
    let from = number(&q, "from")?;
    let to = number(&q, "to")?;
    Ok(audited_json(
        journal::entries(&state, &user.caller(&rid), from, to).await?,
    ))
}

/// Who accessed my data, when and why — every decision about me in the audit
/// log (newest first, 100 per page; `before` pages back), each with its
/// inclusion proof in the signed checkpoint.
#[utoipa::path(get, path = "/api/v1/me/accesses", tag = "resident",
    params(("before" = Option<u64>, Query, description = "only entries with a smaller index")),
    responses((status = 200, body = MyAccesses), (status = 403, body = crate::error::ErrorBody)))]
pub async fn my_accesses(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Query(q): Query<HashMap<String, String>>,
) -> AppResult<Response> {
    let before = match q.get("before") {
        Some(_) => number(&q, "before")?,
        None => u64::MAX,
    };
    let now = state.clock.now();
    Ok(audited_json(
        journal::my_accesses(&state, &user.caller(&rid), before, now).await?,
    ))
}
