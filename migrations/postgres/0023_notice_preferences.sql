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
-- The hourly job looks for mandates that reached their end date.
CREATE INDEX mandates_by_expiry ON mandates (expires_at);
-- Alerts by e-mail to the structure's functional mailbox (set by its
-- référent; none: the page only). An alert's e-mail is due (`pending`)
-- when it is written while its structure has a mailbox; it is then
-- claimed under a lease, as the outbox's messages are.
ALTER TABLE structure_alert_rules ADD COLUMN alert_email TEXT;
ALTER TABLE referent_alerts ADD COLUMN mail_state TEXT;
ALTER TABLE referent_alerts ADD COLUMN mail_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE referent_alerts ADD COLUMN mail_next_at BIGINT;
ALTER TABLE referent_alerts ADD COLUMN mail_claimed_until BIGINT;
ALTER TABLE referent_alerts ADD COLUMN mail_claimed_by TEXT;
CREATE INDEX referent_alerts_mail_due ON referent_alerts (mail_state, mail_next_at);
-- The communes a structure serves (INSEE codes, space-separated; empty:
-- no check): a mandate for a resident living elsewhere raises an alert.
ALTER TABLE structure_alert_rules ADD COLUMN communes TEXT NOT NULL DEFAULT '';
