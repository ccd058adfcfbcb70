-- ingestenvelope.sql: the PL/pgSQL twin of src/ingestenvelope.c (read it
-- side by side). The checks of an event's envelope and its normalisation:
-- members, eventId, source, payload, timestamp and the optional members; the
-- events of mapped sources rebuilt as envelopes; the source's role bindings
-- and ingest limit; the payload against its type's schema. Rejections
-- (SQLSTATE, message, path and rule), the traceparent of an event that has
-- none.
--
-- The C keeps the event id and source being ingested in globals for the log
-- lines of rejections; here they are passed to evpipe._ingest_reject().

-- The bucket of each limited source (evpipe.set_source_limit): the C keeps a
-- GCRA schedule per source in shared memory (ratelimit.c); with no shared
-- memory it is a row per source, updated by the source's producers only, so
-- that producers of different sources never wait for each other.
CREATE TABLE IF NOT EXISTS evpipe._source_buckets (
	source text COLLATE "C" PRIMARY KEY,
	tat timestamptz NOT NULL
);
COMMENT ON TABLE evpipe._source_buckets IS
	'Runtime state of source ingest limits (managed install): the theoretical arrival time of the next event of each limited source';

-- A string cut to at most max_bytes bytes, on a character boundary (the C
-- formats messages into fixed buffers).
CREATE OR REPLACE FUNCTION evpipe._ingest_cut(s text, max_bytes integer)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	r text;
BEGIN
	IF octet_length(s) <= max_bytes THEN
		RETURN s;
	END IF;
	r := left(s, max_bytes);
	WHILE octet_length(r) > max_bytes LOOP
		r := left(r, greatest(length(r) - greatest((octet_length(r) - max_bytes) / 4, 1), 0));
	END LOOP;
	RETURN r;
END
$$;
COMMENT ON FUNCTION evpipe._ingest_cut(text, integer) IS
	'Internal: a string cut to a number of bytes on a character boundary, as the C cuts its message buffers';

-- ep_ingest_reject(): raise an ingest rejection: SQLSTATE, short message,
-- and a detail naming the JSON path and the rule. In a batch (batch_index
-- >= 0) paths start at the event's place in the array. Logs a structured
-- line first when evpipe.log_rejections is on.
CREATE OR REPLACE FUNCTION evpipe._ingest_reject(sqlstate text, path text, rule text, extra text,
	hint text, message text, event_id text DEFAULT NULL, source text DEFAULT NULL,
	batch_index integer DEFAULT -1)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
	detail text;
BEGIN
	message := evpipe._ingest_cut(message, 511);
	IF batch_index >= 0 AND left(path, 1) = '$' THEN
		path := '$[' || batch_index || ']' || substr(path, 2);
	END IF;
	IF evpipe._ingest_log_rejections() THEN
		RAISE LOG '%', format('evpipe event=ingest_rejected sqlstate=%s event_id=%s source=%s path=%s rule=%s reason="%s"',
			sqlstate, coalesce(event_id, '-'), coalesce(source, '-'), path, rule, message);
	END IF;
	IF extra IS NULL THEN
		detail := format('Path %s, rule "%s".', path, rule);
	ELSE
		detail := format('Path %s, rule "%s": %s.', path, rule, extra);
	END IF;
	IF hint IS NULL THEN
		RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message, DETAIL = detail;
	END IF;
	RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message, DETAIL = detail, HINT = hint;
END
$$;
COMMENT ON FUNCTION evpipe._ingest_reject(text, text, text, text, text, text, text, text, integer) IS
	'Internal: raise an ingest rejection (SQLSTATE, message, "Path ..., rule ..." detail, hint), logged when evpipe.log_rejections is on';

-- quoted_name(): a member name for a message, in quotes, JSON-escaped as in
-- paths and cut as paths cut it (EP_PATH_NAME_MAX = 48 bytes).
CREATE OR REPLACE FUNCTION evpipe._ingest_quoted_name(name text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
BEGIN
	RETURN '"' || (evpipe._json_excerpt(name, 48, 48 * 6 + 8)).excerpt || '"';
END
$$;
COMMENT ON FUNCTION evpipe._ingest_quoted_name(text) IS
	'Internal: a member name quoted for an ingest message (JSON-escaped, cut to 48 bytes)';

-- valid_datetime() of jsonschema.c (the "date-time" format, RFC 3339), as
-- parse_timestamp() uses it, and no year 0000: yyyy-mm-ddThh:mm:ss, then
-- .digits, then Z or +hh:mm, every field in range. An SQL function, inlined
-- where it is used (one regular expression, then the ranges; a third of
-- the time of the same checks in PL/pgSQL). false for NULL.
CREATE OR REPLACE FUNCTION evpipe._ingest_timestamp_valid(s text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
SELECT CASE WHEN s ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$'
	THEN left(s, 4) <> '0000'
		AND substr(s, 6, 2)::integer BETWEEN 1 AND 12
		AND substr(s, 9, 2)::integer BETWEEN 1 AND CASE
			WHEN substr(s, 6, 2) = '02' AND ((left(s, 4)::integer % 4 = 0 AND left(s, 4)::integer % 100 <> 0)
				OR left(s, 4)::integer % 400 = 0) THEN 29
			ELSE (ARRAY[31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[substr(s, 6, 2)::integer] END
		AND substr(s, 12, 2)::integer <= 23 AND substr(s, 15, 2)::integer <= 59 AND substr(s, 18, 2)::integer <= 60
		AND (right(s, 1) IN ('Z', 'z') OR (left(right(s, 5), 2)::integer <= 23 AND right(s, 2)::integer <= 59))
	ELSE false END
$$;
COMMENT ON FUNCTION evpipe._ingest_timestamp_valid(text) IS
	'Internal: whether an event timestamp is an RFC 3339 date-time with a zone (as the C checks it before timestamptz_in)';

-- evpipe_valid_traceparent() of jsonutil.c: W3C trace context, version 00
-- exactly 55 characters, a later version possibly followed by "-...".
CREATE OR REPLACE FUNCTION evpipe._ingest_traceparent_valid(s text)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
BEGIN
	RETURN s ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}'
		AND left(s, 2) <> 'ff'
		AND (octet_length(s) = 55 OR (left(s, 2) <> '00' AND substr(s, 56, 1) = '-'))
		AND substr(s, 4, 32) <> '00000000000000000000000000000000'
		AND substr(s, 37, 16) <> '0000000000000000';
END
$$;
COMMENT ON FUNCTION evpipe._ingest_traceparent_valid(text) IS
	'Internal: whether a traceparent is valid W3C trace context';

-- A W3C traceparent made of a digest of random bits (64 hex digits: the
-- SHA-256 of a random UUID's 122 random bits): a trace id of 32 digits, a
-- parent id of 16; neither is ever all zeros (the first byte of each is
-- made odd). An SQL function, inlined where it is used.
CREATE OR REPLACE FUNCTION evpipe._ingest_traceparent_from(h text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
SELECT '00-' || substr(h, 1, 1) || translate(substr(h, 2, 1), '02468ace', '13579bdf') || substr(h, 3, 30)
	|| '-' || substr(h, 33, 1) || translate(substr(h, 34, 1), '02468ace', '13579bdf') || substr(h, 35, 14)
	|| '-01'
$$;
COMMENT ON FUNCTION evpipe._ingest_traceparent_from(text) IS
	'Internal: a W3C traceparent from 64 random hex digits';

-- ep_ingest_new_traceparent(): a fresh W3C traceparent for an event that
-- arrives without one, from strong random bits (gen_random_uuid).
CREATE OR REPLACE FUNCTION evpipe._ingest_new_traceparent()
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL SAFE
AS $$
DECLARE
	h text := encode(sha256(uuid_send(gen_random_uuid())), 'hex');
BEGIN
	RETURN evpipe._ingest_traceparent_from(h);
END
$$;
COMMENT ON FUNCTION evpipe._ingest_new_traceparent() IS
	'Internal: a fresh random W3C traceparent for an event that has none';

-- %g of C's printf (6 significant digits), for the limits in messages.
CREATE OR REPLACE FUNCTION evpipe._ingest_format_g(v double precision)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	s text;
	digits text;
	x integer;
	r text;
BEGIN
	IF v = 0 THEN
		RETURN '0';
	END IF;
	s := btrim(to_char(abs(v), '9.99999EEEE'));		-- d.ddddde+XX, rounded as printf rounds
	digits := replace(split_part(s, 'e', 1), '.', '');
	x := split_part(s, 'e', 2)::integer;
	IF x < -4 OR x >= 6 THEN
		r := rtrim(rtrim(split_part(s, 'e', 1), '0'), '.') || 'e' || CASE WHEN x < 0 THEN '-' ELSE '+' END
			|| lpad(abs(x)::text, 2, '0');
	ELSIF x >= 0 THEN
		r := left(digits, x + 1) || '.' || substr(digits, x + 2);
		r := rtrim(rtrim(r, '0'), '.');
	ELSE
		r := rtrim('0.' || repeat('0', -x - 1) || digits, '0');
	END IF;
	RETURN CASE WHEN v < 0 THEN '-' ELSE '' END || r;
END
$$;
COMMENT ON FUNCTION evpipe._ingest_format_g(double precision) IS
	'Internal: a number as C''s printf %g writes it';

-- check_source_limit(): take one event from the source's bucket (GCRA, as
-- ratelimit.c reserves one send within no horizon: spaced 5% wider than
-- 1/per_sec, burst events at once); refuse with PT429 (PostgREST: 429) when
-- it is empty. The row is locked until the caller's transaction ends, so
-- producers of one limited source take turns; other sources are not held.
CREATE OR REPLACE FUNCTION evpipe._ingest_take_token(source text, per_sec double precision,
	burst integer, event_id text)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
	step interval := greatest(trunc(1000000 * 1.05 / per_sec), 1) * interval '1 microsecond';
	tolerance interval := step * (greatest(burst, 1) - 1);
BEGIN
	INSERT INTO evpipe._source_buckets AS b (source, tat)
		VALUES (_ingest_take_token.source, clock_timestamp() + step)
		ON CONFLICT ON CONSTRAINT _source_buckets_pkey DO UPDATE
		SET tat = greatest(b.tat, clock_timestamp()) + step
		WHERE b.tat - tolerance <= clock_timestamp();
	IF FOUND THEN
		RETURN;
	END IF;
	IF evpipe._ingest_log_rejections() THEN
		RAISE LOG '%', format('evpipe event=ingest_throttled event_id=%s source=%s limit_per_sec=%s',
			coalesce(event_id, '-'), source, evpipe._ingest_format_g(per_sec));
	END IF;
	RAISE EXCEPTION 'too many events from source "%"', source
		USING ERRCODE = 'PT429',
			DETAIL = format('The source is limited to %s events per second (burst %s).',
				evpipe._ingest_format_g(per_sec), burst),
			HINT = 'Retry later; PostgREST answers 429.';
END
$$;
COMMENT ON FUNCTION evpipe._ingest_take_token(text, double precision, integer, text) IS
	'Internal: take one event from a limited source''s bucket, or raise PT429';

-- The control characters a source name or a correlationId may not hold.
CREATE OR REPLACE FUNCTION evpipe._ingest_control_chars()
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
SELECT E'\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f'
$$;
COMMENT ON FUNCTION evpipe._ingest_control_chars() IS
	'Internal: the control characters that source names and correlationIds may not hold';

-- The common event, in one expression: a JSON object with the five
-- required members and no other, all of the right type and valid. Such an
-- event passes every check of the envelope as it is; anything else takes
-- the checks one by one, in the C's order, for the C's error. event_id,
-- source and ts are env ->> 'eventId', 'source' and 'timestamp', read once
-- by the caller (an inlined function repeats an argument's expression at
-- every use). An SQL function, inlined where it is used
-- (evpipe._ingest_prepare, evpipe._ingest_batch_prepare). Regular
-- expressions test the characters here (a tenth of ltrim's time with these
-- sets; ranges of code points, as the C's tables).
CREATE OR REPLACE FUNCTION evpipe._ingest_common(env jsonb, event_id text, source text, ts text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
SELECT CASE WHEN jsonb_typeof(env) = 'object' THEN coalesce((env - ARRAY['eventId', 'eventType', 'source', 'payload', 'timestamp']) = '{}'::jsonb
	AND jsonb_typeof(env -> 'eventId') = 'string' AND jsonb_typeof(env -> 'eventType') = 'string'
	AND jsonb_typeof(env -> 'source') = 'string' AND jsonb_typeof(env -> 'payload') = 'object'
	AND jsonb_typeof(env -> 'timestamp') = 'string'
	AND event_id <> '' AND length(event_id) <= 128 AND event_id !~ '[^A-Za-z0-9._:-]'
	AND source <> '' AND length(source) <= 128 AND source !~ '[\x01-\x1f\x7f]'
	AND evpipe._ingest_timestamp_valid(ts), false) ELSE false END
$$;
COMMENT ON FUNCTION evpipe._ingest_common(jsonb, text, text, text) IS
	'Internal: whether an event is the common one (the required members only, all valid), checked in one expression';

-- ep_ingest_prepare_event(): validate and normalise an event; the first
-- failure raises (class 22, 42501 for a source bound to other roles, PT429
-- for a source over its limit). Returns the canonical envelope and its
-- parsed members, the type's newest version, and the event's destinations
-- (ep_ingest_route_event() of ingestroute.c, read with the configuration:
-- destinations in rule order and each one's ordering_key path, NULL for an
-- unordered one). batch_index >= 0: the event's place in ingest_batch's
-- array, for the paths.
CREATE OR REPLACE FUNCTION evpipe._ingest_prepare(raw jsonb, source_arg text, caller name,
	batch_index integer,
	OUT envelope jsonb, OUT event_id text, OUT event_type text, OUT source text,
	OUT ts timestamptz, OUT correlation_id text, OUT priority text, OUT traceparent text,
	OUT version integer, OUT dests text[], OUT paths text[])
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
	env jsonb := raw;
	cur_id text;				-- ep_ingest_current_event_id
	cur_source text := source_arg;	-- ep_ingest_current_source
	id_path text := '$.eventId';
	ts_path text := '$.timestamp';
	payload_path text := '$.payload';
	max_bytes integer;
	max_depth integer;
	len bigint;
	m_type text;				-- the mapping of source_arg
	m_id text;
	m_ts text;
	v jsonb;
	k text;
	ts_text text;
	src_found boolean := false;
	src_bound boolean;
	lim_per_sec double precision;
	lim_burst integer;
	t_enabled boolean;
	t_schema jsonb;
	err text[];
	fast boolean := false;
	controls constant text := evpipe._ingest_control_chars();
	members constant text[] := ARRAY['eventId', 'eventType', 'source', 'payload', 'timestamp',
		'correlationId', 'priority', 'traceparent'];
BEGIN
	IF jsonb_typeof(raw) IS DISTINCT FROM 'object' THEN
		PERFORM evpipe._ingest_reject('2203C', '$', 'type', NULL, 'Send one event as a JSON object.',
			'event must be a JSON object', cur_id, cur_source, batch_index);
	END IF;

	-- size of the JSON text; text is at most 6 bytes per binary byte
	max_bytes := CASE WHEN coalesce(current_setting('evpipe.max_event_bytes', true), '') = '' THEN 262144
		ELSE evpipe._ingest_setting('evpipe.max_event_bytes', 262144) END;
	IF pg_column_size(raw)::bigint * 6 + 64 > max_bytes OR pg_column_compression(raw) IS NOT NULL THEN
		len := octet_length(raw::text);
		IF len > max_bytes THEN
			PERFORM evpipe._ingest_reject('22001', '$', 'maxBytes',
				format('%s bytes, the limit is %s', len, max_bytes),
				'The limit is evpipe.max_event_bytes.', 'event is too large', cur_id, cur_source, batch_index);
		END IF;
	END IF;

	-- the common event (no source argument, _ingest_common) in one
	-- expression; anything else takes the checks below
	IF source_arg IS NULL THEN
		event_id := env ->> 'eventId';
		source := env ->> 'source';
		ts_text := env ->> 'timestamp';
		fast := evpipe._ingest_common(env, event_id, source, ts_text);
	END IF;
	IF fast THEN
		event_type := env ->> 'eventType';
		ts := ts_text::timestamptz;
		cur_id := event_id;
		cur_source := source;
	END IF;

	IF NOT fast THEN
		IF source_arg IS NOT NULL THEN
			SELECT so.event_type, so.id_field, so.timestamp_field INTO m_type, m_id, m_ts
			FROM evpipe.sources so WHERE so.source = source_arg;
			IF NOT FOUND THEN
				PERFORM evpipe._ingest_reject('22023', '(argument source)', 'registered', NULL,
					'Register it with evpipe.register_source().',
					format('source "%s" is not registered', source_arg), cur_id, cur_source, batch_index);
			END IF;
			IF m_type IS NOT NULL THEN
				-- normalise_mapped(): eventId and timestamp from the configured
				-- members, eventType and source from the registration, every
				-- other member becomes the payload
				id_path := evpipe._mapped_path(m_id);
				ts_path := evpipe._mapped_path(m_ts);
				payload_path := '$';
				v := raw -> m_id;
				IF v IS NULL THEN
					PERFORM evpipe._ingest_reject('2203A', id_path, 'required', NULL, NULL,
						format('member %s (the eventId of source "%s") is missing',
							evpipe._ingest_quoted_name(m_id), source_arg), cur_id, cur_source, batch_index);
				END IF;
				cur_id := evpipe._mapped_id(v);
				IF cur_id IS NULL THEN
					PERFORM evpipe._ingest_reject('22023', id_path, 'type', NULL, NULL,
						format('member %s must be a string or an integer', evpipe._ingest_quoted_name(m_id)),
						cur_id, cur_source, batch_index);
				END IF;
				v := raw -> m_ts;
				IF v IS NULL THEN
					PERFORM evpipe._ingest_reject('2203A', ts_path, 'required', NULL, NULL,
						format('member %s (the timestamp of source "%s") is missing',
							evpipe._ingest_quoted_name(m_ts), source_arg), cur_id, cur_source, batch_index);
				END IF;
				IF jsonb_typeof(v) <> 'string' THEN
					PERFORM evpipe._ingest_reject('22023', ts_path, 'type', NULL, NULL,
						format('member %s must be a string', evpipe._ingest_quoted_name(m_ts)),
						cur_id, cur_source, batch_index);
				END IF;
				env := jsonb_build_object('eventId', cur_id, 'eventType', m_type, 'source', source_arg,
					'timestamp', v, 'payload', raw - m_id - m_ts);
			END IF;
		END IF;

		-- members: unknown ones first (in jsonb's order of keys), then required ones
		IF (env - members) <> '{}'::jsonb THEN
			SELECT key INTO k FROM jsonb_object_keys(env - members) AS key LIMIT 1;
			PERFORM evpipe._ingest_reject('22023', '$' || evpipe._path_member(k, 48, 256), 'additionalProperties', NULL,
				'Envelope members are eventId, eventType, source, payload, timestamp, correlationId, priority and traceparent.',
				format('unknown member %s in event', evpipe._ingest_quoted_name(k)), cur_id, cur_source, batch_index);
		END IF;
		IF NOT env ?& ARRAY['eventId', 'eventType', 'source', 'payload', 'timestamp'] THEN
			FOREACH k IN ARRAY members[1:5] LOOP
				IF NOT env ? k THEN
					PERFORM evpipe._ingest_reject('2203A', '$.' || k, 'required', NULL, NULL,
						format('member "%s" is missing', k), cur_id, cur_source, batch_index);
				END IF;
			END LOOP;
		END IF;

		-- eventId
		v := env -> 'eventId';
		IF jsonb_typeof(v) <> 'string' THEN
			PERFORM evpipe._ingest_reject('22023', id_path, 'type', NULL, NULL,
				'member "eventId" must be a string', cur_id, cur_source, batch_index);
		END IF;
		event_id := v #>> '{}';
		IF event_id = '' OR length(event_id) > 128
			OR ltrim(event_id, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-') <> '' THEN
			PERFORM evpipe._ingest_reject('22P02', id_path, 'pattern', '1-128 characters from [A-Za-z0-9._:-]',
				'A UUID is a good eventId.', 'member "eventId" is not a valid event id', cur_id, cur_source, batch_index);
		END IF;
		cur_id := event_id;

		-- eventType: a string here, registration checked below
		v := env -> 'eventType';
		IF jsonb_typeof(v) <> 'string' THEN
			PERFORM evpipe._ingest_reject('22023', '$.eventType', 'type', NULL, NULL,
				'member "eventType" must be a string', cur_id, cur_source, batch_index);
		END IF;
		event_type := v #>> '{}';

		-- source
		v := env -> 'source';
		IF jsonb_typeof(v) <> 'string' THEN
			PERFORM evpipe._ingest_reject('22023', '$.source', 'type', NULL, NULL,
				'member "source" must be a string', cur_id, cur_source, batch_index);
		END IF;
		source := v #>> '{}';
		IF source = '' OR length(source) > 128 OR length(translate(source, controls, '')) <> length(source) THEN
			PERFORM evpipe._ingest_reject('22023', '$.source', 'pattern', '1-128 characters, no control characters', NULL,
				'member "source" is not a valid source name', cur_id, cur_source, batch_index);
		END IF;
		cur_source := source;
		IF source_arg IS NOT NULL AND source_arg <> source COLLATE "C" THEN
			PERFORM evpipe._ingest_reject('22023', '$.source', 'const', NULL,
				'Leave the source argument out, or make it match the envelope.',
				format('member "source" does not match the source argument "%s"', source_arg), cur_id, cur_source, batch_index);
		END IF;

		-- payload
		IF jsonb_typeof(env -> 'payload') <> 'object' THEN
			PERFORM evpipe._ingest_reject('22023', payload_path, 'type', NULL, NULL,
				'member "payload" must be a JSON object', cur_id, cur_source, batch_index);
		END IF;

		-- timestamp: RFC 3339, then timestamptz_in
		v := env -> 'timestamp';
		IF jsonb_typeof(v) <> 'string' THEN
			PERFORM evpipe._ingest_reject('22023', ts_path, 'type', NULL, NULL,
				'member "timestamp" must be a string', cur_id, cur_source, batch_index);
		END IF;
		ts_text := v #>> '{}';
		IF NOT evpipe._ingest_timestamp_valid(ts_text) THEN
			PERFORM evpipe._ingest_reject('22007', ts_path, 'format', NULL,
				'Use ISO-8601 with a zone, for example 2026-11-21T10:00:00Z.',
				'member "timestamp" is not an ISO-8601 timestamp with a zone', cur_id, cur_source, batch_index);
		END IF;
		ts := ts_text::timestamptz;

		-- optional members
		v := env -> 'correlationId';
		IF v IS NOT NULL THEN
			IF jsonb_typeof(v) <> 'string' THEN
				PERFORM evpipe._ingest_reject('22023', '$.correlationId', 'type', NULL, NULL,
					'member "correlationId" must be a string', cur_id, cur_source, batch_index);
			END IF;
			correlation_id := v #>> '{}';
			IF correlation_id = '' OR length(correlation_id) > 128
				OR length(translate(correlation_id, controls, '')) <> length(correlation_id) THEN
				PERFORM evpipe._ingest_reject('22023', '$.correlationId', 'pattern', '1-128 characters, no control characters',
					NULL, 'member "correlationId" is not valid', cur_id, cur_source, batch_index);
			END IF;
		END IF;
		v := env -> 'priority';
		IF v IS NOT NULL THEN
			IF jsonb_typeof(v) <> 'string' THEN
				PERFORM evpipe._ingest_reject('22023', '$.priority', 'type', NULL, NULL,
					'member "priority" must be a string', cur_id, cur_source, batch_index);
			END IF;
			priority := v #>> '{}';
			IF priority = '' OR length(priority) > 32
				OR ltrim(priority, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-') <> '' THEN
				PERFORM evpipe._ingest_reject('22023', '$.priority', 'pattern', '1-32 characters from [A-Za-z0-9_-]',
					NULL, 'member "priority" is not valid', cur_id, cur_source, batch_index);
			END IF;
		END IF;
		v := env -> 'traceparent';
		IF v IS NOT NULL THEN
			IF jsonb_typeof(v) <> 'string' THEN
				PERFORM evpipe._ingest_reject('22023', '$.traceparent', 'type', NULL, NULL,
					'member "traceparent" must be a string', cur_id, cur_source, batch_index);
			END IF;
			traceparent := v #>> '{}';
			IF NOT evpipe._ingest_traceparent_valid(traceparent) THEN
				PERFORM evpipe._ingest_reject('22023', '$.traceparent', 'format',
					'W3C trace context: 00-<32 hex>-<16 hex>-<2 hex>', NULL,
					'member "traceparent" is not a valid W3C traceparent', cur_id, cur_source, batch_index);
			END IF;
		END IF;
	END IF;

	-- the configuration (ingestconfig.c): the source's bindings and limit,
	-- the type's newest version, and the routes (ingestroute.c)
	SELECT c.src_found, c.src_bound, c.per_sec, c.burst, c.version, c.enabled, c.schema, c.dests, c.paths
	INTO src_found, src_bound, lim_per_sec, lim_burst, version, t_enabled, t_schema, dests, paths
	FROM evpipe._ingest_config(_ingest_prepare.event_type, _ingest_prepare.source, _ingest_prepare.priority) AS c;

	-- check_source_allowed(): the source may be bound to roles (a test of
	-- its own: an IF with a subquery runs the executor even when src_bound
	-- is false)
	IF src_bound THEN
		src_bound := NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles ro WHERE ro.rolname = caller AND ro.rolsuper)
			AND NOT EXISTS (SELECT 1 FROM evpipe.source_roles r JOIN pg_catalog.pg_roles ro ON ro.rolname = r.role_name
				WHERE r.source = _ingest_prepare.source AND pg_has_role(caller, ro.oid, 'USAGE'));
	END IF;
	IF src_bound THEN
		IF evpipe._ingest_log_rejections() THEN
			RAISE LOG '%', format('evpipe event=ingest_rejected sqlstate=42501 event_id=%s source=%s reason="source bound to other roles"',
				coalesce(cur_id, '-'), source);
		END IF;
		RAISE EXCEPTION 'permission denied to ingest as source "%"', source
			USING ERRCODE = '42501',
				DETAIL = 'The source is bound to roles that the current role is not a member of.',
				HINT = 'An evpipe_admin can allow it with evpipe.bind_source().';
	END IF;
	IF lim_per_sec > 0 THEN
		PERFORM evpipe._ingest_take_token(source, lim_per_sec, lim_burst, cur_id);
	END IF;

	-- eventType registered and enabled
	IF version IS NULL THEN
		PERFORM evpipe._ingest_reject('22023', '$.eventType', 'registered', NULL,
			'An evpipe_admin registers types with evpipe.register_event_type().',
			format('event type "%s" is not registered', evpipe._ingest_cut(event_type, 128)), cur_id, cur_source, batch_index);
	END IF;
	IF NOT t_enabled THEN
		PERFORM evpipe._ingest_reject('22023', '$.eventType', 'registered', NULL, NULL,
			format('event type "%s" is disabled', event_type), cur_id, cur_source, batch_index);
	END IF;

	-- payload against the type's schema
	v := env -> 'payload';
	max_depth := CASE WHEN coalesce(current_setting('evpipe.max_depth', true), '') = '' THEN 64
		ELSE evpipe._ingest_setting('evpipe.max_depth', 64) END;
	IF evpipe._too_deep(v, max_depth) THEN
		PERFORM evpipe._ingest_reject('22023', payload_path, 'depth', format('nesting deeper than %s levels', max_depth),
			'The limit is evpipe.max_depth.', 'event payload nests too deeply', cur_id, cur_source, batch_index);
	END IF;
	-- (not too deep, so no value deeper than max_depth + 1: the schema's
	-- verdict is _js_vnode's; _validate_at makes the path of an error)
	IF t_schema IS NOT NULL
		AND evpipe._js_vnode(t_schema, v, coalesce(t_schema -> '$defs', t_schema -> 'definitions')) IS NOT NULL THEN
		err := evpipe._validate_at(t_schema, v, payload_path, max_depth);
		PERFORM evpipe._ingest_reject('22023', err[1], err[2], err[3], NULL,
			format('event payload does not match the schema of "%s" version %s', event_type, version),
			cur_id, cur_source, batch_index);
	END IF;

	envelope := env;
END
$$;
COMMENT ON FUNCTION evpipe._ingest_prepare(jsonb, text, name, integer) IS
	'Internal: check and normalise one event for ingest (envelope, mapped source, bindings, limit, type, schema) and route it';
