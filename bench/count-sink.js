#!/usr/bin/env node
// A webhook target for long benchmark runs: answers 200 to every request and
// only counts (per path: count, first and last arrival, arrivals per second),
// so an hour of deliveries does not fill its memory the way test/peers/http-sink
// (which records every request) would. Listens on 127.0.0.1 only.
//   node bench/count-sink.js --port 0     prints {"ready":true,"port":N}
// Control: GET /_count?path=/x -> {count, first, last, perSecond: {sec: n}};
// POST /_reset.
'use strict';
const http = require('node:http');
const { serveLoopback } = require('../test/peers/serve');
const { performance } = require('node:perf_hooks');

const args = process.argv.slice(2);
const port = Number(args.includes('--port') ? args[args.indexOf('--port') + 1] : 0);
const now = () => performance.timeOrigin + performance.now();
let paths = new Map();

function json(res, status, obj) {
  const b = JSON.stringify(obj);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(b) });
  res.end(b);
}

const server = http.createServer((req, res) => {
  const at = now();
  const url = new URL(req.url, 'http://127.0.0.1');
  req.resume();
  req.on('end', () => {
    if (url.pathname === '/_count') {
      const p = paths.get(url.searchParams.get('path') || '/');
      return json(res, 200, p ? { count: p.count, first: p.first, last: p.last, perSecond: Object.fromEntries(p.perSecond) }
        : { count: 0, first: null, last: null, perSecond: {} });
    }
    if (url.pathname === '/_reset') { paths = new Map(); return json(res, 200, { ok: true }); }
    let p = paths.get(url.pathname);
    if (!p) { p = { count: 0, first: at, last: at, perSecond: new Map() }; paths.set(url.pathname, p); }
    p.count++;
    p.last = at;
    const sec = Math.floor(at / 1000);
    p.perSecond.set(sec, (p.perSecond.get(sec) || 0) + 1);
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': 11 });
    res.end('{"ok":true}');
  });
});
serveLoopback(server, port);
