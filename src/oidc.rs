//! OpenID Connect relying party, through the `openidconnect` crate: one
//! [`IdentityProvider`] for residents (FranceConnect-like) and one for agents
//! (ProConnect-like), each optional.
//!
//! What it guarantees: authorization code flow with PKCE S256, state and
//! nonce; the ID token verified in full (issuer, audience, nonce, expiry
//! against coffre's clock, signature from the provider's JWKS with the
//! algorithm among those allowed, `acr` at least what was asked); one fresh
//! discovery when the token's key id is unknown (the provider rotated its
//! keys); the userinfo response bound to the ID token's subject. The HTTP
//! client follows no redirects (no server-side request forgery through a
//! provider's answers).
//!
//! What it does not do: store anything. The caller keeps the state, nonce and
//! verifier between the two legs (see `http::login`), and decides what a
//! verified login means.

use std::sync::Arc;
use std::time::Duration;

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AccessToken, AdditionalClaims, AuthenticationContextClass, AuthorizationCode, ClientId,
    ClientSecret, CsrfToken, EndSessionUrl, IssuerUrl, LogoutRequest, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout,
    RedirectUrl, Scope, SubjectIdentifier, TokenResponse, UserInfoClaims,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use crate::config::OidcClient;
use crate::domain::Timestamp;

/// Which of the two providers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginKind {
    Resident,
    Agent,
}

impl LoginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginKind::Resident => "resident",
            LoginKind::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "resident" => Some(LoginKind::Resident),
            "agent" => Some(LoginKind::Agent),
            _ => None,
        }
    }

    pub fn callback_path(self) -> &'static str {
        match self {
            LoginKind::Resident => "/auth/callback",
            LoginKind::Agent => "/auth/agent/callback",
        }
    }
}

/// Why a login could not be completed. The `String`s are for the server's
/// log only (they never contain claims), never for the browser.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
    #[error("the provider refused the authorization code: {0}")]
    CodeRejected(String),
    #[error("the ID token failed verification: {0}")]
    IdTokenInvalid(String),
    #[error("the userinfo response failed verification: {0}")]
    UserInfoInvalid(String),
}

/// The start of a login: where to send the browser, and what to keep.
pub struct Authorization {
    pub url: url::Url,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// FranceConnect's claims beyond the OpenID standard ones.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct FranceConnectClaims {
    pub birthplace: Option<String>,
    pub birthcountry: Option<String>,
}

impl AdditionalClaims for FranceConnectClaims {}

/// What a verified login says about the person. Personal values: they go to
/// the vault or nowhere, never to a log.
#[derive(Clone, Default)]
pub struct IdentityClaims {
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub birthdate: Option<String>,
    pub gender: Option<String>,
    pub birthplace: Option<String>,
    pub birthcountry: Option<String>,
    pub preferred_username: Option<String>,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
}

impl std::fmt::Debug for IdentityClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityClaims(<withheld>)")
    }
}

/// A login the provider vouched for and coffre verified.
pub struct VerifiedLogin {
    pub subject: String,
    pub claims: IdentityClaims,
    /// The raw ID token, for `id_token_hint` at logout.
    pub id_token: String,
    pub acr: Option<String>,
}

/// One configured OpenID provider.
pub struct IdentityProvider {
    pub kind: LoginKind,
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: ClientSecret,
    redirect: RedirectUrl,
    scopes: Vec<String>,
    acr_values: Option<String>,
    http: reqwest::Client,
    metadata: RwLock<Option<Arc<ProviderMetadataWithLogout>>>,
}

/// The one HTTP client for talking to outside services (OpenID providers,
/// the log's witnesses): no redirects, bounded time.
pub fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("HTTP client for OpenID providers: {e}"))
}

/// Signature algorithms accepted on ID tokens (FranceConnect signs with
/// ES256 or RS256). `none` and HMAC are never accepted.
fn allowed_algs() -> [CoreJwsSigningAlgorithm; 4] {
    [
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        CoreJwsSigningAlgorithm::RsaSsaPssSha256,
        CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        CoreJwsSigningAlgorithm::EdDsa,
    ]
}

/// `eidasN` satisfies a request for `eidasM` when N ≥ M; other values must
/// match exactly.
fn acr_satisfies(got: &str, wanted: &str) -> bool {
    let level = |s: &str| s.strip_prefix("eidas").and_then(|n| n.parse::<u8>().ok());
    match (level(got), level(wanted)) {
        (Some(g), Some(w)) => g >= w,
        _ => got == wanted,
    }
}

impl IdentityProvider {
    pub fn new(
        kind: LoginKind,
        config: &OidcClient,
        public_url: &url::Url,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        let issuer = IssuerUrl::new(config.issuer.as_str().trim_end_matches('/').to_string())
            .map_err(|e| format!("{} issuer: {e}", kind.as_str()))?;
        let redirect = public_url
            .join(kind.callback_path())
            .map_err(|e| format!("redirect URI: {e}"))?;
        Ok(Self {
            kind,
            issuer,
            client_id: ClientId::new(config.client_id.clone()),
            client_secret: ClientSecret::new(config.client_secret.expose_secret().to_string()),
            redirect: RedirectUrl::from_url(redirect),
            scopes: config.scopes.clone(),
            acr_values: config.acr_values.clone(),
            http,
            metadata: RwLock::new(None),
        })
    }

    /// The issuer URL, as configured.
    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    /// The provider's discovery document, fetched at first use (so that
    /// coffre starts while a provider is down) or again when `refresh`.
    async fn metadata(&self, refresh: bool) -> Result<Arc<ProviderMetadataWithLogout>, OidcError> {
        if !refresh && let Some(m) = self.metadata.read().await.as_ref() {
            return Ok(m.clone());
        }
        let fresh = ProviderMetadataWithLogout::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| {
                OidcError::Unavailable(format!("discovery of {}: {e}", self.issuer.as_str()))
            })?;
        let fresh = Arc::new(fresh);
        *self.metadata.write().await = Some(fresh.clone());
        Ok(fresh)
    }

    /// Starts a login: a fresh state, nonce and PKCE S256 pair. With
    /// `fresh`, the person must authenticate again even if the provider
    /// still has a session for them (`prompt=login`, `max_age=0`): a mandate
    /// is confirmed by whoever is at the desk now.
    pub async fn authorize(&self, fresh: bool) -> Result<Authorization, OidcError> {
        let metadata = self.metadata(false).await?;
        let client = CoreClient::from_provider_metadata(
            (*metadata).clone(),
            self.client_id.clone(),
            Some(self.client_secret.clone()),
        )
        .set_redirect_uri(self.redirect.clone());
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in self.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        if let Some(acr) = &self.acr_values {
            request = request.add_auth_context_value(AuthenticationContextClass::new(acr.clone()));
        }
        if fresh {
            request = request
                .add_prompt(openidconnect::core::CoreAuthPrompt::Login)
                .set_max_age(Duration::from_secs(0));
        }
        let (url, state, nonce) = request.url();
        Ok(Authorization {
            url,
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Finishes a login: exchanges the code, verifies the ID token at `now`,
    /// and reads userinfo. With `fresh_since`, the ID token's `auth_time`
    /// must be at or after that time (a minute's clock skew allowed).
    pub async fn finish(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
        now: Timestamp,
        fresh_since: Option<Timestamp>,
    ) -> Result<VerifiedLogin, OidcError> {
        let metadata = self.metadata(false).await?;
        let client = CoreClient::from_provider_metadata(
            (*metadata).clone(),
            self.client_id.clone(),
            Some(self.client_secret.clone()),
        )
        .set_redirect_uri(self.redirect.clone());
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Unavailable(format!("no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::CodeRejected(e.to_string()))?;
        let id_token = token
            .id_token()
            .ok_or_else(|| OidcError::IdTokenInvalid("no ID token in the token response".into()))?;
        let expected_nonce = Nonce::new(nonce.to_string());
        let verify = |client: &CoreClient<_, _, _, _, _, _>| {
            let verifier = client
                .id_token_verifier()
                .set_allowed_algs(allowed_algs())
                .set_time_fn(move || chrono::DateTime::from_timestamp(now, 0).unwrap_or_default());
            id_token.claims(&verifier, &expected_nonce).cloned()
        };
        let claims = match verify(&client) {
            Ok(c) => c,
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(
                openidconnect::SignatureVerificationError::NoMatchingKey,
            )) => {
                // The provider may have rotated its keys: discover once more.
                let metadata = self.metadata(true).await?;
                let client = CoreClient::from_provider_metadata(
                    (*metadata).clone(),
                    self.client_id.clone(),
                    Some(self.client_secret.clone()),
                )
                .set_redirect_uri(self.redirect.clone());
                verify(&client).map_err(|e| OidcError::IdTokenInvalid(e.to_string()))?
            }
            Err(e) => return Err(OidcError::IdTokenInvalid(e.to_string())),
        };
        if let Some(since) = fresh_since {
            let auth_time = claims.auth_time().map(|t| t.timestamp());
            if auth_time.is_none_or(|t| t < since - 60) {
                return Err(OidcError::IdTokenInvalid(format!(
                    "not a fresh authentication (auth_time {auth_time:?})"
                )));
            }
        }
        let acr = claims.auth_context_ref().map(|a| a.as_str().to_string());
        if let Some(wanted) = &self.acr_values {
            match &acr {
                Some(got) if acr_satisfies(got, wanted) => {}
                _ => {
                    return Err(OidcError::IdTokenInvalid(format!(
                        "acr {acr:?} does not satisfy {wanted}"
                    )));
                }
            }
        }
        let subject = claims.subject().as_str().to_string();
        let id_token_raw = id_token.to_string();

        let mut identity = IdentityClaims::default();
        let userinfo = match client.user_info(
            AccessToken::new(token.access_token().secret().clone()),
            Some(SubjectIdentifier::new(subject.clone())),
        ) {
            Ok(request) => Some(
                request
                    .request_async::<FranceConnectClaims, _, CoreGenderClaim>(&self.http)
                    .await
                    .map_err(|e| OidcError::UserInfoInvalid(e.to_string()))?,
            ),
            // No userinfo endpoint: the ID token's claims are all there is.
            Err(_) => None,
        };
        fill_standard(&mut identity, &claims);
        if let Some(info) = &userinfo {
            fill_userinfo(&mut identity, info);
        }
        Ok(VerifiedLogin {
            subject,
            claims: identity,
            id_token: id_token_raw,
            acr,
        })
    }

    /// Where to send the browser to end the provider's session too, when the
    /// provider supports RP-initiated logout.
    pub async fn end_session_url(
        &self,
        id_token: &str,
        post_logout: &url::Url,
    ) -> Option<url::Url> {
        let metadata = self.metadata(false).await.ok()?;
        let endpoint: EndSessionUrl = metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()?;
        let hint: openidconnect::core::CoreIdToken = id_token.parse().ok()?;
        let request = LogoutRequest::from(endpoint)
            .set_id_token_hint(&hint)
            .set_client_id(self.client_id.clone())
            .set_post_logout_redirect_uri(PostLogoutRedirectUrl::from_url(post_logout.clone()));
        Some(request.http_get_url())
    }
}

fn fill_standard<AC: AdditionalClaims>(
    out: &mut IdentityClaims,
    claims: &openidconnect::IdTokenClaims<AC, CoreGenderClaim>,
) {
    if let Some(v) = claims.given_name().and_then(|l| l.get(None)) {
        out.given_name = Some(v.as_str().to_string());
    }
    if let Some(v) = claims.family_name().and_then(|l| l.get(None)) {
        out.family_name = Some(v.as_str().to_string());
    }
    if let Some(v) = claims.birthdate() {
        out.birthdate = Some(v.as_str().to_string());
    }
    if let Some(v) = claims.gender() {
        out.gender = Some(v.as_str().to_string());
    }
    if let Some(v) = claims.preferred_username() {
        out.preferred_username = Some(v.as_str().to_string());
    }
    if let Some(v) = claims.email() {
        out.email = Some(v.as_str().to_string());
    }
    out.email_verified = claims.email_verified().or(out.email_verified);
}

fn fill_userinfo(
    out: &mut IdentityClaims,
    info: &UserInfoClaims<FranceConnectClaims, CoreGenderClaim>,
) {
    if let Some(v) = info.given_name().and_then(|l| l.get(None)) {
        out.given_name = Some(v.as_str().to_string());
    }
    if let Some(v) = info.family_name().and_then(|l| l.get(None)) {
        out.family_name = Some(v.as_str().to_string());
    }
    if let Some(v) = info.birthdate() {
        out.birthdate = Some(v.as_str().to_string());
    }
    if let Some(v) = info.gender() {
        out.gender = Some(v.as_str().to_string());
    }
    if let Some(v) = info.preferred_username() {
        out.preferred_username = Some(v.as_str().to_string());
    }
    if let Some(v) = info.email() {
        out.email = Some(v.as_str().to_string());
    }
    if let Some(v) = info.email_verified() {
        out.email_verified = Some(v);
    }
    let extra = info.additional_claims();
    if let Some(v) = &extra.birthplace {
        out.birthplace = Some(v.clone());
    }
    if let Some(v) = &extra.birthcountry {
        out.birthcountry = Some(v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eidas_levels_order() {
        assert!(acr_satisfies("eidas1", "eidas1"));
        assert!(acr_satisfies("eidas3", "eidas1"));
        assert!(!acr_satisfies("eidas1", "eidas2"));
        assert!(acr_satisfies("custom", "custom"));
        assert!(!acr_satisfies("eidasX", "eidas1"));
    }
}
