// Security of delivery: TLS certificates verified by default (turning it
// off is explicit and logged), redirects not followed unless asked, and no
// secret in pg_stat_activity.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { startCluster } = require('./lib/cluster');
const { startPeer } = require('./lib/peers');

let pg;
let plain;
let tlsSink;
let dir;

const ingest = (id, type) => pg.query(`SELECT evpipe.ingest(jsonb_build_object('eventId', $1::text, 'eventType', $2::text,
  'source', 'sec', 'payload', '{}'::jsonb, 'timestamp', '2026-11-21T10:00:00Z'))`, [id, type]);
const dest = (name, config) => pg.query('SELECT evpipe.create_destination($1, $2, $3::jsonb)', [name, 'http', JSON.stringify(config)]);

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evpipe-tls-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')],
  { stdio: 'ignore' });
  tlsSink = await startPeer('http-sink', ['--tls', path.join(dir, 'cert.pem'), path.join(dir, 'key.pem')]);
  plain = await startPeer('http-sink');
  pg = await startCluster({ config: { 'evpipe.workers': 1, 'evpipe.tick_ms': 200 } });
  for (const t of ['TLS_ON', 'TLS_OFF', 'REDIR', 'REDIR_OK', 'SECRET']) {
    await pg.query(`SELECT evpipe.register_event_type($1, '{}')`, [t]);
  }
});

after(async () => {
  if (pg) await pg.stop();
  if (tlsSink) await tlsSink.stop();
  if (plain) await plain.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('TLS certificates are verified by default: a self-signed certificate is refused', async () => {
  await dest('tls-on', { url: `https://127.0.0.1:${tlsSink.port}/on`, max_attempts: 1 });
  await pg.query("SELECT evpipe.add_route('TLS_ON', 'tls-on')");
  await ingest('tls-1', 'TLS_ON');
  const dl = await pg.waitFor("SELECT last_error FROM evpipe.dead_letters WHERE event_id = 'tls-1'", (r) => r.length === 1, 10000);
  assert.match(dl[0].last_error, /certificate|SSL/i, 'the handshake failed: nothing was sent');
});

test('tls_verify false is an explicit, logged per-destination choice', async () => {
  await dest('tls-off', { url: `https://127.0.0.1:${tlsSink.port}/off`, tls_verify: false });
  await pg.query("SELECT evpipe.add_route('TLS_OFF', 'tls-off')");
  await ingest('tls-2', 'TLS_OFF');
  await pg.waitFor("SELECT 1 FROM evpipe.delivered WHERE event_id = 'tls-2'", (r) => r.length === 1, 10000);
  assert.match(pg.log(), /evpipe event=tls_verify_off destination=tls-off/);
});

test('redirects are not followed by default; follow_redirects opts in', async () => {
  await plain.control('POST', '/_control/behavior', { path: '/moved', status: 302, location: `${plain.url}/new-home` });
  await dest('redir', { url: `${plain.url}/moved` });
  await dest('redir-ok', { url: `${plain.url}/moved`, follow_redirects: true });
  await pg.query("SELECT evpipe.add_route('REDIR', 'redir')");
  await pg.query("SELECT evpipe.add_route('REDIR_OK', 'redir-ok')");
  await ingest('r-1', 'REDIR');
  const dl = await pg.waitFor("SELECT attempts, last_status, last_error FROM evpipe.dead_letters WHERE event_id = 'r-1'", (r) => r.length === 1, 10000);
  assert.equal(dl[0].attempts, 1);
  assert.equal(dl[0].last_status, 302);
  assert.match(dl[0].last_error, /redirect not followed/);
  await ingest('r-2', 'REDIR_OK');
  await pg.waitFor("SELECT 1 FROM evpipe.delivered WHERE event_id = 'r-2'", (r) => r.length === 1, 10000);
  const got = await plain.control('GET', '/_control/requests?path=/new-home');
  assert.equal(got.length, 1);
});

test('secrets never appear in pg_stat_activity, stats or logs while delivering', async () => {
  const secret = 'whsec_' + Buffer.from('top-secret-signing-key-42').toString('base64');
  await plain.control('POST', '/_control/behavior', { path: '/slow', hangMs: 1500 });
  await dest('secret-hook', { url: `${plain.url}/slow`, secret, headers: { Authorization: 'Bearer tok-supersecret' } });
  await pg.query("SELECT evpipe.add_route('SECRET', 'secret-hook')");
  for (let i = 0; i < 5; i++) await ingest(`s-${i}`, 'SECRET');
  await pg.waitFor("SELECT count(*)::int AS n FROM evpipe.deliveries WHERE destination = 'secret-hook' AND status = 'in_flight'",
    (r) => r[0].n > 0, 10000);
  const act = JSON.stringify(await pg.waitFor(
    "SELECT query, backend_type FROM pg_stat_activity WHERE backend_type LIKE 'evpipe%'",
    (r) => r.some((x) => /deliveries in flight/.test(x.query)), 5000));
  const stats = JSON.stringify(await pg.query('SELECT * FROM evpipe.stats'));
  for (const s of [secret, 'top-secret', 'tok-supersecret']) {
    assert.ok(!act.includes(s), 'not in pg_stat_activity');
    assert.ok(!stats.includes(s), 'not in evpipe.stats');
    assert.ok(!pg.log().includes(s), 'not in the server log');
  }
  await pg.waitFor("SELECT count(*)::int AS n FROM evpipe.delivered WHERE destination = 'secret-hook'", (r) => r[0].n === 5, 15000);
});
