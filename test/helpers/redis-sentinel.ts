/**
 * A real Sentinel deployment on loopback: one master, one replica and three sentinels
 * (`redis-server <conf> --sentinel`), for what only Sentinel shows: a master that moves, and a master
 * that hangs. Nothing is persisted; each sentinel rewrites its own conf in its own temp dir.
 */
import { connect, type Socket } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { encodeCommand, redisCommand } from './resp.js';
import { asArray, info, pairs, query, removeDirs, spawnRedisProcess, tempDir, type RedisProcess } from './redis-process.js';
import { waitFor } from './wait.js';

const MASTER_NAME = 'wsedge';
/** A master (or replica, or sentinel) silent this long is subjectively down. */
const DOWN_AFTER_MS = 2000;
const FAILOVER_TIMEOUT_MS = 10_000;
const SETTLE_TIMEOUT_MS = 30_000;

export interface SentinelSetup {
  readonly masterName: 'wsedge';
  /** '127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3', for REDIS_SENTINELS. */
  readonly sentinels: string;
  readonly sentinelPorts: readonly number[];
  /** The two data nodes: [initial master, initial replica]. */
  readonly dataPorts: readonly number[];
  /** The master's address per SENTINEL GET-MASTER-ADDR-BY-NAME on the first sentinel that answers. */
  master(): Promise<{ host: string; port: number }>;
  /**
   * SENTINEL FAILOVER (forced: no quorum or agreement needed) and resolves once every sentinel
   * reports the other data node as master and that node reports role:master. The old master is
   * turned into a replica later (about 10 s: sentinels wait before reconfiguring it); settle() waits
   * for that. A sentinel that ran a failover will not start another automatic one for 2 × the
   * failover timeout (20 s), but the other two will.
   */
  failover(): Promise<{ from: number; to: number }>;
  /**
   * Resolves with the new master's port once every sentinel reports a master other than `from` and
   * that node reports role:master: the end of a failover the sentinels started themselves (say,
   * after freeze() on the master). Rejects after `timeoutMs` (default 30 s).
   */
  waitForFailover(from: number, timeoutMs?: number): Promise<number>;
  /**
   * Resolves once the deployment is whole again: every sentinel agrees on the master and sees it
   * healthy, the other data node replicates from it with the link up and every sentinel lists it as
   * a healthy replica, and every sentinel knows the other two.
   */
  settle(): Promise<void>;
  /**
   * Sends DEBUG SLEEP <seconds> to a node on its own connection without waiting for the reply, and
   * resolves once the node is asleep (a PING on another connection goes unanswered for 200 ms). The
   * process stays up with its sockets open: a hung server, not a dead one. `seconds` must be >= 1.
   * Data nodes only: sentinels have no DEBUG command (rejects).
   */
  freeze(port: number, seconds: number): Promise<void>;
  /** Sends one command to any node or sentinel on a new connection; the raw RESP reply, errors included. */
  command(port: number, ...args: string[]): Promise<string>;
  /** SIGKILLs every process (frozen ones too) and removes the temp dirs. */
  stop(): Promise<void>;
}

const running = new Set<SentinelSetup>();

/**
 * Starts the master, the replica and three sentinels (quorum 2, down after 2 s) and resolves once
 * settled (see SentinelSetup.settle). On any failure every process started is killed before the
 * error is thrown.
 */
export async function startRedisSentinel(): Promise<SentinelSetup> {
  const dirs: string[] = [];
  const processes: RedisProcess[] = [];
  const sleepers = new Set<Socket>();
  const stopAll = async () => {
    for (const socket of sleepers) socket.destroy();
    await Promise.all(processes.map((p) => p.kill()));
    await removeDirs(dirs);
  };

  try {
    // Separate dirs: a replica writes the synced RDB to its dir even with persistence off.
    const [masterDir, replicaDir] = [await tempDir('sentinel-data'), await tempDir('sentinel-data')];
    dirs.push(masterDir, replicaDir);
    const master = await spawnRedisProcess('redis master', 1, ([port]) => dataNodeArgs(port!, masterDir));
    processes.push(master);
    const replica = await spawnRedisProcess('redis replica', 1, ([port]) => [
      ...dataNodeArgs(port!, replicaDir),
      '--replicaof', '127.0.0.1', String(master.port),
    ]);
    processes.push(replica);

    // allSettled, not all: a failed start must not leave the others running once the catch has cleaned up.
    const sentinels = await Promise.allSettled(
      [1, 2, 3].map(async () => {
        const dir = await tempDir('sentinel');
        dirs.push(dir);
        const sentinel = await spawnRedisProcess('sentinel', 1, async ([port]) => {
          await writeFile(`${dir}/sentinel.conf`, sentinelConf(port!, dir, master.port));
          return [`${dir}/sentinel.conf`, '--sentinel'];
        });
        processes.push(sentinel);
        return sentinel;
      }),
    );
    const sentinelPorts = sentinels.map((result) => {
      if (result.status === 'rejected') throw result.reason;
      return result.value.port;
    });
    const dataPorts = [master.port, replica.port];
    const setup = makeSetup(sentinelPorts, dataPorts, processes, dirs, sleepers);
    await setup.settle();
    running.add(setup);
    return setup;
  } catch (err) {
    const logs = processes.map((p) => `--- ${p.port} ---\n${p.output().trim().split('\n').slice(-10).join('\n')}`).join('\n');
    await stopAll();
    throw new Error(`Sentinel setup did not start: ${(err as Error).message}${logs ? `\n${logs}` : ''}`);
  }
}

/** Stops every Sentinel setup started by this worker; for afterAll. */
export async function stopAllSentinels(): Promise<void> {
  const setups = [...running];
  running.clear();
  await Promise.all(setups.map((s) => s.stop()));
}

function makeSetup(sentinelPorts: number[], dataPorts: number[], processes: RedisProcess[], dirs: string[], sleepers: Set<Socket>): SentinelSetup {
  /** The master's port per one sentinel. */
  const masterPer = async (sentinelPort: number, timeoutMs = 1000): Promise<number> => {
    const [, port] = asArray(await query(sentinelPort, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER_NAME], timeoutMs));
    return Number(port);
  };
  /** The master every sentinel reports; throws while they disagree. */
  const agreedMaster = async (): Promise<number> => {
    const ports = await Promise.all(sentinelPorts.map((s) => masterPer(s)));
    if (new Set(ports).size !== 1) throw new Error(`sentinels disagree on the master: ${ports.join(', ')}`);
    return ports[0]!;
  };
  const roleOf = async (port: number): Promise<string> => String(asArray(await query(port, ['ROLE'], 1000))[0]);

  const setup: SentinelSetup = {
    masterName: MASTER_NAME,
    sentinels: sentinelPorts.map((p) => `127.0.0.1:${p}`).join(','),
    sentinelPorts,
    dataPorts,
    async master() {
      let lastError: unknown;
      for (const s of sentinelPorts) {
        try {
          return { host: '127.0.0.1', port: await masterPer(s) };
        } catch (err) {
          lastError = err;
        }
      }
      throw new Error(`no sentinel answered GET-MASTER-ADDR-BY-NAME: ${String(lastError)}`);
    },
    async failover() {
      const from = (await setup.master()).port;
      const reply = await redisCommand(sentinelPorts[0]!, ['SENTINEL', 'FAILOVER', MASTER_NAME]);
      if (reply !== '+OK\r\n') throw new Error(`SENTINEL FAILOVER answered ${reply.trim()}`);
      return { from, to: await setup.waitForFailover(from) };
    },
    waitForFailover: (from, timeoutMs = SETTLE_TIMEOUT_MS) =>
      waitFor(`the master to move away from ${from}`, async () => {
        const port = await agreedMaster();
        if (port === from) throw new Error(`every sentinel still reports ${from}`);
        const role = await roleOf(port);
        if (role !== 'master') throw new Error(`the new master ${port} reports role ${role}`);
        return port;
      }, timeoutMs, 100),
    async settle() {
      await waitFor('the Sentinel setup to settle', async () => {
        const master = await agreedMaster();
        const replica = dataPorts.find((p) => p !== master);
        if (replica === undefined || !dataPorts.includes(master)) throw new Error(`sentinels report master ${master}, not one of ${dataPorts.join(', ')}`);
        const role = await roleOf(master);
        if (role !== 'master') throw new Error(`${master} reports role ${role}`);
        const replication = await info(replica, 'replication', 1000);
        if (replication['role'] !== 'slave' || replication['master_port'] !== String(master) || replication['master_link_status'] !== 'up') {
          throw new Error(`${replica}: role ${replication['role']}, master_port ${replication['master_port']}, link ${replication['master_link_status']}`);
        }
        for (const s of sentinelPorts) {
          const state = pairs(await query(s, ['SENTINEL', 'MASTER', MASTER_NAME], 1000));
          if (state['flags'] !== 'master') throw new Error(`sentinel ${s}: master flags ${state['flags']}`);
          const replicas = asArray(await query(s, ['SENTINEL', 'REPLICAS', MASTER_NAME], 1000)).map(pairs);
          const healthy = replicas.find((r) => r['port'] === String(replica) && r['flags'] === 'slave' && r['master-link-status'] === 'ok' && r['master-port'] === String(master));
          if (!healthy) throw new Error(`sentinel ${s}: replica ${replica} not healthy: ${JSON.stringify(replicas.map((r) => [r['port'], r['flags'], r['master-link-status'], r['master-port']]))}`);
          const others = asArray(await query(s, ['SENTINEL', 'SENTINELS', MASTER_NAME], 1000)).map(pairs);
          const known = others.filter((o) => o['flags'] === 'sentinel').map((o) => Number(o['port']));
          const missing = sentinelPorts.filter((p) => p !== s && !known.includes(p));
          if (missing.length > 0) throw new Error(`sentinel ${s} does not know sentinels ${missing.join(', ')} yet`);
        }
      }, SETTLE_TIMEOUT_MS, 100);
    },
    async freeze(port, seconds) {
      if (!(seconds >= 1)) throw new Error(`freeze(${port}, ${seconds}): seconds must be >= 1`);
      const socket = connect(port, '127.0.0.1');
      sleepers.add(socket);
      let reply = '';
      const forget = () => {
        sleepers.delete(socket);
        socket.destroy();
      };
      // The reply ends this connection: +OK once it wakes, which nobody waits for, or an error at once.
      socket.once('data', (chunk: Buffer) => {
        reply = chunk.toString();
        forget();
      });
      socket.once('error', forget);
      socket.once('close', forget);
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', () => socket.write(encodeCommand(['DEBUG', 'SLEEP', String(seconds)]), (err) => (err ? reject(err) : resolve())));
        socket.once('error', reject);
      });
      const deadline = Date.now() + 2000;
      for (;;) {
        const answered = await redisCommand(port, ['PING'], 200).then(
          () => true,
          () => false,
        );
        if (reply.startsWith('-')) throw new Error(`DEBUG SLEEP on ${port} refused: ${reply.trim()}`);
        if (!answered) return;
        if (Date.now() > deadline) throw new Error(`${port} still answers PING 2000 ms after DEBUG SLEEP`);
      }
    },
    command: (port, ...args) => redisCommand(port, args),
    async stop() {
      running.delete(setup);
      for (const socket of sleepers) socket.destroy();
      sleepers.clear();
      await Promise.all(processes.map((p) => p.kill()));
      await removeDirs(dirs);
    },
  };
  return setup;
}

function dataNodeArgs(port: number, dir: string): string[] {
  return [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--protected-mode', 'no',
    '--save', '',
    '--appendonly', 'no',
    '--dir', dir,
    // The default 5 s wait for more replicas before a diskless full sync would dominate start-up.
    '--repl-diskless-sync-delay', '0',
    // Loopback clients may freeze a node (DEBUG SLEEP) to fake a hung master.
    '--enable-debug-command', 'local',
  ];
}

function sentinelConf(port: number, dir: string, masterPort: number): string {
  return [
    `port ${port}`,
    'bind 127.0.0.1',
    'protected-mode no',
    `dir ${dir}`,
    'sentinel resolve-hostnames no',
    `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${masterPort} 2`,
    `sentinel down-after-milliseconds ${MASTER_NAME} ${DOWN_AFTER_MS}`,
    `sentinel failover-timeout ${MASTER_NAME} ${FAILOVER_TIMEOUT_MS}`,
    `sentinel parallel-syncs ${MASTER_NAME} 1`,
    '',
  ].join('\n');
}
