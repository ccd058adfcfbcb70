// Faults: nothing is lost, nothing crash-loops. Every case ends with an
// accounting check: each ingested event is delivered or dead-lettered,
// exactly one row per (event, destination), nothing left in the outbox.
// EVPIPE_PROFILE=long runs bigger volumes and more faults.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startCluster, freePort, sleep } = require('./lib/cluster');
const { startPeer } = require('./lib/peers');
const { metricSum } = require('./lib/daemon');

const LONG = process.env.EVPIPE_PROFILE === 'long';
let pg;
let sink;

// Ingest ids [from, to) in batches, retrying a batch whenever the server
// drops the connection (a crash restart): dedup makes the retry safe.
async function ingestRange(type, prefix, from, to, batch = 100) {
  for (let i = from; i < to; i += batch) {
    for (;;) {
      try {
        await pg.query(`SELECT count(*) FROM (SELECT evpipe.ingest(jsonb_build_object('eventId', $1 || g,
          'eventType', $2::text, 'source', 'faults', 'payload', jsonb_build_object('g', g),
          'timestamp', '2026-11-21T10:00:00Z')) FROM generate_series($3::int, $4::int) g) s`,
        [prefix, type, i, Math.min(i + batch, to) - 1]);
        break;
      } catch (e) {
        await sleep(200);
      }
    }
  }
}

// Every event of a prefix delivered or dead exactly once; the outbox empty.
async function account(prefix, n, dest, timeoutMs = 60000) {
  await pg.waitFor(`SELECT count(*)::int AS n FROM evpipe.outbox WHERE event_id LIKE '${prefix}%'`,
    (r) => r[0].n === 0, timeoutMs);
  const r = await pg.query(`SELECT
      (SELECT count(*)::int FROM evpipe.events WHERE event_id LIKE $1) AS events,
      (SELECT count(*)::int FROM evpipe.delivered WHERE event_id LIKE $1 AND destination = $2) AS delivered,
      (SELECT count(*)::int FROM evpipe.dead_letters WHERE event_id LIKE $1 AND destination = $2) AS dead`,
  [`${prefix}%`, dest]);
  assert.equal(r[0].events, n, 'every committed event is there');
  assert.equal(r[0].delivered + r[0].dead, n, 'each delivered or dead-lettered, once');
  return r[0];
}

async function arrived(path) {
  const got = await sink.control('GET', `/_control/requests?path=${encodeURIComponent(path)}`);
  const ok = got.filter((x) => x.answeredStatus === 200).map((x) => x.headers['idempotency-key']);
  return { unique: new Set(ok).size, total: ok.length };
}

before(async () => {
  sink = await startPeer('http-sink');
  pg = await startCluster({ config: { 'evpipe.workers': 2, 'evpipe.tick_ms': 200, 'evpipe.lease_ms': 5000 } });
  for (const t of ['KILL', 'STOP', 'DOWN', 'GONE', 'BROKEN']) {
    await pg.query(`SELECT evpipe.register_event_type($1, '{"type": "object"}')`, [t]);
  }
});

after(async () => {
  if (pg) await pg.stop();
  if (sink) await sink.stop();
});

test('SIGKILL of workers, repeatedly, while events flow: nothing lost, duplicates only from in-flight', async () => {
  const n = LONG ? 20000 : 3000;
  const kills = LONG ? 30 : 8;
  await pg.query(`SELECT evpipe.create_destination('k', 'http', $1::jsonb)`, [JSON.stringify({ url: `${sink.url}/k` })]);
  await pg.query("SELECT evpipe.add_route('KILL', 'k')");
  await sink.control('POST', '/_control/behavior', { path: '/k', delayMs: 2 });
  const mark = pg.logMark();
  const started = (await pg.query('SELECT pg_postmaster_start_time()::text AS t'))[0].t;
  const flow = ingestRange('KILL', 'k-', 0, n);
  for (let i = 0; i < kills; i++) {
    await sleep(300);
    try { await pg.killWorkers('SIGKILL'); } catch (e) { /* restarting */ }
    await pg.waitReady(30000);
  }
  await flow;
  await account('k-', n, 'k', 120000);
  const a = await arrived('/k');
  assert.equal(a.unique, n, 'every event arrived at the target');
  console.log(`# ${kills} SIGKILLs during ${n} events: ${a.total - a.unique} duplicate arrivals (in flight at a kill)`);
  assert.ok(a.total - a.unique <= kills * 64 * 2, 'duplicates bounded by what can be in flight');
  assert.equal((await pg.workerPids()).length, 2, 'workers come back');
  if (pg.host === 'daemon') {
    // a killed evpiped is not a crash of the server: it runs on, and another holder releases
    // the dead daemon's leases once its session is gone
    assert.equal((await pg.query('SELECT pg_postmaster_start_time()::text AS t'))[0].t, started, 'no server restart');
    assert.doesNotMatch(pg.logSince(mark), /terminated by signal|reinitializing/);
    assert.match(pg.logSince(mark), /event=leases_released rows=[1-9]\d* reason="holder is gone"/);
  } else {
    // a killed worker is a crash of the server: the postmaster restarts every backend
    assert.match(pg.logSince(mark), /evpipe delivery worker[^\n]*\(PID \d+\) was terminated by signal 9/);
  }
});

test('pg_ctl stop -m immediate and restart under load: every committed event is delivered', async () => {
  const n = LONG ? 10000 : 2000;
  await pg.query(`SELECT evpipe.create_destination('s', 'http', $1::jsonb)`, [JSON.stringify({ url: `${sink.url}/s` })]);
  await pg.query("SELECT evpipe.add_route('STOP', 's')");
  const mark = pg.logMark();
  const pids = await pg.workerPids();
  const restarts = LONG ? 6 : 3;
  const flow = ingestRange('STOP', 's-', 0, n);
  for (let i = 0; i < restarts; i++) {
    await sleep(400);
    await pg.restart({ mode: 'immediate' });
  }
  await flow;
  await account('s-', n, 's', 120000);
  assert.equal((await arrived('/s')).unique, n);
  if (pg.host === 'daemon') {
    // the daemons outlive the server: the same processes lost their connection and reconnected
    assert.deepEqual(await pg.workerPids(), pids, 'the same evpiped processes deliver');
    for (const d of pg.daemons) {
      const since = d.log().slice(mark.daemons.get(d) || 0);
      assert.match(since, /event=disconnected /, `evpiped ${d.pid} saw the connection go`);
      assert.match(since, /event=connected /, `evpiped ${d.pid} connected again`);
    }
  } else {
    // the workers start again with the server: new processes
    const now = await pg.workerPids();
    assert.equal(now.length, 2, 'workers come back');
    assert.ok(now.every((p) => !pids.includes(p)), 'started again with the server');
    assert.equal(pg.logSince(mark).match(/database system is ready to accept connections/g).length, restarts);
  }
});

test('target down for a long stretch: ingest unaffected, no retry storm, backlog drains after recovery', async () => {
  const port = await freePort();
  const n = 300;
  const mark = pg.logMark();
  const cfg = { url: `http://127.0.0.1:${port}/d`, backoff_base_ms: 500, backoff_max_ms: 2000, max_attempts: 100 };
  await pg.query(`SELECT evpipe.create_destination('d', 'http', $1::jsonb)`, [JSON.stringify(cfg)]);
  // the same target without a circuit breaker, for comparison
  await pg.query(`SELECT evpipe.create_destination('d-nobreaker', 'http', $1::jsonb)`,
    [JSON.stringify({ ...cfg, url: `http://127.0.0.1:${port}/nb`, breaker_threshold: 0 })]);
  await pg.query("SELECT evpipe.add_route('DOWN', 'd')");
  await pg.query("SELECT evpipe.add_route('DOWN', 'd-nobreaker')");
  const t0 = Date.now();
  await ingestRange('DOWN', 'd-', 0, n);
  const ingestMs = Date.now() - t0;
  await sleep(LONG ? 30000 : 5000);
  const att = await pg.query(`SELECT destination, sum(attempts)::int AS a, max(attempts)::int AS m
    FROM evpipe.outbox WHERE destination IN ('d', 'd-nobreaker') GROUP BY 1 ORDER BY 1`);
  const downSecs = LONG ? 30 : 5;
  console.log(`# target down ${downSecs} s: ${att[0].a} attempts for ${n} events with the circuit breaker, ${att[1].a} without (max ${att[0].m} and ${att[1].m} per event); ingest of ${n} took ${ingestMs} ms`);
  // without the breaker, full jitter from 500 ms up to 2 s: a row retries at most ~ every 0.25-1 s on average
  assert.ok(att[1].m <= downSecs * 4 + 2, 'backoff honoured: no retry storm');
  // with it, the backlog waits: the rows that opened it and a probe now and then
  assert.ok(att[0].a < att[1].a / 2, 'the circuit breaker holds the backlog back');
  assert.ok(att[0].a <= 2 * 64 + 2 * downSecs, `at most a claim per worker and the probes: ${att[0].a}`);
  const st = await pg.query("SELECT pending, retrying, last_error, circuit FROM evpipe.stats WHERE destination = 'd'");
  assert.match(st[0].last_error, /connect/i);
  // the breaker's state: the workers' in shared memory (evpipe.stats, evpipe.metrics()), or
  // each evpiped's own (its /metrics): every daemon holds the backlog back
  const circuits = async () => (await pg.metricsTexts()).map((t) => metricSum(t, 'evpipe_circuit_open', { destination: 'd' }));
  if (pg.host === 'daemon') {
    assert.deepEqual(await circuits(), pg.daemons.map(() => 1), 'each evpiped has opened its circuit for d');
    assert.equal(pg.logSince(mark).match(/event=circuit_open destination=d open_ms=500 /g).length, pg.daemons.length,
      'each evpiped opened its circuit once');
  } else {
    assert.match(st[0].circuit, /^(open|half_open)$/);
    assert.deepEqual(await circuits(), [1]);
  }
  assert.match(pg.logSince(mark), /event=circuit_open destination=d open_ms=500 /);
  // the target comes back on the same port
  const back = await startPeer('http-sink', ['--port', String(port)]).catch(() => null);
  assert.ok(back, 'sink restarted on the same port');
  try {
    await account('d-', n, 'd', 60000);
    await account('d-', n, 'd-nobreaker', 60000);
    const got = await back.control('GET', '/_control/requests?path=/d');
    assert.equal(new Set(got.map((x) => x.headers['idempotency-key'])).size, n);
    const dead = await pg.query("SELECT count(*)::int AS n FROM evpipe.dead_letters WHERE destination = 'd'");
    assert.equal(dead[0].n, 0, 'nothing dead-lettered: waiting rows spent no attempts');
    if (pg.host === 'daemon') {
      // each evpiped keeps its own breaker: one that took none of the backlog (the other
      // drained it) closes its circuit at its own probe, which needs a row: more events after
      // the drain, more than one claim takes (max_in_flight), leave one for each daemon
      let k = 0;
      const deadline = Date.now() + 45000;
      while ((await circuits()).some((x) => x !== 0) && Date.now() < deadline) {
        await ingestRange('DOWN', 'after-', k, k + 100);
        k += 100;
        await sleep(1000);
      }
      assert.deepEqual(await circuits(), pg.daemons.map(() => 0), 'each evpiped has closed its circuit');
      assert.equal(pg.logSince(mark).match(/event=circuit_closed destination=d\b/g).length, pg.daemons.length);
      await account('after-', k, 'd', 60000);
    } else {
      assert.equal((await pg.query("SELECT circuit FROM evpipe.stats WHERE destination = 'd'"))[0].circuit, 'closed');
      assert.deepEqual(await circuits(), [0]);
    }
    assert.match(pg.logSince(mark), /event=circuit_closed destination=d\b/);
  } finally {
    await back.stop();
  }
});

test('a destination dropped while rows are pending: a clear state in the DLQ, no crash loop', async () => {
  const mark = pg.logMark();
  const pids = await pg.workerPids();
  await pg.query(`SELECT evpipe.create_destination('gone', 'http', '{"url": "http://127.0.0.1:9/gone"}')`);
  await pg.query("SELECT evpipe.add_route('GONE', 'gone')");
  await pg.query("SELECT evpipe.pause_destination('gone')");
  await ingestRange('GONE', 'g-', 0, 50);
  await pg.query("SELECT evpipe.drop_destination('gone', force => true)");
  const dl = await pg.query("SELECT count(*)::int AS n, min(last_error) AS e FROM evpipe.dead_letters WHERE destination = 'gone'");
  assert.equal(dl[0].n, 50);
  assert.equal(dl[0].e, 'destination dropped');
  await sleep(500);
  assert.ok(!/terminated by signal|PANIC/.test(pg.logSince(mark)), 'no crash');
  assert.deepEqual(await pg.workerPids(), pids, 'the same workers run');
  if (pg.host === 'daemon') assert.doesNotMatch(pg.logSince(mark), /event=disconnected|FATAL/, 'evpiped kept its session');
});

// evpiped used to retry a failed outcome transaction every few ms (its pending outcomes made the
// wait 5 ms): after a failed pass the engine now runs no statement for the pause, on both hosts
test("errors inside the worker's own transactions are logged and retried after a pause, never a crash loop",
  async () => {
    const mark = pg.logMark();
    await pg.query(`SELECT evpipe.create_destination('b', 'http', $1::jsonb)`, [JSON.stringify({ url: `${sink.url}/b` })]);
    await pg.query("SELECT evpipe.add_route('BROKEN', 'b')");
    // recording deliveries fails, as it would on a full disk
    await pg.query(`CREATE FUNCTION evpipe_test_fail() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100'; END $$`);
    await pg.query(`CREATE TRIGGER fail_delivered BEFORE INSERT ON evpipe.delivered
      FOR EACH ROW EXECUTE FUNCTION evpipe_test_fail()`);
    const pids = await pg.workerPids();
    let failedSecs;
    try {
      const t0 = Date.now();
      await ingestRange('BROKEN', 'b-', 0, 20);
      await pg.waitFor('SELECT 1', () => /No space left on device/.test(pg.logSince(mark)), 10000);
      await sleep(1500);
      failedSecs = (Date.now() - t0) / 1000;
    } finally {
      await pg.query('DROP TRIGGER fail_delivered ON evpipe.delivered');
    }
    await account('b-', 20, 'b', 60000);
    assert.equal((await arrived('/b')).unique, 20);
    assert.deepEqual((await pg.workerPids()).sort(), pids.sort(), 'the same workers keep running');
    assert.ok(!/terminated by signal/.test(pg.logSince(mark)), 'no crash');
    if (pg.host === 'daemon') {
      // the error reached evpiped as an error of its transaction, not as a lost connection
      assert.ok(pg.daemons.some((d) => /No space left on device/.test(d.log().slice(mark.daemons.get(d) || 0))),
        'evpiped logged the error');
      assert.doesNotMatch(pg.logSince(mark), /event=disconnected/, 'evpiped kept its session');
    }
    // each failed transaction is one ERROR in the server's log, whichever host ran it; a
    // worker carries on after a pause of at least a second (twice that rate is the bound)
    const failures = pg.serverLog().slice(mark.server).split('\n')
      .filter((l) => / ERROR: .*No space left on device/.test(l)).length;
    const bound = pids.length * 2 * (Math.ceil(failedSecs) + 1);
    console.log(`# ${failures} failed transactions in ${failedSecs.toFixed(1)} s with recording broken (${pids.length} workers)`);
    assert.ok(failures <= bound, `retried after a pause: ${failures} failed transactions in ${failedSecs.toFixed(1)} s (bound ${bound})`);
  });

test('rows leased by a process that is gone (a restore of rows in flight, a lost host) are released within seconds, not at lease end', async () => {
  await pg.query(`SELECT evpipe.register_event_type('ORPHAN', '{"type": "object"}')`);
  await pg.query(`SELECT evpipe.create_destination('orphan', 'http', $1::jsonb)`, [JSON.stringify({ url: `${sink.url}/orphan` })]);
  await pg.query("SELECT evpipe.add_route('ORPHAN', 'orphan')");
  await pg.query("SELECT evpipe.pause_destination('orphan')");
  await ingestRange('ORPHAN', 'orph-', 0, 20);
  // as if a worker that no longer exists had claimed them, with ten minutes of lease left
  await pg.query(`UPDATE evpipe.outbox SET attempts = 1, leased_by = 2147483000, lease_until = now() + interval '10 minutes',
    next_attempt_at = now() + interval '10 minutes' WHERE destination = 'orphan'`);
  const mark = pg.logMark();
  await pg.query("SELECT evpipe.resume_destination('orphan')");
  const t0 = Date.now();
  await account('orph-', 20, 'orphan', 30000);
  assert.ok(Date.now() - t0 < 25000, 'released by the periodic check (every 10 s), long before the lease ends');
  // one holder releases them, or (daemon host) the daemons' checks can run together and share them
  const released = [...pg.logSince(mark).matchAll(/event=leases_released rows=(\d+) reason="holder is gone"/g)]
    .reduce((sum, m) => sum + Number(m[1]), 0);
  assert.equal(released, 20, 'all 20 released as "holder is gone"');
  assert.equal((await arrived('/orphan')).unique, 20);
});
