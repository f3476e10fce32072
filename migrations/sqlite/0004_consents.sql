-- The consent registry. `consent_events` is the append-only history (each
-- event with its signed receipt); `consents` holds the current recorded
-- state of each (resident, purpose), updated in the same transaction as the
-- event it derives from, so the access decision's question is one indexed
-- lookup.

CREATE TABLE consents (
    id              TEXT NOT NULL UNIQUE,
    resident_id     TEXT NOT NULL REFERENCES residents (id),
    purpose         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('given', 'refused', 'withdrawn')),
    categories      TEXT NOT NULL,
    valid_until     INTEGER,
    notice_version  TEXT NOT NULL,
    updated_at      INTEGER NOT NULL,
    -- Number of events so far; each decision updates the row only if it is
    -- still at the count it read (compare-and-set), so concurrent decisions
    -- cannot overwrite each other.
    seq             INTEGER NOT NULL,
    -- Clustered on (resident, purpose): the access decision's lookup is a
    -- single B-tree descent.
    PRIMARY KEY (resident_id, purpose)
) WITHOUT ROWID;
-- Cohorts: everyone with a given consent for a purpose.
CREATE INDEX consents_by_purpose ON consents (purpose, state, valid_until);

CREATE TABLE consent_events (
    id              TEXT PRIMARY KEY NOT NULL,
    consent_id      TEXT NOT NULL REFERENCES consents (id),
    resident_id     TEXT NOT NULL REFERENCES residents (id),
    purpose         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('given', 'refused', 'withdrawn')),
    categories      TEXT NOT NULL,
    valid_until     INTEGER,
    notice_version  TEXT NOT NULL,
    -- Who recorded it: the resident, or an aidant under mandate (with structure).
    actor_id        TEXT NOT NULL,
    actor_role      TEXT NOT NULL,
    structure_id    TEXT,
    audit_index     INTEGER NOT NULL,
    receipt         TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX consent_events_by_consent ON consent_events (consent_id, created_at);
