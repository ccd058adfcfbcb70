-- The envelope: {"eventId","eventType","source","payload","timestamp"} plus
\set SHOW_CONTEXT never
-- optional correlationId, priority and traceparent. The first failure wins;
-- each failure has a class-22 SQLSTATE and a detail naming the path and rule.

-- Accepted: the answer names the event, its status and its destinations.
SELECT evpipe.ingest(ev('env-1', 'ACCOUNT_UPDATED', '{"accountId": "a1"}'));
-- The stored event keeps the envelope and its parsed fields.
SELECT event_id, event_type, schema_version, source, event_time, event
FROM evpipe.events WHERE event_id = 'env-1';

-- Optional members
SELECT evpipe.ingest(ev('env-2', 'ACCOUNT_UPDATED', '{"accountId": "a1"}',
	'{"correlationId": "req-77", "priority": "high",
	  "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}'))->>'status';
SELECT correlation_id, priority, traceparent FROM evpipe.events WHERE event_id = 'env-2';
-- A UUID is a good eventId
SELECT evpipe.ingest(ev('0b8f8a4e-2d6c-4c3a-9f1e-7f1f3c2b9a10', 'ACCOUNT_UPDATED', '{"accountId": "a1"}'))->>'status';

-- Refusals, in the order they are checked
SELECT try_ingest(NULL);
SELECT try_ingest('[1, 2]');
SELECT try_ingest('"just a string"');
SELECT try_ingest('{"eventId": "x1", "eventType": "ACCOUNT_UPDATED", "source": "s", "payload": {}, "timestamp": "2026-11-21T10:00:00Z", "extra": 1}');
SELECT try_ingest('{"eventType": "ACCOUNT_UPDATED", "source": "s", "payload": {}, "timestamp": "2026-11-21T10:00:00Z"}');
SELECT try_ingest('{"eventId": "x1", "source": "s", "payload": {}, "timestamp": "2026-11-21T10:00:00Z"}');
SELECT try_ingest('{"eventId": "x1", "eventType": "ACCOUNT_UPDATED", "payload": {}, "timestamp": "2026-11-21T10:00:00Z"}');
SELECT try_ingest('{"eventId": "x1", "eventType": "ACCOUNT_UPDATED", "source": "s", "timestamp": "2026-11-21T10:00:00Z"}');
SELECT try_ingest('{"eventId": "x1", "eventType": "ACCOUNT_UPDATED", "source": "s", "payload": {}}');
-- eventId: a string of 1-128 characters from [A-Za-z0-9._:-]
SELECT try_ingest(ev('x1', 'ACCOUNT_UPDATED', '{"accountId": "a"}') || '{"eventId": 42}');
SELECT try_ingest(ev('', 'ACCOUNT_UPDATED', '{"accountId": "a"}'));
SELECT try_ingest(ev('has space', 'ACCOUNT_UPDATED', '{"accountId": "a"}'));
SELECT try_ingest(ev(repeat('a', 129), 'ACCOUNT_UPDATED', '{"accountId": "a"}'));
SELECT ingest_status(ev(repeat('a', 128), 'ACCOUNT_UPDATED', '{"accountId": "a"}'));
SELECT try_ingest(ev('semi;colon', 'ACCOUNT_UPDATED', '{"accountId": "a"}'));
-- eventType: a string, registered
SELECT try_ingest(ev('x2', 'ACCOUNT_UPDATED', '{"accountId": "a"}') || '{"eventType": ["ACCOUNT_UPDATED"]}');
SELECT try_ingest(ev('x2', 'NO_SUCH_TYPE', '{}'));
-- source: a non-empty string without control characters
SELECT try_ingest(ev('x3', 'ACCOUNT_UPDATED', '{"accountId": "a"}') || '{"source": ""}');
SELECT try_ingest(ev('x3', 'ACCOUNT_UPDATED', '{"accountId": "a"}') || '{"source": 7}');
SELECT try_ingest(ev('x3', 'ACCOUNT_UPDATED', '{"accountId": "a"}') || '{"source": "tab\there"}');
-- payload: an object
SELECT try_ingest(ev('x4', 'ACCOUNT_UPDATED', '[1]'));
SELECT try_ingest(ev('x4', 'ACCOUNT_UPDATED', 'null'));
-- timestamp: ISO-8601 with a zone, stored as timestamptz
SELECT try_ingest(ev('x5', 'ACCOUNT_UPDATED', '{"accountId": "a"}') || '{"timestamp": "2026-11-21T10:00:00"}');
SELECT try_ingest(ev('x5', 'ACCOUNT_UPDATED', '{"accountId": "a"}') || '{"timestamp": "2026-02-30T10:00:00Z"}');
SELECT try_ingest(ev('x5', 'ACCOUNT_UPDATED', '{"accountId": "a"}') || '{"timestamp": "yesterday"}');
SELECT try_ingest(ev('x5', 'ACCOUNT_UPDATED', '{"accountId": "a"}') || '{"timestamp": 1732183200}');
SELECT ingest_status(ev('x5', 'ACCOUNT_UPDATED', '{"accountId": "a"}') || '{"timestamp": "2026-11-21T12:00:00+02:00"}');
SELECT event_time AT TIME ZONE 'UTC' FROM evpipe.events WHERE event_id = 'x5';
-- optional members are checked too
SELECT try_ingest(ev('x6', 'ACCOUNT_UPDATED', '{"accountId": "a"}') || '{"correlationId": ""}');
SELECT try_ingest(ev('x6', 'ACCOUNT_UPDATED', '{"accountId": "a"}') || '{"priority": "very high"}');
SELECT try_ingest(ev('x6', 'ACCOUNT_UPDATED', '{"accountId": "a"}') || '{"priority": 1}');
SELECT try_ingest(ev('x6', 'ACCOUNT_UPDATED', '{"accountId": "a"}') || '{"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}');
SELECT try_ingest(ev('x6', 'ACCOUNT_UPDATED', '{"accountId": "a"}') || '{"traceparent": "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}');
SELECT try_ingest(ev('x6', 'ACCOUNT_UPDATED', '{"accountId": "a"}') || '{"traceparent": "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"}');

-- Size: evpipe.max_event_bytes (default 256kB, SQS's limit) of JSON text
SET evpipe.max_event_bytes = 300;
SELECT try_ingest(ev('big', 'ACCOUNT_UPDATED', jsonb_build_object('accountId', repeat('x', 400))));
RESET evpipe.max_event_bytes;
SELECT try_ingest(ev('big', 'ACCOUNT_UPDATED', jsonb_build_object('accountId', repeat('x', 300000))));

-- Nothing was written for any refusal
SELECT count(*) FROM evpipe.events WHERE event_id IN ('x1', 'x2', 'x3', 'x4', 'x6', 'big');

-- A call refused after its eventId was read, then a NULL: the log line of the
-- second names no eventId of the first (its memory is gone with the first call)
SELECT try_ingest(ev('stale-1', 'NOT_A_TYPE', '{}'));
SELECT try_ingest(NULL);
