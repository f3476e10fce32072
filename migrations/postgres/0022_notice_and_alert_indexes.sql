-- What the mandate's transaction and the hourly job ask, by index rather
-- than by scanning: the burst rule counts one aidant's recent mandates and
-- looks for their recent burst alert inside every mandate's creation
-- (with SQLite's write lock held); the retention job looks for given
-- consents ending soon, whatever their purpose.
CREATE INDEX mandates_by_aidant ON mandates (aidant_id, created_at);
CREATE INDEX referent_alerts_by_aidant ON referent_alerts (aidant_id, kind, created_at);
CREATE INDEX consents_given_by_end ON consents (valid_until) WHERE state = 'given';
