#!/usr/bin/env node
/**
 * Joins per second with the authorization callback (cache cold and warm) against the token policy,
 * in one run (ratios: the machine is noisy). One `ws-edge serve` with WS_ROOM_ACCESS=callback and a
 * local HTTP backend that allows at once; N clients whose tokens list no room join R rooms each:
 * cold (every user and room asked), warm (the same joins again after leaving: cached), and token
 * (rooms the claim lists: no call). Run `npm run build` first:
 *   node bench/room-auth.mjs [clients=500] [rooms per client=4]
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import WebSocket from 'ws';
import { signToken } from '../dist/auth.js';

const CLIENTS = Number(process.argv[2] ?? 500);
const ROOMS = Number(process.argv[3] ?? 4);
const SECRET = 'bench-secret-that-is-long-enough-for-hs256-0123456789';
const KEY = 'bench-room-auth-key-0123456789';

let calls = 0;
const backend = createServer((req, res) => {
  calls += 1;
  req.resume().on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"allow":true}'));
});
await new Promise((r) => backend.listen(0, '127.0.0.1', r));

const env = {
  PATH: process.env.PATH,
  HOST: '127.0.0.1',
  PORT: '0',
  INTERNAL_PORT: '0',
  JWT_SECRET: SECRET,
  LOG_LEVEL: 'info',
  WS_ROOM_ACCESS: 'callback',
  WS_ROOM_AUTH_URL: `http://127.0.0.1:${backend.address().port}/authorize`,
  WS_ROOM_AUTH_KEY: KEY,
  WS_ROOM_AUTH_CONCURRENCY: '64',
  WS_MAX_ROOMS_PER_CONNECTION: '1000',
};
const child = spawn(process.execPath, ['dist/cli.js', 'serve'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
const url = await new Promise((resolve) => {
  let buffered = '';
  child.stdout.on('data', (chunk) => {
    buffered += chunk;
    const start = buffered.split('\n').map((l) => (l.startsWith('{') ? JSON.parse(l) : {})).find((l) => l.event === 'start');
    if (start) resolve(`ws://127.0.0.1:${start.port}/api/v1/ws/connect`);
  });
});

/** Opens N clients; `claim`: their tokens list the rooms (token policy), else none (callback). */
async function open(claim, tag) {
  return Promise.all(
    Array.from({ length: CLIENTS }, (_, i) => {
      const rooms = claim ? ['task:*'] : [];
      const ws = new WebSocket(url, ['wsedge.v1', 'wsedge.bearer.' + signToken({ secret: SECRET, userId: `${tag}${i}`, rooms, ttlSeconds: 3600 })]);
      return new Promise((resolve) => ws.once('message', () => resolve(ws)));
    }),
  );
}

/** Every client joins its R rooms at once; resolves with joins/s and the mean ms per join answer. */
async function joins(sockets, type = 'join_room') {
  const started = process.hrtime.bigint();
  const latencies = [];
  await Promise.all(
    sockets.map(
      (ws, i) =>
        new Promise((resolve) => {
          let left = ROOMS;
          const sent = process.hrtime.bigint();
          const onMessage = (m) => {
            const msg = JSON.parse(String(m));
            if (msg.id !== 'j' && msg.id !== 'l') return;
            if (msg.type === 'error') throw new Error(JSON.stringify(msg));
            if (--left > 0) return;
            latencies.push(Number(process.hrtime.bigint() - sent) / 1e6);
            ws.off('message', onMessage);
            resolve();
          };
          ws.on('message', onMessage);
          for (let r = 0; r < ROOMS; r++) ws.send(JSON.stringify({ type, room: `task:${i}-${r}`, id: type === 'join_room' ? 'j' : 'l' }));
        }),
    ),
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return { joins_per_s: Math.round((CLIENTS * ROOMS) / seconds), mean_ms_for_all_rooms: Number((latencies.reduce((a, b) => a + b, 0) / latencies.length).toFixed(1)) };
}

const rows = [];
for (let round = 0; round < 2; round++) {
  const claimed = await open(true, `t${round}-`);
  rows.push({ round, policy: 'token', ...(await joins(claimed)) });
  claimed.forEach((ws) => ws.close());
  const asked = await open(false, `c${round}-`);
  const before = calls;
  rows.push({ round, policy: 'callback cold', ...(await joins(asked)), backend_calls: calls - before });
  await joins(asked, 'leave_room');
  const warm = calls;
  rows.push({ round, policy: 'callback warm', ...(await joins(asked)), backend_calls: calls - warm });
  asked.forEach((ws) => ws.close());
  await new Promise((r) => setTimeout(r, 500));
}
const mean = (policy) => rows.filter((r) => r.policy === policy).reduce((a, r) => a + r.joins_per_s, 0) / 2;
console.log(JSON.stringify({ clients: CLIENTS, rooms_per_client: ROOMS, rows, cold_vs_token: Number((mean('callback cold') / mean('token')).toFixed(2)), warm_vs_token: Number((mean('callback warm') / mean('token')).toFixed(2)) }));
child.kill();
backend.close();
