-- evpipe 0.4.0 -> 0.5.0: the outbox finds an event's rows through a hash index on event_id in place of the unique
-- B-tree on (event_id, destination) (issue #17: a B-tree on the random eventId descended to a random leaf for every
-- row ingest wrote; the hash index costs one bucket page), and replay checks for a pending row itself
\echo Use "ALTER EXTENSION evpipe UPDATE TO '0.5.0'" to load this file. \quit

ALTER TABLE evpipe.outbox DROP CONSTRAINT outbox_event_id_destination_key;
-- an event's rows (the answer to a duplicate, retention's "still pending?", replay): equality only, so a hash
-- index. One row per (event, destination) holds by construction: ingest writes rows only for a new event, one per
-- destination, and a replay only for a dead letter (unique per event and destination) whose row is gone
CREATE INDEX outbox_event_id ON evpipe.outbox USING hash (event_id);

CREATE OR REPLACE FUNCTION evpipe.replay_dead_letters(destination text DEFAULT NULL, event_type text DEFAULT NULL,
	since timestamptz DEFAULT NULL, event_id text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	n integer;
BEGIN
	WITH m AS (
		DELETE FROM evpipe.dead_letters x
		WHERE (replay_dead_letters.destination IS NULL OR x.destination = replay_dead_letters.destination)
			AND (replay_dead_letters.event_type IS NULL OR x.event_type = replay_dead_letters.event_type)
			AND (replay_dead_letters.since IS NULL OR x.dead_at >= replay_dead_letters.since)
			AND (replay_dead_letters.event_id IS NULL OR x.event_id = replay_dead_letters.event_id)
			AND EXISTS (SELECT 1 FROM evpipe.destinations d WHERE d.name = x.destination)
		RETURNING x.event_id, x.destination, x.ordering_key
	), i AS (
		-- a fresh row: max_age_ms and delivery latency count from the replay;
		-- an ordered one goes after the rows of its key still pending
		INSERT INTO evpipe.outbox (event_id, destination, ordering_key)
		SELECT m.event_id, m.destination, m.ordering_key FROM m
		WHERE NOT EXISTS (SELECT FROM evpipe.outbox o WHERE o.event_id = m.event_id AND o.destination = m.destination)
		RETURNING 1
	)
	SELECT count(*) INTO n FROM i;
	IF n > 0 THEN
		PERFORM evpipe._wake_workers();
	END IF;
	RETURN n;
END
$$;
