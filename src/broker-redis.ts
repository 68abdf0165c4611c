/**
 * The Redis broker: nodes joined by Redis pub/sub with one channel per room, subscribed only while
 * the node has local members (targeted fan-out). The origin node delivers locally at once and
 * ignores its own echo. See README "Redis" for the key and channel layout.
 */
import { randomBytes } from 'node:crypto';
import type { Broker, BrokerDeps } from './broker.js';
import { decodeFrame, encodeFrame, type Frame, type FrameKind } from './broker-frame.js';
import { reconnectDelay, type LinkChange, type RedisClients, type SubscriberLink } from './redis.js';

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

/** One subscriber link as the broker sees it: resubscribed and probed on its own. */
interface LinkState {
  readonly link: SubscriberLink;
  /** Redis has confirmed this link's resubscribe since its last (re)connect. */
  up: boolean;
  /** Bumped whenever the connection is lost: replies from an older connection are ignored. */
  generation: number;
  resubscribeFailures: number;
  /** Where this link's probes go (a channel it carries), as of its last resubscribe. */
  probeChannel: string;
  lastReceived: number;
  /** The probe frame sent and not yet back. */
  probe: { nonce: string; sentAt: number } | undefined;
  /** The link's master is gone (cluster): its events are ignored. */
  removed: boolean;
  detach(): void;
}

export function createRedisBroker({ config, target, log, metrics, redis }: BrokerDeps & { redis: RedisClients }): Broker {
  const settings = config.redis!;
  const nodeId = config.nodeId;
  const channels = channelsOf(settings.prefix, nodeId);
  const { command, subscribers } = redis;
  /** Log fields naming the shard, in a cluster only. */
  const shardOf = (state: LinkState): { shard?: string } => (redis.mode === 'cluster' ? { shard: state.link.name } : {});

  /** Rooms the node wants events for: local members now, or lingering after the last left. */
  const wanted = new Set<string>();
  /** Channels the node wants subscribed: its own, the control channel and the wanted rooms'. */
  const fixedChannels = [channels.own, channels.control];
  const wantedChannels = new Set<string>(fixedChannels);
  /** Channels Redis has confirmed subscribed, by the link that carries them now. */
  const carrier = new Map<string, LinkState>();
  const lingering = new Map<string, NodeJS.Timeout>();
  const toSubscribe = new Set<string>();
  const toUnsubscribe = new Set<string>();
  const links = new Map<SubscriberLink, LinkState>();
  let flushTimer: NodeJS.Timeout | undefined;
  let subscribeFailures = 0;
  let up = false;
  let everUp = false;
  let pending = 0;
  let closed = false;

  metrics.brokerUp(false); // up only once Redis has confirmed this node's subscriptions

  const setUp = (next: boolean, why: string, fields: object = {}): void => {
    if (next === up) return;
    up = next;
    metrics.brokerUp(next);
    if (next) {
      if (everUp) metrics.brokerReconnect();
      everUp = true;
      log.info({ event: 'broker_up', subscriptions: roomsConfirmed(), ...(redis.mode === 'cluster' && { shards: links.size }) }, 'broker up');
    } else {
      log.warn({ event: 'broker_down', reason: why, ...fields }, 'broker down: serving local connections only');
    }
  };
  let unreachableLogged = false;
  /** Up while the command connection is ready and every subscriber link has resubscribed. */
  const refreshState = (why: string, fields?: object): void => {
    // Never up yet: say once that Redis cannot be reached (a wrong REDIS_URL, Redis not started).
    if (!everUp && !unreachableLogged && command.status !== 'ready' && command.status !== 'connecting' && command.status !== 'connect') {
      unreachableLogged = true;
      log.warn({ event: 'broker_down', reason: 'redis unreachable at start' }, 'broker down: serving local connections only');
    }
    let linksUp = links.size > 0;
    for (const state of links.values()) linksUp &&= state.up;
    setUp(linksUp && command.status === 'ready', why, fields);
  };
  const roomsConfirmed = (): number => carrier.size - fixedChannels.filter((c) => carrier.has(c)).length;
  const setConfirmed = (): void => metrics.brokerSubscriptions(roomsConfirmed());
  const stateOf = (channel: string): LinkState | undefined => {
    const link = subscribers.linkFor(channel);
    return link === undefined ? undefined : links.get(link);
  };

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
        // A failing command link may be stalled: probe the link of that server now instead of waiting for idleness.
        const state = stateOf(channel);
        if (state !== undefined) state.lastReceived = 0;
      },
    );
  };

  // Subscriptions: batched per link, confirmed, restored on every (re)connect of a link.
  const flush = (): void => {
    flushTimer = undefined;
    const subs = new Map<LinkState, string[]>();
    for (const channel of toSubscribe) {
      if (!wantedChannels.has(channel) || carrier.has(channel)) continue;
      const state = stateOf(channel);
      // A link that is not up subscribes everything it carries once it is; a channel whose slot
      // has no known master waits for the next map change.
      if (state === undefined || !state.up) continue;
      const list = subs.get(state);
      if (list === undefined) subs.set(state, [channel]);
      else list.push(channel);
    }
    toSubscribe.clear();
    for (const [state, list] of subs) {
      const current = state.generation;
      state.link.subscribe(list).then(
        () => {
          if (current !== state.generation || state.removed) return;
          subscribeFailures = 0;
          for (const channel of list) if (wantedChannels.has(channel) && subscribers.linkFor(channel) === state.link) carrier.set(channel, state);
          setConfirmed();
        },
        (err: unknown) => {
          if (current !== state.generation || state.removed || closed) return;
          subscribeFailures += 1;
          if (subscribeFailures === 1) log.warn({ err, channels: list.length, ...shardOf(state) }, 'subscribe failed; retrying with backoff');
          for (const channel of list) toSubscribe.add(channel);
          setTimeout(() => {
            if (!closed) scheduleFlush();
          }, reconnectDelay(subscribeFailures)).unref();
        },
      );
    }
    const unsubs = new Map<LinkState, string[]>();
    for (const channel of toUnsubscribe) {
      if (wantedChannels.has(channel)) continue;
      const state = carrier.get(channel) ?? stateOf(channel);
      if (state === undefined || !state.up) continue; // nothing subscribed on a connection that is gone
      const list = unsubs.get(state);
      if (list === undefined) unsubs.set(state, [channel]);
      else list.push(channel);
    }
    toUnsubscribe.clear();
    for (const [state, list] of unsubs) {
      state.link.unsubscribe(list).then(
        () => {
          for (const channel of list) if (!wantedChannels.has(channel) && carrier.get(channel) === state) carrier.delete(channel);
          setConfirmed();
        },
        () => {},
      );
    }
  };
  const scheduleFlush = (): void => {
    flushTimer ??= setTimeout(flush, FLUSH_DELAY_MS);
  };

  /** Subscribes everything the link carries now; the link is up once Redis has confirmed it all. */
  const resubscribe = (state: LinkState): void => {
    const { link } = state;
    const current = state.generation;
    const probeChannel = link.probeChannel(channels.own);
    const mine = [...wantedChannels].filter((c) => subscribers.linkFor(c) === link);
    link.subscribe([...new Set([probeChannel, ...mine])]).then(
      () => {
        if (current !== state.generation || state.removed) return;
        state.resubscribeFailures = 0;
        for (const channel of mine) {
          if (!wantedChannels.has(channel) || subscribers.linkFor(channel) !== link) continue;
          carrier.set(channel, state);
          toSubscribe.delete(channel);
        }
        setConfirmed();
        state.up = true;
        state.probeChannel = probeChannel;
        state.lastReceived = Date.now();
        state.probe = undefined;
        refreshState('subscriber');
        // Channels wanted while the resubscribe was in flight.
        for (const channel of wantedChannels) if (!carrier.has(channel) && subscribers.linkFor(channel) === link) toSubscribe.add(channel);
        if (toSubscribe.size > 0) scheduleFlush();
      },
      (err: unknown) => {
        if (current !== state.generation || state.removed) return;
        state.resubscribeFailures += 1;
        if (state.resubscribeFailures === 1) log.warn({ err, ...shardOf(state) }, 'resubscribe failed; reconnecting the subscriber with backoff');
        setTimeout(() => {
          if (!closed && !state.removed && current === state.generation) link.client.disconnect(true);
        }, reconnectDelay(state.resubscribeFailures)).unref();
      },
    );
  };

  const linkLost = (state: LinkState, why: string): void => {
    state.generation += 1;
    state.up = false;
    state.probe = undefined;
    for (const [channel, s] of carrier) if (s === state) carrier.delete(channel);
    setConfirmed();
    refreshState(why, shardOf(state));
  };

  const attach = (link: SubscriberLink): void => {
    const state: LinkState = {
      link,
      up: false,
      generation: 0,
      resubscribeFailures: 0,
      probeChannel: link.probeChannel(channels.own),
      lastReceived: Date.now(),
      probe: undefined,
      removed: false,
      detach() {
        link.client.off('ready', onReady);
        link.client.off('close', onClose);
        link.client.off(link.messageEvent, onMessage);
      },
    };
    const onReady = (): void => resubscribe(state);
    const onClose = (): void => linkLost(state, 'subscriber connection lost');
    const onMessage = (_channel: Buffer, message: Buffer): void => {
      state.lastReceived = Date.now();
      const frame = decodeFrame(message);
      if (frame === undefined) return metrics.brokerFrameDropped('malformed');
      if (frame.origin === nodeId) {
        if (frame.kind === 'p' && state.probe?.nonce === frame.target) state.probe = undefined;
        return; // our own echo: already delivered locally
      }
      receive(frame);
    };
    link.client.on('ready', onReady);
    link.client.on('close', onClose);
    link.client.on(link.messageEvent, onMessage);
    links.set(link, state);
    if (link.client.status === 'ready') resubscribe(state);
  };

  /** The cluster's slot map changed: follow new and removed masters, move channels to their new owners. */
  const relink = (change: LinkChange): void => {
    if (closed) return;
    for (const link of change.removed) {
      const state = links.get(link);
      if (state === undefined) continue;
      state.removed = true;
      state.detach();
      links.delete(link);
      for (const [channel, s] of carrier) if (s === state) carrier.delete(channel);
    }
    for (const link of change.added) attach(link);
    for (const [channel, state] of carrier) if (subscribers.linkFor(channel) !== state.link) carrier.delete(channel);
    for (const channel of wantedChannels) if (!carrier.has(channel)) toSubscribe.add(channel);
    setConfirmed();
    refreshState('shard map changed');
    if (toSubscribe.size > 0) scheduleFlush();
  };

  command.on('ready', () => refreshState('command'));
  command.on('close', () => refreshState('command connection lost'));
  for (const link of subscribers.all()) attach(link);
  subscribers.onChange(relink);

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

  // Liveness: an idle link is asked to carry a probe from this node to itself. Probes travel on the
  // command connection too, so a stalled command link to that server fails them as well.
  const probeTimer = setInterval(() => {
    const now = Date.now();
    for (const state of links.values()) {
      if (state.probe !== undefined && now - state.probe.sentAt > settings.probeTimeout * 1000) {
        state.probe = undefined;
        metrics.probeFailure();
        const what = redis.mode === 'cluster' ? "rebuilding this shard's connections" : 'rebuilding Redis connections';
        log.warn({ event: 'broker_probe_failed', timeout_s: settings.probeTimeout, ...shardOf(state) }, `subscriber probe lost: ${what}`);
        linkLost(state, 'subscriber connection lost');
        state.link.rebuild();
        continue;
      }
      if (!state.up || state.probe !== undefined || command.status !== 'ready') continue;
      if (now - state.lastReceived < settings.probeInterval * 1000) continue;
      state.probe = { nonce: randomBytes(6).toString('hex'), sentAt: now };
      send(state.probeChannel, 'p', state.probe.nonce, '');
    }
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
      const channel = channels.room(room);
      wanted.add(room);
      wantedChannels.add(channel);
      toUnsubscribe.delete(channel);
      toSubscribe.add(channel);
      scheduleFlush();
    },
    unsubscribe(room) {
      if (closed || !wanted.has(room) || lingering.has(room)) return;
      const drop = (): void => {
        const channel = channels.room(room);
        lingering.delete(room);
        wanted.delete(room);
        wantedChannels.delete(channel);
        toSubscribe.delete(channel);
        toUnsubscribe.add(channel);
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
