// End-to-end: what an on-call engineer relies on. Metrics parsed by a real
// Prometheus parser, structured logs, tracing end to end, ingest
// throttling, outcome events, pause/resume/drain and health.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const parsePrometheus = require('../peers/node_modules/parse-prometheus-text-format');
const { startCluster } = require('./lib/cluster');
const { startPeer } = require('./lib/peers');

let pg;
let sink;

const ev = (id, type, payload, extra = {}) => ({
  eventId: id, eventType: type, source: 'ops', payload, timestamp: '2026-11-21T10:00:00Z', ...extra,
});
const ingest = async (e) => (await pg.query('SELECT evpipe.ingest($1::jsonb) AS r', [JSON.stringify(e)]))[0].r;
const q = (sql, p) => pg.query(sql, p);
const requests = (path) => sink.control('GET', `/_control/requests?path=${encodeURIComponent(path)}`);

before(async () => {
  sink = await startPeer('http-sink');
  pg = await startCluster({ config: { 'evpipe.workers': 2, 'evpipe.tick_ms': 200, 'evpipe.log_rejections': 'on' } });
  await q(`SELECT evpipe.register_event_type('OPS', '{"type": "object", "required": ["n"]}')`);
  await q(`SELECT evpipe.create_destination('ops-hook', 'http', $1::jsonb)`,
    [JSON.stringify({ url: `${sink.url}/ops`, secret: 'whsec_c2VjcmV0LXRoYXQtbXVzdC1ub3QtbGVhaw==', backoff_base_ms: 50, backoff_max_ms: 100, max_attempts: 2 })]);
  await q("SELECT evpipe.add_route('OPS', 'ops-hook')");
});

after(async () => {
  if (pg) await pg.stop();
  if (sink) await sink.stop();
});

test('metrics: Prometheus text a real parser reads, with labels, surviving worker restarts', async () => {
  for (let i = 0; i < 10; i++) await ingest(ev(`m-${i}`, 'OPS', { n: i }));
  await ingest(ev('m-0', 'OPS', { n: 0 }));                      // a duplicate
  await assert.rejects(ingest(ev('m-bad', 'OPS', {})));          // a schema rejection
  await pg.waitFor("SELECT count(*)::int AS n FROM evpipe.delivered WHERE destination = 'ops-hook'", (r) => r[0].n === 10, 10000);
  const text = (await q('SELECT evpipe.metrics() AS m'))[0].m;
  const fams = Object.fromEntries(parsePrometheus(text).map((f) => [f.name, f]));
  const value = (name, labels) => {
    const m = fams[name].metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels[k] === v));
    return m ? Number(m.value) : undefined;
  };
  assert.equal(fams.evpipe_delivered_total.type, 'COUNTER');
  assert.equal(value('evpipe_delivered_total', { destination: 'ops-hook', event_type: 'OPS' }), 10);
  assert.equal(value('evpipe_events_ingested_total', { event_type: 'OPS' }), 10);
  assert.equal(value('evpipe_events_duplicate_total', { event_type: 'OPS' }), 1);
  assert.equal(value('evpipe_events_rejected_total', { reason: 'required' }), 1);
  assert.equal(value('evpipe_pending', { destination: 'ops-hook' }), 0);
  assert.equal(fams.evpipe_delivery_latency_seconds.type, 'HISTOGRAM');
  // (this parser flattens labeled histograms; one series exists here)
  assert.equal(Number(fams.evpipe_delivery_latency_seconds.metrics[0].buckets['+Inf']), 10);
  assert.match(text, /evpipe_delivery_latency_seconds_count\{destination="ops-hook",event_type="OPS"\} 10\n/);
  assert.equal(Number(fams.evpipe_workers_alive.metrics[0].value), 2);
  // counters live in shared memory: a worker restart keeps them
  const pids = await pg.workerPids();
  for (const pid of pids) process.kill(pid, 'SIGTERM');
  await pg.waitFor("SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'evpipe delivery worker' AND pid <> ALL($1)",
    (r) => r[0].n === 2, 10000, [pids]);
  const after2 = Object.fromEntries(parsePrometheus((await q('SELECT evpipe.metrics() AS m'))[0].m).map((f) => [f.name, f]));
  assert.equal(Number(after2.evpipe_delivered_total.metrics.find((x) => x.labels.destination === 'ops-hook').value), 10);
});

test('structured logs: rejections, retries, dead letters, worker start/stop; no secrets; no per-delivery lines by default', async () => {
  await sink.control('POST', '/_control/behavior', { path: '/ops', status: 503 });
  await ingest(ev('log-1', 'OPS', { n: 1 }));
  await pg.waitFor("SELECT 1 FROM evpipe.dead_letters WHERE event_id = 'log-1'", (r) => r.length === 1, 10000);
  await sink.control('POST', '/_control/behavior', { path: '/ops', status: 200 });
  const log = pg.log();
  assert.match(log, /evpipe event=ingest_rejected sqlstate=22023 event_id=m-bad source=ops path=\$\.payload rule=required/);
  assert.match(log, /evpipe event=retry_scheduled event_id=log-1 destination=ops-hook attempt=1 status=503 delay_ms=\d+ error_class=http/);
  assert.match(log, /evpipe event=dead_letter event_id=log-1 destination=ops-hook attempts=2 status=503/);
  assert.match(log, /evpipe event=worker_start worker=\d pid=\d+/);
  assert.match(log, /evpipe event=worker_stop worker=\d pid=\d+/);
  assert.doesNotMatch(log, /event=delivered /);
  assert.ok(!log.includes('c2VjcmV0LXRoYXQtbXVzdC1ub3QtbGVhaw') && !log.includes('secret-that-must-not-leak'));
  await q("ALTER SYSTEM SET evpipe.log_deliveries = on");
  await pg.reload();
  await new Promise((r) => setTimeout(r, 300));
  await ingest(ev('log-2', 'OPS', { n: 2 }));
  await pg.waitFor("SELECT 1 FROM evpipe.delivered WHERE event_id = 'log-2'", (r) => r.length === 1, 10000);
  await new Promise((r) => setTimeout(r, 200));
  assert.match(pg.log(), /evpipe event=delivered event_id=log-2 destination=ops-hook attempt=1 status=200/);
  await q("ALTER SYSTEM RESET evpipe.log_deliveries");
  await pg.reload();
});

test('tracing: the traceparent (given or generated) follows the event to the target and the DLQ', async () => {
  const given = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
  await ingest(ev('tr-1', 'OPS', { n: 1 }, { traceparent: given }));
  await ingest(ev('tr-2', 'OPS', { n: 2 }));
  await pg.waitFor("SELECT count(*)::int AS n FROM evpipe.delivered WHERE event_id IN ('tr-1', 'tr-2')", (r) => r[0].n === 2, 10000);
  const got = await requests('/ops');
  const r1 = got.find((r) => r.headers['idempotency-key'] === 'tr-1');
  const r2 = got.find((r) => r.headers['idempotency-key'] === 'tr-2');
  assert.equal(r1.headers.traceparent, given);
  const stored = (await q("SELECT traceparent FROM evpipe.events WHERE event_id = 'tr-2'"))[0].traceparent;
  assert.match(stored, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  assert.equal(r2.headers.traceparent, stored, 'a generated traceparent is sent downstream');
  const dl = await q("SELECT traceparent FROM evpipe.dead_letters WHERE event_id = 'log-1'");
  assert.match(dl[0].traceparent, /^00-[0-9a-f]{32}-/, 'and shown in the DLQ');
});

test('ingest throttling per source: over the limit is PT429, counted, nothing written', async () => {
  // one event per 2.5 s after a burst of 3: six quick ingests never see a refill
  await q("SELECT evpipe.set_source_limit('bursty', 0.4, 3)");
  const results = [];
  for (let i = 0; i < 6; i++) {
    try {
      await ingest(ev(`thr-${i}`, 'OPS', { n: i }, { source: 'bursty' }));
      results.push('ok');
    } catch (e) {
      results.push(e.code);
    }
  }
  assert.deepEqual(results, ['ok', 'ok', 'ok', 'PT429', 'PT429', 'PT429']);
  const n = await q("SELECT count(*)::int AS n FROM evpipe.events WHERE source = 'bursty'");
  assert.equal(n[0].n, 3);
  const m = (await q('SELECT evpipe.metrics() AS m'))[0].m;
  assert.match(m, /evpipe_ingest_throttled_total\{source="bursty"\} 3/);
  await new Promise((r) => setTimeout(r, 2700));
  assert.equal((await ingest(ev('thr-late', 'OPS', { n: 9 }, { source: 'bursty' }))).status, 'accepted', 'the limit refills');
});

test('outcome events: final states are ingested and routed, never recursively', async () => {
  await q(`SELECT evpipe.create_destination('notify', 'http', $1::jsonb)`, [JSON.stringify({ url: `${sink.url}/notify` })]);
  await q("SELECT evpipe.add_route('evpipe.delivery_*', 'notify')");
  await q("ALTER SYSTEM SET evpipe.outcome_events = on");
  await pg.reload();
  await new Promise((r) => setTimeout(r, 300));
  await ingest(ev('out-ok', 'OPS', { n: 1 }));
  await pg.waitFor("SELECT 1 FROM evpipe.delivered WHERE event_id = 'out-ok'", (r) => r.length === 1, 10000);
  await sink.control('POST', '/_control/behavior', { path: '/ops', status: 400 });
  await ingest(ev('out-bad', 'OPS', { n: 2 }));
  await pg.waitFor("SELECT count(*)::int AS n FROM evpipe.delivered WHERE destination = 'notify'", (r) => r[0].n >= 2, 15000);
  await new Promise((r) => setTimeout(r, 500));
  const got = (await requests('/notify')).map((r) => JSON.parse(r.body));
  const ok = got.find((b) => b.eventType === 'evpipe.delivery_succeeded' && b.payload.eventId === 'out-ok');
  const bad = got.find((b) => b.eventType === 'evpipe.delivery_failed' && b.payload.eventId === 'out-bad');
  assert.ok(ok, 'delivery_succeeded for out-ok');
  assert.equal(ok.payload.destination, 'ops-hook');
  assert.ok(bad, 'delivery_failed for out-bad');
  assert.equal(bad.payload.status, 400);
  assert.ok(!got.some((b) => b.eventType.startsWith('evpipe.') && b.payload.eventType.startsWith('evpipe.')), 'no outcome of an outcome');
  await sink.control('POST', '/_control/behavior', { path: '/ops', status: 200 });
  await q("ALTER SYSTEM RESET evpipe.outcome_events");
  await pg.reload();
});

test('pause, resume, drain and health', async () => {
  await sink.control('POST', '/_control/behavior', { path: '/ops', status: 200 });
  await q("SELECT evpipe.pause_destination('ops-hook')");
  for (let i = 0; i < 5; i++) await ingest(ev(`pz-${i}`, 'OPS', { n: i }));
  await new Promise((r) => setTimeout(r, 700));
  assert.equal((await q("SELECT count(*)::int AS n FROM evpipe.outbox WHERE destination = 'ops-hook'"))[0].n, 5, 'events wait while paused');
  const h1 = (await q('SELECT evpipe.health() AS h'))[0].h;
  assert.deepEqual(h1.pausedDestinations, ['ops-hook']);
  assert.equal(h1.workersAlive, 2);
  assert.equal(h1.workersConfigured, 2);
  await q("SELECT evpipe.resume_destination('ops-hook')");
  const drained = (await q("SELECT evpipe.drain('ops-hook', interval '10 seconds') AS d"))[0].d;
  assert.equal(drained, true);
  assert.equal((await q("SELECT count(*)::int AS n FROM evpipe.delivered WHERE event_id LIKE 'pz-%'"))[0].n, 5);
  const h2 = (await q('SELECT evpipe.health() AS h'))[0].h;
  assert.equal(h2.pending, 0);
  assert.equal(h2.status, 'warning', 'dead letters in the last hour make it a warning');
});
