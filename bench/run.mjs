// `npm run bench`: ws-edge against a raw uWebSockets.js server doing the same work and against
// Socket.IO 4, in the same run, in four scenarios (fan-out, cross-node through Redis, idle memory
// with handshakes, many rooms). Each scenario prints one JSON line and a table; everything lands in
// bench/results/results.json (bench/chart.mjs draws it). Repetitions are interleaved across servers
// so drift hits all of them alike; medians are reported with the min-max spread.
//
// Settings (environment), defaults sized so the whole run takes under 10 minutes on 2 cores:
//   BENCH_SCENARIOS   fanout,cross-node,idle,many-rooms
//   BENCH_SERVERS     ws-edge,raw-uws,socket.io (raw-uws runs in both publish modes where they differ);
//                     ws-edge-sequenced: ws-edge with the benchmark room in WS_HISTORY_ROOMS
//   BENCH_REPS        3        repetitions per server and scenario
//   BENCH_DURATION    5        seconds measured per phase (the issue's 10 s: BENCH_DURATION=10)
//   BENCH_WARMUP      1        seconds of load before a phase is measured
//   BENCH_FANOUT_CLIENTS 2000  BENCH_CROSS_CLIENTS 1000 (per node)   BENCH_IDLE_CONNECTIONS 19800
//   BENCH_ROOMS 10000  BENCH_ROOM_CLIENTS 5000  BENCH_ROOMS_PER_CLIENT 6   BENCH_WINDOW 256
//   BENCH_PACED_RATE  200      messages/s in the paced cross-node phase
//   BENCH_IDLE_SETTLE_MS 1000  idle wait between the last join and the memory reading
//   BENCH_OUT         bench/results/results.json (its chart: bench/results/chart.svg; BENCH_CHART=0: none)
// `node bench/run.mjs --profile` instead profiles (V8 CPU profiler, over the measured window only)
// ws-edge and raw uWS in the fan-out and many-rooms scenarios and ws-edge accepting the idle
// scenario's connections, and writes bench/results/profile.json and flame graphs
// bench/results/flame*.svg (bench/profile.mjs).
import { execFileSync, fork, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadUws } from '../dist/uws.js';
import { cpuSecondsOf, fdsOf, median, sleep, startServer } from './lib.mjs';
import { summarizeProfile } from './profile.mjs';

const env = process.env;
const num = (name, fallback) => Number(env[name] ?? fallback);
const CONFIG = {
  scenarios: (env.BENCH_SCENARIOS ?? 'fanout,cross-node,idle,many-rooms').split(','),
  servers: (env.BENCH_SERVERS ?? 'ws-edge,raw-uws,socket.io').split(','),
  reps: num('BENCH_REPS', 3),
  duration: num('BENCH_DURATION', 5),
  warmup: num('BENCH_WARMUP', 1),
  fanoutClients: num('BENCH_FANOUT_CLIENTS', 2000),
  crossClients: num('BENCH_CROSS_CLIENTS', 1000),
  // 20,000 does not fit: the server may hold 20,000 open files, ~22 of them its own.
  idleConnections: num('BENCH_IDLE_CONNECTIONS', 19_800),
  idleWorkers: 3,
  rooms: num('BENCH_ROOMS', 10_000),
  roomClients: num('BENCH_ROOM_CLIENTS', 5000),
  roomsPerClient: num('BENCH_ROOMS_PER_CLIENT', 6),
  // Messages a publisher keeps in flight (sent, not yet seen by its probe client); see BENCHMARKS.md.
  window: num('BENCH_WINDOW', 256),
  pacedRate: num('BENCH_PACED_RATE', 200),
  payloadBytes: 100,
  latencySampleEvery: 20,
  concurrency: 64,
};
const readText = (path) => readFileSync(path, 'utf8');
const DEFAULT_OUT = 'bench/results/results.json';
const OUT = env.BENCH_OUT ?? DEFAULT_OUT;
const SECRET = 'bench-secret-0123456789abcdef0123456789abcdef';
const ROOM = 'project:bench';
const HARD_DEADLINE_MS = 30 * 60_000;
/** A run during which other processes kept this many cores busy is repeated (once, by default). */
const DISTURBED_CORES = 0.25;
const RETRIES = num('BENCH_RETRIES', 1);
/** No more repeats after this long, so a busy machine cannot stretch the run past ~10 minutes. */
const RETRY_UNTIL_MS = num('BENCH_RETRY_UNTIL_S', 420) * 1000;
const runStarted = Date.now();
const foreignOf = (run) => Math.max(0, ...Object.entries(run).filter(([k]) => k.endsWith('foreign_util')).map(([, v]) => v));

// ---------------------------------------------------------------------------------------------
// Processes: every child is tracked and killed when the harness exits, however it exits.
const children = new Set();
const track = (child) => {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
};
/** Processes that are not our direct children (redis-server under `timeout`), killed by pid. */
const orphans = new Set();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
  for (const pid of orphans) killPid(pid);
});
function killPid(pid) {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130));
setTimeout(() => {
  console.error(`bench: still running after ${HARD_DEADLINE_MS / 60_000} min, giving up`);
  process.exit(1);
}, HARD_DEADLINE_MS).unref();

const PROBE = pathToFileURL(resolve('bench/probe.mjs')).href;
const nodeArgs = (extra = []) => ['--expose-gc', '--import', PROBE, ...extra];

/** The servers under test. `protocol` picks the client side; `env` is added to the process env. */
const SERVERS = {
  'ws-edge': {
    protocol: 'edge',
    script: ['dist/cli.js', 'serve'],
    env: {
      PORT: '0', INTERNAL_PORT: '0', HOST: '127.0.0.1', NODE_ENV: 'production', JWT_SECRET: SECRET,
      // The one publisher sends far more than a person: lift the per-connection message rate.
      WS_RATE_LIMIT: '100000', WS_RATE_BURST: '100000',
      // user_joined/user_left would add setup traffic the other servers do not have; not measured.
      WS_MEMBERSHIP_EVENTS: 'false',
      WS_DRAIN_TIMEOUT: '2',
    },
  },
  'raw-uws': { protocol: 'raw', script: ['bench/raw-uws.mjs'], env: { PORT: '0', JWT_SECRET: SECRET, RAW_PUBLISH: 'deferred' } },
  'raw-uws-direct': { protocol: 'raw', script: ['bench/raw-uws.mjs'], env: { PORT: '0', JWT_SECRET: SECRET, RAW_PUBLISH: 'direct' } },
  'socket.io': { protocol: 'socketio', script: ['bench/socketio-server.mjs'], env: { PORT: '0', JWT_SECRET: SECRET } },
};

// The benchmark room sequenced (history, offsets, delivery through the history; Redis history in
// cross-node): the cost of WS_HISTORY_ROOMS against the same ws-edge without it.
SERVERS['ws-edge-sequenced'] = { ...SERVERS['ws-edge'], env: { ...SERVERS['ws-edge'].env, WS_HISTORY_ROOMS: 'project:*' } };

async function startNode(name, extraEnv = {}, extraArgs = []) {
  const spec = SERVERS[name];
  const started = await startServer([...nodeArgs(extraArgs), ...spec.script], { ...spec.env, ...extraEnv }, { ipc: true, onSpawn: track });
  return { ...started, pid: started.child.pid, name, protocol: spec.protocol };
}

async function stopNode(node) {
  if (node.child.exitCode !== null) return;
  const exited = new Promise((r) => node.child.once('exit', r));
  node.child.kill('SIGKILL');
  await exited;
}

/** Asks bench/probe.mjs in the server a question (`memory`, `profile-start`, `profile-stop`). */
function ask(node, question, extra = {}) {
  return new Promise((resolveAnswer, reject) => {
    const timer = setTimeout(() => reject(new Error(`${question} probe timed out`)), 30_000);
    const onMessage = (msg) => {
      if (msg?.probe !== question) return;
      clearTimeout(timer);
      node.child.off('message', onMessage);
      if (msg.error) reject(new Error(msg.error));
      else resolveAnswer(msg);
    };
    node.child.on('message', onMessage);
    node.child.send({ probe: question, ...extra });
  });
}
/** The server's memory after a full GC. */
const memoryOf = (node) => ask(node, 'memory');

function startWorker() {
  const child = track(fork('bench/loadgen-worker.mjs', [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  const pending = new Map();
  let seq = 0;
  const ready = new Promise((r) => child.once('message', r));
  child.on('message', (msg) => {
    const call = pending.get(msg.id);
    if (call === undefined) return;
    pending.delete(msg.id);
    clearTimeout(call.timer);
    if (msg.ok) call.resolve(msg.result);
    else call.reject(new Error(`worker ${msg.id}: ${msg.error}`));
  });
  child.once('exit', (code) => {
    for (const call of pending.values()) call.reject(new Error(`load generator exited with ${code}`));
  });
  return {
    pid: child.pid,
    ready,
    call(cmd, args, timeoutMs = 180_000) {
      const id = ++seq;
      return new Promise((resolveCall, reject) => {
        const timer = setTimeout(() => reject(new Error(`worker ${cmd} timed out`)), timeoutMs);
        pending.set(id, { resolve: resolveCall, reject, timer });
        child.send({ id, cmd, args });
      });
    },
    async close() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      // A worker that cannot answer is killed below; its exit is what matters.
      await this.call('close', {}, 5000).catch(() => undefined);
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

async function startWorkers(n) {
  const workers = Array.from({ length: n }, startWorker);
  await Promise.all(workers.map((w) => w.ready));
  return workers;
}

/** A fresh block of loopback source addresses per run, so TIME_WAIT from earlier runs never collides. */
let addressBlock = 0;
function addressesFor(workers, perWorker) {
  const block = 1 + (addressBlock++ % 250);
  return Array.from({ length: workers }, (_, w) => Array.from({ length: perWorker }, (_, a) => `127.${block}.${w + 1}.${a + 1}`));
}

async function startRedis() {
  const port = await new Promise((r) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port: p } = probe.address();
      probe.close(() => r(p));
    });
  });
  // `timeout` bounds its life even if this process is killed without running its exit handler.
  const child = track(spawn('timeout', ['1800', 'redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' }));
  for (let i = 0; i < 50; i++) {
    const up = await new Promise((r) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (up) break;
    await sleep(100);
  }
  // The redis-server process itself (the child of `timeout`): for its CPU, and to kill it, since
  // `timeout` cannot pass a SIGKILL on.
  const pid = Number(readText(`/proc/${child.pid}/task/${child.pid}/children`).trim().split(' ')[0]) || child.pid;
  orphans.add(pid);
  const stop = () => {
    killPid(pid);
    orphans.delete(pid);
    child.kill('SIGKILL');
  };
  return { child, port, pid, url: `redis://127.0.0.1:${port}`, stop };
}

/** CPU seconds of each pid, read together. */
const cpuOf = (pids) => Object.fromEntries(pids.map((pid) => [pid, cpuSecondsOf(pid)]));

/** Busy CPU seconds of the whole machine (all cores), from /proc/stat. */
function machineBusySeconds() {
  const [, user, nice, system, , , irq, softirq, steal] = readText('/proc/stat').split('\n')[0].trim().split(/\s+/).map(Number);
  return (user + nice + system + irq + softirq + steal) / 100;
}
const selfCpuSeconds = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
};

/**
 * What limited a measurement, from utilisations (cores busy) over the measured window: a process
 * at >= 0.85 of a core is saturated (Node servers and the generator run one JS thread each).
 */
function limitOf(serverUtil, generatorUtil, totalUtil, foreignUtil = 0) {
  if (foreignUtil >= 0.25) return `disturbed: other processes used ${foreignUtil.toFixed(2)} cores`;
  if (serverUtil >= 0.85) return 'server';
  if (generatorUtil >= 0.85) return 'load generator';
  if (totalUtil >= 1.7) return 'shared cores';
  return 'pipeline (neither saturated)';
}

const round = (x, digits = 0) => (x === null || x === undefined || Number.isNaN(x) ? null : +x.toFixed(digits));

// ---------------------------------------------------------------------------------------------
// Scenarios. Each `run` measures one server once and returns flat numbers.

/** Opens `count` clients of `server` on `port` over `workers`, tokens minted before the clock starts. */
async function connectClients(workers, node, count, firstIndex, { addresses = 2 } = {}) {
  const per = Math.ceil(count / workers.length);
  const local = addressesFor(workers.length, addresses);
  await Promise.all(
    workers.map((w, i) => w.call('prepare', { secret: SECRET, firstIndex: firstIndex + i * per, count: Math.min(per, count - i * per), server: node.protocol })),
  );
  const results = await Promise.all(workers.map((w, i) => w.call('connect', { port: node.port, localAddresses: local[i], concurrency: CONFIG.concurrency })));
  const connected = results.reduce((a, r) => a + r.connected, 0);
  const failed = results.reduce((a, r) => a + r.failed, 0);
  const seconds = (Math.max(...results.map((r) => r.endedAt)) - Math.min(...results.map((r) => r.startedAt))) / 1000;
  return { connected, failed, seconds, firstError: results.find((r) => r.firstError)?.firstError, local };
}

async function joinAll(workers, rooms) {
  const results = await Promise.all(workers.map((w) => w.call('join', { rooms })));
  const unanswered = results.reduce((a, r) => a + r.unanswered, 0);
  const lost = results.reduce((a, r) => a + r.lost, 0);
  const unexpected = results.find((r) => r.unexpected)?.unexpected;
  const closedWith = results.find((r) => r.closedWith)?.closedWith;
  if (unanswered > 0) throw new Error(`${unanswered} joins were not answered (unexpected frame: ${unexpected ?? 'none'})`);
  // A few clients closed by the server during setup are reported, not fatal (see BENCHMARKS.md).
  if (lost > 0) console.error(`  note: ${lost} client(s) closed by the server during setup (${closedWith})`);
  return { lost };
}

/**
 * Counts a process's socket syscalls with `perf stat` tracepoints (cheap: counted in the kernel, not
 * traced), when perf can; resolves with { sendto, recvfrom, epoll_pwait } or null.
 */
const SYSCALLS = ['sendto', 'write', 'writev', 'recvfrom', 'epoll_pwait'];
let perfWorks = true;
function countSyscalls(pid, seconds) {
  if (!perfWorks) return Promise.resolve(null);
  const events = SYSCALLS.map((s) => `syscalls:sys_enter_${s}`).join(',');
  const child = track(spawn('perf', ['stat', '-x', ',', '-e', events, '-p', String(pid), '--', 'sleep', String(seconds)], { stdio: ['ignore', 'ignore', 'pipe'] }));
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  return new Promise((r) => {
    child.on('error', () => {
      perfWorks = false;
      r(null);
    });
    child.on('exit', (code) => {
      const counts = {};
      for (const line of err.split('\n')) {
        const [value, , event] = line.split(',');
        const name = /sys_enter_(\w+)/.exec(event ?? '')?.[1];
        if (name && /^\d+$/.test(value)) counts[name] = Number(value);
      }
      if (code !== 0 || Object.keys(counts).length !== SYSCALLS.length) {
        perfWorks = false;
        return r(null);
      }
      r(counts);
    });
  });
}

/**
 * Deliveries counted by `workers` and CPU of `pids` over `seconds` of steady load; with
 * `syscallsOf`, that process's socket syscalls over the same window.
 */
async function measureWindow(workers, pids, seconds, syscallsOf) {
  const snap = () => Promise.all(workers.map((w) => w.call('snapshot')));
  const cpu0 = cpuOf(pids);
  const machine0 = machineBusySeconds() - selfCpuSeconds();
  const s0 = await snap();
  const syscalls = syscallsOf === undefined ? Promise.resolve(null) : countSyscalls(syscallsOf, seconds);
  await sleep(seconds * 1000);
  const s1 = await snap();
  const cpu1 = cpuOf(pids);
  const machine1 = machineBusySeconds() - selfCpuSeconds();
  const wall = (Math.max(...s1.map((s) => s.at)) - Math.min(...s0.map((s) => s.at))) / 1000;
  const ours = pids.reduce((sum, pid) => sum + cpu1[pid] - cpu0[pid], 0);
  return {
    // Cores busy with processes that are not part of this measurement (other jobs on the machine).
    foreign_util: round(Math.max(0, machine1 - machine0 - ours) / wall, 2),
    wall,
    deliveries: s1.map((s, i) => s.deliveries - s0[i].deliveries),
    sent: s1.map((s, i) => s.sent - s0[i].sent),
    lost: s1.reduce((sum, s, i) => sum + s0[i].open - s.open, 0),
    cpu: Object.fromEntries(pids.map((pid) => [pid, cpu1[pid] - cpu0[pid]])),
    syscalls: await syscalls,
  };
}

/** Waits until the workers' delivery counts stop moving (backlogs drained), at most `maxMs`. */
async function settle(workers, maxMs = 5000) {
  let last = -1;
  const until = Date.now() + maxMs;
  while (Date.now() < until) {
    const total = (await Promise.all(workers.map((w) => w.call('snapshot')))).reduce((a, s) => a + s.deliveries, 0);
    if (total === last) return;
    last = total;
    await sleep(300);
  }
}

const fanout = {
  title: 'fan-out: 1 node, one room, one publisher',
  servers: (servers) => servers.flatMap((s) => (s === 'raw-uws' ? ['raw-uws', 'raw-uws-direct'] : [s])),
  async run(name) {
    const node = await startNode(name);
    const [worker] = await startWorkers(1);
    try {
      const c = await connectClients([worker], node, CONFIG.fanoutClients, 0);
      if (c.failed > 0) throw new Error(`${c.failed} connections failed: ${c.firstError}`);
      const { lost } = await joinAll([worker], { kind: 'same', names: [ROOM] });
      await worker.call('publisher', { port: node.port, localAddress: c.local[0][0], secret: SECRET, user: 'publisher', room: ROOM });
      await worker.call('probe');
      await worker.call('publish', { mode: 'window', room: ROOM, size: CONFIG.payloadBytes, window: CONFIG.window });
      await sleep(CONFIG.warmup * 1000);
      const m = await measureWindow([worker], [node.pid, worker.pid], CONFIG.duration, node.pid);
      const { stalls } = await worker.call('stopPublish');
      const deliveries = m.deliveries[0];
      const serverCpu = m.cpu[node.pid];
      const serverUtil = serverCpu / m.wall;
      const generatorUtil = m.cpu[worker.pid] / m.wall;
      return {
        deliveries_per_s: round(deliveries / m.wall),
        messages_per_s: round(m.sent[0] / m.wall),
        server_cpu_s_per_million: round((serverCpu * 1e6) / deliveries, 3),
        server_util: round(serverUtil, 2),
        generator_util: round(generatorUtil, 2),
        foreign_util: m.foreign_util,
        limit: limitOf(serverUtil, generatorUtil, serverUtil + generatorUtil, m.foreign_util),
        ...syscallRatios(m, deliveries, m.sent[0]),
        clients_lost_setup: lost,
        clients_lost: m.lost,
        stalls,
      };
    } finally {
      await stopNode(node);
      await worker.close();
    }
  },
  metrics: ['deliveries_per_s', 'messages_per_s', 'server_cpu_s_per_million', 'server_util', 'generator_util', 'deliveries_per_write', 'messages_per_wakeup', 'foreign_util'],
};

let redis;
const crossNode = {
  title: 'cross-node: 2 nodes + Redis, publishing through node A, receiving on node B',
  servers: (servers) => servers.map((s) => (s === 'raw-uws' ? rawWinner() : s)),
  async before() {
    redis = await startRedis();
  },
  async after() {
    redis.stop();
  },
  async run(name) {
    const nodeEnv = { REDIS_URL: redis.url, REDIS_PREFIX: `bench${Date.now()}:` };
    const a = await startNode(name, nodeEnv);
    const b = await startNode(name, nodeEnv);
    const [wa, wb] = await startWorkers(2);
    try {
      const ca = await connectClients([wa], a, CONFIG.crossClients, 0);
      const cb = await connectClients([wb], b, CONFIG.crossClients, CONFIG.crossClients);
      if (ca.failed + cb.failed > 0) throw new Error(`${ca.failed + cb.failed} connections failed: ${ca.firstError ?? cb.firstError}`);
      const lost = (await joinAll([wa], { kind: 'same', names: [ROOM] })).lost + (await joinAll([wb], { kind: 'same', names: [ROOM] })).lost;
      // The publisher lives with node B's clients: its window is paced by what B delivers.
      await wb.call('publisher', { port: a.port, localAddress: cb.local[0][0], secret: SECRET, user: 'publisher', room: ROOM });
      await wb.call('probe');
      await wb.call('sample', { every: CONFIG.latencySampleEvery });
      await sleep(500); // room subscriptions reach Redis
      const pids = [a.pid, b.pid, redis.pid, wa.pid, wb.pid];
      const phase = async (publish) => {
        await wb.call('publish', { room: ROOM, size: CONFIG.payloadBytes, ...publish });
        await sleep(CONFIG.warmup * 1000);
        await wb.call('latency');
        const m = await measureWindow([wa, wb], pids, CONFIG.duration, b.pid);
        const latency = await wb.call('latency');
        const { stalls } = await wb.call('stopPublish');
        await settle([wa, wb]);
        const util = (pid) => m.cpu[pid] / m.wall;
        const busiestServer = Math.max(util(a.pid), util(b.pid), util(redis.pid));
        const generatorUtil = Math.max(util(wa.pid), util(wb.pid));
        return {
          b_deliveries_per_s: round(m.deliveries[1] / m.wall),
          a_deliveries_per_s: round(m.deliveries[0] / m.wall),
          messages_per_s: round(m.sent[1] / m.wall),
          latency_p50_ms: latency.p50,
          latency_p99_ms: latency.p99,
          latency_samples: latency.count,
          a_util: round(util(a.pid), 2),
          b_util: round(util(b.pid), 2),
          redis_util: round(util(redis.pid), 2),
          generator_util: round(generatorUtil, 2),
          b_cpu_s_per_million: round((m.cpu[b.pid] * 1e6) / m.deliveries[1], 3),
          ...prefixed('b_', syscallRatios(m, m.deliveries[1], m.sent[1])),
          foreign_util: m.foreign_util,
          limit: limitOf(busiestServer, generatorUtil, pids.reduce((s, pid) => s + util(pid), 0), m.foreign_util),
          clients_lost: m.lost,
          stalls,
        };
      };
      const paced = await phase({ mode: 'paced', rate: CONFIG.pacedRate });
      const max = await phase({ mode: 'window', window: CONFIG.window });
      return { clients_lost_setup: lost, ...prefixed('paced_', paced), ...prefixed('max_', max) };
    } finally {
      await stopNode(a);
      await stopNode(b);
      await Promise.all([wa.close(), wb.close()]);
    }
  },
  metrics: [
    'max_b_deliveries_per_s', 'max_a_deliveries_per_s', 'max_messages_per_s', 'max_latency_p50_ms', 'max_latency_p99_ms', 'max_b_cpu_s_per_million',
    'max_a_util', 'max_b_util', 'max_redis_util', 'max_generator_util',
    'paced_b_deliveries_per_s', 'paced_latency_p50_ms', 'paced_latency_p99_ms', 'paced_b_util', 'paced_generator_util',
    'max_foreign_util', 'paced_foreign_util', 'max_b_deliveries_per_write', 'paced_b_deliveries_per_write',
  ],
};

/**
 * Deliveries per socket write syscall (uWS sends with sendto, libuv with write/writev) and published
 * messages per event-loop wake-up (epoll_pwait), when perf counted them.
 */
function syscallRatios(m, deliveries, messages) {
  if (m.syscalls === null) return {};
  const { sendto, write, writev, epoll_pwait: wakeups } = m.syscalls;
  return { deliveries_per_write: round(deliveries / (sendto + write + writev), 2), messages_per_wakeup: round(messages / wakeups, 2) };
}

const prefixed = (prefix, o) => Object.fromEntries(Object.entries(o).map(([k, v]) => [prefix + k, v]));

const idle = {
  title: 'idle memory and handshakes: each connection in its own room plus one shared room',
  servers: (servers) => servers.map((s) => (s === 'raw-uws' ? rawWinner() : s)),
  async run(name) {
    const node = await startNode(name);
    const workers = await startWorkers(CONFIG.idleWorkers);
    try {
      await sleep(300);
      const fdsBefore = fdsOf(node.pid);
      const before = await memoryOf(node);
      const pids = [node.pid, ...workers.map((w) => w.pid)];
      const cpu0 = cpuOf(pids);
      const machine0 = machineBusySeconds() - selfCpuSeconds();
      const c = await connectClients(workers, node, CONFIG.idleConnections, 0, { addresses: 4 });
      const cpu1 = cpuOf(pids);
      const machine1 = machineBusySeconds() - selfCpuSeconds();
      const foreignUtil = round(Math.max(0, machine1 - machine0 - pids.reduce((sum, pid) => sum + cpu1[pid] - cpu0[pid], 0)) / c.seconds, 2);
      const { lost } = await joinAll(workers, { kind: 'same', names: ['project:shared'] });
      await sleep(num('BENCH_IDLE_SETTLE_MS', 1000));
      const after = await memoryOf(node);
      const serverCpu = cpu1[node.pid] - cpu0[node.pid];
      const generatorUtil = Math.max(...workers.map((w) => (cpu1[w.pid] - cpu0[w.pid]) / c.seconds));
      const serverUtil = serverCpu / c.seconds;
      return {
        connections: c.connected - lost,
        failed: c.failed,
        clients_lost_setup: lost,
        handshakes_per_s: round(c.connected / c.seconds),
        server_cpu_ms_per_handshake: round((serverCpu * 1000) / c.connected, 3),
        rss_bytes_per_connection: round((after.rss - before.rss) / (c.connected - lost)),
        rss_without_young_bytes_per_connection: round((after.rss - after.young - (before.rss - before.young)) / (c.connected - lost)),
        young_generation_growth_mb: round((after.young - before.young) / 2 ** 20, 1),
        heap_bytes_per_connection: round((after.heapUsed - before.heapUsed) / (c.connected - lost)),
        external_bytes_per_connection: round((after.external + after.arrayBuffers - before.external - before.arrayBuffers) / (c.connected - lost)),
        rss_baseline_mb: round(before.rss / 2 ** 20, 1),
        server_fds_before: fdsBefore,
        ramp_server_util: round(serverUtil, 2),
        ramp_generator_util: round(generatorUtil, 2),
        foreign_util: foreignUtil,
        limit: limitOf(serverUtil, generatorUtil, serverUtil + workers.reduce((s, w) => s + (cpu1[w.pid] - cpu0[w.pid]) / c.seconds, 0), foreignUtil),
        first_error: c.firstError,
      };
    } finally {
      await stopNode(node);
      await Promise.all(workers.map((w) => w.close()));
    }
  },
  metrics: ['handshakes_per_s', 'server_cpu_ms_per_handshake', 'rss_bytes_per_connection', 'rss_without_young_bytes_per_connection', 'young_generation_growth_mb', 'heap_bytes_per_connection', 'external_bytes_per_connection', 'ramp_server_util', 'ramp_generator_util', 'foreign_util'],
};

const manyRooms = {
  title: 'many rooms: every client publishes to its own rooms, a few members each',
  servers: (servers) => servers.flatMap((s) => (s === 'raw-uws' ? ['raw-uws', 'raw-uws-direct'] : [s])),
  async run(name) {
    const node = await startNode(name);
    const [worker] = await startWorkers(1);
    const members = (CONFIG.roomClients * CONFIG.roomsPerClient) / CONFIG.rooms;
    try {
      const c = await connectClients([worker], node, CONFIG.roomClients, 0);
      if (c.failed > 0) throw new Error(`${c.failed} connections failed: ${c.firstError}`);
      const rooms = { kind: 'spread', rooms: CONFIG.rooms, perClient: CONFIG.roomsPerClient, firstRoom: 0 };
      const { lost } = await joinAll([worker], rooms);
      await worker.call('publish', { mode: 'spread', rooms, size: CONFIG.payloadBytes, window: CONFIG.window * 10, members });
      await sleep(CONFIG.warmup * 1000);
      const m = await measureWindow([worker], [node.pid, worker.pid], CONFIG.duration, node.pid);
      await worker.call('stopPublish');
      const serverUtil = m.cpu[node.pid] / m.wall;
      const generatorUtil = m.cpu[worker.pid] / m.wall;
      return {
        deliveries_per_s: round(m.deliveries[0] / m.wall),
        events_per_s: round(m.sent[0] / m.wall),
        server_cpu_s_per_million: round((m.cpu[node.pid] * 1e6) / m.deliveries[0], 3),
        server_util: round(serverUtil, 2),
        generator_util: round(generatorUtil, 2),
        foreign_util: m.foreign_util,
        limit: limitOf(serverUtil, generatorUtil, serverUtil + generatorUtil, m.foreign_util),
        ...syscallRatios(m, m.deliveries[0], m.sent[0]),
        clients_lost_setup: lost,
        clients_lost: m.lost,
      };
    } finally {
      await stopNode(node);
      await worker.close();
    }
  },
  metrics: ['deliveries_per_s', 'events_per_s', 'server_cpu_s_per_million', 'server_util', 'generator_util', 'foreign_util', 'deliveries_per_write', 'messages_per_wakeup'],
};

const SCENARIOS = { fanout, 'cross-node': crossNode, idle, 'many-rooms': manyRooms };

// ---------------------------------------------------------------------------------------------
// Summaries, ratios, tables.

const results = {
  machine: {
    cpu: os.cpus()[0]?.model,
    cores: os.cpus().length,
    memory_gib: round(os.totalmem() / 2 ** 30, 1),
    kernel: os.release(),
    node: process.version,
    uws: (() => {
      const b = loadUws();
      return `${b.source} ${b.version}`;
    })(),
    socketio: JSON.parse(readText('node_modules/socket.io/package.json')).version,
    redis_adapter: JSON.parse(readText('node_modules/@socket.io/redis-adapter/package.json')).version,
    open_files_limit: Number(readText('/proc/self/limits').match(/Max open files\s+(\d+)/)?.[1]),
  },
  build: buildInfo(),
  config: CONFIG,
  started_at: new Date().toISOString(),
  scenarios: {},
};

/** The commit measured, and whether dist/ is older than src/ (then run `npm run build` first). */
function buildInfo() {
  const newest = (dir, ext) => Math.max(...readdirSync(dir).filter((f) => f.endsWith(ext)).map((f) => statSync(join(dir, f)).mtimeMs));
  let commit;
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    commit = 'unknown';
  }
  const stale = newest('src', '.ts') > newest('dist', '.js');
  if (stale) console.error('bench: warning: dist/ is older than src/; run `npm run build` first');
  return { commit, dist_older_than_src: stale };
}

function summarize(runs, keys) {
  const out = {};
  for (const key of keys) {
    const values = runs.map((r) => r[key]).filter((v) => typeof v === 'number');
    if (values.length === 0) continue;
    out[key] = { median: round(median(values), 3), min: Math.min(...values), max: Math.max(...values) };
  }
  out.disturbed_runs = runs.filter((r) => foreignOf(r) >= DISTURBED_CORES).length;
  const limits = runs.map((r) => r.limit).filter(Boolean);
  if (limits.length > 0) out.limit = mode(limits);
  const maxLimits = runs.map((r) => r.max_limit).filter(Boolean);
  if (maxLimits.length > 0) out.max_limit = mode(maxLimits);
  const pacedLimits = runs.map((r) => r.paced_limit).filter(Boolean);
  if (pacedLimits.length > 0) out.paced_limit = mode(pacedLimits);
  return out;
}
const mode = (values) => [...values].sort((a, b) => values.filter((v) => v === b).length - values.filter((v) => v === a).length)[0];

const med = (scenario, server, key) => results.scenarios[scenario]?.servers[server]?.summary[key]?.median;
const ratio = (a, b) => (a && b ? round(a / b, 2) : null);

/** The raw baseline is whichever publish mode delivered more in the fan-out (deferred if not run). */
function rawWinner() {
  const deferred = med('fanout', 'raw-uws', 'deliveries_per_s');
  const direct = med('fanout', 'raw-uws-direct', 'deliveries_per_s');
  return direct !== undefined && deferred !== undefined && direct > deferred ? 'raw-uws-direct' : 'raw-uws';
}

/** The raw baseline of a scenario: its faster raw mode by `key` when both ran. */
function baselineOf(scenario, key) {
  const s = results.scenarios[scenario].servers;
  const candidates = ['raw-uws', 'raw-uws-direct'].filter((n) => s[n]);
  if (candidates.length === 0) return undefined;
  return candidates.reduce((best, n) => ((s[n].summary[key]?.median ?? 0) > (s[best].summary[key]?.median ?? 0) ? n : best));
}

const RATIO_KEYS = {
  fanout: { main: 'deliveries_per_s', also: ['server_cpu_s_per_million'] },
  'cross-node': { main: 'max_b_deliveries_per_s', also: ['max_b_cpu_s_per_million', 'paced_latency_p99_ms', 'max_latency_p99_ms'] },
  idle: { main: 'handshakes_per_s', also: ['rss_bytes_per_connection', 'rss_without_young_bytes_per_connection', 'heap_bytes_per_connection', 'server_cpu_ms_per_handshake'] },
  'many-rooms': { main: 'deliveries_per_s', also: ['server_cpu_s_per_million'] },
};

function ratiosOf(scenario) {
  const { main, also } = RATIO_KEYS[scenario];
  const baseline = baselineOf(scenario, main);
  const out = { baseline };
  for (const key of [main, ...also]) {
    out[`${key}:ws-edge/raw`] = ratio(med(scenario, 'ws-edge', key), baseline && med(scenario, baseline, key));
    out[`${key}:ws-edge/socket.io`] = ratio(med(scenario, 'ws-edge', key), med(scenario, 'socket.io', key));
    if (results.scenarios[scenario].servers['ws-edge-sequenced']) {
      out[`${key}:ws-edge-sequenced/raw`] = ratio(med(scenario, 'ws-edge-sequenced', key), baseline && med(scenario, baseline, key));
      out[`${key}:ws-edge-sequenced/ws-edge`] = ratio(med(scenario, 'ws-edge-sequenced', key), med(scenario, 'ws-edge', key));
    }
  }
  if (scenario === 'fanout' || scenario === 'many-rooms') {
    out['deliveries_per_s:raw-direct/raw-deferred'] = ratio(med(scenario, 'raw-uws-direct', main), med(scenario, 'raw-uws', main));
  }
  return out;
}

const cell = (summary, key, digits) => {
  const s = summary[key];
  if (!s) return '-';
  const f = (v) => (digits === undefined ? Math.round(v).toLocaleString('en-US') : v.toFixed(digits));
  return s.min === s.max ? f(s.median) : `${f(s.median)} (${f(s.min)}-${f(s.max)})`;
};

const TABLES = {
  fanout: {
    head: ['server', 'deliveries/s', 'msgs/s', 'server CPU s per M deliveries', 'deliveries per write syscall', 'server cores', 'generator cores', 'limited by'],
    row: (s) => [cell(s, 'deliveries_per_s'), cell(s, 'messages_per_s'), cell(s, 'server_cpu_s_per_million', 2), cell(s, 'deliveries_per_write', 1), cell(s, 'server_util', 2), cell(s, 'generator_util', 2), s.limit],
  },
  'cross-node': {
    head: ['server', 'B deliveries/s (max)', 'latency p50/p99 ms (max)', 'B deliveries/s (paced)', 'latency p50/p99 ms (paced)', 'B deliveries per write (max)', 'cores A/B/Redis/gen (max)', 'limited by (max)'],
    row: (s) => [
      cell(s, 'max_b_deliveries_per_s'),
      `${cell(s, 'max_latency_p50_ms', 1)} / ${cell(s, 'max_latency_p99_ms', 1)}`,
      cell(s, 'paced_b_deliveries_per_s'),
      `${cell(s, 'paced_latency_p50_ms', 1)} / ${cell(s, 'paced_latency_p99_ms', 1)}`,
      cell(s, 'max_b_deliveries_per_write', 1),
      ['max_a_util', 'max_b_util', 'max_redis_util', 'max_generator_util'].map((k) => s[k]?.median?.toFixed(2) ?? '-').join(' / '),
      s.max_limit,
    ],
  },
  idle: {
    head: ['server', 'handshakes/s', 'server CPU ms/handshake', 'RSS B/conn', 'RSS B/conn without young gen', 'young gen growth MB', 'heap B/conn', 'server/gen cores (ramp)', 'limited by'],
    row: (s) => [
      cell(s, 'handshakes_per_s'),
      cell(s, 'server_cpu_ms_per_handshake', 3),
      cell(s, 'rss_bytes_per_connection'),
      cell(s, 'rss_without_young_bytes_per_connection'),
      cell(s, 'young_generation_growth_mb', 1),
      cell(s, 'heap_bytes_per_connection'),
      `${s.ramp_server_util?.median?.toFixed(2)} / ${s.ramp_generator_util?.median?.toFixed(2)}`,
      s.limit,
    ],
  },
  'many-rooms': {
    head: ['server', 'deliveries/s', 'events/s', 'server CPU s per M deliveries', 'deliveries per write syscall', 'server cores', 'generator cores', 'limited by'],
    row: (s) => [cell(s, 'deliveries_per_s'), cell(s, 'events_per_s'), cell(s, 'server_cpu_s_per_million', 2), cell(s, 'deliveries_per_write', 1), cell(s, 'server_util', 2), cell(s, 'generator_util', 2), s.limit],
  },
};

function printTable(scenario) {
  const { head, row } = TABLES[scenario];
  const servers = results.scenarios[scenario].servers;
  console.log(`| ${head.join(' | ')} |`);
  console.log(`|${head.map(() => '---').join('|')}|`);
  for (const [name, s] of Object.entries(servers)) console.log(`| ${name} | ${row(s.summary).join(' | ')} |`);
  const disturbed = Object.entries(servers).filter(([, s]) => s.summary.disturbed_runs > 0);
  if (disturbed.length > 0) console.log(`runs kept although other processes used >= ${DISTURBED_CORES} cores: ${disturbed.map(([n, s]) => `${n} ${s.summary.disturbed_runs}`).join(', ')}`);
  const r = results.scenarios[scenario].ratios;
  console.log(
    `ratios (baseline ${r.baseline}): ` +
      Object.entries(r)
        .filter(([k]) => k !== 'baseline')
        .map(([k, v]) => `${k} ${v ?? '-'}`)
        .join(', '),
  );
}

function save() {
  mkdirSync(dirname(OUT), { recursive: true });
  writeFileSync(OUT, JSON.stringify(results, null, 2) + '\n');
}

// ---------------------------------------------------------------------------------------------

/** Waits (at most `maxSeconds`) until the machine has been nearly idle for two seconds in a row. */
async function waitForQuiet(maxSeconds = 15) {
  let quiet = 0;
  for (let i = 0; i < maxSeconds && quiet < 2; i++) {
    const before = machineBusySeconds() - selfCpuSeconds();
    await sleep(1000);
    quiet = machineBusySeconds() - selfCpuSeconds() - before < 0.3 ? quiet + 1 : 0;
  }
}

async function runScenario(key) {
  const scenario = SCENARIOS[key];
  const servers = scenario.servers(CONFIG.servers);
  const entry = { title: scenario.title, servers: Object.fromEntries(servers.map((s) => [s, { runs: [], discarded: [], errors: [] }])) };
  results.scenarios[key] = entry;
  console.error(`\n# ${key}: ${scenario.title} (${servers.join(', ')}; ${CONFIG.reps} repetitions)`);
  await scenario.before?.();
  try {
    for (let rep = 0; rep < CONFIG.reps; rep++) {
      for (const server of servers) {
        for (let attempt = 0; attempt <= RETRIES; attempt++) {
          const started = Date.now();
          try {
            const run = await scenario.run(server);
            console.error(`  ${key} ${server} #${rep + 1} (${((Date.now() - started) / 1000).toFixed(1)} s): ${JSON.stringify(run)}`);
            const foreign = foreignOf(run);
            if (foreign < DISTURBED_CORES || attempt === RETRIES || Date.now() - runStarted > RETRY_UNTIL_MS) {
              entry.servers[server].runs.push(run);
              break;
            }
            entry.servers[server].discarded.push(run);
            console.error(`  other processes used ${foreign} cores during that run: waiting for a quiet machine, then repeating it`);
            await waitForQuiet();
          } catch (err) {
            entry.servers[server].errors.push(err.message);
            console.error(`  ${key} ${server} #${rep + 1} failed: ${err.message}`);
            break;
          }
        }
      }
    }
  } finally {
    await scenario.after?.();
  }
  for (const s of Object.values(entry.servers)) s.summary = summarize(s.runs, scenario.metrics);
  entry.ratios = ratiosOf(key);
  console.log(JSON.stringify({ scenario: key, config: CONFIG, machine: results.machine, servers: Object.fromEntries(Object.entries(entry.servers).map(([n, s]) => [n, s.summary])), ratios: entry.ratios }));
  printTable(key);
  save();
}

/**
 * Profiles one run of `name` in `scenario` (fan-out or many rooms) with the V8 CPU profiler over the
 * measured window only (setup and handshakes left out).
 */
async function profileOne(name, scenario, dir) {
  const node = await startNode(name);
  const [worker] = await startWorkers(1);
  const file = join(dir, `${name}-${scenario}.cpuprofile`);
  try {
    if (scenario === 'fanout') {
      const c = await connectClients([worker], node, CONFIG.fanoutClients, 0);
      await joinAll([worker], { kind: 'same', names: [ROOM] });
      await worker.call('publisher', { port: node.port, localAddress: c.local[0][0], secret: SECRET, user: 'publisher', room: ROOM });
      await worker.call('probe');
      await worker.call('publish', { mode: 'window', room: ROOM, size: CONFIG.payloadBytes, window: CONFIG.window });
    } else {
      await connectClients([worker], node, CONFIG.roomClients, 0);
      const rooms = { kind: 'spread', rooms: CONFIG.rooms, perClient: CONFIG.roomsPerClient, firstRoom: 0 };
      await joinAll([worker], rooms);
      const members = (CONFIG.roomClients * CONFIG.roomsPerClient) / CONFIG.rooms;
      await worker.call('publish', { mode: 'spread', rooms, size: CONFIG.payloadBytes, window: CONFIG.window * 10, members });
    }
    await sleep(CONFIG.warmup * 1000);
    await ask(node, 'profile-start');
    const m = await measureWindow([worker], [node.pid, worker.pid], CONFIG.duration, node.pid);
    await ask(node, 'profile-stop', { file });
    await worker.call('stopPublish');
    const run = {
      deliveries_per_s: round(m.deliveries[0] / m.wall),
      messages_per_s: round(m.sent[0] / m.wall),
      server_cpu_s_per_million: round((m.cpu[node.pid] * 1e6) / m.deliveries[0], 3),
      server_util: round(m.cpu[node.pid] / m.wall, 2),
      ...syscallRatios(m, m.deliveries[0], m.sent[0]),
    };
    console.error(`profiled ${name} ${scenario} (profiler on): ${JSON.stringify(run)}`);
    return { run, file };
  } finally {
    await stopNode(node);
    await worker.close();
  }
}

/** Profiles ws-edge while it accepts the idle scenario's connections (handshakes, JWT). */
async function profileHandshakes(dir) {
  const node = await startNode('ws-edge');
  const workers = await startWorkers(CONFIG.idleWorkers);
  const file = join(dir, 'ws-edge-handshakes.cpuprofile');
  try {
    await ask(node, 'profile-start');
    const c = await connectClients(workers, node, CONFIG.idleConnections, 0, { addresses: 4 });
    await ask(node, 'profile-stop', { file });
    const run = { handshakes_per_s: round(c.connected / c.seconds), failed: c.failed };
    console.error(`profiled ws-edge handshakes (profiler on): ${JSON.stringify(run)}`);
    return { run, file };
  } finally {
    await stopNode(node);
    await Promise.all(workers.map((w) => w.close()));
  }
}

async function profile() {
  const dir = mkdtempSync(join(os.tmpdir(), 'wsedge-prof-'));
  mkdirSync('bench/results', { recursive: true });
  const out = { machine: results.machine, config: CONFIG, profiles: {} };
  for (const [name, scenario, svg] of [
    ['ws-edge', 'fanout', 'bench/results/flame.svg'],
    ['raw-uws', 'fanout', 'bench/results/flame-raw-uws.svg'],
    ['ws-edge', 'many-rooms', 'bench/results/flame-many-rooms.svg'],
    ['raw-uws', 'many-rooms', undefined],
  ]) {
    const { run, file } = await profileOne(name, scenario, dir);
    out.profiles[`${name} ${scenario}`] = { run, profile: file, flame_graph: svg ?? null, ...summarizeProfile(file, svg, `${name} ${scenario}`) };
  }
  const { run, file } = await profileHandshakes(dir);
  const svg = 'bench/results/flame-handshakes.svg';
  out.profiles['ws-edge handshakes'] = { run, profile: file, flame_graph: svg, ...summarizeProfile(file, svg, 'ws-edge accepting connections') };
  writeFileSync('bench/results/profile.json', JSON.stringify(out, null, 2) + '\n');
  for (const [name, s] of Object.entries(out.profiles)) {
    console.log(JSON.stringify({ scenario: 'profile', profile: name, run: s.run, idle_pct: s.idle_pct, self_by_origin_pct: s.self_by_origin_pct, top_self: s.top_self.slice(0, 10) }));
    console.log(`| ${name}: self % | total % | function | location |\n|---|---|---|---|`);
    for (const f of s.top_self.slice(0, 15)) console.log(`| ${f.self_pct} | ${f.total_pct} | ${f.function} | ${f.location} |`);
  }
}

if (process.argv.includes('--profile')) {
  await profile();
} else {
  console.error(`bench: ${results.machine.cores} cores, ${results.machine.cpu}, Node ${process.version}, ${results.machine.uws}; config ${JSON.stringify(CONFIG)}`);
  console.error(`bench: load average ${readText('/proc/loadavg').split(' ').slice(0, 3).join(' ')}; waiting up to 30 s for a quiet machine`);
  await waitForQuiet(30);
  const started = Date.now();
  for (const key of CONFIG.scenarios) await runScenario(key);
  results.finished_at = new Date().toISOString();
  results.total_seconds = round((Date.now() - started) / 1000);
  save();
  // bench/results/results.json gets bench/results/chart.svg; another BENCH_OUT gets <name>.svg.
  const chart = OUT === DEFAULT_OUT ? join(dirname(OUT), 'chart.svg') : OUT.replace(/\.json$/, '') + '.svg';
  if (env.BENCH_CHART !== '0') await new Promise((r) => track(fork('bench/chart.mjs', [OUT, chart], { stdio: 'ignore' })).once('exit', r));
  console.error(`bench: done in ${results.total_seconds} s; results in ${OUT}${env.BENCH_CHART !== '0' ? `, chart in ${chart}` : ''}`);
}
process.exit(0);
