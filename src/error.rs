//! The one error type of the HTTP surface and its one mapping to status codes.
//!
//! Every 4xx/5xx the service emits is `{"error":{"code","message"}}` with a
//! stable `code`. The detail of an internal failure is logged inside the
//! request span and never sent to the client; messages never carry a
//! personal value.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The JSON error body. `code` is stable and documented; `message` is a short,
/// safe, human sentence (French first where a person will read it).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_json`.
    pub code: String,
    /// Short human-readable explanation; never contains personal data.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed on this resource")]
    MethodNotAllowed,
    #[error("request body too large")]
    PayloadTooLarge,
    /// Too many attempts from one client or address (429, with
    /// `Retry-After`).
    #[error("too many requests")]
    TooManyRequests,
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("malformed JSON: {0}")]
    InvalidJson(String),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("authentication required")]
    Unauthenticated,
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The resource existed and is gone for good (410).
    #[error("{message}")]
    Gone { code: &'static str, message: String },
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    #[error("storage error")]
    Storage(#[from] crate::storage::StorageError),
    #[error("internal error")]
    Internal(String),
    #[error("stored data failed its integrity check")]
    Integrity,
}

impl From<crate::audit::AuditError> for AppError {
    fn from(e: crate::audit::AuditError) -> Self {
        use crate::audit::AuditError as A;
        match e {
            A::Unavailable(detail) => {
                tracing::error!(detail, "audit log unavailable; request failed closed");
                AppError::unavailable(
                    "audit_unavailable",
                    "Le journal d'audit est indisponible : rien n'a été communiqué. / The audit log is unavailable: nothing was disclosed.",
                )
            }
            A::BadRequest { code, message } => AppError::unprocessable(code, message),
            A::Integrity(detail) => {
                tracing::error!(detail, "audit log integrity failure");
                AppError::Integrity
            }
        }
    }
}

impl AppError {
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unprocessable {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unavailable {
            code,
            message: message.into(),
        }
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::Internal(detail.into())
    }

    /// The stable code and status of this error; the single source of truth.
    pub fn code_and_status(&self) -> (&'static str, StatusCode) {
        use crate::storage::StorageError as S;
        match self {
            Self::NotFound => ("not_found", StatusCode::NOT_FOUND),
            Self::MethodNotAllowed => ("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED),
            Self::PayloadTooLarge => ("payload_too_large", StatusCode::PAYLOAD_TOO_LARGE),
            Self::TooManyRequests => ("rate_limited", StatusCode::TOO_MANY_REQUESTS),
            Self::UnsupportedMediaType => {
                ("unsupported_media_type", StatusCode::UNSUPPORTED_MEDIA_TYPE)
            }
            Self::InvalidJson(_) => ("invalid_json", StatusCode::BAD_REQUEST),
            Self::BadRequest { code, .. } => (code, StatusCode::BAD_REQUEST),
            Self::Unprocessable { code, .. } => (code, StatusCode::UNPROCESSABLE_ENTITY),
            Self::Unauthenticated => ("unauthenticated", StatusCode::UNAUTHORIZED),
            Self::Unauthorized { code, .. } => (code, StatusCode::UNAUTHORIZED),
            Self::Forbidden { code, .. } => (code, StatusCode::FORBIDDEN),
            Self::Conflict { code, .. } => (code, StatusCode::CONFLICT),
            Self::Gone { code, .. } => (code, StatusCode::GONE),
            Self::Unavailable { code, .. } => (code, StatusCode::SERVICE_UNAVAILABLE),
            Self::Storage(S::Unavailable(_)) => {
                ("database_unavailable", StatusCode::SERVICE_UNAVAILABLE)
            }
            Self::Storage(S::Conflict(_)) => ("conflict", StatusCode::CONFLICT),
            Self::Storage(S::NotFound) => ("not_found", StatusCode::NOT_FOUND),
            Self::Storage(S::Integrity(_)) => {
                ("integrity_error", StatusCode::INTERNAL_SERVER_ERROR)
            }
            Self::Integrity => ("integrity_error", StatusCode::INTERNAL_SERVER_ERROR),
            Self::Storage(_) | Self::Internal(_) => {
                ("internal_error", StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    /// What the client may read. Internal details stay in the log.
    fn public_message(&self) -> String {
        match self {
            Self::Storage(crate::storage::StorageError::Unavailable(_)) => {
                "La base de données est momentanément indisponible. / The database is temporarily unavailable.".into()
            }
            Self::Storage(crate::storage::StorageError::Conflict(_)) => {
                "Cette ressource existe déjà. / This resource already exists.".into()
            }
            Self::Storage(crate::storage::StorageError::NotFound) => {
                "Ressource introuvable. / No such resource.".into()
            }
            Self::Integrity | Self::Storage(crate::storage::StorageError::Integrity(_)) => {
                "Une donnée chiffrée n'a pas passé le contrôle d'intégrité. / Stored data failed its integrity check.".into()
            }
            Self::Storage(_) | Self::Internal(_) => {
                "Erreur interne. / Internal error.".into()
            }
            Self::NotFound => "Ressource introuvable. / No such resource.".into(),
            Self::MethodNotAllowed => {
                "Méthode non autorisée pour cette ressource. / Method not allowed on this resource.".into()
            }
            Self::TooManyRequests => {
                "Trop de tentatives : réessayez plus tard. / Too many attempts; retry later.".into()
            }
            Self::PayloadTooLarge => {
                "Le corps de la requête est trop volumineux. / Request body too large.".into()
            }
            Self::UnsupportedMediaType => {
                "Le corps doit être du JSON (Content-Type: application/json). / Body must be JSON.".into()
            }
            Self::InvalidJson(detail) => format!("JSON invalide / malformed JSON: {detail}"),
            // InvalidJson's detail is built by `http::json` from positions and
            // field names only, never from the submitted values.
            Self::Unauthenticated => {
                "Connexion requise. / Authentication required.".into()
            }
            other => other.to_string(),
        }
    }
}

/// Builds the JSON error response for a status/code pair; also used by the
/// middleware that rewrites framework-generated plain-text errors.
pub fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_string(),
            message,
        },
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (code, status) = self.code_and_status();
        if status.is_server_error() {
            tracing::error!(code, error = ?self, "request failed");
        } else {
            tracing::info!(code, status = status.as_u16(), "request refused");
        }
        error_response(status, code, self.public_message())
    }
}

pub type AppResult<T> = Result<T, AppError>;
