-- ingestroute.sql: the PL/pgSQL twin of src/ingestroute.c (read it side by
-- side). Routing: which rules match an event (and why, for route_explain),
-- its destinations in rule order, and its ordering key for each ordered
-- destination.
--
-- A rule's event_type is exact, or a prefix pattern ending in * (bytes
-- compared, as strncmp and strcmp compare them: the default collation of a
-- database is deterministic).

-- ep_ingest_route_matches(): whether a route matches an event, and why.
CREATE OR REPLACE FUNCTION evpipe._ingest_route_matches(pattern text, rule_source text,
	rule_priority text, enabled boolean, event_type text, source text, priority text,
	OUT matched boolean, OUT why text)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
	is_prefix boolean := right(pattern, 1) = '*';
	prefix text := CASE WHEN right(pattern, 1) = '*' THEN left(pattern, -1) ELSE pattern END;
BEGIN
	matched := false;
	IF NOT enabled THEN
		why := 'rule is disabled';
		RETURN;
	END IF;
	IF is_prefix THEN
		IF NOT starts_with(event_type, prefix) THEN
			why := format('event type %s does not start with %s', event_type, prefix);
			RETURN;
		END IF;
	ELSIF event_type <> pattern COLLATE "C" THEN
		why := format('event type %s is not %s', event_type, pattern);
		RETURN;
	END IF;
	IF rule_source IS NOT NULL AND rule_source <> source COLLATE "C" THEN
		why := format('source %s is not %s', source, rule_source);
		RETURN;
	END IF;
	IF rule_priority IS NOT NULL AND (priority IS NULL OR rule_priority <> priority COLLATE "C") THEN
		why := CASE WHEN priority IS NOT NULL THEN format('priority %s is not %s', priority, rule_priority)
			ELSE format('event has no priority, rule needs %s', rule_priority) END;
		RETURN;
	END IF;
	matched := true;
	why := format('event type %s %s %s%s%s', event_type,
		CASE WHEN is_prefix THEN 'matches prefix' ELSE 'is' END, pattern,
		CASE WHEN rule_source IS NOT NULL THEN ', source is ' || rule_source ELSE '' END,
		CASE WHEN rule_priority IS NOT NULL THEN ', priority is ' || rule_priority ELSE '' END);
END
$$;
COMMENT ON FUNCTION evpipe._ingest_route_matches(text, text, text, boolean, text, text, text) IS
	'Internal: whether a routing rule matches an event, and why (route_explain''s reasons)';

-- ep_ingest_route_event(): the destinations of an event in rule order,
-- without repeats, and the ordering-key path of each, are read with the rest
-- of the configuration in the one statement of evpipe._ingest_prepare()
-- (ingestenvelope.sql), which saves a statement per event.

-- ep_ingest_ordering_key(): the ordering key of an event at a dotted path
-- into its envelope: a string as it is, other values as JSON text, '' when
-- the member is absent or null (the default group) or a step is not an
-- object.
CREATE OR REPLACE FUNCTION evpipe._ingest_ordering_key(envelope jsonb, path text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	v jsonb := NULL;
	c jsonb := envelope;
	seg text;
BEGIN
	FOREACH seg IN ARRAY string_to_array(path, '.') LOOP
		CONTINUE WHEN seg = '';		-- strtok_r skips empty segments
		IF c IS NULL OR jsonb_typeof(c) <> 'object' THEN
			RETURN '';
		END IF;
		v := c -> seg;
		IF v IS NULL THEN
			RETURN '';
		END IF;
		c := v;
	END LOOP;
	IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
		RETURN '';
	END IF;
	IF jsonb_typeof(v) = 'string' THEN
		RETURN v #>> '{}';
	END IF;
	RETURN v::text;
END
$$;
COMMENT ON FUNCTION evpipe._ingest_ordering_key(jsonb, text) IS
	'Internal: an event''s ordering key for a destination ordered by a dotted path into the envelope';

-- ep_ingest_ordering_keys(): the ordering keys of an event for its
-- destinations (NULL for an unordered one); NULL if none is ordered.
CREATE OR REPLACE FUNCTION evpipe._ingest_ordering_keys(envelope jsonb, paths text[])
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
	keys text[] := '{}';
	p text;
BEGIN
	IF paths IS NULL OR cardinality(array_remove(paths, NULL)) = 0 THEN
		RETURN NULL;
	END IF;
	FOREACH p IN ARRAY paths LOOP
		keys := array_append(keys, CASE WHEN p IS NULL THEN NULL ELSE evpipe._ingest_ordering_key(envelope, p) END);
	END LOOP;
	RETURN keys;
END
$$;
COMMENT ON FUNCTION evpipe._ingest_ordering_keys(jsonb, text[]) IS
	'Internal: an event''s ordering keys for its destinations, or NULL when none of them is ordered';
