#!/usr/bin/env node
/**
 * Lifecycle events and webhooks (issue 23, "5,000 disconnects in 10 s: webhook requests made, lag
 * p50/p99"). Three nodes started in this process from dist/ on one redis-server (spawned on a free
 * port), events on (WS_WEBHOOK_URL, WS_EVENTS_GRACE=1) and delivered to a receiver; the receiver and
 * the `ws` clients run in a worker thread of this process (the outside world), so this process's
 * main thread runs the nodes and nothing else, and its CPU time is the nodes' CPU time.
 *
 *   paced    5,000 users connect across the 3 nodes (one connection each, 100 in flight); once the
 *            5,000 user.online have arrived, they close at an even pace over 10 s; once the 5,000
 *            user.offline have arrived: webhook requests made, events per request, lag from each
 *            close to its user.offline's arrival (p50/p99/max, and minus the grace window) and
 *            from its append (the event's `time`, Redis's clock) to its arrival.
 *   cost     the same 5,000 connects then 5,000 closes, closed loop (200 in flight), on three more
 *            nodes that are identical but for events off, and on the events-on nodes; the order
 *            alternates between repetitions. Throughput (connects/s, closes/s) and CPU seconds of
 *            the nodes (main thread), Redis and the whole process, from the first connect until
 *            settled (off: every node has 0 connections; on: every user.offline has arrived, so
 *            the sweep and the delivery are counted). Ratios on/off per repetition, then medians.
 *
 * One JSON line per scenario to stdout, then a table; progress to stderr. Run `npm run build` first:
 *   node bench/webhooks.mjs [users=5000] [seconds=10] [repetitions=3]
 * BENCH_DIST=/other/tree/dist measures another build. The whole run is bounded (10 minutes, each
 * wait 60 s); redis-server is killed (by pid) however this exits.
 */
import { execFileSync } from 'node:child_process';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import os from 'node:os';
import { dirname, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { startRedisServer } from './lib.mjs';

const SECRET = 'bench-secret-that-is-long-enough-for-hs256-0123456789';
const WEBHOOK_SECRET = 'bench-webhook-secret-that-is-long-enough-0123456789';
const GRACE_S = 1;
const WAIT_MS = 60_000;

if (isMainThread) await main();
else await outside();

// ---------------------------------------------------------------------------------------------
// The worker: webhook receiver and WebSocket clients, driven by the main thread's calls.
async function outside() {
  const { default: WebSocket } = await import('ws');
  const { signToken } = await import(pathToFileURL(resolve(workerData.dist, 'auth.js')).href);

  // Receiver: checks the signature as the README says, records every request and event.
  const requests = []; // { at, events }
  const events = new Map(); // type -> Map(user_id -> { at, time, last_seen, id })
  let duplicates = 0;
  let rejected = 0;
  const seen = new Set();
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const at = Date.now();
      const body = Buffer.concat(chunks);
      const timestamp = String(req.headers['x-wsedge-timestamp'] ?? '');
      const expected = Buffer.from(`v1=${createHmac('sha256', WEBHOOK_SECRET).update(`${timestamp}.`).update(body).digest('hex')}`);
      const given = Buffer.from(String(req.headers['x-wsedge-signature'] ?? ''));
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
        rejected += 1;
        return res.writeHead(401).end();
      }
      const batch = JSON.parse(body).events;
      requests.push({ at, events: batch.length });
      for (const e of batch) {
        if (seen.has(e.id)) duplicates += 1;
        seen.add(e.id);
        let byUser = events.get(e.type);
        if (byUser === undefined) events.set(e.type, (byUser = new Map()));
        if (byUser.has(e.user_id)) duplicates += 1;
        else byUser.set(e.user_id, { at, time: e.time, last_seen: e.last_seen });
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      checkWaiters();
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));

  let waiters = [];
  const checkWaiters = () => {
    waiters = waiters.filter((w) => !w());
  };
  const arrived = (type) => events.get(type)?.size ?? 0;

  const phases = new Map(); // phase -> { tokens, clients: [{ ws, user, connectedAt, closeAt }] }
  const connectOne = (url, token, user) =>
    new Promise((resolveOpen, reject) => {
      const ws = new WebSocket(url, ['wsedge.v1', 'wsedge.bearer.' + token]);
      const timer = setTimeout(() => reject(new Error(`${user}: not connected after ${WAIT_MS} ms`)), WAIT_MS);
      ws.on('error', reject);
      ws.once('close', (code) => reject(new Error(`${user}: closed with ${code} before connected`)));
      ws.on('message', (data) => {
        if (JSON.parse(String(data)).type !== 'connected') return;
        clearTimeout(timer);
        ws.removeAllListeners('close');
        resolveOpen({ ws, user, connectedAt: Date.now(), closeAt: 0 });
      });
    });
  const closeOne = (client) =>
    new Promise((r) => {
      client.ws.once('close', r);
      client.closeAt = Date.now();
      client.ws.close();
    });
  /** Runs `task(i)` for i < n, `inFlight` at a time. */
  const lanes = async (n, inFlight, task) => {
    let next = 0;
    await Promise.all(Array.from({ length: Math.min(n, inFlight) }, async () => {
      while (next < n) await task(next++);
    }));
  };

  const commands = {
    tokens({ phase, users }) {
      const tokens = Array.from({ length: users }, (_, i) => signToken({ secret: SECRET, userId: `${phase}-${i}`, rooms: [], ttlSeconds: 3600 }));
      phases.set(phase, { tokens, clients: new Array(users) });
    },
    reset() {
      requests.length = 0;
      events.clear();
      seen.clear();
      duplicates = 0;
      rejected = 0;
    },
    async connect({ phase, urls, inFlight }) {
      const p = phases.get(phase);
      const t0 = Date.now();
      await lanes(p.tokens.length, inFlight, async (i) => {
        p.clients[i] = await connectOne(urls[i % urls.length], p.tokens[i], `${phase}-${i}`);
      });
      return { seconds: (Date.now() - t0) / 1000 };
    },
    async closeAll({ phase, inFlight }) {
      const p = phases.get(phase);
      const t0 = Date.now();
      await lanes(p.clients.length, inFlight, (i) => closeOne(p.clients[i]));
      return { seconds: (Date.now() - t0) / 1000 };
    },
    /** Closes client i at t0 + i * seconds / n; how late the pacer was at worst. */
    async closePaced({ phase, seconds }) {
      const { clients } = phases.get(phase);
      const step = (seconds * 1000) / clients.length;
      const t0 = Date.now() + 50;
      const closed = [];
      let late = 0;
      for (let i = 0; i < clients.length; ) {
        const wait = t0 + i * step - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        const now = Date.now();
        for (; i < clients.length && t0 + i * step <= now; i++) {
          late = Math.max(late, now - (t0 + i * step));
          closed.push(closeOne(clients[i]));
        }
      }
      const lastClose = clients[clients.length - 1].closeAt;
      await Promise.all(closed);
      return { seconds: (lastClose - clients[0].closeAt) / 1000, late_ms_max: late };
    },
    waitFor({ type, count }) {
      return new Promise((resolveWait, reject) => {
        const timer = setTimeout(() => reject(new Error(`${arrived(type)} of ${count} ${type} arrived after ${WAIT_MS} ms`)), WAIT_MS);
        const check = () => {
          if (arrived(type) < count) return false;
          clearTimeout(timer);
          resolveWait({ at: Date.now() });
          return true;
        };
        if (!check()) waiters.push(check);
      });
    },
    /** The phase's figures: requests since `since` (ms), and lags per user. */
    stats({ phase, since }) {
      const { clients } = phases.get(phase);
      const made = requests.filter((r) => r.at >= since);
      const eventsIn = made.reduce((a, r) => a + r.events, 0);
      const dist = (values) => {
        const s = values.sort((a, b) => a - b);
        const pct = (p) => s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
        return { p50: pct(50), p99: pct(99), max: s[s.length - 1], n: s.length };
      };
      const online = events.get('user.online') ?? new Map();
      const offline = events.get('user.offline') ?? new Map();
      const lag = (map, from, to) => dist(clients.flatMap((c) => (map.has(c.user) ? [to(map.get(c.user)) - from(c)] : [])));
      return {
        requests: made.length,
        events_in_requests: eventsIn,
        events_per_request: eventsIn / Math.max(1, made.length),
        largest_request: Math.max(0, ...made.map((r) => r.events)),
        online: online.size,
        offline: offline.size,
        duplicates,
        rejected,
        online_connected_to_arrival_ms: lag(online, (c) => c.connectedAt, (e) => e.at),
        offline_close_to_arrival_ms: lag(offline, (c) => c.closeAt, (e) => e.at),
        offline_close_to_append_ms: lag(offline, (c) => c.closeAt, (e) => e.time),
        offline_append_to_arrival_ms: dist([...offline.values()].map((e) => e.at - e.time)),
        online_append_to_arrival_ms: dist([...online.values()].map((e) => e.at - e.time)),
      };
    },
  };

  parentPort.on('message', async ({ id, cmd, args }) => {
    try {
      parentPort.postMessage({ id, result: await commands[cmd](args) });
    } catch (err) {
      parentPort.postMessage({ id, error: err.stack ?? String(err) });
    }
  });
  parentPort.postMessage({ ready: true, port: server.address().port });
}

// ---------------------------------------------------------------------------------------------
async function main() {
  const USERS = Number(process.argv[2] ?? process.env.BENCH_USERS ?? 5000);
  const SECONDS = Number(process.argv[3] ?? process.env.BENCH_SECONDS ?? 10);
  const REPS = Number(process.argv[4] ?? process.env.BENCH_REPS ?? 3);
  const IN_FLIGHT = 200;
  const here = dirname(fileURLToPath(import.meta.url));
  const DIST = resolve(process.env.BENCH_DIST ?? resolve(here, '../dist'));
  const load = (module) => import(pathToFileURL(resolve(DIST, module)).href);
  const { loadConfig } = await load('config.js');
  const { createLogger } = await load('log.js');
  const { startNode } = await load('server.js');
  const deadline = setTimeout(() => {
    console.error('webhooks bench: over 10 minutes, giving up');
    process.exit(1);
  }, 600_000);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // redis-server on a free port (bench/lib.mjs), bounded by `timeout` and killed (by pid) however this exits.
  const spawned = new Set();
  process.on('exit', () => {
    for (const pid of spawned) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
  });
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));
  const { port: redisPort, pid: redisPid } = await startRedisServer(900, (child) => spawned.add(child.pid));
  spawned.add(redisPid);

  // The outside world in a worker thread; calls answered by id.
  const worker = new Worker(fileURLToPath(import.meta.url), { workerData: { dist: DIST } });
  worker.on('error', (err) => {
    console.error(err);
    process.exit(1);
  });
  const calls = new Map();
  let callSeq = 0;
  const receiverPort = await new Promise((resolveReady) =>
    worker.on('message', (m) => {
      if (m.ready) return resolveReady(m.port);
      const call = calls.get(m.id);
      calls.delete(m.id);
      if (m.error !== undefined) call.reject(new Error(m.error));
      else call.resolve(m.result);
    }),
  );
  const call = (cmd, args = {}) => new Promise((resolveCall, reject) => {
    const id = ++callSeq;
    calls.set(id, { resolve: resolveCall, reject });
    worker.postMessage({ id, cmd, args });
  });

  // Six nodes in this thread, silent: three with events and the webhook, three without.
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
      WS_MEMBERSHIP_EVENTS: 'false',
      REDIS_URL: `redis://127.0.0.1:${redisPort}`,
      ...extra,
    });
    const started = await startNode(config, createLogger(config.logLevel, { node_id: config.nodeId }, silent));
    for (let i = 0; !started.broker.isUp(); i++) {
      if (i > 100) throw new Error(`${name}: broker not up after 10 s`);
      await sleep(100);
    }
    return { node: started, url: `ws://127.0.0.1:${started.port}/api/v1/ws/connect` };
  }
  const eventsOn = { REDIS_PREFIX: 'bench-on:', WS_WEBHOOK_URL: `http://127.0.0.1:${receiverPort}/events`, WS_WEBHOOK_SECRET: WEBHOOK_SECRET, WS_EVENTS_GRACE: String(GRACE_S) };
  const sets = {
    on: await Promise.all(['on-a', 'on-b', 'on-c'].map((n) => node(n, eventsOn))),
    off: await Promise.all(['off-a', 'off-b', 'off-c'].map((n) => node(n, { REDIS_PREFIX: 'bench-off:' }))),
  };
  const urls = (set) => sets[set].map((n) => n.url);

  // CPU seconds from /proc (clock ticks of 10 ms): this thread (the nodes), the process, redis, the machine.
  const ticks = (path) => {
    const fields = readFileSync(path, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  };
  const machineBusy = () => {
    const [, user, nice, system, , , irq, softirq, steal] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).map(Number);
    return (user + nice + system + irq + softirq + steal) / 100;
  };
  const snapshot = () => ({
    wall: Date.now() / 1000,
    nodes: ticks(`/proc/${process.pid}/task/${process.pid}/stat`),
    process: ticks(`/proc/${process.pid}/stat`),
    redis: ticks(`/proc/${redisPid}/stat`),
    machine: machineBusy(),
  });
  const used = (a, b) => {
    const d = Object.fromEntries(Object.keys(a).map((k) => [k, b[k] - a[k]]));
    return { wall_s: d.wall, nodes_cpu_s: d.nodes, process_cpu_s: d.process, redis_cpu_s: d.redis, foreign_cores: Math.max(0, d.machine - d.process - d.redis) / d.wall };
  };
  const settledOff = async () => {
    for (let i = 0; sets.off.some((n) => n.node.connections() > 0); i++) {
      if (i > WAIT_MS / 10) throw new Error('events-off nodes still hold connections');
      await sleep(10);
    }
  };

  /** One connect-all then close-all on one set; settled as the header says. */
  let phaseSeq = 0;
  async function cycle(set, users) {
    const phase = `${set}${++phaseSeq}`;
    await call('tokens', { phase, users });
    await call('reset');
    const s0 = snapshot();
    const connect = await call('connect', { phase, urls: urls(set), inFlight: IN_FLIGHT });
    const close = await call('closeAll', { phase, inFlight: IN_FLIGHT });
    const s1 = snapshot();
    if (set === 'on') await call('waitFor', { type: 'user.offline', count: users });
    else await settledOff();
    const s2 = snapshot();
    const stats = set === 'on' ? await call('stats', { phase, since: 0 }) : undefined;
    if (stats !== undefined && (stats.online !== users || stats.duplicates > 0 || stats.rejected > 0)) throw new Error(`${phase}: ${JSON.stringify(stats)}`);
    return { connects_per_s: users / connect.seconds, closes_per_s: users / close.seconds, window: used(s0, s1), settled: used(s0, s2) };
  }

  console.error(`webhooks bench: ${USERS} users, closes over ${SECONDS} s, grace ${GRACE_S} s, ${REPS} cost repetitions, dist ${DIST}`);
  const startedAt = Date.now();
  for (const set of ['off', 'on']) await cycle(set, Math.min(1000, USERS)); // warm-up
  // Both sets are up in every window: what the six nodes and Redis use with no client (the events-on
  // nodes' sweep every 250 ms and their deliverer's poll every 100 ms) is in every figure below.
  const i0 = snapshot();
  await sleep(3000);
  const idle = used(i0, snapshot());

  // Paced: connect, wait for every user.online, close over SECONDS, wait for every user.offline.
  const phase = `paced${++phaseSeq}`;
  await call('tokens', { phase, users: USERS });
  await call('reset');
  const connectFrom = Date.now();
  const connect = await call('connect', { phase, urls: urls('on'), inFlight: 100 });
  await call('waitFor', { type: 'user.online', count: USERS });
  const onlineStats = await call('stats', { phase, since: connectFrom });
  await sleep(500); // the receiver's last online request is answered before the close phase counts
  const closeFrom = Date.now();
  const s0 = snapshot();
  const closing = await call('closePaced', { phase, seconds: SECONDS });
  await call('waitFor', { type: 'user.offline', count: USERS });
  const s1 = snapshot();
  const paced = await call('stats', { phase, since: closeFrom });
  const offCpu = used(s0, s1);
  console.error(
    `paced: ${paced.requests} requests for ${paced.events_in_requests} events (${paced.events_per_request.toFixed(1)} per request); ` +
      `close -> arrival p50 ${paced.offline_close_to_arrival_ms.p50} ms, p99 ${paced.offline_close_to_arrival_ms.p99} ms, max ${paced.offline_close_to_arrival_ms.max} ms; ` +
      `append -> arrival p50 ${paced.offline_append_to_arrival_ms.p50} ms, p99 ${paced.offline_append_to_arrival_ms.p99} ms; foreign ${offCpu.foreign_cores.toFixed(2)} cores`,
  );
  if (paced.offline !== USERS || paced.duplicates > 0 || paced.rejected > 0) throw new Error(`paced: ${JSON.stringify(paced)}`);

  // Cost: off and on alternately.
  const costs = { on: [], off: [] };
  for (let rep = 0; rep < REPS; rep++) {
    for (const set of rep % 2 === 0 ? ['off', 'on'] : ['on', 'off']) {
      const r = await cycle(set, USERS);
      costs[set].push(r);
      console.error(
        `rep ${rep + 1} events ${set}: ${Math.round(r.connects_per_s)} connects/s, ${Math.round(r.closes_per_s)} closes/s, ` +
          `nodes ${r.settled.nodes_cpu_s.toFixed(2)} CPU s, redis ${r.settled.redis_cpu_s.toFixed(2)} CPU s, foreign ${r.settled.foreign_cores.toFixed(2)} cores`,
      );
    }
  }

  const round = (v, d = 2) => Number(v.toFixed(d));
  const median = (values) => {
    const s = [...values].sort((a, b) => a - b);
    const mid = Math.floor(s.length / 2);
    return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  };
  const get = (r, path) => path.split('.').reduce((o, k) => o[k], r);
  const ratio = (path) => round(median(costs.on.map((r, i) => get(r, path) / get(costs.off[i], path))));
  const med = (set, path, d = 2) => round(median(costs[set].map((r) => get(r, path))), d);
  const range = (set, path, d = 2) => [round(Math.min(...costs[set].map((r) => get(r, path))), d), round(Math.max(...costs[set].map((r) => get(r, path))), d)];
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['-C', dirname(DIST), 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    // not a git tree
  }
  const machine = { cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model, node: process.version, loadavg_1m_at_end: round(os.loadavg()[0]) };
  const lines = [
    {
      bench: 'webhooks',
      scenario: 'paced-close',
      users: USERS,
      close_seconds: round(closing.seconds),
      pacer_late_ms_max: closing.late_ms_max,
      grace_s: GRACE_S,
      webhook_batch: 100,
      connect_seconds: round(connect.seconds),
      online_requests: onlineStats.requests,
      online_events_per_request: round(onlineStats.events_per_request, 1),
      online_connected_to_arrival_ms: onlineStats.online_connected_to_arrival_ms,
      requests: paced.requests,
      events_in_requests: paced.events_in_requests,
      events_per_request: round(paced.events_per_request, 1),
      largest_request: paced.largest_request,
      offline: paced.offline,
      duplicates: paced.duplicates,
      close_to_arrival_ms: paced.offline_close_to_arrival_ms,
      close_to_arrival_minus_grace_ms: Object.fromEntries(['p50', 'p99', 'max'].map((k) => [k, paced.offline_close_to_arrival_ms[k] - GRACE_S * 1000])),
      close_to_append_ms: paced.offline_close_to_append_ms,
      append_to_arrival_ms: paced.offline_append_to_arrival_ms,
      nodes_cpu_s: round(offCpu.nodes_cpu_s),
      redis_cpu_s: round(offCpu.redis_cpu_s),
      foreign_cores: round(offCpu.foreign_cores),
      commit,
      machine,
    },
    {
      bench: 'webhooks',
      scenario: 'cost',
      users: USERS,
      in_flight: IN_FLIGHT,
      reps: REPS,
      idle_nodes_cores: round(idle.nodes_cpu_s / idle.wall_s, 3),
      idle_redis_cores: round(idle.redis_cpu_s / idle.wall_s, 3),
      off: { connects_per_s: med('off', 'connects_per_s', 0), connects_per_s_range: range('off', 'connects_per_s', 0), closes_per_s: med('off', 'closes_per_s', 0), closes_per_s_range: range('off', 'closes_per_s', 0), nodes_cpu_s: med('off', 'settled.nodes_cpu_s'), nodes_cpu_s_range: range('off', 'settled.nodes_cpu_s'), redis_cpu_s: med('off', 'settled.redis_cpu_s'), process_cpu_s: med('off', 'settled.process_cpu_s'), foreign_cores_max: round(Math.max(...costs.off.map((r) => r.settled.foreign_cores))) },
      on: { connects_per_s: med('on', 'connects_per_s', 0), connects_per_s_range: range('on', 'connects_per_s', 0), closes_per_s: med('on', 'closes_per_s', 0), closes_per_s_range: range('on', 'closes_per_s', 0), nodes_cpu_s: med('on', 'settled.nodes_cpu_s'), nodes_cpu_s_range: range('on', 'settled.nodes_cpu_s'), redis_cpu_s: med('on', 'settled.redis_cpu_s'), process_cpu_s: med('on', 'settled.process_cpu_s'), foreign_cores_max: round(Math.max(...costs.on.map((r) => r.settled.foreign_cores))) },
      // Same repetition, medians of the per-repetition ratios.
      on_over_off: {
        connects_per_s: ratio('connects_per_s'),
        closes_per_s: ratio('closes_per_s'),
        nodes_cpu_s: ratio('settled.nodes_cpu_s'),
        nodes_cpu_s_connect_close_window: ratio('window.nodes_cpu_s'),
        redis_cpu_s: ratio('settled.redis_cpu_s'),
        process_cpu_s: ratio('settled.process_cpu_s'),
      },
      commit,
      machine,
    },
  ];
  for (const line of lines) console.log(JSON.stringify(line));

  const [p, c] = lines;
  const d = (x) => `${x.p50} / ${x.p99} / ${x.max}`;
  console.log(`\nLifecycle events and webhooks, ${USERS} users, 3 nodes, grace ${GRACE_S} s (${((Date.now() - startedAt) / 1000).toFixed(0)} s), commit ${commit}`);
  console.log('| paced close | value |');
  console.log('|---|---|');
  console.log(`| closes | ${USERS} over ${p.close_seconds} s |`);
  console.log(`| webhook requests (user.offline) | ${p.requests} (${p.events_per_request} events per request, largest ${p.largest_request}) |`);
  console.log(`| webhook requests (user.online, ${p.connect_seconds} s of connects) | ${p.online_requests} (${p.online_events_per_request} per request) |`);
  console.log(`| close -> arrival ms p50 / p99 / max | ${d(p.close_to_arrival_ms)} |`);
  console.log(`| the same minus the grace window | ${d(p.close_to_arrival_minus_grace_ms)} |`);
  console.log(`| close -> append ms p50 / p99 / max | ${d(p.close_to_append_ms)} |`);
  console.log(`| append -> arrival ms p50 / p99 / max | ${d(p.append_to_arrival_ms)} |`);
  console.log(`| nodes / redis CPU s, closes until the last arrival | ${p.nodes_cpu_s} / ${p.redis_cpu_s} |`);
  console.log(`\n| cost (medians of ${REPS}) | events off | events on | on/off |`);
  console.log('|---|---|---|---|');
  console.log(`| connects/s | ${c.off.connects_per_s} | ${c.on.connects_per_s} | ${c.on_over_off.connects_per_s} |`);
  console.log(`| closes/s | ${c.off.closes_per_s} | ${c.on.closes_per_s} | ${c.on_over_off.closes_per_s} |`);
  console.log(`| nodes CPU s until settled | ${c.off.nodes_cpu_s} | ${c.on.nodes_cpu_s} | ${c.on_over_off.nodes_cpu_s} |`);
  console.log(`| nodes CPU s, connects and closes only | | | ${c.on_over_off.nodes_cpu_s_connect_close_window} |`);
  console.log(`| redis CPU s until settled | ${c.off.redis_cpu_s} | ${c.on.redis_cpu_s} | ${c.on_over_off.redis_cpu_s} |`);
  console.log(`\nIdle, all six nodes and no client: nodes ${c.idle_nodes_cores} cores, redis ${c.idle_redis_cores} cores.`);

  clearTimeout(deadline);
  await worker.terminate();
  await Promise.all([...sets.on, ...sets.off].map((n) => n.node.shutdown()));
  process.exit(0);
}
