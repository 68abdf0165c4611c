/**
 * Room permissions on real nodes: room grants (valid, expired, for another user or room, a wrong
 * signature, alg none, refreshed in band, expiring while joined), the authorization callback
 * against a real HTTP server started here (allow, deny, slow, down, 500, malformed and oversized
 * answers, cache hits and expiry, the concurrency cap under 1,000 joins, a slow answer delaying no
 * one else), and cluster-wide revocation and subscription across three nodes on one Redis,
 * refused while Redis is down.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createSigner } from 'fast-jwt';
import { afterAll, describe, expect, it } from 'vitest';
import { signToken } from '../../src/auth.js';
import { connect, join, type Envelope, type TestClient } from '../helpers/client.js';
import { startBrokerNodes, brokersUp } from '../helpers/broker-nodes.js';
import { startTestNode, stopAllNodes, stopTestNode, TEST_SECRET, type TestNode } from '../helpers/node.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

const API_KEY = 'permissions-suite-publish-key-0123456789abcdef';
const AUTH_KEY = 'room-auth-key-0123456789abcdef';
const clients: TestClient[] = [];
const servers: Server[] = [];

afterAll(async () => {
  clients.splice(0).forEach((c) => c.close());
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  await stopAllNodes();
  await stopAllRedis();
});

const grant = (user: string, room: string, ttlSeconds = 60, secret = TEST_SECRET) => signToken({ secret, userId: user, room, ttlSeconds });

async function client(node: TestNode, user: string, rooms: string[] = []): Promise<TestClient> {
  const c = await connect(node.url, user, { rooms });
  clients.push(c);
  return c;
}

async function request(c: TestClient, frame: Record<string, unknown>): Promise<Envelope> {
  const id = `r-${Math.random()}`;
  c.send({ ...frame, id });
  return c.next((e) => e.id === id, 5000);
}

describe('room grants', () => {
  it('joins with a valid grant and refuses expired, foreign, forged and alg none grants with their reasons', async () => {
    const node = await startTestNode();
    const c = await client(node, 'gail');
    expect(await request(c, { type: 'join_room', room: 'project:7', grant: grant('gail', 'project:7') })).toMatchObject({ type: 'room_joined', room: 'project:7' });
    const none = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: 'gail', room: 'project:8', exp: Math.floor(Date.now() / 1000) + 60 })).toString('base64url')}.`;
    const expired = createSigner({ key: TEST_SECRET })({ sub: 'gail', room: 'project:8', exp: Math.floor(Date.now() / 1000) - 60 });
    const cases: Array<[string | number, string]> = [
      [expired, 'room grant expired'],
      [grant('other', 'project:8'), 'room grant is for another user'],
      [grant('gail', 'project:9'), 'room grant is for another room'],
      [grant('gail', 'project:8', 60, 'another-secret-that-is-long-enough-for-hs256-0123'), 'room grant invalid'],
      [none, 'room grant invalid'],
    ];
    for (const [g, message] of cases) {
      expect((await request(c, { type: 'join_room', room: 'project:8', grant: g })).data, message).toEqual({ code: 'forbidden', message, error: message });
    }
    expect((await request(c, { type: 'join_room', room: 'project:8', grant: 7 })).data).toMatchObject({ code: 'invalid_message' });
    expect((await request(c, { type: 'join_room', room: 'project:8' })).data).toMatchObject({ code: 'forbidden', message: 'not allowed to join this room' });
    await stopTestNode(node);
  });

  it('ends the membership at the grant’s exp with room_left grant_expired, unless a fresh grant came in band; the connection stays; a token refresh keeps granted rooms', { timeout: 20_000 }, async () => {
    const node = await startTestNode({ JWT_CLOCK_TOLERANCE: '0' });
    const c = await client(node, 'hugo', ['channel:1']);
    await request(c, { type: 'join_room', room: 'project:short', grant: grant('hugo', 'project:short', 2) });
    await request(c, { type: 'join_room', room: 'project:renewed', grant: grant('hugo', 'project:renewed', 2) });
    // Sent again with a fresh grant before exp: the membership goes on.
    expect(await request(c, { type: 'join_room', room: 'project:renewed', grant: grant('hugo', 'project:renewed', 60) })).toMatchObject({ type: 'room_joined' });
    // A refreshed token whose claim lacks both rooms does not drop them: a grant let them in.
    expect(await request(c, { type: 'refresh_token', token: signToken({ secret: TEST_SECRET, userId: 'hugo', rooms: ['channel:1'], ttlSeconds: 3600 }) })).toMatchObject({ type: 'token_refreshed' });
    const left = await c.next((e) => e.type === 'room_left', 5000);
    expect(left).toMatchObject({ room: 'project:short', reason: 'grant_expired' });
    await c.expectNothing((e) => e.type === 'room_left', 1500);
    expect(await request(c, { type: 'ping' })).toMatchObject({ type: 'pong' });
    expect(await node.metric('wsedge_room_revocations_total', { cause: 'grant_expired' })).toBe(1);
    expect(await node.metric('wsedge_room_authorizations_total', { source: 'grant', result: 'allow' })).toBe(3);
    await stopTestNode(node);
  });
});

/** The product backend's callback: answers by room name, counts calls and the most in flight. */
async function authBackend() {
  const seen: Array<{ auth: string | undefined; body: Record<string, unknown> }> = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const server = createServer(async (req: IncomingMessage, res) => {
    inFlight += 1;
    maxInFlight = Math.max(maxInFlight, inFlight);
    let raw = '';
    for await (const chunk of req) raw += chunk;
    const body = JSON.parse(raw) as Record<string, unknown>;
    seen.push({ auth: req.headers.authorization, body });
    const room = String(body['room']);
    const answer = async (status: number, text: string, delayMs = 0) => {
      await new Promise((r) => setTimeout(r, delayMs));
      inFlight -= 1;
      res.writeHead(status, { 'content-type': 'application/json' }).end(text);
    };
    if (room === 'project:deny') return answer(200, '{"allow":false}');
    if (room === 'project:slow') return answer(200, '{"allow":true}', 1500);
    if (room === 'project:500') return answer(500, '{"allow":true}');
    if (room === 'project:bad') return answer(200, 'allow');
    if (room === 'project:huge') return answer(200, JSON.stringify({ allow: true, pad: 'x'.repeat(10_000) }));
    if (room === 'project:short') return answer(200, '{"allow":true,"ttl":1}');
    if (room.startsWith('task:')) return answer(200, '{"allow":true}', 20);
    return answer(200, '{"allow":true}');
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/authorize`, seen, maxInFlight: () => maxInFlight };
}

describe('the authorization callback', () => {
  it('allows, denies, and fails closed with unavailable on a slow, down, 500, malformed or oversized answer', async () => {
    const backend = await authBackend();
    const node = await startTestNode({ WS_ROOM_ACCESS: 'callback', WS_ROOM_AUTH_URL: backend.url, WS_ROOM_AUTH_KEY: AUTH_KEY, WS_ROOM_AUTH_TIMEOUT: '500' });
    const c = await client(node, 'ivan', ['channel:1']);
    expect(await request(c, { type: 'join_room', room: 'project:ok' })).toMatchObject({ type: 'room_joined' });
    expect(backend.seen[0]).toEqual({ auth: `Bearer ${AUTH_KEY}`, body: { user_id: 'ivan', username: 'ivan', room: 'project:ok', connection_id: expect.stringMatching(/\./) } });
    // The token's claim is asked before the callback: no call for channel:1.
    expect(await request(c, { type: 'join_room', room: 'channel:1' })).toMatchObject({ type: 'room_joined' });
    expect(backend.seen.map((s) => s.body['room'])).toEqual(['project:ok']);
    expect((await request(c, { type: 'join_room', room: 'project:deny' })).data).toMatchObject({ code: 'forbidden', message: 'the room authorization service denied this room' });
    for (const room of ['project:slow', 'project:500', 'project:bad', 'project:huge']) {
      expect((await request(c, { type: 'join_room', room })).data, room).toMatchObject({ code: 'unavailable', message: 'room authorization is unreachable; try again' });
    }
    expect(await node.metric('wsedge_room_authorizations_total', { source: 'callback', result: 'error' })).toBe(4);
    await stopTestNode(node);

    const down = await startTestNode({ WS_ROOM_ACCESS: 'callback', WS_ROOM_AUTH_URL: 'http://127.0.0.1:9/authorize', WS_ROOM_AUTH_KEY: AUTH_KEY });
    const d = await client(down, 'ivan');
    expect((await request(d, { type: 'join_room', room: 'project:ok' })).data).toMatchObject({ code: 'unavailable' });
    await stopTestNode(down);
  });

  it('caches answers per user and room, with their lifetimes; a slow answer delays no other message', { timeout: 20_000 }, async () => {
    const backend = await authBackend();
    const node = await startTestNode({ WS_ROOM_ACCESS: 'callback', WS_ROOM_AUTH_URL: backend.url, WS_ROOM_AUTH_KEY: AUTH_KEY, WS_ROOM_AUTH_ALLOW_TTL: '60', WS_ROOM_AUTH_DENY_TTL: '60' });
    const a = await client(node, 'jack');
    const b = await client(node, 'jack');
    await request(a, { type: 'join_room', room: 'project:cached' });
    await request(b, { type: 'join_room', room: 'project:cached' });
    await request(a, { type: 'join_room', room: 'project:deny' });
    await request(b, { type: 'join_room', room: 'project:deny' });
    const calls = (room: string) => backend.seen.filter((s) => s.body['room'] === room).length;
    expect([calls('project:cached'), calls('project:deny')]).toEqual([1, 1]);
    // The answer's own ttl (1 s) ends that cache entry sooner.
    await request(a, { type: 'join_room', room: 'project:short' });
    await new Promise((r) => setTimeout(r, 1200));
    await request(b, { type: 'join_room', room: 'project:short' });
    expect(calls('project:short')).toBe(2);
    expect(await node.metric('wsedge_room_auth_cache_total', { result: 'hit' })).toBe(2);

    // While one connection waits 1.5 s for its answer, its own ping and another connection's messages go on.
    const other = await client(node, 'kate', ['channel:2']);
    a.send({ type: 'join_room', room: 'project:slow', id: 'slow' });
    a.send({ type: 'ping', id: 'own-ping' });
    other.send({ type: 'join_room', room: 'channel:2', id: 'fast' });
    await other.next((e) => e.id === 'fast');
    await a.next((e) => e.id === 'own-ping');
    expect(a.received.some((e) => e.id === 'slow')).toBe(false);
    expect(await a.next((e) => e.id === 'slow', 5000)).toMatchObject({ type: 'room_joined' });
    await stopTestNode(node);
  });

  it('a leave or a backend’s unsubscribe while the callback is asked cancels the join: the late allow is neither used nor cached', { timeout: 20_000 }, async () => {
    const backend = await authBackend();
    const node = await startTestNode({ WS_ROOM_ACCESS: 'callback', WS_ROOM_AUTH_URL: backend.url, WS_ROOM_AUTH_KEY: AUTH_KEY, PUBLISH_API_KEY: API_KEY });
    const c = await client(node, 'mona');
    c.send({ type: 'join_room', room: 'project:slow', id: 'j1' });
    expect(await request(c, { type: 'leave_room', room: 'project:slow' })).toMatchObject({ type: 'room_left', room: 'project:slow' });
    c.send({ type: 'join_room', room: 'project:slow', id: 'j2' });
    const res = await fetch(`${node.internal}/api/v1/unsubscribe`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: 'mona', room: 'project:slow' }),
    });
    expect(res.status).toBe(200);
    expect(await c.next((e) => e.type === 'room_left' && e.reason === 'access_revoked', 3000)).toMatchObject({ room: 'project:slow' });
    await new Promise((r) => setTimeout(r, 2000));
    expect(c.received.filter((e) => e.type === 'room_joined')).toEqual([]);
    // Nothing was cached: the next join asks again.
    const calls = backend.seen.length;
    await request(c, { type: 'join_room', room: 'project:slow' });
    expect(backend.seen.length).toBe(calls + 1);
    await stopTestNode(node);
  });

  it('keeps at most WS_ROOM_AUTH_CONCURRENCY calls in flight under 1,000 simultaneous joins, and answers every one', { timeout: 60_000 }, async () => {
    const backend = await authBackend();
    const node = await startTestNode({ WS_ROOM_ACCESS: 'callback', WS_ROOM_AUTH_URL: backend.url, WS_ROOM_AUTH_KEY: AUTH_KEY, WS_ROOM_AUTH_CONCURRENCY: '8', WS_ROOM_AUTH_TIMEOUT: '10000', WS_RATE_BURST: '100' });
    const sockets = await Promise.all(Array.from({ length: 200 }, (_, i) => client(node, `cap${i}`)));
    const started = Date.now();
    for (const s of sockets) for (let r = 0; r < 5; r++) s.send({ type: 'join_room', room: `task:${r}`, id: `j${r}` });
    await waitFor('1,000 joins answered', () => sockets.every((s) => s.received.filter((e) => e.type === 'room_joined').length === 5), 30_000);
    console.log(JSON.stringify({ scenario: 'room-auth-cap', joins: 1000, concurrency: 8, backend_max_in_flight: backend.maxInFlight(), calls: backend.seen.length, elapsed_ms: Date.now() - started }));
    expect(backend.maxInFlight()).toBeLessThanOrEqual(8);
    expect(backend.seen.length).toBe(1000);
    await stopTestNode(node);
  });
});

describe('cluster-wide revocation', () => {
  it('unsubscribe takes the room from every connection of the user on every node, keeps their other rooms; subscribe joins them; refused while Redis is down', { timeout: 60_000 }, async () => {
    const redis = await startRedis();
    const nodes = await startBrokerNodes({ REDIS_URL: redis.url }, uniquePrefix(), ['ra', 'rb', 'rc'], { PUBLISH_API_KEY: API_KEY });
    const [n1, n2, n3] = nodes as [TestNode, TestNode, TestNode];
    const tabs = [await client(n1, 'lena', ['project:*']), await client(n2, 'lena', ['project:*'])];
    for (const t of tabs) {
      await join(t, 'project:secret');
      await join(t, 'project:keep');
    }
    const api = (path: string, body: object) =>
      fetch(`${n3.internal}/api/v1/${path}`, { method: 'POST', headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const sent = Date.now();
    const res = await api('unsubscribe', { user_id: 'lena', room: 'project:secret' });
    expect(await res.json()).toEqual({ status: 'unsubscribed', user_id: 'lena', room: 'project:secret' });
    const lefts = await Promise.all(tabs.map((t) => t.next((e) => e.type === 'room_left', 3000)));
    const boundMs = Date.now() - sent;
    for (const l of lefts) expect(l).toMatchObject({ room: 'project:secret', reason: 'access_revoked' });
    console.log(JSON.stringify({ scenario: 'revocation', nodes: 3, connections: 2, revoked_within_ms: boundMs }));
    await api('publish', { room: 'project:secret', type: 'task.updated', data: { n: 1 } });
    await api('publish', { room: 'project:keep', type: 'task.updated', data: { n: 2 } });
    for (const t of tabs) {
      expect((await t.next((e) => e.type === 'task.updated', 3000)).room).toBe('project:keep');
      expect(t.ws.readyState).toBe(t.ws.OPEN);
    }
    await tabs[0]!.expectNothing((e) => e.room === 'project:secret' && e.type === 'task.updated', 300);

    // One connection only, then a server-side subscribe of every connection.
    const hello = tabs[1]!;
    await api('unsubscribe', { user_id: 'lena', room: 'project:keep', connection_id: connectionIdOf(n2, 'lena') });
    expect(await hello.next((e) => e.type === 'room_left', 3000)).toMatchObject({ room: 'project:keep' });
    await tabs[0]!.expectNothing((e) => e.type === 'room_left', 300);
    expect(await (await api('subscribe', { user_id: 'lena', room: 'project:new' })).json()).toMatchObject({ status: 'subscribed' });
    for (const t of tabs) expect(await t.next((e) => e.type === 'room_joined' && e.room === 'project:new', 3000)).not.toHaveProperty('id');

    await redis.stop();
    await waitFor('broker down', async () => (await n3.metric('wsedge_broker_up')) === 0, 10_000);
    const refused = await api('unsubscribe', { user_id: 'lena', room: 'project:new' });
    expect(refused.status).toBe(503);
    expect(await refused.json()).toMatchObject({ code: 'unavailable', error: 'unavailable' });
    await redis.restart();
    await brokersUp(nodes, 15_000);
    await Promise.all(nodes.map(stopTestNode));
  });
});

/** The connection id of the user's session on a node, from its open-connection log line. */
function connectionIdOf(node: TestNode, user: string): string {
  const line = node.logs.find((l) => l['event'] === 'connection_open' && l['user_id'] === user);
  return String(line?.['connection_id']);
}
