-- Twin of evpipe.version() (src/evpipe.c): the managed install keeps its
-- version in evpipe.migrations, a row per step of evpiped migrate.
CREATE OR REPLACE FUNCTION evpipe.version()
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v text;
BEGIN
	-- the newest version recorded (compared as numbers: 0.10.0 after 0.9.0)
	SELECT m.version INTO v FROM evpipe.migrations m
	ORDER BY pg_catalog.string_to_array(m.version, '.')::int[] DESC LIMIT 1;
	RETURN v;
END
$$;
