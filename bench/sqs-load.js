#!/usr/bin/env node
// SQS load client for bench/run: measures what the SQS emulator (behind the
// SigV4 proxy of test/peers/sqs.js) can take, sending the same shape of
// traffic as an evpipe sqs destination: SendMessageBatch of 10 entries, each
// a canonical envelope with the eventType/source/eventId attributes, signed
// with SigV4 by @aws-sdk/client-sqs, with N requests in flight.
//   node bench/sqs-load.js --endpoint URL --queue-url URL --akid ID --secret S
//        [--messages 20000] [--concurrency 16] [--batch 10] [--max-seconds 120]
// Prints one JSON line: {"messages","requests","failed","seconds","perSecond"}.
// Talks to 127.0.0.1 only (the endpoint given), stops after --messages or
// --max-seconds, whichever comes first.
'use strict';
const path = require('node:path');
const { performance } = require('node:perf_hooks');
const {
  SQSClient, SendMessageBatchCommand,
} = require(path.join(__dirname, '..', 'test', 'peers', 'node_modules', '@aws-sdk', 'client-sqs'));

const args = process.argv.slice(2);
const arg = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const endpoint = arg('--endpoint');
const queueUrl = arg('--queue-url');
const total = Number(arg('--messages', 20000));
const concurrency = Number(arg('--concurrency', 16));
const batch = Number(arg('--batch', 10));
const maxSeconds = Number(arg('--max-seconds', 120));
if (!endpoint || !queueUrl || !/^http:\/\/(127\.0\.0\.1|localhost)[:/]/.test(endpoint)) {
  console.error('usage: sqs-load.js --endpoint http://127.0.0.1:PORT --queue-url URL --akid ID --secret S');
  process.exit(2);
}

const client = new SQSClient({
  region: 'us-east-1',
  endpoint,
  credentials: { accessKeyId: arg('--akid'), secretAccessKey: arg('--secret') },
  maxAttempts: 1,
});

const entry = (n) => {
  const id = `load-${process.pid}-${n}`;
  return {
    Id: String(n % batch),
    MessageBody: JSON.stringify({
      eventId: id, eventType: 'BENCH_SQS', source: 'bench', timestamp: '2026-11-21T10:00:00Z', payload: { n },
    }),
    MessageAttributes: {
      eventType: { DataType: 'String', StringValue: 'BENCH_SQS' },
      source: { DataType: 'String', StringValue: 'bench' },
      eventId: { DataType: 'String', StringValue: id },
    },
  };
};

async function main() {
  let next = 0;
  let ok = 0;
  let failed = 0;
  let requests = 0;
  const t0 = performance.now();
  const deadline = t0 + maxSeconds * 1000;
  async function lane() {
    while (next < total && performance.now() < deadline) {
      const first = next;
      const n = Math.min(batch, total - first);
      next += n;
      const entries = [];
      for (let i = 0; i < n; i++) entries.push(entry(first + i));
      requests++;
      try {
        const r = await client.send(new SendMessageBatchCommand({ QueueUrl: queueUrl, Entries: entries }));
        ok += (r.Successful || []).length;
        failed += (r.Failed || []).length;
      } catch (e) {
        failed += n;
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, lane));
  const seconds = (performance.now() - t0) / 1000;
  client.destroy();
  process.stdout.write(JSON.stringify({ messages: ok, requests, failed, seconds, perSecond: ok / seconds }) + '\n');
}

main().catch((e) => { console.error(e); process.exit(1); });
