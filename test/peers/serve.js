// How every test peer listens: on 127.0.0.1 only, keeping idle connections
// longer than a client's pool would, printing {"ready":true,"port":N,...}
// once listening (the harness waits for that line), and closing everything
// on SIGTERM (the harness stops peers by PID).
'use strict';

function serveLoopback(server, port, { extra = {}, onStop = () => {} } = {}) {
  server.keepAliveTimeout = 65000;
  server.headersTimeout = 66000;
  server.requestTimeout = 0;
  server.listen(port, '127.0.0.1', () => {
    process.stdout.write(JSON.stringify({ ready: true, port: server.address().port, ...extra }) + '\n');
  });
  process.on('SIGTERM', () => {
    server.closeAllConnections();
    onStop();
    server.close(() => process.exit(0));
  });
}

module.exports = { serveLoopback };
