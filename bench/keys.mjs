#!/usr/bin/env node
/**
 * Handshakes/s with a key set (issue 26): WebSocket upgrade with a token → `connected`, on three
 * nodes started in this process from dist/ (memory broker), in the same run (ratios: the machine is
 * noisy):
 *
 *   hmac     JWT_SECRET: one static HMAC key, HS256 tokens (the baseline)
 *   jwks-1   JWT_JWKS_URL serving 1 P-256 key, ES256 tokens with its `kid`
 *   jwks-5   JWT_JWKS_URL serving 5 P-256 keys, ES256 tokens signed with the 4th (chosen by `kid`)
 *
 * jwks-1 separates the algorithm's cost (ES256 against HS256) from the set's (5 keys against 1).
 * The JWKS is served over plain HTTP by this script (NODE_ENV is not production). Tokens are
 * signed before timing; the `ws` clients run in a worker thread, so the main thread's CPU time is
 * the nodes'. Per repetition each node takes `handshakes` connections, `concurrency` in flight,
 * each kept open until the phase ends, then all closed; the node order rotates between
 * repetitions; medians over repetitions, ratios taken per repetition. One JSON line per scenario
 * on stdout, then a table; progress on stderr. Run `npm run build` first:
 *   node bench/keys.mjs [handshakes=2000] [concurrency=50] [repetitions=3]
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import os from 'node:os';
import { dirname, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { createSigner } from 'fast-jwt';
import { readFileSync } from 'node:fs';
import { median, sleep } from './lib.mjs';

const HANDSHAKES = Number(process.argv[2] ?? 2000);
const CONCURRENCY = Number(process.argv[3] ?? 50);
const REPS = Number(process.argv[4] ?? 3);
const WARMUP = 300;
const SECRET = 'bench-secret-that-is-long-enough-for-hs256-0123456789';
const here = dirname(fileURLToPath(import.meta.url));
const DIST = resolve(process.env.BENCH_DIST ?? resolve(here, '../dist'));
const load = (module) => import(pathToFileURL(resolve(DIST, module)).href);
const { loadConfig } = await load('config.js');
const { createLogger } = await load('log.js');
const { startNode } = await load('server.js');

// ---------------------------------------------------------------------------------------------
// Key sets: 5 P-256 key pairs; the JWKS server answers /1 (the first key) and /5 (all five).
const pairs = Array.from({ length: 5 }, (_, i) => ({ kid: `bench-key-${i + 1}`, ...generateKeyPairSync('ec', { namedCurve: 'P-256' }) }));
const jwk = (p) => ({ ...p.publicKey.export({ format: 'jwk' }), kid: p.kid, alg: 'ES256', use: 'sig' });
const sets = { '/1': JSON.stringify({ keys: [jwk(pairs[0])] }), '/5': JSON.stringify({ keys: pairs.map(jwk) }) };
let jwksFetches = 0;
const jwks = createServer((req, res) => {
  jwksFetches++;
  const body = sets[req.url];
  res.writeHead(body === undefined ? 404 : 200, { 'content-type': 'application/json' }).end(body ?? '{}');
});
await new Promise((r) => jwks.listen(0, '127.0.0.1', r));
const jwksBase = `http://127.0.0.1:${jwks.address().port}`;

const silent = new Writable({ write: (_c, _e, done) => done() });
async function node(name, keyEnv, sign) {
  const config = loadConfig({
    NODE_ID: `bench-${name}`,
    HOST: '127.0.0.1',
    PORT: '0',
    INTERNAL_HOST: '127.0.0.1',
    INTERNAL_PORT: '0',
    LOG_LEVEL: 'error',
    WS_MAX_CONNECTIONS_PER_USER: '10000',
    WS_MAX_CONNECTIONS_PER_IP: '0',
    WS_AUTH_FAILURE_LIMIT: '0',
    WS_MEMBERSHIP_EVENTS: 'false',
    ...keyEnv,
  });
  const started = await startNode(config, createLogger(config.logLevel, { node_id: config.nodeId }, silent));
  return { name, node: started, url: `ws://127.0.0.1:${started.port}/api/v1/ws/connect`, sign };
}
const es256 = (pair) => createSigner({ key: pair.privateKey.export({ format: 'pem', type: 'pkcs8' }), algorithm: 'ES256', kid: pair.kid, expiresIn: 3_600_000 });
const nodes = [
  await node('hmac', { JWT_SECRET: SECRET }, createSigner({ key: SECRET, algorithm: 'HS256', expiresIn: 3_600_000 })),
  await node('jwks-1', { JWT_JWKS_URL: `${jwksBase}/1` }, es256(pairs[0])),
  await node('jwks-5', { JWT_JWKS_URL: `${jwksBase}/5` }, es256(pairs[3])),
];

// ---------------------------------------------------------------------------------------------
// The clients: a worker thread opens every token's connection, `inFlight` at a time, and reports
// the phase's wall time once all are `connected`; closes them all on request.
const worker = new Worker(
  `
  const { parentPort } = require('node:worker_threads');
  const WebSocket = require(${JSON.stringify(resolve(here, '../node_modules/ws'))});
  let open = [];
  parentPort.on('message', async (m) => {
    if (m.close) {
      await Promise.all(open.map((ws) => new Promise((r) => (ws.once('close', r), ws.close()))));
      open = [];
      return parentPort.postMessage({ closed: true });
    }
    let next = 0, refused = 0;
    const t0 = process.hrtime.bigint();
    await Promise.all(Array.from({ length: m.inFlight }, async () => {
      while (next < m.tokens.length) {
        const token = m.tokens[next++];
        await new Promise((resolve) => {
          const ws = new WebSocket(m.url, ['wsedge.v1', 'wsedge.bearer.' + token]);
          ws.on('error', () => {});
          ws.once('close', () => { refused++; resolve(); });
          ws.on('message', (data) => { if (String(data).includes('"connected"')) { ws.removeAllListeners('close'); open.push(ws); resolve(); } });
        });
      }
    }));
    parentPort.postMessage({ wall: Number(process.hrtime.bigint() - t0) / 1e9, refused });
  });
  `,
  { eval: true },
);
const ask = (message) => new Promise((r) => (worker.once('message', r), worker.postMessage(message)));

/** CPU seconds of this process's main thread (the nodes), not the worker's (the clients). */
function mainThreadCpuSeconds() {
  const fields = readFileSync(`/proc/${process.pid}/task/${process.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

let userSeq = 0;
async function phase(target, count) {
  const tokens = Array.from({ length: count }, () => target.sign({ sub: `u${++userSeq}`, rooms: ['*'] }));
  const cpu0 = mainThreadCpuSeconds();
  const { wall, refused } = await ask({ url: target.url, tokens, inFlight: CONCURRENCY });
  const cpu = mainThreadCpuSeconds() - cpu0;
  if (refused > 0) throw new Error(`${target.name}: ${refused} of ${count} handshakes refused`);
  await ask({ close: true });
  for (let i = 0; target.node.connections() > 0 && i < 200; i++) await sleep(10);
  return { handshakes_per_s: count / wall, node_cpu_us_per_handshake: (cpu / count) * 1e6 };
}

function commitOf(dir) {
  try {
    return execFileSync('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

console.error(`keys bench: ${HANDSHAKES} handshakes per scenario, ${CONCURRENCY} in flight, ${REPS} repetitions, dist ${DIST}`);
for (const target of nodes) await phase(target, WARMUP);
const runs = {};
const startedAt = Date.now();
for (let rep = 0; rep < REPS; rep++) {
  const order = nodes.map((_, i) => nodes[(i + rep) % nodes.length]);
  for (const target of order) {
    const result = await phase(target, HANDSHAKES);
    (runs[target.name] ??= []).push(result);
    console.error(`rep ${rep + 1} ${target.name}: ${Math.round(result.handshakes_per_s)} handshakes/s, node CPU ${result.node_cpu_us_per_handshake.toFixed(0)} us per handshake`);
  }
}

const round = (v, d = 2) => Number(v.toFixed(d));
const ratio = (a, b, key) => round(median(runs[a].map((r, i) => r[key] / runs[b][i][key])), 2);
const machine = { cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model, node: process.version, loadavg_1m_at_end: round(os.loadavg()[0]) };
const results = nodes.map(({ name }) => {
  const list = runs[name];
  const line = {
    bench: 'keys',
    scenario: name,
    handshakes: HANDSHAKES,
    in_flight: CONCURRENCY,
    reps: REPS,
    handshakes_per_s: Math.round(median(list.map((r) => r.handshakes_per_s))),
    handshakes_per_s_range: [Math.round(Math.min(...list.map((r) => r.handshakes_per_s))), Math.round(Math.max(...list.map((r) => r.handshakes_per_s)))],
    node_cpu_us_per_handshake: round(median(list.map((r) => r.node_cpu_us_per_handshake)), 0),
    ratios: {
      over_hmac_handshakes_per_s: ratio(name, 'hmac', 'handshakes_per_s'),
      over_hmac_node_cpu: ratio(name, 'hmac', 'node_cpu_us_per_handshake'),
      ...(name === 'jwks-5' && { over_jwks_1_handshakes_per_s: ratio(name, 'jwks-1', 'handshakes_per_s') }),
    },
    jwks_fetches: jwksFetches,
    commit: commitOf(dirname(DIST)),
    machine,
  };
  console.log(JSON.stringify(line));
  return line;
});

const fmt = (n) => Math.round(n).toLocaleString('en-US');
console.log(`\nHandshakes, ${HANDSHAKES} per scenario, ${CONCURRENCY} in flight, medians of ${REPS} (${((Date.now() - startedAt) / 1000).toFixed(0)} s), commit ${results[0].commit}, JWKS fetches ${jwksFetches}`);
console.log('| scenario | handshakes/s | node CPU us/handshake | / hmac handshakes/s | / hmac node CPU | / jwks-1 handshakes/s |');
console.log('|---|---|---|---|---|---|');
for (const r of results) {
  console.log(
    `| ${r.scenario} | ${fmt(r.handshakes_per_s)} (${fmt(r.handshakes_per_s_range[0])}-${fmt(r.handshakes_per_s_range[1])}) | ${r.node_cpu_us_per_handshake} | ${r.ratios.over_hmac_handshakes_per_s} | ${r.ratios.over_hmac_node_cpu} | ${r.ratios.over_jwks_1_handshakes_per_s ?? ''} |`,
  );
}

await Promise.all(nodes.map((n) => n.node.shutdown()));
await worker.terminate();
jwks.close();
process.exit(0);
