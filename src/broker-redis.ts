/**
 * The Redis broker: nodes joined by Redis pub/sub with one channel per room, subscribed only while
 * the node has local members (targeted fan-out). The origin node delivers locally at once and
 * ignores its own echo. See README "Redis" for the key and channel layout.
 */
import { randomBytes } from 'node:crypto';
import type { Broker, BrokerDeps } from './broker.js';
import { decodeFrame, encodeFrame, type Frame, type FrameKind } from './broker-frame.js';
import { reconnectDelay, type RedisClients } from './redis.js';

/** Publishes waiting for Redis beyond this are dropped and counted, so nothing grows without bound. */
const MAX_PENDING_PUBLISHES = 10_000;
/** Joins within this window share one SUBSCRIBE round trip. */
const FLUSH_DELAY_MS = 5;
const PROBE_TICK_MS = 250;

export function channelsOf(prefix: string, nodeId: string) {
  return {
    room: (room: string) => `${prefix}room:${room}`,
    node: (id: string) => `${prefix}node:${id}`,
    control: `${prefix}control`,
    own: `${prefix}node:${nodeId}`,
  };
}

/** The node that owns a connection id `<node id>.<sequence>`. */
export function nodeOfConnection(connectionId: string): string {
  const dot = connectionId.indexOf('.');
  return dot < 0 ? '' : connectionId.slice(0, dot);
}

export function createRedisBroker({ config, target, log, metrics, redis }: BrokerDeps & { redis: RedisClients }): Broker {
  const settings = config.redis!;
  const nodeId = config.nodeId;
  const channels = channelsOf(settings.prefix, nodeId);
  /** Every probe crosses all of these: one per shard subscriber in a cluster. */
  const probeChannels = redis.probeChannels(channels.own);
  const { command, subscriber } = redis;

  /** Rooms the node wants events for: local members now, or lingering after the last left. */
  const wanted = new Set<string>();
  /** Rooms Redis has confirmed subscribed on the current subscriber connection. */
  const confirmed = new Set<string>();
  const lingering = new Map<string, NodeJS.Timeout>();
  const toSubscribe = new Set<string>();
  const toUnsubscribe = new Set<string>();
  let flushTimer: NodeJS.Timeout | undefined;
  let subscriberUp = false;
  /** Bumped whenever the subscriber connection is lost: replies from an older connection are ignored. */
  let generation = 0;
  let resubscribeFailures = 0;
  let up = false;
  let everUp = false;
  let pending = 0;
  let lastReceived = Date.now();
  let lastProbeAt = Date.now();
  /** Probe frames sent and not yet back, by target (`<nonce>.<channel index>`). */
  let probe: { outstanding: Set<string>; sentAt: number } | undefined;
  let closed = false;

  metrics.brokerUp(false); // up only once Redis has confirmed this node's subscriptions

  const setUp = (next: boolean, why: string): void => {
    if (next === up) return;
    up = next;
    metrics.brokerUp(next);
    if (next) {
      if (everUp) metrics.brokerReconnect();
      everUp = true;
      log.info({ event: 'broker_up', subscriptions: confirmed.size }, 'broker up');
    } else {
      log.warn({ event: 'broker_down', reason: why }, 'broker down: serving local connections only');
    }
  };
  let unreachableLogged = false;
  const refreshState = (why: string): void => {
    // Never up yet: say once that Redis cannot be reached (a wrong REDIS_URL, Redis not started).
    if (!everUp && !unreachableLogged && command.status !== 'ready' && command.status !== 'connecting' && command.status !== 'connect') {
      unreachableLogged = true;
      log.warn({ event: 'broker_down', reason: 'redis unreachable at start' }, 'broker down: serving local connections only');
    }
    setUp(subscriberUp && command.status === 'ready', why);
  };
  const setConfirmed = (): void => metrics.brokerSubscriptions(confirmed.size);

  const send = (channel: string, kind: FrameKind, frameTarget: string, payload: string): void => {
    if (command.status !== 'ready') return metrics.brokerPublishError('down');
    if (pending >= MAX_PENDING_PUBLISHES) return metrics.brokerPublishError('backlog');
    pending += 1;
    redis.publish(channel, encodeFrame(nodeId, kind, frameTarget, payload)).then(
      () => {
        pending -= 1;
      },
      () => {
        pending -= 1;
        metrics.brokerPublishError('error');
        // A failing command link may be stalled: probe it now instead of waiting for idleness.
        lastReceived = 0;
      },
    );
  };

  // Subscriptions: batched, confirmed, restored on every (re)connect.
  const subscribeChannels = (rooms: string[], extra: string[] = []): Promise<void> => redis.subscribe([...extra, ...rooms.map(channels.room)]);
  const flush = (): void => {
    flushTimer = undefined;
    if (!subscriberUp) return; // `ready` subscribes everything wanted
    const subs = [...toSubscribe];
    const unsubs = [...toUnsubscribe];
    toSubscribe.clear();
    toUnsubscribe.clear();
    if (subs.length > 0) {
      const current = generation;
      subscribeChannels(subs).then(
        () => {
          if (current !== generation) return;
          for (const room of subs) if (wanted.has(room)) confirmed.add(room);
          setConfirmed();
        },
        (err: unknown) => log.warn({ err, rooms: subs.length }, 'subscribe failed; retried on reconnect'),
      );
    }
    if (unsubs.length > 0) {
      redis.unsubscribe(unsubs.map(channels.room)).then(
        () => {
          for (const room of unsubs) if (!wanted.has(room)) confirmed.delete(room);
          setConfirmed();
        },
        () => {},
      );
    }
  };
  const scheduleFlush = (): void => {
    flushTimer ??= setTimeout(flush, FLUSH_DELAY_MS);
  };

  subscriber.on('ready', () => {
    const rooms = [...wanted];
    const current = generation;
    subscribeChannels(rooms, [...new Set([channels.own, channels.control, ...probeChannels])]).then(
      () => {
        if (current !== generation) return;
        resubscribeFailures = 0;
        confirmed.clear();
        for (const room of rooms) if (wanted.has(room)) confirmed.add(room);
        setConfirmed();
        toSubscribe.clear();
        subscriberUp = true;
        lastReceived = Date.now();
        probe = undefined;
        refreshState('subscriber');
        // Rooms wanted while the resubscribe was in flight.
        for (const room of wanted) if (!confirmed.has(room)) toSubscribe.add(room);
        if (toSubscribe.size > 0) scheduleFlush();
      },
      (err: unknown) => {
        if (current !== generation) return;
        resubscribeFailures += 1;
        if (resubscribeFailures === 1) log.warn({ err }, 'resubscribe failed; reconnecting the subscriber with backoff');
        setTimeout(() => {
          if (!closed && current === generation) subscriber.disconnect(true);
        }, reconnectDelay(resubscribeFailures)).unref();
      },
    );
  });
  const subscriberLost = (): void => {
    generation += 1;
    subscriberUp = false;
    confirmed.clear();
    setConfirmed();
    refreshState('subscriber connection lost');
  };
  subscriber.on('close', subscriberLost);
  command.on('ready', () => refreshState('command'));
  command.on('close', () => refreshState('command connection lost'));

  subscriber.on(redis.messageEvent, (_channel: Buffer, message: Buffer) => {
    lastReceived = Date.now();
    const frame = decodeFrame(message);
    if (frame === undefined) return metrics.brokerFrameDropped('malformed');
    if (frame.origin === nodeId) {
      if (frame.kind === 'p' && probe?.outstanding.delete(frame.target) && probe.outstanding.size === 0) probe = undefined;
      return; // our own echo: already delivered locally
    }
    receive(frame);
  });

  const receive = (frame: Frame): void => {
    switch (frame.kind) {
      case 'r':
        target.deliver(frame.target, frame.payload);
        metrics.crossNodeLatency((Date.now() - frame.sentAt) / 1000);
        return;
      case 'c':
        return target.deliverToConnection(frame.target, frame.payload);
      case 'd': {
        const text = frame.payload.toString('utf8');
        const space = text.indexOf(' ');
        const code = Number(space < 0 ? text : text.slice(0, space));
        if (!Number.isInteger(code)) return metrics.brokerFrameDropped('malformed');
        return target.disconnectUser(frame.target, code, space < 0 ? '' : text.slice(space + 1));
      }
      case 'p':
        return; // another node's probe on a shared channel: nothing to do
    }
  };

  // Liveness: an idle subscriber is asked to carry a probe from this node to itself.
  const probeTimer = setInterval(() => {
    const now = Date.now();
    if (probe !== undefined && now - probe.sentAt > settings.probeTimeout * 1000) {
      probe = undefined;
      metrics.probeFailure();
      log.warn({ event: 'broker_probe_failed', timeout_s: settings.probeTimeout }, 'subscriber probe lost: rebuilding Redis connections');
      subscriberLost();
      subscriber.disconnect(true);
      command.disconnect(true);
      return;
    }
    if (!subscriberUp || probe !== undefined || command.status !== 'ready') return;
    // Probes travel on the command link too, so a stalled command link fails them as well. With
    // several shard subscribers, traffic on one says nothing about another: probe on schedule.
    const quiet = probeChannels.length > 1 ? now - lastProbeAt : now - lastReceived;
    if (quiet < settings.probeInterval * 1000) return;
    lastProbeAt = now;
    const nonce = randomBytes(6).toString('hex');
    probe = { outstanding: new Set(probeChannels.map((_, i) => `${nonce}.${i}`)), sentAt: now };
    probeChannels.forEach((channel, i) => send(channel, 'p', `${nonce}.${i}`, ''));
  }, PROBE_TICK_MS);
  probeTimer.unref();

  return {
    kind: 'redis',
    publish(room, payload) {
      if (closed) return;
      target.deliver(room, payload);
      send(channels.room(room), 'r', room, payload);
    },
    sendToConnection(connectionId, payload) {
      if (closed) return;
      const owner = nodeOfConnection(connectionId);
      if (owner === nodeId) target.deliverToConnection(connectionId, payload);
      else if (owner !== '') send(channels.node(owner), 'c', connectionId, payload);
    },
    disconnectUser(userId, code, reason) {
      if (closed) return;
      target.disconnectUser(userId, code, reason);
      send(channels.control, 'd', userId, `${code} ${reason}`);
    },
    subscribe(room) {
      if (closed) return;
      const timer = lingering.get(room);
      if (timer !== undefined) {
        clearTimeout(timer);
        lingering.delete(room);
        return;
      }
      if (wanted.has(room)) return;
      wanted.add(room);
      toUnsubscribe.delete(room);
      toSubscribe.add(room);
      scheduleFlush();
    },
    unsubscribe(room) {
      if (closed || !wanted.has(room) || lingering.has(room)) return;
      const drop = (): void => {
        lingering.delete(room);
        wanted.delete(room);
        toSubscribe.delete(room);
        toUnsubscribe.add(room);
        scheduleFlush();
      };
      if (settings.unsubscribeDelay === 0) return drop();
      const timer = setTimeout(drop, settings.unsubscribeDelay * 1000);
      timer.unref();
      lingering.set(room, timer);
    },
    isUp: () => up,
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(probeTimer);
      if (flushTimer) clearTimeout(flushTimer);
      for (const timer of lingering.values()) clearTimeout(timer);
      lingering.clear();
      await redis.close();
    },
  };
}
