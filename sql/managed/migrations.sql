-- The managed install's own record of its versions (evpiped migrate writes a
-- row per step); the extension keeps this in pg_extension instead.
CREATE TABLE IF NOT EXISTS evpipe.migrations (
	version text PRIMARY KEY,
	step text NOT NULL CHECK (step IN ('install', 'upgrade')),
	applied_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	applied_by name NOT NULL DEFAULT CURRENT_USER
);
COMMENT ON TABLE evpipe.migrations IS
	'Managed install only: the schema versions evpiped migrate installed or upgraded to, one row per step';
