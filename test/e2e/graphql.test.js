// End-to-end: the scenario. A source sends {"id","name","body",
// "timestamp"} once and needs a fast 2xx; the target is a rate-limited
// GraphQL API that needs "brand": "testBrand"; failures are retried with
// backoff, then dead-lettered; successes are marked processed.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startCluster } = require('./lib/cluster');
const { startPeer } = require('./lib/peers');

const LIMIT = 10;
let pg;
let gql;

const raw = (id) => ({ id, name: `test event ${id}`, body: 'test body', timestamp: '2026-11-21T10:00:00Z' });
const ingestRaw = (e) => pg.query("SELECT evpipe.ingest($1::jsonb, source => 'source-app') AS r", [JSON.stringify(e)]);
const delivered = (n, ms = 30000) => pg.waitFor(
  "SELECT count(*)::int AS n FROM evpipe.delivered WHERE destination = 'target'", (r) => r[0].n >= n, ms);

before(async () => {
  gql = await startPeer('graphql-server', ['--rate-limit', String(LIMIT), '--require-token', 'tok-123']);
  pg = await startCluster({ config: { 'evpipe.workers': 2, 'evpipe.tick_ms': 200 } });
  await pg.query(`SELECT evpipe.register_event_type('SOURCE_APP_EVENT', '{
    "type": "object", "required": ["name", "body"],
    "properties": {"name": {"type": "string"}, "body": {"type": "string"}}, "additionalProperties": false}')`);
  await pg.query("SELECT evpipe.register_source('source-app', 'SOURCE_APP_EVENT')");
  await pg.query('SELECT evpipe.create_destination($1, $2, $3::jsonb)', ['target', 'graphql', JSON.stringify({
    url: `${gql.url}/graphql`,
    query: 'mutation Ingest($input: EventInput!) { ingestEvent(input: $input) { ok eventId } }',
    headers: { Authorization: 'Bearer tok-123' },
    enrich: { brand: 'testBrand' },
    rate_limit_per_sec: LIMIT,
    max_attempts: 4,
    backoff_base_ms: 100,
    backoff_max_ms: 400,
  })]);
  await pg.query("SELECT evpipe.add_route('SOURCE_APP_EVENT', 'target')");
});

after(async () => {
  if (pg) await pg.stop();
  if (gql) await gql.stop();
});

test('a burst drains at the target rate: brand added, limit never exceeded, all processed', async () => {
  const n = 40;
  const lat = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const r = await ingestRaw(raw(`b-${i}`));
    lat.push(performance.now() - t0);
    assert.equal(r[0].r.status, 'accepted');
  }
  lat.sort((a, b) => a - b);
  console.log(`# source ingest latency during the burst: p50 ${lat[n / 2].toFixed(2)} ms, max ${lat[n - 1].toFixed(2)} ms (budget 500 ms)`);
  const t0 = Date.now();
  await delivered(n, 30000);
  const secs = (Date.now() - t0) / 1000;
  const stats = await gql.control('GET', '/_control/stats');
  console.log(`# drained ${n} events in ${secs.toFixed(1)} s; target saw at most ${stats.maxArrivalsPerSecond} requests in any second (limit ${LIMIT})`);
  assert.equal(stats.rejected429, 0, 'the target never had to refuse a request');
  assert.ok(stats.maxArrivalsPerSecond <= LIMIT, `at most ${LIMIT} in any one-second window (saw ${stats.maxArrivalsPerSecond})`);
  const got = await gql.control('GET', '/_control/received');
  const one = got.find((r) => r.eventId === 'b-7');
  assert.deepEqual(one.input, {
    eventId: 'b-7', timestamp: '2026-11-21T10:00:00Z', name: 'test event b-7', body: 'test body', brand: 'testBrand',
  });
  const st = await pg.query("SELECT delivered, current_rate, throttled_seconds FROM evpipe.stats WHERE destination = 'target'");
  assert.ok(Number(st[0].delivered) >= n);
  if (pg.host === 'daemon') {
    // evpiped's rate state is its own (evpipe.stats reads the server's shared memory): each
    // daemon's /metrics counts the time its sends waited
    const waited = await pg.metricSum('evpipe_rate_limit_wait_seconds_total', { destination: 'target' });
    assert.ok(waited > 0, `the daemons' metrics show time spent waiting for the rate limit (${waited} s)`);
  } else {
    assert.ok(st[0].throttled_seconds > 0, 'stats show time spent waiting for the rate limit');
  }
  const processed = await pg.query("SELECT status FROM evpipe.deliveries WHERE event_id = 'b-0'");
  assert.equal(processed[0].status, 'delivered');
});

test('duplicate sends from the source are delivered once', async () => {
  await gql.control('POST', '/_control/reset');
  const a = await ingestRaw(raw('dup-1'));
  const b = await ingestRaw(raw('dup-1'));
  assert.equal(a[0].r.status, 'accepted');
  assert.equal(b[0].r.status, 'duplicate');
  await pg.waitFor("SELECT 1 FROM evpipe.delivered WHERE event_id = 'dup-1'", (r) => r.length === 1, 10000);
  await new Promise((r) => setTimeout(r, 500));
  const got = await gql.control('GET', '/_control/received');
  assert.equal(got.filter((r) => r.eventId === 'dup-1').length, 1);
});

test('a 429 with Retry-After pauses the destination without spending attempts', async () => {
  await gql.control('POST', '/_control/reset');
  await gql.control('POST', '/_control/behavior', { rateLimit: 2 });
  for (let i = 0; i < 8; i++) await ingestRaw(raw(`slow-${i}`));
  await pg.waitFor("SELECT count(*)::int AS n FROM evpipe.delivered WHERE event_id LIKE 'slow-%'", (r) => r[0].n === 8, 30000);
  const stats = await gql.control('GET', '/_control/stats');
  assert.ok(stats.rejected429 > 0, 'the target did refuse some requests');
  const dead = await pg.query("SELECT count(*)::int AS n FROM evpipe.dead_letters WHERE event_id LIKE 'slow-%'");
  assert.equal(dead[0].n, 0, 'no event dead-lettered although max_attempts is 4');
  const att = await pg.query("SELECT max(attempts) AS m FROM evpipe.delivered WHERE event_id LIKE 'slow-%'");
  assert.equal(att[0].m, 1, 'waiting for Retry-After spent no attempt');
  assert.match(pg.log(), /event=destination_paused destination=target/);
  await gql.control('POST', '/_control/behavior', { rateLimit: LIMIT });
});

test('failures are retried with backoff, dead-lettered after max_attempts, replayed after recovery', async () => {
  await gql.control('POST', '/_control/reset');
  await gql.control('POST', '/_control/behavior', { failTimes: 1000, mode: 'error', code: 'INTERNAL_SERVER_ERROR', rateLimit: LIMIT });
  await ingestRaw(raw('fail-1'));
  const dl = await pg.waitFor("SELECT * FROM evpipe.dead_letters WHERE event_id = 'fail-1'", (r) => r.length === 1, 20000);
  assert.equal(dl[0].attempts, 4);
  assert.match(dl[0].last_error, /GraphQL: injected failure \(INTERNAL_SERVER_ERROR\)/);
  assert.equal(dl[0].last_status, 200, 'a 200 with errors is a failure');
  const retries = (pg.log().match(/event=retry_scheduled event_id=fail-1 /g) || []).length;
  assert.equal(retries, 3);
  // a validation error from the API is permanent: one attempt
  await gql.control('POST', '/_control/behavior', { failTimes: 1, mode: 'error', code: 'BAD_USER_INPUT', rateLimit: LIMIT });
  await ingestRaw(raw('bad-1'));
  const bad = await pg.waitFor("SELECT attempts FROM evpipe.dead_letters WHERE event_id = 'bad-1'", (r) => r.length === 1, 10000);
  assert.equal(bad[0].attempts, 1);
  // the target recovers; the operator replays
  await gql.control('POST', '/_control/behavior', { rateLimit: LIMIT });
  const n = await pg.query("SELECT evpipe.replay_dead_letters(destination => 'target') AS n");
  assert.equal(n[0].n, 2);
  await pg.waitFor("SELECT count(*)::int AS n FROM evpipe.delivered WHERE event_id IN ('fail-1', 'bad-1')", (r) => r[0].n === 2, 10000);
  const got = await gql.control('GET', '/_control/received');
  assert.ok(got.some((r) => r.eventId === 'fail-1' && r.input.brand === 'testBrand'));
});

test('ingest stays fast with the target down (reported)', async () => {
  await gql.control('POST', '/_control/behavior', { failTimes: 100000, mode: 'status', status: 503, rateLimit: 0 });
  const lat = [];
  for (let i = 0; i < 100; i++) {
    const t0 = performance.now();
    await ingestRaw(raw(`down-${i}`));
    lat.push(performance.now() - t0);
  }
  lat.sort((a, b) => a - b);
  console.log(`# ingest latency with the target down: p50 ${lat[50].toFixed(2)} ms, p99 ${lat[98].toFixed(2)} ms (budget 500 ms)`);
  assert.ok(lat[50] < 500);
  await gql.control('POST', '/_control/behavior', { rateLimit: LIMIT });
});
