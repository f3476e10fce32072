//! Open statistics (BRIEF C12), public and read-only: the releases, their
//! data packages and CSV tables, the DCAT catalogue, the ε ledger. A
//! release never changes, so its files are cached for a year.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::AppResult;
use crate::service::stats::{self, Ledger, ReleaseSummary};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

#[utoipa::path(get, path = "/api/v1/stats/releases", tag = "public",
    responses((status = 200, body = Vec<ReleaseSummary>)))]
pub async fn releases(State(state): State<AppState>) -> AppResult<Json<Vec<ReleaseSummary>>> {
    Ok(Json(stats::releases(&state).await?))
}

/// A release's Frictionless data package (the document whose SHA-256 the
/// audit log holds).
#[utoipa::path(get, path = "/api/v1/stats/releases/{id}", tag = "public",
    params(("id" = String, Path, description = "the month, YYYY-MM")),
    responses((status = 200, description = "datapackage.json", content_type = "application/json"),
              (status = 404, description = "`not_found`", body = crate::error::ErrorBody),
              (status = 422, description = "`invalid_period`", body = crate::error::ErrorBody)))]
pub async fn release(State(state): State<AppState>, Path(id): Path<String>) -> AppResult<Response> {
    let body = stats::datapackage(&state, &id).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, IMMUTABLE),
        ],
        body,
    )
        .into_response())
}

/// A table of a release, `{table}.csv`.
#[utoipa::path(get, path = "/api/v1/stats/releases/{id}/{file}", tag = "public",
    params(("id" = String, Path, description = "the month, YYYY-MM"),
           ("file" = String, Path, description = "`{table}.csv`")),
    responses((status = 200, description = "the table", content_type = "text/csv"),
              (status = 404, description = "`not_found`", body = crate::error::ErrorBody),
              (status = 422, description = "`invalid_period`", body = crate::error::ErrorBody)))]
pub async fn table(
    State(state): State<AppState>,
    Path((id, file)): Path<(String, String)>,
) -> AppResult<Response> {
    let body = stats::table_csv(&state, &id, &file).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CACHE_CONTROL, IMMUTABLE),
        ],
        body,
    )
        .into_response())
}

/// The DCAT-AP catalogue in JSON-LD, for data.gouv.fr to harvest.
#[utoipa::path(get, path = "/api/v1/stats/catalog.jsonld", tag = "public",
    responses((status = 200, description = "DCAT catalogue", content_type = "application/ld+json")))]
pub async fn catalog(State(state): State<AppState>) -> AppResult<Response> {
    let doc = stats::catalog(&state).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/ld+json")],
        doc.to_string(),
    )
        .into_response())
}

/// The public ledger of the privacy loss (ε) the releases spent.
#[utoipa::path(get, path = "/api/v1/stats/ledger", tag = "public",
    responses((status = 200, body = Ledger)))]
pub async fn ledger(State(state): State<AppState>) -> AppResult<Json<Ledger>> {
    Ok(Json(stats::ledger(&state).await?))
}
