/**
 * ws-edge/client loses nothing across a node loss, counted: three node processes on one Redis
 * behind the shipped HAProxy config, every room sequenced, a backend publishing numbered events
 * without pause. One node is drained (1012) in one test and killed (-9) in the other; the library
 * reconnects by its own policy and resumes. Each client must hand its app exactly the published
 * sequence per room (0 lost, 0 duplicated, in order) and report `recovered`, never `reset`.
 */
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createClient } from '../../src/client/index.js';
import { token } from '../helpers/client.js';
import { startHaproxy, stopAllHaproxy } from '../helpers/haproxy.js';
import { startNodeProcess, stopAllProcesses, type NodeProcess } from '../helpers/processes.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';
import { numbers, publishNumbered, totalLoss } from '../helpers/numbered.js';
import { waitFor } from '../helpers/wait.js';

const API_KEY = 'client-recovery-publish-key-0123456789abcdef';
const ROOMS = ['project:lib', 'task:lib'];
const CLIENTS = 16;

afterAll(async () => {
  await stopAllHaproxy();
  await stopAllProcesses();
  await stopAllRedis();
});

function libraryClient(url: string, user: string) {
  const received = new Map<string, number[]>(ROOMS.map((r) => [r, []]));
  const nodes: string[] = [];
  let recovered = 0;
  let resets = 0;
  const c = createClient({ url, token: () => token(user), WebSocket });
  c.on('connected', (data) => nodes.push(data.connection_id.split('.')[0]!));
  for (const room of ROOMS) {
    void c.join(room, {
      // Membership events (user_joined, user_left) come through the handler too, without a position.
      event: (e) => e.type === 'task.updated' && received.get(room)!.push((e.data as { n: number }).n),
      recovered: () => (recovered += 1),
      reset: () => (resets += 1),
    });
  }
  c.connect();
  return { c, received, nodes, counts: () => ({ recovered, resets }) };
}

async function scenario(name: string, fault: (victim: NodeProcess) => Promise<unknown>): Promise<void> {
  const redis = await startRedis();
  // A drained node's clients are away for up to 3 s (the drain's spread) plus 0-5 s (the client's):
  // at about 80 events/s per room that passes the default history of 100 events.
  const history = { WS_HISTORY_ROOMS: 'project:*,task:*', WS_HISTORY_SIZE: '2000', WS_HISTORY_RECOVER_MAX: '2000' };
  const env = { REDIS_URL: redis.url, REDIS_PREFIX: uniquePrefix(), ...history, WS_ROOM_ACCESS: 'open', PUBLISH_API_KEY: API_KEY, WS_DRAIN_TIMEOUT: '3' };
  const nodes = await Promise.all([startNodeProcess(env), startNodeProcess(env), startNodeProcess(env)]);
  const lb = await startHaproxy(nodes.map((n) => n.port));
  const clients = Array.from({ length: CLIENTS }, (_, i) => libraryClient(lb.url, `${name}-${i}`));
  await waitFor('every client joined', () => clients.every((c) => c.nodes.length === 1 && ROOMS.every((r) => c.c.position(r) !== undefined)), 15_000);
  const [victim, , publisherNode] = nodes as [NodeProcess, NodeProcess, NodeProcess];
  const moved = clients.filter((c) => c.nodes[0] === victim.nodeId);
  expect(moved.length).toBeGreaterThan(0);

  let stop = false;
  const publishing = publishNumbered(publisherNode.internal, API_KEY, ROOMS, () => stop);
  try {
    await new Promise((r) => setTimeout(r, 500));
    await fault(victim);
    // 1012: back within the 0-5 s spread; 1006: within the first backoff step (0-1 s).
    await waitFor('the victim’s clients are back', () => moved.every((c) => c.nodes.length === 2 && c.counts().recovered + c.counts().resets === ROOMS.length), 15_000);
    await new Promise((r) => setTimeout(r, 500));
  } finally {
    stop = true;
  }
  const published = await publishing;
  const expected = numbers(published);
  await waitFor('every client has every event', () => clients.every((c) => ROOMS.every((r) => c.received.get(r)!.length >= published)), 10_000).catch(() => {});
  clients.forEach((c) => c.c.close());

  const { lost, duplicated } = totalLoss(published, clients.flatMap((c) => ROOMS.map((room) => c.received.get(room)!)));
  const resets = clients.reduce((sum, c) => sum + c.counts().resets, 0);
  console.log(JSON.stringify({ scenario: name, clients: CLIENTS, moved: moved.length, rooms: ROOMS.length, published_per_room: published, lost, duplicated, resets }));
  expect({ lost, duplicated, resets }).toEqual({ lost: 0, duplicated: 0, resets: 0 });
  for (const c of clients) for (const room of ROOMS) expect(c.received.get(room)).toEqual(expected);
}

describe('ws-edge/client across node loss, behind HAProxy, under continuous publishing', () => {
  it('a drained node (1012): the library reconnects within the spread and recovers every event once, in order', { timeout: 60_000 }, async () => {
    await scenario('lib-drain', (victim) => victim.stop());
  });

  it('kill -9 of a node: the library reconnects and recovers every event that reached Redis', { timeout: 60_000 }, async () => {
    await scenario('lib-kill9', (victim) => victim.kill9());
  });
});
