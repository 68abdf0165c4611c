#!/usr/bin/env node
/**
 * Redis Stream ingestion (issue 27, "10,000 stream entries, the consuming node killed mid-way";
 * "entries/s published per node against direct API publishes in the same run"). Three
 * `ws-edge serve` processes from dist/ on one redis-server (spawned on a free port), WS_STREAM on,
 * ROOMS sequenced rooms; MEMBERS clients (in this process) on the two nodes that do not consume,
 * each in every room.
 *
 *   api      N events published through POST /api/v1/publish on the consuming node (64 in
 *            flight), the rooms in turn: events/s from the first request to the last event at
 *            every member.
 *   stream   N entries appended to the stream (pipelined, 100 per round trip): entries/s from the
 *            first XADD to the last event at every member.
 *   batch    the same N through POST /api/v1/publish/batch, 100 publications a request, 4 in
 *            flight: the API with the stream's batching. Ratios stream/api and stream/batch. Two
 *            repetitions each, alternating (api, batch, stream, api, batch, stream), medians.
 *   kill     N entries appended at RATE/s; once half are appended the consuming node is killed
 *            with SIGKILL. Every member must get every entry once, in order per room. Printed:
 *            sent, received, duplicates, lost, out of order; the takeover time (kill to another
 *            node saying stream_consuming in /readyz); lag per entry from its id's time to its
 *            arrival at a member, p50/p99/max, over all entries and over those appended outside
 *            the takeover (kill - 1 s to takeover + 1 s).
 *
 * One JSON line per phase to stdout, then a table; progress to stderr. Run `npm run build` first:
 *   node bench/ingest.mjs [entries=10000] [rate=500] [rooms=10] [members=4]
 * The whole run is bounded (10 minutes, each wait 120 s); redis-server and the nodes are killed
 * (by pid) however this exits.
 */
import os from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import WebSocket from 'ws';
import { median, sleep, startRedisServer, startServer } from './lib.mjs';

const [N = 10_000, RATE = 500, ROOMS = 10, MEMBERS = 4] = process.argv.slice(2).map(Number);
const SECRET = 'bench-secret-that-is-long-enough-for-hs256-0123456789';
const API_KEY = 'bench-ingest-api-key-0123456789abcdef';
const WAIT_MS = 120_000;
const dist = resolve(dirname(fileURLToPath(import.meta.url)), '../dist');
const { signToken } = await import(pathToFileURL(resolve(dist, 'auth.js')).href);
const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 19)}]`, ...a);
setTimeout(() => {
  log('run over 10 minutes: giving up');
  process.exit(2);
}, 600_000).unref();

// ---------------------------------------------------------------------------------------------
// redis-server on a free port and three nodes, killed (by pid) however this exits.
const pids = new Set();
process.on('exit', () => {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));
const { port: redisPort, pid: redisPid } = await startRedisServer(900, (child) => pids.add(child.pid));
pids.add(redisPid);
const redis = new Redis({ port: redisPort, host: '127.0.0.1' });

const waitFor = async (what, check, timeoutMs = WAIT_MS, everyMs = 20) => {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== false && value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
};

const STREAM = 'bench{ingest}';
const rooms = Array.from({ length: ROOMS }, (_, i) => `task:r${i}`);
const startNodeProcess = async (id) => {
  const env = { NODE_ID: id, HOST: '127.0.0.1', PORT: '0', INTERNAL_HOST: '127.0.0.1', INTERNAL_PORT: '0', JWT_SECRET: SECRET, REDIS_URL: `redis://127.0.0.1:${redisPort}`, REDIS_PREFIX: 'bench:', WS_STREAM: STREAM, WS_HISTORY_ROOMS: 'task:*', WS_HISTORY_SIZE: '1000', PUBLISH_API_KEY: API_KEY, LOG_LEVEL: 'info', WS_DRAIN_TIMEOUT: '1' };
  const node = await startServer([resolve(dist, 'cli.js'), 'serve'], env, { onSpawn: (child) => pids.add(child.pid) });
  return { id, ...node };
};
const nodes = await Promise.all(['ia', 'ib', 'ic'].map(startNodeProcess));
const consuming = async (node) => {
  try {
    const body = await (await fetch(`http://127.0.0.1:${node.port}/readyz`)).json();
    return body.ingest?.stream_consuming === true;
  } catch {
    return false;
  }
};
const holderOf = (among) => waitFor('a consuming node', async () => {
  const flags = await Promise.all(among.map(consuming));
  return flags.indexOf(true) >= 0 ? among[flags.indexOf(true)] : false;
}, 30_000, 50);
const holder = await holderOf(nodes);
const others = nodes.filter((n) => n !== holder);
log(`nodes up; ${holder.id} consumes`);

// ---------------------------------------------------------------------------------------------
// Members: every event's arrival time, by phase tag and n.
const members = [];
for (let i = 0; i < MEMBERS; i += 1) {
  const node = others[i % others.length];
  const token = signToken({ secret: SECRET, userId: `m${i}`, rooms: ['*'], ttlSeconds: 3600 });
  const ws = new WebSocket(`ws://127.0.0.1:${node.port}/api/v1/ws/connect?token=${token}`);
  const member = { ws, got: new Map(), count: new Map(), joined: 0, replies: [] };
  await new Promise((resolve_, reject) => {
    ws.on('message', (raw) => {
      const msg = JSON.parse(String(raw));
      if (msg.type === 'connected') resolve_();
      if (msg.type === 'room_joined') member.joined += 1;
      else if (msg.id !== undefined) member.replies.push(msg);
      if (msg.type !== 'task.numbered') return;
      const { tag, n } = msg.data;
      const key = `${tag}:${msg.room}`;
      if (!member.got.has(key)) member.got.set(key, []);
      member.got.get(key).push([n, Date.now()]);
      member.count.set(tag, (member.count.get(tag) ?? 0) + 1);
    });
    ws.once('error', reject);
  });
  for (const room of rooms) ws.send(JSON.stringify({ type: 'join_room', room, id: room }));
  members.push(member);
}
await waitFor('members in their rooms', () => {
  const refused = members.flatMap((m) => m.replies);
  if (refused.length > 0) throw new Error(`join refused: ${JSON.stringify(refused[0])}`);
  return members.every((m) => m.joined === ROOMS);
});
const allArrived = (tag, total) => waitFor(`${total} ${tag} events at every member`, () => members.every((m) => (m.count.get(tag) ?? 0) >= total * 1), WAIT_MS, 5);
const command = (tag, i) => JSON.stringify({ room: rooms[i % ROOMS], type: 'task.numbered', data: { tag, n: Math.floor(i / ROOMS) + 1 } });

async function viaApi(tag) {
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < N) {
      const i = next++;
      const res = await fetch(`http://127.0.0.1:${holder.internalPort}/api/v1/publish`, { method: 'POST', headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' }, body: command(tag, i) });
      if (res.status !== 200) throw new Error(`publish answered ${res.status}`);
      await res.arrayBuffer();
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  await allArrived(tag, N);
  return N / ((performance.now() - t0) / 1000);
}

/** The API's batch route, 100 publications a request (the stream's own batching), 4 in flight. */
async function viaBatch(tag) {
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < N) {
      const from = next;
      next = Math.min(N, next + 100);
      const publications = Array.from({ length: next - from }, (_, k) => JSON.parse(command(tag, from + k)));
      const res = await fetch(`http://127.0.0.1:${holder.internalPort}/api/v1/publish/batch`, { method: 'POST', headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ publications }) });
      if (res.status !== 200) throw new Error(`publish/batch answered ${res.status}`);
      await res.arrayBuffer();
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  await allArrived(tag, N);
  return N / ((performance.now() - t0) / 1000);
}

async function viaStream(tag) {
  const t0 = performance.now();
  for (let i = 0; i < N; i += 100) {
    const batch = redis.pipeline();
    for (let j = i; j < Math.min(N, i + 100); j += 1) batch.xadd(STREAM, '*', 'command', command(tag, j));
    await batch.exec();
  }
  await allArrived(tag, N);
  return N / ((performance.now() - t0) / 1000);
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];

async function killMidway() {
  const tag = 'kill';
  const appended = new Map(); // `${room}:${n}` -> id time (ms)
  let killedAt = 0;
  let takeover;
  const killing = [];
  const t0 = performance.now();
  for (let i = 0; i < N; i += 1) {
    // Paced at RATE/s in 10 ms steps.
    const due = (i / RATE) * 1000;
    if (i % Math.max(1, Math.floor(RATE / 100)) === 0) {
      const ahead = due - (performance.now() - t0);
      if (ahead > 0) await sleep(ahead);
    }
    const id = await redis.xadd(STREAM, '*', 'command', command(tag, i));
    appended.set(`${rooms[i % ROOMS]}:${Math.floor(i / ROOMS) + 1}`, Number(id.split('-')[0]));
    if (i === Math.floor(N / 2)) {
      log(`killing ${holder.id} (kill -9) after ${i + 1} entries`);
      killedAt = Date.now();
      holder.child.kill('SIGKILL');
      killing.push(holderOf(others).then((next) => (takeover = { node: next.id, ms: Date.now() - killedAt })));
    }
  }
  await Promise.all(killing);
  await allArrived(tag, N);
  let received = 0;
  let duplicates = 0;
  let lost = 0;
  let outOfOrder = 0;
  const lags = [];
  const calm = [];
  for (const m of members) {
    for (const room of rooms) {
      const got = m.got.get(`${tag}:${room}`) ?? [];
      const seen = new Set(got.map(([n]) => n));
      received += got.length;
      duplicates += got.length - seen.size;
      lost += N / ROOMS - seen.size;
      outOfOrder += got.filter(([n], k) => k > 0 && n < got[k - 1][0]).length;
      for (const [n, at] of got) {
        const written = appended.get(`${room}:${n}`);
        lags.push(at - written);
        if (written < killedAt - 1000 || written > killedAt + takeover.ms + 1000) calm.push(at - written);
      }
    }
  }
  lags.sort((a, b) => a - b);
  calm.sort((a, b) => a - b);
  return {
    phase: 'kill',
    entries: N,
    members: MEMBERS,
    sent: N * MEMBERS,
    received,
    duplicates,
    lost,
    out_of_order: outOfOrder,
    takeover_ms: takeover.ms,
    lag_ms: { p50: percentile(lags, 50), p99: percentile(lags, 99), max: lags[lags.length - 1] },
    lag_outside_takeover_ms: { p50: percentile(calm, 50), p99: percentile(calm, 99), max: calm[calm.length - 1] },
  };
}

const api = [];
const batch = [];
const stream = [];
for (let rep = 0; rep < 2; rep += 1) {
  api.push(await viaApi(`api${rep}`));
  log(`api rep ${rep}: ${api.at(-1).toFixed(0)} events/s`);
  batch.push(await viaBatch(`batch${rep}`));
  log(`api batch rep ${rep}: ${batch.at(-1).toFixed(0)} events/s`);
  stream.push(await viaStream(`stream${rep}`));
  log(`stream rep ${rep}: ${stream.at(-1).toFixed(0)} entries/s`);
}
const throughput = { phase: 'throughput', events: N, rooms: ROOMS, members: MEMBERS, api_per_s: Math.round(median(api)), batch_per_s: Math.round(median(batch)), stream_per_s: Math.round(median(stream)), ratio_stream_api: Number((median(stream) / median(api)).toFixed(2)), ratio_stream_batch: Number((median(stream) / median(batch)).toFixed(2)), runs: { api: api.map(Math.round), batch: batch.map(Math.round), stream: stream.map(Math.round) } };
console.log(JSON.stringify(throughput));
const kill = await killMidway();
console.log(JSON.stringify(kill));
console.log(`
| ${os.cpus().length} CPUs, Node ${process.version} | value |
|---|---|
| direct API publishes/s (median of 2) | ${throughput.api_per_s} |
| API batch publishes/s, 100 a request (median of 2) | ${throughput.batch_per_s} |
| stream entries/s (median of 2) | ${throughput.stream_per_s} |
| stream / API, stream / API batch | ${throughput.ratio_stream_api}, ${throughput.ratio_stream_batch} |
| kill -9: sent / received / duplicates / lost / out of order | ${kill.sent} / ${kill.received} / ${kill.duplicates} / ${kill.lost} / ${kill.out_of_order} |
| takeover (kill to another node consuming) | ${kill.takeover_ms} ms |
| lag p50 / p99 / max, all entries | ${kill.lag_ms.p50} / ${kill.lag_ms.p99} / ${kill.lag_ms.max} ms |
| lag p50 / p99 / max, outside the takeover | ${kill.lag_outside_takeover_ms.p50} / ${kill.lag_outside_takeover_ms.p99} / ${kill.lag_outside_takeover_ms.max} ms |`);
for (const m of members) m.ws.close();
redis.disconnect();
process.exit(kill.duplicates === 0 && kill.lost === 0 && kill.out_of_order === 0 ? 0 : 1);
