#!/usr/bin/env node
// A webhook target for the tests: records every request and answers as told.
// Listens on 127.0.0.1 only. Prints {"ready":true,"port":N} when listening.
//   node http-sink.js --port 0
// Control API (JSON): GET /_control/requests[?path=/x], POST /_control/reset,
// POST /_control/behavior {path, failTimes, failStatus, status, retryAfter,
// hangMs, delayMs, body, failEachTimes}, GET /_control/stats.
// failEachTimes N: the first N requests of each event (its Idempotency-Key)
// answer failStatus (default 503), later ones succeed: a target that fails
// per event, not one that is down. failBodyIncludes S: requests whose body
// contains S answer failStatus (default 503), every time.
'use strict';
const { maxPerSecond } = require('./window');
const { serveLoopback } = require('./serve');
const http = require('node:http');
const https = require('node:https');
const fs = require('node:fs');
const { performance } = require('node:perf_hooks');

const args = process.argv.slice(2);
const port = Number(args[args.indexOf('--port') + 1] || 0);
// --tls CERT KEY: serve HTTPS with that certificate
const tls = args.includes('--tls')
  ? { cert: fs.readFileSync(args[args.indexOf('--tls') + 1]), key: fs.readFileSync(args[args.indexOf('--tls') + 2]) }
  : null;

let seq = 0;
let records = [];
let behaviors = {}; // path prefix -> behaviour

const now = () => performance.timeOrigin + performance.now();

function behaviorFor(path) {
  let best = null;
  for (const prefix of Object.keys(behaviors)) {
    if (path.startsWith(prefix) && (!best || prefix.length > best.length)) best = prefix;
  }
  return best ? behaviors[best] : null;
}


function json(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

async function control(req, res, url, body) {
  if (req.method === 'GET' && url.pathname === '/_control/requests') {
    const p = url.searchParams.get('path');
    return json(res, 200, p ? records.filter((r) => r.path === p) : records);
  }
  if (req.method === 'POST' && url.pathname === '/_control/reset') {
    records = [];
    behaviors = {};
    return json(res, 200, { ok: true });
  }
  if (req.method === 'POST' && url.pathname === '/_control/behavior') {
    const b = JSON.parse(body || '{}');
    // hangMs applies to the injected failures when failTimes is given, else to every request
    behaviors[b.path || '/'] = { ...b, hangAlways: b.failTimes === undefined, seen: new Map() };
    return json(res, 200, { ok: true });
  }
  if (req.method === 'GET' && url.pathname === '/_control/stats') {
    const byPath = {};
    const times = {};
    for (const r of records) {
      byPath[r.path] = (byPath[r.path] || 0) + 1;
      (times[r.path] = times[r.path] || []).push(r.receivedAt);
    }
    const mps = {};
    for (const [p, t] of Object.entries(times)) mps[p] = maxPerSecond(t.sort((a, b) => a - b));
    return json(res, 200, { count: records.length, byPath, maxPerSecond: mps });
  }
  return json(res, 404, { error: 'unknown control endpoint' });
}

const handler = (req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    const body = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url, 'http://127.0.0.1');
    if (url.pathname.startsWith('/_control/')) return control(req, res, url, body);

    const rec = {
      seq: ++seq,
      method: req.method,
      path: url.pathname,
      headers: req.headers,
      body,
      receivedAt: now(),
    };
    records.push(rec);
    const b = behaviorFor(url.pathname);
    let status = 200;
    let answer = '{"ok":true}';
    const headers = { 'Content-Type': 'application/json' };
    if (b) {
      if (b.delayMs) await new Promise((r) => setTimeout(r, b.delayMs));
      const key = req.headers['idempotency-key'];
      const tries = b.failEachTimes > 0 && key ? (b.seen.get(key) || 0) + 1 : 0;
      if (tries) b.seen.set(key, tries);
      if (b.failBodyIncludes && body.includes(b.failBodyIncludes)) {
        status = b.failStatus || 503;
        answer = JSON.stringify({ error: `injected ${status} for this body` });
      } else if (tries && tries <= b.failEachTimes) {
        status = b.failStatus || 503;
        answer = JSON.stringify({ error: `injected ${status} (attempt ${tries} of this event)` });
      } else if (b.failTimes > 0) {
        b.failTimes--;
        if (b.hangMs) {
          rec.answeredStatus = 0;
          await new Promise((r) => {
            const t = setTimeout(r, b.hangMs);
            res.on('close', () => { clearTimeout(t); r(); });
          });
          if (res.destroyed) return;
        }
        status = b.failStatus || 500;
        if (b.retryAfter) headers['Retry-After'] = String(b.retryAfter);
        answer = b.body || JSON.stringify({ error: `injected ${status}` });
      } else if (b.hangMs && b.hangAlways && !b.status) {
        rec.answeredStatus = 0;
        await new Promise((r) => {
          const t = setTimeout(r, b.hangMs);
          res.on('close', () => { clearTimeout(t); r(); });
        });
        if (res.destroyed) return;
      } else if (b.status) {
        status = b.status;
        if (b.retryAfter) headers['Retry-After'] = String(b.retryAfter);
        if (b.body) answer = b.body;
      }
    }
    rec.answeredStatus = status;
    if (b && b.location) headers.Location = b.location;
    headers['Content-Length'] = Buffer.byteLength(answer);
    res.writeHead(status, headers);
    res.end(answer);
  });
};
const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
serveLoopback(server, port);
