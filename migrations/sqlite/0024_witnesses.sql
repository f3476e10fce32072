-- The log's witnesses (C2SP tlog-witness): what each one last cosigned
-- (or, from a 409, says it knows), its last failure, and the cosignatures
-- (tlog-cosignature lines) served with the checkpoint they sign.
CREATE TABLE audit_witnesses (
    name TEXT PRIMARY KEY,
    -- The tree size the witness knows (the `old` of the next request).
    size BIGINT NOT NULL DEFAULT 0,
    -- The largest checkpoint it cosigned.
    cosigned_size BIGINT NOT NULL DEFAULT 0,
    last_ok_at BIGINT,
    -- A stable code (`refused_409`, `unreachable`, `bad_cosignature`…).
    last_error TEXT,
    last_error_at BIGINT
);
CREATE TABLE audit_cosignatures (
    tree_size BIGINT NOT NULL,
    witness TEXT NOT NULL,
    line TEXT NOT NULL,
    cosigned_at BIGINT NOT NULL,
    PRIMARY KEY (tree_size, witness)
);
