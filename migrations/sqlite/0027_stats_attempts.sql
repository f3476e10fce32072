-- Who may build a month's statistics release, and until when: the monthly
-- job of `serve` claims the month before it reads every resident, so that
-- several processes (or a release that keeps failing) do not each read the
-- whole territory and log a read per resident every hour.
CREATE TABLE stats_attempts (
    period TEXT PRIMARY KEY,
    until BIGINT NOT NULL
);
