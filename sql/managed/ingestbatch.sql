-- ingestbatch.sql: the PL/pgSQL twin of src/ingestbatch.c (read it side by
-- side). evpipe.ingest_batch(): a JSON array of events in one call, all or
-- nothing. Each event is checked and routed like evpipe.ingest; the new ones
-- and their outbox rows are written with one statement, and taken ids are
-- looked up as duplicates or conflicts.
--
-- The C keeps one BatchEvent per event; here they are parallel arrays, one
-- element per event (1-based: element i + 1 is the event at $[i]): ids,
-- envelopes, destinations (a jsonb array each, in rule order), firsts (the
-- earlier event with the same id, or -1) and statuses ('accepted' or
-- 'duplicate' once known). The steps on them are set-based statements, so
-- that a batch of n events costs O(n log n), never O(n^2). Where the C
-- checks and routes each event in a loop, a batch of common events is
-- checked and routed here in a few statements over the whole batch
-- (evpipe._ingest_batch_prepare), with the same outcome; any other batch
-- takes evpipe._ingest_prepare event by event, as the C does.

-- batch_conflict(): 23505 for an event of a batch whose id names other content.
CREATE OR REPLACE FUNCTION evpipe._ingest_batch_conflict(batch_index integer, event_id text, other text)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
	RAISE EXCEPTION 'event "%" already exists with different content', event_id
		USING ERRCODE = '23505',
			DETAIL = format('Path $[%s].eventId, rule "unique": %s.', batch_index, other),
			HINT = 'Use a new eventId for a new event; the batch wrote nothing.';
END
$$;
COMMENT ON FUNCTION evpipe._ingest_batch_conflict(integer, text, text) IS
	'Internal: raise 23505 for an event of a batch whose eventId names other content';

-- The same id earlier in the batch: each event's first occurrence (-1 for a
-- first one), and the first event (in order) whose content differs from its
-- first occurrence's (a conflict), if any.
CREATE OR REPLACE FUNCTION evpipe._ingest_batch_repeats(ids text[], envs jsonb[],
	OUT firsts integer[], OUT conflict integer, OUT conflict_first integer)
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
	SELECT coalesce(array_agg(CASE WHEN s.ord = s.first_ord THEN -1 ELSE s.first_ord::integer - 1 END ORDER BY s.ord), '{}'),
		min(s.ord) FILTER (WHERE s.ord <> s.first_ord AND s.env <> s.first_env) - 1
	INTO firsts, conflict
	FROM (SELECT u.ord, first_value(u.ord) OVER w AS first_ord, u.env, first_value(u.env) OVER w AS first_env
		FROM unnest(ids, envs) WITH ORDINALITY AS u(id, env, ord)
		WINDOW w AS (PARTITION BY u.id COLLATE "C" ORDER BY u.ord)) s;
	IF conflict IS NOT NULL THEN
		conflict_first := firsts[conflict + 1];
	END IF;
END
$$;
COMMENT ON FUNCTION evpipe._ingest_batch_repeats(text[], jsonb[]) IS
	'Internal: the first occurrence of each eventId of a batch, and the first repeat with other content';

-- batch_existing(): open events of a batch (no earlier occurrence, no
-- status) whose id is taken: the same content is a duplicate, answered with
-- its recorded destinations (sorted by name); other content is a conflict
-- (23505) that fails the whole batch. An unroutable event whose id is free
-- is refused. With after_write, an id that is free now was taken and given
-- up meanwhile (40001); before writing it is left open. Returns the new
-- statuses and destinations.
CREATE OR REPLACE FUNCTION evpipe._ingest_batch_existing(ids text[], envs jsonb[], firsts integer[],
	after_write boolean, INOUT statuses text[], INOUT dests jsonb[],
	types text[], sources text[], prios text[])
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
	open_ids text[];
	r record;
BEGIN
	SELECT array_agg(u.id ORDER BY u.ord) INTO open_ids
	FROM unnest(ids, firsts, statuses) WITH ORDINALITY AS u(id, f, st, ord)
	WHERE u.f < 0 AND u.st IS NULL;
	IF open_ids IS NULL THEN
		RETURN;
	END IF;

	-- not read-only: a fresh snapshot sees what other sessions committed
	IF NOT after_write AND NOT EXISTS (SELECT 1 FROM evpipe.events e WHERE e.event_id = ANY (open_ids)) THEN
		-- nothing taken: only unroutable events need an answer
		IF NOT EXISTS (SELECT 1 FROM unnest(firsts, statuses, dests) AS u(f, st, d)
				WHERE u.f < 0 AND u.st IS NULL AND u.d = '[]') THEN
			RETURN;
		END IF;
	END IF;

	FOR r IN WITH s AS MATERIALIZED (
			SELECT e.event_id, e.event FROM evpipe.events e WHERE e.event_id = ANY (open_ids))
		SELECT u.ord::integer - 1 AS i, u.id, u.d, s.event AS stored, u.env
		FROM unnest(ids, envs, firsts, statuses, dests) WITH ORDINALITY AS u(id, env, f, st, d, ord)
		LEFT JOIN s ON s.event_id = u.id COLLATE "C"
		WHERE u.f < 0 AND u.st IS NULL
		ORDER BY u.ord
	LOOP
		IF r.stored IS NULL THEN
			IF r.d = '[]' THEN
				PERFORM evpipe._ingest_reject('22023', '$.eventType', 'route',
					evpipe._ingest_cut(format('event type %s, source %s, priority %s', types[r.i + 1],
						sources[r.i + 1], coalesce(prios[r.i + 1], '(none)')), 299),
					'An evpipe_admin adds routes with evpipe.add_route(); evpipe.route_explain() shows the rules.',
					format('no route matches event type "%s"', types[r.i + 1]), NULL, NULL, r.i);
			END IF;
			IF after_write THEN
				RAISE EXCEPTION 'event "%" was changed concurrently', r.id
					USING ERRCODE = '40001', HINT = 'Retry the call.';
			END IF;
			CONTINUE;
		END IF;
		IF r.stored <> r.env THEN
			PERFORM evpipe._ingest_batch_conflict(r.i, r.id,
				'an eventId identifies one event, and a retry must send the same content');
		END IF;
		statuses[r.i + 1] := 'duplicate';
	END LOOP;

	-- the destinations recorded for the duplicates (of the ids looked up now)
	SELECT array_agg(CASE WHEN u.f < 0 AND u.st = 'duplicate' THEN coalesce(x.ds, '[]') ELSE u.d END ORDER BY u.ord)
	INTO dests
	FROM unnest(ids, firsts, statuses, dests) WITH ORDINALITY AS u(id, f, st, d, ord)
	LEFT JOIN (SELECT y.event_id, jsonb_agg(y.destination ORDER BY y.destination) AS ds
		FROM (SELECT o.event_id, o.destination FROM evpipe.outbox o WHERE o.event_id = ANY (open_ids)
			UNION SELECT d.event_id, d.destination FROM evpipe.delivered d WHERE d.event_id = ANY (open_ids)
			UNION SELECT x.event_id, x.destination FROM evpipe.dead_letters x WHERE x.event_id = ANY (open_ids)) y
		GROUP BY y.event_id) x ON x.event_id = u.id;
END
$$;
COMMENT ON FUNCTION evpipe._ingest_batch_existing(text[], jsonb[], integer[], boolean, text[], jsonb[], text[], text[], text[]) IS
	'Internal: the open events of a batch whose eventId is taken: duplicates (with their destinations) or 23505; unroutable ones refused';

-- batch_insert(): write the open events of a batch that have destinations,
-- with their outbox rows (in event then rule order), in one statement. With
-- on_conflict, ids taken meanwhile are skipped; without, a taken id fails
-- the statement with 23505. Returns the statuses, the written marked
-- accepted.
CREATE OR REPLACE FUNCTION evpipe._ingest_batch_insert(ids text[], envs jsonb[], firsts integer[],
	INOUT statuses text[], dests jsonb[], paths jsonb[], types text[], versions integer[],
	sources text[], times timestamptz[], corrs text[], prios text[], traces text[],
	caller name, on_conflict boolean)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
	written text[];
	nwritten bigint;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM unnest(firsts, statuses, dests) AS u(f, st, d)
			WHERE u.f < 0 AND u.st IS NULL AND u.d <> '[]') THEN
		RETURN;
	END IF;
	-- the arrays are read with unnest, never subscripted (an element of an
	-- array of texts is found by walking the ones before it)
	IF on_conflict THEN
		WITH e AS (
			INSERT INTO evpipe.events AS ev (event_id, event_type, schema_version, source,
				event_time, correlation_id, priority, traceparent, event, ingested_by)
			SELECT u.id, u.t, u.v, u.s, u.ts, u.c, u.p, u.tr, u.env, caller
			FROM unnest(ids, types, versions, sources, times, corrs, prios, traces, envs, firsts, statuses, dests)
				WITH ORDINALITY AS u(id, t, v, s, ts, c, p, tr, env, f, st, d, ord)
			WHERE u.f < 0 AND u.st IS NULL AND u.d <> '[]'
			ORDER BY u.ord
			ON CONFLICT ON CONSTRAINT events_pkey DO NOTHING RETURNING ev.event_id),
		o AS (
			INSERT INTO evpipe.outbox (event_id, destination, ordering_key)
			SELECT u.id, x.dest, CASE WHEN x.path IS NULL THEN NULL ELSE evpipe._ingest_ordering_key(u.env, x.path) END
			FROM unnest(ids, envs, firsts, statuses, dests, paths) WITH ORDINALITY AS u(id, env, f, st, d, pa, ord),
				ROWS FROM (jsonb_array_elements_text(u.d), jsonb_array_elements_text(coalesce(u.pa, '[]')))
					WITH ORDINALITY AS x(dest, path, n)
			WHERE u.f < 0 AND u.st IS NULL AND u.d <> '[]' AND u.id IN (SELECT e.event_id FROM e)
			ORDER BY u.ord, x.n
			RETURNING 1)
		SELECT array_agg(e.event_id) INTO written FROM e;
		-- mark what was written
		SELECT array_agg(CASE WHEN u.f < 0 AND u.st IS NULL AND u.d <> '[]' AND w.id IS NOT NULL
			THEN 'accepted' ELSE u.st END ORDER BY u.ord)
		INTO statuses
		FROM unnest(ids, firsts, statuses, dests) WITH ORDINALITY AS u(id, f, st, d, ord)
		LEFT JOIN unnest(written) AS w(id) ON w.id = u.id COLLATE "C";
	ELSE
		WITH e AS (
			INSERT INTO evpipe.events AS ev (event_id, event_type, schema_version, source,
				event_time, correlation_id, priority, traceparent, event, ingested_by)
			SELECT u.id, u.t, u.v, u.s, u.ts, u.c, u.p, u.tr, u.env, caller
			FROM unnest(ids, types, versions, sources, times, corrs, prios, traces, envs, firsts, statuses, dests)
				WITH ORDINALITY AS u(id, t, v, s, ts, c, p, tr, env, f, st, d, ord)
			WHERE u.f < 0 AND u.st IS NULL AND u.d <> '[]'
			ORDER BY u.ord
			RETURNING 1),
		o AS (
			INSERT INTO evpipe.outbox (event_id, destination, ordering_key)
			SELECT u.id, x.dest, CASE WHEN x.path IS NULL THEN NULL ELSE evpipe._ingest_ordering_key(u.env, x.path) END
			FROM unnest(ids, envs, firsts, statuses, dests, paths) WITH ORDINALITY AS u(id, env, f, st, d, pa, ord),
				ROWS FROM (jsonb_array_elements_text(u.d), jsonb_array_elements_text(coalesce(u.pa, '[]')))
					WITH ORDINALITY AS x(dest, path, n)
			WHERE u.f < 0 AND u.st IS NULL AND u.d <> '[]'
			ORDER BY u.ord, x.n
			RETURNING 1)
		SELECT count(*) INTO nwritten FROM e;
		-- every open event with destinations was written
		SELECT array_agg(CASE WHEN u.f < 0 AND u.st IS NULL AND u.d <> '[]' THEN 'accepted' ELSE u.st END ORDER BY u.ord)
		INTO statuses
		FROM unnest(firsts, statuses, dests) WITH ORDINALITY AS u(f, st, d, ord);
	END IF;
END
$$;
COMMENT ON FUNCTION evpipe._ingest_batch_insert(text[], jsonb[], integer[], text[], jsonb[], jsonb[], text[], integer[], text[], timestamptz[], text[], text[], text[], name, boolean) IS
	'Internal: write the open events of a batch and their outbox rows in one statement; marks the written accepted';

-- The common batch, checked and routed set-based: no source argument, every
-- event the common one (evpipe._ingest_common) and within
-- evpipe.max_event_bytes at a glance, of registered, enabled types and of
-- sources that are neither bound to roles nor limited, and every payload
-- valid. The configuration is read once per type and source of the batch;
-- the outcome is what evpipe._ingest_prepare gives for each event. ok is
-- false for any other batch, which then takes evpipe._ingest_prepare event
-- by event, for the C's first error in the C's order; nothing is written
-- here either way.
CREATE OR REPLACE FUNCTION evpipe._ingest_batch_prepare(events jsonb,
	OUT ok boolean, OUT ids text[], OUT envs jsonb[], OUT dests jsonb[], OUT paths jsonb[],
	OUT types text[], OUT versions integer[], OUT sources text[], OUT times timestamptz[],
	OUT traces text[])
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
	max_bytes integer := CASE WHEN coalesce(current_setting('evpipe.max_event_bytes', true), '') = '' THEN 262144
		ELSE evpipe._ingest_setting('evpipe.max_event_bytes', 262144) END;
	max_depth integer := CASE WHEN coalesce(current_setting('evpipe.max_depth', true), '') = '' THEN 64
		ELSE evpipe._ingest_setting('evpipe.max_depth', 64) END;
	keys jsonb[];				-- [type, source] of each configuration read
	c_versions integer[];
	c_schemas jsonb[];
	c_dests jsonb[];
	c_paths jsonb[];
	idx integer[];				-- each event's configuration
	payloads jsonb[];
	req text[];
	prop_names text[];
	prop_schemas jsonb[];
BEGIN
	-- Each array is built by an aggregate over one scan of a function of
	-- ordinality (jsonb_array_elements, unnest) with nothing that reorders
	-- rows between them (no join, no sort), so its elements are in the
	-- events' order; an ORDER BY in each aggregate would sort once per array.

	-- the envelopes: the size as _ingest_prepare tests it before it counts
	-- bytes, the common event; the members read once
	SELECT bool_and(x.common), array_agg(x.id), array_agg(x.t), array_agg(x.s), array_agg(x.e),
		array_agg(CASE WHEN x.common THEN x.ts::timestamptz END)
	INTO ok, ids, types, sources, envs, times
	FROM (SELECT u.e, u.id, u.t, u.s, u.ts,
			pg_column_size(u.e)::bigint * 6 + 64 <= max_bytes AND pg_column_compression(u.e) IS NULL
			AND evpipe._ingest_common(u.e, u.id, u.s, u.ts) AS common
		FROM (SELECT j.e, j.e ->> 'eventId' AS id, j.e ->> 'eventType' AS t, j.e ->> 'source' AS s,
				j.e ->> 'timestamp' AS ts
			FROM jsonb_array_elements(events) AS j(e) OFFSET 0) u
		OFFSET 0) x;
	IF NOT coalesce(ok, false) THEN
		ok := false;
		RETURN;
	END IF;
	-- the configuration, once per type and source
	SELECT array_agg(jsonb_build_array(k.t, k.s)), array_agg(f.version), array_agg(f.schema),
		array_agg(to_jsonb(f.dests)), array_agg(to_jsonb(f.paths)),
		bool_and(f.version IS NOT NULL AND f.enabled AND NOT f.src_bound AND NOT coalesce(f.per_sec > 0, false))
	INTO keys, c_versions, c_schemas, c_dests, c_paths, ok
	FROM (SELECT DISTINCT x.t, x.s FROM unnest(types, sources) AS x(t, s)) k
	CROSS JOIN LATERAL evpipe._ingest_config(k.t, k.s, NULL) f;
	IF NOT coalesce(ok, false) THEN
		ok := false;
		RETURN;
	END IF;
	-- each event's configuration, and its payload's depth
	SELECT bool_and(NOT evpipe._too_deep(x.p, max_depth)), array_agg(x.i), array_agg(x.p),
		array_agg(c_versions[x.i]), array_agg(c_dests[x.i]), array_agg(c_paths[x.i])
	INTO ok, idx, payloads, versions, dests, paths
	FROM (SELECT u.e -> 'payload' AS p, array_position(keys, jsonb_build_array(u.t, u.s)) AS i
		FROM unnest(envs, types, sources) AS u(e, t, s) OFFSET 0) x;
	IF NOT coalesce(ok, false) THEN
		ok := false;
		RETURN;
	END IF;
	-- the payloads against their schemas (as _ingest_prepare checks them:
	-- not too deep, so _js_vnode's verdict), per schema: a flat one
	-- (_js_flat) in two statements over all its events, any other event by
	-- event
	FOR j IN 1..cardinality(keys) LOOP
		CONTINUE WHEN c_schemas[j] IS NULL;
		IF evpipe._js_flat(c_schemas[j]) THEN
			req := ARRAY(SELECT jsonb_array_elements_text(coalesce(c_schemas[j] -> 'required', '[]')));
			SELECT array_agg(pr.key), array_agg(pr.value) INTO prop_names, prop_schemas
			FROM jsonb_each(coalesce(c_schemas[j] -> 'properties', '{}')) AS pr;
			SELECT coalesce(bool_and(u.p ?& req), true) INTO ok
			FROM unnest(payloads, idx) AS u(p, i) WHERE u.i = j;
			IF ok AND prop_names IS NOT NULL THEN
				SELECT NOT EXISTS (SELECT 1 FROM unnest(payloads, idx) AS u(p, i),
						unnest(prop_names, prop_schemas) AS pr(k, l)
					WHERE u.i = j AND u.p ? pr.k AND NOT evpipe._js_leaf_valid(u.p -> pr.k, pr.l))
				INTO ok;
			END IF;
		ELSE
			SELECT coalesce(bool_and(evpipe._js_vnode(c_schemas[j], u.p,
					coalesce(c_schemas[j] -> '$defs', c_schemas[j] -> 'definitions')) IS NULL), true) INTO ok
			FROM unnest(payloads, idx) AS u(p, i) WHERE u.i = j;
		END IF;
		IF NOT ok THEN
			RETURN;
		END IF;
	END LOOP;
	-- a fresh traceparent for each (the common event has none), as
	-- _ingest_new_traceparent makes one; OFFSET 0 keeps the random UUID per row
	SELECT array_agg(evpipe._ingest_traceparent_from(g.h)) INTO traces
	FROM (SELECT encode(sha256(uuid_send(gen_random_uuid())), 'hex') AS h
		FROM generate_series(1, cardinality(ids)) OFFSET 0) g;
END
$$;
COMMENT ON FUNCTION evpipe._ingest_batch_prepare(jsonb) IS
	'Internal: check and route a common batch set-based (ok), or leave it to evpipe._ingest_prepare event by event';

-- evpipe_ingest_batch(), as the owner, for the role caller. No JIT:
-- compiling the statements costs more than running them.
CREATE OR REPLACE FUNCTION evpipe._ingest_batch_as_owner(events jsonb, source text, caller name)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off
AS $$
DECLARE
	n integer;
	lim integer;
	i integer;
	ev record;
	rep record;
	ids text[] := '{}';
	envs jsonb[] := '{}';
	dests jsonb[] := '{}';
	paths jsonb[] := '{}';
	types text[] := '{}';
	versions integer[] := '{}';
	sources text[] := '{}';
	times timestamptz[] := '{}';
	corrs text[] := '{}';
	prios text[] := '{}';
	traces text[] := '{}';
	firsts integer[];
	statuses text[];
	taken boolean := false;
	fast boolean := false;
	answer jsonb;
BEGIN
	IF events IS NULL THEN
		PERFORM evpipe._ingest_reject('22004', '$', 'type', NULL, NULL, 'events must not be null');
	END IF;
	IF jsonb_typeof(events) <> 'array' THEN
		PERFORM evpipe._ingest_reject('22039', '$', 'type', NULL,
			'Send the events as a JSON array; evpipe.ingest takes one event.', 'events must be a JSON array');
	END IF;
	n := jsonb_array_length(events);
	lim := evpipe._ingest_setting('evpipe.max_batch_events', 10000);
	IF n > lim THEN
		PERFORM evpipe._ingest_reject('22023', '$', 'maxItems', format('%s events, the limit is %s', n, lim),
			'The limit is evpipe.max_batch_events; split the batch.', 'too many events in one batch');
	END IF;
	caller := evpipe._ingest_caller(caller);

	-- check, normalise and route each event; keep what is written: the
	-- common batch set-based, any other event by event
	IF source IS NULL THEN
		SELECT * INTO fast, ids, envs, dests, paths, types, versions, sources, times, traces
		FROM evpipe._ingest_batch_prepare(events);
	END IF;
	IF fast THEN
		corrs := array_fill(NULL::text, ARRAY[n]);
		prios := corrs;
	ELSE
		-- (what the set-based attempt left is dropped: a conflict counts only
		-- between the events checked so far)
		ids := '{}'; envs := '{}'; dests := '{}'; paths := '{}'; types := '{}'; versions := '{}';
		sources := '{}'; times := '{}'; traces := '{}';
		BEGIN
			FOR i IN 1..n LOOP
				ev := evpipe._ingest_prepare(events -> (i - 1), source, caller, i - 1);
				ids[i] := ev.event_id;
				envs[i] := ev.envelope;
				dests[i] := to_jsonb(ev.dests);
				paths[i] := to_jsonb(ev.paths);
				types[i] := ev.event_type;
				versions[i] := ev.version;
				sources[i] := ev.source;
				times[i] := ev.ts;
				corrs[i] := ev.correlation_id;
				prios[i] := ev.priority;
				traces[i] := coalesce(ev.traceparent, evpipe._ingest_new_traceparent());
			END LOOP;
		EXCEPTION WHEN OTHERS THEN
			-- the C checks each event's id against the earlier ones as soon as
			-- it is checked: a conflict before the refused event wins
			rep := evpipe._ingest_batch_repeats(ids, envs);
			IF rep.conflict IS NOT NULL THEN
				PERFORM evpipe._ingest_batch_conflict(rep.conflict, ids[rep.conflict + 1],
					format('event $[%s] has this eventId with other content', rep.conflict_first));
			END IF;
			RAISE;
		END;
	END IF;
	-- the same id earlier in the batch: a duplicate, or a conflict
	rep := evpipe._ingest_batch_repeats(ids, envs);
	IF rep.conflict IS NOT NULL THEN
		PERFORM evpipe._ingest_batch_conflict(rep.conflict, ids[rep.conflict + 1],
			format('event $[%s] has this eventId with other content', rep.conflict_first));
	END IF;
	firsts := rep.firsts;
	statuses := array_fill(NULL::text, ARRAY[n]);

	-- batch_write(): an unroutable event is a duplicate of a stored one, or refused
	IF EXISTS (SELECT 1 FROM unnest(firsts, dests) AS u(f, d) WHERE u.f < 0 AND u.d = '[]') THEN
		SELECT * INTO statuses, dests FROM evpipe._ingest_batch_existing(ids, envs, firsts, false,
			statuses, dests, types, sources, prios);
	END IF;
	-- the common case, all ids new, goes in with a plain INSERT; if an id is
	-- taken (a retried batch, or another session meanwhile: 23505), that is
	-- rolled back, the taken ids are looked up, and the rest goes in with ON
	-- CONFLICT DO NOTHING, after which the ids skipped are looked up again
	BEGIN
		statuses := evpipe._ingest_batch_insert(ids, envs, firsts, statuses, dests, paths, types,
			versions, sources, times, corrs, prios, traces, caller, false);
	EXCEPTION WHEN unique_violation THEN
		taken := true;
	END;
	IF taken THEN
		SELECT array_agg(CASE WHEN u.st = 'accepted' THEN NULL ELSE u.st END ORDER BY u.ord) INTO statuses
		FROM unnest(statuses) WITH ORDINALITY AS u(st, ord);
		SELECT * INTO statuses, dests FROM evpipe._ingest_batch_existing(ids, envs, firsts, false,
			statuses, dests, types, sources, prios);
		statuses := evpipe._ingest_batch_insert(ids, envs, firsts, statuses, dests, paths, types,
			versions, sources, times, corrs, prios, traces, caller, true);
		SELECT * INTO statuses, dests FROM evpipe._ingest_batch_existing(ids, envs, firsts, true,
			statuses, dests, types, sources, prios);
	END IF;

	-- repeats within the batch answer like their first occurrence
	SELECT coalesce(jsonb_agg(jsonb_build_object('eventId', u.id,
			'status', CASE WHEN u.f >= 0 THEN 'duplicate' ELSE u.st END,
			'destinations', CASE WHEN u.f >= 0 THEN
				(SELECT coalesce(jsonb_agg(x ORDER BY x COLLATE "C"), '[]') FROM jsonb_array_elements_text(dests[u.f + 1]) AS x)
				ELSE u.d END) ORDER BY u.ord), '[]')
	INTO answer
	FROM unnest(ids, firsts, statuses, dests) WITH ORDINALITY AS u(id, f, st, d, ord);
	IF 'accepted' = ANY (statuses) THEN
		PERFORM evpipe._wake_workers();
		PERFORM evpipe._ingest_postgrest_status();
	END IF;
	RETURN answer;
END
$$;
COMMENT ON FUNCTION evpipe._ingest_batch_as_owner(jsonb, text, name) IS
	'Internal: evpipe.ingest_batch as the extension owner, for the calling role';

-- SQL: evpipe.ingest_batch(events jsonb, source text DEFAULT NULL) RETURNS jsonb
CREATE OR REPLACE FUNCTION evpipe.ingest_batch(events jsonb, source text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN evpipe._ingest_batch_as_owner(events, source, current_user);
END
$$;
