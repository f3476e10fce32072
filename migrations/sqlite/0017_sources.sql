-- Data sources (BRIEF C11). The register (policies/sources.toml) says what
-- each source may deposit; these tables hold its credentials, the
-- residents' links to it and the one-time codes that make a link.

-- A source's client credentials (client_credentials, the same token
-- machinery as partners). Apart from the partners' table by design: a
-- source is never found where a partner is looked up, so its token cannot
-- reach a partner's route, nor a partner's token a source's.
CREATE TABLE source_clients (
    id                  TEXT PRIMARY KEY NOT NULL,
    name                TEXT NOT NULL,
    client_id           TEXT NOT NULL UNIQUE,
    client_secret_hash  TEXT NOT NULL,
    active              BOOLEAN NOT NULL DEFAULT TRUE,
    created_at          INTEGER NOT NULL
);

-- A resident's authorisation of a link source: the handle the source
-- names them by (a keyed pseudonym per source: two sources cannot join
-- their handles), and whether the link stands.
CREATE TABLE source_links (
    source_id        TEXT NOT NULL,
    resident_id      TEXT NOT NULL REFERENCES residents (id),
    handle           TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    revoked_at       INTEGER,
    last_deposit_at  INTEGER,
    PRIMARY KEY (source_id, resident_id),
    UNIQUE (source_id, handle)
);

-- One-time codes that make a link: a pairing code read aloud at a counter
-- or an authorisation code sent to a registered redirect URI. Only the
-- SHA-256 of the code is kept; a code is consumed by deleting its row.
CREATE TABLE source_link_codes (
    code_digest   TEXT PRIMARY KEY NOT NULL,
    source_id     TEXT NOT NULL,
    resident_id   TEXT NOT NULL REFERENCES residents (id),
    kind          TEXT NOT NULL,
    redirect_uri  TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX source_link_codes_by_expiry ON source_link_codes (expires_at);
