-- evpipe 0.6.0: an event pipeline inside PostgreSQL (a fresh install; older databases upgrade with evpipe--0.1.0--0.2.0.sql,
-- then evpipe--0.2.0--0.3.0.sql, evpipe--0.3.0--0.4.0.sql, evpipe--0.4.0--0.5.0.sql and evpipe--0.5.0--0.6.0.sql)
\echo Use "CREATE EXTENSION evpipe" to load this file. \quit

-- Roles are cluster-wide: create them once, keep them across DROP EXTENSION.
DO $roles$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'evpipe_producer') THEN
		CREATE ROLE evpipe_producer NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'evpipe_admin') THEN
		CREATE ROLE evpipe_admin NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'evpipe_worker') THEN
		CREATE ROLE evpipe_worker NOLOGIN;
	END IF;
END
$roles$;
CREATE SCHEMA evpipe;
COMMENT ON SCHEMA evpipe IS 'evpipe: validate, dedupe, route and deliver events; see README.md';

---------------------------------------------------------------------------
-- Configuration tables
---------------------------------------------------------------------------

CREATE TABLE evpipe.event_types (
	event_type text NOT NULL
		CHECK (event_type ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
	version integer NOT NULL CHECK (version > 0),
	schema jsonb NOT NULL,
	enabled boolean NOT NULL DEFAULT true,
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (event_type, version)
);
COMMENT ON TABLE evpipe.event_types IS
	'Registered event types: one row per (type, schema version); ingest validates payloads with the newest version';

CREATE TABLE evpipe.sources (
	source text PRIMARY KEY CHECK (source ~ '^[^[:cntrl:]]{1,128}$'),
	event_type text CHECK (event_type ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
	id_field text,
	timestamp_field text,
	created_at timestamptz NOT NULL DEFAULT now(),
	CHECK ((event_type IS NULL) = (id_field IS NULL) AND (event_type IS NULL) = (timestamp_field IS NULL))
);
COMMENT ON TABLE evpipe.sources IS
	'Known sources: a mapping for sources that cannot send the envelope (event_type, id_field, timestamp_field), and the anchor for role bindings';

CREATE TABLE evpipe.source_roles (
	source text NOT NULL REFERENCES evpipe.sources ON DELETE CASCADE,
	role_name name NOT NULL,
	PRIMARY KEY (source, role_name)
);
COMMENT ON TABLE evpipe.source_roles IS
	'Roles allowed to ingest as a source; a source with no row here may be used by any producer';

CREATE TABLE evpipe.source_limits (
	source text PRIMARY KEY REFERENCES evpipe.sources ON DELETE CASCADE,
	per_sec double precision NOT NULL CHECK (per_sec > 0 AND per_sec <= 1000000),
	burst integer NOT NULL DEFAULT 1 CHECK (burst >= 1)
);
COMMENT ON TABLE evpipe.source_limits IS
	'Ingest throttling per source (API Gateway''s throttling): events over the limit are refused with SQLSTATE PT429';

CREATE TABLE evpipe.destinations (
	name text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$'),
	kind text NOT NULL CHECK (kind IN ('http', 'sqs', 'graphql', 'function')),
	config jsonb NOT NULL,
	enabled boolean NOT NULL DEFAULT true,
	owner name NOT NULL DEFAULT current_user,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE evpipe.destinations IS
	'Delivery destinations; config holds secrets and is readable only by evpipe_admin (use evpipe.destination_list for a redacted view)';
COMMENT ON COLUMN evpipe.destinations.owner IS
	'Role that created the destination; a function destination''s handler runs as this role';
COMMENT ON COLUMN evpipe.destinations.enabled IS
	'false pauses delivery: routes still write outbox rows, which wait until the destination is enabled again';

CREATE TABLE evpipe.routes (
	id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	event_type text NOT NULL
		CHECK (event_type ~ '^([A-Za-z0-9][A-Za-z0-9._:-]{0,127}|[A-Za-z0-9._:-]{0,127}\*)$'),
	destination text NOT NULL REFERENCES evpipe.destinations ON UPDATE CASCADE,
	source text CHECK (source ~ '^[^[:cntrl:]]{1,128}$'),
	priority text CHECK (priority ~ '^[A-Za-z0-9_-]{1,32}$'),
	enabled boolean NOT NULL DEFAULT true,
	created_at timestamptz NOT NULL DEFAULT now(),
	UNIQUE NULLS NOT DISTINCT (event_type, destination, source, priority)
);
COMMENT ON TABLE evpipe.routes IS
	'Routing rules, evaluated in id order; every enabled matching rule adds its destination (fan-out); event_type is exact or a prefix pattern ending in *';

---------------------------------------------------------------------------
-- Events and delivery state
---------------------------------------------------------------------------

CREATE TABLE evpipe.events (
	event_id text COLLATE "C" PRIMARY KEY,
	event_type text NOT NULL,
	schema_version integer NOT NULL,
	source text NOT NULL,
	event_time timestamptz NOT NULL,
	correlation_id text,
	priority text,
	traceparent text,
	event jsonb NOT NULL,
	ingested_at timestamptz NOT NULL DEFAULT now(),
	ingested_by name NOT NULL
);
COMMENT ON TABLE evpipe.events IS
	'Accepted events keyed by eventId (the dedup key); event is the normalised canonical envelope that is delivered; kept for evpipe.event_retention unless an outbox row or a dead letter needs it';
-- retention (evpipe.event_retention): worker 0 walks old events in ingested_at order through this index,
-- deleting small batches (a B-tree: a BRIN summary only widens as vacuumed space is reused, until every
-- range matches; time partitions cannot keep eventId unique across partitions)
CREATE INDEX events_ingested_at ON evpipe.events (ingested_at);
-- event ids and destination names are keys made of ASCII: the "C" collation
-- orders them by byte and makes every index comparison a memcmp

CREATE TABLE evpipe.outbox (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	event_id text COLLATE "C" NOT NULL,
	destination text COLLATE "C" NOT NULL,
	attempts integer NOT NULL DEFAULT 0,
	next_attempt_at timestamptz NOT NULL DEFAULT now(),
	leased_by integer,
	lease_until timestamptz,
	created_at timestamptz NOT NULL DEFAULT now(),
	first_attempt_at timestamptz,
	last_attempt_at timestamptz,
	last_status integer,
	last_error text,
	response_excerpt text,
	ordering_key text COLLATE "C"
);
CREATE INDEX outbox_due ON evpipe.outbox (destination, next_attempt_at, id);
-- an event's rows (the answer to a duplicate, retention's "still pending?", replay): equality only, so a hash
-- index (0.5.0; a B-tree on the random eventId descended to a random leaf for every row ingest wrote). One row per
-- (event, destination) holds by construction: ingest writes rows only for a new event, one per destination, and a
-- replay only for a dead letter (unique per event and destination) whose row is gone
CREATE INDEX outbox_event_id ON evpipe.outbox USING hash (event_id);
-- ordered delivery: an event's row is claimable only when no earlier row of its key is left
CREATE INDEX outbox_ordering ON evpipe.outbox (destination, ordering_key, id) WHERE ordering_key IS NOT NULL;
COMMENT ON COLUMN evpipe.outbox.ordering_key IS
	'The event''s value of its destination''s ordering_key (NULL: unordered); a row is claimed only when no earlier row of its key is left';
COMMENT ON TABLE evpipe.outbox IS
	'Work not yet final: one row per (event, destination); workers lease rows by moving next_attempt_at to the lease end';

CREATE TABLE evpipe.delivered (
	event_id text COLLATE "C" NOT NULL,
	destination text COLLATE "C" NOT NULL,
	attempts integer NOT NULL,
	created_at timestamptz NOT NULL,
	first_attempt_at timestamptz,
	delivered_at timestamptz NOT NULL DEFAULT now(),
	last_status integer,
	PRIMARY KEY (event_id, destination)
);
CREATE INDEX delivered_at_idx ON evpipe.delivered (delivered_at);
COMMENT ON TABLE evpipe.delivered IS
	'Deliveries that succeeded (processed), kept for evpipe.delivered_retention';

CREATE TABLE evpipe.dead_letters (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	event_id text COLLATE "C" NOT NULL,
	event_type text NOT NULL,
	source text NOT NULL,
	destination text COLLATE "C" NOT NULL,
	attempts integer NOT NULL,
	created_at timestamptz NOT NULL,
	first_attempt_at timestamptz,
	last_attempt_at timestamptz,
	dead_at timestamptz NOT NULL DEFAULT now(),
	last_status integer,
	last_error text,
	response_excerpt text,
	traceparent text,
	event jsonb NOT NULL,
	ordering_key text COLLATE "C",
	UNIQUE (event_id, destination)
);
CREATE INDEX dead_letters_dead_at ON evpipe.dead_letters (dead_at);
COMMENT ON TABLE evpipe.dead_letters IS
	'Deliveries that failed for good: why (last_status, last_error, response_excerpt) and what (event); replay with evpipe.replay_dead_letters';
COMMENT ON COLUMN evpipe.dead_letters.ordering_key IS
	'The ordering key this event held (its destination delivers each key in order; the next event of the key went on)';

CREATE VIEW evpipe.deliveries AS
	SELECT o.event_id, o.destination,
		CASE WHEN o.lease_until > now() THEN 'in_flight' ELSE 'pending' END AS status,
		o.attempts, o.created_at, o.first_attempt_at, o.last_attempt_at,
		NULL::timestamptz AS delivered_at, o.next_attempt_at, o.last_status, o.last_error
	FROM evpipe.outbox o
	UNION ALL
	SELECT d.event_id, d.destination, 'delivered', d.attempts, d.created_at,
		d.first_attempt_at, d.delivered_at, d.delivered_at, NULL, d.last_status, NULL
	FROM evpipe.delivered d
	UNION ALL
	SELECT x.event_id, x.destination, 'dead', x.attempts, x.created_at,
		x.first_attempt_at, x.last_attempt_at, NULL, NULL, x.last_status, x.last_error
	FROM evpipe.dead_letters x;
COMMENT ON VIEW evpipe.deliveries IS
	'State of each event per destination: pending, in_flight, delivered or dead';

---------------------------------------------------------------------------
-- C functions
---------------------------------------------------------------------------

-- ingest, ingest_batch and route_explain carry no SET search_path: the C resolves every name of their work in
-- pg_catalog alone, whatever the caller's path (and without the per-call cost of a SET clause)

CREATE FUNCTION evpipe.ingest(event jsonb, source text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'evpipe_ingest'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION evpipe.ingest(jsonb, text) IS
	'Validate, dedupe, normalise and route one event, writing the event and its outbox rows in the caller''s transaction';

CREATE FUNCTION evpipe.ingest_batch(events jsonb, source text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'evpipe_ingest_batch'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION evpipe.ingest_batch(jsonb, text) IS
	'Ingest a JSON array of events all or nothing, each checked like ingest; answers one {eventId, status, destinations} per event';

CREATE FUNCTION evpipe.route_explain(event jsonb, source text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'evpipe_route_explain'
LANGUAGE C CALLED ON NULL INPUT STABLE PARALLEL UNSAFE;
COMMENT ON FUNCTION evpipe.route_explain(jsonb, text) IS
	'Validate an event and show every routing rule, whether it matches and why; writes nothing';

CREATE FUNCTION evpipe._check_schema(schema jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'evpipe_check_schema'
LANGUAGE C STRICT IMMUTABLE;
COMMENT ON FUNCTION evpipe._check_schema(jsonb) IS
	'Internal: raise an error if a JSON Schema is invalid or uses an unsupported keyword';

CREATE FUNCTION evpipe.version()
RETURNS text
AS 'MODULE_PATHNAME', 'evpipe_version'
LANGUAGE C STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION evpipe.version() IS
	'The version of evpipe''s schema in this database, in either install (the extension''s, or the managed install''s from evpipe.migrations)';

CREATE FUNCTION evpipe.validate(schema jsonb, document jsonb)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'evpipe_validate'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION evpipe.validate(jsonb, jsonb) IS
	'Check a document against a JSON Schema as ingest checks payloads: NULL when valid, else the first error as {path, rule, message}';

CREATE FUNCTION evpipe._config_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'evpipe_config_changed'
LANGUAGE C;
COMMENT ON FUNCTION evpipe._config_changed() IS
	'Internal trigger: tells every backend and worker to reload evpipe configuration at commit';

CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON evpipe.event_types
	FOR EACH STATEMENT EXECUTE FUNCTION evpipe._config_changed();
CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON evpipe.sources
	FOR EACH STATEMENT EXECUTE FUNCTION evpipe._config_changed();
CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON evpipe.source_roles
	FOR EACH STATEMENT EXECUTE FUNCTION evpipe._config_changed();
CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON evpipe.source_limits
	FOR EACH STATEMENT EXECUTE FUNCTION evpipe._config_changed();
CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON evpipe.routes
	FOR EACH STATEMENT EXECUTE FUNCTION evpipe._config_changed();
CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON evpipe.destinations
	FOR EACH STATEMENT EXECUTE FUNCTION evpipe._config_changed();

---------------------------------------------------------------------------
-- Administration
---------------------------------------------------------------------------

CREATE FUNCTION evpipe.register_event_type(event_type text, schema jsonb)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v integer;
	cur jsonb;
BEGIN
	IF event_type IS NULL OR event_type !~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$' THEN
		RAISE EXCEPTION 'invalid event type name'
			USING ERRCODE = '22023',
				DETAIL = pg_catalog.format('Got %s; a name is 1-128 characters from [A-Za-z0-9._:-] starting with a letter or digit.', pg_catalog.quote_nullable(event_type));
	END IF;
	IF schema IS NULL THEN
		RAISE EXCEPTION 'schema must not be null' USING ERRCODE = '22004';
	END IF;
	PERFORM evpipe._check_schema(schema);
	-- serialise registrations of one type
	PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('evpipe.event_type:' || event_type));
	SELECT t.version, t.schema INTO v, cur FROM evpipe.event_types t
		WHERE t.event_type = register_event_type.event_type ORDER BY t.version DESC LIMIT 1;
	IF v IS NOT NULL AND cur = schema THEN
		UPDATE evpipe.event_types t SET enabled = true
			WHERE t.event_type = register_event_type.event_type AND NOT t.enabled;
		RETURN v;
	END IF;
	v := COALESCE(v, 0) + 1;
	INSERT INTO evpipe.event_types (event_type, version, schema) VALUES (event_type, v, schema);
	RETURN v;
END
$$;
COMMENT ON FUNCTION evpipe.register_event_type(text, jsonb) IS
	'Register an event type or a new schema version of it (the schema is checked now); returns the version. Re-registering the current schema returns its version unchanged';

CREATE FUNCTION evpipe.set_event_type_enabled(event_type text, enabled boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE evpipe.event_types t SET enabled = set_event_type_enabled.enabled
		WHERE t.event_type = set_event_type_enabled.event_type;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'event type "%" is not registered', event_type USING ERRCODE = '42704';
	END IF;
END
$$;
COMMENT ON FUNCTION evpipe.set_event_type_enabled(text, boolean) IS
	'Disable (ingest refuses it) or re-enable an event type';

CREATE FUNCTION evpipe.drop_event_type(event_type text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	DELETE FROM evpipe.event_types t WHERE t.event_type = drop_event_type.event_type;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'event type "%" is not registered', event_type USING ERRCODE = '42704';
	END IF;
END
$$;
COMMENT ON FUNCTION evpipe.drop_event_type(text) IS
	'Drop every schema version of an event type; stored events keep their type and version';

CREATE FUNCTION evpipe.register_source(source text, event_type text, id_field text DEFAULT 'id', timestamp_field text DEFAULT 'timestamp')
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF source IS NULL OR source !~ '^[^[:cntrl:]]{1,128}$' THEN
		RAISE EXCEPTION 'invalid source name' USING ERRCODE = '22023',
			DETAIL = 'A source is 1-128 characters with no control characters.';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM evpipe.event_types t WHERE t.event_type = register_source.event_type) THEN
		RAISE EXCEPTION 'event type "%" is not registered', event_type USING ERRCODE = '42704',
			HINT = 'Register it first with evpipe.register_event_type().';
	END IF;
	IF COALESCE(id_field, '') = '' OR COALESCE(timestamp_field, '') = '' OR id_field = timestamp_field THEN
		RAISE EXCEPTION 'id_field and timestamp_field must be two different non-empty member names'
			USING ERRCODE = '22023';
	END IF;
	INSERT INTO evpipe.sources AS s (source, event_type, id_field, timestamp_field)
		VALUES (source, event_type, id_field, timestamp_field)
		ON CONFLICT ON CONSTRAINT sources_pkey DO UPDATE
		SET event_type = excluded.event_type, id_field = excluded.id_field,
			timestamp_field = excluded.timestamp_field;
END
$$;
COMMENT ON FUNCTION evpipe.register_source(text, text, text, text) IS
	'Map a source that cannot send the envelope: ingest(raw, source => s) takes eventId and timestamp from these members and the rest as payload';

CREATE FUNCTION evpipe.bind_source(source text, role_name name)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = bind_source.role_name) THEN
		RAISE EXCEPTION 'role "%" does not exist', role_name USING ERRCODE = '42704';
	END IF;
	IF source IS NULL OR source !~ '^[^[:cntrl:]]{1,128}$' THEN
		RAISE EXCEPTION 'invalid source name' USING ERRCODE = '22023';
	END IF;
	INSERT INTO evpipe.sources (source) VALUES (source) ON CONFLICT DO NOTHING;
	INSERT INTO evpipe.source_roles (source, role_name) VALUES (source, role_name) ON CONFLICT DO NOTHING;
END
$$;
COMMENT ON FUNCTION evpipe.bind_source(text, name) IS
	'Allow a role to ingest as a source; once a source has bindings, only members of those roles (and superusers) may use it';

CREATE FUNCTION evpipe.unbind_source(source text, role_name name)
RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
	WITH d AS (DELETE FROM evpipe.source_roles r
		WHERE r.source = unbind_source.source AND r.role_name = unbind_source.role_name RETURNING 1)
	SELECT count(*) > 0 FROM d;
$$;
COMMENT ON FUNCTION evpipe.unbind_source(text, name) IS
	'Remove a role binding from a source; returns whether one was removed';

CREATE FUNCTION evpipe.drop_source(source text)
RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
	WITH d AS (DELETE FROM evpipe.sources s WHERE s.source = drop_source.source RETURNING 1)
	SELECT count(*) > 0 FROM d;
$$;
COMMENT ON FUNCTION evpipe.drop_source(text) IS
	'Forget a source mapping and its role bindings; returns whether it existed';

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

-- Validate a destination config for its kind; raise 22023 naming the key.
CREATE FUNCTION evpipe._check_destination(kind text, config jsonb)
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
COMMENT ON FUNCTION evpipe._check_destination(text, jsonb) IS
	'Internal: validate a destination config (keys per kind, types, URLs, the handler function)';

-- Resolve a handler function signature, which must take exactly one jsonb.
CREATE FUNCTION evpipe._resolve_handler(fn text)
RETURNS regprocedure
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	p regprocedure;
BEGIN
	BEGIN
		p := fn::regprocedure;
	EXCEPTION WHEN OTHERS THEN
		RAISE EXCEPTION 'function % does not exist', pg_catalog.quote_nullable(fn) USING ERRCODE = '22023',
			HINT = 'Give a schema-qualified signature such as myschema.handle(jsonb).';
	END;
	IF (SELECT pronargs <> 1 OR proargtypes[0] <> 'jsonb'::regtype FROM pg_catalog.pg_proc WHERE oid = p) THEN
		RAISE EXCEPTION 'handler % must take exactly one jsonb argument', p USING ERRCODE = '22023';
	END IF;
	RETURN p;
END
$$;
COMMENT ON FUNCTION evpipe._resolve_handler(text) IS
	'Internal: resolve a function destination''s handler signature';

-- The role that called a SECURITY DEFINER function: SET ROLE's role, else the session user.
CREATE FUNCTION evpipe._invoker()
RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN pg_catalog.current_setting('role') = 'none' THEN session_user
		ELSE pg_catalog.current_setting('role')::name END;
$$;
COMMENT ON FUNCTION evpipe._invoker() IS
	'Internal: the role that called a SECURITY DEFINER function (SET ROLE''s role, else the session user)';

CREATE FUNCTION evpipe.create_destination(name text, kind text, config jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM evpipe._check_destination(kind, config);
	IF kind = 'function' THEN
		-- store the canonical, schema-qualified signature
		config := config || pg_catalog.jsonb_build_object('function',
			(evpipe._resolve_handler(config ->> 'function'))::text);
	END IF;
	IF kind = 'function' AND NOT pg_catalog.has_function_privilege(evpipe._invoker(),
		(config ->> 'function')::regprocedure, 'EXECUTE') THEN
		RAISE EXCEPTION 'permission denied for function %', config ->> 'function' USING ERRCODE = '42501',
			DETAIL = 'A function destination''s handler runs as the role that creates the destination.';
	END IF;
	INSERT INTO evpipe.destinations (name, kind, config, owner) VALUES (name, kind, config, evpipe._invoker());
EXCEPTION WHEN unique_violation THEN
	RAISE EXCEPTION 'destination "%" already exists', name USING ERRCODE = '42710',
		HINT = 'Use evpipe.alter_destination() to change it.';
WHEN check_violation THEN
	RAISE EXCEPTION 'invalid destination name %', pg_catalog.quote_nullable(name) USING ERRCODE = '22023',
		DETAIL = 'A name is 1-64 characters from [A-Za-z0-9._:-] starting with a letter or digit.';
END
$$;
COMMENT ON FUNCTION evpipe.create_destination(text, text, jsonb) IS
	'Create a destination of kind http, sqs, graphql or function; the config is validated now';

CREATE FUNCTION evpipe.alter_destination(name text, config jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	k text;
BEGIN
	SELECT d.kind INTO k FROM evpipe.destinations d WHERE d.name = alter_destination.name FOR UPDATE;
	IF k IS NULL THEN
		RAISE EXCEPTION 'destination "%" does not exist', name USING ERRCODE = '42704';
	END IF;
	PERFORM evpipe._check_destination(k, config);
	IF k = 'function' THEN
		config := config || pg_catalog.jsonb_build_object('function',
			(evpipe._resolve_handler(config ->> 'function'))::text);
	END IF;
	IF k = 'function' AND NOT pg_catalog.has_function_privilege(evpipe._invoker(),
		(config ->> 'function')::regprocedure, 'EXECUTE') THEN
		RAISE EXCEPTION 'permission denied for function %', config ->> 'function' USING ERRCODE = '42501';
	END IF;
	UPDATE evpipe.destinations d SET config = alter_destination.config, updated_at = now(),
		owner = evpipe._invoker()
		WHERE d.name = alter_destination.name;
END
$$;
COMMENT ON FUNCTION evpipe.alter_destination(text, jsonb) IS
	'Replace a destination''s config (validated like create_destination); pending deliveries use the new config';

CREATE FUNCTION evpipe.set_destination_enabled(name text, enabled boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE evpipe.destinations d SET enabled = set_destination_enabled.enabled, updated_at = now()
		WHERE d.name = set_destination_enabled.name;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'destination "%" does not exist', name USING ERRCODE = '42704';
	END IF;
END
$$;
COMMENT ON FUNCTION evpipe.set_destination_enabled(text, boolean) IS
	'Pause (false) or resume (true) delivery to a destination; pending events wait, nothing is lost';

CREATE FUNCTION evpipe.drop_destination(name text, force boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	PERFORM 1 FROM evpipe.destinations d WHERE d.name = drop_destination.name FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'destination "%" does not exist', name USING ERRCODE = '42704';
	END IF;
	SELECT count(*) INTO n FROM evpipe.outbox o WHERE o.destination = drop_destination.name;
	IF n > 0 AND NOT force THEN
		RAISE EXCEPTION 'destination "%" has % pending deliveries', name, n USING ERRCODE = '55006',
			HINT = 'Wait for them, or call evpipe.drop_destination(name, force => true) to dead-letter them.';
	END IF;
	IF EXISTS (SELECT 1 FROM evpipe.routes r WHERE r.destination = drop_destination.name) AND NOT force THEN
		RAISE EXCEPTION 'destination "%" is used by routes', name USING ERRCODE = '2BP01',
			HINT = 'Drop the routes first, or use force => true.';
	END IF;
	PERFORM evpipe._dead_letter_pending(drop_destination.name, 'destination dropped');
	DELETE FROM evpipe.routes r WHERE r.destination = drop_destination.name;
	DELETE FROM evpipe.destinations d WHERE d.name = drop_destination.name;
END
$$;
COMMENT ON FUNCTION evpipe.drop_destination(text, boolean) IS
	'Drop a destination; refuses while routes or pending deliveries exist unless force, which drops its routes and dead-letters its pending deliveries';

-- Move every pending delivery of a destination to the dead-letter table.
CREATE FUNCTION evpipe._dead_letter_pending(dest text, reason text)
RETURNS integer
LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $$
	WITH m AS (
		DELETE FROM evpipe.outbox o WHERE o.destination = dest RETURNING o.*
	), i AS (
		INSERT INTO evpipe.dead_letters (event_id, event_type, source, destination, attempts, created_at,
			first_attempt_at, last_attempt_at, last_status, last_error, response_excerpt, traceparent, event)
		SELECT m.event_id, e.event_type, e.source, m.destination, m.attempts, m.created_at,
			m.first_attempt_at, m.last_attempt_at, m.last_status, reason, m.response_excerpt, e.traceparent, e.event
		FROM m JOIN evpipe.events e USING (event_id)
		ON CONFLICT (event_id, destination) DO NOTHING
		RETURNING 1
	)
	SELECT count(*)::integer FROM i;
$$;
COMMENT ON FUNCTION evpipe._dead_letter_pending(text, text) IS
	'Internal: move every pending delivery of a destination to the dead-letter table';

CREATE FUNCTION evpipe.add_route(event_type text, destination text, source text DEFAULT NULL, priority text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	rid integer;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM evpipe.destinations d WHERE d.name = add_route.destination) THEN
		RAISE EXCEPTION 'destination "%" does not exist', destination USING ERRCODE = '42704',
			HINT = 'Create it with evpipe.create_destination().';
	END IF;
	IF event_type IS NULL OR event_type !~ '^([A-Za-z0-9][A-Za-z0-9._:-]{0,127}|[A-Za-z0-9._:-]{0,127}\*)$' THEN
		RAISE EXCEPTION 'invalid route pattern %', pg_catalog.quote_nullable(event_type) USING ERRCODE = '22023',
			DETAIL = 'A pattern is an event type name, or a prefix followed by * (for example ACCOUNT_*), or * alone.';
	END IF;
	IF priority IS NOT NULL AND priority !~ '^[A-Za-z0-9_-]{1,32}$' THEN
		RAISE EXCEPTION 'invalid priority %', pg_catalog.quote_literal(priority) USING ERRCODE = '22023';
	END IF;
	INSERT INTO evpipe.routes (event_type, destination, source, priority)
		VALUES (event_type, destination, source, priority) RETURNING id INTO rid;
	RETURN rid;
EXCEPTION WHEN unique_violation THEN
	RAISE EXCEPTION 'this route already exists' USING ERRCODE = '42710';
END
$$;
COMMENT ON FUNCTION evpipe.add_route(text, text, text, text) IS
	'Add a routing rule: events of this type (exact, or prefix ending in *), optionally only from a source and with a priority, go to the destination; returns the rule id';

CREATE FUNCTION evpipe.set_route_enabled(route_id integer, enabled boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE evpipe.routes r SET enabled = set_route_enabled.enabled WHERE r.id = route_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'route % does not exist', route_id USING ERRCODE = '42704';
	END IF;
END
$$;
COMMENT ON FUNCTION evpipe.set_route_enabled(integer, boolean) IS 'Disable or re-enable a routing rule';

CREATE FUNCTION evpipe.drop_route(route_id integer)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	DELETE FROM evpipe.routes r WHERE r.id = route_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'route % does not exist', route_id USING ERRCODE = '42704';
	END IF;
END
$$;
COMMENT ON FUNCTION evpipe.drop_route(integer) IS 'Drop a routing rule';

-- Listings for operators (no secrets)
CREATE FUNCTION evpipe._redact(config jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.jsonb_object_agg(k,
		CASE WHEN k IN ('secret', 'secret_access_key', 'session_token') THEN '"********"'::jsonb
			WHEN k = 'headers' THEN (SELECT COALESCE(pg_catalog.jsonb_object_agg(h, '"********"'::jsonb), '{}')
				FROM pg_catalog.jsonb_object_keys(v) h)
			ELSE v END)
	FROM pg_catalog.jsonb_each(config) AS c(k, v);
$$;
COMMENT ON FUNCTION evpipe._redact(jsonb) IS 'Internal: a destination config with secrets and header values masked';

CREATE VIEW evpipe.destination_list AS
	SELECT d.name, d.kind, d.enabled, evpipe._redact(d.config) AS config, d.created_at, d.updated_at
	FROM evpipe.destinations d;
COMMENT ON VIEW evpipe.destination_list IS 'Destinations with secrets and header values masked';

CREATE VIEW evpipe.event_type_list AS
	SELECT DISTINCT ON (t.event_type) t.event_type, t.version AS current_version, t.enabled,
		t.schema, t.created_at
	FROM evpipe.event_types t ORDER BY t.event_type, t.version DESC;
COMMENT ON VIEW evpipe.event_type_list IS 'Each event type with its current (newest) schema version';

CREATE VIEW evpipe.route_list AS
	SELECT r.id, r.event_type, r.source, r.priority, r.destination, r.enabled, r.created_at
	FROM evpipe.routes r ORDER BY r.id;
COMMENT ON VIEW evpipe.route_list IS 'Routing rules in evaluation order';

CREATE VIEW evpipe.source_list AS
	SELECT s.source, s.event_type, s.id_field, s.timestamp_field,
		(SELECT pg_catalog.array_agg(r.role_name ORDER BY r.role_name) FROM evpipe.source_roles r
			WHERE r.source = s.source) AS roles
	FROM evpipe.sources s;
COMMENT ON VIEW evpipe.source_list IS 'Sources with their mapping and bound roles';

---------------------------------------------------------------------------
-- Dead letters
---------------------------------------------------------------------------

CREATE FUNCTION evpipe.replay_dead_letters(destination text DEFAULT NULL, event_type text DEFAULT NULL,
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
		WHERE NOT EXISTS (SELECT FROM evpipe.outbox o WHERE o.event_id = m.event_id AND o.destination = m.destination)
		RETURNING 1
	)
	SELECT count(*) INTO n FROM i;
	IF n > 0 THEN
		PERFORM evpipe._wake_workers();
	END IF;
	RETURN n;
END
$$;
COMMENT ON FUNCTION evpipe.replay_dead_letters(text, text, timestamptz, text) IS
	'Move matching dead letters back to the outbox with fresh attempts, keeping the eventId (idempotency key); returns how many';

CREATE FUNCTION evpipe.purge_dead_letters(destination text DEFAULT NULL, event_type text DEFAULT NULL,
	since timestamptz DEFAULT NULL, event_id text DEFAULT NULL, before timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
	WITH d AS (
		DELETE FROM evpipe.dead_letters x
		WHERE (purge_dead_letters.destination IS NULL OR x.destination = purge_dead_letters.destination)
			AND (purge_dead_letters.event_type IS NULL OR x.event_type = purge_dead_letters.event_type)
			AND (purge_dead_letters.since IS NULL OR x.dead_at >= purge_dead_letters.since)
			AND (purge_dead_letters.before IS NULL OR x.dead_at < purge_dead_letters.before)
			AND (purge_dead_letters.event_id IS NULL OR x.event_id = purge_dead_letters.event_id)
		RETURNING 1
	)
	SELECT count(*)::integer FROM d;
$$;
COMMENT ON FUNCTION evpipe.purge_dead_letters(text, text, timestamptz, text, timestamptz) IS
	'Delete matching dead letters for good; returns how many';

CREATE FUNCTION evpipe._wake_workers()
RETURNS void
AS 'MODULE_PATHNAME', 'evpipe_wake_workers'
LANGUAGE C;
COMMENT ON FUNCTION evpipe._wake_workers() IS 'Internal: wake the delivery workers when this transaction commits';

---------------------------------------------------------------------------
-- Observability
---------------------------------------------------------------------------

CREATE FUNCTION evpipe._runtime(destination text, OUT current_rate double precision,
	OUT throttled_seconds double precision, OUT paused_until timestamptz,
	OUT circuit text, OUT circuit_open_until timestamptz)
AS 'MODULE_PATHNAME', 'evpipe_runtime'
LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION evpipe._runtime(text) IS
	'Internal: shared-memory state of a destination (sends in the last second, time throttled, pause, circuit breaker)';

CREATE VIEW evpipe.stats AS
	SELECT d.name AS destination, d.kind, d.enabled,
		COALESCE(o.pending, 0) AS pending,
		COALESCE(o.in_flight, 0) AS in_flight,
		COALESCE(o.retrying, 0) AS retrying,
		COALESCE(dl.delivered, 0) AS delivered,
		COALESCE(dl.retried, 0) + COALESCE(x.retried, 0) + COALESCE(o.retrying, 0) AS retried,
		COALESCE(x.dead, 0) AS dead_lettered,
		now() - o.oldest AS oldest_pending_age,
		le.last_error, le.last_error_at,
		rt.current_rate, rt.throttled_seconds, rt.paused_until, rt.circuit, rt.circuit_open_until
	FROM evpipe.destinations d
	LEFT JOIN LATERAL (
		SELECT count(*) FILTER (WHERE ob.lease_until IS NULL OR ob.lease_until <= now()) AS pending,
			count(*) FILTER (WHERE ob.lease_until > now()) AS in_flight,
			count(*) FILTER (WHERE ob.attempts > 0 AND (ob.lease_until IS NULL OR ob.lease_until <= now())) AS retrying,
			min(ob.created_at) AS oldest
		FROM evpipe.outbox ob WHERE ob.destination = d.name) o ON true
	LEFT JOIN LATERAL (
		SELECT count(*) AS delivered, count(*) FILTER (WHERE de.attempts > 1) AS retried
		FROM evpipe.delivered de WHERE de.destination = d.name) dl ON true
	LEFT JOIN LATERAL (
		SELECT count(*) AS dead, count(*) FILTER (WHERE dd.attempts > 1) AS retried
		FROM evpipe.dead_letters dd WHERE dd.destination = d.name) x ON true
	LEFT JOIN LATERAL (
		SELECT e.last_error, e.at AS last_error_at FROM (
			SELECT ob.last_error, ob.last_attempt_at AS at FROM evpipe.outbox ob
				WHERE ob.destination = d.name AND ob.last_error IS NOT NULL
			UNION ALL
			SELECT dd.last_error, dd.dead_at FROM evpipe.dead_letters dd
				WHERE dd.destination = d.name AND dd.last_error IS NOT NULL) e
		ORDER BY e.at DESC NULLS LAST LIMIT 1) le ON true
	LEFT JOIN LATERAL evpipe._runtime(d.name) rt ON true;
COMMENT ON VIEW evpipe.stats IS
	'Per destination: pending, in flight, retrying, delivered, retried, dead-lettered, oldest pending age, last error, current send rate, time throttled by its rate limit, and its circuit breaker (closed, open until a probe, half_open while probing)';

---------------------------------------------------------------------------
-- Operations
---------------------------------------------------------------------------

CREATE FUNCTION evpipe.set_source_limit(source text, per_sec double precision, burst integer DEFAULT 1)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF per_sec IS NULL THEN
		DELETE FROM evpipe.source_limits l WHERE l.source = set_source_limit.source;
		RETURN;
	END IF;
	IF per_sec <= 0 OR per_sec > 1000000 OR burst IS NULL OR burst < 1 THEN
		RAISE EXCEPTION 'a source limit needs per_sec above 0 (at most 1000000) and burst of at least 1'
			USING ERRCODE = '22023';
	END IF;
	IF source IS NULL OR source !~ '^[^[:cntrl:]]{1,128}$' THEN
		RAISE EXCEPTION 'invalid source name' USING ERRCODE = '22023';
	END IF;
	INSERT INTO evpipe.sources (source) VALUES (source) ON CONFLICT DO NOTHING;
	INSERT INTO evpipe.source_limits AS l (source, per_sec, burst) VALUES (source, per_sec, burst)
		ON CONFLICT ON CONSTRAINT source_limits_pkey DO UPDATE SET per_sec = excluded.per_sec, burst = excluded.burst;
END
$$;
COMMENT ON FUNCTION evpipe.set_source_limit(text, double precision, integer) IS
	'Limit ingest from a source to per_sec events per second with a burst; over the limit ingest raises PT429 and writes nothing; per_sec NULL removes the limit';

CREATE FUNCTION evpipe.pause_destination(name text)
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT evpipe.set_destination_enabled(name, false) $$;
COMMENT ON FUNCTION evpipe.pause_destination(text) IS
	'Stop delivering to a destination; new events keep queueing in the outbox, nothing is lost';

CREATE FUNCTION evpipe.resume_destination(name text)
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT evpipe.set_destination_enabled(name, true) $$;
COMMENT ON FUNCTION evpipe.resume_destination(text) IS 'Resume delivering to a paused destination';

CREATE FUNCTION evpipe.drain(destination text DEFAULT NULL, timeout interval DEFAULT '30 seconds')
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	deadline timestamptz := clock_timestamp() + timeout;
BEGIN
	IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
		RAISE EXCEPTION 'evpipe.drain() needs READ COMMITTED' USING ERRCODE = '25000',
			HINT = 'It waits for other transactions to deliver rows, which a fixed snapshot cannot see.';
	END IF;
	LOOP
		IF NOT EXISTS (SELECT 1 FROM evpipe.outbox o
			WHERE drain.destination IS NULL OR o.destination = drain.destination) THEN
			RETURN true;
		END IF;
		IF clock_timestamp() >= deadline THEN
			RETURN false;
		END IF;
		PERFORM pg_catalog.pg_sleep(0.05);
	END LOOP;
END
$$;
COMMENT ON FUNCTION evpipe.drain(text, interval) IS
	'Wait until a destination (or every destination) has no outbox rows left, up to timeout; returns whether it drained';

CREATE FUNCTION evpipe.health()
RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
	WITH w AS (
		SELECT COALESCE(NULLIF(pg_catalog.current_setting('evpipe.workers', true), ''), '0')::int AS configured,
			(SELECT count(*) FROM pg_catalog.pg_stat_activity
			 WHERE backend_type = 'evpipe delivery worker')::int AS alive,
			-- evpiped holds the lease holder lock (1702260841, a negative id) while connected
			(SELECT count(*) FROM pg_catalog.pg_locks
			 WHERE locktype = 'advisory' AND granted AND classid = 1702260841 AND objsubid = 2
			  AND objid::int8 >= 2147483648
			  AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))::int AS daemons
	), o AS (
		SELECT count(*)::bigint AS pending,
			COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS oldest
		FROM evpipe.outbox
	), d AS (
		SELECT count(*)::bigint AS dead FROM evpipe.dead_letters WHERE dead_at > now() - interval '1 hour'
	), p AS (
		SELECT COALESCE(pg_catalog.jsonb_agg(name ORDER BY name), '[]') AS paused
		FROM evpipe.destinations WHERE NOT enabled
	)
	SELECT pg_catalog.jsonb_build_object(
		'status', CASE WHEN w.alive < w.configured OR (w.configured = 0 AND w.daemons = 0) THEN 'degraded'
			WHEN d.dead > 0 OR o.oldest > 300 THEN 'warning' ELSE 'ok' END,
		'workersConfigured', w.configured, 'workersAlive', w.alive, 'daemonsConnected', w.daemons,
		'pending', o.pending, 'oldestPendingAgeSeconds', round(o.oldest::numeric, 3),
		'deadLettersLastHour', d.dead, 'pausedDestinations', p.paused)
	FROM w, o, d, p;
$$;
COMMENT ON FUNCTION evpipe.health() IS
	'A summary for on-call: workers alive vs configured, evpiped daemons connected, pending rows and the oldest one''s age, dead letters in the last hour, paused destinations';

CREATE FUNCTION evpipe.metrics()
RETURNS text
AS 'MODULE_PATHNAME', 'evpipe_metrics'
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION evpipe.metrics() IS
	'Counters and gauges in the Prometheus text exposition format (labels destination, event_type, reason, source)';

-- Outcome events: when evpipe.outcome_events is on, a delivery reaching a
-- final state is itself ingested (and routed like any other event).
SELECT evpipe.register_event_type('evpipe.delivery_succeeded', '{
	"type": "object", "required": ["eventId", "eventType", "destination", "attempts"],
	"properties": {"eventId": {"type": "string"}, "eventType": {"type": "string"},
		"destination": {"type": "string"}, "attempts": {"type": "integer"},
		"status": {"type": ["integer", "null"]}, "error": {"type": ["string", "null"]}}}');
SELECT evpipe.register_event_type('evpipe.delivery_failed', '{
	"type": "object", "required": ["eventId", "eventType", "destination", "attempts"],
	"properties": {"eventId": {"type": "string"}, "eventType": {"type": "string"},
		"destination": {"type": "string"}, "attempts": {"type": "integer"},
		"status": {"type": ["integer", "null"]}, "error": {"type": ["string", "null"]}}}');

CREATE FUNCTION evpipe._emit_outcome(event_id text, destination text, delivered boolean,
	attempts integer, status integer, error text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	et text;
	tp text;
BEGIN
	SELECT e.event_type, e.traceparent INTO et, tp FROM evpipe.events e WHERE e.event_id = _emit_outcome.event_id;
	IF et IS NULL OR et IN ('evpipe.delivery_succeeded', 'evpipe.delivery_failed') THEN
		RETURN;					-- never for the outcome events' own deliveries
	END IF;
	PERFORM evpipe.ingest(pg_catalog.jsonb_build_object(
		'eventId', 'outcome-' || pg_catalog.md5(event_id || '/' || destination || '/' || clock_timestamp()::text),
		'eventType', CASE WHEN delivered THEN 'evpipe.delivery_succeeded' ELSE 'evpipe.delivery_failed' END,
		'source', 'evpipe',
		'timestamp', pg_catalog.to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
		'payload', pg_catalog.jsonb_build_object('eventId', event_id, 'eventType', et,
			'destination', destination, 'attempts', attempts, 'status', status, 'error', error))
		|| CASE WHEN tp IS NULL THEN '{}'::jsonb ELSE pg_catalog.jsonb_build_object('traceparent', tp) END);
EXCEPTION WHEN invalid_parameter_value THEN
	NULL;						-- no route for outcome events: nothing to send
END
$$;
COMMENT ON FUNCTION evpipe._emit_outcome(text, text, boolean, integer, integer, text) IS
	'Internal: ingest the outcome event of a delivery that reached a final state';

---------------------------------------------------------------------------
-- Delivery from outside the server (0.3.0): evpiped, the delivery engine as a
-- daemon over libpq, connects as a login role that is a member of
-- evpipe_worker, and shares the outbox with the in-server workers.
---------------------------------------------------------------------------

CREATE TABLE evpipe.rate_schedule (
	destination text PRIMARY KEY REFERENCES evpipe.destinations ON UPDATE CASCADE ON DELETE CASCADE,
	tat timestamptz NOT NULL
);
COMMENT ON TABLE evpipe.rate_schedule IS
	'Runtime state of destination rate limits shared by every delivery host (in-server workers and evpiped): the theoretical arrival time of the next send';

CREATE FUNCTION evpipe._deliver_function(destination text, event jsonb,
	OUT ok boolean, OUT permanent boolean, OUT error text)
RETURNS record
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'evpipe_deliver_function';
COMMENT ON FUNCTION evpipe._deliver_function(text, jsonb) IS
	'Internal: run a function destination''s handler with one event as the destination''s owner (for evpiped); its error is the answer';

CREATE FUNCTION evpipe._notify_destinations()
RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM pg_catalog.pg_notify('evpipe_destinations', '');
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION evpipe._notify_destinations() IS
	'Internal trigger: tells evpiped daemons (LISTEN evpipe_destinations) to reload their destinations';
CREATE TRIGGER notify_destinations AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON evpipe.destinations
	FOR EACH STATEMENT EXECUTE FUNCTION evpipe._notify_destinations();

-- outcome events are ingested as the extension's owner: the worker role may
-- emit them without being allowed to ingest anything else
ALTER FUNCTION evpipe._emit_outcome(text, text, boolean, integer, integer, text) SECURITY DEFINER;

-- Retention as SQL (0.4.0): one batch of evpipe.delivered_retention and
-- evpipe.event_retention, the statements the in-server workers run
-- (src/retention.c), for hosts that are not the server: evpiped runs it on a
-- managed install, where no worker exists; operators may CALL
-- evpipe.run_retention() from pg_cron instead. One host at a time (a
-- transaction-level advisory lock; the others skip the round).
CREATE FUNCTION evpipe._retention_batch(after timestamptz DEFAULT NULL,
	OUT delivered_removed bigint, OUT events_removed bigint, OUT next_after timestamptz, OUT more boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	keep_delivered interval := COALESCE(NULLIF(pg_catalog.current_setting('evpipe.delivered_retention', true), ''), '7d')::interval;
	keep_events interval := COALESCE(NULLIF(pg_catalog.current_setting('evpipe.event_retention', true), ''), '7d')::interval;
	examined bigint;
	last timestamptz;
BEGIN
	delivered_removed := 0;
	events_removed := 0;
	next_after := NULL;
	more := false;
	IF NOT pg_catalog.pg_try_advisory_xact_lock(1702260841, 0) THEN
		RETURN;					-- another host is removing: skip this round
	END IF;
	IF keep_delivered > interval '0' THEN
		DELETE FROM evpipe.delivered WHERE ctid = ANY (ARRAY(
			SELECT d.ctid FROM evpipe.delivered d WHERE d.delivered_at < pg_catalog.now() - keep_delivered LIMIT 1000));
		GET DIAGNOSTICS delivered_removed = ROW_COUNT;
		more := delivered_removed = 1000;
	END IF;
	IF keep_events > interval '0' THEN
		-- walk forward in ingested_at order from the cursor; kept events (with an
		-- outbox row or a dead letter) are passed, not examined again
		WITH c AS MATERIALIZED (
			SELECT e.ctid AS t, e.event_id, e.ingested_at FROM evpipe.events e
			WHERE (after IS NULL OR e.ingested_at > after) AND e.ingested_at < pg_catalog.now() - keep_events
			ORDER BY e.ingested_at LIMIT 1000),
		d AS (DELETE FROM evpipe.events e WHERE e.ctid = ANY (ARRAY(
			SELECT c.t FROM c
			WHERE NOT EXISTS (SELECT FROM evpipe.outbox o WHERE o.event_id = c.event_id)
			  AND NOT EXISTS (SELECT FROM evpipe.dead_letters x WHERE x.event_id = c.event_id)))
			RETURNING 1)
		SELECT (SELECT pg_catalog.count(*) FROM d), (SELECT pg_catalog.count(*) FROM c), (SELECT pg_catalog.max(c.ingested_at) FROM c)
		INTO events_removed, examined, last;
		IF examined = 1000 THEN
			next_after := last;
			more := true;
		END IF;
	END IF;
END
$$;
COMMENT ON FUNCTION evpipe._retention_batch(timestamptz) IS
	'Internal: remove one batch (at most 1,000 rows each) of delivered rows and events older than their retention, from the cursor on; for hosts other than the in-server workers';

CREATE PROCEDURE evpipe.run_retention(max_batches integer DEFAULT 1000)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
	cursor_at timestamptz := NULL;
BEGIN
	FOR i IN 1 .. max_batches LOOP
		SELECT * INTO r FROM evpipe._retention_batch(cursor_at);
		COMMIT;					-- each batch its own short transaction
		EXIT WHEN NOT r.more;
		cursor_at := r.next_after;
	END LOOP;
END
$$;
COMMENT ON PROCEDURE evpipe.run_retention(integer) IS
	'Remove delivered rows and events older than evpipe.delivered_retention / evpipe.event_retention, in batches of 1,000, each committed (CALL it outside a transaction block, e.g. from pg_cron)';

---------------------------------------------------------------------------
-- Privileges
---------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA evpipe FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA evpipe FROM PUBLIC;
REVOKE ALL ON PROCEDURE evpipe.run_retention(integer) FROM PUBLIC;
GRANT USAGE ON SCHEMA evpipe TO evpipe_producer, evpipe_admin;
GRANT EXECUTE ON FUNCTION evpipe.ingest(jsonb, text), evpipe.ingest_batch(jsonb, text), evpipe.route_explain(jsonb, text),
	evpipe.validate(jsonb, jsonb), evpipe.version()
	TO evpipe_producer, evpipe_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA evpipe TO evpipe_admin;
GRANT EXECUTE ON FUNCTION
	evpipe.register_event_type(text, jsonb), evpipe.set_event_type_enabled(text, boolean),
	evpipe.drop_event_type(text),
	evpipe.register_source(text, text, text, text), evpipe.bind_source(text, name),
	evpipe.unbind_source(text, name), evpipe.drop_source(text),
	evpipe.create_destination(text, text, jsonb), evpipe.alter_destination(text, jsonb),
	evpipe.set_destination_enabled(text, boolean), evpipe.drop_destination(text, boolean),
	evpipe.add_route(text, text, text, text), evpipe.set_route_enabled(integer, boolean),
	evpipe.drop_route(integer),
	evpipe.replay_dead_letters(text, text, timestamptz, text),
	evpipe.purge_dead_letters(text, text, timestamptz, text, timestamptz),
	evpipe._redact(jsonb), evpipe._runtime(text),
	evpipe.set_source_limit(text, double precision, integer),
	evpipe.pause_destination(text), evpipe.resume_destination(text),
	evpipe.drain(text, interval), evpipe.health(), evpipe.metrics()
	TO evpipe_admin;

-- evpipe_worker (0.3.0): what a delivery engine needs, nothing more
REVOKE ALL ON evpipe.rate_schedule FROM PUBLIC;
REVOKE ALL ON FUNCTION evpipe._deliver_function(text, jsonb), evpipe._notify_destinations() FROM PUBLIC;
GRANT SELECT ON evpipe.rate_schedule TO evpipe_admin;
GRANT USAGE ON SCHEMA evpipe TO evpipe_worker;
GRANT EXECUTE ON FUNCTION evpipe._retention_batch(timestamptz) TO evpipe_worker, evpipe_admin;
GRANT EXECUTE ON PROCEDURE evpipe.run_retention(integer) TO evpipe_admin;
GRANT SELECT ON evpipe.destinations, evpipe.events TO evpipe_worker;
GRANT SELECT, UPDATE, DELETE ON evpipe.outbox TO evpipe_worker;
GRANT SELECT, INSERT, UPDATE ON evpipe.delivered, evpipe.dead_letters, evpipe.rate_schedule TO evpipe_worker;
GRANT EXECUTE ON FUNCTION evpipe._emit_outcome(text, text, boolean, integer, integer, text),
	evpipe._deliver_function(text, jsonb) TO evpipe_worker;

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
