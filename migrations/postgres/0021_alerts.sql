-- Alerts to a structure's référent about unusual aidant activity (BRIEF
-- C13): the structure's rules (opening hours, burst limit), and the alerts
-- raised, each naming the aidant and the act (a mandate, or an audit
-- entry), until the référent marks it reviewed.
CREATE TABLE structure_alert_rules (
    structure_id TEXT PRIMARY KEY,
    hours TEXT NOT NULL,
    burst_max INTEGER NOT NULL,
    burst_minutes INTEGER NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE referent_alerts (
    id TEXT PRIMARY KEY,
    structure_id TEXT NOT NULL,
    aidant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- `mandate:{id}` or `audit:{index}`: the act the alert is about.
    subject TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    reviewed_at BIGINT,
    reviewed_by TEXT
);
CREATE INDEX referent_alerts_structure ON referent_alerts (structure_id, created_at);
