/**
 * Which channels this node wants subscribed, and the SUBSCRIBE and UNSUBSCRIBE commands that follow:
 * batched per link within a few milliseconds, confirmed by Redis, retried with backoff. The links
 * themselves (resubscribe on reconnect, slot map changes) are link-states.ts's.
 */
import type { Metrics } from '../metrics.js';
import { reconnectDelay } from './connections.js';
import { followLinks, shardOf, type ChannelTable, type LinkState, type LinkStates, type LinkStatesDeps } from './link-states.js';

/** Joins within this window share one SUBSCRIBE round trip. */
const FLUSH_DELAY_MS = 5;

export interface SubscriptionsDeps extends LinkStatesDeps {
  /** The control channel: always wanted, like the node's own. */
  readonly control: string;
  readonly metrics: Metrics;
  /** Redis has confirmed these channels (ChannelTable.confirmed). */
  readonly confirmed: (channels: readonly string[]) => void;
}

export interface Subscriptions extends LinkStates {
  want(channel: string): void;
  unwant(channel: string): void;
  wants(channel: string): boolean;
  /** Redis has confirmed the channel on the link that carries it now. */
  isConfirmed(channel: string): boolean;
  /** Room channels Redis has confirmed. */
  confirmedRooms(): number;
  close(): void;
}

/** `channels` grouped by the link state `stateOf` gives; channels without one are left out. */
function byLink(channels: Iterable<string>, stateOf: (channel: string) => LinkState | undefined): Map<LinkState, string[]> {
  const groups = new Map<LinkState, string[]>();
  for (const channel of channels) {
    const state = stateOf(channel);
    // A link that is not up subscribes everything it carries once it is.
    if (state === undefined || !state.up) continue;
    const list = groups.get(state);
    if (list === undefined) groups.set(state, [channel]);
    else list.push(channel);
  }
  return groups;
}

export function createSubscriptions(deps: SubscriptionsDeps): Subscriptions {
  const { redis, own, control, log, metrics } = deps;
  const { subscribers } = redis;
  const fixed = [own, control];
  /** Channels the node wants subscribed: its own, the control channel and the wanted rooms'. */
  const wanted = new Set<string>(fixed);
  /** Channels Redis has confirmed subscribed, by the link that carries them now. */
  const carrier = new Map<string, LinkState>();
  const toSubscribe = new Set<string>();
  const toUnsubscribe = new Set<string>();
  let flushTimer: NodeJS.Timeout | undefined;
  let subscribeFailures = 0;
  let closed = false;

  const confirmedRooms = (): number => carrier.size - fixed.filter((c) => carrier.has(c)).length;
  const setConfirmed = (): void => metrics.brokerSubscriptions(confirmedRooms());
  const carries = (state: LinkState, channel: string): boolean => wanted.has(channel) && subscribers.linkFor(channel) === state.link;
  const scheduleFlush = (): void => {
    flushTimer ??= setTimeout(flush, FLUSH_DELAY_MS);
  };

  function subscribeOn(state: LinkState, list: string[]): void {
    const current = state.generation;
    state.link.subscribe(list).then(
      () => {
        if (current !== state.generation || state.removed) return;
        subscribeFailures = 0;
        const confirmed = list.filter((channel) => carries(state, channel));
        for (const channel of confirmed) carrier.set(channel, state);
        setConfirmed();
        deps.confirmed(confirmed);
      },
      (err: unknown) => {
        if (current !== state.generation || state.removed || closed) return;
        subscribeFailures += 1;
        if (subscribeFailures === 1) log.warn({ err, channels: list.length, ...shardOf(redis, state) }, 'subscribe failed; retrying with backoff');
        for (const channel of list) toSubscribe.add(channel);
        setTimeout(() => {
          if (!closed) scheduleFlush();
        }, reconnectDelay(subscribeFailures)).unref();
      },
    );
  }

  function unsubscribeOn(state: LinkState, list: string[]): void {
    state.link.unsubscribe(list).then(
      () => {
        for (const channel of list) {
          if (carrier.get(channel) !== state) continue;
          carrier.delete(channel);
          // Wanted again while the UNSUBSCRIBE was in flight: Redis has dropped it, so subscribe again.
          if (wanted.has(channel)) toSubscribe.add(channel);
        }
        setConfirmed();
        if (toSubscribe.size > 0) scheduleFlush();
      },
      () => {},
    );
  }

  function flush(): void {
    flushTimer = undefined;
    // A channel whose slot has no known master waits for the next map change.
    const subs = byLink([...toSubscribe].filter((c) => wanted.has(c) && !carrier.has(c)), stateOf);
    toSubscribe.clear();
    // Nothing is subscribed on a connection that is gone.
    const unsubs = byLink([...toUnsubscribe].filter((c) => !wanted.has(c)), (c) => carrier.get(c) ?? stateOf(c));
    toUnsubscribe.clear();
    for (const [state, list] of subs) subscribeOn(state, list);
    for (const [state, list] of unsubs) unsubscribeOn(state, list);
  }

  const table: ChannelTable = { wanted, carrier, toSubscribe, scheduleFlush, setConfirmed, confirmed: deps.confirmed, isClosed: () => closed };
  const links = followLinks(table, deps);
  const { stateOf } = links;

  return {
    ...links,
    want(channel) {
      wanted.add(channel);
      toUnsubscribe.delete(channel);
      toSubscribe.add(channel);
      scheduleFlush();
    },
    unwant(channel) {
      wanted.delete(channel);
      toSubscribe.delete(channel);
      toUnsubscribe.add(channel);
      scheduleFlush();
    },
    wants: (channel) => wanted.has(channel),
    isConfirmed: (channel) => carrier.has(channel),
    confirmedRooms,
    close() {
      closed = true;
      if (flushTimer) clearTimeout(flushTimer);
    },
  };
}
