// One client process of bench/scale.mjs, driven over IPC: it holds a slice of the connections
// (raw `net` clients from bench/loadgen.mjs, so thousands cost little CPU), joins each to its channel
// room and the big sequenced room, counts what arrives (membership frames, the big room's events by
// offset) and, when a node is killed, reconnects its clients to the survivors with the client
// library's backoff (full jitter: random(0, min(cap, base * 2^attempt)), attempt reset by each
// `connected`) and a `resume` that carries the big room's last position.
// It exits when the bench goes away, or after MAX_LIFETIME_MS.
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createStats, nowMs, openClient, textFrame } from './loadgen.mjs';

const MAX_LIFETIME_MS = 30 * 60_000;
/** A room refused with an error during a resume (`unavailable`, a join timeout) is asked again after this, as the client library does. */
const REJOIN_AFTER_MS = 1000;
setTimeout(() => process.exit(3), MAX_LIFETIME_MS).unref();
process.on('disconnect', () => process.exit(0));

const { signToken } = await import(pathToFileURL(resolve(process.env.BENCH_DIST, 'auth.js')).href);

let cfg; // from `init`
let clients = [];
const live = new Set(); // node indexes still up
let killedAt = 0;
let expected = 0; // clients connected to the killed node when it was killed
let stopping = false;
/** loadgen's delivery counters: only frames that arrive before a client is attached land there (none expected). */
const stats = createStats();

/** Counters since start; the bench takes differences between phases. */
const counters = {
  user_joined: 0,
  user_left: 0,
  ticks: 0,
  early_ticks: 0, // a big-room event before the connection's position was known
  epoch_changes: 0,
  room_resets: 0,
  errors: {}, // error code -> count
  other: {}, // any other message type -> count
  unexpected_closes: 0, // closes of clients whose node was not killed
  ramp_failures: 0,
};
const failures = {}; // handshake failure reason -> count (ramp and reconnects)

const count = (table, key) => (table[key] = (table[key] ?? 0) + 1);
const reasonOf = (err) => String(err?.message ?? err).replace(/[0-9a-f]{8,}/g, '…').slice(0, 60);

const commands = {
  init(args) {
    cfg = args;
    for (let k = 0; k < cfg.nodes.length; k++) live.add(k);
    clients = Array.from({ length: cfg.count }, (_, j) => {
      const g = cfg.first + j;
      return {
        g,
        node: g % cfg.nodes.length,
        token: signToken({ secret: cfg.secret, userId: `s${g}`, rooms: ['*'], ttlSeconds: 3 * 3600 }),
        channel: `channel:c${g % cfg.rooms}`,
        inBig: (g % 1000) < cfg.bigShare * 1000,
        conn: null,
        pending: 0,
        epoch: undefined,
        last: undefined, // the big room's last offset this connection has
        lost: 0, // offsets skipped without being told (a gap in the live stream or a replay)
        dup: 0, // offsets at or below the last one
        skipped: 0, // offsets skipped after a `recovered: false` (the node said so)
        attempt: 0,
        attempts: 0, // reconnect attempts after the kill
        killed: false, // dropped by the kill: one of the clients the storm measures
        dropped: false,
        since: undefined,
        recovered: undefined,
        connectStartedAt: 0,
        connectedAt: 0,
        resumeSentAt: 0,
        readyAt: 0, // every room answered
        backAt: 0, // every room answered again after the drop
      };
    });
    return { clients: clients.length };
  },

  async ramp({ concurrency }) {
    const startedAt = nowMs();
    let next = 0;
    const lane = async () => {
      while (next < clients.length) {
        const c = clients[next++];
        c.connectStartedAt = nowMs();
        try {
          attach(c, await open(c));
        } catch (err) {
          counters.ramp_failures += 1;
          count(failures, `ramp: ${reasonOf(err)}`);
          reconnectLater(c);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, clients.length) }, lane));
    const lastConnectedAt = Math.max(...clients.map((c) => c.connectedAt));
    // Joins are answered in the background; wait for them (bounded).
    for (let i = 0; i < 1200 && clients.some((c) => c.readyAt === 0); i++) await sleep(100);
    const ready = clients.filter((c) => c.readyAt > 0);
    return {
      startedAt,
      lastConnectedAt,
      lastReadyAt: Math.max(0, ...ready.map((c) => c.readyAt)),
      connected: clients.filter((c) => c.connectedAt > 0).length,
      ready: ready.length,
    };
  },

  counters() {
    return { ...counters, errors: { ...counters.errors }, other: { ...counters.other }, failures: { ...failures } };
  },

  /** The bench is about to kill node `node` (kill -9): its clients reconnect to the others. */
  nodeDown({ node, at }) {
    live.delete(node);
    killedAt = at;
    expected = clients.filter((c) => c.node === node && c.conn !== null).length;
    return { clients: expected };
  },

  /** The storm's progress: the killed node's clients back (every room answered after a resume). */
  status() {
    const killed = clients.filter((c) => c.killed);
    return { dropped: killed.length, back: killed.filter((c) => c.backAt > 0).length, expected };
  },

  /**
   * After the last publish: waits (bounded) until every ready client in the big room has `offset`,
   * then reports per-client loss (gaps seen plus a missing tail), duplicates and the storm's times.
   */
  async final({ offset, epoch, waitMs }) {
    const inBig = () => clients.filter((c) => c.inBig && c.conn !== null && c.pending === 0);
    for (let waited = 0; waited < waitMs && inBig().some((c) => c.last < offset); waited += 100) await sleep(100);
    const killed = clients.filter((c) => c.killed);
    const perClient = clients.filter((c) => c.inBig).map((c) => {
      const here = c.conn !== null && c.pending === 0 && c.epoch === epoch;
      const tail = here && c.last < offset ? offset - c.last : 0;
      return { lost: c.lost + tail, dup: c.dup, skipped: c.skipped, tail };
    });
    return {
      in_big: perClient.length,
      not_connected: clients.filter((c) => c.conn === null).length,
      not_ready: clients.filter((c) => c.conn !== null && c.pending > 0).length,
      lost: perClient.map((p) => p.lost),
      dup: perClient.map((p) => p.dup),
      skipped: perClient.map((p) => p.skipped),
      tail: perClient.reduce((s, p) => s + p.tail, 0),
      killed: killed.length,
      back: killed.filter((c) => c.backAt > 0).length,
      back_ms: killed.filter((c) => c.backAt > 0).map((c) => c.backAt - killedAt),
      // From the start of the attempt that succeeded: its handshake, then its resume.
      reconnect_resume_ms: killed.filter((c) => c.backAt > 0).map((c) => c.backAt - c.connectStartedAt),
      handshake_ms: killed.filter((c) => c.backAt > 0).map((c) => c.connectedAt - c.connectStartedAt),
      resume_ms: killed.filter((c) => c.backAt > 0).map((c) => c.backAt - c.resumeSentAt),
      attempts: killed.map((c) => c.attempts),
      missed_at_resume: killed.filter((c) => c.recovered !== undefined && c.since !== undefined).map((c) => c.missed),
      recovered_true: killed.filter((c) => c.recovered === true).length,
      recovered_false: killed.filter((c) => c.recovered === false).length,
    };
  },

  stop() {
    stopping = true;
    for (const c of clients) c.conn?.socket.destroy();
    setTimeout(() => process.exit(0), 100);
    return { ok: true };
  },
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function open(c) {
  const { port } = cfg.nodes[c.node];
  return openClient({ port, localAddress: cfg.localAddresses[c.g % cfg.localAddresses.length], protocol: 'edge', token: c.token, stats });
}

/** A client was accepted (`connected`): read every frame from now on, and (re)join its rooms. */
function attach(c, conn) {
  c.conn = conn;
  c.connectedAt = nowMs();
  c.attempt = 0;
  conn.inspect = (text) => onText(c, text);
  conn.onClose = () => onClose(c);
  if (conn.closed) return onClose(c);
  const rooms = [c.channel, ...(c.inBig ? [cfg.bigRoom] : [])];
  c.pending = rooms.length;
  if (!c.dropped) {
    // The ramp: a fresh client joins its rooms, one write.
    conn.socket.write(Buffer.concat(rooms.map((room) => textFrame(JSON.stringify({ type: 'join_room', room, id: `j:${room}` })))));
    return;
  }
  // After a drop: every room in one `resume`, the big room with the last position it has.
  c.since = c.last;
  const list = rooms.map((room) => (room === cfg.bigRoom && c.epoch !== undefined ? { room, since: { epoch: c.epoch, offset: c.last } } : { room }));
  c.resumeSentAt = nowMs();
  conn.socket.write(textFrame(JSON.stringify({ type: 'resume', id: 'r', rooms: list })));
}

function onClose(c) {
  if (c.conn === null) return;
  c.conn = null;
  c.pending = 0;
  if (stopping) return;
  if (!c.dropped || c.backAt > 0 || c.readyAt > 0) {
    // A drop of a connected client: by the kill, or unexpected.
    if (!live.has(c.node) && killedAt > 0) c.killed = true;
    else counters.unexpected_closes += 1;
    c.dropped = true;
    c.backAt = 0;
    c.readyAt = 0;
  }
  reconnectLater(c);
}

function reconnectLater(c) {
  const delay = Math.random() * Math.min(cfg.backoffCapMs, cfg.backoffMs * 2 ** c.attempt);
  c.attempt += 1;
  setTimeout(() => reconnect(c), delay);
}

async function reconnect(c) {
  if (stopping) return;
  // Route to a live node: the same one when it is still up, else spread over the survivors.
  if (!live.has(c.node)) {
    const nodes = [...live];
    c.node = nodes[c.g % nodes.length];
  }
  c.dropped = true;
  if (c.killed) c.attempts += 1;
  c.connectStartedAt = nowMs();
  try {
    attach(c, await open(c));
  } catch (err) {
    count(failures, reasonOf(err));
    reconnectLater(c);
  }
}

function offsetIn(text) {
  const i = text.lastIndexOf('"offset":');
  return i < 0 ? undefined : parseInt(text.slice(i + 9, i + 30), 10);
}

function epochIn(text) {
  const i = text.lastIndexOf('"epoch":"');
  return i < 0 ? undefined : text.slice(i + 9, text.indexOf('"', i + 9));
}

function onText(c, text) {
  if (text.startsWith('{"type":"bench.tick"')) {
    counters.ticks += 1;
    if (c.last === undefined) return void (counters.early_ticks += 1);
    const offset = offsetIn(text);
    const epoch = epochIn(text);
    if (epoch !== c.epoch) {
      counters.epoch_changes += 1;
      c.epoch = epoch;
      c.last = offset;
      return;
    }
    if (offset <= c.last) c.dup += 1;
    else {
      if (offset > c.last + 1) c.lost += offset - c.last - 1;
      c.last = offset;
    }
    return;
  }
  if (text.startsWith('{"type":"user_joined"')) return void (counters.user_joined += 1);
  if (text.startsWith('{"type":"user_left"')) return void (counters.user_left += 1);
  if (text.startsWith('{"type":"room_joined"')) {
    const msg = JSON.parse(text);
    if (msg.room === cfg.bigRoom) onBigPosition(c, msg);
    return roomAnswered(c);
  }
  if (text.startsWith('{"type":"resumed"')) return;
  const msg = JSON.parse(text);
  if (msg.type === 'error') {
    count(counters.errors, msg.data?.code ?? 'unknown');
    // A room the node could not answer (a resume names it in `room`, a join in its id): ask for
    // it again, as the client library does.
    const room = msg.room ?? (msg.id?.startsWith('j:') ? msg.id.slice(2) : undefined);
    if (room !== undefined && c.conn !== null) {
      const conn = c.conn;
      setTimeout(() => {
        if (c.conn !== conn || conn.closed) return;
        const since = room === cfg.bigRoom && c.epoch !== undefined ? { epoch: c.epoch, offset: c.last } : undefined;
        conn.socket.write(textFrame(JSON.stringify({ type: 'join_room', room, id: `j:${room}`, ...(since && { since }) })));
      }, REJOIN_AFTER_MS);
    }
    return;
  }
  if (msg.type === 'room_reset') {
    counters.room_resets += 1;
    if (msg.room === cfg.bigRoom) {
      c.epoch = msg.epoch;
      c.last = msg.offset;
    }
    return;
  }
  count(counters.other, msg.type);
}

/** A `room_joined` of the big room: its position (first join), or the outcome of a recovery. */
function onBigPosition(c, msg) {
  if (c.last === undefined || msg.recovered === undefined) {
    c.epoch = msg.epoch;
    c.last = msg.offset;
    return;
  }
  if (c.killed && c.recovered === undefined) {
    c.recovered = msg.recovered;
    c.missed = msg.epoch === c.epoch ? msg.offset - c.since : undefined;
  }
  if (msg.epoch !== c.epoch) {
    counters.epoch_changes += 1;
  } else if (msg.recovered) {
    // Every missed event came before this reply; a shortfall is a loss.
    if (msg.offset > c.last) c.lost += msg.offset - c.last;
  } else if (msg.offset > c.last) {
    c.skipped += msg.offset - c.last;
  }
  if (msg.epoch !== c.epoch || msg.offset > c.last) c.last = msg.offset;
  c.epoch = msg.epoch;
}

function roomAnswered(c) {
  if (c.pending === 0) return;
  c.pending -= 1;
  if (c.pending > 0) return;
  const at = nowMs();
  if (c.dropped) {
    c.backAt = at;
    c.readyAt = at;
  } else c.readyAt = at;
}

process.on('message', async ({ id, cmd, args }) => {
  try {
    process.send({ id, result: await commands[cmd](args ?? {}) });
  } catch (err) {
    process.send({ id, error: err.stack ?? String(err) });
  }
});
process.send({ ready: true });
