-- Sources that cannot send the envelope: register a mapping, then pass the
\set SHOW_CONTEXT never
-- source to ingest. eventId and timestamp come from the named members, the
-- rest of the object is the payload, eventType and source come from the
-- registration. The payload is then validated like any other.
SELECT evpipe.register_event_type('SOURCE_APP_EVENT', '{
	"type": "object", "required": ["name", "body"],
	"properties": {"name": {"type": "string"}, "body": {"type": "string"}},
	"additionalProperties": false}');
SELECT evpipe.register_source('source-app', 'SOURCE_APP_EVENT');
SELECT evpipe.create_destination('graph', 'graphql', '{"url": "http://127.0.0.1:9/graphql", "query": "mutation($input: EventInput!) { ingestEvent(input: $input) { ok } }", "enrich": {"brand": "testBrand"}}');
SELECT evpipe.add_route('SOURCE_APP_EVENT', 'graph');

SELECT evpipe.ingest('{"id": "a1", "name": "test event", "body": "test body", "timestamp": "2026-11-21T10:00:00Z"}',
	source => 'source-app');
SELECT event FROM evpipe.events WHERE event_id = 'a1';
-- the same raw event again is a duplicate
SELECT evpipe.ingest('{"id": "a1", "name": "test event", "body": "test body", "timestamp": "2026-11-21T10:00:00Z"}',
	source => 'source-app')->>'status';
-- integer ids are accepted as text
SELECT evpipe.ingest('{"id": 42, "name": "n", "body": "b", "timestamp": "2026-11-21T10:00:00Z"}',
	source => 'source-app')->>'eventId';
-- refusals name the raw member
SELECT try_ingest('{"name": "n", "body": "b", "timestamp": "2026-11-21T10:00:00Z"}', 'source-app');
SELECT try_ingest('{"id": "a2", "name": "n", "body": "b"}', 'source-app');
SELECT try_ingest('{"id": {"x": 1}, "name": "n", "body": "b", "timestamp": "2026-11-21T10:00:00Z"}', 'source-app');
SELECT try_ingest('{"id": "a2", "name": "n", "timestamp": "2026-11-21T10:00:00Z"}', 'source-app');
SELECT try_ingest('{"id": "a2", "name": "n", "body": "b", "colour": 1, "timestamp": "2026-11-21T10:00:00Z"}', 'source-app');
SELECT try_ingest('{"id": "a2", "name": "n", "body": "b", "timestamp": "2026-11-21T10:00:00Z"}', 'unknown-app');
-- other member names
SELECT evpipe.register_source('legacy', 'SOURCE_APP_EVENT', id_field => 'uid', timestamp_field => 'at');
SELECT evpipe.add_route('SOURCE_APP_EVENT', 'audit', source => 'legacy');
SELECT evpipe.ingest('{"uid": "L-1", "at": "2026-11-21T10:00:00Z", "name": "n", "body": "b"}', 'legacy');
SELECT evpipe.register_source('legacy', 'SOURCE_APP_EVENT', id_field => 'x', timestamp_field => 'x');
SELECT source, event_type, id_field, timestamp_field, roles FROM evpipe.source_list ORDER BY source;
-- member names that are not identifiers: paths quote them, $["name"], as the
-- validator's paths do (never $.event.id, which would name another member)
SELECT evpipe.register_source('odd-app', 'SOURCE_APP_EVENT', id_field => 'event.id', timestamp_field => 'at "utc"');
SELECT try_ingest('{"name": "n", "body": "b", "at \"utc\"": "2026-11-21T10:00:00Z"}', 'odd-app');
SELECT try_ingest('{"event.id": "o1", "name": "n", "body": "b"}', 'odd-app');
SELECT try_ingest('{"event.id": 1.5, "name": "n", "body": "b", "at \"utc\"": "2026-11-21T10:00:00Z"}', 'odd-app');
SELECT try_ingest('{"event.id": "o 1", "name": "n", "body": "b", "at \"utc\"": "2026-11-21T10:00:00Z"}', 'odd-app');
SELECT try_ingest('{"event.id": "o1", "name": "n", "body": "b", "at \"utc\"": 1}', 'odd-app');
SELECT try_ingest('{"event.id": "o1", "name": "n", "body": "b", "at \"utc\"": "yesterday"}', 'odd-app');
-- an exponent is applied as numeric does: 1e2 is the integer id "100", 1.50e1 is not an integer
BEGIN;
SELECT evpipe.ingest('{"event.id": 1e2, "name": "n", "body": "b", "at \"utc\"": "2026-11-21T10:00:00Z"}', 'odd-app')->>'eventId';
SELECT event FROM evpipe.events WHERE event_id = '100';
ROLLBACK;
SELECT try_ingest('{"event.id": 1.50e1, "name": "n", "body": "b", "at \"utc\"": "2026-11-21T10:00:00Z"}', 'odd-app');
SELECT evpipe.drop_source('odd-app');
