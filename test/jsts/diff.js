#!/usr/bin/env node
// Differential check of the JSON Schema validator: the C one (src/jsonschema.c through evpipe.validate and
// evpipe.ingest in a plain extension database) against the PL/pgSQL twin (sql/managed/jsonschema.sql loaded
// over the extension in another database). Random (schema, instance) pairs; every answer must agree: the
// result of evpipe.validate, or its error's SQLSTATE, message and detail; and, for object instances,
// evpipe._validate_at(schema, instance, '$.payload', max_depth) against the detail ingest reports.
//
//   node test/jsts/diff.js C_CONNSTRING TWIN_CONNSTRING [COUNT] [SEED]
//
// The twin database needs the twins loaded (psql -f sql/managed/jsonschema.sql). Exit status 1 on any
// difference; the first differences are printed as reproducible SQL.
'use strict';
const { Client } = require('../peers/node_modules/pg');

const [cConn, tConn] = [process.argv[2], process.argv[3]];
const COUNT = Number(process.argv[4] || 3000);
let seed = Number(process.argv[5] || 1);
if (!cConn || !tConn) {
  console.error('usage: diff.js C_CONNSTRING TWIN_CONNSTRING [COUNT] [SEED]');
  process.exit(2);
}

// a small deterministic PRNG (mulberry32)
function rnd() {
  seed |= 0; seed = (seed + 0x6D2B79F5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rnd() * a.length)];
const chance = (p) => rnd() < p;
const int = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));

// JSON text with numbers kept as written: {$n: "1.0"} is the number token 1.0
function ser(v) {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return '[' + v.map(ser).join(',') + ']';
  if (v.$n !== undefined) return v.$n;
  return '{' + Object.keys(v).map((k) => JSON.stringify(k) + ':' + ser(v[k])).join(',') + '}';
}

const NUMS = ['0', '1', '-1', '2', '3', '1.0', '2.0', '0.1', '0.2', '0.3', '1.5', '-2.5', '10', '100', '19.99',
  '1.005', '0.01', '1e2', '1.5e1', '1e20', '1e-5', '123456789012345678901234567890', '9007199254740993',
  '9007199254740992.0', '9223372036854775807', '9223372036854775808', '-9223372036854775808', '1e308', '1e-320',
  '0.30000000000000004', '7', '6', '5', '4.99', '10.01', '1e400', '-0', '-0.0', '0.5', '1000001', '3.0000000000000001'];
const NAMES = ['a', 'b', 'c', 'name', 'id', 'x_1', 'A', '_', 'a.b', 'x"y', 'back\\slash', 'sp ace', '', '1a',
  'caf\u00e9', '\u65e5\u672c', 'tab\there', 'nl\nx', 'del\u007f', 'e\u0301', 'emoji\u{1F600}',
  'n'.repeat(60), 'q"'.repeat(30), '\u00e9'.repeat(30), 'L'.repeat(260), '$ref', 'type'];
const STRS = ['', 'a', 'ab', 'abc', 'abcdef', 'ABC-123', 'abc-123', '12a', '123', 'x/y', '\u00e9\u00e9\u00e9',
  '\u{1F600}\u{1F600}', 'a\nb', 'tab\t', 'q"uote', 'back\\', 'A'.repeat(80), '\u00e9'.repeat(50),
  '6f1c2a4e-8b9d-4e2f-a1b3-c5d7e9f0a2b4', '6F1C2A4E-8B9D-4E2F-A1B3-C5D7E9F0A2B4', '6f1c2a4e8b9d4e2fa1b3c5d7e9f0a2b4',
  '2024-02-29T23:59:60.5+05:30', '2023-02-29T00:00:00Z', '2023-01-01T00:00:00', '2026-11-21T10:00:00Z',
  '2026-11-21t10:00:00.123z', '2026-13-01T00:00:00Z', '2026-11-21T10:00:00+24:00', '2026-11-21T10:00:00.Z',
  'ann.lee+x@mail.example.com', 'ann@example', 'a@-x.com', 'a@x-.com', '.a@x.com', 'a.@x.com', 'a..b@x.com',
  'a@b@c.com', '@x.com', 'a@x..com', 'a@x.com.', 'j\u00f6rg@x.com', 'a@' + 'l'.repeat(64) + '.com', 'word here',
  'x y', ' lead', 'a b c', 'hello world', '<tag>', 'a_b-c', 'a-b', 'foo.bar', 'aaa', 'a{2}', '\u00a0', '\u2003x'];
const PATTERNS = ['^[A-Z]{3}-\\d{3}$', '^\\d+$', 'b', '^[\\w-]+$', '^a$', '^$', 'a|b', '^(ab)+$', '^.{3}$',
  '\\s', '\\S+', '\\D', '\\W', '^[^0-9]*$', '[[:alpha:]]', '^[[:digit:]]+$', '\\.', 'x\\/y', '\\<word', 'here\\>',
  '^\\\\', '\\\\d', '[\\]]', '[\\[]d', '[\\d.]+', '[\\s]', '\\n', '\\t', '(', 'a{1000}', '(a{1000}){1000}',
  '((a{50}){50}){50}', 'a{5000}', 'x+++', 'a**', '\\bword', '\\u0041', '\\', '[\\D]', 'a{2,}', 'a{,3}', 'a{2,3}',
  '^(a|b|c){1,3}$', '\u00e9+', '^.$', '[a-z]', '(?=a)', '*a', 'a{', '{a}', '()', '\\{', '[]a]', '[^]a]',
  '[[.a.]]', '[[=a=]]', 'a\\`', "x\\'", '^\\w+@\\w+\\.\\w+$', '\\d{2}-\\d{2}', '(((((a)))))', 'x'.repeat(1100),
  '\\d'.repeat(600), '^\\p{L}$', 'a{1,1001}', '(a*)*', 'a?b?c?'];
const FORMATS = ['uuid', 'date-time', 'email', 'hostname', 'ipv4', 5];
const TYPES = ['null', 'boolean', 'object', 'array', 'number', 'string', 'integer'];

const num = () => ({ $n: pick(NUMS) });
const nameOf = () => pick(NAMES);

function randValue(depth) {
  const r = rnd();
  if (depth > 3 || r < 0.55) {
    return pick([null, true, false, num(), num(), pick(STRS), pick(STRS)]);
  }
  if (r < 0.75) {
    const a = [];
    for (let i = int(0, 4); i > 0; i--) a.push(randValue(depth + 1));
    return a;
  }
  const o = {};
  for (let i = int(0, 4); i > 0; i--) o[nameOf()] = randValue(depth + 1);
  return o;
}

// a schema, mostly valid; ctx.defs lists definition names for $ref
function randSchema(depth, ctx) {
  if (chance(0.06)) return chance(0.7);
  if (chance(0.01)) return pick([null, 1, 'x', []]);
  const s = {};
  const kws = [];
  const n = int(0, 5);
  for (let i = 0; i < n; i++) kws.push(pick(['type', 'type', 'type', 'enum', 'const', 'minimum', 'maximum',
    'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf', 'minLength', 'maxLength', 'pattern', 'pattern', 'format',
    'minItems', 'maxItems', 'uniqueItems', 'items', 'items', 'required', 'properties', 'properties', 'properties',
    'additionalProperties', '$ref', 'title', 'description', 'default', 'examples', '$comment', 'anyOf', 'allOf',
    'if', 'prefixItems', 'contains', '$defs']));
  const bad = () => chance(0.04);
  for (const k of kws) {
    switch (k) {
      case 'type':
        if (bad()) s.type = pick(['strnig', [], ['string', 'string'], 5, ['string', 7]]);
        else if (chance(0.6)) s.type = pick(TYPES);
        else { const t = TYPES.filter(() => chance(0.3)); s.type = t.length ? t : ['string']; }
        break;
      case 'enum':
        s.enum = bad() ? pick([[], 'x', {}]) : Array.from({ length: int(1, 4) }, () => randValue(2));
        break;
      case 'const': s.const = randValue(1); break;
      case 'minimum': case 'maximum': case 'exclusiveMinimum': case 'exclusiveMaximum':
        s[k] = bad() ? pick(['1', null, { $n: '1e400' }]) : num();
        break;
      case 'multipleOf':
        s[k] = bad() ? pick([{ $n: '0' }, { $n: '-1' }, { $n: '1e-400' }, 'x']) :
          { $n: pick(['0.01', '3', '2', '0.1', '1.5', '1', '1e-5', '7', '1e20', '9007199254740993', '0.3', '2.0', '3.0000000000000001']) };
        break;
      case 'minLength': case 'maxLength': case 'minItems': case 'maxItems':
        s[k] = bad() ? pick([{ $n: '1.5' }, { $n: '-1' }, 'x', { $n: '2147483648' }, { $n: '1e400' }]) :
          { $n: pick(['0', '1', '2', '3', '5', '2.0', '10']) };
        break;
      case 'uniqueItems': s[k] = bad() ? 1 : chance(0.8); break;
      case 'pattern': s[k] = bad() ? 5 : pick(PATTERNS); break;
      case 'format': s[k] = chance(0.85) ? pick(FORMATS.slice(0, 3)) : pick(FORMATS); break;
      case 'items':
        s[k] = bad() ? [{}] : depth < 4 ? randSchema(depth + 1, ctx) : {};
        break;
      case 'required':
        s[k] = bad() ? pick(['a', [1], ['a', 'a']]) : Array.from({ length: int(0, 3) }, nameOf).filter((v, i, a) => a.indexOf(v) === i);
        break;
      case 'properties': {
        if (bad()) { s[k] = pick([[], 'x']); break; }
        const p = {};
        for (let i = int(1, 4); i > 0; i--) p[nameOf()] = depth < 4 ? randSchema(depth + 1, ctx) : {};
        s[k] = p;
        break;
      }
      case 'additionalProperties':
        s[k] = chance(0.5) ? chance(0.6) ? false : true : depth < 4 ? randSchema(depth + 1, ctx) : {};
        break;
      case '$ref':
        if (ctx.defs.length && !bad()) s[k] = '#/' + ctx.kw + '/' + pick(ctx.defs).replace(/~/g, '~0').replace(/\//g, '~1');
        else s[k] = pick(['#/$defs/missing', '#/x', 'http://x/y', 5, '#/definitions/a~1b']);
        break;
      case '$defs': if (depth > 0) s[k] = {}; break;
      case 'title': s[k] = chance(0.5) ? 't' : 5; break;
      case 'description': s[k] = 'd'; break;
      case 'default': s[k] = randValue(2); break;
      case 'examples': s[k] = [1]; break;
      case '$comment': s[k] = 'c'; break;
      default:
        if (chance(0.3)) s[k] = []; // unsupported keyword
    }
  }
  return s;
}

function randRoot() {
  const ctx = { defs: [], kw: chance(0.5) ? '$defs' : 'definitions' };
  if (chance(0.25)) {
    ctx.defs = ['n', 'a/b', 'x~y', 'p'].filter(() => chance(0.6));
    if (!ctx.defs.length) ctx.defs = ['n'];
  }
  const s = randSchema(0, ctx);
  if (ctx.defs.length && typeof s === 'object' && s !== null && !Array.isArray(s)) {
    const d = {};
    for (const name of ctx.defs) {
      d[name] = chance(0.15) ? { $ref: '#/' + ctx.kw + '/' + pick(ctx.defs).replace(/~/g, '~0').replace(/\//g, '~1') }
        : randSchema(1, ctx);
    }
    s[ctx.kw] = d;
    if (chance(0.03)) s[ctx.kw === '$defs' ? 'definitions' : '$defs'] = {};
    if (chance(0.5)) s.$ref = '#/' + ctx.kw + '/' + pick(ctx.defs).replace(/~/g, '~0').replace(/\//g, '~1');
  }
  return s;
}

// an instance shaped by the schema, with random deviations
function instFor(s, depth, root) {
  if (depth > 6 || chance(0.12) || s === null || typeof s !== 'object' || Array.isArray(s)) return randValue(3);
  if (typeof s.$ref === "string" && root && chance(0.7)) {
    const name = s.$ref.replace(/^#\/(\$defs|definitions)\//, '').replace(/~1/g, '/').replace(/~0/g, '~');
    const defs = root.$defs || root.definitions;
    if (defs && defs[name] && depth < 5) return instFor(defs[name], depth + 1, root);
  }
  if (s.enum && Array.isArray(s.enum) && chance(0.6)) return pick(s.enum);
  if (s.const !== undefined && chance(0.6)) return s.const;
  let t = typeof s.type === 'string' ? s.type : Array.isArray(s.type) && s.type.length ? pick(s.type) : null;
  if (!t) {
    if (s.properties || s.required || s.additionalProperties !== undefined) t = 'object';
    else if (s.items || s.minItems || s.uniqueItems) t = 'array';
    else if (s.pattern || s.format || s.minLength) t = 'string';
    else if (s.minimum || s.multipleOf || s.maximum) t = 'number';
    else t = pick(TYPES);
  }
  switch (t) {
    case 'null': return null;
    case 'boolean': return chance(0.5);
    case 'number': case 'integer': return num();
    case 'string': return pick(STRS);
    case 'array': {
      const a = [];
      for (let i = int(0, 5); i > 0; i--) a.push(s.items !== undefined ? instFor(s.items, depth + 1, root) : randValue(3));
      if (chance(0.3) && a.length) a.push(pick(a));
      if (chance(0.1)) a.push({ $n: '1.0' }, { $n: '1' });
      return a;
    }
    default: {
      const o = {};
      const props = s.properties && typeof s.properties === 'object' && !Array.isArray(s.properties) ? s.properties : {};
      for (const k of Object.keys(props)) if (chance(0.8)) o[k] = instFor(props[k], depth + 1, root);
      if (Array.isArray(s.required)) for (const k of s.required) if (typeof k === 'string' && chance(0.85) && !(k in o)) o[k] = randValue(3);
      for (let i = int(0, 2); i > 0; i--) if (chance(0.3)) o[nameOf()] = randValue(3);
      return o;
    }
  }
}

function deepDoc(levels, kind) {
  let s = '1';
  for (let i = 0; i < levels; i++) s = kind === 'o' ? '{"k":' + s + '}' : '[' + s + ']';
  return s;
}

async function answer(client, sql, params) {
  try {
    const r = await client.query(sql, params);
    return JSON.stringify(r.rows[0]);
  } catch (e) {
    return `ERROR ${e.code} ${e.message} | ${e.detail || ''}`;
  }
}

async function main() {
  const c = new Client({ connectionString: cConn });
  const t = new Client({ connectionString: tConn });
  await c.connect();
  await t.connect();
  await t.query("SET client_min_messages = warning");
  await c.query("SET client_min_messages = warning");
  // ingest fixtures in the C database (a destination, a route for every type)
  await c.query(`DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM evpipe.destinations WHERE name = 'jsdiff') THEN
      PERFORM evpipe.create_destination('jsdiff', 'http', '{"url": "http://127.0.0.1:9/jsdiff"}');
    END IF;
    EXCEPTION WHEN OTHERS THEN NULL; END $$`);
  let ingestOk = true;
  try {
    await c.query("SELECT evpipe.register_event_type('JSDIFF_PROBE', '{}')");
    await c.query("SELECT evpipe.add_route('JSDIFF_*', 'jsdiff') WHERE NOT EXISTS (SELECT FROM evpipe.routes WHERE event_type = 'JSDIFF_*')");
  } catch (e) {
    ingestOk = false;
    console.error(`# ingest comparison off: ${e.message}`);
  }

  const pairs = [];
  for (let i = 0; i < COUNT; i++) {
    const s = randRoot();
    pairs.push([ser(s), ser(instFor(s, 0, s))]);
  }
  // fixed cases: depth limits, null documents and schemas, long paths
  pairs.push(['{}', deepDoc(64, 'a')], ['{}', deepDoc(65, 'a')], ['{}', deepDoc(63, 'o')], ['{}', deepDoc(64, 'o')],
    ['{}', 'null'], ['null', '1'], ['true', '[]'], ['{"items":' + deepDoc(0) + '}', '1'],
    [deepDoc(200, 'a'), '1'], [deepDoc(136, 'a'), '1'], [deepDoc(137, 'a'), '1'],
    ['{"items":'.repeat(64) + '{}' + '}'.repeat(64), '1'], ['{"items":'.repeat(65) + '{}' + '}'.repeat(65), '1']);
  {
    // a long path: 8 nested 40-character names
    let sch = '', ins = '';
    for (let k = 0; k < 8; k++) {
      const nm = String.fromCharCode(97 + k) + 'n'.repeat(39);
      sch += `{"properties":{"${nm}":`;
      ins += `{"${nm}":`;
    }
    pairs.push([sch + '{"type":"string"}' + '}}'.repeat(8), ins + '1' + '}'.repeat(8)]);
  }

  let diffs = 0, invalid = 0, errors = 0, validN = 0, ingestN = 0, ingestErr = 0;
  for (const [s, d] of pairs) {
    const q = 'SELECT evpipe.validate($1::jsonb, $2::jsonb) AS v';
    const a = await answer(c, q, [s, d]);
    const b = await answer(t, q, [s, d]);
    if (a.startsWith('ERROR')) errors++; else if (a === '{"v":null}') validN++; else invalid++;
    if (a !== b) {
      if (++diffs <= 15) console.log(`DIFF validate\n  schema:   ${s}\n  document: ${d}\n  C:    ${a}\n  twin: ${b}`);
      continue;
    }
    // object documents of valid schemas: _validate_at with root $.payload against ingest's detail
    if (ingestOk && !a.startsWith('ERROR') && d.startsWith('{') && s.length < 20000) {
      ingestN++;
      const type = 'JSDIFF_' + ingestN;
      const ca = await answer(c, `SELECT * FROM (SELECT evpipe.register_event_type($1, $2::jsonb)) r,
        LATERAL (SELECT evpipe.ingest(jsonb_build_object('eventId', $1 || '-e', 'eventType', $1, 'source', 'jsdiff',
          'payload', $3::jsonb, 'timestamp', '2026-11-21T10:00:00Z'))) i`, [type, s, d]);
      const m = /ERROR \S+ event payload does not match[^|]*\| Path (.*), rule "([^"]*)": (.*)\.$/s.exec(ca);
      if (m) ingestErr++;
      const want = m ? JSON.stringify([m[1], m[2], m[3]]) : /ERROR \S+ event payload nests too deeply/.test(ca) ? 'DEEP' : 'null';
      const tr = await t.query(`SELECT CASE WHEN evpipe._too_deep($2::jsonb, 64) THEN 'DEEP'
        ELSE COALESCE(to_jsonb(evpipe._validate_at($1::jsonb, $2::jsonb, '$.payload', 64))::text, 'null') END AS v`, [s, d]);
      const got = tr.rows[0].v === 'DEEP' || tr.rows[0].v === 'null' ? tr.rows[0].v : JSON.stringify(JSON.parse(tr.rows[0].v));
      if (got !== want && !(want === 'null' && /accepted|ERROR/.test(ca) && !m && got === 'null')) {
        if (++diffs <= 15) console.log(`DIFF _validate_at\n  schema:   ${s}\n  payload:  ${d}\n  C ingest: ${ca}\n  twin:     ${got}`);
      }
    }
  }
  console.log(`${pairs.length} pairs (${validN} valid, ${invalid} invalid documents, ${errors} refused schemas), ` +
    `${ingestN} also through ingest (${ingestErr} refused there): ${diffs} differences`);
  await c.end();
  await t.end();
  process.exit(diffs ? 1 : 0);
}

main().catch((e) => { console.error(e); process.exit(2); });
