/**
 * The internal API for backends, on two in-process nodes sharing one redis-server: POST
 * /api/v1/publish (room, user_id, connection_id targets; auth; every 400 code; the body cap
 * enforced by Content-Length and while a chunked body streams in), POST /api/v1/disconnect
 * (every node, codes and reasons), where the API is not served, and its request counter.
 */
import { request } from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connect, join, open, token, type Envelope, type TestClient } from '../helpers/client.js';
import { startTestNode, stopAllNodes, type TestNode } from '../helpers/node.js';
import { startRedis, stopAllRedis, uniquePrefix, type RedisServer } from '../helpers/redis.js';
import { brokerUp, receiveExactly, waitSubscribed } from '../helpers/broker-checks.js';
import { waitFor } from '../helpers/wait.js';

const API_KEY = 'api-suite-publish-key-0123456789abcdef';
const MAX_SIZE = 4096;
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

let redis: RedisServer;
let prefix: string;
/** a serves the API in the tests; b is the other node. */
let a: TestNode;
let b: TestNode;
/** No PUBLISH_API_KEY: the API is off. */
let off: TestNode;
const clients: TestClient[] = [];

interface Answer {
  status: number;
  contentType: string | null;
  body: unknown;
}


/** Cross-node delivery starts once Redis confirms: exactly `count` nodes subscribed to the room. */
const subscribed = (room: string, count: number) => waitSubscribed(redis.port, `${prefix}room:${room}`, count);

async function client(node: TestNode, userId: string): Promise<TestClient> {
  const c = await connect(node.url, userId);
  clients.push(c);
  return c;
}

/** Connects and keeps the connection id from `connected`. */
async function identified(node: TestNode, userId: string): Promise<{ client: TestClient; connectionId: string }> {
  const c = open(node.url, token(userId));
  clients.push(c);
  const hello = await c.next((e) => e.type === 'connected');
  return { client: c, connectionId: hello.data.connection_id as string };
}

async function answer(res: Response): Promise<Answer> {
  const text = await res.text();
  return { status: res.status, contentType: res.headers.get('content-type'), body: text === '' ? undefined : JSON.parse(text) };
}

function call(base: string, endpoint: 'publish' | 'disconnect', body: unknown, auth: string | null = `Bearer ${API_KEY}`): Promise<Answer> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (auth !== null) headers['authorization'] = auth;
  return fetch(`${base}/api/v1/${endpoint}`, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) }).then(answer);
}

const publish = (body: unknown, auth?: string | null) => call(a.internal, 'publish', body, auth);
const disconnect = (body: unknown, auth?: string | null) => call(a.internal, 'disconnect', body, auth);

/** A refusal's body: `code` and `message`, and the same values as `error` and `reason` (kept for older clients). */
const refused = (status: number, code: string): Answer => ({
  status,
  contentType: 'application/json',
  body: { code, message: expect.any(String), error: code, reason: expect.any(String) },
});

const ofType = (type: string) => (e: Envelope) => e.type === type;

/** A valid publish body of exactly `size` bytes. */
function bodyOfSize(size: number, room: string): string {
  const base = JSON.stringify({ room, type: 'task.updated', data: { pad: '' } });
  const body = JSON.stringify({ room, type: 'task.updated', data: { pad: 'x'.repeat(size - base.length) } });
  expect(Buffer.byteLength(body)).toBe(size);
  return body;
}

/** Streams `chunks` as a chunked body (no Content-Length), one every `delayMs`, and ends it unless the server answers first. */
function streamChunked(
  url: string,
  chunks: Iterable<string>,
  delayMs: number,
): Promise<{ status: number; body: unknown; sentBeforeAnswer: number; endedBeforeAnswer: boolean }> {
  return new Promise((resolve, reject) => {
    let sent = 0;
    let ended = false;
    const req = request(url, { method: 'POST', headers: { authorization: `Bearer ${API_KEY}`, 'transfer-encoding': 'chunked' } }, (res) => {
      const sentBeforeAnswer = sent;
      const endedBeforeAnswer = ended;
      clearInterval(timer);
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text), sentBeforeAnswer, endedBeforeAnswer }));
    });
    req.on('error', reject);
    const iterator = chunks[Symbol.iterator]();
    const timer = setInterval(() => {
      const next = iterator.next();
      if (next.done) {
        clearInterval(timer);
        ended = true;
        req.end();
        return;
      }
      sent += Buffer.byteLength(next.value);
      req.write(next.value);
    }, delayMs);
  });
}

beforeAll(async () => {
  redis = await startRedis();
  prefix = uniquePrefix();
  const env = { REDIS_URL: redis.url, REDIS_PREFIX: prefix, PUBLISH_API_KEY: API_KEY, WS_MESSAGE_MAX_SIZE: String(MAX_SIZE) };
  [a, b, off] = await Promise.all([startTestNode(env), startTestNode(env), startTestNode({ WS_MESSAGE_MAX_SIZE: String(MAX_SIZE) })]);
  await waitFor('both brokers up', async () => (await brokerUp(a.internal)) && (await brokerUp(b.internal)));
});

afterEach(async () => {
  const left = clients.splice(0);
  for (const c of left) c.close();
  await Promise.all(left.map((c) => c.closed));
});

afterAll(async () => {
  await stopAllNodes();
  await stopAllRedis();
});

describe('POST /api/v1/publish', () => {
  it('publishes to a room: 200 JSON, and members on both nodes get the envelope once', async () => {
    const room = 'channel:api-room';
    const onA = await client(a, 'ra');
    const onB = await client(b, 'rb');
    const outsider = await client(b, 'rc');
    for (const c of [onA, onB]) await join(c, room);
    await subscribed(room, 2);

    expect(await publish({ room, type: 'task.updated', data: { id: 1 }, sender: 'backend' })).toEqual({
      status: 200,
      contentType: 'application/json',
      body: { status: 'published', room },
    });
    const expected = { type: 'task.updated', room, data: { id: 1 }, sender: 'backend', timestamp: expect.stringMatching(ISO) };
    for (const c of [onA, onB]) expect(await receiveExactly(c, ofType('task.updated'), 1)).toEqual([expected]);
    await outsider.expectNothing(ofType('task.updated'), 0);

    // data and sender may be left out: both become null.
    expect((await publish({ room, type: 'project.archived' })).status).toBe(200);
    for (const c of [onA, onB]) {
      expect(await receiveExactly(c, ofType('project.archived'), 1)).toEqual([
        { type: 'project.archived', room, data: null, sender: null, timestamp: expect.stringMatching(ISO) },
      ]);
    }
  });

  it('publishes to a user_id: every connection of that user on both nodes, no one else', async () => {
    const mine = [await client(a, 'uid'), await client(b, 'uid'), await client(b, 'uid')];
    const other = await client(a, 'uid2');
    await subscribed('user:uid', 2);

    expect(await publish({ user_id: 'uid', type: 'notification.new', data: { n: 1 } })).toEqual({
      status: 200,
      contentType: 'application/json',
      body: { status: 'published', user_id: 'uid', connections: 3 },
    });
    const expected = { type: 'notification.new', room: 'user:uid', data: { n: 1 }, sender: null, timestamp: expect.stringMatching(ISO) };
    for (const c of mine) expect(await receiveExactly(c, ofType('notification.new'), 1)).toEqual([expected]);
    await other.expectNothing(ofType('notification.new'), 0);
  });

  it('publishes to a connection_id on another node or this one: exactly that connection, with room null', async () => {
    const remote = await identified(b, 'cid');
    const sibling = await identified(b, 'cid');
    const local = await identified(a, 'cid');
    expect(remote.connectionId.startsWith(`${b.nodeId}.`)).toBe(true);
    expect(local.connectionId.startsWith(`${a.nodeId}.`)).toBe(true);
    const all = [remote, sibling, local];

    expect(await publish({ connection_id: remote.connectionId, type: 'notification.new', data: { to: 'remote' }, sender: 'svc' })).toEqual({
      status: 200,
      contentType: 'application/json',
      body: { status: 'published', connection_id: remote.connectionId },
    });
    expect(await receiveExactly(remote.client, ofType('notification.new'), 1)).toEqual([
      { type: 'notification.new', room: null, data: { to: 'remote' }, sender: 'svc', timestamp: expect.stringMatching(ISO) },
    ]);
    for (const c of [sibling, local]) await c.client.expectNothing(ofType('notification.new'), 0);

    expect((await publish({ connection_id: local.connectionId, type: 'notification.new', data: { to: 'local' } })).status).toBe(200);
    expect(await receiveExactly(local.client, ofType('notification.new'), 1)).toEqual([
      { type: 'notification.new', room: null, data: { to: 'local' }, sender: null, timestamp: expect.stringMatching(ISO) },
    ]);
    for (const c of all.filter((c) => c !== local)) await c.client.expectNothing(ofType('notification.new'), 0);
  });

  it('answers 401 for a missing or wrong key and publishes nothing', async () => {
    const room = 'channel:api-auth';
    const member = await client(b, 'auth-member');
    await join(member, room);
    await subscribed(room, 1);
    const body = { room, type: 'task.updated', data: {} };
    const sameLength = API_KEY.slice(0, -1) + (API_KEY.endsWith('x') ? 'y' : 'x');
    expect(sameLength.length).toBe(API_KEY.length);
    for (const auth of [null, '', `Bearer ${sameLength}`, 'Bearer k', `Bearer ${API_KEY}x`, `Bearer ${API_KEY.slice(0, -1)}`, API_KEY, `Basic ${API_KEY}`, 'Bearer ']) {
      expect(await publish(body, auth), `authorization ${JSON.stringify(auth)}`).toEqual(refused(401, 'unauthorized'));
      expect(await disconnect({ user_id: 'auth-member' }, auth)).toEqual(refused(401, 'unauthorized'));
    }
    await member.expectNothing(ofType('task.updated'));
    expect(member.ws.readyState).toBe(member.ws.OPEN);
  });

  it("answers 404 api_disabled on both endpoints when PUBLISH_API_KEY is unset", async () => {
    for (const auth of [null, `Bearer ${API_KEY}`]) {
      expect(await call(off.internal, 'publish', { room: 'channel:1', type: 'task.updated' }, auth)).toEqual(refused(404, 'api_disabled'));
      expect(await call(off.internal, 'disconnect', { user_id: 'x' }, auth)).toEqual(refused(404, 'api_disabled'));
    }
  });

  it('answers 400 with the exact error code for each bad body, and publishes nothing', async () => {
    const room = 'channel:api-bad';
    const member = await client(b, 'bad-member');
    await join(member, room);
    await subscribed(room, 1);
    const ok = { room, type: 'task.updated', data: { bad: true } };
    const cases: Array<[string, unknown]> = [
      ['invalid_json', '{"room":'],
      ['invalid_json', ''],
      ['invalid_json', "{'room':'channel:1'}"],
      ['invalid_body', '[1,2]'],
      ['invalid_body', '"a string"'],
      ['invalid_body', '42'],
      ['invalid_body', 'null'],
      ['invalid_target', { type: 'task.updated', data: 1 }],
      ['invalid_target', { ...ok, user_id: 'u' }],
      ['invalid_target', { ...ok, connection_id: 'abc.1' }],
      ['invalid_target', { type: 'task.updated', user_id: 'u', connection_id: 'abc.1' }],
      ['invalid_room', { ...ok, room: 'nope:1' }],
      ['invalid_room', { ...ok, room: 'channel:' }],
      ['invalid_room', { ...ok, room: 'channel:a b' }],
      ['invalid_room', { ...ok, room: `channel:${'a'.repeat(65)}` }],
      ['invalid_room', { ...ok, room: 7 }],
      ['invalid_room', { ...ok, room: null }],
      ['invalid_user_id', { type: 'task.updated', user_id: 'bad id' }],
      ['invalid_user_id', { type: 'task.updated', user_id: '' }],
      ['invalid_user_id', { type: 'task.updated', user_id: 'x'.repeat(65) }],
      ['invalid_user_id', { type: 'task.updated', user_id: 12 }],
      ['invalid_connection_id', { type: 'task.updated', connection_id: 'nodot' }],
      ['invalid_connection_id', { type: 'task.updated', connection_id: 'a.b.c' }],
      ['invalid_connection_id', { type: 'task.updated', connection_id: 'node.UPPER' }],
      ['invalid_connection_id', { type: 'task.updated', connection_id: '.1' }],
      ['invalid_connection_id', { type: 'task.updated', connection_id: 'node.' }],
      ['invalid_connection_id', { type: 'task.updated', connection_id: 17 }],
      ['invalid_type', { room, data: 1 }],
      ['invalid_type', { room, type: 5 }],
      ['invalid_type', { room, type: '' }],
      ...['connected', 'error', 'pong', 'room_joined', 'room_left', 'user_joined', 'user_left', 'token_refreshed', 'message_sent', 'join_room', 'leave_room', 'send_message', 'ping', 'refresh_token'].map(
        (type): [string, unknown] => ['invalid_type', { room, type }],
      ),
      ...['Task.Created', 'a..b', 'x'.repeat(70), '.task', 'task.', 'task created', '1task', 'task.1st', 'tâche'].map((type): [string, unknown] => ['invalid_type', { room, type }]),
      ['invalid_sender', { ...ok, sender: 42 }],
      ['invalid_sender', { ...ok, sender: { name: 'x' } }],
      ['invalid_sender', { ...ok, sender: true }],
      ['invalid_sender', { ...ok, sender: 'x'.repeat(129) }],
    ];
    for (const [code, body] of cases) expect(await publish(body), `${code}: ${JSON.stringify(body)}`).toEqual(refused(400, code));
    await member.expectNothing((e) => e.room === room && e.type !== 'room_joined');

    // The boundaries themselves are accepted: a 64-character type and a 128-character sender.
    const type64 = `a${'.b'.repeat(31)}b`;
    expect(type64.length).toBe(64);
    expect((await publish({ room, type: type64, data: 1, sender: 's'.repeat(128) })).status).toBe(200);
    expect(await receiveExactly(member, ofType(type64), 1)).toEqual([{ type: type64, room, data: 1, sender: 's'.repeat(128), timestamp: expect.stringMatching(ISO) }]);
  });

  it('answers 413 for a Content-Length over WS_MESSAGE_MAX_SIZE; a body of exactly the cap passes', async () => {
    const room = 'channel:api-size';
    const member = await client(b, 'size-member');
    await join(member, room);
    await subscribed(room, 1);

    expect(await publish(bodyOfSize(MAX_SIZE + 1, room))).toEqual(refused(413, 'too_large'));
    expect(await publish(bodyOfSize(64 * 1024, room))).toEqual(refused(413, 'too_large'));
    await member.expectNothing(ofType('task.updated'), 0);

    const exact = bodyOfSize(MAX_SIZE, room);
    expect(await publish(exact)).toEqual({ status: 200, contentType: 'application/json', body: { status: 'published', room } });
    expect(await receiveExactly(member, ofType('task.updated'), 1)).toEqual([
      { type: 'task.updated', room, data: JSON.parse(exact).data, sender: null, timestamp: expect.stringMatching(ISO) },
    ]);
  });

  it('answers 413 for a chunked body as soon as it grows past the cap, before it ends; exactly the cap streamed passes', async () => {
    const room = 'channel:api-stream';
    const member = await client(b, 'stream-member');
    await join(member, room);
    await subscribed(room, 1);

    // 512-byte pieces of an endless JSON string: it never becomes valid, so only the cap can end it.
    const endless = function* () {
      yield `{"room":"${room}","type":"task.updated","data":"`;
      for (let i = 0; i < 128; i++) yield 'x'.repeat(512);
      yield '"}';
    };
    const big = await streamChunked(`${a.internal}/api/v1/publish`, endless(), 5);
    const message = `body larger than ${MAX_SIZE} bytes`;
    expect({ status: big.status, body: big.body }).toEqual({ status: 413, body: { code: 'too_large', message, error: 'too_large', reason: message } });
    expect(big.endedBeforeAnswer).toBe(false);
    expect(big.sentBeforeAnswer).toBeGreaterThan(MAX_SIZE);

    const exact = bodyOfSize(MAX_SIZE, room);
    const pieces = Array.from({ length: Math.ceil(MAX_SIZE / 500) }, (_, i) => exact.slice(i * 500, (i + 1) * 500));
    const small = await streamChunked(`${a.internal}/api/v1/publish`, pieces, 5);
    expect({ status: small.status, body: small.body }).toEqual({ status: 200, body: { status: 'published', room } });
    expect(small.endedBeforeAnswer).toBe(true);
    expect(await receiveExactly(member, ofType('task.updated'), 1)).toHaveLength(1);
  });

  it('is not served on the public port, and GET on the API paths is 404', async () => {
    const room = 'channel:api-public';
    const member = await client(a, 'public-member');
    await join(member, room);
    await subscribed(room, 1);
    const notFound = { status: 404, contentType: 'application/json', body: { code: 'not_found', message: 'no such path', error: 'not_found', reason: 'no such path' } };
    expect(await call(a.http, 'publish', { room, type: 'task.updated' })).toEqual(notFound);
    expect(await call(a.http, 'disconnect', { user_id: 'public-member' })).toEqual(notFound);
    for (const endpoint of ['publish', 'disconnect']) {
      const res = await fetch(`${a.internal}/api/v1/${endpoint}`, { headers: { authorization: `Bearer ${API_KEY}` } });
      expect(await answer(res)).toEqual(notFound);
    }
    await member.expectNothing(ofType('task.updated'));
    expect(member.ws.readyState).toBe(member.ws.OPEN);
  });
});

describe('POST /api/v1/disconnect', () => {
  it('closes every connection of the user on every node with 4403 "disconnected" by default; other users stay', async () => {
    const target = [await client(a, 'dc1'), await client(a, 'dc1'), await client(b, 'dc1')];
    const others = [await client(a, 'keep'), await client(b, 'keep')];
    expect(await disconnect({ user_id: 'dc1' })).toEqual({
      status: 200,
      contentType: 'application/json',
      body: { status: 'disconnecting', user_id: 'dc1', code: 4403 },
    });
    for (const c of target) expect(await c.closed).toEqual({ code: 4403, reason: 'disconnected' });
    for (const c of others) {
      c.send({ type: 'ping', id: 'still-here' });
      expect(await c.next((e) => e.id === 'still-here')).toMatchObject({ type: 'pong' });
    }
  });

  it('uses a custom code (4000-4999) and reason on every node', async () => {
    const first = [await client(a, 'dc2'), await client(b, 'dc2')];
    expect(await disconnect({ user_id: 'dc2', code: 4000, reason: 'moved to another plan' })).toEqual({
      status: 200,
      contentType: 'application/json',
      body: { status: 'disconnecting', user_id: 'dc2', code: 4000 },
    });
    for (const c of first) expect(await c.closed).toEqual({ code: 4000, reason: 'moved to another plan' });

    // The upper bounds: code 4999 and a 123-byte reason (multi-byte characters count as bytes).
    const reason = `${'é'.repeat(61)}a`;
    expect(Buffer.byteLength(reason)).toBe(123);
    const second = [await client(a, 'dc3'), await client(b, 'dc3')];
    expect((await disconnect({ user_id: 'dc3', code: 4999, reason })).status).toBe(200);
    for (const c of second) expect(await c.closed).toEqual({ code: 4999, reason });
  });

  it('answers 400 with the exact error code for a bad code, reason or user_id, and disconnects no one', async () => {
    const victims = [await client(a, 'safe'), await client(b, 'safe')];
    const cases: Array<[string, unknown]> = [
      ['invalid_json', '{"user_id":'],
      ['invalid_body', '["safe"]'],
      ['invalid_user_id', {}],
      ['invalid_user_id', { user_id: 'bad id' }],
      ['invalid_user_id', { user_id: '' }],
      ['invalid_user_id', { user_id: 'x'.repeat(65) }],
      ['invalid_user_id', { user_id: 5 }],
      ...[3999, 5000, 1000, 1008, 4000.5, -4403, '4403', null].map((code): [string, unknown] => ['invalid_code', { user_id: 'safe', code }]),
      ['invalid_reason', { user_id: 'safe', reason: 'x'.repeat(124) }],
      ['invalid_reason', { user_id: 'safe', reason: 'é'.repeat(62) }],
      ['invalid_reason', { user_id: 'safe', reason: 'two\nlines' }],
      ['invalid_reason', { user_id: 'safe', reason: 'carriage\rreturn' }],
      ['invalid_reason', { user_id: 'safe', reason: 42 }],
      ['invalid_reason', { user_id: 'safe', reason: null }],
    ];
    for (const [code, body] of cases) expect(await disconnect(body), `${code}: ${JSON.stringify(body)}`).toEqual(refused(400, code));
    for (const c of victims) {
      c.send({ type: 'ping', id: 'alive' });
      expect(await c.next((e) => e.id === 'alive')).toMatchObject({ type: 'pong' });
    }
  });
});

describe('wsedge_api_requests_total', () => {
  it('counts every request by endpoint and status', async () => {
    const series = [
      ['publish', '200'],
      ['publish', '400'],
      ['publish', '401'],
      ['publish', '413'],
      ['disconnect', '200'],
      ['disconnect', '400'],
      ['disconnect', '401'],
    ] as const;
    const read = async (node: TestNode): Promise<Record<string, number>> =>
      Object.fromEntries(
        await Promise.all(series.map(async ([endpoint, status]) => [`${endpoint} ${status}`, await node.metric('wsedge_api_requests_total', { endpoint, status })] as const)),
      );
    const before = await read(a);
    const offBefore = await off.metric('wsedge_api_requests_total', { endpoint: 'publish', status: '404' });

    await publish({ room: 'channel:metrics', type: 'task.updated' });
    await publish({ user_id: 'nobody', type: 'task.updated' });
    await publish('not json');
    await publish({ room: 'channel:metrics', type: 'connected' });
    await publish({ room: 'channel:metrics' });
    await publish({ room: 'channel:metrics', type: 'task.updated' }, 'Bearer wrong');
    await publish(bodyOfSize(MAX_SIZE + 1, 'channel:metrics'));
    await disconnect({ user_id: 'nobody' });
    await disconnect({ user_id: 'nobody', code: 1000 });
    await disconnect({ user_id: 'bad id' });
    await disconnect({ user_id: 'nobody' }, null);
    await call(off.internal, 'publish', { room: 'channel:metrics', type: 'task.updated' });

    const after = await read(a);
    const delta = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - before[k]!]));
    expect(delta).toEqual({
      'publish 200': 2,
      'publish 400': 3,
      'publish 401': 1,
      'publish 413': 1,
      'disconnect 200': 1,
      'disconnect 400': 2,
      'disconnect 401': 1,
    });
    expect((await off.metric('wsedge_api_requests_total', { endpoint: 'publish', status: '404' })) - offBefore).toBe(1);
    // Nothing on the node that served no API request.
    expect(await b.metric('wsedge_api_requests_total', { endpoint: 'publish', status: '200' })).toBe(0);
  });
});
