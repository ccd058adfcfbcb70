-- Destinations: kinds http, sqs, graphql and function. The config is
\set SHOW_CONTEXT never
-- validated when created; unknown keys are refused.
CREATE FUNCTION try_dest(n text, k text, c jsonb) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text;
BEGIN
	PERFORM evpipe.create_destination(n, k, c);
	RETURN 'created';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
	RETURN st || ' ' || msg || coalesce(' | ' || nullif(det, ''), '');
END $$;
SELECT try_dest('hook', 'http', '{"url": "https://example.com/hook", "headers": {"Authorization": "Bearer t0ken"},
	"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "max_attempts": 5, "timeout_ms": 2000,
	"backoff_base_ms": 100, "backoff_max_ms": 5000, "rate_limit_per_sec": 10, "enrich": {"brand": "x"}}');
SELECT try_dest('queue', 'sqs', '{"queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/q.fifo", "region": "eu-west-1",
	"access_key_id": "AKIDEXAMPLE", "secret_access_key": "s3cr3t", "message_group_field": "payload.accountId"}');
SELECT try_dest('gql', 'graphql', '{"url": "http://127.0.0.1:4000/graphql", "query": "mutation { x }", "headers": {"Authorization": "Bearer abc"}}');
CREATE TABLE handled (event jsonb);
CREATE FUNCTION handle(e jsonb) RETURNS void LANGUAGE sql AS $$ INSERT INTO handled VALUES (e) $$;
SELECT try_dest('fn', 'function', '{"function": "handle(jsonb)"}');  -- names must be schema-qualified
SELECT try_dest('fn', 'function', '{"function": "public.handle(jsonb)"}');
SELECT config->>'function' FROM evpipe.destinations WHERE name = 'fn';
-- refusals
SELECT try_dest('x', 'smtp', '{}');
SELECT try_dest('x', 'http', '[]');
SELECT try_dest('x', 'http', '{}');
SELECT try_dest('x', 'http', '{"url": "ftp://example.com/"}');
SELECT try_dest('x', 'http', '{"url": "file:///etc/passwd"}');
SELECT try_dest('x', 'http', '{"url": "http://example.com/", "colour": "red"}');
SELECT try_dest('x', 'http', '{"url": "http://example.com/", "max_attempts": 0}');
SELECT try_dest('x', 'http', '{"url": "http://example.com/", "timeout_ms": 1.5}');
SELECT try_dest('x', 'http', '{"url": "http://example.com/", "timeout_ms": "10"}');
SELECT try_dest('x', 'http', '{"url": "http://example.com/", "backoff_base_ms": 10, "backoff_max_ms": 5}');
SELECT try_dest('x', 'http', '{"url": "http://example.com/", "rate_limit_per_sec": 0}');
SELECT try_dest('x', 'http', '{"url": "http://example.com/", "enrich": [1]}');
SELECT try_dest('x', 'http', '{"url": "http://example.com/", "headers": {"X-A": 1}}');
SELECT try_dest('x', 'http', '{"url": "http://example.com/", "headers": {"X-A": "a\r\nInjected: yes"}}');
SELECT try_dest('x', 'http', '{"url": "http://example.com/", "tls_verify": "no"}');
-- the circuit breaker: 0 turns it off; a negative or fractional threshold is refused
SELECT try_dest('x', 'http', '{"url": "http://example.com/", "breaker_threshold": -1}');
SELECT try_dest('x', 'http', '{"url": "http://example.com/", "breaker_threshold": 2.5}');
SELECT try_dest('x', 'http', '{"url": "http://example.com/", "breaker_max_open_ms": 0}');
SELECT try_dest('nobreaker', 'http', '{"url": "http://example.com/", "breaker_threshold": 0, "breaker_max_open_ms": 5000}');
SELECT try_dest('x', 'sqs', '{"queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q"}');
SELECT try_dest('x', 'sqs', '{"queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q", "region": "EU WEST"}');
SELECT try_dest('x', 'sqs', '{"queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q", "region": "eu-west-1", "access_key_id": "AKID"}');
SELECT try_dest('x', 'graphql', '{"url": "http://example.com/"}');
SELECT try_dest('x', 'function', '{"function": "no_such_fn(jsonb)"}');
SELECT try_dest('x', 'function', '{"function": "lower(text)"}');
SELECT try_dest('x', 'function', '{"function": "public.handle(jsonb)", "url": "http://example.com/"}');
SELECT try_dest('bad name', 'http', '{"url": "http://example.com/"}');
SELECT try_dest('hook', 'http', '{"url": "http://example.com/"}');

-- Listing hides secrets and header values.
SELECT name, kind, enabled, config FROM evpipe.destination_list WHERE name IN ('hook', 'queue', 'gql') ORDER BY name;

-- alter, pause/resume, drop
SELECT evpipe.alter_destination('hook', '{"url": "https://example.com/v2"}');
SELECT config FROM evpipe.destinations WHERE name = 'hook';
SELECT evpipe.alter_destination('hook', '{"url": "https://example.com/v2", "nope": 1}');
SELECT evpipe.alter_destination('missing', '{}');
SELECT evpipe.set_destination_enabled('hook', false);
SELECT enabled FROM evpipe.destinations WHERE name = 'hook';
SELECT evpipe.set_destination_enabled('hook', true);
SELECT evpipe.drop_destination('gql');
SELECT evpipe.drop_destination('gql');
-- a destination with routes and pending deliveries is kept unless forced
SELECT evpipe.register_event_type('FN_EVENT', '{"type": "object"}');
SELECT evpipe.add_route('FN_EVENT', 'fn');
SELECT evpipe.ingest(ev('fn-1', 'FN_EVENT', '{"n": 1}'))->>'status';
SELECT evpipe.drop_destination('fn');
DELETE FROM evpipe.routes WHERE destination = 'fn';
SELECT evpipe.drop_destination('fn');
SELECT evpipe.drop_destination('fn', force => true);
SELECT event_id, destination, last_error FROM evpipe.dead_letters WHERE destination = 'fn';

-- event types and sources can be dropped
SELECT evpipe.register_event_type('TEMP', '{}');
SELECT evpipe.drop_event_type('TEMP');
SELECT evpipe.drop_event_type('TEMP');
SELECT evpipe.register_source('tmp-src', 'FN_EVENT');
SELECT evpipe.drop_source('tmp-src'), evpipe.drop_source('tmp-src');
