/**
 * The `ws-edge` command line, run as a real process: `token`, the zero-config `serve` banner, and
 * the demo client against a running node.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createVerifier } from 'fast-jwt';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { open, token } from '../helpers/client.js';
import { startTestNode, stopAllNodes, TEST_SECRET } from '../helpers/node.js';
import { waitFor } from '../helpers/wait.js';

afterAll(stopAllNodes);

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const children = new Set<ChildProcess>();

afterEach(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  children.clear();
});

interface Run {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  readonly exited: Promise<number | null>;
}

/**
 * Runs `node dist/cli.js ...args` asynchronously (never spawnSync: the in-process test node must
 * keep serving) with exactly `env` plus PATH, so nothing leaks in from the test runner.
 */
function cli(args: string[], env: Record<string, string> = {}): Run {
  const child = spawn(process.execPath, ['dist/cli.js', ...args], {
    cwd: ROOT,
    env: { PATH: process.env['PATH'] ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

function decodePart(part: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;
}


describe('ws-edge token', () => {
  it('prints an HS256 JWT with sub, rooms and exp about --ttl seconds ahead', async () => {
    const run = cli(['token', '--user', 'alice', '--rooms', 'project:*,channel:1', '--ttl', '60'], { JWT_SECRET: TEST_SECRET });
    expect(await run.exited).toBe(0);
    const now = Math.floor(Date.now() / 1000);
    const lines = run.stdout().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[1]).toBe('');
    const jwt = lines[0]!;
    const parts = jwt.split('.');
    expect(parts).toHaveLength(3);
    expect(decodePart(parts[0]!)).toMatchObject({ alg: 'HS256', typ: 'JWT' });
    const payload = decodePart(parts[1]!);
    expect(payload['sub']).toBe('alice');
    expect(payload['rooms']).toEqual(['project:*', 'channel:1']);
    expect(payload['exp']).toBeGreaterThanOrEqual(now + 60 - 5);
    expect(payload['exp']).toBeLessThanOrEqual(now + 60 + 1);
    // Signed with JWT_SECRET.
    expect(createVerifier({ key: TEST_SECRET, algorithms: ['HS256'] })(jwt)).toMatchObject({ sub: 'alice' });
    expect(run.stderr()).toBe('');
  });

  it('defaults rooms to "*"', async () => {
    const run = cli(['token', '--user', 'bob'], { JWT_SECRET: TEST_SECRET });
    expect(await run.exited).toBe(0);
    expect(decodePart(run.stdout().trim().split('.')[1]!)).toMatchObject({ sub: 'bob', rooms: ['*'] });
  });

  it('exits 2 without a secret', async () => {
    const run = cli(['token', '--user', 'alice']);
    expect(await run.exited).toBe(2);
    expect(run.stdout()).toBe('');
    expect(run.stderr()).toContain('ws-edge: a secret is needed: --secret or JWT_SECRET');
  });

  it('exits 2 without --user', async () => {
    const run = cli(['token'], { JWT_SECRET: TEST_SECRET });
    expect(await run.exited).toBe(2);
    expect(run.stderr()).toContain('--user is required');
  });
});

describe('zero-config ws-edge serve', () => {
  it('prints a dev token and a connect example on stderr, and that token connects', async () => {
    const run = cli(['serve'], { PORT: '0', INTERNAL_PORT: '0', HOST: '127.0.0.1' });
    await waitFor('the dev banner', () => /websocat "ws:\/\/127\.0\.0\.1:\d+\/api\/v1\/ws\/connect\?token=[^"]+"/.test(run.stderr()));
    const stderr = run.stderr();
    expect(stderr).toContain('ws-edge dev mode');
    const example = /npx ws-edge client --url (ws:\/\/127\.0\.0\.1:(\d+)\/api\/v1\/ws\/connect) --token (\S+)/.exec(stderr);
    expect(example).not.toBeNull();
    const [, url, port, devToken] = example!;
    expect(Number(port)).toBeGreaterThan(0);
    // The token is also printed on its own line.
    expect(stderr.split('\n').map((l) => l.trim())).toContain(devToken);
    // The start log line on stdout names the same port and never carries the token.
    const start = run
      .stdout()
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l['event'] === 'start');
    expect(start).toMatchObject({ port: Number(port), jwt: { key: 'ephemeral_dev_secret' } });
    expect(run.stdout()).not.toContain(devToken!);

    const client = open(url!, devToken);
    const hello = await client.next((e) => e.type === 'connected');
    expect(hello.data).toMatchObject({ user_id: 'dev', username: 'dev', rooms: ['user:dev'] });
    client.send({ type: 'join_room', room: 'project:1', id: 'j' });
    expect(await client.next((e) => e.id === 'j')).toMatchObject({ type: 'room_joined', room: 'project:1' });
    client.close();
    await client.closed;
  });
});

describe('ws-edge client --demo', () => {
  it('exits 0 and prints "demo passed" against a running node', async () => {
    const node = await startTestNode();
    const run = cli(['client', '--demo', '--url', node.url, '--token', token('alice')]);
    expect(await run.exited).toBe(0);
    expect(run.stdout()).toContain('demo passed');
    expect(run.stdout()).toContain('ok   connected');
    expect(run.stdout()).toContain('ok   send and receive message.new');
    expect(run.stderr()).toBe('');
    // The demo ends with a normal close, not a dropped connection.
    await waitFor('the node to see the demo close', () => node.connections() === 0);
    expect(await node.metric('wsedge_connections_closed_total', { code: '1000' })).toBe(1);
  });

  it('also passes with the token in the query string, or minted from --user and JWT_SECRET', async () => {
    const node = await startTestNode();
    const query = cli(['client', '--demo', '--query-token', '--url', node.url, '--token', token('alice')]);
    const minted = cli(['client', '--demo', '--url', node.url, '--user', 'carol'], { JWT_SECRET: TEST_SECRET });
    expect(await query.exited).toBe(0);
    expect(await minted.exited).toBe(0);
    expect(query.stdout()).toContain('demo passed');
    expect(minted.stdout()).toContain('demo passed');
  });

  it('exits non-zero when the token is invalid', async () => {
    const node = await startTestNode();
    const forged = token('alice').slice(0, -4) + 'AAAA';
    const run = cli(['client', '--demo', '--url', node.url, '--token', forged]);
    expect(await run.exited).toBe(1);
    expect(run.stdout()).not.toContain('demo passed');
    expect(run.stderr()).toContain('demo failed: closed 4401 invalid token');
    expect(await node.metric('wsedge_auth_failures_total', { reason: 'token_invalid' })).toBe(1);
  });
});
