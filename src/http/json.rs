//! A JSON body extractor whose every rejection is our error model, with a
//! message built from positions and field names only: serde's own messages
//! can quote the submitted value, which may be personal data.

use crate::error::ErrorCode;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use crate::error::AppError;

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                let essence = ct.split(';').next().unwrap_or_default().trim();
                essence.eq_ignore_ascii_case("application/json")
                    || (essence.starts_with("application/") && essence.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(AppError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                AppError::PayloadTooLarge
            } else {
                AppError::from(ErrorCode::UnreadableBody)
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON document, describing failures without echoing values.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(bytes).map_err(|e| AppError::InvalidJson(describe(&e)))
}

fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Eof => format!("unexpected end of input at {at}"),
        Category::Syntax => format!("syntax error at {at}"),
        Category::Io => "unreadable body".to_string(),
        Category::Data => {
            let msg = e.to_string();
            // These name a field, never a value.
            for prefix in ["missing field", "unknown field", "duplicate field"] {
                if msg.starts_with(prefix) {
                    let field = msg.split('`').nth(1).unwrap_or("?");
                    return format!("{prefix} `{field}` at {at}");
                }
            }
            format!("a value has the wrong type or is out of range at {at}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        age: u8,
    }

    #[test]
    fn messages_never_echo_values() {
        let e = parse_json::<Body>(br#"{"age": "Jeanne Dupont"}"#).unwrap_err();
        assert!(!e.to_string().contains("Jeanne"), "{e}");
        let e = parse_json::<Body>(br#"{"agee": 3}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `agee`"), "{e}");
        let e = parse_json::<Body>(br#"{"age": 3"#).unwrap_err();
        assert!(e.to_string().contains("end of input"), "{e}");
    }
}
