//! Cross-cutting HTTP behaviour: security headers on every response, and the
//! guarantee that no error leaves as plain text (the framework's own 404,
//! 405, 413, timeouts and panics are rewritten into our JSON error model).

use crate::error::ErrorCode;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::error_response;

/// Whether the public URL is https: then browsers are told to stay on https.
#[derive(Clone, Copy)]
pub struct Hsts(pub bool);

pub async fn security_headers(State(hsts): State<Hsts>, req: Request, next: Next) -> Response {
    let is_api = req.uri().path().starts_with("/api/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), interest-cohort=()"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if hsts.0 {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    // API answers may carry personal data: never cache them anywhere.
    if is_api && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// Rewrites any error response that is not already JSON (or an HTML page)
/// into `{"error":{"code","message"}}`, keeping its status and headers such
/// as `Allow`.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let is_head = req.method() == Method::HEAD;
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) || is_head {
        return res;
    }
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("application/json") || content_type.starts_with("text/html") {
        return res;
    }
    let code = describe_status(status);
    let (parts, _) = res.into_parts();
    let mut rebuilt = error_response(code, code.message());
    // A status the catalogue has no entry of keeps its own number.
    *rebuilt.status_mut() = status;
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rebuilt.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rebuilt
}

fn describe_status(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeout,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthenticated,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::Unprocessable,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        s if s.is_server_error() => ErrorCode::InternalError,
        _ => ErrorCode::BadRequest,
    }
}

/// Turns a panic inside a handler into our JSON 500 (the panic itself is
/// logged by the layer; nothing of it reaches the client).
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("handler panicked");
    error_response(ErrorCode::InternalError, ErrorCode::InternalError.message())
}

/// The header under which a client's own request id is kept, for the
/// logs only.
pub const CLIENT_REQUEST_ID: &str = "x-client-request-id";

/// Every request gets coffre's own id (`X-Request-Id`, a UUID, the one the
/// audit log records): a client's id never enters the log, which cannot be
/// erased, even when it looks like an identifier (digits may be a social
/// security number). A client's id that looks like one (at most 64
/// characters of `[A-Za-z0-9._:-]`) is kept beside it for the request's log
/// line, so a client can still correlate; anything else is dropped.
pub async fn sanitize_request_id(mut req: Request, next: Next) -> Response {
    let acceptable = |v: &HeaderValue| {
        let b = v.as_bytes();
        !b.is_empty()
            && b.len() <= 64
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
    };
    let ids: Vec<HeaderValue> = req
        .headers()
        .get_all(crate::http::REQUEST_ID)
        .iter()
        .cloned()
        .collect();
    req.headers_mut().remove(crate::http::REQUEST_ID);
    req.headers_mut().remove(CLIENT_REQUEST_ID);
    let client = match ids.as_slice() {
        [id] if acceptable(id) => Some(id.clone()),
        _ => None,
    };
    if let Some(id) = &client {
        req.headers_mut().insert(CLIENT_REQUEST_ID, id.clone());
    }
    let mut res = next.run(req).await;
    // Echoed, so the client ties its id to coffre's (`X-Request-Id`).
    if let Some(id) = client {
        res.headers_mut().insert(CLIENT_REQUEST_ID, id);
    }
    res
}

/// The path whose body is a data source's deposit stream.
pub const DEPOSITS_PATH: &str = "/api/v1/source/deposits";

/// Limits every request body: `max_body_bytes`, or `max_deposit_bytes` for
/// a deposit stream (read a line at a time). A declared length over the
/// limit is refused at once (413, before anything is read or written); a
/// body without one is cut where it passes the limit.
pub async fn body_limit(
    axum::extract::State((max_body, max_deposit)): axum::extract::State<(usize, usize)>,
    req: Request,
    next: Next,
) -> Response {
    let limit = if req.uri().path() == DEPOSITS_PATH {
        max_deposit
    } else {
        max_body
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return axum::response::IntoResponse::into_response(
            crate::error::AppError::PayloadTooLarge,
        );
    }
    let (parts, body) = req.into_parts();
    let body = Body::new(http_body_util::Limited::new(body, limit));
    next.run(Request::from_parts(parts, body)).await
}
