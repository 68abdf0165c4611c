#!/usr/bin/env node
/**
 * Backend calls (issue 22): the publish proxy and RPC against the paths without them, in one run
 * (ratios: the machine is noisy). One `ws-edge serve` (dist/cli.js, a child process, no Redis) and
 * a real HTTP backend (a Node `http` server in a child process of this script: `node bench/proxy.mjs
 * --backend`) that answers the proxy with the client's data plus a `message_id`, and RPC with
 * `{"data":{"ok":true}}`, at once or after a delay set over IPC; it counts its calls in flight. The
 * clients are bench/loadgen.mjs's cheap WebSocket clients in this process.
 *
 *   sends       closed loop: BENCH_PROXY_ROOMS rooms of BENCH_PROXY_MEMBERS members, one sender per
 *               room keeping BENCH_PROXY_WINDOW sends in flight (send_message with id → message_sent
 *               or error). The same senders and members send to `project:<r>` (plain: unkeyed, and
 *               keyed as the client library sends) and to `channel:<r>` (WS_PUBLISH_PROXY_ROOMS,
 *               keyed) with the backend answering at once and after 20 ms. Sends/s, latency, node
 *               CPU per send. Then the same at a paced BENCH_PROXY_PACED_RATE sends/s: the latency.
 *   rpc         one call in flight: rpc → rpc_result over the socket against the same call made
 *               directly from this process to the same backend endpoint, with node:http on a
 *               keep-alive agent (the node's HTTP client, src/backend.ts) and with fetch (its
 *               client before: the comparison that moved it).
 *   slow        BENCH_SLOW_FLOOD_CLIENTS clients offer BENCH_SLOW_RATE (1,000) keyed sends/s through
 *               the proxy for BENCH_SLOW_SECONDS (10) to a fresh node; BENCH_SLOW_PING_CLIENTS other
 *               clients ping every 50 ms before and during the flood. Variants (BENCH_SLOW_VARIANTS,
 *               backend ms per call:WS_BACKEND_TIMEOUT): 20:2000 (the control: a backend that keeps
 *               up), 2000:2000 (issue 22's case at the default deadline), 2000:5000 (calls can finish).
 *               The backend counts its calls in flight two ways, open (the node's connection still
 *               waiting) and at work (its 2 s not yet over, the caller gone or not); the answers by
 *               code; the node's wsedge_backend_calls_total; the other clients' ping round trip; the
 *               node's event-loop delay (a monitor preloaded into the node).
 *
 * Repetitions (BENCH_REPS, 3) alternate the order of the modes; medians over repetitions, ratios
 * per repetition, then their median. One JSON line per scenario to stdout, then a table; progress
 * to stderr. Bounded: children exit with this process (IPC), which gives up after 15 minutes.
 * Run `npm run build` first:
 *   node bench/proxy.mjs [sends,rpc,slow]
 */
import { execFileSync, fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Agent, createServer, request as httpRequest } from 'node:http';
import os from 'node:os';
import { dirname, resolve } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const BACKEND_KEY = 'bench-backend-key-0123456789abcdef';

// ---------------------------------------------------------------------------------------------
// The backend (child process): POST /publish and POST /rpc, a delay per kind, calls in flight.
function backendMain() {
  const delay = { publish: 0, rpc: 0 };
  let inFlight = 0; // requests whose connection is open and unanswered (what the node holds)
  let maxInFlight = 0;
  let working = 0; // requests whose work has not finished (a handler that ignores a caller gone away)
  let maxWorking = 0;
  let calls = 0;
  let aborted = 0;
  let seq = 0;
  let samples = []; // calls in flight every 10 ms while sampling
  let sampler;
  const server = createServer((req, res) => {
    const kind = req.url.startsWith('/rpc') ? 'rpc' : 'publish';
    if (req.headers.authorization !== `Bearer ${BACKEND_KEY}`) return void res.writeHead(401).end();
    inFlight += 1;
    working += 1;
    calls += 1;
    if (inFlight > maxInFlight) maxInFlight = inFlight;
    if (working > maxWorking) maxWorking = working;
    // Open until its answer is written (the node may start its next call as soon as it reads it)
    // or its connection closes (the node gave up: aborted).
    let open = true;
    let read = false;
    const leave = () => {
      if (!open) return false;
      open = false;
      inFlight -= 1;
      return true;
    };
    res.once('close', () => {
      if (!leave()) return;
      aborted += 1;
      if (!read) working -= 1; // gone before its body arrived: no work started
    });
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      read = true;
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      const answer = () => {
        working -= 1;
        if (res.destroyed || res.writableEnded) return;
        const data = body.data !== null && typeof body.data === 'object' ? body.data : { text: body.data };
        const payload = kind === 'rpc' ? JSON.stringify({ data: { ok: true, method: body.method } }) : JSON.stringify({ allow: true, data: { ...data, message_id: ++seq } });
        leave();
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }).end(payload);
      };
      if (delay[kind] > 0) setTimeout(answer, delay[kind]);
      else answer();
    });
  });
  server.keepAliveTimeout = 60_000;
  server.headersTimeout = 65_000;
  server.listen(0, '127.0.0.1', () => process.send({ ready: true, port: server.address().port }));
  process.on('message', (msg) => {
    if (msg.delay) Object.assign(delay, msg.delay);
    if (msg.sample === true) {
      samples = [];
      clearInterval(sampler);
      sampler = setInterval(() => samples.push([inFlight, working]), 10);
    } else if (msg.sample === false) clearInterval(sampler);
    const stats = { calls, aborted, in_flight: inFlight, max_in_flight: maxInFlight, max_working: maxWorking, samples: msg.sample === false ? samples : undefined };
    if (msg.reset) {
      calls = 0;
      aborted = 0;
      maxInFlight = inFlight;
      maxWorking = working;
    }
    process.send({ seq: msg.seq, ...stats });
  });
  process.on('disconnect', () => process.exit(0));
  setTimeout(() => process.exit(3), 20 * 60_000).unref();
}

// ---------------------------------------------------------------------------------------------
async function benchMain() {
  const { cpuSecondsOf, median, sleep, startServer } = await import('./lib.mjs');
  const { createStats, joinRooms, openClient, textFrame } = await import('./loadgen.mjs');
  const DIST = resolve(process.env.BENCH_DIST ?? resolve(here, '../dist'));
  const { signToken } = await import(pathToFileURL(resolve(DIST, 'auth.js')).href);

  const SCENARIOS = (process.argv[2] ?? process.env.BENCH_SCENARIOS ?? 'sends,rpc,slow').split(',');
  const num = (name, fallback) => Number(process.env[name] ?? fallback);
  const REPS = num('BENCH_REPS', 3);
  const ROOMS = num('BENCH_PROXY_ROOMS', 50);
  const MEMBERS = num('BENCH_PROXY_MEMBERS', 10);
  const WINDOW = num('BENCH_PROXY_WINDOW', 8);
  const SECONDS = num('BENCH_DURATION', 5);
  const WARMUP_S = num('BENCH_WARMUP', 1);
  const PACED_RATE = num('BENCH_PROXY_PACED_RATE', 200);
  const SLOW_DELAY_MS = num('BENCH_PROXY_DELAY_MS', 20);
  const RPC_CALLS = num('BENCH_RPC_CALLS', 1000);
  const CONCURRENCY = num('BENCH_PROXY_CONCURRENCY', 64);
  // callMs:timeoutMs per variant: the backend's time per publish call, WS_BACKEND_TIMEOUT. The first
  // is the control: the same flood against a backend that keeps up.
  const SLOW_VARIANTS = (process.env.BENCH_SLOW_VARIANTS ?? '20:2000,2000:2000,2000:5000').split(',').map((v) => v.split(':').map(Number));
  const SLOW_REPS = num('BENCH_SLOW_REPS', REPS);
  const SLOW_RATE = num('BENCH_SLOW_RATE', 1000);
  const SLOW_SECONDS = num('BENCH_SLOW_SECONDS', 10);
  const FLOOD_CLIENTS = num('BENCH_SLOW_FLOOD_CLIENTS', 50);
  const PING_CLIENTS = num('BENCH_SLOW_PING_CLIENTS', 20);
  const SECRET = 'bench-secret-that-is-long-enough-for-hs256-0123456789';

  // Bounded: whatever happens, this process (and with it every child: IPC) ends.
  setTimeout(() => {
    console.error('proxy bench: gave up after 15 minutes');
    process.exit(2);
  }, 15 * 60_000).unref();
  const children = new Set();
  process.on('exit', () => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  });
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

  // The backend.
  const backend = fork(fileURLToPath(import.meta.url), ['--backend'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.add(backend);
  const backendPort = await new Promise((r, reject) => {
    backend.once('message', (m) => r(m.port));
    backend.once('exit', (code) => reject(new Error(`backend exited with ${code}`)));
  });
  let askSeq = 0;
  const askBackend = (msg) =>
    new Promise((r) => {
      const seq = ++askSeq;
      const onMessage = (m) => {
        if (m.seq !== seq) return;
        backend.off('message', onMessage);
        r(m);
      };
      backend.on('message', onMessage);
      backend.send({ ...msg, seq });
    });
  const backendUrl = `http://127.0.0.1:${backendPort}`;

  /**
   * A ws-edge node in a child process (exits with this one: bench/probe.mjs on the IPC channel),
   * with an event-loop delay monitor preloaded (a 5 ms timer; read over IPC around a window).
   */
  const PROBE = pathToFileURL(resolve(here, 'probe.mjs')).href;
  const LOOP_PROBE =
    'data:text/javascript,' +
    encodeURIComponent(`import { monitorEventLoopDelay } from 'node:perf_hooks';
const h = monitorEventLoopDelay({ resolution: 5 });
h.enable();
process.on('message', (m) => {
  if (m?.loop === 'reset') { h.reset(); process.send({ loop: 'reset' }); }
  else if (m?.loop === 'read') process.send({ loop: 'read', p50: h.percentile(50) / 1e6, p99: h.percentile(99) / 1e6, max: h.max / 1e6 });
});
process.channel?.unref();`);
  const NODE_ARGS = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
  async function startEdge(extra = {}) {
    const started = await startServer(
      [...NODE_ARGS, '--import', PROBE, '--import', LOOP_PROBE, resolve(DIST, 'cli.js'), 'serve'],
      {
        PORT: '0',
        INTERNAL_PORT: '0',
        HOST: '127.0.0.1',
        NODE_ENV: 'production',
        JWT_SECRET: SECRET,
        LOG_LEVEL: 'info',
        WS_RATE_LIMIT: '100000',
        WS_RATE_BURST: '100000',
        WS_MEMBERSHIP_EVENTS: 'false',
        WS_DRAIN_TIMEOUT: '1',
        WS_PUBLISH_PROXY_URL: `${backendUrl}/publish`,
        WS_PUBLISH_PROXY_ROOMS: 'channel:*',
        WS_RPC_URL: `${backendUrl}/rpc`,
        WS_BACKEND_KEY: BACKEND_KEY,
        WS_BACKEND_CONCURRENCY: String(CONCURRENCY),
        ...extra,
      },
      { ipc: true, onSpawn: (c) => children.add(c) },
    );
    return { ...started, pid: started.child.pid };
  }
  async function stopEdge(edge) {
    if (edge.child.exitCode !== null) return;
    const exited = new Promise((r) => edge.child.once('exit', r));
    // With BENCH_NODE_ARGS (say --cpu-prof) the node drains and exits by itself, writing its profile.
    edge.child.kill(NODE_ARGS.length > 0 ? 'SIGTERM' : 'SIGKILL');
    const timer = setTimeout(() => edge.child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
  /** The node's event-loop delay (ms) since the last reset: `reset` then `read`. */
  const nodeLoop = (edge, what) =>
    new Promise((r) => {
      const onMessage = (m) => {
        if (m?.loop !== what) return;
        edge.child.off('message', onMessage);
        r(m);
      };
      edge.child.on('message', onMessage);
      edge.child.send({ loop: what });
    });
  const benchLoop = monitorEventLoopDelay({ resolution: 5 });
  benchLoop.enable();
  const readBenchLoop = () => ({ p50: benchLoop.percentile(50) / 1e6, p99: benchLoop.percentile(99) / 1e6, max: benchLoop.max / 1e6 });
  async function backendMetrics(edge) {
    const text = await (await fetch(`http://127.0.0.1:${edge.internalPort}/metrics`)).text();
    const out = {};
    for (const m of text.matchAll(/^wsedge_backend_calls_total\{([^}]*)\} (\S+)$/gm)) {
      const labels = Object.fromEntries([...m[1].matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
      out[`${labels.kind}:${labels.outcome}`] = Number(m[2]);
    }
    return out;
  }

  // Clients: loadgen's, in this process. A requester sees every reply that carries an id.
  const stats = createStats();
  let userSeq = 0;
  const REPLY = /^\{"type":"(message_sent|error|pong|rpc_result)","id":"([^"]*)"/;
  async function openRequester(port) {
    const token = signToken({ secret: SECRET, userId: `b${++userSeq}`, rooms: ['*'], ttlSeconds: 3600 });
    const client = await openClient({ port, protocol: 'edge', token, stats });
    const pending = new Map(); // id -> { at, done }
    client.pending = pending;
    client.listen = () => {
      client.inspect = (text) => {
        const m = REPLY.exec(text);
        if (m === null) return;
        const waiter = pending.get(m[2]);
        if (waiter === undefined) return;
        pending.delete(m[2]);
        const code = m[1] === 'error' ? JSON.parse(text).data.code : m[1];
        waiter.done(code, performance.now() - waiter.at);
      };
    };
    // Writes of one turn leave in one segment.
    client.request = (frame, id, done) => {
      pending.set(id, { at: performance.now(), done });
      client.socket.cork();
      client.socket.write(textFrame(frame));
      process.nextTick(() => client.socket.uncork());
    };
    return client;
  }
  async function openMany(port, count) {
    const out = [];
    for (let i = 0; i < count; i += 64) out.push(...(await Promise.all(Array.from({ length: Math.min(64, count - i) }, () => openRequester(port)))));
    return out;
  }
  async function join(clients, roomsOf) {
    const result = await joinRooms({ clients, protocol: 'edge', roomsOf });
    if (result.unanswered > 0 || result.lost > 0 || result.unexpected) throw new Error(`joins failed: ${JSON.stringify(result)}`);
  }
  const closeAll = (clients) => clients.forEach((c) => c.socket.destroy());

  // Measurement plumbing.
  const machineBusy = () => {
    const [, ...f] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).map(Number);
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / 100;
  };
  function cpuWindow(edge) {
    const pids = { node: edge.pid, backend: backend.pid, bench: process.pid };
    const at = (p) => Object.fromEntries(Object.entries(p).map(([k, pid]) => [k, cpuSecondsOf(pid)]));
    const c0 = at(pids);
    const m0 = machineBusy();
    const t0 = performance.now();
    return () => {
      const seconds = (performance.now() - t0) / 1000;
      const c1 = at(pids);
      const cores = Object.fromEntries(Object.keys(pids).map((k) => [k, (c1[k] - c0[k]) / seconds]));
      const ours = Object.keys(pids).reduce((s, k) => s + c1[k] - c0[k], 0);
      return { seconds, cores, foreign: Math.max(0, machineBusy() - m0 - ours) / seconds };
    };
  }
  const pct = (list, p) => {
    if (list.length === 0) return NaN;
    const sorted = Float64Array.from(list).sort();
    return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
  };
  const round = (v, d = 2) => (Number.isFinite(v) ? Number(v.toFixed(d)) : null);
  const waitFor = async (cond, ms) => {
    for (const end = Date.now() + ms; !cond() && Date.now() < end; ) await sleep(20);
    return cond();
  };
  const machine = { cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model, node: process.version };
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['-C', dirname(DIST), 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    // not a git tree
  }
  const out = [];
  const emit = (line) => {
    const full = { bench: 'proxy', ...line, commit, machine };
    out.push(full);
    console.log(JSON.stringify(full));
  };
  let frameSeq = 0;
  const DATA = '{"text":"a message from the proxy bench, about the size of a chat line"}';
  const sendFrame = (room, id, keyed) =>
    keyed ? `{"type":"send_message","room":"${room}","data":${DATA},"id":"${id}","idempotency_key":"k${id}"}` : `{"type":"send_message","room":"${room}","data":${DATA},"id":"${id}"}`;

  const started = Date.now();
  console.error(`proxy bench: ${SCENARIOS.join(',')}, ${REPS} repetitions, dist ${DIST}, backend ${backendUrl}`);

  // -------------------------------------------------------------------------------------------
  // sends: plain (unkeyed, keyed) and proxied (backend at once, after 20 ms), closed loop + paced.
  if (SCENARIOS.includes('sends') || SCENARIOS.includes('rpc')) {
    const edge = await startEdge({ WS_MAX_ROOMS_PER_CONNECTION: '10' });
    const clients = await openMany(edge.port, ROOMS * MEMBERS);
    const roomOf = (i) => Math.floor(i / MEMBERS);
    await join(clients, (i) => [`project:p${roomOf(i)}`, `channel:p${roomOf(i)}`]);
    const senders = clients.filter((_, i) => i % MEMBERS === 0);
    for (const s of senders) s.listen();

    const ALL_MODES = [
      { name: 'plain-unkeyed', kind: 'project', keyed: false, delay: 0 },
      { name: 'plain-keyed', kind: 'project', keyed: true, delay: 0 },
      { name: 'proxied-0ms', kind: 'channel', keyed: true, delay: 0 },
      { name: `proxied-${SLOW_DELAY_MS}ms`, kind: 'channel', keyed: true, delay: SLOW_DELAY_MS },
    ];
    // BENCH_PROXY_MODES=proxied-0ms (say, to profile one mode alone); ratios need plain-keyed and plain-unkeyed.
    const only = process.env.BENCH_PROXY_MODES?.split(',');
    const MODES = only ? ALL_MODES.filter((m) => only.includes(m.name)) : ALL_MODES;

    /** Every sender keeps WINDOW sends in flight; counts what is answered in the measured window. */
    async function closedLoop(mode, measureS) {
      await askBackend({ delay: { publish: mode.delay } });
      let running = true;
      let measuring = false;
      const lat = [];
      const codes = {};
      let done = 0;
      const fire = (s, r) => {
        const id = `c${++frameSeq}`;
        s.request(sendFrame(`${mode.kind}:p${r}`, id, mode.keyed), id, (code, ms) => {
          if (measuring) {
            codes[code] = (codes[code] ?? 0) + 1;
            if (code === 'message_sent') {
              done += 1;
              lat.push(ms);
            }
          }
          if (running) fire(s, r);
        });
      };
      senders.forEach((s, r) => {
        for (let w = 0; w < WINDOW; w++) fire(s, r);
      });
      await sleep(WARMUP_S * 1000);
      await askBackend({ reset: true });
      const deliveries0 = stats.deliveries;
      measuring = true;
      const cpu = cpuWindow(edge);
      await sleep(measureS * 1000);
      measuring = false;
      const w = cpu();
      const deliveries = stats.deliveries - deliveries0;
      running = false;
      const backend1 = await askBackend({});
      const drained = await waitFor(() => senders.every((s) => s.pending.size === 0), 10_000);
      if (!drained) throw new Error(`${mode.name}: sends left unanswered`);
      return {
        sends_per_s: done / w.seconds,
        deliveries_per_s: deliveries / w.seconds,
        p50_ms: pct(lat, 50),
        p99_ms: pct(lat, 99),
        codes,
        node_cores: w.cores.node,
        backend_cores: w.cores.backend,
        bench_cores: w.cores.bench,
        foreign_cores: w.foreign,
        node_cpu_us_per_send: (w.cores.node * 1e6) / (done / w.seconds),
        backend_calls_per_s: backend1.calls / w.seconds,
        backend_max_in_flight: backend1.max_in_flight,
      };
    }

    /** PACED_RATE sends/s in all, round robin over the senders: the latency without queueing. */
    async function paced(mode, measureS) {
      await askBackend({ delay: { publish: mode.delay } });
      const lat = [];
      const codes = {};
      let measuring = false;
      let next = 0;
      let owed = 0;
      let last = performance.now();
      const timer = setInterval(() => {
        const now = performance.now();
        owed += ((now - last) / 1000) * PACED_RATE;
        last = now;
        for (; owed >= 1; owed -= 1) {
          const r = next++ % senders.length;
          const id = `p${++frameSeq}`;
          senders[r].request(sendFrame(`${mode.kind}:p${r}`, id, mode.keyed), id, (code, ms) => {
            if (!measuring) return;
            codes[code] = (codes[code] ?? 0) + 1;
            if (code === 'message_sent') lat.push(ms);
          });
        }
      }, 5);
      await sleep(500);
      measuring = true;
      const cpu = cpuWindow(edge);
      await sleep(measureS * 1000);
      clearInterval(timer);
      const w = cpu();
      await waitFor(() => senders.every((s) => s.pending.size === 0), 10_000);
      measuring = false;
      return { p50_ms: pct(lat, 50), p99_ms: pct(lat, 99), mean_ms: lat.reduce((a, b) => a + b, 0) / lat.length, samples: lat.length, codes, node_cores: w.cores.node, foreign_cores: w.foreign };
    }

    if (SCENARIOS.includes('sends')) {
      // Warm-up: every mode once, short.
      for (const mode of MODES) await closedLoop(mode, 1);
      const runs = {};
      const pacedRuns = {};
      for (let rep = 0; rep < REPS; rep++) {
        const order = rep % 2 === 0 ? MODES : [...MODES].reverse();
        for (const mode of order) {
          const r = await closedLoop(mode, SECONDS);
          (runs[mode.name] ??= []).push(r);
          console.error(
            `rep ${rep + 1} ${mode.name}: ${Math.round(r.sends_per_s)} sends/s, p50 ${r.p50_ms.toFixed(1)} ms, p99 ${r.p99_ms.toFixed(1)} ms, ` +
              `node ${r.node_cores.toFixed(2)} cores (${r.node_cpu_us_per_send.toFixed(0)} µs/send), backend ${r.backend_cores.toFixed(2)}, bench ${r.bench_cores.toFixed(2)}, foreign ${r.foreign_cores.toFixed(2)}, ${JSON.stringify(r.codes)}`,
          );
        }
        for (const mode of order.filter((m) => m.name !== 'plain-unkeyed')) {
          const r = await paced(mode, Math.max(2, SECONDS - 1));
          (pacedRuns[mode.name] ??= []).push(r);
          console.error(`rep ${rep + 1} ${mode.name} paced ${PACED_RATE}/s: p50 ${r.p50_ms.toFixed(2)} ms, p99 ${r.p99_ms.toFixed(2)} ms, ${JSON.stringify(r.codes)}`);
        }
      }
      const med = (list, key) => median(list.map((r) => r[key]));
      const range = (list, key, d) => [round(Math.min(...list.map((r) => r[key])), d), round(Math.max(...list.map((r) => r[key])), d)];
      const ratio = (a, b, key, set = runs) => (set[b] ? round(median(set[a].map((r, i) => r[key] / set[b][i][key])), 3) : null);
      for (const mode of MODES) {
        const list = runs[mode.name];
        const p = pacedRuns[mode.name];
        const codes = {};
        for (const r of list) for (const [k, v] of Object.entries(r.codes)) codes[k] = (codes[k] ?? 0) + v;
        const nodeSat = med(list, 'node_cores') >= 0.85;
        emit({
          scenario: 'sends',
          mode: mode.name,
          proxied: mode.kind === 'channel',
          keyed: mode.keyed,
          backend_delay_ms: mode.kind === 'channel' ? mode.delay : null,
          rooms: ROOMS,
          members: MEMBERS,
          senders: senders.length,
          window_per_sender: WINDOW,
          concurrency: CONCURRENCY,
          reps: REPS,
          seconds: SECONDS,
          sends_per_s: Math.round(med(list, 'sends_per_s')),
          sends_per_s_range: range(list, 'sends_per_s', 0),
          deliveries_per_s: Math.round(med(list, 'deliveries_per_s')),
          loaded_p50_ms: round(med(list, 'p50_ms'), 2),
          loaded_p99_ms: round(med(list, 'p99_ms'), 2),
          node_cores: round(med(list, 'node_cores')),
          node_cpu_us_per_send: round(med(list, 'node_cpu_us_per_send'), 1),
          backend_cores: round(med(list, 'backend_cores')),
          bench_cores: round(med(list, 'bench_cores')),
          foreign_cores_max: round(Math.max(...list.map((r) => r.foreign_cores))),
          backend_max_in_flight: mode.kind === 'channel' ? Math.max(...list.map((r) => r.backend_max_in_flight)) : null,
          answers: codes,
          limited_by: nodeSat ? 'node' : mode.delay > 0 && mode.kind === 'channel' ? `backend latency x concurrency (<= ${Math.round((CONCURRENCY * 1000) / mode.delay)}/s)` : 'shared cores',
          paced: p && {
            rate: PACED_RATE,
            p50_ms: round(med(p, 'p50_ms'), 3),
            p99_ms: round(med(p, 'p99_ms'), 3),
            p50_ms_range: range(p, 'p50_ms', 3),
            p99_ms_range: range(p, 'p99_ms', 3),
            node_cores: round(med(p, 'node_cores')),
            answers: p.reduce((acc, r) => {
              for (const [k, v] of Object.entries(r.codes)) acc[k] = (acc[k] ?? 0) + v;
              return acc;
            }, {}),
          },
          ratios: {
            sends_per_s_vs_plain_keyed: ratio(mode.name, 'plain-keyed', 'sends_per_s'),
            sends_per_s_vs_plain_unkeyed: ratio(mode.name, 'plain-unkeyed', 'sends_per_s'),
            node_cpu_per_send_vs_plain_keyed: ratio(mode.name, 'plain-keyed', 'node_cpu_us_per_send'),
            ...(p && pacedRuns['plain-keyed'] && { paced_p50_vs_plain_keyed: ratio(mode.name, 'plain-keyed', 'p50_ms', pacedRuns), paced_p99_vs_plain_keyed: ratio(mode.name, 'plain-keyed', 'p99_ms', pacedRuns) }),
          },
        });
      }
    }

    // -----------------------------------------------------------------------------------------
    // rpc: rpc → rpc_result against the same call made directly to the same endpoint, one call in flight.
    if (SCENARIOS.includes('rpc')) {
      await askBackend({ delay: { publish: 0, rpc: 0 } });
      const caller = senders[0];
      const body = (i) => ({ user_id: 'b1', username: 'b1', connection_id: 'bench', method: 'messages.mark_read', data: { room: 'channel:p0', message_id: i } });
      const viaSocket = () =>
        new Promise((r) => {
          const id = `r${++frameSeq}`;
          caller.request(`{"type":"rpc","id":"${id}","method":"messages.mark_read","data":{"room":"channel:p0","message_id":${frameSeq}}}`, id, (code, ms) => r({ code, ms }));
        });
      // The same call from this process: with fetch as the node made it before, and with node:http (keep-alive) as it makes it now.
      const headers = { 'content-type': 'application/json', authorization: `Bearer ${BACKEND_KEY}` };
      const viaFetch = async (i) => {
        const t0 = performance.now();
        const res = await fetch(`${backendUrl}/rpc`, { method: 'POST', headers, body: JSON.stringify(body(i)), signal: AbortSignal.timeout(2000), redirect: 'error' });
        const answer = JSON.parse(await res.text());
        const ms = performance.now() - t0;
        return { code: res.status === 200 && answer.data?.ok ? 'rpc_result' : `status ${res.status}`, ms };
      };
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      const viaHttp = (i) =>
        new Promise((r, reject) => {
          const t0 = performance.now();
          const payload = JSON.stringify(body(i));
          const req = httpRequest(`${backendUrl}/rpc`, { method: 'POST', agent, headers: { ...headers, 'content-length': Buffer.byteLength(payload) } }, (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => {
              const answer = JSON.parse(Buffer.concat(chunks).toString('utf8'));
              r({ code: res.statusCode === 200 && answer.data?.ok ? 'rpc_result' : `status ${res.statusCode}`, ms: performance.now() - t0 });
            });
          });
          req.on('error', reject);
          req.end(payload);
        });
      const PATHS = { rpc: viaSocket, fetch: viaFetch, http: viaHttp };
      const series = async (fn, n) => {
        const lat = [];
        const codes = {};
        for (let i = 0; i < n; i++) {
          const { code, ms } = await fn(i);
          codes[code] = (codes[code] ?? 0) + 1;
          if (code === 'rpc_result') lat.push(ms);
        }
        return { p50_ms: pct(lat, 50), p99_ms: pct(lat, 99), mean_ms: lat.reduce((a, b) => a + b, 0) / lat.length, codes };
      };
      for (const fn of Object.values(PATHS)) await series(fn, 300);
      const rpcRuns = { rpc: [], fetch: [], http: [] };
      for (let rep = 0; rep < REPS; rep++) {
        const order = rep % 2 === 0 ? ['rpc', 'fetch', 'http'] : ['http', 'fetch', 'rpc'];
        for (const which of order) {
          const cpu = cpuWindow(edge);
          const r = await series(PATHS[which], RPC_CALLS);
          const w = cpu();
          r.node_cores = w.cores.node;
          r.bench_cores = w.cores.bench;
          r.foreign_cores = w.foreign;
          r.calls_per_s = RPC_CALLS / w.seconds;
          rpcRuns[which].push(r);
          console.error(`rep ${rep + 1} ${which}: p50 ${r.p50_ms.toFixed(3)} ms, p99 ${r.p99_ms.toFixed(3)} ms, ${JSON.stringify(r.codes)}, foreign ${w.foreign.toFixed(2)}`);
        }
      }
      const m = (which, key) => round(median(rpcRuns[which].map((r) => r[key])), 3);
      const rr = (base, key) => round(median(rpcRuns.rpc.map((r, i) => r[key] / rpcRuns[base][i][key])), 2);
      const diff = (base, key) => round(median(rpcRuns.rpc.map((r, i) => r[key] - rpcRuns[base][i][key])), 3);
      // CPU per call of the process that makes the HTTP call: the node for rpc, this process for the direct ones.
      for (const r of rpcRuns.rpc) r.caller_cpu_us_per_call = (r.node_cores * 1e6) / r.calls_per_s;
      for (const r of [...rpcRuns.fetch, ...rpcRuns.http]) r.caller_cpu_us_per_call = (r.bench_cores * 1e6) / r.calls_per_s;
      const path = (which) => ({
        p50_ms: m(which, 'p50_ms'),
        p99_ms: m(which, 'p99_ms'),
        mean_ms: m(which, 'mean_ms'),
        calls_per_s: Math.round(m(which, 'calls_per_s')),
        node_cores: m(which, 'node_cores'),
        bench_cores: m(which, 'bench_cores'),
        caller_cpu_us_per_call: Math.round(m(which, 'caller_cpu_us_per_call')),
      });
      emit({
        scenario: 'rpc',
        calls: RPC_CALLS,
        in_flight: 1,
        reps: REPS,
        rpc: path('rpc'),
        direct_fetch: path('fetch'),
        direct_http: path('http'),
        ratios: {
          rpc_over_direct_fetch_p50: rr('fetch', 'p50_ms'),
          rpc_over_direct_fetch_p99: rr('fetch', 'p99_ms'),
          rpc_over_direct_http_p50: rr('http', 'p50_ms'),
          rpc_over_direct_http_p99: rr('http', 'p99_ms'),
        },
        added_ms_over_direct_http: { p50: diff('http', 'p50_ms'), p99: diff('http', 'p99_ms') },
        added_ms_over_direct_fetch: { p50: diff('fetch', 'p50_ms'), p99: diff('fetch', 'p99_ms') },
        foreign_cores_max: round(Math.max(...Object.values(rpcRuns).flat().map((r) => r.foreign_cores))),
      });
    }
    closeAll(clients);
    await stopEdge(edge);
  }

  // -------------------------------------------------------------------------------------------
  // slow: SLOW_RATE keyed sends/s through the proxy to a backend taking callMs per call; other clients ping.
  /** One flood against a fresh node: the backend takes `callMs` per publish call, the node waits `timeoutMs`. */
  async function slowRun(callMs, timeoutMs, rep) {
    await askBackend({ delay: { publish: callMs, rpc: 0 } });
    const edge = await startEdge({ WS_BACKEND_TIMEOUT: String(timeoutMs) });
    const flooders = await openMany(edge.port, FLOOD_CLIENTS);
    const pingers = await openMany(edge.port, PING_CLIENTS);
    // One room per flood client: a published send is one delivery, so the load is the proxy's.
    await join(flooders, (i) => [`channel:flood${i}`]);
    for (const c of [...flooders, ...pingers]) c.listen();
    const flood = (rate, onAnswer) => {
      let next = 0;
      let owed = 0;
      let last = performance.now();
      let offered = 0;
      const timer = setInterval(() => {
        const now = performance.now();
        owed += ((now - last) / 1000) * rate;
        last = now;
        for (; owed >= 1; owed -= 1) {
          const i = next++ % flooders.length;
          const id = `f${++frameSeq}`;
          offered += 1;
          flooders[i].request(sendFrame(`channel:flood${i}`, id, true), id, onAnswer);
        }
      }, 10);
      return () => (clearInterval(timer), offered);
    };
    // Warm-up: the node's proxy path compiled and its connections to the backend open, as in a
    // node that has been serving: 1 s of the same flood against the backend answering at once.
    await askBackend({ delay: { publish: 0, rpc: 0 } });
    const stopWarmup = flood(SLOW_RATE, () => {});
    await sleep(1000);
    stopWarmup();
    await waitFor(() => flooders.every((c) => c.pending.size === 0), 5000);
    await askBackend({ delay: { publish: callMs, rpc: 0 } });
    const metricsBefore = await backendMetrics(edge);

    // Every ping client pings every 50 ms (open loop); a ping's phase is the one it was sent in.
    let pingPhase = 'idle';
    const pings = { baseline: [], flood: [], after: [] };
    const timeline = []; // [ms since the flood started, round trip ms] of pings sent during it
    let floodStart = 0;
    let pingsSkipped = 0;
    const pingTimer = setInterval(() => {
      if (pingPhase === 'idle') return;
      const phase = pingPhase;
      const at = performance.now() - floodStart;
      for (const p of pingers) {
        if (p.pending.size > 20) {
          pingsSkipped += 1;
          continue;
        }
        const id = `g${++frameSeq}`;
        p.request(`{"type":"ping","id":"${id}"}`, id, (code, ms) => {
          pings[phase].push(ms);
          if (phase === 'flood') timeline.push([at, ms]);
        });
      }
    }, 50);

    pingPhase = 'baseline';
    await nodeLoop(edge, 'reset');
    benchLoop.reset();
    await sleep(3000);
    const loopBefore = { node: await nodeLoop(edge, 'read'), bench: readBenchLoop() };

    // The flood: SLOW_RATE keyed sends/s, round robin over the flood clients. The node's main
    // thread's CPU time and run-queue wait (/proc/<pid>/schedstat) sampled every 10 ms: whether a
    // slow ping found the node busy or waiting for a core.
    const codes = {};
    await askBackend({ reset: true, sample: true });
    await nodeLoop(edge, 'reset');
    benchLoop.reset();
    const sched = [];
    const readSched = () => {
      const [run, wait] = readFileSync(`/proc/${edge.pid}/schedstat`, 'utf8').split(' ').map(Number);
      sched.push([performance.now() - floodStart, run / 1e6, wait / 1e6]);
    };
    floodStart = performance.now();
    readSched();
    const schedTimer = setInterval(readSched, 10);
    const cpu = cpuWindow(edge);
    pingPhase = 'flood';
    const stopFlood = flood(SLOW_RATE, (code) => (codes[code] = (codes[code] ?? 0) + 1));
    await sleep(SLOW_SECONDS * 1000);
    const offered = stopFlood();
    clearInterval(schedTimer);
    readSched();
    const w = cpu();
    const floodS = (performance.now() - floodStart) / 1000;
    pingPhase = 'after';
    const loopDuring = { node: await nodeLoop(edge, 'read'), bench: readBenchLoop() };
    const settled = await waitFor(() => flooders.every((c) => c.pending.size === 0), timeoutMs + 3000);
    const b = await askBackend({ sample: false });
    pingPhase = 'idle';
    clearInterval(pingTimer);
    await waitFor(() => pingers.every((c) => c.pending.size === 0), 2000);
    const metricsAfter = await backendMetrics(edge);
    const metrics = Object.fromEntries(Object.entries(metricsAfter).map(([k, v]) => [k, v - (metricsBefore[k] ?? 0)]).filter(([, v]) => v > 0));
    // The backend's calls in flight, sampled every 10 ms during the flood, from its first second on.
    const steady = b.samples.slice(100, Math.round(floodS * 100));
    const open = steady.map((x) => x[0]);
    const work = steady.map((x) => x[1]);
    const share = (list, f) => round(list.filter(f).length / Math.max(1, list.length), 3);
    const loopMs = (l) => ({ p50: round(l.p50, 2), p99: round(l.p99, 2), max: round(l.max, 2) });
    // The slowest ping rounds (one entry per round), with the node's CPU and run-queue wait meanwhile.
    const schedAt = (t) => sched.findLast((x) => x[0] <= t) ?? sched[0];
    const rounds = new Map();
    for (const [at, ms] of timeline) if (!(rounds.get(at) >= ms)) rounds.set(at, ms);
    const worstRounds = [...rounds].sort((x, y) => y[1] - x[1]).slice(0, 3);
    const worst = worstRounds.map(([at, ms]) => {
      const a = schedAt(at);
      const z = schedAt(at + ms);
      return `${ms.toFixed(0)} ms at +${(at / 1000).toFixed(2)} s (node ran ${(z[1] - a[1]).toFixed(0)} ms, waited for a core ${(z[2] - a[2]).toFixed(0)} ms)`;
    });
    const schedTotal = sched.length > 1 ? { ran_ms: sched.at(-1)[1] - sched[0][1], waited_ms: sched.at(-1)[2] - sched[0][2], wall_ms: sched.at(-1)[0] - sched[0][0] } : undefined;
    const line = {
      scenario: 'slow-backend',
      rep,
      backend_ms_per_call: callMs,
      ws_backend_timeout_ms: timeoutMs,
      ws_backend_concurrency: CONCURRENCY,
      ws_backend_max_per_connection: 16,
      offered_per_s: round(offered / floodS, 0),
      offered,
      flood_clients: FLOOD_CLIENTS,
      flood_seconds: round(floodS, 1),
      answers: codes,
      unanswered: flooders.reduce((s, c) => s + c.pending.size, 0),
      all_answered: settled,
      backend: {
        // open: a call whose connection is open and unanswered (what the node holds);
        // working: a call whose 2 s of work has not finished, its caller gone or not.
        max_open: b.max_in_flight,
        max_working: b.max_working,
        calls: b.calls,
        aborted_by_node: b.aborted,
        samples_after_1s: steady.length,
        open_max_sampled: Math.max(...open),
        open_median: median(open),
        open_share_at_concurrency: share(open, (n) => n === CONCURRENCY),
        open_share_above_concurrency: share(open, (n) => n > CONCURRENCY),
        open_min: Math.min(...open),
        working_median: median(work),
        working_share_above_concurrency: share(work, (n) => n > CONCURRENCY),
      },
      node_backend_calls: metrics,
      node_cores: round(w.cores.node),
      // The node's main thread: share of the flood's wall time spent waiting for a core.
      node_runqueue_wait_share: schedTotal && round(schedTotal.waited_ms / schedTotal.wall_ms, 3),
      bench_cores: round(w.cores.bench),
      foreign_cores: round(w.foreign),
      ping_clients: PING_CLIENTS,
      ping_every_ms: 50,
      ping: {
        baseline_p50_ms: round(pct(pings.baseline, 50), 3),
        baseline_p99_ms: round(pct(pings.baseline, 99), 3),
        flood_p50_ms: round(pct(pings.flood, 50), 3),
        flood_p99_ms: round(pct(pings.flood, 99), 3),
        flood_max_ms: round(Math.max(...pings.flood), 2),
        flood_samples: pings.flood.length,
        flood_over_baseline_p99: round(pct(pings.flood, 99) / pct(pings.baseline, 99), 2),
        flood_share_over_50ms: round(pings.flood.filter((ms) => ms > 50).length / pings.flood.length, 4),
        worst_during_flood: worst,
        skipped: pingsSkipped,
      },
      event_loop_delay_ms: {
        node_before: loopMs(loopBefore.node),
        node_during: loopMs(loopDuring.node),
        bench_before: loopMs(loopBefore.bench),
        bench_during: loopMs(loopDuring.bench),
      },
    };
    console.error(
      `rep ${rep} backend ${callMs} ms, timeout ${timeoutMs} ms: offered ${line.offered_per_s}/s, ${JSON.stringify(codes)}, backend max open ${b.max_in_flight}, max working ${b.max_working} ` +
        `(open at ${CONCURRENCY} in ${(line.backend.open_share_at_concurrency * 100).toFixed(0)}% of samples), ping p99 ${line.ping.baseline_p99_ms} → ${line.ping.flood_p99_ms} ms; ` +
        `node loop p99 ${line.event_loop_delay_ms.node_during.p99} max ${line.event_loop_delay_ms.node_during.max}; worst pings ${worst.join(', ')}`,
    );
    closeAll([...flooders, ...pingers]);
    await stopEdge(edge);
    return line;
  }

  if (SCENARIOS.includes('slow')) {
    const runs = SLOW_VARIANTS.map(() => []);
    for (let rep = 0; rep < SLOW_REPS; rep++) {
      const order = SLOW_VARIANTS.map((v, i) => i);
      if (rep % 2 === 1) order.reverse();
      for (const i of order) runs[i].push(await slowRun(SLOW_VARIANTS[i][0], SLOW_VARIANTS[i][1], rep + 1));
    }
    SLOW_VARIANTS.forEach(([callMs, timeoutMs], i) => {
      const list = runs[i];
      const med = (f) => round(median(list.map(f)), 3);
      const span = (f) => [round(Math.min(...list.map(f)), 3), round(Math.max(...list.map(f)), 3)];
      const sum = (key) => list.reduce((acc, r) => {
        for (const [k, v] of Object.entries(r[key])) acc[k] = (acc[k] ?? 0) + v;
        return acc;
      }, {});
      emit({
        scenario: 'slow-backend',
        backend_ms_per_call: callMs,
        ws_backend_timeout_ms: timeoutMs,
        ws_backend_concurrency: CONCURRENCY,
        ws_backend_max_per_connection: 16,
        reps: list.length,
        offered_per_s: med((r) => r.offered_per_s),
        flood_seconds: SLOW_SECONDS,
        flood_clients: FLOOD_CLIENTS,
        // Summed over the repetitions.
        answers: sum('answers'),
        answers_per_s: Object.fromEntries(Object.entries(sum('answers')).map(([k, v]) => [k, round(v / list.reduce((a, r) => a + r.flood_seconds, 0), 1)])),
        unanswered: list.reduce((a, r) => a + r.unanswered, 0),
        node_backend_calls: sum('node_backend_calls'),
        backend: {
          max_open: Math.max(...list.map((r) => r.backend.max_open)),
          open_max_sampled: Math.max(...list.map((r) => r.backend.open_max_sampled)),
          open_median: med((r) => r.backend.open_median),
          open_share_at_concurrency: med((r) => r.backend.open_share_at_concurrency),
          open_share_above_concurrency: Math.max(...list.map((r) => r.backend.open_share_above_concurrency)),
          max_working: Math.max(...list.map((r) => r.backend.max_working)),
          working_median: med((r) => r.backend.working_median),
          calls_per_s: round(list.reduce((a, r) => a + r.backend.calls, 0) / list.reduce((a, r) => a + r.flood_seconds, 0), 1),
          aborted_by_node: list.reduce((a, r) => a + r.backend.aborted_by_node, 0),
        },
        ping: {
          baseline_p50_ms: med((r) => r.ping.baseline_p50_ms),
          baseline_p99_ms: med((r) => r.ping.baseline_p99_ms),
          flood_p50_ms: med((r) => r.ping.flood_p50_ms),
          flood_p99_ms: med((r) => r.ping.flood_p99_ms),
          flood_p99_ms_range: span((r) => r.ping.flood_p99_ms),
          flood_max_ms: Math.max(...list.map((r) => r.ping.flood_max_ms)),
          flood_over_baseline_p99: med((r) => r.ping.flood_over_baseline_p99),
          flood_share_over_50ms: med((r) => r.ping.flood_share_over_50ms),
        },
        node_loop_delay_during_ms: { p99: med((r) => r.event_loop_delay_ms.node_during.p99), max: Math.max(...list.map((r) => r.event_loop_delay_ms.node_during.max)) },
        bench_loop_delay_during_ms: { p99: med((r) => r.event_loop_delay_ms.bench_during.p99), max: Math.max(...list.map((r) => r.event_loop_delay_ms.bench_during.max)) },
        node_cores: med((r) => r.node_cores),
        node_runqueue_wait_share: med((r) => r.node_runqueue_wait_share),
        foreign_cores_max: Math.max(...list.map((r) => r.foreign_cores)),
        runs: list.map((r) => ({ ping_flood_p99_ms: r.ping.flood_p99_ms, worst_ping_rounds: r.ping.worst_during_flood, node_loop_max_ms: r.event_loop_delay_ms.node_during.max, foreign_cores: r.foreign_cores, answers: r.answers })),
      });
    });
  }
  // -------------------------------------------------------------------------------------------
  const fmt = (n) => (n === null || n === undefined ? '' : Math.round(n).toLocaleString('en-US'));
  console.log(`\nBackend calls (issue 22), commit ${commit}, ${((Date.now() - started) / 1000).toFixed(0)} s, medians of ${REPS}`);
  const sends = out.filter((l) => l.scenario === 'sends');
  if (sends.length > 0) {
    console.log(`\nSends: ${ROOMS} rooms of ${MEMBERS}, one sender per room, ${WINDOW} in flight each; paced: ${PACED_RATE} sends/s`);
    console.log('| mode | sends/s | vs plain keyed | node µs/send | node cores | backend cores | loaded p50 / p99 ms | paced p50 / p99 ms | paced p99 vs plain keyed |');
    console.log('|---|---|---|---|---|---|---|---|---|');
    for (const l of sends) {
      console.log(
        `| ${l.mode} | ${fmt(l.sends_per_s)} (${fmt(l.sends_per_s_range[0])}-${fmt(l.sends_per_s_range[1])}) | ${l.ratios.sends_per_s_vs_plain_keyed} | ${l.node_cpu_us_per_send} | ${l.node_cores} | ${l.backend_cores} | ` +
          `${l.loaded_p50_ms} / ${l.loaded_p99_ms} | ${l.paced ? `${l.paced.p50_ms} / ${l.paced.p99_ms}` : ''} | ${l.ratios.paced_p99_vs_plain_keyed ?? ''} |`,
      );
    }
  }
  const rpc = out.find((l) => l.scenario === 'rpc');
  if (rpc) {
    console.log(`\nRPC round trip, ${RPC_CALLS} calls one at a time, backend answering at once`);
    console.log('| path | p50 ms | p99 ms | rpc / this, p50 | rpc / this, p99 | caller CPU µs per call |');
    console.log('|---|---|---|---|---|---|');
    console.log(`| rpc → rpc_result over the socket | ${rpc.rpc.p50_ms} | ${rpc.rpc.p99_ms} | | | ${rpc.rpc.caller_cpu_us_per_call} (node) |`);
    console.log(`| direct: fetch (the node's HTTP client before) | ${rpc.direct_fetch.p50_ms} | ${rpc.direct_fetch.p99_ms} | ${rpc.ratios.rpc_over_direct_fetch_p50} | ${rpc.ratios.rpc_over_direct_fetch_p99} | ${rpc.direct_fetch.caller_cpu_us_per_call} |`);
    console.log(`| direct: node:http, keep-alive (the node's HTTP client) | ${rpc.direct_http.p50_ms} | ${rpc.direct_http.p99_ms} | ${rpc.ratios.rpc_over_direct_http_p50} | ${rpc.ratios.rpc_over_direct_http_p99} | ${rpc.direct_http.caller_cpu_us_per_call} |`);
  }
  const slow = out.filter((l) => l.scenario === 'slow-backend');
  if (slow.length > 0) {
    console.log(`\nSlow backend: ${SLOW_RATE} keyed sends/s offered for ${SLOW_SECONDS} s by ${FLOOD_CLIENTS} clients, ${PING_CLIENTS} other clients pinging every 50 ms; answers summed over ${SLOW_REPS} runs, pings medians`);
    console.log('| backend ms per call | WS_BACKEND_TIMEOUT | backend open calls: max at arrival, max sampled, median | backend work under way: max, median | message_sent/s | unavailable/s | rate_limited/s | ping p50 / p99 ms before | during | p99 during / before | pings > 50 ms | node loop delay max ms | node waiting for a core |');
    console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
    for (const l of slow) {
      const a = l.answers_per_s;
      console.log(
        `| ${l.backend_ms_per_call} | ${l.ws_backend_timeout_ms} | ${l.backend.max_open}, ${l.backend.open_max_sampled}, ${l.backend.open_median} (cap ${l.ws_backend_concurrency}) | ${l.backend.max_working}, ${l.backend.working_median} | ${a.message_sent ?? 0} | ${a.unavailable ?? 0} | ${a.rate_limited ?? 0} | ` +
          `${l.ping.baseline_p50_ms} / ${l.ping.baseline_p99_ms} | ${l.ping.flood_p50_ms} / ${l.ping.flood_p99_ms} (${l.ping.flood_p99_ms_range.join('-')}) | ${l.ping.flood_over_baseline_p99} | ${(l.ping.flood_share_over_50ms * 100).toFixed(2)}% | ${l.node_loop_delay_during_ms.max} | ${(l.node_runqueue_wait_share * 100).toFixed(0)}% |`,
      );
    }
  }
  process.exit(0);
}

if (process.argv[2] === '--backend') backendMain();
else await benchMain();
