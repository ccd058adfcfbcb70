// Start a test peer (test/peers/<name>.js) on 127.0.0.1 and stop it by PID.
'use strict';
const path = require('node:path');
const http = require('node:http');
const { spawn } = require('node:child_process');

const PEERS = path.resolve(__dirname, '../../peers');
const live = new Set();
process.on('exit', () => { for (const p of live) { try { process.kill(p, 'SIGKILL'); } catch (e) { /* gone */ } } });

function httpJson(method, url, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(url, {
      method,
      headers: data ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) } : {},
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        try { resolve(text ? JSON.parse(text) : null); } catch (e) { resolve(text); }
      });
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

function startPeer(name, args = []) {
  return new Promise((resolve, reject) => {
    const portArgs = args.includes('--port') ? [] : ['--port', '0'];
    const child = spawn(process.execPath, [path.join(PEERS, `${name}.js`), ...portArgs, ...args], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, NODE_NO_WARNINGS: '1' },
    });
    live.add(child.pid);
    let buf = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${name} did not start`)); }, 15000);
    child.stdout.on('data', (d) => {
      buf += d.toString();
      const line = buf.split('\n').find((l) => l.includes('"ready"'));
      if (!line) return;
      clearTimeout(timer);
      const info = JSON.parse(line);
      const url = `http://127.0.0.1:${info.port}`;
      resolve({
        ...info,
        url,
        pid: child.pid,
        control: (method, p, body) => httpJson(method, url + p, body),
        stop: () => new Promise((r) => {
          if (child.exitCode !== null) { live.delete(child.pid); return r(); }
          child.once('exit', () => { live.delete(child.pid); r(); });
          child.kill('SIGTERM');
          setTimeout(() => { try { child.kill('SIGKILL'); } catch (e) { /* gone */ } }, 2000).unref();
        }),
      });
    });
    child.on('exit', (code) => { clearTimeout(timer); if (!buf.includes('ready')) reject(new Error(`${name} exited with ${code}`)); });
  });
}

module.exports = { startPeer, httpJson };
