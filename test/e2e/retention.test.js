// End-to-end: evpipe.event_retention. Old events are removed in small
// batches by worker 0, never an event with an outbox row or a dead letter;
// a removed eventId is new again; 0 keeps everything; SIGHUP changes it;
// producers never wait on the removal; a database still at 0.1.0 is served.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startCluster, sleep } = require('./lib/cluster');

const RETENTION_S = 3;
let pg;

const ev = (id, type = 'RET', payload = {}) => ({
  eventId: id, eventType: type, source: 'ret', payload, timestamp: '2026-11-21T10:00:00Z',
});
const ingest = async (e) => (await pg.query('SELECT evpipe.ingest($1::jsonb) AS r', [JSON.stringify(e)]))[0].r;
const present = async (ids) => (await pg.query(
  'SELECT event_id FROM evpipe.events WHERE event_id = ANY($1) ORDER BY event_id', [ids])).map((r) => r.event_id);
// every "events_removed" log line: rows, batches and the largest batch of a round
const removedLines = (log) => [...log.matchAll(/evpipe event=events_removed rows=(\d+) batches=(\d+) max_batch=(\d+)/g)]
  .map((m) => ({ rows: Number(m[1]), batches: Number(m[2]), maxBatch: Number(m[3]) }));

// Types, a handler that records deliveries (and refuses ids listed in
// ret_fail: a permanent error, dead-lettered at once), destinations, routes.
async function setup(c) {
  await c.query('CREATE TABLE IF NOT EXISTS ret_log (event_id text, at timestamptz DEFAULT clock_timestamp())');
  await c.query('CREATE TABLE IF NOT EXISTS ret_fail (event_id text PRIMARY KEY)');
  await c.query(`CREATE OR REPLACE FUNCTION ret_sink(e jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
      IF EXISTS (SELECT 1 FROM ret_fail WHERE event_id = e->>'eventId') THEN
        RAISE EXCEPTION 'refused' USING ERRCODE = '22023';
      END IF;
      INSERT INTO ret_log (event_id) VALUES (e->>'eventId');
    END $$`);
  await c.query(`SELECT evpipe.register_event_type('RET', '{"type": "object"}')`);
  await c.query(`SELECT evpipe.register_event_type('RETP', '{"type": "object"}')`);
  await c.query(`SELECT evpipe.create_destination('ret-fn', 'function', '{"function": "public.ret_sink(jsonb)"}')`);
  await c.query(`SELECT evpipe.create_destination('ret-paused', 'function', '{"function": "public.ret_sink(jsonb)"}')`);
  await c.query("SELECT evpipe.add_route('RET', 'ret-fn')");
  await c.query("SELECT evpipe.add_route('RETP', 'ret-paused')");
}

before(async () => {
  pg = await startCluster({
    config: { 'evpipe.workers': 2, 'evpipe.tick_ms': 200, 'evpipe.event_retention': `${RETENTION_S}s` },
  });
  await setup(pg);
});

after(async () => {
  if (pg) await pg.stop();
});

test('the GUC: an interval with units, 7 days by default', async () => {
  const r = await pg.query("SELECT setting, unit, context, boot_val FROM pg_settings WHERE name = 'evpipe.event_retention'");
  assert.deepEqual(r, [{ setting: String(RETENTION_S), unit: 's', context: 'sighup', boot_val: String(7 * 86400) }]);
  const idx = await pg.query("SELECT indexdef FROM pg_indexes WHERE schemaname = 'evpipe' AND indexname = 'events_ingested_at'");
  assert.match(idx[0].indexdef, /USING btree \(ingested_at\)/);
});

test('old delivered events go in batches of at most 1000 rows; producers never wait on the removal', async () => {
  const N = 20000;
  const logBefore = pg.log().length;
  for (let b = 0; b < N / 1000; b++) {
    const batch = Array.from({ length: 1000 }, (_, i) => ev(`b-${b * 1000 + i}`, 'RET', { n: i }));
    await pg.query('SELECT evpipe.ingest_batch($1::jsonb)', [JSON.stringify(batch)]);
  }
  // a producer ingests all along, and a sampler watches the locks
  let stop = false;
  let produced = 0;
  const producer = (async () => {
    for (let i = 0; !stop; i++) {
      const r = await ingest(ev(`p-${i}`));
      assert.equal(r.status, 'accepted');
      produced++;
    }
  })();
  const sampler = await pg.client();
  const seen = { retention: 0, badLocks: [], waiting: [], extend: 0 };
  const sampling = (async () => {
    while (!stop) {
      const rows = (await sampler.query(`SELECT a.pid, a.query, a.backend_type, a.wait_event_type, a.wait_event,
          l.mode, l.relation::regclass::text AS rel
        FROM pg_stat_activity a LEFT JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'relation'
        WHERE a.pid <> pg_backend_pid() AND (a.query = 'evpipe: removing old events'
          OR (a.backend_type = 'client backend' AND a.wait_event_type = 'Lock'))`)).rows;
      for (const r of rows) {
        if (r.query === 'evpipe: removing old events') {
          seen.retention++;
          if (r.mode && !['AccessShareLock', 'RowShareLock', 'RowExclusiveLock'].includes(r.mode)) seen.badLocks.push(r);
        } else if (r.wait_event === 'extend') {
          // a relation extension lock: held for the moment a writer adds a page, by any writer
          // (the workers' delivered rows and outbox updates); the removal adds no page
          seen.extend++;
        } else seen.waiting.push(r);
      }
    }
  })();
  await pg.waitFor("SELECT count(*)::int AS n FROM evpipe.events WHERE event_id LIKE 'b-%'", (r) => r[0].n === 0, 90000);
  stop = true;
  await Promise.all([producer, sampling]);
  await sampler.end();
  // a round logs what it removed after its last batch commits: the last
  // line can follow the moment the rows are seen gone
  let lines;
  for (const deadline = Date.now() + 20000; ; await new Promise((r) => setTimeout(r, 100))) {
    lines = removedLines(pg.log().slice(logBefore));
    if (lines.reduce((s, l) => s + l.rows, 0) >= N || Date.now() > deadline) break;
  }
  const rows = lines.reduce((s, l) => s + l.rows, 0);
  const batches = lines.reduce((s, l) => s + l.batches, 0);
  console.log(`# ${rows} events removed in ${batches} batches over ${lines.length} rounds;`
    + ` ${produced} producer ingests meanwhile; removal seen in ${seen.retention} samples;`
    + ` ${seen.extend} samples of a producer extending a relation`);
  assert.ok(rows >= N, `removed ${rows}`);
  assert.ok(batches >= N / 1000, `${batches} batches`);
  for (const l of lines) assert.ok(l.maxBatch <= 1000 && l.rows <= l.batches * 1000, JSON.stringify(l));
  assert.deepEqual(seen.badLocks, [], 'the removal takes no lock stronger than ROW EXCLUSIVE');
  assert.deepEqual(seen.waiting, [], 'no producer waits on a lock');
  assert.ok(produced > 0);
  // every delivery happened once, before its event went
  const d = await pg.query("SELECT count(*)::int AS n, count(DISTINCT event_id)::int AS u FROM ret_log WHERE event_id LIKE 'b-%'");
  assert.deepEqual(d, [{ n: N, u: N }]);
});

test('events with a pending outbox row or a dead letter are kept; the dead letter still replays', async () => {
  await pg.query("SELECT evpipe.set_destination_enabled('ret-paused', false)");
  await pg.query("INSERT INTO ret_fail VALUES ('k-dead')");
  assert.equal((await ingest(ev('k-pending', 'RETP'))).status, 'accepted');
  assert.equal((await ingest(ev('k-dead'))).status, 'accepted');
  await pg.waitFor("SELECT 1 FROM evpipe.dead_letters WHERE event_id = 'k-dead'", (r) => r.length === 1, 10000);
  await sleep(200);
  assert.equal((await ingest(ev('k-done'))).status, 'accepted');
  // k-done is the youngest: once it is gone, a round has passed the other two
  await pg.waitFor("SELECT 1 FROM evpipe.events WHERE event_id = 'k-done'", (r) => r.length === 0, 20000);
  await sleep(RETENTION_S * 1000);
  assert.deepEqual(await present(['k-pending', 'k-dead', 'k-done']), ['k-dead', 'k-pending']);
  // the dead letter replays (the handler accepts it now), then its event goes
  await pg.query("DELETE FROM ret_fail WHERE event_id = 'k-dead'");
  assert.equal((await pg.query("SELECT evpipe.replay_dead_letters(event_id => 'k-dead') AS n"))[0].n, 1);
  await pg.waitFor("SELECT 1 FROM evpipe.delivered WHERE event_id = 'k-dead'", (r) => r.length === 1, 10000);
  await pg.waitFor("SELECT 1 FROM evpipe.events WHERE event_id = 'k-dead'", (r) => r.length === 0, 20000);
  assert.deepEqual(await present(['k-pending']), ['k-pending']);
  // resumed, the pending one is delivered, then removed
  await pg.query("SELECT evpipe.set_destination_enabled('ret-paused', true)");
  await pg.waitFor("SELECT 1 FROM evpipe.events WHERE event_id = 'k-pending'", (r) => r.length === 0, 20000);
  const log = await pg.query("SELECT event_id FROM ret_log WHERE event_id LIKE 'k-%' ORDER BY event_id");
  assert.deepEqual(log.map((r) => r.event_id), ['k-dead', 'k-done', 'k-pending']);
});

test('after removal the same eventId is new again: accepted and delivered once more', async () => {
  assert.equal((await ingest(ev('r-1', 'RET', { v: 1 }))).status, 'accepted');
  assert.equal((await ingest(ev('r-1', 'RET', { v: 1 }))).status, 'duplicate');
  await pg.waitFor("SELECT 1 FROM evpipe.events WHERE event_id = 'r-1'", (r) => r.length === 0, 20000);
  // even with other content: the old event is forgotten
  const t2 = (await pg.query('SELECT now() AS t'))[0].t;
  assert.equal((await ingest(ev('r-1', 'RET', { v: 2 }))).status, 'accepted');
  await pg.waitFor("SELECT count(*)::int AS n FROM ret_log WHERE event_id = 'r-1'", (r) => r[0].n === 2, 10000);
  // evpipe.delivered (kept longer than the event) shows the newest delivery, not the first one
  await pg.waitFor("SELECT delivered_at >= $1 AS newer FROM evpipe.delivered WHERE event_id = 'r-1'",
    (r) => r.length === 1 && r[0].newer, 10000, [t2]);
  const e = await pg.query("SELECT event->'payload' AS p FROM evpipe.events WHERE event_id = 'r-1'");
  assert.deepEqual(e, [{ p: { v: 2 } }]);
});

test('retention 0 keeps everything; a reload (SIGHUP) turns it on again', async () => {
  await pg.query('ALTER SYSTEM SET evpipe.event_retention = 0');
  await pg.reload();
  await pg.waitFor('SHOW evpipe.event_retention', (r) => r[0]['evpipe.event_retention'] === '0', 10000);
  await sleep(500); // the workers read the file at the top of their loop
  for (let i = 0; i < 3; i++) assert.equal((await ingest(ev(`z-${i}`))).status, 'accepted');
  await pg.waitFor("SELECT count(*)::int AS n FROM ret_log WHERE event_id LIKE 'z-%'", (r) => r[0].n === 3, 10000);
  await sleep(RETENTION_S * 1000 * 2 + 1500);
  assert.deepEqual(await present(['z-0', 'z-1', 'z-2']), ['z-0', 'z-1', 'z-2']);
  await pg.query("ALTER SYSTEM SET evpipe.event_retention = '2s'");
  await pg.reload();
  await pg.waitFor("SELECT count(*)::int AS n FROM evpipe.events WHERE event_id LIKE 'z-%'", (r) => r[0].n === 0, 20000);
  await pg.query('ALTER SYSTEM RESET evpipe.event_retention');
  await pg.reload();
});

test('a database still at 0.1.0: events are kept (logged once, no error); after ALTER EXTENSION UPDATE they go', async () => {
  const old = await startCluster({
    noExtension: true,
    config: { 'evpipe.workers': 1, 'evpipe.tick_ms': 200, 'evpipe.event_retention': '1s' },
  });
  try {
    await old.query("CREATE EXTENSION evpipe VERSION '0.1.0'");
    await setup(old);
    await old.query('SELECT evpipe.ingest($1::jsonb)', [JSON.stringify(ev('o-1'))]);
    await old.waitFor("SELECT 1 FROM evpipe.delivered WHERE event_id = 'o-1'", (r) => r.length === 1, 10000);
    await old.waitFor('SELECT 1', () => /event=event_retention_skipped/.test(old.log()), 10000);
    await sleep(2500);
    assert.equal((await old.query("SELECT count(*)::int AS n FROM evpipe.events WHERE event_id = 'o-1'"))[0].n, 1);
    assert.equal(old.log().match(/event=event_retention_skipped/g).length, 1, 'logged once');
    assert.doesNotMatch(old.log(), /ERROR/);
    await old.query('ALTER EXTENSION evpipe UPDATE');
    await old.waitFor("SELECT count(*)::int AS n FROM evpipe.events WHERE event_id = 'o-1'", (r) => r[0].n === 0, 15000);
  } finally {
    await old.stop();
  }
});
