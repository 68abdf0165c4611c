/**
 * The Redis broker: nodes joined by Redis pub/sub with one channel per room, subscribed only while
 * the node has local members (targeted fan-out). The origin node delivers locally at once and
 * ignores its own echo. Subscriptions (subscriptions.ts) and the liveness probe (probe.ts) are
 * their own modules; this one publishes, receives and says whether the broker is up. See README
 * "Redis" for the key and channel layout.
 */
import type { Broker, BrokerTarget } from '../broker.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { RedisClients } from './links.js';
import { probeReturned, startProbe } from './probe.js';
import { runScript } from './scripts.js';
import { slotOf, tagFor } from './slots.js';
import { shardOf, type LinkState } from './link-states.js';
import { decodeRevocation, encodeRevocation } from './revocation.js';
import { createSubscriptions } from './subscriptions.js';
import { channelsOf, decodeAccess, decodeDisconnect, decodeFrame, encodeAccess, encodeDisconnect, encodeFrame, nodeOfConnection, type Frame, type FrameKind } from './wire.js';

/** Publishes waiting for Redis beyond this are dropped and counted, so nothing grows without bound. */
const MAX_PENDING_PUBLISHES = 10_000;

export interface RedisBrokerDeps {
  readonly config: Config;
  readonly target: BrokerTarget;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly redis: RedisClients;
}

/** A room event's excluded connection when this node owns it: every other node delivers to all. */
function localExcept(except: string, nodeId: string): string | undefined {
  return except !== '' && nodeOfConnection(except) === nodeId ? except : undefined;
}

/** A frame from another node (or a publisher), handed on as it came. */
function receive(frame: Frame, target: BrokerTarget, metrics: Metrics, nodeId: string): void {
  switch (frame.kind) {
    case 'r':
      target.deliver(frame.target, frame.payload, localExcept(frame.except, nodeId));
      metrics.crossNodeLatency((Date.now() - frame.sentAt) / 1000);
      return;
    case 's':
      target.deliverSequenced(frame.target, frame.epoch, frame.offset, frame.payload, localExcept(frame.except, nodeId));
      metrics.crossNodeLatency((Date.now() - frame.sentAt) / 1000);
      return;
    case 'c':
      return target.deliverToConnection(frame.target, frame.payload);
    case 'd': {
      const disconnect = decodeDisconnect(frame.payload);
      if (disconnect === undefined) return metrics.brokerFrameDropped('malformed');
      return target.disconnectUser(frame.target, disconnect.code, disconnect.reason);
    }
    case 'a': {
      const change = decodeAccess(frame.target, frame.payload);
      if (change === undefined) return metrics.brokerFrameDropped('malformed');
      return target.changeAccess(change);
    }
    case 'v': {
      const rule = decodeRevocation(frame.payload.toString('utf8'));
      const expiresAt = Number(frame.target);
      if (rule === undefined || !Number.isSafeInteger(expiresAt)) return metrics.brokerFrameDropped('malformed');
      return target.revoke({ rule, expiresAt });
    }
    case 'f':
      return target.forwarded?.(frame.target, frame.payload);
    case 'p':
      return; // another node's probe on a shared channel: nothing to do
  }
}

/**
 * Publishes a node's frames: each resolves with how many subscribers Redis handed it to (0: nobody
 * listens on the channel), or -1 when Redis did not take it (never rejects; a dropped frame is
 * counted). At most MAX_PENDING_PUBLISHES wait for Redis's reply; `failed`: a PUBLISH on that channel failed.
 */
function frameSender(redis: RedisClients, metrics: Metrics, nodeId: string, failed: (channel: string) => void) {
  let pending = 0;
  return (channel: string, kind: FrameKind, frameTarget: string, payload: string, except?: string): Promise<number> => {
    if (redis.command.status !== 'ready') return dropped(metrics, 'down');
    if (pending >= MAX_PENDING_PUBLISHES) return dropped(metrics, 'backlog');
    pending += 1;
    return redis.publish(channel, encodeFrame(nodeId, kind, frameTarget, payload, except)).then(
      (receivers) => ((pending -= 1), receivers),
      () => {
        pending -= 1;
        failed(channel);
        return dropped(metrics, 'error');
      },
    );
  };
}

/** A frame not handed to Redis: counted, and answered -1 (no receivers count) to whoever waits for it. */
function dropped(metrics: Metrics, reason: 'down' | 'backlog' | 'error'): Promise<number> {
  metrics.brokerPublishError(reason);
  return Promise.resolve(-1);
}

/** A client send's idempotency record, written in the same step as its publish (send-keys.ts). */
export interface SendRecord {
  /** The record's name after the room's hash tag: the record lives in the room channel's slot. */
  readonly name: string;
  readonly value: string;
  readonly ttlMs: number;
  /** This send holds the record's claim (made before the publish proxy was asked). */
  readonly claimed: boolean;
}

export interface RedisBroker extends Broker {
  /** The key of a record about `room`, in the room channel's slot (a script may write both). */
  recordKey(room: string, name: string): string;
  /**
   * Publishes to a plain room and writes its record in one step, unless the record holds a result
   * (resolves with it: a repeat) or another send's claim (resolves ''); resolves undefined once
   * published, after the local members got it. Rejects when Redis cannot be reached.
   */
  publishRecorded(room: string, payload: string, record: SendRecord): Promise<string | undefined>;
}

export function createRedisBroker(deps: RedisBrokerDeps): RedisBroker {
  return { ...createBroker(deps), ...sendRecords(deps) };
}

/** Client sends' idempotency records, each in its room channel's slot and written with the publish. */
function sendRecords({ config, target, redis }: RedisBrokerDeps): Pick<RedisBroker, 'recordKey' | 'publishRecorded'> {
  const { nodeId } = config;
  const channels = channelsOf(config.redis!.prefix, nodeId);
  const recordKey = (room: string, name: string): string => `${config.redis!.prefix}{${tagFor(slotOf(channels.room(room)))}}${name}`;
  return {
    recordKey,
    async publishRecorded(room, payload, record) {
      if (redis.command.status !== 'ready') throw new Error('redis unreachable');
      const frame = encodeFrame(nodeId, 'r', room, payload);
      const publishCommand = redis.mode === 'cluster' ? 'SPUBLISH' : 'PUBLISH';
      const args = [record.value, record.ttlMs, record.claimed ? 1 : 0, channels.room(room), frame, publishCommand];
      const found = (await runScript(redis.command, 'publish-recorded', [recordKey(room, record.name)], args)) as string | null;
      if (found !== null) return found;
      target.deliver(room, payload);
      return undefined;
    },
  };
}

function createBroker({ config, target, log, metrics, redis }: RedisBrokerDeps): Broker {
  const settings = config.redis!;
  const nodeId = config.nodeId;
  const channels = channelsOf(settings.prefix, nodeId);
  const { command } = redis;
  const lingering = new Map<string, NodeJS.Timeout>();
  let up = false;
  let everUp = false;
  let unreachableLogged = false;
  let closed = false;

  metrics.brokerUp(false); // up only once Redis has confirmed this node's subscriptions

  const setUp = (next: boolean, why: string, fields: object): void => {
    if (next === up) return;
    up = next;
    metrics.brokerUp(next);
    if (!next) return void log.warn({ event: 'broker_down', reason: why, ...fields }, 'broker down: serving local connections only');
    if (everUp) metrics.brokerReconnect();
    everUp = true;
    log.info({ event: 'broker_up', subscriptions: subscriptions.confirmedRooms(), ...(redis.mode === 'cluster' && { shards: [...subscriptions.links()].length }) }, 'broker up');
  };
  /** Up while the command connection is ready and every subscriber link has resubscribed. */
  const refreshState = (why: string, state?: LinkState): void => {
    // Never up yet: say once that Redis cannot be reached (a wrong REDIS_URL, Redis not started).
    if (!everUp && !unreachableLogged && command.status !== 'ready' && command.status !== 'connecting' && command.status !== 'connect') {
      unreachableLogged = true;
      log.warn({ event: 'broker_down', reason: 'redis unreachable at start' }, 'broker down: serving local connections only');
    }
    setUp(subscriptions.allUp() && command.status === 'ready', why, state === undefined ? {} : shardOf(redis, state));
  };

  const deliver = frameSender(redis, metrics, nodeId, (channel) => {
    // A failing command link may be stalled: probe the link of that server now instead of waiting for idleness.
    const state = subscriptions.stateOf(channel);
    if (state !== undefined) state.lastReceived = 0;
  });
  /** Resolves whether Redis took the frame. */
  const send = (...frame: Parameters<typeof deliver>): Promise<boolean> => deliver(...frame).then((receivers) => receivers >= 0);

  const roomPrefix = channels.room('');
  const subscriptions = createSubscriptions({
    redis,
    own: channels.own,
    control: channels.control,
    log,
    metrics,
    changed: refreshState,
    confirmed(list) {
      for (const channel of list) if (channel.startsWith(roomPrefix)) target.subscribed(channel.slice(roomPrefix.length));
    },
    received(state, message) {
      state.lastReceived = Date.now();
      const frame = decodeFrame(message);
      if (frame === undefined) return metrics.brokerFrameDropped('malformed');
      // Our own echo: already delivered locally, but for sequenced events, which every node takes from Redis.
      if (frame.origin !== nodeId || frame.kind === 's') receive(frame, target, metrics, nodeId);
      else if (frame.kind === 'p') probeReturned(state, frame.target);
    },
  });
  command.on('ready', () => refreshState('command'));
  command.on('close', () => refreshState('command connection lost'));
  const probe = startProbe({
    links: subscriptions.links,
    interval: settings.probeInterval,
    timeout: settings.probeTimeout,
    commandReady: () => command.status === 'ready',
    send: (channel, nonce) => send(channel, 'p', nonce, ''),
    lost: (state) => subscriptions.lost(state, 'subscriber connection lost'),
    cluster: redis.mode === 'cluster',
    metrics,
    log,
  });

  /** The last local member left: the channel is dropped after REDIS_UNSUBSCRIBE_DELAY. */
  const linger = (room: string): void => {
    const drop = (): void => {
      lingering.delete(room);
      subscriptions.unwant(channels.room(room));
    };
    if (settings.unsubscribeDelay === 0) return drop();
    const timer = setTimeout(drop, settings.unsubscribeDelay * 1000);
    timer.unref();
    lingering.set(room, timer);
  };

  return {
    kind: 'redis',
    publish(room, payload, except) {
      if (closed) return;
      target.deliver(room, payload, except === undefined ? undefined : localExcept(except, nodeId));
      send(channels.room(room), 'r', room, payload, except);
    },
    relay: (room, payload) => void (closed || send(channels.room(room), 'r', room, payload)),
    sendToConnection(connectionId, payload) {
      if (closed) return;
      const owner = nodeOfConnection(connectionId);
      if (owner === nodeId) target.deliverToConnection(connectionId, payload);
      else if (owner !== '') send(channels.node(owner), 'c', connectionId, payload);
    },
    // To the holder's own channel, in PUBLISH order from this node; this node's own sessions at once.
    // Taken only when the holder heard it: a node that has not subscribed its own channel yet (just
    // started) or no longer (gone) would lose it silently, and the client would wait for a reply.
    forward: (sessionId, payload) => (closed ? Promise.resolve(false) : nodeOfConnection(sessionId) !== nodeId ? deliver(channels.node(nodeOfConnection(sessionId)), 'f', sessionId, payload).then((receivers) => receivers > 0) : Promise.resolve((target.forwarded?.(sessionId, payload), true))),
    disconnectUser: (userId, code, reason) => void (closed || (target.disconnectUser(userId, code, reason), send(channels.control, 'd', userId, encodeDisconnect(code, reason)))),
    // Applied here at once: in Redis before it is sent, so a node that misses the frame reads it on its reload.
    revoke: (kept) => (closed ? Promise.resolve(false) : (target.revoke(kept), send(channels.control, 'v', String(kept.expiresAt), encodeRevocation(kept.rule)))),
    // Applied here only once Redis has taken it for the other nodes: every reachable node, or none.
    async changeAccess(change) {
      if (closed || !(await send(channels.control, 'a', change.userId, encodeAccess(change)))) return false;
      target.changeAccess(change);
      return true;
    },
    subscribe(room) {
      if (closed) return;
      const timer = lingering.get(room);
      if (timer !== undefined) {
        clearTimeout(timer);
        lingering.delete(room);
      }
      const channel = channels.room(room);
      if (!subscriptions.wants(channel)) subscriptions.want(channel);
      // Still subscribed (lingering, wanted already, or its unsubscribe not sent yet): confirmed as
      // it is, after the caller's turn. An UNSUBSCRIBE in flight is undone, and confirmed, on its reply.
      if (subscriptions.isConfirmed(channel)) queueMicrotask(() => !closed && subscriptions.isConfirmed(channel) && target.subscribed(room));
    },
    unsubscribe(room) {
      if (closed || !subscriptions.wants(channels.room(room)) || lingering.has(room)) return;
      linger(room);
    },
    isUp: () => up,
    async close() {
      if (closed) return;
      closed = true;
      probe.stop();
      subscriptions.close();
      for (const timer of lingering.values()) clearTimeout(timer);
      lingering.clear();
      await redis.close();
    },
  };
}
