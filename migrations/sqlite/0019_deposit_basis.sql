-- The legal basis a deposited version was made under (BRIEF C11), kept
-- beside its other provenance columns because all of them are bound into
-- the version's seal (envelope format 2): a register edited later must not
-- make stored versions unreadable, nor re-label them.
ALTER TABLE personal_records ADD COLUMN source_basis TEXT;
