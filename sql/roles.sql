-- Roles. evpipe_producer may call ingest and route_explain, nothing else.
\set SHOW_CONTEXT never
-- evpipe_admin manages types, sources, routes and destinations and reads
-- the dead letters and stats. SECURITY DEFINER functions pin search_path.
CREATE ROLE alice LOGIN IN ROLE evpipe_producer;
CREATE ROLE bob LOGIN IN ROLE evpipe_producer;
CREATE ROLE carol LOGIN IN ROLE evpipe_admin;
CREATE ROLE mallory LOGIN;

SET ROLE alice;
SELECT evpipe.ingest(ev('role-1', 'ACCOUNT_UPDATED', '{"accountId": "a"}'))->>'status';
SELECT (evpipe.route_explain(ev('role-2', 'ACCOUNT_UPDATED', '{"accountId": "a"}')))->'destinations';
SELECT ingested_by FROM evpipe.events LIMIT 1;
SELECT * FROM evpipe.outbox LIMIT 1;
SELECT * FROM evpipe.dead_letters LIMIT 1;
SELECT config FROM evpipe.destinations LIMIT 1;
SELECT * FROM evpipe.destination_list LIMIT 1;
SELECT * FROM evpipe.stats LIMIT 1;
SELECT * FROM evpipe.deliveries LIMIT 1;
INSERT INTO evpipe.events (event_id) VALUES ('forged');
DELETE FROM evpipe.outbox;
SELECT evpipe.register_event_type('EVIL', '{}');
SELECT evpipe.create_destination('evil', 'http', '{"url": "http://evil.example/"}');
SELECT evpipe.add_route('ACCOUNT_UPDATED', 'ledger');
SELECT evpipe.replay_dead_letters();
SELECT evpipe.purge_dead_letters();
-- the producer's own objects named like evpipe's change nothing, whatever
-- the search_path: ingest, ingest_batch and route_explain resolve the names of
-- their work in pg_catalog alone (a new type and route first: the
-- configuration is read again inside the hijacked call)
RESET ROLE;
GRANT CREATE ON SCHEMA public TO alice;
SELECT evpipe.register_event_type('HIJACK_CHECK', '{"type": "object"}');
SELECT evpipe.add_route('HIJACK_CHECK', 'ledger') > 0 AS added;
SET ROLE alice;
CREATE TABLE public.events (event_id text);
CREATE FUNCTION public.jsonb_build_object(VARIADIC a text[]) RETURNS jsonb LANGUAGE sql AS $$ SELECT '{"hacked": true}'::jsonb $$;
CREATE FUNCTION public.texteq_evil(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.texteq_evil);
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '2000-01-01'::timestamptz $$;
CREATE TEMP TABLE outbox (event_id text, destination text);
SET search_path = public, pg_catalog;
SELECT evpipe.ingest(ev('role-3', 'ACCOUNT_UPDATED', '{"accountId": "a"}'));
-- a retry is a duplicate (a hijacked = would find another event: a conflict)
SELECT evpipe.ingest(ev('role-3', 'ACCOUNT_UPDATED', '{"accountId": "a"}'));
SELECT evpipe.ingest(ev('role-3h', 'HIJACK_CHECK', '{}'))->>'status';
SELECT evpipe.ingest_batch('[{"eventId": "role-3b", "eventType": "HIJACK_CHECK", "source": "s", "payload": {}, "timestamp": "2026-11-21T10:00:00Z"},
	{"eventId": "role-3", "eventType": "ACCOUNT_UPDATED", "source": "internal-service", "payload": {"accountId": "a"}, "timestamp": "2026-11-21T10:00:00Z"}]');
SELECT evpipe.route_explain(ev('role-3r', 'HIJACK_CHECK', '{}'))->'destinations';
SELECT count(*) FROM public.events;
SELECT count(*) FROM pg_temp.outbox;
RESET search_path;
RESET ROLE;
SELECT event_id, ingested_by, ingested_at > '2020-01-01' AS real_clock FROM evpipe.events WHERE event_id IN ('role-3', 'role-3h', 'role-3b') ORDER BY 1;
SELECT event_id, destination FROM evpipe.outbox WHERE event_id IN ('role-3', 'role-3h', 'role-3b') ORDER BY 1;
DELETE FROM evpipe.outbox WHERE event_id IN ('role-3h', 'role-3b');
DELETE FROM evpipe.events WHERE event_id IN ('role-3h', 'role-3b');
SELECT evpipe.drop_route(id) FROM evpipe.routes WHERE event_type = 'HIJACK_CHECK';
DROP TABLE pg_temp.outbox;
SELECT evpipe.drop_event_type('HIJACK_CHECK');
DROP TABLE public.events;
DROP OPERATOR public.= (text, text);
DROP FUNCTION public.texteq_evil(text, text);
DROP FUNCTION public.jsonb_build_object(VARIADIC text[]);
DROP FUNCTION public.now();

-- A role outside evpipe_producer cannot ingest at all.
SET ROLE mallory;
SELECT evpipe.ingest(ev('role-4', 'ACCOUNT_UPDATED', '{"accountId": "a"}'));
RESET ROLE;

-- The admin manages configuration and reads deliveries, dead letters, stats.
SET ROLE carol;
SELECT evpipe.register_event_type('ADMIN_MADE', '{"type": "object"}');
SELECT evpipe.create_destination('carol-hook', 'http', '{"url": "http://127.0.0.1:9/c", "secret": "hunter2"}');
SELECT evpipe.add_route('ADMIN_MADE', 'carol-hook') > 0 AS added;
SELECT count(*) >= 0 AS can_read FROM evpipe.dead_letters;
SELECT destination, pending FROM evpipe.stats WHERE destination = 'carol-hook';
SELECT config->>'secret' FROM evpipe.destinations WHERE name = 'carol-hook';
SELECT owner FROM evpipe.destinations WHERE name = 'carol-hook';
-- but cannot write the tables directly
DELETE FROM evpipe.events;
RESET ROLE;

-- Sources bound to roles: only members (and superusers) may use them.
SELECT evpipe.bind_source('internal-service', 'alice');
SET ROLE alice;
SELECT evpipe.ingest(ev('bound-1', 'ACCOUNT_UPDATED', '{"accountId": "a"}'))->>'status';
RESET ROLE;
SET ROLE bob;
SELECT evpipe.ingest(ev('bound-2', 'ACCOUNT_UPDATED', '{"accountId": "a"}'));
-- other sources stay open
SELECT evpipe.ingest(ev('bound-3', 'ACCOUNT_UPDATED', '{"accountId": "a"}', '{"source": "bobs-service"}'))->>'status';
RESET ROLE;
SELECT evpipe.bind_source('internal-service', 'no_such_role');
SELECT evpipe.unbind_source('internal-service', 'alice');
SELECT evpipe.drop_source('internal-service');
SET ROLE bob;
SELECT evpipe.ingest(ev('bound-2', 'ACCOUNT_UPDATED', '{"accountId": "a"}'))->>'status';
RESET ROLE;

-- Every SECURITY DEFINER function pins search_path.
SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'evpipe' AND p.prosecdef
	AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false);
-- ingest, ingest_batch and route_explain are not SECURITY DEFINER (their
-- names resolve in pg_catalog alone: the hijack attempt above)
SELECT proname, prosecdef FROM pg_proc WHERE proname IN ('ingest', 'ingest_batch', 'route_explain') ORDER BY 1;
