-- What a resident chose for each event's messages (BRIEF C13): `email`
-- (or a letter without an address), `post`, or `off` for the events they
-- may turn off (the service refuses `off` for the others). No row: the
-- event's default. Applied when a message is delivered, so a choice made
-- after the act still holds.
CREATE TABLE notice_preferences (
    resident_id TEXT NOT NULL,
    event TEXT NOT NULL,
    channel TEXT NOT NULL CHECK (channel IN ('email', 'post', 'off')),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (resident_id, event)
);
-- The weekly digest goes to those who asked for it.
CREATE INDEX notice_preferences_by_event ON notice_preferences (event, channel);
-- An extract's messages wait (`held`) until its file is ready, and go
-- with it, or with its failure.
CREATE INDEX outbox_by_subject ON outbox (subject_id, state);
