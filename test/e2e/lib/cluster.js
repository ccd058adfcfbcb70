// A throwaway PostgreSQL 15 cluster for one test file: initdb into a temp
// dir, start on a free 127.0.0.1 port with evpipe preloaded, stop by PID.
// startCluster({standbyOf: primary}) starts a streaming standby of a running
// cluster instead (pg_basebackup -R; c.promote() ends its recovery).
//
// Two hosts for the delivery engine: {host: 'server'} (the default) delivers with
// the in-server workers; {host: 'daemon'} (or EVPIPE_E2E_HOST=daemon in the
// environment, which test/run sets for its second pass of the delivery suites)
// runs the server with evpipe.workers = 0 and starts opts.daemons (default 2)
// evpiped processes as the login role "evpiped" (a member of evpipe_worker only).
// Two installs: {install: 'extension'} (the default: CREATE EXTENSION evpipe) and
// {install: 'managed'} (or EVPIPE_E2E_INSTALL=managed): no shared_preload_libraries,
// evpipe installed by `evpiped migrate` as "owner", a non-superuser with CREATEROLE
// (as on Amazon RDS), and delivery by evpiped daemons only.
// The helpers below (workerPids, killWorkers, waitWorkers, reload, metricSum,
// stop) act on whichever host delivers.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');
const { execFileSync, spawnSync } = require('node:child_process');
const { Pool, Client } = require('../../peers/node_modules/pg');

// Hooks for test/run's sanitize suite (unset: the system's PostgreSQL, no extra env):
// EVPIPE_PG_BIN, another PostgreSQL installation; EVPIPE_PG_ENV, a JSON object of
// variables for every initdb and server (e.g. LD_PRELOAD of the ASan runtime).
const BIN = process.env.EVPIPE_PG_BIN || '/usr/lib/postgresql/15/bin';
const PG_ENV = process.env.EVPIPE_PG_ENV ? JSON.parse(process.env.EVPIPE_PG_ENV) : {};
const exportEnv = (env) => Object.entries(env).map(([k, v]) => `export ${k}='${v}'; `).join('');
const running = new Set();

process.on('exit', () => {
  for (const c of running) {
    try {
      const pid = Number(fs.readFileSync(path.join(c.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
      if (pid) process.kill(pid, 'SIGQUIT');
    } catch (e) { /* gone */ }
  }
});

function asPostgres(cmd, args, opts = {}) {
  const isRoot = process.getuid && process.getuid() === 0;
  const [c, a] = isRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
  const r = spawnSync(c, a, { encoding: 'utf8', ...opts });
  if (r.status !== 0 && !opts.allowFail) {
    throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr || r.stdout}`);
  }
  return r;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function startCluster(opts = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evpipe-e2e-'));
  const isRoot = process.getuid && process.getuid() === 0;
  if (isRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    fs.chownSync(dir, uid, gid);
  }
  const install = opts.install || process.env.EVPIPE_E2E_INSTALL || 'extension';
  const managed = install === 'managed' && !opts.noExtension && !opts.standbyOf;
  if (managed) opts = { ...opts, preload: false };
  const host = managed ? 'daemon' : (opts.host || process.env.EVPIPE_E2E_HOST || 'server');
  const daemonMode = host === 'daemon' && !opts.noExtension && !opts.standbyOf && (opts.preload !== false || managed);
  if (daemonMode) opts = { ...opts, config: { ...(opts.config || {}), 'evpipe.workers': 0 } };
  const dataDir = path.join(dir, 'data');
  const logFile = path.join(dir, 'server.log');
  if (opts.standbyOf) {
    // a streaming standby of a running cluster: a base backup with -R (standby.signal and
    // primary_conninfo); initdb's pg_hba.conf trusts replication from 127.0.0.1
    asPostgres(`${BIN}/pg_basebackup`, ['-D', dataDir, '-h', '127.0.0.1', '-p', String(opts.standbyOf.port),
      '-U', 'postgres', '-R', '-X', 'stream', '-c', 'fast', '--no-sync']);
  } else if (Object.keys(PG_ENV).length === 0) {
    asPostgres(`${BIN}/initdb`, ['-D', dataDir, '-A', 'trust', '-U', 'postgres', '--no-sync']);
  } else {
    asPostgres('bash', ['-c', `${exportEnv(PG_ENV)}exec ${BIN}/initdb -D '${dataDir}' -A trust -U postgres --no-sync`]);
  }
  const port = await freePort();
  const config = {
    listen_addresses: "'127.0.0.1'",
    port,
    unix_socket_directories: `'${dir}'`,
    shared_preload_libraries: opts.preload === false ? "''" : "'evpipe'",
    fsync: opts.fsync ? 'on' : 'off',
    // fsync off survives process crashes (the OS keeps the data); asynchronous
    // commit would not: a crash restart loses the last commits
    synchronous_commit: 'on',
    log_line_prefix: "'%m [%p] %b '",
    max_connections: 50,
    ...Object.fromEntries(Object.entries(opts.config || {}).map(([k, v]) => [k, typeof v === 'string' ? `'${v}'` : v])),
  };
  fs.appendFileSync(path.join(dataDir, 'postgresql.conf'),
    '\n' + Object.entries(config).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n');

  const c = {
    dir, dataDir, logFile, port, pool: null, host: daemonMode ? 'daemon' : 'server', daemons: [], allDaemons: [],
    install: managed ? 'managed' : 'extension',
    url: `postgresql://postgres@127.0.0.1:${port}/postgres`,
  };
  const newPool = () => {
    c.pool = new Pool({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres', max: 10 });
    c.pool.on('error', () => {}); // connections die on crash restarts
  };
  // core files (if the machine keeps them) help diagnose a crash
  const env = { ...PG_ENV, ...(opts.env || {}) };
  const envPrefix = exportEnv(env);
  const start = () => asPostgres('bash', ['-c', `${envPrefix}ulimit -c unlimited 2>/dev/null; exec ${BIN}/pg_ctl -D '${dataDir}' -l '${logFile}' -w -t 60 start`]);
  start();
  running.add(c);
  newPool();

  c.query = async (sql, params) => (await c.pool.query(sql, params)).rows;
  c.client = async () => {
    const cl = new Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
    cl.on('error', () => {});
    await cl.connect();
    return cl;
  };
  c.waitFor = async (sql, predicate, timeoutMs = 10000, params) => {
    const t0 = Date.now();
    let rows;
    let lastErr;
    for (;;) {
      try {
        rows = await c.query(sql, params);
        if (predicate(rows)) return rows;
      } catch (e) { lastErr = e; }
      if (Date.now() - t0 > timeoutMs) {
        throw new Error(`timed out after ${timeoutMs} ms waiting for: ${sql}\nlast rows: ${JSON.stringify(rows)}${lastErr ? `\nlast error: ${lastErr.message}` : ''}`);
      }
      await sleep(50);
    }
  };
  // Wait until the server accepts queries again (after a crash restart).
  c.waitReady = async (timeoutMs = 30000) => {
    await sleep(300);
    await c.pool.end().catch(() => {});
    newPool();
    await c.waitFor('SELECT 1 AS ok', (r) => r.length === 1, timeoutMs);
  };
  const daemonLib = () => require('./daemon');
  const liveDaemons = () => c.daemons.filter((d) => d.alive());
  // the delivering processes: the in-server workers, or the live evpiped processes
  c.workerPids = async () => {
    if (c.host === 'daemon') return liveDaemons().map((d) => d.pid).sort((a, b) => a - b);
    return (await c.query(
      "SELECT pid FROM pg_stat_activity WHERE backend_type = 'evpipe delivery worker' ORDER BY pid")).map((r) => r.pid);
  };
  // Send a signal to every delivering process. The postmaster restarts a killed
  // worker; a killed evpiped is started again here, as systemd's Restart=always would.
  c.killWorkers = async (signal = 'SIGKILL') => {
    const pids = await c.workerPids();
    if (c.host !== 'daemon') {
      for (const pid of pids) process.kill(pid, signal);
      return pids;
    }
    const victims = liveDaemons();
    for (const d of victims) d.signal(signal);
    if (signal === 'SIGKILL' || signal === 'SIGTERM' || signal === 'SIGINT') {
      await Promise.all(victims.map((d) => d.exited));
      for (const d of victims) c.daemons.splice(c.daemons.indexOf(d), 1);
      for (let i = 0; i < victims.length; i++) await c.startDaemon({ waitConnected: false });
    }
    return pids;
  };
  // an evpiped for this cluster, remembered in c.daemons (stopped by c.stop)
  c.startDaemon = async (dopts = {}) => {
    const d = await daemonLib().startDaemon(c, dopts);
    c.daemons.push(d);
    c.allDaemons.push(d);
    return d;
  };
  // wait until n delivering processes run (and, for evpiped, are connected)
  c.waitWorkers = async (n, timeoutMs = 20000) => {
    const sql = c.host === 'daemon'
      ? "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'evpiped'"
      : "SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'evpipe delivery worker'";
    await c.waitFor(sql, (r) => r[0].n >= n, timeoutMs);
  };
  // Prometheus text of the delivering host: evpipe.metrics() in the server, or each
  // evpiped's /metrics (counters are per process there)
  c.metricsTexts = async () => {
    if (c.host !== 'daemon') return [(await c.query('SELECT evpipe.metrics() AS m'))[0].m];
    return Promise.all(liveDaemons().map((d) => d.metrics()));
  };
  // a metric summed over every delivering process (counters), or the largest value (gauges)
  c.metricSum = async (name, labels = {}) =>
    (await c.metricsTexts()).reduce((a, t) => a + daemonLib().metricSum(t, name, labels), 0);
  c.metricMax = async (name, labels = {}) =>
    Math.max(...(await c.metricsTexts()).map((t) => daemonLib().metricSum(t, name, labels)));
  c.restart = async ({ mode = 'fast' } = {}) => {
    await c.pool.end().catch(() => {});
    asPostgres(`${BIN}/pg_ctl`, ['-D', dataDir, '-m', mode, '-w', 'stop'], { allowFail: true });
    start();
    newPool();
  };
  // end recovery of a standby (pg_ctl promote waits until it accepts writes)
  c.promote = async () => { asPostgres(`${BIN}/pg_ctl`, ['-D', dataDir, '-w', '-t', '60', 'promote']); };
  // reload the server's configuration; evpiped re-reads evpipe.* settings on SIGHUP
  c.reload = async () => {
    asPostgres(`${BIN}/pg_ctl`, ['-D', dataDir, 'reload']);
    if (c.host === 'daemon') {
      await sleep(200); // the postmaster's SIGHUP reaches the backends first
      for (const d of liveDaemons()) d.signal('SIGHUP');
    }
  };
  // set (or, with null, reset) an evpipe.* setting for everything that delivers: the
  // server's (ALTER SYSTEM and a reload) on the extension; on the managed install,
  // where the settings are placeholders, the database's, which sessions read when
  // they connect: the daemons are restarted
  c.setEvpipe = async (name, value) => {
    if (c.install !== 'managed') {
      await c.query(value === null ? `ALTER SYSTEM RESET ${name}` : `ALTER SYSTEM SET ${name} = '${value}'`);
      return c.reload();
    }
    await c.query(value === null ? `ALTER DATABASE postgres RESET ${name}` : `ALTER DATABASE postgres SET ${name} = '${value}'`);
    const old = liveDaemons();
    for (const d of old) await d.stop('SIGTERM');
    for (const d of old) c.daemons.splice(c.daemons.indexOf(d), 1);
    for (let i = 0; i < old.length; i++) await c.startDaemon();
    await c.pool.end().catch(() => {});
    newPool();
  };
  c.serverLog = () => { try { return fs.readFileSync(logFile, 'utf8'); } catch (e) { return ''; } };
  // the server's log, then the log of every evpiped started for this cluster
  c.log = () => [c.serverLog(), ...c.allDaemons.map((d) => d.log())].join('');
  // A position in c.log() to read on from: c.logSince(c.logMark()) is what every log
  // got since (c.log().slice(n) would mix the server's new lines with old daemon lines).
  c.logMark = () => ({ server: c.serverLog().length, daemons: new Map(c.allDaemons.map((d) => [d, d.log().length])) });
  c.logSince = (mark) => [c.serverLog().slice(mark.server),
    ...c.allDaemons.map((d) => d.log().slice(mark.daemons.get(d) || 0))].join('');
  c.stop = async () => {
    await Promise.all(c.daemons.map((d) => d.stop('SIGTERM')));
    await c.pool.end().catch(() => {});
    const r = asPostgres(`${BIN}/pg_ctl`, ['-D', dataDir, '-m', 'fast', '-w', 'stop'], { allowFail: true });
    if (r.status !== 0) {
      try {
        const pid = Number(fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
        process.kill(pid, 'SIGQUIT');
      } catch (e) { /* gone */ }
    }
    running.delete(c);
    if (!process.env.KEEP_TMP) fs.rmSync(dir, { recursive: true, force: true });
  };

  if (!opts.noExtension && !opts.standbyOf) {
    await c.waitFor('SELECT 1 AS ok', (r) => r.length === 1, 20000);
    if (managed) {
      await c.query('CREATE ROLE owner LOGIN CREATEROLE; GRANT CREATE ON DATABASE postgres TO owner');
      const { runEvpiped, dsnFor } = require('./daemon');
      const r = runEvpiped(['migrate', '--dsn', dsnFor(c, 'owner')], { timeoutMs: 60000 });
      if (r.status !== 0) throw new Error(`evpiped migrate failed (${r.status}): ${r.stderr}${r.stdout}`);
    } else await c.query('CREATE EXTENSION evpipe');
    if (daemonMode) {
      await c.query('CREATE ROLE evpiped LOGIN; GRANT evpipe_worker TO evpiped');
      const n = opts.daemons ?? 2;
      for (let i = 0; i < n; i++) await c.startDaemon(opts.daemonOpts || {});
    }
  }
  return c;
}

module.exports = { startCluster, freePort, sleep, asPostgres, BIN };
