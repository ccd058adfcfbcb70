-- Delivery state per (event, destination). Workers are off in this suite
\set SHOW_CONTEXT never
-- (the end-to-end tests run them), so rows stay pending here.
SELECT event_id, destination, status, attempts, delivered_at IS NULL AS not_delivered
FROM evpipe.deliveries WHERE event_id = 'r-1' ORDER BY destination;

-- Dead letters are plain rows; replay moves them back to the outbox with
-- fresh attempts and the same eventId (the idempotency key).
INSERT INTO evpipe.dead_letters (event_id, event_type, source, destination, attempts, created_at,
	first_attempt_at, last_attempt_at, last_status, last_error, response_excerpt, event)
SELECT e.event_id, e.event_type, e.source, 'ledger', 8, now(), now(), now(), 503, 'HTTP 503', 'busy', e.event
FROM evpipe.events e WHERE e.event_id IN ('env-1', 'env-2');
DELETE FROM evpipe.outbox WHERE event_id IN ('env-1', 'env-2') AND destination = 'ledger';
SELECT event_id, destination, status, attempts, last_error FROM evpipe.deliveries
WHERE event_id IN ('env-1', 'env-2') ORDER BY 1;
SELECT destination, dead_lettered, last_error FROM evpipe.stats WHERE destination = 'ledger';
SELECT evpipe.replay_dead_letters(event_id => 'env-1');
SELECT event_id, status, attempts FROM evpipe.deliveries WHERE event_id IN ('env-1', 'env-2') ORDER BY 1;
SELECT evpipe.replay_dead_letters(destination => 'nowhere');
SELECT evpipe.purge_dead_letters(destination => 'ledger');
SELECT count(*) FROM evpipe.dead_letters WHERE destination = 'ledger';

-- evpipe.stats: one row per destination
SELECT destination, kind, enabled, pending >= 0 AS has_pending, in_flight, delivered
FROM evpipe.stats ORDER BY destination;
SELECT column_name FROM information_schema.columns
WHERE table_schema = 'evpipe' AND table_name = 'stats' ORDER BY ordinal_position;

-- Without workers nothing is delivered, but the extension still ingests.
SHOW evpipe.workers;

-- Uninstalling removes everything but the roles: DROP EXTENSION (the
-- extension), DROP SCHEMA evpipe CASCADE (the managed install).
SET client_min_messages = warning;
DO $$ BEGIN
	IF EXISTS (SELECT FROM pg_extension WHERE extname = 'evpipe') THEN DROP EXTENSION evpipe CASCADE;
	ELSE DROP SCHEMA evpipe CASCADE; END IF;
END $$;
RESET client_min_messages;
SELECT count(*) FROM pg_namespace WHERE nspname = 'evpipe';
SELECT rolname FROM pg_roles WHERE rolname LIKE 'evpipe%' ORDER BY 1;
