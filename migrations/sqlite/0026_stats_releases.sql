-- Open statistics of the commons (BRIEF C12): one release per month, its
-- Frictionless data package (the document whose SHA-256 the audit log
-- holds) and its CSV tables. A release is immutable: the triggers refuse
-- any change or deletion, whatever the application does.
CREATE TABLE stats_releases (
    period        TEXT PRIMARY KEY NOT NULL,
    epsilon       DOUBLE PRECISION NOT NULL,
    datapackage   TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    audit_index   BIGINT NOT NULL,
    published_at  BIGINT NOT NULL
);

CREATE TABLE stats_tables (
    period  TEXT NOT NULL REFERENCES stats_releases (period),
    name    TEXT NOT NULL,
    csv     TEXT NOT NULL,
    PRIMARY KEY (period, name)
);

-- The public privacy-loss ledger: ε spent per calendar year, in millionths
-- (integers, so that the cap is compared exactly). A release charges its
-- year in the transaction that stores it, by a conditional update.
CREATE TABLE stats_budget (
    year          BIGINT PRIMARY KEY NOT NULL,
    spent_micro   BIGINT NOT NULL
);

CREATE TRIGGER stats_releases_no_update BEFORE UPDATE ON stats_releases
BEGIN SELECT RAISE(ABORT, 'a statistics release is immutable'); END;
CREATE TRIGGER stats_releases_no_delete BEFORE DELETE ON stats_releases
BEGIN SELECT RAISE(ABORT, 'a statistics release is immutable'); END;
CREATE TRIGGER stats_tables_no_update BEFORE UPDATE ON stats_tables
BEGIN SELECT RAISE(ABORT, 'a statistics release is immutable'); END;
CREATE TRIGGER stats_tables_no_delete BEFORE DELETE ON stats_tables
BEGIN SELECT RAISE(ABORT, 'a statistics release is immutable'); END;
-- The ledger only grows: a year's spend is never lowered, moved or deleted.
CREATE TRIGGER stats_budget_only_grows BEFORE UPDATE ON stats_budget
WHEN NEW.spent_micro < OLD.spent_micro OR NEW.year <> OLD.year
BEGIN SELECT RAISE(ABORT, 'the privacy ledger only grows'); END;
CREATE TRIGGER stats_budget_no_delete BEFORE DELETE ON stats_budget
BEGIN SELECT RAISE(ABORT, 'the privacy ledger only grows'); END;
