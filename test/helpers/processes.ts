/**
 * ws-edge nodes as separate OS processes (`node dist/cli.js serve`), for what only real processes
 * show: several nodes behind a load balancer, kill -9, exit status. Runs the built dist/.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { readLines } from './lines.js';
import { sampleValue, TEST_SECRET } from './node.js';
import { createWaiters } from './wait.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const START_TIMEOUT_MS = 10_000;

export type LogLine = Record<string, unknown>;

export interface NodeProcess {
  readonly child: ChildProcess;
  readonly port: number;
  readonly internalPort: number;
  readonly nodeId: string;
  /** ws://127.0.0.1:<port>/api/v1/ws/connect */
  readonly url: string;
  /** http://127.0.0.1:<port> (public: health and readiness) */
  readonly http: string;
  /** http://127.0.0.1:<internalPort> (metrics and internal APIs) */
  readonly internal: string;
  /** http://127.0.0.1:<PUBLISH_PORT> (the publish thread); undefined without PUBLISH_PORT. */
  readonly publish: string | undefined;
  /** JSON log lines from stdout so far; a line that is not JSON is kept as { unparsed: line }. */
  readonly logs: LogLine[];
  stderr(): string;
  /** Resolves with the first logged (or future) line matching; rejects after `timeoutMs` or on exit. */
  waitForLog(match: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** One sample from the internal /metrics; 0 when the series does not exist yet. */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  /** SIGTERM (graceful drain), resolves on exit. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL, resolves on exit. */
  kill9(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const children = new Set<ChildProcess>();

/**
 * Spawns `ws-edge serve` on random ports with a test JWT secret and exactly `env` on top (plus
 * PATH: nothing leaks in from the test runner), and resolves on its `start` log line.
 * WS_DRAIN_TIMEOUT defaults to 2 s so stop() is quick; pass it to test draining.
 */
export function startNodeProcess(env: Record<string, string> = {}, opts: { openFiles?: number; nodeArgs?: readonly string[] } = {}): Promise<NodeProcess> {
  // `openFiles`: the process's open-files limit (soft and hard), set by prlimit, which then becomes the node.
  // `nodeArgs`: options of node itself (--inspect), before the script.
  const node = [process.execPath, ...(opts.nodeArgs ?? []), 'dist/cli.js', 'serve'];
  const [command, args] = opts.openFiles === undefined ? [node[0]!, node.slice(1)] : ['prlimit', [`--nofile=${opts.openFiles}`, ...node]];
  const child = spawn(command, args, {
    cwd: ROOT,
    env: {
      PATH: process.env['PATH'] ?? '',
      HOST: '127.0.0.1',
      PORT: '0',
      INTERNAL_HOST: '127.0.0.1',
      INTERNAL_PORT: '0',
      LOG_LEVEL: 'info',
      JWT_SECRET: TEST_SECRET,
      WS_DRAIN_TIMEOUT: '2',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);

  const logs: LogLine[] = [];
  const { wake, until } = createWaiters();
  let stderr = '';
  readLines(child.stdout!, (line) => {
    try {
      logs.push(JSON.parse(line) as LogLine);
    } catch {
      logs.push({ unparsed: line });
    }
    wake();
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.once('error', (err) => (stderr += `spawn failed: ${err.message}\n`));

  // Set before the waiters are woken: a node that exits at start fails its wait at once.
  let hasExited = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      hasExited = true;
      resolve({ code, signal });
      wake();
    }),
  );

  const waitForLog: NodeProcess['waitForLog'] = (match, timeoutMs = 5000) =>
    until(
      () => {
        const found = logs.find(match);
        if (found) return found;
        if (hasExited) throw new Error(`node exited (${child.exitCode ?? child.signalCode}) while waiting for a log line; stderr: ${stderr.trim()}`);
        return undefined;
      },
      timeoutMs,
      () => `timed out after ${timeoutMs} ms waiting for a log line; last lines: ${JSON.stringify(logs.slice(-5))}; stderr: ${stderr.trim()}`,
    );

  const signal = async (sig: NodeJS.Signals) => {
    if (!hasExited) child.kill(sig);
    return exited;
  };

  return waitForLog((l) => l['event'] === 'start', START_TIMEOUT_MS).then(
    (start) => {
      const port = start['port'] as number;
      const internalPort = start['internal_port'] as number;
      const internal = `http://127.0.0.1:${internalPort}`;
      return {
        child,
        port,
        internalPort,
        nodeId: start['node_id'] as string,
        url: `ws://127.0.0.1:${port}/api/v1/ws/connect`,
        http: `http://127.0.0.1:${port}`,
        internal,
        publish: typeof start['publish_port'] === 'number' ? `http://127.0.0.1:${start['publish_port']}` : undefined,
        logs,
        stderr: () => stderr,
        waitForLog,
        async metric(name, labels = {}) {
          return sampleValue(await (await fetch(`${internal}/metrics`)).text(), name, labels);
        },
        stop: () => signal('SIGTERM'),
        kill9: () => signal('SIGKILL'),
        exited,
      };
    },
    async (err: Error) => {
      child.kill('SIGKILL');
      await exited;
      throw new Error(`ws-edge serve did not start: ${err.message}`);
    },
  );
}

/** SIGKILLs every node process still running; for afterAll. */
export async function stopAllProcesses(): Promise<void> {
  const left = [...children];
  await Promise.all(
    left.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGKILL');
        }),
    ),
  );
  children.clear();
}
