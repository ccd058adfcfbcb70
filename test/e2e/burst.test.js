// End-to-end: bursts of hundreds of events ingested in one transaction, for
// every destination kind, and targets that fail, all with the settings users
// get (no evpipe GUC set but shared_preload_libraries; destination configs
// without tuning unless a test says why). Two defects hid here: a function
// destination stranded the rest of its claim (and other destinations' rows
// claimed with it), and the circuit breaker turned per-event transient
// failures into a stall.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startCluster, freePort, sleep } = require('./lib/cluster');
const { metricSum } = require('./lib/daemon');
const { startPeer } = require('./lib/peers');
const { evpipeApi } = require('./lib/api');
const {
  SQSClient, CreateQueueCommand, ReceiveMessageCommand, DeleteMessageBatchCommand,
} = require('../peers/node_modules/@aws-sdk/client-sqs');

const BURST = 500;
const AKID = 'AKIDEVPIPEBURST';
const SECRET = 'evpipe-burst-secret';
let pg;
let sink;
let gql;
let sqs;
let client;

const { q, dest, route, type, fnDest } = evpipeApi(() => pg);
const count = async (sql, params) => (await q(sql, params))[0].n;

// n events of one type in one transaction (one statement)
const PAYLOAD = "jsonb_build_object('g', g, 'accountId', 'a' || (g % 7))";
async function burst(eventType, prefix, n = BURST, payload = PAYLOAD) {
  const rows = await q(`SELECT count(*) FILTER (WHERE (evpipe.ingest(jsonb_build_object('eventId', $2 || g,
      'eventType', $1::text, 'source', 'burst', 'payload', ${payload},
      'timestamp', '2026-12-02T10:00:00Z')) ->> 'status') = 'accepted')::int AS n FROM generate_series(1, $3::int) g`,
  [eventType, prefix, n]);
  assert.equal(rows[0].n, n, 'every event accepted');
}

// The eventIds of the first n messages of a queue (received and deleted), or
// of as many as arrive within ms
async function receiveAll(queueUrl, n, ms = 20000) {
  const ids = [];
  const t0 = Date.now();
  while (ids.length < n && Date.now() - t0 < ms) {
    const msgs = (await client.send(new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 0 }))).Messages || [];
    for (const m of msgs) ids.push(JSON.parse(m.Body).eventId);
    if (msgs.length) {
      await client.send(new DeleteMessageBatchCommand({
        QueueUrl: queueUrl, Entries: msgs.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle })),
      }));
    } else await sleep(100);
  }
  return ids;
}

const deliveredCount = (d) => count('SELECT count(*)::int AS n FROM evpipe.delivered WHERE destination = $1', [d]);
const waitDelivered = (d, n, ms) => pg.waitFor(
  'SELECT count(*)::int AS n FROM evpipe.delivered WHERE destination = $1', (r) => r[0].n >= n, ms, [d]);
const requests = (path) => sink.control('GET', `/_control/requests?path=${encodeURIComponent(path)}`);
const logSince = (mark) => pg.logSince(mark);
// Whether a destination's breaker is not closed: the workers' state in shared memory
// (evpipe.stats), or (daemon host) every evpiped's own breaker (each daemon's /metrics: a
// daemon whose breaker is still closed keeps sending until its own window has passed)
const circuitNotClosed = async (d) => (pg.host === 'daemon'
  ? (await pg.metricsTexts()).every((t) => metricSum(t, 'evpipe_circuit_open', { destination: d }) > 0)
  : (await q('SELECT circuit FROM evpipe.stats WHERE destination = $1', [d]))[0].circuit !== 'closed');
async function waitCircuitOpen(d, ms) {
  const t0 = Date.now();
  while (!(await circuitNotClosed(d))) {
    if (Date.now() - t0 > ms) throw new Error(`the circuit of ${d} did not open within ${ms} ms`);
    await sleep(50);
  }
}

before(async () => {
  sink = await startPeer('http-sink');
  gql = await startPeer('graphql-server');
  sqs = await startPeer('sqs', ['--credentials', `${AKID}:${SECRET}`]);
  client = new SQSClient({
    region: 'us-east-1', endpoint: sqs.url, credentials: { accessKeyId: AKID, secretAccessKey: SECRET },
  });
  pg = await startCluster(); // evpipe preloaded, every evpipe setting at its default
  await pg.waitWorkers(2); // the in-server workers, or (daemon host) two connected evpiped
});

after(async () => {
  if (pg) await pg.stop();
  for (const p of [sink, gql, sqs]) if (p) await p.stop();
  if (client) client.destroy();
});

test('http: a burst in one transaction arrives promptly, each event once', async () => {
  await type('B_HTTP');
  await dest('b-http', 'http', { url: `${sink.url}/b-http` });
  await route('B_HTTP', 'b-http');
  const t0 = Date.now();
  await burst('B_HTTP', 'bh-');
  await waitDelivered('b-http', BURST, 30000);
  const got = await requests('/b-http');
  assert.equal(got.length, BURST, 'one request per event');
  assert.equal(new Set(got.map((r) => r.headers['idempotency-key'])).size, BURST);
  console.log(`# http: ${BURST} events in ${Date.now() - t0} ms`);
});

test('function: a burst is handled in full, and rows of other destinations claimed with it are not stranded', async () => {
  await q('CREATE TABLE burst_log (event_id text PRIMARY KEY, g int)');
  await q(`CREATE FUNCTION burst_handler(e jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO burst_log VALUES (e->>'eventId', (e->'payload'->>'g')::int) $$`);
  await type('B_FN');
  await fnDest('b-fn', { function: 'public.burst_handler(jsonb)' }, ['TABLE burst_log', 'FUNCTION burst_handler(jsonb)']);
  await dest('b-fn-http', 'http', { url: `${sink.url}/b-fn-http` });
  await route('B_FN', 'b-fn');
  await route('B_FN', 'b-fn-http');
  const t0 = Date.now();
  await burst('B_FN', 'bf-');
  // with the defect: 2 rows handled, the other 498 (and every HTTP row
  // claimed in the same statement) leased by an idle worker for a minute
  await pg.waitFor('SELECT count(*)::int AS n FROM burst_log', (r) => r[0].n >= BURST, 30000);
  await waitDelivered('b-fn-http', BURST, 30000);
  assert.equal(await count('SELECT count(*)::int AS n FROM burst_log'), BURST, 'each event handled once');
  assert.equal(await deliveredCount('b-fn'), BURST);
  assert.equal((await requests('/b-fn-http')).length, BURST);
  const left = await q("SELECT status, count(*)::int AS n FROM evpipe.deliveries WHERE event_id LIKE 'bf-%' AND status <> 'delivered' GROUP BY 1");
  assert.deepEqual(left, [], 'nothing pending or in flight');
  console.log(`# function + http: ${BURST} events to each in ${Date.now() - t0} ms`);
});

test('graphql: a burst arrives promptly, each event once', async () => {
  await type('B_GQL');
  await dest('b-gql', 'graphql', {
    url: `${gql.url}/graphql`,
    query: 'mutation Ingest($input: EventInput!) { ingestEvent(input: $input) { ok eventId } }',
    enrich: { brand: 'burst' },
  });
  await route('B_GQL', 'b-gql');
  await burst('B_GQL', 'bg-', BURST, "jsonb_build_object('name', 'n' || g, 'body', 'burst')");
  await waitDelivered('b-gql', BURST, 30000);
  const got = await gql.control('GET', '/_control/received');
  assert.equal(new Set(got.map((r) => r.eventId)).size, BURST);
});

test('sqs: a burst arrives promptly, in batches of at most 10', async () => {
  await client.send(new CreateQueueCommand({ QueueName: 'burst' }));
  const queueUrl = `${sqs.url}/123456789012/burst`;
  await type('B_SQS');
  await dest('b-sqs', 'sqs', {
    queue_url: queueUrl, region: 'us-east-1', endpoint_url: sqs.url, access_key_id: AKID, secret_access_key: SECRET,
  });
  await route('B_SQS', 'b-sqs');
  await burst('B_SQS', 'bs-');
  await waitDelivered('b-sqs', BURST, 30000);
  const ids = new Set(await receiveAll(queueUrl, BURST));
  assert.equal(ids.size, BURST, 'every event is in the queue');
  const sends = (await sqs.control('GET', '/_control/log')).filter((l) => l.target.endsWith('SendMessageBatch') && l.status === 200);
  assert.ok(sends.every((l) => l.entries >= 1 && l.entries <= 10), 'at most 10 entries per request');
  assert.ok(sends.length >= BURST / 10 && sends.length < BURST / 2, `batched: ${sends.length} requests for ${BURST} events`);
});

test('a target that fails each event twice, then accepts it: all delivered after three attempts, the breaker stays closed', async () => {
  // the shape: 503, 503, 200 per event; max_attempts 5, backoff and breaker at their defaults
  await sink.control('POST', '/_control/behavior', { path: '/b-flaky', failEachTimes: 2, failStatus: 503 });
  await type('B_FLAKY');
  await dest('b-flaky', 'http', { url: `${sink.url}/b-flaky`, max_attempts: 5 });
  await route('B_FLAKY', 'b-flaky');
  const mark = pg.logMark();
  const t0 = Date.now();
  await burst('B_FLAKY', 'bfl-', 50);
  await waitDelivered('b-flaky', 50, 30000);
  const attempts = await q("SELECT attempts, count(*)::int AS n FROM evpipe.delivered WHERE destination = 'b-flaky' GROUP BY 1");
  assert.deepEqual(attempts, [{ attempts: 3, n: 50 }], 'each event after exactly three attempts');
  assert.equal(await count("SELECT count(*)::int AS n FROM evpipe.dead_letters WHERE destination = 'b-flaky'"), 0);
  assert.doesNotMatch(logSince(mark), /event=circuit_open destination=b-flaky/, 'per-event failures are not an outage');
  console.log(`# 50 events, 503-503-200 each: delivered in ${Date.now() - t0} ms`);
});

test('a burst to the same flaky shape: all delivered, none dead', async () => {
  await sink.control('POST', '/_control/behavior', { path: '/b-flaky2', failEachTimes: 2, failStatus: 503 });
  await type('B_FLAKY2');
  await dest('b-flaky2', 'http', { url: `${sink.url}/b-flaky2` });
  await route('B_FLAKY2', 'b-flaky2');
  await burst('B_FLAKY2', 'bfm-');
  await waitDelivered('b-flaky2', BURST, 60000);
  assert.equal(await count("SELECT count(*)::int AS n FROM evpipe.dead_letters WHERE destination = 'b-flaky2'"), 0);
});

// The burst above opens the breaker when its first attempts take longer than
// breaker_window_ms (a slow moment, or a rate limit): claims go oldest first, so
// every row's first attempt fails before any row's third. The half-open probe
// then took the oldest due row, an untried one, whose failure doubled the open
// time up to breaker_max_open_ms: nothing was delivered for a minute (seen in
// this suite). The probe is the newest due row now: one that failed before.
test('a flaky burst that opens the breaker (its first attempts outlast breaker_window_ms) drains once the probe succeeds', async () => {
  await sink.control('POST', '/_control/behavior', { path: '/b-flaky3', failEachTimes: 2, failStatus: 503 });
  await type('B_FLAKY3');
  // 100/s: the 300 first attempts take 3 s, past the window
  await dest('b-flaky3', 'http', { url: `${sink.url}/b-flaky3`, rate_limit_per_sec: 100, breaker_window_ms: 1000 });
  await route('B_FLAKY3', 'b-flaky3');
  const mark = pg.logMark();
  const t0 = Date.now();
  await burst('B_FLAKY3', 'bf3-', 300);
  await waitDelivered('b-flaky3', 300, 45000);
  console.log(`# 300 flaky events at 100/s, breaker opened: delivered in ${Date.now() - t0} ms`);
  assert.match(logSince(mark), /event=circuit_open destination=b-flaky3/, 'the breaker opened (the case under test)');
  assert.equal(await count("SELECT count(*)::int AS n FROM evpipe.dead_letters WHERE destination = 'b-flaky3'"), 0);
  const attempts = await q("SELECT attempts, count(*)::int AS n FROM evpipe.delivered WHERE destination = 'b-flaky3' GROUP BY 1");
  assert.deepEqual(attempts, [{ attempts: 3, n: 300 }], 'each event after exactly three attempts: waiting spent none');
});

test('a target that refuses connections opens the breaker at once; it closes on the first success', async () => {
  const port = await freePort(); // nothing listens here until the sink starts below
  await type('B_DOWN');
  await dest('b-down', 'http', { url: `http://127.0.0.1:${port}/b-down` });
  await route('B_DOWN', 'b-down');
  const mark = pg.logMark();
  await burst('B_DOWN', 'bd-', 300);
  await waitCircuitOpen('b-down', 10000);
  assert.match(logSince(mark), /event=circuit_open destination=b-down [^\n]*status=0/);
  await sleep(3000);
  // the backlog waits without spending attempts: a few probes, not 300 rows x retries
  const spent = await count("SELECT COALESCE(sum(attempts), 0)::int AS n FROM evpipe.outbox WHERE destination = 'b-down'");
  assert.ok(spent < 300 + 60, `attempts spent while down: ${spent}`);
  assert.equal(await count("SELECT count(*)::int AS n FROM evpipe.dead_letters WHERE destination = 'b-down'"), 0);
  const back = await startPeer('http-sink', ['--port', String(port)]);
  try {
    await waitDelivered('b-down', 300, 90000);
    assert.match(logSince(mark), /event=circuit_closed destination=b-down/);
    if (pg.host !== 'daemon') {
      // (each evpiped keeps its own breaker: one that took none of the backlog closes at its next probe)
      const st = await q("SELECT circuit FROM evpipe.stats WHERE destination = 'b-down'");
      assert.equal(st[0].circuit, 'closed');
    }
  } finally {
    await back.stop();
  }
});

test('a target answering 503 to every request for a sustained stretch opens the breaker; rows wait, then drain', async () => {
  await sink.control('POST', '/_control/behavior', { path: '/b-503', status: 503 });
  await type('B_503');
  await dest('b-503', 'http', { url: `${sink.url}/b-503` });
  await route('B_503', 'b-503');
  const mark = pg.logMark();
  const t0 = Date.now();
  await burst('B_503', 'b5-', 200);
  await waitCircuitOpen('b-503', 20000);
  const openedAfter = Date.now() - t0;
  // not before the window (5 s by default) of failures with no success
  assert.ok(openedAfter >= 4500, `opened after ${openedAfter} ms`);
  assert.match(logSince(mark), /event=circuit_open destination=b-503 [^\n]*status=503/);
  const before = await count("SELECT COALESCE(sum(attempts), 0)::int AS n FROM evpipe.outbox WHERE destination = 'b-503'");
  await sleep(4000);
  const after = await count("SELECT COALESCE(sum(attempts), 0)::int AS n FROM evpipe.outbox WHERE destination = 'b-503'");
  const probes = 10 * (pg.host === 'daemon' ? pg.daemons.length : 1); // a breaker per evpiped
  assert.ok(after - before <= probes, `while open only probes spend attempts (${after - before})`);
  assert.equal(await count("SELECT count(*)::int AS n FROM evpipe.dead_letters WHERE destination = 'b-503'"), 0);
  await sink.control('POST', '/_control/behavior', { path: '/b-503', status: 200 });
  await waitDelivered('b-503', 200, 90000);
  assert.match(logSince(mark), /event=circuit_closed destination=b-503/);
});

test('max_age_ms: rows held back by an open breaker or a pause dead-letter once too old, with a clear last_error', async () => {
  const port = await freePort();
  await type('B_OLD');
  await dest('b-old', 'http', { url: `http://127.0.0.1:${port}/b-old`, max_age_ms: 4000 });
  await dest('b-paused', 'http', { url: `${sink.url}/b-paused`, max_age_ms: 3000 });
  await route('B_OLD', 'b-old');
  await route('B_OLD', 'b-paused');
  await q("SELECT evpipe.set_destination_enabled('b-paused', false)");
  await burst('B_OLD', 'bo-', 100);
  const dl = await pg.waitFor(
    "SELECT destination, count(*)::int AS n, max(attempts) AS max_attempts, min(last_error) AS e FROM evpipe.dead_letters WHERE event_id LIKE 'bo-%' GROUP BY 1 ORDER BY 1",
    (r) => r.length === 2 && r.every((x) => x.n === 100), 30000);
  const by = Object.fromEntries(dl.map((r) => [r.destination, r]));
  // rows that were tried say what the last attempt met; rows the breaker held never went out
  const errors = await q("SELECT last_error AS e, attempts FROM evpipe.dead_letters WHERE destination = 'b-old'");
  assert.ok(errors.every((r) => /^max_age_ms exceeded: /.test(r.e)), 'every one says why');
  assert.ok(errors.some((r) => r.attempts > 0 && /last error: .*(connect|refused)/i.test(r.e)), 'the attempted ones keep their last error');
  assert.ok(errors.some((r) => r.attempts === 0 && /\(never attempted\)$/.test(r.e)), 'held rows were never attempted');
  assert.ok(by['b-old'].max_attempts < 8, 'fewer attempts than max_attempts: the age bound ended them');
  assert.match(by['b-paused'].e, /^max_age_ms exceeded: ingested \d+ s ago, not delivered \(never attempted\)/);
  assert.equal(by['b-paused'].max_attempts, 0);
  assert.equal(await count("SELECT count(*)::int AS n FROM evpipe.outbox WHERE event_id LIKE 'bo-%'"), 0);
  assert.equal((await requests('/b-paused')).length, 0);
  // replay gives a fresh age: the replayed rows are delivered once resumed
  await q("SELECT evpipe.set_destination_enabled('b-paused', true)");
  assert.equal((await q("SELECT evpipe.replay_dead_letters('b-paused') AS n"))[0].n, 100);
  await waitDelivered('b-paused', 100, 30000);
});

// One ingest_batch call of 500 events, fanned out to one destination of every
// kind (last in the file: its 2,000 deliveries, and the autovacuum of the
// outbox after them, stay out of the breaker tests' timing): the batch path's outbox rows (written set-based, in both installs) are
// claimed and delivered like the ones single ingests write
test('one ingest_batch of 500 events fans out to http, function, graphql and sqs; each event arrives once at each', async () => {
  await client.send(new CreateQueueCommand({ QueueName: 'burst-batch' }));
  const queueUrl = `${sqs.url}/123456789012/burst-batch`;
  await q('CREATE TABLE batch_log (event_id text PRIMARY KEY, name text)');
  await q(`CREATE FUNCTION batch_handler(e jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO batch_log VALUES (e->>'eventId', e->'payload'->>'name') $$`);
  await type('B_ALL');
  await dest('ba-http', 'http', { url: `${sink.url}/ba-http` });
  await fnDest('ba-fn', { function: 'public.batch_handler(jsonb)' }, ['TABLE batch_log', 'FUNCTION batch_handler(jsonb)']);
  await dest('ba-gql', 'graphql', {
    url: `${gql.url}/graphql`,
    query: 'mutation Ingest($input: EventInput!) { ingestEvent(input: $input) { ok eventId } }',
    enrich: { brand: 'batch' },
  });
  await dest('ba-sqs', 'sqs', {
    queue_url: queueUrl, region: 'us-east-1', endpoint_url: sqs.url, access_key_id: AKID, secret_access_key: SECRET,
  });
  for (const d of ['ba-http', 'ba-fn', 'ba-gql', 'ba-sqs']) await route('B_ALL', d);
  const t0 = Date.now();
  const r = await q(`SELECT (SELECT count(*) FROM jsonb_array_elements(a) x WHERE x ->> 'status' = 'accepted')::int AS accepted,
      (SELECT count(*) FROM jsonb_array_elements(a) x WHERE (x -> 'destinations') @> '["ba-http", "ba-fn", "ba-gql", "ba-sqs"]')::int AS fanned
    FROM evpipe.ingest_batch((SELECT jsonb_agg(jsonb_build_object('eventId', 'ba-' || g, 'eventType', 'B_ALL',
      'source', 'burst', 'payload', jsonb_build_object('name', 'n' || g, 'body', 'batch'),
      'timestamp', '2026-12-04T10:00:00Z')) FROM generate_series(1, $1::int) g)) a`, [BURST]);
  assert.deepEqual(r[0], { accepted: BURST, fanned: BURST }, 'every event accepted and routed to all four');
  try {
    for (const d of ['ba-http', 'ba-fn', 'ba-gql', 'ba-sqs']) await waitDelivered(d, BURST, 30000);
  } catch (e) {
    console.log(JSON.stringify(await q("SELECT destination, status, count(*)::int AS n FROM evpipe.deliveries WHERE event_id LIKE 'ba-%' GROUP BY 1, 2")));
    console.log(JSON.stringify(await q("SELECT destination, attempts, last_error, leased_by FROM evpipe.outbox WHERE event_id LIKE 'ba-%' LIMIT 5")));
    console.log(pg.log().split('\n').slice(-40).join('\n'));
    throw e;
  }
  console.log(`# ingest_batch to four kinds: ${BURST} events each in ${Date.now() - t0} ms`);
  const http = await requests('/ba-http');
  assert.equal(http.length, BURST, 'http: one request per event');
  assert.equal(new Set(http.map((x) => x.headers['idempotency-key'])).size, BURST);
  assert.deepEqual(await q('SELECT count(*)::int AS n, count(DISTINCT name)::int AS g FROM batch_log'), [{ n: BURST, g: BURST }], 'function: each event once');
  const got = (await gql.control('GET', '/_control/received')).filter((x) => String(x.eventId).startsWith('ba-'));
  assert.equal(got.length, BURST, 'graphql: one mutation per event');
  assert.equal(new Set(got.map((x) => x.eventId)).size, BURST);
  const ids = await receiveAll(queueUrl, BURST);
  assert.equal(ids.length, BURST, 'sqs: one message per event');
  assert.equal(new Set(ids).size, BURST);
  const left = await q("SELECT status, count(*)::int AS n FROM evpipe.deliveries WHERE event_id LIKE 'ba-%' AND status <> 'delivered' GROUP BY 1");
  assert.deepEqual(left, [], 'nothing pending, in flight or dead');
});
