-- Routing: explicit rules, evaluated in id order. A rule matches on the
\set SHOW_CONTEXT never
-- event type (exact, or a prefix pattern such as ACCOUNT_*), optionally on
-- source and priority, and names one destination. Every matching rule fans
-- out: one outbox row per destination.
SELECT evpipe.register_event_type('ACCOUNT_CLOSED', '{"type": "object"}');
SELECT evpipe.register_event_type('PAYMENT_MADE', '{"type": "object"}');
SELECT evpipe.create_destination('audit', 'http', '{"url": "http://127.0.0.1:9/audit"}');
SELECT evpipe.create_destination('alerts', 'http', '{"url": "http://127.0.0.1:9/alerts"}');
SELECT evpipe.create_destination('billing', 'sqs', '{"queue_url": "http://127.0.0.1:9/000000000000/billing", "region": "us-east-1"}');
SELECT evpipe.add_route('ACCOUNT_*', 'audit') AS audit_rule \gset
SELECT evpipe.add_route('ACCOUNT_CLOSED', 'alerts', priority => 'high');
SELECT evpipe.add_route('*', 'billing', source => 'payments');
SELECT id, event_type, source, priority, destination, enabled FROM evpipe.route_list;

-- ACCOUNT_UPDATED: its exact rule (ledger) and the prefix rule (audit)
SELECT evpipe.ingest(ev('r-1', 'ACCOUNT_UPDATED', '{"accountId": "a"}'))->'destinations';
SELECT destination FROM evpipe.outbox WHERE event_id = 'r-1' ORDER BY id;
-- priority decides the alert
SELECT evpipe.ingest(ev('r-2', 'ACCOUNT_CLOSED', '{}'))->'destinations';
SELECT evpipe.ingest(ev('r-3', 'ACCOUNT_CLOSED', '{}', '{"priority": "high"}'))->'destinations';
-- source decides billing; * matches any type
SELECT evpipe.ingest(ev('r-4', 'PAYMENT_MADE', '{}', '{"source": "payments"}'))->'destinations';
-- An event no rule matches is refused, never silently dropped.
SELECT try_ingest(ev('r-5', 'PAYMENT_MADE', '{}'));
SELECT count(*) FROM evpipe.events WHERE event_id = 'r-5';

-- Two rules to one destination still make one outbox row.
SELECT evpipe.add_route('ACCOUNT_CLOSED', 'audit');
SELECT evpipe.ingest(ev('r-6', 'ACCOUNT_CLOSED', '{}'))->'destinations';

-- route_explain shows which rules match and why, and writes nothing.
SELECT x - 'rules' AS decision,
	(SELECT string_agg(format('rule %s (%s -> %s): %s, %s', r->>'id', r->>'eventType', r->>'destination',
		CASE WHEN (r->>'matched')::boolean THEN 'matched' ELSE 'no match' END, r->>'reason'), E'\n')
	 FROM jsonb_array_elements(x->'rules') r) AS rules
FROM evpipe.route_explain(ev('r-7', 'ACCOUNT_CLOSED', '{}', '{"priority": "high"}')) x \gx
SELECT count(*) FROM evpipe.events WHERE event_id = 'r-7';
SELECT try_ingest(ev('r-7', 'NOPE', '{}'));

-- Disabled rules do not match; dropped rules are gone.
SELECT evpipe.set_route_enabled(:audit_rule, false);
SELECT evpipe.ingest(ev('r-8', 'ACCOUNT_UPDATED', '{"accountId": "a"}'))->'destinations';
SELECT evpipe.set_route_enabled(:audit_rule, true);
SELECT evpipe.drop_route(:audit_rule);
SELECT evpipe.ingest(ev('r-9', 'ACCOUNT_UPDATED', '{"accountId": "a"}'))->'destinations';
-- Rule validation
SELECT evpipe.add_route('ACC*UNT', 'audit');
SELECT evpipe.add_route('ACCOUNT_UPDATED', 'nowhere');
SELECT evpipe.add_route('ACCOUNT_UPDATED', 'ledger');
SELECT evpipe.add_route('ACCOUNT_UPDATED', 'audit', priority => 'not valid');
