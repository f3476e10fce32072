//! While custodians have not unsealed the process, only what is public
//! answers: the public pages, health, the register, and the audit log's
//! public routes (checkpoint, verifier key, proofs). Every other route
//! reaches data, or a login that needs the keys: it is refused here with
//! 503 `sealed`, and the refusal is audited (`service::seal`).
//!
//! Deny by default: a route added later is closed while sealed until it
//! is listed here, never the other way round.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Paths that answer while sealed, exactly.
const PUBLIC_PATHS: &[&str] = &[
    "/healthz",
    "/readyz",
    "/api/openapi.json",
    "/api/v1/audit/checkpoint",
    "/audit/checkpoint",
    "/api/v1/audit/key",
    "/api/v1/audit/proofs/inclusion",
    "/api/v1/audit/proofs/consistency",
    "/api/v1/categories",
    "/api/v1/purposes",
    "/api/v1/demarches",
    "/.well-known/jwks.json",
    "/",
    "/registre",
    "/journal",
    "/statistiques",
    "/accessibilite",
    "/mentions-legales",
    "/favicon.ico",
];

/// Path prefixes that answer while sealed (static files, the language
/// switch, the open statistics: published releases need no key).
const PUBLIC_PREFIXES: &[&str] = &["/static/", "/langue/", "/api/v1/stats/"];

/// True when `path` answers while the vault is sealed.
pub fn public_while_sealed(path: &str) -> bool {
    PUBLIC_PATHS.contains(&path)
        || PUBLIC_PREFIXES.iter().any(|p| path.starts_with(p))
        // The log's hash tiles, as its proofs; not its entries.
        || (path.starts_with("/audit/tile/") && !path.starts_with("/audit/tile/entries/"))
}

pub async fn refuse_while_sealed(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !state.is_sealed() || public_while_sealed(request.uri().path()) {
        return next.run(request).await;
    }
    let request_id = request
        .headers()
        .get(super::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    crate::service::seal::refuse_sealed(&state, request_id.as_deref(), state.clock.now())
        .await
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::public_while_sealed;

    #[test]
    fn the_logs_hash_tiles_answer_while_sealed_not_its_entries() {
        assert!(public_while_sealed("/audit/checkpoint"));
        assert!(public_while_sealed("/audit/tile/0/000"));
        assert!(public_while_sealed("/audit/tile/1/x001/002.p/3"));
        assert!(!public_while_sealed("/audit/tile/entries/000"));
        assert!(!public_while_sealed("/api/v1/audit/entries"));
        assert!(!public_while_sealed("/audit/tiles"));
    }
}
