#!/usr/bin/env node
/**
 * The HTTP fallback against WebSocket in the same run (issue 28): one ws-edge node from dist/ in a
 * child process per scenario, N readers in one room (WebSocket clients of the `ws` package, or
 * SSE streams read with node:http), a backend publishing M numbered events through the internal
 * API in batches. Per scenario: deliveries/s (N x M over the time from the first publish to the
 * last event on the last reader), node CPU per delivery (/proc, user+system), node RSS and open
 * files per connection (after the readers joined, minus before). Every reader must get all M
 * events (counted; a shortfall is printed and fails the run). Transports alternate per repetition.
 *
 *   npm run build && node bench/fallback.mjs [readers=300] [events=300] [repetitions=3]
 *
 * One JSON line per scenario on stdout, then a table of medians with fallback/WebSocket ratios.
 */
import { request } from 'node:http';
import WebSocket from 'ws';
import { createSigner } from 'fast-jwt';
import { cpuSecondsOf, fdsOf, median, rssOf, sleep, startServer, stop } from './lib.mjs';

const [READERS, EVENTS, REPS] = [Number(process.argv[2] ?? 300), Number(process.argv[3] ?? 300), Number(process.argv[4] ?? 3)];
const SECRET = 'bench-secret-that-is-long-enough-for-hs256-0123456789';
const API_KEY = 'bench-api-key-0123456789abcdef0123456789';
const ROOM = 'channel:bench';
const BATCH = 100;
const sign = createSigner({ key: SECRET, expiresIn: 3_600_000 });
const tokenOf = (user) => sign({ sub: user, rooms: ['*'] });

/** One reader: resolves `ready` once it has joined, counts task.updated events, `close()` ends it. */
function wsReader(port, user, counted) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/api/v1/ws/connect`, ['wsedge.v1'], { headers: { authorization: `Bearer ${tokenOf(user)}` }, perMessageDeflate: false });
  const ready = new Promise((resolve, reject) => {
    ws.on('error', reject);
    ws.on('message', (raw) => {
      const text = raw.toString();
      if (text.startsWith('{"type":"task.updated"')) counted();
      else if (text.startsWith('{"type":"connected"')) ws.send(JSON.stringify({ type: 'join_room', room: ROOM, id: 'j' }));
      else if (text.startsWith('{"type":"room_joined"')) resolve();
    });
  });
  return { ready, close: () => ws.terminate() };
}

function sseReader(port, user, counted) {
  let req;
  const ready = new Promise((resolve, reject) => {
    req = request({ host: '127.0.0.1', port, path: `/api/v1/ws/stream?rooms=${ROOM}`, headers: { authorization: `Bearer ${tokenOf(user)}` } }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`stream answered ${res.statusCode}`));
      let buffer = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        buffer += chunk;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.slice(block.indexOf('data: ') + 6);
          if (data.startsWith('{"type":"task.updated"')) counted();
          else if (data.startsWith('{"type":"room_joined"')) resolve();
        }
      });
    });
    req.on('error', reject);
    req.end();
  });
  return { ready, close: () => req.destroy() };
}

async function publish(internalPort, from, count) {
  const publications = Array.from({ length: count }, (_, i) => ({ room: ROOM, type: 'task.updated', data: { n: from + i } }));
  const res = await fetch(`http://127.0.0.1:${internalPort}/api/v1/publish/batch`, { method: 'POST', headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ publications }) });
  if (res.status !== 200) throw new Error(`publish answered ${res.status}: ${await res.text()}`);
}

async function scenario(transport) {
  const env = { HOST: '127.0.0.1', PORT: '0', INTERNAL_HOST: '127.0.0.1', INTERNAL_PORT: '0', JWT_SECRET: SECRET, PUBLISH_API_KEY: API_KEY, LOG_LEVEL: 'info', WS_MEMBERSHIP_EVENTS: 'false', WS_MAX_CONNECTIONS_PER_IP: '0', WS_AUTH_FAILURE_LIMIT: '0' };
  const { child, port, internalPort } = await startServer(['dist/cli.js', 'serve'], env);
  try {
    await sleep(300);
    const before = { rss: rssOf(child.pid), fds: fdsOf(child.pid) };
    let received = 0;
    let done;
    const all = new Promise((resolve) => (done = resolve));
    const counted = () => {
      if (++received === READERS * EVENTS) done();
    };
    const open = transport === 'ws' ? wsReader : sseReader;
    const readers = [];
    for (let i = 0; i < READERS; i += 50) {
      const group = Array.from({ length: Math.min(50, READERS - i) }, (_, j) => open(port, `u${i + j}`, counted));
      await Promise.all(group.map((r) => r.ready));
      readers.push(...group);
    }
    await sleep(300);
    const joined = { rss: rssOf(child.pid), fds: fdsOf(child.pid) };
    const cpu0 = cpuSecondsOf(child.pid);
    const t0 = performance.now();
    for (let n = 1; n <= EVENTS; n += BATCH) await publish(internalPort, n, Math.min(BATCH, EVENTS - n + 1));
    const timeout = sleep(120_000).then(() => 'timeout');
    const outcome = await Promise.race([all.then(() => 'ok'), timeout]);
    const seconds = (performance.now() - t0) / 1000;
    const cpu = cpuSecondsOf(child.pid) - cpu0;
    for (const r of readers) r.close();
    const deliveries = READERS * EVENTS;
    return {
      transport,
      readers: READERS,
      events: EVENTS,
      received,
      lost: deliveries - received,
      outcome,
      deliveries_per_s: Math.round(received / seconds),
      node_cpu_us_per_delivery: Number(((cpu * 1e6) / received).toFixed(2)),
      rss_per_connection_bytes: Math.round((joined.rss - before.rss) / READERS),
      fds_per_connection: Number(((joined.fds - before.fds) / READERS).toFixed(2)),
    };
  } finally {
    await stop(child);
  }
}

const results = { ws: [], sse: [] };
for (let rep = 0; rep < REPS; rep++) {
  for (const transport of rep % 2 === 0 ? ['ws', 'sse'] : ['sse', 'ws']) {
    const result = await scenario(transport);
    console.log(JSON.stringify(result));
    results[transport].push(result);
    if (result.lost !== 0) {
      console.error(`${transport}: ${result.lost} deliveries missing`);
      process.exitCode = 1;
    }
  }
}
const med = (transport, key) => median(results[transport].map((r) => r[key]));
const rows = ['deliveries_per_s', 'node_cpu_us_per_delivery', 'rss_per_connection_bytes', 'fds_per_connection'];
console.log(`\n${READERS} readers x ${EVENTS} events, ${REPS} repetitions, medians`);
console.log('| figure | WebSocket | SSE fallback | fallback / WebSocket |\n|---|---|---|---|');
for (const key of rows) {
  const [ws, sse] = [med('ws', key), med('sse', key)];
  console.log(`| ${key} | ${Number(ws.toFixed(2))} | ${Number(sse.toFixed(2))} | ${(sse / ws).toFixed(2)} |`);
}
