-- private_key_jwt (RFC 7523): a partner may authenticate with a JWT signed
-- by its own key instead of a shared secret. Its public keys (a JWKS) are
-- kept here; they are not secret.
ALTER TABLE partners ADD COLUMN client_jwks TEXT;

-- Client assertions already used (their jti), kept until they expire, so a
-- captured assertion cannot be replayed.
CREATE TABLE client_assertion_jtis (
    jti_digest  TEXT PRIMARY KEY NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX client_assertion_jtis_by_expiry ON client_assertion_jtis (expires_at);
