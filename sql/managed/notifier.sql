-- notifier.sql: the twins of evpipe._config_changed() and evpipe._wake_workers()
-- (src/evpipe.c, src/notifier.c). In the managed install evpiped is the only
-- delivery host: no in-server worker to wake, no notifier process, and no
-- configuration cached per backend (the PL/pgSQL twins read the tables), so
-- there is nothing to invalidate. evpiped LISTENs to evpipe_wake (new rows) and
-- evpipe_destinations (sent by the notify_destinations trigger; it also wakes
-- the daemon), and polls every evpipe.tick_ms whatever arrives.

-- Trigger on the configuration tables: no caches to drop; on evpipe.destinations, keep the handlers' entry points in step.
CREATE OR REPLACE FUNCTION evpipe._config_changed()
RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- a change of configuration creates no outbox row, so it needs no wake-up of
	-- its own: the daemons reload (and claim) on evpipe_destinations
	IF TG_TABLE_NAME = 'destinations' THEN
		PERFORM evpipe._sync_handler_owners();
	END IF;
	RETURN NULL;
END
$$;

-- Wake the evpiped daemons when this transaction commits: one NOTIFY evpipe_wake
-- (the notifier's), which PostgreSQL sends at commit, once per transaction
-- however often it is called, and drops on rollback.
CREATE OR REPLACE FUNCTION evpipe._wake_workers()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
	PERFORM pg_catalog.pg_notify('evpipe_wake', '');
END
$$;
