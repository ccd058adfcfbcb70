-- evpipe_worker (0.3.0): what evpiped's login role may do. It claims and
-- records outcomes, reads the destinations it must call, runs function
-- destinations through evpipe._deliver_function; nothing else.
\set SHOW_CONTEXT never
CREATE ROLE wendy LOGIN IN ROLE evpipe_worker;
CREATE ROLE fred LOGIN;		-- owns a function destination
GRANT evpipe_admin TO fred;
CREATE TABLE public.wr_handled (event_id text, run_as name);
GRANT INSERT ON public.wr_handled TO fred;
CREATE FUNCTION public.wr_ok(e jsonb) RETURNS void LANGUAGE sql
	AS $$ INSERT INTO public.wr_handled VALUES (e->>'eventId', current_user) $$;
CREATE FUNCTION public.wr_boom(e jsonb) RETURNS void LANGUAGE plpgsql
	AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$;
CREATE FUNCTION public.wr_bad(e jsonb) RETURNS void LANGUAGE plpgsql
	AS $$ BEGIN RAISE EXCEPTION 'bad data' USING ERRCODE = '22023'; END $$;
SET ROLE fred;
SELECT evpipe.create_destination('wr-ok', 'function', '{"function": "public.wr_ok(jsonb)"}');
SELECT evpipe.create_destination('wr-boom', 'function', '{"function": "public.wr_boom(jsonb)"}');
SELECT evpipe.create_destination('wr-bad', 'function', '{"function": "public.wr_bad(jsonb)"}');
RESET ROLE;

SET ROLE wendy;
-- what a delivery engine needs
SELECT count(*) >= 0 AS reads_outbox FROM evpipe.outbox;
SELECT count(*) >= 0 AS reads_events FROM evpipe.events;
SELECT count(*) > 0 AS reads_destinations FROM evpipe.destinations;
UPDATE evpipe.outbox SET lease_until = NULL WHERE false;
INSERT INTO evpipe.rate_schedule VALUES ('wr-ok', now()) ON CONFLICT (destination) DO UPDATE SET tat = excluded.tat;
SELECT * FROM evpipe._deliver_function('wr-ok', '{"eventId": "wr-1"}');
SELECT * FROM evpipe._deliver_function('wr-boom', '{"eventId": "wr-2"}');
SELECT * FROM evpipe._deliver_function('wr-bad', '{"eventId": "wr-3"}');
SELECT * FROM evpipe._deliver_function('ledger', '{"eventId": "wr-4"}');
-- settling: the delivered row, a dead letter, the outcome event (in a
-- transaction rolled back: the rows are made up)
BEGIN;
INSERT INTO evpipe.delivered (event_id, destination, attempts, created_at) VALUES ('wr-s1', 'wr-ok', 1, now());
INSERT INTO evpipe.dead_letters (event_id, event_type, source, destination, attempts, created_at, event)
	VALUES ('wr-s2', 'X', 'e2e', 'wr-ok', 3, now(), '{}');
UPDATE evpipe.dead_letters SET last_error = 'HTTP 500' WHERE event_id = 'wr-s2';
SELECT evpipe._emit_outcome('wr-s1', 'wr-ok', true, 1, 200, NULL);
SELECT count(*) AS settled FROM evpipe.delivered WHERE event_id = 'wr-s1';
ROLLBACK;
-- and nothing more
SELECT evpipe.ingest(ev('wr-5', 'ACCOUNT_UPDATED', '{"accountId": "a"}'));
SELECT evpipe.create_destination('wr-evil', 'http', '{"url": "http://127.0.0.1:1/"}');
UPDATE evpipe.destinations SET enabled = false;
SELECT * FROM evpipe.sources;
SELECT evpipe.replay_dead_letters();
SELECT evpipe.purge_dead_letters();
INSERT INTO evpipe.outbox (event_id, destination) VALUES ('x', 'ledger');
DELETE FROM evpipe.dead_letters;
DELETE FROM evpipe.delivered;
RESET ROLE;
-- the handler ran as the destination's owner, and only the one that succeeded wrote
SELECT event_id, run_as FROM public.wr_handled;

-- other roles may not call the entry point
SET ROLE carol;
SELECT * FROM evpipe._deliver_function('wr-ok', '{"eventId": "wr-6"}');
RESET ROLE;
SET ROLE alice;
SELECT * FROM evpipe._deliver_function('wr-ok', '{"eventId": "wr-7"}');
RESET ROLE;

-- daemons reload their destinations on a notification from this trigger
-- (the e2e suite checks that a change reaches a running evpiped)
SELECT tgname FROM pg_trigger WHERE tgrelid = 'evpipe.destinations'::regclass AND NOT tgisinternal ORDER BY 1;

SELECT evpipe.drop_destination('wr-ok');
SELECT evpipe.drop_destination('wr-boom');
SELECT evpipe.drop_destination('wr-bad');
SELECT count(*) FROM evpipe.rate_schedule WHERE destination = 'wr-ok';
DROP TABLE public.wr_handled;
DROP FUNCTION public.wr_ok(jsonb), public.wr_boom(jsonb), public.wr_bad(jsonb);
DROP ROLE wendy;
DROP ROLE fred;
