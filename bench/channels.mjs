// Per-room channels (ws-edge's layout) against one shared `ws:events` channel (the product's
// earlier design) at 3 nodes, rooms spread evenly over the nodes. Same Redis, same events, same run.
//   node bench/channels.mjs [events=200000] [rooms=3000] [repetitions=3]
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { Redis } from 'ioredis';
import { cpuSecondsOf, median, sleep } from './lib.mjs';

const events = Number(process.argv[2] ?? 200_000);
const rooms = Number(process.argv[3] ?? 3000);
const repetitions = Number(process.argv[4] ?? 3);
const port = 17000 + Math.floor(Math.random() * 2000);
const redisServer = spawn('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no', '--bind', '127.0.0.1'], { stdio: 'ignore' });
await sleep(300);
const url = `redis://127.0.0.1:${port}`;
const payload = 'x'.repeat(100);

function startNode(layout, index, prefix) {
  const child = spawn(process.execPath, ['bench/channels-node.mjs', layout, String(index), String(rooms), url, prefix], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const ready = new Promise((resolve) => lines.once('line', resolve));
  const report = new Promise((resolve) => lines.on('line', (l) => l.startsWith('{') && resolve(JSON.parse(l))));
  return { child, ready, report };
}

async function run(layout) {
  const prefix = `bench${Date.now()}:`;
  const nodes = [0, 1, 2].map((i) => startNode(layout, i, prefix));
  await Promise.all(nodes.map((n) => n.ready));
  const pub = new Redis(url);
  const redisCpu = cpuSecondsOf(redisServer.pid);
  const started = process.hrtime.bigint();
  const batch = 500;
  for (let i = 0; i < events; i += batch) {
    const pipeline = pub.pipeline();
    for (let j = i; j < Math.min(events, i + batch); j++) {
      const room = `room:${j % rooms}`;
      const channel = layout === 'per-room' ? `${prefix}${room}` : `${prefix}events`;
      pipeline.publish(channel, `${room}\n${payload}`);
    }
    await pipeline.exec();
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await sleep(500);
  const redisCpuUsed = cpuSecondsOf(redisServer.pid) - redisCpu;
  for (const n of nodes) n.child.kill('SIGTERM');
  const reports = await Promise.all(nodes.map((n) => n.report));
  await pub.quit();
  return {
    layout,
    publishes_per_s: Math.round(events / seconds),
    redis_cpu_s: +redisCpuUsed.toFixed(2),
    frames_received_per_node: Math.round(reports.reduce((a, r) => a + r.received, 0) / 3),
    useful_share: +(reports.reduce((a, r) => a + r.relevant, 0) / reports.reduce((a, r) => a + r.received, 0)).toFixed(3),
    node_cpu_s: +reports.reduce((a, r) => a + r.cpu_s, 0).toFixed(2),
  };
}

const results = { 'per-room': [], 'ws:events': [] };
for (let r = 0; r < repetitions; r++) for (const layout of Object.keys(results)) results[layout].push(await run(layout));
redisServer.kill('SIGTERM');
const summary = Object.fromEntries(
  Object.entries(results).map(([layout, runs]) => [
    layout,
    Object.fromEntries(Object.keys(runs[0]).filter((k) => k !== 'layout').map((k) => [k, median(runs.map((x) => x[k]))])),
  ]),
);
console.log(JSON.stringify({ scenario: 'channel-layout', nodes: 3, events, rooms, repetitions, summary }));
console.log('| layout | publishes/s | Redis CPU s | frames received per node | useful share | nodes CPU s (3 nodes) |');
for (const [layout, s] of Object.entries(summary)) {
  console.log(`| ${layout} | ${s.publishes_per_s} | ${s.redis_cpu_s} | ${s.frames_received_per_node} | ${s.useful_share} | ${s.node_cpu_s} |`);
}
process.exit(0);
