#!/usr/bin/env node
/**
 * Mass resume, as after a node loss: `clients` reconnect at once and each sends one `resume` of
 * `rooms` sequenced rooms, `missed` events behind in every room. Measures per client the time from
 * sending `resume` to its `resumed` (p50, p99, max), the events replayed, and the CPU seconds the
 * node and redis-server spent. Needs a redis-server this may flush, and its pid for its CPU:
 *   npm run build
 *   BENCH_REDIS_URL=redis://127.0.0.1:6379 BENCH_REDIS_PID=$(pgrep -n redis-server) node bench/resume.mjs [clients=100] [rooms=100] [missed=50]
 * Defaults are sized for 2 cores (the 1,000 clients: pass 1000).
 */
import { createSigner } from 'fast-jwt';
import os from 'node:os';
import WebSocket from 'ws';
import { cpuSecondsOf, sleep, startServer, stop } from './lib.mjs';

const url = process.env.BENCH_REDIS_URL;
if (!url) throw new Error('set BENCH_REDIS_URL to a redis-server this may flush');
const redisPid = Number(process.env.BENCH_REDIS_PID ?? 0);
const [clients, rooms, missed] = [100, 100, 50].map((d, i) => Number(process.argv[2 + i] ?? d));
const secret = 'bench-secret-0123456789abcdef0123456789abcdef';
const API_KEY = 'bench-publish-key-0123456789abcdef0123456789';
const sign = createSigner({ key: secret, expiresIn: 3_600_000 });
const roomNames = Array.from({ length: rooms }, (_, i) => `task:b${i}`);

const { child, port, internalPort } = await startServer(['dist/cli.js', 'serve'], {
  PORT: '0', INTERNAL_PORT: '0', HOST: '127.0.0.1', JWT_SECRET: secret, NODE_ENV: 'production', LOG_LEVEL: 'info',
  REDIS_URL: url, REDIS_PREFIX: `bench${Date.now()}:`, PUBLISH_API_KEY: API_KEY,
  WS_HISTORY_ROOMS: 'task:*', WS_MAX_ROOMS_PER_CONNECTION: String(Math.max(100, rooms)), WS_MAX_CONNECTIONS_PER_USER: '5',
});
await sleep(500);

/** Opens a client; `onMessage` sees each parsed message. */
function connect(user, onMessage) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/api/v1/ws/connect`, ['wsedge.v1', `wsedge.bearer.${sign({ sub: user, rooms: ['*'] })}`]);
    ws.on('message', (raw) => {
      const msg = JSON.parse(String(raw));
      if (msg.type === 'connected') resolve(ws);
      onMessage(msg);
    });
    ws.once('error', reject);
  });
}

async function publish(room, n) {
  const res = await fetch(`http://127.0.0.1:${internalPort}/api/v1/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ room, type: 'task.updated', data: { n, pad: 'x'.repeat(100) } }),
  });
  if (res.status !== 200) throw new Error(`publish: ${res.status}`);
}

// Positions to resume from: one client joins every room and reads them.
const positions = new Map();
const first = await connect('positions', (msg) => {
  if (msg.type === 'room_joined' && msg.room?.startsWith('task:')) positions.set(msg.room, { epoch: msg.epoch, offset: msg.offset });
});
first.send(JSON.stringify({ type: 'resume', id: 'r', rooms: roomNames.map((room) => ({ room })) }));
while (positions.size < rooms) await sleep(20);
first.close();
for (let n = 1; n <= missed; n++) await Promise.all(roomNames.map((room) => publish(room, n)));

const cpu = () => ({ node: cpuSecondsOf(child.pid), redis: redisPid ? cpuSecondsOf(redisPid) : NaN });
const before = cpu();
const started = Date.now();
const times = [];
let replayed = 0;
let notRecovered = 0;
const errors = {};
const sockets = await Promise.all(
  Array.from({ length: clients }, async (_, i) => {
    let sentAt = 0;
    let done;
    const finished = new Promise((r) => (done = r));
    const ws = await connect(`resumer${i}`, (msg) => {
      if (msg.type === 'task.updated') replayed += 1;
      else if (msg.type === 'room_joined' && msg.recovered === false) notRecovered += 1;
      else if (msg.type === 'error') errors[msg.data.code] = (errors[msg.data.code] ?? 0) + 1;
      else if (msg.type === 'resumed') {
        times.push(Date.now() - sentAt);
        done();
      }
    });
    sentAt = Date.now();
    ws.send(JSON.stringify({ type: 'resume', id: 'r', rooms: roomNames.map((room) => ({ room, since: positions.get(room) })) }));
    await finished;
    return ws;
  }),
);
const wall = Date.now() - started;
const after = cpu();
times.sort((a, b) => a - b);
const at = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
console.log(
  JSON.stringify({
    scenario: 'mass_resume',
    clients,
    rooms,
    missed_per_room: missed,
    replayed,
    expected_replayed: clients * rooms * missed,
    not_recovered: notRecovered,
    errors,
    resume_ms_p50: at(0.5),
    resume_ms_p99: at(0.99),
    resume_ms_max: times.at(-1),
    wall_ms: wall,
    node_cpu_s: Number((after.node - before.node).toFixed(2)),
    redis_cpu_s: Number((after.redis - before.redis).toFixed(2)),
    cpus: os.cpus().length,
    node: process.version,
  }),
);
for (const ws of sockets) ws.close();
await stop(child);
