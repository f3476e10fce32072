-- The retention job looks for data held under consents that ended: it
-- starts from the ended consents (withdrawn or refused, by date; given but
-- expired, by end of validity), through these partial indexes, instead of
-- scanning every record of a category. At a million residents the scan read
-- whole tables each hour and filled the process's page cache.
CREATE INDEX consents_not_given ON consents (purpose, updated_at) WHERE state <> 'given';
CREATE INDEX consents_given_until ON consents (purpose, valid_until) WHERE state = 'given';
