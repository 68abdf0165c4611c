/**
 * The authorization callback (WS_ROOM_ACCESS=callback): may this user join this room? A POST to
 * WS_ROOM_AUTH_URL with `Authorization: Bearer <WS_ROOM_AUTH_KEY>` and {user_id, username, room,
 * connection_id}; a 200 with {"allow": boolean, "ttl"?: seconds} decides. Bounded everywhere: a
 * timeout, at most WS_ROOM_AUTH_CONCURRENCY calls in flight per node (the rest wait, bounded by
 * backend.ts), one call per (user, room) at a time, answers cached per (user, room) with separate
 * allow and deny lifetimes. The call itself is backend.ts's, like the publish proxy's and RPC's. It
 * fails closed: a slow, down or wrong backend is an error (the join is answered `unavailable`), never an allow.
 */
import { BackendError, createBackendCaller } from './backend.js';
import type { RoomAuthConfig } from './config.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';

/** Cached (user, room) answers per node; the oldest go first. */
const MAX_CACHED = 100_000;
/** The longest `ttl` an allow may ask for. */
const MAX_TTL_S = 86_400;

export interface AuthRequest {
  readonly userId: string;
  readonly username: string;
  readonly room: string;
  readonly connectionId: string;
}

export interface RoomAuthorizer {
  /** Resolves true (allow) or false (deny); rejects when the backend gave no usable answer. */
  ask(req: AuthRequest): Promise<boolean>;
  /** Drops the cached answer for (user, room): a revocation must not be undone by the cache. */
  forget(userId: string, room: string): void;
}

/** The decision and its cache lifetime in seconds (undefined: the configured one). */
function decide(answer: Record<string, unknown>): { allow: boolean; ttl: number | undefined } {
  const { allow, ttl } = answer;
  if (typeof allow !== 'boolean') throw new BackendError('bad_answer', 'answer has no boolean "allow"');
  if (ttl !== undefined && (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 0 || ttl > MAX_TTL_S)) throw new BackendError('bad_answer', '"ttl" is not an integer of 0 to 86400');
  return { allow, ttl };
}

export function createRoomAuthorizer(config: RoomAuthConfig, metrics: Metrics, log: Logger): RoomAuthorizer {
  const backend = createBackendCaller('room_auth', config, metrics, log);
  const cache = new Map<string, { allow: boolean; until: number }>();
  const inFlight = new Map<string, Promise<boolean>>();
  /** The call in flight per key; `forget` marks it revoked: its answer is then neither cached nor used. */
  const tickets = new Map<string, { revoked: boolean }>();

  async function call(req: AuthRequest, key: string, ticket: { revoked: boolean }): Promise<boolean> {
    const started = process.hrtime.bigint();
    const seconds = (): number => Number(process.hrtime.bigint() - started) / 1e9;
    try {
      const { allow, ttl } = decide(await backend.call({ user_id: req.userId, username: req.username, room: req.room, connection_id: req.connectionId }));
      if (ticket.revoked) throw new BackendError('bad_answer', 'revoked while the call was in flight');
      const lifetime = allow ? (ttl ?? config.allowTtl) : config.denyTtl;
      if (lifetime > 0) {
        if (cache.size >= MAX_CACHED) cache.delete(cache.keys().next().value!);
        cache.set(key, { allow, until: Date.now() + lifetime * 1000 });
      }
      metrics.roomAuthCall(allow ? 'allow' : 'deny', seconds());
      return allow;
    } catch (err) {
      metrics.roomAuthCall('error', seconds());
      throw err;
    }
  }

  return {
    ask(req) {
      const key = `${req.userId}\n${req.room}`;
      const cached = cache.get(key);
      if (cached !== undefined && cached.until > Date.now()) {
        metrics.roomAuthCache('hit');
        return Promise.resolve(cached.allow);
      }
      if (cached !== undefined) cache.delete(key);
      metrics.roomAuthCache('miss');
      let pending = inFlight.get(key);
      if (pending === undefined) {
        const ticket = { revoked: false };
        tickets.set(key, ticket);
        const settled = call(req, key, ticket).finally(() => {
          if (tickets.get(key) === ticket) tickets.delete(key);
          if (inFlight.get(key) === settled) inFlight.delete(key);
        });
        pending = settled;
        inFlight.set(key, pending);
      }
      return pending;
    },
    forget(userId, room) {
      const key = `${userId}\n${room}`;
      cache.delete(key);
      inFlight.delete(key);
      const ticket = tickets.get(key);
      if (ticket !== undefined) ticket.revoked = true;
      tickets.delete(key);
    },
  };
}
