// End-to-end: ordered delivery per key (destination key ordering_key). Events
// whose key has the same value are delivered one at a time in ingest order:
// the next starts only after the previous is final. Different keys go in
// parallel; a failing key holds back only itself; kill -9 keeps the order.
// Every evpipe setting at its default.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startCluster, sleep } = require('./lib/cluster');
const { startPeer } = require('./lib/peers');
const { evpipeApi } = require('./lib/api');

let pg;
let sink;

const { q, dest, route, type, fnDest } = evpipeApi(() => pg);
const waitDone = (d, n, ms = 60000) => pg.waitFor(
  `SELECT (SELECT count(*) FROM evpipe.delivered WHERE destination = $1)::int
     + (SELECT count(*) FROM evpipe.dead_letters WHERE destination = $1)::int AS n`, (r) => r[0].n >= n, ms, [d]);

// keys x perKey events in one transaction, interleaved: event g has key a(g % keys)
// and is the (g / keys)-th of its key
async function burst(eventType, prefix, keys, perKey, payloadSql = null) {
  const n = keys * perKey;
  const payload = payloadSql || `jsonb_build_object('accountId', 'a' || (g % ${keys}), 'seq', g / ${keys})`;
  const rows = await q(`SELECT count(*)::int AS n FROM (SELECT evpipe.ingest(jsonb_build_object('eventId', $2 || g,
      'eventType', $1::text, 'source', 'ordering', 'payload', ${payload},
      'timestamp', '2026-12-02T10:00:00Z')) FROM generate_series(0, $3::int - 1) g) s`, [eventType, prefix, n]);
  assert.equal(rows[0].n, n);
}

// From the sink's log: per key, each event's requests; asserts that every
// request of an event comes after every request of the key's previous event
// (in ingest order), i.e. one at a time, in order, retries included.
function assertInOrder(reqs, keyOf, seqOf) {
  const byKey = new Map();
  for (const r of reqs) {
    const body = JSON.parse(r.body);
    const k = keyOf(body);
    if (!byKey.has(k)) byKey.set(k, new Map());
    const ev = byKey.get(k);
    const s = seqOf(body);
    if (!ev.has(s)) ev.set(s, []);
    ev.get(s).push(r.seq);
  }
  for (const [k, ev] of byKey) {
    const seqs = [...ev.keys()].sort((a, b) => a - b);
    for (let i = 1; i < seqs.length; i++) {
      const prevLast = Math.max(...ev.get(seqs[i - 1]));
      const firstNext = Math.min(...ev.get(seqs[i]));
      assert.ok(firstNext > prevLast, `key ${k}: event ${seqs[i]} was sent (request ${firstNext}) before event ${seqs[i - 1]} was final (request ${prevLast})`);
    }
  }
  return byKey;
}

const requests = (path) => sink.control('GET', `/_control/requests?path=${encodeURIComponent(path)}`);

before(async () => {
  sink = await startPeer('http-sink');
  pg = await startCluster();
  await pg.waitWorkers(2); // the in-server workers, or (daemon host) two connected evpiped
});

after(async () => {
  if (pg) await pg.stop();
  if (sink) await sink.stop();
});

test('20 keys x 25 events in one transaction, each event failing once: per key one at a time, in ingest order', async () => {
  await sink.control('POST', '/_control/behavior', { path: '/o-flaky', failEachTimes: 1, failStatus: 503 });
  await type('O_FLAKY');
  await dest('o-flaky', 'http', { url: `${sink.url}/o-flaky`, ordering_key: 'payload.accountId', backoff_base_ms: 20, backoff_max_ms: 100 });
  await route('O_FLAKY', 'o-flaky');
  const t0 = Date.now();
  await burst('O_FLAKY', 'of-', 20, 25);
  await waitDone('o-flaky', 500);
  const reqs = await requests('/o-flaky');
  assert.equal(reqs.length, 1000, 'two requests per event (503, then 200)');
  const byKey = assertInOrder(reqs, (b) => b.payload.accountId, (b) => b.payload.seq);
  assert.equal(byKey.size, 20);
  const keys = await q("SELECT DISTINCT ordering_key FROM evpipe.outbox WHERE destination = 'o-flaky'");
  assert.deepEqual(keys, [], 'nothing left');
  // keys went in parallel: far fewer than 1000 sequential round trips of backoff
  console.log(`# 500 ordered events (20 keys), each failing once: ${Date.now() - t0} ms`);
});

test('a failing key holds back only itself; its head dead-letters naming the key, then the next event of the key goes', async () => {
  await sink.control('POST', '/_control/behavior', { path: '/o-bad', failBodyIncludes: '"accountId": "a0"', failStatus: 503 });
  await type('O_BAD');
  await dest('o-bad', 'http', { url: `${sink.url}/o-bad`, ordering_key: 'payload.accountId', max_attempts: 3, backoff_base_ms: 300, backoff_max_ms: 600 });
  await route('O_BAD', 'o-bad');
  await burst('O_BAD', 'ob-', 10, 4); // key a0 has events ob-0, ob-10, ob-20, ob-30
  // the nine other keys finish while a0 is still on its first events
  await pg.waitFor("SELECT count(*)::int AS n FROM evpipe.delivered WHERE destination = 'o-bad'", (r) => r[0].n >= 36, 30000);
  const pendingA0 = await q("SELECT count(*)::int AS n FROM evpipe.outbox WHERE destination = 'o-bad' AND ordering_key = 'a0'");
  assert.ok(pendingA0[0].n >= 2, `a0 is still working through its events (${pendingA0[0].n} left)`);
  await waitDone('o-bad', 40);
  const dl = await q("SELECT event_id, ordering_key, attempts FROM evpipe.dead_letters WHERE destination = 'o-bad' ORDER BY dead_at, id");
  assert.deepEqual(dl.map((r) => r.event_id), ['ob-0', 'ob-10', 'ob-20', 'ob-30'], 'dead-lettered one after another, in order');
  assert.ok(dl.every((r) => r.ordering_key === 'a0' && r.attempts === 3));
  assertInOrder(await requests('/o-bad'), (b) => b.payload.accountId, (b) => b.payload.seq);
  // a replayed dead letter goes after what its key still has pending (nothing here): it is delivered
  await sink.control('POST', '/_control/behavior', { path: '/o-bad', status: 200 });
  assert.equal((await q("SELECT evpipe.replay_dead_letters('o-bad', event_id => 'ob-20') AS n"))[0].n, 1);
  const row = await q("SELECT ordering_key FROM evpipe.outbox WHERE event_id = 'ob-20'");
  assert.ok(row.length === 0 || row[0].ordering_key === 'a0', 'the replayed row keeps its key');
  await pg.waitFor("SELECT count(*)::int AS n FROM evpipe.delivered WHERE event_id = 'ob-20'", (r) => r[0].n === 1, 20000);
});

test('events without the member form the default group, ordered among themselves', async () => {
  await type('O_DEFAULT');
  await dest('o-default', 'http', { url: `${sink.url}/o-default`, ordering_key: 'payload.accountId' });
  await route('O_DEFAULT', 'o-default');
  await burst('O_DEFAULT', 'od-', 1, 60, "jsonb_build_object('seq', g)");
  const keys = await q("SELECT DISTINCT ordering_key AS k FROM evpipe.outbox WHERE destination = 'o-default' UNION SELECT '' WHERE false");
  assert.ok(keys.every((r) => r.k === ''), `default group is the empty key: ${JSON.stringify(keys)}`);
  await waitDone('o-default', 60);
  const reqs = await requests('/o-default');
  assert.deepEqual(reqs.map((r) => JSON.parse(r.body).payload.seq), [...Array(60).keys()], 'one at a time, in ingest order');
});

test('function destination: a handler sees each key in ingest order', async () => {
  await q('CREATE TABLE ordered_log (n bigserial PRIMARY KEY, account text, seq int)');
  await q(`CREATE FUNCTION ordered_handler(e jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO ordered_log (account, seq) VALUES (e->'payload'->>'accountId', (e->'payload'->>'seq')::int) $$`);
  await type('O_FN');
  await fnDest('o-fn', { function: 'public.ordered_handler(jsonb)', ordering_key: 'payload.accountId' },
    ['TABLE ordered_log', 'FUNCTION ordered_handler(jsonb)']);
  await route('O_FN', 'o-fn');
  await burst('O_FN', 'ofn-', 5, 40);
  await waitDone('o-fn', 200);
  const rows = await q('SELECT account, array_agg(seq ORDER BY n) AS seqs FROM ordered_log GROUP BY 1 ORDER BY 1');
  assert.equal(rows.length, 5);
  for (const r of rows) assert.deepEqual(r.seqs, [...Array(40).keys()], `account ${r.account} in order`);
});

test('kill -9 of the workers mid-flight: the event in flight is delivered again before anything newer of its key', async () => {
  await sink.control('POST', '/_control/behavior', { path: '/o-kill', delayMs: 150 });
  await type('O_KILL');
  await dest('o-kill', 'http', { url: `${sink.url}/o-kill`, ordering_key: 'payload.accountId' });
  await route('O_KILL', 'o-kill');
  await burst('O_KILL', 'ok-', 8, 15);
  const mark = pg.logMark();
  const started = (await q('SELECT pg_postmaster_start_time()::text AS t'))[0].t;
  for (let i = 0; i < 3; i++) {
    await sleep(700);
    await pg.killWorkers('SIGKILL');
    await pg.waitReady();
  }
  await waitDone('o-kill', 120, 120000);
  if (pg.host === 'daemon') {
    // a killed evpiped takes only its session with it: the server runs on, and the rows the
    // daemon had in flight are released by another holder once its session (its lock) is gone
    assert.equal((await q('SELECT pg_postmaster_start_time()::text AS t'))[0].t, started, 'no server restart');
    assert.doesNotMatch(pg.logSince(mark), /terminated by signal|reinitializing/);
    assert.match(pg.logSince(mark), /event=leases_released rows=[1-9]\d* reason="holder is gone"/);
  } else {
    // a killed worker is a crash of the server: every backend restarts, leases are released
    assert.match(pg.logSince(mark), /evpipe delivery worker[^\n]*\(PID \d+\) was terminated by signal 9/);
  }
  assert.equal((await q("SELECT count(*)::int AS n FROM evpipe.delivered WHERE destination = 'o-kill'"))[0].n, 120);
  const reqs = await requests('/o-kill');
  assert.ok(reqs.length > 120, `some requests were cut by the kills and sent again (${reqs.length})`);
  assertInOrder(reqs, (b) => b.payload.accountId, (b) => b.payload.seq);
});
