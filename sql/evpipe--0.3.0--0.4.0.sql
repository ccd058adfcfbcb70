-- evpipe 0.3.0 -> 0.4.0: evpipe.validate(schema, document), the validator on its own, evpipe.version(), and retention
-- as SQL for hosts other than the in-server workers (evpipe._retention_batch, evpipe.run_retention) (the managed install,
-- installed by evpiped migrate, has the same function in PL/pgSQL; both answer the same)
\echo Use "ALTER EXTENSION evpipe UPDATE TO '0.4.0'" to load this file. \quit

CREATE FUNCTION evpipe.validate(schema jsonb, document jsonb)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'evpipe_validate'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION evpipe.validate(jsonb, jsonb) IS
	'Check a document against a JSON Schema as ingest checks payloads: NULL when valid, else the first error as {path, rule, message}';
CREATE FUNCTION evpipe.version()
RETURNS text
AS 'MODULE_PATHNAME', 'evpipe_version'
LANGUAGE C STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION evpipe.version() IS
	'The version of evpipe''s schema in this database, in either install (the extension''s, or the managed install''s from evpipe.migrations)';

REVOKE ALL ON FUNCTION evpipe.validate(jsonb, jsonb), evpipe.version() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION evpipe.validate(jsonb, jsonb), evpipe.version() TO evpipe_producer, evpipe_admin;

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

REVOKE ALL ON FUNCTION evpipe._retention_batch(timestamptz) FROM PUBLIC;
REVOKE ALL ON PROCEDURE evpipe.run_retention(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION evpipe._retention_batch(timestamptz) TO evpipe_worker, evpipe_admin;
GRANT EXECUTE ON PROCEDURE evpipe.run_retention(integer) TO evpipe_admin;
