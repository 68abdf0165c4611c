/**
 * `ws-edge/publisher`: publish events from a Node backend that runs no edge node, straight into
 * the Redis the nodes share. Same helpers as inside a node; every call resolves once Redis has
 * accepted the event and rejects when it could not. Rooms named in `historyRooms` (give the nodes'
 * WS_HISTORY_ROOMS, WS_HISTORY_SIZE and WS_HISTORY_TTL) are sequenced: their events go through the
 * room's history and the call resolves with their positions; other rooms are at most once.
 *
 *   const publisher = createPublisher({ redisUrl: 'redis://redis:6379', historyRooms: 'project:*,task:*' });
 *   const { positions } = await publisher.taskCreated({ projectId: 7, taskId: 42, task: { title: 'Ship it' }, by: 'alice' });
 *   const { results } = await publisher.publishMany({ userIds: ['alice', 'bob'], type: 'notification.new', data: { title: 'Hi' } });
 *   await publisher.revokeUser('alice', new Date());             // every token of alice issued before now: 4401 token revoked
 *   await publisher.close();
 */
import { randomBytes } from 'node:crypto';
import type { AccessChange } from './broker.js';
import { CLOSES, isApplicationCloseCode, isCloseReason } from './errors.js';
import { loadConfig } from './config.js';
import { createEventsWith, type Events } from './events.js';
import { IDEMPOTENCY_KEY, type Position } from './history.js';
import { createRoomPublish, eventEncoder, isConnectionId, listTargets, MAX_PUBLICATIONS, MAX_TARGETS, publishTargets, type Publication, type TargetOutcome } from './publish.js';
import { encodeEvent, isPublishableType } from './protocol.js';
import { publisherConnection, writesTogether } from './redis/connections.js';
import { createRedisHistory } from './redis/history.js';
import { createRedisRevocationStore, encodeRevocation } from './redis/revocation.js';
import { countConnections } from './redis/registry.js';
import { channelsOf, encodeAccess, encodeDisconnect, encodeFrame, nodeOfConnection } from './redis/wire.js';
import { expiryOf, issuedBeforeMs, isTokenId, type Revocation } from './revocation.js';
import { covers, isValidId, isValidRoom } from './rooms.js';

export type { Events, TaskRef, Id } from './events.js';
export type { Position } from './history.js';

export interface PublisherOptions {
  readonly redisUrl: string;
  /** The nodes' REDIS_PREFIX (default `wsedge:`). */
  readonly prefix?: string;
  /** The nodes' WS_HISTORY_ROOMS (default: none), WS_HISTORY_SIZE and WS_HISTORY_TTL: the same syntax and defaults. */
  readonly historyRooms?: string;
  readonly historySize?: number;
  readonly historyTtl?: number;
  /** The nodes' JWT_MAX_LIFETIME (default 86400 s) and JWT_CLOCK_TOLERANCE (default 5 s): how long a revocation is kept. */
  readonly maxTokenLifetime?: number;
  readonly clockTolerance?: number;
  /** The nodes' WS_REVOCATIONS_MAX (default 100000): past it a new revocation is refused (`revocations_full`). */
  readonly revocationsMax?: number;
}

/** What a revoke resolves with: when the revocation stops being kept (no token it covers can still be accepted). */
export interface Revoked {
  readonly expiresAt: Date;
}

/** A revoke refused because WS_REVOCATIONS_MAX revocations are kept already (`code`: `revocations_full`, as the API's 503). */
export class RevocationsFullError extends Error {
  readonly code = 'revocations_full';
  constructor() {
    super('WS_REVOCATIONS_MAX revocations are kept already; retry once older ones expire, or revoke by user');
  }
}

/** What a publish resolves with: the position of each sequenced room's event (none for plain rooms). */
export interface Published {
  readonly positions: { readonly [room: string]: Position };
}

/** What `publishOnce` resolves with: the event's position, and whether its key was seen (nothing was published again). */
export interface PublishedOnce extends Position {
  readonly duplicate: boolean;
}

/** One event to many rooms and users, as POST /api/v1/publish with `rooms` and `user_ids`. */
export interface ManyTargets {
  /** Rooms, each valid, none twice. */
  readonly rooms?: readonly string[];
  /** Users (their personal rooms `user:<id>`); with `rooms` at most 1,000 targets, none twice. */
  readonly userIds?: readonly string[];
  readonly type: string;
  readonly data?: unknown;
  readonly sender?: string | null;
  /** A connection id (from its `connected` message) that must not receive the event; an unknown one excludes nobody. */
  readonly excludeConnection?: string;
  /** Every target must be sequenced (`historyRooms`): each room keeps the key, as publishOnce does. */
  readonly idempotencyKey?: string;
}

/** One target's result, in the order given (rooms, then users). */
export type TargetResult =
  | {
      readonly status: 'published';
      readonly room: string;
      /** For a user target; `room` is then `user:<id>`. */
      readonly userId?: string;
      /** A sequenced room's position for the event (the first publish's when `duplicate`). */
      readonly position?: Position;
      readonly duplicate?: boolean;
      /** For a user target: the user's live connections on every node (the registry in Redis), the excluded one not counted. */
      readonly connections?: number;
    }
  | { readonly status: 'failed'; readonly room: string; readonly userId?: string; readonly error: Error };

/** What `publishMany` resolves with: `partial` when some targets failed (they carry their error). */
export interface PublishedMany {
  readonly status: 'published' | 'partial';
  readonly results: readonly TargetResult[];
}

export interface Publisher extends Events<Promise<Published>> {
  /**
   * Publishes to a sequenced room at most once per `idempotencyKey` (1-128 printable ASCII
   * characters, no spaces) within 5 minutes: a retry after an error or a timeout resolves with the
   * first publish's position. Throws a TypeError for a plain room, a bad key, room or type.
   */
  publishOnce(idempotencyKey: string, room: string, type: string, data: unknown, sender?: string | null): Promise<PublishedOnce>;
  /**
   * One event to every room and user named (1 to 1,000 targets): the envelope is encoded once per
   * room, and every PUBLISH and history append goes to Redis before any reply is awaited.
   * Resolves with a result per target; rejects with the first target's error only when every
   * target failed (nothing was published). Throws a TypeError for bad arguments, before anything is sent.
   */
  publishMany(targets: ManyTargets): Promise<PublishedMany>;
  /**
   * Up to 100 publications (their targets together at most 1,000), all sent at once: each resolves
   * to its own PublishedMany or its own Error (a TypeError for a bad item), one bad item failing
   * none of the others. Throws a TypeError when the batch itself is malformed.
   */
  publishBatch(publications: readonly ManyTargets[]): Promise<Array<PublishedMany | Error>>;
  /** Sends to one connection, wherever it lives. */
  sendToConnection(connectionId: string, type: string, data: unknown, sender?: string | null): Promise<void>;
  /** Closes every connection of the user on every node (default 4403). */
  disconnectUser(userId: string, code?: number, reason?: string): Promise<void>;
  /** Takes the room away from the user (or one connection) on every node: room_left `access_revoked`, the connection stays. */
  unsubscribe(userId: string, room: string, connectionId?: string): Promise<void>;
  /** Joins every connection of the user to the room, on every node. */
  subscribe(userId: string, room: string): Promise<void>;
  /**
   * POST /api/v1/revoke `{user_id, issued_before}`: every token of the user issued before
   * `issuedBefore` (a Date, epoch seconds like `iat`, or an RFC 3339 string; at most 60 s ahead) is
   * refused at the upgrade, at refresh_token and for grants, and the user's live connections it
   * covers close with 4401 `token revoked` on every node. Kept in Redis first (so it survives node
   * restarts), then sent to the nodes. Throws a TypeError for a bad id or time; rejects with a
   * RevocationsFullError, or an Error while Redis is unreachable (nothing was revoked).
   */
  revokeUser(userId: string, issuedBefore: Date | number | string): Promise<Revoked>;
  /** POST /api/v1/revoke `{jti}`: the one token with this `jti` (1-128 printable ASCII, no spaces), as revokeUser. */
  revokeToken(jti: string): Promise<Revoked>;
  close(): Promise<void>;
}

/** The checks of POST /api/v1/unsubscribe and /api/v1/subscribe, as TypeErrors. */
function checkAccessChange(change: AccessChange): void {
  if (!isValidId(change.userId)) throw new TypeError(`invalid user id: ${JSON.stringify(change.userId)}`);
  if (!isValidRoom(change.room) || change.room.startsWith('user:')) throw new TypeError(`invalid room: ${JSON.stringify(change.room)}`);
  if (change.connectionId !== undefined && nodeOfConnection(change.connectionId) === '') throw new TypeError(`invalid connection id: ${JSON.stringify(change.connectionId)}`);
}

const asError = (err: unknown): Error => (err instanceof Error ? err : new Error(String(err)));

function resultOf(outcome: TargetOutcome): TargetResult {
  const { room, userId } = outcome.target;
  const id = userId === undefined ? { room } : { room, userId };
  if (!outcome.ok) return { status: 'failed', ...id, error: asError(outcome.error) };
  const { appended, connections } = outcome;
  return {
    status: 'published',
    ...id,
    ...(appended !== undefined && { position: { epoch: appended.epoch, offset: appended.offset } }),
    ...(appended?.duplicate && { duplicate: true }),
    ...(connections !== undefined && { connections }),
  };
}

export function createPublisher(options: PublisherOptions): Publisher {
  const prefix = options.prefix ?? 'wsedge:';
  // A publisher is an origin like a node: nodes deliver its events and never mistake them for an echo.
  const origin = `pub-${randomBytes(4).toString('hex')}`;
  const channels = channelsOf(prefix, origin);
  // The nodes' own parser, so the history settings mean what they mean there (throws a ConfigError).
  const config = loadConfig({
    REDIS_URL: options.redisUrl,
    WS_HISTORY_ROOMS: options.historyRooms,
    WS_HISTORY_SIZE: options.historySize?.toString(),
    WS_HISTORY_TTL: options.historyTtl?.toString(),
    JWT_MAX_LIFETIME: options.maxTokenLifetime?.toString(),
    JWT_CLOCK_TOLERANCE: options.clockTolerance?.toString(),
    WS_REVOCATIONS_MAX: options.revocationsMax?.toString(),
  });
  const { history } = config;
  const keptMs = (config.jwt.maxLifetimeSeconds + config.jwt.clockToleranceSeconds) * 1000;
  const redis = publisherConnection(options.redisUrl, `${prefix}${origin}`);
  const rooms = createRedisHistory({ command: redis, cluster: false, prefix, nodeId: origin, history });
  const revocations = createRedisRevocationStore(redis, prefix, config.revocationsMax);
  redis.on('error', () => {});
  // Settles with the first connection attempt: a failed one rejects at once, so nothing waits to
  // be sent late.
  const firstConnect = new Promise<void>((resolve, reject) => {
    const onReady = (): void => {
      redis.off('close', onClose);
      resolve();
    };
    const onClose = (): void => {
      redis.off('ready', onReady);
      reject(new Error('Redis unreachable'));
    };
    redis.once('ready', onReady);
    redis.once('close', onClose);
  });
  firstConnect.catch(() => {});
  // Calls made while the first connection is being set up wait for that attempt only; later
  // calls fail at once while Redis is away. Nothing is queued to be sent late. Once connected the
  // command is issued at once (in the caller's turn), so a publishMany's commands leave together.
  const connected = async <T>(issue: () => Promise<T>): Promise<T> => {
    if (redis.status === 'connecting' || redis.status === 'wait') await firstConnect;
    return issue();
  };
  const send = async (channel: string, kind: 'r' | 'c' | 'd' | 'a' | 'v', target: string, payload: string, except?: string): Promise<void> => {
    await connected(() => redis.publish(channel, encodeFrame(origin, kind, target, payload, except)));
  };
  // As the API's revoke: kept in Redis before the frame goes out, so a node that misses the frame
  // (or starts later) reads it on its reload.
  const revoke = async (rule: Revocation): Promise<Revoked> => {
    const kept = { rule, expiresAt: expiryOf(rule, Date.now(), keptMs) };
    if (!(await connected(() => revocations.save(kept)))) throw new RevocationsFullError();
    await send(channels.control, 'v', String(kept.expiresAt), encodeRevocation(rule));
    return { expiresAt: new Date(kept.expiresAt) };
  };
  const changeAccess = async (change: AccessChange): Promise<void> => {
    checkAccessChange(change);
    await send(channels.control, 'a', change.userId, encodeAccess(change));
  };

  const publish = createRoomPublish({
    sequenced: (room) => covers(history.rooms, room),
    broadcast: (room, envelope, except) => send(channels.room(room), 'r', room, envelope, except),
    append: (room, head, key, except) => connected(() => rooms.append(room, head, key, except)),
  });
  const count = (userIds: readonly string[], except: string | undefined) => connected(() => countConnections(redis, prefix, userIds, except));
  const together = writesTogether(redis);
  /** The checks of POST /api/v1/publish with `rooms` and `user_ids`, as TypeErrors. */
  const prepareMany = (many: ManyTargets): Publication => {
    if (typeof many !== 'object' || many === null) throw new TypeError('a publication is an object: { rooms?, userIds?, type, data?, sender?, excludeConnection?, idempotencyKey? }');
    const { rooms: roomList, userIds, type, data, sender = null, excludeConnection, idempotencyKey } = many;
    const targets = listTargets(roomList, userIds);
    if (typeof targets === 'string') throw new TypeError(`${targets}: rooms and userIds must be arrays of valid rooms and user ids, 1 to ${MAX_TARGETS} in all, none named twice`);
    if (!isPublishableType(type)) throw new TypeError(`reserved or malformed event type: ${JSON.stringify(type)}`);
    if (sender !== null && (typeof sender !== 'string' || sender.length > 128)) throw new TypeError('sender must be null or a string of at most 128 characters');
    if (idempotencyKey !== undefined) {
      if (typeof idempotencyKey !== 'string' || !IDEMPOTENCY_KEY.test(idempotencyKey)) throw new TypeError(`invalid idempotency key: ${JSON.stringify(idempotencyKey)}`);
      const plain = targets.find((t) => !covers(history.rooms, t.room));
      if (plain !== undefined) throw new TypeError(`an idempotency key needs every target sequenced: ${JSON.stringify(plain.room)} is not`);
    }
    if (excludeConnection !== undefined && !isConnectionId(excludeConnection)) throw new TypeError(`invalid connection id: ${JSON.stringify(excludeConnection)}`);
    return { targets, encode: eventEncoder(type, data, sender), key: idempotencyKey, except: excludeConnection };
  };
  const runMany = async (publication: Publication): Promise<PublishedMany> => {
    const outcomes = await publishTargets(publish, count, publication, together);
    const failed = outcomes.find((o) => !o.ok);
    if (failed !== undefined && outcomes.every((o) => !o.ok)) throw asError(failed.error);
    return { status: failed === undefined ? 'published' : 'partial', results: outcomes.map(resultOf) };
  };
  const toRoom = async (room: string, payload: string): Promise<Published> => {
    const appended = await publish(room, payload);
    return appended === undefined ? { positions: {} } : { positions: { [room]: { epoch: appended.epoch, offset: appended.offset } } };
  };
  const events = createEventsWith<Promise<Published>>(toRoom, (both) =>
    Promise.all(both).then(([a, b]) => ({ positions: { ...a.positions, ...b.positions } })),
  );

  return {
    ...events,
    publishMany: (targets) => runMany(prepareMany(targets)),
    publishBatch(publications) {
      if (!Array.isArray(publications) || publications.length === 0 || publications.length > MAX_PUBLICATIONS) throw new TypeError(`a batch is an array of 1 to ${MAX_PUBLICATIONS} publications`);
      const items = publications.map((many: ManyTargets): Publication | Error => {
        try {
          return prepareMany(many);
        } catch (err) {
          return asError(err);
        }
      });
      const total = items.reduce((sum, item) => sum + (item instanceof Error ? 0 : item.targets.length), 0);
      if (total > MAX_TARGETS) throw new TypeError(`a batch publishes to at most ${MAX_TARGETS} targets in all, not ${total}`);
      // Each publication issues its commands before its first await: the whole batch leaves in one write.
      return Promise.all(together(() => items.map((item) => (item instanceof Error ? item : runMany(item).catch(asError)))));
    },
    publishOnce(idempotencyKey, room, type, data, sender = null) {
      if (!isValidRoom(room) || !covers(history.rooms, room)) throw new TypeError(`not a sequenced room: ${JSON.stringify(room)}`);
      if (!IDEMPOTENCY_KEY.test(idempotencyKey)) throw new TypeError(`invalid idempotency key: ${JSON.stringify(idempotencyKey)}`);
      if (!isPublishableType(type)) throw new TypeError(`reserved or malformed event type: ${JSON.stringify(type)}`);
      return publish(room, encodeEvent(type, room, data ?? null, sender), idempotencyKey) as Promise<PublishedOnce>;
    },
    async sendToConnection(connectionId, type, data, sender = null) {
      if (!isPublishableType(type)) throw new TypeError(`reserved or malformed event type: ${JSON.stringify(type)}`);
      const owner = nodeOfConnection(connectionId);
      if (owner === '') throw new TypeError(`invalid connection id: ${JSON.stringify(connectionId)}`);
      await send(channels.node(owner), 'c', connectionId, encodeEvent(type, null, data ?? null, sender));
    },
    async disconnectUser(userId, code = CLOSES.disconnected.code, reason = CLOSES.disconnected.message) {
      if (!isValidId(userId)) throw new TypeError(`invalid user id: ${JSON.stringify(userId)}`);
      if (!isApplicationCloseCode(code)) throw new TypeError(`close code must be 4000-4999: ${code}`);
      if (!isCloseReason(reason)) throw new TypeError('reason must be one line of at most 123 bytes');
      await send(channels.control, 'd', userId, encodeDisconnect(code, reason));
    },
    unsubscribe: (userId, room, connectionId) => changeAccess({ op: 'unsubscribe', userId, room, connectionId }),
    subscribe: (userId, room) => changeAccess({ op: 'subscribe', userId, room, connectionId: undefined }),
    async revokeUser(userId, issuedBefore) {
      if (!isValidId(userId)) throw new TypeError(`invalid user id: ${JSON.stringify(userId)}`);
      const before = issuedBeforeMs(issuedBefore instanceof Date ? issuedBefore.getTime() / 1000 : issuedBefore);
      if (before === undefined) throw new TypeError(`issuedBefore must be a Date, epoch seconds or an RFC 3339 time, not more than 60 s ahead: ${JSON.stringify(issuedBefore)}`);
      return revoke({ kind: 'user', userId, issuedBefore: before });
    },
    async revokeToken(jti) {
      if (!isTokenId(jti)) throw new TypeError(`invalid jti: ${JSON.stringify(jti)}`);
      return revoke({ kind: 'jti', tokenId: jti });
    },
    async close() {
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
