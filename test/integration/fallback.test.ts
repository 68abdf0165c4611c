/**
 * The HTTP fallback on one in-process node (issue 28): a fetch-read SSE or NDJSON stream carries
 * exactly what a WebSocket gets (counted), POSTs become client frames in order, every bad input
 * has its documented HTTP answer (counted), a closed socket ends the stream with `closed`, an
 * abandoned stream frees its connection at once, a slow reader is closed.
 */
import { readFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { FALLBACK_REFUSALS } from '../../src/errors.js';
import { connect, join, open, token, type TestClient } from '../helpers/client.js';
import { openStream, post, type StreamEvent, type TestStream } from '../helpers/fallback.js';
import { startTestNode, stopAllNodes, type TestNode } from '../helpers/node.js';
import { waitFor } from '../helpers/wait.js';

const streams: TestStream[] = [];
const clients: TestClient[] = [];

afterAll(async () => {
  streams.splice(0).forEach((s) => s.abort());
  clients.splice(0).forEach((c) => c.close());
  await stopAllNodes();
});

async function opened(node: TestNode, user: string, extra: Parameters<typeof openStream>[1] = {}): Promise<TestStream> {
  const stream = await openStream(node.http, { token: token(user), ...extra });
  streams.push(stream);
  return stream;
}

const numbered = (room: string) => (e: StreamEvent) => e.data.type === 'task.updated' && e.data['room'] === room;

describe('HTTP fallback on one node', () => {
  let node: TestNode;
  it('starts a node', async () => {
    node = await startTestNode({ WS_HISTORY_ROOMS: 'task:*', WS_MAX_CONNECTIONS_PER_USER: '3', WS_RATE_LIMIT: '5', WS_RATE_BURST: '5', WS_MESSAGE_MAX_SIZE: '4096' });
  });

  it('streams SSE with the proxy headers, then session, connected and every event in order, counted', async () => {
    const stream = await opened(node, 'alice', { rooms: ['task:seq-a', 'channel:plain'] });
    expect(stream.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    expect(stream.headers.get('cache-control')).toBe('no-cache, no-transform');
    expect(stream.headers.get('x-accel-buffering')).toBe('no');
    expect(stream.headers.get('content-encoding')).toBeNull();
    const connected = await stream.next();
    expect(connected.data).toMatchObject({ type: 'connected', data: { user_id: 'alice' } });
    const joinedSeq = await stream.next((e) => e.data.type === 'room_joined' && e.data['room'] === 'task:seq-a');
    expect(joinedSeq.id).toMatch(/^task:seq-a=[A-Za-z0-9_-]+:0$/);
    await stream.next((e) => e.data.type === 'room_joined' && e.data['room'] === 'channel:plain');
    const N = 300;
    for (let n = 1; n <= N; n++) {
      node.events.publish('task:seq-a', 'task.updated', { n });
      node.events.publish('channel:plain', 'task.updated', { n });
    }
    const seq: number[] = [];
    const plain: number[] = [];
    for (let i = 0; i < N; i++) {
      const e = await stream.next(numbered('task:seq-a'));
      seq.push((e.data['data'] as { n: number }).n);
      expect(e.id).toBe(`task:seq-a=${e.data['epoch'] as string}:${e.data['offset'] as number}`);
    }
    for (let i = 0; i < N; i++) plain.push(((await stream.next(numbered('channel:plain'))).data['data'] as { n: number }).n);
    console.log(`fallback SSE: published ${N} + ${N}, received sequenced ${seq.length} (in order: ${seq.every((n, i) => n === i + 1)}), plain ${plain.length}`);
    expect(seq).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    expect(plain).toEqual(Array.from({ length: N }, (_, i) => i + 1));
  });

  it('recovers every listed room from the positions in Last-Event-ID', async () => {
    const first = await opened(node, 'lena', { rooms: ['task:r1', 'task:r2'] });
    for (const room of ['task:r1', 'task:r2']) await first.next((e) => e.data.type === 'room_joined' && e.data['room'] === room);
    for (let n = 1; n <= 5; n++) for (const room of ['task:r1', 'task:r2']) node.events.publish(room, 'task.updated', { n });
    let id = '';
    for (let i = 0; i < 10; i++) id = (await first.next((e) => e.data.type === 'task.updated')).id!;
    first.abort();
    for (let n = 6; n <= 9; n++) for (const room of ['task:r1', 'task:r2']) node.events.publish(room, 'task.updated', { n });
    const second = await opened(node, 'lena', { rooms: ['task:r1', 'task:r2'], lastEventId: id });
    const got: Record<string, number[]> = { 'task:r1': [], 'task:r2': [] };
    for (let i = 0; i < 8; i++) {
      const e = await second.next((e) => e.data.type === 'task.updated');
      got[e.data['room'] as string]!.push((e.data['data'] as { n: number }).n);
    }
    const joined = [await second.next((e) => e.data.type === 'room_joined'), await second.next((e) => e.data.type === 'room_joined')];
    expect(got).toEqual({ 'task:r1': [6, 7, 8, 9], 'task:r2': [6, 7, 8, 9] });
    expect(joined.map((e) => e.data['recovered'])).toEqual([true, true]);
  });

  it('carries NDJSON with the token in the query, and POSTs applied in seq order whatever their arrival', async () => {
    const stream = await opened(node, 'bob', { format: 'ndjson', via: 'query' });
    expect(stream.headers.get('content-type')).toBe('application/x-ndjson; charset=utf-8');
    await stream.next((e) => e.data.type === 'connected');
    const watcher = await connect(node.url, 'carol');
    clients.push(watcher);
    await join(watcher, 'channel:chat');
    expect((await post(node.http, stream, token('bob'), { type: 'join_room', room: 'channel:chat', id: 'j' })).status).toBe(202);
    await stream.next((e) => e.data.type === 'room_joined');
    // seq 3 before seq 2: kept, then applied after 2.
    const third = await post(node.http, stream, token('bob'), { type: 'send_message', room: 'channel:chat', data: { n: 2 } }, { seq: 3 });
    expect(third).toEqual({ status: 202, body: { ok: true, outcome: 'buffered' } });
    const second = await post(node.http, stream, token('bob'), { type: 'send_message', room: 'channel:chat', data: { n: 1 } }, { seq: 2 });
    expect(second).toEqual({ status: 202, body: { ok: true, outcome: 'applied' } });
    const got = [await watcher.next((e) => e.type === 'message.new'), await watcher.next((e) => e.type === 'message.new')].map((e) => (e.data as { n: number }).n);
    expect(got).toEqual([1, 2]);
    expect((await post(node.http, stream, token('bob'), { type: 'ping', id: 'again' }, { seq: 2 })).body['outcome']).toBe('duplicate');
  });

  it('answers every bad POST with its documented code, counted', async () => {
    const stream = await opened(node, 'dave');
    const before = await node.metricsText();
    const answers = {
      unknown: await post(node.http, stream, token('dave'), { type: 'ping' }, { session: `${node.nodeId}.AAAAAAAAAAAAAAAAAAAAAAAA` }),
      otherUser: await post(node.http, stream, token('mallory'), { type: 'ping' }),
      noToken: await post(node.http, stream, '', { type: 'ping' }),
      badToken: await post(node.http, stream, 'not-a-jwt', { type: 'ping' }),
      badSession: await post(node.http, stream, token('dave'), { type: 'ping' }, { session: 'garbage' }),
      badSeq: await post(node.http, stream, token('dave'), { type: 'ping' }, { seq: 0 }),
      tooLarge: await post(node.http, stream, token('dave'), { type: 'ping', pad: 'x'.repeat(5000) }),
      ahead: await post(node.http, stream, token('dave'), { type: 'ping' }, { seq: 1000 }),
    };
    const codes = Object.fromEntries(Object.entries(answers).map(([k, a]) => [k, `${a.status} ${String(a.body['code'])}`]));
    expect(codes).toEqual({
      unknown: '404 unknown_session',
      otherUser: '403 forbidden',
      noToken: '401 unauthorized',
      badToken: '401 unauthorized',
      badSession: '400 invalid_session',
      badSeq: '400 invalid_session',
      tooLarge: '413 too_large',
      ahead: '409 out_of_order',
    });
    // Too frequent: past WS_RATE_BURST (5) POSTs at once, 429 with Retry-After, and the seq is not used up.
    const busy = await opened(node, 'dave');
    const accepted: number[] = [];
    let refused: Awaited<ReturnType<typeof post>> | undefined;
    for (let i = 1; refused === undefined && i <= 50; i++) {
      const answer = await post(node.http, busy, token('dave'), { type: 'ping', id: `p${i}` });
      if (answer.status === 202) accepted.push(i);
      else refused = answer;
    }
    expect(accepted.length).toBeGreaterThanOrEqual(5);
    expect(refused).toMatchObject({ status: 429, body: { code: 'rate_limited' } });
    for (const i of accepted) await busy.next((e) => e.data.type === 'pong' && e.data['id'] === `p${i}`);
    const after = await node.metricsText();
    const delta = (outcome: string): number => sample(after, outcome) - sample(before, outcome);
    const counted = Object.fromEntries(['unknown_session', 'forbidden', 'unauthorized', 'bad_session', 'too_large', 'out_of_order', 'rate_limited', 'applied'].map((o) => [o, delta(o)]));
    console.log('fallback bad POSTs counted', JSON.stringify(counted));
    expect(counted).toEqual({ unknown_session: 1, forbidden: 1, unauthorized: 2, bad_session: 2, too_large: 1, out_of_order: 1, rate_limited: 1, applied: accepted.length });
    expect(node.connections()).toBeGreaterThan(0);
  });

  it('refuses a stream like the upgrade: 401 with the close code, the per-user limit 429, two tokens 401, a cross-site cookie 401', async () => {
    const bad = await openStream(node.http, { token: 'not-a-jwt' });
    expect(bad.status).toBe(401);
    expect(bad.body).toMatchObject({ code: 'unauthorized', close_code: 4401 });
    const none = await openStream(node.http, {});
    expect(none.status).toBe(401);
    const two = await openStream(node.http, { token: token('erin'), via: 'query', headers: { authorization: `Bearer ${token('erin')}` } });
    expect(two.status).toBe(401);
    // The cookie is ambient: from another site's page (an Origin, no WS_ALLOWED_ORIGINS) it is no token at all.
    const crossSite = await openStream(node.http, { token: token('erin'), via: 'cookie', headers: { origin: 'https://evil.example' } });
    expect(crossSite.status).toBe(401);
    // A header beside the cookie is the token: the cookie a same-origin page also carries does not make two.
    const both = await openStream(node.http, { token: token('erin'), headers: { cookie: `wsedge_token=${token('erin')}`, origin: 'https://app.example' } });
    expect(both.status).toBe(200);
    // With no WS_ALLOWED_ORIGINS another origin may read what it holds a token for, never with credentials.
    expect(both.headers.get('access-control-allow-origin')).toBe('https://app.example');
    expect(both.headers.get('access-control-allow-credentials')).toBeNull();
    both.abort();
    for (let i = 0; i < 3; i++) await opened(node, 'frank');
    const fourth = await openStream(node.http, { token: token('frank') });
    expect(fourth.status).toBe(429);
    expect(fourth.body).toMatchObject({ close_code: 4429 });
  });

  it('ends the stream with a closed message carrying the close code', async () => {
    const stream = await opened(node, 'gina', { via: 'cookie' });
    await stream.next((e) => e.data.type === 'connected');
    node.broker.disconnectUser('gina', 4000, 'bye');
    const closed = await stream.next((e) => e.data.type === 'closed');
    expect(closed.data).toEqual({ type: 'closed', code: 4000, reason: 'bye' });
    await stream.ended;
  });

  it('frees the connection at once when the reader goes away', async () => {
    const before = node.connections();
    const stream = await opened(node, 'henry');
    await stream.next((e) => e.data.type === 'connected');
    expect(node.connections()).toBe(before + 1);
    stream.abort();
    await waitFor('the loopback socket closed', () => node.connections() === before);
    expect(await node.metric('wsedge_fallback_streams_ended_total', { format: 'sse', why: 'aborted' })).toBeGreaterThanOrEqual(1);
  });

  it('ignores a malformed Last-Event-ID and joins the listed rooms from now', async () => {
    const stream = await opened(node, 'olga', { rooms: ['task:m1'], lastEventId: 'x=y:z,,task:m1=bad epoch!:5,task:m1=e:-1,task:m1=e:1.5,=:' });
    const joined = await stream.next((e) => e.data.type === 'room_joined');
    expect(joined.data).toMatchObject({ room: 'task:m1' });
    expect(joined.data['recovered']).toBeUndefined();
  });

  it('counts a fallback session against the per-address limit with the real client address, which no client can forge', async () => {
    const limited = await startTestNode({ WS_TRUSTED_PROXIES: '127.0.0.1', WS_MAX_CONNECTIONS_PER_IP: '1' });
    const from = (address: string) => ({ headers: { 'x-forwarded-for': address } });
    const first = await openStream(limited.http, { token: token('pia'), ...from('203.0.113.9') });
    streams.push(first);
    const second = await openStream(limited.http, { token: token('quin'), ...from('203.0.113.9') });
    expect({ status: second.status, close: (second.body as { close_code?: number }).close_code }).toEqual({ status: 429, close: 4429 });
    const other = await openStream(limited.http, { token: token('quin'), ...from('203.0.113.10') });
    streams.push(other);
    expect(other.status).toBe(200);
    // A relay header without the node's secret is not believed: this socket is 127.0.0.1's, whatever it claims.
    const forged = open(limited.url, token('rex'), { headers: { 'x-wsedge-relay': 'not-the-secret 198.51.100.7' } });
    clients.push(forged);
    await forged.next((e) => e.type === 'connected');
    const again = open(limited.url, token('sam'), { headers: { 'x-wsedge-relay': 'not-the-secret 198.51.100.8' } });
    clients.push(again);
    expect((await again.closed).code).toBe(4429);
  });

  it('counts a POST\'s refused token against its address (WS_AUTH_FAILURE_LIMIT, shared with the upgrades): a flood gets 429 before any verification, other addresses are served', async () => {
    const limited = await startTestNode({ WS_TRUSTED_PROXIES: '127.0.0.1', WS_AUTH_FAILURE_LIMIT: '3' });
    const from = (address: string) => ({ headers: { 'x-forwarded-for': address } });
    const stream = await openStream(limited.http, { token: token('tess'), ...from('203.0.113.20') });
    streams.push(stream);
    await stream.next((e) => e.data.type === 'connected');
    // 3 failures a minute, then 10 a second still verified (valid users behind a shared address get in): a burst of 40 passes both.
    const flood = await Promise.all(Array.from({ length: 40 }, () => post(limited.http, stream, 'not-a-jwt', { type: 'ping' }, { seq: 1, ...from('203.0.113.20') })));
    const statuses = flood.map((a) => a.status);
    const elsewhere = await post(limited.http, stream, token('tess'), { type: 'ping', id: 'elsewhere' }, { seq: 1, ...from('203.0.113.21') });
    const refused = statuses.filter((s) => s === 429).length;
    console.log(`fallback: 40 POSTs at once with a bad token from one address: ${statuses.filter((s) => s === 401).length} answered 401, ${refused} 429; a valid POST from another address ${elsewhere.status}`);
    expect(statuses.filter((s) => s !== 401 && s !== 429)).toEqual([]);
    expect(refused).toBeGreaterThan(0);
    expect(flood.find((a) => a.status === 429)!.body).toMatchObject({ code: 'too_many_requests', message: 'too many failed authentications from this address' });
    expect(elsewhere).toEqual({ status: 202, body: { ok: true, outcome: 'applied' } });
    expect(await limited.metric('wsedge_fallback_posts_total', { outcome: 'auth_failures' })).toBe(refused);
  });

  it('keeps a silent stream open with a comment heartbeat every 5 s', async () => {
    const stream = await opened(node, 'quiet');
    await stream.next((e) => e.data.type === 'connected');
    await waitFor('three heartbeats', () => stream.heartbeats() >= 3, 25_000, 200);
    node.events.publish('user:quiet', 'task.updated', { n: 1 });
    expect((await stream.next((e) => e.data.type === 'task.updated')).data['data']).toEqual({ n: 1 });
    console.log(`fallback heartbeats: ${stream.heartbeats()} comments, stream open after them`);
  }, 40_000);

  it('documents every fallback refusal in docs/WEBSOCKET_API.md', () => {
    const doc = readFileSync(new URL('../../docs/WEBSOCKET_API.md', import.meta.url), 'utf8');
    const section = doc.slice(doc.indexOf('## HTTP fallback'), doc.indexOf('## Client library'));
    for (const refusal of Object.values(FALLBACK_REFUSALS)) expect(section, refusal.code).toContain(`| ${refusal.status}`);
    for (const refusal of Object.values(FALLBACK_REFUSALS)) expect(section, refusal.code).toContain(`\`${refusal.code}\``);
  });

  it('closes a reader that falls WS_MAX_BACKPRESSURE behind, counted', async () => {
    const slowNode = await startTestNode({ WS_MESSAGE_MAX_SIZE: '65536', WS_MAX_BACKPRESSURE: '262144' });
    const socket = netConnect(slowNode.port, '127.0.0.1');
    socket.write(`GET /api/v1/ws/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token('ivan')}\r\n\r\n`);
    let head = '';
    await new Promise<void>((resolve) => {
      const onData = (chunk: Buffer): void => {
        head += chunk.toString();
        if (!head.includes('"connected"')) return;
        socket.off('data', onData);
        socket.pause();
        resolve();
      };
      socket.on('data', onData);
    });
    const big = 'x'.repeat(60_000);
    let published = 0;
    await waitFor('the slow reader closed', () => {
      for (let i = 0; i < 20; i++, published++) slowNode.events.publish('user:ivan', 'task.updated', { big });
      return slowNode.connections() === 0;
    });
    console.log(`fallback slow reader: closed after ${published} events of 60 KB`);
    expect(await slowNode.metric('wsedge_fallback_slow_closes_total')).toBe(1);
    socket.destroy();
  });
});

function sample(text: string, outcome: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`wsedge_fallback_posts_total{outcome="${outcome}"}`));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}
