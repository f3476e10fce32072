//! Partners as OAuth2 clients: tokens issued to registered partners
//! (client credentials, authenticated with `client_secret_basic` or
//! `private_key_jwt`, RFC 7523) as short-lived EdDSA JWTs, verified on
//! every request (algorithm pinned, issuer, audience, expiry and
//! not-before checked against the service clock); and what a partner
//! does with one: list the residents it may read for a purpose, under its
//! own pseudonyms, and read one category of one of them.
//!
//! A partner's purposes are those of the register that name it as a
//! recipient: the register is the one source of truth the DPO reviews.

use crate::error::ErrorCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::domain::{PartnerId, Pseudonym, Role, Timestamp};
use crate::error::{AppError, AppResult};
use crate::service::{Audited, Caller};

/// Access tokens live at most this long.
pub const TOKEN_LIFETIME_SECS: i64 = 300;
/// The `aud` of every access token coffre issues.
pub const AUDIENCE: &str = "coffre";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AccessClaims {
    iss: String,
    pub(crate) sub: String,
    aud: String,
    pub(crate) iat: i64,
    pub(crate) nbf: i64,
    pub(crate) exp: i64,
    jti: String,
    /// The purposes whose recipients name this partner, at issue time.
    purposes: Vec<String>,
}

#[derive(Deserialize, Default, ToSchema)]
pub struct TokenRequest {
    /// Must be `client_credentials`.
    pub grant_type: Option<String>,
    /// `private_key_jwt`: `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
    pub client_assertion_type: Option<String>,
    /// `private_key_jwt`: a JWT signed with one of the partner's registered
    /// keys; `iss` = `sub` = client id, `aud` = this token endpoint's URL,
    /// a `jti` used once, living at most 5 minutes.
    pub client_assertion: Option<String>,
    pub client_id: Option<String>,
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// A client assertion may live at most this long (RFC 7523 §3: short).
const ASSERTION_MAX_LIFETIME_SECS: i64 = 300;
/// Tolerated clock skew with partners.
const CLOCK_SKEW_SECS: i64 = 60;

#[derive(Deserialize)]
struct AssertionClaims {
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    jti: String,
}

/// Verifies a `private_key_jwt` client assertion (RFC 7523) at `now` and
/// returns the partner it authenticates. Every failure is `invalid_client`;
/// the log says which check failed, never the assertion.
async fn partner_from_assertion(
    state: &AppState,
    form: &TokenRequest,
) -> AppResult<crate::storage::PartnerRow> {
    use jsonwebtoken::jwk::JwkSet;
    let refuse = |why: &str| {
        tracing::info!(why, "client assertion refused");
        invalid_client()
    };
    let assertion = form
        .client_assertion
        .as_deref()
        .filter(|a| a.len() <= 8192)
        .ok_or_else(|| refuse("no assertion"))?;
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| refuse("bad header"))?;
    // Who claims to be signing: looked up first, verified below.
    let unverified: serde_json::Value = assertion
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| refuse("bad payload"))?;
    let client_id = unverified["sub"]
        .as_str()
        .ok_or_else(|| refuse("no sub"))?
        .to_string();
    if form.client_id.as_deref().is_some_and(|c| c != client_id) {
        return Err(refuse("client_id differs from sub"));
    }
    let partner = state
        .store
        .find_partner_by_client_id(&client_id)
        .await?
        .filter(|p| p.active)
        .ok_or_else(|| refuse("unknown client"))?;
    let jwks: JwkSet = partner
        .client_jwks
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .ok_or_else(|| refuse("no keys registered"))?;
    let jwk = match (&header.kid, jwks.keys.as_slice()) {
        (Some(kid), _) => jwks.find(kid),
        (None, [only]) => Some(only),
        (None, _) => None,
    }
    .ok_or_else(|| refuse("no matching key"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| refuse("unusable key"))?;
    // Asymmetric keys only, and the algorithm must be the key's own family.
    if key.family() == jsonwebtoken::AlgorithmFamily::Hmac || key.family() != header.alg.family() {
        return Err(refuse("algorithm does not fit the key"));
    }
    let public = state.config.public_base();
    let mut v = Validation::new(header.alg);
    v.set_audience(&[format!("{public}/oauth/token"), public.to_string()]);
    v.set_issuer(&[client_id.as_str()]);
    v.sub = Some(client_id.clone());
    // Time is checked below against the service clock.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.required_spec_claims = ["exp", "iss", "sub", "aud", "jti"]
        .into_iter()
        .map(String::from)
        .collect();
    let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &v)
        .map_err(|e| refuse(&format!("signature or claims: {:?}", e.kind())))?
        .claims;
    let now = state.clock.now();
    if claims.exp <= now - CLOCK_SKEW_SECS {
        return Err(refuse("expired"));
    }
    let issued = claims.iat.or(claims.nbf).unwrap_or(now);
    if claims.exp - issued > ASSERTION_MAX_LIFETIME_SECS
        || claims.exp > now + ASSERTION_MAX_LIFETIME_SECS + CLOCK_SKEW_SECS
        || claims.nbf.is_some_and(|n| n > now + CLOCK_SKEW_SECS)
        || claims.iat.is_some_and(|i| i > now + CLOCK_SKEW_SECS)
    {
        return Err(refuse("lifetime"));
    }
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(refuse("jti"));
    }
    let jti_digest = crate::crypto::sha256_hex(&format!("{client_id}\n{}", claims.jti));
    if !state
        .store
        .use_assertion_jti(&jti_digest, claims.exp + CLOCK_SKEW_SECS, now)
        .await?
    {
        return Err(refuse("replayed jti"));
    }
    Ok(partner)
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds (at most 300).
    pub expires_in: i64,
    /// Space-separated purpose ids the token carries.
    pub scope: String,
}

pub(crate) fn invalid_client() -> AppError {
    ErrorCode::InvalidClient.into()
}

fn invalid_token(why: &str) -> AppError {
    tracing::info!(why, "partner token refused");
    ErrorCode::InvalidToken.into()
}

/// Issues an access token to a registered, active partner (client
/// credentials, authenticated with `client_secret_basic` — `basic` — or
/// `private_key_jwt`).
pub async fn issue_token(
    state: &AppState,
    form: &TokenRequest,
    basic: Option<(String, String)>,
) -> AppResult<TokenResponse> {
    if form.grant_type.as_deref() != Some("client_credentials") {
        return Err(ErrorCode::UnsupportedGrantType.into());
    }
    let partner = if form.client_assertion_type.is_some() || form.client_assertion.is_some() {
        if form.client_assertion_type.as_deref() != Some(JWT_BEARER) {
            return Err(invalid_client());
        }
        partner_from_assertion(state, form).await?
    } else {
        let (client_id, secret) = basic.ok_or_else(invalid_client)?;
        let Some(partner) = state.store.find_partner_by_client_id(&client_id).await? else {
            // Not a partner: perhaps a data source (same endpoint, same
            // credentials' form, a token for another audience).
            return super::sources::issue_token(state, &client_id, &secret).await;
        };
        if !partner.active {
            return Err(invalid_client());
        }
        // Digests are compared, so timing says nothing about the secret.
        if crate::crypto::sha256_hex(&secret) != partner.client_secret_hash {
            return Err(invalid_client());
        }
        partner
    };
    let purposes: Vec<String> = state
        .register
        .purposes_of_partner(partner.id.as_str())
        .map(|p| p.id.to_string())
        .collect();
    let response = sign_access_token(state, partner.id.as_str(), AUDIENCE, purposes)?;
    tracing::info!(partner = %partner.id, "access token issued");
    Ok(response)
}

/// Signs a short-lived access token for `sub` with the service's key. The
/// audience keeps the kinds of client apart: a partner's token (`coffre`)
/// is refused on a source's routes and a source's (`coffre-source`) on a
/// partner's, whatever their ids.
pub(crate) fn sign_access_token(
    state: &AppState,
    sub: &str,
    audience: &str,
    purposes: Vec<String>,
) -> AppResult<TokenResponse> {
    let keys = state.vault()?.keys().current();
    let now = state.clock.now();
    let claims = AccessClaims {
        iss: state.config.public_base().to_string(),
        sub: sub.to_string(),
        aud: audience.into(),
        iat: now,
        nbf: now,
        exp: now + TOKEN_LIFETIME_SECS,
        jti: uuid::Uuid::new_v4().to_string(),
        purposes: purposes.clone(),
    };
    let access_token = crate::crypto::jws::sign(&keys, &claims)
        .map_err(|e| AppError::internal(format!("token signing: {e}")))?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: TOKEN_LIFETIME_SECS,
        scope: purposes.join(" "),
    })
}

/// A partner's valid access token: who, and the purposes it carries.
/// Whether the partner is still active is **not** checked here (see
/// [`active_partner`]).
#[derive(Clone, Debug)]
pub struct TokenHolder {
    pub id: String,
    pub purposes: Vec<String>,
}

/// Verifies a bearer token at `now`: the signature (remembered per process,
/// under the key that verified it), then its time window, every time.
pub fn verify_token(state: &AppState, token: &str, now: Timestamp) -> AppResult<TokenHolder> {
    let keys = state.vault()?.keys().current();
    let signing_key = keys.signing_public_key();
    let c = match state.partner_tokens.get(token, &signing_key) {
        Some(claims) => claims,
        None => {
            let claims = verify_access_token(state, token, &signing_key, AUDIENCE)?;
            state.partner_tokens.insert(token, &signing_key, &claims);
            claims
        }
    };
    if c.exp <= now || c.nbf > now || c.exp - c.iat > TOKEN_LIFETIME_SECS {
        return Err(invalid_token("expired or not yet valid"));
    }
    Ok(TokenHolder {
        id: c.sub,
        purposes: c.purposes,
    })
}

/// The refusal of a token whose partner was deactivated since it was issued.
fn partner_inactive() -> AppError {
    invalid_token("partner inactive")
}

/// The token's partner, if it is still active: a partner deactivated since
/// the token was issued is refused at once.
pub async fn active_partner(state: &AppState, token: TokenHolder) -> AppResult<TokenHolder> {
    // A token's subject that is no partner id names no partner.
    let active = match PartnerId::parse(&token.id) {
        Ok(id) => state
            .store
            .find_partner(&id)
            .await?
            .is_some_and(|p| p.active),
        Err(_) => false,
    };
    if !active {
        return Err(partner_inactive());
    }
    Ok(token)
}

/// Checks an access token's signature (EdDSA with `signing_key`, the
/// algorithm pinned), issuer, audience and required claims. Time is checked
/// by the caller, against the service clock, on every request.
pub(crate) fn verify_access_token(
    state: &AppState,
    token: &str,
    signing_key: &[u8; 32],
    audience: &str,
) -> AppResult<AccessClaims> {
    let x = URL_SAFE_NO_PAD.encode(signing_key);
    let key =
        DecodingKey::from_ed_components(&x).map_err(|_| AppError::internal("decoding key"))?;
    // The algorithm is pinned: `none`, HS256 with the public key as a
    // secret, and every other algorithm are refused by the library.
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_issuer(&[state.config.public_base()]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    v.validate_exp = false;
    v.validate_nbf = false;
    jsonwebtoken::decode::<AccessClaims>(token, &key, &v)
        .map(|data| data.claims)
        .map_err(|e| invalid_token(&format!("{:?}", e.kind())))
}

/// Most tokens [`VerifiedTokens`] remembers; past that, the cache evicts
/// the least useful (an expired token is never asked for again, so it goes
/// first in practice).
const MAX_VERIFIED_TOKENS: usize = 4096;

/// Partner access tokens this process has already verified, by SHA-256 of
/// the token. The Ed25519 verification is the largest CPU cost of a partner
/// read, and a partner sends the same token for up to 5 minutes. What is
/// remembered is only the outcome of [`verify_access_token`], and only
/// under the signing key that verified it (a rotated key verifies afresh);
/// the time window and whether the partner is still active are checked on
/// every request.
pub struct VerifiedTokens {
    /// SHA-256 of the token → (the signing key that verified it, its claims).
    by_digest: quick_cache::sync::Cache<[u8; 32], ([u8; 32], AccessClaims)>,
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self {
            by_digest: quick_cache::sync::Cache::new(MAX_VERIFIED_TOKENS),
        }
    }
}

impl VerifiedTokens {
    fn digest(token: &str) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    fn get(&self, token: &str, signing_key: &[u8; 32]) -> Option<AccessClaims> {
        self.by_digest
            .get(&Self::digest(token))
            .filter(|(key, _)| key == signing_key)
            .map(|(_, claims)| claims)
    }

    fn insert(&self, token: &str, signing_key: &[u8; 32], claims: &AccessClaims) {
        self.by_digest
            .insert(Self::digest(token), (*signing_key, claims.clone()));
    }
}

/// Most (partner, pseudonym) pairs a process remembers the resident of.
pub const MAX_REMEMBERED_PSEUDONYMS: usize = 16_384;

/// The resident `pseudonym` stands for, for `partner`, if the partner has
/// been shown it. A pair, once stored, never changes (the table's key is
/// the pair, rows are never updated or deleted), so a resolved one is
/// remembered; an unknown one is asked again next time.
async fn resident_of(
    state: &AppState,
    partner: &str,
    pseudonym: Option<&Pseudonym>,
) -> AppResult<Option<crate::domain::ResidentId>> {
    // A token's subject that is no partner id, or a text that is no
    // pseudonym, stands for nobody.
    let (Ok(partner), Some(pseudonym)) = (PartnerId::parse(partner), pseudonym) else {
        return Ok(None);
    };
    let key = (partner.to_string(), pseudonym.to_string());
    if let Some(resident) = state.pseudonyms.get(&key) {
        return Ok(Some(resident));
    }
    let resident = state.store.resolve_pseudonym(&partner, pseudonym).await?;
    if let Some(r) = &resident {
        state.pseudonyms.insert(key, r.clone());
    }
    Ok(resident)
}

#[derive(Serialize, ToSchema)]
pub struct ReachableResidents {
    pub purpose: String,
    /// This partner's pseudonyms of the residents it may read for the purpose.
    pub residents: Vec<String>,
    /// Pass as `offset` for the next page; absent on the last page.
    pub next_offset: Option<i64>,
}

/// The residents this partner may read for `purpose` (paginated), under
/// this partner's own pseudonyms. The listing itself is audited.
pub async fn list_residents(
    state: &AppState,
    partner: &Caller,
    purpose_id: &str,
    offset: i64,
    limit: i64,
    now: Timestamp,
) -> AppResult<Audited<ReachableResidents>> {
    let index = crate::service::access::decide(
        state,
        crate::service::access::AccessRequest {
            purpose_id: Some(purpose_id),
            request_id: partner.request_id.clone(),
            ..crate::service::access::AccessRequest::new(
                &partner.actor_id,
                Role::Partner,
                "residents.list",
            )
        },
    )
    .await?;
    // The decision allowed only a purpose of the register.
    let purpose = state
        .register
        .get(purpose_id)
        .ok_or_else(|| AppError::internal("allowed purpose missing"))?;
    let keys = state.vault()?.keys().current();
    let ids = state
        .store
        .reachable_residents(
            &purpose.id,
            purpose.legal_basis.needs_consent(),
            &purpose.notice_version,
            now,
            offset,
            limit + 1,
        )
        .await?;
    let more = ids.len() as i64 > limit;
    let typed = |e| AppError::internal(format!("partner's ids: {e}"));
    let partner_id = PartnerId::parse(&partner.actor_id).map_err(typed)?;
    let pairs: Vec<(Pseudonym, String)> = ids
        .into_iter()
        .take(limit as usize)
        .map(|r| {
            let p = keys.pseudonym(&format!("partner:{partner_id}"), r.as_bytes());
            Ok((Pseudonym::parse(&p).map_err(typed)?, r))
        })
        .collect::<AppResult<_>>()?;
    state.store.remember_pseudonyms(&partner_id, &pairs).await?;
    Ok(Audited::new(
        index,
        ReachableResidents {
            purpose: purpose.id.to_string(),
            next_offset: more.then_some(offset + limit),
            residents: pairs.into_iter().map(|(p, _)| p.into_string()).collect(),
        },
    ))
}

#[derive(Serialize, ToSchema)]
pub struct PartnerRecord {
    pub pseudonym: String,
    pub category: String,
    pub version: i64,
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// One category of one resident, for a purpose: decided (policy, register,
/// consent or legal basis), audited, then opened. The token's partner is
/// checked active here, in the same query as the decision's facts and the
/// sealed record (the busiest route pays one round trip); the record stays
/// sealed until the decision allowed the read and the log recorded it.
pub async fn read_resident_data(
    state: &AppState,
    partner: TokenHolder,
    request_id: Option<String>,
    pseudonym: Option<Pseudonym>,
    category: &str,
    purpose: Option<&str>,
) -> AppResult<Audited<PartnerRecord>> {
    let missing_purpose = || ErrorCode::MissingParameter.with("`purpose`");
    let Some(resident) = resident_of(state, &partner.id, pseudonym.as_ref()).await? else {
        // An inactive partner learns nothing, not even that a pseudonym is
        // unknown.
        active_partner(state, partner).await?;
        purpose.ok_or_else(missing_purpose)?;
        return Err(ErrorCode::UnknownPseudonym.into());
    };
    // Whether the partner is still active, the decision's facts and the
    // sealed record: one query. The record stays sealed until the decision
    // allowed the read and the audit log recorded it. An inactive partner
    // is refused before anything else is said (a missing purpose, a locked
    // vault), as on every other partner route.
    // Only a purpose of the register reaches the store (an unknown one
    // matches no consent and is refused by the decision).
    let registered = purpose.and_then(|p| state.register.get(p)).map(|p| &p.id);
    // A known pseudonym was resolved for this partner: its id is a partner id.
    let Ok(partner_id) = PartnerId::parse(&partner.id) else {
        return Err(partner_inactive());
    };
    let read = state
        .store
        .partner_read(&partner_id, &resident, registered, category)
        .await?;
    if !read.partner_active {
        return Err(partner_inactive());
    }
    let purpose_id = purpose.ok_or_else(missing_purpose)?;
    let vault = state.vault()?;
    let index = crate::service::access::decide(
        state,
        crate::service::access::AccessRequest {
            resident_id: Some(resident.as_str()),
            category: Some(category),
            purpose_id: Some(purpose_id),
            request_id,
            partner_facts: Some(read.facts),
            ..crate::service::access::AccessRequest::new(&partner.id, Role::Partner, "data.read")
        },
    )
    .await?;
    let record = vault.open_record(read.record.ok_or(AppError::NotFound)?)?;
    Ok(Audited::new(
        index,
        PartnerRecord {
            pseudonym: pseudonym.map(Pseudonym::into_string).unwrap_or_default(),
            category: record.category,
            version: record.version,
            fields: record.fields,
        },
    ))
}
