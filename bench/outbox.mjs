#!/usr/bin/env node
/**
 * PostgreSQL outbox ingestion (issue 27: "rows/s published per node against direct API publishes in
 * the same run; lag p99 with LISTEN/NOTIFY and with polling only; ws-edge stopped for 30 s while the
 * product keeps committing: everything delivered after the restart, nothing twice"). A PostgreSQL
 * (Debian's initdb/postgres in a temporary directory, as the postgres user when root) and a
 * redis-server on free ports; two `ws-edge serve` processes from dist/: C consumes the outbox
 * (WS_OUTBOX_URL), E does not; MEMBERS clients (in this process) on E, each in every one of ROOMS
 * sequenced rooms, so every event crosses Redis from C to E.
 *
 *   api      N events through POST /api/v1/publish on C (64 in flight), the rooms in turn: events/s
 *            from the first request to the last event at every member.
 *   outbox   N rows committed by 4 product writers, 100 rows per transaction: rows/s from the first
 *            INSERT to the last event at every member.
 *   batch    the same N through POST /api/v1/publish/batch, 100 publications a request, 4 in
 *            flight: the API with the outbox's batching. Ratios outbox/api and outbox/batch. Two
 *            repetitions each, alternating (api, batch, outbox, api, batch, outbox), medians.
 *   notify   rows committed one per transaction at RATE/s for SECONDS s, the insert trigger on:
 *            lag per row from its COMMIT returning to its arrival at a member, p50/p99/max.
 *   poll     the same with the trigger disabled (no NOTIFY): only WS_OUTBOX_POLL (1 s) wakes C.
 *   stopped  rows committed at RATE/s; C stopped (SIGTERM) for STOP_S s while they keep coming,
 *            started again: every row received once by every member, in order per room; the
 *            backlog at the restart and the time to drain it.
 *
 * One JSON line per phase to stdout, then a table; progress to stderr. Run `npm run build` first:
 *   node bench/outbox.mjs [rows=10000] [rate=200] [seconds=10] [stop_s=30] [rooms=10] [members=2]
 * The whole run is bounded (10 minutes, each wait 120 s); postgres, redis-server and the nodes are
 * killed (by pid) however this exits.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pg from 'pg';
import WebSocket from 'ws';
import { freePort, median, sleep, startRedisServer, startServer } from './lib.mjs';

const [N = 10_000, RATE = 200, SECONDS = 10, STOP_S = 30, ROOMS = 10, MEMBERS = 2] = process.argv.slice(2).map(Number);
const SECRET = 'bench-secret-that-is-long-enough-for-hs256-0123456789';
const API_KEY = 'bench-outbox-api-key-0123456789abcdef';
const WAIT_MS = 120_000;
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = resolve(root, 'dist');
const { signToken } = await import(pathToFileURL(resolve(dist, 'auth.js')).href);
const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 19)}]`, ...a);
setTimeout(() => {
  log('run over 10 minutes: giving up');
  process.exit(2);
}, 600_000).unref();

const pids = new Set();
const dirs = [];
process.on('exit', () => {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));
const waitFor = async (what, check, timeoutMs = WAIT_MS, everyMs = 20) => {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== false && value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
};
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

// ---------------------------------------------------------------------------------------------
// PostgreSQL and redis-server.
const pgRoot = '/usr/lib/postgresql';
const version = existsSync(pgRoot) ? readdirSync(pgRoot).filter((v) => existsSync(join(pgRoot, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a))[0] : undefined;
if (version === undefined) throw new Error('PostgreSQL not found under /usr/lib/postgresql/<version>/bin (apt-get install postgresql)');
const bin = join(pgRoot, version, 'bin');
const asServerUser = (argv) => (process.getuid() === 0 ? ['setpriv', ['--reuid=postgres', '--regid=postgres', '--init-groups', '--', ...argv]] : [argv[0], argv.slice(1)]);
const pgDir = mkdtempSync(join(os.tmpdir(), 'wsedge-bench-pg-'));
dirs.push(pgDir);
if (process.getuid() === 0) chownSync(pgDir, Number(execFileSync('id', ['-u', 'postgres'])), Number(execFileSync('id', ['-g', 'postgres'])));
execFileSync(...asServerUser([join(bin, 'initdb'), '-D', join(pgDir, 'data'), '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync']), { stdio: 'ignore', cwd: pgDir });
const pgPort = await freePort();
// Durable commits as in production (fsync on), on whatever disk the temporary directory is.
const pgChild = spawn(...asServerUser([join(bin, 'postgres'), '-D', join(pgDir, 'data'), '-p', String(pgPort), '-k', pgDir, '-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200']), { stdio: 'ignore', cwd: pgDir });
pids.add(pgChild.pid);
const dbUrl = `postgres://postgres@127.0.0.1:${pgPort}/postgres`;
const db = new pg.Pool({ connectionString: dbUrl, max: 8 });
await waitFor('postgres', () => db.query('SELECT 1').then(() => true, () => false), 30_000, 100);
await db.query(readFileSync(resolve(root, 'sql/outbox.sql'), 'utf8'));

const { port: redisPort, pid: redisPid } = await startRedisServer(900, (child) => pids.add(child.pid));
pids.add(redisPid);
log(`PostgreSQL ${version} on ${pgPort}, redis-server on ${redisPort}`);

// ---------------------------------------------------------------------------------------------
// Nodes: C consumes the outbox, E holds the members.
const rooms = Array.from({ length: ROOMS }, (_, i) => `task:o${i}`);
const nodeEnv = (id, outbox) => ({ NODE_ID: id, HOST: '127.0.0.1', PORT: '0', INTERNAL_HOST: '127.0.0.1', INTERNAL_PORT: '0', JWT_SECRET: SECRET, REDIS_URL: `redis://127.0.0.1:${redisPort}`, REDIS_PREFIX: 'bench:', WS_HISTORY_ROOMS: 'task:*', WS_HISTORY_SIZE: '1000', PUBLISH_API_KEY: API_KEY, LOG_LEVEL: 'info', WS_DRAIN_TIMEOUT: '1', ...(outbox && { WS_OUTBOX_URL: dbUrl }) });
const startNode = (id, outbox) => startServer([resolve(dist, 'cli.js'), 'serve'], nodeEnv(id, outbox), { onSpawn: (child) => pids.add(child.pid) });
let consumer = await startNode('oc', true);
const edge = await startNode('oe', false);

/** Every event's arrival time by tag, room and n, per member. */
const members = [];
for (let i = 0; i < MEMBERS; i += 1) {
  const token = signToken({ secret: SECRET, userId: `m${i}`, rooms: ['*'], ttlSeconds: 3600 });
  const ws = new WebSocket(`ws://127.0.0.1:${edge.port}/api/v1/ws/connect?token=${token}`);
  const member = { got: new Map(), count: new Map(), joined: 0 };
  await new Promise((resolve_, reject) => {
    ws.on('message', (raw) => {
      const msg = JSON.parse(String(raw));
      if (msg.type === 'connected') resolve_();
      if (msg.type === 'room_joined') member.joined += 1;
      if (msg.type !== 'task.numbered') return;
      const { tag, n } = msg.data;
      const key = `${tag}|${msg.room}`;
      if (!member.got.has(key)) member.got.set(key, []);
      member.got.get(key).push([n, Date.now()]);
      member.count.set(tag, (member.count.get(tag) ?? 0) + 1);
    });
    ws.once('error', reject);
  });
  rooms.forEach((room, id) => ws.send(JSON.stringify({ type: 'join_room', room, id: `j${id}` })));
  members.push(member);
}
await waitFor('members joined', () => members.every((m) => m.joined === ROOMS), 30_000);
const everyMemberHas = (tag, count) => waitFor(`${count} ${tag} events at every member`, () => members.every((m) => (m.count.get(tag) ?? 0) >= count) && Date.now());
log(`nodes up; ${MEMBERS} members in ${ROOMS} rooms`);

// ---------------------------------------------------------------------------------------------
// Throughput: the API against the outbox.
async function viaApi(tag, count) {
  const started = Date.now();
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const n = (next += 1);
      const res = await fetch(`http://127.0.0.1:${consumer.internalPort}/api/v1/publish`, {
        method: 'POST',
        headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ room: rooms[n % ROOMS], type: 'task.numbered', data: { tag, n } }),
      });
      if (res.status !== 200) throw new Error(`publish answered ${res.status}: ${await res.text()}`);
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  return (await everyMemberHas(tag, count)) - started;
}

/** The API with the outbox's batching: POST /api/v1/publish/batch, 100 publications a request, 4 in flight. */
async function viaBatch(tag, count, per = 100) {
  const started = Date.now();
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const first = next + 1;
      const last = Math.min(count, next + per);
      next = last;
      const publications = [];
      for (let n = first; n <= last; n += 1) publications.push({ room: rooms[n % ROOMS], type: 'task.numbered', data: { tag, n } });
      const res = await fetch(`http://127.0.0.1:${consumer.internalPort}/api/v1/publish/batch`, {
        method: 'POST',
        headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ publications }),
      });
      if (res.status !== 200) throw new Error(`publish/batch answered ${res.status}: ${await res.text()}`);
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  return (await everyMemberHas(tag, count)) - started;
}

/** `count` rows committed by 4 writers, `per` rows per transaction, row n to rooms[n % ROOMS]. */
async function viaOutbox(tag, count, per = 100) {
  const started = Date.now();
  let next = 0;
  const writer = async () => {
    const client = await db.connect();
    try {
      while (next < count) {
        const first = next + 1;
        const last = Math.min(count, next + per);
        next = last;
        const values = [];
        for (let n = first; n <= last; n += 1) values.push(`('{"room":"${rooms[n % ROOMS]}"}', 'task.numbered', '{"tag":"${tag}","n":${n}}')`);
        await client.query(`INSERT INTO ws_edge_outbox (targets, type, data) VALUES ${values.join(',')}`);
      }
    } finally {
      client.release();
    }
  };
  await Promise.all(Array.from({ length: 4 }, writer));
  return (await everyMemberHas(tag, count)) - started;
}

const results = [];
const emit = (row) => {
  results.push(row);
  console.log(JSON.stringify(row));
};
const rates = { api: [], batch: [], outbox: [] };
for (let rep = 1; rep <= 2; rep += 1) {
  for (const [kind, run] of [['api', viaApi], ['batch', viaBatch], ['outbox', viaOutbox]]) {
    const ms = await run(`${kind}${rep}`, N);
    rates[kind].push((N / ms) * 1000);
    log(`${kind} rep ${rep}: ${N} in ${ms} ms, ${Math.round((N / ms) * 1000)}/s`);
  }
}
emit({ phase: 'throughput', rows: N, api_per_s: Math.round(median(rates.api)), batch_per_s: Math.round(median(rates.batch)), outbox_per_s: Math.round(median(rates.outbox)), ratio_outbox_api: +(median(rates.outbox) / median(rates.api)).toFixed(2), ratio_outbox_batch: +(median(rates.outbox) / median(rates.batch)).toFixed(2), runs: Object.fromEntries(Object.entries(rates).map(([k, v]) => [k, v.map(Math.round)])) });

// ---------------------------------------------------------------------------------------------
// Lag: one row per transaction at RATE/s, with NOTIFY and with polling only.
/** Commits rows n = 1.. at `rate`/s until `until()`; returns each row's commit time by n. */
async function paced(tag, rate, until) {
  const client = await db.connect();
  const committed = new Map();
  const started = Date.now();
  try {
    for (let n = 1; !until(n); n += 1) {
      const due = started + ((n - 1) * 1000) / rate;
      if (due > Date.now()) await sleep(due - Date.now());
      await client.query('INSERT INTO ws_edge_outbox (targets, type, data) VALUES ($1, $2, $3)', [{ room: rooms[n % ROOMS] }, 'task.numbered', { tag, n }]);
      committed.set(n, Date.now());
    }
  } finally {
    client.release();
  }
  return committed;
}

function lagsOf(tag, committed) {
  const lags = [];
  for (const m of members) for (const [key, list] of m.got) if (key.startsWith(`${tag}|`)) for (const [n, at] of list) lags.push(at - committed.get(n));
  return lags.sort((a, b) => a - b);
}

for (const mode of ['notify', 'poll']) {
  await db.query(`ALTER TABLE ws_edge_outbox ${mode === 'notify' ? 'ENABLE' : 'DISABLE'} TRIGGER ws_edge_outbox_notify`);
  const count = RATE * SECONDS;
  const committed = await paced(mode, RATE, (n) => n > count);
  await everyMemberHas(mode, count);
  const lags = lagsOf(mode, committed);
  emit({ phase: `lag_${mode}`, rows: count, rate: RATE, p50_ms: pct(lags, 50), p99_ms: pct(lags, 99), max_ms: lags.at(-1) });
}
await db.query('ALTER TABLE ws_edge_outbox ENABLE TRIGGER ws_edge_outbox_notify');

// ---------------------------------------------------------------------------------------------
// The consumer stopped for STOP_S s while the product keeps committing, then started again.
let writing = true;
const stoppedRun = paced('stopped', RATE, () => !writing);
await everyMemberHas('stopped', RATE * 2);
const stopAt = Date.now();
const exited = new Promise((r) => consumer.child.once('exit', r));
consumer.child.kill('SIGTERM');
await exited;
log(`consumer stopped; the product keeps committing for ${STOP_S} s`);
await sleep(STOP_S * 1000 - (Date.now() - stopAt));
const backlog = Number((await db.query('SELECT count(*)::int AS n FROM ws_edge_outbox')).rows[0].n);
const restartAt = Date.now();
consumer = await startNode('oc2', true);
const drained = await waitFor('the backlog drained', async () => Number((await db.query('SELECT count(*)::int AS n FROM ws_edge_outbox')).rows[0].n) < RATE && Date.now());
writing = false;
const committed = await stoppedRun;
await everyMemberHas('stopped', committed.size);
let received = 0;
let duplicated = 0;
let outOfOrder = 0;
let lost = 0;
for (const m of members) {
  const seen = new Set();
  for (const [key, list] of m.got) {
    if (!key.startsWith('stopped|')) continue;
    let last = 0;
    for (const [n] of list) {
      received += 1;
      if (seen.has(n)) duplicated += 1;
      seen.add(n);
      if (n <= last) outOfOrder += 1;
      last = n;
    }
  }
  for (const n of committed.keys()) if (!seen.has(n)) lost += 1;
}
emit({ phase: 'stopped', stop_s: STOP_S, rate: RATE, committed: committed.size, members: MEMBERS, expected: committed.size * MEMBERS, received, duplicated, lost, out_of_order: outOfOrder, backlog_at_restart: backlog, drain_ms: drained - restartAt });

console.error('\nphase        result');
for (const r of results) console.error(`${r.phase.padEnd(12)} ${JSON.stringify(r)}`);
console.error(`\n${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), PostgreSQL ${version}, node ${process.version}`);
process.exit(0);
