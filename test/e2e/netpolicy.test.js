// Outbound network policy: destination URLs whose host is a link-local or
// cloud metadata address are refused by create_destination; every address
// curl connects to is checked again when connecting (names, redirects), so a
// refused connection is a permanent failure after one attempt; the
// superuser-only evpipe.destination_networks allows only its networks and is
// reloaded by the workers. Every address used here is loopback: a refused
// address is never connected to (the check runs before the socket exists).
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startCluster, sleep } = require('./lib/cluster');
const { startPeer } = require('./lib/peers');
const { Client } = require('../peers/node_modules/pg');

let pg;
let sink;
let n = 0;

const ingest = (type) => {
  const id = `np-${++n}`;
  return pg.query(`SELECT evpipe.ingest(jsonb_build_object('eventId', $1::text, 'eventType', $2::text,
    'source', 'np', 'payload', '{}'::jsonb, 'timestamp', '2026-11-21T10:00:00Z'))`, [id, type]).then(() => id);
};
const dest = (name, kind, config) =>
  pg.query('SELECT evpipe.create_destination($1, $2, $3::jsonb)', [name, kind, JSON.stringify(config)]);
const sqlError = async (promise) => {
  try { await promise; } catch (e) { return e; }
  assert.fail('expected an error');
};
const received = async (path) => (await sink.control('GET', `/_control/requests?path=${encodeURIComponent(path)}`)).length;

// ALTER SYSTEM the list and reload; wait until the server reads it, then let the worker take its SIGHUP
async function setNetworks(value) {
  await pg.query(`ALTER SYSTEM SET evpipe.destination_networks = '${value}'`);
  await pg.reload();
  await pg.waitFor('SELECT setting FROM pg_settings WHERE name = $1', (r) => r[0].setting === value, 10000,
    ['evpipe.destination_networks']);
  await sleep(500);
}

before(async () => {
  sink = await startPeer('http-sink');
  pg = await startCluster({ config: {
    'evpipe.workers': 1, 'evpipe.tick_ms': 200, 'evpipe.destination_networks': '10.255.255.0/24',
  } });
  for (const t of ['NP_LOOP', 'NP_NAME', 'NP_REDIR', 'NP_AFTER', 'NP_TIGHT']) {
    await pg.query(`SELECT evpipe.register_event_type($1, '{}')`, [t]);
  }
  await pg.query('CREATE ROLE np_admin LOGIN IN ROLE evpipe_admin');
});

after(async () => {
  if (pg) await pg.stop();
  if (sink) await sink.stop();
});

test('create time: link-local and metadata hosts are refused (22023, the rule named), in any notation', async () => {
  const cases = [
    ['http', { url: 'http://169.254.169.254/latest/meta-data/' }, 'url', '169.254.169.254', 'cloud metadata'],
    ['http', { url: 'http://[fd00:ec2::254]/' }, 'url', '[fd00:ec2::254]', 'cloud metadata'],
    ['http', { url: 'http://[::ffff:169.254.169.254]:80/' }, 'url', '[::ffff:169.254.169.254]', 'cloud metadata'],
    ['http', { url: 'http://2852039166/' }, 'url', '2852039166', 'cloud metadata'],
    ['http', { url: 'http://0xA9FEA9FE/' }, 'url', '0xA9FEA9FE', 'cloud metadata'],
    ['graphql', { url: 'https://[fe80::1]/graphql', query: '{ x }' }, 'url', '[fe80::1]', 'link-local'],
    ['sqs', { queue_url: 'https://169.254.1.1/1/q', region: 'us-east-1' }, 'queue_url', '169.254.1.1', 'link-local'],
    ['sqs', { queue_url: 'https://sqs.us-east-1.amazonaws.com/1/q', region: 'us-east-1', endpoint_url: 'http://169.254.170.2/' },
      'endpoint_url', '169.254.170.2', 'link-local'],
  ];
  for (const [kind, config, key, host, rule] of cases) {
    const e = await sqlError(dest('bad', kind, config));
    assert.equal(e.code, '22023', JSON.stringify(config));
    assert.equal(e.message, `destination ${key} host ${host} is a ${rule} address`);
    assert.match(e.detail, /link-local addresses \(169\.254\.0\.0\/16, fe80::\/10\) or cloud metadata addresses/);
  }
  // evpipe_admin is refused the same way; alter_destination checks too
  const admin = new Client({ host: '127.0.0.1', port: pg.port, user: 'np_admin', database: 'postgres' });
  await admin.connect();
  try {
    const e = await sqlError(admin.query(`SELECT evpipe.create_destination('bad', 'http', '{"url": "http://169.254.169.254/"}')`));
    assert.equal(e.code, '22023');
    await admin.query(`SELECT evpipe.create_destination('np-upd', 'http', '{"url": "http://127.0.0.1:1/"}')`);
    const u = await sqlError(admin.query(`SELECT evpipe.alter_destination('np-upd', '{"url": "http://[fe80::a9fe:a9fe]/"}')`));
    assert.equal(u.code, '22023');
    assert.match(u.message, /is a link-local address/);
    await admin.query("SELECT evpipe.drop_destination('np-upd')");
  } finally {
    await admin.end();
  }
  assert.equal((await pg.query("SELECT count(*)::int AS n FROM evpipe.destinations WHERE name = 'bad'"))[0].n, 0);
});

test('connect time: an address outside evpipe.destination_networks is a permanent failure after one attempt, nothing sent', async () => {
  await dest('np-loop', 'http', { url: `${sink.url}/loop`, max_attempts: 5, backoff_base_ms: 100, breaker_threshold: 1 });
  await pg.query("SELECT evpipe.add_route('NP_LOOP', 'np-loop')");
  const ids = [await ingest('NP_LOOP'), await ingest('NP_LOOP'), await ingest('NP_LOOP')];
  const dl = await pg.waitFor('SELECT event_id, attempts, last_status, last_error FROM evpipe.dead_letters WHERE event_id = ANY($1) ORDER BY event_id',
    (r) => r.length === 3, 15000, [ids]);
  for (const d of dl) {
    assert.equal(d.attempts, 1, 'permanent: not retried');
    assert.equal(d.last_error, `refused by evpipe.destination_networks: 127.0.0.1 is not in 10.255.255.0/24`);
  }
  assert.equal(await received('/loop'), 0, 'the sink received nothing');
  // a policy refusal is about the configuration, not evidence that the target is down
  assert.doesNotMatch(pg.log(), /event=circuit_open destination=np-loop/);
});

test('connect time: a name is checked after it resolves (localhost is loopback)', async () => {
  await dest('np-name', 'http', { url: `http://localhost:${sink.port}/name`, max_attempts: 5 });
  await pg.query("SELECT evpipe.add_route('NP_NAME', 'np-name')");
  const id = await ingest('NP_NAME');
  const dl = await pg.waitFor('SELECT attempts, last_error FROM evpipe.dead_letters WHERE event_id = $1', (r) => r.length === 1, 15000, [id]);
  assert.equal(dl[0].attempts, 1);
  assert.match(dl[0].last_error, /^refused by evpipe\.destination_networks: (127\.0\.0\.1|::1) is not in 10\.255\.255\.0\/24$/);
  assert.equal(await received('/name'), 0);
});

test('a non-superuser (evpipe_admin) cannot change evpipe.destination_networks', async () => {
  const admin = new Client({ host: '127.0.0.1', port: pg.port, user: 'np_admin', database: 'postgres' });
  await admin.connect();
  try {
    let e = await sqlError(admin.query("SET evpipe.destination_networks = ''"));
    assert.equal(e.code, '42501');
    e = await sqlError(admin.query("ALTER SYSTEM SET evpipe.destination_networks = '0.0.0.0/0'"));
    assert.equal(e.code, '42501');
    e = await sqlError(admin.query("ALTER ROLE np_admin SET evpipe.destination_networks = '0.0.0.0/0'"));
    assert.equal(e.code, '42501');
  } finally {
    await admin.end();
  }
  // a superuser's bad list is refused with the reason
  const e = await sqlError(pg.query("ALTER SYSTEM SET evpipe.destination_networks = '127.0.0.1/8'"));
  assert.equal(e.code, '22023');
  assert.match(e.detail, /bits set to the right of the mask \(the network is 127\.0\.0\.0\/8\)/);
});

test('reload: once the list includes loopback a new event is delivered; redirects are checked too', async () => {
  await setNetworks('10.255.255.0/24, 127.0.0.1/32');
  const id = await ingest('NP_LOOP');
  await pg.waitFor('SELECT 1 FROM evpipe.delivered WHERE event_id = $1', (r) => r.length === 1, 15000, [id]);
  assert.equal(await received('/loop'), 1);

  // an allowed target that redirects elsewhere: the redirect target is checked when connecting
  await sink.control('POST', '/_control/behavior', { path: '/moved', status: 307, location: `http://127.0.0.2:${sink.port}/elsewhere` });
  await dest('np-redir', 'http', { url: `${sink.url}/moved`, follow_redirects: true, max_attempts: 5 });
  await pg.query("SELECT evpipe.add_route('NP_REDIR', 'np-redir')");
  const rid = await ingest('NP_REDIR');
  const dl = await pg.waitFor('SELECT attempts, last_error FROM evpipe.dead_letters WHERE event_id = $1', (r) => r.length === 1, 15000, [rid]);
  assert.equal(dl[0].attempts, 1);
  assert.equal(dl[0].last_error, 'refused by evpipe.destination_networks: 127.0.0.2 is not in 10.255.255.0/24, 127.0.0.1/32');
  assert.equal(await received('/moved'), 1);
  assert.equal(await received('/elsewhere'), 0);
});

test('reload: tightening the list applies to connections already open (no reuse of an older connection)', async () => {
  await dest('np-tight', 'http', { url: `${sink.url}/tight`, max_attempts: 5 });
  await pg.query("SELECT evpipe.add_route('NP_TIGHT', 'np-tight')");
  const first = await ingest('NP_TIGHT');
  await pg.waitFor('SELECT 1 FROM evpipe.delivered WHERE event_id = $1', (r) => r.length === 1, 15000, [first]);
  // the worker keeps that connection alive; the tighter list must not use it
  await setNetworks('10.255.255.0/24');
  const second = await ingest('NP_TIGHT');
  const dl = await pg.waitFor('SELECT attempts, last_error FROM evpipe.dead_letters WHERE event_id = $1', (r) => r.length === 1, 15000, [second]);
  assert.equal(dl[0].attempts, 1);
  assert.match(dl[0].last_error, /127\.0\.0\.1 is not in 10\.255\.255\.0\/24$/);
  assert.equal(await received('/tight'), 1, 'only the first event reached the sink');
  // after the first seconds, older connections are excluded by their age instead: still refused
  await sleep(2500);
  const third = await ingest('NP_TIGHT');
  await pg.waitFor('SELECT 1 FROM evpipe.dead_letters WHERE event_id = $1', (r) => r.length === 1, 15000, [third]);
  assert.equal(await received('/tight'), 1);
});
