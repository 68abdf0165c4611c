/**
 * The multi-node deployment as it runs: three `ws-edge serve` processes sharing one redis-server,
 * behind the shipped HAProxy config (leastconn). Cross-node fan-out from clients and from every
 * node's publish API, membership events across nodes, no duplicates and per-publisher order,
 * user-targeted events, and kill -9 of a node (its clients move to the survivors, its user seats
 * expire within REDIS_SLOT_TTL). HAProxy's access log never carries a token.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { join, open, token, type Envelope, type TestClient } from '../helpers/client.js';
import { startHaproxy, stopAllHaproxy, type Haproxy } from '../helpers/haproxy.js';
import { startNodeProcess, stopAllProcesses, type NodeProcess } from '../helpers/processes.js';
import { startRedis, stopAllRedis, uniquePrefix, type RedisServer } from '../helpers/redis.js';
import { brokerUp, receiveExactly, waitSubscribed } from '../helpers/broker-checks.js';
import { waitFor } from '../helpers/wait.js';

const API_KEY = 'cluster-suite-publish-api-key-0123456789';
const SLOT_TTL_S = 3;
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

let redis: RedisServer;
let prefix: string;
let nodes: NodeProcess[];
let haproxy: Haproxy;
/** Sockets of the running test; closed after each, so HAProxy logs every tunnel. */
const sockets: TestClient[] = [];
/** Every token sent through HAProxy, and how many of its sockets were accepted. */
const haproxyTokens: string[] = [];
let haproxyConnections = 0;

interface Member {
  readonly client: TestClient;
  readonly userId: string;
  readonly token: string;
  readonly connectionId: string;
  /** The node that accepted the socket: the connection id is `<node id>.<sequence>`. */
  readonly nodeId: string;
}


/** Cross-node delivery starts once Redis confirms: exactly `count` nodes subscribed to the room. */
const subscribed = (room: string, count: number) => waitSubscribed(redis.port, `${prefix}room:${room}`, count);

const nodesOf = (members: readonly Member[]) => new Set(members.map((m) => m.nodeId)).size;

function memberOf(client: TestClient, userId: string, tok: string, hello: Envelope): Member {
  const connectionId = hello.data.connection_id as string;
  return { client, userId, token: tok, connectionId, nodeId: connectionId.slice(0, connectionId.indexOf('.')) };
}

async function accepted(client: TestClient, userId: string, tok: string): Promise<Member> {
  return memberOf(client, userId, tok, await client.next((e) => e.type === 'connected'));
}

async function viaHaproxy(userId: string, tok = token(userId)): Promise<Member> {
  haproxyTokens.push(tok);
  const client = open(haproxy.url, tok);
  sockets.push(client);
  const member = await accepted(client, userId, tok);
  haproxyConnections += 1;
  return member;
}

async function direct(node: NodeProcess, userId: string): Promise<Member> {
  const tok = token(userId);
  const client = open(node.url, tok);
  sockets.push(client);
  return accepted(client, userId, tok);
}

/**
 * Reconnects through HAProxy the way a client should: retry with a short backoff until `connected`.
 * Until its health check fails, HAProxy may still route an attempt to a dead node.
 */
async function reconnect(userId: string, tok: string, timeoutMs = 15_000): Promise<Member> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; ; attempt++) {
    haproxyTokens.push(tok);
    const client = open(haproxy.url, tok);
    sockets.push(client);
    const hello = await Promise.race([
      client.next((e) => e.type === 'connected', 3000).then(
        (e) => e,
        () => undefined,
      ),
      client.closed.then(() => undefined),
    ]);
    if (hello !== undefined) {
      haproxyConnections += 1;
      return memberOf(client, userId, tok, hello);
    }
    client.close();
    if (Date.now() > deadline) throw new Error(`${userId} could not reconnect within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, Math.min(50 * 2 ** attempt, 500)));
  }
}

const ofType = (type: string, room?: string) => (e: Envelope) => e.type === type && (room === undefined || e.room === room);

function publishVia(node: NodeProcess, body: Record<string, unknown>): Promise<Response> {
  return fetch(`${node.internal}/api/v1/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

/** Live (unexpired) entries of a user's cluster-wide slot set, by Redis time. */
async function liveSlots(userId: string): Promise<string[]> {
  const time = /^\*2\r\n\$\d+\r\n(\d+)\r\n\$\d+\r\n(\d+)\r\n$/.exec(await redis.command('TIME'));
  if (!time) throw new Error('unexpected TIME reply');
  const nowMs = Number(time[1]) * 1000 + Math.floor(Number(time[2]) / 1000);
  const reply = await redis.command('ZRANGEBYSCORE', `${prefix}conns:{${userId}}`, `(${nowMs}`, '+inf');
  return [...reply.matchAll(/\$\d+\r\n([^\r]+)\r\n/g)].map((m) => m[1]!);
}

beforeAll(async () => {
  redis = await startRedis();
  prefix = uniquePrefix();
  const env = {
    REDIS_URL: redis.url,
    REDIS_PREFIX: prefix,
    PUBLISH_API_KEY: API_KEY,
    WS_RATE_LIMIT: '1000',
    WS_RATE_BURST: '1000',
    REDIS_SLOT_TTL: String(SLOT_TTL_S),
    LOG_LEVEL: 'info',
  };
  nodes = await Promise.all([startNodeProcess(env), startNodeProcess(env), startNodeProcess(env)]);
  await Promise.all(nodes.map((n) => waitFor(`node ${n.nodeId} broker up`, () => brokerUp(n.http))));
  haproxy = await startHaproxy(nodes.map((n) => n.port));
});

afterEach(async () => {
  const clients = sockets.splice(0);
  for (const c of clients) c.close();
  await Promise.all(clients.map((c) => c.closed));
});

afterAll(async () => {
  await Promise.all([stopAllHaproxy(), stopAllProcesses()]);
  await stopAllRedis();
});

describe('three nodes behind HAProxy', () => {
  it('spreads clients over every node, and every member gets each event from any node client and any node API exactly once', async () => {
    const members: Member[] = [];
    // One at a time, so leastconn sees each open socket before placing the next.
    for (let i = 0; i < 6; i++) members.push(await viaHaproxy(`spread${i}`));
    for (const node of nodes) {
      expect(await node.metric('wsedge_connections')).toBeGreaterThanOrEqual(1);
      expect(members.some((m) => m.nodeId === node.nodeId)).toBe(true);
    }

    const room = 'project:spread';
    for (const m of members) await join(m.client, room);
    await subscribed(room, 3);

    // One client per node sends.
    const senders = nodes.map((n) => members.find((m) => m.nodeId === n.nodeId)!);
    for (const s of senders) s.client.send({ type: 'send_message', room, data: { from: s.nodeId } });
    await Promise.all(
      members.map(async (m) => {
        const got = await receiveExactly(m.client, ofType('message.new', room), 3);
        expect(got.map((e) => e.data.from).sort()).toEqual(nodes.map((n) => n.nodeId).sort());
        for (const e of got) {
          const from = senders.find((s) => s.nodeId === e.data.from)!;
          expect(e).toEqual({ type: 'message.new', room, data: { from: from.nodeId }, sender: from.userId, user_id: from.userId, timestamp: expect.stringMatching(ISO) });
        }
      }),
    );

    // The publish API of every node.
    for (const node of nodes) {
      const res = await publishVia(node, { room, type: 'task.updated', data: { via: node.nodeId }, sender: 'backend' });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('application/json');
      expect(await res.json()).toEqual({ status: 'published', room });
    }
    await Promise.all(
      members.map(async (m) => {
        const got = await receiveExactly(m.client, ofType('task.updated', room), 3);
        expect(got.map((e) => e.data.via).sort()).toEqual(nodes.map((n) => n.nodeId).sort());
        for (const e of got) expect(e).toEqual({ type: 'task.updated', room, data: { via: e.data.via }, sender: 'backend', timestamp: expect.stringMatching(ISO) });
      }),
    );
  });

  it('announces user_joined and user_left to members on other nodes', async () => {
    const room = 'channel:members';
    const [n1, n2, n3] = nodes as [NodeProcess, NodeProcess, NodeProcess];
    const ann = await direct(n1, 'ann');
    const ben = await direct(n2, 'ben');
    const cat = await direct(n3, 'cat');
    const joined = (user: string) => ({ type: 'user_joined', room, data: { user_id: user, username: user }, sender: user, timestamp: expect.stringMatching(ISO) });
    const left = (user: string) => ({ type: 'user_left', room, data: { user_id: user, username: user }, sender: user, timestamp: expect.stringMatching(ISO) });

    await join(ann.client, room);
    await subscribed(room, 1);
    await join(ben.client, room);
    expect(await receiveExactly(ann.client, ofType('user_joined'), 1)).toEqual([joined('ben')]);
    await subscribed(room, 2);

    await join(cat.client, room);
    for (const m of [ann, ben]) expect(await receiveExactly(m.client, ofType('user_joined'), 1)).toEqual([joined('cat')]);
    // Nobody is told about their own join.
    for (const m of [ben, cat]) expect(m.client.received.filter(ofType('user_joined'))).toEqual([]);
    await subscribed(room, 3);

    // Closing a socket announces user_left on every node.
    cat.client.close();
    await cat.client.closed;
    for (const m of [ann, ben]) expect(await receiveExactly(m.client, ofType('user_left'), 1)).toEqual([left('cat')]);

    // Leaving the room does too.
    ben.client.send({ type: 'leave_room', room, id: 'leave' });
    expect(await ben.client.next((e) => e.id === 'leave')).toMatchObject({ type: 'room_left', room });
    expect(await receiveExactly(ann.client, ofType('user_left'), 1)).toEqual([left('ben')]);
    await ben.client.expectNothing(ofType('user_left'), 0);
  });

  it('keeps per-publisher order with no duplicates: 100 client messages and 100 API events reach every member on every node once, in order', async () => {
    const room = 'channel:order';
    const [n1, n2, n3] = nodes as [NodeProcess, NodeProcess, NodeProcess];
    const sender = await direct(n1, 'ord-sender');
    const members = [sender, await direct(n1, 'ord-local'), await direct(n2, 'ord-two'), await direct(n3, 'ord-three')];
    for (const m of members) await join(m.client, room);
    await subscribed(room, 3);
    const seqs = Array.from({ length: 100 }, (_, i) => i);

    for (const seq of seqs) sender.client.send({ type: 'send_message', room, data: { seq } });
    await Promise.all(
      members.map(async (m) => {
        const got = await receiveExactly(m.client, ofType('message.new', room), 100);
        expect(got.map((e) => e.data.seq)).toEqual(seqs);
        for (const e of got) expect(e.sender).toBe('ord-sender');
      }),
    );

    // One backend, sequential awaited POSTs to one node's API.
    for (const seq of seqs) {
      const res = await publishVia(n2, { room, type: 'task.updated', data: { seq } });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    }
    await Promise.all(
      members.map(async (m) => {
        const got = await receiveExactly(m.client, ofType('task.updated', room), 100);
        expect(got.map((e) => e.data.seq)).toEqual(seqs);
        for (const e of got) expect(e.sender).toBeNull();
      }),
    );
  });

  it('sends an API event for a user_id to all of that user connections on every node, and to no one else', async () => {
    const [n1, n2, n3] = nodes as [NodeProcess, NodeProcess, NodeProcess];
    const mine = [await direct(n1, 'multi'), await direct(n1, 'multi'), await direct(n2, 'multi'), await direct(n3, 'multi')];
    const others = [await direct(n1, 'not-multi'), await direct(n2, 'not-multi'), await direct(n3, 'other')];
    await subscribed('user:multi', 3);

    const res = await publishVia(n3, { user_id: 'multi', type: 'notification.new', data: { n: 1 } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'published', user_id: 'multi', connections: 4 });
    const expected = { type: 'notification.new', room: 'user:multi', data: { n: 1 }, sender: null, timestamp: expect.stringMatching(ISO) };
    await Promise.all(mine.map(async (m) => expect(await receiveExactly(m.client, ofType('notification.new'), 1)).toEqual([expected])));
    await Promise.all(others.map((m) => m.client.expectNothing(ofType('notification.new'), 0)));
  });

  it('kill -9 of a node: its clients see 1006, reconnect through HAProxy to the survivors, rejoin and receive again; its user seats expire within the TTL', async () => {
    const room = 'project:survive';
    const members: Member[] = [];
    for (let i = 0; i < 6; i++) members.push(await viaHaproxy(`k${i}`));
    const count = (node: NodeProcess) => members.filter((m) => m.nodeId === node.nodeId).length;
    const victim = [...nodes].sort((a, b) => count(b) - count(a))[0]!;
    const survivors = nodes.filter((n) => n !== victim);
    const lost = members.filter((m) => m.nodeId === victim.nodeId);
    const kept = members.filter((m) => m.nodeId !== victim.nodeId);
    expect(lost.length).toBeGreaterThanOrEqual(1);
    expect(kept.length).toBeGreaterThanOrEqual(1);
    for (const m of members) await join(m.client, room);
    await subscribed(room, nodesOf(members));

    // Every slot of this user is held on the victim, so the cluster-wide limit refuses a sixth elsewhere.
    const slotted: Member[] = [];
    for (let i = 0; i < 5; i++) slotted.push(await direct(victim, 'slotty'));
    const sixth = open(survivors[0]!.url, token('slotty'));
    expect(await sixth.closed).toEqual({ code: 4429, reason: 'too many connections for this user' });

    const killedAt = Date.now();
    expect(await victim.kill9()).toEqual({ code: null, signal: 'SIGKILL' });
    for (const m of [...lost, ...slotted]) expect(await m.client.closed).toEqual({ code: 1006, reason: '' });
    for (const m of kept) expect(m.client.ws.readyState).toBe(m.client.ws.OPEN);

    // The dead node's registry entries expire within the TTL (live nodes refresh only their own).
    const deadIds = [...lost, ...slotted].map((m) => m.connectionId);
    const victimUsers = [...new Set([...lost, ...slotted].map((m) => m.userId))];
    const slotsFreed = waitFor(
      "the killed node's slots to expire",
      async () => {
        for (const user of victimUsers) if ((await liveSlots(user)).some((id) => deadIds.includes(id))) return false;
        return true;
      },
      (SLOT_TTL_S + 2) * 1000,
    ).then(() => Date.now() - killedAt);

    // No false 4429 once they have: all five slots of the user can be taken again, on the survivors.
    const slotsBack = slotsFreed.then(async (elapsed) => {
      for (let i = 0; i < 5; i++) await direct(survivors[i % 2]!, 'slotty');
      return elapsed;
    });
    const back = await Promise.all(lost.map((m) => reconnect(m.userId, m.token)));
    expect(await slotsBack).toBeLessThanOrEqual((SLOT_TTL_S + 2) * 1000);

    for (const m of back) {
      expect(m.nodeId).not.toBe(victim.nodeId);
      expect(survivors.map((n) => n.nodeId)).toContain(m.nodeId);
      await join(m.client, room);
    }
    const current = [...kept, ...back];
    await subscribed(room, nodesOf(current));

    const speaker = kept[0]!;
    speaker.client.send({ type: 'send_message', room, data: { after: 'kill' } });
    const res = await publishVia(survivors[1]!, { room, type: 'project.updated', data: { after: 'kill' }, sender: 'backend' });
    expect(res.status).toBe(200);
    await Promise.all(
      current.map(async (m) => {
        expect(await receiveExactly(m.client, ofType('message.new', room), 1)).toEqual([
          { type: 'message.new', room, data: { after: 'kill' }, sender: speaker.userId, user_id: speaker.userId, timestamp: expect.stringMatching(ISO) },
        ]);
        expect(await receiveExactly(m.client, ofType('project.updated', room), 1)).toEqual([
          { type: 'project.updated', room, data: { after: 'kill' }, sender: 'backend', timestamp: expect.stringMatching(ISO) },
        ]);
      }),
    );
  });

  it('does not expose the internal API through the load balancer', async () => {
    for (const endpoint of ['publish', 'disconnect']) {
      const res = await fetch(`${haproxy.http}/api/v1/${endpoint}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify(endpoint === 'publish' ? { room: 'channel:lb', type: 'task.updated' } : { user_id: 'anyone' }),
      });
      expect(res.status).toBe(404);
      expect(await res.json()).toEqual({ code: 'not_found', message: 'no such path', error: 'not_found', reason: 'no such path' });
    }
  });

  it("never writes the query string or a token to HAProxy's access log", async () => {
    // Every earlier socket is closed (afterEach), so HAProxy has logged each tunnel.
    const tunnels = await haproxy.waitForLogs((l) => / 101 .*"\/api\/v1\/ws\/connect"/.test(l), haproxyConnections);
    for (const line of tunnels) expect(line).toMatch(/ ws_edge ws_edge_nodes\/ws-edge-[123] .* 101 .*GET "\/api\/v1\/ws\/connect" HTTP\/1\.1$/);
    // Refused or retried attempts are logged too: none of them carries the query string either.
    for (const line of haproxy.logs.filter((l) => l.includes('/api/v1/ws/connect'))) expect(line).toMatch(/"\/api\/v1\/ws\/connect" HTTP\/1\.1$/);
    const all = haproxy.logs.join('\n');
    expect(all).not.toContain('token=');
    for (const tok of new Set(haproxyTokens)) expect(all).not.toContain(tok);
  });
});
