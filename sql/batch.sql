-- evpipe.ingest_batch: many events in one call, all or nothing. Each event is
-- checked like evpipe.ingest; errors name the event's place in the array.
\set SHOW_CONTEXT never
CREATE FUNCTION try_batch(events jsonb, src text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	st text; msg text; det text;
BEGIN
	RETURN evpipe.ingest_batch(events, src)::text;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
	RETURN st || ' ' || msg || ' | ' || det;
END
$$;
GRANT EXECUTE ON FUNCTION try_batch(jsonb, text) TO PUBLIC;

-- an empty batch writes nothing
SELECT evpipe.ingest_batch('[]');

-- one answer per event, in order; a repeat within the batch is a duplicate
SELECT jsonb_pretty(evpipe.ingest_batch(jsonb_build_array(
	ev('b-1', 'ACCOUNT_UPDATED', '{"accountId": "a1"}'),
	ev('b-2', 'ACCOUNT_UPDATED', '{"accountId": "a2"}'),
	ev('b-1', 'ACCOUNT_UPDATED', '{"accountId": "a1"}'))));
SELECT event_id, destination FROM evpipe.outbox WHERE event_id LIKE 'b-%' ORDER BY id;

-- a retried batch: what is stored is a duplicate, the rest is accepted
SELECT a->>'eventId' AS event_id, a->>'status' AS status, a->'destinations' AS destinations
FROM jsonb_array_elements(evpipe.ingest_batch(jsonb_build_array(
	ev('b-2', 'ACCOUNT_UPDATED', '{"accountId": "a2"}'),
	ev('b-3', 'ACCOUNT_UPDATED', '{"accountId": "a3"}')))) a;
SELECT count(*) AS outbox_rows FROM evpipe.outbox WHERE event_id LIKE 'b-%';

-- all or nothing: one bad event refuses the batch, with its path
SELECT try_batch(jsonb_build_array(
	ev('b-4', 'ACCOUNT_UPDATED', '{"accountId": "a4"}'),
	ev('b-5', 'ACCOUNT_UPDATED', '{"accountId": 5}')));
SELECT try_batch(jsonb_build_array(ev('b-4', 'ACCOUNT_UPDATED', '{"accountId": "a4"}'), '"not an event"'::jsonb));
SELECT try_batch(jsonb_build_array(ev('b-4', 'ACCOUNT_UPDATED', '{"accountId": "a4"}'),
	ev('b-6', 'ACCOUNT_UPDATED', '{"accountId": "a6"}') - 'timestamp'));
SELECT try_batch(jsonb_build_array(ev('b-4', 'NOT_REGISTERED', '{}')));
SELECT count(*) AS written FROM evpipe.events WHERE event_id IN ('b-4', 'b-5', 'b-6');

-- an eventId reused with other content: 23505, in the batch or against the store
SELECT try_batch(jsonb_build_array(
	ev('b-7', 'ACCOUNT_UPDATED', '{"accountId": "a7"}'),
	ev('b-7', 'ACCOUNT_UPDATED', '{"accountId": "other"}')));
SELECT try_batch(jsonb_build_array(
	ev('b-8', 'ACCOUNT_UPDATED', '{"accountId": "a8"}'),
	ev('b-1', 'ACCOUNT_UPDATED', '{"accountId": "other"}')));
SELECT count(*) AS written FROM evpipe.events WHERE event_id IN ('b-7', 'b-8');
-- events are checked in order: a refused event ahead of a reused eventId is
-- what the answer names, and a reused eventId ahead of a refused event
SELECT try_batch(jsonb_build_array(
	ev('b-15', 'ACCOUNT_UPDATED', '{"accountId": "a"}'),
	ev('b-16', 'ACCOUNT_UPDATED', '{"accountId": 16}'),
	ev('b-15', 'ACCOUNT_UPDATED', '{"accountId": "other"}')));
SELECT try_batch(jsonb_build_array(
	ev('b-15', 'ACCOUNT_UPDATED', '{"accountId": "a"}'),
	ev('b-15', 'ACCOUNT_UPDATED', '{"accountId": "other"}'),
	ev('b-16', 'ACCOUNT_UPDATED', '{"accountId": 16}')));
-- every event written without a traceparent got one of its own
SELECT count(DISTINCT traceparent) = count(*) AS own_traceparents,
	bool_and(traceparent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-01$') AS w3c
FROM evpipe.events WHERE event_id LIKE 'b-%';

-- the argument itself
SELECT try_batch(NULL);
SELECT try_batch('{"eventId": "b-9"}');
SELECT try_batch('"x"');
SET evpipe.max_batch_events = 2;
SELECT try_batch(jsonb_build_array(ev('b-10', 'ACCOUNT_UPDATED', '{"accountId": "a"}'),
	ev('b-11', 'ACCOUNT_UPDATED', '{"accountId": "a"}'), ev('b-12', 'ACCOUNT_UPDATED', '{"accountId": "a"}')));
RESET evpipe.max_batch_events;

-- an event no rule routes: refused, unless it is a duplicate of a stored one
SELECT evpipe.register_event_type('UNROUTED_BATCH', '{"type": "object"}');
SELECT try_batch(jsonb_build_array(ev('b-13', 'UNROUTED_BATCH', '{}')));

-- in the caller's transaction: a rollback leaves nothing
BEGIN;
SELECT jsonb_array_length(evpipe.ingest_batch(jsonb_build_array(ev('b-14', 'ACCOUNT_UPDATED', '{"accountId": "a"}'))));
ROLLBACK;
SELECT count(*) FROM evpipe.events WHERE event_id = 'b-14';

-- a source that cannot send the envelope: the source argument maps each event
SELECT a->>'eventId' AS event_id, a->>'status' AS status
FROM jsonb_array_elements(evpipe.ingest_batch('[{"id": "m-1", "timestamp": "2026-11-21T10:00:00Z", "name": "one", "body": "b"},
	{"id": 2, "timestamp": "2026-11-21T10:00:00Z", "name": "two", "body": "b"}]', 'source-app')) a;
SELECT event_id, event->>'eventType' AS event_type, event->'payload' AS payload
FROM evpipe.events WHERE event_id IN ('m-1', '2') ORDER BY 1;
SELECT try_batch('[{"id": "m-3", "timestamp": "2026-11-21T10:00:00Z", "name": "n", "body": "b"},
	{"timestamp": "2026-11-21T10:00:00Z", "name": "n", "body": "b"}]', 'source-app');

-- through PostgREST (request.method is set) an accepted batch answers 202
BEGIN;
SELECT set_config('request.method', 'POST', true) IS NOT NULL AS postgrest;
SELECT jsonb_array_length(evpipe.ingest_batch(jsonb_build_array(ev('b-15', 'ACCOUNT_UPDATED', '{"accountId": "a"}'))));
SELECT current_setting('response.status', true) AS status;
COMMIT;

-- a producer may call it; the events are checked the same way
SET ROLE alice;
SELECT a->>'status' FROM jsonb_array_elements(evpipe.ingest_batch(jsonb_build_array(
	ev('b-16', 'ACCOUNT_UPDATED', '{"accountId": "a"}')))) a;
RESET ROLE;
SELECT evpipe.bind_source('internal-service', 'bob');
SET ROLE alice;
SELECT try_batch(jsonb_build_array(ev('b-17', 'ACCOUNT_UPDATED', '{"accountId": "a"}')));
RESET ROLE;
SELECT evpipe.unbind_source('internal-service', 'bob');
SELECT ingested_by FROM evpipe.events WHERE event_id = 'b-16';
