/**
 * A real PostgreSQL server per suite: Debian's `postgresql` (initdb and postgres from
 * /usr/lib/postgresql/<version>/bin, the newest version there) in a temporary directory, on a free
 * loopback port, its unix socket in that directory. initdb refuses to run as root, so a root test
 * run starts both as Debian's `postgres` user (setpriv execs, so the child's pid is the server's).
 * A missing package fails the suite, never skips it.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from './ports.js';
import { removeDirs, tempDir } from './redis-process.js';

const NOT_INSTALLED = 'PostgreSQL not found under /usr/lib/postgresql/<version>/bin: install it (apt-get install postgresql); .ci/run does this';
const START_TIMEOUT_MS = 20_000;
const START_ATTEMPTS = 5;

export interface Postgres {
  /** postgres://postgres@127.0.0.1:<port>/postgres (trust authentication: no password). */
  readonly url: string;
  readonly port: number;
  /** Runs SQL on a fresh connection and closes it. */
  sql(text: string, values?: unknown[]): Promise<pg.QueryResult>;
  /** Applies sql/outbox.sql (the product's migration). */
  migrate(): Promise<void>;
  /** Fast shutdown (SIGINT): resolves once the server has exited; its data stays. */
  stop(): Promise<void>;
  /** Starts it again on the same port and data. */
  start(): Promise<void>;
}

function binDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))) : [];
  const newest = versions.sort((a, b) => Number(b) - Number(a))[0];
  if (newest === undefined) throw new Error(NOT_INSTALLED);
  return join(root, newest, 'bin');
}

/** The command line that runs `argv` as the `postgres` user when this process is root. */
function asServerUser(argv: string[]): [string, string[]] {
  if (process.getuid?.() !== 0) return [argv[0]!, argv.slice(1)];
  return ['setpriv', ['--reuid=postgres', '--regid=postgres', '--init-groups', '--', ...argv]];
}

const servers = new Set<Postgres>();
const dirs: string[] = [];

export async function startPostgres(): Promise<Postgres> {
  const bin = binDir();
  const dir = await tempDir('pg');
  dirs.push(dir);
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString());
    chownSync(dir, uid, gid);
  }
  const data = join(dir, 'data');
  const [cmd, args] = asServerUser([join(bin, 'initdb'), '-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync', '--no-instructions']);
  // cwd: the server user may not be allowed into the test runner's directory.
  execFileSync(cmd, args, { stdio: 'pipe', cwd: dir });

  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let port = 0;
  const spawnServer = async (): Promise<void> => {
    const [command, argv] = asServerUser([join(bin, 'postgres'), '-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=200']);
    const server = spawn(command, argv, { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
    let output = '';
    server.stdout!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    server.stderr!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    let gone = false;
    exited = new Promise((resolve) => server.once('exit', () => resolve()));
    void exited.then(() => (gone = true));
    child = server;
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (gone) throw new Error(`postgres on port ${port} exited before answering: ${output.trim()}`);
      const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 1000 });
      const ok = await client.connect().then(() => client.query('SELECT 1').then(() => true)).catch(() => false);
      await client.end().catch(() => undefined);
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`postgres on port ${port} did not answer within ${START_TIMEOUT_MS} ms: ${output.trim()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const stop = async (): Promise<void> => {
    if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    await exited;
  };
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    try {
      await spawnServer();
      break;
    } catch (err) {
      await stop();
      if (attempt >= START_ATTEMPTS || !/already in use|could not create/.test(String(err))) throw err;
    }
  }
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  const sql = async (text: string, values?: unknown[]): Promise<pg.QueryResult> => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      return await client.query(text, values);
    } finally {
      await client.end();
    }
  };
  const server: Postgres = {
    url,
    port,
    sql,
    migrate: async () => void (await sql(readFileSync(new URL('../../sql/outbox.sql', import.meta.url), 'utf8'))),
    stop,
    start: spawnServer,
  };
  servers.add(server);
  return server;
}

/** Stops every server started by this file and removes their directories. */
export async function stopAllPostgres(): Promise<void> {
  await Promise.all([...servers].map((s) => s.stop()));
  servers.clear();
  await removeDirs(dirs.splice(0));
}
