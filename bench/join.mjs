#!/usr/bin/env node
/**
 * Join latency: `join_room` sent → `room_joined` received, on one node started in this process from
 * dist/, with Redis (a redis-server this script spawns on a free port) and with the memory broker
 * (no Redis: no round trip), in the same run (ratios: the machine is noisy). Since issue 21
 * `room_joined` means subscribed: a plain room's first local member is answered once the node's
 * SUBSCRIBE of the room's channel is confirmed by Redis; later members are answered at once.
 *
 *   first   every join is a fresh room's first member (a new room name each time)
 *   later   the same rooms joined again by other connections (each room has a local member)
 *   sequential: one join in flight; concurrent: BENCH_JOIN_CONCURRENCY in flight (one per connection)
 *
 * Per repetition and mode, both nodes run first then later, the node order alternating between
 * repetitions; medians over repetitions. Ratios are taken per repetition (first/later on the same
 * node, redis/memory for the same members and mode) and their median is reported. Each scenario
 * prints one JSON line to stdout, then a table; progress to stderr. Run `npm run build` first:
 *   node bench/join.mjs [joins=3000] [concurrency=50] [repetitions=3]
 * BENCH_DIST=/other/tree/dist measures another build (its node_modules must resolve).
 * Nodes: WS_MEMBERSHIP_EVENTS=false and rate limits lifted as in `npm run bench`,
 * REDIS_UNSUBSCRIBE_DELAY=0 so one repetition's rooms are unsubscribed before the next starts.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import WebSocket from 'ws';
import { cpuSecondsOf, median, sleep, startRedisServer } from './lib.mjs';

const JOINS = Number(process.argv[2] ?? process.env.BENCH_JOINS ?? 3000);
const CONCURRENCY = Number(process.argv[3] ?? process.env.BENCH_JOIN_CONCURRENCY ?? 50);
const REPS = Number(process.argv[4] ?? process.env.BENCH_REPS ?? 3);
const WARMUP_JOINS = 300;
const SECRET = 'bench-secret-that-is-long-enough-for-hs256-0123456789';
const here = dirname(fileURLToPath(import.meta.url));
const DIST = resolve(process.env.BENCH_DIST ?? resolve(here, '../dist'));
const load = (module) => import(pathToFileURL(resolve(DIST, module)).href);
const { loadConfig } = await load('config.js');
const { createLogger } = await load('log.js');
const { startNode } = await load('server.js');
const { signToken } = await load('auth.js');

// ---------------------------------------------------------------------------------------------
// redis-server on a free port, bounded by `timeout` and killed (by pid) however this exits.
let redisPid;
let redisChild;
process.on('exit', () => {
  for (const pid of new Set([redisPid, redisChild?.pid])) {
    try {
      if (pid) process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));
// redisPid: the redis-server itself (the child of `timeout`), for its CPU and to kill it.
const { port: redisPort, pid } = await startRedisServer(900, (child) => (redisChild = child));
redisPid = pid;

// ---------------------------------------------------------------------------------------------
// The two nodes, in this process, silent.
const silent = new Writable({ write: (_c, _e, done) => done() });
async function node(name, extra) {
  const config = loadConfig({
    NODE_ID: `bench-${name}`,
    JWT_SECRET: SECRET,
    HOST: '127.0.0.1',
    PORT: '0',
    INTERNAL_HOST: '127.0.0.1',
    INTERNAL_PORT: '0',
    LOG_LEVEL: 'error',
    WS_RATE_LIMIT: '100000',
    WS_RATE_BURST: '100000',
    WS_MAX_ROOMS_PER_CONNECTION: '10000',
    WS_MAX_CONNECTIONS_PER_USER: '10000',
    WS_MEMBERSHIP_EVENTS: 'false',
    ...extra,
  });
  const started = await startNode(config, createLogger(config.logLevel, { node_id: config.nodeId }, silent));
  for (let i = 0; !started.broker.isUp(); i++) {
    if (i > 100) throw new Error(`${name}: broker not up after 10 s`);
    await sleep(100);
  }
  return { name, node: started, url: `ws://127.0.0.1:${started.port}/api/v1/ws/connect` };
}
const nodes = [await node('memory', {}), await node('redis', { REDIS_URL: `redis://127.0.0.1:${redisPort}`, REDIS_UNSUBSCRIBE_DELAY: '0' })];

// ---------------------------------------------------------------------------------------------
// Clients: `ws` in this process; each has at most one join in flight.
let userSeq = 0;
function connect(url) {
  const token = signToken({ secret: SECRET, userId: `u${++userSeq}`, rooms: ['*'], ttlSeconds: 3600 });
  const ws = new WebSocket(url, ['wsedge.v1', 'wsedge.bearer.' + token]);
  const pending = new Map();
  return new Promise((resolveOpen, rejectOpen) => {
    ws.once('error', rejectOpen);
    ws.on('message', (data) => {
      const msg = JSON.parse(String(data));
      if (msg.type === 'connected') return resolveOpen(client);
      const waiter = pending.get(msg.id);
      if (waiter === undefined) return;
      pending.delete(msg.id);
      if (msg.type === 'room_joined') waiter.resolve(process.hrtime.bigint());
      else waiter.reject(new Error(`join ${msg.id}: ${JSON.stringify(msg)}`));
    });
    const client = {
      ws,
      join(room, id) {
        return new Promise((resolveJoin, reject) => {
          pending.set(id, { resolve: resolveJoin, reject });
          ws.send(JSON.stringify({ type: 'join_room', room, id }));
        });
      },
    };
  });
}

async function closeAll(target, clients) {
  await Promise.all(clients.map((c) => new Promise((r) => (c.ws.once('close', r), c.ws.close()))));
  for (let i = 0; target.node.connections() > 0 && i < 100; i++) await sleep(20);
  await sleep(300); // the nodes' unsubscribes (REDIS_UNSUBSCRIBE_DELAY=0) go out before the next phase
}

/** Machine busy CPU seconds (all cores), from /proc/stat. */
function machineBusySeconds() {
  const [, ...fields] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = fields;
  return (user + nice + system + irq + softirq + steal) / 100;
}

/** Joins rooms[i] for every i, `inFlight` at a time, client k taking the k-th lane; latencies in ms. */
async function timedJoins(clients, rooms, inFlight, tag) {
  const latencies = new Array(rooms.length);
  let next = 0;
  const cpu0 = { own: cpuSecondsOf(process.pid), redis: cpuSecondsOf(redisPid), machine: machineBusySeconds() };
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: inFlight }, async (_, lane) => {
      const client = clients[lane % clients.length];
      while (next < rooms.length) {
        const i = next++;
        const sent = process.hrtime.bigint();
        const received = await client.join(rooms[i], `${tag}${i}`);
        latencies[i] = Number(received - sent) / 1e6;
      }
    }),
  );
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const own = cpuSecondsOf(process.pid) - cpu0.own;
  const redisCpu = cpuSecondsOf(redisPid) - cpu0.redis;
  const foreign = Math.max(0, machineBusySeconds() - cpu0.machine - own - redisCpu);
  const sorted = latencies.sort((a, b) => a - b);
  const pct = (p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
  return {
    joins_per_s: rooms.length / wall,
    p50_ms: pct(50),
    p99_ms: pct(99),
    mean_ms: sorted.reduce((a, b) => a + b, 0) / sorted.length,
    max_ms: sorted[sorted.length - 1],
    process_cores: own / wall,
    redis_cores: redisCpu / wall,
    foreign_cores: foreign / wall,
  };
}

/** One node, one mode: `first` (fresh rooms) then `later` (the same rooms, other connections). */
let roomSeq = 0;
async function pair(target, inFlight, joins) {
  const tag = (roomSeq++).toString(36);
  const rooms = Array.from({ length: joins }, (_, i) => `task:j${tag}_${i}`);
  const lanes = Math.min(inFlight, joins);
  const firsts = await Promise.all(Array.from({ length: Math.max(lanes, 1) }, () => connect(target.url)));
  const laters = await Promise.all(Array.from({ length: Math.max(lanes, 1) }, () => connect(target.url)));
  const first = await timedJoins(firsts, rooms, lanes, 'f');
  const later = await timedJoins(laters, rooms, lanes, 'l');
  await closeAll(target, [...firsts, ...laters]);
  return { first, later };
}

function commitOf(dir) {
  try {
    return execFileSync('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

// ---------------------------------------------------------------------------------------------
const modes = [
  ['sequential', 1],
  ['concurrent', CONCURRENCY],
];
console.error(`join bench: ${JOINS} joins per scenario, ${CONCURRENCY} in flight (concurrent), ${REPS} repetitions, dist ${DIST}`);
for (const target of nodes) for (const [, inFlight] of modes) await pair(target, inFlight, WARMUP_JOINS);

const runs = {}; // `${broker}-${members}-${mode}` -> [result per repetition]
const startedAt = Date.now();
for (let rep = 0; rep < REPS; rep++) {
  for (const [mode, inFlight] of modes) {
    const order = rep % 2 === 0 ? nodes : [...nodes].reverse();
    for (const target of order) {
      const { first, later } = await pair(target, inFlight, JOINS);
      for (const [members, result] of [['first', first], ['later', later]]) {
        (runs[`${target.name}-${members}-${mode}`] ??= []).push(result);
        console.error(
          `rep ${rep + 1} ${mode} ${target.name} ${members}: p50 ${result.p50_ms.toFixed(2)} ms, p99 ${result.p99_ms.toFixed(2)} ms, ` +
            `${Math.round(result.joins_per_s)} joins/s, foreign ${result.foreign_cores.toFixed(2)} cores`,
        );
      }
    }
  }
}

const round = (v, d = 2) => Number(v.toFixed(d));
const spread = (list, key, d) => [round(Math.min(...list.map((r) => r[key])), d), round(Math.max(...list.map((r) => r[key])), d)];
const ratio = (a, b, key) => round(median(runs[a].map((r, i) => r[key] / runs[b][i][key])), 2);
const machine = { cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model, node: process.version, loadavg_1m_at_end: round(os.loadavg()[0]) };
const results = [];
for (const [mode] of modes) {
  for (const broker of ['memory', 'redis']) {
    for (const members of ['first', 'later']) {
      const key = `${broker}-${members}-${mode}`;
      const list = runs[key];
      const other = members === 'first' ? 'later' : 'first';
      const line = {
        bench: 'join',
        scenario: key,
        broker,
        members,
        mode,
        in_flight: mode === 'sequential' ? 1 : CONCURRENCY,
        joins: JOINS,
        reps: REPS,
        p50_ms: round(median(list.map((r) => r.p50_ms)), 3),
        p50_ms_range: spread(list, 'p50_ms', 3),
        p99_ms: round(median(list.map((r) => r.p99_ms)), 3),
        p99_ms_range: spread(list, 'p99_ms', 3),
        mean_ms: round(median(list.map((r) => r.mean_ms)), 3),
        joins_per_s: Math.round(median(list.map((r) => r.joins_per_s))),
        joins_per_s_range: spread(list, 'joins_per_s', 0),
        redis_cores: round(median(list.map((r) => r.redis_cores))),
        process_cores: round(median(list.map((r) => r.process_cores))),
        foreign_cores_max: round(Math.max(...list.map((r) => r.foreign_cores))),
        // Same repetition, medians of the per-repetition ratios.
        ratios:
          members === 'first'
            ? {
                first_over_later_p50: ratio(key, `${broker}-${other}-${mode}`, 'p50_ms'),
                first_over_later_p99: ratio(key, `${broker}-${other}-${mode}`, 'p99_ms'),
                first_over_later_joins_per_s: ratio(key, `${broker}-${other}-${mode}`, 'joins_per_s'),
                ...(broker === 'redis' && redisOverMemory(key, members, mode)),
              }
            : broker === 'redis'
              ? redisOverMemory(key, members, mode)
              : {},
        dist: DIST,
        commit: commitOf(dirname(DIST)),
        machine,
      };
      results.push(line);
      console.log(JSON.stringify(line));
    }
  }
}

function redisOverMemory(key, members, mode) {
  const base = `memory-${members}-${mode}`;
  return {
    redis_over_memory_p50: ratio(key, base, 'p50_ms'),
    redis_over_memory_p99: ratio(key, base, 'p99_ms'),
    redis_over_memory_joins_per_s: ratio(key, base, 'joins_per_s'),
  };
}

const fmt = (n) => Math.round(n).toLocaleString('en-US');
console.log(`\nJoin latency, ${JOINS} joins per scenario, medians of ${REPS} (${((Date.now() - startedAt) / 1000).toFixed(0)} s), commit ${results[0].commit}`);
console.log('| scenario | p50 ms | p99 ms | joins/s | first/later p50 | redis/memory p50 | redis/memory joins/s |');
console.log('|---|---|---|---|---|---|---|');
for (const r of results) {
  const x = r.ratios;
  console.log(
    `| ${r.scenario} | ${r.p50_ms} | ${r.p99_ms} | ${fmt(r.joins_per_s)} (${fmt(r.joins_per_s_range[0])}-${fmt(r.joins_per_s_range[1])}) | ` +
      `${x.first_over_later_p50 ?? ''} | ${x.redis_over_memory_p50 ?? ''} | ${x.redis_over_memory_joins_per_s ?? ''} |`,
  );
}

await Promise.all(nodes.map((n) => n.node.shutdown()));
process.exit(0);
