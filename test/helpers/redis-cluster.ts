/**
 * A real Redis Cluster on loopback: `redis-server --cluster-enabled yes` processes joined with
 * `redis-cli --cluster create`, for what only a cluster shows: MOVED, sharded pub/sub, a master
 * failing over to its replica. Nothing is persisted; each node has its own temp dir for nodes.conf.
 */
import { spawn } from 'node:child_process';
import { redisCommand } from './resp.js';
import {
  asArray,
  asString,
  info,
  infoFields,
  query,
  removeDirs,
  spawnRedisProcess,
  tempDir,
  type RedisProcess,
  type Resp,
} from './redis-process.js';
import { waitFor } from './wait.js';

const CLI_NOT_INSTALLED = 'redis-cli not found: install it (apt-get install redis-tools); .ci/run does this';
const SLOTS = 16384;
/** How long a node may be unreachable before it is flagged as failing and its replica takes over. */
const NODE_TIMEOUT_MS = 2000;
const CREATE_TIMEOUT_MS = 30_000;
const SETTLE_TIMEOUT_MS = 30_000;

export interface ClusterNode {
  readonly port: number;
  readonly pid: number;
  /** As of the last topology read: start, masters(), replicas(), failover(), kill(), waitForPromotion(). */
  readonly role: 'master' | 'replica';
  /** For a replica, its master's port as of the last topology read; undefined for a master. */
  readonly masterPort: number | undefined;
  /** False once kill() or stop() ended it. */
  readonly alive: boolean;
}

export interface RedisCluster {
  /** Every node started, in the order given to `redis-cli --cluster create`; killed ones included. */
  readonly nodes: readonly ClusterNode[];
  /** '127.0.0.1:p1,127.0.0.1:p2,...' over every node started, for REDIS_CLUSTER_NODES. */
  readonly seeds: string;
  /** Live masters, read from the nodes now (ROLE), in `nodes` order. */
  masters(): Promise<ClusterNode[]>;
  /** Live replicas, read from the nodes now (ROLE), in `nodes` order. */
  replicas(): Promise<ClusterNode[]>;
  /** Sends one command to one node on a new connection; the raw RESP reply, errors such as '-MOVED ...' included. */
  command(port: number, ...args: string[]): Promise<string>;
  /** Port of the master serving `slot` (0..16383), per CLUSTER SLOTS on a live node. */
  masterOfSlot(slot: number): Promise<number>;
  /** Port of the master serving `key` (hash tags honoured: CLUSTER KEYSLOT). */
  masterForKey(key: string): Promise<number>;
  /**
   * CLUSTER FAILOVER on a live replica (a coordinated, lossless switch: its master must be up), and
   * resolves once the cluster has settled with that replica as master and its old master as its replica.
   */
  failover(replicaPort: number): Promise<void>;
  /** SIGKILL on one node; resolves once it has exited. The cluster notices after the node timeout (2 s). */
  kill(port: number): Promise<void>;
  /**
   * After kill(oldMasterPort): resolves with the replica that took over once it is master and the
   * cluster has settled (state ok and one slot map on every live node). Rejects if the killed node
   * was not a master or had no replica.
   */
  waitForPromotion(oldMasterPort: number): Promise<ClusterNode>;
  /** SIGKILLs every node and removes their temp dirs. */
  stop(): Promise<void>;
}

export interface ClusterOptions {
  /** At least 3 (redis-cli refuses fewer). Default 3. */
  readonly masters?: number;
  /** Default 1. */
  readonly replicasPerMaster?: number;
}

type MutableNode = { -readonly [K in keyof ClusterNode]: ClusterNode[K] };

const running = new Set<RedisCluster>();

/**
 * Starts masters × (1 + replicasPerMaster) cluster nodes, joins them, and resolves once every node
 * reports cluster_state:ok, every node knows every other, all agree on who serves which slot, each
 * master has its replicas and every replica's link to its master is up. On any failure every
 * process started is killed before the error is thrown.
 */
export async function startRedisCluster(opts: ClusterOptions = {}): Promise<RedisCluster> {
  const masterCount = opts.masters ?? 3;
  const replicasPerMaster = opts.replicasPerMaster ?? 1;
  await requireRedisCli();

  const dirs: string[] = [];
  const processes: RedisProcess[] = [];
  const stopAll = async () => {
    await Promise.all(processes.map((p) => p.kill()));
    await removeDirs(dirs);
  };

  try {
    const total = masterCount * (1 + replicasPerMaster);
    // allSettled, not all: a failed start must not leave the others running once the catch has cleaned up.
    const started = await Promise.allSettled(
      Array.from({ length: total }, async () => {
        const dir = await tempDir('cluster');
        dirs.push(dir);
        processes.push(await spawnRedisProcess('cluster node', 2, ([port, busPort]) => clusterNodeArgs(port!, busPort!, dir)));
      }),
    );
    for (const result of started) if (result.status === 'rejected') throw result.reason;

    const ports = processes.map((p) => p.port);
    await runRedisCli([
      '--cluster',
      'create',
      ...ports.map((p) => `127.0.0.1:${p}`),
      '--cluster-replicas',
      String(replicasPerMaster),
      '--cluster-yes',
    ]);

    const nodes: MutableNode[] = processes.map((p) => ({ port: p.port, pid: p.pid, role: 'master', masterPort: undefined, alive: true }));
    await waitSettled(nodes, 'the new cluster to settle', async () => {
      const masters = nodes.filter((n) => n.role === 'master');
      if (masters.length !== masterCount) throw new Error(`${masters.length} masters, want ${masterCount}`);
      for (const m of masters) {
        const count = nodes.filter((n) => n.masterPort === m.port).length;
        if (count !== replicasPerMaster) throw new Error(`master ${m.port} has ${count} replicas, want ${replicasPerMaster}`);
      }
    });

    const cluster = makeCluster(nodes, processes, dirs);
    running.add(cluster);
    return cluster;
  } catch (err) {
    const logs = tails(processes);
    await stopAll();
    throw new Error(`Redis Cluster did not start: ${(err as Error).message}\n${logs}`);
  }
}

/** Stops every cluster started by this worker; for afterAll. */
export async function stopAllClusters(): Promise<void> {
  const clusters = [...running];
  running.clear();
  await Promise.all(clusters.map((c) => c.stop()));
}

/** CLUSTER KEYSLOT asked of a live master. */
export async function keyslot(cluster: RedisCluster, key: string): Promise<number> {
  const [any] = await cluster.masters();
  return Number(await query(any!.port, ['CLUSTER', 'KEYSLOT', key]));
}

/** A room whose broker channel (`<prefix>room:<room>`) hashes to a known slot and master. */
export interface PlacedRoom {
  readonly room: string;
  readonly channel: string;
  readonly slot: number;
  /** The master serving the slot when the room was placed. */
  readonly master: number;
}

/** Rooms `channel:<base>-<i>` until each of `masters` owns one, placed by CLUSTER KEYSLOT and the slot map; in `masters` order. */
export async function roomsOnMasters(cluster: RedisCluster, prefix: string, base: string, masters: number[]): Promise<PlacedRoom[]> {
  const found = new Map<number, PlacedRoom>();
  for (let i = 0; found.size < masters.length; i++) {
    if (i > 200) throw new Error(`no room channel:${base}-0..200 for each of ${masters.join(', ')}`);
    const room = `channel:${base}-${i}`;
    const channel = `${prefix}room:${room}`;
    const master = await cluster.masterForKey(channel);
    if (masters.includes(master) && !found.has(master)) found.set(master, { room, channel, slot: await keyslot(cluster, channel), master });
  }
  return masters.map((m) => found.get(m)!);
}

/** PUBSUB SHARDNUMSUB of one channel on one node. */
export async function shardNumsub(port: number, channel: string): Promise<number> {
  const [, count] = asArray(await query(port, ['PUBSUB', 'SHARDNUMSUB', channel]));
  return Number(count);
}

/** Waits until the master serving `channel` now has exactly `count` shard subscribers to it; resolves with that master's port. */
export async function shardSubscribed(cluster: RedisCluster, channel: string, count: number, timeoutMs: number): Promise<number> {
  return waitFor(`${count} shard subscribers to ${channel} on its current master`, async () => {
    const owner = await cluster.masterForKey(channel);
    const n = await shardNumsub(owner, channel);
    if (n !== count) throw new Error(`${n} on ${owner}`);
    return owner;
  }, timeoutMs, 100);
}

function makeCluster(nodes: MutableNode[], processes: RedisProcess[], dirs: string[]): RedisCluster {
  const node = (port: number): MutableNode => {
    const found = nodes.find((n) => n.port === port);
    if (!found) throw new Error(`no cluster node on port ${port}; nodes: ${nodes.map((n) => n.port).join(', ')}`);
    return found;
  };
  const live = () => nodes.filter((n) => n.alive);
  /** Rethrows `err` with the last log lines of the nodes involved, which say why a failover stalled. */
  const withLogs = (ports: (number | undefined)[]) => (err: unknown): never => {
    throw new Error(`${(err as Error).message}\n${tails(processes.filter((p) => ports.includes(p.port)))}`);
  };

  const masterOfSlot = async (slot: number): Promise<number> => {
    let lastError: unknown;
    for (const n of live()) {
      try {
        const owner = slotMap(await query(n.port, ['CLUSTER', 'SLOTS'])).find((r) => slot >= r.start && slot <= r.end);
        if (!owner) throw new Error(`no master serves slot ${slot}`);
        return owner.port;
      } catch (err) {
        lastError = err;
      }
    }
    throw new Error(`no live node answered CLUSTER SLOTS: ${String(lastError)}`);
  };

  const cluster: RedisCluster = {
    nodes,
    seeds: nodes.map((n) => `127.0.0.1:${n.port}`).join(','),
    async masters() {
      await readRoles(nodes);
      return live().filter((n) => n.role === 'master');
    },
    async replicas() {
      await readRoles(nodes);
      return live().filter((n) => n.role === 'replica');
    },
    command: (port, ...args) => redisCommand(port, args),
    masterOfSlot,
    async masterForKey(key) {
      const n = live()[0];
      if (!n) throw new Error('every cluster node has been killed');
      return masterOfSlot(Number(await query(n.port, ['CLUSTER', 'KEYSLOT', key])));
    },
    async failover(replicaPort) {
      // A master silently ignores a manual failover request from a replica it does not know as its own yet.
      await waitSettled(nodes, `the cluster to settle before failing over to ${replicaPort}`, async () => {});
      const replica = node(replicaPort);
      if (!replica.alive || replica.role !== 'replica') {
        throw new Error(`failover(${replicaPort}): not a live replica (role ${replica.role}, alive ${replica.alive})`);
      }
      const oldMaster = replica.masterPort;
      const reply = await redisCommand(replicaPort, ['CLUSTER', 'FAILOVER']);
      if (reply !== '+OK\r\n') throw new Error(`CLUSTER FAILOVER on ${replicaPort} answered ${reply.trim()}`);
      await waitSettled(nodes, `replica ${replicaPort} to take over from master ${oldMaster}`, async () => {
        if (replica.role !== 'master') throw new Error(`${replicaPort} is still a replica`);
        const old = nodes.find((n) => n.port === oldMaster);
        if (old?.alive && old.masterPort !== replicaPort) throw new Error(`old master ${oldMaster} is not yet a replica of ${replicaPort}`);
      }).catch(withLogs([replicaPort, oldMaster]));
    },
    async kill(port) {
      const target = node(port);
      // Read the topology first so waitForPromotion knows whose replicas to watch.
      await readRoles(nodes);
      await processes.find((p) => p.port === port)!.kill();
      target.alive = false;
    },
    async waitForPromotion(oldMasterPort) {
      const old = node(oldMasterPort);
      if (old.alive) throw new Error(`waitForPromotion(${oldMasterPort}): it is still running; kill() it first`);
      if (old.role !== 'master') throw new Error(`waitForPromotion(${oldMasterPort}): it was a ${old.role}, not a master`);
      const candidates = nodes.filter((n) => n.alive && n.masterPort === oldMasterPort);
      if (candidates.length === 0) throw new Error(`waitForPromotion(${oldMasterPort}): it had no live replica`);
      let promoted: MutableNode | undefined;
      await waitSettled(nodes, `a replica of ${oldMasterPort} (${candidates.map((c) => c.port).join(', ')}) to be promoted`, async () => {
        promoted = candidates.find((c) => c.role === 'master');
        if (!promoted) throw new Error('no replica has been promoted yet');
      }).catch(withLogs(candidates.map((c) => c.port)));
      return promoted!;
    },
    async stop() {
      running.delete(cluster);
      await Promise.all(processes.map((p) => p.kill()));
      for (const n of nodes) n.alive = false;
      await removeDirs(dirs);
    },
  };
  return cluster;
}

function clusterNodeArgs(port: number, busPort: number, dir: string): string[] {
  return [
    '--port', String(port),
    // Set explicitly: the default (port + 10000) can be taken or above 65535.
    '--cluster-port', String(busPort),
    '--bind', '127.0.0.1',
    '--protected-mode', 'no',
    '--cluster-enabled', 'yes',
    '--cluster-config-file', `${dir}/nodes.conf`,
    '--cluster-node-timeout', String(NODE_TIMEOUT_MS),
    '--cluster-announce-ip', '127.0.0.1',
    '--save', '',
    '--appendonly', 'no',
    '--dir', dir,
    // The default 5 s wait for more replicas before a diskless full sync would dominate start-up.
    '--repl-diskless-sync-delay', '0',
    // Loopback clients may freeze a node (DEBUG SLEEP) to fake a hung master.
    '--enable-debug-command', 'local',
  ];
}

/** Refreshes role and masterPort of every live node from ROLE; a node that does not answer keeps its last values. */
async function readRoles(nodes: MutableNode[]): Promise<void> {
  await Promise.all(
    nodes
      .filter((n) => n.alive)
      .map(async (n) => {
        const role = await query(n.port, ['ROLE'], 1000).catch(() => undefined);
        if (!Array.isArray(role)) return;
        if (role[0] === 'master') {
          n.role = 'master';
          n.masterPort = undefined;
        } else {
          n.role = 'replica';
          n.masterPort = Number(role[2]);
        }
      }),
  );
}

/**
 * Waits until the cluster is settled, and `extra` (run after each fresh role read) passes: every live
 * node answers, reports cluster_state:ok and knows every node started; all live nodes return the
 * same slot-to-master map, covering every slot with live masters; every live replica's link to a
 * live master is up.
 */
async function waitSettled(nodes: MutableNode[], what: string, extra: () => Promise<void>): Promise<void> {
  await waitFor(what, async () => {
    const alive = nodes.filter((n) => n.alive);
    await readRoles(nodes);
    let reference: string | undefined;
    for (const n of alive) {
      const clusterInfo = infoFields(asString(await query(n.port, ['CLUSTER', 'INFO'], 1000)));
      if (clusterInfo['cluster_state'] !== 'ok') throw new Error(`${n.port}: cluster_state:${clusterInfo['cluster_state']}`);
      if (clusterInfo['cluster_known_nodes'] !== String(nodes.length)) {
        throw new Error(`${n.port}: knows ${clusterInfo['cluster_known_nodes']} of ${nodes.length} nodes`);
      }
      const map = slotMap(await query(n.port, ['CLUSTER', 'SLOTS'], 1000));
      const covered = map.reduce((sum, r) => sum + r.end - r.start + 1, 0);
      if (covered !== SLOTS) throw new Error(`${n.port}: CLUSTER SLOTS covers ${covered} slots`);
      for (const r of map) {
        const owner = nodes.find((o) => o.port === r.port);
        if (!owner?.alive || owner.role !== 'master') throw new Error(`${n.port}: slots ${r.start}-${r.end} on ${r.port}, which is not a live master`);
      }
      const text = JSON.stringify(map);
      if (reference !== undefined && text !== reference) throw new Error(`${n.port}: slot map differs: ${text} vs ${reference}`);
      reference = text;
    }
    // A node acts on its own view (a master ignores a manual failover request from a node it does
    // not yet know as its replica), so every live node must see every live node as it really is.
    for (const n of alive) {
      const view = clusterNodesView(asString(await query(n.port, ['CLUSTER', 'NODES'], 1000)));
      for (const t of alive) {
        const seen = view.get(t.port);
        const want = t.role === 'master' ? 'master' : `replica of ${t.masterPort}`;
        if (!seen) throw new Error(`${n.port} does not list ${t.port}`);
        if (seen.flags.includes('fail') || seen.flags.includes('fail?') || seen.flags.includes('handshake') || seen.link !== 'connected') {
          throw new Error(`${n.port} sees ${t.port} as ${seen.flags.join(',')} (${seen.link})`);
        }
        const got = seen.flags.includes('master') ? 'master' : `replica of ${seen.masterPort}`;
        if (got !== want) throw new Error(`${n.port} sees ${t.port} as ${got}, not ${want}`);
      }
    }
    for (const n of alive.filter((a) => a.role === 'replica')) {
      const replication = await info(n.port, 'replication', 1000);
      if (replication['master_link_status'] !== 'up') throw new Error(`replica ${n.port}: master_link_status:${replication['master_link_status']}`);
    }
    await extra();
  }, SETTLE_TIMEOUT_MS, 100);
}

/** The last lines each process logged, headed by its port. */
function tails(processes: readonly RedisProcess[], lines = 15): string {
  return processes.map((p) => `--- node ${p.port} ---\n${p.output().trim().split('\n').slice(-lines).join('\n')}`).join('\n');
}

interface NodeView {
  readonly flags: string[];
  /** For a replica, its master's port in this view. */
  readonly masterPort: number | undefined;
  /** 'connected' or 'disconnected': the cluster bus link. */
  readonly link: string;
}

/** One node's CLUSTER NODES, by port. */
function clusterNodesView(text: string): Map<number, NodeView> {
  const rows = text
    .trim()
    .split('\n')
    .map((line) => line.split(' '));
  const portOf = new Map(rows.map((r) => [r[0]!, Number(/:(\d+)@/.exec(r[1] ?? '')?.[1])]));
  return new Map(
    rows.map((r) => [
      portOf.get(r[0]!)!,
      { flags: (r[2] ?? '').split(','), masterPort: r[3] === '-' ? undefined : portOf.get(r[3] ?? ''), link: r[7] ?? '' },
    ]),
  );
}

interface SlotRange {
  readonly start: number;
  readonly end: number;
  /** The master's port. */
  readonly port: number;
}

/** CLUSTER SLOTS as master ranges sorted by first slot; replicas are left out. */
function slotMap(reply: Resp): SlotRange[] {
  return asArray(reply)
    .map((entry) => {
      const [start, end, master] = asArray(entry);
      return { start: Number(start), end: Number(end), port: Number(asArray(master ?? [])[1]) };
    })
    .sort((a, b) => a.start - b.start);
}

function requireRedisCli(): Promise<void> {
  return runCli(['--version'], 5000).then(() => undefined);
}

function runRedisCli(args: string[]): Promise<string> {
  return runCli(args, CREATE_TIMEOUT_MS);
}

/** Runs redis-cli to completion; rejects with its output on a non-zero exit or after `timeoutMs`. */
function runCli(args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('redis-cli', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`redis-cli ${args.join(' ')} did not finish within ${timeoutMs} ms: ${output.trim()}`));
    }, timeoutMs);
    child.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(err.code === 'ENOENT' ? new Error(CLI_NOT_INSTALLED) : err);
    });
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      if (code === 0) resolve(output);
      else reject(new Error(`redis-cli ${args.join(' ')} exited (${code ?? sig}): ${output.trim()}`));
    });
  });
}
