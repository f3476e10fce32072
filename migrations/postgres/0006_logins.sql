-- OpenID Connect logins and session timeouts.

-- A resident's account at an identity provider. The provider's subject is
-- never stored: only HMAC(pseudonymisation key, issuer ‖ sub), enough to
-- find the resident again at the next login and useless to anyone without
-- the key. Deleted when the resident is erased.
CREATE TABLE resident_logins (
    subject_digest  TEXT PRIMARY KEY NOT NULL,
    resident_id     TEXT NOT NULL REFERENCES residents (id),
    created_at      BIGINT NOT NULL,
    last_login_at   BIGINT NOT NULL
);
CREATE INDEX resident_logins_by_resident ON resident_logins (resident_id);

-- Logins under way (between the redirect to the provider and the callback).
-- Keyed by a digest of the OAuth state; bound to the browser that started
-- them by a digest of a short-lived cookie; the nonce and PKCE verifier are
-- sealed with a key derived from that cookie, so the table alone cannot
-- finish anyone's login. Each is consumed once.
CREATE TABLE login_attempts (
    state_digest    TEXT PRIMARY KEY NOT NULL,
    browser_digest  TEXT NOT NULL,
    provider        TEXT NOT NULL CHECK (provider IN ('resident', 'agent')),
    sealed          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);
CREATE INDEX login_attempts_by_expiry ON login_attempts (expires_at);

-- Idle timeout, which provider opened the session, and the ID token for
-- logout (id_token_hint), sealed with a key derived from the session cookie.
ALTER TABLE sessions ADD COLUMN last_seen_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN provider TEXT NOT NULL DEFAULT 'demo';
ALTER TABLE sessions ADD COLUMN id_token_sealed TEXT;
UPDATE sessions SET last_seen_at = created_at;
