/**
 * `ws-edge/publisher` from a plain Node process (no vitest, no TypeScript): the package is imported
 * by name through package.json "exports" (self-reference from the repository root), publishes into
 * the Redis two `ws-edge serve` processes share, and every member gets each event once with the
 * exact envelope. Against a stopped Redis a publish rejects instead of hanging, and nothing from
 * that window is delivered once Redis is reachable again.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect as tcpConnect, createServer, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { createSigner } from 'fast-jwt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { join, open, token, type Envelope, type TestClient } from '../helpers/client.js';
import { TEST_SECRET } from '../helpers/node.js';
import { freePort } from '../helpers/ports.js';
import { startNodeProcess, stopAllProcesses, type NodeProcess } from '../helpers/processes.js';
import { startRedis, stopAllRedis, uniquePrefix, type RedisServer } from '../helpers/redis.js';
import { brokerUp, waitSubscribed } from '../helpers/broker-checks.js';
import { createWaiters, waitFor } from '../helpers/wait.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

let redis: RedisServer;
let prefix: string;
let nodeA: NodeProcess;
let nodeB: NodeProcess;
const clients: TestClient[] = [];
const scripts = new Set<ChildProcess>();

interface Script {
  readonly child: ChildProcess;
  /** Stdout lines so far. */
  readonly lines: string[];
  line(match: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

/** Runs `node --input-type=module -e <source>` from the repository root, like a backend would run its own code. */
function runScript(source: string, env: Record<string, string>): Script {
  const child = spawn(process.execPath, ['--input-type=module', '-e', source], {
    cwd: ROOT,
    env: { PATH: process.env['PATH'] ?? '', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  scripts.add(child);
  let stdout = '';
  let stderr = '';
  const lines: string[] = [];
  const { wake, until } = createWaiters();
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    lines.splice(0, lines.length, ...stdout.split('\n').filter((l) => l !== ''));
    wake();
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.once('exit', (code, signal) => {
      scripts.delete(child);
      resolve({ code, signal, stdout, stderr });
      wake();
    }),
  );
  let hasExited = false;
  void exited.then(() => (hasExited = true));
  return {
    child,
    lines,
    exited,
    line: (match, timeoutMs = 10_000) =>
      until(
        () => {
          const found = lines.find(match);
          if (found !== undefined) return found;
          if (hasExited) throw new Error(`script exited (${child.exitCode ?? child.signalCode}) first; stdout: ${stdout}; stderr: ${stderr}`);
          return undefined;
        },
        timeoutMs,
        () => `timed out after ${timeoutMs} ms waiting for a script line; stdout: ${stdout}; stderr: ${stderr}`,
      ),
  };
}

/** Rejects if the script has not exited within `timeoutMs` (it is then killed). */
async function finished(script: Script, timeoutMs = 10_000): Script['exited'] {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      script.child.kill('SIGKILL');
      reject(new Error(`script still running after ${timeoutMs} ms; stdout: ${script.lines.join('\n')}`));
    }, timeoutMs);
  });
  try {
    return await Promise.race([script.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}


/** Cross-node delivery starts once Redis confirms: exactly `count` nodes subscribed to the room. */
const subscribed = (room: string, count: number) => waitSubscribed(redis.port, `${prefix}room:${room}`, count, 10_000);

interface Member {
  readonly client: TestClient;
  readonly connectionId: string;
}

async function member(node: NodeProcess, userId: string, rooms: string[] = []): Promise<Member> {
  const client = open(node.url, token(userId));
  clients.push(client);
  const hello = await client.next((e) => e.type === 'connected');
  for (const room of rooms) await join(client, room);
  return { client, connectionId: hello.data.connection_id as string };
}

/** Application events: not the socket's own replies, nor membership announcements between the members. */
const isEvent = (e: Envelope) => !['connected', 'room_joined', 'pong', 'user_joined', 'user_left'].includes(e.type);

/** Takes exactly the expected events (any order), then checks no further event arrives. */
async function receivesExactly(c: TestClient, expected: unknown[]): Promise<void> {
  const got: Envelope[] = [];
  for (let i = 0; i < expected.length; i++) got.push(await c.next(isEvent, 5000));
  await c.expectNothing(isEvent, 300);
  const key = (e: unknown) => JSON.stringify([(e as Envelope).type, (e as Envelope).room]);
  expect([...got].sort((x, y) => key(x).localeCompare(key(y)))).toStrictEqual([...expected].sort((x, y) => key(x).localeCompare(key(y))));
}

const envelope = (type: string, room: string | null, data: unknown, sender: string | null) => ({ type, room, data, sender, timestamp: expect.stringMatching(ISO) });

const links = new Set<{ close(): Promise<void> }>();

/** Forwards 127.0.0.1:`port` to Redis once `listen()` is called; until then the port refuses connections. */
function forwarder(port: number, targetPort: number) {
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = tcpConnect(targetPort, '127.0.0.1');
    client.pipe(upstream).pipe(client);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => {
        sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
  });
  const link = {
    port,
    listen: () =>
      new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => resolve());
      }),
    close: () =>
      new Promise<void>((resolve) => {
        links.delete(link);
        for (const socket of sockets) socket.destroy();
        if (server.listening) server.close(() => resolve());
        else resolve();
      }),
  };
  links.add(link);
  return link;
}

beforeAll(async () => {
  redis = await startRedis();
  prefix = uniquePrefix();
  const env = { REDIS_URL: redis.url, REDIS_PREFIX: prefix };
  [nodeA, nodeB] = await Promise.all([startNodeProcess(env), startNodeProcess(env)]);
  await Promise.all([nodeA, nodeB].map((n) => waitFor(`node ${n.nodeId} broker up`, () => brokerUp(n.http))));
});

afterEach(async () => {
  const left = clients.splice(0);
  for (const c of left) c.close();
  await Promise.all(left.map((c) => c.closed));
});

afterAll(async () => {
  for (const child of scripts) child.kill('SIGKILL');
  await Promise.all([...links].map((l) => l.close()));
  await stopAllProcesses();
  await stopAllRedis();
});

describe('ws-edge/publisher from a plain Node process', () => {
  it('delivers every helper to each member on both nodes exactly once with the exact envelope, and disconnects a user everywhere', async () => {
    const dan = await member(nodeA, 'dan', ['project:7', 'channel:1']);
    const eve = await member(nodeB, 'eve', ['project:7', 'task:42', 'channel:1']);
    const bob = [await member(nodeA, 'bob'), await member(nodeB, 'bob')];
    const fay = { onB: await member(nodeB, 'fay'), onA: await member(nodeA, 'fay') };
    const carol = [await member(nodeA, 'carol'), await member(nodeB, 'carol')];
    await subscribed('project:7', 2);
    await subscribed('channel:1', 2);
    await subscribed('task:42', 1);
    await subscribed('user:bob', 2);

    const script = runScript(
      `
      import { createPublisher } from 'ws-edge/publisher';
      const publisher = createPublisher({ redisUrl: process.env.REDIS_URL, prefix: process.env.PREFIX });
      await publisher.taskCreated({ projectId: '7', taskId: '42', task: { title: 'x' }, by: 'svc' });
      await publisher.notificationNew({ userId: 'bob', notification: { n: 1 } });
      await publisher.publish('channel:1', 'message.new', { text: 'hi' }, 'svc');
      await publisher.sendToConnection(process.env.CONNECTION_ID, 'notification.new', { direct: true }, 'svc');
      await publisher.disconnectUser('carol');
      await publisher.close();
      console.log('done');
      `,
      { REDIS_URL: redis.url, PREFIX: prefix, CONNECTION_ID: fay.onB.connectionId },
    );
    expect(await finished(script)).toEqual({ code: 0, signal: null, stdout: 'done\n', stderr: '' });

    const task = { task_id: '42', project_id: '7', task: { title: 'x' } };
    const hi = envelope('message.new', 'channel:1', { text: 'hi' }, 'svc');
    await Promise.all([
      receivesExactly(dan.client, [envelope('task.created', 'project:7', task, 'svc'), hi]),
      receivesExactly(eve.client, [envelope('task.created', 'project:7', task, 'svc'), envelope('task.created', 'task:42', task, 'svc'), hi]),
      ...bob.map((b) => receivesExactly(b.client, [envelope('notification.new', 'user:bob', { n: 1 }, null)])),
      receivesExactly(fay.onB.client, [envelope('notification.new', null, { direct: true }, 'svc')]),
      receivesExactly(fay.onA.client, []),
    ]);
    for (const c of carol) expect(await c.client.closed).toEqual({ code: 4403, reason: 'disconnected' });
  });

  it('revokes a user\'s tokens issued before a time and one token by jti on both nodes, refusing bad arguments with TypeErrors', async () => {
    const aged = (userId: string, claims: Record<string, unknown> = {}) =>
      createSigner({ key: TEST_SECRET, algorithm: 'HS256', expiresIn: 600_000, clockTimestamp: Date.now() - 5000 })({ sub: userId, rooms: ['*'], ...claims });
    const gina = [open(nodeA.url, aged('gina')), open(nodeB.url, aged('gina'))];
    const marked = open(nodeB.url, aged('hank', { jti: 'hank-session-1' }));
    const other = open(nodeA.url, aged('hank', { jti: 'hank-session-2' }));
    clients.push(...gina, marked, other);
    await Promise.all([...gina, marked, other].map((c) => c.next((e) => e.type === 'connected')));

    const script = runScript(
      `
      import { createPublisher, RevocationsFullError } from 'ws-edge/publisher';
      const publisher = createPublisher({ redisUrl: process.env.REDIS_URL, prefix: process.env.PREFIX });
      const refused = [];
      for (const [user, before] of [['no spaces', new Date()], ['gina', 'yesterday'], ['gina', Date.now() / 1000 + 3600], ['gina', -5]]) {
        await publisher.revokeUser(user, before).then(() => refused.push('accepted'), (err) => refused.push(err.constructor.name));
      }
      for (const jti of ['', 'has space', 'x'.repeat(129)]) await publisher.revokeToken(jti).then(() => refused.push('accepted'), (err) => refused.push(err.constructor.name));
      console.log(JSON.stringify({ refused }));
      // 2 s ago: covers the tokens issued 5 s ago, not one issued now (iat has whole seconds).
      const user = await publisher.revokeUser('gina', new Date(Date.now() - 2000));
      const token = await publisher.revokeToken('hank-session-1');
      console.log(JSON.stringify({ user: user.expiresAt.getTime() - Date.now(), token: token.expiresAt.getTime() - Date.now(), full: typeof RevocationsFullError }));
      await publisher.close();
      `,
      { REDIS_URL: redis.url, PREFIX: prefix },
    );
    const result = await finished(script);
    expect(result.stderr).toBe('');
    const [bad, done] = result.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(bad).toEqual({ refused: Array(7).fill('TypeError') });
    // Kept JWT_MAX_LIFETIME + JWT_CLOCK_TOLERANCE (the defaults: 86,400 + 5 s) after the time revoked.
    expect(done!['user']).toBeGreaterThan(86_402_000);
    expect(done!['user']).toBeLessThanOrEqual(86_403_000);
    expect(done!['full']).toBe('function');

    const closes = await Promise.all([...gina, marked].map((c) => c.closed));
    expect(closes).toEqual(Array(3).fill({ code: 4401, reason: 'token revoked' }));
    await other.expectNothing(() => true, 200);
    const again = await Promise.all([nodeA, nodeB].map((n) => open(n.url, aged('gina')).closed));
    expect(again).toEqual(Array(2).fill({ code: 4401, reason: 'token revoked' }));
    const fresh = open(nodeB.url, token('gina'));
    clients.push(fresh);
    await fresh.next((e) => e.type === 'connected');
    console.log(`publisher revoke: 7 of 7 bad arguments refused with a TypeError; 2 connections of the user on 2 nodes and the jti's 1 closed 4401 token revoked, the user's other token kept; the old token refused at upgrade on 2 of 2 nodes, a newer one accepted`);
  });

  it('rejects a publish while Redis is stopped instead of hanging', async () => {
    const down = await startRedis();
    await down.stop();
    const script = runScript(
      `
      import { createPublisher } from 'ws-edge/publisher';
      const publisher = createPublisher({ redisUrl: process.env.REDIS_URL, prefix: process.env.PREFIX });
      const started = Date.now();
      const outcome = await Promise.race([
        publisher.publish('channel:9', 'task.updated', { phase: 'down' }).then(() => 'resolved', () => 'rejected'),
        new Promise((resolve) => setTimeout(() => resolve('still pending after 10 s'), 10000)),
      ]);
      console.log(JSON.stringify({ outcome, ms: Date.now() - started }));
      await publisher.close();
      process.exit(0);
      `,
      { REDIS_URL: down.url, PREFIX: uniquePrefix() },
    );
    const result = await finished(script, 15_000);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({ outcome: 'rejected', ms: expect.any(Number) });
  });

  it('does not queue: once its Redis is reachable again, nothing published while it was not is delivered', async () => {
    // The publisher's Redis address refuses connections (as a stopped Redis does) until the
    // forwarder listens; the nodes keep their own link, so they are subscribed when the publisher
    // reconnects and would deliver anything it held back. Redis comes back 2 s after the publish,
    // whether or not that publish has settled by then.
    const listener = await member(nodeA, 'listener', ['channel:9']);
    await subscribed('channel:9', 1);
    const link = forwarder(await freePort(), redis.port);
    const script = runScript(
      `
      import { createPublisher } from 'ws-edge/publisher';
      const publisher = createPublisher({ redisUrl: process.env.REDIS_URL, prefix: process.env.PREFIX });
      const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
      const before = publisher.publish('channel:9', 'task.updated', { phase: 'before' }, 'svc').then(() => 'resolved', () => 'rejected');
      console.log(JSON.stringify({ before: await Promise.race([before, sleep(2000).then(() => 'pending')]) }));
      // Wait for the test to say Redis is reachable, then publish until the connection is up again.
      await new Promise((resolve) => process.stdin.once('data', resolve));
      let after = false;
      for (const deadline = Date.now() + 10000; !after && Date.now() < deadline; ) {
        after = await publisher.publish('channel:9', 'task.updated', { phase: 'after' }, 'svc').then(() => true, () => false);
        if (!after) await sleep(100);
      }
      console.log(JSON.stringify({ after }));
      await publisher.close();
      process.exit(0);
      `,
      { REDIS_URL: `redis://127.0.0.1:${link.port}`, PREFIX: prefix },
    );
    await script.line((l) => l.startsWith('{"before"'));
    await link.listen();
    script.child.stdin!.write('redis is reachable\n');
    const result = await finished(script, 15_000);
    expect(result.code).toBe(0);
    expect(result.stdout.trim().split('\n').map((l) => JSON.parse(l) as unknown)[1]).toEqual({ after: true });

    expect(await listener.client.next((e) => e.type === 'task.updated')).toStrictEqual(envelope('task.updated', 'channel:9', { phase: 'after' }, 'svc'));
    await listener.client.expectNothing((e) => e.type === 'task.updated', 500);
    // The caller was told, before Redis came back, that the event was not sent.
    expect(JSON.parse(result.stdout.trim().split('\n')[0]!)).toEqual({ before: 'rejected' });
  });
});
