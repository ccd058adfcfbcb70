-- Hostile input. The server must survive all of it, and every refusal is
\set SHOW_CONTEXT never
-- a class-22 error with a message.

-- 10,000-deep nesting: jsonb itself accepts it; ingest refuses it cleanly.
SELECT left(try_ingest(ev('deep', 'ANY', ('{"a":' || repeat('[', 10000) || repeat(']', 10000) || '}')::jsonb)), 120);
SELECT left(try_ingest(ev('deep', 'ANY', (repeat('{"a":', 10000) || '1' || repeat('}', 10000))::jsonb)), 120);
-- ... and so does schema registration
SELECT left(try_register('DEEP', (repeat('{"items":', 5000) || '{}' || repeat('}', 5000))::jsonb), 120);
-- a huge string: over the size limit
SELECT left(try_ingest(ev('huge', 'ANY', jsonb_build_object('s', repeat('x', 10000000)))), 120);
-- many members
SELECT ingest_status(ev('wide', 'ANY', (SELECT jsonb_object_agg('k' || g, g) FROM generate_series(1, 5000) g)));
-- SQL in strings is data, stored verbatim
SELECT evpipe.ingest(ev('sql-1', 'ANY', '{"q": "x''); DROP TABLE evpipe.events; --", "r": "$$ \\ %s %n"}'))->>'status';
SELECT event->'payload' FROM evpipe.events WHERE event_id = 'sql-1';
SELECT count(*) > 0 AS events_table_still_there FROM evpipe.events;
-- an eventId trying to be SQL
SELECT try_ingest(ev('x''; DROP TABLE evpipe.events; --', 'ANY', '{}'));
-- NUL escapes: jsonb refuses \u0000 before evpipe sees it
SELECT try_ingest('{"eventId": "nul", "eventType": "ANY", "source": "s", "payload": {"a": "\u0000"}, "timestamp": "2026-11-21T10:00:00Z"}');
-- invalid UTF-8 escapes (a lone surrogate) likewise
SELECT try_ingest('{"eventId": "sur", "eventType": "ANY", "source": "s", "payload": {"a": "\ud800"}, "timestamp": "2026-11-21T10:00:00Z"}');
-- valid escapes and odd Unicode are fine and kept
SELECT evpipe.ingest('{"eventId": "uni", "eventType": "ANY", "source": "s", "payload": {"a": "\ud83d\ude00 é \u200b \t"}, "timestamp": "2026-11-21T10:00:00Z"}')->>'status';
SELECT event->'payload'->>'a' FROM evpipe.events WHERE event_id = 'uni';
-- Unicode in a member name that is not allowed: the message quotes it safely
SELECT try_ingest(ev('u2', 'ANY', '{}') || jsonb_build_object(E'bad\nname', 1));
-- a long unknown member is cut (whole UTF-8 characters) in the message and the path
SELECT try_ingest(ev('u3', 'ANY', '{}') || jsonb_build_object(repeat('é', 40), 1));
-- numbers at the limits
SELECT evpipe.ingest(ev('num', 'ANY', '{"big": 1e308, "small": -1e-308, "long": 123456789012345678901234567890}'))->>'status';
SELECT (event->'payload'->>'big')::float8 AS big, (event->'payload'->>'small')::float8 AS small,
	event->'payload'->>'long' AS long FROM evpipe.events WHERE event_id = 'num';
SELECT try_register('NUM', '{"type": "object", "properties": {"n": {"type": "integer", "maximum": 9007199254740993}}}');
SELECT evpipe.add_route('NUM', 'versions');
SELECT try_ingest(ev('num-1', 'NUM', '{"n": 123456789012345678901234567890}'));
SELECT try_ingest(ev('num-2', 'NUM', '{"n": 1e400}'));
-- keys and strings of every shape
SELECT try_ingest(ev(repeat('é', 10), 'ANY', '{}'));
SELECT try_ingest(ev('k', repeat('A', 10000), '{}'));
-- still alive
SELECT 1 AS alive;
