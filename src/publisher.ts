/**
 * `ws-edge/publisher`: publish events from a Node backend that runs no edge node, straight into
 * the Redis the nodes share. Same helpers as inside a node; every call resolves once Redis has
 * accepted the event (at-most-once delivery, as from a node) and rejects when it could not.
 *
 *   const publisher = createPublisher({ redisUrl: 'redis://redis:6379' });
 *   await publisher.taskCreated({ projectId: 7, taskId: 42, task: { title: 'Ship it' }, by: 'alice' });
 *   await publisher.close();
 */
import { randomBytes } from 'node:crypto';
import { CLOSES, isApplicationCloseCode, isCloseReason } from './errors.js';
import { createEventsWith, type Events } from './events.js';
import { encodeEvent, isPublishableType } from './protocol.js';
import { publisherConnection } from './redis/connections.js';
import { channelsOf, encodeDisconnect, encodeFrame, nodeOfConnection } from './redis/wire.js';
import { isValidId } from './rooms.js';

export type { Events, TaskRef, Id } from './events.js';

export interface PublisherOptions {
  readonly redisUrl: string;
  /** The nodes' REDIS_PREFIX (default `wsedge:`). */
  readonly prefix?: string;
}

export interface Publisher extends Events<Promise<void>> {
  /** Sends to one connection, wherever it lives. */
  sendToConnection(connectionId: string, type: string, data: unknown, sender?: string | null): Promise<void>;
  /** Closes every connection of the user on every node (default 4403). */
  disconnectUser(userId: string, code?: number, reason?: string): Promise<void>;
  close(): Promise<void>;
}

export function createPublisher(options: PublisherOptions): Publisher {
  const prefix = options.prefix ?? 'wsedge:';
  // A publisher is an origin like a node: nodes deliver its events and never mistake them for an echo.
  const origin = `pub-${randomBytes(4).toString('hex')}`;
  const channels = channelsOf(prefix, origin);
  const redis = publisherConnection(options.redisUrl, `${prefix}${origin}`);
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
  const send = async (channel: string, kind: 'r' | 'c' | 'd', target: string, payload: string): Promise<void> => {
    // Calls made while the first connection is being set up wait for that attempt only; later
    // calls fail at once while Redis is away. Nothing is queued to be sent late.
    if (redis.status === 'connecting' || redis.status === 'wait') await firstConnect;
    await redis.publish(channel, encodeFrame(origin, kind, target, payload));
  };
  const events = createEventsWith<Promise<void>>(
    (room, payload) => send(channels.room(room), 'r', room, payload),
    (both) => Promise.all(both).then(() => {}),
  );

  return {
    ...events,
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
    async close() {
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
