// End-to-end: delivery workers against a real HTTP sink on 127.0.0.1.
// Every server is started here and stopped by PID.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { startCluster } = require('./lib/cluster');
const { startPeer } = require('./lib/peers');
const { evpipeApi } = require('./lib/api');

let pg;
let sink;

const ev = (id, type, payload, extra = {}) => ({
  eventId: id,
  eventType: type,
  source: 'e2e',
  payload,
  timestamp: '2026-11-21T10:00:00Z',
  ...extra,
});

async function ingest(event) {
  const rows = await pg.query('SELECT evpipe.ingest($1::jsonb) AS r', [JSON.stringify(event)]);
  return rows[0].r;
}

const { fnDest } = evpipeApi(() => pg);

async function dest(name, kind, config) {
  await pg.query('SELECT evpipe.create_destination($1, $2, $3::jsonb)', [name, kind, JSON.stringify(config)]);
}

async function route(type, destination) {
  await pg.query('SELECT evpipe.add_route($1, $2)', [type, destination]);
}

async function type(name, schema = { type: 'object' }) {
  await pg.query('SELECT evpipe.register_event_type($1, $2::jsonb)', [name, JSON.stringify(schema)]);
}

async function requests(path) {
  return sink.control('GET', `/_control/requests?path=${encodeURIComponent(path)}`);
}

async function waitForDeliveries(dst, n, timeoutMs = 20000) {
  return pg.waitFor(
    `SELECT count(*)::int AS n FROM evpipe.delivered WHERE destination = '${dst}'`,
    (rows) => rows[0].n >= n,
    timeoutMs,
  );
}

before(async () => {
  sink = await startPeer('http-sink');
  pg = await startCluster({
    config: {
      'evpipe.workers': 2,
      'evpipe.tick_ms': 200,
      'evpipe.lease_ms': 3000,
      'evpipe.max_in_flight': 32,
    },
  });
  await type('E2E');
});

after(async () => {
  if (pg) await pg.stop();
  if (sink) await sink.stop();
});

test('workers appear in pg_stat_activity with a clear backend_type', async () => {
  if (pg.host === 'daemon') {
    // evpiped: one session each, named by application_name
    const rows = await pg.waitFor(
      "SELECT backend_type, usename FROM pg_stat_activity WHERE application_name = 'evpiped'",
      (r) => r.length === 2,
      10000,
    );
    assert.deepEqual(rows.map((r) => [r.backend_type, r.usename]), [['client backend', 'evpiped'], ['client backend', 'evpiped']]);
    assert.equal((await pg.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'evpipe delivery worker'"))[0].n, 0);
    return;
  }
  const rows = await pg.waitFor(
    "SELECT backend_type, pid FROM pg_stat_activity WHERE backend_type = 'evpipe delivery worker'",
    (r) => r.length === 2,
    10000,
  );
  assert.equal(rows.length, 2);
});

test('happy path: every event delivered once, body and headers right', async () => {
  const secret = 'whsec_' + Buffer.from('0123456789abcdef0123456789abcdef').toString('base64');
  await dest('happy', 'http', { url: `${sink.url}/happy`, secret, headers: { 'X-Team': 'core' }, enrich: { brand: 'b1' } });
  await type('HAPPY');
  await route('HAPPY', 'happy');
  const n = 50;
  const trace = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
  for (let i = 0; i < n; i++) {
    const r = await ingest(ev(`happy-${i}`, 'HAPPY', { i }, i === 0 ? { traceparent: trace } : {}));
    assert.equal(r.status, 'accepted');
  }
  await waitForDeliveries('happy', n);
  const got = await requests('/happy');
  assert.equal(got.length, n, 'each event exactly once');
  const ids = new Set(got.map((r) => r.headers['idempotency-key']));
  assert.equal(ids.size, n);
  const first = got.find((r) => r.headers['idempotency-key'] === 'happy-0');
  assert.equal(first.method, 'POST');
  assert.match(first.headers['content-type'], /^application\/json/);
  assert.equal(first.headers['webhook-id'], 'happy-0');
  assert.equal(first.headers['x-team'], 'core');
  assert.equal(first.headers.traceparent, trace);
  const body = JSON.parse(first.body);
  assert.deepEqual(body, {
    eventId: 'happy-0', eventType: 'HAPPY', source: 'e2e', timestamp: '2026-11-21T10:00:00Z',
    traceparent: trace, payload: { i: 0, brand: 'b1' },
  });
  // Standard Webhooks signature: v1,base64(HMAC-SHA256(key, id.ts.body))
  const key = Buffer.from(secret.slice(6), 'base64');
  const ts = first.headers['webhook-timestamp'];
  assert.ok(Math.abs(Number(ts) - Date.now() / 1000) < 60);
  const mac = crypto.createHmac('sha256', key).update(`happy-0.${ts}.${first.body}`).digest('base64');
  assert.equal(first.headers['webhook-signature'], `v1,${mac}`);
  const st = await pg.query("SELECT status, attempts FROM evpipe.deliveries WHERE event_id = 'happy-1'");
  assert.deepEqual(st[0], { status: 'delivered', attempts: 1 });
  const stats = await pg.query("SELECT pending, delivered FROM evpipe.stats WHERE destination = 'happy'");
  assert.equal(Number(stats[0].pending), 0);
  assert.equal(Number(stats[0].delivered), n);
});

test('transient failures are retried with backoff, then delivered', async () => {
  await sink.control('POST', '/_control/behavior', { path: '/flaky', failTimes: 2, failStatus: 503 });
  await dest('flaky', 'http', { url: `${sink.url}/flaky`, backoff_base_ms: 100, backoff_max_ms: 400 });
  await type('FLAKY');
  await route('FLAKY', 'flaky');
  await ingest(ev('flaky-1', 'FLAKY', {}));
  await waitForDeliveries('flaky', 1);
  const got = await requests('/flaky');
  assert.equal(got.length, 3);
  assert.deepEqual(got.map((r) => r.answeredStatus), [503, 503, 200]);
  const d = await pg.query("SELECT attempts FROM evpipe.delivered WHERE event_id = 'flaky-1'");
  assert.equal(d[0].attempts, 3);
  assert.ok(pg.log().includes('event=retry_scheduled event_id=flaky-1'), 'retries are logged');
});

test('400 is permanent: dead letter after one attempt, with WARNING and NOTIFY', async () => {
  await sink.control('POST', '/_control/behavior', { path: '/bad', status: 400, body: '{"error":"no such account"}' });
  await dest('bad', 'http', { url: `${sink.url}/bad` });
  await type('BAD');
  await route('BAD', 'bad');
  const listener = await pg.client();
  const notes = [];
  listener.on('notification', (m) => notes.push(m));
  await listener.query('LISTEN evpipe_dead_letter');
  await ingest(ev('bad-1', 'BAD', { x: 1 }));
  const dl = await pg.waitFor(
    "SELECT * FROM evpipe.dead_letters WHERE event_id = 'bad-1'",
    (r) => r.length === 1,
    10000,
  );
  const row = dl[0];
  assert.equal(row.destination, 'bad');
  assert.equal(row.event_type, 'BAD');
  assert.equal(row.source, 'e2e');
  assert.equal(row.attempts, 1);
  assert.equal(row.last_status, 400);
  assert.equal(row.last_error, 'HTTP 400');
  assert.match(row.response_excerpt, /no such account/);
  assert.equal(row.event.eventId, 'bad-1');
  assert.ok(row.first_attempt_at && row.last_attempt_at);
  assert.equal((await requests('/bad')).length, 1);
  for (let i = 0; i < 50 && notes.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
  await listener.end();
  assert.equal(notes.length, 1);
  const payload = JSON.parse(notes[0].payload);
  assert.equal(payload.eventId, 'bad-1');
  assert.equal(payload.destination, 'bad');
  assert.match(pg.log(), /WARNING:.*event=dead_letter event_id=bad-1 destination=bad attempts=1/);
  const st = await pg.query("SELECT status FROM evpipe.deliveries WHERE event_id = 'bad-1'");
  assert.equal(st[0].status, 'dead');
});

test('5xx until max_attempts: dead letter; replay after recovery delivers it', async () => {
  await sink.control('POST', '/_control/behavior', { path: '/down', status: 502 });
  await dest('down', 'http', { url: `${sink.url}/down`, max_attempts: 3, backoff_base_ms: 50, backoff_max_ms: 100 });
  await type('DOWN');
  await route('DOWN', 'down');
  await ingest(ev('down-1', 'DOWN', {}));
  const dl = await pg.waitFor(
    "SELECT attempts, last_status FROM evpipe.dead_letters WHERE event_id = 'down-1'",
    (r) => r.length === 1,
    15000,
  );
  assert.equal(dl[0].attempts, 3);
  assert.equal(dl[0].last_status, 502);
  assert.equal((await requests('/down')).length, 3);
  // the target recovers; an operator replays
  await sink.control('POST', '/_control/behavior', { path: '/down', status: 200 });
  const n = await pg.query("SELECT evpipe.replay_dead_letters(destination => 'down') AS n");
  assert.equal(n[0].n, 1);
  await waitForDeliveries('down', 1);
  const got = await requests('/down');
  assert.equal(got.length, 4);
  assert.equal(got[3].headers['idempotency-key'], 'down-1', 'replay keeps the idempotency key');
  assert.equal((await pg.query("SELECT count(*)::int AS n FROM evpipe.dead_letters WHERE event_id = 'down-1'"))[0].n, 0);
});

test('429 with Retry-After is honoured', async () => {
  await sink.control('POST', '/_control/behavior', { path: '/slowdown', failTimes: 1, failStatus: 429, retryAfter: '1' });
  await dest('slowdown', 'http', { url: `${sink.url}/slowdown`, backoff_base_ms: 10, backoff_max_ms: 20 });
  await type('SLOWDOWN');
  await route('SLOWDOWN', 'slowdown');
  await ingest(ev('slow-1', 'SLOWDOWN', {}));
  await waitForDeliveries('slowdown', 1);
  const got = await requests('/slowdown');
  assert.equal(got.length, 2);
  const gap = got[1].receivedAt - got[0].receivedAt;
  assert.ok(gap >= 950, `second attempt waited for Retry-After (gap ${gap} ms)`);
});

test('a request hanging past timeout_ms is retried', async () => {
  await sink.control('POST', '/_control/behavior', { path: '/hang', failTimes: 1, failStatus: 200, hangMs: 5000 });
  await dest('hang', 'http', { url: `${sink.url}/hang`, timeout_ms: 300, backoff_base_ms: 50, backoff_max_ms: 100 });
  await type('HANG');
  await route('HANG', 'hang');
  await ingest(ev('hang-1', 'HANG', {}));
  await waitForDeliveries('hang', 1);
  const d = await pg.query("SELECT attempts FROM evpipe.delivered WHERE event_id = 'hang-1'");
  assert.ok(d[0].attempts >= 2);
});

test('fan-out: one destination down, the other still delivers at full speed', async () => {
  await dest('fan-up', 'http', { url: `${sink.url}/fan-up` });
  // nothing listens on port 9 (discard) of 127.0.0.1: connection refused
  await dest('fan-down', 'http', { url: 'http://127.0.0.1:9/fan-down', backoff_base_ms: 1000, backoff_max_ms: 5000 });
  await type('FAN');
  await route('FAN', 'fan-up');
  await route('FAN', 'fan-down');
  const n = 200;
  const t0 = Date.now();
  await pg.query(
    "SELECT evpipe.ingest(jsonb_build_object('eventId', 'fan-' || g, 'eventType', 'FAN', 'source', 'e2e', " +
      "'payload', jsonb_build_object('g', g), 'timestamp', '2026-11-21T10:00:00Z')) FROM generate_series(1, $1) g",
    [n],
  );
  await waitForDeliveries('fan-up', n);
  const ms = Date.now() - t0;
  console.log(`# fan-out: ${n} events to the healthy destination in ${ms} ms while the other is down`);
  assert.ok(ms < 15000);
  const down = await pg.query("SELECT count(*)::int AS n FROM evpipe.outbox WHERE destination = 'fan-down'");
  assert.equal(down[0].n, n, 'the down destination keeps its rows pending');
  const st = await pg.query("SELECT retrying, last_error FROM evpipe.stats WHERE destination = 'fan-down'");
  assert.ok(Number(st[0].retrying) > 0);
  assert.match(st[0].last_error, /connect|refused/i);
  await pg.query("SELECT evpipe.drop_destination('fan-down', force => true)");
});

test('function destination: a handler writes a table, in the database', async () => {
  await pg.query('CREATE TABLE account_log (event_id text PRIMARY KEY, balance numeric)');
  await pg.query(`CREATE FUNCTION record_account(e jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO account_log VALUES (e->>'eventId', (e->'payload'->>'balance')::numeric) $$`);
  await pg.query(`CREATE FUNCTION picky(e jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION USING MESSAGE = E'bad balance: "12.5" is\\nnot allowed', ERRCODE = '22023'; END $$`);
  await fnDest('handler', { function: 'public.record_account(jsonb)' }, ['TABLE account_log', 'FUNCTION record_account(jsonb)']);
  await fnDest('picky', { function: 'public.picky(jsonb)' }, ['FUNCTION picky(jsonb)']);
  await type('ACCOUNT');
  await route('ACCOUNT', 'handler');
  await route('ACCOUNT', 'picky');
  await ingest(ev('acct-1', 'ACCOUNT', { balance: 12.5 }));
  await waitForDeliveries('handler', 1);
  const rows = await pg.query('SELECT * FROM account_log');
  assert.deepEqual(rows, [{ event_id: 'acct-1', balance: '12.5' }]);
  // class 22 from a handler is permanent: dead-lettered at once
  const dl = await pg.waitFor(
    "SELECT attempts, last_error FROM evpipe.dead_letters WHERE destination = 'picky'",
    (r) => r.length === 1,
    10000,
  );
  assert.equal(dl[0].attempts, 1);
  assert.match(dl[0].last_error, /22023: bad balance/);
  // the handler's quotes and line break are escaped in the log line: one
  // record, one line, its error="..." field whole (they were written as is)
  await pg.waitFor('SELECT 1', () => pg.log().includes('destination=picky attempts=1'), 10000);
  assert.ok(pg.log().includes('event=dead_letter event_id=acct-1 destination=picky attempts=1 status=- error="22023: bad balance: \\"12.5\\" is\\nnot allowed"'),
    pg.log().split('\n').filter((l) => l.includes('destination=picky')).join('\n'));
});

// timeout_ms once did not limit a handler (a statement_timeout set while a statement
// runs arms nothing), and a handler's plain SET outlived it in the delivering session
test('function destination: timeout_ms limits the handler; settings it changes do not outlive it', async () => {
  await pg.query(`CREATE FUNCTION slow_handler(e jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_sleep(3); END $$`);
  await pg.query(`CREATE FUNCTION leaky_handler(e jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM set_config('application_name', 'leaked-by-handler', false);
      PERFORM set_config('search_path', 'leaked_schema, pg_catalog', false);
    END $$`);
  await fnDest('slow', { function: 'public.slow_handler(jsonb)', timeout_ms: 300, max_attempts: 2 }, ['FUNCTION slow_handler(jsonb)']);
  await fnDest('leaky', { function: 'public.leaky_handler(jsonb)' }, ['FUNCTION leaky_handler(jsonb)']);
  await type('FN_LIMITS');
  await route('FN_LIMITS', 'slow');
  await route('FN_LIMITS', 'leaky');
  await ingest(ev('lim-1', 'FN_LIMITS', {}));
  const dl = await pg.waitFor("SELECT attempts, last_error FROM evpipe.dead_letters WHERE destination = 'slow'",
    (r) => r.length === 1, 30000);
  assert.deepEqual(dl, [{ attempts: 2, last_error: '57014: the handler ran longer than timeout_ms (300 ms)' }]);
  await waitForDeliveries('leaky', 1);
  await ingest(ev('lim-2', 'FN_LIMITS', {}));
  await waitForDeliveries('leaky', 2);
  const leaked = await pg.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'leaked-by-handler'");
  assert.equal(leaked[0].n, 0, 'the handler\'s SET application_name was undone');
});

test('commit-to-arrival latency on an idle system (reported)', async () => {
  await dest('latency', 'http', { url: `${sink.url}/latency` });
  await type('LATENCY');
  await route('LATENCY', 'latency');
  const lat = [];
  for (let i = 0; i < 30; i++) {
    await new Promise((r) => setTimeout(r, 30));
    const t0 = performance.timeOrigin + performance.now();
    await ingest(ev(`lat-${i}`, 'LATENCY', {}));
    const t1 = performance.timeOrigin + performance.now();
    let got;
    for (let j = 0; j < 200; j++) {
      got = (await requests('/latency')).find((r) => r.headers['idempotency-key'] === `lat-${i}`);
      if (got) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.ok(got, `lat-${i} arrived`);
    lat.push(got.receivedAt - t1 + 0 * t0);
  }
  lat.sort((a, b) => a - b);
  const p = (q) => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))].toFixed(1);
  console.log(`# commit-to-arrival on an idle system: p50 ${p(0.5)} ms, p90 ${p(0.9)} ms, max ${p(1)} ms`);
});

test('SIGTERM and SIGHUP act promptly with requests in flight; nothing is lost', async () => {
  await sink.control('POST', '/_control/behavior', { path: '/sig', hangMs: 60000 });
  await dest('sig', 'http', { url: `${sink.url}/sig`, timeout_ms: 60000 });
  await type('SIG');
  await route('SIG', 'sig');
  for (let i = 0; i < 5; i++) await ingest(ev(`sig-${i}`, 'SIG', {}));
  await pg.waitFor("SELECT count(*)::int AS n FROM evpipe.deliveries WHERE destination = 'sig' AND status = 'in_flight'",
    (r) => r[0].n === 5, 10000);
  const before = await pg.workerPids();
  // SIGHUP: reload, keep running
  await pg.killWorkers('SIGHUP');
  await new Promise((r) => setTimeout(r, 500));
  assert.deepEqual((await pg.workerPids()).sort(), before.sort(), 'SIGHUP does not stop workers');
  // requests already hanging stay hung; the redelivered ones will succeed
  await sink.control('POST', '/_control/behavior', { path: '/sig', status: 200 });
  // SIGTERM: the workers exit within a second, give their rows back, and come back
  const t0 = Date.now();
  if (pg.host === 'daemon') {
    // evpiped exits 0 and gives its rows back; the harness starts new ones
    const victims = [...pg.daemons];
    await pg.killWorkers('SIGTERM');
    console.log(`# evpiped exited ${Date.now() - t0} ms after SIGTERM with 5 requests in flight`);
    assert.deepEqual(victims.map((d) => d.exitCode), [0, 0]);
    assert.match(pg.log(), /event=daemon_stop pid=\d+ in_flight=[1-9]/);
    await pg.waitWorkers(2);
  } else {
    for (const pid of before) process.kill(pid, 'SIGTERM');
    await pg.waitFor("SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'evpipe delivery worker' AND pid <> ALL($1)",
      (r) => r[0].n === 2, 10000, [before]);
    console.log(`# workers replaced ${Date.now() - t0} ms after SIGTERM with 5 requests in flight`);
    assert.match(pg.log(), /event=worker_stop worker=\d pid=\d+ in_flight=[1-9]/);
  }
  await waitForDeliveries('sig', 5, 20000);
});

test('SIGKILL of a worker mid-flight: nothing lost, workers come back', async () => {
  await sink.control('POST', '/_control/behavior', { path: '/kill', hangMs: 60000 });
  await dest('kill', 'http', { url: `${sink.url}/kill`, timeout_ms: 60000 });
  await type('KILL');
  await route('KILL', 'kill');
  for (let i = 0; i < 10; i++) await ingest(ev(`kill-${i}`, 'KILL', {}));
  await pg.waitFor("SELECT count(*)::int AS n FROM evpipe.deliveries WHERE destination = 'kill' AND status = 'in_flight'",
    (r) => r[0].n === 10, 10000);
  await sink.control('POST', '/_control/behavior', { path: '/kill', status: 200 });
  // A SIGKILLed backend makes the postmaster reinitialise: every
  // connection drops, committed work stays, and the workers restart.
  await pg.killWorkers('SIGKILL');
  await pg.waitReady(30000);
  // the restarted workers release the dead workers' leases at once
  await pg.waitWorkers(1);
  await waitForDeliveries('kill', 10, 30000);
  const got = await requests('/kill');
  const delivered = new Set(got.filter((r) => r.answeredStatus === 200).map((r) => r.headers['idempotency-key']));
  assert.equal(delivered.size, 10, 'every event arrived');
  const acct = await pg.query("SELECT count(*)::int AS n FROM evpipe.deliveries WHERE destination = 'kill' AND status = 'delivered'");
  assert.equal(acct[0].n, 10);
  // Delivered within 30 s although the leases ran 65 s: the restarted workers
  // released them (or the crash took the lease's asynchronous commit along).

  assert.equal((await pg.workerPids()).length, 2);
});

test('delivered rows are deleted after evpipe.delivered_retention, in batches', async () => {
  await dest('retained', 'http', { url: `${sink.url}/retained` });
  await type('RETAINED');
  await route('RETAINED', 'retained');
  for (let i = 0; i < 20; i++) await ingest(ev(`ret-${i}`, 'RETAINED', {}));
  await waitForDeliveries('retained', 20);
  await pg.setEvpipe('evpipe.delivered_retention', '1s');
  await pg.waitFor('SELECT count(*)::int AS n FROM evpipe.delivered', (r) => r[0].n === 0, 15000);
  await pg.setEvpipe('evpipe.delivered_retention', null);
});

test('without shared_preload_libraries the extension still ingests and warns', async () => {
  const plain = await startCluster({ preload: false, noExtension: true });
  try {
    const c = await plain.client();
    const notices = [];
    c.on('notice', (n) => notices.push(n.message));
    await c.query('CREATE EXTENSION evpipe');
    await c.query(`SELECT evpipe.register_event_type('T', '{}')`);
    await c.query(`SELECT evpipe.create_destination('d', 'http', '{"url": "http://127.0.0.1:9/"}')`);
    await c.query(`SELECT evpipe.add_route('T', 'd')`);
    const r = await c.query(`SELECT evpipe.ingest('{"eventId": "np-1", "eventType": "T", "source": "s", "payload": {}, "timestamp": "2026-11-21T10:00:00Z"}') AS r`);
    assert.equal(r.rows[0].r.status, 'accepted');
    assert.ok(notices.some((m) => /not in shared_preload_libraries: events are accepted but nothing is delivered/.test(m)), notices.join('; '));
    await c.end();
  } finally {
    await plain.stop();
  }
});
