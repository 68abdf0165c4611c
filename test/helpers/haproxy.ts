/**
 * The shipped HAProxy config (deploy/haproxy/haproxy.cfg), run as is in the foreground in front of
 * three ws-edge nodes; only its environment variables differ from production.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { readLines } from './lines.js';
import { freePort } from './ports.js';
import { createWaiters } from './wait.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CONFIG = 'deploy/haproxy/haproxy.cfg';
const NOT_INSTALLED = 'haproxy not found: install it (apt-get install haproxy); .ci/run does this';
const START_TIMEOUT_MS = 10_000;
const START_ATTEMPTS = 5;

export interface Haproxy {
  readonly port: number;
  /** ws://127.0.0.1:<port>/api/v1/ws/connect */
  readonly url: string;
  /** http://127.0.0.1:<port> */
  readonly http: string;
  /** http://127.0.0.1:<statsPort>/stats (append ;csv for CSV) */
  readonly stats: string;
  /** ws-edge-1..3 as the stats page reports them now. */
  servers(): Promise<BackendServer[]>;
  /**
   * Every line HAProxy wrote (stdout and stderr): access logs and server state changes. A
   * WebSocket's access line is written when the connection closes.
   */
  readonly logs: string[];
  /** Resolves with the first `count` lines matching once that many exist; rejects after `timeoutMs`. */
  waitForLogs(match: (line: string) => boolean, count?: number, timeoutMs?: number): Promise<string[]>;
  /** SIGTERM (HAProxy's hard stop), resolves on exit. */
  stop(): Promise<void>;
}

export interface BackendServer {
  /** ws-edge-1, ws-edge-2 or ws-edge-3 (WSEDGE_NODE1..3). */
  readonly name: string;
  /** e.g. 'UP', 'DOWN', 'UP 1/2' (going down), 'DOWN 1/2' (going up), 'MAINT'. */
  readonly status: string;
  /** Result of the last health check, e.g. 'L7OK', 'L7STS', 'L4CON'; '' or 'INI' before the first (a running check's '* ' prefix removed). */
  readonly check: string;
}

export interface HaproxyOptions {
  /**
   * Extra environment for the config. HAPROXY_MAXCONN defaults to 1000 here: the config's own
   * default needs a file limit of about 16k, which a test machine may not grant.
   */
  readonly env?: Record<string, string>;
}

const running = new Set<Haproxy>();

/**
 * Starts HAProxy with WSEDGE_NODE1..3 at 127.0.0.1:<backendPorts> and resolves once its frontend
 * accepts TCP, every server has had its first health check and one passed (HAProxy starts servers
 * as UP before checking them), and a GET /readyz through it returns 200.
 */
export async function startHaproxy(backendPorts: number[], opts: HaproxyOptions = {}): Promise<Haproxy> {
  if (backendPorts.length !== 3) throw new Error(`the config has exactly 3 servers; got ${backendPorts.length} ports`);
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    // Two calls may get the same port back; HAProxy binds with SO_REUSEPORT, so both frontends
    // would then share it and answer each other's requests (the stats page served by ws-edge: 404).
    let statsPort = await freePort();
    while (statsPort === port) statsPort = await freePort();
    try {
      return await spawnHaproxy(port, statsPort, backendPorts, opts.env ?? {});
    } catch (err) {
      // The port can be taken between freePort() and HAProxy binding it.
      if (attempt >= START_ATTEMPTS || !/cannot bind socket|Address already in use/i.test(String(err))) throw err;
    }
  }
}

/** Stops every HAProxy started by this worker; for afterAll. */
export async function stopAllHaproxy(): Promise<void> {
  await Promise.all([...running].map((h) => h.stop()));
}

async function spawnHaproxy(port: number, statsPort: number, backendPorts: number[], env: Record<string, string>): Promise<Haproxy> {
  const child: ChildProcess = spawn('haproxy', ['-f', CONFIG, '-db'], {
    cwd: ROOT,
    env: {
      // Debian installs haproxy in /usr/sbin, which a non-root PATH may lack.
      PATH: `${process.env['PATH'] ?? ''}:/usr/local/sbin:/usr/sbin`,
      HAPROXY_BIND: `127.0.0.1:${port}`,
      HAPROXY_STATS_BIND: `127.0.0.1:${statsPort}`,
      HAPROXY_MAXCONN: '1000',
      WSEDGE_NODE1: `127.0.0.1:${backendPorts[0]}`,
      WSEDGE_NODE2: `127.0.0.1:${backendPorts[1]}`,
      WSEDGE_NODE3: `127.0.0.1:${backendPorts[2]}`,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  const logs: string[] = [];
  const { wake, until } = createWaiters();
  const onLine = (line: string): void => {
    logs.push(line);
    wake();
  };
  readLines(child.stdout!, onLine);
  readLines(child.stderr!, onLine);

  let failure: Error | undefined;
  const exited = new Promise<void>((resolve) => {
    // A process that could not be spawned emits 'error' and no 'exit'.
    child.once('error', (err: NodeJS.ErrnoException) => {
      failure = err.code === 'ENOENT' ? new Error(NOT_INSTALLED) : err;
      if (child.pid === undefined) resolve();
    });
    child.once('exit', (code, sig) => {
      failure ??= new Error(`haproxy exited (${code ?? sig}): ${logs.join('\n')}`);
      resolve();
      wake();
    });
  });
  const stop = async () => {
    running.delete(haproxy);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };

  const http = `http://127.0.0.1:${port}`;
  const stats = `http://127.0.0.1:${statsPort}/stats`;
  const servers = () => readServers(stats);
  const haproxy: Haproxy = {
    port,
    url: `ws://127.0.0.1:${port}/api/v1/ws/connect`,
    http,
    stats,
    servers,
    logs,
    waitForLogs: (match, count = 1, timeoutMs = 5000) =>
      until(
        () => {
          const found = logs.filter(match);
          return found.length >= count ? found.slice(0, count) : undefined;
        },
        timeoutMs,
        () => `timed out after ${timeoutMs} ms waiting for ${count} haproxy log lines; last lines:\n${logs.slice(-10).join('\n')}`,
      ),
    stop,
  };
  running.add(haproxy);

  const deadline = Date.now() + START_TIMEOUT_MS;
  try {
    while (!(await acceptsTcp(port))) await pause(deadline, () => failure);
    while (!checked(await servers().catch(() => []))) await pause(deadline, () => failure);
    while (!(await readyThrough(http))) await pause(deadline, () => failure);
  } catch (err) {
    await stop();
    throw err === failure ? err : new Error(`${(err as Error).message}; haproxy output:\n${logs.join('\n')}`);
  }
  return haproxy;
}

async function pause(deadline: number, failure: () => Error | undefined): Promise<void> {
  const failed = failure();
  if (failed) throw failed;
  if (Date.now() > deadline) throw new Error(`haproxy did not become ready with an UP node within ${START_TIMEOUT_MS} ms`);
  await new Promise((r) => setTimeout(r, 50));
}

function checked(servers: BackendServer[]): boolean {
  const done = servers.length === 3 && servers.every((s) => s.check !== '' && !s.check.startsWith('INI'));
  return done && servers.some((s) => s.status === 'UP' && s.check === 'L7OK');
}

async function readServers(stats: string): Promise<BackendServer[]> {
  const res = await fetch(`${stats};csv`, { signal: AbortSignal.timeout(1000) });
  if (!res.ok) throw new Error(`haproxy stats answered ${res.status}`);
  const [header, ...rows] = (await res.text()).trim().split('\n');
  const columns = header!.replace(/^# /, '').split(',');
  const at = (name: string) => columns.indexOf(name);
  return rows
    .map((row) => row.split(','))
    .filter((f) => f[at('pxname')] === 'ws_edge_nodes' && f[at('svname')] !== 'BACKEND')
    .map((f) => ({ name: f[at('svname')]!, status: f[at('status')]!, check: f[at('check_status')]!.replace(/^\* /, '') }));
}

function acceptsTcp(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function readyThrough(http: string): Promise<boolean> {
  try {
    const res = await fetch(`${http}/readyz`, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}
