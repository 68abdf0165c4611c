/**
 * Revoked tokens (POST /api/v1/revoke, ws-edge/publisher): every token of a user issued before a
 * time, or one token by its `jti`. Every node keeps the list in memory, so the checks at the
 * upgrade, at refresh_token and for room grants cost a map lookup; the store (Redis, or none
 * without it) keeps it across restarts, and the broker carries each new revocation to every node,
 * which closes the live connections it covers (access-changes.ts).
 *
 * Bounds: a revocation lives until no token it covers can still be accepted, that is JWT_MAX_LIFETIME
 * (plus JWT_CLOCK_TOLERANCE) after `issued_before`, or after the revoke for a `jti`; expired ones
 * are swept every minute. At most WS_REVOCATIONS_MAX are kept; a new one past that is refused
 * (`revocations_full`), a later `issued_before` for a user already listed never is.
 * A token without `iat` counts as issued before any time while a revocation of its user is kept.
 */
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';

export type Revocation = { readonly kind: 'user'; readonly userId: string; readonly issuedBefore: number } | { readonly kind: 'jti'; readonly tokenId: string };

/** A revocation and the epoch ms after which it covers no acceptable token. */
export interface KeptRevocation {
  readonly rule: Revocation;
  readonly expiresAt: number;
}

/** What a revocation is checked against: a token's user, `iat` (epoch ms) and `jti`. */
export interface TokenStamp {
  readonly userId: string;
  readonly issuedAt: number | undefined;
  readonly tokenId: string | undefined;
}

export interface RevocationCheck {
  isRevoked(stamp: TokenStamp): boolean;
}

export interface RevocationList extends RevocationCheck {
  /** Takes a revocation in; false when WS_REVOCATIONS_MAX are kept and it is a new one (nothing changed). */
  add(kept: KeptRevocation): boolean;
  /** Whether the list holds `kept` already (the same or a later `issued_before` for the user). */
  has(kept: KeptRevocation): boolean;
  readonly size: number;
  close(): void;
}

/** Where revocations outlive the node: Redis (redis/revocation.ts), or nowhere (memory only). */
export interface RevocationStore {
  /** Resolves false when the store is full (WS_REVOCATIONS_MAX); rejects when it is unreachable. */
  save(kept: KeptRevocation): Promise<boolean>;
  /** Every revocation not expired yet. */
  load(): Promise<KeptRevocation[]>;
}

const TOKEN_ID = /^[\x21-\x7e]{1,128}$/;
const SWEEP_MS = 60_000;

/** A `jti` revocation can name: 1-128 printable ASCII characters without spaces (it travels in a frame header). */
export function isTokenId(value: unknown): value is string {
  return typeof value === 'string' && TOKEN_ID.test(value);
}

/** `issued_before` may lie this far ahead (clock differences between the backend and the node). */
const ISSUED_BEFORE_AHEAD_MS = 60_000;
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

/** `issued_before` as epoch ms: epoch seconds (like `iat`) or an RFC 3339 time; undefined when it is neither. */
export function issuedBeforeMs(value: unknown): number | undefined {
  const ms = typeof value === 'number' ? value * 1000 : typeof value === 'string' && RFC3339.test(value) ? Date.parse(value) : NaN;
  return Number.isFinite(ms) && ms > 0 && ms <= Date.now() + ISSUED_BEFORE_AHEAD_MS ? Math.floor(ms) : undefined;
}

/** When a revocation made `now` stops covering any token the node accepts. */
export function expiryOf(rule: Revocation, now: number, lifetimeMs: number): number {
  return (rule.kind === 'user' ? rule.issuedBefore : now) + lifetimeMs;
}

export function createRevocationList(max: number, metrics: Metrics): RevocationList {
  /** User id -> the latest `issued_before` and when it expires. */
  const users = new Map<string, { before: number; expiresAt: number }>();
  const tokens = new Map<string, number>();
  const sweep = (): void => {
    const now = Date.now();
    for (const [id, entry] of users) if (entry.expiresAt <= now) users.delete(id);
    for (const [id, expiresAt] of tokens) if (expiresAt <= now) tokens.delete(id);
    metrics.revocationsKept(users.size + tokens.size);
  };
  const timer = setInterval(sweep, SWEEP_MS);
  timer.unref();
  const list: RevocationList = {
    get size() {
      return users.size + tokens.size;
    },
    has({ rule }) {
      if (rule.kind === 'jti') return tokens.has(rule.tokenId);
      return (users.get(rule.userId)?.before ?? -Infinity) >= rule.issuedBefore;
    },
    add(kept) {
      const { rule, expiresAt } = kept;
      if (expiresAt <= Date.now()) return true;
      if (rule.kind === 'user') {
        const entry = users.get(rule.userId);
        if (entry === undefined && list.size >= max) return false;
        if (entry === undefined || entry.before < rule.issuedBefore) users.set(rule.userId, { before: rule.issuedBefore, expiresAt: Math.max(expiresAt, entry?.expiresAt ?? 0) });
      } else {
        if (!tokens.has(rule.tokenId) && list.size >= max) return false;
        tokens.set(rule.tokenId, Math.max(expiresAt, tokens.get(rule.tokenId) ?? 0));
      }
      metrics.revocationAdded(rule.kind);
      metrics.revocationsKept(list.size);
      return true;
    },
    isRevoked({ userId, issuedAt, tokenId }) {
      const now = Date.now();
      if (tokenId !== undefined) {
        const until = tokens.get(tokenId);
        if (until !== undefined && until > now) return true;
      }
      const entry = users.get(userId);
      return entry !== undefined && entry.expiresAt > now && (issuedAt === undefined || issuedAt < entry.before);
    },
    close() {
      clearInterval(timer);
    },
  };
  return list;
}

/** Without Redis: nothing outlives the node. */
export const MEMORY_REVOCATION_STORE: RevocationStore = {
  save: async () => true,
  load: async () => [],
};

/**
 * The session -> token stamp table behind live revocations: set when the socket opens and at each
 * refresh_token, read when a revocation arrives. Weak, so an entry dies with its session.
 */
const stamps = new WeakMap<object, TokenStamp>();
/**
 * Stamps of upgrades under way, by connection id: uWS copies the UserData given to `res.upgrade`
 * into the socket's own object and calls `open` before `res.upgrade` returns, so `adoptToken` in
 * `open` moves the stamp onto that object; an upgrade that never opened is forgotten after the turn.
 */
const arriving = new Map<string, TokenStamp>();

export function tokenArrives(connectionId: string, stamp: TokenStamp): void {
  arriving.set(connectionId, { userId: stamp.userId, issuedAt: stamp.issuedAt, tokenId: stamp.tokenId });
  queueMicrotask(() => arriving.delete(connectionId));
}

/** In `open`: the socket's session takes the stamp its upgrade noted. */
export function adoptToken(session: { readonly connectionId: string }): void {
  const stamp = arriving.get(session.connectionId);
  if (stamp === undefined) return;
  arriving.delete(session.connectionId);
  stamps.set(session, stamp);
}

export function rememberToken(session: object, stamp: TokenStamp): void {
  stamps.set(session, { userId: stamp.userId, issuedAt: stamp.issuedAt, tokenId: stamp.tokenId });
}

/** Whether `rule` covers the token the session last presented. */
export function sessionRevoked(session: object, rule: Revocation): boolean {
  const stamp = stamps.get(session);
  if (stamp === undefined) return false;
  if (rule.kind === 'jti') return stamp.tokenId === rule.tokenId;
  return stamp.userId === rule.userId && (stamp.issuedAt === undefined || stamp.issuedAt < rule.issuedBefore);
}

/** How often each node re-reads the store: the bound for a node that missed a revocation's frame (Redis away, or starting). */
export const RELOAD_MS = 30_000;
/** At start the store is tried every FIRST_RETRY_MS for FIRST_LOAD_MS (Redis connects meanwhile) before the node listens. */
const FIRST_RETRY_MS = 200;
const FIRST_LOAD_MS = 5000;

/**
 * Loads the store into the list before the node listens (`first`, given up after FIRST_LOAD_MS:
 * a node whose Redis is away starts, and reads it RELOAD_MS later), then again every RELOAD_MS;
 * `apply` gets each revocation the list did not hold yet.
 */
export function startRevocationReload(store: RevocationStore, list: RevocationList, apply: (kept: KeptRevocation) => void, log: Logger): { first: Promise<void>; stop(): void } {
  let stopped = false;
  const reload = async (): Promise<boolean> => {
    try {
      for (const kept of await store.load()) if (!list.has(kept)) apply(kept);
      return true;
    } catch {
      return false;
    }
  };
  const first = async (): Promise<void> => {
    const until = Date.now() + FIRST_LOAD_MS;
    while (!stopped && !(await reload())) {
      if (Date.now() >= until) return void log.warn({ event: 'revocations_unreadable' }, `revocations could not be read from Redis; retried every ${RELOAD_MS / 1000} s`);
      await new Promise((resolve) => setTimeout(resolve, FIRST_RETRY_MS));
    }
  };
  const timer = setInterval(() => void reload(), RELOAD_MS);
  timer.unref();
  return {
    first: first(),
    stop() {
      stopped = true;
      clearInterval(timer);
    },
  };
}
