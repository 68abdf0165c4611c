// Cross-node fan-out through one Redis versus a 3-master Redis Cluster (sharded pub/sub), same
// run, same load, through ws-edge's own Redis layer (dist/redis/clients.js: PUBLISH/SUBSCRIBE or
// SPUBLISH/SSUBSCRIBE on one subscriber connection per master). One publishing node, two receiving nodes each subscribed to every room;
// reports deliveries per second and the CPU each Redis process used.
//   npm run build && node bench/redis-topologies.mjs [events=200000] [rooms=1000] [repetitions=3]
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../dist/config.js';
import { createRedisClients } from '../dist/redis/clients.js';
import { cpuSecondsOf, median, sleep } from './lib.mjs';

const events = Number(process.argv[2] ?? 200_000);
const rooms = Number(process.argv[3] ?? 1000);
const repetitions = Number(process.argv[4] ?? 3);
const dirs = [];
const servers = [];
const basePort = 21000 + Math.floor(Math.random() * 2000);

function startServer(port, extra = []) {
  const dir = mkdtempSync(join(tmpdir(), 'wsedge-bench-redis-'));
  dirs.push(dir);
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extra], { stdio: 'ignore' });
  servers.push(child);
  return child;
}

async function startCluster() {
  const ports = [basePort + 1, basePort + 2, basePort + 3];
  const children = ports.map((p) => startServer(p, ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-port', String(p + 100)]));
  await sleep(500);
  execFileSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-yes'], { stdio: 'ignore' });
  for (let i = 0; i < 50; i++) {
    const ok = ports.every((p) => execFileSync('redis-cli', ['-p', String(p), 'cluster', 'info']).toString().includes('cluster_state:ok'));
    if (ok) break;
    await sleep(200);
  }
  return { env: { REDIS_CLUSTER_NODES: ports.map((p) => `127.0.0.1:${p}`).join(',') }, pids: children.map((c) => c.pid) };
}

async function startStandalone() {
  const child = startServer(basePort);
  await sleep(300);
  return { env: { REDIS_URL: `redis://127.0.0.1:${basePort}` }, pids: [child.pid] };
}

async function ready(clients) {
  for (let i = 0; i < 100 && clients.command.status !== 'ready'; i++) await sleep(50);
  const linksReady = () => clients.subscribers.all().length > 0 && clients.subscribers.all().every((l) => l.client.status === 'ready');
  for (let i = 0; i < 100 && !linksReady(); i++) await sleep(50);
}

/** Subscribes each channel on the link that carries it (one for one server, its master's in a cluster). */
async function subscribe(clients, channels) {
  const byLink = new Map();
  for (const channel of channels) {
    const link = clients.subscribers.linkFor(channel);
    byLink.set(link, [...(byLink.get(link) ?? []), channel]);
  }
  await Promise.all([...byLink].map(([link, list]) => link.subscribe(list)));
}

async function run(topology, setup) {
  const config = loadConfig({ ...setup.env, REDIS_PREFIX: `bench${Date.now()}:`, JWT_SECRET: 'x'.repeat(40) });
  const channels = Array.from({ length: rooms }, (_, r) => `${config.redis.prefix}room:project:${r}`);
  const receivers = [0, 1].map((i) => createRedisClients(config.redis, `recv${i}`));
  const publisher = createRedisClients(config.redis, 'pub');
  await Promise.all([...receivers, publisher].map(ready));
  let delivered = 0;
  for (const r of receivers) {
    for (const link of r.subscribers.all()) {
      link.client.on(link.messageEvent, () => {
        delivered += 1;
      });
    }
    await subscribe(r, channels);
  }
  const cpuBefore = setup.pids.map(cpuSecondsOf);
  const payload = `pub ${Date.now()} r project:0\n${'x'.repeat(100)}`;
  const started = process.hrtime.bigint();
  const window = 2000;
  for (let i = 0; i < events; i += window) {
    const batch = [];
    for (let j = i; j < Math.min(events, i + window); j++) batch.push(publisher.publish(channels[j % rooms], payload));
    await Promise.all(batch);
  }
  const expected = events * receivers.length;
  while (delivered < expected && Number(process.hrtime.bigint() - started) / 1e9 < 60) await sleep(10);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = setup.pids.map((pid, i) => +(cpuSecondsOf(pid) - cpuBefore[i]).toFixed(2));
  await Promise.all([...receivers, publisher].map((c) => c.close()));
  return { topology, deliveries_per_s: Math.round(delivered / seconds), delivered, expected, redis_cpu_s: cpu, redis_cpu_total_s: +cpu.reduce((a, b) => a + b, 0).toFixed(2) };
}

const setups = { standalone: await startStandalone(), 'cluster-3': await startCluster() };
const results = { standalone: [], 'cluster-3': [] };
try {
  for (let i = 0; i < repetitions; i++) for (const [name, setup] of Object.entries(setups)) results[name].push(await run(name, setup));
} finally {
  for (const s of servers) s.kill('SIGKILL');
  await sleep(200);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
const summary = Object.fromEntries(
  Object.entries(results).map(([name, runs]) => [
    name,
    {
      deliveries_per_s: median(runs.map((r) => r.deliveries_per_s)),
      spread: [Math.min(...runs.map((r) => r.deliveries_per_s)), Math.max(...runs.map((r) => r.deliveries_per_s))],
      redis_cpu_s_per_process: runs[Math.floor(runs.length / 2)].redis_cpu_s,
      redis_cpu_s_per_million_deliveries: +((median(runs.map((r) => r.redis_cpu_total_s)) * 1e6) / (events * 2)).toFixed(2),
      lost: runs.reduce((a, r) => a + (r.expected - r.delivered), 0),
    },
  ]),
);
console.log(JSON.stringify({ scenario: 'redis-topologies', events, rooms, receivers: 2, repetitions, node: process.version, summary }));
console.log('| topology | deliveries/s (median, spread) | Redis CPU s per process | Redis CPU s per 1M deliveries | lost |');
for (const [name, s] of Object.entries(summary)) {
  console.log(`| ${name} | ${s.deliveries_per_s} (${s.spread.join('-')}) | ${s.redis_cpu_s_per_process.join(' / ')} | ${s.redis_cpu_s_per_million_deliveries} | ${s.lost} |`);
}
process.exit(0);
