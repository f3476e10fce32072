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

mod catalogue;

pub use catalogue::ErrorCode;

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
    #[error("authentication required")]
    Unauthenticated,
    /// A refusal from the catalogue, with an optional safe detail (a
    /// parameter's name, an allowed range: never a personal value).
    #[error("{}{}", code.message(), detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Coded {
        code: ErrorCode,
        detail: Option<String>,
    },
    #[error("storage error")]
    Storage(#[from] crate::storage::StorageError),
    #[error("internal error")]
    Internal(String),
    #[error("stored data failed its integrity check")]
    Integrity,
}

impl From<ErrorCode> for AppError {
    fn from(code: ErrorCode) -> Self {
        AppError::Coded { code, detail: None }
    }
}

impl ErrorCode {
    /// This code with a safe detail shown after its message.
    pub fn with(self, detail: impl Into<String>) -> AppError {
        AppError::Coded {
            code: self,
            detail: Some(detail.into()),
        }
    }
}

impl From<crate::audit::AuditError> for AppError {
    fn from(e: crate::audit::AuditError) -> Self {
        use crate::audit::AuditError as A;
        match e {
            A::Unavailable(detail) => {
                tracing::error!(detail, "audit log unavailable; request failed closed");
                ErrorCode::AuditUnavailable.into()
            }
            A::TreeSizeTooLarge { size } => {
                ErrorCode::TreeSizeTooLarge.with(format!("the log holds {size} entries"))
            }
            A::LeafIndexOutOfRange => ErrorCode::LeafIndexOutOfRange.into(),
            A::InvalidRange => ErrorCode::InvalidRange.with("from must not exceed to"),
            A::Integrity(detail) => {
                tracing::error!(detail, "audit log integrity failure");
                AppError::Integrity
            }
        }
    }
}

impl From<crate::domain::access::Denial> for ErrorCode {
    fn from(d: crate::domain::access::Denial) -> Self {
        use crate::domain::access::Denial as D;
        match d {
            D::ResidentOnly => ErrorCode::ResidentOnly,
            D::AuditorOnly => ErrorCode::AuditorOnly,
            D::RoleNotAllowed => ErrorCode::RoleNotAllowed,
            D::NotOwnData => ErrorCode::NotOwnData,
            D::ResidentNotFound => ErrorCode::ResidentNotFound,
            D::NoActiveMandate => ErrorCode::NoActiveMandate,
            D::OutsideDemarche => ErrorCode::OutsideDemarche,
            D::PurposeRequired => ErrorCode::PurposeRequired,
            D::UnknownPurpose => ErrorCode::PurposeNotInRegister,
            D::CategoryOutsidePurpose => ErrorCode::CategoryOutsidePurpose,
            D::NotARecipient => ErrorCode::NotARecipient,
            D::ExtractsOnly => ErrorCode::ExtractsOnly,
            D::NoValidConsent => ErrorCode::NoValidConsent,
            D::Objection => ErrorCode::Objection,
            D::ProcessingRestricted => ErrorCode::ProcessingRestricted,
            D::ExplicitConsentResidentOnly => ErrorCode::ExplicitConsentResidentOnly,
        }
    }
}

impl From<crate::domain::access::Denial> for AppError {
    fn from(d: crate::domain::access::Denial) -> Self {
        ErrorCode::from(d).into()
    }
}

impl From<crate::domain::deposit::LineRefusal> for ErrorCode {
    fn from(r: crate::domain::deposit::LineRefusal) -> Self {
        use crate::domain::deposit::LineRefusal as L;
        match r {
            L::InvalidJson => ErrorCode::InvalidJson,
            L::LineTooLong => ErrorCode::LineTooLong,
            L::InvalidDeposit => ErrorCode::InvalidDeposit,
            L::InvalidObservedAt => ErrorCode::InvalidObservedAt,
        }
    }
}

impl From<crate::domain::consent::ConsentError> for AppError {
    fn from(e: crate::domain::consent::ConsentError) -> Self {
        use crate::domain::consent::ConsentError as C;
        let code = match &e {
            C::NotApplicable(_) => ErrorCode::ConsentNotApplicable,
            C::CategoryOutsidePurpose(_) => ErrorCode::CategoriesOutsidePurpose,
            C::DurationAboveMaximum(_) => ErrorCode::DurationAboveMaximum,
            C::InvalidUntil => ErrorCode::InvalidUntil,
            C::ExplicitRequired => ErrorCode::ExplicitConsentRequired,
            C::AlreadyGiven => ErrorCode::AlreadyGiven,
            C::NotGiven => ErrorCode::NotGiven,
        };
        // The domain's own sentence names the category or the maximum:
        // identifiers from the register, never a personal value.
        code.with(e.to_string())
    }
}

impl From<crate::domain::category::RecordError> for AppError {
    fn from(e: crate::domain::category::RecordError) -> Self {
        use crate::domain::category::RecordError as R;
        let code = match &e {
            R::UnknownCategory(_) => ErrorCode::UnknownCategory,
            R::UnknownField { .. } => ErrorCode::UnknownField,
            R::InvalidField { .. } => ErrorCode::InvalidField,
            R::NotAnObject => ErrorCode::InvalidRecord,
        };
        // Names of categories and fields and the expected form only: the
        // domain never puts the submitted value in its message.
        code.with(e.to_string())
    }
}

impl AppError {
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::Internal(detail.into())
    }

    /// The catalogue entry of this error; the single source of its code
    /// and status.
    pub fn error_code(&self) -> ErrorCode {
        use crate::storage::StorageError as S;
        match self {
            Self::NotFound => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            Self::TooManyRequests => ErrorCode::RateLimited,
            Self::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            Self::InvalidJson(_) => ErrorCode::InvalidJson,
            Self::Unauthenticated => ErrorCode::Unauthenticated,
            Self::Coded { code, .. } => *code,
            Self::Storage(S::Unavailable(_)) => ErrorCode::DatabaseUnavailable,
            Self::Storage(S::Conflict(_)) => ErrorCode::Conflict,
            Self::Storage(S::NotFound) => ErrorCode::NotFound,
            Self::Storage(S::Integrity(_)) | Self::Integrity => ErrorCode::IntegrityError,
            Self::Storage(_) | Self::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// The stable code and status of this error.
    pub fn code_and_status(&self) -> (&'static str, StatusCode) {
        let code = self.error_code();
        (code.code(), code.status())
    }

    /// The safe detail shown after the catalogue's message, if any.
    fn detail(&self) -> Option<&str> {
        match self {
            // InvalidJson's detail is built by `http::json` from positions
            // and field names only, never from the submitted values.
            Self::InvalidJson(d) => Some(d),
            Self::Coded { detail, .. } => detail.as_deref(),
            _ => None,
        }
    }

    /// The message in one language, with the safe detail: what a page
    /// shows. Internal details stay in the log.
    pub fn message_in(&self, french: bool) -> String {
        let code = self.error_code();
        let text = if french {
            code.message_fr()
        } else {
            code.message_en()
        };
        match self.detail() {
            Some(d) => format!("{text} ({d})"),
            None => text.to_string(),
        }
    }

    /// What the client may read: both languages and the safe detail.
    /// Internal details stay in the log.
    fn public_message(&self) -> String {
        let code = self.error_code();
        match self.detail() {
            Some(d) => format!("{} ({d})", code.message()),
            None => code.message(),
        }
    }
}

/// Builds the JSON error response of a catalogue entry; also used by the
/// middleware that rewrites framework-generated plain-text errors.
pub fn error_response(code: ErrorCode, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.code().to_string(),
            message,
        },
    };
    (code.status(), Json(body)).into_response()
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (code, status) = self.code_and_status();
        if status.is_server_error() {
            tracing::error!(code, error = ?self, "request failed");
        } else {
            tracing::info!(code, status = status.as_u16(), "request refused");
        }
        error_response(self.error_code(), self.public_message())
    }
}

pub type AppResult<T> = Result<T, AppError>;
