-- Art. 19: who received a resident's data (a partner's allowed read, or an
-- extract that included them), per category, derived from the audit log by
-- the log's writer when idle, as `audit_by_resident` is. A rectification,
-- restriction or erasure then finds the partners to notify with one index
-- lookup (plus a scan of the short tail not indexed yet) instead of
-- decoding the resident's whole history. Derived data: `coffre audit
-- verify` does not rely on it.
CREATE TABLE audit_recipients (
    resident_id  TEXT   NOT NULL,
    partner_id   TEXT   NOT NULL,
    category     TEXT   NOT NULL,
    first_idx    BIGINT NOT NULL,
    PRIMARY KEY (resident_id, partner_id, category)
);

-- How far the log has been read into `audit_recipients`: a row of its own,
-- so indexing never holds the log's head row (which every append updates).
CREATE TABLE audit_recipients_cursor (
    id    INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    upto  BIGINT  NOT NULL
);
INSERT INTO audit_recipients_cursor (id, upto) VALUES (1, 0);
