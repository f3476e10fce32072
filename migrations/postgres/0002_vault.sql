-- The encrypted vault. Nothing here is readable without the key files:
-- values are sealed with a per-resident data key, itself wrapped by a
-- versioned key-encryption key (KEK) that lives only in the keys folder.

-- KEK versions in use. A data key references its version, so a version
-- cannot be retired (row deleted) while any data key still depends on it,
-- even with several processes writing at once.
CREATE TABLE kek_versions (
    version     BIGINT PRIMARY KEY NOT NULL,
    created_at  BIGINT NOT NULL
);

-- One data key per resident, wrapped by a KEK. Deleting this row is the
-- crypto-shredding step of erasure.
CREATE TABLE data_keys (
    resident_id  TEXT PRIMARY KEY NOT NULL REFERENCES residents (id),
    kek_version  BIGINT NOT NULL REFERENCES kek_versions (version),
    wrapped      BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    rewrapped_at BIGINT
);
CREATE INDEX data_keys_by_kek_version ON data_keys (kek_version, resident_id);

-- Every version of every record (rectification keeps history). The sealed
-- value's associated data binds resident, category, record id and version.
CREATE TABLE personal_records (
    id           TEXT PRIMARY KEY NOT NULL,
    resident_id  TEXT NOT NULL REFERENCES residents (id),
    category     TEXT NOT NULL,
    version      BIGINT NOT NULL,
    sealed       BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (resident_id, category, version)
);
