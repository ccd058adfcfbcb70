# Sourced by run and run-deferred (after H and P are set): psql for the cluster,
# and the databases the experiment measures in.

psql() { command psql -h "$H" -p "$P" -X -q -v ON_ERROR_STOP=1 "$@"; }

# setup_databases "EVPIPE_DBS" "EVENT_ROW_ONLY_DBS": fresh ev_bare (a table with
# a primary key), ev_pgq (a queue), evpipe databases with the bench's paused
# destination, and of those the event-row-only ones (destinations in the row,
# an xid8 index in place of events_ingested_at, the patched statement switched on)
setup_databases() {
	local d
	for d in ev_bare ev_pgq $1; do
		psql -d postgres -c "DROP DATABASE IF EXISTS $d" -c "CREATE DATABASE $d"
	done
	psql -d ev_bare -c "CREATE EXTENSION pgcrypto" -c "CREATE TABLE bare (event_id text PRIMARY KEY, event jsonb NOT NULL)"
	psql -d ev_pgq -c "CREATE EXTENSION pgq" -c "CREATE EXTENSION pgcrypto" -c "SELECT pgq.create_queue('q')" >/dev/null
	for d in $1; do
		psql -d "$d" >/dev/null <<'SQL'
CREATE EXTENSION evpipe;
CREATE EXTENSION pgcrypto;
SELECT evpipe.register_event_type('BENCH', '{"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}, "note": {"type": "string", "maxLength": 200}}}');
SELECT evpipe.create_destination('bench-off', 'http', '{"url": "http://127.0.0.1:9/"}');
SELECT evpipe.pause_destination('bench-off');
SELECT evpipe.add_route('BENCH', 'bench-off');
SQL
	done
	for d in $2; do
		psql -d "$d" -c "ALTER TABLE evpipe.events ADD COLUMN fanout text[], ADD COLUMN ingest_xid xid8 NOT NULL DEFAULT pg_current_xact_id()" \
			-c "DROP INDEX evpipe.events_ingested_at" -c "CREATE INDEX events_ingest_xid ON evpipe.events (ingest_xid)" \
			-c "ALTER DATABASE $d SET proto.fanout = 'on'"
	done
}
