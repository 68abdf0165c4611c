/**
 * Sequenced rooms end to end, on real nodes and sockets: positions on events, replies and the
 * publish API; a client that reconnects to another node and resumes with its positions gets every
 * missed event once, in order, then live events with no gap (counted and printed); 100 rooms in one
 * `resume` at the default limits; every case that cannot recover says `recovered: false`; a live
 * gap is repaired from history; a Redis restarted empty resets the room; bad input is answered.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { brokerUp, waitSubscribed } from '../helpers/broker-checks.js';
import { connect, type Envelope, type TestClient } from '../helpers/client.js';
import { startTestNode, stopAllNodes, type TestNode } from '../helpers/node.js';
import { startRedis, stopAllRedis, uniquePrefix, type RedisServer } from '../helpers/redis.js';
import { query } from '../helpers/redis-process.js';
import { waitFor } from '../helpers/wait.js';
import { createPublisher } from '../../src/publisher.js';
import { slotOf, tagFor } from '../../src/redis/slots.js';

const API_KEY = 'history-suite-publish-key-0123456789abcdef';
const SEQUENCED = { WS_HISTORY_ROOMS: 'project:*,task:*,channel:*,user:*', WS_ROOM_ACCESS: 'open', PUBLISH_API_KEY: API_KEY };

let redis: RedisServer;
const clients: TestClient[] = [];

beforeAll(async () => {
  redis = await startRedis();
});
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});
afterAll(async () => {
  await stopAllNodes();
  await stopAllRedis();
});

async function client(node: TestNode, userId: string): Promise<TestClient> {
  const c = await connect(node.url, userId);
  clients.push(c);
  return c;
}

/** Two nodes on one Redis and prefix, both up. */
async function pair(extra: Record<string, string> = {}): Promise<{ a: TestNode; b: TestNode; prefix: string }> {
  const prefix = uniquePrefix();
  const env = { ...SEQUENCED, REDIS_URL: redis.url, REDIS_PREFIX: prefix, ...extra };
  const [a, b] = await Promise.all([startTestNode(env), startTestNode(env)]);
  await waitFor('both brokers up', async () => (await brokerUp(a!.internal)) && (await brokerUp(b!.internal)));
  return { a: a!, b: b!, prefix };
}

let ids = 0;
/** Sends a request and resolves with the reply carrying its id. */
async function request(c: TestClient, frame: Record<string, unknown>): Promise<Envelope> {
  const id = `r${++ids}`;
  c.send({ ...frame, id });
  return c.next((e) => e.id === id);
}

interface Answer {
  status: number;
  body: Record<string, unknown>;
}
const answer = async (res: Response): Promise<Answer> => ({ status: res.status, body: (await res.json()) as Record<string, unknown> });

function publish(node: TestNode, room: string, n: number, extra: Record<string, unknown> = {}): Promise<Answer> {
  return fetch(`${node.internal}/api/v1/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ room, type: 'task.updated', data: { n }, ...extra }),
  }).then(answer);
}

function historyOf(node: TestNode, room: string, query = '', auth = `Bearer ${API_KEY}`): Promise<Answer> {
  return fetch(`${node.internal}/api/v1/rooms/${encodeURIComponent(room)}/history${query}`, { headers: { authorization: auth } }).then(answer);
}

/** The `n` of each event of a history page. */
const page = (reply: { data?: { events?: Envelope[] } }) => (reply.data?.events ?? []).map((e) => e.data.n as number);

const updates = (room: string) => (e: Envelope) => e.type === 'task.updated' && e.room === room;
/** The `n` of every task.updated of `room` received so far, in order. */
const numbers = (c: TestClient, room: string) => c.received.filter(updates(room)).map((e) => e.data.n as number);

describe('sequenced rooms on one node (memory broker)', () => {
  it('gives the joiner its position, every event its offset and epoch, and message_sent the position after the event', async () => {
    const node = await startTestNode(SEQUENCED);
    const alice = await client(node, 'alice');
    const joined = await request(alice, { type: 'join_room', room: 'channel:1' });
    expect(joined).toEqual({ type: 'room_joined', id: joined.id, room: 'channel:1', epoch: expect.any(String), offset: 0, timestamp: expect.any(String) });
    alice.send({ type: 'send_message', room: 'channel:1', data: { text: 'hi' }, id: 'm1' });
    const event = await alice.next((e) => e.type === 'message.new');
    expect(event).toMatchObject({ room: 'channel:1', data: { text: 'hi' }, sender: 'alice', offset: 1, epoch: joined.epoch });
    const sent = await alice.next((e) => e.id === 'm1');
    expect(sent).toMatchObject({ type: 'message_sent', room: 'channel:1', offset: 1, epoch: joined.epoch });
    // The event came first: nothing else is left but the personal room's position.
    expect(alice.received.map((e) => [e.type, e.room])).toEqual([['room_joined', 'user:alice']]);
    // The personal room is sequenced too: its position arrives as a room_joined without id.
    const bob = await client(node, 'bob');
    const personal = await bob.next((e) => e.type === 'room_joined');
    expect(personal).toMatchObject({ room: 'user:bob', epoch: expect.any(String), offset: 0 });
    expect(personal.id).toBeUndefined();
    const api = await publish(node, 'user:bob', 7);
    expect(api).toEqual({ status: 200, body: { status: 'published', room: 'user:bob', epoch: personal.epoch, offset: 1 } });
    expect(await bob.next(updates('user:bob'))).toMatchObject({ data: { n: 7 }, offset: 1 });
  });

  it('120 joins recovering 300 events each from one batch (replayed over several event-loop turns), with live events meanwhile: every client gets 1-320 once, in order', async () => {
    const node = await startTestNode({ ...SEQUENCED, WS_HISTORY_ROOMS: 'task:*', WS_HISTORY_SIZE: '400', WS_HISTORY_RECOVER_MAX: '400' });
    const watcher = await client(node, 'watcher');
    const { epoch } = await request(watcher, { type: 'join_room', room: 'task:big' });
    for (let n = 1; n <= 300; n += 50) await Promise.all(Array.from({ length: 50 }, (_, i) => publish(node, 'task:big', n + i)));
    await waitFor('300 events at the watcher', () => numbers(watcher, 'task:big').length === 300);
    const order = numbers(watcher, 'task:big');
    const resumers = await Promise.all(Array.from({ length: 120 }, (_, i) => client(node, `r${i}`)));
    // 120 × 300 = 36,000 events to replay: more than one turn's share.
    resumers.forEach((c, i) => c.send({ type: 'join_room', room: 'task:big', since: { epoch, offset: 0 }, id: `j${i}` }));
    for (let n = 301; n <= 320; n++) await publish(node, 'task:big', n);
    const joined = await Promise.all(resumers.map((c, i) => c.next((e) => e.id === `j${i}`, 30_000)));
    await Promise.all(resumers.map((c) => waitFor('320 events', () => numbers(c, 'task:big').length >= 320)));
    const wrong = resumers.filter((c) => JSON.stringify(numbers(c, 'task:big')) !== JSON.stringify([...order, ...Array.from({ length: 20 }, (_, i) => 301 + i)]));
    console.log(`sliced replay: 120 joins, recovered: ${joined.filter((j) => j.recovered === true).length}, clients with a wrong sequence: ${wrong.length}`);
    expect(joined.every((j) => j.recovered === true)).toBe(true);
    expect(wrong).toEqual([]);
    expect(await node.metric('wsedge_events_replayed_total')).toBe(36_000);
  });

  it('answers recovered: false for an unknown epoch, an offset ahead of the room, one older than the history and a plain room', async () => {
    const node = await startTestNode({ ...SEQUENCED, WS_HISTORY_ROOMS: 'task:*', WS_HISTORY_SIZE: '5' });
    const watcher = await client(node, 'w');
    const { epoch } = await request(watcher, { type: 'join_room', room: 'task:9' });
    for (let n = 1; n <= 8; n++) await publish(node, 'task:9', n);
    await waitFor('8 events', () => numbers(watcher, 'task:9').length === 8);
    const late = await client(node, 'late');
    const cases = [
      { since: { epoch: 'nope', offset: 3 }, room: 'task:9' },
      { since: { epoch, offset: 9 }, room: 'task:9' },
      { since: { epoch, offset: 2 }, room: 'task:9' },
      { since: { epoch, offset: 0 }, room: 'project:plain' },
    ];
    for (const { since, room } of cases) {
      const reply = await request(late, { type: 'join_room', room, since });
      expect(reply, JSON.stringify(since)).toMatchObject({ type: 'room_joined', room, recovered: false });
      await request(late, { type: 'leave_room', room });
    }
    expect(numbers(late, 'task:9')).toEqual([]);
    // Three events behind, within the five kept: recovered.
    const back = await request(late, { type: 'join_room', room: 'task:9', since: { epoch, offset: 5 } });
    expect(back).toMatchObject({ recovered: true, epoch, offset: 8 });
    expect(numbers(late, 'task:9')).toEqual([6, 7, 8]);
    expect(await node.metric('wsedge_recoveries_total', { outcome: 'reset' })).toBe(4 - 1); // the plain room is not counted
    // Why: an unknown epoch and a position ahead of the room are a room that started over; offset 2 is older than the 5 kept.
    expect(await Promise.all(['epoch', 'too_far', 'trimmed'].map((reason) => node.metric('wsedge_recovery_resets_total', { reason })))).toEqual([2, 0, 1]);
    expect(await node.metric('wsedge_events_replayed_total')).toBe(3);
  });

  it('delivers the first event of a new epoch after a quiet room’s history expired, behind room_reset', async () => {
    const node = await startTestNode({ ...SEQUENCED, WS_HISTORY_TTL: '1' });
    const c = await client(node, 'quiet');
    const joined = await request(c, { type: 'join_room', room: 'channel:quiet' });
    await publish(node, 'channel:quiet', 1);
    await c.next(updates('channel:quiet'));
    await new Promise((r) => setTimeout(r, 1500)); // past WS_HISTORY_TTL without a publish
    c.send({ type: 'send_message', room: 'channel:quiet', data: { n: 2 }, id: 'after' });
    const reset = await c.next((e) => e.type === 'room_reset' && e.room === 'channel:quiet');
    expect(reset.epoch).not.toBe(joined.epoch);
    expect(reset.offset).toBe(0);
    const event = await c.next((e) => e.type === 'message.new');
    expect(event).toMatchObject({ data: { n: 2 }, epoch: reset.epoch, offset: 1 });
    expect(await c.next((e) => e.id === 'after')).toMatchObject({ type: 'message_sent', epoch: reset.epoch, offset: 1 });
  });

  it('answers bad positions and resumes with documented errors and keeps the connection', async () => {
    const node = await startTestNode({ ...SEQUENCED, WS_MAX_ROOMS_PER_CONNECTION: '3' });
    const c = await client(node, 'bad');
    const bad = [
      [{ type: 'join_room', room: 'task:1', since: 5 }, 'invalid_message'],
      [{ type: 'join_room', room: 'task:1', since: { epoch: 'e', offset: -1 } }, 'invalid_message'],
      [{ type: 'join_room', room: 'task:1', since: { epoch: 'e', offset: 2 ** 60 } }, 'invalid_message'],
      [{ type: 'join_room', room: 'task:1', since: { epoch: 'x'.repeat(65), offset: 1 } }, 'invalid_message'],
      [{ type: 'resume', rooms: 'task:1' }, 'invalid_message'],
      [{ type: 'resume', rooms: [{ room: 'task:1' }, { room: 'task:1' }] }, 'invalid_message'],
      [{ type: 'resume', rooms: [{ room: 'task:1', since: { offset: 1 } }] }, 'invalid_message'],
      [{ type: 'resume', rooms: ['task:1', 'task:2', 'task:3', 'task:4', 'task:5'].map((room) => ({ room })) }, 'too_many_rooms'],
    ] as const;
    for (const [frame, code] of bad) {
      const reply = await request(c, frame);
      expect(reply, JSON.stringify(frame)).toMatchObject({ type: 'error', data: { code } });
    }
    // Per room: a bad name is answered for that room, the others are joined, then `resumed`.
    c.send({ type: 'resume', id: 'res', rooms: [{ room: 'nope' }, { room: 'task:1' }, { room: 'user:someone-else' }] });
    const replies = [await c.next((e) => e.id === 'res'), await c.next((e) => e.id === 'res'), await c.next((e) => e.id === 'res'), await c.next((e) => e.id === 'res')];
    expect(replies.map((r) => [r.type, r.room ?? null, r.data?.code ?? null])).toEqual([
      ['error', 'nope', 'invalid_room'],
      ['error', 'user:someone-else', 'forbidden'],
      ['room_joined', 'task:1', null],
      ['resumed', null, null],
    ]);
    expect((await request(c, { type: 'ping' })).type).toBe('pong');
  });
});

describe('history reads', () => {
  it('pages a joined room forwards after a position and backwards before it, for clients and for backends', async () => {
    const node = await startTestNode({ ...SEQUENCED, WS_HISTORY_SIZE: '5' });
    const c = await client(node, 'reader');
    const { epoch } = await request(c, { type: 'join_room', room: 'task:h' });
    for (let n = 1; n <= 8; n++) await publish(node, 'task:h', n);
    await waitFor('8 events', () => numbers(c, 'task:h').length === 8);
    const all = await request(c, { type: 'history', room: 'task:h' });
    expect(all).toMatchObject({ type: 'room_history', room: 'task:h', epoch, offset: 8 });
    expect(page(all)).toEqual([4, 5, 6, 7, 8]);
    // The stored bytes as delivered, positions included.
    expect(all.data.events[0]).toEqual(c.received.filter(updates('task:h'))[3]);
    expect(page(await request(c, { type: 'history', room: 'task:h', since: { epoch, offset: 5 } }))).toEqual([6, 7, 8]);
    expect(page(await request(c, { type: 'history', room: 'task:h', reverse: true, limit: 2 }))).toEqual([8, 7]);
    expect(page(await request(c, { type: 'history', room: 'task:h', reverse: true, since: { epoch, offset: 6 }, limit: 10 }))).toEqual([5, 4]);
    expect(await request(c, { type: 'history', room: 'task:h', since: { epoch: 'other', offset: 1 } })).toMatchObject({ epoch, offset: 8, data: { events: [] } });

    const backend = await historyOf(node, 'task:h', `?since_epoch=${epoch}&since_offset=6`);
    expect(backend.status).toBe(200);
    expect(backend.body).toMatchObject({ type: 'room_history', room: 'task:h', epoch, offset: 8 });
    expect(page(backend.body as never)).toEqual([7, 8]);
    expect(page((await historyOf(node, 'task:h', '?limit=1&reverse=true')).body as never)).toEqual([8]);
    // The position alone, before loading state: limit=1 and reverse, or any page's epoch and offset.
    expect((await historyOf(node, 'task:empty')).body).toMatchObject({ room: 'task:empty', offset: 0, data: { events: [] } });
  });

  it('answers bad history requests with documented errors', async () => {
    const node = await startTestNode({ ...SEQUENCED, WS_HISTORY_ROOMS: 'task:*' });
    const c = await client(node, 'bad-history');
    await request(c, { type: 'join_room', room: 'task:1' });
    await request(c, { type: 'join_room', room: 'project:plain' });
    const cases = [
      [{ room: 'task:2' }, 'not_joined'],
      [{ room: 'project:plain' }, 'no_history'],
      [{ room: 'nope' }, 'invalid_room'],
      [{ room: 'task:1', limit: 0 }, 'invalid_message'],
      [{ room: 'task:1', limit: 1e9 }, 'invalid_message'],
      [{ room: 'task:1', limit: 2.5 }, 'invalid_message'],
      [{ room: 'task:1', reverse: 'yes' }, 'invalid_message'],
      [{ room: 'task:1', since: { epoch: 'e', offset: '1' } }, 'invalid_message'],
    ] as const;
    for (const [frame, code] of cases) expect(await request(c, { type: 'history', ...frame }), JSON.stringify(frame)).toMatchObject({ type: 'error', data: { code } });
    const refused = [
      [await historyOf(node, 'task:1', '?since_offset=3'), 400, 'invalid_query'],
      [await historyOf(node, 'task:1', '?limit=0'), 400, 'invalid_query'],
      [await historyOf(node, 'task:1', '?reverse=1'), 400, 'invalid_query'],
      [await historyOf(node, 'project:plain'), 400, 'no_history'],
      [await historyOf(node, 'nope'), 400, 'invalid_room'],
      [await historyOf(node, 'task:1', '', 'Bearer wrong'), 401, 'unauthorized'],
    ] as const;
    for (const [got, status, code] of refused) expect(got).toEqual({ status, body: { code, message: expect.any(String), error: code, reason: expect.any(String) } });
    expect(await node.metric('wsedge_api_requests_total', { endpoint: 'history', status: '400' })).toBe(5);
  });

  it('publishes a retried publish with the same idempotency key once, and answers it with the first position', async () => {
    const node = await startTestNode(SEQUENCED);
    const member = await client(node, 'idem');
    await request(member, { type: 'join_room', room: 'channel:idem' });
    const first = await publish(node, 'channel:idem', 1, { idempotency_key: 'order-42' });
    const again = await publish(node, 'channel:idem', 1, { idempotency_key: 'order-42' });
    const other = await publish(node, 'channel:idem', 2, { idempotency_key: 'order-43' });
    expect(first.body).toMatchObject({ status: 'published', offset: 1 });
    expect(again.body).toEqual({ ...first.body, duplicate: true });
    expect(other.body).toMatchObject({ offset: 2 });
    await waitFor('two events', () => numbers(member, 'channel:idem').length === 2);
    await new Promise((r) => setTimeout(r, 200)); // nothing more may arrive
    expect(numbers(member, 'channel:idem')).toEqual([1, 2]);
    expect(await node.metric('wsedge_duplicate_publishes_total')).toBe(1);
    const plain = await startTestNode({ ...SEQUENCED, WS_HISTORY_ROOMS: 'task:*' });
    for (const [target, key] of [['channel:x', 'k'], ['task:x', 'has space'], ['task:x', 'x'.repeat(129)], ['task:x', 7]] as const) {
      expect(await publish(plain, target, 1, { idempotency_key: key }), `${target} ${key}`).toEqual({ status: 400, body: { code: 'invalid_idempotency_key', message: expect.any(String), error: 'invalid_idempotency_key', reason: expect.any(String) } });
    }
  });
});

describe('sequenced rooms across nodes (Redis)', () => {
  it('resumes a client on another node with every missed event once and in order, then live events with no gap', { timeout: 30_000 }, async () => {
    const { a, b, prefix } = await pair();
    const room = 'project:resume';
    const watcher = await client(a, 'watcher');
    await request(watcher, { type: 'join_room', room });
    const mover = await client(b, 'mover');
    const first = await request(mover, { type: 'join_room', room });
    await waitSubscribed(redis.port, `${prefix}room:${room}`, 2);
    const published: number[] = [];
    for (let n = 1; n <= 20; n++) {
      published.push(n);
      await publish(a, room, n);
    }
    await waitFor('the mover has 20', () => numbers(mover, room).length === 20);
    const last = mover.received.filter(updates(room)).at(-1)!;
    mover.close();
    // While it is away: 30 more.
    for (let n = 21; n <= 50; n++) {
      published.push(n);
      await publish(b, room, n);
    }
    const back = await client(a, 'mover');
    const started = Date.now();
    const reply = await request(back, { type: 'resume', rooms: [{ room, since: { epoch: last.epoch, offset: last.offset } }] });
    expect(reply).toMatchObject({ type: 'room_joined', room, epoch: first.epoch, offset: 50, recovered: true });
    const resumeMs = Date.now() - started;
    expect(await back.next((e) => e.type === 'resumed')).toMatchObject({ data: { rooms: 1 } });
    // Live again, from the other node.
    for (let n = 51; n <= 60; n++) {
      published.push(n);
      await publish(b, room, n);
    }
    await waitFor('60 in all', () => numbers(mover, room).length + numbers(back, room).length === 60);
    const got = [...numbers(mover, room), ...numbers(back, room)];
    const offsets = back.received.filter(updates(room)).map((e) => e.offset);
    expect(got).toEqual(published);
    expect(offsets).toEqual(Array.from({ length: 40 }, (_, i) => 21 + i));
    await new Promise((r) => setTimeout(r, 300)); // nothing more may arrive
    expect(numbers(back, room)).toHaveLength(40);
    console.log(JSON.stringify({ scenario: 'resume_on_other_node', published: published.length, received: got.length, lost: published.length - new Set(got).size, duplicated: got.length - new Set(got).size, resume_ms: resumeMs }));
  });

  it('resumes 100 rooms in one frame at the default limits: no rate limiting, no 4429', { timeout: 30_000 }, async () => {
    const { a, b } = await pair();
    const rooms = Array.from({ length: 100 }, (_, i) => `task:r${i}`);
    const first = await client(a, 'many');
    first.send({ type: 'resume', id: 'all', rooms: rooms.map((room) => ({ room })) });
    await first.next((e) => e.type === 'resumed', 10_000);
    const positions = new Map(first.received.filter((e) => e.type === 'room_joined' && e.id === 'all').map((e) => [e.room!, e]));
    expect(positions.size).toBe(100);
    first.close();
    for (const room of rooms.slice(0, 10)) await publish(b, room, 1);
    const again = await client(b, 'many');
    const started = Date.now();
    again.send({ type: 'resume', id: 'back', rooms: rooms.map((room) => ({ room, since: { epoch: positions.get(room)!.epoch, offset: 0 } })) });
    await again.next((e) => e.type === 'resumed', 10_000);
    const replies = again.received.filter((e) => e.id === 'back' && e.type === 'room_joined');
    expect(replies).toHaveLength(100);
    expect(replies.every((e) => e.recovered === true)).toBe(true);
    expect(again.received.filter((e) => e.type === 'error')).toEqual([]);
    expect(new Set(again.received.filter((e) => e.type === 'task.updated').map((e) => e.room))).toEqual(new Set(rooms.slice(0, 10)));
    expect(await b.metric('wsedge_rate_limited_total')).toBe(0);
    console.log(JSON.stringify({ scenario: 'resume_100_rooms', rooms: 100, recovered: replies.length, replayed: 10, resume_ms: Date.now() - started }));
  });

  it('repairs a live gap from history: an event whose pub/sub message was lost still arrives, in order', async () => {
    const { a, prefix } = await pair();
    const room = 'channel:gap';
    const member = await client(a, 'gap');
    const joined = await request(member, { type: 'join_room', room });
    await publish(a, room, 1);
    await member.next(updates(room));
    // Event 2 reaches the history but not the channel: what a lost pub/sub message looks like.
    const tag = `{${tagFor(slotOf(`${prefix}room:${room}`))}}`;
    const payload = JSON.stringify({ type: 'task.updated', room, data: { n: 2 }, sender: null, timestamp: new Date().toISOString(), offset: 2, epoch: joined.epoch });
    await query(redis.port, ['XADD', `${prefix}${tag}h:${room}`, '2-0', 'd', payload]);
    await query(redis.port, ['HSET', `${prefix}${tag}m:${room}`, 'offset', '2']);
    await publish(a, room, 3);
    await waitFor('3 events', () => numbers(member, room).length === 2);
    expect(numbers(member, room)).toEqual([2, 3]);
    expect(await a.metric('wsedge_gaps_repaired_total')).toBe(1);
  });

  it('tells the members with room_reset when Redis comes back empty, and never says recovered to the old epoch', { timeout: 30_000 }, async () => {
    const server = await startRedis();
    const prefix = uniquePrefix();
    const node = await startTestNode({ ...SEQUENCED, REDIS_URL: server.url, REDIS_PREFIX: prefix });
    await waitFor('broker up', () => brokerUp(node.internal));
    const room = 'project:lost';
    const member = await client(node, 'lost');
    const joined = await request(member, { type: 'join_room', room });
    await publish(node, room, 1);
    await member.next(updates(room));
    await server.restart();
    const reset = await member.next((e) => e.type === 'room_reset' && e.room === room, 15_000);
    expect(reset).toMatchObject({ room, epoch: expect.any(String), offset: 0 });
    expect(reset.epoch).not.toBe(joined.epoch);
    const other = await client(node, 'other');
    const reply = await request(other, { type: 'join_room', room, since: { epoch: joined.epoch, offset: 1 } });
    expect(reply).toMatchObject({ recovered: false, epoch: reset.epoch });
    // The project room and the member's personal room.
    expect(await node.metric('wsedge_room_resets_total', { reason: 'epoch' })).toBe(2);
  });

  it('gives ws-edge/publisher the positions of sequenced rooms, and remembers its idempotency keys in Redis', async () => {
    const { a, prefix } = await pair();
    const member = await client(a, 'pubm');
    await request(member, { type: 'join_room', room: 'project:7' });
    await request(member, { type: 'join_room', room: 'task:42' });
    const publisher = createPublisher({ redisUrl: redis.url, prefix, historyRooms: SEQUENCED.WS_HISTORY_ROOMS });
    try {
      const published = await publisher.taskUpdated({ projectId: 7, taskId: 42, changes: { n: 1 } });
      expect(published.positions).toEqual({ 'project:7': { epoch: expect.any(String), offset: 1 }, 'task:42': { epoch: expect.any(String), offset: 1 } });
      const events = [await member.next(updates('project:7')), await member.next(updates('task:42'))];
      expect(events.map((e) => [e.room, e.offset])).toEqual([['project:7', 1], ['task:42', 1]]);
      const once = await publisher.publishOnce('job-1', 'task:42', 'task.updated', { n: 2 });
      expect(await publisher.publishOnce('job-1', 'task:42', 'task.updated', { n: 2 })).toEqual({ ...once, duplicate: true });
      expect(once).toMatchObject({ offset: 2, duplicate: false });
      expect(() => publisher.publishOnce('bad key', 'task:42', 'task.updated', {})).toThrow(TypeError);
      expect(() => publisher.publishOnce('job-2', 'nope', 'task.updated', {})).toThrow(TypeError);
      await member.next(updates('task:42'));
      await new Promise((r) => setTimeout(r, 200)); // the retry published nothing
      expect(member.received.filter(updates('task:42'))).toEqual([]);
    } finally {
      await publisher.close();
    }
    const first = await publish(a, 'project:7', 2, { idempotency_key: 'retry-me' });
    const retried = await publish(a, 'project:7', 2, { idempotency_key: 'retry-me' });
    expect(retried.body).toEqual({ ...first.body, duplicate: true });
  });

  it('rejoins the personal room from its position in a resume, replacing the automatic join', { timeout: 20_000 }, async () => {
    const { a, b } = await pair();
    const first = await client(a, 'own');
    const personal = await first.next((e) => e.type === 'room_joined' && e.room === 'user:own');
    for (let n = 1; n <= 3; n++) await publish(b, 'user:own', n);
    await waitFor('3 notifications', () => numbers(first, 'user:own').length === 3);
    first.close();
    for (let n = 4; n <= 6; n++) await publish(b, 'user:own', n);
    const back = await client(b, 'own');
    const reply = await request(back, { type: 'resume', rooms: [{ room: 'user:own', since: { epoch: personal.epoch, offset: 3 } }] });
    expect(reply).toMatchObject({ type: 'room_joined', room: 'user:own', recovered: true, offset: 6 });
    expect(numbers(back, 'user:own')).toEqual([4, 5, 6]);
    await publish(a, 'user:own', 7);
    await waitFor('the live one', () => numbers(back, 'user:own').length === 4);
    expect(numbers(back, 'user:own')).toEqual([4, 5, 6, 7]);
  });

  it('answers 503 unavailable for a sequenced room while Redis is down, and publishes nothing', async () => {
    const server = await startRedis();
    const node = await startTestNode({ ...SEQUENCED, REDIS_URL: server.url, REDIS_PREFIX: uniquePrefix() });
    await waitFor('broker up', () => brokerUp(node.internal));
    await server.stop();
    const res = await publish(node, 'task:down', 1);
    expect(res).toEqual({ status: 503, body: { code: 'unavailable', message: expect.any(String), error: 'unavailable', reason: expect.any(String) } });
  });
});
