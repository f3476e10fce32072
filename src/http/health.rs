//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::AppResult;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the process answers.
    pub status: &'static str,
    pub version: &'static str,
}

/// The process is up (says nothing about its dependencies).
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    /// `sqlite` or `postgres`.
    pub database: &'static str,
    /// The register of processing this process applies.
    pub register: crate::RegisterSource,
}

/// The service can do its work: the database answers and the keys are loaded.
/// Otherwise 503 with the reason as the error code.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Readiness),
              (status = 503, description = "not ready: `database_unavailable` or `keys_unavailable`", body = crate::error::ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> AppResult<Json<Readiness>> {
    let database = crate::service::sessions::readiness(&state).await?;
    Ok(Json(Readiness {
        status: "ready",
        database,
        register: state.register_source.clone(),
    }))
}
