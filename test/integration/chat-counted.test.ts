/**
 * Chat through the publish proxy, counted (issue 22): 50 ws-edge/client clients behind the shipped
 * HAProxy config, three node processes on one redis-server, the rooms sequenced and proxied to the
 * real backend process (test/backend/chat_backend.py, SQLite). Every client is a member of one of
 * five rooms and sends its 40 numbered messages there (2,000 in all, a few unanswered at a time)
 * while one node is drained and replaced (a rolling restart: SIGTERM, a new process on its port)
 * and another is killed with -9, each when a count of answered sends is reached.
 *
 * Counted afterwards, nothing deduplicated by the test: every send's promise settled once and
 * resolved; the backend stored 2,000 rows, one per send (the message_ids the sends resolved with
 * are 2,000 distinct ones); every member got each message of its room exactly once, both as the
 * app sees it and as frames on its sockets (a tap on the WebSocket: the library's own drop by
 * offset is not needed), with the message_id its send resolved with and its sender's user_id, and
 * each sender's messages in send order. Sends whose outcome a fault made unknown are sent again
 * by the library with their keys: counted on the wire, printed.
 */
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createClient, type MessageSent } from '../../src/client/index.js';
import { BACKEND_KEY, startChatBackend, stopAllChatBackends } from '../helpers/backend.js';
import { token } from '../helpers/client.js';
import { startHaproxy, stopAllHaproxy } from '../helpers/haproxy.js';
import { freePort } from '../helpers/ports.js';
import { startNodeProcess, stopAllProcesses, type NodeProcess } from '../helpers/processes.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';
import { createWaiters, waitFor } from '../helpers/wait.js';

const CLIENTS = 50;
const ROOMS = Array.from({ length: 5 }, (_, i) => `channel:chat-${i}`);
/** Messages each client sends: CLIENTS x EACH = 2,000. */
const EACH = 40;
const TOTAL = CLIENTS * EACH;
/** Sends of one client unanswered at a time. */
const WINDOW = 3;
/** Answered sends when the first node is drained, and when the second is killed (after the replacement started, with a send of its clients unanswered). */
const DRAIN_AT = 400;
const KILL_AT = 1100;
/** Each client waits before this send of its own until the drained node's replacement is up, so the kill always finds sends under way (a fast build could otherwise finish all 2,000 during the restart). */
const PAUSE_AT = 26;

afterAll(async () => {
  await stopAllHaproxy();
  await stopAllProcesses();
  await stopAllRedis();
  stopAllChatBackends();
});

interface Delivery {
  readonly from: string | undefined;
  readonly n: number;
  readonly messageId: unknown;
}

/**
 * What one client's sockets carried: send_message frames per idempotency key, message.new frames
 * per message_id, and the error codes its sends were answered with (per message number; a first
 * try answered `unavailable` is tried again by the library, invisible to the app).
 */
function wireTap() {
  const tries = new Map<string, number>();
  const frames = new Map<unknown, number>();
  const numberOf = new Map<string, number>();
  const refusals = new Map<number, string[]>();
  /** The `ws` class with a tap; a frame is counted only while the library listens on that socket. */
  class Tapped extends WebSocket {
    constructor(url: string, protocols: string[]) {
      super(url, protocols);
      this.on('message', (raw) => {
        if (this.onmessage === null) return;
        const msg = JSON.parse(String(raw)) as { type: string; id?: string; data?: { message_id?: unknown; code?: string } };
        if (msg.type === 'message.new') frames.set(msg.data?.message_id, (frames.get(msg.data?.message_id) ?? 0) + 1);
        const n = msg.type === 'error' && msg.id !== undefined ? numberOf.get(msg.id) : undefined;
        if (n !== undefined) refusals.set(n, [...(refusals.get(n) ?? []), msg.data?.code ?? '?']);
      });
    }
    override send(data: unknown, ...rest: unknown[]): void {
      const frame = JSON.parse(String(data)) as { type: string; id: string; idempotency_key: string; data: { n: number } };
      if (frame.type === 'send_message') {
        tries.set(frame.idempotency_key, (tries.get(frame.idempotency_key) ?? 0) + 1);
        numberOf.set(frame.id, frame.data.n);
      }
      (super.send as (...args: unknown[]) => void)(data, ...rest);
    }
  }
  return { Tapped, tries, frames, refusals };
}

/** A library client through HAProxy in its room, recording what its app is handed and which nodes it was on. */
function chatter(i: number, url: string, progress: () => void) {
  const user = `chat-${i}`;
  const room = ROOMS[i % ROOMS.length]!;
  const tap = wireTap();
  const got: Delivery[] = [];
  const nodes: string[] = [];
  const rejoins = { recovered: 0, resets: 0 };
  // queueSize: sends made while it is away wait for the next connection.
  const client = createClient({ url, token: () => token(user), WebSocket: tap.Tapped, queueSize: 1000 });
  client.on('connected', (d) => nodes.push(d.connection_id.split('.')[0]!));
  const joined = client.join(room, {
    event: (e) => {
      if (e.type !== 'message.new') return;
      const data = e.data as { n: number; message_id: unknown };
      got.push({ from: e.user_id, n: data.n, messageId: data.message_id });
      progress();
    },
    recovered: () => (rejoins.recovered += 1),
    reset: () => (rejoins.resets += 1),
  });
  client.connect();

  const replies = new Map<number, MessageSent>();
  const errors: string[] = [];
  const settles = new Map<number, number>();
  let issued = 0;
  /** Sends 1..EACH, at most WINDOW unanswered, send PAUSE_AT not before `gate`; resolves once all are issued. */
  async function sendAll(gate: Promise<void>): Promise<void> {
    const open = new Set<Promise<void>>();
    for (let n = 1; n <= EACH; n++) {
      if (n === PAUSE_AT) await gate;
      issued += 1;
      const settled = (): void => {
        settles.set(n, (settles.get(n) ?? 0) + 1);
        progress();
      };
      const p: Promise<void> = client
        .send(room, { text: `message ${n} from ${user}`, n })
        .then(
          (reply) => {
            replies.set(n, reply);
            settled();
          },
          (err: { code?: string; message?: string }) => {
            errors.push(`${user}#${n}: ${err.code} ${err.message}`);
            settled();
          },
        )
        .finally(() => open.delete(p));
      open.add(p);
      while (open.size >= WINDOW) await Promise.race(open);
    }
  }
  const settledCount = (): number => settles.size;
  return { i, user, room, client, tap, got, nodes, rejoins, joined, replies, errors, settles, sendAll, issued: () => issued, settled: settledCount, unanswered: () => issued - settledCount() };
}

type Chatter = ReturnType<typeof chatter>;

describe('chat through the publish proxy, counted, across a rolling restart and a kill -9 behind HAProxy', () => {
  it('2,000 messages from 50 clients: each stored once, each delivered once to every member with its message_id, in each sender’s order, every send resolved', { timeout: 120_000 }, async () => {
    const started = Date.now();
    const [redis, backend] = await Promise.all([startRedis(), startChatBackend()]);
    const ports = [await freePort(), await freePort(), await freePort()];
    const prefix = uniquePrefix();
    const env = (port: number): Record<string, string> => ({
      PORT: String(port),
      REDIS_URL: redis.url,
      REDIS_PREFIX: prefix,
      WS_HISTORY_ROOMS: 'channel:*',
      WS_HISTORY_SIZE: '2000',
      WS_HISTORY_RECOVER_MAX: '2000',
      WS_PUBLISH_PROXY_URL: `${backend.url}/publish`,
      WS_PUBLISH_PROXY_ROOMS: 'channel:*',
      WS_BACKEND_KEY: BACKEND_KEY,
      // The backend's default deadline and concurrency: a send answered `unavailable` (counted as
      // unavailable_answers) is resent by the library behind nothing of its room, so order still holds.
      WS_ROOM_ACCESS: 'open',
      WS_RATE_LIMIT: '100000',
      WS_RATE_BURST: '100000',
      WS_DRAIN_TIMEOUT: '2',
    });
    const nodes: NodeProcess[] = await Promise.all(ports.map((port) => startNodeProcess(env(port))));
    const lb = await startHaproxy(ports);

    const { wake, until } = createWaiters();
    const chatters: Chatter[] = Array.from({ length: CLIENTS }, (_, i) => chatter(i, lb.url, wake));
    await Promise.all(chatters.map((c) => c.joined));
    const firstNodes = nodes.map((n) => chatters.filter((c) => c.nodes[0] === n.nodeId).length);
    const settled = (): number => chatters.reduce((sum, c) => sum + c.settled(), 0);
    const unansweredOn = (nodeId: string): number => chatters.filter((c) => c.nodes.at(-1) === nodeId).reduce((sum, c) => sum + c.unanswered(), 0);
    const reached = (what: string, check: () => boolean, timeoutMs: number) =>
      until(() => (check() ? true : undefined), timeoutMs, () => `timed out after ${timeoutMs} ms waiting for ${what}; ${settled()} of ${TOTAL} sends answered`);

    const faults = { drained: '', drain_at: 0, unanswered_at_drain: 0, killed: '', kill_at: 0, unanswered_at_kill: 0 };
    let replaced = (): void => {};
    const gate = new Promise<void>((resolve) => (replaced = resolve));
    const faulting = (async () => {
      await reached(`${DRAIN_AT} sends answered`, () => settled() >= DRAIN_AT, 30_000);
      const drained = nodes[0]!;
      Object.assign(faults, { drained: drained.nodeId, drain_at: settled(), unanswered_at_drain: unansweredOn(drained.nodeId) });
      await drained.stop();
      nodes[0] = await startNodeProcess(env(ports[0]!));
      replaced();
      const victim = nodes[1]!;
      await reached(`${KILL_AT} sends answered and one of the victim’s unanswered`, () => settled() >= KILL_AT && unansweredOn(victim.nodeId) > 0, 30_000);
      Object.assign(faults, { killed: victim.nodeId, kill_at: settled(), unanswered_at_kill: unansweredOn(victim.nodeId) });
      await victim.kill9();
    })();

    await Promise.all([...chatters.map((c) => c.sendAll(gate)), faulting]);
    await reached('every send settled', () => settled() === TOTAL, 60_000).catch(() => {});
    const perRoom = (room: string): number => chatters.filter((c) => c.room === room).length * EACH;
    await reached('every member has every message of its room', () => chatters.every((c) => c.got.length >= perRoom(c.room)), 20_000).catch(() => {});
    const stats = await waitFor('the backend’s stats', () => backend.stats(), 5000);
    const elapsed = Date.now() - started;
    chatters.forEach((c) => c.client.close());

    // Sends: each promise settled once, resolved; the message_id each resolved with.
    const sendOf = new Map<string, MessageSent>();
    let settledOnce = 0;
    let settledTwice = 0;
    let duplicateReplies = 0;
    for (const c of chatters) {
      for (let n = 1; n <= EACH; n++) {
        const times = c.settles.get(n) ?? 0;
        if (times === 1) settledOnce += 1;
        if (times > 1) settledTwice += 1;
        const reply = c.replies.get(n);
        if (reply !== undefined) sendOf.set(`${c.user}#${n}`, reply);
        if (reply?.duplicate === true) duplicateReplies += 1;
      }
    }
    const messageIdOf = (reply: MessageSent | undefined): unknown => (reply?.data as { message_id?: unknown } | undefined)?.message_id;
    const sentIds = [...sendOf.values()].map(messageIdOf).filter((id) => typeof id === 'number');
    const tries = chatters.flatMap((c) => [...c.tap.tries.values()]);

    // Deliveries: per member, what its app got and what its sockets carried, against its room's sends.
    let expected = 0;
    let received = 0;
    let lost = 0;
    let duplicated = 0;
    let wireDuplicated = 0;
    let wrongMessageId = 0;
    let unknownSender = 0;
    let outOfOrder = 0;
    /** The first inversions, with what the sender's sends were refused and the nodes it was on: why, when one fails. */
    const inversions: unknown[] = [];
    for (const member of chatters) {
      const senders = chatters.filter((c) => c.room === member.room);
      expected += senders.length * EACH;
      received += member.got.length;
      const seen = new Map<string, number>();
      for (const d of member.got) {
        const key = `${d.from}#${d.n}`;
        seen.set(key, (seen.get(key) ?? 0) + 1);
        const sent = sendOf.get(key);
        if (!senders.some((s) => s.user === d.from)) unknownSender += 1;
        else if (sent === undefined || messageIdOf(sent) !== d.messageId) wrongMessageId += 1;
      }
      for (const s of senders) for (let n = 1; n <= EACH; n++) if (!seen.has(`${s.user}#${n}`)) lost += 1;
      duplicated += [...seen.values()].reduce((sum, times) => sum + times - 1, 0);
      wireDuplicated += [...member.tap.frames.values()].reduce((sum, times) => sum + times - 1, 0);
      for (const s of senders) {
        const ns = member.got.filter((d) => d.from === s.user).map((d) => d.n);
        outOfOrder += ns.filter((n, k) => k > 0 && n <= ns[k - 1]!).length;
        if (inversions.length < 2 && ns.some((n, k) => k > 0 && n <= ns[k - 1]!)) inversions.push({ member: member.user, sender: s.user, ns: ns.join(','), refused: Object.fromEntries(s.tap.refusals), nodes: s.nodes });
      }
    }

    const counts = {
      sends: TOTAL,
      settled_once: settledOnce,
      settled_twice: settledTwice,
      resolved: sendOf.size,
      rejected: chatters.reduce((sum, c) => sum + c.errors.length, 0),
      rows: stats.rows,
      distinct_message_ids: new Set(sentIds).size,
      expected_deliveries: expected,
      received,
      lost,
      duplicated,
      wire_duplicated: wireDuplicated,
      wrong_message_id: wrongMessageId,
      unknown_sender: unknownSender,
      out_of_order: outOfOrder,
      resets: chatters.reduce((sum, c) => sum + c.rejoins.resets, 0),
    };
    console.log(
      JSON.stringify({
        scenario: 'chat-proxy-counted',
        clients: CLIENTS,
        rooms: ROOMS.length,
        ...counts,
        resent_sends: tries.filter((t) => t > 1).length,
        send_frames: tries.reduce((a, b) => a + b, 0),
        duplicate_replies: duplicateReplies,
        recovered_rejoins: chatters.reduce((sum, c) => sum + c.rejoins.recovered, 0),
        clients_per_node_at_start: firstNodes,
        clients_moved: chatters.filter((c) => c.nodes.length > 1).length,
        ...faults,
        backend_max_in_flight: stats.max_in_flight,
        elapsed_ms: elapsed,
        unavailable_answers: chatters.reduce((sum, c) => sum + [...c.tap.refusals.values()].flat().filter((code) => code === 'unavailable').length, 0),
        errors: chatters.flatMap((c) => c.errors).slice(0, 5),
        out_of_order_examples: inversions,
      }),
    );
    expect(faults.unanswered_at_kill).toBeGreaterThan(0);
    expect(chatters.filter((c) => c.nodes.length > 1).length).toBeGreaterThan(0);
    expect(counts).toEqual({
      sends: TOTAL,
      settled_once: TOTAL,
      settled_twice: 0,
      resolved: TOTAL,
      rejected: 0,
      rows: TOTAL,
      distinct_message_ids: TOTAL,
      expected_deliveries: CLIENTS / ROOMS.length * TOTAL,
      received: CLIENTS / ROOMS.length * TOTAL,
      lost: 0,
      duplicated: 0,
      wire_duplicated: 0,
      wrong_message_id: 0,
      unknown_sender: 0,
      out_of_order: 0,
      resets: 0,
    });
  });
});
