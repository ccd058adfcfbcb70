-- evpipe 0.1.0 -> 0.2.0 (ALTER EXTENSION evpipe UPDATE). Every change here is also in evpipe--0.2.0.sql;
-- test/e2e/lifecycle.test.js proves an upgraded database's schema equals a fresh 0.2.0 install.
\echo Use "ALTER EXTENSION evpipe UPDATE" to load this file. \quit

-- destination keys breaker_window_ms and max_age_ms (the circuit breaker and retries bounded in time)
-- Refuse a destination URL whose host is a link-local or cloud metadata address (any notation).
CREATE FUNCTION evpipe._check_destination_host(key text, url text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	raw text;
	host text := '';
	addr inet;
	v4 inet;
	parts text[];
	p text;
	n numeric;
	val numeric := 0;
	i int := 1;
	rule text;
BEGIN
	-- the host: after the scheme and any user info, up to the path, query or fragment
	raw := pg_catalog.substring(url, '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#]*@)?([^/?#]*)');
	IF raw IS NULL THEN
		RETURN;
	END IF;
	-- curl decodes %XX in a host name: decode once, as it does
	WHILE i <= pg_catalog.length(raw) LOOP
		IF pg_catalog.substr(raw, i, 3) ~ '^%[0-9A-Fa-f]{2}$' AND pg_catalog.substr(raw, i + 1, 2) <> '00' THEN
			host := host || pg_catalog.chr(('x' || pg_catalog.substr(raw, i + 1, 2))::bit(8)::int);
			i := i + 3;
		ELSE
			host := host || pg_catalog.substr(raw, i, 1);
			i := i + 1;
		END IF;
	END LOOP;
	IF host LIKE '[%' THEN
		-- an IPv6 literal: [address%zone]:port
		host := pg_catalog.substring(host, '^\[([0-9A-Fa-f:.]+)(?:%[^\]]*)?\]');
		IF host IS NULL THEN
			RETURN;
		END IF;
		BEGIN
			addr := host::inet;
		EXCEPTION WHEN invalid_text_representation THEN
			RETURN;
		END;
		host := '[' || host || ']';
	ELSE
		-- IPv4 in every form curl and inet_aton accept: 1 to 4 parts, each decimal, 0x hex or 0 octal;
		-- the last part fills the remaining bytes (2852039166, 0xA9FEA9FE, 0251.0376.0251.0376, 169.254.43518)
		host := pg_catalog.regexp_replace(pg_catalog.regexp_replace(host, ':[0-9]*$', ''), '\.$', '');
		IF host !~* '^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$' THEN
			RETURN;
		END IF;
		parts := pg_catalog.string_to_array(host, '.');
		FOR i IN 1 .. pg_catalog.cardinality(parts) LOOP
			p := parts[i];
			IF p ~* '^0x' THEN
				p := pg_catalog.ltrim(pg_catalog.substr(p, 3), '0');
				IF pg_catalog.length(p) > 8 THEN
					RETURN;
				END IF;
				n := ('x' || pg_catalog.lpad(p, 16, '0'))::bit(64)::bigint;
			ELSIF p ~ '^0' THEN
				IF p ~ '[89]' OR pg_catalog.length(p) > 12 THEN
					RETURN;
				END IF;
				n := 0;
				FOR k IN 2 .. pg_catalog.length(p) LOOP
					n := n * 8 + pg_catalog.substr(p, k, 1)::int;
				END LOOP;
			ELSE
				IF pg_catalog.length(p) > 10 THEN
					RETURN;
				END IF;
				n := p::numeric;
			END IF;
			IF i < pg_catalog.cardinality(parts) THEN
				IF n > 255 THEN
					RETURN;
				END IF;
				val := val + n * 2 ^ (8 * (4 - i));
			ELSE
				IF n >= 2 ^ (8 * (5 - i)) THEN
					RETURN;
				END IF;
				val := val + n;
			END IF;
		END LOOP;
		addr := '0.0.0.0'::inet + val::bigint;
	END IF;
	-- IPv4 embedded in IPv6: mapped ::ffff:0:0/96, compatible ::/96, NAT64 64:ff9b::/96
	IF pg_catalog.family(addr) = 6 AND (addr << '::ffff:0.0.0.0/96' OR addr << '::/96' OR addr << '64:ff9b::/96') THEN
		v4 := '0.0.0.0'::inet + (addr - pg_catalog.network(pg_catalog.set_masklen(addr, 96)));
	ELSIF pg_catalog.family(addr) = 4 THEN
		v4 := addr;
	END IF;
	IF v4 = '169.254.169.254' OR addr = 'fd00:ec2::254' THEN
		rule := 'cloud metadata';
	ELSIF v4 << '169.254.0.0/16' OR addr << 'fe80::/10' THEN
		rule := 'link-local';
	ELSE
		RETURN;
	END IF;
	RAISE EXCEPTION 'destination % host % is a % address', key, host, rule USING ERRCODE = '22023',
		DETAIL = pg_catalog.format('The host is the address %s. Destinations may not connect to link-local '
			'addresses (169.254.0.0/16, fe80::/10) or cloud metadata addresses (169.254.169.254, fd00:ec2::254), '
			'in any notation.', pg_catalog.host(addr)),
		HINT = 'Host names are checked when connecting, against the same rule and evpipe.destination_networks.';
END
$$;
COMMENT ON FUNCTION evpipe._check_destination_host(text, text) IS
	'Internal: refuse a destination URL whose host is a link-local or cloud metadata address';
REVOKE ALL ON FUNCTION evpipe._check_destination_host(text, text) FROM PUBLIC;	-- as the install script does for every function

-- Validate a destination config for its kind; raise 22023 naming the key.
CREATE OR REPLACE FUNCTION evpipe._check_destination(kind text, config jsonb)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	common text[] := ARRAY['max_attempts', 'timeout_ms', 'backoff_base_ms', 'backoff_max_ms',
		'rate_limit_per_sec', 'rate_limit_burst', 'enrich', 'max_in_flight', 'tls_verify', 'follow_redirects',
		'breaker_threshold', 'breaker_max_open_ms', 'breaker_window_ms', 'max_age_ms', 'ordering_key'];
	allowed text[];
	k text;
	v jsonb;
	url text;
BEGIN
	IF kind IS NULL OR kind NOT IN ('http', 'sqs', 'graphql', 'function') THEN
		RAISE EXCEPTION 'unknown destination kind %', pg_catalog.quote_nullable(kind) USING ERRCODE = '22023',
			HINT = 'Kinds are http, sqs, graphql and function.';
	END IF;
	IF config IS NULL OR pg_catalog.jsonb_typeof(config) <> 'object' THEN
		RAISE EXCEPTION 'destination config must be a JSON object' USING ERRCODE = '22023';
	END IF;
	allowed := common || CASE kind
		WHEN 'http' THEN ARRAY['url', 'headers', 'secret']
		WHEN 'sqs' THEN ARRAY['queue_url', 'region', 'endpoint_url', 'access_key_id', 'secret_access_key',
			'session_token', 'message_group_field']
		WHEN 'graphql' THEN ARRAY['url', 'query', 'headers']
		WHEN 'function' THEN ARRAY['function']
	END;
	FOR k, v IN SELECT * FROM pg_catalog.jsonb_each(config) LOOP
		IF NOT (k = ANY (allowed)) THEN
			RAISE EXCEPTION 'unknown key "%" in % destination config', k, kind USING ERRCODE = '22023',
				DETAIL = pg_catalog.format('Allowed keys: %s.', pg_catalog.array_to_string(allowed, ', '));
		END IF;
		IF k IN ('max_attempts', 'timeout_ms', 'backoff_base_ms', 'backoff_max_ms', 'rate_limit_burst', 'max_in_flight',
				'breaker_max_open_ms', 'breaker_window_ms', 'max_age_ms') THEN
			IF pg_catalog.jsonb_typeof(v) <> 'number' OR v::text::numeric <> pg_catalog.trunc(v::text::numeric)
				OR v::text::numeric < 1 OR v::text::numeric > 2147483647 THEN
				RAISE EXCEPTION 'config key "%" must be a positive integer', k USING ERRCODE = '22023',
					DETAIL = pg_catalog.format('Got %s.', v);
			END IF;
		ELSIF k = 'breaker_threshold' THEN
			IF pg_catalog.jsonb_typeof(v) <> 'number' OR v::text::numeric <> pg_catalog.trunc(v::text::numeric)
				OR v::text::numeric < 0 OR v::text::numeric > 1000000 THEN
				RAISE EXCEPTION 'config key "breaker_threshold" must be an integer from 0 (off) to 1000000'
					USING ERRCODE = '22023', DETAIL = pg_catalog.format('Got %s.', v);
			END IF;
		ELSIF k = 'rate_limit_per_sec' THEN
			IF pg_catalog.jsonb_typeof(v) <> 'number' OR v::text::numeric <= 0 OR v::text::numeric > 1000000 THEN
				RAISE EXCEPTION 'config key "rate_limit_per_sec" must be a number above 0 and at most 1000000'
					USING ERRCODE = '22023', DETAIL = pg_catalog.format('Got %s.', v);
			END IF;
		ELSIF k IN ('enrich') THEN
			IF pg_catalog.jsonb_typeof(v) <> 'object' THEN
				RAISE EXCEPTION 'config key "enrich" must be a JSON object' USING ERRCODE = '22023';
			END IF;
		ELSIF k IN ('tls_verify', 'follow_redirects') THEN
			IF pg_catalog.jsonb_typeof(v) <> 'boolean' THEN
				RAISE EXCEPTION 'config key "%" must be a boolean', k USING ERRCODE = '22023';
			END IF;
		ELSIF k = 'headers' THEN
			IF pg_catalog.jsonb_typeof(v) <> 'object' OR EXISTS (
				SELECT 1 FROM pg_catalog.jsonb_each(v) h
				WHERE pg_catalog.jsonb_typeof(h.value) <> 'string'
					OR h.key !~ '^[!#$%&''*+.^_`|~0-9A-Za-z-]{1,128}$'
					OR h.value #>> '{}' ~ '[\r\n\x01-\x08\x0b\x0c\x0e-\x1f]') THEN
				RAISE EXCEPTION 'config key "headers" must be an object of header names to string values'
					USING ERRCODE = '22023', DETAIL = 'Header names are HTTP tokens; values have no control characters.';
			END IF;
		ELSE
			IF pg_catalog.jsonb_typeof(v) <> 'string' OR v #>> '{}' = '' THEN
				RAISE EXCEPTION 'config key "%" must be a non-empty string', k USING ERRCODE = '22023';
			END IF;
		END IF;
	END LOOP;
	IF (config ? 'backoff_base_ms') AND (config ? 'backoff_max_ms')
		AND (config ->> 'backoff_base_ms')::numeric > (config ->> 'backoff_max_ms')::numeric THEN
		RAISE EXCEPTION 'backoff_base_ms must not exceed backoff_max_ms' USING ERRCODE = '22023';
	END IF;
	-- required keys and URLs
	FOREACH k IN ARRAY CASE kind WHEN 'http' THEN ARRAY['url'] WHEN 'sqs' THEN ARRAY['queue_url', 'region']
		WHEN 'graphql' THEN ARRAY['url', 'query'] ELSE ARRAY['function'] END LOOP
		IF NOT config ? k THEN
			RAISE EXCEPTION 'missing config key "%" for % destination', k, kind USING ERRCODE = '22023';
		END IF;
	END LOOP;
	FOREACH k IN ARRAY ARRAY['url', 'queue_url', 'endpoint_url'] LOOP
		url := config ->> k;
		IF url IS NOT NULL AND url !~* '^https?://[^/?#\s@]+(/[^\s]*)?$' THEN
			RAISE EXCEPTION 'config key "%" must be an http or https URL', k USING ERRCODE = '22023',
				DETAIL = pg_catalog.format('Got %s.', url);
		END IF;
		IF url IS NOT NULL THEN
			PERFORM evpipe._check_destination_host(k, url);
		END IF;
	END LOOP;
	IF kind = 'sqs' AND (config ? 'access_key_id') <> (config ? 'secret_access_key') THEN
		RAISE EXCEPTION 'access_key_id and secret_access_key go together' USING ERRCODE = '22023';
	END IF;
	IF kind = 'sqs' AND config ->> 'region' !~ '^[a-z0-9-]{1,32}$' THEN
		RAISE EXCEPTION 'config key "region" must be an AWS region name such as us-east-1' USING ERRCODE = '22023';
	END IF;
	IF kind = 'function' THEN
		PERFORM evpipe._resolve_handler(config ->> 'function');
	END IF;
END
$$;

---------------------------------------------------------------------------
-- Backup and restore (0.2.0): pg_dump dumps the rows of these tables and the
-- positions of these sequences (an extension's own objects are otherwise
-- recreated empty by CREATE EXTENSION). The built-in event types this script
-- registers are left out, so a restore does not insert them twice.
---------------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('evpipe.event_types',
	$$WHERE NOT (event_type IN ('evpipe.delivery_succeeded', 'evpipe.delivery_failed') AND version = 1)$$);
SELECT pg_catalog.pg_extension_config_dump('evpipe.sources', '');
SELECT pg_catalog.pg_extension_config_dump('evpipe.source_roles', '');
SELECT pg_catalog.pg_extension_config_dump('evpipe.source_limits', '');
SELECT pg_catalog.pg_extension_config_dump('evpipe.destinations', '');
SELECT pg_catalog.pg_extension_config_dump('evpipe.routes', '');
SELECT pg_catalog.pg_extension_config_dump('evpipe.routes_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('evpipe.events', '');
SELECT pg_catalog.pg_extension_config_dump('evpipe.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('evpipe.outbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('evpipe.delivered', '');
SELECT pg_catalog.pg_extension_config_dump('evpipe.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('evpipe.dead_letters_id_seq', '');

-- a replayed dead letter is a fresh outbox row: max_age_ms counts from the replay
CREATE OR REPLACE FUNCTION evpipe.replay_dead_letters(destination text DEFAULT NULL, event_type text DEFAULT NULL,
	since timestamptz DEFAULT NULL, event_id text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	n integer;
BEGIN
	WITH m AS (
		DELETE FROM evpipe.dead_letters x
		WHERE (replay_dead_letters.destination IS NULL OR x.destination = replay_dead_letters.destination)
			AND (replay_dead_letters.event_type IS NULL OR x.event_type = replay_dead_letters.event_type)
			AND (replay_dead_letters.since IS NULL OR x.dead_at >= replay_dead_letters.since)
			AND (replay_dead_letters.event_id IS NULL OR x.event_id = replay_dead_letters.event_id)
			AND EXISTS (SELECT 1 FROM evpipe.destinations d WHERE d.name = x.destination)
		RETURNING x.event_id, x.destination, x.ordering_key
	), i AS (
		-- a fresh row: max_age_ms and delivery latency count from the replay;
		-- an ordered one goes after the rows of its key still pending
		INSERT INTO evpipe.outbox (event_id, destination, ordering_key)
		SELECT m.event_id, m.destination, m.ordering_key FROM m
		ON CONFLICT (event_id, destination) DO NOTHING
		RETURNING 1
	)
	SELECT count(*) INTO n FROM i;
	IF n > 0 THEN
		PERFORM evpipe._wake_workers();
	END IF;
	RETURN n;
END
$$;

-- retention (evpipe.event_retention): worker 0 walks old events in ingested_at order through this index,
-- deleting small batches. CREATE INDEX blocks ingest while it builds; on a large events table build it
-- first with CREATE INDEX CONCURRENTLY IF NOT EXISTS events_ingested_at ON evpipe.events (ingested_at).
CREATE INDEX IF NOT EXISTS events_ingested_at ON evpipe.events (ingested_at);
COMMENT ON TABLE evpipe.events IS
	'Accepted events keyed by eventId (the dedup key); event is the normalised canonical envelope that is delivered; kept for evpipe.event_retention unless an outbox row or a dead letter needs it';

-- ordered delivery per key (destination key ordering_key): rows ingested before the upgrade stay unordered
ALTER TABLE evpipe.outbox ADD COLUMN ordering_key text COLLATE "C";
CREATE INDEX outbox_ordering ON evpipe.outbox (destination, ordering_key, id) WHERE ordering_key IS NOT NULL;
COMMENT ON COLUMN evpipe.outbox.ordering_key IS
	'The event''s value of its destination''s ordering_key (NULL: unordered); a row is claimed only when no earlier row of its key is left';
ALTER TABLE evpipe.dead_letters ADD COLUMN ordering_key text COLLATE "C";
COMMENT ON COLUMN evpipe.dead_letters.ordering_key IS
	'The ordering key this event held (its destination delivers each key in order; the next event of the key went on)';
