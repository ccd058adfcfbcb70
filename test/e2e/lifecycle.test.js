// End-to-end: the life of evpipe's data. The real pg_dump (custom format into
// pg_restore, plain format into psql) restores every row a user made into fresh
// clusters, and delivery, dedup and replay carry on there; ALTER EXTENSION
// UPDATE from 0.1.0 (through 0.2.0 to the current version) keeps live data,
// and the upgraded schema equals a fresh install of the current version,
// catalog by catalog; a streaming standby runs no worker and
// delivers what was pending once promoted.
'use strict';
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Client } = require('../peers/node_modules/pg');
const { startCluster, sleep, asPostgres, BIN } = require('./lib/cluster');
const { startPeer } = require('./lib/peers');
const { CATALOG, catalogOf } = require('./lib/catalog');

const WORKERS = { 'evpipe.workers': 2, 'evpipe.tick_ms': 200 };
const SECRET = 'whsec_bGlmZWN5Y2xlLXNlY3JldC1rZXktMDEyMzQ1Njc4OQ==';
const clusters = [];
let sink;

const started = async (opts) => { const c = await startCluster(opts); clusters.push(c); return c; };
const stop = async (c) => { clusters.splice(clusters.indexOf(c), 1); await c.stop(); };
after(async () => {
  for (const c of clusters.splice(0)) await c.stop();
  if (sink) await sink.stop();
});

const getSink = async () => { if (!sink) sink = await startPeer('http-sink'); return sink; };
const requests = async (p) => (await sink.control('GET', `/_control/requests?path=${encodeURIComponent(p)}`));
const behave = (b) => sink.control('POST', '/_control/behavior', b);
const ev = (id, type, payload, extra = {}) => ({
  eventId: id, eventType: type, source: 'lifecycle', payload, timestamp: '2026-11-21T10:00:00Z', ...extra,
});
const ingest = async (c, e, source) =>
  (await c.query('SELECT evpipe.ingest($1::jsonb, $2) AS r', [JSON.stringify(e), source || null]))[0].r;
const count = async (c, sql, params) => (await c.query(`SELECT count(*)::int AS n FROM (${sql}) s`, params))[0].n;
const waitCount = (c, sql, n, ms = 20000, params) =>
  c.waitFor(`SELECT count(*)::int AS n FROM (${sql}) s`, (r) => r[0].n === n, ms, params);

// Every row a user made in a table, as JSON text (optionally only some columns), sorted;
// the built-in event types are left out (CREATE EXTENSION makes them afresh, with a new created_at).
const rowsOf = async (c, table, only = null) => (await c.query(
  `SELECT (SELECT jsonb_object_agg(k, v) FROM jsonb_each(to_jsonb(t)) AS j(k, v)
      WHERE $1::text[] IS NULL OR k = ANY ($1))::text AS r FROM evpipe.${table} t
   ${table === 'event_types' ? "WHERE t.event_type NOT IN ('evpipe.delivery_succeeded', 'evpipe.delivery_failed')" : ''}
   ORDER BY 1`, [only])).map((x) => x.r);
const columnsOf = async (c, table) => (await c.query(
  "SELECT array_agg(column_name::text) AS c FROM information_schema.columns WHERE table_schema = 'evpipe' AND table_name = $1",
  [table]))[0].c;
const USER_TABLES = ['event_types', 'sources', 'source_roles', 'source_limits', 'destinations', 'routes',
  'events', 'outbox', 'delivered', 'dead_letters'];
const SEQUENCES = ['routes_id_seq', 'outbox_id_seq', 'dead_letters_id_seq'];
const ACLS = `SELECT 'relation' AS kind, relname AS name, relacl::text AS acl FROM pg_class
    WHERE relnamespace = 'evpipe'::regnamespace
  UNION ALL SELECT 'function', oid::regprocedure::text, proacl::text FROM pg_proc WHERE pronamespace = 'evpipe'::regnamespace
  UNION ALL SELECT 'schema', nspname, nspacl::text FROM pg_namespace WHERE nspname = 'evpipe' ORDER BY 1, 2`;
const seqPositions = async (c) => Object.fromEntries(await Promise.all(SEQUENCES.map(async (s) =>
  [s, (await c.query(`SELECT last_value::text AS v, is_called FROM evpipe.${s}`))[0]])));

// ---------------------------------------------------------------------------
// Backup and restore
// ---------------------------------------------------------------------------

test('backup: pg_dump (custom and plain) restored into fresh clusters keeps every row; delivery resumes, dedup and replay work', async () => {
  await getSink();
  await behave({ path: '/lc-slow', delayMs: 600000 });      // holds one delivery in flight
  await behave({ path: '/lc-down', status: 400 });           // permanent failure: dead letters
  const src = await started({ config: WORKERS });
  const q = (sql, p) => src.query(sql, p);
  await q('CREATE ROLE lc_app LOGIN');
  await q('GRANT evpipe_producer TO lc_app');
  await q('GRANT SELECT ON evpipe.stats TO lc_app');          // a grant of the user's own, dumped as a difference
  await q(`SELECT evpipe.register_event_type('LC_ORDER', '{"type": "object", "required": ["orderId"]}')`);
  await q(`SELECT evpipe.register_event_type('LC_SLOW', '{"type": "object"}')`);
  await q(`SELECT evpipe.register_event_type('LC_FAIL', '{"type": "object"}')`);
  await q("SELECT evpipe.register_source('shop', 'LC_ORDER', id_field => 'id', timestamp_field => 'at')");
  await q("SELECT evpipe.bind_source('shop', 'lc_app')");
  await q("SELECT evpipe.set_source_limit('shop', 1000, 50)");
  const dest = (name, p, extra = {}) => q('SELECT evpipe.create_destination($1, \'http\', $2::jsonb)',
    [name, JSON.stringify({ url: `${sink.url}${p}`, secret: SECRET, backoff_base_ms: 50, backoff_max_ms: 100, ...extra })]);
  await dest('lc-ok', '/lc-ok');
  await dest('lc-paused', '/lc-paused');
  await dest('lc-slow', '/lc-slow', { timeout_ms: 30000 });
  await dest('lc-down', '/lc-down', { max_attempts: 1 });
  await q("SELECT evpipe.pause_destination('lc-paused')");
  await q("SELECT evpipe.add_route('LC_ORDER', 'lc-ok')");
  await q("SELECT evpipe.add_route('LC_ORDER', 'lc-paused')");
  await q("SELECT evpipe.add_route('LC_SLOW', 'lc-slow')");
  await q("SELECT evpipe.add_route('LC_FAIL', 'lc-down')");
  await q("SELECT evpipe.add_route('LC_*', 'lc-ok', source => 'nobody', priority => 'high')");
  for (let i = 1; i <= 2; i++) await ingest(src, ev(`lc-o-${i}`, 'LC_ORDER', { orderId: `o${i}` }));
  assert.equal((await q(`SELECT evpipe.register_event_type('LC_ORDER', '{"type": "object", "required": ["orderId"],
    "properties": {"amount": {"type": "number", "minimum": 0}}}') AS v`))[0].v, 2);
  for (let i = 3; i <= 5; i++) await ingest(src, ev(`lc-o-${i}`, 'LC_ORDER', { orderId: `o${i}`, amount: i }));
  // the mapped source, as the role bound to it
  const app = await src.client();
  await app.query('SET ROLE lc_app');
  const raw = { id: 'lc-shop-1', orderId: 's1', amount: 7, at: '2026-11-21T10:00:00Z' };
  assert.equal((await app.query("SELECT evpipe.ingest($1::jsonb, 'shop') AS r", [JSON.stringify(raw)])).rows[0].r.status, 'accepted');
  await app.end();
  for (let i = 1; i <= 2; i++) await ingest(src, ev(`lc-f-${i}`, 'LC_FAIL', { i }));
  await ingest(src, ev('lc-s-1', 'LC_SLOW', { slow: true }));

  await waitCount(src, "SELECT 1 FROM evpipe.delivered WHERE destination = 'lc-ok'", 6);
  await waitCount(src, 'SELECT 1 FROM evpipe.dead_letters', 2);
  await waitCount(src, "SELECT 1 FROM evpipe.outbox WHERE destination = 'lc-slow' AND lease_until > now() + interval '40 seconds' AND leased_by IS NOT NULL", 1);
  await waitCount(src, "SELECT 1 FROM evpipe.outbox WHERE destination = 'lc-paused' AND lease_until IS NULL", 6);
  assert.equal((await requests('/lc-slow')).length, 1, 'the in-flight request reached the sink');
  assert.deepEqual((await q('SELECT event_id, schema_version FROM evpipe.events WHERE event_type = \'LC_ORDER\' ORDER BY 1')).map((r) => r.schema_version),
    [1, 1, 2, 2, 2, 2]);

  // the source's rows and sequence positions, taken while the lease is held
  const before = {};
  for (const t of USER_TABLES) before[t] = await rowsOf(src, t);
  const seqs = await seqPositions(src);
  const acls = await src.query(ACLS);
  // 5 routes; 15 outbox rows (6 events to two destinations, 3 to one); 2 dead letters
  assert.deepEqual(Object.values(seqs).map((s) => s.v), ['5', '15', '2']);
  const inflight = (await q("SELECT id::int, event_id FROM evpipe.outbox WHERE destination = 'lc-slow'"))[0];

  // the real pg_dump, both formats, while the row is in flight
  const dumps = fs.mkdtempSync(path.join(os.tmpdir(), 'evpipe-dump-'));
  fs.chmodSync(dumps, 0o777);
  const custom = path.join(dumps, 'evpipe.dump');
  const plain = path.join(dumps, 'evpipe.sql');
  const conn = ['-h', '127.0.0.1', '-p', String(src.port), '-U', 'postgres'];
  asPostgres(`${BIN}/pg_dump`, [...conn, '-Fc', '-f', custom, 'postgres']);
  asPostgres(`${BIN}/pg_dump`, [...conn, '-f', plain, 'postgres']);
  const text = fs.readFileSync(plain, 'utf8');
  assert.match(text, /CREATE EXTENSION IF NOT EXISTS evpipe/);
  assert.ok(text.includes(SECRET), 'secrets are in the dump (a dump is a superuser\'s artifact)');
  assert.doesNotMatch(text, /^evpipe\.delivery_(succeeded|failed)\t1\t/m, 'the built-in event types are not dumped');
  // the source goes away with its worker's lease; the sink now answers at once
  await stop(src);
  await behave({ path: '/lc-slow', status: 200 });

  const restores = [
    ['custom format, pg_restore', (c) => asPostgres(`${BIN}/pg_restore`,
      ['-h', '127.0.0.1', '-p', String(c.port), '-U', 'postgres', '-d', 'postgres', '--exit-on-error', '--single-transaction', custom])],
    ['plain format, psql', (c) => asPostgres(`${BIN}/psql`,
      ['-h', '127.0.0.1', '-p', String(c.port), '-U', 'postgres', '-d', 'postgres', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
        '--single-transaction', '-f', plain])],
  ];
  for (const [label, restore] of restores) {
    const dst = await started({ noExtension: true, config: WORKERS });
    await dst.waitFor('SELECT 1 AS ok', (r) => r.length === 1, 20000);
    await dst.query('CREATE ROLE lc_app LOGIN');             // roles are global: pg_dumpall --globals-only
    const r = restore(dst);
    assert.equal(r.status, 0, `${label}: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /ERROR/, label);
    await dst.query('GRANT evpipe_producer TO lc_app');

    // the in-flight row comes back claimable and is delivered by the new cluster's workers
    await waitCount(dst, "SELECT 1 FROM evpipe.delivered WHERE destination = 'lc-slow' AND event_id = 'lc-s-1'", 1, 20000);
    for (const t of USER_TABLES) {
      if (t === 'outbox' || t === 'delivered') continue;
      assert.deepEqual(await rowsOf(dst, t), before[t], `${label}: evpipe.${t}`);
    }
    const outboxNow = await rowsOf(dst, 'outbox');
    assert.deepEqual(outboxNow, before.outbox.filter((x) => JSON.parse(x).id !== inflight.id), `${label}: evpipe.outbox`);
    const deliveredNow = await rowsOf(dst, 'delivered');
    assert.deepEqual(deliveredNow.filter((x) => JSON.parse(x).destination !== 'lc-slow'), before.delivered, `${label}: evpipe.delivered`);
    assert.deepEqual(await seqPositions(dst), seqs, `${label}: sequence positions`);
    assert.deepEqual(await dst.query(ACLS), acls, `${label}: privileges`);
    assert.equal(await count(dst, "SELECT 1 FROM evpipe.event_types WHERE event_type LIKE 'evpipe.%'"), 2, 'built-ins once');
    assert.ok(!dst.log().includes('ERROR'), `${label}: no ERROR in the server log`);

    // dedup: a known event is a duplicate, through the envelope and through the mapped source as its role
    assert.equal((await ingest(dst, ev('lc-o-3', 'LC_ORDER', { orderId: 'o3', amount: 3 }))).status, 'duplicate');
    const app2 = await dst.client();
    await app2.query('SET ROLE lc_app');
    assert.equal((await app2.query("SELECT evpipe.ingest($1::jsonb, 'shop') AS r", [JSON.stringify(raw)])).rows[0].r.status, 'duplicate');
    await app2.end();
    await assert.rejects(ingest(dst, ev('lc-o-3', 'LC_ORDER', { orderId: 'other' })), /23505|already|reused/i);
    // the schema's second version is in force: amount must not be negative
    await assert.rejects(ingest(dst, ev('lc-bad', 'LC_ORDER', { orderId: 'x', amount: -1 })), /schema of "LC_ORDER" version 2/);

    // new ids continue after the restored positions
    const tag = label.startsWith('custom') ? 'b' : 'c';
    const res = await ingest(dst, ev(`lc-${tag}-new`, 'LC_ORDER', { orderId: 'n', amount: 1 }));
    assert.deepEqual(res.destinations, ['lc-ok', 'lc-paused']);
    // (read from the sequence: lc-ok's row may be delivered and gone already)
    const last = (await dst.query("SELECT pg_sequence_last_value('evpipe.outbox_id_seq')::int AS v"))[0].v;
    assert.equal(last, 17, `the two new outbox ids continue after the restored 15 (last: ${last})`);
    const rid = (await dst.query("SELECT evpipe.add_route('LC_SLOW', 'lc-ok') AS id"))[0].id;
    assert.equal(rid, 6);
    await waitCount(dst, "SELECT 1 FROM evpipe.delivered WHERE event_id = $1 AND destination = 'lc-ok'", 1, 20000, [`lc-${tag}-new`]);
    // the restored secret signs the new cluster's requests
    const got = (await requests('/lc-ok')).find((x) => x.headers['idempotency-key'] === `lc-${tag}-new`);
    const key = Buffer.from(SECRET.slice(6), 'base64');
    const mac = crypto.createHmac('sha256', key).update(`lc-${tag}-new.${got.headers['webhook-timestamp']}.${got.body}`).digest('base64');
    assert.equal(got.headers['webhook-signature'], `v1,${mac}`);

    // paused stays paused until resumed; then the pending rows are delivered
    assert.equal(await count(dst, "SELECT 1 FROM evpipe.delivered WHERE destination = 'lc-paused'"), 0);
    await dst.query("SELECT evpipe.resume_destination('lc-paused')");
    await waitCount(dst, "SELECT 1 FROM evpipe.delivered WHERE destination = 'lc-paused'", 7);

    // dead letters replay and are delivered; the replayed row gets a fresh outbox id
    await behave({ path: '/lc-down', status: 200 });
    const sentBefore = (await requests('/lc-down')).length;
    assert.equal((await dst.query("SELECT evpipe.replay_dead_letters('lc-down') AS n"))[0].n, 2);
    await waitCount(dst, "SELECT 1 FROM evpipe.delivered WHERE destination = 'lc-down'", 2);
    assert.equal((await requests('/lc-down')).length, sentBefore + 2);
    assert.equal(await count(dst, 'SELECT 1 FROM evpipe.dead_letters'), 0);
    await behave({ path: '/lc-down', status: 400 });
    await ingest(dst, ev(`lc-${tag}-dead`, 'LC_FAIL', {}));
    await waitCount(dst, 'SELECT 1 FROM evpipe.dead_letters WHERE id > 2', 1);
    await behave({ path: '/lc-down', status: 200 });
    await stop(dst);
  }
  fs.rmSync(dumps, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// Upgrades
// ---------------------------------------------------------------------------

test('upgrade: the new library serves a 0.1.0 database; ALTER EXTENSION UPDATE (0.1.0 -> 0.2.0 -> 0.3.0 -> 0.4.0 -> 0.5.0 -> 0.6.0) keeps pending, in-flight and dead rows; the schema equals a fresh 0.6.0 install', async () => {
  await getSink();
  await behave({ path: '/up-slow', delayMs: 5000 });
  await behave({ path: '/up-retry', status: 503 });
  await behave({ path: '/up-down', status: 400 });
  const pg = await started({ noExtension: true, config: WORKERS });
  const q = (sql, p) => pg.query(sql, p);
  await pg.waitFor('SELECT 1 AS ok', (r) => r.length === 1, 20000);
  await q("CREATE EXTENSION evpipe VERSION '0.1.0'");
  assert.equal((await q("SELECT extversion FROM pg_extension WHERE extname = 'evpipe'"))[0].extversion, '0.1.0');
  const dest = (name, p, extra = {}) => q('SELECT evpipe.create_destination($1, \'http\', $2::jsonb)',
    [name, JSON.stringify({ url: `${sink.url}${p}`, backoff_base_ms: 100, backoff_max_ms: 200, ...extra })]);
  await dest('up-ok', '/up-ok');
  await dest('up-slow', '/up-slow', { timeout_ms: 30000 });
  await dest('up-retry', '/up-retry', { max_attempts: 1000 });
  await dest('up-down', '/up-down', { max_attempts: 1 });
  // a 0.2.0 key is refused by the 0.1.0 schema
  await assert.rejects(dest('up-new', '/up-ok', { max_age_ms: 60000 }), /unknown key "max_age_ms"/);
  for (const d of ['up-ok', 'up-slow', 'up-retry', 'up-down']) {
    await q('SELECT evpipe.add_route($1, $2)', [`UP_${d.slice(3).toUpperCase()}`, d]);
  }
  await q(`SELECT evpipe.register_event_type(t, '{"type": "object"}') FROM unnest(ARRAY['UP_OK', 'UP_SLOW', 'UP_RETRY', 'UP_DOWN']) t`);

  // the new library's workers deliver for the 0.1.0 database
  for (let i = 0; i < 3; i++) await ingest(pg, ev(`up-ok-${i}`, 'UP_OK', { i }));
  await waitCount(pg, "SELECT 1 FROM evpipe.delivered WHERE destination = 'up-ok'", 3);
  assert.equal((await requests('/up-ok')).length, 3);
  // live data: dead letters, rows retrying, one in flight
  for (let i = 0; i < 2; i++) await ingest(pg, ev(`up-down-${i}`, 'UP_DOWN', { i }));
  for (let i = 0; i < 3; i++) await ingest(pg, ev(`up-retry-${i}`, 'UP_RETRY', { i }));
  await waitCount(pg, 'SELECT 1 FROM evpipe.dead_letters', 2);
  await pg.waitFor("SELECT count(*) FILTER (WHERE attempts > 0)::int AS n FROM evpipe.outbox WHERE destination = 'up-retry'",
    (r) => r[0].n === 3, 10000);
  await ingest(pg, ev('up-slow-0', 'UP_SLOW', {}));
  await waitCount(pg, "SELECT 1 FROM evpipe.outbox WHERE destination = 'up-slow' AND lease_until > now()", 1);

  // (an update may add columns: compare the ones 0.1.0 has)
  const before = {};
  const cols = {};
  for (const t of ['event_types', 'destinations', 'routes', 'events', 'dead_letters']) {
    cols[t] = await columnsOf(pg, t);
    before[t] = await rowsOf(pg, t, cols[t]);
  }
  const key = "SELECT event_id || '/' || destination AS k FROM evpipe.";
  const pendingBefore = (await q(`${key}outbox ORDER BY 1`)).map((r) => r.k);
  assert.equal(pendingBefore.length, 4);

  await q('ALTER EXTENSION evpipe UPDATE');
  assert.equal((await q("SELECT extversion FROM pg_extension WHERE extname = 'evpipe'"))[0].extversion, '0.6.0');

  // nothing lost
  for (const t of Object.keys(before)) assert.deepEqual(await rowsOf(pg, t, cols[t]), before[t], `evpipe.${t}`);
  const kept = new Set((await q(`${key}outbox UNION ${key}delivered`)).map((r) => r.k));
  for (const k of pendingBefore) assert.ok(kept.has(k), `${k} is still pending or delivered`);
  // delivery continues: the in-flight row, the retried rows once the target recovers, a replay, new events
  await waitCount(pg, "SELECT 1 FROM evpipe.delivered WHERE destination = 'up-slow'", 1, 20000);
  await behave({ path: '/up-retry', status: 200 });
  await waitCount(pg, "SELECT 1 FROM evpipe.delivered WHERE destination = 'up-retry'", 3, 20000);
  await behave({ path: '/up-down', status: 200 });
  assert.equal((await q('SELECT evpipe.replay_dead_letters() AS n'))[0].n, 2);
  await waitCount(pg, "SELECT 1 FROM evpipe.delivered WHERE destination = 'up-down'", 2);
  await ingest(pg, ev('up-ok-after', 'UP_OK', {}));
  await waitCount(pg, "SELECT 1 FROM evpipe.delivered WHERE event_id = 'up-ok-after'", 1);
  assert.equal((await ingest(pg, ev('up-ok-0', 'UP_OK', { i: 0 }))).status, 'duplicate');
  // the 0.2.0 keys are accepted now
  await dest('up-new', '/up-ok', { max_age_ms: 60000, breaker_window_ms: 1000 });
  assert.equal(await count(pg, 'SELECT 1 FROM evpipe.outbox'), 0);
  const errors = pg.log().split('\n').filter((l) => l.includes('ERROR') && !l.includes('unknown key "max_age_ms"'));
  assert.deepEqual(errors, [], 'no unexpected ERROR in the server log');

  // the upgraded schema against a fresh 0.6.0 install in another database of the same cluster
  await q('CREATE DATABASE lc_fresh');
  const connect = async (database) => {
    const cl = new Client({ host: '127.0.0.1', port: pg.port, user: 'postgres', database });
    await cl.connect();
    return cl;
  };
  const fresh = await connect('lc_fresh');
  const upgraded = await connect('postgres');
  try {
    await fresh.query('CREATE EXTENSION evpipe');
    const a = await catalogOf(upgraded);
    const b = await catalogOf(fresh);
    for (const k of Object.keys(CATALOG)) {
      assert.ok(b[k].length > 0 || ['policies', 'rules'].includes(k), `the ${k} query sees something`);
      const onlyUpgraded = a[k].filter((x) => !b[k].includes(x));
      const onlyFresh = b[k].filter((x) => !a[k].includes(x));
      assert.deepEqual({ onlyUpgraded, onlyFresh }, { onlyUpgraded: [], onlyFresh: [] }, `upgraded vs fresh 0.6.0: ${k}`);
      assert.deepEqual(a[k], b[k], `upgraded vs fresh 0.6.0: ${k} (order)`);
    }
    assert.ok(a.dumped.length >= 13, 'every user-data table and sequence is marked for pg_dump');
  } finally {
    await fresh.end();
    await upgraded.end();
  }
  await stop(pg);
});

// ---------------------------------------------------------------------------
// Standbys and failover
// ---------------------------------------------------------------------------

test('standby: no delivery worker and no error on a streaming standby; after promotion its workers deliver what was pending', async () => {
  await getSink();
  await behave({ path: '/fo', status: 503 });
  const primary = await started({ config: { ...WORKERS, wal_level: 'replica', max_wal_senders: 5, hot_standby: 'on' } });
  const q = (sql, p) => primary.query(sql, p);
  await q(`SELECT evpipe.register_event_type('FO', '{"type": "object"}')`);
  await q("SELECT evpipe.create_destination('fo', 'http', $1::jsonb)",
    [JSON.stringify({ url: `${sink.url}/fo`, backoff_base_ms: 100, backoff_max_ms: 300, max_attempts: 100000 })]);
  await q("SELECT evpipe.add_route('FO', 'fo')");
  for (let i = 0; i < 5; i++) await ingest(primary, ev(`fo-${i}`, 'FO', { i }));

  const standby = await started({ standbyOf: primary, config: WORKERS });
  await standby.waitFor('SELECT pg_is_in_recovery() AS r', (r) => r.length === 1 && r[0].r === true, 20000);
  for (let i = 5; i < 10; i++) await ingest(primary, ev(`fo-${i}`, 'FO', { i }));
  await waitCount(standby, 'SELECT 1 FROM evpipe.outbox', 10, 20000);
  await sleep(1500);                                           // several worker ticks' worth
  assert.deepEqual(await standby.workerPids(), [], 'no delivery worker on the standby');
  assert.equal((await standby.query('SELECT evpipe.health() AS h'))[0].h.workersAlive, 0);
  assert.deepEqual(await standby.query("SELECT destination, (pending + in_flight)::int AS n FROM evpipe.stats"), [{ destination: 'fo', n: 10 }]);
  assert.equal((await primary.workerPids()).length, 2);
  assert.ok(!standby.log().includes('ERROR'), `no ERROR in the standby's log:\n${standby.log()}`);
  // the standby has replayed everything; nothing was delivered: the target fails
  const lsn = (await q('SELECT pg_current_wal_lsn()::text AS l'))[0].l;
  await standby.waitFor('SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok', (r) => r[0].ok, 20000, [lsn]);
  assert.equal(await count(primary, 'SELECT 1 FROM evpipe.delivered'), 0);

  // the primary goes away with the rows pending; the standby takes over
  await stop(primary);
  assert.equal(await count(standby, 'SELECT 1 FROM evpipe.outbox'), 10);
  await behave({ path: '/fo', status: 200 });
  await standby.promote();
  await standby.waitFor("SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'evpipe delivery worker'",
    (r) => r[0].n === 2, 20000);
  await waitCount(standby, "SELECT 1 FROM evpipe.delivered WHERE destination = 'fo'", 10, 20000);
  assert.equal(await count(standby, 'SELECT 1 FROM evpipe.outbox'), 0);
  const sent = new Set((await requests('/fo')).filter((r) => r.answeredStatus === 200).map((r) => r.headers['idempotency-key']));
  assert.equal(sent.size, 10);
  // and it ingests as a primary now
  assert.equal((await ingest(standby, ev('fo-new', 'FO', {}))).status, 'accepted');
  await waitCount(standby, "SELECT 1 FROM evpipe.delivered WHERE event_id = 'fo-new'", 1);
  const errors = standby.log().split('\n').filter((l) => /ERROR|FATAL|PANIC/.test(l) && /evpipe/i.test(l));
  assert.deepEqual(errors, [], 'no evpipe error in the promoted server\'s log');
  await stop(standby);
});
