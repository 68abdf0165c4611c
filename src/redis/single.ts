/**
 * One server (REDIS_URL) or a Sentinel-managed master (REDIS_SENTINELS): a command connection and
 * one subscriber link that carries every channel.
 */
import { quit, standaloneOrSentinel, type StandaloneTopology } from './connections.js';
import type { RedisClients, SubscriberLink } from './links.js';
import { inChunks } from './slots.js';

export function singleClients(topology: StandaloneTopology, names: { command: string; subscriber: string }): RedisClients {
  const command = standaloneOrSentinel(topology, names.command, false);
  const subscriber = standaloneOrSentinel(topology, names.subscriber, true);
  for (const client of [command, subscriber]) client.on('error', () => {}); // state changes are logged by the broker
  const link: SubscriberLink = {
    name: 'main',
    client: subscriber,
    messageEvent: 'messageBuffer',
    probeChannel: (base) => base,
    async subscribe(channels) {
      for (const chunk of inChunks(channels)) await subscriber.subscribe(...chunk);
    },
    async unsubscribe(channels) {
      for (const chunk of inChunks(channels)) await subscriber.unsubscribe(...chunk);
    },
    rebuild() {
      subscriber.disconnect(true);
      command.disconnect(true);
    },
  };
  return {
    mode: topology.mode,
    command,
    subscribers: { all: () => [link], linkFor: () => link, onChange() {} },
    publish: (channel, message) => command.publish(channel, message),
    async close() {
      await Promise.all([quit(command), quit(subscriber)]);
    },
  };
}
