/**
 * The subscriber side of a Redis Cluster: one plain connection per master, keyed by its address
 * and built from the command client's slot map (refreshed every second and after MOVED). A room
 * channel is SSUBSCRIBEd on the connection of the master that owns its slot.
 *
 * Why not ioredis' `shardedSubscribers`: its subscriber group keeps state across disconnects and
 * fails after a stop (ioredis #1981), and it gives no per-shard readiness, so one failed shard
 * could only be handled by rebuilding every shard. Here each master is a link the broker
 * resubscribes and probes on its own.
 *
 * Slot changes: when the map changes, links of new masters are created, links of nodes that are no
 * longer masters are removed (their rooms move to the new owners), and a master that lost slots
 * (resharding) is reconnected. Redis drops shard channels of a slot that moves away with an
 * unsolicited SUNSUBSCRIBE, which ioredis takes for the reply to a pending command; a clean
 * connection is the only state both sides agree on.
 */
import calculateSlot from 'cluster-key-slot';
import { Redis, type Cluster, type RedisOptions } from 'ioredis';
import type { LinkChange, SubscriberLink, SubscriberLinks } from './redis.js';

const SLOTS = 16384;
/** Channels per SSUBSCRIBE: one command carries the channels of one slot. */
const SUBSCRIBE_CHUNK = 1000;

/** A hash tag for every slot, found once by search (about 180,000 hashes, a few ms). */
let tagOfSlot: string[] | undefined;
function tagFor(slot: number): string {
  if (tagOfSlot === undefined) {
    const tags: string[] = new Array<string>(SLOTS);
    let found = 0;
    for (let i = 0; found < SLOTS; i++) {
      const s = calculateSlot(`p${i}`);
      if (tags[s] === undefined) {
        tags[s] = `p${i}`;
        found += 1;
      }
    }
    tagOfSlot = tags;
  }
  return tagOfSlot[slot]!;
}

/** Channels grouped by slot, in chunks: a cluster refuses one SSUBSCRIBE over several slots. */
function bySlot(channels: readonly string[]): string[][] {
  const groups = new Map<number, string[]>();
  for (const channel of channels) {
    const slot = calculateSlot(channel);
    const group = groups.get(slot);
    if (group === undefined) groups.set(slot, [channel]);
    else group.push(channel);
  }
  const chunks: string[][] = [];
  for (const group of groups.values()) for (let i = 0; i < group.length; i += SUBSCRIBE_CHUNK) chunks.push(group.slice(i, i + SUBSCRIBE_CHUNK));
  return chunks;
}

/** `options`: those of every subscriber connection (connection name, timeouts, backoff). */
export function createShardLinks(command: Cluster, options: RedisOptions): SubscriberLinks & { close(): Promise<void> } {
  const links = new Map<string, SubscriberLink>();
  /** Slot -> master address, as of the last map the links were built from. */
  let owners: Array<string | undefined> = new Array<string | undefined>(SLOTS);
  const listeners: Array<(change: LinkChange) => void> = [];
  let closed = false;

  const makeLink = (key: string): SubscriberLink => {
    const colon = key.lastIndexOf(':');
    const client = new Redis({ ...options, host: key.slice(0, colon), port: Number(key.slice(colon + 1)), autoResubscribe: false });
    client.on('error', () => {}); // state changes are logged by the broker
    // ioredis leaves an SSUBSCRIBE answered with MOVED unsettled (it times out); look at the map now.
    client.on('moved', () => void command.refreshSlotsCache());
    return {
      name: key,
      client,
      messageEvent: 'smessageBuffer',
      probeChannel(base) {
        const slot = owners.indexOf(key);
        return slot < 0 ? base : `${base}{${tagFor(slot)}}`;
      },
      async subscribe(channels) {
        await Promise.all(bySlot(channels).map((chunk) => client.ssubscribe(...chunk)));
      },
      async unsubscribe(channels) {
        await Promise.all(bySlot(channels).map((chunk) => client.sunsubscribe(...chunk)));
      },
      rebuild() {
        client.disconnect(true);
        // The command connection to the same master: publishes written to a stalled link must
        // not reach Redis after it wakes. The cluster reconnects it on its next map refresh.
        for (const node of command.nodes('all')) if (`${node.options.host}:${node.options.port}` === key) node.disconnect();
      },
    };
  };

  const sync = (): void => {
    if (closed) return;
    const next = new Array<string | undefined>(SLOTS);
    const masters = new Set<string>();
    /** Masters that served a slot that another master (or none) serves now. */
    const lostSlots = new Set<string>();
    let moved = false;
    for (let slot = 0; slot < SLOTS; slot++) {
      const owner = command.slots[slot]?.[0];
      next[slot] = owner;
      if (owner !== undefined) masters.add(owner);
      const before = owners[slot];
      if (before !== owner) {
        moved = true;
        if (before !== undefined) lostSlots.add(before);
      }
    }
    if (!moved) return;
    owners = next;
    const added: SubscriberLink[] = [];
    const removed: SubscriberLink[] = [];
    for (const key of masters) {
      if (links.has(key)) continue;
      const link = makeLink(key);
      links.set(key, link);
      added.push(link);
    }
    for (const [key, link] of links) {
      if (masters.has(key)) continue;
      links.delete(key);
      removed.push(link);
    }
    for (const listener of listeners) listener({ added, removed });
    for (const link of removed) link.client.disconnect();
    for (const key of lostSlots) links.get(key)?.client.disconnect(true);
  };
  command.on('refresh', sync);

  return {
    all: () => [...links.values()],
    linkFor(channel) {
      const owner = owners[calculateSlot(channel)];
      return owner === undefined ? undefined : links.get(owner);
    },
    onChange(listener) {
      listeners.push(listener);
    },
    async close() {
      closed = true;
      command.off('refresh', sync);
      const all = [...links.values()];
      links.clear();
      await Promise.all(all.map((l) => l.client.quit().catch(() => l.client.disconnect())));
    },
  };
}
