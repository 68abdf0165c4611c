/**
 * Connection lifecycle: the `connected` event, the automatic personal room, cleanup of every
 * counter on close, and the plain HTTP routes of the public and internal ports.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { connect, join, open, token, type TestClient } from '../helpers/client.js';
import { startTestNode, stopAllNodes, type TestNode } from '../helpers/node.js';
import { waitFor } from '../helpers/wait.js';

afterAll(stopAllNodes);

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

/** Polls a metric until it has `expected` (close handlers run after the client sees the close). */
function metricBecomes(node: TestNode, name: string, expected: number, timeoutMs = 2000): Promise<number> {
  return waitFor(`${name} = ${expected}`, async () => {
    const value = await node.metric(name);
    if (value !== expected) throw new Error(`${name} = ${value}`);
    return value;
  }, timeoutMs);
}

async function closeAll(clients: TestClient[]): Promise<void> {
  for (const c of clients) c.close();
  await Promise.all(clients.map((c) => c.closed));
}

describe('connected event', () => {
  it('has exactly the contract shape, with the username claim as username', async () => {
    const node = await startTestNode({ WS_HEARTBEAT_INTERVAL: '16', WS_MESSAGE_MAX_SIZE: '65536' });
    const raw = open(node.url, token('u-42', { username: 'Alice Example' }));
    const connected = await raw.next();
    expect(connected).toEqual({
      type: 'connected',
      data: {
        connection_id: expect.any(String),
        user_id: 'u-42',
        username: 'Alice Example',
        heartbeat_interval: 16,
        max_message_size: 65536,
        rooms: ['user:u-42'],
      },
      timestamp: expect.stringMatching(ISO_UTC),
    });
    expect(Math.abs(Date.parse(connected.timestamp!) - Date.now())).toBeLessThan(5000);
    raw.close();
  });

  it('uses sub as username without a username claim, and defaults heartbeat and size', async () => {
    const node = await startTestNode();
    const client = open(node.url, token('bob'));
    const connected = await client.next();
    expect(connected.type).toBe('connected');
    expect(connected.data).toEqual({
      connection_id: expect.any(String),
      user_id: 'bob',
      username: 'bob',
      heartbeat_interval: 30,
      max_message_size: 1048576,
      rooms: ['user:bob'],
    });
    client.close();
  });

  it('gives every connection a distinct connection_id', async () => {
    const node = await startTestNode();
    const clients = [open(node.url, token('alice')), open(node.url, token('alice')), open(node.url, token('bob'))];
    const ids = await Promise.all(clients.map(async (c) => (await c.next((e) => e.type === 'connected')).data.connection_id as string));
    expect(new Set(ids).size).toBe(3);
    await closeAll(clients);
  });
});

describe('personal room', () => {
  it('receives notification.new for its user on every connection of that user, and nobody else', async () => {
    const node = await startTestNode();
    const alice1 = await connect(node.url, 'alice');
    const alice2 = await connect(node.url, 'alice');
    const bob = await connect(node.url, 'bob');
    const notification = { id: 7, title: 'You were assigned', nested: { a: [1, 2] } };
    node.events.notificationNew({ userId: 'alice', notification });
    const expected = { type: 'notification.new', room: 'user:alice', data: notification, sender: null, timestamp: expect.stringMatching(ISO_UTC) };
    expect(await alice1.next((e) => e.type === 'notification.new')).toEqual(expected);
    expect(await alice2.next((e) => e.type === 'notification.new')).toEqual(expected);
    await bob.expectNothing((e) => e.type === 'notification.new');
    await closeAll([alice1, alice2, bob]);
  });

  it('counts as a room in wsedge_rooms while the user is connected', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    expect(await node.metric('wsedge_rooms')).toBe(1);
    const alice2 = await connect(node.url, 'alice');
    expect(await node.metric('wsedge_rooms')).toBe(1);
    const bob = await connect(node.url, 'bob');
    expect(await node.metric('wsedge_rooms')).toBe(2);
    await closeAll([alice, alice2, bob]);
  });
});

describe('cleanup on close', () => {
  it('returns wsedge_connections and wsedge_rooms to 0 and counts the close code', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    const bob = await connect(node.url, 'bob');
    await join(alice, 'project:1');
    await join(alice, 'channel:2');
    await join(bob, 'project:1');
    expect(await node.metric('wsedge_connections')).toBe(2);
    expect(await node.metric('wsedge_rooms')).toBe(4); // user:alice, user:bob, project:1, channel:2
    expect(await node.metric('wsedge_connections_opened_total')).toBe(2);

    alice.close();
    await alice.closed;
    expect(await metricBecomes(node, 'wsedge_connections', 1)).toBe(1);
    expect(await metricBecomes(node, 'wsedge_rooms', 2)).toBe(2); // user:bob, project:1

    bob.close();
    await bob.closed;
    expect(await metricBecomes(node, 'wsedge_connections', 0)).toBe(0);
    expect(await metricBecomes(node, 'wsedge_rooms', 0)).toBe(0);
    expect(await node.metric('wsedge_connections_closed_total', { code: '1005' })).toBe(2);
    expect(node.connections()).toBe(0);
  });

  it('frees the per-user seats at once: after closing 5 connections of a user, 5 new ones are accepted', async () => {
    const node = await startTestNode();
    const first = await Promise.all([1, 2, 3, 4, 5].map(() => connect(node.url, 'alice')));
    await closeAll(first);
    const second = await Promise.all([1, 2, 3, 4, 5].map(() => connect(node.url, 'alice')));
    expect(await node.metric('wsedge_connections')).toBe(5);
    expect(await node.metric('wsedge_auth_failures_total', { reason: 'user_limit' })).toBe(0);
    await closeAll(second);
  });

  it('a socket closed by the server (refused refresh) also frees its slot and rooms', async () => {
    const node = await startTestNode();
    const clients = await Promise.all([1, 2, 3, 4, 5].map(() => connect(node.url, 'alice')));
    await join(clients[0]!, 'project:9');
    clients[0]!.send({ type: 'refresh_token', token: token('mallory') });
    expect(await clients[0]!.closed).toEqual({ code: 4401, reason: 'token is for another user' });
    const replacement = await connect(node.url, 'alice');
    expect(await metricBecomes(node, 'wsedge_rooms', 1)).toBe(1); // only user:alice left
    await closeAll([...clients.slice(1), replacement]);
  });
});

describe('plain HTTP on the public port', () => {
  it('GET /healthz is 200 JSON', async () => {
    const node = await startTestNode();
    const res = await fetch(`${node.http}/healthz`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(await res.json()).toEqual({ status: 'ok' });
  });

  it('GET /readyz is 200 JSON while ready', async () => {
    const node = await startTestNode();
    const res = await fetch(`${node.http}/readyz`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(await res.json()).toEqual({ status: 'ready', node_id: node.nodeId, broker: 'memory', connections: 0 });
  });

  it('GET on the WebSocket path without an upgrade is 426', async () => {
    const node = await startTestNode();
    const res = await fetch(`${node.http}/api/v1/ws/connect`);
    expect(res.status).toBe(426);
    expect(res.headers.get('upgrade')).toBe('websocket');
    expect(await res.json()).toEqual({ code: 'upgrade_required', message: 'this path takes a WebSocket upgrade', error: 'upgrade_required', reason: 'this path takes a WebSocket upgrade' });
  });

  it('an unknown path is 404 JSON', async () => {
    const node = await startTestNode();
    const res = await fetch(`${node.http}/no/such/path`);
    expect(res.status).toBe(404);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(await res.json()).toEqual({ code: 'not_found', message: 'no such path', error: 'not_found', reason: 'no such path' });
  });

  it('a WebSocket upgrade on another path is refused', async () => {
    const node = await startTestNode();
    const client = open(`ws://127.0.0.1:${node.port}/ws`, token('alice'));
    const closed = await client.closed;
    expect(closed.code).toBe(1006);
    expect(client.received).toEqual([]);
    expect(await node.metric('wsedge_connections_opened_total')).toBe(0);
  });

  it('/metrics is 404 on the public port and served on the internal port', async () => {
    const node = await startTestNode();
    const pub = await fetch(`${node.http}/metrics`);
    expect(pub.status).toBe(404);
    expect(await pub.json()).toEqual({ code: 'not_found', message: 'no such path', error: 'not_found', reason: 'no such path' });
    const internal = await fetch(`${node.internal}/metrics`);
    expect(internal.status).toBe(200);
    expect(internal.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await internal.text();
    expect(text).toContain('# TYPE wsedge_connections gauge');
    expect(text).toContain('# TYPE wsedge_rooms gauge');
  });
});
