#!/usr/bin/env node
/**
 * Room history in Redis (sequenced rooms): Redis memory per kept event and per room, and the rate
 * of appends from one node against the rate of plain PUBLISHes of the same bytes over the same
 * connection (same run, so the ratio holds on a noisy machine). Needs a redis-server:
 *   BENCH_REDIS_URL=redis://127.0.0.1:6379 node bench/history.mjs [rooms=500] [events=100]
 * Run `npm run build` first; the database is flushed.
 */
import { loadConfig } from '../dist/config.js';
import { headOf } from '../dist/history.js';
import { encodeEvent } from '../dist/protocol.js';
import { createRedisClients } from '../dist/redis/clients.js';
import { createRedisHistory } from '../dist/redis/history.js';

const url = process.env.BENCH_REDIS_URL;
if (!url) throw new Error('set BENCH_REDIS_URL to a redis-server this may flush');
const rooms = Number(process.argv[2] ?? 500);
const events = Number(process.argv[3] ?? 100);
const config = loadConfig({ REDIS_URL: url, NODE_ID: 'bench', WS_HISTORY_SIZE: String(events) });
const redis = createRedisClients(config.redis, 'bench');
await new Promise((resolve) => redis.command.once('ready', resolve));
await redis.command.flushall();
const history = createRedisHistory({ command: redis.command, cluster: false, prefix: config.redis.prefix, nodeId: 'bench', history: config.history });
const used = async () => Number(/used_memory:(\d+)/.exec(await redis.command.info('memory'))[1]);
const data = { task_id: 123, project_id: 42, changes: { title: 'x'.repeat(100), status: 'in_progress' } };
const event = (room) => encodeEvent('task.updated', room, data, 'Alice');

const before = await used();
for (let r = 0; r < rooms; r++) {
  const room = `task:${r}`;
  await Promise.all(Array.from({ length: events }, () => history.append(room, headOf(event(room)))));
}
const grown = (await used()) - before;
const stored = event('task:1').length + ',"offset":100,"epoch":"0123456789"'.length;

async function rate(name, once) {
  const n = 20_000;
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: n }, (_, i) => once(i)));
  return Math.round((n / Number(process.hrtime.bigint() - started)) * 1e9);
}
const payload = event('task:1');
const publishes = await rate('publish', () => redis.publish(`${config.redis.prefix}room:task:1`, payload));
const appends = await rate('append', (i) => history.append(`task:${i % 50}`, headOf(payload)));
console.log(
  JSON.stringify({
    rooms,
    events_per_room: events,
    stored_event_bytes: stored,
    redis_bytes_per_event: Math.round(grown / rooms / events),
    redis_bytes_per_room: Math.round(grown / rooms),
    publishes_per_s: publishes,
    appends_per_s: appends,
    append_to_publish: Number((appends / publishes).toFixed(2)),
  }),
);
await redis.close();
