-- A link no longer keeps its last deposit's time. Writing it made every
-- deposit dirty its link's row (one more statement, and one more page to
-- the disk, per link and batch, inside the audit log's sequencing
-- transaction), for a column nothing showed: the resident's page reads the
-- last deposit from the versions the source deposited.
ALTER TABLE source_links DROP COLUMN last_deposit_at;
