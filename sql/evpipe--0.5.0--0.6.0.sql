-- evpipe 0.5.0 -> 0.6.0: ingest, ingest_batch and route_explain lose their SET search_path clause (issue #17: the
-- clause cost 7% of a one-event ingest, a GUC nest level and the path parsed and looked up on entry and exit); the C
-- resolves every name of their work in pg_catalog alone instead, whatever the caller's search_path
\echo Use "ALTER EXTENSION evpipe UPDATE TO '0.6.0'" to load this file. \quit

ALTER FUNCTION evpipe.ingest(jsonb, text) RESET search_path;
ALTER FUNCTION evpipe.ingest_batch(jsonb, text) RESET search_path;
ALTER FUNCTION evpipe.route_explain(jsonb, text) RESET search_path;
