/**
 * Redis command timeouts measure Redis, not the node's own event-loop stalls (src/redis/connections.ts):
 * a reply that arrived while the loop was blocked longer than the 2 s command timeout is read, not
 * failed "Command timed out"; a reply that never comes still fails after the timeout. Real
 * redis-server; the stall is a synchronous busy loop, as a storm of handshakes would block it.
 */
import { once } from 'node:events';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publisherConnection } from '../../src/redis/connections.js';
import { startRedis, stopAllRedis, type RedisServer } from '../helpers/redis.js';

let redis: RedisServer;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(stopAllRedis);

/** A connection with the nodes' options, once ready (no offline queue: a command before that fails). */
async function connected(name: string): Promise<Redis> {
  const client = publisherConnection(redis.url, name);
  await once(client, 'ready');
  return client;
}

function stall(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // The node is busy: no timer, no I/O.
  }
}

describe('command timeouts and event-loop stalls', () => {
  it('a reply that arrived during a 2.5 s stall is read: 200 commands in flight, 200 answered', async () => {
    const client = await connected('stall-test');
    const replies = Array.from({ length: 200 }, (_, i) => client.echo(`n${i}`));
    stall(2500);
    const settled = await Promise.allSettled(replies);
    const failed = settled.filter((s) => s.status === 'rejected');
    console.log(`after a 2.5 s stall: ${settled.length - failed.length} answered, ${failed.length} failed`);
    expect(failed).toEqual([]);
    expect(settled.map((s) => (s as PromiseFulfilledResult<string>).value)).toEqual(Array.from({ length: 200 }, (_, i) => `n${i}`));
    client.disconnect();
  });

  it('a reply that does not come (the server paused by CLIENT PAUSE 3000) still fails "Command timed out"', async () => {
    const [client, other] = await Promise.all([connected('stall-test-slow'), connected('stall-test-pauser')]);
    await other.call('CLIENT', 'PAUSE', '3000', 'ALL');
    await expect(client.ping()).rejects.toThrow('Command timed out');
    client.disconnect();
    other.disconnect();
  });
});
