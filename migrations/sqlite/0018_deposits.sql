-- Deposits from data sources (BRIEF C11).

-- The provenance of each record version. NULL origin: written by the
-- resident or by an aidant for them (every version before this migration,
-- and every version not deposited by a source); 'source': deposited by
-- `source_id`, whose own id of the record is `source_record_id`,
-- observed by the source at `observed_at`.
ALTER TABLE personal_records ADD COLUMN origin TEXT;
ALTER TABLE personal_records ADD COLUMN source_id TEXT;
ALTER TABLE personal_records ADD COLUMN source_record_id TEXT;
ALTER TABLE personal_records ADD COLUMN observed_at INTEGER;

-- Idempotency: per (source, its own record id), the keyed digest of the
-- content last accepted and the version it made. The same content again is
-- "unchanged"; new content makes a new version.
CREATE TABLE source_deposits (
    source_id         TEXT NOT NULL,
    source_record_id  TEXT NOT NULL,
    resident_id       TEXT NOT NULL REFERENCES residents (id),
    category          TEXT NOT NULL,
    content_digest    TEXT NOT NULL,
    record_id         TEXT NOT NULL,
    deposited_at      INTEGER NOT NULL,
    PRIMARY KEY (source_id, source_record_id)
);
CREATE INDEX source_deposits_by_resident ON source_deposits (resident_id);

-- The keyed digest of each resident's FranceConnect pivot identity (never
-- the identity itself), for the public-task sources that match by pivot.
CREATE TABLE resident_pivots (
    pivot_digest  TEXT PRIMARY KEY NOT NULL,
    resident_id   TEXT NOT NULL REFERENCES residents (id)
);
CREATE INDEX resident_pivots_by_resident ON resident_pivots (resident_id);

-- Residents' links and waiting codes, looked up by resident (their page,
-- erasure).
CREATE INDEX source_links_by_resident ON source_links (resident_id);
CREATE INDEX source_link_codes_by_resident ON source_link_codes (resident_id);
