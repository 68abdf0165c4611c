#!/usr/bin/env node
/**
 * What ws-edge/client costs per received event, against the least any client does (one JSON.parse
 * and a call to the app's handler), in the same run: time per event and bytes allocated per event.
 * Frames are fed to the client's socket handler directly (a scripted socket), so only the client's
 * own work is measured. Needs `npm run build`. Run: node --expose-gc --max-semi-space-size=128 bench/client-dispatch.mjs
 */
import { createClient } from '../dist/client/index.js';

const EVENTS = 100_000;
const ROUNDS = 7;
if (typeof globalThis.gc !== 'function') throw new Error('run with --expose-gc --max-semi-space-size=128');

const frames = Array.from({ length: EVENTS }, (_, i) =>
  JSON.stringify({ type: 'task.updated', room: 'task:7', data: { task_id: 7, status: 'done', n: i }, sender: 'alice', timestamp: '2026-12-07T10:15:30.123Z', offset: i + 1, epoch: '3f9a1c0e2' }),
);
const CONNECTED = JSON.stringify({ type: 'connected', timestamp: '', data: { connection_id: 'n.1', user_id: 'a', username: 'a', heartbeat_interval: 30, max_message_size: 1 << 20, rooms: [] } });

let socket;
class Scripted {
  onmessage = null;
  onclose = null;
  onerror = null;
  constructor() {
    socket = this;
  }
  send(frame) {
    const msg = JSON.parse(frame);
    if (msg.type === 'join_room') queueMicrotask(() => this.onmessage({ data: JSON.stringify({ type: 'room_joined', id: msg.id, room: msg.room, epoch: '3f9a1c0e2', offset: 0, timestamp: '' }) }));
  }
  close() {}
}

let seen = 0;
const handler = (e) => {
  seen += e.offset > 0 ? 1 : 0;
};
const client = createClient({ url: 'ws://bench', token: 'token', WebSocket: Scripted, pingAfter: 0 });
client.connect();
await new Promise((r) => setTimeout(r, 10));
socket.onmessage({ data: CONNECTED });
await client.join('task:7', { event: handler });

/** Runs `feed` over every frame: ns per event and heap bytes per event (no GC may run inside). */
function measure(feed) {
  globalThis.gc();
  const heap = process.memoryUsage().heapUsed;
  const started = process.hrtime.bigint();
  for (let i = 0; i < EVENTS; i++) feed(frames[i]);
  const ns = Number(process.hrtime.bigint() - started) / EVENTS;
  return { ns, bytes: (process.memoryUsage().heapUsed - heap) / EVENTS };
}

const baseline = (text) => handler(JSON.parse(text));
const viaClient = (text) => socket.onmessage({ data: text });

const results = { baseline: [], client: [] };
for (let round = 0; round < ROUNDS; round++) {
  results.baseline.push(measure(baseline));
  // The client drops offsets it has handed over already: a reset to another epoch makes the round's events new again.
  socket.onmessage({ data: JSON.stringify({ type: 'room_reset', room: 'task:7', epoch: 'other', offset: 0, timestamp: '' }) });
  results.client.push(measure(viaClient));
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const summary = (rs) => ({ ns_per_event: Number(median(rs.map((r) => r.ns)).toFixed(1)), bytes_per_event: Math.round(median(rs.map((r) => r.bytes))) });
const b = summary(results.baseline);
const c = summary(results.client);
console.log(JSON.stringify({ events: EVENTS, rounds: ROUNDS, node: process.version, baseline: b, client: c, time_ratio: Number((c.ns_per_event / b.ns_per_event).toFixed(2)), extra_bytes_per_event: c.bytes_per_event - b.bytes_per_event, handed_to_app: seen }));
client.close();
