// End-to-end: the sqs destination against the local-aws-sqs emulator behind
// a strict SigV4-verifying proxy, read back with the official AWS SDK.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startCluster } = require('./lib/cluster');
const { startPeer } = require('./lib/peers');
const {
  SQSClient, CreateQueueCommand, ReceiveMessageCommand, DeleteMessageBatchCommand,
} = require('../peers/node_modules/@aws-sdk/client-sqs');

const AKID = 'AKIDEVPIPETEST';
const SECRET = 'evpipe-test-secret-key';
let pg;
let sqs;
let client;

const ev = (id, type, payload, extra = {}) => ({
  eventId: id, eventType: type, source: 'billing', payload, timestamp: '2026-11-21T10:00:00Z', ...extra,
});
const ingest = (e) => pg.query('SELECT evpipe.ingest($1::jsonb) AS r', [JSON.stringify(e)]);

async function queue(name, fifo = false) {
  await client.send(new CreateQueueCommand({
    QueueName: name,
    Attributes: fifo ? { FifoQueue: 'true' } : undefined,
  }));
  return `${sqs.url}/123456789012/${name}`;
}

async function sqsDest(name, queueUrl, extra = {}) {
  await pg.query('SELECT evpipe.create_destination($1, $2, $3::jsonb)', [name, 'sqs', JSON.stringify({
    queue_url: queueUrl, region: 'us-east-1', endpoint_url: sqs.url,
    access_key_id: AKID, secret_access_key: SECRET, backoff_base_ms: 50, backoff_max_ms: 200, ...extra,
  })]);
}

async function receiveAll(queueUrl, expected, timeoutMs = 15000) {
  const out = [];
  const t0 = Date.now();
  while (out.length < expected && Date.now() - t0 < timeoutMs) {
    const r = await client.send(new ReceiveMessageCommand({
      QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 0,
      MessageAttributeNames: ['All'], AttributeNames: ['All'], MessageSystemAttributeNames: ['All'],
    }));
    const msgs = r.Messages || [];
    out.push(...msgs);
    if (msgs.length) {
      await client.send(new DeleteMessageBatchCommand({
        QueueUrl: queueUrl, Entries: msgs.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle })),
      }));
    } else {
      await new Promise((r2) => setTimeout(r2, 100));
    }
  }
  return out;
}

const delivered = (dst, n, ms = 20000) => pg.waitFor(
  `SELECT count(*)::int AS n FROM evpipe.delivered WHERE destination = '${dst}'`, (r) => r[0].n >= n, ms);

before(async () => {
  sqs = await startPeer('sqs', ['--credentials', `${AKID}:${SECRET}`]);
  client = new SQSClient({
    region: 'us-east-1', endpoint: sqs.url, credentials: { accessKeyId: AKID, secretAccessKey: SECRET },
  });
  pg = await startCluster({ config: { 'evpipe.workers': 2, 'evpipe.tick_ms': 200 } });
  await pg.query(`SELECT evpipe.register_event_type('INVOICE', '{"type": "object"}')`);
});

after(async () => {
  if (pg) await pg.stop();
  if (sqs) await sqs.stop();
  if (client) client.destroy();
});

test('happy path: batches of at most 10, signed, read back by the AWS SDK with attributes', async () => {
  const url = await queue('invoices');
  await sqsDest('invoices', url, { enrich: { region: 'eu' } });
  await pg.query("SELECT evpipe.add_route('INVOICE', 'invoices')");
  await sqs.control('POST', '/_control/reset');
  const trace = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
  await pg.query(`SELECT evpipe.ingest(jsonb_build_object('eventId', 'inv-' || g, 'eventType', 'INVOICE',
    'source', 'billing', 'payload', jsonb_build_object('n', g), 'timestamp', '2026-11-21T10:00:00Z',
    'correlationId', 'corr-' || g, 'traceparent', $1::text)) FROM generate_series(1, 25) g`, [trace]);
  await delivered('invoices', 25);
  const msgs = await receiveAll(url, 25);
  assert.equal(msgs.length, 25);
  const bodies = msgs.map((m) => JSON.parse(m.Body));
  assert.deepEqual(new Set(bodies.map((b) => b.eventId)).size, 25);
  const m1 = msgs.find((m) => JSON.parse(m.Body).eventId === 'inv-1');
  assert.deepEqual(JSON.parse(m1.Body), {
    eventId: 'inv-1', eventType: 'INVOICE', source: 'billing', timestamp: '2026-11-21T10:00:00Z',
    correlationId: 'corr-1', traceparent: trace, payload: { n: 1, region: 'eu' },
  });
  assert.equal(m1.MessageAttributes.eventType.StringValue, 'INVOICE');
  assert.equal(m1.MessageAttributes.source.StringValue, 'billing');
  assert.equal(m1.MessageAttributes.eventId.StringValue, 'inv-1');
  assert.equal(m1.MessageAttributes.correlationId.StringValue, 'corr-1');
  const log = await sqs.control('GET', '/_control/log');
  const sends = log.filter((l) => l.target === 'AmazonSQS.SendMessageBatch');
  assert.ok(sends.length >= 3, `25 events need at least 3 batches (got ${sends.length})`);
  assert.ok(sends.every((l) => l.verified && l.entries <= 10), 'every batch signed correctly and at most 10 entries');
  const xray = m1.Attributes && m1.Attributes.AWSTraceHeader;
  if (xray) assert.equal(xray, 'Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1');
});

test('a batch with a bad entry: that entry dead-letters, the others are delivered', async () => {
  const url = await queue('partial');
  await sqsDest('partial', url);
  await pg.query(`SELECT evpipe.register_event_type('PARTIAL', '{"type": "object"}')`);
  await pg.query("SELECT evpipe.add_route('PARTIAL', 'partial')");
  await sqs.control('POST', '/_control/fail-entries', { match: 'poison', code: 'InvalidMessageContents', senderFault: true });
  for (let i = 0; i < 5; i++) await ingest(ev(`p-${i}`, 'PARTIAL', { v: i === 2 ? 'poison' : 'fine' }));
  await delivered('partial', 4);
  const dl = await pg.waitFor("SELECT attempts, last_status, last_error FROM evpipe.dead_letters WHERE event_id = 'p-2'",
    (r) => r.length === 1, 10000);
  assert.equal(dl[0].attempts, 1, 'a sender fault is permanent');
  assert.match(dl[0].last_error, /SQS InvalidMessageContents/);
  assert.equal((await receiveAll(url, 4)).length, 4);
  await sqs.control('POST', '/_control/reset');
});

test('a wrong secret dead-letters with the signature error, and the secret appears nowhere', async () => {
  const url = await queue('wrongkey');
  await sqsDest('wrongkey', url, { secret_access_key: 'not-the-secret-xyz' });
  await pg.query(`SELECT evpipe.register_event_type('WRONGKEY', '{"type": "object"}')`);
  await pg.query("SELECT evpipe.add_route('WRONGKEY', 'wrongkey')");
  await ingest(ev('wk-1', 'WRONGKEY', {}));
  const dl = await pg.waitFor("SELECT * FROM evpipe.dead_letters WHERE event_id = 'wk-1'", (r) => r.length === 1, 10000);
  assert.equal(dl[0].attempts, 1);
  assert.equal(dl[0].last_status, 403);
  assert.match(dl[0].last_error, /SignatureDoesNotMatch/);
  const everything = JSON.stringify(dl) + pg.log() +
    JSON.stringify(await pg.query("SELECT * FROM evpipe.stats")) +
    JSON.stringify(await pg.query("SELECT * FROM evpipe.destination_list"));
  assert.ok(!everything.includes('not-the-secret-xyz'), 'secret not in the DLQ, log, stats or listing');
  assert.ok(!everything.includes(SECRET), 'no secret anywhere');
});

test('throttling is retried, then delivered', async () => {
  const url = await queue('throttled');
  await sqsDest('throttled', url);
  await pg.query(`SELECT evpipe.register_event_type('THROTTLED', '{"type": "object"}')`);
  await pg.query("SELECT evpipe.add_route('THROTTLED', 'throttled')");
  await sqs.control('POST', '/_control/inject', { times: 2, status: 400, type: 'ThrottlingException' });
  await ingest(ev('th-1', 'THROTTLED', {}));
  await delivered('throttled', 1);
  const d = await pg.query("SELECT attempts FROM evpipe.delivered WHERE event_id = 'th-1'");
  assert.equal(d[0].attempts, 3);
  assert.equal((await receiveAll(url, 1)).length, 1);
});

test('FIFO: each group arrives in ingest order; SQS drops a repeated eventId', async () => {
  const url = await queue('ledger.fifo', true);
  await sqsDest('ledger-fifo', url, { message_group_field: 'payload.account' });
  await sqsDest('ledger-fifo-copy', url);
  await pg.query(`SELECT evpipe.register_event_type('LEDGER', '{"type": "object"}')`);
  await pg.query(`SELECT evpipe.register_event_type('LEDGER_COPY', '{"type": "object"}')`);
  await pg.query("SELECT evpipe.add_route('LEDGER', 'ledger-fifo')");
  await pg.query("SELECT evpipe.add_route('LEDGER_COPY', 'ledger-fifo-copy')");
  for (let i = 0; i < 30; i++) await ingest(ev(`l-${String(i).padStart(2, '0')}`, 'LEDGER', { account: i % 2 ? 'A' : 'B', seq: i }));
  await delivered('ledger-fifo', 30);
  const msgs = await receiveAll(url, 30);
  assert.equal(msgs.length, 30);
  for (const acct of ['A', 'B']) {
    const seqs = msgs.map((m) => JSON.parse(m.Body)).filter((b) => b.payload.account === acct).map((b) => b.payload.seq);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), `group ${acct} in ingest order`);
    const groups = msgs.filter((m) => JSON.parse(m.Body).payload.account === acct).map((m) => m.Attributes.MessageGroupId);
    assert.ok(groups.every((g) => g === acct), 'MessageGroupId from message_group_field');
  }
  // the same eventId sent again (through a second destination) is dropped by SQS
  await ingest(ev('dup-x', 'LEDGER', { account: 'A', seq: 100 }));
  await delivered('ledger-fifo', 31);
  await pg.query(`INSERT INTO evpipe.outbox (event_id, destination) VALUES ('dup-x', 'ledger-fifo-copy')`);
  await pg.query('SELECT evpipe._wake_workers()');
  await delivered('ledger-fifo-copy', 1);
  const again = await receiveAll(url, 2, 3000);
  assert.equal(again.filter((m) => JSON.parse(m.Body).eventId === 'dup-x').length, 1, 'deduplicated by MessageDeduplicationId');
});

test('credentials from the server environment, with a session token signed and sent', async () => {
  const TOKEN = 'session-token-xyz';
  const sqs2 = await startPeer('sqs', ['--credentials', `ASIAENVTEST:env-secret:${TOKEN}`]);
  // the environment of whichever process delivers: the server's, or (daemon host) evpiped's
  const awsEnv = { AWS_ACCESS_KEY_ID: 'ASIAENVTEST', AWS_SECRET_ACCESS_KEY: 'env-secret', AWS_SESSION_TOKEN: TOKEN };
  const pg2 = await startCluster({
    config: { 'evpipe.workers': 1, 'evpipe.tick_ms': 200 },
    env: awsEnv,
    daemons: 1,
    daemonOpts: { env: awsEnv },
  });
  try {
    const c2 = new SQSClient({ region: 'us-east-1', endpoint: sqs2.url,
      credentials: { accessKeyId: 'ASIAENVTEST', secretAccessKey: 'env-secret', sessionToken: TOKEN } });
    await c2.send(new CreateQueueCommand({ QueueName: 'envq' }));
    await pg2.query(`SELECT evpipe.register_event_type('ENV', '{}')`);
    await pg2.query('SELECT evpipe.create_destination($1, $2, $3::jsonb)', ['envq', 'sqs', JSON.stringify({
      queue_url: `${sqs2.url}/123456789012/envq`, region: 'us-east-1', endpoint_url: sqs2.url })]);
    await pg2.query("SELECT evpipe.add_route('ENV', 'envq')");
    await pg2.query(`SELECT evpipe.ingest('{"eventId": "env-1", "eventType": "ENV", "source": "s", "payload": {}, "timestamp": "2026-11-21T10:00:00Z"}')`);
    await pg2.waitFor("SELECT 1 FROM evpipe.delivered WHERE event_id = 'env-1'", (r) => r.length === 1, 15000);
    const log = await sqs2.control('GET', '/_control/log');
    assert.ok(log.some((l) => l.target === 'AmazonSQS.SendMessageBatch' && l.verified), 'signed with the environment credentials and token');
    assert.ok(!pg2.log().includes('env-secret'));
    c2.destroy();
  } finally {
    await pg2.stop();
    await sqs2.stop();
  }
});
