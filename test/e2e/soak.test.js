// Soak of the delivery workers: a steady flow of events for a while, with
// successes, retries on 5xx, dead letters (at once, and after max_attempts)
// and a circuit breaker opening and closing, across five destinations.
// Each worker's memory must stay flat and the accounting must hold.
//
//   EVPIPE_PROFILE=short (default, CI): 60 s;  EVPIPE_PROFILE=long: 30 min;
//   EVPIPE_SOAK_SECONDS=N overrides both; EVPIPE_SOAK_RATE events/s (25).
//
// What is measured, per worker (found by pg_stat_activity.backend_type =
// 'evpipe delivery worker', the worker's bgw_type), every few seconds:
//   - RssAnon (/proc/PID/status): the worker's private anonymous pages —
//     malloc'd memory (every palloc block, libcurl), stack. This is
//     what a leak grows, and what the bounds are on.
//   - VmRSS, RssShmem, RssFile: reported, not bounded. VmRSS also counts the
//     pages of shared memory (shared_buffers, the outbox and event pages the
//     worker reads) and of libraries the worker has touched: it climbs for
//     as long as the worker touches new buffers, with no leak at all (in
//     30 minutes: VmRSS 20 -> 152 MB, RssShmem 5 -> 135 MB, RssAnon 7 MB flat).
//   - Private_Dirty (/proc/PID/smaps_rollup): reported only. It counts a
//     shared_buffers page as "private" while no other process maps it, so it
//     mixes shared memory in too.
// Two checks on RssAnon after a warm-up (the first 20%: connection caches,
// catalog caches, prepared plans, malloc arenas reach their steady size):
//   - growth: mean of the last quarter minus mean of the first quarter of
//     the remaining samples, under 2 MB (short) or 4 MB (long). Each worker
//     sends ~90 requests/s here: in the short profile's ~36 s between the
//     quarters, 2 MB is a leak of under 1 kB per request (a leaked 16 kB answer
//     buffer per request is ~1 MB/s). Flat workers measure under 0.5 MB.
//   - slope: least squares over the same samples, under 64 kB/s in the
//     short profile (what a single 2 MB step halfway through gives: malloc
//     grows in steps; flat workers measure under 15 kB/s) and 1 kB/s in the
//     long one (3.6 MB/hour, ~15 bytes per request; flat workers measure
//     under 0.1 kB/s over 30 minutes).
// And the memory contexts, which see every palloc exactly: at two drained
// points (outbox empty, no request in flight) — after the warm-up and at
// the end — pg_log_backend_memory_contexts(pid) writes each worker's tree to
// the server log; the "Grand total" may not grow by more than 256 kB (caches
// only: the per-loop, per-request and outcome contexts are reset or deleted).
// Under the sanitize suite (ASan preloaded) the memory bounds are reported,
// not asserted: ASan's quarantine and shadow memory grow by design.
//
// With the daemon host (EVPIPE_E2E_HOST=daemon) the delivering processes are the
// two evpiped: the same RssAnon samples and bounds, from their /proc/PID/status.
// evpiped's palloc is its own runtime over malloc, with no memory-context report,
// so at the two drained points it is RssAnon that may not grow by more than the
// growth bound; and the server backends of the daemons' sessions (where their
// statements run, prepared once per connection) have their memory contexts
// logged and bounded as the workers' are.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { startCluster, sleep } = require('./lib/cluster');
const { startPeer } = require('./lib/peers');

const LONG = process.env.EVPIPE_PROFILE === 'long';
const SECONDS = Number(process.env.EVPIPE_SOAK_SECONDS) || (LONG ? 1800 : 60);
const RATE = Number(process.env.EVPIPE_SOAK_RATE) || 25;          // events/s, each to 5 destinations
const SAMPLE_MS = SECONDS >= 600 ? 10000 : 2000;
const WARMUP = 0.2;
const KB = 1024;
const BOUNDS = SECONDS >= 600
  ? { growth: 4096 * KB, slope: 1 * KB, contexts: 256 * KB }
  : { growth: 2048 * KB, slope: 64 * KB, contexts: 256 * KB };
const SANITIZED = /libasan/.test(process.env.EVPIPE_PG_ENV || '');
const DESTS = ['ok', 'flaky', 'dead', 'exhaust', 'outage'];
// seconds: /outage answers 503 for 8 s of every 20 (longer than the breaker's default 5 s window)
const OUTAGE = { every: 20, lasts: 8 };

let pg;
let sink;

// /proc numbers in bytes (the files say kB)
function memoryOf(pid) {
  const field = (text, name) => {
    const m = text.match(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm'));
    return m ? Number(m[1]) * KB : NaN;
  };
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const rollup = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    return {
      rss: field(status, 'VmRSS'),
      anon: field(status, 'RssAnon'),
      file: field(status, 'RssFile'),
      shmem: field(status, 'RssShmem'),
      privateDirty: field(rollup, 'Private_Dirty'),
    };
  } catch (e) {
    return null; // the process is gone
  }
}

function slope(points) { // least squares, bytes per second
  const n = points.length;
  const mx = points.reduce((s, p) => s + p.t, 0) / n;
  const my = points.reduce((s, p) => s + p.v, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (const p of points) { sxy += (p.t - mx) * (p.v - my); sxx += (p.t - mx) ** 2; }
  return sxx === 0 ? 0 : sxy / sxx;
}

const mean = (xs) => xs.reduce((s, x) => s + x, 0) / xs.length;
const mb = (b) => `${(b / KB / KB).toFixed(2)} MB`;

// The sink's answers, set again every second (second n of the run).
async function behave(n = 0) {
  await sink.control('POST', '/_control/behavior', { path: '/ok', delayMs: 5 });
  // each event's first two attempts fail: set once, or every second would start the count again
  if (n === 0 || n % 30 === 0) await sink.control('POST', '/_control/behavior', { path: '/flaky', failEachTimes: 2, failStatus: 500 });
  await sink.control('POST', '/_control/behavior', { path: '/dead', status: 400, body: '{"error":"bad event"}' });
  await sink.control('POST', '/_control/behavior', { path: '/exhaust', status: 503, body: '{"error":"try later"}' });
  await sink.control('POST', '/_control/behavior', n % OUTAGE.every < OUTAGE.lasts
    ? { path: '/outage', status: 503, body: '{"error":"down"}' } : { path: '/outage', delayMs: 1 });
}

// Memory at a drained point: the workers' memory-context totals; or (daemon host)
// each evpiped's RssAnon and the memory-context totals of its sessions' backends.
async function drainedPoint(pids) {
  if (pg.host !== 'daemon') return { contexts: await contextTotals(pids) };
  const anon = Object.fromEntries(pids.map((p) => [p, memoryOf(p).anon]));
  const backends = (await pg.query(
    "SELECT pid FROM pg_stat_activity WHERE application_name = 'evpiped' ORDER BY pid")).map((r) => r.pid);
  return { anon, backends, contexts: await contextTotals(backends) };
}

// Each backend's memory-context tree, logged by the server; the Grand total line.
async function contextTotals(pids) {
  const mark = pg.serverLog().length; // the server's own log (pg.log() also holds the daemons')
  for (const pid of pids) await pg.query('SELECT pg_log_backend_memory_contexts($1)', [pid]);
  const totals = {};
  await pg.waitFor('SELECT 1', () => {
    const log = pg.serverLog().slice(mark);
    for (const pid of pids) {
      const m = log.match(new RegExp(`\\[${pid}\\] [^\\n]*Grand total: (\\d+) bytes in (\\d+) blocks; (\\d+) free \\((\\d+) chunks\\); (\\d+) used`));
      if (m) totals[pid] = { total: Number(m[1]), used: Number(m[5]) };
    }
    return pids.every((p) => totals[p]);
  }, 20000);
  return totals;
}

before(async () => {
  sink = await startPeer('http-sink');
  pg = await startCluster({ config: { 'evpipe.workers': 2, 'evpipe.tick_ms': 200 } });
  await pg.query(`SELECT evpipe.register_event_type('SOAK', '{"type": "object", "required": ["g"]}')`);
  const common = { backoff_base_ms: 50, backoff_max_ms: 400, timeout_ms: 5000 };
  const cfg = {
    ok: { max_attempts: 8 },
    // every circuit breaker at its defaults
    // 500, 500, 200 for each event: retried, never an outage (the breaker stays closed)
    flaky: { max_attempts: 30 },
    dead: { max_attempts: 8 },     // 400: dead letter at once
    // 503 always: dead letter after 3 attempts or, once the breaker holds the
    // rows back (5 s of failures and no success), after max_age_ms
    exhaust: { max_attempts: 3, max_age_ms: 4000 },
    // down 8 s of every 20: the breaker opens, probes, closes; waiting rows spend no attempts
    outage: { max_attempts: 100 },
  };
  for (const d of DESTS) {
    await pg.query('SELECT evpipe.create_destination($1, \'http\', $2::jsonb)',
      [d, JSON.stringify({ url: `${sink.url}/${d}`, ...common, ...cfg[d] })]);
    await pg.query("SELECT evpipe.add_route('SOAK', $1)", [d]);
  }
  await behave();
});

after(async () => {
  if (pg) await pg.stop();
  if (sink) await sink.stop();
});

test(`soak: ${SECONDS} s of steady traffic, worker memory flat, every event accounted for`, { timeout: (SECONDS + 600) * 1000 }, async () => {
  const pids = await pg.workerPids();
  assert.equal(pids.length, 2, pg.host === 'daemon' ? 'two evpiped' : 'two delivery workers');
  const mark = pg.logMark();
  const t0 = Date.now();
  const elapsed = () => (Date.now() - t0) / 1000;
  const samples = Object.fromEntries(pids.map((p) => [p, []]));
  let ingested = 0;
  let ingestErrors = 0;
  let paused = false;
  let stop = false;

  // steady ingest: a batch every 200 ms, payloads of varied size
  const flow = (async () => {
    const perTick = Math.max(1, Math.round(RATE / 5));
    let next = Date.now();
    while (!stop) {
      if (!paused) {
        try {
          await pg.query(`SELECT count(*) FROM (SELECT evpipe.ingest(jsonb_build_object('eventId', 'soak-' || g,
            'eventType', 'SOAK', 'source', 'soak', 'payload', jsonb_build_object('g', g, 'pad', repeat('x', (g * 37) % 2000)),
            'timestamp', '2026-11-21T10:00:00Z')) FROM generate_series($1::int, $2::int) g) s`,
          [ingested, ingested + perTick - 1]);
          ingested += perTick;
        } catch (e) {
          ingestErrors++;
        }
      }
      next += 200;
      const wait = next - Date.now();
      if (wait > 0) await sleep(wait); else next = Date.now(); // never burst to catch up
    }
  })();

  // the sink: 5xx again every second; its request log cleared every 30 s
  const chores = (async () => {
    let n = 0;
    while (!stop) {
      await sleep(1000);
      n++;
      if (n % 30 === 0) await sink.control('POST', '/_control/reset');
      await behave(n);
    }
  })();

  // samples
  const sampler = (async () => {
    while (!stop) {
      for (const pid of pids) {
        const m = memoryOf(pid);
        if (m) samples[pid].push({ t: elapsed(), ...m });
      }
      await sleep(SAMPLE_MS);
    }
  })();

  const drain = async () => {
    paused = true;
    await sleep(300);
    await pg.waitFor("SELECT count(*)::int AS n FROM evpipe.outbox WHERE event_id LIKE 'soak-%'", (r) => r[0].n === 0, 120000);
    await sleep(500); // the workers finish their loop iteration
  };

  let start;
  let tMeasure;
  try {
    // warm-up, then a drained point for the first memory-context snapshot
    await sleep(SECONDS * WARMUP * 1000);
    await drain();
    start = await drainedPoint(pids);
    tMeasure = elapsed();
    paused = false;

    const end = t0 + SECONDS * 1000;
    while (Date.now() < end) await sleep(Math.min(1000, Math.max(0, end - Date.now())));
  } finally {
    stop = true; // a failure above must not leave the loops running
    await Promise.allSettled([flow, chores, sampler]);
  }

  // accounting: every ingested event delivered or dead-lettered, once per destination
  await drain();
  const end = await drainedPoint(pids);
  const rows = await pg.query(`SELECT d AS destination,
      (SELECT count(*)::int FROM evpipe.outbox o WHERE o.destination = d AND o.event_id LIKE 'soak-%') AS pending,
      (SELECT count(*)::int FROM evpipe.delivered x WHERE x.destination = d AND x.event_id LIKE 'soak-%') AS delivered,
      (SELECT count(*)::int FROM evpipe.dead_letters x WHERE x.destination = d AND x.event_id LIKE 'soak-%') AS dead,
      (SELECT count(*)::int FROM evpipe.delivered x JOIN evpipe.dead_letters y USING (event_id, destination)
        WHERE x.destination = d AND x.event_id LIKE 'soak-%') AS both_ways,
      (SELECT COALESCE(sum(attempts), 0)::int FROM evpipe.delivered x WHERE x.destination = d AND x.event_id LIKE 'soak-%') AS attempts
    FROM unnest($1::text[]) d`, [DESTS]);
  const events = (await pg.query("SELECT count(*)::int AS n FROM evpipe.events WHERE event_id LIKE 'soak-%'"))[0].n;
  console.log(`# ${SECONDS} s at ${RATE} events/s: ${ingested} events (${ingestErrors} failed batches), ` +
    rows.map((r) => `${r.destination}: ${r.delivered} delivered (${r.attempts} attempts), ${r.dead} dead`).join('; '));
  assert.equal(ingestErrors, 0, 'ingest never failed');
  assert.equal(events, ingested, 'every ingested event is stored');
  for (const r of rows) {
    assert.equal(r.pending, 0, `${r.destination}: nothing left in the outbox`);
    assert.equal(r.delivered + r.dead, ingested, `${r.destination}: each event delivered or dead-lettered`);
    assert.equal(r.both_ways, 0, `${r.destination}: never both`);
  }
  const by = Object.fromEntries(rows.map((r) => [r.destination, r]));
  assert.equal(by.ok.dead, 0, 'ok: every event delivered');
  assert.ok(by.flaky.attempts > by.flaky.delivered, 'flaky: some deliveries needed a retry');
  // (the sink answers 200 for a moment after each reset of its log)
  assert.ok(by.dead.dead >= ingested * 0.9, 'dead: 400 is a dead letter at once');
  assert.ok(by.exhaust.dead >= ingested * 0.9, 'exhaust: 503 every time is a dead letter after max_attempts or max_age_ms');
  const flakyOpens = (pg.log().match(/event=circuit_open destination=flaky\b/g) || []).length;
  if (pg.host === 'daemon') {
    // breakers are per process: a daemon whose share of the flaky target was, for the
    // breaker's window, only first and second attempts (the successes going to the
    // other daemon) opens its own circuit; rare, and it closes at the next probe
    assert.ok(flakyOpens <= 2, `flaky: per-event failures open a daemon's breaker rarely (${flakyOpens} times)`);
  } else assert.equal(flakyOpens, 0, 'flaky: per-event failures never open the breaker');
  assert.equal(by.flaky.dead, 0, 'flaky: every event delivered');
  assert.ok(by.outage.delivered >= ingested * 0.99, 'outage: delivered once the target is back');
  assert.match(pg.log(), /event=circuit_open destination=outage/, 'outage: the circuit breaker opened');
  assert.match(pg.log(), /event=circuit_closed destination=outage/, 'outage: and closed again');

  // the same workers all along: no crash, no restart
  assert.deepEqual((await pg.workerPids()).sort(), [...pids].sort(), 'the same workers ran throughout');
  assert.ok(!/terminated by signal|PANIC/.test(pg.log()), 'no crash');
  if (pg.host === 'daemon') {
    // and the same sessions: evpiped never lost or dropped its connection
    assert.doesNotMatch(pg.logSince(mark), /event=(disconnected|reconnect_failed)/, 'evpiped kept its session');
    assert.deepEqual(end.backends, start.backends, "the daemons' sessions are the same backends");
    assert.equal(end.backends.length, pids.length, 'one session per evpiped');
  }

  // memory
  const failures = [];
  for (const pid of pids) {
    const s = samples[pid].filter((x) => x.t >= tMeasure);
    assert.ok(s.length >= 8, `enough samples for worker ${pid} (${s.length})`);
    const span = s[s.length - 1].t - s[0].t;
    const first = s.filter((x) => x.t <= s[0].t + span / 4);
    const last = s.filter((x) => x.t >= s[0].t + (3 * span) / 4);
    const growth = mean(last.map((x) => x.anon)) - mean(first.map((x) => x.anon));
    const k = slope(s.map((x) => ({ t: x.t, v: x.anon })));
    const a = samples[pid][0];
    const z = s[s.length - 1];
    const who = pg.host === 'daemon' ? 'evpiped' : 'worker';
    let drained;
    if (pg.host === 'daemon') {
      const anonGrowth = end.anon[pid] - start.anon[pid];
      drained = `RssAnon at the drained points ${mb(start.anon[pid])} -> ${mb(end.anon[pid])}`;
      if (anonGrowth >= BOUNDS.growth) failures.push(`${who} ${pid}: RssAnon grew ${mb(anonGrowth)} between the drained points (bound ${mb(BOUNDS.growth)})`);
    } else {
      const ctxGrowth = end.contexts[pid].total - start.contexts[pid].total;
      drained = `memory contexts ${mb(start.contexts[pid].total)} -> ${mb(end.contexts[pid].total)} (used ${mb(start.contexts[pid].used)} -> ${mb(end.contexts[pid].used)})`;
      if (ctxGrowth >= BOUNDS.contexts) failures.push(`${who} ${pid}: memory contexts grew ${mb(ctxGrowth)} (bound ${mb(BOUNDS.contexts)})`);
    }
    console.log(`# ${who} ${pid}: RssAnon ${mb(a.anon)} at start, ${mb(s[0].anon)} after warm-up, ${mb(z.anon)} at the end; ` +
      `growth ${mb(growth)} (first to last quarter), slope ${(k / KB).toFixed(2)} kB/s; ` +
      `VmRSS ${mb(a.rss)} -> ${mb(z.rss)} (RssShmem ${mb(a.shmem)} -> ${mb(z.shmem)}), Private_Dirty ${mb(a.privateDirty)} -> ${mb(z.privateDirty)}; ` +
      drained);
    if (growth >= BOUNDS.growth) failures.push(`${who} ${pid}: RssAnon grew ${mb(growth)} (bound ${mb(BOUNDS.growth)})`);
    if (k >= BOUNDS.slope) failures.push(`${who} ${pid}: RssAnon slope ${(k / KB).toFixed(2)} kB/s (bound ${BOUNDS.slope / KB} kB/s)`);
  }
  if (pg.host === 'daemon') {
    for (const b of start.backends) {
      const ctxGrowth = end.contexts[b].total - start.contexts[b].total;
      console.log(`# evpiped session backend ${b}: memory contexts ${mb(start.contexts[b].total)} -> ${mb(end.contexts[b].total)} ` +
        `(used ${mb(start.contexts[b].used)} -> ${mb(end.contexts[b].used)})`);
      if (ctxGrowth >= BOUNDS.contexts) failures.push(`evpiped session backend ${b}: memory contexts grew ${mb(ctxGrowth)} (bound ${mb(BOUNDS.contexts)})`);
    }
  }
  if (SANITIZED) {
    if (failures.length) console.log(`# under ASan, not asserted: ${failures.join('; ')}`);
  } else {
    assert.deepEqual(failures, [], 'worker memory is flat');
  }
});
