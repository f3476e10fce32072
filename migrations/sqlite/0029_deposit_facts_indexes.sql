-- Two indexes for the facts every deposit batch reads inside the audit
-- log's writer transaction (storage/deposits.rs), where each page read
-- holds back every append behind it.
--
-- The resident's own latest writing of a category (the newest version no
-- source deposited: a deposit must not overwrite it), from the index
-- alone: `source_id` is in the columns, always NULL here, only so that the
-- index covers the query's condition.
CREATE INDEX personal_records_own ON personal_records (resident_id, category, created_at, source_id)
    WHERE source_id IS NULL;

-- Whether a source ever deposited about a resident (its first deposit
-- tells them, art. 14), and a resident's deposits by source (erasure of
-- what one source deposited), from the index alone; it serves the lookups
-- by resident the index it replaces served.
CREATE INDEX source_deposits_by_resident_source ON source_deposits (resident_id, source_id);
DROP INDEX source_deposits_by_resident;
