-- A référent acts on their structure only: removing an aidant from it
-- ends that membership, not the agent's account (an administrator's
-- `agents.active`), which a référent can neither end nor restore.
ALTER TABLE agent_structures ADD COLUMN active BOOLEAN NOT NULL DEFAULT TRUE;
