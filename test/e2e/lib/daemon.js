// evpiped for the e2e tests: start the daemon against a test cluster on
// 127.0.0.1, read its log and its /metrics, stop it by PID.
//   startDaemon(c, {user, args, env, metrics})  a running `evpiped run`
//   runEvpiped(args, {env, timeoutMs})          run to its exit (flags, misconfigurations)
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const http = require('node:http');
const { spawn, spawnSync } = require('node:child_process');

const BIN = process.env.EVPIPE_PG_BIN || '/usr/lib/postgresql/15/bin';
const EVPIPED = process.env.EVPIPED || path.join(BIN, 'evpiped');
const live = new Set();
process.on('exit', () => { for (const p of live) { try { process.kill(p, 'SIGKILL'); } catch (e) { /* gone */ } } });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A libpq conninfo for a test cluster, as `user`.
function dsnFor(c, user = 'evpiped', extra = '') {
  return `host=127.0.0.1 port=${c.port} dbname=postgres user=${user}${extra ? ' ' + extra : ''}`;
}

// The environment evpiped runs with: none of the caller's PG* variables leak in.
function cleanEnv(env = {}) {
  const e = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG') && k !== 'EVPIPED') e[k] = v;
  return { ...e, ...env };
}

function getText(url) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error(`GET ${url} timed out`)));
  });
}

// Run evpiped to its exit: {status, signal, stdout, stderr}.
function runEvpiped(args, { env = {}, timeoutMs = 20000 } = {}) {
  const r = spawnSync(EVPIPED, args, { encoding: 'utf8', env: cleanEnv(env), timeout: timeoutMs });
  return { status: r.status, signal: r.signal, stdout: r.stdout || '', stderr: r.stderr || '' };
}

// The sum of a metric's samples in Prometheus text, over the samples whose labels
// include every pair of `labels`.
function metricSum(text, name, labels = {}) {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m || m[1] !== name) continue;
    const have = {};
    for (const lm of (m[3] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) have[lm[1]] = lm[2];
    if (Object.entries(labels).every(([k, v]) => have[k] === String(v))) sum += Number(m[4]);
  }
  return sum;
}

// Start `evpiped run` for cluster c. Resolves once it logged event=connected
// (or, with {waitConnected: false}, at once). The log (stderr) goes to a file in
// the cluster's directory.
async function startDaemon(c, opts = {}) {
  const user = opts.user || 'evpiped';
  const n = (c.daemonSeq = (c.daemonSeq || 0) + 1);
  const logFile = path.join(c.dir, `evpiped-${n}.log`);
  const metricsPort = opts.metrics === false ? null : await require('./cluster').freePort();
  const args = ['run', '--dsn', opts.dsn || dsnFor(c, user),
    ...(metricsPort ? ['--metrics-addr', `127.0.0.1:${metricsPort}`] : []), ...(opts.args || [])];
  const fd = fs.openSync(logFile, 'a');
  const child = spawn(EVPIPED, args, { stdio: ['ignore', 'ignore', fd], env: cleanEnv(opts.env) });
  fs.closeSync(fd);
  live.add(child.pid);
  const d = {
    pid: child.pid, child, logFile, metricsPort, n,
    exitCode: null, exitSignal: null,
    log: () => { try { return fs.readFileSync(logFile, 'utf8'); } catch (e) { return ''; } },
    alive: () => d.exitCode === null && d.exitSignal === null,
  };
  d.exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    d.exitCode = code; d.exitSignal = signal; live.delete(child.pid); resolve({ code, signal });
  }));
  d.metricsUrl = metricsPort ? `http://127.0.0.1:${metricsPort}` : null;
  d.metrics = async () => (await getText(`${d.metricsUrl}/metrics`)).text;
  d.healthz = async () => (await getText(`${d.metricsUrl}/healthz`)).status;
  // lines of the log matching a pattern
  d.lines = (re) => d.log().split('\n').filter((l) => re.test(l));
  d.waitLog = async (re, timeoutMs = 15000, count = 1) => {
    const t0 = Date.now();
    while (d.lines(re).length < count) {
      if (Date.now() - t0 > timeoutMs) throw new Error(`evpiped ${d.pid}: no ${re} in ${timeoutMs} ms; log:\n${d.log().slice(-3000)}`);
      if (!d.alive()) throw new Error(`evpiped ${d.pid} exited (${d.exitCode ?? d.exitSignal}) before ${re}; log:\n${d.log().slice(-3000)}`);
      await sleep(25);
    }
  };
  d.signal = (sig) => { try { process.kill(child.pid, sig); } catch (e) { /* gone */ } };
  // SIGTERM (or `sig`) and wait for the exit; SIGKILL after timeoutMs
  d.stop = async (sig = 'SIGTERM', timeoutMs = 20000) => {
    if (!d.alive()) return { code: d.exitCode, signal: d.exitSignal };
    d.signal(sig);
    const t = setTimeout(() => d.signal('SIGKILL'), timeoutMs);
    const r = await d.exited;
    clearTimeout(t);
    return r;
  };
  if (opts.waitConnected !== false) await d.waitLog(/event=connected/, opts.timeoutMs || 20000);
  return d;
}

module.exports = { startDaemon, runEvpiped, dsnFor, metricSum, getText, EVPIPED };
