/**
 * PUBLISH_PORT (issue 25 item 5): the publish API on a thread of its own, with its own event loop
 * and Redis connection. Node processes on one redis-server and on a 3-master Cluster: every target
 * form published through the thread reaches the members on every node once, in order, with the
 * internal port's answers (an idempotency key shared between both ports). The node's main thread
 * paused in the debugger (its event loop stopped, as in a reconnect storm's worst turn): the thread
 * answers and the event reaches another node's members while the internal port's publish waits.
 * Redis down: 503 `unavailable`, never a 200 for an event nobody got. A SIGTERM with backends'
 * keep-alive connections open on the port: the node exits 0.
 */
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { connect, join, open, token, type TestClient } from '../helpers/client.js';
import { startNodeProcess, stopAllProcesses, type NodeProcess } from '../helpers/processes.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';
import { startRedisCluster, stopAllClusters } from '../helpers/redis-cluster.js';
import { waitFor } from '../helpers/wait.js';

const API_KEY = 'publish-thread-suite-key-0123456789abcdef';
const clients: TestClient[] = [];

afterAll(async () => {
  clients.splice(0).forEach((c) => c.close());
  await stopAllProcesses();
  await stopAllRedis();
  await stopAllClusters();
});

async function client(url: string, user: string, rooms: string[]): Promise<TestClient> {
  const c = await connect(url, user);
  clients.push(c);
  for (const room of rooms) await join(c, room);
  return c;
}

async function post(base: string, path: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${base}${path}`, { method: 'POST', headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const numbersIn = (c: TestClient, room: string): number[] => c.received.filter((e) => e.type === 'task.updated' && e.room === room).map((e) => (e.data as { n: number }).n);

describe.each([
  ['one redis-server', async () => ({ REDIS_URL: (await startRedis()).url })],
  ['a 3-master Redis Cluster', async () => ({ REDIS_CLUSTER_NODES: (await startRedisCluster({ replicasPerMaster: 0 })).seeds })],
])('the publish thread on %s', (name, topology) => {
  it('publishes every target form once, in order, to the members on every node, with the internal port\u2019s answers', { timeout: 60_000 }, async () => {
    const env = { ...(await topology()), REDIS_PREFIX: uniquePrefix(), PUBLISH_API_KEY: API_KEY, WS_HISTORY_ROOMS: 'task:*' };
    const [a, b] = await Promise.all([startNodeProcess({ ...env, PUBLISH_PORT: '0' }), startNodeProcess(env)]);
    expect(a.publish).toBeDefined();
    expect(b.publish).toBeUndefined();
    const rooms = ['task:seq', 'channel:plain'];
    const [ann, bea] = await Promise.all([client(a.url, 'ann', rooms), client(b.url, 'bea', rooms)]);
    const cy = open(b.url, token('cy'));
    clients.push(cy);
    const connectionId = ((await cy.next((e) => e.type === 'connected')).data as { connection_id: string }).connection_id;
    const N = 200;
    for (let n = 1; n <= N; n++) {
      const answers = await Promise.all(rooms.map((room) => post(a.publish!, '/api/v1/publish', { room, type: 'task.updated', data: { n } })));
      expect(answers.map((x) => x.status)).toEqual([200, 200]);
    }
    await waitFor(`${N} events in both rooms on both nodes`, () => [ann, bea].every((c) => rooms.every((room) => numbersIn(c!, room).length >= N)), 20_000);
    const expected = Array.from({ length: N }, (_, i) => i + 1);
    for (const c of [ann, bea]) for (const room of rooms) expect(numbersIn(c!, room)).toEqual(expected);

    // The idempotency key is the room's, whichever port took the first publish.
    const first = await post(a.internal, '/api/v1/publish', { room: 'task:seq', type: 'task.updated', data: { n: N + 1 }, idempotency_key: 'k-1' });
    const again = await post(a.publish!, '/api/v1/publish', { room: 'task:seq', type: 'task.updated', data: { n: N + 1 }, idempotency_key: 'k-1' });
    expect(again.body).toEqual({ ...first.body, duplicate: true });
    // Users (connections counted cluster-wide), a connection on another node, a batch with a bad item.
    const users = await post(a.publish!, '/api/v1/publish', { user_ids: ['cy', 'nobody'], type: 'task.updated', data: { n: -1 } });
    expect(users.body).toEqual({ status: 'published', results: [{ status: 'published', user_id: 'cy', connections: 1 }, { status: 'published', user_id: 'nobody', connections: 0 }] });
    await cy.next((e) => e.type === 'task.updated' && e.room === 'user:cy');
    expect((await post(a.publish!, '/api/v1/publish', { connection_id: connectionId, type: 'task.pinged', data: {} })).body).toEqual({ status: 'published', connection_id: connectionId });
    await cy.next((e) => e.type === 'task.pinged');
    const batch = await post(a.publish!, '/api/v1/publish/batch', { publications: [{ room: 'channel:plain', type: 'task.updated', data: { n: N + 1 } }, { room: 'bad room', type: 'task.updated' }] });
    expect(batch.body['results']).toEqual([{ status: 'published', room: 'channel:plain' }, expect.objectContaining({ code: 'invalid_room' })]);
    // Refusals as on the internal port.
    const refused = await fetch(`${a.publish!}/api/v1/publish`, { method: 'POST', headers: { authorization: 'Bearer wrong' }, body: '{}' });
    expect(refused.status).toBe(401);
    expect((await post(a.publish!, '/api/v1/publish', { room: 'task:seq', type: 'connected' })).body['code']).toBe('invalid_type');
    expect((await fetch(`${a.publish!}/metrics`)).status).toBe(404);
    // Counted in the node's own metrics.
    await waitFor('the thread\u2019s counts in /metrics', async () => (await a.metric('wsedge_api_requests_total', { endpoint: 'publish', status: '200' })) >= 2 * N + 3, 5000);
    console.log(`publish thread on ${name}: ${N} events to a sequenced and a plain room, each member on both nodes got ${N} of ${N} in order in both rooms; users, connection, batch and idempotency answered as on the internal port`);
    expect((await (await fetch(`${a.http}/readyz`)).json()) as Record<string, unknown>).toMatchObject({ status: 'ready', publish_thread: 'up' });
  });
});

/** A Chrome DevTools Protocol session on a node's main thread (`node --inspect`). */
async function inspect(node: NodeProcess): Promise<{ call(method: string): Promise<unknown>; paused: Promise<void>; close(): void }> {
  const url = /Debugger listening on (ws:\/\/\S+)/.exec(node.stderr())?.[1];
  expect(url).toBeDefined();
  const ws = new WebSocket(url!);
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  let id = 0;
  const waiting = new Map<number, (result: unknown) => void>();
  let onPaused: () => void = () => {};
  const paused = new Promise<void>((resolve) => (onPaused = resolve));
  ws.on('message', (raw) => {
    const message = JSON.parse(raw.toString()) as { id?: number; method?: string; result?: unknown };
    if (message.method === 'Debugger.paused') onPaused();
    if (message.id !== undefined) waiting.get(message.id)?.(message.result);
  });
  return {
    call: (method) => new Promise((resolve) => {
      waiting.set(++id, resolve);
      ws.send(JSON.stringify({ id, method }));
    }),
    paused,
    close: () => ws.close(),
  };
}

describe('the publish thread while the node\u2019s event loop is stopped', () => {
  it('answers and delivers through Redis while the main thread is paused in the debugger; the internal port answers only after', { timeout: 60_000 }, async () => {
    const env = { REDIS_URL: (await startRedis()).url, REDIS_PREFIX: uniquePrefix(), PUBLISH_API_KEY: API_KEY, WS_HISTORY_ROOMS: 'task:*' };
    const [a, b] = await Promise.all([startNodeProcess({ ...env, PUBLISH_PORT: '0' }, { nodeArgs: ['--inspect=127.0.0.1:0'] }), startNodeProcess(env)]);
    const member = await client(b.url, 'dee', ['task:p', 'channel:p']);
    const debug = await inspect(a);
    await debug.call('Debugger.enable');
    await debug.call('Debugger.pause');
    // The main thread pauses at its next JavaScript: a request to its internal port runs some.
    let internalAnswered = false;
    const internal = post(a.internal, '/api/v1/publish', { room: 'channel:p', type: 'task.updated', data: { n: 0 } }).then((answer) => {
      internalAnswered = true;
      return answer;
    });
    await debug.paused;
    const answers = [await post(a.publish!, '/api/v1/publish', { room: 'task:p', type: 'task.updated', data: { n: 1 } }), await post(a.publish!, '/api/v1/publish', { room: 'channel:p', type: 'task.updated', data: { n: 1 } })];
    await member.next((e) => e.type === 'task.updated' && e.room === 'task:p');
    await member.next((e) => e.type === 'task.updated' && e.room === 'channel:p' && (e.data as { n: number }).n === 1);
    const whilePaused = internalAnswered;
    await debug.call('Debugger.resume');
    const late = await internal;
    debug.close();
    console.log(`node paused in the debugger: publish thread answered ${answers.map((x) => x.status).join(', ')} and another node's member got both events; the internal port's publish answered ${late.status} only after the resume`);
    expect(answers.map((x) => x.status)).toEqual([200, 200]);
    expect(answers[0]!.body).toMatchObject({ status: 'published', room: 'task:p', offset: 1 });
    expect(whilePaused).toBe(false);
    expect(late.status).toBe(200);
  });

  it('answers 503 unavailable while Redis is down, never 200 for an event no node got; a node without Redis refuses PUBLISH_PORT at start', { timeout: 60_000 }, async () => {
    const redis = await startRedis();
    const a = await startNodeProcess({ REDIS_URL: redis.url, REDIS_PREFIX: uniquePrefix(), PUBLISH_API_KEY: API_KEY, WS_HISTORY_ROOMS: 'task:*', PUBLISH_PORT: '0' });
    await waitFor('the thread publishes', async () => (await post(a.publish!, '/api/v1/publish', { room: 'channel:r', type: 'task.updated' })).status === 200, 10_000);
    await redis.stop();
    const plain = await post(a.publish!, '/api/v1/publish', { room: 'channel:r', type: 'task.updated' });
    const sequenced = await post(a.publish!, '/api/v1/publish', { room: 'task:r', type: 'task.updated' });
    expect({ status: plain.status, code: plain.body['code'], message: plain.body['message'] }).toEqual({ status: 503, code: 'unavailable', message: expect.stringContaining('Redis did not take the event') });
    expect({ status: sequenced.status, code: sequenced.body['code'] }).toEqual({ status: 503, code: 'unavailable' });
    // A connection, even one of this node, is reached through Redis from the thread: not taken, not a 200.
    const connection = await post(a.publish!, '/api/v1/publish', { connection_id: `${a.nodeId}.1`, type: 'task.updated' });
    expect({ status: connection.status, code: connection.body['code'] }).toEqual({ status: 503, code: 'unavailable' });
    // The thread ends with the node, its keep-alive connections (fetch keeps them) open: a clean exit.
    expect(await a.stop()).toEqual({ code: 0, signal: null });
    const refused = await startNodeProcess({ PUBLISH_PORT: '0' }).then(
      () => 'started',
      (err: Error) => err.message,
    );
    expect(refused).toContain('PUBLISH_PORT: the publish thread publishes through Redis');
  });
});
