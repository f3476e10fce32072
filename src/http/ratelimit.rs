//! Rate limits on the routes that guess secrets: the token endpoint (per
//! client and per address), logins and TOTP step-ups (per address). A
//! refusal is 429 `rate_limited` with `Retry-After`, before the handler runs,
//! so it costs no database work.
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
use base64::Engine;

use crate::Clock;
use crate::domain::Timestamp;
use crate::error::AppError;

/// A bucket's size and how many seconds one token takes to come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub burst: u32,
    pub refill_secs: u32,
}

/// Per OAuth client, at the token endpoint.
pub const TOKEN_PER_CLIENT: Rule = Rule {
    burst: 30,
    refill_secs: 2,
};
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

/// Most keys kept; past it, full buckets (idle keys) are forgotten first.
const MAX_KEYS: usize = 50_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u32,
    at: Timestamp,
}

/// The buckets of one process.
#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
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
        let refill = u32::try_from((now - b.at).max(0) / i64::from(rule.refill_secs.max(1)))
            .unwrap_or(u32::MAX);
        if refill > 0 {
            b.tokens = b.tokens.saturating_add(refill).min(rule.burst);
            b.at = if b.tokens == rule.burst {
                now
            } else {
                b.at + i64::from(refill) * i64::from(rule.refill_secs)
            };
        }
        if b.tokens == 0 {
            let wait = b.at + i64::from(rule.refill_secs) - now;
            return Err(u32::try_from(wait.max(1)).unwrap_or(u32::MAX));
        }
        if b.tokens == rule.burst {
            b.at = now;
        }
        b.tokens -= 1;
        Ok(())
    }
}

/// Forgets idle keys (a bucket untouched for ten minutes is full under
/// every rule); if that is not enough, forgets them all.
fn prune(map: &mut HashMap<String, Bucket>, now: Timestamp) {
    map.retain(|_, b| now - b.at < 600);
    if map.len() >= MAX_KEYS {
        tracing::warn!(
            keys = map.len(),
            "rate limiter full of live keys; starting afresh"
        );
        map.clear();
    }
}

/// What a request is limited by: (key, rule) pairs; empty when unlimited.
fn keys_of(req: &Request) -> Vec<(String, Rule)> {
    let path = req.uri().path();
    let address = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "local".into());
    let post = req.method() == Method::POST;
    if post && path == "/oauth/token" {
        let mut keys = vec![(format!("token:addr:{address}"), TOKEN_PER_ADDRESS)];
        if let Some(client) = basic_client_id(req) {
            keys.push((format!("token:client:{client}"), TOKEN_PER_CLIENT));
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
        return vec![(format!("login:addr:{address}"), LOGIN_PER_ADDRESS)];
    }
    let totp = post
        && ((path.starts_with("/api/v1/mandates/")
            && (path.ends_with("/confirm") || path.ends_with("/revoke")))
            || (path.starts_with("/aidant/")
                && (path.ends_with("/confirmation") || path.ends_with("/revocation"))));
    if totp {
        return vec![(format!("totp:addr:{address}"), TOTP_PER_ADDRESS)];
    }
    Vec::new()
}

/// The client id of HTTP Basic client authentication, bounded (a key, not
/// a value to trust).
fn basic_client_id(req: &Request) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (client, _) = text.split_once(':')?;
    Some(client.chars().take(80).collect())
}

/// The middleware.
pub async fn limit(
    State((limiter, clock)): State<(Arc<Limiter>, Clock)>,
    req: Request,
    next: Next,
) -> Response {
    let now = clock.now();
    for (key, rule) in keys_of(&req) {
        if let Err(wait) = limiter.take(&key, rule, now) {
            let kind = key.split(':').next().unwrap_or("");
            tracing::warn!(kind, wait, "rate limited");
            let mut res = AppError::TooManyRequests.into_response();
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return res;
        }
    }
    next.run(req).await
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
