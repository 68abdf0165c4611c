/**
 * Real `redis-server` processes on free ports, no persistence, one per suite. Talks RESP over raw
 * sockets so the harness does not depend on the client library under test.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { freePort } from './ports.js';

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

const NOT_INSTALLED = 'redis-server not found: install it (apt-get install redis-server); .ci/run does this';
const START_TIMEOUT_MS = 5000;
const START_ATTEMPTS = 5;

const running = new Set<RedisServer>();

/** A per-test namespace for REDIS_PREFIX, so tests sharing one server never see each other's keys. */
export function uniquePrefix(): string {
  return `wsedge-test-${randomBytes(4).toString('hex')}:`;
}

export async function startRedis(opts: { port?: number } = {}): Promise<RedisServer> {
  let child: ChildProcess | undefined;
  let output = '';
  const record = (text: string) => (output += text);
  let port = opts.port ?? 0;

  // A free port can be taken between freePort() and redis binding it: pick another and retry,
  // unless the caller asked for this port.
  for (let attempt = 1; child === undefined; attempt++) {
    if (opts.port === undefined) port = await freePort();
    try {
      child = await spawnRedis(port, record);
    } catch (err) {
      output = '';
      const retry = opts.port === undefined && attempt < START_ATTEMPTS && /Address already in use/.test(String(err));
      if (!retry) throw err;
    }
  }

  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop: () => signal(child, 'SIGTERM'),
    kill: () => signal(child, 'SIGKILL'),
    async restart() {
      await signal(child, 'SIGTERM');
      output = '';
      child = await spawnRedis(port, record);
    },
    command: (...args) => redisCommand(port, args),
    output: () => output,
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

/** Spawns one server and resolves once it answers; rejects with its output if it exits first. */
async function spawnRedis(port: number, onOutput: (text: string) => void): Promise<ChildProcess> {
  let output = '';
  const record = (chunk: string) => {
    output += chunk;
    onOutput(chunk);
  };
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--protected-mode', 'no', '--save', '', '--appendonly', 'no', '--dir', tmpdir()];
  const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.setEncoding('utf8').on('data', record);
  child.stderr!.setEncoding('utf8').on('data', record);

  let failure: Error | undefined;
  child.once('error', (err: NodeJS.ErrnoException) => {
    failure = err.code === 'ENOENT' ? new Error(NOT_INSTALLED) : err;
  });
  child.once('exit', (code, sig) => {
    failure ??= new Error(`redis-server on port ${port} exited (${code ?? sig}) before answering: ${output.trim()}`);
  });

  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (failure) throw failure;
    // Ask for the pid, not just PING: if another server holds the port, it answers too.
    const reply = await redisCommand(port, ['INFO', 'server'], 500).catch(() => undefined);
    if (reply?.includes(`\r\nprocess_id:${child.pid}\r\n`)) return child;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server on port ${port} did not answer within ${START_TIMEOUT_MS} ms: ${output.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

function signal(child: ChildProcess | undefined, sig: NodeJS.Signals): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(sig);
  return exited;
}

/**
 * Sends one command on a fresh connection to 127.0.0.1:<port> and resolves with the raw RESP reply
 * (errors such as '-ERR ...' included, not thrown). Rejects if the connection fails, closes early,
 * or no complete reply arrives within `timeoutMs`.
 */
export function redisCommand(port: number, args: readonly string[], timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let received = Buffer.alloc(0);
    const finish = (err: Error | undefined, reply?: string) => {
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(() => finish(new Error(`no reply to ${args[0]} from 127.0.0.1:${port} within ${timeoutMs} ms`)), timeoutMs);
    socket.once('connect', () => socket.write(encodeCommand(args)));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      try {
        const end = replyEnd(received, 0);
        if (end >= 0) finish(undefined, received.toString('utf8', 0, end));
      } catch (err) {
        finish(err as Error);
      }
    });
    socket.once('error', (err) => finish(err));
    socket.once('close', () => finish(new Error(`connection to 127.0.0.1:${port} closed before a reply to ${args[0]}`)));
  });
}

export function encodeCommand(args: readonly string[]): Buffer {
  const parts = [`*${args.length}\r\n`];
  for (const arg of args) parts.push(`$${Buffer.byteLength(arg)}\r\n${arg}\r\n`);
  return Buffer.from(parts.join(''));
}

/** Offset just past the RESP2 value starting at `at`, or -1 while it is incomplete. */
function replyEnd(buf: Buffer, at: number): number {
  if (at >= buf.length) return -1;
  const eol = buf.indexOf('\r\n', at);
  if (eol < 0) return -1;
  const kind = String.fromCharCode(buf[at]!);
  const n = Number(buf.toString('latin1', at + 1, eol));
  switch (kind) {
    case '+':
    case '-':
    case ':':
      return eol + 2;
    case '$': {
      if (n < 0) return eol + 2;
      const end = eol + 2 + n + 2;
      return buf.length >= end ? end : -1;
    }
    case '*': {
      let next = eol + 2;
      for (let i = 0; i < n; i++) {
        next = replyEnd(buf, next);
        if (next < 0) return -1;
      }
      return next;
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(kind)}`);
  }
}
