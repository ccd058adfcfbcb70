-- ingest.sql: the PL/pgSQL twin of src/ingest.c (read it side by side).
-- evpipe.ingest(): validate, normalise, dedupe and route one event, and
-- write it with its outbox rows in the caller's transaction.
-- evpipe.route_explain(): the same decisions, explained, writing nothing.
-- The steps are in ingestenvelope.sql (checks, normalisation, the lookups of
-- the configuration), ingestroute.sql (routing) and ingestwrite.sql (the
-- writes); evpipe.ingest_batch() is in ingestbatch.sql.
--
-- The switch to the extension owner. The C functions are SECURITY INVOKER
-- (roles.sql pins it) and switch to the owner themselves for their SPI work,
-- keeping the calling role (GetUserId()) for the role bindings of sources
-- and for events.ingested_by. PL/pgSQL cannot switch inside a function, so
-- each entry point is an invoker function that hands its current_user to a
-- SECURITY DEFINER function of the same name with "_as_owner" (owned by the
-- owner, so it reads and writes as the owner). EXECUTE on those is granted
-- to evpipe_producer and evpipe_admin, like the entry points; the ACL check
-- of that call is made for the real current user, so a role that may not
-- ingest cannot call them either. The name handed over cannot be trusted as
-- such (a producer may call the helper directly and claim any name), so
-- evpipe._ingest_caller() takes it only when the session's own role (the
-- one SET ROLE chose, or the session user: what the server allows the
-- session to act as) is that role, has its privileges, or is a superuser;
-- otherwise the session's role is the caller. The two differ only when a
-- SECURITY DEFINER function of another owner, whose privileges the session
-- does not have, calls ingest (evpipe._emit_outcome called by evpiped's
-- login role): the C checks the bindings of the source for that owner and
-- records the owner as ingested_by, the twin the session's role.
--
-- The internal helpers of the twins (here, in ingest*.sql, mapping.sql and
-- jsonschema.sql) that are not SECURITY DEFINER carry no SET search_path: a
-- SET clause costs a settings save and restore and a new namespace lookup on
-- every call (a third of the validator's time, which calls itself per schema
-- node). They run inside the SECURITY DEFINER entry points, which pin
-- search_path = pg_catalog, pg_temp, and a role that calls one directly runs
-- it with its own rights.

-- Who is calling: the role the entry point ran as, if the session may act
-- as it; else the session's role (SET ROLE's, or the session user).
CREATE OR REPLACE FUNCTION evpipe._ingest_caller(claimed name)
RETURNS name
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	r text := current_setting('role');
	session_role name := CASE WHEN r = 'none' THEN session_user ELSE r::name END;
BEGIN
	IF claimed = session_role THEN
		RETURN claimed;
	END IF;
	IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = session_role AND rolsuper)
		OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = claimed)
			AND pg_has_role(session_role, claimed, 'USAGE') THEN
		RETURN claimed;
	END IF;
	RETURN session_role;
END
$$;
COMMENT ON FUNCTION evpipe._ingest_caller(name) IS
	'Internal: the role an ingest call is made for: the one its entry point ran as, when the session may act as it, else the session''s role';

-- ep_ingest_set_postgrest_status(): answer 202 Accepted when called
-- through PostgREST (which sets request.method).
CREATE OR REPLACE FUNCTION evpipe._ingest_postgrest_status()
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
	IF current_setting('request.method', true) <> '' THEN
		PERFORM set_config('response.status', '202', true);
	END IF;
END
$$;
COMMENT ON FUNCTION evpipe._ingest_postgrest_status() IS
	'Internal: set response.status to 202 for PostgREST (request.method is set)';

-- evpipe_ingest(), as the owner, for the role caller.
CREATE OR REPLACE FUNCTION evpipe._ingest_as_owner(event jsonb, source text, caller name)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ev record;
	stored jsonb;
	session_role name;
BEGIN
	IF event IS NULL THEN
		PERFORM evpipe._ingest_reject('22004', '$', 'type', NULL, NULL, 'event must not be null');
	END IF;
	-- the common case: the entry point ran as the session's role
	session_role := current_setting('role');
	IF session_role = 'none' THEN
		session_role := session_user;
	END IF;
	IF caller IS DISTINCT FROM session_role THEN
		caller := evpipe._ingest_caller(caller);
	END IF;
	ev := evpipe._ingest_prepare(event, source, caller, -1);

	IF cardinality(ev.dests) = 0 THEN
		SELECT e.event INTO stored FROM evpipe.events e WHERE e.event_id = ev.event_id;
		IF FOUND THEN
			RETURN evpipe._ingest_handle_existing(ev.event_id, ev.source, ev.envelope, stored);
		END IF;
		PERFORM evpipe._ingest_reject('22023', '$.eventType', 'route',
			evpipe._ingest_cut(format('event type %s, source %s, priority %s', ev.event_type, ev.source,
				coalesce(ev.priority, '(none)')), 299),
			'An evpipe_admin adds routes with evpipe.add_route(); evpipe.route_explain() shows the rules.',
			format('no route matches event type "%s"', ev.event_type), ev.event_id, ev.source);
	END IF;

	IF evpipe._ingest_insert(ev.event_id, ev.event_type, ev.version, ev.source, ev.ts,
			ev.correlation_id, ev.priority, coalesce(ev.traceparent, evpipe._ingest_new_traceparent()),
			ev.envelope, caller, ev.dests, CASE WHEN cardinality(array_remove(ev.paths, NULL)) > 0
				THEN evpipe._ingest_ordering_keys(ev.envelope, ev.paths) END) THEN
		-- wake evpiped at commit (the twin of evpipe_request_wake(): the C's notifier
		-- turns the producers' commits into this NOTIFY)
		PERFORM evpipe._wake_workers();
		IF current_setting('request.method', true) <> '' THEN
			PERFORM evpipe._ingest_postgrest_status();
		END IF;
		RETURN jsonb_build_object('eventId', ev.event_id, 'status', 'accepted', 'destinations', to_jsonb(ev.dests));
	END IF;

	SELECT e.event INTO stored FROM evpipe.events e WHERE e.event_id = ev.event_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'event "%" was changed concurrently', ev.event_id
			USING ERRCODE = '40001', HINT = 'Retry the call.';
	END IF;
	RETURN evpipe._ingest_handle_existing(ev.event_id, ev.source, ev.envelope, stored);
END
$$;
COMMENT ON FUNCTION evpipe._ingest_as_owner(jsonb, text, name) IS
	'Internal: evpipe.ingest as the extension owner, for the calling role';

-- SQL: evpipe.ingest(event jsonb, source text DEFAULT NULL) RETURNS jsonb
CREATE OR REPLACE FUNCTION evpipe.ingest(event jsonb, source text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN evpipe._ingest_as_owner(event, source, current_user);
END
$$;

-- evpipe_route_explain(), as the owner, for the role caller: validates the
-- event like ingest and lists every rule with whether it matches and why.
CREATE OR REPLACE FUNCTION evpipe._route_explain_as_owner(event jsonb, source text, caller name)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ev record;
	r record;
	m record;
	why text;
	rules jsonb[] := '{}';
	earlier_dests text[] := '{}';	-- rule i's destination when it matched
	earlier_ids integer[] := '{}';
	i integer;
BEGIN
	IF event IS NULL THEN
		PERFORM evpipe._ingest_reject('22004', '$', 'type', NULL, NULL, 'event must not be null');
	END IF;
	caller := evpipe._ingest_caller(caller);
	ev := evpipe._ingest_prepare(event, source, caller, -1);

	FOR r IN SELECT ro.id, ro.event_type, ro.destination, ro.source, ro.priority, ro.enabled
		FROM evpipe.routes ro ORDER BY ro.id
	LOOP
		m := evpipe._ingest_route_matches(r.event_type, r.source, r.priority, r.enabled,
			ev.event_type, ev.source, ev.priority);
		why := m.why;
		-- a destination already added by an earlier rule is not added twice
		IF m.matched THEN
			i := array_position(earlier_dests, r.destination);
			IF i IS NOT NULL THEN
				why := format('%s; destination already added by rule %s', why, earlier_ids[i]);
			END IF;
			earlier_dests := earlier_dests || r.destination;
			earlier_ids := earlier_ids || r.id;
		END IF;
		rules := rules || jsonb_build_object('id', r.id, 'eventType', r.event_type, 'source', r.source,
			'priority', r.priority, 'destination', r.destination, 'enabled', r.enabled,
			'matched', m.matched, 'reason', why);
	END LOOP;
	RETURN jsonb_build_object('eventId', ev.event_id, 'eventType', ev.event_type, 'source', ev.source,
		'priority', ev.priority, 'schemaVersion', ev.version, 'destinations', to_jsonb(ev.dests),
		'rules', to_jsonb(rules));
END
$$;
COMMENT ON FUNCTION evpipe._route_explain_as_owner(jsonb, text, name) IS
	'Internal: evpipe.route_explain as the extension owner, for the calling role';

-- SQL: evpipe.route_explain(event jsonb, source text DEFAULT NULL)
CREATE OR REPLACE FUNCTION evpipe.route_explain(event jsonb, source text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql CALLED ON NULL INPUT STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN evpipe._route_explain_as_owner(event, source, current_user);
END
$$;
