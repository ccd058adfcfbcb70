// Seeded generators for the SQL fuzzers (fuzz_sql, fuzz_diff): mutated events
// (wrong types, huge and deep documents, odd Unicode, numbers at the limits),
// JSON values, and JSON Schemas built from the keywords evpipe supports.
// Deterministic: an xorshift32 PRNG per generator.
'use strict';

const oddStrings = [
  '', ' ', 'a', 'é', '😀', '\u200b', '\u202e', '\ufeff', 'x'.repeat(300), '"', '\\', '\n\t\r',
  "'; DROP TABLE evpipe.events; --", '$$', '%s%n', '\ud83d\ude00'.repeat(50), 'A'.repeat(129),
  '2026-11-21T10:00:00Z', '2026-02-30T10:00:00Z', '0000-01-01T00:00:00Z', '9999-12-31T23:59:60Z',
  '6f1c2a4e-8b9d-4e2f-a1b3-c5d7e9f0a2b4', 'ACCOUNT_UPDATED', 'FUZZ', 'fuzz-src', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
];
const oddNumbers = [0, -0, 1, -1, 1.5, 1e308, -1e308, 5e-324, 2 ** 53, 2 ** 53 + 1, 2 ** 63, -(2 ** 63), 123456789012345678901234567890, 0.1 + 0.2];

function makeGenerator(seed0) {
  let seed = seed0 >>> 0 || 1;
  const rnd = () => {
    seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0;
    return seed / 4294967296;
  };
  const pick = (a) => a[Math.floor(rnd() * a.length)];
  const int = (n) => Math.floor(rnd() * n);
  let counter = 0;
  const next = () => ++counter;

  function value(depth) {
    const r = rnd();
    if (depth > 6 || r < 0.35) return pick([null, true, false, pick(oddNumbers), pick(oddStrings), int(1000)]);
    if (r < 0.6) return Array.from({ length: int(5) }, () => value(depth + 1));
    const o = {};
    for (let i = int(5); i > 0; i--) o[pick(['a', 'name', 'qty', 'tags', 'meta', pick(oddStrings)])] = value(depth + 1);
    return o;
  }

  function deep(n) {
    let v = 1;
    for (let i = 0; i < n; i++) v = rnd() < 0.5 ? [v] : { a: v };
    return v;
  }

  // an event of the given types and sources, mutated in 0-3 places
  function event(types = ['FUZZ', 'FUZZ', 'FUZZ_STRICT', 'NOPE'], sources = ['fuzz-src', 'fuzz-src', 'other']) {
    const good = {
      eventId: `fz-${next()}`,
      eventType: pick(types),
      source: pick(sources),
      payload: { name: 'n', qty: int(10), tags: ['a'] },
      timestamp: '2026-11-21T10:00:00Z',
    };
    const e = { ...good };
    const mutations = int(4);
    for (let i = 0; i < mutations; i++) {
      const k = pick(['eventId', 'eventType', 'source', 'payload', 'timestamp', 'correlationId', 'priority', 'traceparent', 'extra']);
      const m = int(8);
      if (m === 0) delete e[k];
      else if (m === 1) e[k] = value(0);
      else if (m === 2) e[k] = pick(oddStrings);
      else if (m === 3) e[k] = pick(oddNumbers);
      else if (m === 4 && k === 'payload') e.payload = { ...good.payload, ...value(0) };
      else if (m === 5 && k === 'payload') e.payload = { name: deep(int(120)) };
      else if (m === 6 && k === 'payload') e.payload = { name: 'x'.repeat(int(3) * 150000) };
      else if (m === 7) e[k] = { nested: value(0) };
    }
    if (rnd() < 0.02) return pick([[], 'str', 1, null, [e]]);
    return e;
  }

  // a JSON Schema of evpipe's keywords, sometimes with a mistake in it
  function schema(depth = 0) {
    const s = {};
    const n = 1 + int(3);
    const leaf = depth > 2;
    for (let i = 0; i < n; i++) {
      switch (int(leaf ? 12 : 20)) {
        case 0: s.type = pick(['string', 'integer', 'number', 'boolean', 'null', 'object', 'array', ['string', 'null'], ['integer', 'number']]); break;
        case 1: s.minimum = pick([0, -1, 1.5, 10]); break;
        case 2: s.maximum = pick([0, 9, 100.5]); break;
        case 3: s.exclusiveMinimum = pick([0, 1]); break;
        case 4: s.multipleOf = pick([1, 2, 0.5, 3]); break;
        case 5: s.minLength = int(4); break;
        case 6: s.maxLength = int(6); break;
        case 7: s.pattern = pick(['^[a-z]+$', '^\\d{3}$', 'x', '^(a|b)*$']); break;
        case 8: s.enum = pick([[1, 'a', null], ['a', 'b'], [1.0, [1], { a: 1 }]]); break;
        case 9: s.const = pick([1, 'a', null, { a: [1] }]); break;
        case 10: s.format = pick(['uuid', 'date-time', 'email']); break;
        case 11: if (rnd() < 0.05) s[pick(['typo', 'type', 'minimum'])] = pick(['strnig', 'x', -1, {}]); break; // likely invalid
        case 12: s.properties = Object.fromEntries(Array.from({ length: 1 + int(3) }, () => [pick(['a', 'name', 'qty', 'b c', 'é']), schema(depth + 1)])); break;
        case 13: s.required = Array.from({ length: int(3) }, () => pick(['a', 'name', 'qty'])).filter((x, i, a) => a.indexOf(x) === i); break;
        case 14: s.additionalProperties = rnd() < 0.5 ? false : schema(depth + 1); break;
        case 15: s.items = schema(depth + 1); break;
        case 16: s.minItems = int(3); s.maxItems = 1 + int(4); break;
        case 17: s.uniqueItems = rnd() < 0.7; break;
        case 18: s[pick(['anyOf', 'oneOf', 'allOf'])] = Array.from({ length: 1 + int(3) }, () => schema(depth + 1)); break;
        case 19: s.not = schema(depth + 1); break;
        default: break;
      }
    }
    return s;
  }

  return { rnd, pick, int, next, value, deep, event, schema, oddStrings, oddNumbers };
}

module.exports = { makeGenerator, oddStrings, oddNumbers };
