#!/usr/bin/env node
// The official JSON Schema Test Suite (Debian package json-schema-test-suite, draft 7 files) against
// evpipe.validate(schema, data) in a database with evpipe installed (the extension or the managed install).
// Prints TAP. A case passes when evpipe's answer (NULL: valid) agrees with the suite's "valid"; a group
// whose schema evpipe refuses ("invalid JSON Schema: ...", e.g. an unsupported keyword) is skipped; cases
// in test/jsts/known.json are expected to disagree (intended differences, with the reason; see
// docs/jsonschema-suite.md); its "bugs" are reported as TAP TODO. Anything else that disagrees is a failure.
//
//   node test/jsts/run.js [CONNSTRING]      (or EVPIPE_JSTS_DSN; default: libpq's environment)
//   EVPIPE_JSTS_DIR overrides /usr/share/json-schema-test-suite/tests/draft7
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { Client } = require('../peers/node_modules/pg');

const DIR = process.env.EVPIPE_JSTS_DIR || '/usr/share/json-schema-test-suite/tests/draft7';
// the draft 7 files of the keywords evpipe supports (others use keywords evpipe refuses)
const FILES = ['additionalProperties', 'boolean_schema', 'const', 'default', 'definitions', 'enum',
  'exclusiveMaximum', 'exclusiveMinimum', 'items', 'maxItems', 'maxLength', 'maximum', 'minItems', 'minLength',
  'minimum', 'multipleOf', 'pattern', 'properties', 'ref', 'required', 'type', 'uniqueItems',
  'optional/bignum', 'optional/zeroTerminatedFloats', 'optional/ecmascript-regex',
  'optional/format/date-time', 'optional/format/email'];
const known = JSON.parse(fs.readFileSync(path.join(__dirname, 'known.json'), 'utf8'));
const knownCases = new Map();
for (const k of known.differences) knownCases.set(k.case, k.reason);
const bugCases = new Map();
for (const k of known.bugs || []) bugCases.set(k.case, k.reason);

async function main() {
  const conn = process.argv[2] || process.env.EVPIPE_JSTS_DSN;
  const client = new Client(conn ? { connectionString: conn } : {});
  await client.connect();
  const lines = [];
  let n = 0, pass = 0, fail = 0, skip = 0, expected = 0, todo = 0;
  const seenKnown = new Set();
  for (const f of FILES) {
    const file = path.join(DIR, f + '.json');
    if (!fs.existsSync(file)) {
      lines.push(`# missing ${file}`);
      continue;
    }
    for (const group of JSON.parse(fs.readFileSync(file, 'utf8'))) {
      for (const t of group.tests) {
        n++;
        const id = `${f}: ${group.description} / ${t.description}`;
        let got;
        try {
          const r = await client.query('SELECT evpipe.validate($1::jsonb, $2::jsonb) AS v',
            [JSON.stringify(group.schema), JSON.stringify(t.data)]);
          got = r.rows[0].v;
        } catch (e) {
          if (e.code === '22023' && /^invalid JSON Schema/.test(e.message)) {
            skip++;
            lines.push(`ok ${n} - ${id} # SKIP ${e.message}${e.detail ? ' (' + e.detail + ')' : ''}`);
            continue;
          }
          got = { error: `${e.code} ${e.message}` };
        }
        const valid = got === null;
        const agrees = valid === t.valid;
        const reason = knownCases.get(id);
        const bug = bugCases.get(id);
        if (reason !== undefined || bug !== undefined) seenKnown.add(id);
        if (bug !== undefined) {
          todo++;
          lines.push(`${agrees ? 'ok' : 'not ok'} ${n} - ${id} # TODO ${bug}`);
        } else if (agrees && reason === undefined) {
          pass++;
          lines.push(`ok ${n} - ${id}`);
        } else if (!agrees && reason !== undefined) {
          expected++;
          lines.push(`ok ${n} - ${id} # known difference: ${reason}`);
        } else if (agrees) {
          fail++;
          lines.push(`not ok ${n} - ${id} # listed in known.json but agrees with the suite`);
        } else {
          fail++;
          lines.push(`not ok ${n} - ${id} # suite: ${t.valid ? 'valid' : 'invalid'}, evpipe: ${JSON.stringify(got)}`);
        }
      }
    }
  }
  for (const k of [...knownCases.keys(), ...bugCases.keys()]) {
    if (!seenKnown.has(k)) lines.push(`# known.json lists a case the suite does not have: ${k}`);
  }
  console.log('TAP version 13');
  console.log(`1..${n}`);
  for (const l of lines) console.log(l);
  console.log(`# ${n} cases: ${pass} agree, ${expected} known differences, ${todo} known bugs (TODO), ${skip} skipped (schema refused), ${fail} failed`);
  await client.end();
  process.exit(fail ? 1 : 0);
}

main().catch((e) => { console.error(e); process.exit(2); });
