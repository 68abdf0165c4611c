// One load-generator process, driven by bench/run.mjs over IPC: it opens clients, joins rooms,
// publishes, counts deliveries and samples latency. Several run side by side because one process
// may hold fewer than 20,000 sockets. It exits when its parent goes away or after MAX_LIFETIME_MS.
import { createSigner } from 'fast-jwt';
import { createStats, joinRooms, messageData, nowMs, openClient, openClients, PROTOCOLS } from './loadgen.mjs';

const MAX_LIFETIME_MS = 15 * 60_000;
/** A window publisher whose probe sees nothing for this long starts over (an event was lost). */
const STALL_MS = 2000;
setTimeout(() => process.exit(3), MAX_LIFETIME_MS).unref();
process.on('disconnect', () => process.exit(0));

const stats = createStats();
let clients = [];
let tokens = [];
let protocol = 'edge';
let publisher; // the publishing client, when this process has one
let publishing; // the running publish loop: { sent, stop() }
let firstError;

const roomsFor = (spec) => {
  if (spec.kind === 'same') return () => spec.names;
  // `spread`: client i joins perClient consecutive slots of a ring of `rooms` rooms, so every room
  // gets clients * perClient / rooms members, all of them in this process.
  return (i) => Array.from({ length: spec.perClient }, (_, k) => `channel:r${spec.firstRoom + ((i * spec.perClient + k) % spec.rooms)}`);
};

const commands = {
  prepare({ secret, firstIndex, count, server }) {
    protocol = server;
    const sign = createSigner({ key: secret, expiresIn: 3_600_000 });
    tokens = Array.from({ length: count }, (_, i) => sign({ sub: `u${firstIndex + i}`, rooms: ['*'] }));
    return { tokens: tokens.length };
  },

  async connect({ port, localAddresses, concurrency }) {
    const startedAt = nowMs();
    const result = await openClients({
      port,
      protocol,
      stats,
      count: tokens.length,
      concurrency,
      localAddresses,
      tokenFor: (i) => tokens[i],
      onFailure: (err) => (firstError ??= err.message),
    });
    clients = result.clients;
    return { connected: clients.length, failed: result.failed, startedAt, endedAt: nowMs(), firstError };
  },

  async join({ rooms }) {
    const started = nowMs();
    const result = await joinRooms({ clients, protocol, roomsOf: roomsFor(rooms) });
    return { ...result, seconds: (nowMs() - started) / 1000 };
  },

  /** The publishing client: one more connection (not counted), a member of `room`. */
  async publisher({ port, localAddress, secret, user, room }) {
    const token = createSigner({ key: secret, expiresIn: 3_600_000 })({ sub: user, rooms: ['*'] });
    const client = await openClient({ port, localAddress, protocol, token, stats });
    client.counted = false;
    await joinRooms({ clients: [client], protocol, roomsOf: () => [room] });
    publisher = client;
    return { ok: true };
  },

  /** The last open client becomes the probe whose deliveries pace a window publisher. */
  probe() {
    const probe = clients.findLast((c) => !c.closed);
    probe.probe = true;
    return { ok: true };
  },

  /** Every `every`-th client reads send times from its deliveries (0: none). */
  sample({ every }) {
    clients.forEach((c, i) => (c.sample = every > 0 && i % every === 0));
    return { sampling: clients.filter((c) => c.sample).length };
  },

  snapshot() {
    return { deliveries: stats.deliveries, probe: stats.probe, sent: publishing?.sent ?? 0, at: nowMs(), open: clients.filter((c) => !c.closed).length };
  },

  publish(options) {
    publishing?.stop();
    publishing = options.mode === 'spread' ? publishSpread(options) : publishOne(options);
    return { ok: true };
  },

  stopPublish() {
    publishing?.stop();
    const { sent, stalls } = publishing ?? { sent: 0, stalls: 0 };
    publishing = undefined;
    return { sent, stalls };
  },

  latency() {
    const samples = Float64Array.from(stats.latencies).sort();
    stats.latencies = [];
    const at = (q) => (samples.length === 0 ? null : +samples[Math.min(samples.length - 1, Math.floor(q * samples.length))].toFixed(2));
    return { count: samples.length, p50: at(0.5), p99: at(0.99), max: at(1) };
  },

  close() {
    publishing?.stop();
    for (const c of clients) c.socket.destroy();
    publisher?.socket.destroy();
    setTimeout(() => process.exit(0), 50);
    return { ok: true };
  },
};

/**
 * One publisher, one room. `window`: keeps at most `window` messages ahead of the probe's
 * deliveries, refilling in one write as they arrive (as fast as the server takes them).
 * `paced`: `rate` messages per second, sent every 5 ms.
 */
function publishOne({ mode, room, size, window, rate }) {
  const proto = PROTOCOLS[protocol];
  const socket = publisher.socket;
  const state = { sent: 0, stalls: 0, stop: () => {} };
  const burst = (n) => {
    const frames = new Array(n);
    for (let k = 0; k < n; k++) frames[k] = proto.publish(room, messageData(size));
    socket.write(n === 1 ? frames[0] : Buffer.concat(frames));
    state.sent += n;
  };
  if (mode === 'paced') {
    const started = nowMs();
    const timer = setInterval(() => {
      const due = Math.floor(((nowMs() - started) * rate) / 1000) - state.sent;
      if (due > 0) burst(due);
    }, 5);
    state.stop = () => clearInterval(timer);
    return state;
  }
  let base = stats.probe;
  let lastProgress = Date.now();
  let stopped = false;
  const refill = () => {
    if (stopped) return;
    lastProgress = Date.now();
    const free = window - (state.sent - (stats.probe - base));
    if (free > 0) burst(free);
  };
  const watchdog = setInterval(() => {
    if (Date.now() - lastProgress < STALL_MS) return;
    state.stalls += 1;
    base = stats.probe - state.sent; // forget what is in flight
    refill();
  }, 500);
  stats.onProbe = refill;
  refill();
  state.stop = () => {
    stopped = true;
    stats.onProbe = null;
    clearInterval(watchdog);
  };
  return state;
}

/**
 * Every client publishes to its own rooms, one write per client (a frame per room), round robin,
 * keeping at most `window` events undelivered. All members of a room are in this process, so an
 * event is complete after `members` local deliveries.
 */
function publishSpread({ rooms, size, window, members }) {
  const proto = PROTOCOLS[protocol];
  const roomsOf = roomsFor(rooms);
  const state = { sent: 0, stalls: 0, stop: () => {} };
  const base = stats.deliveries;
  let next = 0;
  let stopped = false;
  const refill = () => {
    if (stopped) return;
    while (window - (state.sent - (stats.deliveries - base) / members) >= rooms.perClient) {
      const i = next++ % clients.length;
      const mine = roomsOf(i);
      clients[i].socket.write(Buffer.concat(mine.map((room) => proto.publish(room, messageData(size)))));
      state.sent += mine.length;
    }
  };
  stats.onData = refill;
  refill();
  state.stop = () => {
    stopped = true;
    stats.onData = null;
  };
  return state;
}

process.on('message', async ({ id, cmd, args }) => {
  try {
    process.send({ id, ok: true, result: await commands[cmd](args ?? {}) });
  } catch (err) {
    process.send({ id, ok: false, error: err.message });
  }
});
process.send({ ready: true });
