/**
 * No event lost across a reconnect, counted: three node processes on one Redis behind the shipped
 * HAProxy config, every room sequenced, a backend publishing numbered events without pause. Node A
 * is drained (SIGTERM: 1012) in one test and killed (-9) in the other; its clients reconnect through
 * HAProxy and resume with their positions in one frame. Every client must end with exactly the
 * published sequence in each room: 0 lost, 0 duplicated. The counts and resume latencies are printed.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { open, token, type Envelope, type TestClient } from '../helpers/client.js';
import { startHaproxy, stopAllHaproxy } from '../helpers/haproxy.js';
import { startNodeProcess, stopAllProcesses, type NodeProcess } from '../helpers/processes.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';
import { numbers, publishNumbered, totalLoss } from '../helpers/numbered.js';
import { waitFor } from '../helpers/wait.js';

const API_KEY = 'recovery-suite-publish-key-0123456789abcdef';
const ROOMS = ['project:deploy', 'task:deploy'];
const CLIENTS = 24;

afterAll(async () => {
  await stopAllHaproxy();
  await stopAllProcesses();
  await stopAllRedis();
});

interface Position {
  epoch: string;
  offset: number;
}

/**
 * A client as the docs describe it: it keeps the position of the last event per room, and after a
 * close reconnects through the load balancer (after 0-200 ms for 1012, 100 ms otherwise) and sends
 * one `resume`. It records every event it receives, duplicates included.
 */
function resumingClient(url: string, user: string) {
  const received = new Map<string, number[]>(ROOMS.map((r) => [r, []]));
  const positions = new Map<string, Position>();
  const resumeMs: number[] = [];
  const nodes: string[] = [];
  const notRecovered: string[] = [];
  let resumed = 0;
  let socket: TestClient | undefined;
  let stopped = false;

  const onMessage = (e: Envelope): void => {
    if (e.type === 'resumed') resumed += 1;
    if (!e.room || !received.has(e.room)) return;
    if (e.type === 'task.updated') received.get(e.room)!.push(e.data.n as number);
    if (e.type === 'room_joined' && e.recovered === false) notRecovered.push(e.room);
    if (e.type === 'task.updated' || e.type === 'room_joined') positions.set(e.room, { epoch: e.epoch!, offset: e.offset! });
  };

  async function session(): Promise<void> {
    const c = open(url, token(user));
    socket = c;
    const hello = await c.next((e) => e.type === 'connected', 5000);
    nodes.push(String(hello.data.connection_id).split('.')[0]!);
    // Everything after `connected`, in arrival order, as it comes.
    const pump = setInterval(() => c.received.splice(0).forEach(onMessage), 2);
    const before = resumed;
    const started = Date.now();
    c.send({ type: 'resume', id: 'resume', rooms: ROOMS.map((room) => (positions.has(room) ? { room, since: positions.get(room) } : { room })) });
    await waitFor(`${user} resumed`, () => resumed > before || c.ws.readyState !== c.ws.OPEN, 10_000);
    resumeMs.push(Date.now() - started);
    const { code } = await c.closed;
    clearInterval(pump);
    c.received.splice(0).forEach(onMessage);
    if (stopped) return;
    await new Promise((r) => setTimeout(r, code === 1012 ? Math.random() * 200 : 100));
    return session();
  }
  const running = session();

  return {
    received,
    resumeMs,
    nodes,
    notRecovered,
    async stop() {
      stopped = true;
      socket?.close();
      await running.catch(() => {});
    },
  };
}

async function scenario(name: string, fault: (victim: NodeProcess) => Promise<unknown>): Promise<void> {
  const redis = await startRedis();
  const env = {
    REDIS_URL: redis.url,
    REDIS_PREFIX: uniquePrefix(),
    WS_HISTORY_ROOMS: 'project:*,task:*,channel:*,user:*',
    WS_ROOM_ACCESS: 'open',
    PUBLISH_API_KEY: API_KEY,
    WS_DRAIN_TIMEOUT: '3',
  };
  const nodes = await Promise.all([startNodeProcess(env), startNodeProcess(env), startNodeProcess(env)]);
  const lb = await startHaproxy(nodes.map((n) => n.port));
  const clients = Array.from({ length: CLIENTS }, (_, i) => resumingClient(lb.url, `${name}-${i}`));
  await waitFor('every client joined both rooms', () => clients.every((c) => c.nodes.length === 1 && c.resumeMs.length === 1), 15_000);
  const [victim, , publisherNode] = nodes as [NodeProcess, NodeProcess, NodeProcess];
  const onVictim = clients.filter((c) => c.nodes[0] === victim.nodeId).length;
  expect(onVictim).toBeGreaterThan(0);

  let stop = false;
  const publishing = publishNumbered(publisherNode.internal, API_KEY, ROOMS, () => stop);
  await new Promise((r) => setTimeout(r, 500));
  await fault(victim);
  await waitFor('the victim’s clients are back', () => clients.every((c) => c.nodes.length === (c.nodes[0] === victim.nodeId ? 2 : 1) && c.resumeMs.length === c.nodes.length), 20_000);
  await new Promise((r) => setTimeout(r, 500));
  stop = true;
  const published = await publishing;
  const expected = numbers(published);
  const complete = (c: (typeof clients)[number]) => ROOMS.every((room) => c.received.get(room)!.length >= published);
  await waitFor('every client has every event', () => clients.every(complete), 10_000).catch(() => {});
  await Promise.all(clients.map((c) => c.stop()));

  const { lost, duplicated } = totalLoss(published, clients.flatMap((c) => ROOMS.map((room) => c.received.get(room)!)));
  const resumes = clients.filter((c) => c.nodes.length === 2).map((c) => c.resumeMs[1]!).sort((a, b) => a - b);
  console.log(
    JSON.stringify({
      scenario: name,
      clients: CLIENTS,
      moved: onVictim,
      rooms: ROOMS.length,
      published_per_room: published,
      received: clients.reduce((sum, c) => sum + ROOMS.reduce((s, r) => s + c.received.get(r)!.length, 0), 0),
      lost,
      duplicated,
      not_recovered: clients.reduce((sum, c) => sum + c.notRecovered.length, 0),
      resume_ms_p50: resumes[Math.floor(resumes.length / 2)],
      resume_ms_max: resumes.at(-1),
    }),
  );
  expect({ lost, duplicated }).toEqual({ lost: 0, duplicated: 0 });
  for (const c of clients) for (const room of ROOMS) expect(c.received.get(room)).toEqual(expected);
  // Nobody had to reload: every resume recovered.
  expect(clients.flatMap((c) => c.notRecovered)).toEqual([]);
}

describe('recovery across node loss, behind HAProxy, under continuous publishing', () => {
  it('a rolling deploy (SIGTERM, 1012 spread over the drain): every client ends with every event once, in order', { timeout: 60_000 }, async () => {
    await scenario('deploy', (victim) => victim.stop());
  });

  it('kill -9 of a node: its clients reconnect and recover every event that reached Redis', { timeout: 60_000 }, async () => {
    await scenario('kill9', (victim) => victim.kill9());
  });
});
