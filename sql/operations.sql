-- Operator functions: ingest throttling per source, pause/resume, drain,
-- health, and metrics.
\set SHOW_CONTEXT never

-- Throttling (API Gateway's): over the limit, ingest raises PT429
-- (PostgREST answers 429) and writes nothing.
SELECT evpipe.set_source_limit('throttled-app', per_sec => 0.001, burst => 2);
SELECT source, per_sec, burst FROM evpipe.source_limits;
SELECT ingest_status(ev('thr-1', 'ACCOUNT_UPDATED', '{"accountId": "a"}', '{"source": "throttled-app"}'));
SELECT ingest_status(ev('thr-2', 'ACCOUNT_UPDATED', '{"accountId": "a"}', '{"source": "throttled-app"}'));
SELECT ingest_status(ev('thr-3', 'ACCOUNT_UPDATED', '{"accountId": "a"}', '{"source": "throttled-app"}'));
\set VERBOSITY default
SELECT evpipe.ingest(ev('thr-3', 'ACCOUNT_UPDATED', '{"accountId": "a"}', '{"source": "throttled-app"}'));
SELECT count(*) FROM evpipe.events WHERE event_id = 'thr-3';
-- other sources are not affected; removing the limit lifts it
SELECT ingest_status(ev('thr-4', 'ACCOUNT_UPDATED', '{"accountId": "a"}', '{"source": "other-app"}'));
SELECT evpipe.set_source_limit('throttled-app', NULL);
SELECT ingest_status(ev('thr-3', 'ACCOUNT_UPDATED', '{"accountId": "a"}', '{"source": "throttled-app"}'));
SELECT evpipe.set_source_limit('x', 0);

-- An event without traceparent gets one, kept with the event (not in the
-- envelope, so a retried request still deduplicates).
SELECT traceparent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-01$' AS generated, event ? 'traceparent' AS in_envelope
FROM evpipe.events WHERE event_id = 'thr-4';
SELECT ingest_status(ev('thr-4', 'ACCOUNT_UPDATED', '{"accountId": "a"}', '{"source": "other-app"}'));

-- Pause and resume: rows wait while paused, nothing is lost.
SELECT evpipe.pause_destination('ledger');
SELECT enabled FROM evpipe.destinations WHERE name = 'ledger';
SELECT evpipe.health()->'pausedDestinations';
SELECT evpipe.resume_destination('ledger');
SELECT evpipe.health()->'pausedDestinations';

-- Drain waits for the outbox to empty (here: no workers, so it times out).
SELECT evpipe.drain('ledger', interval '100 milliseconds');
SELECT evpipe.drain('no-such-destination', interval '1 second');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT evpipe.drain();
ROLLBACK;

-- Health: what an on-call engineer checks first.
SELECT h->>'status' AS status, h->'workersConfigured' AS configured, h->'workersAlive' AS alive,
	(h->>'pending')::int > 0 AS has_pending, h ? 'oldestPendingAgeSeconds' AS has_age,
	h->'deadLettersLastHour' AS dead_last_hour
FROM evpipe.health() h;

-- Metrics in the Prometheus text format (counters survive in shared memory).
SELECT line FROM regexp_split_to_table(evpipe.metrics(), E'\n') AS line
WHERE line ~ '^# TYPE' ORDER BY 1;
SELECT line FROM regexp_split_to_table(evpipe.metrics(), E'\n') AS line
WHERE line ~ '^evpipe_pending\{destination="ledger"\}'
ORDER BY 1;
SELECT (regexp_match(evpipe.metrics(), 'evpipe_events_ingested_total\{event_type="ACCOUNT_UPDATED"\} (\d+)'))[1]::int > 10
	AS ingested_counted;
