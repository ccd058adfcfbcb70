// SQL-level fuzzing of evpipe.ingest: generated and mutated events (wrong
// types, huge and deep documents, odd Unicode, numbers at the limits, schema
// edge cases). The server must stay up; every refusal carries a class-22 or
// class-23 SQLSTATE and a message. 100,000 events in the short profile,
// 1,000,000 with EVPIPE_PROFILE=long. Deterministic: seeded PRNG.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startCluster } = require('./lib/cluster');
const { makeGenerator } = require('./lib/fuzzgen');

const TOTAL = process.env.EVPIPE_PROFILE === 'long' ? 1000000 : 100000;
const BATCH = 1000;
let pg;

const gen = makeGenerator(Number(process.env.EVPIPE_FUZZ_SEED || 20261124));
const { pick, int, rnd, event } = gen;

before(async () => {
  pg = await startCluster({ config: { 'evpipe.workers': 0 } });
  await pg.query(`SELECT evpipe.register_event_type('FUZZ', '{"type": "object"}')`);
  await pg.query(`SELECT evpipe.register_event_type('FUZZ_STRICT', '{
    "type": "object", "required": ["name", "qty"], "additionalProperties": false,
    "properties": {"name": {"type": "string", "maxLength": 20, "pattern": "^[a-z]+$"},
      "qty": {"type": "integer", "minimum": 0, "maximum": 9, "multipleOf": 1},
      "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": true, "maxItems": 3}}}')`);
  await pg.query(`SELECT evpipe.create_destination('sink', 'http', '{"url": "http://127.0.0.1:9/"}')`);
  await pg.query("SELECT evpipe.add_route('FUZZ*', 'sink')");
  // one call per batch: each event in its own subtransaction, its SQLSTATE returned
  await pg.query(`CREATE FUNCTION fuzz_batch(events jsonb[]) RETURNS TABLE (state text, n bigint, sample text)
    LANGUAGE plpgsql AS $$
    DECLARE e jsonb; st text; msg text; states text[] := '{}'; msgs text[] := '{}';
    BEGIN
      FOREACH e IN ARRAY events LOOP
        BEGIN
          states := states || (evpipe.ingest(e)->>'status'); msgs := msgs || ''::text;
        EXCEPTION WHEN OTHERS THEN
          GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
          states := states || st; msgs := msgs || msg;
        END;
      END LOOP;
      RETURN QUERY SELECT s, count(*), min(m) FROM unnest(states, msgs) AS u(s, m) GROUP BY s;
    END $$`);
});

after(async () => { if (pg) await pg.stop(); });

test(`SQL fuzzer: ${TOTAL} generated and mutated events; server up; refusals are class 22/23 with a message`, async () => {
  const totals = {};
  const t0 = Date.now();
  for (let done = 0; done < TOTAL; done += BATCH) {
    const batch = Array.from({ length: BATCH }, () => JSON.stringify(event()));
    let rows;
    try {
      rows = await pg.query('SELECT * FROM fuzz_batch($1::jsonb[])', [batch]);
    } catch (e) {
      // a batch can fail only at the jsonb input layer (e.g. \\u0000): retry one by one
      rows = [];
      for (const one of batch) {
        try {
          rows.push(...(await pg.query('SELECT * FROM fuzz_batch(ARRAY[$1::jsonb])', [one])));
        } catch (e2) {
          assert.match(e2.code, /^22/, `input layer refusal ${e2.code}: ${e2.message}`);
          rows.push({ state: `input:${e2.code}`, n: 1, sample: e2.message });
        }
      }
    }
    for (const r of rows) {
      totals[r.state] = (totals[r.state] || 0) + Number(r.n);
      if (r.state !== 'accepted' && r.state !== 'duplicate' && !r.state.startsWith('input:')) {
        assert.match(r.state, /^(22|23)/, `unexpected SQLSTATE ${r.state}: ${r.sample}`);
        assert.ok(r.sample && r.sample.length > 0, 'every refusal has a message');
      }
    }
  }
  const secs = (Date.now() - t0) / 1000;
  console.log(`# ${TOTAL} events in ${secs.toFixed(1)} s: ${JSON.stringify(totals)}`);
  assert.ok(totals.accepted > 0, 'some events were accepted');
  assert.ok(Object.keys(totals).length > 4, 'many kinds of refusal were exercised');
  const alive = await pg.query('SELECT 1 AS ok');
  assert.equal(alive[0].ok, 1, 'the server is still up');
  assert.doesNotMatch(pg.log(), /terminated by signal|PANIC/);
  // accounting: every accepted event has exactly one outbox row
  const acct = await pg.query(`SELECT count(*)::int AS events,
    (SELECT count(*)::int FROM evpipe.outbox) AS outbox FROM evpipe.events`);
  assert.equal(acct[0].events, acct[0].outbox);
  assert.equal(acct[0].events, totals.accepted);
});

// The same generator through evpipe.ingest_batch: arrays of 1-40 events with
// repeats (same content: duplicates; other content: 23505). Each call is
// all or nothing: an answer per event, or one class-22/23 refusal whose
// detail names the event's place in the array.
const BATCH_TOTAL = process.env.EVPIPE_PROFILE === 'long' ? 200000 : 20000;

test(`SQL fuzzer, batches: ${BATCH_TOTAL} events through evpipe.ingest_batch; all or nothing; server up`, async () => {
  const before = (await pg.query('SELECT count(*)::int AS n FROM evpipe.events'))[0].n;
  const totals = {};
  let accepted = 0;
  let sent = 0;
  while (sent < BATCH_TOTAL) {
    const arr = [];
    const size = 1 + int(40);
    for (let i = 0; i < size; i++) {
      const r = rnd();
      if (arr.length && r < 0.08) arr.push(pick(arr));                      // a repeat
      else if (arr.length && r < 0.09) arr.push({ ...pick(arr), payload: { other: true } }); // id reused
      else if (r < 0.12) arr.push(event());                                  // likely invalid
      else {
        arr.push({ eventId: `fzb-${gen.next()}`, eventType: pick(['FUZZ', 'FUZZ_STRICT']), source: 'fuzz-src',
          payload: { name: 'n', qty: int(10), tags: ['a'] }, timestamp: '2026-11-21T10:00:00Z' });
      }
    }
    sent += arr.length;
    const body = rnd() < 0.01 ? pick(['{}', '"x"', '1', 'null', JSON.stringify({ events: arr })]) : JSON.stringify(arr);
    try {
      const rows = await pg.query('SELECT evpipe.ingest_batch($1::jsonb) AS r', [body]);
      const answers = rows[0].r;
      assert.ok(Array.isArray(answers) && answers.length === arr.length && body.startsWith('['),
        `one answer per event: ${JSON.stringify(answers).slice(0, 200)}`);
      for (const a of answers) {
        assert.match(a.status, /^(accepted|duplicate)$/);
        totals[a.status] = (totals[a.status] || 0) + 1;
        if (a.status === 'accepted') accepted++;
      }
    } catch (e) {
      assert.match(e.code || '', /^(22|23)/, `unexpected SQLSTATE ${e.code}: ${e.message}`);
      assert.ok(e.message && e.message.length > 0, 'every refusal has a message');
      if (e.detail && e.detail.startsWith('Path $[')) totals.located = (totals.located || 0) + 1;
      totals[e.code] = (totals[e.code] || 0) + 1;
    }
  }
  console.log(`# ${sent} events in batches: ${JSON.stringify(totals)}`);
  assert.ok(accepted > 0 && totals.duplicate > 0, 'batches were accepted, repeats answered as duplicates');
  assert.ok(totals['23505'] > 0 && totals.located > 0, 'conflicts refused, refusals located in the array');
  assert.doesNotMatch(pg.log(), /terminated by signal|PANIC/);
  const acct = await pg.query(`SELECT count(*)::int AS events,
    (SELECT count(*)::int FROM evpipe.outbox) AS outbox FROM evpipe.events`);
  assert.equal(acct[0].events, acct[0].outbox, 'one outbox row per event');
  assert.equal(acct[0].events - before, accepted, 'exactly the accepted events were written');
});
