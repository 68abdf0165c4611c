/**
 * Connection counts per user and the per-socket counters (token bucket, strike windows). The
 * per-socket state lives in the socket's UserData, so it dies with the socket.
 */

/**
 * Who may hold another connection. `acquire` is async so a cluster-wide implementation (Redis)
 * can replace the local one without changing the upgrade path.
 */
export interface ConnectionSlots {
  /** Reserves a slot for `userId`; resolves false when the user already holds the maximum. */
  acquire(userId: string, connectionId: string): Promise<boolean>;
  /** Frees the slot at once; a no-op for an unknown connection. */
  release(userId: string, connectionId: string): void;
}

/** Per-node counting. Entries exist only for users with at least one connection. */
export function createLocalSlots(maxPerUser: number): ConnectionSlots & { readonly users: () => number } {
  const held = new Map<string, Set<string>>();
  return {
    async acquire(userId, connectionId) {
      const connections = held.get(userId) ?? new Set<string>();
      if (connections.has(connectionId)) return true;
      if (connections.size >= maxPerUser) return false;
      held.set(userId, connections.add(connectionId));
      return true;
    },
    release(userId, connectionId) {
      const connections = held.get(userId);
      if (!connections?.delete(connectionId)) return;
      if (connections.size === 0) held.delete(userId);
    },
    users: () => held.size,
  };
}

/** Token bucket state, kept on the socket. */
export interface Bucket {
  tokens: number;
  /** Epoch ms of the last refill. */
  refilledAt: number;
}

export function newBucket(burst: number, now: number): Bucket {
  return { tokens: burst, refilledAt: now };
}

/** Takes one token; false when the bucket is empty. `rate` is tokens per second. */
export function takeToken(bucket: Bucket, now: number, rate: number, burst: number): boolean {
  const elapsed = now - bucket.refilledAt;
  if (elapsed > 0) {
    bucket.tokens = Math.min(burst, bucket.tokens + (elapsed * rate) / 1000);
    bucket.refilledAt = now;
  }
  if (bucket.tokens < 1) return false;
  bucket.tokens -= 1;
  return true;
}

/** A fixed-window counter of misbehaviour (invalid messages, rate-limited frames). */
export interface Strikes {
  count: number;
  windowStart: number;
}

export function newStrikes(): Strikes {
  return { count: 0, windowStart: 0 };
}

/** Records one strike; true when the strikes in the current window now exceed `max`. */
export function strike(strikes: Strikes, now: number, windowMs: number, max: number): boolean {
  if (now - strikes.windowStart >= windowMs) {
    strikes.windowStart = now;
    strikes.count = 0;
  }
  strikes.count += 1;
  return strikes.count > max;
}
