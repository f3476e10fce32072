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

CREATE FUNCTION stats_release_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a statistics release is immutable';
END
$$;
CREATE TRIGGER stats_releases_immutable BEFORE UPDATE OR DELETE ON stats_releases
    FOR EACH ROW EXECUTE FUNCTION stats_release_immutable();
CREATE TRIGGER stats_tables_immutable BEFORE UPDATE OR DELETE ON stats_tables
    FOR EACH ROW EXECUTE FUNCTION stats_release_immutable();
-- TRUNCATE skips row triggers: refused by a statement trigger.
CREATE TRIGGER stats_releases_no_truncate BEFORE TRUNCATE ON stats_releases
    FOR EACH STATEMENT EXECUTE FUNCTION stats_release_immutable();
CREATE TRIGGER stats_tables_no_truncate BEFORE TRUNCATE ON stats_tables
    FOR EACH STATEMENT EXECUTE FUNCTION stats_release_immutable();

-- The ledger only grows: a year's spend is never lowered, moved or deleted.
CREATE FUNCTION stats_budget_only_grows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' OR NEW.spent_micro < OLD.spent_micro OR NEW.year <> OLD.year THEN
        RAISE EXCEPTION 'the privacy ledger only grows';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER stats_budget_only_grows BEFORE UPDATE OR DELETE ON stats_budget
    FOR EACH ROW EXECUTE FUNCTION stats_budget_only_grows();
CREATE TRIGGER stats_budget_no_truncate BEFORE TRUNCATE ON stats_budget
    FOR EACH STATEMENT EXECUTE FUNCTION stats_budget_only_grows();
