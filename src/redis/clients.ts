/** The Redis connections of one node, for the configured topology. */
import type { RedisConfig } from '../config.js';
import { clusterClients } from './cluster.js';
import type { RedisClients } from './links.js';
import { singleClients } from './single.js';

export function createRedisClients(config: RedisConfig, nodeId: string): RedisClients {
  const { topology, prefix } = config;
  const names = { command: `${prefix}${nodeId}:cmd`, subscriber: `${prefix}${nodeId}:sub` };
  return topology.mode === 'cluster' ? clusterClients(topology, names) : singleClients(topology, names);
}
