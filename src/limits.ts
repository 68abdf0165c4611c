/**
 * Connection counts per user and the per-socket counters (token bucket, strike windows). The
 * per-socket state lives in the socket's UserData, so it dies with the socket.
 */

/**
 * Who may hold another connection. The node's own count answers at once; the cluster-wide one
 * (Redis) answers with a Promise, and the upgrade waits for it.
 */
export interface ConnectionSeats {
  /** Reserves a seat for `userId`; false when the user already holds the maximum. */
  acquire(userId: string, connectionId: string): boolean | Promise<boolean>;
  /** Frees the seat at once; a no-op for an unknown connection. */
  release(userId: string, connectionId: string): void;
  /** Whether each user is connected anywhere, with how many connections and when last seen (for the status API). */
  status(userIds: readonly string[]): Promise<UserStatus[]>;
}

/** A user's presence on the whole deployment, as POST /api/v1/users/status answers it. */
export interface UserStatus {
  readonly user_id: string;
  readonly online: boolean;
  readonly connections: number;
  /** When the last connection closed (ISO 8601); null while online or when never seen (or longer ago than LAST_SEEN_KEPT_MS). */
  readonly last_seen: string | null;
}

/** How long a user's last-seen time is kept after their last connection. */
export const LAST_SEEN_KEPT_MS = 30 * 86_400_000;
/** Last-seen times kept in memory at most (one node); the oldest go first. */
const MAX_SEEN = 100_000;

export function userStatus(userId: string, connections: number, seenAt: number | undefined): UserStatus {
  const online = connections > 0;
  return { user_id: userId, online, connections, last_seen: online || seenAt === undefined ? null : new Date(seenAt).toISOString() };
}

/**
 * Per-node counting. Entries exist only for users with at least one connection; a user's ids are
 * an array (at most WS_MAX_CONNECTIONS_PER_USER, usually a handful: smaller than a Set).
 */
export function createLocalSeats(maxPerUser: number): LocalSeats {
  const held = new Map<string, string[]>();
  const seen = new Map<string, number>();
  return {
    acquire(userId, connectionId) {
      const connections = held.get(userId);
      if (connections === undefined) {
        held.set(userId, [connectionId]);
        return true;
      }
      if (connections.includes(connectionId)) return true;
      if (connections.length >= maxPerUser) return false;
      connections.push(connectionId);
      return true;
    },
    release(userId, connectionId) {
      const connections = held.get(userId);
      const index = connections?.indexOf(connectionId) ?? -1;
      if (index < 0) return;
      if (connections!.length === 1) held.delete(userId);
      else connections!.splice(index, 1);
      seen.delete(userId);
      if (seen.size >= MAX_SEEN) seen.delete(seen.keys().next().value!);
      seen.set(userId, Date.now());
    },
    status: async (userIds) => userIds.map((id) => userStatus(id, held.get(id)?.length ?? 0, seen.get(id))),
    connectionsOf: (userId) => held.get(userId),
    users: () => held.size,
  };
}

export interface LocalSeats extends ConnectionSeats {
  acquire(userId: string, connectionId: string): boolean;
  /** The user's connection ids: open, or granted and still upgrading. */
  connectionsOf(userId: string): readonly string[] | undefined;
  readonly users: () => number;
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

/** Connections per client address (WS_MAX_CONNECTIONS_PER_IP). Entries exist only while connections do. */
export function createAddressCounts(max: number) {
  const counts = new Map<string, number>();
  return {
    /** Takes a place; false when the address already holds `max` (0: unlimited). */
    acquire(address: string): boolean {
      const held = counts.get(address) ?? 0;
      if (max > 0 && held >= max) return false;
      counts.set(address, held + 1);
      return true;
    },
    release(address: string): void {
      const held = counts.get(address);
      if (held === undefined) return;
      if (held <= 1) counts.delete(address);
      else counts.set(address, held - 1);
    },
  };
}
export type AddressCounts = ReturnType<typeof createAddressCounts>;

/** Failed verifications per second a blocked address may still cause (each about 20 us for HS256). */
export const TRIAL_FAILURES_PER_SECOND = 10;

/**
 * Failed authentications per client address (WS_AUTH_FAILURE_LIMIT per minute, token bucket).
 * An address that ran out is blocked, but not shut: a shared address (NAT, carrier, proxy) also
 * carries valid users, and an attacker behind it must not lock them out with one bad upgrade a
 * second. A blocked address may still have its tokens verified while its second bucket, which only
 * failures drain (TRIAL_FAILURES_PER_SECOND), holds a token: valid tokens get in and cost that
 * bucket nothing, bad ones keep the address blocked. Only an address that fails faster than that
 * is refused with HTTP 429 before any verification, so the work it can cause stays bounded.
 * At most `maxAddresses` are remembered; the least recently failing is forgotten first.
 */
export function createFailureLimiter(perMinute: number, maxAddresses = 10_000) {
  const buckets = new Map<string, Bucket & { trial: Bucket }>();
  const rate = perMinute / 60;
  const refilled = (bucket: Bucket, now: number, perSecond: number, burst: number): number =>
    Math.min(burst, bucket.tokens + ((now - bucket.refilledAt) * perSecond) / 1000);
  const blocked = (address: string, now: number): boolean => {
    const bucket = buckets.get(address);
    if (perMinute === 0 || bucket === undefined) return false;
    return refilled(bucket, now, rate, perMinute) < 1;
  };
  return {
    /** The address has used up its failures (it may still be verified: `mayVerify`). */
    blocked,
    /** Whether an upgrade from the address may have its token verified; false means HTTP 429. */
    mayVerify(address: string, now: number): boolean {
      if (!blocked(address, now)) return true;
      return refilled(buckets.get(address)!.trial, now, TRIAL_FAILURES_PER_SECOND, TRIAL_FAILURES_PER_SECOND) >= 1;
    },
    fail(address: string, now: number): void {
      if (perMinute === 0) return;
      const bucket = buckets.get(address) ?? { ...newBucket(perMinute, now), trial: newBucket(TRIAL_FAILURES_PER_SECOND, now) };
      if (!takeToken(bucket, now, rate, perMinute)) takeToken(bucket.trial, now, TRIAL_FAILURES_PER_SECOND, TRIAL_FAILURES_PER_SECOND);
      buckets.delete(address); // re-insert: Map order is the eviction order
      buckets.set(address, bucket);
      if (buckets.size > maxAddresses) buckets.delete(buckets.keys().next().value!);
    },
    size: () => buckets.size,
  };
}

export type FailureLimiter = ReturnType<typeof createFailureLimiter>;
