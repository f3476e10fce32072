-- Facts about the instance itself. `demo`: this database was seeded by
-- `coffre serve --demo`, which refuses any other non-empty database (demo
-- mode enables password-less logins, including the DPO's and the
-- auditor's). Databases seeded by an earlier demo carry its structure.
CREATE TABLE instance_marks (
    name        TEXT PRIMARY KEY NOT NULL,
    created_at  BIGINT NOT NULL
);
INSERT INTO instance_marks (name, created_at)
    SELECT 'demo', 0 WHERE EXISTS
        (SELECT 1 FROM structures WHERE id = '5e1f0000-0000-4000-8000-00000000cca5');
