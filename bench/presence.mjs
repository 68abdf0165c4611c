#!/usr/bin/env node
/**
 * What presence costs, against the same node without it, in one run (ratios: the machine is noisy).
 * Two `ws-edge serve` processes on one Redis, one with WS_PRESENCE_ROOMS=channel:* and one without,
 * measured alternately (ABAB): handshakes/s and joins/s of N clients, and Redis commands per join.
 * Then the store alone: presence_stats and a 1,000-user snapshot of a room of 10,000 users
 * (latency percentiles), and Redis memory per present user. Needs redis-server; run `npm run build`:
 *   BENCH_REDIS_URL=redis://127.0.0.1:6379 node bench/presence.mjs [clients=2000] [room users=10000]
 * The database is flushed.
 */
import { spawn } from 'node:child_process';
import WebSocket from 'ws';
import { signToken } from '../dist/auth.js';
import { loadConfig } from '../dist/config.js';
import { createRedisClients } from '../dist/redis/clients.js';
import { createRedisPresence } from '../dist/redis/presence.js';

const url = process.env.BENCH_REDIS_URL;
if (!url) throw new Error('set BENCH_REDIS_URL to a redis-server this may flush');
const CLIENTS = Number(process.argv[2] ?? 2000);
const ROOM_USERS = Number(process.argv[3] ?? 10_000);
const SECRET = 'bench-secret-that-is-long-enough-for-hs256-0123456789';
const config = loadConfig({ REDIS_URL: url, NODE_ID: 'bench' });
const redis = createRedisClients(config.redis, 'bench');
await new Promise((resolve) => redis.command.once('ready', resolve));
await redis.command.flushall();
const commands = async () => Number(/total_commands_processed:(\d+)/.exec(await redis.command.info('stats'))[1]);
const used = async () => Number(/used_memory:(\d+)/.exec(await redis.command.info('memory'))[1]);

function serve(presence) {
  const env = { PATH: process.env.PATH, HOST: '127.0.0.1', PORT: '0', INTERNAL_PORT: '0', JWT_SECRET: SECRET, REDIS_URL: url, LOG_LEVEL: 'info', WS_MAX_CONNECTIONS_PER_USER: '100', ...(presence ? { WS_PRESENCE_ROOMS: 'channel:*' } : {}) };
  const child = spawn(process.execPath, ['dist/cli.js', 'serve'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve) => {
    let buffered = '';
    child.stdout.on('data', (chunk) => {
      buffered += chunk;
      const start = buffered.split('\n').map((l) => (l.startsWith('{') ? JSON.parse(l) : {})).find((l) => l.event === 'start');
      if (start) resolve({ child, url: `ws://127.0.0.1:${start.port}/api/v1/ws/connect` });
    });
  });
}

/** N clients connect (handshakes/s), then each joins one of 100 rooms and waits for its answer (joins/s). */
async function round(node, label) {
  const sockets = [];
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: CLIENTS }, (_, i) => {
      const ws = new WebSocket(node.url, ['wsedge.v1', 'wsedge.bearer.' + signToken({ secret: SECRET, userId: `u${i}`, rooms: ['*'], ttlSeconds: 3600 })]);
      sockets.push(ws);
      return new Promise((resolve) => ws.once('message', resolve));
    }),
  );
  const t1 = process.hrtime.bigint();
  const before = await commands();
  await Promise.all(
    sockets.map((ws, i) => {
      ws.send(JSON.stringify({ type: 'join_room', room: `channel:${i % 100}`, id: 'j' }));
      return new Promise((resolve) => ws.on('message', (m) => String(m).includes('"id":"j"') && resolve()));
    }),
  );
  const t2 = process.hrtime.bigint();
  // Presence calls go out right after the reply: let them land before counting.
  await new Promise((r) => setTimeout(r, 500));
  const redisCommands = (await commands()) - before - 1;
  await Promise.all(sockets.map((ws) => new Promise((resolve) => (ws.once('close', resolve), ws.close()))));
  await new Promise((r) => setTimeout(r, 1500));
  return { label, handshakes_per_s: Math.round(CLIENTS / (Number(t1 - t0) / 1e9)), joins_per_s: Math.round(CLIENTS / (Number(t2 - t1) / 1e9)), redis_commands_per_join: Number((redisCommands / CLIENTS).toFixed(2)) };
}

const plain = await serve(false);
const tracked = await serve(true);
const runs = [];
for (const node of [plain, tracked, plain, tracked]) runs.push(await round(node, node === plain ? 'off' : 'on'));
plain.child.kill();
tracked.child.kill();
const median = (label, key) => {
  const xs = runs.filter((r) => r.label === label).map((r) => r[key]);
  return xs.reduce((a, b) => a + b, 0) / xs.length;
};

// The store alone: a room of ROOM_USERS present users.
await redis.command.flushall();
const store = createRedisPresence({ command: redis.command, prefix: config.redis.prefix, nodeId: 'bench', keyLifeMs: 41_000 });
const empty = await used();
for (let i = 0; i < ROOM_USERS; i += 500) {
  await Promise.all(Array.from({ length: 500 }, (_, j) => store.add('channel:big', { connectionId: `bench.${i + j}`, userId: `user${i + j}`, username: `User ${i + j}` }, 30_000)));
}
const perUser = Math.round(((await used()) - empty) / ROOM_USERS);
async function latency(call) {
  const ms = [];
  for (let i = 0; i < 200; i++) {
    const t = process.hrtime.bigint();
    await call();
    ms.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  ms.sort((a, b) => a - b);
  return { p50: Number(ms[100].toFixed(2)), p99: Number(ms[198].toFixed(2)) };
}
const stats = await latency(() => store.stats('channel:big'));
const snapshot = await latency(() => store.snapshot('channel:big', 1000));
console.log(
  JSON.stringify({
    clients: CLIENTS,
    runs,
    handshakes_on_off: Number((median('on', 'handshakes_per_s') / median('off', 'handshakes_per_s')).toFixed(2)),
    joins_on_off: Number((median('on', 'joins_per_s') / median('off', 'joins_per_s')).toFixed(2)),
    redis_commands_per_join: { off: median('off', 'redis_commands_per_join'), on: median('on', 'redis_commands_per_join') },
    room_users: ROOM_USERS,
    presence_stats_ms: stats,
    snapshot_1000_ms: snapshot,
    redis_bytes_per_present_user: perUser,
  }),
);
await redis.close();
