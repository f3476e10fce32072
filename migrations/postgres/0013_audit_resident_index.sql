-- A resident's audit entries are found through `audit_by_resident`, which the
-- log's writer fills in bulk (every few thousand entries, and whenever it is
-- idle), instead of through a secondary index on `audit_entries` updated in
-- every group commit. Residents are random keys: such an index dirtied one
-- page per entry inside the durable commit, which cost most of what group
-- commit saves. `indexed_upto` says how far the table is complete; readers
-- scan the entries above it directly (a short range of the primary key).
-- The table is derived data: `coffre audit verify` does not rely on it, and
-- `coffre audit reindex` rebuilds it from the entries.
CREATE TABLE audit_by_resident (
    resident_id TEXT    NOT NULL,
    idx         BIGINT  NOT NULL,
    PRIMARY KEY (resident_id, idx)
);

ALTER TABLE audit_head ADD COLUMN indexed_upto BIGINT NOT NULL DEFAULT 0;

INSERT INTO audit_by_resident (resident_id, idx)
    SELECT resident_id, idx FROM audit_entries WHERE resident_id IS NOT NULL;
UPDATE audit_head SET indexed_upto = size WHERE id = 1;

DROP INDEX audit_entries_by_resident;
