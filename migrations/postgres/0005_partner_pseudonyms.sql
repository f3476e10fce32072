-- Per-partner pseudonyms: a partner sees each resident as
-- HMAC(pseudonymisation key, partner ‖ resident), so two partners cannot
-- join their data. The mapping back is kept here, per partner, for the
-- residents a partner has been shown.
CREATE TABLE partner_pseudonyms (
    partner_id   TEXT NOT NULL,
    pseudonym    TEXT NOT NULL,
    resident_id  TEXT NOT NULL REFERENCES residents (id),
    PRIMARY KEY (partner_id, pseudonym)
);
