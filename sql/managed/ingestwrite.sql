-- ingestwrite.sql: the PL/pgSQL twin of src/ingestwrite.c (read it side by
-- side). The writes of ingest: an event with its outbox rows in one
-- statement, the lookups of an event id that is taken (the stored envelope,
-- the destinations recorded), and the answer for a duplicate or a conflict.

-- ep_ingest_insert_event(): insert the event and its outbox rows in one
-- statement; true if the event was new. dests is never empty, so the
-- statement inserts outbox rows exactly when the event row was new; a cross
-- join with a one-row side is a nested loop, so the outbox rows are inserted
-- (and numbered) in route order. keys: each row's ordering key, or NULL
-- when no destination is ordered.
CREATE OR REPLACE FUNCTION evpipe._ingest_insert(event_id text, event_type text, version integer,
	source text, ts timestamptz, correlation_id text, priority text, traceparent text,
	envelope jsonb, caller name, dests text[], keys text[])
RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
	n bigint;
BEGIN
	IF keys IS NULL THEN
		WITH e AS (
			INSERT INTO evpipe.events AS ev (event_id, event_type, schema_version, source,
				event_time, correlation_id, priority, traceparent, event, ingested_by)
			VALUES (_ingest_insert.event_id, _ingest_insert.event_type, version, _ingest_insert.source,
				ts, _ingest_insert.correlation_id, _ingest_insert.priority, _ingest_insert.traceparent,
				envelope, caller)
			ON CONFLICT ON CONSTRAINT events_pkey DO NOTHING RETURNING ev.event_id)
		INSERT INTO evpipe.outbox (event_id, destination)
		SELECT e.event_id, d.d FROM e, unnest(dests) AS d(d);
	ELSE
		-- an ordered destination: each row carries its key
		WITH e AS (
			INSERT INTO evpipe.events AS ev (event_id, event_type, schema_version, source,
				event_time, correlation_id, priority, traceparent, event, ingested_by)
			VALUES (_ingest_insert.event_id, _ingest_insert.event_type, version, _ingest_insert.source,
				ts, _ingest_insert.correlation_id, _ingest_insert.priority, _ingest_insert.traceparent,
				envelope, caller)
			ON CONFLICT ON CONSTRAINT events_pkey DO NOTHING RETURNING ev.event_id)
		INSERT INTO evpipe.outbox (event_id, destination, ordering_key)
		SELECT e.event_id, d.d, d.k FROM e, ROWS FROM (unnest(dests), unnest(keys)) AS d(d, k);
	END IF;
	GET DIAGNOSTICS n = ROW_COUNT;
	IF n <> 0 AND n <> cardinality(dests) THEN
		RAISE EXCEPTION 'evpipe: inserting the event wrote % of % outbox rows', n, cardinality(dests);
	END IF;
	RETURN n > 0;
END
$$;
COMMENT ON FUNCTION evpipe._ingest_insert(text, text, integer, text, timestamptz, text, text, text, jsonb, name, text[], text[]) IS
	'Internal: insert an event and its outbox rows in one statement; false when the eventId is taken';

-- existing_destinations(): the destinations recorded for an event that was
-- ingested before, in name order (bytes: the columns are COLLATE "C").
CREATE OR REPLACE FUNCTION evpipe._ingest_existing_destinations(event_id text)
RETURNS text[]
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	r text[];
BEGIN
	SELECT coalesce(array_agg(x.destination ORDER BY x.destination), '{}') INTO r
	FROM (SELECT o.destination FROM evpipe.outbox o WHERE o.event_id = _ingest_existing_destinations.event_id
		UNION SELECT d.destination FROM evpipe.delivered d WHERE d.event_id = _ingest_existing_destinations.event_id
		UNION SELECT x.destination FROM evpipe.dead_letters x WHERE x.event_id = _ingest_existing_destinations.event_id) x;
	RETURN r;
END
$$;
COMMENT ON FUNCTION evpipe._ingest_existing_destinations(text) IS
	'Internal: the destinations recorded for an event ingested before (outbox, delivered, dead letters), sorted';

-- ep_ingest_result(): the answer of ingest.
CREATE OR REPLACE FUNCTION evpipe._ingest_result(event_id text, status text, dests text[])
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
	RETURN jsonb_build_object('eventId', event_id, 'status', status, 'destinations', to_jsonb(dests));
END
$$;
COMMENT ON FUNCTION evpipe._ingest_result(text, text, text[]) IS
	'Internal: the answer of ingest, {eventId, status, destinations}';

-- ep_ingest_handle_existing(): an event id that exists already: the same
-- content is a duplicate (nothing written, nothing raised); other content
-- is a conflict (23505).
CREATE OR REPLACE FUNCTION evpipe._ingest_handle_existing(event_id text, source text, envelope jsonb,
	stored jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
BEGIN
	IF stored <> envelope THEN
		IF evpipe._ingest_log_rejections() THEN
			RAISE LOG '%', format('evpipe event=ingest_rejected sqlstate=23505 event_id=%s source=%s reason="event id reused with other content"',
				event_id, source);
		END IF;
		RAISE EXCEPTION 'event "%" already exists with different content', event_id
			USING ERRCODE = '23505',
				DETAIL = 'Path $.eventId, rule "unique": an eventId identifies one event, and a retry must send the same content.',
				HINT = 'Use a new eventId for a new event.';
	END IF;
	RETURN evpipe._ingest_result(event_id, 'duplicate', evpipe._ingest_existing_destinations(event_id));
END
$$;
COMMENT ON FUNCTION evpipe._ingest_handle_existing(text, text, jsonb, jsonb) IS
	'Internal: the answer for an eventId taken already: a duplicate, or 23505 for other content';
