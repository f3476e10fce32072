-- Residents' rights (GDPR arts. 15–21) and retention.

-- Restriction of processing (art. 18): data kept, not used.
ALTER TABLE residents ADD COLUMN restricted_at INTEGER;

-- Objection (art. 21) to a purpose on another basis than consent.
CREATE TABLE objections (
    resident_id  TEXT NOT NULL REFERENCES residents (id),
    purpose      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (resident_id, purpose)
);
CREATE INDEX objections_by_purpose ON objections (purpose, resident_id);

-- Requests that need a person (the DPO): due one month after receipt,
-- extendable by two months with a reason given within the first month.
CREATE TABLE rights_requests (
    id           TEXT PRIMARY KEY NOT NULL,
    resident_id  TEXT NOT NULL REFERENCES residents (id),
    kind         TEXT NOT NULL CHECK (kind IN ('erasure', 'objection', 'rectification', 'restriction', 'access', 'portability', 'other')),
    purpose      TEXT,
    state        TEXT NOT NULL CHECK (state IN ('received', 'extended', 'granted', 'refused')),
    created_at   INTEGER NOT NULL,
    due_at       INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX rights_requests_by_resident ON rights_requests (resident_id, created_at);
CREATE INDEX rights_requests_open ON rights_requests (state, due_at);

-- Every state change of a request, shown to the resident.
CREATE TABLE rights_request_events (
    request_id  TEXT NOT NULL REFERENCES rights_requests (id),
    seq         INTEGER NOT NULL,
    state       TEXT NOT NULL,
    actor_id    TEXT NOT NULL,
    actor_role  TEXT NOT NULL,
    reason      TEXT,
    at          INTEGER NOT NULL,
    PRIMARY KEY (request_id, seq)
);

-- Art. 19: partners to tell about a rectification, erasure or restriction,
-- under their own pseudonym of the resident. Fetched by the partner.
CREATE TABLE recipient_notifications (
    id          TEXT PRIMARY KEY NOT NULL,
    partner_id  TEXT NOT NULL,
    pseudonym   TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('rectification', 'erasure', 'restriction')),
    category    TEXT,
    created_at  INTEGER NOT NULL,
    fetched_at  INTEGER
);
CREATE INDEX recipient_notifications_by_partner ON recipient_notifications (partner_id, created_at);
