/**
 * ws-edge/client's policy without a network: backoff bounds and jitter, the decision per close code,
 * token refresh timing and reconnect timing with fake timers (a scripted socket stands in for the
 * network; the integration and browser suites use real nodes), and dedup by offset.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createClient, type ClientOptions, type StateChange, type WebSocketLike } from '../../src/client/index.js';
import { afterClose, backoffDelay, clampTimer, DEFAULT_BACKOFF, lifeLeft, LONG_BACKOFF_MS, MAX_TIMER_MS, RESTART_SPREAD_MS, tokenTimes } from '../../src/client/policy.js';
import { createRooms } from '../../src/client/rooms.js';
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
  const c = createClient({ url: 'ws://edge/api/v1/ws/connect', token, WebSocket, random: max, pingAfter: 0, ...options });
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
