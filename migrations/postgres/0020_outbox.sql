-- The transactional outbox (BRIEF C13): a message to a resident about an
-- act done in their name or about their data, written in the same
-- transaction as the act (no message for an act that rolled back, no act
-- without its message), delivered later by a worker in `serve`, at least
-- once; `id` makes the Message-ID, so a retry is not a second message.
-- Nothing personal is stored: the event's code, whom it is about, the
-- object's id and the acting structure's or partner's public name.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    resident_id TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    actor_name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- pending | sent | failed | post (no e-mail address: a letter)
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    -- A worker's lease: until then no other worker takes the message; only
    -- the claim that holds it (its token) may settle it.
    claimed_until BIGINT,
    claimed_by TEXT,
    -- A stable code, never a server's reply text.
    last_error TEXT,
    sent_at BIGINT
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_resident ON outbox (resident_id);
