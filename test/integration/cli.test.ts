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

/** The JSON lines a `serve` run wrote to stdout so far. */
function logLines(run: Run): Array<Record<string, unknown>> {
  return run
    .stdout()
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** `ws-edge serve` on free ports with exactly `env`; resolves once its start line is out (and the dev banner, in dev mode). */
async function serve(env: Record<string, string>): Promise<{ run: Run; start: Record<string, unknown>; http: string; internal: string }> {
  const run = cli(['serve'], { PORT: '0', INTERNAL_PORT: '0', ...env });
  const start = await waitFor('the start line', () => logLines(run).find((l) => l['event'] === 'start') ?? false, 10_000);
  if ((start['jwt'] as { key: string }).key === 'ephemeral_dev_secret') await waitFor('the dev banner', () => run.stderr().includes('Publish into channel:demo'));
  return { run, start, http: `http://127.0.0.1:${start['port'] as number}`, internal: `http://127.0.0.1:${start['internal_port'] as number}` };
}

/** The pieces of the banner's curl line: URL, bearer key, body. */
function printedCurl(stderr: string): { url: string; key: string; body: Record<string, unknown> } {
  const curl = /curl -sS (\S+) -H "Authorization: Bearer (\S+)" -H 'Content-Type: application\/json' -d '(.+)'/.exec(stderr);
  expect(curl, stderr).not.toBeNull();
  return { url: curl![1]!, key: curl![2]!, body: JSON.parse(curl![3]!) as Record<string, unknown> };
}

describe('zero-config ws-edge serve', () => {
  it('prints a dev token and a connect example on stderr, and that token connects', async () => {
    const run = cli(['serve'], { PORT: '0', INTERNAL_PORT: '0', HOST: '127.0.0.1' });
    await waitFor('the dev banner', () => /npx ws-edge client --url ws:\/\/127\.0\.0\.1:\d+\/api\/v1\/ws\/connect --token \S+/.test(run.stderr()) && run.stderr().includes('curl'));
    const stderr = run.stderr();
    expect(stderr).toContain('ws-edge dev mode');
    // Only what the quick start needs: no tool that is not a prerequisite.
    expect(stderr).not.toContain('websocat');
    const example = /npx ws-edge client --url (ws:\/\/127\.0\.0\.1:(\d+)\/api\/v1\/ws\/connect) --token (\S+)/.exec(stderr);
    expect(example).not.toBeNull();
    const [, url, port, devToken] = example!;
    expect(Number(port)).toBeGreaterThan(0);
    // The token is also printed on its own line.
    expect(stderr.split('\n').map((l) => l.trim())).toContain(devToken);
    // The start log line on stdout names the same port and never carries the token.
    const start = logLines(run).find((l) => l['event'] === 'start');
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

  it('binds 127.0.0.1 without HOST, turns the publish API on with a printed key (new each start) whose printed curl publishes into channel:demo, where presence and history are on', async () => {
    const { run, start, http, internal } = await serve({});
    expect(start).toMatchObject({ host: '127.0.0.1', publish_api: true, presence: { rooms: ['channel:demo'] }, history: { rooms: ['channel:demo'] } });
    const stderr = run.stderr();
    expect(stderr).toContain(`Browser demo (dev mode only): ${http}/dev/demo`);
    expect(stderr).toContain('the public port on 127.0.0.1 only (HOST=0.0.0.0 opens it)');
    const key = /Publish API key \(dev, new each start\): (\S+)/.exec(stderr)![1]!;
    expect(Buffer.byteLength(key)).toBeGreaterThanOrEqual(32);
    expect(run.stdout()).not.toContain(key);

    const dev = open(`${http.replace('http', 'ws')}/api/v1/ws/connect`, /^ {2}(eyJ\S+)$/m.exec(stderr)![1]!);
    await dev.next((e) => e.type === 'connected');
    dev.send({ type: 'join_room', room: 'channel:demo', id: 'j' });
    // Sequenced: the join answers with the room's position.
    expect(await dev.next((e) => e.id === 'j')).toMatchObject({ type: 'room_joined', room: 'channel:demo', offset: 0 });
    dev.send({ type: 'presence', room: 'channel:demo', id: 'p' });
    expect(await dev.next((e) => e.id === 'p')).toMatchObject({ type: 'presence', room: 'channel:demo' });

    // The printed curl, run as written.
    const curl = printedCurl(stderr);
    expect(curl).toMatchObject({ url: `${internal}/api/v1/publish`, key, body: { room: 'channel:demo', type: 'message.new' } });
    const res = await fetch(curl.url, { method: 'POST', headers: { Authorization: `Bearer ${curl.key}`, 'Content-Type': 'application/json' }, body: JSON.stringify(curl.body) });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'published', room: 'channel:demo', offset: 1 });
    expect(await dev.next((e) => e.type === 'message.new')).toMatchObject({ room: 'channel:demo', sender: 'backend', data: { text: 'hello from the backend' }, offset: 1 });
    dev.close();

    // A new start, a new key.
    const again = await serve({});
    expect(printedCurl(again.run.stderr()).key).not.toBe(key);
  });

  it('keeps what is set: HOST, PUBLISH_API_KEY (never printed), WS_PRESENCE_ROOMS and WS_HISTORY_ROOMS', async () => {
    const apiKey = 'configured-publish-key-0123456789abcdef';
    const { run, start, internal } = await serve({ HOST: '127.0.0.1', PUBLISH_API_KEY: apiKey, WS_PRESENCE_ROOMS: 'project:*', WS_HISTORY_ROOMS: 'task:*' });
    expect(start).toMatchObject({ host: '127.0.0.1', publish_api: true, presence: { rooms: ['project:*'] }, history: { rooms: ['task:*'] } });
    const stderr = run.stderr();
    expect(stderr).not.toContain(apiKey);
    expect(stderr).not.toContain('Dev defaults');
    expect(printedCurl(stderr)).toMatchObject({ url: `${internal}/api/v1/publish`, key: '$PUBLISH_API_KEY' });
  });
});

describe('the dev routes: /dev/token, /dev/publish, /dev/demo', () => {
  it('in dev mode: /dev/token mints a short-lived token for a user, /dev/publish publishes as the backend', async () => {
    const { http } = await serve({});
    const answer = await fetch(`${http}/dev/token?user=erin`);
    expect(answer.status).toBe(200);
    expect(answer.headers.get('cache-control')).toBe('no-store');
    const { token: tok, user_id: userId, expires_at: expiresAt } = (await answer.json()) as { token: string; user_id: string; expires_at: string };
    expect(userId).toBe('erin');
    const { exp, sub, username, rooms } = decodePart(tok.split('.')[1]!) as { exp: number; sub: string; username: string; rooms: string[] };
    expect({ sub, username, rooms }).toEqual({ sub: 'erin', username: 'erin', rooms: ['*'] });
    expect(exp * 1000 - Date.now()).toBeGreaterThan(500_000);
    expect(exp * 1000 - Date.now()).toBeLessThanOrEqual(600_000);
    expect(Math.abs(Date.parse(expiresAt) - exp * 1000)).toBeLessThan(2000);

    const erin = open(`${http.replace('http', 'ws')}/api/v1/ws/connect`, tok);
    expect(await erin.next((e) => e.type === 'connected')).toMatchObject({ data: { user_id: 'erin', username: 'erin' } });
    erin.send({ type: 'join_room', room: 'channel:demo', id: 'j' });
    await erin.next((e) => e.id === 'j');

    const published = await fetch(`${http}/dev/publish`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ room: 'channel:demo', text: 'from the button' }) });
    expect(published.status).toBe(200);
    expect(await published.json()).toMatchObject({ status: 'published', room: 'channel:demo', offset: 1 });
    expect(await erin.next((e) => e.type === 'message.new')).toMatchObject({ sender: 'backend', data: { text: 'from the button' } });
    erin.close();

    expect(decodePart((((await (await fetch(`${http}/dev/token`)).json()) as { token: string }).token).split('.')[1]!)).toMatchObject({ sub: 'dev' });
    const bad = await fetch(`${http}/dev/token?user=${encodeURIComponent('a b')}`);
    expect(bad.status).toBe(400);
    const message = '"user" must be 1-64 of [A-Za-z0-9_-]';
    expect(await bad.json()).toEqual({ code: 'invalid_user_id', message, error: 'invalid_user_id', reason: message });
    // A cross-site form cannot send JSON without a preflight: anything else is refused.
    const form = await fetch(`${http}/dev/publish`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: JSON.stringify({ room: 'channel:demo', text: 'x' }) });
    expect(form.status).toBe(400);
    const room = await fetch(`${http}/dev/publish`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ room: 'lobby', text: 'x' }) });
    expect(await room.json()).toMatchObject({ code: 'invalid_room', error: 'invalid_room' });
    const page = await fetch(`${http}/dev/demo`);
    expect(page.status).toBe(200);
    expect(await page.text()).not.toMatch(/eyJ/);
  });

  it.each([
    ['a configured JWT_SECRET', { JWT_SECRET: TEST_SECRET }],
    ['NODE_ENV=production', { NODE_ENV: 'production', JWT_SECRET: TEST_SECRET, PUBLISH_API_KEY: 'production-publish-key-0123456789abcdef' }],
  ])('serves none of them with %s', async (_what, env) => {
    const { run, http } = await serve({ HOST: '127.0.0.1', ...env });
    expect(run.stderr()).toBe('');
    for (const path of ['/dev/demo', '/dev/token?user=erin', '/dev/client/index.js']) {
      const res = await fetch(`${http}${path}`);
      expect({ path, status: res.status }).toEqual({ path, status: 404 });
    }
    const publish = await fetch(`${http}/dev/publish`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"room":"channel:demo","text":"x"}' });
    expect(publish.status).toBe(404);
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

  it('without a token or JWT_SECRET, takes one from a dev-mode node\'s /dev/token (the quick start\'s smoke check)', async () => {
    const { http } = await serve({});
    const url = `${http.replace('http', 'ws')}/api/v1/ws/connect`;
    const run = cli(['client', '--demo', '--url', url]);
    expect(await run.exited).toBe(0);
    expect(run.stdout()).toContain('demo passed');
    const as = cli(['client', '--demo', '--url', url, '--user', 'frank']);
    expect(await as.exited).toBe(0);
    expect(as.stdout()).toContain('frank');
  });

  it('without a token or JWT_SECRET, exits 2 naming the ways to give one when the node is not in dev mode', async () => {
    const node = await startTestNode();
    const run = cli(['client', '--demo', '--url', node.url]);
    expect(await run.exited).toBe(2);
    expect(run.stderr()).toContain('ws-edge: no token: pass --token or WS_EDGE_TOKEN, or --user with JWT_SECRET');
    expect(run.stderr()).toContain('HTTP 404; only a node in dev mode does');
  });

  it('exits non-zero when the token is invalid', async () => {
    const node = await startTestNode();
    const forged = token('alice').slice(0, -4) + 'AAAA';
    const run = cli(['client', '--demo', '--url', node.url, '--token', forged]);
    expect(await run.exited).toBe(1);
    expect(run.stdout()).not.toContain('demo passed');
    expect(run.stderr()).toContain('demo failed: closed 4401 invalid token: signature');
    expect(await node.metric('wsedge_auth_failures_total', { reason: 'token_invalid' })).toBe(1);
  });
});
