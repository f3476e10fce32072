-- The audit log: an append-only RFC 9162 Merkle tree.
--
-- `audit_entries.leaf` is the canonical encoding of the entry (it holds the
-- entry's own index, so a reordered row is detected); `resident_id` is copied
-- out only to find a resident's entries quickly. `audit_nodes` stores the
-- hash of every perfect subtree (level, index), so any proof costs O(log n)
-- reads. `audit_head` is the single row whose lock serialises appends from
-- every process.

CREATE TABLE audit_head (
    id         INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    size       BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
INSERT INTO audit_head (id, size, updated_at) VALUES (1, 0, 0);

CREATE TABLE audit_entries (
    idx          BIGINT PRIMARY KEY NOT NULL,
    leaf         BYTEA NOT NULL,
    resident_id  TEXT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX audit_entries_by_resident ON audit_entries (resident_id, idx)
    WHERE resident_id IS NOT NULL;

CREATE TABLE audit_nodes (
    level  BIGINT NOT NULL,
    idx    BIGINT NOT NULL,
    hash   BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);

-- Every signed checkpoint ever issued (C2SP tlog-checkpoint, signed note).
CREATE TABLE audit_checkpoints (
    tree_size   BIGINT PRIMARY KEY NOT NULL,
    root        BYTEA NOT NULL,
    note        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
