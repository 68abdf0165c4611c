/**
 * ws-edge/client's sends across a lost connection, counted: three node processes on one Redis
 * behind the shipped HAProxy config, a sequenced room (the key kept with its history) and a plain
 * room (the key in Redis). A client sends numbered messages, a window of them in flight, while its
 * node is killed (-9) or drained (1012); a member connected straight to another node receives them.
 * Every send's promise must settle once, resolved, and the member must get each number once per
 * room (0 lost, 0 duplicated), from the sender's user id: a send whose reply the loss took is sent
 * again with its idempotency key, and the server answers a repeat with the first result. Whether a
 * kill catches a send published but unanswered is chance; the last test makes it certain (a
 * forwarder drops what the server sends, then cuts the link): every resend is then a repeat,
 * answered `duplicate: true` with the first send's position.
 */
import { connect as tcpConnect, createServer, type AddressInfo, type Socket } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createClient, type Client, type ClientOptions, type MessageSent } from '../../src/client/index.js';
import { token } from '../helpers/client.js';
import { startHaproxy, stopAllHaproxy, type Haproxy } from '../helpers/haproxy.js';
import { numbers, totalLoss } from '../helpers/numbered.js';
import { startNodeProcess, stopAllProcesses, type NodeProcess } from '../helpers/processes.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

const SEQUENCED = 'task:sends';
const PLAIN = 'channel:sends';
const ROOMS = [SEQUENCED, PLAIN];
/** At most WINDOW sends unanswered at a time; the fault comes after FAULT_AT went to every room, and the sending goes on for AFTER_MOVE more once the sender is on another node. */
const WINDOW = 16;
const FAULT_AT = 60;
const AFTER_MOVE = 60;
/** A send whose key a dead node claimed waits out the server's 30 s claim: the client retries it. */
const SETTLE_TIMEOUT_MS = 90_000;

afterAll(async () => {
  await stopAllHaproxy();
  await stopAllProcesses();
  await stopAllRedis();
});

interface Received {
  readonly n: number;
  readonly offset: number | undefined;
  readonly userId: string | undefined;
}

/** A library client in ROOMS, keeping the numbers of the message.new events it gets and the nodes it was on. */
function member(url: string, user: string, options: Partial<ClientOptions> = {}) {
  const got = new Map<string, Received[]>(ROOMS.map((r) => [r, []]));
  const nodes: string[] = [];
  const c = createClient({ url, token: () => token(user), WebSocket, ...options });
  c.on('connected', (data) => nodes.push(data.connection_id.split('.')[0]!));
  const joined = Promise.all(
    ROOMS.map((room) =>
      c.join(room, {
        event: (e) => e.type === 'message.new' && got.get(room)!.push({ n: (e.data as { n: number }).n, offset: e.offset, userId: e.user_id }),
      }),
    ),
  );
  c.connect();
  return { c, user, got, nodes, joined };
}

/** Every send's outcome, counted per room and number. */
function sendLog() {
  const settles = new Map<string, number>();
  const replies = new Map<string, MessageSent>();
  const errors: string[] = [];
  let issued = 0;
  return {
    issued: () => issued,
    settled: () => [...settles.values()].reduce((a, b) => a + b, 0),
    track(room: string, n: number, p: Promise<MessageSent>): Promise<void> {
      issued += 1;
      const key = `${room}#${n}`;
      const count = (): void => void settles.set(key, (settles.get(key) ?? 0) + 1);
      return p.then(
        (reply) => {
          count();
          replies.set(key, reply);
        },
        (err: { code?: string; message?: string }) => {
          count();
          errors.push(`${key}: ${err.code} ${err.message}`);
        },
      );
    },
    reply: (room: string, n: number) => replies.get(`${room}#${n}`),
    counts(ns: readonly number[]) {
      const keys = ROOMS.flatMap((room) => ns.map((n) => `${room}#${n}`));
      return {
        sends: keys.length,
        settled_once: keys.filter((k) => settles.get(k) === 1).length,
        settled_twice: keys.filter((k) => (settles.get(k) ?? 0) > 1).length,
        resolved: keys.filter((k) => replies.has(k)).length,
        rejected: errors.length,
        duplicate_replies: keys.filter((k) => replies.get(k)?.duplicate === true).length,
      };
    },
    errors,
  };
}

type Log = ReturnType<typeof sendLog>;

/**
 * Sends n = from, from + 1, ... to every room while `more(n)` (at least `from`), at most WINDOW
 * unanswered (the last ones are not waited for); `after(n)` once n went to every room. Resolves
 * with the last n once all are issued.
 */
async function sendNumbered(c: Client, log: Log, from: number, more: (n: number) => boolean, after: (n: number) => void = () => {}): Promise<number> {
  const open = new Set<Promise<void>>();
  for (let n = from; ; n++) {
    for (const room of ROOMS) {
      const p: Promise<void> = log.track(room, n, c.send(room, { n })).finally(() => open.delete(p));
      open.add(p);
    }
    after(n);
    if (!more(n)) return n;
    while (open.size >= WINDOW) await Promise.race(open);
  }
}
const upTo = (last: number) => (n: number) => n < last;

/** What the member got of 1..total: lost and duplicated numbers, events from another user id, and whether each room's numbers came in order. */
function delivery(reader: ReturnType<typeof member>, sender: string, total: number) {
  const sequences = ROOMS.map((room) => reader.got.get(room)!.map((r) => r.n));
  const { lost, duplicated } = totalLoss(total, sequences);
  const wrongSender = ROOMS.flatMap((room) => reader.got.get(room)!).filter((r) => r.userId !== sender).length;
  const inOrder = sequences.map((s) => s.every((n, i) => i === 0 || n > s[i - 1]!));
  return { lost, duplicated, wrong_sender: wrongSender, in_order: inOrder.every(Boolean), in_order_per_room: Object.fromEntries(ROOMS.map((r, i) => [r, inOrder[i]])) };
}

/** The sequenced room's replies carry the position the member saw the number at (a repeat's included). */
function positionsMatch(log: Log, reader: ReturnType<typeof member>, ns: readonly number[]): number {
  const seen = new Map(reader.got.get(SEQUENCED)!.map((r) => [r.n, r.offset]));
  return ns.filter((n) => log.reply(SEQUENCED, n)?.offset !== undefined && log.reply(SEQUENCED, n)!.offset === seen.get(n)).length;
}

interface Cluster {
  readonly nodes: NodeProcess[];
  readonly lb: Haproxy;
}

async function cluster(): Promise<Cluster> {
  const redis = await startRedis();
  const env = {
    REDIS_URL: redis.url,
    REDIS_PREFIX: uniquePrefix(),
    WS_HISTORY_ROOMS: 'task:*',
    WS_HISTORY_SIZE: '2000',
    WS_HISTORY_RECOVER_MAX: '2000',
    WS_ROOM_ACCESS: 'open',
    WS_RATE_LIMIT: '100000',
    WS_RATE_BURST: '100000',
    WS_DRAIN_TIMEOUT: '3',
  };
  const nodes = await Promise.all([startNodeProcess(env), startNodeProcess(env), startNodeProcess(env)]);
  return { nodes, lb: await startHaproxy(nodes.map((n) => n.port)) };
}

/** A sender through HAProxy and a reader on another node, both in ROOMS. */
async function pair(name: string, nodes: readonly NodeProcess[], senderUrl: string) {
  // queueSize: sends made while the sender is away wait for the next connection instead of failing.
  const sender = member(senderUrl, `${name}-sender`, { queueSize: 10_000 });
  await sender.joined;
  const home = nodes.find((n) => n.nodeId === sender.nodes[0])!;
  const reader = member(nodes.find((n) => n !== home)!.url, `${name}-reader`);
  await reader.joined;
  return { sender, reader, home };
}

async function scenario(name: string, fault: (victim: NodeProcess) => Promise<unknown>): Promise<void> {
  const { nodes, lb } = await cluster();
  const { sender, reader, home } = await pair(name, nodes, lb.url);
  const log = sendLog();
  let faulted: Promise<unknown> | undefined;
  let movedAt: number | undefined;
  const more = (n: number): boolean => {
    if (movedAt === undefined && sender.nodes.length > 1) movedAt = n;
    return movedAt === undefined || n < movedAt + AFTER_MOVE;
  };
  const total = await sendNumbered(sender.c, log, 1, more, (n) => n === FAULT_AT && (faulted = fault(home)));
  await faulted;
  await waitFor('every send settled', () => log.settled() >= log.issued(), SETTLE_TIMEOUT_MS).catch(() => {});
  await waitFor('the reader has every message', () => ROOMS.every((r) => reader.got.get(r)!.length >= total), 10_000).catch(() => {});
  sender.c.close();
  reader.c.close();

  const counts = log.counts(numbers(total));
  const got = delivery(reader, sender.user, total);
  const positions = positionsMatch(log, reader, numbers(total));
  console.log(JSON.stringify({ scenario: name, sent_per_room: total, fault_at: FAULT_AT, moved_at: movedAt, sender_nodes: sender.nodes.length, ...counts, ...got, sequenced_positions_matching: positions, errors: log.errors.slice(0, 5) }));
  expect(sender.nodes.length).toBeGreaterThanOrEqual(2);
  // A repeat (duplicate_replies) is whatever the fault caught published but unanswered: counted, not asserted.
  expect({ ...counts, ...got }).toMatchObject({ sends: 2 * total, settled_once: 2 * total, settled_twice: 0, resolved: 2 * total, rejected: 0, lost: 0, duplicated: 0, wrong_sender: 0 });
  expect(positions).toBe(total);
}

/**
 * A TCP forwarder for the sender: `mute()` drops what the server sends on the connections open now
 * (what the client sends still arrives: replies are lost, not sends), `cut()` then destroys them.
 * New connections pass both ways.
 */
async function replyDropper(targetPort: number) {
  const pairs = new Set<{ client: Socket; upstream: Socket; muted: boolean }>();
  const server = createServer((client) => {
    const upstream = tcpConnect(targetPort, '127.0.0.1');
    const link = { client, upstream, muted: false };
    pairs.add(link);
    client.on('data', (chunk) => upstream.write(chunk));
    upstream.on('data', (chunk) => void (link.muted || client.write(chunk)));
    const teardown = (): void => {
      pairs.delete(link);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.on('error', teardown);
      socket.on('close', teardown);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const cut = (): void => pairs.forEach((p) => (p.client.destroy(), p.upstream.destroy()));
  return {
    url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/api/v1/ws/connect`,
    mute: (): void => pairs.forEach((p) => (p.muted = true)),
    cut,
    stop: (): Promise<void> => (cut(), new Promise((resolve) => server.close(() => resolve()))),
  };
}

describe('ws-edge/client sends across a lost connection: each resolved once, each delivered once', () => {
  it('kill -9 of the sender’s node: sends in flight are sent again with their keys after the resume', { timeout: 150_000 }, async () => {
    await scenario('sends-kill9', (victim) => victim.kill9());
  });

  it('a drained node (1012): the same, after the restart spread', { timeout: 150_000 }, async () => {
    await scenario('sends-drain', (victim) => victim.stop());
  });

  it('replies lost for certain: every resend is answered duplicate with the first position, and nothing is delivered twice', { timeout: 60_000 }, async () => {
    const { nodes, lb } = await cluster();
    const link = await replyDropper(lb.port);
    const { sender, reader } = await pair('sends-lost-replies', nodes, link.url);
    const log = sendLog();
    const before = 5;
    // Every muted send goes out at once (2 rooms x 8 = WINDOW).
    const muted = 8;
    const total = before + muted + 5;
    const mutedNs = numbers(total).slice(before, before + muted);
    try {
      await sendNumbered(sender.c, log, 1, upTo(before));
      await waitFor('the first sends answered', () => log.settled() === log.issued(), 10_000);
      link.mute();
      const issued = sendNumbered(sender.c, log, before + 1, upTo(before + muted));
      // Published: the reader has them. Their replies went nowhere.
      await waitFor('the reader has the muted sends', () => ROOMS.every((r) => reader.got.get(r)!.length >= before + muted), 10_000);
      expect(log.settled(), JSON.stringify(log.errors)).toBe(2 * before);
      link.cut();
      await issued;
      await waitFor('the muted sends answered after the reconnect', () => log.settled() === log.issued(), 30_000);
      await sendNumbered(sender.c, log, before + muted + 1, upTo(total));
      await waitFor('every send settled', () => log.settled() === log.issued(), 10_000);
      await waitFor('the reader has every message', () => ROOMS.every((r) => reader.got.get(r)!.length >= total), 10_000).catch(() => {});
    } finally {
      sender.c.close();
      reader.c.close();
      await link.stop();
    }
    const counts = log.counts(numbers(total));
    const repeats = log.counts(mutedNs);
    const got = delivery(reader, sender.user, total);
    console.log(JSON.stringify({ scenario: 'sends-lost-replies', sender_nodes: sender.nodes.length, ...counts, muted_sends: repeats.sends, muted_duplicate_replies: repeats.duplicate_replies, ...got, errors: log.errors.slice(0, 5) }));
    expect({ ...counts, ...got }).toMatchObject({ sends: 2 * total, settled_once: 2 * total, resolved: 2 * total, rejected: 0, lost: 0, duplicated: 0, wrong_sender: 0, in_order: true });
    // Exactly the muted sends are repeats, and a repeat carries the first send's position.
    expect(repeats.duplicate_replies).toBe(2 * muted);
    expect(counts.duplicate_replies).toBe(2 * muted);
    expect(positionsMatch(log, reader, numbers(total))).toBe(total);
  });
});
