/**
 * examples/fastapi (the FastAPI reference backend the docs point product teams to) run for real:
 * the app under Debian's /usr/bin/python3 (python3-fastapi, python3-uvicorn; the suite fails, never
 * skips, without them) on a fresh SQLite file, two `ws-edge serve` processes on one redis-server
 * calling it (publish proxy, RPC, the authorization callback) and delivering their events to its
 * signed webhook (read signals, user.online / user.offline), and clients of the official
 * ws-edge/client whose token provider is the app's token endpoint. Counted: chat messages sent
 * through the sockets are stored once each and reach both members once each with their message_id;
 * a resent message is stored and delivered once; a denied one neither; messages.history pages back
 * what SQLite holds; read receipts are stored, a read signal's through the webhook; a user who
 * closes is recorded offline with the time they were last seen, every delivered event applied once;
 * tasks created through REST reach the project's members once each; the callback and grants let
 * members in and keep others out, and removing a member takes the rooms away on every node. The
 * counts are printed as one JSON line.
 * Every wait is for an event (a delivery, a reply, a log line), bounded by a timeout.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ClientError, createClient, type Client, type Envelope, type MessageSent, type StateChange } from '../../src/client/index.js';
import { readLines } from '../helpers/lines.js';
import { TEST_SECRET } from '../helpers/node.js';
import { freePort } from '../helpers/ports.js';
import { startNodeProcess, stopAllProcesses, type NodeProcess } from '../helpers/processes.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';
import { createWaiters, waitFor } from '../helpers/wait.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const APP = join(ROOT, 'examples/fastapi/app.py');
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const INSTALL_HINT = 'install the Debian packages python3-fastapi and python3-uvicorn (apt-get install python3-fastapi python3-uvicorn)';

const PUBLISH_API_KEY = 'fastapi-example-publish-key-0123456789abcdef';
const BACKEND_KEY = 'fastapi-example-backend-key-0123';
const ROOM_AUTH_KEY = 'fastapi-example-room-auth-key-01';
const WEBHOOK_SECRET = 'fastapi-example-webhook-secret-0123456789';
/** Seconds a user stays gone before user.offline (WS_EVENTS_GRACE): short, so the suite sees one. */
const EVENTS_GRACE_S = 1;
const HISTORY_ROOMS = 'project:*,task:*,channel:*,user:*';
/** Short, so the clients refresh in band during the suite (at 80%: 16 s). */
const TOKEN_TTL = 20;
const CHAT = 'channel:1';
const PROJECT = 'project:1';
/** Chat messages per sender; two senders. */
const EACH = 25;
const WINDOW = 8;
const TASKS = 5;
/** Generous: Python and two nodes share two cores with the other suites. */
const SUITE_TIMEOUT_MS = 120_000;

interface App {
  readonly url: string;
  readonly db: string;
  readonly child: ChildProcess;
  stderr(): string;
}

const apps = new Set<ChildProcess>();
const dirs: string[] = [];
const clients: Client[] = [];
const counts: Record<string, unknown> = {};

/** The app's Python must import fastapi and uvicorn: a clear failure naming the packages otherwise. */
function checkPython(): void {
  const ran = spawnSync(PYTHON, ['-c', 'import sys, fastapi, uvicorn; print(sys.version.split()[0], fastapi.__version__, uvicorn.__version__)'], { encoding: 'utf8' });
  if (ran.error !== undefined) throw new Error(`${PYTHON} cannot be run (${ran.error.message}): install python3, and ${INSTALL_HINT}`);
  if (ran.status !== 0) throw new Error(`${PYTHON} cannot import fastapi and uvicorn (${ran.stderr.trim().split('\n').pop()}): ${INSTALL_HINT}`);
  process.stdout.write(`== ${PYTHON}: Python, fastapi, uvicorn ${ran.stdout.trim()}\n`);
}

/** Spawns the app on `port`; resolves on its `listening <port>` line, rejects with its stderr if it exits first. */
function spawnApp(port: number, db: string, edgeInternalUrl: string): Promise<App> {
  const child = spawn(PYTHON, [APP], {
    cwd: ROOT,
    env: {
      PATH: process.env['PATH'] ?? '',
      PYTHONDONTWRITEBYTECODE: '1',
      PYTHONUNBUFFERED: '1',
      WS_EDGE_INTERNAL_URL: edgeInternalUrl,
      PUBLISH_API_KEY,
      JWT_SECRET: TEST_SECRET,
      WS_BACKEND_KEY: BACKEND_KEY,
      WS_ROOM_AUTH_KEY: ROOM_AUTH_KEY,
      WS_WEBHOOK_SECRET: WEBHOOK_SECRET,
      WS_HISTORY_ROOMS: HISTORY_ROOMS,
      WS_TOKEN_TTL: String(TOKEN_TTL),
      APP_DB: db,
      APP_PORT: String(port),
      APP_LOG_LEVEL: 'warning',
      APP_ACCESS_LOG: '0',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  apps.add(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise<App>((resolve, reject) => {
    child.once('error', (err) => reject(new Error(`${PYTHON} could not be spawned: ${err.message}`)));
    child.once('exit', (code, signal) => {
      apps.delete(child);
      reject(new Error(`the FastAPI app exited (${code ?? signal}) before listening: ${stderr.trim()}`));
    });
    readLines(child.stdout!, (line) => {
      if (/^listening \d+$/.test(line)) resolve({ url: `http://127.0.0.1:${port}`, db, child, stderr: () => stderr });
    });
  });
}

function nodeEnv(appUrl: string, prefix: string, redisUrl: string, nodeId: string): Record<string, string> {
  return {
    NODE_ID: nodeId,
    REDIS_URL: redisUrl,
    REDIS_PREFIX: prefix,
    PUBLISH_API_KEY,
    // JWT_SECRET: startNodeProcess's TEST_SECRET, which the app mints with.
    WS_PUBLISH_PROXY_URL: `${appUrl}/internal/ws/publish`,
    WS_RPC_URL: `${appUrl}/internal/ws/rpc`,
    WS_BACKEND_KEY: BACKEND_KEY,
    WS_ROOM_ACCESS: 'callback',
    WS_ROOM_AUTH_URL: `${appUrl}/internal/ws/authorize`,
    WS_ROOM_AUTH_KEY: ROOM_AUTH_KEY,
    // Read signals and every lifecycle type (the default once a webhook is set), to the app's receiver.
    WS_SIGNALS_TO_BACKEND: 'read',
    WS_WEBHOOK_URL: `${appUrl}/internal/ws/events`,
    WS_WEBHOOK_SECRET: WEBHOOK_SECRET,
    WS_EVENTS_GRACE: String(EVENTS_GRACE_S),
    WS_HISTORY_ROOMS: HISTORY_ROOMS,
    // A loaded two-core machine can hold a Python answer up for a while; nothing here tests timeouts.
    WS_BACKEND_TIMEOUT: '10000',
    WS_ROOM_AUTH_TIMEOUT: '10000',
  };
}

let app: App;
let nodes: NodeProcess[];

/**
 * The nodes need the app's URL and the app a node's: the app's port is picked first, the nodes
 * started with it, then the app on it. Another process may take the port in between: then again.
 */
beforeAll(async () => {
  checkPython();
  const redis = await startRedis();
  const dir = mkdtempSync(join(tmpdir(), 'fastapi-example-'));
  dirs.push(dir);
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const appUrl = `http://127.0.0.1:${port}`;
    const prefix = uniquePrefix();
    nodes = await Promise.all(['fa', 'fb'].map((id) => startNodeProcess(nodeEnv(appUrl, prefix, redis.url, id))));
    try {
      app = await spawnApp(port, join(dir, `app-${attempt}.db`), nodes[0]!.internal);
      break;
    } catch (err) {
      await Promise.all(nodes.map((n) => n.kill9()));
      if (attempt >= 3 || !/address already in use/i.test((err as Error).message)) throw err;
    }
  }
}, 60_000);

afterAll(async () => {
  process.stdout.write(`${JSON.stringify({ fastapi_example: counts })}\n`);
  clients.splice(0).forEach((c) => c.close());
  for (const child of apps) child.kill('SIGKILL');
  apps.clear();
  await stopAllProcesses();
  await stopAllRedis();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

// -- the app, as a browser would use it ------------------------------------------------------------

async function appCall(method: string, path: string, user: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${app.url}${path}`, {
    method,
    headers: { 'x-user': user, ...(body !== undefined && { 'content-type': 'application/json' }) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** The rows SQLite holds for a room, read from the app's database file by another process. */
function storedRows(room: string): Array<{ message_id: number; user_id: string; text: string; idempotency_key: string | null }> {
  const script = [
    'import json, sqlite3, sys',
    'db = sqlite3.connect(sys.argv[1])',
    'db.row_factory = sqlite3.Row',
    'print(json.dumps([dict(r) for r in db.execute("SELECT message_id, user_id, text, idempotency_key FROM messages WHERE room = ? ORDER BY message_id", (sys.argv[2],))]))',
  ].join('\n');
  const ran = spawnSync(PYTHON, ['-c', script, app.db, room], { encoding: 'utf8' });
  if (ran.status !== 0) throw new Error(`reading ${app.db}: ${ran.stderr}`);
  return JSON.parse(ran.stdout) as ReturnType<typeof storedRows>;
}

/** The webhook event ids the app recorded (each applied once), per type, read from its database file. */
function appliedEvents(): Record<string, number> {
  const script = [
    'import json, sqlite3, sys',
    'db = sqlite3.connect(sys.argv[1])',
    'print(json.dumps(dict(db.execute("SELECT type, COUNT(*) FROM webhook_events GROUP BY type").fetchall())))',
  ].join('\n');
  const ran = spawnSync(PYTHON, ['-c', script, app.db], { encoding: 'utf8' });
  if (ran.status !== 0) throw new Error(`reading ${app.db}: ${ran.stderr}`);
  return JSON.parse(ran.stdout) as Record<string, number>;
}

/** POSTs events to the app's webhook as a node would: signed with `secret` at `timestamp`. */
async function postEvents(events: object[], { secret = WEBHOOK_SECRET, timestamp = Math.floor(Date.now() / 1000) } = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const body = JSON.stringify({ events });
  const signature = `v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
  const res = await fetch(`${app.url}/internal/ws/events`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-wsedge-timestamp': String(timestamp), 'x-wsedge-signature': signature }, body });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

interface Presence {
  readonly status: 'online' | 'offline';
  readonly online_since: number | null;
  readonly last_seen: number | null;
  readonly version: number | null;
}

const presenceOf = async (user: string): Promise<Presence> => (await appCall('GET', `/api/users/${user}/presence`, 'alice')).body as unknown as Presence;

// -- members: the official client, its tokens from the app ------------------------------------------

interface Member {
  readonly user: string;
  readonly client: Client;
  /** Events per room, as the client handed them to the app. */
  readonly events: Map<string, Envelope[]>;
  readonly left: Map<string, string>;
  readonly signals: Envelope[];
  readonly states: StateChange[];
  tokenCalls: number;
  /** Resolves with check()'s first non-undefined result, re-checked on every event. */
  until<T>(what: string, check: () => T | undefined, timeoutMs?: number): Promise<T>;
  joinRoom(room: string, grant?: string): Promise<void>;
  /** Resolves once the client is connected (requests other than joins are refused before). */
  connected(): Promise<void>;
}

function member(node: NodeProcess, user: string): Member {
  const { wake, until } = createWaiters();
  const m: Member = {
    user,
    events: new Map(),
    left: new Map(),
    signals: [],
    states: [],
    tokenCalls: 0,
    client: createClient({
      url: node.url,
      WebSocket,
      // The browser's provider: the app's token endpoint, asked again before each token expires.
      token: async () => {
        m.tokenCalls += 1;
        const { status, body } = await appCall('POST', '/api/ws-token', user);
        if (status !== 200) throw new Error(`token endpoint answered ${status}`);
        wake();
        return body['token'] as string;
      },
      requestTimeout: 20_000,
    }),
    until: (what, check, timeoutMs = 30_000) => until(check, timeoutMs, () => `${user}: timed out waiting for ${what}`),
    connected: () => m.until('connected', () => (m.client.state === 'connected' ? true : undefined)).then(() => undefined),
    async joinRoom(room, grant) {
      m.events.set(room, []);
      await m.client.join(
        room,
        {
          event: (e) => {
            m.events.get(room)!.push(e);
            wake();
          },
          left: (reason) => {
            m.left.set(room, reason);
            wake();
          },
        },
        grant === undefined ? {} : { grant },
      );
    },
  };
  m.client.on('signal', (s) => {
    m.signals.push(s);
    wake();
  });
  m.client.on('state', (change) => {
    m.states.push(change);
    wake();
  });
  clients.push(m.client);
  m.client.connect();
  return m;
}

const text = (e: Envelope): string => String((e.data as { text?: unknown } | null)?.text ?? '');
const messageId = (e: Envelope): unknown => (e.data as { message_id?: unknown } | null)?.message_id;
const chatOf = (m: Member, prefix: string): Envelope[] => (m.events.get(CHAT) ?? []).filter((e) => e.type === 'message.new' && text(e).startsWith(prefix));

/** Sends `count` numbered messages, WINDOW of them unanswered at a time (the node allows 16 per connection). */
async function sendNumbered(m: Member, count: number): Promise<MessageSent[]> {
  const replies: MessageSent[] = [];
  let next = 1;
  const lane = async (): Promise<void> => {
    while (next <= count) {
      const n = next++;
      replies.push(await m.client.send(CHAT, { text: `chat ${m.user} #${n}` }));
    }
  };
  await Promise.all(Array.from({ length: WINDOW }, lane));
  return replies;
}

/** A message every member waits for: in a sequenced room, everything sent before it has arrived once it has. */
async function barrier(from: Member, members: Member[], label: string): Promise<void> {
  await from.client.send(CHAT, { text: `barrier ${label}` });
  await Promise.all(members.map((m) => m.until(`barrier ${label}`, () => (chatOf(m, `barrier ${label}`).length > 0 ? true : undefined))));
}

describe('examples/fastapi: the FastAPI reference backend behind two nodes on one Redis', () => {
  let alice: Member;
  let bob: Member;

  beforeAll(async () => {
    alice = member(nodes[0]!, 'alice');
    bob = member(nodes[1]!, 'bob');
    // Both joins of a member go out in one frame and are decided by the app's callback.
    await Promise.all([alice, bob].flatMap((m) => [m.joinRoom(CHAT), m.joinRoom(PROJECT)]));
  }, 60_000);

  it('chat sent through the sockets is stored once each and reaches both members once each, with its message_id', { timeout: SUITE_TIMEOUT_MS }, async () => {
    const [fromAlice, fromBob] = await Promise.all([sendNumbered(alice, EACH), sendNumbered(bob, EACH)]);
    const replies = [...fromAlice, ...fromBob];
    const total = 2 * EACH;
    // message_sent carries what the app answered: its message_id and stored_at.
    expect(replies.every((r) => typeof (r.data as { message_id?: unknown }).message_id === 'number' && typeof (r.data as { stored_at?: unknown }).stored_at === 'number')).toBe(true);

    // A resend with the same key (what the client does after a lost reply) is stored and delivered once.
    const first = await alice.client.send(CHAT, { text: 'resent once' }, { idempotencyKey: 'fastapi-example-resend-1' });
    const again = await alice.client.send(CHAT, { text: 'resent once' }, { idempotencyKey: 'fastapi-example-resend-1' });
    expect(again.duplicate).toBe(true);
    expect((again.data as { message_id: number }).message_id).toBe((first.data as { message_id: number }).message_id);

    await barrier(bob, [alice, bob], 'chat');
    const rows = storedRows(CHAT);
    const chatRows = rows.filter((r) => r.text.startsWith('chat '));
    const storedIds = new Set(chatRows.map((r) => r.message_id));
    const delivered: Record<string, number> = {};
    let duplicates = 0;
    let missing = 0;
    let withoutId = 0;
    for (const m of [alice, bob]) {
      const got = chatOf(m, 'chat ');
      delivered[m.user] = got.length;
      const ids = new Set(got.map(messageId));
      duplicates += got.length - ids.size;
      missing += [...storedIds].filter((id) => !ids.has(id)).length;
      withoutId += got.filter((e) => typeof messageId(e) !== 'number' || e.user_id === undefined).length;
    }
    const resent = { sends: 2, stored: rows.filter((r) => r.text === 'resent once').length, delivered: { alice: chatOf(alice, 'resent once').length, bob: chatOf(bob, 'resent once').length }, duplicate: again.duplicate === true };
    counts['chat'] = { sent: total, stored: chatRows.length, distinct_keys: new Set(chatRows.map((r) => `${r.user_id}/${r.idempotency_key}`)).size, delivered, duplicates, missing, without_message_id: withoutId };
    counts['resend'] = resent;

    expect(chatRows.length).toBe(total);
    expect(new Set(replies.map((r) => (r.data as { message_id: number }).message_id))).toEqual(storedIds);
    expect(delivered).toEqual({ alice: total, bob: total });
    expect({ duplicates, missing, withoutId }).toEqual({ duplicates: 0, missing: 0, withoutId: 0 });
    expect(resent).toEqual({ sends: 2, stored: 1, delivered: { alice: 1, bob: 1 }, duplicate: true });
    // The product API reads the same rows.
    const listed = await appCall('GET', `/api/rooms/${CHAT}/messages?limit=1000`, 'bob');
    expect((listed.body['messages'] as Array<{ message_id: number }>).map((r) => r.message_id)).toEqual(rows.map((r) => r.message_id));
  });

  it('a denied message is stored 0 times and delivered 0 times; the sender gets the app’s code', { timeout: SUITE_TIMEOUT_MS }, async () => {
    const refusal = await alice.client.send(CHAT, { text: 'cheap spam here' }).then(
      () => undefined,
      (err: ClientError) => err,
    );
    expect(refusal).toBeInstanceOf(ClientError);
    expect({ code: refusal!.code, detail: refusal!.detail }).toEqual({ code: 'rejected', detail: 'blocked_word' });
    // Project rooms carry the app's events only.
    const readOnly = await bob.client.send(PROJECT, { text: 'chat in a project room' }).catch((err: ClientError) => err);
    expect(readOnly).toMatchObject({ code: 'rejected', detail: 'read_only' });
    await barrier(alice, [alice, bob], 'denied');
    const stored = storedRows(CHAT).filter((r) => r.text.includes('spam')).length;
    const delivered = [alice, bob].reduce((n, m) => n + (m.events.get(CHAT) ?? []).filter((e) => text(e).includes('spam')).length, 0);
    const inProject = [alice, bob].reduce((n, m) => n + (m.events.get(PROJECT) ?? []).filter((e) => e.type === 'message.new').length, 0);
    counts['denied'] = { stored, delivered, code: refusal!.detail, read_only_delivered: inProject };
    expect({ stored, delivered, inProject }).toEqual({ stored: 0, delivered: 0, inProject: 0 });
  });

  it('rpc: messages.history pages back what SQLite holds, within the node’s 4 KB answer; non-members are refused', { timeout: SUITE_TIMEOUT_MS }, async () => {
    const ids: number[] = [];
    let pages = 0;
    let before: number | undefined;
    for (;;) {
      const page = await bob.client.rpc<{ messages: Array<{ message_id: number }>; more: boolean; before: number }>('messages.history', { room: CHAT, ...(before !== undefined && { before }) });
      pages += 1;
      ids.unshift(...page.messages.map((r) => r.message_id));
      if (!page.more) break;
      before = page.before;
      expect(pages).toBeLessThan(100);
    }
    const stored = storedRows(CHAT).map((r) => r.message_id);
    const mallory = member(nodes[1]!, 'mallory');
    await mallory.connected();
    const refused = await mallory.client.rpc('messages.history', { room: CHAT }).catch((err: ClientError) => err);
    const unknown = await bob.client.rpc('messages.nope').catch((err: ClientError) => err);
    counts['rpc_history'] = { pages, messages: ids.length, stored: stored.length, equal: JSON.stringify(ids) === JSON.stringify(stored) };
    expect(pages).toBeGreaterThan(1);
    expect(ids).toEqual(stored);
    expect(refused).toMatchObject({ code: 'rejected', detail: 'forbidden' });
    expect(unknown).toMatchObject({ code: 'rejected', detail: 'unknown_method' });
  });

  it('read receipts: messages.mark_read answers and stores; a read signal reaches the other member live and is stored through the webhook', { timeout: SUITE_TIMEOUT_MS }, async () => {
    const rows = storedRows(CHAT);
    const last = rows[rows.length - 1]!.message_id;
    const marked = await alice.client.rpc<{ ok: boolean; last_read: number }>('messages.mark_read', { room: CHAT, message_id: rows[0]!.message_id });
    expect(marked).toMatchObject({ ok: true, last_read: rows[0]!.message_id });
    expect(await alice.client.rpc('messages.mark_read', { room: CHAT, message_id: 10 ** 9 }).catch((err: ClientError) => err)).toMatchObject({ code: 'rejected', detail: 'unknown_message' });
    // Bob's read signal: alice sees it live (not stored by the node), and a node delivers it to the app's webhook as a `signal` event.
    expect(bob.client.signal(CHAT, 'read', { message_id: last })).toBe(true);
    const live = await alice.until('bob’s read signal', () => alice.signals.find((s) => s.type === 'signal.read' && s.user_id === 'bob'));
    expect(live.data).toEqual({ message_id: last });
    // Nothing answers a signal: the stored receipt is looked up until the webhook has brought it.
    const reads = await waitFor('bob’s receipt stored', async () => {
      const { body } = await appCall('GET', `/api/rooms/${CHAT}/reads`, 'alice');
      const list = body['reads'] as Array<{ user_id: string; message_id: number }>;
      return list.some((r) => r.user_id === 'bob') ? list : false;
    }, 30_000, 50);
    counts['reads'] = Object.fromEntries(reads.map((r) => [r.user_id, r.message_id]));
    expect(Object.fromEntries(reads.map((r) => [r.user_id, r.message_id]))).toEqual({ alice: rows[0]!.message_id, bob: last });
    expect(appliedEvents()['signal']).toBe(1);
  });

  it('a user.offline webhook received: a client that connects and closes is recorded offline with its last_seen; every delivered event is applied once; forged, stale and older events change nothing', { timeout: SUITE_TIMEOUT_MS }, async () => {
    expect(await presenceOf('carol')).toMatchObject({ status: 'offline', last_seen: null, version: null });
    const carol = member(nodes[0]!, 'carol');
    await carol.connected();
    const online = await waitFor('carol online', async () => {
      const p = await presenceOf('carol');
      return p.status === 'online' ? p : false;
    }, 30_000, 50);
    const closedAt = Date.now();
    carol.client.close();
    // user.offline comes once the grace window (EVENTS_GRACE_S) has passed with no connection of hers anywhere.
    const offline = await waitFor('carol offline', async () => {
      const p = await presenceOf('carol');
      return p.status === 'offline' ? p : false;
    }, 30_000, 50);
    expect(online.online_since).toBeLessThanOrEqual(closedAt);
    expect(offline.last_seen).toBeGreaterThanOrEqual(closedAt);
    expect(offline.version).toBeGreaterThan(online.version!);

    // What the nodes counted as delivered (acknowledged after the app's 2xx) is what the app applied, once per id.
    const delivered = (): Promise<number> => Promise.all(nodes.map((n) => n.metric('wsedge_webhook_events_total', { outcome: 'delivered' }))).then((all) => all.reduce((a, b) => a + b, 0));
    const settled = await waitFor('the delivered count equal to the ids applied', async () => {
      const [count, applied] = [await delivered(), appliedEvents()];
      const total = Object.values(applied).reduce((a, b) => a + b, 0);
      return count === total ? { delivered: count, applied } : false;
    }, 30_000, 50);

    // The receiver's side: an id applied once; a version below the stored one dropped; a forged or stale request refused.
    const stale = { id: '1-0', type: 'user.online', time: Date.now(), user_id: 'carol', version: offline.version! - 1 };
    const first = await postEvents([stale]);
    const again = await postEvents([stale]);
    const forged = await postEvents([{ ...stale, id: '2-0', version: offline.version! + 1 }], { secret: 'not-the-webhook-secret-of-this-app-0123' });
    const replayed = await postEvents([{ ...stale, id: '3-0', version: offline.version! + 1 }], { timestamp: Math.floor(Date.now() / 1000) - 301 });
    expect([first, again, forged, replayed]).toEqual([
      { status: 200, body: { received: 1, applied: 0, ignored: 1, duplicates: 0 } },
      { status: 200, body: { received: 1, applied: 0, ignored: 0, duplicates: 1 } },
      { status: 401, body: { error: 'bad_signature' } },
      { status: 401, body: { error: 'stale_timestamp' } },
    ]);
    expect(await presenceOf('carol')).toEqual({ ...offline });
    counts['webhook'] = { ...settled, carol: { online_since_before_close: online.online_since! <= closedAt, last_seen_after_close_ms: offline.last_seen! - closedAt }, older_version: first.body, repeated_id: again.body, forged: forged.status, stale_timestamp: replayed.status };
    expect(settled.applied['user.offline']).toBeGreaterThanOrEqual(1);
  });

  it('tasks created through REST are published after the commit and reach the project’s members once each', { timeout: SUITE_TIMEOUT_MS }, async () => {
    const created: Array<{ task: { id: number }; events: Record<string, { epoch?: string; offset?: number; status: string }> }> = [];
    for (let i = 1; i <= TASKS; i++) {
      const { status, body } = await appCall('POST', '/api/projects/1/tasks', 'alice', { title: `task ${i}` });
      expect(status).toBe(201);
      created.push(body as (typeof created)[number]);
    }
    // The REST answer names each room's position: wait until both members have reached the last one.
    const lastOffset = created[created.length - 1]!.events[PROJECT]!.offset!;
    expect(created.every((c) => c.events[PROJECT]!.status === 'published' && c.events[`task:${c.task.id}`]!.status === 'published')).toBe(true);
    await Promise.all([alice, bob].map((m) => m.until(`${PROJECT} at offset ${lastOffset}`, () => ((m.client.position(PROJECT)?.offset ?? 0) >= lastOffset ? true : undefined))));
    const taskIds = created.map((c) => c.task.id);
    const delivered: Record<string, number> = {};
    let duplicates = 0;
    for (const m of [alice, bob]) {
      const got = (m.events.get(PROJECT) ?? []).filter((e) => e.type === 'task.created');
      delivered[m.user] = got.length;
      const ids = got.map((e) => (e.data as { task_id: number }).task_id);
      duplicates += ids.length - new Set(ids).size;
      expect(ids, m.user).toEqual(taskIds);
      expect(got.every((e) => e.sender === 'Alice Archer'), m.user).toBe(true);
    }
    // The load the product does before a join: its tasks, with the position read before them.
    const listed = await appCall('GET', '/api/projects/1/tasks', 'bob');
    expect((listed.body['tasks'] as Array<{ id: number }>).map((t) => t.id)).toEqual(taskIds);
    expect(listed.body['position']).toMatchObject({ offset: lastOffset });
    counts['tasks'] = { created: TASKS, delivered, duplicates };
    expect({ delivered, duplicates }).toEqual({ delivered: { alice: TASKS, bob: TASKS }, duplicates: 0 });
  });

  it('room access: the callback lets members in and keeps others out, grants only for members, and removing a member revokes on every node', { timeout: SUITE_TIMEOUT_MS }, async () => {
    const mallory = member(nodes[0]!, 'mallory');
    const forbidden = await mallory.joinRoom(PROJECT).then(() => undefined, (err: ClientError) => err);
    expect(forbidden).toMatchObject({ code: 'forbidden' });
    expect((await appCall('POST', '/api/ws-grant', 'mallory', { room: PROJECT })).status).toBe(403);

    // A grant from the app: decided by the node from the grant alone, no callback.
    const { body: tasks } = await appCall('GET', '/api/projects/1/tasks', 'bob');
    const taskRoom = `task:${(tasks['tasks'] as Array<{ id: number }>)[0]!.id}`;
    const { status, body: granted } = await appCall('POST', '/api/ws-grant', 'bob', { room: taskRoom });
    expect(status).toBe(200);
    await bob.joinRoom(taskRoom, granted['grant'] as string);

    // Carol, a member, on both nodes; the owner removes her: every connection loses the project's rooms.
    const carols = [member(nodes[0]!, 'carol'), member(nodes[1]!, 'carol')];
    await Promise.all(carols.flatMap((c) => [c.joinRoom(PROJECT), c.joinRoom(CHAT)]));
    expect((await appCall('DELETE', '/api/projects/1/members/carol', 'bob')).status).toBe(403);
    const removed = await appCall('DELETE', '/api/projects/1/members/carol', 'alice');
    expect(removed.body).toMatchObject({ removed: 'carol', failed: [] });
    expect(removed.body['revoked']).toEqual(expect.arrayContaining([PROJECT, CHAT, taskRoom]));
    await Promise.all(carols.map((c) => c.until('both rooms revoked', () => (c.left.get(PROJECT) === 'access_revoked' && c.left.get(CHAT) === 'access_revoked' ? true : undefined))));
    // The nodes dropped their cached allow: a rejoin is asked again, and denied.
    const rejoin = await carols[1]!.joinRoom(PROJECT).then(() => undefined, (err: ClientError) => err);
    expect(rejoin).toMatchObject({ code: 'forbidden' });

    const metric = async (source: string, result: string) => (await Promise.all(nodes.map((n) => n.metric('wsedge_room_authorizations_total', { source, result })))).reduce((a, b) => a + b, 0);
    counts['access'] = {
      callback_allow: await metric('callback', 'allow'),
      callback_deny: await metric('callback', 'deny'),
      grant_allow: await metric('grant', 'allow'),
      revoked_connections: carols.length,
      rejoin_after_removal: rejoin?.code,
    };
    expect(await metric('grant', 'allow')).toBe(1);
    expect(await metric('callback', 'deny')).toBe(2);
  });

  it('the clients refresh their tokens in band from the token endpoint, without reconnecting', { timeout: SUITE_TIMEOUT_MS }, async () => {
    // The app mints TOKEN_TTL-second tokens; the client asks its provider again at 80% of their life.
    await Promise.all([alice, bob].map((m) => m.until('a second token', () => (m.tokenCalls >= 2 ? true : undefined), (TOKEN_TTL + 10) * 1000)));
    await Promise.all([alice, bob].map((m) => m.client.ping()));
    counts['tokens'] = Object.fromEntries([alice, bob].map((m) => [m.user, { provider_calls: m.tokenCalls, connects: m.states.filter((s) => s.state === 'connected').length }]));
    for (const m of [alice, bob]) {
      expect(m.states.filter((s) => s.state === 'connected').length, m.user).toBe(1);
      expect(m.states.filter((s) => s.state === 'disconnected'), m.user).toEqual([]);
    }
  });
});
