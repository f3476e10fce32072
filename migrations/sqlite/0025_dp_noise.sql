-- Cell-key stability of aggregates' noise (BRIEF C12): the noise drawn
-- for a cell, by a keyed digest of its definition (partner, purpose,
-- filters, grouping, the cell's values, the measure and the noise scale),
-- so that a cell asked again gets the same noise and repeated requests
-- cannot be averaged. The digest reveals nothing of the cell.
CREATE TABLE dp_noise (
    cell TEXT PRIMARY KEY,
    noise BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
