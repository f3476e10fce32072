//! Rate limits on the routes that guess secrets: the token endpoint (every
//! request per address; failed ones per client and address), logins (per
//! address) and TOTP step-ups (per session, or per address without one). A
//! refusal is 429 `rate_limited` with `Retry-After`, before the handler runs,
//! so it costs no database work. Failures only count against a client (a
//! partner whose id is known cannot be locked out by someone else's wrong
//! secrets from another address), and IPv6 addresses count per /64 (one
//! host holds a whole /64).
//!
//! Token buckets per key, refilled at the state's clock (time is a
//! parameter, so tests control it), in one bounded map per process. Several
//! processes behind a load balancer each keep their own: the limit is then
//! per process, which still bounds a guesser by a constant factor; the TOTP
//! lockout, which is in the database, stays global.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Clock;
use crate::domain::Timestamp;
use crate::error::AppError;

/// A bucket's size and how many seconds one token takes to come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub burst: u32,
    pub refill_secs: u32,
}

/// Per address, at the token endpoint.
pub const TOKEN_PER_ADDRESS: Rule = Rule {
    burst: 120,
    refill_secs: 1,
};
/// Per address, on every login route.
pub const LOGIN_PER_ADDRESS: Rule = Rule {
    burst: 60,
    refill_secs: 1,
};
/// Per address, on every route that checks a TOTP code.
pub const TOTP_PER_ADDRESS: Rule = Rule {
    burst: 20,
    refill_secs: 3,
};

/// Per (OAuth client, address), failed token requests only.
pub const TOKEN_FAILURES_PER_CLIENT: Rule = Rule {
    burst: 30,
    refill_secs: 2,
};

/// Failed code exchanges by a data source (per address and per token): a
/// pairing code has ~36 bits and lives 15 minutes; 10 tries and then one
/// every 6 seconds make guessing one hopeless (and keep the log's deny
/// entries bounded).
pub const LINK_EXCHANGE_FAILURES: Rule = Rule {
    burst: 10,
    refill_secs: 6,
};
/// Link codes a resident may ask for (per session): enough for a counter
/// visit and a retry, not a flood of rows and entries.
pub const LINK_CODES_PER_SESSION: Rule = Rule {
    burst: 10,
    refill_secs: 60,
};

/// Most keys kept; past it, full buckets (idle keys) are forgotten first.
const MAX_KEYS: usize = 50_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u32,
    at: Timestamp,
}

impl Bucket {
    /// The bucket with the tokens that came back since `at`, up to the
    /// burst (a full bucket starts counting afresh from `now`).
    fn refilled(self, rule: Rule, now: Timestamp) -> Bucket {
        let refill = u32::try_from((now - self.at).max(0) / i64::from(rule.refill_secs.max(1)))
            .unwrap_or(u32::MAX);
        if refill == 0 {
            return self;
        }
        let tokens = self.tokens.saturating_add(refill).min(rule.burst);
        let at = if tokens == rule.burst {
            now
        } else {
            self.at + i64::from(refill) * i64::from(rule.refill_secs)
        };
        Bucket { tokens, at }
    }

    /// Seconds until the next token of an empty bucket.
    fn wait(self, rule: Rule, now: Timestamp) -> u32 {
        u32::try_from((self.at + i64::from(rule.refill_secs) - now).max(1)).unwrap_or(u32::MAX)
    }
}

/// The buckets of one process.
#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    /// Whether `key`'s bucket holds a token at `now` (taking none);
    /// `Err(seconds)` until the next one.
    pub fn check(&self, key: &str, rule: Rule, now: Timestamp) -> Result<(), u32> {
        let map = match self.buckets.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match map.get(key).map(|b| b.refilled(rule, now)) {
            Some(b) if b.tokens == 0 => Err(b.wait(rule, now)),
            _ => Ok(()),
        }
    }

    /// Takes one token from `key`'s bucket at `now`; `Err(seconds)` until
    /// the next token when the bucket is empty.
    pub fn take(&self, key: &str, rule: Rule, now: Timestamp) -> Result<(), u32> {
        let mut map = match self.buckets.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            prune(&mut map, now);
        }
        let b = map.entry(key.to_string()).or_insert(Bucket {
            tokens: rule.burst,
            at: now,
        });
        *b = b.refilled(rule, now);
        if b.tokens == 0 {
            return Err(b.wait(rule, now));
        }
        if b.tokens == rule.burst {
            b.at = now;
        }
        b.tokens -= 1;
        Ok(())
    }
}

/// Forgets idle keys (a bucket untouched for ten minutes is full under
/// every rule); if that is not enough, the older half.
fn prune(map: &mut HashMap<String, Bucket>, now: Timestamp) {
    map.retain(|_, b| now - b.at < 600);
    if map.len() >= MAX_KEYS {
        tracing::warn!(
            keys = map.len(),
            "rate limiter full of live keys; forgetting the older half"
        );
        let mut ats: Vec<Timestamp> = map.values().map(|b| b.at).collect();
        ats.sort_unstable();
        let cutoff = ats[ats.len() / 2];
        map.retain(|_, b| b.at > cutoff);
    }
}

/// When a key is charged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Charge {
    /// Every request.
    Always,
    /// Only a request the handler refused (4xx but 429): checked before,
    /// taken after.
    OnFailure,
}

/// The peer's address as a key: IPv4 whole, IPv6 by its /64.
fn address_key(req: &Request) -> String {
    match req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
    {
        Some(std::net::IpAddr::V4(ip)) => ip.to_string(),
        Some(std::net::IpAddr::V6(ip)) => {
            let s = ip.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        None => "local".into(),
    }
}

/// A short stable digest of the session cookie (a key, never logged).
fn session_key(req: &Request) -> Option<String> {
    let cookie = req.headers().get(header::COOKIE)?.to_str().ok()?;
    let session = cookie.split(';').map(str::trim).find(|c| {
        c.starts_with(crate::http::session::COOKIE_NAME)
            || c.starts_with(crate::http::session::HOST_COOKIE_NAME)
    })?;
    let digest = ring::digest::digest(&ring::digest::SHA256, session.as_bytes());
    Some(hex::encode(&digest.as_ref()[..12]))
}

/// What a request is limited by: (key, rule, when charged); empty when
/// unlimited.
fn keys_of(req: &Request) -> Vec<(String, Rule, Charge)> {
    let path = req.uri().path();
    let post = req.method() == Method::POST;
    if post && path == "/oauth/token" {
        let address = address_key(req);
        let mut keys = vec![(
            format!("token:addr:{address}"),
            TOKEN_PER_ADDRESS,
            Charge::Always,
        )];
        // The client id as the handler reads it (case, form-encoding).
        if let Some((client, _)) = crate::http::partner::basic_credentials(req.headers()) {
            let client: String = client.chars().take(80).collect();
            keys.push((
                format!("token:client:{client}:{address}"),
                TOKEN_FAILURES_PER_CLIENT,
                Charge::OnFailure,
            ));
        }
        return keys;
    }
    let login = matches!(
        path,
        "/auth/login"
            | "/auth/agent/login"
            | "/auth/callback"
            | "/auth/agent/callback"
            | "/dev/login"
            | "/dev/mandate-login"
    );
    if login {
        return vec![(
            format!("login:addr:{}", address_key(req)),
            LOGIN_PER_ADDRESS,
            Charge::Always,
        )];
    }
    let totp = post
        && ((path.starts_with("/api/v1/mandates/")
            && (path.ends_with("/confirm") || path.ends_with("/revoke")))
            || (path.starts_with("/aidant/")
                && (path.ends_with("/confirmation") || path.ends_with("/revocation"))));
    if totp {
        // Per session: an anonymous flood (refused 401 anyway) does not
        // spend an aidant's attempts; the device's own lockout (in the
        // database) stays the global bound per agent.
        let key = match session_key(req) {
            Some(s) => format!("totp:session:{s}"),
            None => format!("totp:addr:{}", address_key(req)),
        };
        return vec![(key, TOTP_PER_ADDRESS, Charge::Always)];
    }
    if post && path == "/api/v1/source/links" {
        let mut keys = vec![(
            format!("link:addr:{}", address_key(req)),
            LINK_EXCHANGE_FAILURES,
            Charge::OnFailure,
        )];
        if let Some(token) = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            keys.push((
                format!("link:token:{}", crate::crypto::sha256_hex(token)),
                LINK_EXCHANGE_FAILURES,
                Charge::OnFailure,
            ));
        }
        return keys;
    }
    let link_code = post
        && ((path.starts_with("/api/v1/me/sources/") && path.ends_with("/links"))
            || (path.starts_with("/moi/sources/")
                && (path.ends_with("/code") || path.ends_with("/autoriser"))));
    if link_code {
        let key = match session_key(req) {
            Some(s) => format!("linkcode:session:{s}"),
            None => format!("linkcode:addr:{}", address_key(req)),
        };
        return vec![(key, LINK_CODES_PER_SESSION, Charge::Always)];
    }
    Vec::new()
}

/// The middleware.
pub async fn limit(
    State((limiter, clock)): State<(Arc<Limiter>, Clock)>,
    req: Request,
    next: Next,
) -> Response {
    let now = clock.now();
    let keys = keys_of(&req);
    for (key, rule, charge) in &keys {
        let outcome = match charge {
            Charge::Always => limiter.take(key, *rule, now),
            Charge::OnFailure => limiter.check(key, *rule, now),
        };
        if let Err(wait) = outcome {
            let kind = key.split(':').next().unwrap_or("");
            tracing::warn!(kind, wait, "rate limited");
            let mut res = AppError::TooManyRequests.into_response();
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return res;
        }
    }
    let res = next.run(req).await;
    let failed = res.status().is_client_error() && res.status().as_u16() != 429;
    if failed {
        for (key, rule, charge) in &keys {
            if *charge == Charge::OnFailure {
                let _ = limiter.take(key, *rule, now);
            }
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_then_refills_with_the_clock() {
        let l = Limiter::default();
        let rule = Rule {
            burst: 3,
            refill_secs: 10,
        };
        for _ in 0..3 {
            assert_eq!(l.take("k", rule, 100), Ok(()));
        }
        assert_eq!(l.take("k", rule, 100), Err(10));
        assert_eq!(l.take("k", rule, 105), Err(5));
        // Other keys are not affected.
        assert_eq!(l.take("other", rule, 105), Ok(()));
        assert_eq!(l.take("k", rule, 110), Ok(()));
        assert_eq!(l.take("k", rule, 110), Err(10));
        // A long pause refills to the burst, not beyond.
        for _ in 0..3 {
            assert_eq!(l.take("k", rule, 10_000), Ok(()));
        }
        assert!(l.take("k", rule, 10_000).is_err());
    }
}
