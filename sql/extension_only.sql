-- What only the C extension has, so the managed install (no C in the
-- server) does not run this file: evpipe.* settings registered with their
-- defaults and checks, and counters in shared memory that survive the
-- transactions they count (a refusal rolls back; the managed install keeps
-- its counts in tables and counts only what was written).

-- Settings are registered: SHOW knows them and their defaults.
SHOW evpipe.max_event_bytes;
SHOW evpipe.destination_networks;

-- evpipe.destination_networks: superuser only; a bad list is refused by name
-- (on a managed install evpiped takes the list as --destination-networks)
SET evpipe.destination_networks = '10.0.0.0/8, 127.0.0.0/8, ::1/128';
SHOW evpipe.destination_networks;
SET evpipe.destination_networks = '10.0.0.0/33';
SET evpipe.destination_networks = '10.0.0.1/8';
SET evpipe.destination_networks = 'localhost';
SET evpipe.destination_networks = '10.0.0.0/8,';
SHOW evpipe.destination_networks;
RESET evpipe.destination_networks;
CREATE ROLE regress_np_user;
SET ROLE regress_np_user;
SET evpipe.destination_networks = '';
RESET ROLE;
DROP ROLE regress_np_user;

-- Refusals and throttling counted, although their transactions rolled back.
SELECT line FROM regexp_split_to_table(evpipe.metrics(), E'\n') AS line
WHERE line ~ '^evpipe_(ingest_throttled_total|events_rejected_total\{reason="(registered|unique)"\})'
ORDER BY 1;
