/**
 * The subscriber links as the broker follows them: each resubscribes everything it carries on every
 * (re)connect and is up once Redis has confirmed it all; a cluster's slot map change adds and
 * removes links and moves channels to their new owners. What is wanted, and the batching of
 * SUBSCRIBE commands, is subscriptions.ts's.
 */
import type { Logger } from '../log.js';
import { reconnectDelay } from './connections.js';
import type { LinkChange, RedisClients, SubscriberLink } from './links.js';

/** One subscriber link as the broker sees it: resubscribed and probed on its own. */
export interface LinkState {
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

/** What the links share with subscriptions.ts: the channels wanted and confirmed, and the batch. */
export interface ChannelTable {
  readonly wanted: ReadonlySet<string>;
  /** Channels Redis has confirmed subscribed, by the link that carries them now. */
  readonly carrier: Map<string, LinkState>;
  /** Channels to subscribe in the next batch. */
  readonly toSubscribe: Set<string>;
  scheduleFlush(): void;
  /** The confirmed count changed. */
  setConfirmed(): void;
  /** Redis has just confirmed these channels: a first subscribe, or a resubscribe after events may have been missed. */
  confirmed(channels: readonly string[]): void;
  isClosed(): boolean;
}

export interface LinkStatesDeps {
  readonly redis: RedisClients;
  /** The base of every link's probe channel (the node's own channel). */
  readonly own: string;
  readonly log: Logger;
  /** A link came up or went down, or the map changed: the broker looks again whether it is up. */
  readonly changed: (why: string, state?: LinkState) => void;
  /** A message arrived on a link. */
  readonly received: (state: LinkState, message: Buffer) => void;
}

export interface LinkStates {
  links(): Iterable<LinkState>;
  /** Every link is up (and there is at least one). */
  allUp(): boolean;
  /** The state of the link that carries `channel` now. */
  stateOf(channel: string): LinkState | undefined;
  /** The link's connection is gone (closed, or its probe was lost). */
  lost(state: LinkState, why: string): void;
}

/** Log fields naming the shard, in a cluster only. */
export function shardOf(redis: RedisClients, state: LinkState): { shard?: string } {
  return redis.mode === 'cluster' ? { shard: state.link.name } : {};
}

/** Listens to a link's connection; `detach` stops listening (its master left the cluster). */
function watchLink(link: SubscriberLink, probeChannel: string, on: { ready(): void; close(): void; message(channel: Buffer, message: Buffer): void }): LinkState {
  link.client.on('ready', on.ready);
  link.client.on('close', on.close);
  link.client.on(link.messageEvent, on.message);
  return {
    link,
    up: false,
    generation: 0,
    resubscribeFailures: 0,
    probeChannel,
    lastReceived: Date.now(),
    probe: undefined,
    removed: false,
    detach() {
      link.client.off('ready', on.ready);
      link.client.off('close', on.close);
      link.client.off(link.messageEvent, on.message);
    },
  };
}

export function followLinks(table: ChannelTable, { redis, own, log, changed, received }: LinkStatesDeps): LinkStates {
  const { subscribers } = redis;
  const { wanted, carrier, toSubscribe } = table;
  const states = new Map<SubscriberLink, LinkState>();
  const stateOf = (channel: string): LinkState | undefined => {
    const link = subscribers.linkFor(channel);
    return link === undefined ? undefined : states.get(link);
  };
  const forget = (state: LinkState): void => {
    for (const [channel, s] of carrier) if (s === state) carrier.delete(channel);
  };

  /** Subscribes everything the link carries now; the link is up once Redis has confirmed it all. */
  function resubscribe(state: LinkState): void {
    const { link } = state;
    const current = state.generation;
    const probeChannel = link.probeChannel(own);
    const mine = [...wanted].filter((c) => subscribers.linkFor(c) === link);
    link.subscribe([...new Set([probeChannel, ...mine])]).then(
      () => {
        if (current !== state.generation || state.removed) return;
        state.resubscribeFailures = 0;
        const confirmed = mine.filter((channel) => wanted.has(channel) && subscribers.linkFor(channel) === link);
        for (const channel of confirmed) {
          carrier.set(channel, state);
          toSubscribe.delete(channel);
        }
        table.setConfirmed();
        table.confirmed(confirmed);
        Object.assign(state, { up: true, probeChannel, lastReceived: Date.now(), probe: undefined });
        changed('subscriber');
        // Channels wanted while the resubscribe was in flight.
        for (const channel of wanted) if (!carrier.has(channel) && subscribers.linkFor(channel) === link) toSubscribe.add(channel);
        if (toSubscribe.size > 0) table.scheduleFlush();
      },
      (err: unknown) => {
        if (current !== state.generation || state.removed) return;
        state.resubscribeFailures += 1;
        if (state.resubscribeFailures === 1) log.warn({ err, ...shardOf(redis, state) }, 'resubscribe failed; reconnecting the subscriber with backoff');
        setTimeout(() => {
          if (!table.isClosed() && !state.removed && current === state.generation) link.client.disconnect(true);
        }, reconnectDelay(state.resubscribeFailures)).unref();
      },
    );
  }

  function lost(state: LinkState, why: string): void {
    state.generation += 1;
    state.up = false;
    state.probe = undefined;
    forget(state);
    table.setConfirmed();
    changed(why, state);
  }

  function attach(link: SubscriberLink): void {
    const state: LinkState = watchLink(link, link.probeChannel(own), {
      ready: () => resubscribe(state),
      close: () => lost(state, 'subscriber connection lost'),
      message: (_channel, message) => received(state, message),
    });
    states.set(link, state);
    if (link.client.status === 'ready') resubscribe(state);
  }

  /** The cluster's slot map changed: follow new and removed masters, move channels to their new owners. */
  function relink(change: LinkChange): void {
    if (table.isClosed()) return;
    for (const link of change.removed) {
      const state = states.get(link);
      if (state === undefined) continue;
      state.removed = true;
      state.detach();
      states.delete(link);
      forget(state);
    }
    for (const link of change.added) attach(link);
    for (const [channel, state] of carrier) if (subscribers.linkFor(channel) !== state.link) carrier.delete(channel);
    for (const channel of wanted) if (!carrier.has(channel)) toSubscribe.add(channel);
    table.setConfirmed();
    changed('shard map changed');
    if (toSubscribe.size > 0) table.scheduleFlush();
  }

  for (const link of subscribers.all()) attach(link);
  subscribers.onChange(relink);

  return {
    links: () => states.values(),
    allUp: () => states.size > 0 && [...states.values()].every((state) => state.up),
    stateOf,
    lost,
  };
}
