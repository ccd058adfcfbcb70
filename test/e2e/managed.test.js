// `evpiped migrate`: the managed install (evpipe without C, for servers that
// load no extension of ours) installed and upgraded by a non-superuser, on a
// cluster that never loads evpipe's library. Refusals change nothing; a second
// run changes nothing; an upgrade keeps the data and ends in the same schema as
// a fresh install; concurrent runs apply each step once; pg_dump round-trips it.
// (The contract itself, ingest and delivery, runs against this install in
// test/run's managed suite: the regression tests and the delivery suites.)
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { Client } = require('../peers/node_modules/pg');
const { startCluster, asPostgres, BIN } = require('./lib/cluster');
const { runEvpiped, EVPIPED } = require('./lib/daemon');
const { catalogOf } = require('./lib/catalog');

let pg;
const q = (sql, p) => pg.query(sql, p);
const dsn = (db, user) => `host=127.0.0.1 port=${pg.port} dbname=${db} user=${user}`;
const migrate = (db, user, ...args) => runEvpiped(['migrate', '--dsn', dsn(db, user), ...args], { timeoutMs: 60000 });

// evpiped migrate, not waited for: a promise of {status, stdout, stderr}
const migrateAsync = (db, user) => new Promise((resolve) => {
  execFile(EVPIPED, ['migrate', '--dsn', dsn(db, user)], { encoding: 'utf8', env: { PATH: process.env.PATH } },
    (err, stdout, stderr) => resolve({ status: err ? err.code : 0, stdout, stderr }));
});

async function withDb(db, fn) {
  const c = new Client({ host: '127.0.0.1', port: pg.port, user: 'postgres', database: db });
  await c.connect();
  try {
    return await fn(async (sql, p) => (await c.query(sql, p)).rows, c);
  } finally {
    await c.end();
  }
}

const oneLine = (r) => assert.equal(r.stderr.trimEnd().split('\n').length, 1, `one line: ${r.stderr}`);

before(async () => {
  // no shared_preload_libraries and no CREATE EXTENSION: a server that loads no C of ours
  pg = await startCluster({ preload: false, noExtension: true });
  await pg.waitFor('SELECT 1 AS ok', (r) => r.length === 1, 20000);
});

after(async () => {
  if (pg) await pg.stop();
});

test('migrate refuses, with one line and nothing changed: no CREATEROLE, no CREATE on the database, the C extension, a schema it did not install, bad flags', async () => {
  await q('CREATE ROLE norole LOGIN');
  await q('CREATE DATABASE app_norole OWNER norole');
  let r = migrate('app_norole', 'norole');
  assert.equal(r.status, 1, r.stderr + r.stdout);
  assert.match(r.stderr, /^evpiped migrate: role "norole" cannot create the roles evpipe_producer, evpipe_admin and evpipe_worker: give it CREATEROLE.*nothing changed$/m);
  oneLine(r);
  await withDb('app_norole', async (dq) => {
    assert.deepEqual(await dq("SELECT nspname FROM pg_namespace WHERE nspname = 'evpipe'"), []);
  });
  assert.deepEqual(await q("SELECT rolname FROM pg_roles WHERE rolname LIKE 'evpipe%'"), [], 'no role was created');

  await q('CREATE ROLE guest LOGIN CREATEROLE');
  r = migrate('postgres', 'guest');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^evpiped migrate: role "guest" may not create schemas in database "postgres": run it as the database owner, or GRANT CREATE ON DATABASE/);
  oneLine(r);

  // the C extension is there (created by a superuser; the library loads on first use)
  await q('CREATE DATABASE app_ext');
  await withDb('app_ext', (dq) => dq('CREATE EXTENSION evpipe'));
  r = migrate('app_ext', 'postgres');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^evpiped migrate: database "app_ext" has the evpipe extension 0\.6\.0 \(in C\): the managed install is for servers that load no C; nothing changed/);
  oneLine(r);
  await withDb('app_ext', async (dq) => assert.deepEqual(await dq("SELECT to_regclass('evpipe.migrations') AS t"), [{ t: null }]));

  await q('CREATE DATABASE app_other');
  await withDb('app_other', (dq) => dq('CREATE SCHEMA evpipe'));
  r = migrate('app_other', 'postgres');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /has a schema evpipe that evpiped migrate did not install \(no evpipe\.migrations\); nothing changed/);

  r = migrate('app_other', 'postgres', '--to', '9.9.9');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^evpiped migrate: --to: evpiped installs no version "9\.9\.9"/);
  r = runEvpiped(['migrate', '--frobnicate']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^evpiped migrate: unknown option --frobnicate/);
  r = runEvpiped(['migrate', '--dsn', 'port=x=y']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^evpiped migrate: cannot connect: invalid integer value "x=y" for connection option "port"$/m);
  oneLine(r);
  r = runEvpiped(['migrate', '--dsn', 'host=127.0.0.1 nosuchoption=1']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^evpiped migrate: --dsn cannot be parsed: invalid connection option "nosuchoption"/);
  r = runEvpiped(['migrate', '--dsn', `host=127.0.0.1 port=${pg.port} dbname=nosuchdb user=postgres connect_timeout=5`]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^evpiped migrate: cannot connect: .*nosuchdb/);
  oneLine(r);
});

test('a database owner with CREATEROLE (no superuser) installs it; it is plain SQL and PL/pgSQL; a second run and a dry run change nothing', async () => {
  await q('CREATE ROLE master LOGIN CREATEROLE');
  await q('CREATE DATABASE app OWNER master');
  let r = migrate('app', 'master', '--dry-run');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'evpiped migrate: database "app": would install evpipe 0.6.0\n');
  await withDb('app', async (dq) => assert.deepEqual(await dq("SELECT nspname FROM pg_namespace WHERE nspname = 'evpipe'"), []));

  r = migrate('app', 'master');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^evpiped migrate: database "app": installed evpipe 0\.6\.0 \(\d+\.\d\d s\)\nevpiped migrate: database "app" has evpipe 0\.6\.0 \(managed\): 1 step applied\n$/);
  assert.equal(r.stderr, '');
  const first = await withDb('app', async (dq, c) => {
    assert.deepEqual(await dq('SELECT evpipe.version() AS v'), [{ v: '0.6.0' }]);
    assert.deepEqual(await dq('SELECT version, step, applied_by FROM evpipe.migrations'), [{ version: '0.6.0', step: 'install', applied_by: 'master' }]);
    // no function in C, no library: the server never loaded evpipe
    assert.deepEqual(await dq(`SELECT p.oid::regprocedure::text AS f FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
      WHERE p.pronamespace = 'evpipe'::regnamespace AND l.lanname NOT IN ('sql', 'plpgsql')`), []);
    assert.deepEqual(await dq("SELECT current_setting('shared_preload_libraries') AS s"), [{ s: '' }]);
    assert.deepEqual(await dq("SELECT pg_get_userbyid(nspowner) AS o FROM pg_namespace WHERE nspname = 'evpipe'"), [{ o: 'master' }]);
    assert.deepEqual((await dq("SELECT rolname FROM pg_roles WHERE rolname LIKE 'evpipe%' ORDER BY 1")).map((x) => x.rolname),
      ['evpipe_admin', 'evpipe_producer', 'evpipe_worker']);
    return catalogOf(c, { managed: true });
  });
  assert.ok(first.functions.length > 40, `functions: ${first.functions.length}`);

  r = migrate('app', 'master');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'evpiped migrate: database "app" has evpipe 0.6.0 (managed): up to date, nothing to do\n');
  const second = await withDb('app', async (dq, c) => {
    assert.equal((await dq('SELECT count(*)::int AS n FROM evpipe.migrations'))[0].n, 1);
    return catalogOf(c, { managed: true });
  });
  assert.deepEqual(second, first, 'the second run changed nothing');
});

test('upgrade: migrate --to 0.3.0, fill it, migrate: nothing lost, and the schema equals a fresh install; no downgrade, no upgrade by a role that does not own it, a newer schema refused', async () => {
  await q('CREATE DATABASE app_up OWNER master');
  let r = migrate('app_up', 'master', '--to', '0.3.0');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /installed evpipe 0\.3\.0/);
  const tables = ['event_types', 'sources', 'destinations', 'routes', 'events', 'outbox', 'dead_letters'];
  const before = await withDb('app_up', async (dq) => {
    assert.deepEqual(await dq('SELECT evpipe.version() AS v'), [{ v: '0.3.0' }]);
    await dq(`SELECT evpipe.register_event_type('UP', '{"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}')`);
    await dq(`SELECT evpipe.create_destination('up-a', 'http', '{"url": "http://127.0.0.1:9/a"}')`);
    await dq(`SELECT evpipe.create_destination('up-b', 'http', '{"url": "http://127.0.0.1:9/b", "ordering_key": "payload.n"}')`);
    await dq("SELECT evpipe.add_route('UP', 'up-a'), evpipe.add_route('UP', 'up-b')");
    await dq("SELECT evpipe.register_source('legacy', 'UP', 'id', 'ts')");
    for (let i = 0; i < 5; i++) {
      await dq('SELECT evpipe.ingest($1::jsonb)', [JSON.stringify({ eventId: `up-${i}`, eventType: 'UP', source: 'svc',
        timestamp: '2026-12-03T10:00:00Z', payload: { n: i } })]);
    }
    await dq('SELECT evpipe.ingest($1::jsonb, $2)', [JSON.stringify({ id: 'legacy-1', ts: '2026-12-03T10:00:00Z', n: 7 }), 'legacy']);
    // one of them dead already
    await dq("SELECT evpipe._dead_letter_pending('up-a', 'test: dead before the upgrade')");
    const out = {};
    for (const t of tables) out[t] = await dq(`SELECT * FROM evpipe.${t} ORDER BY 1, 2`);
    return out;
  });
  assert.equal(before.events.length, 6);
  assert.equal(before.outbox.length, 6);
  assert.equal(before.dead_letters.length, 6);

  await q('CREATE ROLE intruder LOGIN CREATEROLE');
  await q('GRANT CREATE ON DATABASE app_up TO intruder');
  r = migrate('app_up', 'intruder');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^evpiped migrate: role "intruder" does not own schema evpipe \(its owner is "master"\): run migrate as that role; nothing changed/);

  r = migrate('app_up', 'master');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^evpiped migrate: database "app_up": upgraded evpipe 0\.3\.0 -> 0\.4\.0 \(\d+\.\d\d s\)\n.*upgraded evpipe 0\.4\.0 -> 0\.5\.0 \(\d+\.\d\d s\)\n.*upgraded evpipe 0\.5\.0 -> 0\.6\.0 \(\d+\.\d\d s\)\n.*3 steps applied\n$/);
  const upgraded = await withDb('app_up', async (dq, c) => {
    assert.deepEqual(await dq('SELECT evpipe.version() AS v'), [{ v: '0.6.0' }]);
    for (const t of tables) assert.deepEqual(await dq(`SELECT * FROM evpipe.${t} ORDER BY 1, 2`), before[t], `evpipe.${t} kept`);
    // and it works on: the new function, and ingest
    assert.deepEqual(await dq(`SELECT evpipe.validate('{"type": "integer"}', '"x"') AS v`),
      [{ v: { path: '$', rule: 'type', message: 'expected integer, got string' } }]);
    assert.equal((await dq(`SELECT evpipe.ingest('{"eventId": "up-9", "eventType": "UP", "source": "svc", "timestamp": "2026-12-03T10:00:00Z", "payload": {"n": 9}}') AS r`))[0].r.status, 'accepted');
    return catalogOf(c, { managed: true });
  });

  await q('CREATE DATABASE app_fresh OWNER master');
  r = migrate('app_fresh', 'master');
  assert.equal(r.status, 0, r.stderr);
  const fresh = await withDb('app_fresh', (dq, c) => catalogOf(c, { managed: true }));
  for (const k of Object.keys(fresh)) {
    const onlyUpgraded = upgraded[k].filter((x) => !fresh[k].includes(x));
    const onlyFresh = fresh[k].filter((x) => !upgraded[k].includes(x));
    assert.deepEqual({ onlyUpgraded, onlyFresh }, { onlyUpgraded: [], onlyFresh: [] }, `upgraded vs fresh: ${k}`);
  }

  r = migrate('app_up', 'master', '--to', '0.3.0');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /has evpipe 0\.6\.0, newer than --to 0\.3\.0: evpiped migrate does not downgrade; nothing changed/);

  // a schema from a newer evpiped
  await withDb('app_fresh', (dq) => dq("INSERT INTO evpipe.migrations (version, step) VALUES ('0.10.0', 'upgrade')"));
  r = migrate('app_fresh', 'master');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^evpiped migrate: database "app_fresh" has evpipe 0\.10\.0, newer than this evpiped \(0\.6\.0\): use evpiped 0\.10\.0 or later; nothing changed \(no downgrade\)$/m);
  oneLine(r);
  await withDb('app_fresh', async (dq) => {
    assert.deepEqual(await dq('SELECT evpipe.version() AS v'), [{ v: '0.10.0' }], 'versions compare as numbers');
    await dq("DELETE FROM evpipe.migrations WHERE version = '0.10.0'");
  });
});

test('two migrates at once on a fresh database: each step is applied once, both exit 0', async () => {
  await q('CREATE DATABASE app_race OWNER master');
  const [a, b] = await Promise.all([migrateAsync('app_race', 'master'), migrateAsync('app_race', 'master')]);
  assert.equal(a.status, 0, a.stderr);
  assert.equal(b.status, 0, b.stderr);
  const out = a.stdout + b.stdout;
  assert.equal((out.match(/installed evpipe 0\.6\.0/g) || []).length, 1, out);
  assert.ok(/applied meanwhile by another migrate|up to date/.test(out), out);
  await withDb('app_race', async (dq) => assert.equal((await dq('SELECT count(*)::int AS n FROM evpipe.migrations'))[0].n, 1));
});

test('pg_dump and restore of a managed database: data, roles grants and functions come back; migrate sees it up to date', async () => {
  await withDb('app', async (dq) => {
    await dq(`SELECT evpipe.register_event_type('DUMPED', '{"type": "object"}')`);
    await dq(`SELECT evpipe.create_destination('dumped', 'http', '{"url": "http://127.0.0.1:9/d"}')`);
    await dq("SELECT evpipe.add_route('DUMPED', 'dumped')");
    await dq(`SELECT evpipe.ingest('{"eventId": "d-1", "eventType": "DUMPED", "source": "s", "timestamp": "2026-12-03T10:00:00Z", "payload": {}}')`);
  });
  const file = path.join(pg.dir, 'app.dump');
  asPostgres(`${BIN}/pg_dump`, ['-h', '127.0.0.1', '-p', String(pg.port), '-U', 'postgres', '-Fc', '-f', file, 'app']);
  await q('CREATE DATABASE app_restored OWNER master');
  asPostgres(`${BIN}/pg_restore`, ['-h', '127.0.0.1', '-p', String(pg.port), '-U', 'postgres', '-d', 'app_restored', '--exit-on-error', file]);
  await withDb('app_restored', async (dq) => {
    assert.deepEqual(await dq("SELECT event_id FROM evpipe.events WHERE event_type = 'DUMPED'"), [{ event_id: 'd-1' }]);
    assert.deepEqual(await dq("SELECT event_id, destination FROM evpipe.outbox WHERE destination = 'dumped'"), [{ event_id: 'd-1', destination: 'dumped' }]);
    const again = await dq(`SELECT evpipe.ingest('{"eventId": "d-1", "eventType": "DUMPED", "source": "s", "timestamp": "2026-12-03T10:00:00Z", "payload": {}}') AS r`);
    assert.equal(again[0].r.status, 'duplicate', 'dedup survives the restore');
    assert.deepEqual(await dq("SELECT has_function_privilege('evpipe_producer', 'evpipe.ingest(jsonb, text)', 'EXECUTE') AS p"), [{ p: true }]);
  });
  const r = migrate('app_restored', 'master');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /up to date, nothing to do/);
  fs.rmSync(file, { force: true });
});
