#!/usr/bin/env node
// Runs every bench/k6 script briefly against two local nodes sharing a redis-server (clients on
// node A, backend publishes through node B's internal port, so fanout.js crosses nodes), one script
// after another, and fails on any threshold breach (k6 exits 99) or error. Needs `npm run build`
// first, redis-server on PATH, and k6 v1.5+ on PATH or in $K6.
//
//   K6=/path/to/k6 npm run test:k6
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const K6 = process.env.K6 || 'k6';
const JWT_SECRET = `k6-${process.pid}-secret-that-is-long-enough-for-hs256`;
const PUBLISH_API_KEY = `k6-${process.pid}-publish-key-long-enough`;
const HEARTBEAT_S = 8; // limits.js lasts about three intervals

/** Brief settings per script; each also gets the shared ones below. */
const RUNS = [
  ['connections.js', { VUS: '2', CONNS_PER_VU: '50', RAMP: '3s', HOLD: '3s' }],
  ['fanout.js', { ROOMS: '3', MEMBERS: '5', CONNS_PER_VU: '15', RAMP: '2s', SETTLE: '1s', DURATION: '6s', DRAIN: '2s', API_RATE: '10' }],
  ['soak.js', { VUS: '2', CONNS_PER_VU: '10', ROOMS: '4', RAMP: '2s', DURATION: '12s', LIFETIME_MIN: '3s', LIFETIME_MAX: '6s', SEND_INTERVAL: '1s' }],
  ['limits.js', { WS_HEARTBEAT_INTERVAL: String(HEARTBEAT_S) }],
];

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const children = [];
function start(command, args, env = {}) {
  const child = spawn(command, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  child.on('exit', (code, signal) => {
    if (!stopping) {
      console.error(`${command} exited (${code ?? signal}):\n${output.slice(-2000)}`);
      process.exit(1);
    }
  });
  children.push(child);
  return child;
}
let stopping = false;
function stopAll() {
  stopping = true;
  for (const child of children) child.kill('SIGKILL');
}
process.on('exit', stopAll);

async function until(what, probe, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const version = spawnSync(K6, ['version'], { encoding: 'utf8' });
if (version.error || version.status !== 0) {
  console.error(`error: no k6 at "${K6}" (set K6=/path/to/k6 or put k6 on PATH; Grafana publishes release binaries): ${version.error?.message ?? version.stderr}`);
  process.exit(1);
}
console.log(`== ${version.stdout.trim()}`);

const redisPort = await freePort();
start('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
const nodes = [];
for (const id of ['k6-a', 'k6-b']) {
  const port = await freePort();
  const internalPort = await freePort();
  start(process.execPath, ['dist/cli.js', 'serve'], {
    NODE_ID: id,
    PORT: String(port),
    INTERNAL_PORT: String(internalPort),
    REDIS_URL: `redis://127.0.0.1:${redisPort}`,
    JWT_SECRET,
    PUBLISH_API_KEY,
    WS_HEARTBEAT_INTERVAL: String(HEARTBEAT_S),
    LOG_LEVEL: 'warn',
  });
  nodes.push({ id, port, internalPort });
}
for (const node of nodes) {
  await until(`${node.id} ready with its broker up`, async () => {
    const body = await (await fetch(`http://127.0.0.1:${node.internalPort}/readyz`)).json();
    return body.status === 'ready' && body.broker === 'up';
  }, 15_000);
}

const [a, b] = nodes;
const shared = {
  WS_URL: `ws://127.0.0.1:${a.port}/api/v1/ws/connect`,
  PUBLISH_URL: `http://127.0.0.1:${b.internalPort}/api/v1/publish`,
  JWT_SECRET,
  PUBLISH_API_KEY,
};
const failed = [];
for (const [script, params] of RUNS) {
  const started = Date.now();
  const env = Object.entries({ ...shared, ...params, USER_PREFIX: `k6${started.toString(36)}` }).flatMap(([k, v]) => ['-e', `${k}=${v}`]);
  console.log(`== k6 run ${script} ${Object.entries(params).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  const k6 = spawn(K6, ['run', '--quiet', '--no-color', ...env, join('bench/k6', script)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  k6.stdout.on('data', (d) => (output += d));
  k6.stderr.on('data', (d) => (output += d));
  const [code] = await once(k6, 'exit');
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  if (code === 0) {
    console.log(`   passed in ${seconds} s`);
  } else {
    failed.push(script);
    console.log(`   FAILED (k6 exit ${code}) in ${seconds} s:\n${output}`);
  }
}
stopAll();
console.log(`k6: ${RUNS.length - failed.length} passed, ${failed.length} failed`);
process.exit(failed.length === 0 ? 0 : 1);
