/**
 * Graceful drain and start-up validation of the real process (`node dist/cli.js serve`), because
 * what matters here is what an orchestrator sees: readiness, close codes, timing and exit status.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect as tcpConnect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { connect, type TestClient } from '../helpers/client.js';
import { readLines } from '../helpers/lines.js';
import { TEST_SECRET } from '../helpers/node.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = 'dist/cli.js';

interface Served {
  readonly child: ChildProcess;
  /** Parsed JSON log lines from stdout. */
  readonly logs: Array<Record<string, unknown>>;
  stderr(): string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  /** The `start` log line. */
  readonly started: Promise<Record<string, unknown>>;
}

const children = new Set<ChildProcess>();

afterEach(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  children.clear();
});

/** Spawns `ws-edge serve` with exactly `env` (plus PATH): nothing leaks in from the test runner. */
function serve(env: Record<string, string>): Served {
  const child = spawn(process.execPath, [CLI, 'serve'], {
    cwd: ROOT,
    env: { PATH: process.env['PATH'] ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const logs: Array<Record<string, unknown>> = [];
  let stderr = '';
  let onStart: (line: Record<string, unknown>) => void = () => {};
  const started = new Promise<Record<string, unknown>>((resolve, reject) => {
    onStart = resolve;
    child.once('exit', (code) => reject(new Error(`exited ${code} before start; stderr: ${stderr}`)));
  });
  readLines(child.stdout!, (line) => {
    const parsed = JSON.parse(line) as Record<string, unknown>;
    logs.push(parsed);
    if (parsed['event'] === 'start') onStart(parsed);
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })),
  );
  // An unhandled rejection of `started` would fail the run when the process exits on purpose.
  started.catch(() => {});
  return { child, logs, stderr: () => stderr, exited, started };
}

const baseEnv = {
  HOST: '127.0.0.1',
  PORT: '0',
  INTERNAL_PORT: '0',
  JWT_SECRET: TEST_SECRET,
  LOG_LEVEL: 'info',
};

async function readyz(internal: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${internal}/readyz`);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

function refusesTcp(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      reject(new Error('the public port still accepts connections'));
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'unknown'));
  });
}

describe('graceful drain on SIGTERM (WS_DRAIN_TIMEOUT=3)', () => {
  it('turns /readyz 503, closes every client with 1012 spread over the window, and exits 0 in time', async () => {
    const served = serve({ ...baseEnv, WS_DRAIN_TIMEOUT: '3' });
    const start = await served.started;
    const port = start['port'] as number;
    const internal = `http://127.0.0.1:${start['internal_port'] as number}`;
    expect(port).toBeGreaterThan(0);
    expect(start['internal_port']).toBeGreaterThan(0);
    expect(start['drain_timeout_s']).toBe(3);

    const url = `ws://127.0.0.1:${port}/api/v1/ws/connect`;
    const clients: TestClient[] = await Promise.all(Array.from({ length: 20 }, (_, i) => connect(url, `user${i}`)));
    expect(await readyz(internal)).toEqual({ status: 200, body: expect.objectContaining({ status: 'ready', connections: 20 }) });
    const closes = clients.map((c) => c.closed.then((close) => ({ ...close, at: Date.now() })));

    const sigterm = Date.now();
    served.child.kill('SIGTERM');

    // Readiness flips first, while the internal port still answers.
    let notReadyAt: number | undefined;
    let notReadyBody: Record<string, unknown> | undefined;
    while (notReadyAt === undefined && Date.now() - sigterm < 2000) {
      const { status, body } = await readyz(internal);
      if (status === 503) {
        notReadyAt = Date.now();
        notReadyBody = body;
      }
    }
    expect(notReadyAt).toBeDefined();
    expect(notReadyAt! - sigterm).toBeLessThan(500);
    expect(notReadyBody).toMatchObject({ status: 'draining' });
    // The public /readyz says 503 too for a short grace (10% of the drain, at most 1 s), so load
    // balancers probing it see the drain; then the listen socket closes.
    const publicReady = await fetch(`http://127.0.0.1:${port}/readyz`);
    expect(publicReady.status).toBe(503);
    let refused: string | undefined;
    // A connect racing the listener's close may be reset instead of refused: poll until refused.
    while (refused !== 'ECONNREFUSED' && Date.now() - sigterm < 1500) refused = await refusesTcp(port).catch(() => undefined);
    expect(refused).toBe('ECONNREFUSED');

    const closed = await Promise.all(closes);
    for (const close of closed) expect({ code: close.code, reason: close.reason }).toEqual({ code: 1012, reason: 'service restart' });
    const times = closed.map((c) => c.at - sigterm);
    // Spread over the window so clients do not all reconnect at once, and all inside it.
    expect(Math.max(...times) - Math.min(...times)).toBeGreaterThan(500);
    expect(Math.max(...times)).toBeLessThan(3000);

    const exit = await served.exited;
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(exit.at - sigterm).toBeLessThan(3000);
    const events = served.logs.map((l) => l['event']);
    expect(events).toContain('drain_start');
    expect(events).toContain('drain_done');
    expect(served.logs.find((l) => l['event'] === 'drain_start')).toMatchObject({ connections: 20, drain_timeout_ms: 3000 });
  }, 15_000);

  // The start line is what a supervisor (and this test) waits for, so a signal right after it
  // must already be handled: drained and exit 0, never killed by the default signal action.
  it('handles SIGINT sent right after the start line, exiting 0 at once with nothing to drain', async () => {
    const served = serve({ ...baseEnv, WS_DRAIN_TIMEOUT: '3' });
    await served.started;
    const sigterm = Date.now();
    served.child.kill('SIGINT');
    const exit = await served.exited;
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(exit.at - sigterm).toBeLessThan(1000);
  });
});

describe('start-up validation', () => {
  it('exits non-zero with one stderr line naming WS_HEARTBEAT_INTERVAL when it is below uWS minimum', async () => {
    const served = serve({ ...baseEnv, WS_HEARTBEAT_INTERVAL: '5' });
    const exit = await served.exited;
    expect(exit.code).toBe(1);
    expect(served.stderr().trim().split('\n')).toEqual(['ws-edge: invalid configuration: WS_HEARTBEAT_INTERVAL: 5 is outside 8..960']);
    expect(served.logs.some((l) => l['event'] === 'start')).toBe(false);
  });

  it('reports every bad variable together, one line each', async () => {
    const served = serve({ ...baseEnv, WS_HEARTBEAT_INTERVAL: '5', PORT: 'eighty', WS_MEMBERSHIP_EVENTS: 'maybe' });
    const exit = await served.exited;
    expect(exit.code).toBe(1);
    const lines = served.stderr().trim().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines.some((l) => l.includes('WS_HEARTBEAT_INTERVAL'))).toBe(true);
    expect(lines.some((l) => l.includes('PORT: "eighty" is not an integer'))).toBe(true);
    expect(lines.some((l) => l.includes('WS_MEMBERSHIP_EVENTS'))).toBe(true);
  });

  it('refuses NODE_ENV=production without a JWT key, naming JWT_SECRET', async () => {
    const { JWT_SECRET: _omitted, ...withoutSecret } = baseEnv;
    const served = serve({ ...withoutSecret, NODE_ENV: 'production' });
    const exit = await served.exited;
    expect(exit.code).not.toBe(0);
    expect(exit.code).toBe(1);
    const lines = served.stderr().trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^ws-edge: invalid configuration: JWT_SECRET: /);
    // No dev token is ever printed in production.
    expect(served.stderr()).not.toContain('dev mode');
  });
});
