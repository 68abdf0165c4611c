/**
 * In-process nodes on the Redis broker, for the topology suites (cluster, cluster faults, sentinel):
 * the environment they share, starting a set and waiting until every broker is up, members that
 * join rooms, and what a fault report reads back from the nodes (broker counters and log events).
 */
import { onTestFailed } from 'vitest';
import { join, open, token, type TestClient } from './client.js';
import { startTestNode, stopTestNode, type TestNode } from './node.js';
import { sleep } from './redis-process.js';
import { waitFor } from './wait.js';

/**
 * Probe every second, give up on a probe after 2 s; generous rate limits so traffic is never
 * throttled. `topology` names the Redis deployment (REDIS_CLUSTER_NODES, or REDIS_SENTINELS and
 * REDIS_SENTINEL_NAME); `extra` overrides anything.
 */
export function brokerNodeEnv(topology: Record<string, string>, prefix: string, nodeId: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    NODE_ID: nodeId,
    ...topology,
    REDIS_PREFIX: prefix,
    REDIS_PROBE_INTERVAL: '1',
    REDIS_PROBE_TIMEOUT: '2',
    REDIS_SLOT_TTL: '3',
    REDIS_UNSUBSCRIBE_DELAY: '1',
    WS_RATE_LIMIT: '2000',
    WS_RATE_BURST: '2000',
    ...extra,
  };
}

/** Starts one node per id (the id is its NODE_ID), prints their logs if the test fails, and waits up to 10 s for every broker to be up. */
export async function startBrokerNodes(topology: Record<string, string>, prefix: string, ids: string[], extra: Record<string, string> = {}): Promise<TestNode[]> {
  const nodes = await Promise.all(ids.map((id) => startTestNode(brokerNodeEnv(topology, prefix, id, extra))));
  logsOnFailure(nodes);
  await brokersUp(nodes, 10_000);
  return nodes;
}

/** Waits until wsedge_broker_up is 1 on every node; resolves with when (epoch ms). */
export async function brokersUp(nodes: TestNode[], timeoutMs: number): Promise<number> {
  return waitFor(`wsedge_broker_up 1 on ${nodes.map((n) => n.nodeId).join(', ')}`, async () => {
    const up = await Promise.all(nodes.map((n) => n.metric('wsedge_broker_up')));
    if (up.some((v) => v !== 1)) throw new Error(`wsedge_broker_up: ${up.join(', ')}`);
    return Date.now();
  }, timeoutMs, 100);
}

/** On failure, prints what the nodes logged at warn and above: the broker's own account of the fault. */
export function logsOnFailure(nodes: TestNode[]): void {
  onTestFailed(() => {
    for (const n of nodes) {
      const lines = n.logs.filter((l) => ['warn', 'error', 'fatal'].includes(String(l['level'])) || l['event'] === 'broker_up');
      console.log(`--- ${n.nodeId} ---\n${lines.map((l) => JSON.stringify(l)).join('\n')}`);
    }
  });
}

export async function stopNodes(nodes: TestNode[]): Promise<void> {
  await Promise.all(nodes.map(stopTestNode));
}

const members = new Set<TestClient>();

/**
 * A client of `userId` on `node`, connected (within `connectTimeoutMs`) and joined to `rooms`. A
 * failure names the close code: the socket's own account of why it ended. closeMembers() closes it.
 */
export async function member(node: TestNode, userId: string, rooms: string[], connectTimeoutMs = 3000): Promise<TestClient> {
  const client = open(node.url, token(userId));
  members.add(client);
  let socketError = '';
  client.ws.on('error', (err) => (socketError = err.message));
  const explain = (what: string) => async (err: unknown) => {
    const closed = await Promise.race([client.closed, sleep(200).then(() => 'still open')]);
    throw new Error(`${userId} on ${node.nodeId}: ${what} failed (close: ${JSON.stringify(closed)}, socket error: ${socketError || 'none'}): ${(err as Error).message}`);
  };
  await client.next((e) => e.type === 'connected', connectTimeoutMs).catch(explain('connect'));
  for (const room of rooms) await join(client, room).catch(explain(`join ${room}`));
  return client;
}

/** Closes every client member() opened in this worker; for afterAll. */
export function closeMembers(): void {
  for (const client of members) client.close();
  members.clear();
}

export const probeFailures = (nodes: TestNode[]) => Promise.all(nodes.map((n) => n.metric('wsedge_broker_probe_failures_total')));
export const reconnects = (nodes: TestNode[]) => Promise.all(nodes.map((n) => n.metric('wsedge_broker_reconnects_total')));
/** wsedge_broker_publish_errors_total per node, by reason. */
export const publishErrors = (nodes: TestNode[]) =>
  Promise.all(
    nodes.map(async (n) => ({
      down: await n.metric('wsedge_broker_publish_errors_total', { reason: 'down' }),
      error: await n.metric('wsedge_broker_publish_errors_total', { reason: 'error' }),
    })),
  );

/** The broker counters a fault report prints, per node, in report order. */
export async function brokerCounters(nodes: TestNode[]) {
  return { probe_failures: await probeFailures(nodes), reconnects: await reconnects(nodes), publish_errors: await publishErrors(nodes) };
}

/** How many log lines each node has written so far: the marks brokerEvents and friends read from. */
export const logMarks = (nodes: TestNode[]): number[] => nodes.map((n) => n.logs.length);

/** What the nodes logged from `marks` on, by event, as "<ms after t0> <event>". */
export function brokerEvents(nodes: TestNode[], marks: number[], t0: number): string[][] {
  return nodes.map((n, i) =>
    n.logs
      .slice(marks[i])
      .filter((l) => ['broker_up', 'broker_down', 'broker_probe_failed'].includes(String(l['event'])))
      .map((l) => `${Date.parse(String(l['time'])) - t0} ${String(l['event'])}${l['reason'] === undefined ? '' : ` (${String(l['reason'])})`}`),
  );
}

/** The broker_probe_failed lines each node logged since `marks`. */
export function probeFailedLogs(nodes: TestNode[], marks: number[]): Array<Array<Record<string, unknown>>> {
  return nodes.map((n, i) => n.logs.slice(marks[i]).filter((l) => l['event'] === 'broker_probe_failed'));
}

/** When the last broker state change logged since `marks` happened (epoch ms), or 0. */
export function lastBrokerChange(nodes: TestNode[], marks: number[]): number {
  const times = nodes.flatMap((n, i) =>
    n.logs.slice(marks[i]).filter((l) => ['broker_up', 'broker_down'].includes(String(l['event']))).map((l) => Date.parse(String(l['time']))),
  );
  return Math.max(0, ...times);
}
