/**
 * A rolling deploy without a reconnect storm: clients on node A, SIGTERM node A behind the shipped
 * HAProxy config. Every client of A is closed with 1012 (no other error), the closes are spread
 * over WS_DRAIN_TIMEOUT (60% of it), every client reconnects through HAProxy to another node at
 * its first attempt, and A exits 0 before the timeout. The measured spread is printed.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { open, token, type TestClient } from '../helpers/client.js';
import { startHaproxy, stopAllHaproxy } from '../helpers/haproxy.js';
import { startNodeProcess, stopAllProcesses } from '../helpers/processes.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';

afterAll(async () => {
  await stopAllHaproxy();
  await stopAllProcesses();
  await stopAllRedis();
});

const DRAIN_S = 4;
const CLIENTS = 45;

interface Observed {
  readonly client: TestClient;
  readonly nodeId: string;
}

async function connectThrough(url: string, user: string): Promise<Observed> {
  const client = open(url, token(user));
  const hello = await client.next((e) => e.type === 'connected', 5000);
  return { client, nodeId: String(hello.data.connection_id).split('.')[0]! };
}

describe(`rolling deploy (WS_DRAIN_TIMEOUT=${DRAIN_S})`, () => {
  it('closes the drained node\'s clients with 1012 spread over the window and they reconnect elsewhere at once', async () => {
    const redis = await startRedis();
    const env = { REDIS_URL: redis.url, REDIS_PREFIX: uniquePrefix(), WS_DRAIN_TIMEOUT: String(DRAIN_S), LOG_LEVEL: 'info' };
    const nodes = await Promise.all([startNodeProcess(env), startNodeProcess(env), startNodeProcess(env)]);
    const lb = await startHaproxy(nodes.map((n) => n.port));

    const sessions: Observed[] = [];
    for (let i = 0; i < CLIENTS; i++) sessions.push(await connectThrough(lb.url, `user${i}`));
    const victim = nodes[0]!;
    const mine = sessions.filter((s) => s.nodeId === victim.nodeId);
    expect(mine.length).toBeGreaterThanOrEqual(10);

    const sigterm = Date.now();
    const results = mine.map(async ({ client }) => {
      const close = await client.closed;
      const closedAt = Date.now() - sigterm;
      // A real client would add jitter; reconnecting at once measures the server-side spread.
      const again = await connectThrough(lb.url, `again-${Math.random().toString(36).slice(2)}`);
      again.client.close();
      return { ...close, closedAt, reconnectedTo: again.nodeId };
    });
    victim.child.kill('SIGTERM');
    const outcomes = await Promise.all(results);
    const exit = await victim.exited;
    const exitedAfter = Date.now() - sigterm;

    for (const o of outcomes) {
      expect({ code: o.code, reason: o.reason }).toEqual({ code: 1012, reason: 'service restart' });
      expect(o.reconnectedTo).not.toBe(victim.nodeId);
    }
    const times = outcomes.map((o) => o.closedAt).sort((a, b) => a - b);
    const spread = times.at(-1)! - times[0]!;
    console.log(
      JSON.stringify({ drain_timeout_s: DRAIN_S, clients: times.length, first_close_ms: times[0], last_close_ms: times.at(-1), spread_ms: spread, exit_ms: exitedAfter }),
    );
    // Closes follow the drain window: spread over about 60% of it, none after it.
    expect(spread).toBeGreaterThan(DRAIN_S * 1000 * 0.4);
    expect(times.at(-1)!).toBeLessThan(DRAIN_S * 1000);
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(exitedAfter).toBeLessThan(DRAIN_S * 1000);
    // The other nodes kept their clients.
    for (const s of sessions.filter((x) => x.nodeId !== victim.nodeId)) expect(s.client.ws.readyState).toBe(s.client.ws.OPEN);
  }, 40_000);
});
