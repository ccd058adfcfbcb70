#!/usr/bin/env node
// evpipe benchmarks (issue #6): every figure is a ratio or a percentile
// measured in the same run on the same machine. Writes docs/bench/results.md,
// docs/bench/results.json and PNG plots (gnuplot). Nothing here fails on a
// number; a section that breaks is reported in results.md and makes the exit
// status 1. Run with bench/run (installs and builds first).
//
//   BENCH_SECONDS         seconds per pgbench run and per latency run (10)
//   BENCH_INGEST_RATE     steady ingest rate of items 3 and 8 (500/s)
//   BENCH_BACKLOG         undelivered rows behind item 3 (1000000)
//   BENCH_RATE_LIMIT      rate_limit_per_sec of item 7 (50)
//   BENCH_RATE_SECONDS    observation window of item 7 (60)
//   BENCH_SCALE_MAX       largest pending-row count of item 8 (10000000)
//   BENCH_CHURN_SECONDS   churn of item 8 (900; 3600 for the hour of the issue)
//   BENCH_CHURN_SAMPLE    seconds between outbox size samples (60)
//   BENCH_EVENT_RETENTION evpipe.event_retention and evpipe.delivered_retention of item 8b churn ('10min'; 0 keeps all)
//   BENCH_DAEMON_SECONDS  seconds per pgbench run of item 10d (15)
//   BENCH_ONLY            comma list of items to run (1,2,3,4,5,6,7,8 or 8a scale, 8b churn, 9 ordered, 10 evpiped, 11 managed, 12 breakdown)
//   BENCH_OUT             output directory (docs/bench)
//   BENCH_RENDER_ONLY=1   only redraw results.md and the plots from BENCH_OUT/results.json
//   BENCH_MERGE=DIR       take the items of DIR/results.json (a separate run) into BENCH_OUT, redraw
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync, execFileSync } = require('node:child_process');
const { performance } = require('node:perf_hooks');
const { startCluster, freePort, sleep } = require('../test/e2e/lib/cluster');
const { startPeer, httpJson } = require('../test/e2e/lib/peers');
const { maxPerSecond } = require('../test/peers/window');

const PGBENCH = '/usr/lib/postgresql/15/bin/pgbench';
const num = (name, dflt) => {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number (got ${v})`);
  return n;
};
let SECS = num('BENCH_SECONDS', 10);
let INGEST_RATE = num('BENCH_INGEST_RATE', 500);
let BACKLOG = num('BENCH_BACKLOG', 1000000);
let RATE_LIMIT = num('BENCH_RATE_LIMIT', 50);
let RATE_SECS = num('BENCH_RATE_SECONDS', 60);
let SCALE_MAX = num('BENCH_SCALE_MAX', 10000000);
let CHURN_SECS = num('BENCH_CHURN_SECONDS', 900);
let CHURN_SAMPLE = num('BENCH_CHURN_SAMPLE', 60);
let EVENT_RETENTION = process.env.BENCH_EVENT_RETENTION || '10min';
let DAEMON_SECS = num('BENCH_DAEMON_SECONDS', 15);
let ONLY = (process.env.BENCH_ONLY || '').split(',').map((s) => s.trim()).filter(Boolean);
const OUT = path.resolve(process.env.BENCH_OUT || path.join(__dirname, '..', 'docs', 'bench'));
const HTTP_N = 20000;     // events backlogged for items 4 and 5
const SCALE_BATCH = 10000; // events delivered per scale level (item 8)
const SCALE_TIMEOUT = 300; // seconds to wait for one scale level's batch
const LAT_CLIENTS = 4;     // pgbench connections sharing the steady rate of items 3 and 8

// '8a' is also selected by '8'; '10', '11' and '12' are not selected by '1'
const want = (k) => ONLY.length === 0 || ONLY.includes(k) || (/^\d+[a-z]$/.test(k) && ONLY.includes(k.slice(0, -1)));
const R = { started: new Date().toISOString(), env: { SECS, INGEST_RATE, BACKLOG, RATE_LIMIT, RATE_SECS, SCALE_MAX, CHURN_SECS, CHURN_SAMPLE, EVENT_RETENTION, DAEMON_SECS, ONLY }, sections: {} };
const log = (s) => console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${s}`);
const round = (x, d = 0) => (x === null || x === undefined || Number.isNaN(x) ? null : Number(x.toFixed(d)));

// ---------------------------------------------------------------- helpers
const BASE_CONFIG = { 'evpipe.workers': 2, synchronous_commit: 'on', shared_buffers: '512MB', max_wal_size: '4GB' };
const cluster = (extra = {}) => startCluster({ fsync: true, config: { ...BASE_CONFIG, ...extra } });

const ev = (id, type = 'BENCH') => `jsonb_build_object('eventId', ${id}, 'eventType', '${type}', 'source', 'bench',
      'payload', jsonb_build_object('n', 1, 'note', 'a benchmark event'), 'timestamp', '2026-11-21T10:00:00Z')`;

// pgbench, asynchronous (the event loop keeps running: item 8 samples during it)
function pgbench(pg, script, { clients = 1, seconds = SECS, rate = null, logPrefix = null, db = 'postgres', mode = 'simple' } = {}) {
  const threads = Math.min(clients, 2);
  const f = path.join(os.tmpdir(), `evpipe-bench-${process.pid}-${Math.random().toString(36).slice(2)}.sql`);
  fs.writeFileSync(f, script);
  const args = ['-h', '127.0.0.1', '-p', String(pg.port), '-U', 'postgres', '-n', '-f', f,
    '-c', String(clients), '-j', String(threads), '-T', String(Math.round(seconds))];
  if (mode !== 'simple') args.push('-M', mode);
  if (rate) args.push('-R', String(rate));
  if (logPrefix) args.push('-l', `--log-prefix=${logPrefix}`);
  args.push(db);
  return new Promise((resolve, reject) => {
    const child = spawn(PGBENCH, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: os.tmpdir() });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('exit', () => {
      fs.rmSync(f, { force: true });
      const m = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout);
      if (!m) return reject(new Error(`pgbench failed: ${stderr || stdout}`));
      const failed = /number of failed transactions: (\d+)/.exec(stdout);
      resolve({ tps: Number(m[1]), failed: failed ? Number(failed[1]) : 0, stdout });
    });
  });
}

const sortNum = (a) => Float64Array.from(a).sort();
const pct = (a, q) => (a.length ? a[Math.min(a.length - 1, Math.floor(q * a.length))] : null);
// Points (x = 1/(1-q), value) of a sorted sample, for a percentile plot on a log axis.
function distribution(sorted) {
  const pts = [];
  const top = Math.log10(sorted.length);
  for (let k = 0; k <= top + 1e-9; k += 0.02) {
    const q = 1 - 10 ** -k;
    pts.push([round(1 / (1 - q), 3), round(pct(sorted, q), 3)]);
  }
  pts.push([sorted.length, round(sorted[sorted.length - 1], 3)]);
  return pts;
}

// Start a bench/ peer (same protocol as test/peers: prints {"ready":true,"port":N}).
function startBenchPeer(file, args = []) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, file), '--port', '0', ...args],
      { stdio: ['ignore', 'pipe', 'inherit'] });
    let buf = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${file} did not start`)); }, 15000);
    process.on('exit', () => { try { child.kill('SIGKILL'); } catch (e) { /* gone */ } });
    child.stdout.on('data', (d) => {
      buf += d;
      const l = buf.split('\n').find((x) => x.includes('"ready"'));
      if (!l) return;
      clearTimeout(timer);
      const url = `http://127.0.0.1:${JSON.parse(l).port}`;
      resolve({
        url,
        control: (method, p, body) => httpJson(method, url + p, body),
        stop: () => new Promise((r) => {
          if (child.exitCode !== null) return r();
          child.once('exit', r);
          child.kill('SIGTERM');
          setTimeout(() => { try { child.kill('SIGKILL'); } catch (e) { /* gone */ } }, 2000).unref();
        }),
      });
    });
  });
}

// Pending rows made set-based (both tables, one statement per million), as
// ingest would have written them: canonical envelope, one outbox row each.
async function makePending(pg, dest, from, to, prefix, type = 'BENCH') {
  const CHUNK = 1000000;
  for (let a = from; a <= to; a += CHUNK) {
    const b = Math.min(to, a + CHUNK - 1);
    await pg.query(`WITH e AS (
      INSERT INTO evpipe.events (event_id, event_type, schema_version, source, event_time, event, ingested_by)
      SELECT '${prefix}-' || g, '${type}', 1, 'bench', '2026-11-21T10:00:00Z',
        jsonb_build_object('eventId', '${prefix}-' || g, 'eventType', '${type}', 'source', 'bench',
          'payload', jsonb_build_object('n', g, 'note', 'a benchmark event'), 'timestamp', '2026-11-21T10:00:00Z'),
        current_user
      FROM generate_series($1::bigint, $2::bigint) g RETURNING event_id)
      INSERT INTO evpipe.outbox (event_id, destination) SELECT event_id, $3 FROM e`, [a, b, dest]);
  }
}

const outboxEmpty = (pg, dest) => pg.query(
  'SELECT NOT EXISTS (SELECT 1 FROM evpipe.outbox WHERE destination = $1) AS done', [dest]).then((r) => r[0].done);

// Wait for a destination's outbox rows to be gone; never throws on a timeout.
async function drain(pg, dest, timeoutMs) {
  const t0 = performance.now();
  while (!(await outboxEmpty(pg, dest))) {
    if (performance.now() - t0 > timeoutMs) return { seconds: (performance.now() - t0) / 1000, timedOut: true };
    await sleep(20);
  }
  return { seconds: (performance.now() - t0) / 1000, timedOut: false };
}

async function ingestMany(pg, type, prefix, n) {
  await pg.query(`SELECT count(evpipe.ingest(jsonb_build_object('eventId', '${prefix}-' || g, 'eventType', '${type}',
    'source', 'bench', 'payload', jsonb_build_object('n', g), 'timestamp', '2026-11-21T10:00:00Z')))
    FROM generate_series(1, ${n}) g`);
}

async function section(key, title, fn) {
  if (!want(key)) return;
  const S = { title, load1: round(os.loadavg()[0], 2) };
  R.sections[key] = S;
  log(`== ${key}. ${title}`);
  const t0 = performance.now();
  try {
    await fn(S);
  } catch (e) {
    S.error = String((e && e.stack) || e);
    console.error(e);
  }
  S.seconds = round((performance.now() - t0) / 1000, 1);
  log(`   ${key} took ${S.seconds} s`);
}

async function describe(pg) {
  if (R.machine) return;
  const names = ['fsync', 'synchronous_commit', 'full_page_writes', 'wal_level', 'shared_buffers', 'max_wal_size',
    'checkpoint_timeout', 'work_mem', 'max_connections', 'autovacuum', 'autovacuum_naptime',
    'autovacuum_vacuum_scale_factor', 'autovacuum_vacuum_insert_scale_factor', 'shared_preload_libraries',
    'evpipe.workers', 'evpipe.max_in_flight', 'evpipe.batch_size', 'evpipe.lease_ms', 'evpipe.tick_ms'];
  const rows = await pg.query('SELECT name, current_setting(name) AS v FROM pg_settings WHERE name = ANY($1) ORDER BY name', [names]);
  const cpus = os.cpus();
  let disk = null;
  try { disk = execFileSync('df', ['-h', '--output=source,fstype,size', os.tmpdir()], { encoding: 'utf8' }).trim().split('\n').pop().trim().split(/\s+/).join(' '); } catch (e) { /* no df */ }
  R.machine = {
    cores: cpus.length,
    cpu: cpus[0] && cpus[0].model,
    memoryGiB: round(os.totalmem() / 2 ** 30, 1),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    disk,
    postgres: (await pg.query('SHOW server_version'))[0].server_version,
    settings: Object.fromEntries(rows.map((r) => [r.name, r.v])),
  };
}

// ---------------------------------------------------------------- 1, 2
async function ingestItems() {
  if (!want('1') && !want('2')) return;
  const pg = await cluster();
  try {
    await describe(pg);
    await pg.query(`SELECT evpipe.register_event_type('BENCH', '{"type": "object", "required": ["n"],
      "properties": {"n": {"type": "integer"}, "note": {"type": "string", "maxLength": 200}}}')`);
    await pg.query(`SELECT evpipe.create_destination('bench-off', 'http', '{"url": "http://127.0.0.1:9/"}')`);
    await pg.query("SELECT evpipe.pause_destination('bench-off')");   // ingest only: nothing delivered
    await pg.query("SELECT evpipe.add_route('BENCH', 'bench-off')");
    await pg.query('CREATE TABLE bare (event_id text PRIMARY KEY, event jsonb NOT NULL)');
    let pgq = false;
    try {
      await pg.query('CREATE EXTENSION pgq');
      await pg.query("SELECT pgq.create_queue('bench')");
      pgq = true;
    } catch (e) { /* PgQ not installed */ }

    await section('1', 'Ingest, one event per transaction (pgbench)', async (S) => {
      const scripts = {
        bare: `INSERT INTO bare VALUES (gen_random_uuid()::text, ${ev("'x'")});`,
        ingest: `SELECT evpipe.ingest(${ev('gen_random_uuid()::text')});`,
        ...(pgq ? { pgq: `SELECT pgq.insert_event('bench', 'BENCH', (${ev('gen_random_uuid()::text')})::text);` } : {}),
      };
      S.rows = [];
      for (const c of [1, 2]) {
        const r = { clients: c };
        for (const [name, sql] of Object.entries(scripts)) r[name] = round((await pgbench(pg, sql, { clients: c })).tps);
        r.ratio = round(r.ingest / r.bare, 2);
        S.rows.push(r);
        log(`   ${JSON.stringify(r)}`);
      }
    });

    await section('2', 'Batched ingest (1,000 events per transaction)', async (S) => {
      const batch = async (sql) => round((await pgbench(pg, sql, { clients: 2 })).tps * 1000);
      S.rows = [];
      S.rows.push({ method: 'bare INSERT (one INSERT ... SELECT of 1,000 rows)', key: 'bare',
        eps: await batch(`INSERT INTO bare SELECT gen_random_uuid()::text, ${ev("'x'")} FROM generate_series(1, 1000) g;`) });
      S.rows.push({ method: 'evpipe.ingest (1,000 calls in one statement)', key: 'ingest',
        eps: await batch(`SELECT count(evpipe.ingest(${ev('gen_random_uuid()::text')})) FROM generate_series(1, 1000) g;`) });
      const hasBatch = (await pg.query("SELECT to_regprocedure('evpipe.ingest_batch(jsonb,text)') IS NOT NULL AS ok"))[0].ok;
      S.ingestBatch = hasBatch;
      if (hasBatch) {
        const arr = `(SELECT jsonb_agg(${ev('gen_random_uuid()::text')}) FROM generate_series(1, 1000) g)`;
        // one call first: are the 1,000 answers acceptances?
        const chk = await pg.query(`SELECT jsonb_array_length(a) AS n,
          (SELECT count(*) FROM jsonb_array_elements(a) x WHERE x ->> 'status' = 'accepted')::int AS accepted
          FROM evpipe.ingest_batch(${arr}) a`);
        S.batchCheck = chk[0];
        S.rows.push({ method: 'evpipe.ingest_batch (one call with a 1,000-event array)', key: 'ingest_batch',
          eps: await batch(`SELECT jsonb_array_length(evpipe.ingest_batch(${arr}));`) });
      }
      if (pgq) {
        S.rows.push({ method: 'pgq.insert_event (1,000 calls in one statement)', key: 'pgq',
          eps: await batch(`SELECT count(pgq.insert_event('bench', 'BENCH', (${ev('gen_random_uuid()::text')})::text)) FROM generate_series(1, 1000) g;`) });
      }
      for (const r of S.rows) log(`   ${r.method}: ${r.eps} events/s`);
    });
  } finally {
    await pg.stop();
  }
}

// ---------------------------------------------------------------- 3
async function latencyRun(pg, label, sql) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evpipe-bench-lat-'));
  try {
    const r = await pgbench(pg, sql, { clients: LAT_CLIENTS, rate: INGEST_RATE, logPrefix: path.join(dir, 'lat') });
    const lat = [];
    const service = [];
    for (const f of fs.readdirSync(dir)) {
      for (const l of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) {
        const x = l.trim().split(/\s+/);
        if (x.length < 7) continue;
        const us = Number(x[2]);
        const lag = Number(x[6]);
        lat.push(us / 1000);
        service.push((us - lag) / 1000);
      }
    }
    const s = sortNum(lat);
    const sv = sortNum(service);
    const out = {
      label, n: s.length, tps: round(r.tps), failed: r.failed,
      p50: round(pct(s, 0.5), 2), p90: round(pct(s, 0.9), 2), p99: round(pct(s, 0.99), 2),
      p999: round(pct(s, 0.999), 2), max: round(s[s.length - 1], 2),
      serviceP50: round(pct(sv, 0.5), 2), serviceP99: round(pct(sv, 0.99), 2), serviceP999: round(pct(sv, 0.999), 2),
      dist: distribution(s),
    };
    log(`   ${label}: n=${out.n} p50 ${out.p50} p99 ${out.p99} p99.9 ${out.p999} max ${out.max} ms`);
    return out;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function item3() {
  if (!want('3')) return;
  const pg = await cluster();
  try {
    await describe(pg);
    await section('3', `Ingest latency at ${INGEST_RATE}/s with a backlog of ${BACKLOG.toLocaleString('en')} undelivered events`, async (S) => {
      await pg.query(`SELECT evpipe.register_event_type('BENCH', '{"type": "object"}')`);
      const closed = await freePort();   // nothing listens there: connection refused
      S.target = `http://127.0.0.1:${closed}/`;
      await pg.query("SELECT evpipe.create_destination('down', 'http', $1::jsonb)",
        [JSON.stringify({ url: S.target, max_attempts: 1000 })]);
      await pg.query("SELECT evpipe.add_route('BENCH', 'down')");
      await pg.query('CREATE TABLE bare (event_id text PRIMARY KEY, event jsonb NOT NULL)');
      const ingest = `SELECT evpipe.ingest(${ev('gen_random_uuid()::text')});`;
      S.runs = [];
      S.runs.push({ key: 'bare', ...(await latencyRun(pg, 'bare INSERT',
        `INSERT INTO bare VALUES (gen_random_uuid()::text, ${ev("'x'")});`)) });
      await pg.query("SELECT evpipe.pause_destination('down')");
      S.runs.push({ key: 'paused', ...(await latencyRun(pg, 'evpipe.ingest, destination paused', ingest)) });
      await pg.query("SELECT evpipe.resume_destination('down')");
      await sleep(2000);
      S.runs.push({ key: 'empty', ...(await latencyRun(pg, 'evpipe.ingest, target down, no backlog', ingest)) });
      let t0 = performance.now();
      await makePending(pg, 'down', 1, BACKLOG, 'bl');
      // a real backlog builds up over time: vacuum it and write its pages out
      // now, so no bulk-load checkpoint lands in the measurement
      await pg.query('VACUUM (ANALYZE) evpipe.outbox, evpipe.events');
      await pg.query('CHECKPOINT');
      S.backlogSeconds = round((performance.now() - t0) / 1000, 1);
      await sleep(3000);   // workers are failing the backlog by now
      const state = async () => (await pg.query(`SELECT count(*)::int AS pending, sum(attempts)::bigint AS attempts,
        (SELECT last_error FROM evpipe.outbox WHERE destination = 'down' AND last_error IS NOT NULL LIMIT 1) AS err
        FROM evpipe.outbox WHERE destination = 'down'`))[0];
      const circuits = () => (pg.log().match(/event=circuit_open/g) || []).length;
      const before = await state();
      const c0 = circuits();
      t0 = performance.now();
      S.runs.push({ key: 'backlog', ...(await latencyRun(pg, `evpipe.ingest, target down, ${BACKLOG.toLocaleString('en')} backlog`, ingest)) });
      const secs = (performance.now() - t0) / 1000;
      const after = await state();
      S.circuitOpens = circuits() - c0;
      S.circuitOpensTotal = circuits();
      S.pendingBefore = before.pending;
      S.pendingAfter = after.pending;
      S.failedAttempts = Number(after.attempts) - Number(before.attempts);
      S.failedAttemptsPerSec = round(S.failedAttempts / secs);
      S.lastError = after.err;
      log(`   workers failed ${S.failedAttempts} attempts (${S.failedAttemptsPerSec}/s) during the run, ${S.circuitOpens} circuit_open log lines (${S.lastError})`);
    });
  } finally {
    await pg.stop();
  }
}

// ---------------------------------------------------------------- 4, 5, 6, 7
async function wrkCapacity(url) {
  try {
    const body = path.join(os.tmpdir(), `evpipe-wrk-${process.pid}.lua`);
    fs.writeFileSync(body, 'wrk.method = "POST"\nwrk.body = \'{"eventId":"x","payload":{}}\'\nwrk.headers["Content-Type"] = "application/json"\n');
    const r = execFileSync('wrk', ['-t2', '-c32', `-d${Math.min(SECS, 5)}s`, '-s', body, url], { encoding: 'utf8' });
    fs.rmSync(body);
    return Number(/Requests\/sec:\s+([\d.]+)/.exec(r)[1]);
  } catch (e) { return null; }   // wrk not installed
}

function sqsLoad(sqs, queueUrl, n) {
  const r = spawnSync(process.execPath, [path.join(__dirname, 'sqs-load.js'), '--endpoint', sqs.url, '--queue-url', queueUrl,
    '--akid', SQS_AKID, '--secret', SQS_SECRET, '--messages', String(n), '--concurrency', '16', '--batch', '10'],
  { encoding: 'utf8', env: { ...process.env, NODE_NO_WARNINGS: '1' } });
  if (r.status !== 0) throw new Error(`sqs-load failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}
const SQS_AKID = 'AKIDEVPIPEBENCH';
const SQS_SECRET = 'evpipe-bench-secret';

async function deliveryItems() {
  if (!['4', '5', '6', '7'].some(want)) return;
  const pg = await cluster();
  const sink = await startPeer('http-sink');
  let sqs = null;
  try {
    await describe(pg);
    await pg.query(`SELECT evpipe.register_event_type('BENCH_HTTP', '{"type": "object"}')`);
    await pg.query(`SELECT evpipe.create_destination('bench-http', 'http', $1::jsonb)`, [JSON.stringify({ url: `${sink.url}/d` })]);
    await pg.query("SELECT evpipe.add_route('BENCH_HTTP', 'bench-http')");

    await section('4', 'HTTP delivery throughput to a local sink', async (S) => {
      const before = await wrkCapacity(`${sink.url}/wrk`);
      await sink.control('POST', '/_control/reset');
      await ingestMany(pg, 'BENCH_HTTP', 'h', HTTP_N);
      const d = await drain(pg, 'bench-http', 600000);
      const after = await wrkCapacity(`${sink.url}/wrk`);
      const got = (await sink.control('GET', '/_control/requests?path=/d')).map((r) => r.receivedAt).sort((a, b) => a - b);
      S.n = HTTP_N;
      S.timedOut = d.timedOut;
      const delivered = (await pg.query("SELECT count(*)::int AS n FROM evpipe.delivered WHERE destination = 'bench-http'"))[0].n;
      S.delivered = delivered;
      S.rate = round(delivered / d.seconds);
      S.sinkRate = got.length > 1 ? round((got.length - 1) / ((got[got.length - 1] - got[0]) / 1000)) : null;
      S.capacity = before && after ? round((before + after) / 2) : round(before || after);
      S.capacityRuns = [round(before), round(after)];
      S.ratio = S.capacity ? round(S.rate / S.capacity, 2) : null;
      log(`   ${S.rate}/s delivered, sink capacity ${S.capacity}/s (${S.capacityRuns.join(', ')}), ratio ${S.ratio}`);
    });

    await section('5', 'SQS delivery throughput (batches of 10) to the emulator', async (S) => {
      sqs = await startPeer('sqs', ['--credentials', `${SQS_AKID}:${SQS_SECRET}`]);
      const { SQSClient, CreateQueueCommand } = require('../test/peers/node_modules/@aws-sdk/client-sqs');
      const client = new SQSClient({ region: 'us-east-1', endpoint: sqs.url, credentials: { accessKeyId: SQS_AKID, secretAccessKey: SQS_SECRET } });
      const queue = async (name) => {
        await client.send(new CreateQueueCommand({ QueueName: name }));
        return `${sqs.url}/123456789012/${name}`;
      };
      const capacityBefore = sqsLoad(sqs, await queue('capacity-before'), HTTP_N);
      const url = await queue('bench');
      client.destroy();
      await pg.query('SELECT evpipe.create_destination($1, $2, $3::jsonb)', ['bench-sqs', 'sqs', JSON.stringify({
        queue_url: url, region: 'us-east-1', endpoint_url: sqs.url, access_key_id: SQS_AKID, secret_access_key: SQS_SECRET,
      })]);
      await pg.query(`SELECT evpipe.register_event_type('BENCH_SQS', '{"type": "object"}')`);
      await pg.query("SELECT evpipe.add_route('BENCH_SQS', 'bench-sqs')");
      await sqs.control('POST', '/_control/reset');
      await ingestMany(pg, 'BENCH_SQS', 's', HTTP_N);
      const d = await drain(pg, 'bench-sqs', 600000);
      const sent = (await sqs.control('GET', '/_control/log')).filter((l) => l.target.endsWith('SendMessageBatch'));
      const c2 = new SQSClient({ region: 'us-east-1', endpoint: sqs.url, credentials: { accessKeyId: SQS_AKID, secretAccessKey: SQS_SECRET } });
      await c2.send(new CreateQueueCommand({ QueueName: 'capacity-after' }));
      c2.destroy();
      const capacityAfter = sqsLoad(sqs, `${sqs.url}/123456789012/capacity-after`, HTTP_N);
      const ok = sent.filter((l) => l.status === 200);
      const delivered = (await pg.query("SELECT count(*)::int AS n FROM evpipe.delivered WHERE destination = 'bench-sqs'"))[0].n;
      S.n = HTTP_N;
      S.delivered = delivered;
      S.timedOut = d.timedOut;
      S.rate = round(delivered / d.seconds);
      S.requests = sent.length;
      S.failedRequests = sent.length - ok.length;
      S.entriesPerRequest = ok.length ? round(ok.reduce((a, l) => a + (l.entries || 0), 0) / ok.length, 2) : null;
      S.capacityRuns = [round(capacityBefore.perSecond), round(capacityAfter.perSecond)];
      S.capacity = round((capacityBefore.perSecond + capacityAfter.perSecond) / 2);
      S.ratio = round(S.rate / S.capacity, 2);
      log(`   ${S.rate}/s delivered in ${S.requests} requests (${S.entriesPerRequest} entries each), emulator capacity ${S.capacity}/s (${S.capacityRuns.join(', ')}), ratio ${S.ratio}`);
    });

    await section('6', 'Commit-to-arrival latency (HTTP)', async (S) => {
      await sink.control('POST', '/_control/reset');
      const total = 1000 * Math.min(SECS, 5);
      const client = await pg.client();
      const commits = new Map();
      const start = performance.now();
      for (let i = 0; i < total; i++) {
        const wait = start + i - performance.now();
        if (wait > 1) await sleep(wait);
        await client.query(`SELECT evpipe.ingest(jsonb_build_object('eventId', $1::text, 'eventType', 'BENCH_HTTP',
          'source', 'bench', 'payload', '{}'::jsonb, 'timestamp', '2026-11-21T10:00:00Z'))`, [`l-${i}`]);
        commits.set(`l-${i}`, performance.timeOrigin + performance.now());
      }
      await client.end();
      S.offered = round(total / ((performance.now() - start) / 1000));
      await drain(pg, 'bench-http', 120000);
      const got = await sink.control('GET', '/_control/requests?path=/d');
      const lat = sortNum(got.filter((r) => commits.has(r.headers['idempotency-key']))
        .map((r) => r.receivedAt - commits.get(r.headers['idempotency-key'])));
      S.n = lat.length;
      S.p50 = round(pct(lat, 0.5), 1);
      S.p99 = round(pct(lat, 0.99), 1);
      S.max = round(lat[lat.length - 1], 1);
      log(`   offered ${S.offered}/s: p50 ${S.p50} ms, p99 ${S.p99} ms, max ${S.max} ms`);
    });

    await section('7', `Rate-limit accuracy (${RATE_LIMIT}/s over ${RATE_SECS} s)`, async (S) => {
      S.limit = RATE_LIMIT;
      S.window = RATE_SECS;
      await pg.query(`SELECT evpipe.register_event_type('BENCH_RL', '{"type": "object"}')`);
      await pg.query('SELECT evpipe.create_destination($1, $2, $3::jsonb)', ['bench-rl', 'http',
        JSON.stringify({ url: `${sink.url}/rl`, rate_limit_per_sec: RATE_LIMIT })]);
      await pg.query("SELECT evpipe.pause_destination('bench-rl')");
      await pg.query("SELECT evpipe.add_route('BENCH_RL', 'bench-rl')");
      S.backlog = Math.ceil(RATE_LIMIT * (RATE_SECS + 20));
      await ingestMany(pg, 'BENCH_RL', 'rl', S.backlog);
      await sink.control('POST', '/_control/reset');
      await pg.query("SELECT evpipe.resume_destination('bench-rl')");
      const t0 = Date.now();
      let first = null;
      while (first === null && Date.now() - t0 < 30000) {
        const st = await sink.control('GET', '/_control/stats');
        if (st.byPath && st.byPath['/rl']) first = Date.now();
        else await sleep(20);
      }
      if (first === null) throw new Error('no delivery reached the target within 30 s');
      await sleep(RATE_SECS * 1000 + 1500);
      const all = (await sink.control('GET', '/_control/requests?path=/rl')).map((r) => r.receivedAt).sort((a, b) => a - b);
      const start = all[0];
      const t = all.filter((x) => x < start + RATE_SECS * 1000);
      S.observed = round(t.length / RATE_SECS, 2);
      S.ratio = round(S.observed / RATE_LIMIT, 3);
      S.maxSliding = maxPerSecond(t);
      // sliding one-second windows (one starting at each arrival) holding more than the limit
      let over = 0;
      for (let i = 0, j = 0; i < t.length; i++) {
        while (j < t.length && t[j] - t[i] < 1000) j++;
        if (j - i > RATE_LIMIT) over++;
      }
      S.windowsOver = over;
      S.windowsChecked = t.length;
      S.perSecond = Array.from({ length: RATE_SECS }, () => 0);
      for (const x of t) S.perSecond[Math.floor((x - start) / 1000)]++;
      // the most in a sliding window ending in each second, for the plot
      S.slidingMaxPerSecond = Array.from({ length: RATE_SECS }, () => 0);
      for (let i = 0, j = 0; i < t.length; i++) {
        while (t[i] - t[j] >= 1000) j++;
        const s = Math.floor((t[i] - start) / 1000);
        S.slidingMaxPerSecond[s] = Math.max(S.slidingMaxPerSecond[s], i - j + 1);
      }
      log(`   configured ${RATE_LIMIT}/s, observed ${S.observed}/s, max ${S.maxSliding} in a sliding second, ${over} windows over the limit`);
    });
  } finally {
    await sink.stop();
    if (sqs) await sqs.stop();
    await pg.stop();
  }
}

// ---------------------------------------------------------------- 8
const STATEMENTS = `SELECT
    coalesce(sum(calls) FILTER (WHERE claim), 0)::bigint AS claim_calls,
    coalesce(sum(rows) FILTER (WHERE claim), 0)::bigint AS claim_rows,
    coalesce(sum(total_exec_time) FILTER (WHERE claim), 0) AS claim_ms,
    coalesce(max(max_exec_time) FILTER (WHERE claim), 0) AS claim_max_ms,
    coalesce(sum(calls) FILTER (WHERE record), 0)::bigint AS record_calls,
    coalesce(sum(total_exec_time) FILTER (WHERE record), 0) AS record_ms
  FROM (SELECT calls, rows, total_exec_time, max_exec_time,
      query LIKE '%SKIP LOCKED%' AND query LIKE '%evpipe.outbox%' AS claim,
      query LIKE '%INSERT INTO evpipe.delivered%' AS record
    FROM pg_stat_statements) s`;

async function scaleItem() {
  if (!want('8a')) return;
  const pg = await cluster({ shared_preload_libraries: 'evpipe,pg_stat_statements', 'pg_stat_statements.track': 'all' });
  const sink = await startBenchPeer('count-sink.js');
  try {
    await describe(pg);
    await section('8a', 'Scale: claim cost and delivery rate with pending rows', async (S) => {
      await pg.query('CREATE EXTENSION pg_stat_statements');
      await pg.query(`SELECT evpipe.register_event_type('BENCH', '{"type": "object"}')`);
      await pg.query(`SELECT evpipe.register_event_type('BENCH_LIVE', '{"type": "object"}')`);
      await pg.query(`SELECT evpipe.create_destination('parked', 'http', '{"url": "http://127.0.0.1:9/"}')`);
      await pg.query("SELECT evpipe.pause_destination('parked')");
      await pg.query("SELECT evpipe.add_route('BENCH', 'parked')");
      await pg.query('SELECT evpipe.create_destination($1, $2, $3::jsonb)', ['live', 'http', JSON.stringify({ url: `${sink.url}/live` })]);
      await pg.query("SELECT evpipe.add_route('BENCH_LIVE', 'live')");
      const levels = [0, 10000, 1000000, 10000000].filter((n) => n <= SCALE_MAX);
      if (!levels.includes(SCALE_MAX) && SCALE_MAX > 10000) levels.push(SCALE_MAX);
      S.batch = SCALE_BATCH;
      S.levels = [];
      // one batch first, not counted: the first delivery on a fresh cluster also pays for the
      // workers' connections to the sink and cold caches (it made the 0 row look slow)
      let t = performance.now();
      await ingestMany(pg, 'BENCH_LIVE', 'warm', SCALE_BATCH);
      await drain(pg, 'live', SCALE_TIMEOUT * 1000);
      S.warmupSeconds = round((performance.now() - t) / 1000, 1);
      let have = 0;
      for (const [i, level] of levels.entries()) {
        let t0 = performance.now();
        if (level > have) await makePending(pg, 'parked', have + 1, level, 'p');
        have = level;
        await pg.query('VACUUM (ANALYZE) evpipe.outbox, evpipe.events');
        await pg.query('CHECKPOINT');
        const makeSeconds = round((performance.now() - t0) / 1000, 1);
        await sink.control('POST', '/_reset');
        await pg.query('SELECT pg_stat_statements_reset()');
        await ingestMany(pg, 'BENCH_LIVE', `live${i}`, SCALE_BATCH);
        const d = await drain(pg, 'live', SCALE_TIMEOUT * 1000);
        const st = (await pg.query(STATEMENTS))[0];
        const got = await sink.control('GET', '/_count?path=/live');
        const size = (await pg.query(`SELECT pg_total_relation_size('evpipe.outbox') AS o,
          pg_total_relation_size('evpipe.events') AS e`))[0];
        const L = {
          pending: level,
          makeSeconds,
          seconds: round(d.seconds, 2),
          timedOut: d.timedOut,
          delivered: got.count,
          rate: round(got.count / d.seconds),
          sinkRate: got.count > 1 ? round((got.count - 1) / ((got.last - got.first) / 1000)) : null,
          claimCalls: Number(st.claim_calls),
          claimRowsPerCall: Number(st.claim_calls) ? round(Number(st.claim_rows) / Number(st.claim_calls), 1) : null,
          claimMsPerCall: Number(st.claim_calls) ? round(st.claim_ms / Number(st.claim_calls), 3) : null,
          claimMsPer100Rows: Number(st.claim_rows) ? round((st.claim_ms / Number(st.claim_rows)) * 100, 3) : null,
          claimMaxMs: round(st.claim_max_ms, 1),
          recordMsPerCall: Number(st.record_calls) ? round(st.record_ms / Number(st.record_calls), 3) : null,
          outboxMB: round(Number(size.o) / 2 ** 20),
          eventsMB: round(Number(size.e) / 2 ** 20),
        };
        S.levels.push(L);
        log(`   ${level} pending: ${L.rate}/s, claim ${L.claimMsPerCall} ms/call (${L.claimRowsPerCall} rows), built in ${makeSeconds} s`);
      }
      S.statementsSeen = S.levels.some((l) => l.claimCalls > 0);
    });
  } finally {
    await sink.stop();
    await pg.stop();
  }
}

const SIZES = `SELECT pg_total_relation_size('evpipe.outbox') AS total, pg_relation_size('evpipe.outbox') AS heap,
    (SELECT json_object_agg(c.relname, pg_relation_size(i.indexrelid) ORDER BY c.relname)
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'evpipe.outbox'::regclass) AS indexes,
    (SELECT count(*) FROM evpipe.outbox)::int AS rows,
    s.n_dead_tup::bigint AS dead, s.autovacuum_count::int AS autovacuums,
    pg_total_relation_size('evpipe.events') AS events, pg_total_relation_size('evpipe.delivered') AS delivered,
    (SELECT count(*) FROM evpipe.events)::int AS event_rows, (SELECT count(*) FROM evpipe.delivered)::int AS delivered_rows,
    (SELECT n_tup_del FROM pg_stat_user_tables WHERE relid = 'evpipe.events'::regclass)::bigint AS events_removed,
    (SELECT autovacuum_count FROM pg_stat_user_tables WHERE relid = 'evpipe.events'::regclass)::int AS events_autovacuums
  FROM pg_stat_user_tables s WHERE s.relid = 'evpipe.outbox'::regclass`;

async function churnItem() {
  if (!want('8b')) return;
  // retention bounds the events and delivered tables (both set to BENCH_EVENT_RETENTION)
  const pg = await cluster({ 'evpipe.event_retention': EVENT_RETENTION, 'evpipe.delivered_retention': EVENT_RETENTION });
  const sink = await startBenchPeer('count-sink.js');
  try {
    await describe(pg);
    await section('8b', `Table sizes under churn (${INGEST_RATE}/s in and out for ${CHURN_SECS} s, retention ${EVENT_RETENTION})`, async (S) => {
      S.retention = (await pg.query("SELECT current_setting('evpipe.event_retention') AS e, current_setting('evpipe.delivered_retention') AS d"))[0];
      await pg.query(`SELECT evpipe.register_event_type('BENCH', '{"type": "object"}')`);
      await pg.query('SELECT evpipe.create_destination($1, $2, $3::jsonb)', ['churn', 'http', JSON.stringify({ url: `${sink.url}/churn` })]);
      await pg.query("SELECT evpipe.add_route('BENCH', 'churn')");
      S.samples = [];
      const t0 = performance.now();
      const sample = async () => {
        const r = (await pg.query(SIZES))[0];
        const got = await sink.control('GET', '/_count?path=/churn');
        const s = {
          t: round((performance.now() - t0) / 1000, 1),
          totalMB: round(Number(r.total) / 2 ** 20, 2),
          heapMB: round(Number(r.heap) / 2 ** 20, 2),
          indexesMB: Object.fromEntries(Object.entries(r.indexes || {}).map(([k, v]) => [k, round(Number(v) / 2 ** 20, 2)])),
          rows: r.rows, dead: Number(r.dead), autovacuums: r.autovacuums,
          eventsMB: round(Number(r.events) / 2 ** 20, 1), deliveredMB: round(Number(r.delivered) / 2 ** 20, 1),
          eventRows: r.event_rows, deliveredRows: r.delivered_rows, eventsRemoved: Number(r.events_removed),
          eventsAutovacuums: r.events_autovacuums,
          delivered: got.count,
        };
        S.samples.push(s);
        log(`   t=${s.t}s outbox ${s.totalMB} MB (heap ${s.heapMB}), ${s.rows} rows, ${s.dead} dead, ${s.autovacuums} autovacuums, ${s.delivered} delivered; events ${s.eventsMB} MB (${s.eventRows} rows, ${s.eventsRemoved} removed), delivered ${s.deliveredMB} MB (${s.deliveredRows} rows)`);
      };
      await sample();
      const run = pgbench(pg, `SELECT evpipe.ingest(${ev('gen_random_uuid()::text')});`, { clients: LAT_CLIENTS, rate: INGEST_RATE, seconds: CHURN_SECS });
      let done = false;
      run.then(() => { done = true; }, () => { done = true; });
      let next = CHURN_SAMPLE;
      while (!done) {
        await sleep(200);
        if (!done && (performance.now() - t0) / 1000 >= next) { await sample(); next += CHURN_SAMPLE; }
      }
      const r = await run;
      S.ingestTps = round(r.tps);
      S.failed = r.failed;
      const d = await drain(pg, 'churn', 120000);
      S.drainSeconds = round(d.seconds, 1);
      await sample();
      S.ingested = (await pg.query("SELECT count(*)::int AS n FROM evpipe.events"))[0].n;
    });
  } finally {
    await sink.stop();
    await pg.stop();
  }
}

// ---------------------------------------------------------------- plots
function gnuplotAvailable() {
  return spawnSync('gnuplot', ['--version'], { encoding: 'utf8' }).status === 0;
}

// gnuplot: clustered bars of events/s, from 0 (items 4-5 and 10)
const HISTOGRAM = `set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set ylabel 'events/s'
set yrange [0:*]
`;

function plots() {
  const made = {};
  if (!gnuplotAvailable()) { R.plotsSkipped = 'gnuplot not installed'; return made; }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'evpipe-bench-plot-'));
  const term = "set terminal pngcairo size 960,540 font 'Liberation Sans,11' noenhanced\nset grid lc rgb '#dddddd'\nset border lc rgb '#555555'\nset key box opaque\n";
  const draw = (name, data, script) => {
    for (const [f, rows] of Object.entries(data)) fs.writeFileSync(path.join(tmp, f), rows.map((r) => r.join(' ')).join('\n') + '\n');
    const png = path.join(OUT, `${name}.png`);
    const g = `${term}set output '${png}'\ncd '${tmp}'\n${script}\n`;
    const r = spawnSync('gnuplot', [], { input: g, encoding: 'utf8' });
    if (r.status !== 0) { console.error(`gnuplot ${name}: ${r.stderr}`); return; }
    made[name] = `${name}.png`;
  };
  const S3 = R.sections['3'];
  if (S3 && S3.runs && S3.runs.length) {
    const data = {};
    S3.runs.forEach((r, i) => { data[`lat${i}.dat`] = r.dist; });
    draw('ingest-latency', data, `set title 'Item 3: ingest latency at ${INGEST_RATE}/s (pgbench, ${LAT_CLIENTS} clients, from the scheduled start)'
set logscale x
set xrange [1:*]
set xtics ("p0" 1, "p50" 2, "p90" 10, "p99" 100, "p99.9" 1000, "p99.99" 10000, "p99.999" 100000)
set xlabel 'percentile'
set ylabel 'latency (ms)'
set logscale y
set autoscale xfix
set key bottom right
set arrow from graph 0, first 2 to graph 1, first 2 nohead lc rgb '#cc0000' dt 2
set label 'target: p99 <= 2 ms' at graph 0.02, first 2.5 left tc rgb '#cc0000'
plot ${S3.runs.map((r, i) => `'lat${i}.dat' using 1:2 with lines lw 2 title '${r.label}'`).join(', ')}`);
  }
  const bars = [];
  const S4 = R.sections['4'];
  const S5 = R.sections['5'];
  if (S4 && S4.rate !== undefined) bars.push(['"HTTP (4)"', S4.rate, S4.capacity || 0]);
  if (S5 && S5.rate !== undefined) bars.push(['"SQS, batches of 10 (5)"', S5.rate, S5.capacity || 0]);
  const S8 = R.sections['8a'];
  if (bars.length) {
    draw('delivery', { 'bars.dat': bars }, `set title 'Items 4 and 5: delivered events/s vs the target''s own capacity (same run)'
${HISTOGRAM}set xtics noenhanced
set key top right
plot 'bars.dat' using 2:xtic(1) title 'evpipe delivered/s' lc rgb '#1f77b4', '' using 3 title 'target capacity (wrk / SQS load client)' lc rgb '#aaaaaa', \
  '' using ($0-0.167):2:(sprintf('%d', $2)) with labels offset 0,0.7 notitle, '' using ($0+0.167):3:(sprintf('%d', $3)) with labels offset 0,0.7 notitle`);
  }
  const S7 = R.sections['7'];
  if (S7 && S7.perSecond) {
    draw('rate-limit', { 'rl.dat': S7.perSecond.map((v, i) => [i, v, S7.slidingMaxPerSecond[i]]) },
      `set title 'Item 7: arrivals per second at the target, limit ${S7.limit}/s'
set xlabel 'seconds since the first arrival'
set ylabel 'requests'
set yrange [0:${Math.ceil(Math.max(S7.limit, ...S7.slidingMaxPerSecond) * 1.25)}]
set key bottom right
set style fill solid 0.5 border -1
plot 'rl.dat' using ($1+0.5):2 with boxes lc rgb '#1f77b4' title 'arrivals in each 1 s bin', '' using ($1+0.5):3 with linespoints pt 7 ps 0.5 lc rgb '#ff7f0e' title 'most in a sliding 1 s window', ${S7.limit} with lines lw 2 dt 2 lc rgb '#cc0000' title 'configured limit'`);
  }
  const S8b = R.sections['8b'];
  if (S8b && S8b.samples && S8b.samples.length > 1) {
    const idx = Object.keys(S8b.samples[0].indexesMB);
    draw('outbox-churn', { 'churn.dat': S8b.samples.map((s) => [s.t / 60, s.totalMB, s.heapMB, ...idx.map((k) => s.indexesMB[k] || 0)]) },
      `set title 'Item 8: outbox size under churn (${INGEST_RATE}/s ingested and delivered)'
set xlabel 'minutes'
set ylabel 'MB'
set yrange [0:*]
set key below nobox noopaque
plot 'churn.dat' using 1:2 with linespoints lw 2 pt 7 title 'outbox total', '' using 1:3 with linespoints pt 7 title 'heap'${idx.map((k, i) => `, '' using 1:${4 + i} with linespoints pt 7 title 'index ${k}'`).join('')}`);
    if (S8b.samples[0].eventsMB !== undefined) {
      draw('tables-churn', { 'tables.dat': S8b.samples.map((s) => [s.t / 60, s.eventsMB, s.deliveredMB, s.totalMB]) },
        `set title 'Item 8: table sizes under churn (${INGEST_RATE}/s, retention ${S8b.retention ? S8b.retention.e : 'none'})'
set xlabel 'minutes'
set ylabel 'MB (table, indexes and TOAST)'
set yrange [0:*]
set key below nobox noopaque
plot 'tables.dat' using 1:2 with linespoints lw 2 pt 7 title 'evpipe.events', '' using 1:3 with linespoints lw 2 pt 5 title 'evpipe.delivered', '' using 1:4 with linespoints lw 2 pt 9 title 'evpipe.outbox'`);
    }
  }
  if (S8 && S8.levels && S8.levels.length) {
    const short = (n) => (n >= 1e6 ? `${n / 1e6}M` : n >= 1e3 ? `${n / 1e3}k` : String(n));
    draw('scale', { 'scale.dat': S8.levels.map((l) => [`"${short(l.pending)}"`, l.claimMsPerCall || 0, l.rate]) },
      `set multiplot layout 1,2 title 'Item 8: a ${SCALE_BATCH / 1000}k batch for one destination while a paused one holds N pending rows'
set logscale y
set offsets 0.3, 0.3, 0, 0
set xlabel 'pending rows of the paused destination'
set key off
set title 'claim statement, ms per call (pg_stat_statements)'
plot 'scale.dat' using 0:2:xtic(1) with linespoints lw 2 pt 7 lc rgb '#9400d3', '' using 0:2:(sprintf('%.1f', $2)) with labels offset 0,1
set title 'delivered events/s'
plot 'scale.dat' using 0:3:xtic(1) with linespoints lw 2 pt 5 lc rgb '#009e73', '' using 0:3:(sprintf('%d', $3)) with labels offset 0,1
unset multiplot`);
  }
  const S10 = R.sections['10'];
  if (S10 && S10.httpMedian && S10.sqsMedian) {
    const C = S10.configs;
    draw('daemon', { 'd.dat': Object.keys(C).map((k) => [`"${C[k]}"`, S10.httpMedian[k], S10.sqsMedian[k]]) },
      `set title 'Item 10: delivered events/s, evpiped vs the in-server workers (medians of ${S10.rounds} rounds, same run)'
${HISTOGRAM}set key top right
plot 'd.dat' using 2:xtic(1) title 'HTTP (count-sink)' lc rgb '#1f77b4', '' using 3 title 'SQS, batches of 10 (emulator)' lc rgb '#ff7f0e', \\
  '' using ($0-0.167):2:(sprintf('%d', $2)) with labels offset 0,0.7 notitle, '' using ($0+0.167):3:(sprintf('%d', $3)) with labels offset 0,0.7 notitle`);
  }
  fs.rmSync(tmp, { recursive: true, force: true });
  return made;
}

// ---------------------------------------------------------------- results.md
const ANALYSIS_BEGIN = '<!-- analysis: written by hand; bench/run keeps everything between these two markers -->';
const ANALYSIS_END = '<!-- end of analysis -->';
const fmt = (x) => (x === null || x === undefined ? 'n/a' : typeof x === 'number' ? x.toLocaleString('en') : String(x));
const mb = (x) => (x === null || x === undefined ? 'n/a' : `${x.toFixed(1)} MB`);

function render(made) {
  const md = [];
  const L = (s = '') => md.push(s);
  const M = R.machine || {};
  const S = R.sections;
  const checks = [];   // [item, measured, target, met]
  L('# evpipe benchmarks');
  L();
  L(`Generated by \`bench/run\` on ${R.started.slice(0, 19).replace('T', ' ')} UTC (${Math.round(R.totalSeconds / 60)} min).`);
  L('Every figure is a ratio or a percentile measured in this run on this machine; nothing fails on a number.');
  L('Each group of items runs on a fresh cluster with the settings below (items 1-2, 3, 4-7, 8 scale, 8 churn, 9, 10).');
  for (const m of R.merged || []) {
    L(`Item${m.items.length > 1 ? 's' : ''} ${m.items.join(', ')} come${m.items.length > 1 ? '' : 's'} from a separate run on the same machine, started ${m.started.slice(0, 19).replace('T', ' ')} UTC (${m.minutes} min), merged with \`BENCH_MERGE\`.`);
  }
  L();
  L('## Machine');
  L();
  L(`- ${fmt(M.cores)} cores (${M.cpu || '?'}), ${fmt(M.memoryGiB)} GiB memory, ${M.kernel || '?'}; data directory on ${M.disk || '?'}`);
  L(`- PostgreSQL ${M.postgres || '?'}, node ${M.node || '?'}; the load generators (pgbench, wrk, node) run on the same cores`);
  if (M.settings) L(`- settings: ${Object.entries(M.settings).map(([k, v]) => `\`${k}\`=${v}`).join(', ')}; item 8 (scale) adds \`pg_stat_statements\` (track = all)`);
  L(`- load average (1 min) at the start of each item: ${Object.entries(S).map(([k, s]) => `${k}: ${s.load1}`).join(', ')} (other work on the machine shows here)`);
  L(`- knobs: BENCH_SECONDS=${SECS}, BENCH_INGEST_RATE=${INGEST_RATE}, BENCH_BACKLOG=${BACKLOG}, BENCH_RATE_LIMIT=${RATE_LIMIT}, BENCH_RATE_SECONDS=${RATE_SECS}, BENCH_SCALE_MAX=${SCALE_MAX}, BENCH_CHURN_SECONDS=${CHURN_SECS}${EVENT_RETENTION !== undefined ? `, BENCH_EVENT_RETENTION=${EVENT_RETENTION}` : ''}${S['10'] ? `, BENCH_DAEMON_SECONDS=${DAEMON_SECS}` : ''}${ONLY.length ? `, BENCH_ONLY=${ONLY.join(',')}` : ''}`);
  L();
  const took = (k) => (S[k] ? ` (${fmt(S[k].seconds)} s)` : '');
  const failed = (k) => {
    if (!S[k] || !S[k].error) return false;
    L('**This item failed:**');
    L();
    L('```');
    L(S[k].error.split('\n').slice(0, 8).join('\n'));
    L('```');
    L();
    return true;
  };

  if (S['1']) {
    L(`## 1. Ingest, one event per transaction (pgbench)${took('1')}`);
    L();
    if (!failed('1')) {
      L('| clients | bare INSERT tps | evpipe.ingest tps | ratio | PgQ tps |');
      L('|---|---|---|---|---|');
      for (const r of S['1'].rows) L(`| ${r.clients} | ${fmt(r.bare)} | ${fmt(r.ingest)} | ${r.ratio}x | ${fmt(r.pgq)} |`);
      L();
      L(`${SECS} s per cell; one \`SELECT evpipe.ingest(...)\` (or one \`INSERT\` into a table with a primary key) per transaction, commit with fsync. Target: evpipe >= 0.9x the bare INSERT (issue #17; >= 0.8x before it).`);
      for (const r of S['1'].rows) checks.push([`1. ingest vs bare INSERT, ${r.clients} client(s)`, `${r.ratio}x`, '>= 0.9x (issue #17)', r.ratio >= 0.9]);
    }
    L();
  }
  if (S['2']) {
    L(`## 2. Batched ingest (1,000 events per transaction, 2 clients)${took('2')}`);
    L();
    if (!failed('2')) {
      L('| method | events/s |');
      L('|---|---|');
      for (const r of S['2'].rows) L(`| ${r.method} | ${fmt(r.eps)} |`);
      L();
      if (!S['2'].ingestBatch) L('`evpipe.ingest_batch(jsonb, text)` does not exist in this build: not measured.');
      else L(`\`evpipe.ingest_batch\` check call: ${S['2'].batchCheck.accepted} of ${S['2'].batchCheck.n} answers \`accepted\`.`);
      L('Target: >= 50,000 events/s, ahead of PgQ, and >= 0.6x the bare INSERT (issue #17).');
      const best = S['2'].rows.filter((r) => r.key === 'ingest' || r.key === 'ingest_batch').sort((a, b) => b.eps - a.eps)[0];
      const pgq = S['2'].rows.find((r) => r.key === 'pgq');
      if (best) {
        checks.push([`2. batched ingest (${best.key})`, `${fmt(best.eps)} events/s`, '>= 50,000/s', best.eps >= 50000]);
        if (pgq) checks.push([`2. batched ingest (${best.key}) vs PgQ`, `${(best.eps / pgq.eps).toFixed(2)}x`, '>= 1x (issue #17)', best.eps >= pgq.eps]);
        const bare = S['2'].rows.find((r) => r.key === 'bare');
        if (bare) checks.push([`2. batched ingest (${best.key}) vs bare INSERT`, `${(best.eps / bare.eps).toFixed(2)}x`, '>= 0.6x (issue #17)', best.eps >= 0.6 * bare.eps]);
      }
    }
    L();
  }
  if (S['3']) {
    const s = S['3'];
    L(`## 3. Ingest latency at ${INGEST_RATE}/s with ${BACKLOG.toLocaleString('en')} undelivered events${took('3')}`);
    L();
    if (!failed('3')) {
      L('| run | calls | p50 | p90 | p99 | p99.9 | max | p99 without schedule lag |');
      L('|---|---|---|---|---|---|---|---|');
      for (const r of s.runs) L(`| ${r.label} | ${fmt(r.n)} | ${r.p50} ms | ${r.p90} ms | ${r.p99} ms | ${r.p999} ms | ${r.max} ms | ${r.serviceP99} ms |`);
      L();
      L(`pgbench \`--rate ${INGEST_RATE}\` (Poisson arrivals) over ${LAT_CLIENTS} connections for ${SECS} s per run; each call is its own`);
      L('transaction (commit with fsync). Latency is measured by pgbench from each call\'s *scheduled* start to its answer, so a');
      L('stall also counts for the calls queued behind it; the last column leaves the schedule lag out. The runs, in order:');
      L('a bare `INSERT` into a table with a primary key (the floor of a one-row commit); ingest while the destination is');
      L('paused (ingest alone); ingest while the destination\'s target is down (a closed port on 127.0.0.1, so the workers');
      L('really connect and fail, retrying with backoff; `max_attempts` 1000 so nothing dead-letters) with no backlog; the same');
      L(`with ${BACKLOG.toLocaleString('en')} rows pending for it, made set-based (events + outbox rows, ${fmt(s.backlogSeconds)} s including`);
      L(`\`VACUUM ANALYZE\` and a \`CHECKPOINT\`, so the bulk load's writes do not land in the measurement). During the last run the workers made ${fmt(s.failedAttempts)} failed attempts (${fmt(s.failedAttemptsPerSec)}/s) and`);
      L(`logged ${fmt(s.circuitOpens)} \`event=circuit_open\` lines (last error: \`${s.lastError || 'n/a'}\`); ${fmt(s.pendingBefore)} rows were`);
      L(`pending before it, ${fmt(s.pendingAfter)} after${s.circuitOpensTotal ? ` (over the whole item the log has ${fmt(s.circuitOpensTotal)} \`circuit_open\` lines: the workers hold off a target that keeps failing)` : ''}. Target: p99 <= 2 ms.`);
      if (made['ingest-latency']) { L(); L('![ingest latency percentiles](ingest-latency.png)'); }
      const b = s.runs.find((r) => r.key === 'backlog');
      if (b) checks.push(['3. ingest p99 with the backlog', `${b.p99} ms (p99.9 ${b.p999} ms)`, 'p99 <= 2 ms', b.p99 <= 2]);
    }
    L();
  }
  if (S['4'] || S['5']) {
    L('## 4, 5. Delivery throughput vs the target\'s own capacity');
    L();
    L('| item | evpipe delivered/s | target capacity (runs before, after) | ratio |');
    L('|---|---|---|---|');
    if (S['4'] && !S['4'].error) L(`| 4. HTTP to the local sink | ${fmt(S['4'].rate)} | ${fmt(S['4'].capacity)} (${S['4'].capacityRuns.map(fmt).join(', ')}; wrk, 32 connections) | ${fmt(S['4'].ratio)} |`);
    if (S['5'] && !S['5'].error) L(`| 5. SQS to the emulator, batches of 10 | ${fmt(S['5'].rate)} | ${fmt(S['5'].capacity)} (${S['5'].capacityRuns.map(fmt).join(', ')}; bench/sqs-load.js, 16 requests in flight) | ${fmt(S['5'].ratio)} |`);
    L();
    failed('4');
    failed('5');
    L(`${HTTP_N.toLocaleString('en')} events ingested in one transaction, then drained by 2 workers; the rate is from the commit to the`);
    L('last outbox row gone. The capacity runs send the same traffic shape to the same target just before and just after.');
    if (S['4'] && !S['4'].error) {
      L(`HTTP${took('4')}: the sink saw ${fmt(S['4'].sinkRate)}/s from its first to its last request. Target: >= 5,000 events/s and >= 80% of the sink's capacity.`);
      checks.push(['4. HTTP delivery', `${fmt(S['4'].rate)}/s`, '>= 5,000/s', S['4'].rate >= 5000]);
      if (S['4'].ratio !== null) checks.push(['4. HTTP delivery vs sink capacity', `${Math.round(S['4'].ratio * 100)}%`, '>= 80%', S['4'].ratio >= 0.8]);
    }
    if (S['5'] && !S['5'].error) {
      L(`SQS${took('5')}: ${fmt(S['5'].requests)} SendMessageBatch requests (${fmt(S['5'].failedRequests)} refused) with ${fmt(S['5'].entriesPerRequest)} entries on average, through the`);
      L('SigV4-verifying proxy to local-aws-sqs; the load client signs with @aws-sdk/client-sqs. Target: >= 80% of the emulator\'s capacity.');
      checks.push(['5. SQS delivery vs emulator capacity', `${Math.round(S['5'].ratio * 100)}%`, '>= 80%', S['5'].ratio >= 0.8]);
    }
    if (made.delivery) { L(); L('![delivery rates](delivery.png)'); }
    L();
  }
  if (S['6']) {
    const s = S['6'];
    L(`## 6. Commit-to-arrival latency${took('6')}`);
    L();
    if (!failed('6')) {
      L('| offered rate | events | p50 | p99 | max |');
      L('|---|---|---|---|---|');
      L(`| ${fmt(s.offered)}/s | ${fmt(s.n)} | ${s.p50} ms | ${s.p99} ms | ${s.max} ms |`);
      L();
      L('One node client ingests as close to 1,000/s as it can (each call commits with fsync); measured from the ingest call');
      L('returning to the sink receiving the request. Target: p50 <= 5 ms, p99 <= 50 ms.');
      checks.push(['6. commit-to-arrival p50', `${s.p50} ms`, '<= 5 ms', s.p50 <= 5]);
      checks.push(['6. commit-to-arrival p99', `${s.p99} ms`, '<= 50 ms', s.p99 <= 50]);
    }
    L();
  }
  if (S['7']) {
    const s = S['7'];
    L(`## 7. Rate-limit accuracy${took('7')}`);
    L();
    if (!failed('7')) {
      L('| configured | observed (mean over the window) | ratio | most in any sliding 1 s window | sliding windows over the limit |');
      L('|---|---|---|---|---|');
      L(`| ${s.limit}/s | ${s.observed}/s | ${s.ratio} | ${s.maxSliding} | ${s.windowsOver} of ${fmt(s.windowsChecked)} |`);
      L();
      L(`\`rate_limit_per_sec\` ${s.limit} (burst 1) on an HTTP destination with a backlog of ${fmt(s.backlog)} events (more than`);
      L(`${s.window} s of sends), observed at the sink for the ${s.window} s after its first arrival; one sliding window starts at`);
      L(`each arrival. evpipe spaces sends with a 5% margin, so about ${(s.limit / 1.05).toFixed(1)}/s is the expected mean.`);
      L('Target: 0 windows over the limit.');
      checks.push(['7. sliding 1 s windows over the limit', String(s.windowsOver), '0', s.windowsOver === 0]);
      if (made['rate-limit']) { L(); L('![rate limit](rate-limit.png)'); }
    }
    L();
  }
  if (S['8a'] || S['8b']) {
    L('## 8. Scale');
    L();
  }
  if (S['8a']) {
    const s = S['8a'];
    L(`### Claim cost and delivery rate with pending rows${took('8a')}`);
    L();
    if (!failed('8a')) {
      L('| pending rows (parked) | delivered/s | at the sink | claim ms/call | rows/claim | claim ms per 100 rows | slowest claim | record ms/call | outbox size | built in |');
      L('|---|---|---|---|---|---|---|---|---|---|');
      for (const l of s.levels) {
        L(`| ${fmt(l.pending)} | ${fmt(l.rate)}${l.timedOut ? ` (only ${fmt(l.delivered)} delivered in ${SCALE_TIMEOUT} s)` : ''} | ${fmt(l.sinkRate)}/s | ${fmt(l.claimMsPerCall)} | ${fmt(l.claimRowsPerCall)} | ${fmt(l.claimMsPer100Rows)} | ${fmt(l.claimMaxMs)} ms | ${fmt(l.recordMsPerCall)} | ${fmt(l.outboxMB)} MB | ${fmt(l.makeSeconds)} s |`);
      }
      L();
      L(`A paused destination holds the pending rows (made set-based, then \`VACUUM ANALYZE\` and \`CHECKPOINT\`); another destination then`);
      L(`delivers a fixed batch of ${SCALE_BATCH.toLocaleString('en')} events (ingested in one transaction) to a counting HTTP sink (bench/count-sink.js).`);
      L('"Claim" is the workers\' claim statement (the one with `FOR UPDATE SKIP LOCKED`) and "record" the outcome statement,');
      L('both from pg_stat_statements over that batch (idle ticks included).');
      if (s.warmupSeconds != null) L(`One batch went first, not counted (${fmt(s.warmupSeconds)} s): the first delivery on a fresh cluster also opens the workers' connections and warms the caches.`);
      if (!s.statementsSeen) L('pg_stat_statements did not see the claim statement in this run.');
      const a = s.levels[0];
      const z = s.levels[s.levels.length - 1];
      if (a && z && a !== z && a.claimMsPerCall && z.claimMsPerCall) {
        checks.push([`8. claim cost, ${fmt(z.pending)} vs ${fmt(a.pending)} pending`, `${(z.claimMsPerCall / a.claimMsPerCall).toFixed(1)}x`, 'flat (no number)', null]);
        checks.push([`8. delivered/s, ${fmt(z.pending)} vs ${fmt(a.pending)} pending`, `${(z.rate / a.rate).toFixed(2)}x`, 'flat (no number)', null]);
      }
      if (made.scale) { L(); L('![scale](scale.png)'); }
    }
    L();
  }
  if (S['8b']) {
    const s = S['8b'];
    L(`### Table sizes under churn${took('8b')}`);
    L();
    if (!failed('8b')) {
      const idx = s.samples.length ? Object.keys(s.samples[0].indexesMB) : [];
      const rows = s.samples[0] && s.samples[0].eventRows !== undefined;
      L(`| minute | outbox total | heap | ${idx.map((k) => `${k}`).join(' | ')} | rows | dead rows | autovacuums | delivered | events table |${rows ? ' event rows | events removed | events autovacuums |' : ''} delivered table |${rows ? ' delivered rows |' : ''}`);
      L(`|---|---|---|${idx.map(() => '---').join('|')}|---|---|---|---|---|${rows ? '---|---|---|---|' : '---|'}`);
      for (const x of s.samples) {
        L(`| ${(x.t / 60).toFixed(1)} | ${mb(x.totalMB)} | ${mb(x.heapMB)} | ${idx.map((k) => mb(x.indexesMB[k])).join(' | ')} | ${fmt(x.rows)} | ${fmt(x.dead)} | ${fmt(x.autovacuums)} | ${fmt(x.delivered)} | ${mb(x.eventsMB)} |${rows ? ` ${fmt(x.eventRows)} | ${fmt(x.eventsRemoved)} | ${fmt(x.eventsAutovacuums)} |` : ''} ${mb(x.deliveredMB)} |${rows ? ` ${fmt(x.deliveredRows)} |` : ''}`);
      }
      L();
      const tot = s.samples.map((x) => x.totalMB);
      // samples after the first (t = 0, empty), split in two halves by count
      const warm = s.samples.slice(1);
      const h = Math.floor(warm.length / 2);
      const firstHalfMax = h ? Math.max(...warm.slice(0, h).map((x) => x.totalMB)) : null;
      const secondHalfMax = h ? Math.max(...warm.slice(h).map((x) => x.totalMB)) : null;
      L(`pgbench ingests at ${INGEST_RATE}/s (${LAT_CLIENTS} clients, ${fmt(s.ingestTps)} tps achieved, ${fmt(s.failed)} failed) for ${CHURN_SECS} s while the`);
      L(`workers deliver to the counting sink; the last row is the state after the outbox drained (${fmt(s.drainSeconds)} s after ingest stopped).`);
      L(`Outbox total size: min ${mb(Math.min(...tot))}, max ${mb(Math.max(...tot))}, end ${mb(tot[tot.length - 1])};`);
      if (s.retention) {
        L(`largest over the first half of the samples after t = 0 ${mb(firstHalfMax)}, over the second half ${mb(secondHalfMax)}.`);
        L(`\`evpipe.event_retention\` and \`evpipe.delivered_retention\` are ${s.retention.e} here (BENCH_EVENT_RETENTION): worker 0 removes older events`);
        L('and delivered rows in batches of at most 1,000 rows, so once the first retention period has passed both tables');
        L('should stay flat (their freed space is reused).');
        // the events and delivered tables after the first retention period: the largest size over the
        // first and the second half of the samples taken after it (the last sample, after the drain, too)
        const secs = (v) => { const m = /^(\d+)\s*(s|min|h|d)?$/.exec(String(v).trim()); return m ? Number(m[1]) * ({ s: 1, min: 60, h: 3600, d: 86400 }[m[2] || 's']) : null; };
        const ret = secs(s.retention.e);
        const after = ret ? s.samples.filter((x) => x.t > ret + CHURN_SAMPLE) : [];
        const k = Math.floor(after.length / 2);
        for (const [label, key] of [['events', 'eventsMB'], ['delivered', 'deliveredMB']]) {
          if (k < 1) break;
          const a = Math.max(...after.slice(0, k).map((x) => x[key]));
          const b = Math.max(...after.slice(k).map((x) => x[key]));
          L(`${label} table after the first retention period (+1 sample): largest over the first half of those samples ${mb(a)}, over the second half ${mb(b)}.`);
          checks.push([`8. ${label} table size after the retention period, second half vs first half`, `${(b / a).toFixed(2)}x`, 'bounded (no number)', null]);
        }
      } else {
        L(`largest over the first half of the samples after t = 0 ${mb(firstHalfMax)}, over the second half ${mb(secondHalfMax)}. The events and delivered tables`);
        L('grow by design (events are kept; delivered rows for `evpipe.delivered_retention`).');
      }
      if (firstHalfMax && secondHalfMax !== null) {
        checks.push(['8. outbox size, second half vs first half of the churn', `${(secondHalfMax / firstHalfMax).toFixed(2)}x`, 'bounded (no number)', null]);
      }
      if (made['tables-churn']) { L(); L('![table sizes under churn](tables-churn.png)'); }
      if (made['outbox-churn']) { L(); L('![outbox size under churn](outbox-churn.png)'); }
    }
    L();
  }

  if (S['9']) {
    const s = S['9'];
    L(`## 9. Ordered delivery vs unordered${took('9')}`);
    L();
    if (s.error || !s.ordered) L(`Failed: ${s.error ? s.error.split('\n')[0] : 'no result'}.`);
    else {
      L('| run | events | seconds | delivered/s |');
      L('|---|---|---|---|');
      L(`| unordered | ${fmt(s.unordered.n)} | ${s.unordered.seconds} | ${fmt(s.unordered.rate)} |`);
      L(`| ordered, \`ordering_key\` over ${fmt(s.keys)} keys | ${fmt(s.ordered.n)} | ${s.ordered.seconds} | ${fmt(s.ordered.rate)} |`);
      L();
      L(`${fmt(s.n)} events each, ingested in one transaction, then drained to the same local HTTP sink with default settings; the`);
      L(`ordered run's sink log has ${fmt(s.outOfOrder)} events out of their key's order. Target: ordered >= 0.7x unordered.`);
      checks.push(['9. ordered / unordered delivery', `${s.ratio}x`, '>= 0.7x', s.ratio >= 0.7]);
    }
    L();
  }

  if (S['10']) {
    const s = S['10'];
    L(`## 10. evpiped vs the in-server workers${took('10')}`);
    L();
    if (!failed('10')) {
      const C = s.configs;
      const cpu = (rs, k) => fmt(round(median(rs.map((r) => r[k])), 1));
      const cell = (rs) => `**${fmt(round(median(rs.map((r) => r.rate))))}** (${rs.map((r) => fmt(r.rate)).join(', ')})`;
      L('### 10a, 10b. Delivery throughput, same sinks, same run');
      L();
      L('| configuration | HTTP delivered/s: median (runs) | HTTP CPU ms per 1,000: engine, its sessions, machine | SQS delivered/s: median (runs) | SQS CPU ms per 1,000: engine, its sessions, machine |');
      L('|---|---|---|---|---|');
      for (const k of Object.keys(C)) {
        L(`| ${C[k]} | ${cell(s.http[k])} | ${cpu(s.http[k], 'cpuEngine')}, ${k === 'server' ? '-' : cpu(s.http[k], 'cpuSessions')}, ${cpu(s.http[k], 'cpuMachine')} | ${cell(s.sqs[k])} | ${cpu(s.sqs[k], 'cpuEngine')}, ${k === 'server' ? '-' : cpu(s.sqs[k], 'cpuSessions')}, ${cpu(s.sqs[k], 'cpuMachine')} |`);
      }
      L();
      L(`One cluster for the whole item; before each configuration the server restarts with \`evpipe.workers\` = 2 (in-server workers)`);
      L('or 0 (no worker; 1 or 2 `evpiped run` processes connect as the login role `evpiped`, a member of `evpipe_worker` only,');
      L(`with default flags), then ${fmt(D_WARM)} HTTP and ${fmt(D_WARM)} SQS events are drained uncounted. Each run ingests ${fmt(s.n)} events in one`);
      L('transaction and times the drain from the commit to the last outbox row gone. HTTP goes to bench/count-sink.js, SQS (batches');
      L(`of 10) through the SigV4 proxy to local-aws-sqs. ${s.rounds} rounds, the order of the three configurations rotating each round; the`);
      L('table shows the median and every run in order. Server settings as above (' + s.settings.map((x) => `\`${x}\``).join(', ') + '); a destination\'s');
      L('default `max_in_flight` is half of `evpipe.max_in_flight` per delivering process, so 2 workers and 2 daemons both keep up to 64');
      L('requests in flight per destination, 1 daemon 32. CPU: user + system time from /proc over the drain, per 1,000 events: "engine"');
      L('is the 2 worker processes or the evpiped processes, "its sessions" the server backends of the daemons (the workers run their SQL');
      L('in-process), "machine" everything on the host (server, sink, emulator, this script). Everything shares the 2 cores.');
      L(`Target: 2 evpiped deliver at least as fast as the in-server workers: HTTP ${s.httpRatio}x, SQS ${s.sqsRatio}x (1 evpiped: ${s.httpRatio1}x, ${s.sqsRatio1}x).`);
      checks.push(['10a. HTTP delivery, 2 evpiped / in-server workers', `${s.httpRatio}x (${fmt(s.httpMedian.d2)} vs ${fmt(s.httpMedian.server)}/s)`, '>= 1x', s.httpRatio >= 1]);
      checks.push(['10b. SQS delivery, 2 evpiped / in-server workers', `${s.sqsRatio}x (${fmt(s.sqsMedian.d2)} vs ${fmt(s.sqsMedian.server)}/s)`, '>= 1x', s.sqsRatio >= 1]);
      if (made.daemon) { L(); L('![evpiped vs in-server workers](daemon.png)'); }
      L();
      L(`### 10c. Commit-to-arrival latency at ${s.latRate}/s`);
      L();
      L('| configuration | round | events | offered | p50 | p90 | p99 | max |');
      L('|---|---|---|---|---|---|---|---|');
      for (const k of Object.keys(s.lat)) {
        s.lat[k].forEach((r, i) => L(`| ${C[k]} | ${i + 1} | ${fmt(r.n)} | ${fmt(r.offered)}/s | ${r.p50} ms | ${r.p90} ms | ${r.p99} ms | ${r.max} ms |`));
      }
      L();
      L(`One node client ingests ${s.latRate} events/s for ${s.latSeconds} s (each call commits with fsync) to an HTTP destination on`);
      L('test/peers/http-sink.js (it records each request\'s arrival; count-sink only counts); measured from the ingest call returning to');
      L('the sink receiving the request. The in-server workers are woken through a latch at commit; the daemons by `NOTIFY evpipe_wake`');
      L(`from the notifier (at most one per 2 ms). ${s.lat.server.length} rounds (in-server then 2 evpiped, then the other way round).`);
      L('No target in the issue (item 6 asks p50 <= 5 ms, p99 <= 50 ms at ~1,000/s of the workers).');
      checks.push(['10c. commit-to-arrival, 2 evpiped (median of rounds)', `p50 ${s.latMedian.d2.p50} ms, p99 ${s.latMedian.d2.p99} ms`, 'none (in-server: ' + `p50 ${s.latMedian.server.p50} ms, p99 ${s.latMedian.server.p99} ms)`, null]);
      L();
      L('### 10d. Ingest while delivering');
      L();
      L('| run | tps per round | mean tps | delivered during the run | pending at its end |');
      L('|---|---|---|---|---|');
      const IL = { paused: 'reference: destination paused (nothing delivered)', server: 'in-server workers deliver', d2: '2 evpiped deliver',
        notify: 'reference: 2 evpiped, and a `pg_notify(\'evpipe_wake\', \'\')` in every ingest transaction' };
      for (const k of Object.keys(IL)) {
        const rs = s.ingest[k] || [];
        L(`| ${IL[k]} | ${rs.map((r) => fmt(r.tps)).join(', ')} | ${fmt(s.ingestMean[k])} | ${rs.map((r) => fmt(r.deliveredDuring)).join(', ')} | ${rs.map((r) => fmt(r.pendingAtEnd)).join(', ')} |`);
      }
      L();
      L(`pgbench, 2 clients, ${s.ingestSeconds} s per run, one \`SELECT evpipe.ingest(...)\` per transaction (item 1's script), while the events`);
      L('are delivered to bench/count-sink.js; the NOTIFY reference adds `pg_notify(\'evpipe_wake\', \'\')` to the same statement, what');
      L('producers would pay if they woke the daemons themselves (the notification queue\'s lock is held from before the commit');
      L('to its end, so notifying commits do not overlap). Rounds: in-server then daemons, then the other way round.');
      L(`Target: ingest with 2 evpiped >= 0.95x ingest with the in-server workers: ${s.ingestRatio}x. A NOTIFY in every ingest: ${s.notifyRatio}x the`);
      L('ingest rate with the notifier (both with 2 evpiped).');
      checks.push(['10d. ingest tps, 2 evpiped / in-server workers', `${s.ingestRatio}x (${fmt(s.ingestMean.d2)} vs ${fmt(s.ingestMean.server)})`, '>= 0.95x', s.ingestRatio >= 0.95]);
      checks.push(['10d. ingest tps, NOTIFY per commit / the notifier (reference)', `${s.notifyRatio}x`, 'none', null]);
      if (s.daemonErrors) { L(); L(`The evpiped logs have ${fmt(s.daemonErrors)} ERROR/FATAL lines.`); }
    }
    L();
  }

  if (S['11']) {
    const s = S['11'];
    L(`## 11. Managed install: ingest in PL/pgSQL${took('11')}`);
    L();
    if (s.error || !s.single) L(`Failed: ${s.error ? s.error.split('\n')[0] : 'no result'}.`);
    else {
      L('One event per transaction (pgbench, transactions per second, two rounds in alternating order):');
      L();
      L('| clients | bare INSERT | extension ingest | managed ingest | managed / extension | managed / bare |');
      L('|---|---|---|---|---|---|');
      for (const r of s.single) L(`| ${r.clients} | ${fmt(r.bare)} | ${fmt(r.extension)} | ${fmt(r.managed)} | ${r.managedVsExtension}x | ${r.managedVsBare}x |`);
      L();
      L('Batched, 2 clients (events per second):');
      L();
      L('| method | events/s |');
      L('|---|---|');
      for (const b of s.batched) L(`| ${b.method} | ${fmt(b.eps)} |`);
      L();
      L('The same schema and routing (one paused destination) in two databases of one cluster: `postgres` with the');
      L('extension, `managed` installed by `evpiped migrate`. Target: managed ingest >= 0.5x the extension\'s.');
      for (const r of s.single) checks.push([`11. managed / extension ingest, ${r.clients} client${r.clients > 1 ? 's' : ''}`, `${r.managedVsExtension}x`, '>= 0.5x', r.managedVsExtension >= 0.5]);
      checks.push(['11. managed / extension ingest_batch', `${s.batchedVsExtension}x`, '>= 0.5x', s.batchedVsExtension >= 0.5]);
    }
    L();
  }

  if (S['12']) {
    const s = S['12'];
    L(`## 12. Where ingest's time and WAL go${took('12')}`);
    L();
    if (s.error || !s.wal) L(`Failed: ${s.error ? s.error.split('\n')[0] : 'no result'}.`);
    else {
      L(`WAL per event (\`pg_current_wal_insert_lsn()\` differences over ${BD_SINGLE} transactions of one event, then ${BD_BATCHES} batches of 1,000; after a warm-up and a checkpoint), and table plus index bytes per event over the batches:`);
      L();
      L('| method | WAL bytes/event, one per transaction | WAL bytes/event, batched | table + index bytes/event, batched |');
      L('|---|---|---|---|');
      for (const r of s.wal) L(`| ${r.method} | ${fmt(r.walSingle)} | ${fmt(r.walBatched)} | ${fmt(r.bytesBatched)} |`);
      L();
      L('The indexes an ingest writes into (events and outbox; a partial one only when its predicate holds):');
      L();
      for (const i of s.indexes) L(`- ${i.table}: \`${i.def}\``);
      L();
      L(`Time per event of each step, 1,000 events in one statement (median of ${BD_ROUNDS}; includes building the events):`);
      L();
      L('| step | µs per event |');
      L('|---|---|');
      for (const r of s.steps) L(`| ${r.step} | ${fmt(r.usPerEvent)} |`);
      if (s.floor) {
        L();
        L(`What each write costs: batches of 1,000 from 2 clients, commits included (pgbench), in fresh databases of this cluster, evpipe as installed and then without its indexes one after another (a measurement: nothing delivers from those databases); the bare INSERT and PgQ in the same run; ${s.floorRounds} rounds of ${s.floorSecs} s in which every variant runs once in turn, the median of each (every run in the last column):`);
        L();
        L('| ingest_batch of 1,000, or the reference | events/s | vs bare INSERT | vs PgQ | runs |');
        L('|---|---|---|---|---|');
        const bare = s.floor.find((r) => r.label.startsWith('bare'));
        const pq = s.floor.find((r) => r.label.startsWith('pgq'));
        for (const r of s.floor) {
          L(`| ${r.label} | ${fmt(r.eps)} | ${bare ? `${round(r.eps / bare.eps, 2)}x` : '-'} | ${pq ? `${round(r.eps / pq.eps, 2)}x` : '-'} | ${(r.runs || []).map(fmt).join(', ')} |`);
        }
        if (s.floor.some((r) => r.label.startsWith('the event row'))) {
          L();
          L(`The rows from "the event row alone" on are not ingest: they write evpipe.events rows by plain SQL (copies of a stored event under new eventIds), no checks, no outbox row, to measure what a write path that keeps only the event row with its dedup key in the producer's transaction could reach at best.${s.floorDeferred && s.floorDeferred.producers.length ? ` The last two measure a deferred fan-out: the same row with its destinations and its transaction's xid8, and then the same producers while one more session makes the outbox rows from new event rows (a cursor on the xid8 below the snapshot's xmin, every 5 ms), as the engine of such a design would on the same cores; their row gives the outbox rows made per second, the rate that holds (the producers ran at ${s.floorDeferred.producers.map(fmt).join(', ')} events/s, and left ${s.floorDeferred.backlog.map(fmt).join(', ')} event rows not yet made into outbox rows at the end of each round).` : ''}`);
        }
      }
      if (s.floorSingle) {
        L();
        L(`The same, one event per transaction (item 1's shape, but prepared statements: the write is measured, not the parsing of its text), 1 and 2 clients, each variant in a fresh database of its own, ${s.floorRounds} rounds of ${s.floorSecs} s in turn, medians (tps):`);
        L();
        L('| one event per transaction | clients | tps | vs bare INSERT | runs |');
        L('|---|---|---|---|---|');
        for (const g of s.floorSingle) {
          const bare = g.rows.find((r) => r.label.startsWith('bare'));
          for (const r of g.rows) L(`| ${r.label} | ${g.clients} | ${fmt(r.tps)} | ${bare ? `${round(r.tps / bare.tps, 2)}x` : '-'} | ${r.runs.map(fmt).join(', ')} |`);
        }
      }
    }
    L();
  }

  L('## Targets (mechanical)');
  L();
  L('| item | measured | target | met |');
  L('|---|---|---|---|');
  for (const [item, v, t, met] of checks) L(`| ${item} | ${v} | ${t} | ${met === null ? '-' : met ? 'yes' : '**no**'} |`);
  const errs = Object.entries(S).filter(([, s]) => s.error).map(([k]) => k);
  if (errs.length) { L(); L(`Items that failed to run: ${errs.join(', ')}.`); }
  if (R.plotsSkipped) { L(); L(`Plots: not drawn (${R.plotsSkipped}).`); }
  L();
  L('## Analysis');
  L();
  L(readAnalysis());
  L();
  return md.join('\n');
}

function readAnalysis() {
  const dflt = `${ANALYSIS_BEGIN}\n\n(Not written yet: explain the numbers above here. bench/run keeps this block from one run to the\nnext, so check it against the new numbers after each run.)\n\n${ANALYSIS_END}`;
  try {
    const old = fs.readFileSync(path.join(OUT, 'results.md'), 'utf8');
    const a = old.indexOf(ANALYSIS_BEGIN);
    const b = old.indexOf(ANALYSIS_END);
    if (a >= 0 && b > a) return old.slice(a, b + ANALYSIS_END.length);
  } catch (e) { /* first run */ }
  return dflt;
}

// Item 9: ordered delivery (ordering_key, 1,000 keys) against unordered delivery,
// the same number of events to the same sink in the same run, one after the other.
async function orderingItem() {
  if (!want('9')) return;
  const pg = await cluster();
  const sink = await startPeer('http-sink');
  const KEYS = 1000;
  try {
    await describe(pg);
    await section('9', `Ordered delivery (${KEYS.toLocaleString('en')} keys) vs unordered, same sink`, async (S) => {
      await pg.query(`SELECT evpipe.register_event_type('BENCH_ORD', '{"type": "object"}')`);
      await pg.query(`SELECT evpipe.register_event_type('BENCH_UNORD', '{"type": "object"}')`);
      await pg.query(`SELECT evpipe.create_destination('bench-unordered', 'http', $1::jsonb)`, [JSON.stringify({ url: `${sink.url}/u` })]);
      await pg.query(`SELECT evpipe.create_destination('bench-ordered', 'http', $1::jsonb)`,
        [JSON.stringify({ url: `${sink.url}/o`, ordering_key: 'payload.k' })]);
      await pg.query("SELECT evpipe.add_route('BENCH_UNORD', 'bench-unordered')");
      await pg.query("SELECT evpipe.add_route('BENCH_ORD', 'bench-ordered')");
      const run = async (type, dest, prefix) => {
        await pg.query(`SELECT count(evpipe.ingest(jsonb_build_object('eventId', '${prefix}-' || g, 'eventType', '${type}',
          'source', 'bench', 'payload', jsonb_build_object('n', g, 'k', 'key-' || (g % ${KEYS})), 'timestamp', '2026-11-21T10:00:00Z')))
          FROM generate_series(1, ${HTTP_N}) g`);
        const d = await drain(pg, dest, 600000);
        const n = (await pg.query('SELECT count(*)::int AS n FROM evpipe.delivered WHERE destination = $1', [dest]))[0].n;
        return { n, seconds: round(d.seconds, 2), rate: round(n / d.seconds), timedOut: d.timedOut };
      };
      S.n = HTTP_N;
      S.keys = KEYS;
      S.unordered = await run('BENCH_UNORD', 'bench-unordered', 'u');
      S.ordered = await run('BENCH_ORD', 'bench-ordered', 'o');
      // every key's events arrived one at a time, in ingest order
      const got = await sink.control('GET', '/_control/requests?path=/o');
      const last = new Map();
      S.outOfOrder = 0;
      for (const r of got.sort((a, b) => a.seq - b.seq)) {
        const b = JSON.parse(r.body);
        if ((last.get(b.payload.k) || 0) > b.payload.n) S.outOfOrder++;
        last.set(b.payload.k, b.payload.n);
      }
      S.ratio = round(S.ordered.rate / S.unordered.rate, 2);
      log(`   unordered ${S.unordered.rate}/s, ordered ${S.ordered.rate}/s (${KEYS} keys): ratio ${S.ratio}; out of order: ${S.outOfOrder}`);
    });
  } finally {
    await pg.stop();
    await sink.stop();
  }
}


// ---------------------------------------------------------------- 11
// Item 11 (issue #15): ingest in the managed install (PL/pgSQL twins, installed
// by evpiped migrate into a second database of the same cluster) against the
// extension's ingest and a bare INSERT, same schema, same run, rounds alternating.
async function managedItem() {
  if (!want('11')) return;
  const pg = await cluster();
  try {
    await describe(pg);
    await section('11', 'Managed install: ingest in PL/pgSQL vs the extension vs a bare INSERT', async (S) => {
      const { runEvpiped } = require('../test/e2e/lib/daemon');
      await pg.query('CREATE ROLE owner LOGIN CREATEROLE');
      await pg.query('CREATE DATABASE managed OWNER owner');
      const r = runEvpiped(['migrate', '--dsn', `host=127.0.0.1 port=${pg.port} dbname=managed user=owner`], { timeoutMs: 120000 });
      if (r.status !== 0) throw new Error(`evpiped migrate: ${r.stderr}`);
      const { Client } = require('../test/peers/node_modules/pg');
      const m = new Client({ host: '127.0.0.1', port: pg.port, user: 'postgres', database: 'managed' });
      await m.connect();
      const setup = [`SELECT evpipe.register_event_type('BENCH', '{"type": "object", "required": ["n"],
        "properties": {"n": {"type": "integer"}, "note": {"type": "string", "maxLength": 200}}}')`,
        `SELECT evpipe.create_destination('bench-off', 'http', '{"url": "http://127.0.0.1:9/"}')`,
        "SELECT evpipe.pause_destination('bench-off')",
        "SELECT evpipe.add_route('BENCH', 'bench-off')"];
      for (const sql of setup) {
        await pg.query(sql);
        await m.query(sql);
      }
      await m.end();
      await pg.query('CREATE TABLE bare (event_id text PRIMARY KEY, event jsonb NOT NULL)');
      const one = { bare: ['postgres', `INSERT INTO bare VALUES (gen_random_uuid()::text, ${ev("'x'")});`],
        extension: ['postgres', `SELECT evpipe.ingest(${ev('gen_random_uuid()::text')});`],
        managed: ['managed', `SELECT evpipe.ingest(${ev('gen_random_uuid()::text')});`] };
      S.single = [];
      for (const c of [1, 2]) {
        const row = { clients: c, bare: 0, extension: 0, managed: 0 };
        // two rounds, the second in the opposite order; tps summed
        for (const order of [['bare', 'extension', 'managed'], ['managed', 'extension', 'bare']]) {
          for (const k of order) row[k] += (await pgbench(pg, one[k][1], { clients: c, db: one[k][0] })).tps / 2;
        }
        for (const k of ['bare', 'extension', 'managed']) row[k] = round(row[k]);
        row.managedVsExtension = round(row.managed / row.extension, 2);
        row.managedVsBare = round(row.managed / row.bare, 2);
        S.single.push(row);
        log(`   ${JSON.stringify(row)}`);
      }
      const arr = `(SELECT jsonb_agg(${ev('gen_random_uuid()::text')}) FROM generate_series(1, 1000) g)`;
      const batch = async (db, sql) => round((await pgbench(pg, sql, { clients: 2, db })).tps * 1000);
      S.batched = [
        { method: 'bare INSERT ... SELECT of 1,000 rows', key: 'bare',
          eps: await batch('postgres', `INSERT INTO bare SELECT gen_random_uuid()::text, ${ev("'x'")} FROM generate_series(1, 1000) g;`) },
        { method: 'extension: ingest_batch of 1,000', key: 'extension', eps: await batch('postgres', `SELECT jsonb_array_length(evpipe.ingest_batch(${arr}));`) },
        { method: 'managed: ingest_batch of 1,000', key: 'managed', eps: await batch('managed', `SELECT jsonb_array_length(evpipe.ingest_batch(${arr}));`) },
        { method: 'extension: 1,000 ingest calls in one statement', key: 'extension_calls',
          eps: await batch('postgres', `SELECT count(evpipe.ingest(${ev('gen_random_uuid()::text')})) FROM generate_series(1, 1000) g;`) },
        { method: 'managed: 1,000 ingest calls in one statement', key: 'managed_calls',
          eps: await batch('managed', `SELECT count(evpipe.ingest(${ev('gen_random_uuid()::text')})) FROM generate_series(1, 1000) g;`) },
      ];
      const eps = Object.fromEntries(S.batched.map((x) => [x.key, x.eps]));
      S.batchedVsExtension = round(eps.managed / eps.extension, 2);
      S.callsVsExtension = round(eps.managed_calls / eps.extension_calls, 2);
      for (const x of S.batched) log(`   ${x.method}: ${x.eps} events/s`);
    });
  } finally {
    await pg.stop();
  }
}

// ---------------------------------------------------------------- 12
// Item 12 (issue #17): where ingest's time and WAL go, against a bare INSERT and
// PgQ, in one cluster: WAL bytes per event (one event per transaction, and in
// batches of 1,000), table and index bytes per event, the indexes written, and
// the time per event of each step of ingest run on its own (1,000 in one
// statement, no commit in the time).
const BD_SINGLE = 500;      // transactions of one event, per method
const BD_BATCHES = 10;      // batches of 1,000, per method
const BD_ROUNDS = 7;        // timed statements per step (the median is kept)
const FLOOR_ROUNDS = 3;     // rounds of the index-by-index runs (the median is kept) ...
const FLOOR_SECS = Math.max(5, Math.round(SECS / 2));   // ... of this many seconds each
async function breakdownItem() {
  if (!want('12')) return;
  const pg = await cluster();
  try {
    await describe(pg);
    await section('12', 'Where ingest\'s time and WAL go (vs a bare INSERT and PgQ)', async (S) => {
      const schema = '{"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}, "note": {"type": "string", "maxLength": 200}}}';
      await pg.query(`SELECT evpipe.register_event_type('BENCH', '${schema}')`);
      await pg.query(`SELECT evpipe.create_destination('bench-off', 'http', '{"url": "http://127.0.0.1:9/"}')`);
      await pg.query("SELECT evpipe.pause_destination('bench-off')");
      await pg.query("SELECT evpipe.add_route('BENCH', 'bench-off')");
      await pg.query('CREATE TABLE bare (event_id text PRIMARY KEY, event jsonb NOT NULL)');
      let pgq = false;
      try {
        await pg.query('CREATE EXTENSION pgq');
        await pg.query("SELECT pgq.create_queue('bench')");
        pgq = true;
      } catch (e) { /* PgQ not installed */ }
      const lsn = async () => (await pg.query('SELECT pg_current_wal_insert_lsn()::text AS l'))[0].l;
      const walSince = async (a) => Number((await pg.query(`SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '${a}') AS d`))[0].d);
      const sizes = async () => (await pg.query(`SELECT
          (SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c WHERE c.oid IN ('evpipe.events'::regclass, 'evpipe.outbox'::regclass))::bigint AS evpipe,
          pg_total_relation_size('bare')::bigint AS bare,
          ${pgq ? "(SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pgq' AND c.relname LIKE 'event\\_%' AND c.relkind = 'r')::bigint" : 'NULL::bigint'} AS pgq`))[0];
      const methods = {
        bare: { single: `INSERT INTO bare VALUES (gen_random_uuid()::text, ${ev("'x'")})`,
          batch: `INSERT INTO bare SELECT gen_random_uuid()::text, ${ev("'x'")} FROM generate_series(1, 1000) g` },
        evpipe: { single: `SELECT evpipe.ingest(${ev('gen_random_uuid()::text')})`,
          batch: `SELECT jsonb_array_length(evpipe.ingest_batch((SELECT jsonb_agg(${ev('gen_random_uuid()::text')}) FROM generate_series(1, 1000) g)))` },
        ...(pgq ? { pgq: { single: `SELECT pgq.insert_event('bench', 'BENCH', (${ev('gen_random_uuid()::text')})::text)`,
          batch: `SELECT count(pgq.insert_event('bench', 'BENCH', (${ev('gen_random_uuid()::text')})::text)) FROM generate_series(1, 1000) g` } } : {}),
      };
      // warm every table and index first, then a checkpoint: what follows
      // pays its full-page images alike
      for (const m of Object.values(methods)) { await pg.query(m.batch); await pg.query(m.single); }
      await pg.query('CHECKPOINT');
      for (const m of Object.values(methods)) { await pg.query(m.batch); await pg.query(m.single); }
      S.wal = [];
      for (const [name, m] of Object.entries(methods)) {
        let a = await lsn();
        for (let i = 0; i < BD_SINGLE; i++) await pg.query(m.single);
        const single = (await walSince(a)) / BD_SINGLE;
        const s0 = await sizes();
        a = await lsn();
        for (let i = 0; i < BD_BATCHES; i++) await pg.query(m.batch);
        const batched = (await walSince(a)) / (BD_BATCHES * 1000);
        const s1 = await sizes();
        S.wal.push({ method: name, walSingle: round(single), walBatched: round(batched),
          bytesBatched: s1[name] === null ? null : round((s1[name] - s0[name]) / (BD_BATCHES * 1000)) });
        log(`   ${JSON.stringify(S.wal[S.wal.length - 1])}`);
      }
      S.indexes = (await pg.query(`SELECT c.relname AS "table", i.relname AS "index", pg_get_indexdef(i.oid) AS def
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
        WHERE c.oid IN ('evpipe.events'::regclass, 'evpipe.outbox'::regclass) ORDER BY 1, 2`));
      // the steps, 1,000 at a time in one statement; a statement that only
      // builds the events is the floor every other row includes
      const payload = "jsonb_build_object('n', 1, 'note', 'a benchmark event')";
      const steps = [
        ['build 1,000 events (the floor)', `SELECT count(${ev('gen_random_uuid()::text')}) FROM generate_series(1, 1000) g`],
        ['evpipe.validate(schema, payload): the validator alone', `SELECT count(evpipe.validate('${schema}', ${payload})) FROM generate_series(1, 1000) g`],
        ['evpipe.route_explain(event): checks, validation, routing, no write', `SELECT count(evpipe.route_explain(${ev('gen_random_uuid()::text')})) FROM generate_series(1, 1000) g`],
        ['evpipe.ingest(event), 1,000 calls', `SELECT count(evpipe.ingest(${ev('gen_random_uuid()::text')})) FROM generate_series(1, 1000) g`],
        ['evpipe.ingest_batch of 1,000', methods.evpipe.batch],
        ['bare INSERT ... SELECT of 1,000', methods.bare.batch],
        ...(pgq ? [['pgq.insert_event, 1,000 calls', methods.pgq.batch]] : []),
      ];
      S.steps = [];
      for (const [label, sql] of steps) {
        const t = [];
        for (let i = 0; i < BD_ROUNDS; i++) {
          const t0 = performance.now();
          await pg.query(sql);
          t.push(performance.now() - t0);
        }
        S.steps.push({ step: label, usPerEvent: round(median(t), 1) });   // ms per 1,000 = µs per event
        log(`   ${label}: ${round(median(t), 1)} µs/event`);
      }
      // what each write costs: batches of 1,000 from 2 clients (commits
      // included), in fresh databases of this cluster, evpipe as installed
      // and then with its indexes taken away one after another (a
      // measurement only: nothing delivers from those databases), down to
      // the dedup key alone; the bare INSERT and PgQ in the same run
      const { Client } = require('../test/peers/node_modules/pg');
      const drops = [
        ['evpipe 0.4.0 (a unique B-tree on (event_id, destination) where 0.5.0 has the hash index)', [], '0.4.0'],
        ['evpipe as installed', []],
        ['without outbox_pkey (outcomes find a row by id)', ['ALTER TABLE evpipe.outbox DROP CONSTRAINT outbox_pkey']],
        ['and without events_ingested_at (retention)', ['DROP INDEX evpipe.events_ingested_at']],
        ['and without outbox_due (claims)', ['DROP INDEX evpipe.outbox_due']],
        ['and without the outbox\'s index on event_id: the dedup key alone', ['DROP INDEX evpipe.outbox_event_id']],
      ];
      // every variant in a database of its own, built first; then rounds in
      // which each runs once, in turn (the machine drifts, and the tables
      // grow: a variant measured last would pay for both); the median kept
      const steps0 = [`SELECT evpipe.register_event_type('BENCH', '${schema}')`,
        `SELECT evpipe.create_destination('bench-off', 'http', '{"url": "http://127.0.0.1:9/"}')`,
        "SELECT evpipe.pause_destination('bench-off')", "SELECT evpipe.add_route('BENCH', 'bench-off')"];
      const variants = [['bare INSERT (one row, its primary key)', 'postgres', methods.bare.batch],
        ...(pgq ? [['pgq.insert_event', 'postgres', methods.pgq.batch]] : [])];
      const done = [];
      for (const [i, [label, sqls, version]] of drops.entries()) {
        if (!version) done.push(...sqls);
        const db = `floor_${i}`;
        await pg.query(`CREATE DATABASE ${db}`);
        const c = new Client({ host: '127.0.0.1', port: pg.port, user: 'postgres', database: db });
        await c.connect();
        try {
          await c.query(version ? `CREATE EXTENSION evpipe VERSION '${version}'` : 'CREATE EXTENSION evpipe');
          for (const sql of [...steps0, ...(version ? [] : done)]) await c.query(sql);
          for (let k = 0; k < 3; k++) await c.query(methods.evpipe.batch);   // warm
        } finally { await c.end(); }
        variants.push([label, db, methods.evpipe.batch]);
      }
      // the floor of any write path that keeps the contract: the event row
      // with its dedup key, written in the producer's transaction; here by
      // plain SQL into evpipe.events (a copy of a stored event under a new
      // eventId: the same row shape and size), no checks, no routing, no
      // outbox row: what ingest would write if destinations read new events
      // from the events table
      const row = (id) => `(SELECT e.event FROM evpipe.events e LIMIT 1) || jsonb_build_object('eventId', ${id})`;
      const rowInsert = (ids, conflict, dests = false) => `INSERT INTO evpipe.events (event_id, event_type, schema_version, source,
          event_time, traceparent, event, ingested_by${dests ? ', fanout' : ''})
        SELECT g.id, 'BENCH', 1, 'bench', '2026-11-21T10:00:00Z', '00-' || md5(g.id) || '-' || left(md5(g.id || 's'), 16) || '-01',
          ${row('g.id')}, current_user${dests ? ", '{bench-off}'" : ''} FROM (SELECT gen_random_uuid()::text AS id FROM ${ids}) g${conflict ? ' ON CONFLICT (event_id) DO NOTHING' : ''}`;
      // a deferred fan-out (the event-row-only design of the analysis, with
      // its read side's writes): the event row carries its destinations and
      // its transaction's xid8, indexed in place of events_ingested_at, and
      // no outbox row; one more session makes the outbox rows from new event
      // rows by a cursor on that xid8 (all transactions below the snapshot's
      // xmin are over), every 5 ms, as the engine of such a design would.
      // On 2 cores its writes compete with the producers: the rate that
      // holds is the rate the outbox rows are made at
      const deferredShape = ['ALTER TABLE evpipe.events ADD COLUMN fanout text[],'
        + ' ADD COLUMN ingest_xid xid8 NOT NULL DEFAULT pg_current_xact_id()',
      'DROP INDEX evpipe.events_ingested_at', 'CREATE INDEX events_ingest_xid ON evpipe.events (ingest_xid)',
      'CREATE TABLE fanout_cursor (x xid8 NOT NULL)', 'INSERT INTO fanout_cursor SELECT pg_snapshot_xmin(pg_current_snapshot())'];
      const materialise = `WITH c AS (SELECT x FROM fanout_cursor FOR UPDATE), s AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS h),
        o AS (INSERT INTO evpipe.outbox (event_id, destination) SELECT e.event_id, d.d
          FROM c, s, evpipe.events e, pg_catalog.unnest(e.fanout) AS d(d)
          WHERE e.ingest_xid >= c.x AND e.ingest_xid < s.h ORDER BY e.ingest_xid RETURNING 1)
        UPDATE fanout_cursor SET x = s.h FROM s WHERE (SELECT count(*) FROM o) >= 0`;
      const backlogSql = 'SELECT count(*)::int AS n FROM evpipe.events e, fanout_cursor c WHERE e.ingest_xid >= c.x';
      const rows1000 = rowInsert('generate_series(1, 1000)', false);
      const rows1000Deferred = rowInsert('generate_series(1, 1000)', false, true);
      const rowDbs = [['the event row alone, by plain SQL (no checks, no outbox): evpipe.events with its two indexes', [], rows1000],
        ['and without events_ingested_at: the event row and its dedup key', ['DROP INDEX evpipe.events_ingested_at'], rows1000],
        ['a deferred fan-out, by plain SQL: the event row with its destinations and an xid8 (indexed in place of events_ingested_at), no outbox row, nothing making them', deferredShape, rows1000Deferred],
        ['the same, while one more session makes their outbox rows: the rate the outbox rows are made at', deferredShape, rows1000Deferred, materialise]];
      for (const [i, [label, sqls, insert, mat]] of rowDbs.entries()) {
        const db = `floor_row_${i}`;
        await pg.query(`CREATE DATABASE ${db}`);
        const c = new Client({ host: '127.0.0.1', port: pg.port, user: 'postgres', database: db });
        await c.connect();
        try {
          await c.query('CREATE EXTENSION evpipe');
          for (const sql of [...steps0, ...sqls]) await c.query(sql);
          await c.query(methods.evpipe.batch);   // the stored event the rows copy
          await c.query('DELETE FROM evpipe.outbox');
          for (let k = 0; k < 3; k++) await c.query(insert);   // warm
          if (mat) await c.query(materialise);
        } finally { await c.end(); }
        variants.push([label, db, insert, mat]);
      }
      await pg.query('CHECKPOINT');
      const eps = variants.map(() => []);
      S.floorDeferred = { producers: [], backlog: [] };
      for (let r = 0; r < FLOOR_ROUNDS; r++) {
        for (const [k, [label, db, sql, mat]] of variants.entries()) {
          if (!mat) {
            const x = round((await pgbench(pg, `${sql};`, { clients: 2, db, seconds: FLOOR_SECS })).tps * 1000);
            eps[k].push(x);
            log(`   floor round ${r + 1}: ${label}: ${x} events/s`);
            continue;
          }
          // the producers and the materialiser side by side; the rate kept
          // is the outbox rows made in the window
          const c = new Client({ host: '127.0.0.1', port: pg.port, user: 'postgres', database: db });
          await c.connect();
          try {
            const count = async () => (await c.query('SELECT count(*)::int AS n FROM evpipe.outbox')).rows[0].n;
            const o0 = await count();
            const m = pgbench(pg, `${mat};\n\\sleep 5 ms\n`, { clients: 1, db, seconds: FLOOR_SECS });
            const p = round((await pgbench(pg, `${sql};`, { clients: 2, db, seconds: FLOOR_SECS })).tps * 1000);
            await m;
            const made = round((await count() - o0) / FLOOR_SECS);
            const left = (await c.query(backlogSql)).rows[0].n;
            eps[k].push(made);
            S.floorDeferred.producers.push(p);
            S.floorDeferred.backlog.push(left);
            log(`   floor round ${r + 1}: ${label}: ${made} events/s made (producers ${p} events/s, ${left} left)`);
            // the next round starts with nothing left to make
            while ((await c.query(backlogSql)).rows[0].n > 0) await c.query(materialise);
          } finally { await c.end(); }
        }
      }
      S.floor = variants.map(([label], k) => ({ label, eps: round(median(eps[k])), runs: eps[k] }));
      S.floorSecs = FLOOR_SECS;
      S.floorRounds = FLOOR_ROUNDS;
      // the same floor one event per transaction (item 1's shape), 1 and 2
      // clients: the bare INSERT, PgQ, evpipe.ingest, the event row alone
      // (with ON CONFLICT DO NOTHING, as a single ingest needs for
      // concurrent dedup, and without); each in a fresh database of its own
      // (a random key's B-tree costs more as it grows: the batches above
      // left millions of rows), prepared statements (the row's INSERT is
      // longer to parse and plan than a function call: the write is what is
      // measured), rounds in turn, medians
      const fresh = async (db, sqls) => {
        await pg.query(`CREATE DATABASE ${db}`);
        const c = new Client({ host: '127.0.0.1', port: pg.port, user: 'postgres', database: db });
        await c.connect();
        try { for (const sql of sqls) await c.query(sql); } finally { await c.end(); }
      };
      const evpipeDb = ['CREATE EXTENSION evpipe', ...steps0];
      const rowDb = [...evpipeDb, methods.evpipe.single, 'DELETE FROM evpipe.outbox'];
      const singles = [['bare INSERT (one row, its primary key)', ['CREATE TABLE bare (event_id text PRIMARY KEY, event jsonb NOT NULL)'], methods.bare.single],
        ...(pgq ? [['pgq.insert_event', ['CREATE EXTENSION pgq', "SELECT pgq.create_queue('bench')"], methods.pgq.single]] : []),
        ['evpipe.ingest, as installed', evpipeDb, methods.evpipe.single],
        ['the event row alone, ON CONFLICT (event_id) DO NOTHING', rowDb, rowInsert('(VALUES (1)) v', true)],
        ['the event row alone, a plain INSERT', rowDb, rowInsert('(VALUES (1)) v', false)]];
      for (const [k, [, sqls]] of singles.entries()) await fresh(`floor_single_${k}`, sqls);
      await pg.query('CHECKPOINT');
      S.floorSingle = [];
      for (const clients of [1, 2]) {
        const tps = singles.map(() => []);
        for (let r = 0; r < FLOOR_ROUNDS; r++) {
          for (const [k, [label, , sql]] of singles.entries()) {
            const x = round((await pgbench(pg, `${sql};`, { clients, db: `floor_single_${k}`, seconds: FLOOR_SECS, mode: 'prepared' })).tps);
            tps[k].push(x);
            log(`   single floor, ${clients} client(s), round ${r + 1}: ${label}: ${x} tps`);
          }
        }
        S.floorSingle.push({ clients, rows: singles.map(([label], k) => ({ label, tps: round(median(tps[k])), runs: tps[k] })) });
      }
      for (let k = 0; k < singles.length; k++) await pg.query(`DROP DATABASE floor_single_${k}`);
      for (let i = 0; i < drops.length; i++) await pg.query(`DROP DATABASE floor_${i}`);
      for (let i = 0; i < rowDbs.length; i++) await pg.query(`DROP DATABASE floor_row_${i}`);
    });
  } finally {
    await pg.stop();
  }
}

// ---------------------------------------------------------------- 10
// Item 10 (issue #14): evpiped against the in-server workers, in one run on one
// cluster, to the same sinks. Between configurations the server restarts:
// evpipe.workers = 2 (the in-server workers) or 0 (no worker; 1 or 2 evpiped
// processes as the login role evpiped, a member of evpipe_worker only).
const D_N = HTTP_N;         // events per throughput run (10a, 10b)
const D_WARM = 2000;        // events drained after each switch, not counted
const D_ROUNDS = 3;         // throughput rounds (10a, 10b), the order of the configurations rotating
const D_LAT_RATE = 200;     // commit-to-arrival (10c): events/s ...
const D_LAT_SECS = 20;      // ... for this long
const D_INGEST_ROUNDS = 2;  // rounds of 10c/10d, the second in the opposite order
const D_CONFIGS = { server: 'in-server workers (2)', d1: '1 evpiped', d2: '2 evpiped' };

// user and system CPU seconds of some processes (/proc/PID/stat), and of the whole machine (/proc/stat)
const CLK_TCK = 100;
function procCpu(pids) {
  let t = 0;
  for (const pid of pids) {
    try {
      const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      t += (Number(f[11]) + Number(f[12])) / CLK_TCK;   // utime, stime (fields 14, 15)
    } catch (e) { /* gone */ }
  }
  return t;
}
function machineCpu() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / CLK_TCK;   // user nice system irq softirq steal
}
const median = (a) => { const s = [...a].sort((x, y) => x - y); return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : null; };
const mean = (a) => (a.length ? a.reduce((x, y) => x + y, 0) / a.length : null);

async function daemonItem() {
  if (!want('10')) return;
  // host: 'server' whatever EVPIPE_E2E_HOST says: this item switches hosts itself
  const pg = await startCluster({ fsync: true, host: 'server', config: { ...BASE_CONFIG } });
  const sink = await startBenchPeer('count-sink.js');
  const lsink = await startPeer('http-sink');
  let sqs = null;
  let mode = 'server';
  const deliverers = async () => {
    // the delivering processes: the workers, or each evpiped and its server session
    if (mode === 'server') {
      const w = (await pg.query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'evpipe delivery worker'")).map((r) => r.pid);
      return { engine: w, sessions: [] };
    }
    const b = (await pg.query("SELECT pid FROM pg_stat_activity WHERE application_name = 'evpiped'")).map((r) => r.pid);
    return { engine: pg.daemons.map((d) => d.pid), sessions: b };
  };
  // restart the server for a configuration: 'server' (2 workers), 'd1' or 'd2' (evpiped)
  const configure = async (cfg) => {
    for (const d of pg.daemons) await d.stop();
    pg.daemons.length = 0;
    await pg.query(cfg === 'server' ? 'ALTER SYSTEM RESET "evpipe.workers"' : 'ALTER SYSTEM SET "evpipe.workers" = 0');
    await pg.restart();
    await pg.waitFor('SELECT 1 AS ok', (r) => r.length === 1, 30000);
    mode = cfg === 'server' ? 'server' : 'daemon';
    const workers = async () => (await pg.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'evpipe delivery worker'"))[0].n;
    if (cfg === 'server') {
      await pg.waitFor("SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'evpipe delivery worker'", (r) => r[0].n === 2, 30000);
    } else {
      for (let i = 0; i < (cfg === 'd1' ? 1 : 2); i++) await pg.startDaemon();
      await pg.waitFor("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'evpiped'",
        (r) => r[0].n === pg.daemons.length, 30000);
      // the notifier wakes the daemons; it starts with the server
      await pg.waitFor("SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'evpipe notifier'", (r) => r[0].n === 1, 30000);
      const w = await workers();
      if (w !== 0) throw new Error(`evpipe.workers = 0, yet ${w} delivery workers run`);
    }
    await sleep(500);
  };
  let seq = 0;
  // ingest n events of a type in one transaction, then time the drain of its destination
  const drainRun = async (type, dest, n, counted = true) => {
    const prefix = `${dest}-${++seq}`;
    await sink.control('POST', '/_reset');
    await ingestMany(pg, type, prefix, n);
    const p = await deliverers();
    const c0 = { engine: procCpu(p.engine), sessions: procCpu(p.sessions), machine: machineCpu() };
    const d = await drain(pg, dest, 300000);
    const p2 = await deliverers();
    const c1 = { engine: procCpu(p2.engine), sessions: procCpu(p2.sessions), machine: machineCpu() };
    if (!counted) return null;
    const got = (await pg.query('SELECT count(*)::int AS n FROM evpipe.delivered WHERE destination = $1 AND event_id LIKE $2',
      [dest, `${prefix}-%`]))[0].n;
    const dead = (await pg.query('SELECT count(*)::int AS n FROM evpipe.dead_letters WHERE destination = $1 AND event_id LIKE $2',
      [dest, `${prefix}-%`]))[0].n;
    const per1k = (x) => round((x / got) * 1000 * 1000, 1);   // CPU ms per 1,000 events
    const r = {
      n, delivered: got, dead, seconds: round(d.seconds, 2), timedOut: d.timedOut, rate: round(got / d.seconds),
      cpuEngine: per1k(c1.engine - c0.engine), cpuSessions: per1k(c1.sessions - c0.sessions), cpuMachine: per1k(c1.machine - c0.machine),
    };
    if (type === 'BENCH_DH') {
      const s = await sink.control('GET', '/_count?path=/h');
      r.sinkCount = s.count;
      r.sinkRate = s.count > 1 ? round((s.count - 1) / ((s.last - s.first) / 1000)) : null;
    }
    return r;
  };
  try {
    await describe(pg);
    await section('10', 'evpiped vs the in-server workers (HTTP, SQS, latency, ingest)', async (S) => {
      S.n = D_N;
      S.rounds = D_ROUNDS;
      S.configs = D_CONFIGS;
      await pg.query('CREATE ROLE evpiped LOGIN; GRANT evpipe_worker TO evpiped');
      sqs = await startPeer('sqs', ['--credentials', `${SQS_AKID}:${SQS_SECRET}`]);
      const { SQSClient, CreateQueueCommand } = require('../test/peers/node_modules/@aws-sdk/client-sqs');
      const client = new SQSClient({ region: 'us-east-1', endpoint: sqs.url, credentials: { accessKeyId: SQS_AKID, secretAccessKey: SQS_SECRET } });
      await client.send(new CreateQueueCommand({ QueueName: 'bench-daemon' }));
      client.destroy();
      for (const t of ['BENCH_DH', 'BENCH_DS', 'BENCH_DL', 'BENCH_DI']) await pg.query(`SELECT evpipe.register_event_type('${t}', '{"type": "object"}')`);
      await pg.query('SELECT evpipe.create_destination($1, $2, $3::jsonb)', ['d-http', 'http', JSON.stringify({ url: `${sink.url}/h` })]);
      await pg.query('SELECT evpipe.create_destination($1, $2, $3::jsonb)', ['d-sqs', 'sqs', JSON.stringify({
        queue_url: `${sqs.url}/123456789012/bench-daemon`, region: 'us-east-1', endpoint_url: sqs.url,
        access_key_id: SQS_AKID, secret_access_key: SQS_SECRET,
      })]);
      await pg.query('SELECT evpipe.create_destination($1, $2, $3::jsonb)', ['d-lat', 'http', JSON.stringify({ url: `${lsink.url}/l` })]);
      await pg.query('SELECT evpipe.create_destination($1, $2, $3::jsonb)', ['d-ingest', 'http', JSON.stringify({ url: `${sink.url}/i` })]);
      await pg.query("SELECT evpipe.add_route('BENCH_DH', 'd-http')");
      await pg.query("SELECT evpipe.add_route('BENCH_DS', 'd-sqs')");
      await pg.query("SELECT evpipe.add_route('BENCH_DL', 'd-lat')");
      await pg.query("SELECT evpipe.add_route('BENCH_DI', 'd-ingest')");
      S.settings = (await pg.query(`SELECT name, setting FROM pg_settings WHERE name IN
        ('evpipe.max_in_flight', 'evpipe.batch_size', 'evpipe.tick_ms') ORDER BY name`)).map((r) => `${r.name}=${r.setting}`);

      // 10a, 10b: throughput, D_ROUNDS rounds, the configurations in rotating order
      const order = Object.keys(D_CONFIGS);
      S.http = Object.fromEntries(order.map((k) => [k, []]));
      S.sqs = Object.fromEntries(order.map((k) => [k, []]));
      S.switches = [];
      for (let rnd = 0; rnd < D_ROUNDS; rnd++) {
        for (let i = 0; i < order.length; i++) {
          const cfg = order[(i + rnd) % order.length];
          const t0 = performance.now();
          await configure(cfg);
          await drainRun('BENCH_DH', 'd-http', D_WARM, false);
          await drainRun('BENCH_DS', 'd-sqs', D_WARM, false);
          S.switches.push(round((performance.now() - t0) / 1000, 1));
          const h = await drainRun('BENCH_DH', 'd-http', D_N);
          const q = await drainRun('BENCH_DS', 'd-sqs', D_N);
          S.http[cfg].push(h);
          S.sqs[cfg].push(q);
          log(`   round ${rnd + 1} ${D_CONFIGS[cfg]}: HTTP ${h.rate}/s (CPU ms/1k: engine ${h.cpuEngine}, its sessions ${h.cpuSessions}, machine ${h.cpuMachine}), SQS ${q.rate}/s (${q.cpuEngine}, ${q.cpuSessions}, ${q.cpuMachine})`);
        }
      }
      for (const kind of ['http', 'sqs']) {
        S[`${kind}Median`] = Object.fromEntries(order.map((k) => [k, median(S[kind][k].map((r) => r.rate))]));
        S[`${kind}Ratio`] = round(S[`${kind}Median`].d2 / S[`${kind}Median`].server, 2);
        S[`${kind}Ratio1`] = round(S[`${kind}Median`].d1 / S[`${kind}Median`].server, 2);
      }
      log(`   HTTP medians ${JSON.stringify(S.httpMedian)} (2 evpiped / in-server ${S.httpRatio}); SQS medians ${JSON.stringify(S.sqsMedian)} (${S.sqsRatio})`);

      // 10c, 10d: in-server workers and 2 evpiped, D_INGEST_ROUNDS rounds (server, d2, then d2, server)
      S.latRate = D_LAT_RATE;
      S.latSeconds = D_LAT_SECS;
      S.ingestSeconds = DAEMON_SECS;
      S.lat = { server: [], d2: [] };
      S.ingest = { paused: [], server: [], d2: [], notify: [] };
      const ingestSql = `SELECT evpipe.ingest(${ev('gen_random_uuid()::text', 'BENCH_DI')});`;
      const notifySql = `SELECT evpipe.ingest(${ev('gen_random_uuid()::text', 'BENCH_DI')}), pg_notify('evpipe_wake', '');`;
      const ingestRun = async (key, sql) => {
        await sink.control('POST', '/_reset');
        const r = await pgbench(pg, sql, { clients: 2, seconds: DAEMON_SECS });
        const c = await sink.control('GET', '/_count?path=/i');
        const pending = (await pg.query("SELECT count(*)::int AS n FROM evpipe.outbox WHERE destination = 'd-ingest'"))[0].n;
        // a paused destination keeps its rows: drained after the resume
        const d = key === 'paused' ? { seconds: null } : await drain(pg, 'd-ingest', 300000);
        const out = { tps: round(r.tps), failed: r.failed, deliveredDuring: c.count, pendingAtEnd: pending, drainSeconds: round(d.seconds, 1) };
        S.ingest[key].push(out);
        log(`   ingest, ${key}: ${out.tps} tps (2 clients), ${out.deliveredDuring} delivered meanwhile, ${out.pendingAtEnd} pending at the end`);
      };
      const latRun = async (key) => {
        await lsink.control('POST', '/_control/reset');
        const total = D_LAT_RATE * D_LAT_SECS;
        const cl = await pg.client();
        const commits = new Map();
        const start = performance.now();
        const gap = 1000 / D_LAT_RATE;
        for (let i = 0; i < total; i++) {
          const wait = start + i * gap - performance.now();
          if (wait > 1) await sleep(wait);
          const id = `lat-${key}-${++seq}`;
          await cl.query(`SELECT evpipe.ingest(jsonb_build_object('eventId', $1::text, 'eventType', 'BENCH_DL',
            'source', 'bench', 'payload', '{}'::jsonb, 'timestamp', '2026-11-21T10:00:00Z'))`, [id]);
          commits.set(id, performance.timeOrigin + performance.now());
        }
        await cl.end();
        const offered = total / ((performance.now() - start) / 1000);
        await drain(pg, 'd-lat', 120000);
        const got = await lsink.control('GET', '/_control/requests?path=/l');
        const lat = sortNum(got.filter((r) => commits.has(r.headers['idempotency-key']))
          .map((r) => r.receivedAt - commits.get(r.headers['idempotency-key'])));
        const out = {
          offered: round(offered), n: lat.length, p50: round(pct(lat, 0.5), 1), p90: round(pct(lat, 0.9), 1),
          p99: round(pct(lat, 0.99), 1), max: round(lat[lat.length - 1], 1),
        };
        S.lat[key].push(out);
        log(`   commit-to-arrival, ${key}: ${out.offered}/s offered, p50 ${out.p50} p90 ${out.p90} p99 ${out.p99} max ${out.max} ms (${out.n} events)`);
      };
      for (let rnd = 0; rnd < D_INGEST_ROUNDS; rnd++) {
        for (const cfg of rnd % 2 ? ['d2', 'server'] : ['server', 'd2']) {
          await configure(cfg);
          await drainRun('BENCH_DI', 'd-ingest', D_WARM, false);
          await drainRun('BENCH_DL', 'd-lat', D_WARM, false);
          await latRun(cfg);
          if (cfg === 'server') {
            // reference: ingest alone (the destination paused, nothing delivered)
            await pg.query("SELECT evpipe.pause_destination('d-ingest')");
            await ingestRun('paused', ingestSql);
            await pg.query("SELECT evpipe.resume_destination('d-ingest')");
            await drain(pg, 'd-ingest', 300000);
            await ingestRun('server', ingestSql);
          } else {
            const runs = [['d2', ingestSql], ['notify', notifySql]];
            for (const [key, sql] of rnd % 2 ? runs.reverse() : runs) await ingestRun(key, sql);
          }
        }
      }
      S.latMedian = Object.fromEntries(Object.entries(S.lat).map(([k, v]) => [k, Object.fromEntries(['p50', 'p90', 'p99', 'max'].map((q) => [q, median(v.map((x) => x[q]))]))]));
      S.ingestMean = Object.fromEntries(Object.entries(S.ingest).map(([k, v]) => [k, round(mean(v.map((x) => x.tps)))]));
      S.ingestRatio = round(S.ingestMean.d2 / S.ingestMean.server, 3);
      S.notifyRatio = round(S.ingestMean.notify / S.ingestMean.d2, 3);
      log(`   ingest means ${JSON.stringify(S.ingestMean)}: 2 evpiped / in-server ${S.ingestRatio}, NOTIFY per commit / notifier ${S.notifyRatio}`);
      S.daemonErrors = pg.allDaemons.reduce((a, d) => a + d.lines(/ERROR|FATAL|PANIC/).length, 0);
    });
  } finally {
    await sink.stop();
    await lsink.stop();
    if (sqs) await sqs.stop();
    await pg.stop();
  }
}

// BENCH_MERGE=DIR: the items measured in DIR's run (say, the hour of churn run on its
// own) replace those of this page's run; the page says which items came from which run.
const KNOBS = { 3: ['BACKLOG', 'INGEST_RATE'], 7: ['RATE_LIMIT', 'RATE_SECS'], '8a': ['SCALE_MAX'],
  '8b': ['INGEST_RATE', 'CHURN_SECS', 'CHURN_SAMPLE', 'EVENT_RETENTION'], 10: ['DAEMON_SECS'] };
function merge(dir) {
  const other = JSON.parse(fs.readFileSync(path.join(path.resolve(dir), 'results.json'), 'utf8'));
  const keys = Object.keys(other.sections);
  if (!keys.length) throw new Error(`${dir}/results.json has no items`);
  // a knob has one value on the page: refuse to merge a run whose items used another value
  // of a knob that items staying from this page's run used too
  for (const k of keys) {
    for (const knob of KNOBS[k] || []) {
      const users = Object.keys(R.sections).filter((j) => !keys.includes(j) && (KNOBS[j] || []).includes(knob));
      if (users.length && other.env[knob] !== R.env[knob]) {
        throw new Error(`cannot merge: item ${k} ran with ${knob}=${other.env[knob]}, item ${users.join(', ')} with ${R.env[knob]}`);
      }
    }
  }
  // an earlier merged run keeps the items this one does not replace
  R.merged = (R.merged || []).map((m) => ({ ...m, items: m.items.filter((k) => !keys.includes(k)) }))
    .filter((m) => m.items.length);
  for (const k of keys) {
    R.sections[k] = other.sections[k];
    for (const knob of KNOBS[k] || []) R.env[knob] = other.env[knob];
  }
  R.merged.push({ items: keys, started: other.started, minutes: Math.round(other.totalSeconds / 60) });
}

// ---------------------------------------------------------------- main
async function main() {
  const t0 = performance.now();
  fs.mkdirSync(OUT, { recursive: true });
  if (process.env.BENCH_RENDER_ONLY || process.env.BENCH_MERGE) {   // redraw (after merging) from results.json
    Object.assign(R, JSON.parse(fs.readFileSync(path.join(OUT, 'results.json'), 'utf8')));
    if (process.env.BENCH_MERGE) merge(process.env.BENCH_MERGE);
    ({ SECS, INGEST_RATE, BACKLOG, RATE_LIMIT, RATE_SECS, SCALE_MAX, CHURN_SECS, CHURN_SAMPLE, EVENT_RETENTION, ONLY } = R.env);
    DAEMON_SECS = R.env.DAEMON_SECS ?? DAEMON_SECS;   // pages written before item 10 lack it
    fs.writeFileSync(path.join(OUT, 'results.md'), render(plots()));
    if (process.env.BENCH_MERGE) fs.writeFileSync(path.join(OUT, 'results.json'), JSON.stringify(R) + '\n');
    return;
  }
  await ingestItems();
  await item3();
  await deliveryItems();
  await scaleItem();
  await churnItem();
  await orderingItem();
  await daemonItem();
  await managedItem();
  await breakdownItem();
  R.totalSeconds = (performance.now() - t0) / 1000;
  const made = plots();
  fs.writeFileSync(path.join(OUT, 'results.md'), render(made));
  fs.writeFileSync(path.join(OUT, 'results.json'), JSON.stringify(R) + '\n');
  log(`written: ${path.join(OUT, 'results.md')}, results.json, ${Object.values(made).join(', ') || 'no plots'} (${Math.round(R.totalSeconds)} s)`);
  const errs = Object.entries(R.sections).filter(([, s]) => s.error).map(([k]) => k);
  if (errs.length) { console.error(`items that failed: ${errs.join(', ')}`); process.exitCode = 1; }
}

main().catch((e) => { console.error(e); process.exit(1); });
