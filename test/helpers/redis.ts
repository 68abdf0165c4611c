/**
 * Real `redis-server` processes on free ports, no persistence, one per suite, started by the one
 * spawner of redis-process.ts. Talks RESP over raw sockets (resp.ts) so the harness does not depend
 * on the client library under test.
 */
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { spawnRedisProcess, type RedisProcess } from './redis-process.js';
import { redisCommand } from './resp.js';

export interface RedisServer {
  readonly port: number;
  /** redis://127.0.0.1:<port> */
  readonly url: string;
  /** SIGTERM, resolves once the process has exited. */
  stop(): Promise<void>;
  /** SIGKILL, resolves once the process has exited. */
  kill(): Promise<void>;
  /** Starts a fresh, empty server on the same port (stopping the current one first if it runs). */
  restart(): Promise<void>;
  /** Sends one command on a new connection and returns the raw RESP reply, e.g. '+PONG\r\n'. */
  command(...args: string[]): Promise<string>;
  /** Everything the current process wrote to stdout and stderr. */
  output(): string;
}

const running = new Set<RedisServer>();

/** A per-test namespace for REDIS_PREFIX, so tests sharing one server never see each other's keys. */
export function uniquePrefix(): string {
  return `wsedge-test-${randomBytes(4).toString('hex')}:`;
}

const serverArgs = ([port]: number[]): string[] => ['--port', String(port), '--bind', '127.0.0.1', '--protected-mode', 'no', '--save', '', '--appendonly', 'no', '--dir', tmpdir()];

/** A plain server on a free port, or on `port` when given (then a port in use is not retried). */
export async function startRedis(opts: { port?: number } = {}): Promise<RedisServer> {
  let child: RedisProcess = await spawnRedisProcess('redis-server', opts.port === undefined ? 1 : [opts.port], serverArgs);
  const { port } = child;
  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop: () => child.stop(),
    kill: () => child.kill(),
    async restart() {
      await child.stop();
      child = await spawnRedisProcess('redis-server', [port], serverArgs);
    },
    command: (...args) => redisCommand(port, args),
    output: () => child.output(),
  };
  running.add(server);
  return server;
}

/** Stops every server started by this worker; for afterAll. */
export async function stopAllRedis(): Promise<void> {
  const servers = [...running];
  running.clear();
  await Promise.all(servers.map((s) => s.kill()));
}
