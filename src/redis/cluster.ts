/**
 * A Redis Cluster (REDIS_CLUSTER_NODES, sharded pub/sub). The command client routes SPUBLISH and
 * registry commands; the subscriber side is one plain connection per master, keyed by its address
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
import type { Cluster, RedisOptions } from 'ioredis';
import { commandCluster, connectionOptions, nodeConnection, quit, type ClusterTopology } from './connections.js';
import type { LinkChange, RedisClients, SubscriberLink, SubscriberLinks } from './links.js';
import { bySlot, slotOf, SLOTS, tagFor } from './slots.js';

export function clusterClients(topology: ClusterTopology, names: { command: string; subscriber: string }): RedisClients {
  const command = commandCluster(topology, names.command);
  command.on('error', () => {}); // state changes are logged by the broker
  const shards = createShardLinks(command, connectionOptions(names.subscriber));
  return {
    mode: 'cluster',
    command,
    subscribers: shards,
    // SPUBLISH answers the number of the shard's subscribers, like PUBLISH (ioredis types it unknown).
    publish: (channel, message) => command.spublish(channel, message) as Promise<number>,
    async close() {
      await Promise.all([quit(command), shards.close()]);
    },
  };
}

/** `options`: those of every subscriber connection (connection name, timeouts, backoff). */
function createShardLinks(command: Cluster, options: RedisOptions): SubscriberLinks & { close(): Promise<void> } {
  const links = new Map<string, SubscriberLink>();
  /** Slot -> master address, as of the last map the links were built from. */
  let owners: Array<string | undefined> = new Array<string | undefined>(SLOTS);
  const listeners: Array<(change: LinkChange) => void> = [];
  let closed = false;

  const makeLink = (key: string): SubscriberLink => {
    const colon = key.lastIndexOf(':');
    const client = nodeConnection(key.slice(0, colon), Number(key.slice(colon + 1)), options);
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
      const owner = owners[slotOf(channel)];
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
      await Promise.all(all.map((l) => quit(l.client)));
    },
  };
}
