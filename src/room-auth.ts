/**
 * The authorization callback (WS_ROOM_ACCESS=callback): may this user join this room? A POST to
 * WS_ROOM_AUTH_URL with `Authorization: Bearer <WS_ROOM_AUTH_KEY>` and {user_id, username, room,
 * connection_id}; a 200 with {"allow": boolean, "ttl"?: seconds} decides. Bounded everywhere: a
 * timeout, at most WS_ROOM_AUTH_CONCURRENCY calls in flight per node (the rest wait, at most
 * MAX_WAITING), one call per (user, room) at a time, answers cached per (user, room) with separate
 * allow and deny lifetimes. It fails closed: a slow, down or wrong backend is an error (the join
 * is answered `unavailable`), never an allow.
 */
import type { RoomAuthConfig } from './config.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';

/** An answer body larger than this is an error, not a decision. */
export const MAX_ANSWER_BYTES = 4096;
/** Cached (user, room) answers per node; the oldest go first. */
const MAX_CACHED = 100_000;
/** Calls waiting for a turn beyond the concurrency cap; more fail at once. */
const MAX_WAITING = 10_000;
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

class CallbackError extends Error {}

/** The body, at most MAX_ANSWER_BYTES, read as it streams in. */
async function readCapped(res: Response): Promise<string> {
  const reader = res.body?.getReader();
  if (reader === undefined) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_ANSWER_BYTES) {
      await reader.cancel();
      throw new CallbackError(`answer larger than ${MAX_ANSWER_BYTES} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The decision and its cache lifetime in seconds (undefined: the configured one). */
function decide(status: number, body: string): { allow: boolean; ttl: number | undefined } {
  if (status !== 200) throw new CallbackError(`status ${status}`);
  let answer: unknown;
  try {
    answer = JSON.parse(body);
  } catch {
    throw new CallbackError('answer is not JSON');
  }
  const { allow, ttl } = (typeof answer === 'object' && answer !== null ? answer : {}) as Record<string, unknown>;
  if (typeof allow !== 'boolean') throw new CallbackError('answer has no boolean "allow"');
  if (ttl !== undefined && (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 0 || ttl > MAX_TTL_S)) throw new CallbackError('"ttl" is not an integer of 0 to 86400');
  return { allow, ttl };
}

export function createRoomAuthorizer(config: RoomAuthConfig, metrics: Metrics, log: Logger): RoomAuthorizer {
  const cache = new Map<string, { allow: boolean; until: number }>();
  const inFlight = new Map<string, Promise<boolean>>();
  /** The call in flight per key; `forget` marks it revoked: its answer is then neither cached nor used. */
  const tickets = new Map<string, { revoked: boolean }>();
  const waiting: Array<() => void> = [];
  let running = 0;
  let failing = false;

  // The wait for a turn is part of WS_ROOM_AUTH_TIMEOUT: a hung backend never queues joins for minutes.
  const turn = (deadline: number): Promise<void> => {
    if (running < config.concurrency) {
      running += 1;
      return Promise.resolve();
    }
    if (waiting.length >= MAX_WAITING) return Promise.reject(new CallbackError('too many calls waiting'));
    return new Promise((resolve, reject) => {
      const turn = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        waiting.splice(waiting.indexOf(turn), 1);
        reject(new CallbackError(`no turn within ${config.timeoutMs} ms`));
      }, deadline - Date.now());
      waiting.push(turn);
    });
  };
  // A finished call hands its turn straight to the next waiting one.
  const release = (): void => {
    const next = waiting.shift();
    if (next !== undefined) next();
    else running -= 1;
  };

  async function call(req: AuthRequest, key: string, ticket: { revoked: boolean }): Promise<boolean> {
    // One deadline for the wait and the call together.
    const deadline = Date.now() + config.timeoutMs;
    try {
      await turn(deadline);
    } catch (err) {
      metrics.roomAuthCall('error', 0);
      throw err;
    }
    // A turn handed over at the deadline is no time left for a call.
    if (Date.now() >= deadline) {
      release();
      metrics.roomAuthCall('error', 0);
      throw new CallbackError(`no turn within ${config.timeoutMs} ms`);
    }
    const started = process.hrtime.bigint();
    try {
      const res = await fetch(config.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${config.key}` },
        body: JSON.stringify({ user_id: req.userId, username: req.username, room: req.room, connection_id: req.connectionId }),
        signal: AbortSignal.timeout(Math.max(1, deadline - Date.now())),
        redirect: 'error',
      });
      const { allow, ttl } = decide(res.status, await readCapped(res));
      if (ticket.revoked) throw new CallbackError('revoked while the call was in flight');
      const lifetime = allow ? (ttl ?? config.allowTtl) : config.denyTtl;
      if (lifetime > 0) {
        if (cache.size >= MAX_CACHED) cache.delete(cache.keys().next().value!);
        cache.set(key, { allow, until: Date.now() + lifetime * 1000 });
      }
      if (failing) log.info({ event: 'room_auth_recovered' }, 'room authorization callback answering again');
      failing = false;
      metrics.roomAuthCall(allow ? 'allow' : 'deny', Number(process.hrtime.bigint() - started) / 1e9);
      return allow;
    } catch (err) {
      metrics.roomAuthCall('error', Number(process.hrtime.bigint() - started) / 1e9);
      const reason = err instanceof CallbackError ? err.message : (err as Error).name === 'TimeoutError' ? `no answer within ${config.timeoutMs} ms` : 'unreachable';
      if (!failing) log.warn({ event: 'room_auth_failed', reason }, 'room authorization callback failed; joins that need it are refused with unavailable');
      failing = true;
      throw new CallbackError(reason);
    } finally {
      release();
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
