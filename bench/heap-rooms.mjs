#!/usr/bin/env node
/**
 * Heap and RSS per connection and per joined room (issue 25 item 6): one ws-edge node per scenario,
 * started from dist/ in a child process with --expose-gc (bench/probe.mjs answers its memory after a
 * full GC), so only the node's own heap is measured; the clients (bench/loadgen.mjs, cheap raw
 * sockets) run in this process. Per scenario the node is measured three times:
 *   idle       after a warm-up (a few hundred connections that joined the same rooms, closed again),
 *              so compiled code and one-off caches are not counted as per-connection costs;
 *   connected  N connections, each in its personal room only;
 *   joined     the same N, each having joined R plain rooms (room_joined received for all).
 * Per connection = (joined - idle) / N; per room = (joined - connected) / (N x R). Rooms come from a
 * pool of 100 (`channel:r0`..`channel:r99`), so each is shared by N x R / 100 members, as channel rooms
 * are; the node's per-room state is divided over them. Memory broker, membership events off (a
 * user_joined storm is a CPU question, not a memory one, and leaves nothing behind).
 *
 *   npm run build && node bench/heap-rooms.mjs [connections=4000] [rooms=1,3,10] [repetitions=1]
 * BENCH_DIST=/other/tree/dist measures another build; BENCH_BASELINE_DIST=/other/tree/dist measures
 * that build too, in the same run (alternating order per repetition), and prints after/before.
 * BENCH_HEAP_KINDS=1 also diffs heap snapshots by object kind: idle -> connected per connection,
 * connected -> joined per room.
 * Each scenario prints one JSON line to stdout, then a table; progress goes to stderr.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createSigner } from 'fast-jwt';
import { median, sleep, startServer } from './lib.mjs';
import { createStats, joinRooms, openClients } from './loadgen.mjs';

const CONNECTIONS = Number(process.argv[2] ?? 4000);
const ROOMS = (process.argv[3] ?? '1,3,10').split(',').map(Number);
const REPS = Number(process.argv[4] ?? 1);
const POOL = 100;
const WARMUP = 300;
const SECRET = 'bench-secret-that-is-long-enough-for-hs256-0123456789';
const here = dirname(fileURLToPath(import.meta.url));
const probe = pathToFileURL(resolve(here, 'probe.mjs')).href;
const builds = [
  ...(process.env.BENCH_BASELINE_DIST ? [{ name: 'before', dist: resolve(process.env.BENCH_BASELINE_DIST) }] : []),
  { name: process.env.BENCH_BASELINE_DIST ? 'after' : 'this', dist: resolve(process.env.BENCH_DIST ?? resolve(here, '../dist')) },
];
const KINDS = process.env.BENCH_HEAP_KINDS === '1';
const nodes = new Set();
process.on('exit', () => nodes.forEach((child) => child.kill('SIGKILL')));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));
setTimeout(() => {
  console.error('heap-rooms: gave up after 20 minutes');
  process.exit(1);
}, 1_200_000).unref();

const sign = createSigner({ key: SECRET, expiresIn: 3_600_000 });
let userSeq = 0;
const roomsOf = (rooms) => (i) => Array.from({ length: rooms }, (_, k) => `channel:r${(i * rooms + k) % POOL}`);

/** Asks the node's probe and waits for its answer (memory after a full GC, or a heap snapshot's file). */
function ask(child, msg) {
  return new Promise((done) => {
    const listen = (answer) => {
      if (answer?.probe !== msg.probe) return;
      child.off('message', listen);
      done(answer);
    };
    child.on('message', listen);
    child.send(msg);
  });
}

/** Self size and count per object kind (strings, arrays and code lumped together), as bench/heap.mjs. */
function byKind(file) {
  const heap = JSON.parse(readFileSync(file, 'utf8'));
  rmSync(file);
  const fields = heap.snapshot.meta.node_fields;
  const types = heap.snapshot.meta.node_types[0];
  const [iType, iName, iSize] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f));
  const kinds = new Map();
  for (let i = 0; i < heap.nodes.length; i += fields.length) {
    const type = types[heap.nodes[i + iType]];
    const kind = ['object', 'closure'].includes(type) ? `${type} ${heap.strings[heap.nodes[i + iName]]}` : type.endsWith('string') ? '(string)' : `(${type})`;
    const k = kinds.get(kind) ?? { count: 0, size: 0 };
    k.count += 1;
    k.size += heap.nodes[i + iSize];
    kinds.set(kind, k);
  }
  return kinds;
}

/** The object kinds that grew most from `a` to `b`, per `unit` (a connection, a membership). */
function kindsGrown(a, b, unit) {
  const rows = [...b].map(([kind, v]) => ({ kind, count: v.count - (a.get(kind)?.count ?? 0), size: v.size - (a.get(kind)?.size ?? 0) }));
  rows.sort((x, y) => y.size - x.size);
  return rows.slice(0, 10).map((r) => ({ kind: r.kind, bytes: Math.round(r.size / unit), objects: Number((r.count / unit).toFixed(2)) }));
}

async function open(port, count) {
  const stats = createStats();
  const { clients, failed } = await openClients({
    port,
    count,
    protocol: 'edge',
    stats,
    localAddresses: ['127.0.0.1', '127.0.0.2'],
    tokenFor: () => sign({ sub: `u${++userSeq}`, rooms: ['*'] }),
  });
  if (failed > 0) throw new Error(`${failed} of ${count} connections failed`);
  return clients;
}

async function joinAll(clients, rooms) {
  const result = await joinRooms({ clients, protocol: 'edge', roomsOf: roomsOf(rooms), timeoutMs: 120_000 });
  if (result.unanswered > 0 || result.lost > 0 || result.unexpected !== undefined) throw new Error(`joins: ${JSON.stringify(result)}`);
}

/** Closes the clients and returns once the node's connection gauge is back to 0 (it has let them go). */
async function closeAll(clients, internalPort) {
  for (const c of clients) c.socket.destroy();
  for (;;) {
    const metrics = await fetch(`http://127.0.0.1:${internalPort}/metrics`).then((r) => r.text());
    const open = /^wsedge_connections (\d+)/m.exec(metrics);
    if (open === null) throw new Error('no wsedge_connections gauge in /metrics');
    if (open[1] === '0') return;
    await sleep(50);
  }
}

async function scenario(build, rooms) {
  const env = {
    PORT: '0',
    INTERNAL_PORT: '0',
    HOST: '127.0.0.1',
    INTERNAL_HOST: '127.0.0.1',
    NODE_ENV: 'production',
    LOG_LEVEL: 'info', // the start line carries the ports
    JWT_SECRET: SECRET,
    WS_MEMBERSHIP_EVENTS: 'false',
    WS_RATE_LIMIT: '100000',
    WS_RATE_BURST: '100000',
  };
  const { child, port, internalPort } = await startServer(['--expose-gc', '--import', probe, join(build.dist, 'cli.js'), 'serve'], env, { ipc: true, onSpawn: (c) => nodes.add(c) });
  const warm = await open(port, WARMUP);
  await joinAll(warm, rooms);
  await closeAll(warm, internalPort);
  const snapshot = (tag) => ask(child, { probe: 'heap-snapshot', file: join(os.tmpdir(), `wsedge-heap-rooms-${process.pid}-${tag}.heapsnapshot`) }).then((a) => a.file);
  const idle = await ask(child, { probe: 'memory' });
  const empty = KINDS ? await snapshot('idle') : undefined;
  const clients = await open(port, CONNECTIONS);
  const connected = await ask(child, { probe: 'memory' });
  const before = KINDS ? await snapshot('connected') : undefined;
  await joinAll(clients, rooms);
  const joined = await ask(child, { probe: 'memory' });
  const after = KINDS ? await snapshot('joined') : undefined;
  child.kill('SIGKILL');
  nodes.delete(child);
  for (const c of clients) c.socket.destroy();
  const memberships = CONNECTIONS * rooms;
  const result = {
    heap_per_connection: (joined.heapUsed - idle.heapUsed) / CONNECTIONS,
    rss_per_connection: (joined.rss - idle.rss) / CONNECTIONS,
    heap_per_connection_no_rooms: (connected.heapUsed - idle.heapUsed) / CONNECTIONS,
    heap_per_room: (joined.heapUsed - connected.heapUsed) / memberships,
    rss_per_room: (joined.rss - connected.rss) / memberships,
  };
  if (KINDS) {
    const idleKinds = byKind(empty);
    const connectedKinds = byKind(before);
    result.kinds_per_connection_no_rooms = kindsGrown(idleKinds, connectedKinds, CONNECTIONS);
    result.kinds_per_room = kindsGrown(connectedKinds, byKind(after), memberships);
  }
  return result;
}

/** The build's commit, or its tree's directory name where it is no git checkout (an exported tree). */
function commitOf(dist) {
  try {
    return execFileSync('git', ['-C', dirname(dist), 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return basename(dirname(dist));
  }
}

// ---------------------------------------------------------------------------------------------
console.error(`heap-rooms: ${CONNECTIONS} connections, rooms ${ROOMS.join('/')}, ${REPS} repetition(s), builds ${builds.map((b) => `${b.name}=${b.dist}`).join(' ')}`);
const runs = {}; // `${build}-${rooms}` -> [result per repetition]
for (let rep = 0; rep < REPS; rep++) {
  for (const rooms of ROOMS) {
    const order = rep % 2 === 0 ? builds : [...builds].reverse();
    for (const build of order) {
      const r = await scenario(build, rooms);
      (runs[`${build.name}-${rooms}`] ??= []).push(r);
      console.error(`rep ${rep + 1} ${build.name} ${rooms} room(s): heap ${Math.round(r.heap_per_connection)} B/conn, ${Math.round(r.heap_per_room)} B/room; rss ${Math.round(r.rss_per_connection)} B/conn, ${Math.round(r.rss_per_room)} B/room`);
      for (const key of ['kinds_per_connection_no_rooms', 'kinds_per_room']) {
        if (r[key]) console.error(`  ${key}:\n` + r[key].map((k) => `    ${k.bytes} B ${k.objects} ${k.kind}`).join('\n'));
      }
    }
  }
}

const machine = { cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model, node: process.version, loadavg_1m_at_end: Number(os.loadavg()[0].toFixed(2)) };
const lines = [];
for (const rooms of ROOMS) {
  for (const build of builds) {
    const list = runs[`${build.name}-${rooms}`];
    const med = (key) => Math.round(median(list.map((r) => r[key])));
    const line = {
      bench: 'heap-rooms',
      build: build.name,
      rooms,
      connections: CONNECTIONS,
      reps: REPS,
      heap_per_connection: med('heap_per_connection'),
      heap_per_room: med('heap_per_room'),
      heap_per_connection_no_rooms: med('heap_per_connection_no_rooms'),
      rss_per_connection: med('rss_per_connection'),
      rss_per_room: med('rss_per_room'),
      ...(KINDS && { kinds_per_connection_no_rooms: list[0].kinds_per_connection_no_rooms, kinds_per_room: list[0].kinds_per_room }),
      dist: build.dist,
      commit: commitOf(build.dist),
      machine,
    };
    lines.push(line);
    console.log(JSON.stringify(line));
  }
}

const ratio = (rooms, key) => {
  const before = lines.find((l) => l.build === 'before' && l.rooms === rooms);
  const after = lines.find((l) => l.build === 'after' && l.rooms === rooms);
  return before && after ? (after[key] / before[key]).toFixed(2) : '';
};
console.log(`\nHeap and RSS per connection after a full GC, ${CONNECTIONS} connections, medians of ${REPS}, ${machine.cpus} CPUs, Node ${machine.node}`);
console.log('| build | rooms | heap B/conn | heap B/conn without rooms | heap B/room | RSS B/conn | RSS B/room | heap/conn after/before | heap/room after/before |');
console.log('|---|---|---|---|---|---|---|---|---|');
for (const l of lines) {
  const ratios = l.build === 'after' ? `${ratio(l.rooms, 'heap_per_connection')} | ${ratio(l.rooms, 'heap_per_room')}` : ' | ';
  console.log(`| ${l.build} (${l.commit}) | ${l.rooms} | ${l.heap_per_connection} | ${l.heap_per_connection_no_rooms} | ${l.heap_per_room} | ${l.rss_per_connection} | ${l.rss_per_room} | ${ratios} |`);
}
process.exit(0);
