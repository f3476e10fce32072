-- Foundation: the people and organisations coffre knows, and browser sessions.
-- No personal value of a resident is stored in clear in any table: resident
-- data lives in the vault (encrypted), identified here by an internal id only.

CREATE TABLE residents (
    id          TEXT PRIMARY KEY NOT NULL,
    status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'erased')),
    created_at  BIGINT NOT NULL
);

-- structures habilitées (CCAS, France Services…): the mandate holders.
CREATE TABLE structures (
    id                 TEXT PRIMARY KEY NOT NULL,
    siret              TEXT NOT NULL UNIQUE,
    name               TEXT NOT NULL,
    allowed_demarches  TEXT NOT NULL,
    active             BOOLEAN NOT NULL DEFAULT TRUE,
    created_at         BIGINT NOT NULL
);

-- Agents: aidants, référents, DPO, auditors, admins. Their role comes from
-- here, never from identity-provider claims alone. The e-mail is kept only as
-- a keyed digest for matching at login.
CREATE TABLE agents (
    id            TEXT PRIMARY KEY NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('aidant', 'referent', 'dpo', 'auditor', 'admin')),
    display_name  TEXT NOT NULL,
    email_digest  TEXT UNIQUE,
    structure_id  TEXT REFERENCES structures (id),
    active        BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    BIGINT NOT NULL
);

-- Partners: OAuth2 clients with declared purposes. Only a digest of the
-- (high-entropy, generated) client secret is kept.
CREATE TABLE partners (
    id                  TEXT PRIMARY KEY NOT NULL,
    name                TEXT NOT NULL,
    client_id           TEXT NOT NULL UNIQUE,
    client_secret_hash  TEXT NOT NULL,
    age_recipient       TEXT,
    active              BOOLEAN NOT NULL DEFAULT TRUE,
    created_at          BIGINT NOT NULL
);

-- Browser sessions. Only the SHA-256 of the cookie value is stored, so a
-- stolen database does not yield live sessions. Shared by every process.
CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    actor_id    TEXT NOT NULL,
    role        TEXT NOT NULL,
    csrf_token  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
