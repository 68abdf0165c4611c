#!/usr/bin/env node
/**
 * Mass reconnect at scale (issue 25): N connections on K node processes over one Redis, then kill -9
 * of one node and its clients reconnecting to the others.
 *
 *   nodes     K `node dist/cli.js serve`, each on its own ports, one redis-server this script spawns on
 *             a free port, a shared REDIS_PREFIX; rate limits lifted as in bench/join.mjs; the big
 *             room sequenced (WS_HISTORY_ROOMS); every other setting the node's default (so
 *             membership events on). Any WS_* / REDIS_* variable in this script's environment
 *             reaches the nodes and wins over the bench's settings (e.g. WS_HISTORY_SIZE=600).
 *   clients   raw `net` clients of bench/loadgen.mjs in BENCH_WORKERS child processes
 *             (bench/scale-clients.mjs), client i on node i mod K: its personal room, `channel:c<i mod R>`
 *             and, for a BENCH_BIG_SHARE of them, the big room `project:big`.
 *   ramp      every client connects (BENCH_RAMP_CONCURRENCY handshakes in flight over all workers)
 *             and joins its rooms (one write of two join_room); ends when every join is answered
 *             and no membership frame has arrived for 2 s.
 *   fan-out   a publisher POSTs P events/s into the big room (`/api/v1/publish` on node 0's internal
 *             port, open loop, each call's latency measured) for BENCH_FANOUT_S. BENCH_PUBLISH_VIA=both
 *             gives the nodes PUBLISH_PORT and sends every other call there (the publish thread), so
 *             both ports' latencies are measured side by side in the same run; `thread`: all there.
 *   storm     kill -9 of node K-1 (BENCH_KILL=0: none); its clients reconnect to the survivors with
 *             the client library's backoff (full jitter from BENCH_BACKOFF_MS, cap BENCH_BACKOFF_CAP_MS)
 *             and one `resume` (the big room with its last position, the channel room); ends when
 *             all are back (every room answered) or after BENCH_STORM_TIMEOUT_S; publishing goes on.
 *   after     BENCH_AFTER_S more of publishing, then the last events are awaited and every client's
 *             big-room offsets are checked: lost (gaps and a missing tail), duplicated, skipped
 *             after `recovered: false`.
 *
 * Each node's internal /metrics is scraped every second: `nodejs_eventloop_lag_p99_seconds` (prom-client
 * resets its histogram at every scrape, so each sample is the p99 of about one second), RSS, heap used
 * and connections; heap and RSS per connection are taken at the end of the ramp (totals divided by
 * the node's connections, the growth over the idle node divided by them, and the heap's growth after
 * a full GC, asked of bench/probe.mjs, which every node preloads). Node logs (stdout JSON)
 * are kept in BENCH_LOG_DIR and tallied per phase: `Command timed out`, `subscribe failed`,
 * `registry refresh failed`, and every warn/error message.
 *
 * Prints one JSON line per phase and a summary line to stdout, then a table; progress to stderr.
 * Run `npm run build` first:
 *   node bench/scale.mjs [connections=6000] [nodes=3] [rooms=30] [events/s=20]
 * Everything is bounded: BENCH_TIMEOUT_S (default 900) ends the run, and every child (nodes, clients,
 * redis-server) is killed by pid on exit; nodes and clients also exit when this process goes away.
 * BENCH_DIST=/other/tree/dist measures another build (its node_modules must resolve; BENCH_COMMIT
 * names it when it is not a git checkout), as in bench/join.mjs.
 */
import { execFileSync, fork, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { dirname, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { cpuSecondsOf, median, sleep, startRedisServer } from './lib.mjs';
import { nowMs } from './loadgen.mjs';

const env = process.env;
const arg = (i, name, fallback) => Number(process.argv[2 + i] ?? env[name] ?? fallback);
const CONNECTIONS = arg(0, 'BENCH_CONNECTIONS', 6000);
const NODES = arg(1, 'BENCH_NODES', 3);
const ROOMS = arg(2, 'BENCH_ROOMS', 30);
const RATE = arg(3, 'BENCH_RATE', 20);
const num = (name, fallback) => Number(env[name] ?? fallback);
const CFG = {
  bigRoom: env.BENCH_BIG_ROOM ?? 'project:big',
  bigShare: num('BENCH_BIG_SHARE', 1),
  kill: env.BENCH_KILL === '0' ? -1 : NODES - 1,
  workers: num('BENCH_WORKERS', Math.max(2, Math.ceil(CONNECTIONS / 9000))),
  rampConcurrency: num('BENCH_RAMP_CONCURRENCY', 64),
  fanoutS: num('BENCH_FANOUT_S', 10),
  stormTimeoutS: num('BENCH_STORM_TIMEOUT_S', 120),
  afterS: num('BENCH_AFTER_S', 5),
  backoffMs: num('BENCH_BACKOFF_MS', 1000),
  backoffCapMs: num('BENCH_BACKOFF_CAP_MS', 30_000),
  maxInFlightPublishes: num('BENCH_PUBLISH_IN_FLIGHT', 256),
  timeoutS: num('BENCH_TIMEOUT_S', 900),
  logDir: env.BENCH_LOG_DIR ?? `/tmp/ws-edge-scale-${process.pid}`,
  publishVia: env.BENCH_PUBLISH_VIA ?? 'internal',
};
if (!['internal', 'thread', 'both'].includes(CFG.publishVia)) throw new Error('BENCH_PUBLISH_VIA: internal, thread or both');
if (NODES < 2 && CFG.kill >= 0) throw new Error('a kill needs at least 2 nodes (or BENCH_KILL=0)');
const SECRET = 'bench-secret-that-is-long-enough-for-hs256-0123456789';
const API_KEY = 'bench-publish-key-0123456789abcdef0123456789';
const here = dirname(fileURLToPath(import.meta.url));
const DIST = resolve(env.BENCH_DIST ?? resolve(here, '../dist'));
const PROBE = resolve(here, 'probe.mjs');
mkdirSync(CFG.logDir, { recursive: true });
const say = (text) => console.error(`[scale ${((nowMs() - T0) / 1000).toFixed(1)}s] ${text}`);
const T0 = nowMs();

// ---------------------------------------------------------------------------------------------
// Every child by pid, killed however this exits; a global deadline.
const children = new Set();
const track = (child) => (children.add(child), child);
let redisPid;
function killAll() {
  for (const pid of [...[...children].map((c) => c.pid), redisPid]) {
    try {
      if (pid) process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));
setTimeout(() => {
  console.error(`scale: BENCH_TIMEOUT_S (${CFG.timeoutS} s) reached; killing everything`);
  process.exit(124);
}, CFG.timeoutS * 1000).unref();

// ---------------------------------------------------------------------------------------------
// redis-server on a free port (as bench/join.mjs), bounded by `timeout`.
const redis = await startRedisServer(CFG.timeoutS + 60, track);
const redisPort = redis.port;
redisPid = redis.pid;

// ---------------------------------------------------------------------------------------------
// Phases: log lines, scrapes and publish latencies are filed under the phase they happen in.
const PHASES = ['idle', 'ramp', 'fanout', 'storm', 'after'];
let phase = 'idle';
function enter(name) {
  phase = name;
  cpuMarks[name] = cpuNow();
}

// ---------------------------------------------------------------------------------------------
// The nodes: one process each, logs tallied and kept.
const WATCHED = [
  ['command_timed_out', (line) => line.includes('Command timed out')],
  ['subscribe_failed', (_line, msg) => msg === 'subscribe failed; retrying with backoff'],
  ['resubscribe_failed', (_line, msg) => typeof msg === 'string' && msg.startsWith('resubscribe failed')],
  ['registry_refresh_failed', (_line, msg) => msg === 'connection registry refresh failed'],
];
const prefix = `scale${Date.now()}:`;
const nodeEnv = (k) => ({
  ...process.env,
  NODE_ENV: 'production',
  HOST: '127.0.0.1',
  INTERNAL_HOST: '127.0.0.1',
  // The client side is a bench: lift what would refuse it (as bench/join.mjs does).
  WS_RATE_LIMIT: '100000',
  WS_RATE_BURST: '100000',
  WS_MAX_ROOMS_PER_CONNECTION: '10000',
  WS_MAX_CONNECTIONS_PER_USER: '10000',
  WS_HISTORY_ROOMS: CFG.bigRoom,
  // An operator's override (WS_*, REDIS_*) from this script's environment wins.
  ...Object.fromEntries(Object.entries(process.env).filter(([name]) => /^(WS|REDIS)_/.test(name))),
  NODE_ID: `scale${k}`,
  PORT: '0',
  INTERNAL_PORT: '0',
  ...(CFG.publishVia !== 'internal' && { PUBLISH_PORT: '0' }),
  JWT_SECRET: SECRET,
  PUBLISH_API_KEY: API_KEY,
  REDIS_URL: `redis://127.0.0.1:${redisPort}`,
  REDIS_PREFIX: prefix,
});

function startNode(k) {
  // probe.mjs: the node exits when this process goes away (its IPC channel closes).
  const child = track(spawn(process.execPath, ['--expose-gc', '--import', PROBE, resolve(DIST, 'cli.js'), 'serve'], { env: nodeEnv(k), stdio: ['ignore', 'pipe', 'pipe', 'ipc'] }));
  const node = { k, child, pid: child.pid, alive: true, logs: {}, excerpts: {}, scrapes: [], port: 0, internalPort: 0, idle: undefined };
  for (const p of PHASES) node.logs[p] = { warn_error: {}, ...Object.fromEntries(WATCHED.map(([name]) => [name, 0])) };
  const file = createWriteStream(`${CFG.logDir}/node${k}.log`);
  child.stderr.on('data', (chunk) => file.write(chunk));
  return new Promise((resolveStart, reject) => {
    const timer = setTimeout(() => reject(new Error(`node ${k} did not start within 30 s (log: ${CFG.logDir}/node${k}.log)`)), 30_000);
    createInterface({ input: child.stdout }).on('line', (line) => {
      file.write(line + '\n');
      let entry;
      try {
        entry = JSON.parse(line);
      } catch {
        return; // a banner
      }
      const tally = node.logs[phase];
      for (const [name, match] of WATCHED) if (match(line, entry.msg)) tally[name] += 1;
      // pino writes the level as a label (`"level":"warn"`) or a number (40).
      const level = typeof entry.level === 'number' ? (entry.level >= 50 ? 'error' : entry.level >= 40 ? 'warn' : '') : entry.level;
      if (level === 'warn' || level === 'error' || level === 'fatal') {
        const key = `${level}: ${entry.msg}`;
        tally.warn_error[key] = (tally.warn_error[key] ?? 0) + 1;
        const kept = (node.excerpts[key] ??= []);
        if (kept.length < 2) kept.push(`${phase}: ${line.slice(0, 600)}`);
      }
      // Up once it listens (`start`, with its ports) and its broker is up (`broker_up`), in either order.
      if (entry.event === 'start') {
        node.port = entry.port;
        node.internalPort = entry.internal_port;
        node.publishPort = entry.publish_port;
      }
      if (entry.event === 'broker_up') node.brokerUp = true;
      if (node.port > 0 && node.brokerUp) {
        clearTimeout(timer);
        resolveStart(node);
      }
    });
    child.once('exit', (code, signal) => {
      node.alive = false;
      if (node.killed) return;
      clearTimeout(timer);
      reject(new Error(`node ${k} exited (${code ?? signal}); log: ${CFG.logDir}/node${k}.log`));
      if (phase !== 'idle') say(`node ${k} exited unexpectedly (${code ?? signal})`);
    });
  });
}

/** Full GC in the node, then its memory (bench/probe.mjs over IPC): heap after GC, as in bench/run.mjs. */
function memoryAfterGc(node) {
  return new Promise((r) => {
    const timer = setTimeout(() => (node.child.off('message', on), r(undefined)), 20_000);
    const on = (msg) => {
      if (msg?.probe !== 'memory') return;
      clearTimeout(timer);
      node.child.off('message', on);
      r(msg);
    };
    node.child.on('message', on);
    node.child.send({ probe: 'memory' });
  });
}

// ---------------------------------------------------------------------------------------------
// /metrics of every live node, every second (one scrape in flight per node, 5 s bound).
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
function httpCall(method, port, path, body, timeoutMs) {
  return new Promise((resolveCall) => {
    const started = nowMs();
    const req = http.request({ host: '127.0.0.1', port, path, method, agent, timeout: timeoutMs, headers: body === undefined ? {} : { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      const parts = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => resolveCall({ status: res.statusCode, text: Buffer.concat(parts).toString(), ms: nowMs() - started }));
      res.on('error', (err) => resolveCall({ status: 0, text: err.code ?? err.message, ms: nowMs() - started }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolveCall({ status: 0, text: err.code ?? err.message, ms: nowMs() - started }));
    req.end(body);
  });
}

const METRICS = ['nodejs_eventloop_lag_p99_seconds', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'wsedge_connections'];
/** Counters read from each node's last scrape, summed per label set. */
const COUNTERS = ['wsedge_upgrades_refused_total', 'wsedge_broker_publish_errors_total', 'wsedge_broker_frames_dropped_total', 'wsedge_recovery_resets_total', 'wsedge_recoveries_total', 'wsedge_events_replayed_total', 'wsedge_gaps_repaired_total', 'wsedge_room_resets_total', 'wsedge_duplicate_events_total', 'wsedge_backpressure_drops_total', 'wsedge_message_errors_total', 'wsedge_broker_reconnects_total'];
function parseMetrics(text) {
  const values = {};
  const counters = {};
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line === '') continue;
    const space = line.lastIndexOf(' ');
    const series = line.slice(0, space);
    const brace = series.indexOf('{');
    const name = brace < 0 ? series : series.slice(0, brace);
    if (METRICS.includes(name) && brace < 0) values[name] = Number(line.slice(space + 1));
    if (COUNTERS.includes(name)) counters[series] = Number(line.slice(space + 1));
  }
  return { values, counters };
}
let scraping = true;
async function scrapeLoop(node) {
  while (scraping && node.alive) {
    const next = nowMs() + 1000;
    const at = phase;
    const res = await httpCall('GET', node.internalPort, '/metrics', undefined, 5000);
    if (res.status === 200) {
      const { values, counters } = parseMetrics(res.text);
      node.scrapes.push({ t: nowMs(), phase: at, ms: res.ms, lag_p99: values.nodejs_eventloop_lag_p99_seconds, rss: values.process_resident_memory_bytes, heap: values.nodejs_heap_size_used_bytes, conns: values.wsedge_connections });
      node.counters = counters;
    } else if (node.alive) node.scrapes.push({ t: nowMs(), phase: at, ms: res.ms, failed: res.text || String(res.status) });
    await sleep(Math.max(0, next - nowMs()));
  }
}

// ---------------------------------------------------------------------------------------------
// Client processes.
function startWorker(w, first, count) {
  const child = track(fork(resolve(here, 'scale-clients.mjs'), [], { env: { ...process.env, BENCH_DIST: DIST }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  const pending = new Map();
  let seq = 0;
  child.on('message', (msg) => {
    const p = pending.get(msg.id);
    if (p === undefined) return;
    pending.delete(msg.id);
    if (msg.error) p.reject(new Error(`worker ${w}: ${msg.error}`));
    else p.resolve(msg.result);
  });
  child.once('exit', (code) => {
    for (const p of pending.values()) p.reject(new Error(`worker ${w} exited (${code})`));
  });
  const ready = new Promise((r) => child.once('message', r));
  return {
    w,
    pid: child.pid,
    first,
    count,
    ready,
    call: (cmd, args) =>
      new Promise((res, rej) => {
        const id = ++seq;
        pending.set(id, { resolve: res, reject: rej });
        child.send({ id, cmd, args });
      }),
  };
}

// ---------------------------------------------------------------------------------------------
// CPU per phase: nodes, redis, clients, this process, and the rest of the machine (foreign).
function machineBusySeconds() {
  const [, ...fields] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = fields;
  return (user + nice + system + irq + softirq + steal) / 100;
}
const cpuOf = (pid) => {
  try {
    return cpuSecondsOf(pid);
  } catch {
    return NaN; // exited (the killed node)
  }
};
let nodes = [];
let workers = [];
const cpuMarks = {};
function cpuNow() {
  return {
    t: nowMs(),
    machine: machineBusySeconds(),
    nodes: nodes.map((n) => cpuOf(n.pid)),
    redis: cpuOf(redisPid),
    clients: workers.map((w) => cpuOf(w.pid)),
    bench: cpuOf(process.pid),
  };
}
function cpuBetween(a, b) {
  const wall = (b.t - a.t) / 1000;
  const nodesCores = a.nodes.map((v, k) => (Number.isFinite(b.nodes[k]) ? (b.nodes[k] - v) / wall : null));
  const clients = b.clients.reduce((s, v, i) => s + v - a.clients[i], 0);
  const ours = nodesCores.reduce((s, v) => s + (v ?? 0) * wall, 0) + (b.redis - a.redis) + clients + (b.bench - a.bench);
  return {
    wall_s: round(wall, 1),
    node_cores: nodesCores.map((v) => (v === null ? null : round(v, 2))),
    redis_cores: round((b.redis - a.redis) / wall, 2),
    client_cores: round(clients / wall, 2),
    bench_cores: round((b.bench - a.bench) / wall, 2),
    foreign_cores: round(Math.max(0, b.machine - a.machine - ours) / wall, 2),
  };
}

// ---------------------------------------------------------------------------------------------
// The publisher: open loop at RATE/s into the big room through node 0's publish API.
const publishes = []; // { phase, via, ms, status }
let lastOffset = 0;
let lastEpoch;
let inFlight = 0;
let publishSkipped = 0;
const publishFailures = []; // the first few calls not answered 200: what they got, after how long
let publishing = false;
let publisherDone;
async function publishLoop(node) {
  publishing = true;
  const started = nowMs();
  let sent = 0;
  const calls = [];
  while (publishing) {
    const due = Math.floor(((nowMs() - started) / 1000) * RATE);
    while (sent < due) {
      sent += 1;
      if (inFlight >= CFG.maxInFlightPublishes) {
        publishSkipped += 1;
        continue;
      }
      const at = phase;
      const n = sent;
      const via = CFG.publishVia === 'both' ? (n % 2 === 0 ? 'thread' : 'internal') : CFG.publishVia;
      inFlight += 1;
      calls.push(
        httpCall('POST', via === 'thread' ? node.publishPort : node.internalPort, '/api/v1/publish', JSON.stringify({ room: CFG.bigRoom, type: 'bench.tick', data: { n } }), 30_000).then((res) => {
          inFlight -= 1;
          publishes.push({ phase: at, via, ms: res.ms, status: res.status === 0 ? res.text : res.status }); // 0: no answer (its error code)
          if (res.status !== 200 && publishFailures.length < 10) publishFailures.push({ phase: at, n, status: res.status, ms: round(res.ms), answer: res.text.slice(0, 200) });
          if (res.status === 200) {
            const answer = JSON.parse(res.text);
            if (answer.offset > lastOffset) lastOffset = answer.offset;
            lastEpoch ??= answer.epoch;
          }
        }),
      );
    }
    await sleep(Math.max(1, Math.min(50, 1000 / RATE / 2)));
  }
  await Promise.all(calls);
}

// ---------------------------------------------------------------------------------------------
const round = (v, d = 0) => (v === undefined || v === null || Number.isNaN(v) ? null : Number(v.toFixed(d)));
function pct(values, p) {
  if (values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}
const sum = (values) => values.reduce((s, v) => s + v, 0);
const flat = (lists) => lists.flat();
async function allCounters() {
  const list = await Promise.all(workers.map((w) => w.call('counters')));
  const out = { user_joined: 0, user_left: 0, ticks: 0, early_ticks: 0, epoch_changes: 0, room_resets: 0, unexpected_closes: 0, ramp_failures: 0, errors: {}, other: {}, failures: {} };
  for (const c of list) {
    for (const key of Object.keys(out)) {
      if (typeof out[key] === 'number') out[key] += c[key];
      else for (const [k, v] of Object.entries(c[key])) out[key][k] = (out[key][k] ?? 0) + v;
    }
  }
  return out;
}
const diffTable = (a, b) => Object.fromEntries(Object.entries(b).map(([k, v]) => [k, v - (a[k] ?? 0)]).filter(([, v]) => v !== 0));
function lagOf(node, name) {
  const samples = node.scrapes.filter((s) => s.phase === name);
  const lags = samples.filter((s) => s.lag_p99 !== undefined).map((s) => s.lag_p99);
  return {
    lag_p99_max_s: round(lags.length ? Math.max(...lags) : null, 3),
    lag_p99_median_s: round(lags.length ? median(lags) : null, 3),
    scrapes: lags.length,
    scrape_failures: samples.filter((s) => s.failed).length,
    scrape_ms_max: round(samples.length ? Math.max(...samples.map((s) => s.ms)) : null),
  };
}
function logsOf(name) {
  return nodes.map((n) => {
    const { warn_error: warnError, ...watched } = n.logs[name];
    return { node: n.k, ...watched, warn_error: warnError };
  });
}
function publishOf(name, via) {
  const list = publishes.filter((p) => p.phase === name && (via === undefined || p.via === via));
  const ms = list.map((p) => p.ms);
  const statuses = {};
  for (const p of list) statuses[p.status] = (statuses[p.status] ?? 0) + 1;
  const figures = { publishes: list.length, publish_ms_p50: round(pct(ms, 50)), publish_ms_p99: round(pct(ms, 99)), publish_ms_max: round(ms.length ? Math.max(...ms) : null), publish_status: statuses };
  // With both ports in use: each one's figures beside the whole.
  if (via !== undefined || CFG.publishVia !== 'both') return figures;
  return { ...figures, ...Object.fromEntries(['internal', 'thread'].flatMap((port) => Object.entries(publishOf(name, port)).map(([k, v]) => [`${port}_${k}`, v]))) };
}
/** A table cell: p50 / p99 / max of a phase's publishes, per port when both were used. */
const publishCell = (f) => {
  const cell = (prefix) => `${fmt(f[`${prefix}publish_ms_p50`])} / ${fmt(f[`${prefix}publish_ms_p99`])} / ${fmt(f[`${prefix}publish_ms_max`])}`;
  return CFG.publishVia === 'both' ? `internal port ${cell('internal_')}; publish thread ${cell('thread_')}` : cell('');
};
function commitOf(dir) {
  try {
    return execFileSync('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return env.BENCH_COMMIT ?? 'unknown'; // a copy outside git (BENCH_DIST): say which commit it is
  }
}
const machine = () => ({ cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model, node: process.version, loadavg_1m: round(os.loadavg()[0], 2), nofile: env.BENCH_NOFILE ?? 'inherited' });
const lines = [];
function emit(line) {
  const full = { bench: 'scale', ...line };
  lines.push(full);
  console.log(JSON.stringify(full));
}

// ---------------------------------------------------------------------------------------------
// The run.
say(`${CONNECTIONS} connections on ${NODES} nodes, ${ROOMS} channel rooms, ${CFG.bigRoom} (${CFG.bigShare * 100}% of them, sequenced), ${RATE} events/s, kill ${CFG.kill >= 0 ? `node ${CFG.kill}` : 'none'}; logs in ${CFG.logDir}; dist ${DIST}`);
nodes = await Promise.all(Array.from({ length: NODES }, (_, k) => startNode(k)));
say(`nodes up: ${nodes.map((n) => `${n.k}: pid ${n.pid} port ${n.port}/${n.internalPort}`).join(', ')}`);
const perWorker = Math.ceil(CONNECTIONS / CFG.workers);
workers = Array.from({ length: CFG.workers }, (_, w) => startWorker(w, w * perWorker, Math.max(0, Math.min(perWorker, CONNECTIONS - w * perWorker))));
await Promise.all(workers.map((w) => w.ready));
// Each client process binds its own loopback addresses (one address has ~28k ephemeral ports).
await Promise.all(
  workers.map((w) =>
    w.call('init', {
      secret: SECRET,
      first: w.first,
      count: w.count,
      rooms: ROOMS,
      bigRoom: CFG.bigRoom,
      bigShare: CFG.bigShare,
      kill: CFG.kill,
      nodes: nodes.map((n) => ({ port: n.port })),
      localAddresses: Array.from({ length: 4 }, (_, a) => `127.0.${1 + w.w}.${1 + a}`),
      backoffMs: CFG.backoffMs,
      backoffCapMs: CFG.backoffCapMs,
    }),
  ),
);
for (const n of nodes) void scrapeLoop(n);
cpuMarks.idle = cpuNow();
await sleep(2500);
for (const n of nodes) n.idle = n.scrapes.filter((x) => !x.failed).at(-1);

// Ramp.
enter('ramp');
say('ramp: connecting and joining');
const c0 = await allCounters();
const ramps = await Promise.all(workers.map((w) => w.call('ramp', { concurrency: Math.max(1, Math.round(CFG.rampConcurrency / CFG.workers)) })));
const rampStarted = Math.min(...ramps.map((r) => r.startedAt));
const lastConnected = Math.max(...ramps.map((r) => r.lastConnectedAt));
const lastReady = Math.max(...ramps.map((r) => r.lastReadyAt));
// Membership frames still arriving: wait until none for 2 s (at most 60 s).
let settled = await allCounters();
for (let i = 0, quiet = 0; i < 120 && quiet < 4; i++) {
  await sleep(500);
  const now = await allCounters();
  quiet = now.user_joined + now.user_left === settled.user_joined + settled.user_left ? quiet + 1 : 0;
  settled = now;
}
const c1 = settled;
const connected = sum(ramps.map((r) => r.connected));
if (connected === 0) throw new Error(`no client connected: ${JSON.stringify(c1.failures)}`);
const membership = c1.user_joined + c1.user_left - c0.user_joined - c0.user_left;
// Memory at the end of the ramp: the last scrape, and heap after a full GC.
await sleep(1200);
const memory = await Promise.all(
  nodes.map(async (n) => {
    const s = n.scrapes.filter((x) => !x.failed).at(-1);
    const gc = await memoryAfterGc(n);
    const conns = s.conns;
    return {
      node: n.k,
      connections: conns,
      rss_bytes: s.rss,
      heap_used_bytes: s.heap,
      rss_per_conn: round(s.rss / conns),
      heap_per_conn: round(s.heap / conns),
      rss_growth_per_conn: round((s.rss - n.idle.rss) / conns),
      heap_growth_per_conn: round((s.heap - n.idle.heap) / conns),
      heap_after_gc_growth_per_conn: gc ? round((gc.heapUsed - n.idle.heap) / conns) : null,
    };
  }),
);
const rampLine = {
  phase: 'ramp',
  connections: CONNECTIONS,
  nodes: NODES,
  channel_rooms: ROOMS,
  big_room_members: Math.round(CONNECTIONS * CFG.bigShare),
  connected,
  ramp_failures: c1.ramp_failures,
  ready: sum(ramps.map((r) => r.ready)),
  connect_s: round((lastConnected - rampStarted) / 1000, 1),
  handshakes_per_s: round(connected / ((lastConnected - rampStarted) / 1000)),
  all_joined_s: round((lastReady - rampStarted) / 1000, 1),
  membership_frames: membership,
  membership_frames_per_client: round(membership / CONNECTIONS, 1),
  user_joined: c1.user_joined - c0.user_joined,
  user_left: c1.user_left - c0.user_left,
  errors: diffTable(c0.errors, c1.errors),
  handshake_failures: diffTable(c0.failures, c1.failures),
  lag: nodes.map((n) => ({ node: n.k, ...lagOf(n, 'ramp') })),
  logs: logsOf('ramp'),
  memory,
  cpu: cpuBetween(cpuMarks.ramp, cpuNow()),
};
emit(rampLine);

// Fan-out.
enter('fanout');
say(`fan-out: ${RATE} events/s into ${CFG.bigRoom} for ${CFG.fanoutS} s`);
const c2 = await allCounters();
publisherDone = publishLoop(nodes[0]);
await sleep(CFG.fanoutS * 1000);
const c3 = await allCounters();
emit({
  phase: 'fanout',
  rate: RATE,
  seconds: CFG.fanoutS,
  ...publishOf('fanout'),
  deliveries_per_s: round((c3.ticks - c2.ticks) / CFG.fanoutS),
  membership_frames: c3.user_joined + c3.user_left - c2.user_joined - c2.user_left,
  lag: nodes.map((n) => ({ node: n.k, ...lagOf(n, 'fanout') })),
  logs: logsOf('fanout'),
  cpu: cpuBetween(cpuMarks.fanout, cpuNow()),
});

// Storm.
let storm;
if (CFG.kill >= 0) {
  const victim = nodes[CFG.kill];
  const victimConns = victim.scrapes.filter((x) => !x.failed).at(-1)?.conns;
  const killAt = nowMs();
  await Promise.all(workers.map((w) => w.call('nodeDown', { node: CFG.kill, at: killAt })));
  victim.killed = true;
  process.kill(victim.pid, 'SIGKILL');
  enter('storm');
  say(`storm: kill -9 node ${CFG.kill} (pid ${victim.pid}, ${victimConns} connections)`);
  const c4 = await allCounters();
  let status = { dropped: 0, back: 0, expected: 1 };
  while (nowMs() - killAt < CFG.stormTimeoutS * 1000) {
    await sleep(250);
    const list = await Promise.all(workers.map((w) => w.call('status')));
    status = { dropped: sum(list.map((s) => s.dropped)), back: sum(list.map((s) => s.back)), expected: sum(list.map((s) => s.expected)) };
    if (status.back >= status.expected) break;
  }
  const stormEnd = nowMs();
  const c5 = await allCounters();
  storm = {
    phase: 'storm',
    killed_node: CFG.kill,
    killed_connections: victimConns,
    expected_back: status.expected,
    clients_dropped: status.dropped,
    clients_back: status.back,
    storm_s: round((stormEnd - killAt) / 1000, 1),
    membership_frames: c5.user_joined + c5.user_left - c4.user_joined - c4.user_left,
    user_left: c5.user_left - c4.user_left,
    errors: diffTable(c4.errors, c5.errors),
    handshake_failures: diffTable(c4.failures, c5.failures),
    unexpected_closes: c5.unexpected_closes - c4.unexpected_closes,
    cpu: cpuBetween(cpuMarks.storm, cpuNow()),
  };
  enter('after');
} else enter('after');

// After: more publishing, then the check by offset.
await sleep(CFG.afterS * 1000);
publishing = false;
await publisherDone;
say(`publisher stopped at offset ${lastOffset}; checking every client's offsets`);
const finals = await Promise.all(workers.map((w) => w.call('final', { offset: lastOffset, epoch: lastEpoch, waitMs: 15_000 })));
scraping = false;
const cEnd = await allCounters();
const lost = flat(finals.map((f) => f.lost));
const dup = flat(finals.map((f) => f.dup));
const skipped = flat(finals.map((f) => f.skipped));
if (storm !== undefined) {
  const backMs = Float64Array.from(flat(finals.map((f) => f.back_ms))).sort();
  // Time until a share of the killed node's clients (those connected at the kill) were back.
  const until = (q) => {
    const needed = Math.ceil(q * storm.expected_back);
    return needed <= backMs.length ? round(backMs[needed - 1] / 1000, 1) : null;
  };
  const reconnectResumeMs = flat(finals.map((f) => f.reconnect_resume_ms));
  const handshakeMs = flat(finals.map((f) => f.handshake_ms));
  const resumeMs = flat(finals.map((f) => f.resume_ms));
  const missed = flat(finals.map((f) => f.missed_at_resume));
  const attempts = flat(finals.map((f) => f.attempts));
  storm = {
    ...storm,
    back_50pct_s: until(0.5),
    back_99pct_s: until(0.99),
    back_100pct_s: until(1),
    reconnect_resume_ms_p50: round(pct(reconnectResumeMs, 50)),
    reconnect_resume_ms_p99: round(pct(reconnectResumeMs, 99)),
    handshake_ms_p50: round(pct(handshakeMs, 50)),
    handshake_ms_p99: round(pct(handshakeMs, 99)),
    resume_ms_p50: round(pct(resumeMs, 50)),
    resume_ms_p99: round(pct(resumeMs, 99)),
    resume_ms_max: round(resumeMs.length ? Math.max(...resumeMs) : null),
    attempts_mean: round(attempts.length ? sum(attempts) / attempts.length : null, 2),
    attempts_max: attempts.length ? Math.max(...attempts) : null,
    recovered_true: sum(finals.map((f) => f.recovered_true)),
    recovered_false: sum(finals.map((f) => f.recovered_false)),
    missed_at_resume_p50: round(pct(missed, 50)),
    missed_at_resume_p99: round(pct(missed, 99)),
    missed_at_resume_max: missed.length ? Math.max(...missed) : null,
    ...publishOf('storm'),
    lag: nodes.map((n) => ({ node: n.k, ...lagOf(n, 'storm') })),
    logs: logsOf('storm'),
  };
  emit(storm);
}
// Each node's counters from its last scrape (the killed node's: its last before the kill); zeros left out.
const nodeCounters = Object.fromEntries(nodes.map((n) => [`node${n.k}`, Object.fromEntries(Object.entries(n.counters ?? {}).filter(([, v]) => v !== 0))]));
const logTotals = {};
for (const n of nodes) for (const p of PHASES) for (const [name] of WATCHED) logTotals[name] = (logTotals[name] ?? 0) + n.logs[p][name];
const summary = {
  phase: 'summary',
  connections: CONNECTIONS,
  nodes: NODES,
  channel_rooms: ROOMS,
  rate: RATE,
  final_offset: lastOffset,
  publishes: publishes.length,
  publish_failures: publishes.filter((p) => p.status !== 200).length,
  publish_skipped_in_flight_cap: publishSkipped,
  publish_failure_samples: publishFailures,
  ...Object.fromEntries(Object.entries(publishOf('after')).map(([k, v]) => [`after_${k}`, v])),
  big_room_clients: sum(finals.map((f) => f.in_big)),
  not_connected_at_end: sum(finals.map((f) => f.not_connected)),
  not_ready_at_end: sum(finals.map((f) => f.not_ready)),
  events_lost: sum(lost),
  clients_with_loss: lost.filter((v) => v > 0).length,
  lost_per_client_max: lost.length ? Math.max(...lost) : 0,
  missing_tail: sum(finals.map((f) => f.tail)),
  events_duplicated: sum(dup),
  clients_with_duplicates: dup.filter((v) => v > 0).length,
  dup_per_client_max: dup.length ? Math.max(...dup) : 0,
  events_skipped_after_recovered_false: sum(skipped),
  room_resets: cEnd.room_resets,
  epoch_changes: cEnd.epoch_changes,
  early_ticks: cEnd.early_ticks,
  unexpected_closes: cEnd.unexpected_closes,
  error_replies: cEnd.errors,
  other_messages: cEnd.other,
  logs_total: logTotals,
  log_excerpts: Object.fromEntries(nodes.flatMap((n) => Object.entries(n.excerpts).map(([key, kept]) => [`node${n.k} ${key}`, kept]))),
  node_counters: nodeCounters,
  log_dir: CFG.logDir,
  settings: { ...CFG, logDir: undefined, overrides: Object.fromEntries(Object.entries(process.env).filter(([name]) => /^(WS|REDIS)_/.test(name))) },
  dist: DIST,
  commit: commitOf(dirname(DIST)),
  machine: machine(),
  cpu_after: cpuBetween(cpuMarks.after, cpuNow()),
  total_s: round((nowMs() - T0) / 1000),
};
emit(summary);

// Table.
const fmt = (v) => (v === null || v === undefined ? '-' : typeof v === 'number' ? v.toLocaleString('en-US') : String(v));
const lagCell = (line) => line.lag.map((l) => fmt(l.lag_p99_max_s)).join(' / ');
const logCell = (line) => ['command_timed_out', 'subscribe_failed', 'registry_refresh_failed'].map((name) => fmt(sum(line.logs.map((l) => l[name])))).join(' / ');
console.log(`\nMass reconnect: ${CONNECTIONS.toLocaleString('en-US')} connections, ${NODES} nodes, ${ROOMS} channel rooms, ${RATE} events/s, kill -9 of node ${CFG.kill} (${summary.total_s} s; commit ${summary.commit}; ${os.cpus().length} CPUs, Node ${process.version})`);
console.log('| figure | value |');
console.log('|---|---|');
const rows = [
  ['ramp: handshakes/s', fmt(rampLine.handshakes_per_s)],
  ['ramp: all connected / all joined (s)', `${fmt(rampLine.connect_s)} / ${fmt(rampLine.all_joined_s)}`],
  ['ramp: membership frames (total, per client)', `${fmt(rampLine.membership_frames)} (${fmt(rampLine.membership_frames_per_client)})`],
  ['ramp: event-loop lag p99, worst second, per node (s)', lagCell(rampLine)],
  ['ramp: log timed out / subscribe failed / registry refresh failed', logCell(rampLine)],
  ['memory per connection, RSS / heap (growth over idle), per node (B)', memory.map((m) => `${fmt(m.rss_growth_per_conn)} / ${fmt(m.heap_growth_per_conn)}`).join(', ')],
  ['memory per connection, RSS / heap (totals), per node (B)', memory.map((m) => `${fmt(m.rss_per_conn)} / ${fmt(m.heap_per_conn)}`).join(', ')],
  ['memory per connection, heap after a full GC (growth over idle), per node (B)', memory.map((m) => fmt(m.heap_after_gc_growth_per_conn)).join(', ')],
  ['fan-out: publish API p50 / p99 / max (ms)', publishCell(lines.find((l) => l.phase === 'fanout'))],
  ['fan-out: event-loop lag p99, worst second, per node (s)', lagCell(lines.find((l) => l.phase === 'fanout'))],
];
if (storm !== undefined) {
  rows.push(
    ['storm: killed connections / back', `${fmt(storm.killed_connections)} / ${fmt(storm.clients_back)}`],
    ['storm: 50% / 99% / 100% back and resumed (s after the kill)', `${fmt(storm.back_50pct_s)} / ${fmt(storm.back_99pct_s)} / ${fmt(storm.back_100pct_s)}`],
    ['storm: reconnect+resume p50 / p99 (ms): handshake, resume', `${fmt(storm.reconnect_resume_ms_p50)} / ${fmt(storm.reconnect_resume_ms_p99)}: ${fmt(storm.handshake_ms_p50)} / ${fmt(storm.handshake_ms_p99)}, ${fmt(storm.resume_ms_p50)} / ${fmt(storm.resume_ms_p99)}`],
    ['storm: recovered true / false; missed at resume p99 / max', `${fmt(storm.recovered_true)} / ${fmt(storm.recovered_false)}; ${fmt(storm.missed_at_resume_p99)} / ${fmt(storm.missed_at_resume_max)}`],
    ['storm: publish API p50 / p99 / max (ms)', publishCell(storm)],
    ['storm: event-loop lag p99, worst second, per node (s)', lagCell(storm)],
    ['storm: log timed out / subscribe failed / registry refresh failed', logCell(storm)],
    ['storm: membership frames', fmt(storm.membership_frames)],
  );
}
rows.push(
  ['big room: events lost / duplicated (clients affected)', `${fmt(summary.events_lost)} (${fmt(summary.clients_with_loss)}) / ${fmt(summary.events_duplicated)} (${fmt(summary.clients_with_duplicates)})`],
  ['big room: events skipped after recovered: false', fmt(summary.events_skipped_after_recovered_false)],
  ['logs, whole run: timed out / subscribe failed / registry refresh failed', `${fmt(logTotals.command_timed_out)} / ${fmt(logTotals.subscribe_failed)} / ${fmt(logTotals.registry_refresh_failed)}`],
);
rows.push(['machine: other processes, cores busy in ramp / fan-out / storm (of ' + os.cpus().length + ')', lines.filter((l) => l.cpu).map((l) => fmt(l.cpu.foreign_cores)).join(' / ')]);
for (const [k, v] of rows) console.log(`| ${k} | ${v} |`);

await Promise.all(workers.map((w) => w.call('stop').catch(() => undefined)));
process.exit(0);
