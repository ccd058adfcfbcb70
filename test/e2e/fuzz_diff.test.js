// The differential fuzzer: the same generated inputs to both installs, the
// extension (ingest and the validator in C) and the managed install (their
// PL/pgSQL twins, installed by evpiped migrate), in two databases of one
// cluster. Every answer must be the same: the jsonb an
// ingest returns, or its SQLSTATE, message, detail and hint; the same for
// ingest_batch, route_explain and evpipe.validate over generated schemas; and
// the same rows written. Deterministic: seeded generators.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client } = require('../peers/node_modules/pg');
const { startCluster } = require('./lib/cluster');
const { runEvpiped } = require('./lib/daemon');
const { makeGenerator } = require('./lib/fuzzgen');

const LONG = process.env.EVPIPE_PROFILE === 'long';
const EVENTS = LONG ? 200000 : 20000;
const BATCHES = LONG ? 5000 : 500;
const SCHEMAS = LONG ? 20000 : 3000;
const CHUNK = 500;
const seed = Number(process.env.EVPIPE_FUZZ_SEED || 20261203);

let pg;
const dbs = {};             // name -> client, as the producer role
const NAMES = ['ext', 'managed'];

// the same configuration in both databases, as the superuser
const SETUP = [
  `SELECT evpipe.register_event_type('FUZZ', '{"type": "object"}')`,
  `SELECT evpipe.register_event_type('FUZZ_STRICT', '{
    "type": "object", "required": ["name", "qty"], "additionalProperties": false,
    "properties": {"name": {"type": "string", "maxLength": 20, "pattern": "^[a-z]+$"},
      "qty": {"type": "integer", "minimum": 0, "maximum": 9, "multipleOf": 1},
      "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": true, "maxItems": 3}}}')`,
  `SELECT evpipe.register_event_type('FUZZ_RICH', '{
    "type": "object", "required": ["name"],
    "$defs": {"tag": {"type": "string", "minLength": 1, "maxLength": 3, "pattern": "^[a-z]+$"}},
    "properties": {"name": {"type": "string", "format": "email"},
      "id": {"type": "string", "format": "uuid"},
      "qty": {"type": ["integer", "null"], "exclusiveMaximum": 5, "minimum": -2},
      "amount": {"type": "number", "multipleOf": 0.5, "exclusiveMinimum": 0},
      "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "minItems": 1, "uniqueItems": true},
      "kind": {"enum": ["a", 1, null, {"x": [1]}]}, "v": {"const": 2},
      "meta": {"type": "object", "additionalProperties": {"type": "integer"}},
      "at": {"type": "string", "format": "date-time"}},
    "additionalProperties": false}')`,
  // a flat schema (required members, properties with a type and a length):
  // the managed install checks a batch of these set-based
  `SELECT evpipe.register_event_type('FUZZ_FLAT', '{
    "type": "object", "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 3}, "qty": {"type": "integer"},
      "ok": {"type": "boolean"}, "none": {"type": "null"}, "x": {"type": "number", "title": "ignored"}}}')`,
  // a second version of a type: events are checked against the newest
  `SELECT evpipe.register_event_type('FUZZ', '{"type": "object", "properties": {"qty": {"type": "integer"}}}')`,
  `SELECT evpipe.create_destination('sink', 'http', '{"url": "http://127.0.0.1:9/sink"}')`,
  `SELECT evpipe.create_destination('ordered', 'http', '{"url": "http://127.0.0.1:9/ordered", "ordering_key": "payload.qty"}')`,
  `SELECT evpipe.create_destination('high', 'http', '{"url": "http://127.0.0.1:9/high"}')`,
  "SELECT evpipe.add_route('FUZZ*', 'sink')",
  "SELECT evpipe.add_route('FUZZ_STRICT', 'ordered')",
  "SELECT evpipe.add_route('FUZZ_RICH', 'high', 'fuzz-src', 'high')",
  "SELECT evpipe.register_source('mapped', 'FUZZ_STRICT', 'id', 'ts')",
  "SELECT evpipe.register_source('bound', 'FUZZ', 'id', 'at')",
  'SELECT evpipe.bind_source(\'bound\', \'fz_other\')',
  'SELECT evpipe.bind_source(\'bound-env\', \'fz_other\')',
  "SELECT evpipe.set_source_limit('limited', 0.001, 3)",
  // per call: each input in its own subtransaction, its answer or its error
  `CREATE FUNCTION public.fz_answers(fn text, inputs jsonb[], srcs text[]) RETURNS text[]
    LANGUAGE plpgsql AS $$
    DECLARE out text[] := '{}'; st text; msg text; det text; hnt text;
    BEGIN
      FOR i IN 1 .. coalesce(array_length(inputs, 1), 0) LOOP
        BEGIN
          out := out || CASE fn
            WHEN 'ingest' THEN evpipe.ingest(inputs[i], srcs[i])::text
            WHEN 'batch' THEN evpipe.ingest_batch(inputs[i], srcs[i])::text
            WHEN 'explain' THEN evpipe.route_explain(inputs[i], srcs[i])::text
            WHEN 'validate' THEN coalesce(evpipe.validate(inputs[i]->0, inputs[i]->1)::text, 'valid') END;
        EXCEPTION WHEN OTHERS THEN
          GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
          out := out || (st || ' | ' || msg || ' | ' || coalesce(det, '') || ' | ' || coalesce(hnt, ''));
        END;
      END LOOP;
      RETURN out;
    END $$`,
  'GRANT EXECUTE ON FUNCTION public.fz_answers(text, jsonb[], text[]) TO fz_producer',
];

before(async () => {
  // evpipe preloaded for the extension's database (its source limits live in shared
  // memory); no worker delivers (the destinations point nowhere); the managed
  // database calls no C of it
  pg = await startCluster({ noExtension: true, config: { 'evpipe.workers': 0, 'evpipe.database': 'ext' } });
  await pg.waitFor('SELECT 1 AS ok', (r) => r.length === 1, 20000);
  await pg.query('CREATE ROLE owner LOGIN CREATEROLE');
  await pg.query('CREATE DATABASE ext');
  await pg.query('CREATE DATABASE managed OWNER owner');
  const r = runEvpiped(['migrate', '--dsn', `host=127.0.0.1 port=${pg.port} dbname=managed user=owner`], { timeoutMs: 60000 });
  assert.equal(r.status, 0, r.stderr);
  for (const name of NAMES) {
    const c = new Client({ host: '127.0.0.1', port: pg.port, user: 'postgres', database: name });
    await c.connect();
    if (name === 'ext') {
      await c.query('SET client_min_messages = error');
      await c.query('CREATE EXTENSION evpipe');
    }
    if (name === 'ext') {
      await c.query('CREATE ROLE fz_producer LOGIN IN ROLE evpipe_producer');
      await c.query('CREATE ROLE fz_other NOLOGIN');
    }
    for (const sql of SETUP) await c.query(sql);
    // the fuzzing runs as a producer: bound sources refuse it, as they would a client
    await c.query('SET ROLE fz_producer');
    dbs[name] = c;
  }
});

after(async () => {
  for (const c of Object.values(dbs)) await c.end().catch(() => {});
  if (pg) await pg.stop();
});

// the answers of both installs to the same inputs; the mismatches, with their inputs
async function compare(fn, inputs, srcs) {
  const answers = {};
  for (const name of NAMES) {
    const res = await dbs[name].query('SELECT public.fz_answers($1, $2::jsonb[], $3::text[]) AS a',
      [fn, inputs.map((x) => JSON.stringify(x)), srcs]);
    answers[name] = res.rows[0].a;
  }
  const diffs = [];
  for (let i = 0; i < inputs.length; i++) {
    if (answers.ext[i] !== answers.managed[i]) {
      diffs.push({ input: JSON.stringify(inputs[i]).slice(0, 300), source: srcs[i], ext: answers.ext[i].slice(0, 400),
        managed: answers.managed[i].slice(0, 400) });
    }
  }
  return { answers: answers.ext, diffs };
}

const kinds = (answers) => {
  const k = {};
  for (const a of answers) {
    const key = a.startsWith('{') || a.startsWith('[') ? 'answer' : a.startsWith('valid') ? 'valid' : a.slice(0, 5);
    k[key] = (k[key] || 0) + 1;
  }
  return k;
};

function assertSame(what, diffs, total) {
  assert.deepEqual(diffs.slice(0, 5), [], `${what}: ${diffs.length} of ${total} answers differ between the extension and the managed install`);
}

test(`differential: ${EVENTS} generated events through ingest and route_explain, the same answers from both installs`, async () => {
  const g = makeGenerator(seed);
  const types = ['FUZZ', 'FUZZ_STRICT', 'FUZZ_RICH', 'NOPE'];
  const sources = ['fuzz-src', 'other', 'limited', 'bound'];
  const seen = [];
  let total = {};
  const allDiffs = [];
  for (let done = 0; done < EVENTS; done += CHUNK) {
    const inputs = [];
    const srcs = [];
    for (let i = 0; i < CHUNK; i++) {
      const r = g.rnd();
      let e;
      if (seen.length && r < 0.05) e = g.pick(seen);                                              // a duplicate
      else if (seen.length && r < 0.07) e = { ...g.pick(seen), payload: { other: g.int(3) } };    // id reused
      // a limited source gets valid events only: a refusal after the token was taken
      // keeps it spent in the extension (shared memory) and gives it back in the
      // managed install (a table, rolled back with the refusal); see README
      else if (r < 0.08) e = { eventId: `lim-${g.next()}`, eventType: 'FUZZ', source: 'limited', payload: { qty: 1 }, timestamp: '2026-11-21T10:00:00Z' };
      else if (r < 0.12) e = { id: `m-${g.next()}`, ts: g.pick(['2026-11-21T10:00:00Z', 'x', 5]), name: g.pick(['ab', 'A', 1]), qty: g.int(12) };
      else {
        e = g.event(types, ['fuzz-src', 'fuzz-src', 'other', 'bound-env']);
        if (e && typeof e === 'object' && !Array.isArray(e) && g.rnd() < 0.3) {
          e.payload = g.pick([{ name: 'a@b.co', qty: 3, tags: ['ab'], at: '2026-12-03T10:00:00Z' },
            { name: 'a@b.co', id: '6f1c2a4e-8b9d-4e2f-a1b3-c5d7e9f0a2b4', qty: null, amount: 2.5, meta: { a: 1 } },
            { name: 'x@y', qty: 7, tags: [], meta: { a: 1.5 } }, { name: 'x' }, { name: 'a@b.co', tags: ['toolong'] },
            { name: 'a@b.co', tags: ['ab', 'ab'], kind: { x: [1.0] }, v: 2.0 }, { name: 'a@b.co', kind: 'b', amount: 0 },
            { name: 'a@b.co', at: '2026-02-30T10:00:00Z', id: 'nope', extra: 1 }]);
          e.priority = g.pick(['high', 'low', undefined]);
        }
      }
      if (e && typeof e === 'object' && !Array.isArray(e) && e.eventId && g.rnd() < 0.5) seen.push(e);
      if (seen.length > 200) seen.shift();
      inputs.push(e);
      // a mapped source gets its own shape; others mostly none
      srcs.push(e && e.id ? 'mapped' : (g.rnd() < 0.15 ? g.pick(sources) : null));
    }
    const { answers, diffs } = await compare('ingest', inputs, srcs);
    allDiffs.push(...diffs);
    for (const [k, v] of Object.entries(kinds(answers))) total[k] = (total[k] || 0) + v;
    if (done % (CHUNK * 10) === 0) {
      const ex = await compare('explain', inputs.slice(0, 50), srcs.slice(0, 50));
      allDiffs.push(...ex.diffs.map((d) => ({ ...d, fn: 'route_explain' })));
    }
  }
  console.log(`# ${EVENTS} events: ${JSON.stringify(total)}; ${allDiffs.length} differences`);
  assertSame('ingest', allDiffs, EVENTS);
  assert.ok(total.answer > EVENTS / 10, `many were accepted: ${JSON.stringify(total)}`);
  assert.ok(Object.keys(total).length > 5, `many kinds of refusal were exercised: ${JSON.stringify(total)}`);
});

// a payload for FUZZ_FLAT: valid mostly, each member now and then of another
// type or length (an integer beyond 64 bits among them, which only the full
// validator can judge)
function flatPayload(g) {
  const p = {};
  const odd = () => g.rnd() < 0.03;
  if (!odd()) p.name = odd() ? g.pick(['', 'abcd', 5, null]) : g.pick(['a', 'ab', 'abc', 'é€x']);
  if (g.rnd() < 0.7) p.qty = odd() ? g.pick([1.5, '3', 2.0, 1e20, -0]) : g.int(100) - 50;
  if (g.rnd() < 0.5) p.ok = odd() ? g.pick(['x', 0, null]) : g.rnd() < 0.5;
  if (g.rnd() < 0.2) p.none = odd() ? g.pick([0, 'null']) : null;
  if (g.rnd() < 0.5) p.x = odd() ? g.pick(['1', true]) : g.rnd() * 100;
  if (g.rnd() < 0.2) p.extra = g.pick([1, 'two', [3], { four: 4 }]);
  return p;
}

test(`differential: ${BATCHES} generated batches through ingest_batch, the same answers`, async () => {
  const g = makeGenerator(seed + 1);
  const allDiffs = [];
  const total = {};
  for (let done = 0; done < BATCHES; done += 100) {
    const inputs = [];
    const srcs = [];
    for (let b = 0; b < 100; b++) {
      const arr = [];
      const size = 1 + g.int(30);
      // a quarter of the batches hold only well-formed events (the managed
      // install checks those set-based, the others event by event)
      const common = b % 4 === 0;
      for (let i = 0; i < size; i++) {
        const r = g.rnd();
        if (arr.length && r < 0.08) arr.push(g.pick(arr));
        else if (arr.length && r < 0.09) arr.push({ ...g.pick(arr), payload: { other: true } });
        else if (!common && r < 0.15) arr.push(g.event(['FUZZ', 'FUZZ_STRICT', 'FUZZ_RICH'], ['fuzz-src']));
        else if (common && r < 0.6) arr.push({ eventId: `fzb-${g.next()}`, eventType: 'FUZZ_FLAT', source: 'fuzz-src',
          payload: flatPayload(g), timestamp: '2026-11-21T10:00:00Z' });
        else arr.push({ eventId: `fzb-${g.next()}`, eventType: g.pick(['FUZZ', 'FUZZ_STRICT']), source: 'fuzz-src',
          payload: { name: 'n', qty: g.int(10), tags: ['a'] }, timestamp: '2026-11-21T10:00:00Z' });
      }
      inputs.push(g.rnd() < 0.02 ? g.pick([{}, 'x', 1, null, { events: arr }]) : arr);
      srcs.push(null);
    }
    const { answers, diffs } = await compare('batch', inputs, srcs);
    allDiffs.push(...diffs);
    for (const [k, v] of Object.entries(kinds(answers))) total[k] = (total[k] || 0) + v;
  }
  console.log(`# ${BATCHES} batches: ${JSON.stringify(total)}; ${allDiffs.length} differences`);
  assertSame('ingest_batch', allDiffs, BATCHES);
  assert.ok(total.answer > 0 && total['23505'] > 0, `batches accepted and refused: ${JSON.stringify(total)}`);
});

test(`differential: ${SCHEMAS} generated schemas and documents through evpipe.validate, the same answers`, async () => {
  const g = makeGenerator(seed + 2);
  const allDiffs = [];
  const total = {};
  for (let done = 0; done < SCHEMAS; done += CHUNK) {
    const inputs = [];
    for (let i = 0; i < CHUNK; i++) {
      const s = g.schema();
      const doc = g.rnd() < 0.5 ? g.value(0) : g.pick([{ a: 1, name: 'abc', qty: 3 }, [1, 2, 2], 'a@b.co', 7, 2.5, null, { 'b c': [], é: 'x' }]);
      inputs.push([s, doc]);
    }
    const { answers, diffs } = await compare('validate', inputs, inputs.map(() => null));
    allDiffs.push(...diffs);
    for (const [k, v] of Object.entries(kinds(answers))) total[k] = (total[k] || 0) + v;
  }
  console.log(`# ${SCHEMAS} schemas: ${JSON.stringify(total)}; ${allDiffs.length} differences`);
  assertSame('validate', allDiffs, SCHEMAS);
  assert.ok(total.valid > 0 && total.answer > 0 && total['22023'] > 0, `valid, invalid documents and refused schemas: ${JSON.stringify(total)}`);
});

test('differential: the rows written are the same in both installs', async () => {
  const tables = { events: 'event_id', outbox: 'event_id, destination', dead_letters: 'event_id, destination' };
  for (const [t, order] of Object.entries(tables)) {
    const rows = {};
    for (const name of NAMES) {
      const c = dbs[name];
      await c.query('RESET ROLE');
      const cols = (await c.query(`SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position) AS c
        FROM information_schema.columns WHERE table_schema = 'evpipe' AND table_name = $1
        AND column_name <> 'id' AND data_type NOT LIKE 'timestamp%'`, [t])).rows[0].c;
      // a traceparent ingest makes up (none was sent) is random in both
      const strip = (r) => {
        delete r.traceparent;
        for (const v of Object.values(r)) if (v && typeof v === 'object' && !Array.isArray(v)) delete v.traceparent;
        return JSON.stringify(r);
      };
      rows[name] = (await c.query(`SELECT ${cols} FROM evpipe.${t} ORDER BY ${order}`)).rows.map(strip);
      await c.query('SET ROLE fz_producer');
    }
    assert.equal(rows.ext.length, rows.managed.length, `evpipe.${t}: as many rows`);
    const first = rows.ext.findIndex((r, i) => r !== rows.managed[i]);
    assert.equal(first, -1, `evpipe.${t}: first difference at ${first}:\n ext ${rows.ext[first]}\n managed ${rows.managed[first]}`);
    if (t !== 'dead_letters') assert.ok(rows.ext.length > 1000, `evpipe.${t} has rows`);
  }
});
