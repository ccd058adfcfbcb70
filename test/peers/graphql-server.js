#!/usr/bin/env node
// A rate-limited GraphQL API for the tests (graphql-yoga, graphql 16), on
// 127.0.0.1 only. Prints {"ready":true,"port":N}.
//   node graphql-server.js --port 0 [--rate-limit N] [--require-token T]
// Mutation ingestEvent(input: EventInput!) where brand is required.
// Control API under /_control/: GET received, GET stats, POST reset,
// POST behavior {"failTimes":N, "mode":"error"|"status"|"hang", "status":503,
//   "code":"INTERNAL_SERVER_ERROR", "hangMs":N, "rateLimit":N}
'use strict';
const { maxPerSecond } = require('./window');
const http = require('node:http');
const { serveLoopback } = require('./serve');
const { performance } = require('node:perf_hooks');
const { createYoga, createSchema } = require('graphql-yoga');
const { GraphQLError, GraphQLScalarType } = require('graphql');

const args = process.argv.slice(2);
const arg = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const port = Number(arg('--port', 0));
let rateLimit = Number(arg('--rate-limit', 0));
const token = arg('--require-token', null);

let received = [];
let accepted = []; // times of accepted requests
let arrivals = []; // times of every request
let rejected429 = 0;
let requests = 0;
let behavior = {};
const now = () => performance.timeOrigin + performance.now();

const JSONScalar = new GraphQLScalarType({
  name: 'JSON',
  serialize: (v) => v,
  parseValue: (v) => v,
  parseLiteral: () => null,
});

const yoga = createYoga({
  graphqlEndpoint: '/graphql',
  maskedErrors: false,
  logging: false,
  schema: createSchema({
    typeDefs: `
      scalar JSON
      input EventInput { eventId: ID!, timestamp: String!, name: String, body: String, brand: String!, payload: JSON }
      type IngestResult { ok: Boolean!, eventId: ID! }
      type Query { health: String! }
      type Mutation { ingestEvent(input: EventInput!): IngestResult! }
    `,
    resolvers: {
      JSON: JSONScalar,
      Query: { health: () => 'ok' },
      Mutation: {
        ingestEvent: (_, { input }, ctx) => {
          if (behavior.failTimes > 0 && behavior.mode === 'error') {
            behavior.failTimes--;
            throw new GraphQLError('injected failure', { extensions: { code: behavior.code || 'INTERNAL_SERVER_ERROR' } });
          }
          received.push({ eventId: input.eventId, input, receivedAt: now(), headers: ctx.request.headers ? Object.fromEntries(ctx.request.headers) : {} });
          return { ok: true, eventId: input.eventId };
        },
      },
    },
  }),
});


function json(res, status, obj, headers = {}) {
  const b = JSON.stringify(obj);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(b), ...headers });
  res.end(b);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (url.pathname.startsWith('/_control/')) {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      if (url.pathname === '/_control/received') return json(res, 200, received);
      if (url.pathname === '/_control/stats') {
        return json(res, 200, { count: received.length, requests, maxPerSecond: maxPerSecond(accepted), maxArrivalsPerSecond: maxPerSecond(arrivals), rejected429 });
      }
      if (url.pathname === '/_control/reset') { received = []; accepted = []; arrivals = []; rejected429 = 0; requests = 0; behavior = {}; return json(res, 200, { ok: true }); }
      if (url.pathname === '/_control/behavior') {
        behavior = JSON.parse(body || '{}');
        if (behavior.rateLimit !== undefined) rateLimit = behavior.rateLimit;
        return json(res, 200, { ok: true });
      }
      return json(res, 404, { error: 'unknown control endpoint' });
    });
    return;
  }
  requests++;
  arrivals.push(now());
  if (token && req.headers.authorization !== `Bearer ${token}`) {
    return json(res, 401, { errors: [{ message: 'unauthenticated', extensions: { code: 'UNAUTHENTICATED' } }] });
  }
  const t = now();
  if (rateLimit > 0) {
    // sliding one-second window over accepted requests
    const recent = accepted.filter((x) => t - x < 1000).length;
    if (recent >= rateLimit) {
      rejected429++;
      return json(res, 429, { errors: [{ message: 'rate limited', extensions: { code: 'RATE_LIMITED' } }] }, { 'Retry-After': '1' });
    }
  }
  if (behavior.failTimes > 0 && behavior.mode === 'status') {
    behavior.failTimes--;
    return json(res, behavior.status || 503, { errors: [{ message: 'injected status' }] });
  }
  if (behavior.failTimes > 0 && behavior.mode === 'hang') {
    behavior.failTimes--;
    const timer = setTimeout(() => json(res, 200, { data: null }), behavior.hangMs || 30000);
    res.on('close', () => clearTimeout(timer));
    return;
  }
  accepted.push(t);
  yoga(req, res);
});
serveLoopback(server, port);
