-- evpipe: installing the extension and the fixtures the other tests use.
-- The same tests run against both installs: the extension (created here) and
-- the managed install (created beforehand by evpiped migrate; see test/run).
DO $$ BEGIN IF pg_catalog.to_regnamespace('evpipe') IS NULL THEN CREATE EXTENSION evpipe; END IF; END $$;
SELECT evpipe.version();

-- Every public object explains itself.
SELECT count(*) = 0 AS every_table_and_view_commented
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'evpipe' AND c.relkind IN ('r', 'v') AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'evpipe' AND obj_description(p.oid, 'pg_proc') IS NULL ORDER BY 1;

-- A helper for the tests: run ingest, show either the answer or the error's
-- SQLSTATE, message and detail on one line.
CREATE FUNCTION try_ingest(event jsonb, src text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	st text; msg text; det text;
BEGIN
	RETURN evpipe.ingest(event, src)::text;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
	RETURN st || ' ' || msg || ' | ' || det;
END
$$;
GRANT EXECUTE ON FUNCTION try_ingest(jsonb, text) TO PUBLIC;

-- Just the status of an ingest, or the SQLSTATE of its error.
CREATE FUNCTION ingest_status(event jsonb, src text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	RETURN evpipe.ingest(event, src)->>'status';
EXCEPTION WHEN OTHERS THEN
	RETURN 'error ' || SQLSTATE;
END
$$;
GRANT EXECUTE ON FUNCTION ingest_status(jsonb, text) TO PUBLIC;

-- An envelope builder, so cases stay short.
CREATE FUNCTION ev(id text, typ text, payload jsonb, extra jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
	SELECT jsonb_build_object('eventId', id, 'eventType', typ, 'source', 'internal-service',
		'payload', payload, 'timestamp', '2026-11-21T10:00:00Z') || extra;
$$;
GRANT EXECUTE ON FUNCTION ev(text, text, jsonb, jsonb) TO PUBLIC;

SELECT evpipe.register_event_type('ACCOUNT_UPDATED', '{
	"type": "object",
	"required": ["accountId"],
	"properties": {
		"accountId": {"type": "string", "minLength": 1},
		"balance": {"type": "number"}
	}
}');
SELECT evpipe.create_destination('ledger', 'http', '{"url": "http://127.0.0.1:9/ledger"}');
SELECT evpipe.add_route('ACCOUNT_UPDATED', 'ledger');
