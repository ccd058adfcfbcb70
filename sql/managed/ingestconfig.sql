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
LANGUAGE plpgsql STABLE PARALLEL SAFE
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
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
	v text := lower(btrim(coalesce(current_setting('evpipe.log_rejections', true), '')));
BEGIN
	RETURN v IN ('on', 'true', 'yes', '1', 't', 'y', 'tr', 'tru', 'ye');
END
$$;
COMMENT ON FUNCTION evpipe._ingest_log_rejections() IS
	'Internal: the evpipe.log_rejections setting (off unless set)';

-- What ingest reads of the configuration for an event of a type from a
-- source with a priority (the C's config cache, and ep_ingest_route_event()
-- of ingestroute.c): whether the source is registered and bound to roles,
-- its limit, the type's newest version (NULL: not registered), whether it
-- is enabled and its schema, and the event's destinations. An SQL function,
-- inlined where it is used: evpipe._ingest_prepare reads it per event,
-- evpipe._ingest_batch_prepare once per type and source of a batch.
CREATE OR REPLACE FUNCTION evpipe._ingest_config(event_type text, source text, priority text)
RETURNS TABLE (src_found boolean, src_bound boolean, per_sec double precision, burst integer,
	version integer, enabled boolean, schema jsonb, dests text[], paths text[])
LANGUAGE sql STABLE ROWS 1
AS $$
SELECT sr.source IS NOT NULL, EXISTS (SELECT 1 FROM evpipe.source_roles r WHERE r.source = sr.source),
	l.per_sec, l.burst, t.version, t.enabled, t.schema,
	rt.dests, rt.paths
FROM (SELECT) AS one
LEFT JOIN evpipe.sources sr ON sr.source = _ingest_config.source
LEFT JOIN evpipe.source_limits l ON l.source = _ingest_config.source
LEFT JOIN LATERAL (SELECT et.version, et.enabled, et.schema FROM evpipe.event_types et
	WHERE et.event_type = _ingest_config.event_type ORDER BY et.version DESC LIMIT 1) t ON true
-- ep_ingest_route_event() (ingestroute.c): the destinations in rule
-- order, without repeats, with the path of each one's ordering key (the
-- destination's config ordering_key, or message_group_field (default
-- "source") for an SQS FIFO queue; NULL for an unordered destination);
-- a rule's event_type is exact or a prefix ending in *, bytes compared
CROSS JOIN LATERAL (
	SELECT coalesce(array_agg(m.destination ORDER BY m.first_id), '{}') AS dests,
		array_agg(CASE WHEN d.config ? 'ordering_key' THEN d.config ->> 'ordering_key'
			WHEN d.kind = 'sqs' AND d.config ->> 'queue_url' LIKE '%.fifo'
				THEN coalesce(d.config ->> 'message_group_field', 'source') END ORDER BY m.first_id) AS paths
	FROM (SELECT r.destination, min(r.id) AS first_id
		FROM evpipe.routes r
		WHERE r.enabled
			AND CASE WHEN right(r.event_type, 1) = '*' THEN starts_with(_ingest_config.event_type, left(r.event_type, -1))
				ELSE r.event_type = _ingest_config.event_type COLLATE "C" END
			AND (r.source IS NULL OR r.source = _ingest_config.source COLLATE "C")
			AND (r.priority IS NULL OR r.priority = _ingest_config.priority COLLATE "C")
		GROUP BY r.destination) m
	LEFT JOIN evpipe.destinations d ON d.name = m.destination) rt
$$;
COMMENT ON FUNCTION evpipe._ingest_config(text, text, text) IS
	'Internal: the configuration ingest reads for an event (source, limit, type, schema, routes and destinations)';
