/**
 * What broker tests look at from outside, shared by every suite: readiness with the broker up, the
 * subscribers Redis counts on a channel, and "exactly this many, then nothing more" on a client.
 */
import type { Envelope, TestClient } from './client.js';
import { asArray, query } from './redis-process.js';
import { waitFor } from './wait.js';

/** `/readyz` of the node at `base` (its public or internal HTTP URL) answers 200 with the broker up. */
export async function brokerUp(base: string): Promise<boolean> {
  const res = await fetch(`${base}/readyz`).catch(() => undefined);
  return res !== undefined && res.status === 200 && ((await res.json()) as { broker?: string }).broker === 'up';
}

/** How many connections the Redis server on `port` has subscribed to `channel` (classic pub/sub). */
export async function numsub(port: number, channel: string): Promise<number> {
  const [, count] = asArray(await query(port, ['PUBSUB', 'NUMSUB', channel]));
  return Number(count);
}

/** Cross-node delivery starts once Redis confirms the subscription: waits for exactly `count` subscribers. */
export function waitSubscribed(port: number, channel: string, count: number, timeoutMs = 5000): Promise<boolean> {
  return waitFor(`${count} subscriber(s) to ${channel}`, async () => (await numsub(port, channel)) === count, timeoutMs);
}

/** Takes exactly `count` matching messages (in arrival order), then checks that no further one arrives. */
export async function receiveExactly(client: TestClient, match: (e: Envelope) => boolean, count: number, timeoutMs = 5000): Promise<Envelope[]> {
  const got: Envelope[] = [];
  for (let i = 0; i < count; i++) got.push(await client.next(match, timeoutMs));
  await client.expectNothing(match, 300);
  return got;
}
