/**
 * The one `redis-server` spawner of the tests (plain server, cluster node, data node or sentinel)
 * on free loopback ports, and what the Cluster and Sentinel helpers share: parsed RESP replies for topology queries, and polling
 * with a deadline that reports what it last saw. Talks raw RESP (redis.ts) so the harness does not
 * depend on the client library under test.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { redisCommand } from './resp.js';

const NOT_INSTALLED = 'redis-server not found: install it (apt-get install redis-server); .ci/run does this';
const START_TIMEOUT_MS = 10_000;
const START_ATTEMPTS = 5;

export interface RedisProcess {
  /** The first of the ports it was started with: the one clients use. */
  readonly port: number;
  readonly pid: number;
  /** False once the process has exited, for whatever reason. */
  alive(): boolean;
  /** Everything it wrote to stdout and stderr. */
  output(): string;
  /** SIGKILL, resolves once the process has exited. Nothing is persisted, so nothing is lost. */
  kill(): Promise<void>;
  /** SIGTERM, resolves once the process has exited. */
  stop(): Promise<void>;
}

/**
 * Spawns `redis-server` with the arguments `argsFor` builds from `ports` (that many free loopback
 * ports, or exactly these) and resolves once it answers INFO with its own pid (another server may
 * hold the port). A free port taken between freePort() and the bind is retried with fresh ports;
 * any other early exit rejects with the process output.
 */
export async function spawnRedisProcess(
  label: string,
  ports: number | readonly number[],
  argsFor: (ports: number[]) => string[] | Promise<string[]>,
): Promise<RedisProcess> {
  if (typeof ports !== 'number') return spawnOnce(label, [...ports], await argsFor([...ports]));
  for (let attempt = 1; ; attempt++) {
    const free: number[] = [];
    while (free.length < ports) {
      const port = await freePort();
      if (!free.includes(port)) free.push(port);
    }
    try {
      return await spawnOnce(label, free, await argsFor(free));
    } catch (err) {
      if (attempt >= START_ATTEMPTS || !/Address already in use/.test(String(err))) throw err;
    }
  }
}

async function spawnOnce(label: string, ports: number[], args: string[]): Promise<RedisProcess> {
  const port = ports[0]!;
  const child: ChildProcess = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      resolve();
    }),
  );
  let failure: Error | undefined;
  child.once('error', (err: NodeJS.ErrnoException) => {
    failure = err.code === 'ENOENT' ? new Error(NOT_INSTALLED) : err;
  });
  void exit.then(() => {
    failure ??= new Error(`${label} on port ${port} exited (${child.exitCode ?? child.signalCode}) before answering: ${output.trim()}`);
  });

  const signal = async (sig: NodeJS.Signals) => {
    if (child.pid !== undefined && !exited) child.kill(sig);
    if (child.pid !== undefined) await exit;
  };
  const kill = () => signal('SIGKILL');

  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (failure) throw failure;
    const reply = await redisCommand(port, ['INFO', 'server'], 500).catch(() => undefined);
    if (reply?.includes(`\r\nprocess_id:${child.pid}\r\n`)) break;
    if (Date.now() > deadline) {
      await kill();
      throw new Error(`${label} on port ${port} did not answer within ${START_TIMEOUT_MS} ms: ${output.trim()}`);
    }
    await sleep(25);
  }

  return { port, pid: child.pid!, alive: () => !exited, output: () => output, kill, stop: () => signal('SIGTERM') };
}

/** A fresh directory under the OS temp dir for one process's files (nodes.conf, sentinel.conf). */
export function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `wsedge-${prefix}-`));
}

export function removeDirs(dirs: readonly string[]): Promise<void> {
  return Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true }))).then(() => undefined);
}

/** A RESP2 value: simple and bulk strings, integers, nil, arrays. Error replies are thrown instead. */
export type Resp = string | number | null | Resp[];

/**
 * Sends one command to 127.0.0.1:<port> and resolves with the parsed reply; rejects on an error
 * reply (with the command and port in the message), a failed connection or a timeout.
 */
export async function query(port: number, args: readonly string[], timeoutMs = 2000): Promise<Resp> {
  const raw = await redisCommand(port, args, timeoutMs);
  try {
    return parseReply(raw);
  } catch (err) {
    throw new Error(`${args.join(' ')} on 127.0.0.1:${port}: ${(err as Error).message}`);
  }
}

/** The fields of one INFO section, e.g. info(port, 'replication').master_link_status. */
export async function info(port: number, section: string, timeoutMs = 2000): Promise<Record<string, string>> {
  return infoFields(asString(await query(port, ['INFO', section], timeoutMs)));
}

export function infoFields(text: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of text.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0 && !line.startsWith('#')) fields[line.slice(0, colon)] = line.slice(colon + 1);
  }
  return fields;
}

/** A flat [key, value, key, value, ...] reply (SENTINEL REPLICAS entries, CONFIG GET) as a record. */
export function pairs(value: Resp): Record<string, string> {
  const list = asArray(value);
  const record: Record<string, string> = {};
  for (let i = 0; i + 1 < list.length; i += 2) record[String(list[i])] = String(list[i + 1]);
  return record;
}

export function asArray(value: Resp): Resp[] {
  if (!Array.isArray(value)) throw new Error(`expected an array reply, got ${JSON.stringify(value)}`);
  return value;
}

export function asString(value: Resp): string {
  if (typeof value !== 'string') throw new Error(`expected a string reply, got ${JSON.stringify(value)}`);
  return value;
}

export function parseReply(raw: string): Resp {
  const buf = Buffer.from(raw, 'utf8');
  const [value, end] = parseAt(buf, 0);
  if (end !== buf.length) throw new Error(`trailing bytes after the reply: ${JSON.stringify(raw)}`);
  return value;
}

function parseAt(buf: Buffer, at: number): [Resp, number] {
  const eol = buf.indexOf('\r\n', at);
  if (eol < 0) throw new Error('incomplete reply');
  const kind = String.fromCharCode(buf[at]!);
  const line = buf.toString('utf8', at + 1, eol);
  switch (kind) {
    case '+':
      return [line, eol + 2];
    case '-':
      throw new Error(line);
    case ':':
      return [Number(line), eol + 2];
    case '$': {
      const n = Number(line);
      if (n < 0) return [null, eol + 2];
      return [buf.toString('utf8', eol + 2, eol + 2 + n), eol + 2 + n + 2];
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return [null, eol + 2];
      const items: Resp[] = [];
      let next = eol + 2;
      for (let i = 0; i < n; i++) {
        const [item, end] = parseAt(buf, next);
        items.push(item);
        next = end;
      }
      return [items, next];
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(kind)}`);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
