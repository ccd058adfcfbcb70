-- evpipe 0.2.0 -> 0.3.0: delivery from outside the server (evpiped): the role evpipe_worker, the shared rate
-- schedule, the function destinations' entry point, the destinations' notification
\echo Use "ALTER EXTENSION evpipe UPDATE TO '0.3.0'" to load this file. \quit

-- Roles are cluster-wide: create them once, keep them across DROP EXTENSION.
DO $roles$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'evpipe_worker') THEN
		CREATE ROLE evpipe_worker NOLOGIN;
	END IF;
END
$roles$;

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

-- health counts evpiped daemons (with evpipe.workers = 0 they are the delivery)
CREATE OR REPLACE FUNCTION evpipe.health()
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

-- evpipe_worker (0.3.0): what a delivery engine needs, nothing more
REVOKE ALL ON evpipe.rate_schedule FROM PUBLIC;
REVOKE ALL ON FUNCTION evpipe._deliver_function(text, jsonb), evpipe._notify_destinations() FROM PUBLIC;
GRANT SELECT ON evpipe.rate_schedule TO evpipe_admin;
GRANT USAGE ON SCHEMA evpipe TO evpipe_worker;
GRANT SELECT ON evpipe.destinations, evpipe.events TO evpipe_worker;
GRANT SELECT, UPDATE, DELETE ON evpipe.outbox TO evpipe_worker;
GRANT SELECT, INSERT, UPDATE ON evpipe.delivered, evpipe.dead_letters, evpipe.rate_schedule TO evpipe_worker;
GRANT EXECUTE ON FUNCTION evpipe._emit_outcome(text, text, boolean, integer, integer, text),
	evpipe._deliver_function(text, jsonb) TO evpipe_worker;
