-- The cell-key method for aggregates' noise (BRIEF C12): the noise drawn
-- for a cell, by a keyed digest of its contents (the residents counted, or
-- the values summed), its measure and the noise scale. The same contents
-- asked again get the same noise, so repeated requests cannot be
-- averaged; other contents (one resident more or less) get other noise,
-- so two releases never subtract to an exact difference. Without the
-- pseudonym key the digest names no cell.
CREATE TABLE dp_noise (
    cell TEXT PRIMARY KEY,
    noise BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
