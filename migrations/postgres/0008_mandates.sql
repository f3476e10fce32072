-- Mandates (mandats) for aidants, in the Aidants Connect vocabulary:
-- a structure's aidant acts for a resident within chosen démarches.

-- Aidants may belong to several structures; agents.structure_id is the
-- current one.
CREATE TABLE agent_structures (
    agent_id      TEXT NOT NULL REFERENCES agents (id),
    structure_id  TEXT NOT NULL REFERENCES structures (id),
    PRIMARY KEY (agent_id, structure_id)
);
INSERT INTO agent_structures (agent_id, structure_id)
    SELECT id, structure_id FROM agents WHERE structure_id IS NOT NULL;

ALTER TABLE agents ADD COLUMN can_create_mandates BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE agents ADD COLUMN habilitated_at BIGINT;
ALTER TABLE agents ADD COLUMN deactivated_at BIGINT;

-- TOTP step-up (RFC 6238), as Aidants Connect's cards. The secret is
-- sealed under a data key of its own, wrapped by the KEK, like a
-- resident's. last_step: the last accepted time step (no replay).
CREATE TABLE totp_devices (
    agent_id      TEXT PRIMARY KEY NOT NULL REFERENCES agents (id),
    kek_version   BIGINT NOT NULL REFERENCES kek_versions (version),
    wrapped_key   BYTEA NOT NULL,
    sealed_secret BYTEA NOT NULL,
    last_step     BIGINT NOT NULL DEFAULT 0,
    failures      BIGINT NOT NULL DEFAULT 0,
    locked_until  BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL
);

-- A mandate: one resident, one structure, the aidant who made it, its
-- duration. Its démarches are its authorisations, below.
CREATE TABLE mandates (
    id                TEXT PRIMARY KEY NOT NULL,
    resident_id       TEXT NOT NULL REFERENCES residents (id),
    structure_id      TEXT NOT NULL REFERENCES structures (id),
    aidant_id         TEXT NOT NULL REFERENCES agents (id),
    duration_days     BIGINT NOT NULL CHECK (duration_days IN (1, 31, 182, 365)),
    template_version  TEXT NOT NULL,
    renews            TEXT REFERENCES mandates (id),
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL
);
CREATE INDEX mandates_by_resident ON mandates (resident_id);
CREATE INDEX mandates_by_structure_expiry ON mandates (structure_id, expires_at);

-- One authorisation per démarche. revoked_at is set by a revocation, or
-- when a newer mandate of the same structure takes the démarche over
-- (revoked_by = 'superseded'). The partial unique index is the guarantee:
-- at most one unrevoked authorisation per (resident, structure, démarche),
-- whatever the application does, and two concurrent creations cannot both
-- commit.
CREATE TABLE mandate_authorisations (
    mandate_id    TEXT NOT NULL REFERENCES mandates (id),
    resident_id   TEXT NOT NULL REFERENCES residents (id),
    structure_id  TEXT NOT NULL REFERENCES structures (id),
    demarche      TEXT NOT NULL,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    revoked_by    TEXT,
    PRIMARY KEY (mandate_id, demarche)
);
CREATE UNIQUE INDEX one_live_authorisation
    ON mandate_authorisations (resident_id, structure_id, demarche)
    WHERE revoked_at IS NULL;

-- A mandate being made: the aidant's choices, then the resident who logged
-- in (OpenID Connect, in the aidant's browser) to confirm them.
CREATE TABLE mandate_drafts (
    id             TEXT PRIMARY KEY NOT NULL,
    aidant_id      TEXT NOT NULL REFERENCES agents (id),
    structure_id   TEXT NOT NULL REFERENCES structures (id),
    demarches      TEXT NOT NULL,
    duration_days  BIGINT NOT NULL,
    renews         TEXT REFERENCES mandates (id),
    resident_id    TEXT REFERENCES residents (id),
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL
);

ALTER TABLE login_attempts ADD COLUMN mandate_draft TEXT;
