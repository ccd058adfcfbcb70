-- metrics.sql: the twins of evpipe.metrics() (src/metricsql.c, src/metrics.c)
-- and evpipe._runtime(text) (src/evpipe.c). The extension keeps counters and
-- the rate limiter's state in shared memory; the managed install has none, so
-- these answer from the tables what the tables know, and leave the rest to each
-- evpiped's own /metrics (--metrics-addr), where the daemon that sends keeps it.

-- A Prometheus label, name="value", the value escaped as metrics.c's label() does.
CREATE OR REPLACE FUNCTION evpipe._metric_label(name text, value text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN name || '="' || pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(COALESCE(value, ''),
		E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n') || '"';
END
$$;
COMMENT ON FUNCTION evpipe._metric_label(text, text) IS
	'Internal (managed install): a Prometheus label name="value" with the value escaped (metrics.c label())';

-- A family's # HELP and # TYPE lines (metrics.c header()).
CREATE OR REPLACE FUNCTION evpipe._metric_header(name text, type text, help text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN pg_catalog.format(E'# HELP %s %s\n# TYPE %s %s\n', name, help, name, type);
END
$$;
COMMENT ON FUNCTION evpipe._metric_header(text, text, text) IS
	'Internal (managed install): the # HELP and # TYPE lines of a metric family';

-- evpipe.metrics(): the families of metrics.c in its order and format. Counted
-- from the tables (what they hold now: retention, purge and replay remove rows):
-- ingested (evpipe.events); delivered, retries, dead letters and the latency
-- histogram per (destination, event type) from evpipe.delivered,
-- evpipe.dead_letters and evpipe.outbox; the gauges as evpiped computes them.
-- Duplicates, rejections and throttled ingests write nothing (a refusal rolls
-- back), and rate-limit waits and circuits live in the daemons: those families
-- have no samples here (evpiped's /metrics has the last two).
CREATE OR REPLACE FUNCTION evpipe.metrics()
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	les text[] := ARRAY['0.001', '0.0025', '0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '5', '30'];
	out text;
	r record;
	labels text;
	k integer;
	delivered text := '';
	retries text := '';
	dead text := '';
	latency text := '';
	pending text := '';
	inflight text := '';
	age text := '';
BEGIN
	out := evpipe._metric_header('evpipe_events_ingested_total', 'counter', 'Events accepted by evpipe.ingest.');
	FOR r IN SELECT e.event_type, count(*) AS n FROM evpipe.events e
		GROUP BY e.event_type ORDER BY e.event_type COLLATE "C" LOOP
		out := out || 'evpipe_events_ingested_total{' || evpipe._metric_label('event_type', r.event_type)
			|| '} ' || r.n || E'\n';
	END LOOP;
	out := out || evpipe._metric_header('evpipe_events_duplicate_total', 'counter',
			'Ingests of an event that existed already (nothing written).')
		|| evpipe._metric_header('evpipe_events_rejected_total', 'counter',
			'Ingests refused, by reason (the rule or SQLSTATE).')
		|| evpipe._metric_header('evpipe_ingest_throttled_total', 'counter',
			'Ingests refused by a source''s limit (PT429).');

	-- per (destination, event type): rows delivered and dead; the failed
	-- attempts retried (all but the last attempt of a final row, every attempt of
	-- a waiting row but the one in flight); delivery latency (ingest to
	-- delivered_at) in cumulative buckets
	FOR r IN
		WITH dl AS (
			SELECT d.destination, d.event_type, count(*) AS delivered, sum(GREATEST(d.attempts - 1, 0)) AS retried,
				sum(d.lat) AS lat_sum,
				ARRAY[count(*) FILTER (WHERE d.lat <= 0.001), count(*) FILTER (WHERE d.lat <= 0.0025),
					count(*) FILTER (WHERE d.lat <= 0.005), count(*) FILTER (WHERE d.lat <= 0.01),
					count(*) FILTER (WHERE d.lat <= 0.025), count(*) FILTER (WHERE d.lat <= 0.05),
					count(*) FILTER (WHERE d.lat <= 0.1), count(*) FILTER (WHERE d.lat <= 0.25),
					count(*) FILTER (WHERE d.lat <= 0.5), count(*) FILTER (WHERE d.lat <= 1),
					count(*) FILTER (WHERE d.lat <= 5), count(*) FILTER (WHERE d.lat <= 30)] AS buckets
			FROM (SELECT d.destination, COALESCE(e.event_type, '') AS event_type, d.attempts,
					GREATEST(EXTRACT(EPOCH FROM d.delivered_at - d.created_at), 0) AS lat
				FROM evpipe.delivered d LEFT JOIN evpipe.events e ON e.event_id = d.event_id) d
			GROUP BY 1, 2
		), dd AS (
			SELECT x.destination, x.event_type, count(*) AS dead, sum(GREATEST(x.attempts - 1, 0)) AS retried
			FROM evpipe.dead_letters x GROUP BY 1, 2
		), ob AS (
			SELECT o.destination, COALESCE(e.event_type, '') AS event_type,
				sum(GREATEST(o.attempts - CASE WHEN o.lease_until > now() THEN 1 ELSE 0 END, 0)) AS retried
			FROM evpipe.outbox o LEFT JOIN evpipe.events e ON e.event_id = o.event_id
			WHERE o.attempts > 0 GROUP BY 1, 2
		), k AS (
			SELECT dl.destination, dl.event_type FROM dl UNION SELECT dd.destination, dd.event_type FROM dd
			UNION SELECT ob.destination, ob.event_type FROM ob
		)
		SELECT k.destination, k.event_type, COALESCE(dl.delivered, 0) AS delivered, COALESCE(dd.dead, 0) AS dead,
			(COALESCE(dl.retried, 0) + COALESCE(dd.retried, 0) + COALESCE(ob.retried, 0))::bigint AS retried,
			dl.lat_sum, dl.buckets
		FROM k LEFT JOIN dl ON dl.destination = k.destination AND dl.event_type = k.event_type
			LEFT JOIN dd ON dd.destination = k.destination AND dd.event_type = k.event_type
			LEFT JOIN ob ON ob.destination = k.destination AND ob.event_type = k.event_type
		ORDER BY k.destination COLLATE "C", k.event_type COLLATE "C"
	LOOP
		labels := evpipe._metric_label('destination', r.destination) || ','
			|| evpipe._metric_label('event_type', r.event_type);
		delivered := delivered || 'evpipe_delivered_total{' || labels || '} ' || r.delivered || E'\n';
		retries := retries || 'evpipe_retries_total{' || labels || '} ' || r.retried || E'\n';
		dead := dead || 'evpipe_dead_letters_total{' || labels || '} ' || r.dead || E'\n';
		IF r.delivered > 0 THEN
			FOR k IN 1 .. 12 LOOP
				latency := latency || 'evpipe_delivery_latency_seconds_bucket{' || labels || ',le="' || les[k]
					|| '"} ' || r.buckets[k] || E'\n';
			END LOOP;
			latency := latency || 'evpipe_delivery_latency_seconds_bucket{' || labels || ',le="+Inf"} '
					|| r.delivered || E'\n'
				|| 'evpipe_delivery_latency_seconds_sum{' || labels || '} ' || round(r.lat_sum, 6) || E'\n'
				|| 'evpipe_delivery_latency_seconds_count{' || labels || '} ' || r.delivered || E'\n';
		END IF;
	END LOOP;
	out := out || evpipe._metric_header('evpipe_delivered_total', 'counter', 'Deliveries that succeeded.')
		|| delivered
		|| evpipe._metric_header('evpipe_retries_total', 'counter', 'Failed attempts scheduled for a retry.')
		|| retries
		|| evpipe._metric_header('evpipe_dead_letters_total', 'counter', 'Deliveries moved to the dead-letter table.')
		|| dead
		|| evpipe._metric_header('evpipe_delivery_latency_seconds', 'histogram',
			'Time from ingest commit to successful delivery.')
		|| latency;

	-- gauges, as evpiped's gauges statement (src/enginesql.c) computes them
	FOR r IN SELECT d.name, count(o.id) FILTER (WHERE o.lease_until IS NULL OR o.lease_until <= now()) AS pending,
			count(o.id) FILTER (WHERE o.lease_until > now()) AS in_flight,
			COALESCE(EXTRACT(EPOCH FROM now() - min(o.created_at)), 0)::float8 AS age
		FROM evpipe.destinations d LEFT JOIN evpipe.outbox o ON o.destination = d.name
		GROUP BY d.name ORDER BY d.name
	LOOP
		labels := evpipe._metric_label('destination', r.name);
		pending := pending || 'evpipe_pending{' || labels || '} ' || r.pending || E'\n';
		inflight := inflight || 'evpipe_in_flight{' || labels || '} ' || r.in_flight || E'\n';
		age := age || 'evpipe_oldest_pending_age_seconds{' || labels || '} ' || r.age || E'\n';
	END LOOP;
	out := out || evpipe._metric_header('evpipe_pending', 'gauge', 'Outbox rows waiting for delivery (not in flight).')
		|| pending
		|| evpipe._metric_header('evpipe_in_flight', 'gauge', 'Outbox rows leased by a worker.')
		|| inflight
		|| evpipe._metric_header('evpipe_oldest_pending_age_seconds', 'gauge', 'Age of the oldest outbox row.')
		|| age
		|| evpipe._metric_header('evpipe_rate_limit_wait_seconds_total', 'counter',
			'Time sends waited for the destination''s rate limit.')
		|| evpipe._metric_header('evpipe_circuit_open', 'gauge',
			'1 while the destination''s circuit breaker holds its rows back (open or probing).');

	-- no delivery worker runs in the server here: 0, as the extension counts them
	SELECT out || evpipe._metric_header('evpipe_workers_alive', 'gauge', 'Delivery workers running.')
		|| 'evpipe_workers_alive ' || count(*) || E'\n'
		INTO out
		FROM pg_catalog.pg_stat_activity WHERE backend_type = 'evpipe delivery worker';
	RETURN out;
END
$$;

-- evpipe._runtime(destination): the extension reads its workers' shared memory
-- (sends in the last second, time throttled, Retry-After pause, circuit
-- breaker). The managed install has no in-server worker, and each evpiped keeps
-- these in its own memory (its /metrics shows the waits and circuits), so the
-- database does not know them: every column is NULL, as in the extension
-- without shared_preload_libraries. (evpipe.rate_schedule holds only the next
-- send time of a shared rate limit; a pause by an operator is
-- evpipe.destinations.enabled, which evpipe.stats shows.)
CREATE OR REPLACE FUNCTION evpipe._runtime(destination text, OUT current_rate double precision,
	OUT throttled_seconds double precision, OUT paused_until timestamptz,
	OUT circuit text, OUT circuit_open_until timestamptz)
LANGUAGE plpgsql STRICT VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	current_rate := NULL;
	throttled_seconds := NULL;
	paused_until := NULL;
	circuit := NULL;
	circuit_open_until := NULL;
END
$$;
