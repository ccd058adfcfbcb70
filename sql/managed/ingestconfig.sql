-- ingestconfig.sql: the PL/pgSQL side of src/ingestconfig.c (read it side by
-- side). The C caches the configuration per backend and drops it on a
-- relcache invalidation; the twins read the tables directly in the caller's
-- statement (an index lookup each: sources, source_limits, event_types, and
-- one scan of the routes), so there is nothing to invalidate. What is left
-- here is reading the settings: in the managed install no GUC is registered,
-- so evpipe.* are placeholders read with current_setting(name, true), the C
-- default taking the place of an unset or empty one.

-- An integer setting of ingest (evpipe.max_event_bytes, evpipe.max_depth,
-- evpipe.max_batch_events): its value, with a memory unit (B, kB, MB, GB,
-- TB, as SHOW writes evpipe.max_event_bytes) applied; the default when it is
-- unset, empty or not an integer.
CREATE OR REPLACE FUNCTION evpipe._ingest_setting(name text, default_value integer)
RETURNS integer
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v text := current_setting(name, true);
	m text[];
BEGIN
	IF v IS NULL OR v = '' THEN
		RETURN default_value;
	END IF;
	IF v ~ '^[0-9]{1,9}$' THEN
		RETURN v::integer;
	END IF;
	m := regexp_match(v, '^\s*([0-9]{1,12})\s*(B|kB|MB|GB|TB)?\s*$');
	IF m IS NULL THEN
		RETURN default_value;
	END IF;
	RETURN least(m[1]::bigint * CASE m[2] WHEN 'kB' THEN 1024 WHEN 'MB' THEN 1048576
		WHEN 'GB' THEN 1073741824 WHEN 'TB' THEN 1099511627776 ELSE 1 END, 2147483647)::integer;
END
$$;
COMMENT ON FUNCTION evpipe._ingest_setting(text, integer) IS
	'Internal: an integer evpipe.* setting of ingest (units applied), or the C default when it is not set';

-- evpipe.log_rejections (default off): whether refusals are logged.
CREATE OR REPLACE FUNCTION evpipe._ingest_log_rejections()
RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v text := lower(btrim(coalesce(current_setting('evpipe.log_rejections', true), '')));
BEGIN
	RETURN v IN ('on', 'true', 'yes', '1', 't', 'y', 'tr', 'tru', 'ye');
END
$$;
COMMENT ON FUNCTION evpipe._ingest_log_rejections() IS
	'Internal: the evpipe.log_rejections setting (off unless set)';
