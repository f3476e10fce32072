-- The tree stored as C2SP tlog-tiles, and sequencing apart from integration.
--
-- `audit_tiles` holds one row per tile: the hashes of tree height 8·level,
-- indexes 256·idx .. 256·idx + width, concatenated (width = length / 32;
-- 256 for a full tile, fewer at the right edge, where the row grows as the
-- tree does). Every other node is hashed up from a tile when a proof needs
-- it. It replaces `audit_nodes` (one row per perfect subtree: ~2 rows per
-- entry); the existing log's tiles are its nodes of heights 0, 8, 16…,
-- concatenated in order.
--
-- `audit_head.size` now counts the entries *sequenced* (stored durably,
-- acknowledged); `audit_integration.size` those *integrated* into the
-- tiles, by the one integrator holding the lease (`holder`, until
-- `lease_until`, in milliseconds since the epoch). Every existing entry is
-- integrated: its nodes were written with it.

CREATE TABLE audit_tiles (
    level  BIGINT NOT NULL,
    idx    BIGINT NOT NULL,
    hashes BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);

INSERT INTO audit_tiles (level, idx, hashes)
SELECT level / 8, idx / 256, string_agg(hash, ''::bytea ORDER BY idx)
FROM audit_nodes
WHERE level % 8 = 0
GROUP BY level / 8, idx / 256;

DROP TABLE audit_nodes;

CREATE TABLE audit_integration (
    id          INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    size        BIGINT NOT NULL,
    holder      TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0
);
INSERT INTO audit_integration (id, size) SELECT 1, size FROM audit_head WHERE id = 1;
