-- The retention job deletes superseded versions: it starts from the newer
-- versions (version > 1, rare: rectifications only), found through this
-- small partial index, instead of scanning every record of a category while
-- holding the write lock (seconds at a million residents, during which
-- audit appends would wait or fail).
CREATE INDEX personal_records_rectified ON personal_records (category, created_at) WHERE version > 1;
