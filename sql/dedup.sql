-- Dedup by eventId. The same event again is a "duplicate": nothing is
\set SHOW_CONTEXT never
-- written and nothing is raised, so a retried request is safe. The same
-- eventId with other content is a conflict: 23505 (PostgREST answers 409).
SELECT evpipe.ingest(ev('dup-1', 'ACCOUNT_UPDATED', '{"accountId": "a1", "balance": 10}'));
SELECT evpipe.ingest(ev('dup-1', 'ACCOUNT_UPDATED', '{"accountId": "a1", "balance": 10}'));
-- key order and whitespace do not matter: it is the same JSON
SELECT evpipe.ingest('{"timestamp": "2026-11-21T10:00:00Z", "payload": {"balance": 10, "accountId": "a1"},
	"source": "internal-service", "eventType": "ACCOUNT_UPDATED", "eventId": "dup-1"}')->>'status';
SELECT count(*) AS outbox_rows FROM evpipe.outbox WHERE event_id = 'dup-1';
-- other content
SELECT try_ingest(ev('dup-1', 'ACCOUNT_UPDATED', '{"accountId": "a1", "balance": 11}'));
\set VERBOSITY default
SELECT evpipe.ingest(ev('dup-1', 'ACCOUNT_UPDATED', '{"accountId": "a1", "balance": 11}'));
SELECT event->'payload' FROM evpipe.events WHERE event_id = 'dup-1';

-- Written in the caller's transaction: a rollback leaves nothing, and the
-- eventId can be ingested again.
BEGIN;
SELECT evpipe.ingest(ev('rb-1', 'ACCOUNT_UPDATED', '{"accountId": "a1"}'))->>'status';
SELECT count(*) FROM evpipe.events WHERE event_id = 'rb-1';
SELECT count(*) FROM evpipe.outbox WHERE event_id = 'rb-1';
ROLLBACK;
SELECT count(*) FROM evpipe.events WHERE event_id = 'rb-1';
SELECT count(*) FROM evpipe.outbox WHERE event_id = 'rb-1';
SELECT evpipe.ingest(ev('rb-1', 'ACCOUNT_UPDATED', '{"accountId": "a1"}'))->>'status';

-- A savepoint rolled back takes the event with it; the rest commits.
BEGIN;
SELECT evpipe.ingest(ev('sp-1', 'ACCOUNT_UPDATED', '{"accountId": "a1"}'))->>'status';
SAVEPOINT s;
SELECT evpipe.ingest(ev('sp-2', 'ACCOUNT_UPDATED', '{"accountId": "a1"}'))->>'status';
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT event_id FROM evpipe.events WHERE event_id IN ('sp-1', 'sp-2') ORDER BY 1;

-- Many events in one transaction (a batch): each is deduped on its own.
BEGIN;
SELECT count(*) FILTER (WHERE r->>'status' = 'accepted') AS accepted,
	count(*) FILTER (WHERE r->>'status' = 'duplicate') AS duplicate
FROM (SELECT evpipe.ingest(ev('batch-' || (g % 50), 'ACCOUNT_UPDATED', '{"accountId": "a1"}')) AS r
	FROM generate_series(1, 100) g) s;
COMMIT;

-- Through PostgREST (which sets request.* settings), an accepted event
-- answers 202; a duplicate keeps the default 200.
BEGIN;
SELECT set_config('request.method', 'POST', true);
SELECT evpipe.ingest(ev('rest-1', 'ACCOUNT_UPDATED', '{"accountId": "a1"}'))->>'status';
SELECT current_setting('response.status', true) AS http_status;
COMMIT;
BEGIN;
SELECT set_config('request.method', 'POST', true);
SELECT evpipe.ingest(ev('rest-1', 'ACCOUNT_UPDATED', '{"accountId": "a1"}'))->>'status';
SELECT current_setting('response.status', true) AS http_status;
COMMIT;
-- outside PostgREST nothing is set
SELECT evpipe.ingest(ev('rest-2', 'ACCOUNT_UPDATED', '{"accountId": "a1"}'))->>'status';
SELECT current_setting('response.status', true) AS http_status;
