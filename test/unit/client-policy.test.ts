/**
 * ws-edge/client's policy without a network: backoff bounds and jitter, the decision per close code,
 * token refresh timing and reconnect timing with fake timers (a scripted socket stands in for the
 * network; the integration and browser suites use real nodes), and dedup by offset.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createClient, type ClientOptions, type StateChange, type WebSocketLike } from '../../src/client/index.js';
import { afterClose, backoffDelay, clampTimer, DEFAULT_BACKOFF, lifeLeft, LONG_BACKOFF_MS, MAX_TIMER_MS, RESTART_SPREAD_MS, tokenTimes } from '../../src/client/policy.js';
import { createRooms } from '../../src/client/rooms.js';
import { replyError } from '../../src/client/requests.js';
import { RESEND_RETRIES, RESEND_WINDOW_MS } from '../../src/client/sends.js';
import type { ErrorReply } from '../../src/messages.js';
import { RECONNECT } from '../../src/errors.js';

const max = () => 0.999999;
const min = () => 0;

describe('backoff', () => {
  it('is full jitter below min(cap, base * factor^attempt)', () => {
    expect(backoffDelay(DEFAULT_BACKOFF, 0, max)).toBeCloseTo(1000, 0);
    expect(backoffDelay(DEFAULT_BACKOFF, 3, max)).toBeCloseTo(8000, 0);
    expect(backoffDelay(DEFAULT_BACKOFF, 20, max)).toBeCloseTo(30_000, 0);
    expect(backoffDelay(DEFAULT_BACKOFF, 5, min)).toBe(0);
    const samples = Array.from({ length: 1000 }, () => backoffDelay(DEFAULT_BACKOFF, 4, Math.random));
    expect(Math.max(...samples)).toBeLessThan(16_000);
    // Spread over the whole window, not clustered at its end.
    expect(samples.filter((d) => d < 8000).length).toBeGreaterThan(350);
  });
});

describe('the decision per close code', () => {
  const decide = (code: number, random = max) => afterClose(code, 2, DEFAULT_BACKOFF, random);

  it('stops for good on 4403 and 1008', () => {
    expect(decide(4403)).toEqual({ retry: false });
    expect(decide(1008)).toEqual({ retry: false });
  });

  it('waits 0-5 s after 1012, whatever the attempt', () => {
    expect(decide(1012, min)).toEqual({ retry: true, delay: 0, newToken: false });
    expect((decide(1012) as { delay: number }).delay).toBeCloseTo(RESTART_SPREAD_MS, 0);
  });

  it('waits at least 30 s plus jitter after 4429', () => {
    expect(decide(4429, min)).toEqual({ retry: true, delay: LONG_BACKOFF_MS, newToken: false });
    expect((decide(4429) as { delay: number }).delay).toBeCloseTo(LONG_BACKOFF_MS + 4000, 0);
  });

  it('asks for a new token after 4401, backs off after 1006, 1009, 4500 and other 4000-4999 codes', () => {
    expect(decide(4401)).toMatchObject({ retry: true, newToken: true });
    for (const code of [1006, 1009, 1011, 4500, 4321]) expect(decide(code)).toMatchObject({ retry: true, newToken: false });
  });

  it('covers every code of the catalogue', () => {
    for (const code of Object.keys(RECONNECT).map(Number)) expect(decide(code)).toHaveProperty('retry');
  });
});

describe('token timing', () => {
  const jwt = (claims: object) => `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.sig`;

  it('reads exp and iat from the payload, and nothing from a token without them', () => {
    expect(tokenTimes(jwt({ sub: 'a', exp: 2_000_000_000, iat: 1_999_999_000 }))).toEqual({ exp: 2_000_000_000_000, iat: 1_999_999_000_000 });
    expect(tokenTimes(jwt({ sub: 'a' }))).toEqual({ exp: undefined, iat: undefined });
    expect(tokenTimes('not a token')).toEqual({ exp: undefined, iat: undefined });
  });

  it('counts a token’s life from when the client got it when it has iat: a skewed client clock does not matter', () => {
    const times = { exp: 1_000_000 + 3_600_000, iat: 1_000_000 };
    // The client's clock is an hour ahead: by its clock the token has expired already.
    // Less a second: iat is whole seconds, so the token may be older than it looks.
    expect(lifeLeft(times, 10_000_000, 10_000_000)).toEqual({ life: 3_600_000, left: 3_599_000 });
    expect(lifeLeft(times, 10_000_000, 10_600_000)).toEqual({ life: 3_600_000, left: 2_999_000 });
    expect(lifeLeft({ exp: 100_000, iat: undefined }, 0, 20_000)).toEqual({ life: 100_000, left: 80_000 });
  });

  it('keeps refresh timers between 1 s and what setTimeout can hold (a 40-day token does not fire at once)', () => {
    expect(clampTimer(500)).toBe(1000);
    expect(clampTimer(40 * 86_400_000 * 0.8)).toBe(MAX_TIMER_MS);
  });
});

describe('dedup by offset', () => {
  it('hands each offset of an epoch to the app once, and follows a new epoch', () => {
    const rooms = createRooms();
    const seen: number[] = [];
    void rooms.add('task:1', { event: (e) => seen.push(e.offset!) }, undefined);
    const event = (offset: number, epoch = 'e1') => rooms.event({ type: 'task.updated', room: 'task:1', data: null, sender: null, timestamp: '', offset, epoch }, undefined);
    [1, 2, 2, 3, 1, 4].forEach((o) => event(o));
    event(1, 'e2');
    expect(seen).toEqual([1, 2, 3, 4, 1]);
    expect(rooms.position('task:1')).toEqual({ epoch: 'e2', offset: 1 });
  });
});

/** A socket the test drives: `server(msg)` delivers a frame, `drop(code)` closes it. */
function scriptedSockets() {
  const sockets: Array<WebSocketLike & { protocols: string[]; sent: string[]; server(msg: object): void; drop(code: number, reason?: string): void }> = [];
  class Scripted {
    onmessage: WebSocketLike['onmessage'] = null;
    onclose: WebSocketLike['onclose'] = null;
    onerror: WebSocketLike['onerror'] = null;
    sent: string[] = [];
    constructor(
      readonly url: string,
      readonly protocols: string[],
    ) {
      sockets.push(this);
    }
    send(data: string) {
      this.sent.push(data);
    }
    close() {}
    server(msg: object) {
      this.onmessage?.({ data: JSON.stringify(msg) });
    }
    drop(code: number, reason = '') {
      this.onclose?.({ code, reason });
    }
  }
  return { sockets, WebSocket: Scripted };
}

const CONNECTED = { type: 'connected', timestamp: '', data: { connection_id: 'n.1', user_id: 'a', username: 'a', heartbeat_interval: 30, max_message_size: 1024, rooms: [] } };

/** A client on fake timers over scripted sockets, connecting; jitter at its maximum unless `options` say otherwise. */
async function fakeClient(token: ClientOptions['token'], options: Partial<ClientOptions> = {}) {
  vi.useFakeTimers();
  const { sockets, WebSocket } = scriptedSockets();
  const states: StateChange[] = [];
  // fallbackAfter 0: these scripted sockets test the WebSocket's policy; the HTTP fallback has its own tests (fallback-client.test.ts).
  const c = createClient({ url: 'ws://edge/api/v1/ws/connect', token, WebSocket, random: max, pingAfter: 0, fallbackAfter: 0, ...options });
  c.on('state', (s) => states.push(s));
  c.connect();
  await vi.advanceTimersByTimeAsync(0);
  return { c, sockets, states };
}

describe('reconnect timing (fake timers)', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('sends the token in the subprotocol, rejoins in one resume with positions, and waits 0-5 s after 1012', async () => {
    const { c, sockets, states } = await fakeClient('tok-1');
    expect(sockets[0]!.protocols).toEqual(['wsedge.v1', 'wsedge.bearer.tok-1']);
    sockets[0]!.server(CONNECTED);
    const joins = ['task:1', 'task:2'].map((room) => c.join(room));
    await vi.advanceTimersByTimeAsync(0);
    const resume = JSON.parse(sockets[0]!.sent[0]!);
    expect(resume).toMatchObject({ type: 'resume', rooms: [{ room: 'task:1' }, { room: 'task:2' }] });
    sockets[0]!.server({ type: 'room_joined', id: resume.id, room: 'task:1', epoch: 'e', offset: 7, timestamp: '' });
    sockets[0]!.server({ type: 'room_joined', id: resume.id, room: 'task:2', timestamp: '' });
    await Promise.all(joins);
    sockets[0]!.drop(1012, 'service restart');
    expect(states.at(-1)).toMatchObject({ state: 'disconnected', code: 1012, reason: 'service restart' });
    expect(states.at(-1)!.delay).toBeLessThanOrEqual(RESTART_SPREAD_MS);
    await vi.advanceTimersByTimeAsync(RESTART_SPREAD_MS);
    expect(sockets).toHaveLength(2);
    sockets[1]!.server(CONNECTED);
    await vi.advanceTimersByTimeAsync(0);
    expect(JSON.parse(sockets[1]!.sent[0]!)).toMatchObject({ type: 'resume', rooms: [{ room: 'task:1', since: { epoch: 'e', offset: 7 } }, { room: 'task:2' }] });
  });

  it('waits at least 30 s after 4429 and stops after 4403', async () => {
    const { sockets, states } = await fakeClient('tok', { random: min });
    sockets[0]!.drop(4429, 'too many connections for this user');
    expect(states.at(-1)).toMatchObject({ state: 'disconnected', delay: LONG_BACKOFF_MS });
    await vi.advanceTimersByTimeAsync(LONG_BACKOFF_MS - 1);
    expect(sockets).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(sockets).toHaveLength(2);
    sockets[1]!.drop(4403, 'origin not allowed');
    expect(states.at(-1)).toEqual({ state: 'closed', code: 4403, reason: 'origin not allowed' });
    await vi.advanceTimersByTimeAsync(120_000);
    expect(sockets).toHaveLength(2);
  });

  it('after 4401 asks the provider for a new token and never offers the refused one again', async () => {
    const tokens = ['old', 'old', 'new'];
    const provider = vi.fn(async () => tokens.shift()!);
    const { sockets, states } = await fakeClient(provider);
    sockets[0]!.drop(4401, 'token expired');
    await vi.advanceTimersByTimeAsync(1000);
    // The provider answered the refused token: no socket, another backoff.
    expect(sockets).toHaveLength(1);
    expect(states.at(-1)).toMatchObject({ state: 'disconnected', code: 4401 });
    await vi.advanceTimersByTimeAsync(2000);
    expect(sockets).toHaveLength(2);
    expect(sockets[1]!.protocols[1]).toBe('wsedge.bearer.new');
    expect(provider).toHaveBeenCalledTimes(3);
  });

  it('ends after 4401 when the token is a fixed string', async () => {
    const { sockets, states } = await fakeClient('fixed');
    sockets[0]!.drop(4401, 'token expired');
    expect(states.at(-1)).toEqual({ state: 'closed', code: 4401, reason: 'token expired' });
  });

  it('refreshes the token in band at 80% of its life', async () => {
    vi.useFakeTimers({ now: 0 });
    const jwt = (n: number) => `e30.${Buffer.from(JSON.stringify({ exp: 100, n })).toString('base64url')}.s`;
    let n = 0;
    const { sockets } = await fakeClient(() => jwt(++n));
    sockets[0]!.server(CONNECTED);
    await vi.advanceTimersByTimeAsync(79_000);
    expect(sockets[0]!.sent).toEqual([]);
    await vi.advanceTimersByTimeAsync(1000);
    expect(JSON.parse(sockets[0]!.sent[0]!)).toMatchObject({ type: 'refresh_token', token: jwt(2) });
  });

  it('rejects a send while disconnected at once', async () => {
    const { c } = await fakeClient('tok');
    await expect(c.send('task:1', {})).rejects.toMatchObject({ code: 'disconnected' });
  });

  it('lets a state listener have the last word: close() on disconnected stops the reconnect', async () => {
    const { c, sockets } = await fakeClient('tok');
    c.on('state', (s) => s.state === 'disconnected' && c.close());
    sockets[0]!.drop(1006);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(c.state).toBe('closed');
    expect(sockets).toHaveLength(1);
  });

  it('survives an app callback that throws', async () => {
    const { c, sockets } = await fakeClient('tok');
    const errors: unknown[] = [];
    const onError = (err: unknown) => errors.push(err);
    process.on('uncaughtException', onError);
    try {
      c.on('state', () => {
        throw new Error('app bug');
      });
      sockets[0]!.drop(1006);
      await vi.advanceTimersByTimeAsync(1000);
      expect(sockets).toHaveLength(2);
    } finally {
      process.off('uncaughtException', onError);
    }
  });

  it('gives up an attempt that gets no connected within connectTimeout', async () => {
    const { c, sockets, states } = await fakeClient('tok', { random: min, connectTimeout: 2000 });
    await vi.advanceTimersByTimeAsync(2000);
    expect(states.at(-1)).toMatchObject({ state: 'disconnected', code: 1006, reason: 'connect timeout' });
    await vi.advanceTimersByTimeAsync(1);
    expect(sockets).toHaveLength(2);
    c.close();
  });

  it('pings after pingAfter of silence, not twice that', async () => {
    const { c, sockets } = await fakeClient('tok', { pingAfter: 1000, pongTimeout: 500 });
    sockets[0]!.server(CONNECTED);
    await vi.advanceTimersByTimeAsync(1000);
    expect(JSON.parse(sockets[0]!.sent[0]!)).toMatchObject({ type: 'ping' });
    c.close();
  });
});

describe('room replies matched by request id (fake timers)', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  async function connected() {
    const { c, sockets } = await fakeClient('tok', { requestTimeout: 1000 });
    sockets[0]!.server(CONNECTED);
    return { c, sockets, socket: sockets[0]!, sent: () => sockets[0]!.sent.map((f) => JSON.parse(f)) };
  }

  it('ignores the server’s own join of the personal room and joins it through resume: no reset on the first join', async () => {
    const { c, socket, sent } = await connected();
    const resets: unknown[] = [];
    const joined = c.join('user:a', { reset: (p) => resets.push(p) });
    // The automatic join's reply (no id) arrives before the client's frame is answered.
    socket.server({ type: 'room_joined', room: 'user:a', epoch: 'e', offset: 3, timestamp: '' });
    await vi.advanceTimersByTimeAsync(0);
    const frame = sent()[0];
    expect(frame).toMatchObject({ type: 'resume', rooms: [{ room: 'user:a' }] });
    socket.server({ type: 'room_joined', id: frame.id, room: 'user:a', epoch: 'e', offset: 3, timestamp: '' });
    socket.server({ type: 'resumed', id: frame.id, data: { rooms: 1 }, timestamp: '' });
    await expect(joined).resolves.toMatchObject({ id: frame.id });
    expect(resets).toEqual([]);
    c.close();
  });

  it('retries a timed-out join as a resume and ignores the late reply to the first one', async () => {
    const { c, socket, sent } = await connected();
    const resets: unknown[] = [];
    const joined = c.join('task:slow', { reset: (p) => resets.push(p) });
    await vi.advanceTimersByTimeAsync(0);
    const first = sent()[0];
    expect(first).toMatchObject({ type: 'join_room', room: 'task:slow' });
    await vi.advanceTimersByTimeAsync(1000 + 1000);
    const retry = sent()[1];
    expect(retry).toMatchObject({ type: 'resume', rooms: [{ room: 'task:slow' }] });
    socket.server({ type: 'room_joined', id: first.id, room: 'task:slow', timestamp: '' });
    socket.server({ type: 'room_joined', id: retry.id, room: 'task:slow', timestamp: '' });
    await expect(joined).resolves.toMatchObject({ id: retry.id });
    expect(resets).toEqual([]);
    c.close();
  });

  it('rejects a join under way that the server revokes, and keeps rooms across close() and connect()', async () => {
    const { c, sockets, socket, sent } = await connected();
    const left: string[] = [];
    const revoked = c.join('project:9', { left: (r) => left.push(r) });
    await vi.advanceTimersByTimeAsync(0);
    socket.server({ type: 'room_left', room: 'project:9', reason: 'access_revoked', timestamp: '' });
    await expect(revoked).rejects.toMatchObject({ code: 'forbidden' });
    expect(left).toEqual(['access_revoked']);

    void c.join('task:keep').catch(() => {});
    await vi.advanceTimersByTimeAsync(0);
    expect(sent().at(-1)).toMatchObject({ type: 'join_room', room: 'task:keep' });
    c.close();
    c.connect();
    await vi.advanceTimersByTimeAsync(0);
    sockets[1]!.server(CONNECTED);
    await vi.advanceTimersByTimeAsync(0);
    expect(JSON.parse(sockets[1]!.sent[0]!)).toMatchObject({ type: 'join_room', room: 'task:keep' });
    c.close();
  });
});

describe('sends with idempotency keys, resent after a loss (fake timers)', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  type Socket = ReturnType<typeof scriptedSockets>['sockets'][number];
  const framesOf = (socket: Socket, type?: string) => socket.sent.map((f) => JSON.parse(f)).filter((f) => type === undefined || f.type === type);

  /** Answers the (re)join of task:1 on `socket`: room_joined in a sequenced room, and `resumed` for a resume. */
  async function answerJoin(socket: Socket, offset = 0) {
    await vi.advanceTimersByTimeAsync(0);
    const frame = framesOf(socket).find((f) => f.type === 'join_room' || f.type === 'resume');
    socket.server({ type: 'room_joined', id: frame.id, room: 'task:1', epoch: 'e', offset, ...(frame.type === 'resume' ? { recovered: true } : {}), timestamp: '' });
    if (frame.type === 'resume') socket.server({ type: 'resumed', id: frame.id, data: { rooms: 1 }, timestamp: '' });
    await vi.advanceTimersByTimeAsync(0);
  }

  /** A client connected on sockets[0] with task:1 joined. */
  async function joined(options: Partial<ClientOptions> = {}) {
    const fake = await fakeClient('tok', options);
    fake.sockets[0]!.server(CONNECTED);
    const join = fake.c.join('task:1');
    await answerJoin(fake.sockets[0]!);
    await join;
    return fake;
  }

  /** Drops sockets[n] with `code` and connects sockets[n + 1] (jitter at its maximum: 1 s for the first backoff step). */
  async function reconnect(sockets: Socket[], n: number, code = 1006) {
    sockets[n]!.drop(code);
    await vi.advanceTimersByTimeAsync(1000);
    sockets[n + 1]!.server(CONNECTED);
  }

  /** The promise's outcome so far: 'pending', or how many times and how it settled. */
  function track<T>(p: Promise<T>) {
    const out = { settled: 0, value: undefined as T | undefined, error: undefined as { code?: string; detail?: string } | undefined };
    p.then(
      (v) => ((out.settled += 1), (out.value = v)),
      (e) => ((out.settled += 1), (out.error = e)),
    );
    return out;
  }

  it('gives every send an idempotency key: a random one, or the app’s; refuses a bad key without sending it', async () => {
    const { c, sockets } = await joined();
    const a = track(c.send('task:1', { n: 1 }));
    const b = track(c.send('task:1', { n: 2 }));
    const own = track(c.send('task:1', { n: 3 }, { idempotencyKey: 'order-77/line-1' }));
    await expect(c.send('task:1', {}, { idempotencyKey: 'has space' })).rejects.toMatchObject({ code: 'invalid_message' });
    await expect(c.send('task:1', {}, { idempotencyKey: 'k'.repeat(129) })).rejects.toMatchObject({ code: 'invalid_message' });
    const sent = framesOf(sockets[0]!, 'send_message');
    expect(sent).toHaveLength(3);
    expect(sent[0].idempotency_key).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(sent[1].idempotency_key).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(sent[0].idempotency_key).not.toBe(sent[1].idempotency_key);
    expect(sent[2].idempotency_key).toBe('order-77/line-1');
    sent.forEach((f, i) => sockets[0]!.server({ type: 'message_sent', id: f.id, room: 'task:1', epoch: 'e', offset: i + 1, timestamp: '' }));
    await vi.advanceTimersByTimeAsync(0);
    expect([a, b, own].map((t) => t.value?.offset)).toEqual([1, 2, 3]);
    c.close();
  });

  it('gives queued sends (made while disconnected, queueSize) keys too', async () => {
    const { c, sockets } = await joined({ queueSize: 5 });
    sockets[0]!.drop(1006);
    const queued = track(c.send('task:1', { n: 1 }));
    await vi.advanceTimersByTimeAsync(1000);
    sockets[1]!.server(CONNECTED);
    expect(framesOf(sockets[1]!, 'send_message')).toEqual([]);
    await answerJoin(sockets[1]!);
    const [frame] = framesOf(sockets[1]!, 'send_message');
    expect(frame.idempotency_key).toMatch(/^[A-Za-z0-9_-]{22}$/);
    sockets[1]!.server({ type: 'message_sent', id: frame.id, room: 'task:1', epoch: 'e', offset: 1, timestamp: '' });
    await vi.advanceTimersByTimeAsync(0);
    expect(queued).toMatchObject({ settled: 1, value: { offset: 1 } });
    c.close();
  });

  it('keeps a send in flight at a drop and sends it again with the same key after the resume is answered; it resolves once, duplicate or not', async () => {
    const { c, sockets } = await joined();
    const first = track(c.send('task:1', { n: 1 }));
    const second = track(c.send('task:1', { n: 2 }));
    const [f1, f2] = framesOf(sockets[0]!, 'send_message');
    await reconnect(sockets, 0);
    await vi.advanceTimersByTimeAsync(0);
    expect([first.settled, second.settled]).toEqual([0, 0]);
    // Not before the rejoin: the server would refuse a send to a room not joined yet.
    expect(framesOf(sockets[1]!, 'send_message')).toEqual([]);
    await answerJoin(sockets[1]!, 1);
    const resent = framesOf(sockets[1]!, 'send_message');
    expect(resent.map((f) => [f.idempotency_key, f.data])).toEqual([
      [f1.idempotency_key, { n: 1 }],
      [f2.idempotency_key, { n: 2 }],
    ]);
    expect(resent[0].id).not.toBe(f1.id);
    // The first had reached the server: the first result again, marked duplicate. The second had not.
    sockets[1]!.server({ type: 'message_sent', id: resent[0].id, room: 'task:1', epoch: 'e', offset: 1, duplicate: true, timestamp: '' });
    sockets[1]!.server({ type: 'message_sent', id: resent[1].id, room: 'task:1', epoch: 'e', offset: 2, timestamp: '' });
    // A stray second answer to the same id changes nothing.
    sockets[1]!.server({ type: 'message_sent', id: resent[0].id, room: 'task:1', epoch: 'e', offset: 1, duplicate: true, timestamp: '' });
    await vi.advanceTimersByTimeAsync(0);
    expect(first).toMatchObject({ settled: 1, value: { offset: 1, duplicate: true } });
    expect(second).toMatchObject({ settled: 1, value: { offset: 2 } });
    expect(second.value).not.toHaveProperty('duplicate');
    // Answered: not sent again after a later loss.
    await reconnect(sockets, 1);
    await answerJoin(sockets[2]!, 2);
    expect(framesOf(sockets[2]!, 'send_message')).toEqual([]);
    c.close();
  });

  it('takes a ClientError’s message from the envelope’s `message`, or from `error` when a node older than that field answers', () => {
    const reply = (data: Record<string, unknown>) => ({ type: 'error', id: 'x', data, timestamp: '' }) as unknown as ErrorReply;
    expect(replyError(reply({ code: 'forbidden', message: 'the message', error: 'the first name' }))).toMatchObject({ code: 'forbidden', message: 'the message' });
    expect(replyError(reply({ code: 'rejected', error: 'no links', detail: 'no_links' }))).toMatchObject({ code: 'rejected', message: 'no links', detail: 'no_links' });
  });

  it('settles a send answered with an error with that error (a backend’s refusal with its detail) and never sends it again', async () => {
    const { c, sockets } = await joined();
    const refused = c.send('task:1', { n: 1 });
    const denied = c.send('task:1', { n: 2 });
    const [f1, f2] = framesOf(sockets[0]!, 'send_message');
    sockets[0]!.server({ type: 'error', id: f1.id, data: { code: 'rate_limited', error: 'slow down' }, timestamp: '' });
    sockets[0]!.server({ type: 'error', id: f2.id, data: { code: 'rejected', error: 'links are not allowed here', detail: 'no_links' }, timestamp: '' });
    await expect(refused).rejects.toMatchObject({ code: 'rate_limited' });
    await expect(denied).rejects.toMatchObject({ name: 'ClientError', code: 'rejected', detail: 'no_links', message: 'links are not allowed here' });
    await reconnect(sockets, 0);
    await answerJoin(sockets[1]!);
    expect(framesOf(sockets[1]!, 'send_message')).toEqual([]);
    c.close();
  });

  it('tries a send answered unavailable again with the same key (a resend’s first try may hold the key still; a first try may have been published before a timeout)', async () => {
    const { c, sockets } = await joined();
    const first = track(c.send('task:1', { n: 1 }));
    const [f1] = framesOf(sockets[0]!, 'send_message');
    await reconnect(sockets, 0);
    await answerJoin(sockets[1]!, 1);
    const pendingKey = { type: 'error', data: { code: 'unavailable', error: 'a send with this idempotency_key is still under way; try again' }, timestamp: '' };
    sockets[1]!.server({ ...pendingKey, id: framesOf(sockets[1]!, 'send_message')[0].id });
    await vi.advanceTimersByTimeAsync(999);
    expect(framesOf(sockets[1]!, 'send_message')).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    const tries = framesOf(sockets[1]!, 'send_message');
    expect(tries.map((f) => f.idempotency_key)).toEqual([f1.idempotency_key, f1.idempotency_key]);
    // Again after 2 s, then the key's claim has lapsed and the send is published.
    sockets[1]!.server({ ...pendingKey, id: tries[1].id });
    await vi.advanceTimersByTimeAsync(2000);
    const third = framesOf(sockets[1]!, 'send_message')[2];
    expect(third.idempotency_key).toBe(f1.idempotency_key);
    sockets[1]!.server({ type: 'message_sent', id: third.id, room: 'task:1', timestamp: '' });
    await vi.advanceTimersByTimeAsync(0);
    expect(first).toMatchObject({ settled: 1, value: { type: 'message_sent' } });

    const fresh = track(c.send('task:1', { n: 2 }));
    const f2 = framesOf(sockets[1]!, 'send_message')[3];
    sockets[1]!.server({ ...pendingKey, id: f2.id });
    await vi.advanceTimersByTimeAsync(1000);
    const again = framesOf(sockets[1]!, 'send_message')[4];
    expect(again.idempotency_key).toBe(f2.idempotency_key);
    sockets[1]!.server({ type: 'message_sent', id: again.id, room: 'task:1', duplicate: true, timestamp: '' });
    await vi.advanceTimersByTimeAsync(0);
    expect(fresh).toMatchObject({ settled: 1, value: { type: 'message_sent', duplicate: true } });
    c.close();
  });

  it('keeps a room’s send order through a retry: later sends wait behind a send answered unavailable, and go with its retry, oldest first', async () => {
    const { c, sockets } = await joined();
    const sent = [1, 2, 3].map((n) => track(c.send('task:1', { n })));
    const other = track(c.send('project:1', { n: 0 }));
    const [f1, f2, f3, fo] = framesOf(sockets[0]!, 'send_message');
    // The node refuses 1, and 2 queued behind it; 3 was published (its answer not in yet).
    const unavailable = { type: 'error', data: { code: 'unavailable', message: 'the backend is unreachable; try again' }, timestamp: '' };
    sockets[0]!.server({ ...unavailable, id: f1.id });
    sockets[0]!.server({ ...unavailable, id: f2.id });
    const later = track(c.send('task:1', { n: 4 }));
    const elsewhere = track(c.send('project:1', { n: 5 }));
    // Another room is not held up.
    expect(framesOf(sockets[0]!, 'send_message').map((f) => f.data.n)).toEqual([1, 2, 3, 0, 5]);
    await vi.advanceTimersByTimeAsync(1000);
    const retried = framesOf(sockets[0]!, 'send_message').slice(5);
    expect(retried.map((f) => f.data.n)).toEqual([1, 2, 4]);
    expect(retried.map((f) => f.idempotency_key).slice(0, 2)).toEqual([f1.idempotency_key, f2.idempotency_key]);
    for (const f of [...retried, f3, fo]) sockets[0]!.server({ type: 'message_sent', id: f.id, room: f.room, timestamp: '' });
    sockets[0]!.server({ type: 'message_sent', id: framesOf(sockets[0]!, 'send_message')[4].id, room: 'project:1', timestamp: '' });
    await vi.advanceTimersByTimeAsync(0);
    for (const t of [...sent, other, later, elsewhere]) expect(t).toMatchObject({ settled: 1, value: { type: 'message_sent' } });
    c.close();
  });

  it('gives up retrying a resend that stays unavailable after RESEND_RETRIES tries', async () => {
    const { c, sockets } = await joined();
    const kept = track(c.send('task:1', { n: 1 }));
    await reconnect(sockets, 0);
    await answerJoin(sockets[1]!, 1);
    for (let i = 0; i <= RESEND_RETRIES; i++) {
      const last = framesOf(sockets[1]!, 'send_message').at(-1);
      sockets[1]!.server({ type: 'error', id: last.id, data: { code: 'unavailable', error: 'down' }, timestamp: '' });
      await vi.advanceTimersByTimeAsync(8000);
    }
    expect(framesOf(sockets[1]!, 'send_message')).toHaveLength(RESEND_RETRIES + 1);
    expect(kept).toMatchObject({ settled: 1, error: { code: 'unavailable' } });
    c.close();
  });

  it('keeps at most resendLimit sends for a resend: the oldest beyond are rejected with disconnected', async () => {
    const { c, sockets } = await joined({ resendLimit: 2 });
    const sends = [1, 2, 3].map((n) => track(c.send('task:1', { n })));
    const keys = framesOf(sockets[0]!, 'send_message').map((f) => f.idempotency_key);
    await reconnect(sockets, 0);
    await vi.advanceTimersByTimeAsync(0);
    expect(sends.map((s) => s.error?.code)).toEqual(['disconnected', undefined, undefined]);
    await answerJoin(sockets[1]!);
    const resent = framesOf(sockets[1]!, 'send_message');
    expect(resent.map((f) => f.idempotency_key)).toEqual(keys.slice(1));
    resent.forEach((f, i) => sockets[1]!.server({ type: 'message_sent', id: f.id, room: 'task:1', epoch: 'e', offset: i + 1, timestamp: '' }));
    await vi.advanceTimersByTimeAsync(0);
    expect(sends.map((s) => s.settled)).toEqual([1, 1, 1]);
    c.close();
  });

  it('gives up a kept send at the end of its resend window, before the server forgets its key', async () => {
    const { c, sockets } = await joined({ connectTimeout: 5000 });
    const kept = track(c.send('task:1', { n: 1 }));
    sockets[0]!.drop(1006);
    // No connection comes back: every attempt times out.
    await vi.advanceTimersByTimeAsync(RESEND_WINDOW_MS - 1);
    expect(kept.settled).toBe(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(kept).toMatchObject({ settled: 1, error: { code: 'disconnected' } });
    expect(sockets.length).toBeGreaterThan(2);
    c.close();
  });

  it('rejects sends in flight after a 1009 (one of them may be the refused frame), and every unanswered send at close()', async () => {
    const { c, sockets } = await joined({ queueSize: 5 });
    const inFlight = track(c.send('task:1', { n: 1 }));
    await reconnect(sockets, 0, 1009);
    await vi.advanceTimersByTimeAsync(0);
    expect(inFlight).toMatchObject({ settled: 1, error: { code: 'disconnected' } });
    await answerJoin(sockets[1]!);
    expect(framesOf(sockets[1]!, 'send_message')).toEqual([]);

    const kept = track(c.send('task:1', { n: 2 }));
    sockets[1]!.drop(1006);
    const queued = track(c.send('task:1', { n: 3 }));
    c.close();
    await vi.advanceTimersByTimeAsync(0);
    expect([kept.error?.code, queued.error?.code]).toEqual(['closed', 'closed']);
    await expect(c.send('task:1', {})).rejects.toMatchObject({ code: 'closed' });
  });
});

describe('rpc (fake timers)', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  async function connected() {
    const fake = await fakeClient('tok', { requestTimeout: 1000 });
    fake.sockets[0]!.server(CONNECTED);
    const rpcs = () => fake.sockets.flatMap((s) => s.sent.map((f) => JSON.parse(f)).filter((f) => f.type === 'rpc'));
    return { ...fake, rpcs };
  }

  it('resolves with the reply’s data; the reply is no event', async () => {
    const { c, sockets, rpcs } = await connected();
    const messages: unknown[] = [];
    c.on('message', (m) => messages.push(m));
    const result = c.rpc('mark_read', { room: 'task:1', offset: 7 });
    const [frame] = rpcs();
    expect(frame).toEqual({ type: 'rpc', id: expect.any(String), method: 'mark_read', data: { room: 'task:1', offset: 7 } });
    sockets[0]!.server({ type: 'rpc_result', id: frame.id, data: { unread: 0 }, timestamp: '' });
    await expect(result).resolves.toEqual({ unread: 0 });
    expect(messages).toEqual([]);
    c.close();
  });

  it('rejects with the error envelope’s code, and the backend’s code in detail', async () => {
    const { c, sockets, rpcs } = await connected();
    const rejected = c.rpc('tasks.assign', { task: 1 });
    const slow = c.rpc('tasks.assign', { task: 2 });
    const [r1, r2] = rpcs();
    sockets[0]!.server({ type: 'error', id: r1.id, data: { code: 'rejected', error: 'task is closed', detail: 'task_closed' }, timestamp: '' });
    sockets[0]!.server({ type: 'error', id: r2.id, data: { code: 'unavailable', error: 'the backend did not answer in time' }, timestamp: '' });
    await expect(rejected).rejects.toMatchObject({ name: 'ClientError', code: 'rejected', detail: 'task_closed', message: 'task is closed' });
    await expect(slow).rejects.toMatchObject({ code: 'unavailable', detail: undefined });
    c.close();
  });

  it('refuses a method outside the grammar without sending it', async () => {
    const { c, rpcs } = await connected();
    for (const method of ['Mark_read', '1x', '', 'mark-read', 'a'.repeat(65), '.x']) {
      await expect(c.rpc(method, {})).rejects.toMatchObject({ code: 'invalid_message' });
    }
    const longest = c.rpc('a'.repeat(64));
    expect(rpcs().map((f) => f.method)).toEqual(['a'.repeat(64)]);
    c.close();
    await expect(longest).rejects.toMatchObject({ code: 'closed' });
  });

  it('rejects an rpc in flight at a drop with disconnected and never sends it again; times out by its own timeout', async () => {
    const { c, sockets, rpcs } = await connected();
    const lost = c.rpc('mark_read', { offset: 1 });
    sockets[0]!.drop(1006);
    await expect(lost).rejects.toMatchObject({ code: 'disconnected' });
    await vi.advanceTimersByTimeAsync(1000);
    sockets[1]!.server(CONNECTED);
    await vi.advanceTimersByTimeAsync(0);
    expect(rpcs()).toHaveLength(1);
    const slow = c.rpc('reports.build', null, { timeout: 5000 });
    const outcome = slow.catch((e: { code: string }) => e.code);
    await vi.advanceTimersByTimeAsync(4999);
    await vi.advanceTimersByTimeAsync(1);
    await expect(outcome).resolves.toBe('timeout');
    expect(rpcs().at(-1)).toMatchObject({ method: 'reports.build', data: null });
    c.close();
  });
});
