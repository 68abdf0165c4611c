/**
 * `ws-edge/publisher`: publish events from a Node backend that runs no edge node, straight into
 * the Redis the nodes share. Same helpers as inside a node; every call resolves once Redis has
 * accepted the event and rejects when it could not. Rooms named in `historyRooms` (give the nodes'
 * WS_HISTORY_ROOMS, WS_HISTORY_SIZE and WS_HISTORY_TTL) are sequenced: their events go through the
 * room's history and the call resolves with their positions; other rooms are at most once.
 *
 *   const publisher = createPublisher({ redisUrl: 'redis://redis:6379', historyRooms: 'project:*,task:*' });
 *   const { positions } = await publisher.taskCreated({ projectId: 7, taskId: 42, task: { title: 'Ship it' }, by: 'alice' });
 *   await publisher.close();
 */
import { randomBytes } from 'node:crypto';
import type { AccessChange } from './broker.js';
import { CLOSES, isApplicationCloseCode, isCloseReason } from './errors.js';
import { loadConfig } from './config.js';
import { createEventsWith, type Events } from './events.js';
import { IDEMPOTENCY_KEY, type Position } from './history.js';
import { createRoomPublish } from './publish.js';
import { encodeEvent, isPublishableType } from './protocol.js';
import { publisherConnection } from './redis/connections.js';
import { createRedisHistory } from './redis/history.js';
import { channelsOf, encodeAccess, encodeDisconnect, encodeFrame, nodeOfConnection } from './redis/wire.js';
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
}

/** What a publish resolves with: the position of each sequenced room's event (none for plain rooms). */
export interface Published {
  readonly positions: { readonly [room: string]: Position };
}

/** What `publishOnce` resolves with: the event's position, and whether its key was seen (nothing was published again). */
export interface PublishedOnce extends Position {
  readonly duplicate: boolean;
}

export interface Publisher extends Events<Promise<Published>> {
  /**
   * Publishes to a sequenced room at most once per `idempotencyKey` (1-128 printable ASCII
   * characters, no spaces) within 5 minutes: a retry after an error or a timeout resolves with the
   * first publish's position. Throws a TypeError for a plain room, a bad key, room or type.
   */
  publishOnce(idempotencyKey: string, room: string, type: string, data: unknown, sender?: string | null): Promise<PublishedOnce>;
  /** Sends to one connection, wherever it lives. */
  sendToConnection(connectionId: string, type: string, data: unknown, sender?: string | null): Promise<void>;
  /** Closes every connection of the user on every node (default 4403). */
  disconnectUser(userId: string, code?: number, reason?: string): Promise<void>;
  /** Takes the room away from the user (or one connection) on every node: room_left `access_revoked`, the connection stays. */
  unsubscribe(userId: string, room: string, connectionId?: string): Promise<void>;
  /** Joins every connection of the user to the room, on every node. */
  subscribe(userId: string, room: string): Promise<void>;
  close(): Promise<void>;
}

/** The checks of POST /api/v1/unsubscribe and /api/v1/subscribe, as TypeErrors. */
function checkAccessChange(change: AccessChange): void {
  if (!isValidId(change.userId)) throw new TypeError(`invalid user id: ${JSON.stringify(change.userId)}`);
  if (!isValidRoom(change.room) || change.room.startsWith('user:')) throw new TypeError(`invalid room: ${JSON.stringify(change.room)}`);
  if (change.connectionId !== undefined && nodeOfConnection(change.connectionId) === '') throw new TypeError(`invalid connection id: ${JSON.stringify(change.connectionId)}`);
}

export function createPublisher(options: PublisherOptions): Publisher {
  const prefix = options.prefix ?? 'wsedge:';
  // A publisher is an origin like a node: nodes deliver its events and never mistake them for an echo.
  const origin = `pub-${randomBytes(4).toString('hex')}`;
  const channels = channelsOf(prefix, origin);
  // The nodes' own parser, so the history settings mean what they mean there (throws a ConfigError).
  const history = loadConfig({
    REDIS_URL: options.redisUrl,
    WS_HISTORY_ROOMS: options.historyRooms,
    WS_HISTORY_SIZE: options.historySize?.toString(),
    WS_HISTORY_TTL: options.historyTtl?.toString(),
  }).history;
  const redis = publisherConnection(options.redisUrl, `${prefix}${origin}`);
  const rooms = createRedisHistory({ command: redis, cluster: false, prefix, nodeId: origin, history });
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
  // calls fail at once while Redis is away. Nothing is queued to be sent late.
  const connected = async (): Promise<void> => {
    if (redis.status === 'connecting' || redis.status === 'wait') await firstConnect;
  };
  const send = async (channel: string, kind: 'r' | 'c' | 'd' | 'a', target: string, payload: string): Promise<void> => {
    await connected();
    await redis.publish(channel, encodeFrame(origin, kind, target, payload));
  };
  const changeAccess = async (change: AccessChange): Promise<void> => {
    checkAccessChange(change);
    await send(channels.control, 'a', change.userId, encodeAccess(change));
  };

  const publish = createRoomPublish({
    sequenced: (room) => covers(history.rooms, room),
    broadcast: (room, envelope) => send(channels.room(room), 'r', room, envelope),
    append: (room, head, key) => connected().then(() => rooms.append(room, head, key)),
  });
  const toRoom = async (room: string, payload: string): Promise<Published> => {
    const appended = await publish(room, payload);
    return appended === undefined ? { positions: {} } : { positions: { [room]: { epoch: appended.epoch, offset: appended.offset } } };
  };
  const events = createEventsWith<Promise<Published>>(toRoom, (both) =>
    Promise.all(both).then(([a, b]) => ({ positions: { ...a.positions, ...b.positions } })),
  );

  return {
    ...events,
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
    async close() {
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
