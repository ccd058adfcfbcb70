#!/usr/bin/env node
// SQS for the tests: the local-aws-sqs emulator on an internal loopback port,
// behind a proxy that verifies every AWS SigV4 signature strictly (the
// emulator checks none) and can inject errors. Listens on 127.0.0.1 only.
//   node sqs.js --port 0 --credentials AKID:SECRET[:TOKEN],...
// Prints {"ready":true,"port":N}. Control API (unsigned) under /_control/:
//   POST /_control/inject {"times":N,"status":400,"type":"ThrottlingException"}
//   POST /_control/fail-entries {"match":"text in MessageBody","code":"X","senderFault":true}
//   GET /_control/log, POST /_control/reset
'use strict';
const http = require('node:http');
const { serveLoopback } = require('./serve');
const crypto = require('node:crypto');
const { createSqsServer } = require('local-aws-sqs');

const args = process.argv.slice(2);
const arg = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const port = Number(arg('--port', 0));
const creds = {};
for (const c of (arg('--credentials', 'AKIDEXAMPLE:secret') || '').split(',').filter(Boolean)) {
  const [id, secret, token] = c.split(':');
  creds[id] = { secret, token };
}

let injections = [];
let entryFailures = [];
let log = [];

const sha256 = (data) => crypto.createHash('sha256').update(data).digest('hex');
const hmac = (key, data) => crypto.createHmac('sha256', key).update(data).digest();

function awsError(res, status, type, message) {
  const body = JSON.stringify({ __type: `com.amazon.coral.service#${type}`, message });
  res.writeHead(status, {
    'Content-Type': 'application/x-amz-json-1.0',
    'x-amzn-query-error': `${type};Sender`,
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}

// AWS URI encoding of one path segment or query component.
const uriEncode = (s) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());

// Verify a SigV4 signature; returns null if valid, else [status, type, message].
function verify(req, body) {
  const auth = req.headers.authorization || '';
  const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/.exec(auth);
  if (!m) return [403, 'MissingAuthenticationToken', 'Request is missing a valid SigV4 Authorization header'];
  const [, akid, date, region, service, signedHeaders, signature] = m;
  const cred = creds[akid];
  if (!cred) return [403, 'InvalidClientTokenId', 'The security token included in the request is invalid'];
  if (service !== 'sqs') return [403, 'SignatureDoesNotMatch', 'Credential should be scoped to correct service: sqs'];
  const amzDate = req.headers['x-amz-date'];
  if (!amzDate || !amzDate.startsWith(date)) return [403, 'SignatureDoesNotMatch', 'x-amz-date missing or not matching the credential scope'];
  const t = Date.UTC(+amzDate.slice(0, 4), +amzDate.slice(4, 6) - 1, +amzDate.slice(6, 8),
    +amzDate.slice(9, 11), +amzDate.slice(11, 13), +amzDate.slice(13, 15));
  if (Math.abs(Date.now() - t) > 5 * 60 * 1000) return [403, 'RequestExpired', 'Signature expired'];
  const signed = signedHeaders.split(';');
  if (!signed.includes('host')) return [403, 'SignatureDoesNotMatch', 'host must be signed'];
  if (req.headers['x-amz-security-token'] !== undefined) {
    if (!signed.includes('x-amz-security-token')) return [403, 'SignatureDoesNotMatch', 'x-amz-security-token must be signed'];
    if (req.headers['x-amz-security-token'] !== cred.token) return [403, 'InvalidClientTokenId', 'The security token included in the request is invalid'];
  } else if (cred.token) {
    return [403, 'MissingAuthenticationToken', 'A session token is required for these credentials'];
  }
  const url = new URL(req.url, 'http://x');
  const canonicalUri = url.pathname.split('/').map((s) => uriEncode(decodeURIComponent(s))).join('/') || '/';
  const query = [...url.searchParams.entries()]
    .map(([k, v]) => [uriEncode(k), uriEncode(v)])
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`).join('&');
  const canonicalHeaders = signed.map((h) => {
    const v = req.headers[h];
    if (v === undefined) return null;
    return `${h}:${String(v).trim().replace(/\s+/g, ' ')}\n`;
  });
  const missing = signed.filter((h) => req.headers[h] === undefined);
  if (missing.length) return [403, 'SignatureDoesNotMatch', `signed header missing: ${missing.join(', ')}`];
  const payloadHash = req.headers['x-amz-content-sha256'] && req.headers['x-amz-content-sha256'] !== 'UNSIGNED-PAYLOAD'
    ? req.headers['x-amz-content-sha256'] : sha256(body);
  if (payloadHash !== sha256(body)) return [403, 'SignatureDoesNotMatch', 'payload hash does not match'];
  const canonical = [req.method, canonicalUri, query, canonicalHeaders.join(''), signedHeaders, payloadHash].join('\n');
  const scope = `${date}/${region}/${service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n');
  const key = hmac(hmac(hmac(hmac('AWS4' + cred.secret, date), region), service), 'aws4_request');
  const expected = crypto.createHmac('sha256', key).update(toSign).digest('hex');
  if (!crypto.timingSafeEqual(Buffer.from(expected), Buffer.from(signature))) {
    return [403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided'];
  }
  return null;
}

function forward(target, req, body, res, rewrite) {
  const headers = { ...req.headers, host: `127.0.0.1:${target}` };
  delete headers['content-length'];
  const up = http.request({ host: '127.0.0.1', port: target, method: req.method, path: req.url, headers: { ...headers, 'content-length': body.length } }, (r) => {
    const chunks = [];
    r.on('data', (c) => chunks.push(c));
    r.on('end', () => {
      let out = Buffer.concat(chunks);
      if (rewrite) out = rewrite(r.statusCode, out);
      const h = { ...r.headers, 'content-length': out.length };
      delete h['transfer-encoding'];
      res.writeHead(r.statusCode, h);
      res.end(out);
    });
  });
  up.on('error', (e) => awsError(res, 503, 'ServiceUnavailable', String(e)));
  up.end(body);
}

async function main() {
  const inner = await createSqsServer({ port: 0, hostname: '127.0.0.1', emulateQueueCreationLifecycle: false });
  const innerPort = inner.address().port;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const url = new URL(req.url, 'http://x');
      const json = (status, obj) => { const b = JSON.stringify(obj); res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(b) }); res.end(b); };
      if (url.pathname === '/_control/inject') { injections.push(JSON.parse(body || '{}')); return json(200, { ok: true }); }
      if (url.pathname === '/_control/fail-entries') { entryFailures.push(JSON.parse(body || '{}')); return json(200, { ok: true }); }
      if (url.pathname === '/_control/log') return json(200, log);
      if (url.pathname === '/_control/reset') { injections = []; entryFailures = []; log = []; return json(200, { ok: true }); }
      const target = req.headers['x-amz-target'] || '';
      let entries;
      try { entries = JSON.parse(body.toString() || '{}').Entries; } catch (e) { entries = undefined; }
      const rec = { target, at: Date.now(), entries: Array.isArray(entries) ? entries.length : undefined };
      log.push(rec);
      const bad = verify(req, body);
      if (bad) { rec.verified = false; rec.error = bad[1]; rec.status = bad[0]; return awsError(res, ...bad); }
      rec.verified = true;
      const inj = injections.find((i) => i.times > 0);
      if (inj) {
        inj.times--;
        rec.status = inj.status || 400;
        rec.error = inj.type || 'ThrottlingException';
        return awsError(res, rec.status, rec.error, 'injected by the test');
      }
      rec.status = 200;
      // entries the test wants refused: take them out, add them to Failed[]
      if (target.endsWith('SendMessageBatch') && entryFailures.length && Array.isArray(entries)) {
        const parsed = JSON.parse(body.toString());
        const failed = [];
        parsed.Entries = parsed.Entries.filter((e) => {
          const f = entryFailures.find((x) => e.MessageBody.includes(x.match));
          if (f) failed.push({ Id: e.Id, SenderFault: f.senderFault !== false, Code: f.code || 'InvalidMessageContents', Message: 'refused by the test' });
          return !f;
        });
        if (failed.length) {
          if (parsed.Entries.length === 0) {
            const b = JSON.stringify({ Successful: [], Failed: failed });
            res.writeHead(200, { 'Content-Type': 'application/x-amz-json-1.0', 'Content-Length': Buffer.byteLength(b) });
            return res.end(b);
          }
          return forward(innerPort, req, Buffer.from(JSON.stringify(parsed)), res, (status, out) => {
            if (status !== 200) return out;
            const o = JSON.parse(out.toString());
            o.Failed = [...(o.Failed || []), ...failed];
            return Buffer.from(JSON.stringify(o));
          });
        }
      }
      forward(innerPort, req, body, res);
    });
  });
  serveLoopback(server, port, { extra: { innerPort }, onStop: () => inner.close() });
}
main().catch((e) => { console.error(e); process.exit(1); });
