/**
 * The Redis Cluster and Sentinel helpers against the real things they drive. The broker suites for
 * those topologies trust these helpers to report who serves what and when a failover is over; if
 * these fail, those suites cannot be trusted either way.
 */
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uniquePrefix } from '../helpers/redis.js';
import { encodeCommand } from '../helpers/resp.js';
import { startRedisCluster, stopAllClusters, type RedisCluster } from '../helpers/redis-cluster.js';
import { startRedisSentinel, stopAllSentinels, type SentinelSetup } from '../helpers/redis-sentinel.js';

// Both topologies start several processes and wait for gossip; 2 cores may be busy.
const SETUP_TIMEOUT_MS = 60_000;
const FAILOVER_TEST_TIMEOUT_MS = 45_000;

afterAll(async () => {
  await Promise.all([stopAllClusters(), stopAllSentinels()]);
});

/** A raw RESP connection that keeps everything it receives, for pub/sub pushes. */
interface RawConnection {
  send(...args: string[]): void;
  /** Resolves once the bytes received so far contain `text`; rejects after `timeoutMs`. */
  waitFor(text: string, timeoutMs?: number): Promise<void>;
  close(): void;
}

async function rawConnection(port: number): Promise<RawConnection> {
  const socket: Socket = connect(port, '127.0.0.1');
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let received = '';
  const waiters = new Set<() => void>();
  socket.setEncoding('utf8').on('data', (chunk: string) => {
    received += chunk;
    waiters.forEach((w) => w());
  });
  return {
    send: (...args) => socket.write(encodeCommand(args)),
    waitFor: (text, timeoutMs = 2000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (!received.includes(text)) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no ${JSON.stringify(text)} from ${port} within ${timeoutMs} ms; received ${JSON.stringify(received)}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
    close: () => socket.destroy(),
  };
}

const bulk = (s: string) => `$${Buffer.byteLength(s)}\r\n${s}\r\n`;

async function clusterState(cluster: RedisCluster, port: number): Promise<string | undefined> {
  return /cluster_state:(\w+)/.exec(await cluster.command(port, 'CLUSTER', 'INFO'))?.[1];
}

describe('Redis Cluster helper', () => {
  let cluster: RedisCluster;

  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
  }, SETUP_TIMEOUT_MS);

  it('starts 3 masters and 3 replicas, one replica per master, every node in cluster_state ok', async () => {
    expect(cluster.nodes).toHaveLength(6);
    expect(new Set(cluster.nodes.map((n) => n.pid)).size).toBe(6);
    expect(cluster.seeds).toBe(cluster.nodes.map((n) => `127.0.0.1:${n.port}`).join(','));
    const masters = await cluster.masters();
    const replicas = await cluster.replicas();
    expect(masters).toHaveLength(3);
    expect(replicas).toHaveLength(3);
    expect(replicas.map((r) => r.masterPort!).sort((a, b) => a - b)).toEqual(masters.map((m) => m.port).sort((a, b) => a - b));
    for (const node of cluster.nodes) expect(await clusterState(cluster, node.port)).toBe('ok');
    for (const replica of replicas) expect(await cluster.command(replica.port, 'INFO', 'replication')).toContain('master_link_status:up');
  });

  it('routes a key to the master masterForKey names; every other master answers MOVED to it', async () => {
    const key = `${uniquePrefix()}k`;
    const owner = await cluster.masterForKey(key);
    const slot = Number(/^:(\d+)/.exec(await cluster.command(owner, 'CLUSTER', 'KEYSLOT', key))![1]);
    expect(await cluster.masterOfSlot(slot)).toBe(owner);
    expect(await cluster.command(owner, 'SET', key, 'v')).toBe('+OK\r\n');
    expect(await cluster.command(owner, 'GET', key)).toBe('$1\r\nv\r\n');
    const others = (await cluster.masters()).filter((m) => m.port !== owner);
    expect(others).toHaveLength(2);
    for (const other of others) expect(await cluster.command(other.port, 'GET', key)).toBe(`-MOVED ${slot} 127.0.0.1:${owner}\r\n`);
    // Hash tags keep one user's keys together.
    expect(await cluster.masterForKey('{user-1}:a')).toBe(await cluster.masterForKey('{user-1}:b'));
  });

  it('delivers SPUBLISH to an SSUBSCRIBE on the shard that owns the channel; another shard answers MOVED', async () => {
    const channel = `${uniquePrefix()}room`;
    const owner = await cluster.masterForKey(channel);
    const other = (await cluster.masters()).find((m) => m.port !== owner)!;
    const subscriber = await rawConnection(owner);
    try {
      subscriber.send('SSUBSCRIBE', channel);
      await subscriber.waitFor(`*3\r\n${bulk('ssubscribe')}${bulk(channel)}:1\r\n`);
      expect(await cluster.command(other.port, 'SPUBLISH', channel, 'x')).toMatch(new RegExp(`^-MOVED \\d+ 127\\.0\\.0\\.1:${owner}\\r\\n$`));
      expect(await cluster.command(owner, 'SPUBLISH', channel, 'hello')).toBe(':1\r\n');
      await subscriber.waitFor(`*3\r\n${bulk('smessage')}${bulk(channel)}${bulk('hello')}`);
    } finally {
      subscriber.close();
    }
  });

  it('fails a master over to its replica with CLUSTER FAILOVER; the keys move with it and the cluster stays ok', async () => {
    const key = `${uniquePrefix()}k`;
    const oldMaster = await cluster.masterForKey(key);
    expect(await cluster.command(oldMaster, 'SET', key, 'kept')).toBe('+OK\r\n');
    const replica = (await cluster.replicas()).find((r) => r.masterPort === oldMaster)!;

    await cluster.failover(replica.port);

    expect(await cluster.masterForKey(key)).toBe(replica.port);
    expect(await cluster.command(replica.port, 'GET', key)).toBe('$4\r\nkept\r\n');
    expect((await cluster.masters()).map((m) => m.port)).toContain(replica.port);
    expect((await cluster.replicas()).find((r) => r.port === oldMaster)?.masterPort).toBe(replica.port);
    for (const node of cluster.nodes) expect(await clusterState(cluster, node.port)).toBe('ok');
  }, FAILOVER_TEST_TIMEOUT_MS);

  it('promotes the replica of a killed master, keeping a write the replica acknowledged', async () => {
    const masters = await cluster.masters();
    const replicas = await cluster.replicas();
    const victim = masters.find((m) => replicas.some((r) => r.masterPort === m.port))!;
    const key = `${uniquePrefix()}{${await tagOn(cluster, victim.port)}}`;
    expect(await cluster.command(victim.port, 'SET', key, 'acked')).toBe('+OK\r\n');
    expect(await cluster.command(victim.port, 'WAIT', '1', '2000')).toBe(':1\r\n');

    await cluster.kill(victim.port);
    expect(cluster.nodes.find((n) => n.port === victim.port)?.alive).toBe(false);
    const promoted = await cluster.waitForPromotion(victim.port);

    expect(promoted.masterPort).toBeUndefined();
    expect(await cluster.masterForKey(key)).toBe(promoted.port);
    expect(await cluster.command(promoted.port, 'GET', key)).toBe('$5\r\nacked\r\n');
    for (const node of cluster.nodes.filter((n) => n.alive)) expect(await clusterState(cluster, node.port)).toBe('ok');
  }, FAILOVER_TEST_TIMEOUT_MS);
});

/** A hash tag whose slot `port` serves. */
async function tagOn(cluster: RedisCluster, port: number): Promise<string> {
  for (let i = 0; i < 1000; i++) {
    if ((await cluster.masterForKey(`{t${i}}`)) === port) return `t${i}`;
  }
  throw new Error(`no hash tag t0..t999 maps to ${port}`);
}

describe('Redis Sentinel helper', () => {
  let setup: SentinelSetup;

  beforeAll(async () => {
    setup = await startRedisSentinel();
  }, SETUP_TIMEOUT_MS);

  it('starts a master, its replica and three sentinels that know both and each other', async () => {
    const [master, replica] = setup.dataPorts;
    expect(setup.masterName).toBe('wsedge');
    expect(setup.sentinels).toBe(setup.sentinelPorts.map((p) => `127.0.0.1:${p}`).join(','));
    expect(await setup.master()).toEqual({ host: '127.0.0.1', port: master });
    expect(await setup.command(replica!, 'INFO', 'replication')).toMatch(new RegExp(`master_port:${master}\\r\\n[^]*master_link_status:up`));
    for (const sentinel of setup.sentinelPorts) {
      expect(await setup.command(sentinel, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', 'wsedge')).toBe(`*2\r\n${bulk('127.0.0.1')}${bulk(String(master))}`);
      expect(await setup.command(sentinel, 'SENTINEL', 'MASTER', 'wsedge')).toMatch(/num-slaves\r\n\$1\r\n1\r\n[^]*num-other-sentinels\r\n\$1\r\n2\r\n/);
    }
  });

  it('moves the master to the replica with SENTINEL FAILOVER, keeping an acknowledged write', async () => {
    const [master, replica] = setup.dataPorts;
    const key = `${uniquePrefix()}k`;
    await setup.command(master!, 'SET', key, 'kept');
    expect(await setup.command(master!, 'WAIT', '1', '2000')).toBe(':1\r\n');

    expect(await setup.failover()).toEqual({ from: master, to: replica });

    expect(await setup.master()).toEqual({ host: '127.0.0.1', port: replica });
    expect(await setup.command(replica!, 'ROLE')).toMatch(/^\*3\r\n\$6\r\nmaster\r\n/);
    expect(await setup.command(replica!, 'GET', key)).toBe('$4\r\nkept\r\n');
    expect(await setup.command(replica!, 'SET', key, 'written')).toBe('+OK\r\n');
  }, FAILOVER_TEST_TIMEOUT_MS);

  it('freezes a master (up, accepting connections, silent) and the sentinels fail it over', async () => {
    // A fresh setup: after the failover above, the old master only rejoins as a replica some 20 s later.
    const fresh = await startRedisSentinel();
    const [master, replica] = fresh.dataPorts;
    await expect(fresh.freeze(fresh.sentinelPorts[0]!, 1)).rejects.toThrow(/DEBUG SLEEP on \d+ refused/);

    await fresh.freeze(master!, 10);
    await expect(fresh.command(master!, 'PING')).rejects.toThrow(/no reply to PING/);

    expect(await fresh.waitForFailover(master!)).toBe(replica);
    expect(await fresh.master()).toEqual({ host: '127.0.0.1', port: replica });
    // Still asleep: the sentinels acted on silence, not on a dead process.
    await expect(fresh.command(master!, 'PING')).rejects.toThrow(/no reply to PING/);
    await fresh.stop();
  }, FAILOVER_TEST_TIMEOUT_MS);
});
