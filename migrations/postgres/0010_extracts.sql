-- Partner extracts: requested, approved by the DPO, built into an age file
-- for the partner, downloaded, expired. Parameters only: no personal value.
CREATE TABLE extracts (
    id            TEXT PRIMARY KEY NOT NULL,
    partner_id    TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('records', 'aggregate')),
    -- JSON: {"categories", "fields", "group_by", "filters", "generalise", "epsilon"}
    spec          TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('requested', 'approved', 'rejected', 'building', 'ready', 'downloaded', 'expired', 'failed')),
    reason        TEXT,
    rows_done     BIGINT NOT NULL DEFAULT 0,
    rows_total    BIGINT NOT NULL DEFAULT 0,
    -- JSON manifest and its JWS, once built.
    manifest      TEXT,
    manifest_jws  TEXT,
    epsilon       DOUBLE PRECISION,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    expires_at    BIGINT
);
CREATE INDEX extracts_by_partner ON extracts (partner_id, created_at);
CREATE INDEX extracts_by_state ON extracts (state, created_at);
