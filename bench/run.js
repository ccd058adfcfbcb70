#!/usr/bin/env node
// evpipe benchmarks: every figure is a ratio or a percentile measured in the
// same run on the same machine. Writes docs/bench/results.md. Nothing here
// fails on a number. Run with bench/run (installs and builds first).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync, execFileSync } = require('node:child_process');
const { startCluster, sleep } = require('../test/e2e/lib/cluster');
const { startPeer } = require('../test/e2e/lib/peers');

const PGBENCH = '/usr/lib/postgresql/15/bin/pgbench';
const SECS = Number(process.env.BENCH_SECONDS || 10);
const out = [];
const line = (s = '') => { out.push(s); console.log(s); };

function pgbench(pg, script, clients) {
  const f = path.join(os.tmpdir(), `evpipe-bench-${process.pid}-${Math.random().toString(36).slice(2)}.sql`);
  fs.writeFileSync(f, script);
  const r = spawnSync(PGBENCH, ['-h', '127.0.0.1', '-p', String(pg.port), '-U', 'postgres', '-n', '-f', f,
    '-c', String(clients), '-j', String(clients), '-T', String(SECS), 'postgres'], { encoding: 'utf8' });
  fs.rmSync(f);
  const m = /tps = ([\d.]+) \(without initial connection time\)/.exec(r.stdout);
  if (!m) throw new Error(`pgbench failed: ${r.stderr || r.stdout}`);
  return Number(m[1]);
}

const pct = (a, q) => a[Math.min(a.length - 1, Math.floor(q * a.length))];

async function main() {
  const machine = `${os.cpus().length} cores (${os.cpus()[0].model}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB`;
  const pg = await startCluster({
    fsync: true,
    config: { 'evpipe.workers': 2, synchronous_commit: 'on', shared_buffers: '512MB', max_wal_size: '4GB' },
  });
  const sink = await startPeer('http-sink');
  try {
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

    const ev = (id) => `jsonb_build_object('eventId', ${id}, 'eventType', 'BENCH', 'source', 'bench',
      'payload', jsonb_build_object('n', 1, 'note', 'a benchmark event'), 'timestamp', '2026-11-21T10:00:00Z')`;
    const scripts = {
      'bare INSERT': `INSERT INTO bare VALUES (gen_random_uuid()::text, ${ev("'x'")});`,
      'evpipe.ingest': `SELECT evpipe.ingest(${ev('gen_random_uuid()::text')});`,
      ...(pgq ? { 'pgq.insert_event': `SELECT pgq.insert_event('bench', 'BENCH', (${ev('gen_random_uuid()::text')})::text);` } : {}),
    };

    line('# evpipe benchmarks');
    line();
    line(`Machine: ${machine}; PostgreSQL 15, fsync on, synchronous_commit on, shared_buffers 512MB; ${SECS} s per run.`);
    line(`Run: ${new Date().toISOString()}.`);
    line();
    line('## 1. Ingest, one event per transaction (pgbench)');
    line();
    line('| clients | bare INSERT tps | evpipe.ingest tps | ratio | PgQ tps |');
    line('|---|---|---|---|---|');
    for (const c of [1, 2]) {
      const r = {};
      for (const [name, sql] of Object.entries(scripts)) r[name] = pgbench(pg, sql, c);
      line(`| ${c} | ${r['bare INSERT'].toFixed(0)} | ${r['evpipe.ingest'].toFixed(0)} | ${(r['evpipe.ingest'] / r['bare INSERT']).toFixed(2)}x | ${pgq ? r['pgq.insert_event'].toFixed(0) : 'n/a'} |`);
    }
    line();
    line('Target: evpipe >= 0.8x the bare INSERT.');
    line();

    line('## 2. Batched ingest (1,000 events per transaction)');
    line();
    line('| method | events/s |');
    line('|---|---|');
    const batch = (sql) => pgbench(pg, sql, 2) * 1000;
    line(`| bare INSERT | ${batch(`INSERT INTO bare SELECT gen_random_uuid()::text, ${ev("'x'")} FROM generate_series(1, 1000) g;`).toFixed(0)} |`);
    line(`| evpipe.ingest | ${batch(`SELECT count(evpipe.ingest(${ev('gen_random_uuid()::text')})) FROM generate_series(1, 1000) g;`).toFixed(0)} |`);
    if (pgq) line(`| pgq.insert_event | ${batch(`SELECT count(pgq.insert_event('bench', 'BENCH', (${ev('gen_random_uuid()::text')})::text)) FROM generate_series(1, 1000) g;`).toFixed(0)} |`);
    line();
    line('Target: >= 50,000 events/s, ahead of PgQ.');
    line();

    // 4. HTTP delivery throughput vs the sink's own capacity
    await pg.query(`SELECT evpipe.create_destination('bench-http', 'http', $1::jsonb)`, [JSON.stringify({ url: `${sink.url}/d` })]);
    await pg.query(`SELECT evpipe.register_event_type('BENCH_HTTP', '{"type": "object"}')`);
    await pg.query("SELECT evpipe.add_route('BENCH_HTTP', 'bench-http')");
    let wrk = null;
    try {
      const body = path.join(os.tmpdir(), `evpipe-wrk-${process.pid}.lua`);
      fs.writeFileSync(body, 'wrk.method = "POST"\nwrk.body = \'{"eventId":"x","payload":{}}\'\nwrk.headers["Content-Type"] = "application/json"\n');
      const r = execFileSync('wrk', ['-t2', '-c32', `-d${Math.min(SECS, 5)}s`, '-s', body, `${sink.url}/wrk`], { encoding: 'utf8' });
      fs.rmSync(body);
      wrk = Number(/Requests\/sec:\s+([\d.]+)/.exec(r)[1]);
    } catch (e) { /* wrk not installed */ }
    await sink.control('POST', '/_control/reset');
    const n = 20000;
    await pg.query(`SELECT count(evpipe.ingest(jsonb_build_object('eventId', 'h-' || g, 'eventType', 'BENCH_HTTP',
      'source', 'bench', 'payload', jsonb_build_object('n', g), 'timestamp', '2026-11-21T10:00:00Z')))
      FROM generate_series(1, ${n}) g`);
    const t0 = Date.now();
    await pg.waitFor("SELECT count(*)::int AS n FROM evpipe.outbox WHERE destination = 'bench-http'", (r) => r[0].n === 0, 300000);
    const rate = n / ((Date.now() - t0) / 1000);
    line('## 4. HTTP delivery throughput to a local sink');
    line();
    line(`| evpipe delivered/s | sink capacity (wrk, 32 connections) | ratio |`);
    line('|---|---|---|');
    line(`| ${rate.toFixed(0)} | ${wrk ? wrk.toFixed(0) : 'n/a'} | ${wrk ? (rate / wrk).toFixed(2) : 'n/a'} |`);
    line();
    line(`${n} events backlogged, then drained by 2 workers. Target: >= 5,000 events/s and >= 80% of the sink's capacity.`);
    line();

    // 6. commit-to-arrival latency at a steady 1,000 events/s
    await sink.control('POST', '/_control/reset');
    const total = 1000 * Math.min(SECS, 5);
    const client = await pg.client();
    const commits = new Map();
    const start = performance.now();
    for (let i = 0; i < total; i++) {
      const due = start + i;
      const wait = due - performance.now();
      if (wait > 1) await sleep(wait);
      await client.query(`SELECT evpipe.ingest(jsonb_build_object('eventId', $1::text, 'eventType', 'BENCH_HTTP',
        'source', 'bench', 'payload', '{}'::jsonb, 'timestamp', '2026-11-21T10:00:00Z'))`, [`l-${i}`]);
      commits.set(`l-${i}`, performance.timeOrigin + performance.now());
    }
    await client.end();
    const achieved = total / ((performance.now() - start) / 1000);
    await pg.waitFor("SELECT count(*)::int AS n FROM evpipe.outbox WHERE destination = 'bench-http'", (r) => r[0].n === 0, 60000);
    const got = await sink.control('GET', '/_control/requests?path=/d');
    const lat = got.filter((r) => commits.has(r.headers['idempotency-key']))
      .map((r) => r.receivedAt - commits.get(r.headers['idempotency-key'])).sort((a, b) => a - b);
    line('## 6. Commit-to-arrival latency');
    line();
    line(`| offered rate | events | p50 | p99 | max |`);
    line('|---|---|---|---|---|');
    line(`| ${achieved.toFixed(0)}/s | ${lat.length} | ${pct(lat, 0.5).toFixed(1)} ms | ${pct(lat, 0.99).toFixed(1)} ms | ${lat[lat.length - 1].toFixed(1)} ms |`);
    line();
    line('Measured from the ingest call returning (commit) to the sink receiving the request. Target: p50 <= 5 ms, p99 <= 50 ms.');
    line();
    line('## Not measured yet');
    line();
    line('Ingest latency percentiles with a 1,000,000-event backlog (3), SQS delivery vs the emulator (5), rate-limit');
    line('accuracy over 60 s (7), claim cost and bloat at 10k/1M/10M pending rows (8), and plots.');
  } finally {
    await sink.stop();
    await pg.stop();
  }
  const dir = path.join(__dirname, '..', 'docs', 'bench');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'results.md'), out.join('\n') + '\n');
  console.log(`\nwritten: ${path.join(dir, 'results.md')}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
