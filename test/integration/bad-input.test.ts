/**
 * Bad client input is answered with an error envelope and the connection stays; a client that
 * keeps sending it is closed with 1008. Other clients never notice.
 */
import { connect as tcpConnect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { connect, join, token, type Envelope, type TestClient } from '../helpers/client.js';
import { startTestNode, stopAllNodes, type TestNode } from '../helpers/node.js';

afterAll(stopAllNodes);

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

/** `message` is also sent as `error`, its first name (kept for older clients). */
function errorEnvelope(code: string, message: string, id?: string): Record<string, unknown> {
  return {
    type: 'error',
    ...(id !== undefined && { id }),
    data: { code, message, error: message },
    timestamp: expect.stringMatching(ISO),
  };
}

async function nextError(client: TestClient): Promise<Envelope> {
  return client.next((e) => e.type === 'error');
}

async function expectAlive(client: TestClient, id: string): Promise<void> {
  client.send({ type: 'ping', id });
  expect(await client.next((e) => e.id === id)).toEqual({ type: 'pong', id, timestamp: expect.stringMatching(ISO) });
  expect(client.ws.readyState).toBe(WebSocket.OPEN);
}

/** `[[[...]]]` nested `depth` levels (the outer array is level 1). */
function nested(depth: number): unknown {
  let value: unknown = [];
  for (let i = 1; i < depth; i++) value = [value];
  return value;
}

describe('bad input answered with an error envelope, the connection stays', () => {
  let node: TestNode;
  let client: TestClient;
  let member: TestClient;

  beforeAll(async () => {
    // High invalid-message and rate budgets: this block checks the replies, not the policy closes.
    node = await startTestNode({ WS_MAX_INVALID_MESSAGES: '1000', WS_RATE_BURST: '1000' });
    client = await connect(node.url, 'alice');
    member = await connect(node.url, 'bob');
    await join(client, 'channel:1');
    await join(member, 'channel:1');
  });

  const cases: Array<[string, string | Buffer, string, string]> = [
    ['text that is not JSON', 'not json', 'invalid_json', 'message is not valid JSON'],
    ['truncated JSON', '{"type":"ping"', 'invalid_json', 'message is not valid JSON'],
    ['a JSON array', '[{"type":"ping"}]', 'invalid_message', 'message must be a JSON object'],
    ['a JSON number', '42', 'invalid_message', 'message must be a JSON object'],
    ['a JSON string', '"ping"', 'invalid_message', 'message must be a JSON object'],
    ['JSON null', 'null', 'invalid_message', 'message must be a JSON object'],
    ['an object without type', '{}', 'invalid_message', '"type" must be a string'],
    ['a non-string type', '{"type":7}', 'invalid_message', '"type" must be a string'],
    ['an unknown type', '{"type":"subscribe"}', 'unknown_type', 'unknown message type'],
    ['join_room without room', '{"type":"join_room"}', 'invalid_message', '"room" must be a string'],
    ['leave_room with a numeric room', '{"type":"leave_room","room":1}', 'invalid_message', '"room" must be a string'],
    ['send_message without room', '{"type":"send_message","data":{}}', 'invalid_message', '"room" must be a string'],
    ['send_message without data', '{"type":"send_message","room":"channel:1"}', 'invalid_message', '"data" is required'],
    ['refresh_token without token', '{"type":"refresh_token"}', 'invalid_message', '"token" must be a non-empty string'],
    ['a numeric id', '{"type":"ping","id":5}', 'invalid_message', '"id" must be a string of at most 128 characters'],
    ['an id of 129 characters', JSON.stringify({ type: 'ping', id: 'i'.repeat(129) }), 'invalid_message', '"id" must be a string of at most 128 characters'],
    ['a binary frame', Buffer.from('{"type":"ping"}'), 'binary_not_supported', 'only JSON text frames are supported'],
  ];

  it.each(cases)('answers %s with the exact error, without an id', async (_name, frame, code, error) => {
    client.send(frame);
    expect(await nextError(client)).toEqual(errorEnvelope(code, error));
    await expectAlive(client, `alive-${code}`);
  });

  it.each([
    ['an unknown type', { type: 'subscribe', id: 'u1' }, 'unknown_type', 'unknown message type'],
    ['join_room without room', { type: 'join_room', id: 'j1' }, 'invalid_message', '"room" must be a string'],
    ['send_message without data', { type: 'send_message', room: 'channel:1', id: 's1' }, 'invalid_message', '"data" is required'],
    ['a 128-character id', { type: 'join_room', id: 'k'.repeat(128) }, 'invalid_message', '"room" must be a string'],
  ])('echoes a valid id in the error for %s', async (_name, frame, code, error) => {
    client.send(frame);
    expect(await nextError(client)).toEqual(errorEnvelope(code, error, frame.id));
  });

  it('accepts data nested exactly 32 levels deep and refuses 33 with invalid_message', async () => {
    client.send({ type: 'send_message', room: 'channel:1', id: 'd32', data: nested(32) });
    expect(await client.next((e) => e.id === 'd32')).toMatchObject({ type: 'message_sent', room: 'channel:1' });
    expect((await member.next((e) => e.type === 'message.new')).data).toEqual(nested(32));

    client.send({ type: 'send_message', room: 'channel:1', id: 'd33', data: nested(33) });
    expect(await nextError(client)).toEqual(errorEnvelope('invalid_message', '"data" nests deeper than 32 levels', 'd33'));
    await member.expectNothing((e) => e.type === 'message.new');
    await expectAlive(client, 'after-deep');
  });

  it('refuses very deep nesting (100,000 levels) without harm', async () => {
    const deep = '{"type":"send_message","room":"channel:1","id":"deep","data":' + '['.repeat(100_000) + ']'.repeat(100_000) + '}';
    client.send(deep);
    // JSON.parse in V8 is iterative, so this parses; the bound check (also iterative) refuses it.
    expect(await nextError(client)).toEqual(errorEnvelope('invalid_message', '"data" nests deeper than 32 levels', 'deep'));
    await member.expectNothing((e) => e.type === 'message.new');
    await expectAlive(client, 'after-very-deep');
  });

  it('accepts 10,000 values in data and refuses a huge array of 200,000 numbers with invalid_message', async () => {
    client.send({ type: 'send_message', room: 'channel:1', id: 'v10k', data: new Array(10_000).fill(1) });
    expect(await client.next((e) => e.id === 'v10k')).toMatchObject({ type: 'message_sent' });
    expect((await member.next((e) => e.type === 'message.new')).data).toHaveLength(10_000);

    const huge = JSON.stringify({ type: 'send_message', room: 'channel:1', id: 'huge', data: new Array(200_000).fill(7) });
    expect(Buffer.byteLength(huge)).toBeLessThan(1_048_576);
    client.send(huge);
    expect(await nextError(client)).toEqual(errorEnvelope('invalid_message', '"data" holds more than 10000 values', 'huge'));
    await member.expectNothing((e) => e.type === 'message.new');
    await expectAlive(client, 'after-huge');
  });

  it('counts invalid frames and error envelopes without per-client labels', async () => {
    const text = await node.metricsText();
    const line = (prefix: string) => text.split('\n').filter((l) => l.startsWith(prefix));
    expect(line('wsedge_messages_received_total{type="invalid"}')).toHaveLength(1);
    expect(line('wsedge_message_errors_total{code="binary_not_supported"} 1')).toHaveLength(1);
    expect(line('wsedge_message_errors_total{code="invalid_json"}')).toHaveLength(1);
    expect(line('wsedge_message_errors_total{code="unknown_type"} 2')).toHaveLength(1);
    expect(text).not.toContain('"subscribe"');
    expect(await node.metric('wsedge_policy_closes_total', { reason: 'invalid_messages' })).toBe(0);
    expect(await node.metric('wsedge_connections')).toBe(2);
  });
});

describe('a client that keeps sending bad messages (WS_MAX_INVALID_MESSAGES=3)', () => {
  it('answers three invalid messages and closes with 1008 on the fourth, and counts it', async () => {
    const node = await startTestNode({ WS_MAX_INVALID_MESSAGES: '3' });
    const client = await connect(node.url, 'alice');
    client.send('garbage');
    client.send('[]');
    client.send({ type: 'nope', id: 'n' });
    expect(await nextError(client)).toEqual(errorEnvelope('invalid_json', 'message is not valid JSON'));
    expect(await nextError(client)).toEqual(errorEnvelope('invalid_message', 'message must be a JSON object'));
    expect(await nextError(client)).toEqual(errorEnvelope('unknown_type', 'unknown message type', 'n'));
    await expectAlive(client, 'still-open');

    client.send(Buffer.from([1, 2, 3]));
    expect(await client.closed).toEqual({ code: 1008, reason: 'too many invalid messages' });
    expect(client.received.filter((e) => e.type === 'error')).toEqual([]);
    expect(await node.metric('wsedge_policy_closes_total', { reason: 'invalid_messages' })).toBe(1);
    expect(await node.metric('wsedge_connections_closed_total', { code: '1008' })).toBe(1);
    expect(await node.metric('wsedge_connections')).toBe(0);
  });

  it('does not count valid messages or handler refusals (forbidden, not_joined) as invalid', async () => {
    const node = await startTestNode({ WS_MAX_INVALID_MESSAGES: '3' });
    const client = await connect(node.url, 'alice', { rooms: ['channel:1'] });
    for (let i = 0; i < 5; i++) {
      client.send({ type: 'join_room', room: 'project:9', id: `f${i}` });
      expect(await client.next((e) => e.id === `f${i}`)).toEqual(errorEnvelope('forbidden', 'not allowed to join this room', `f${i}`));
      client.send({ type: 'send_message', room: 'channel:1', data: {}, id: `n${i}` });
      expect((await client.next((e) => e.id === `n${i}`)).data.code).toBe('not_joined');
    }
    await expectAlive(client, 'alive');
    expect(await node.metric('wsedge_policy_closes_total', { reason: 'invalid_messages' })).toBe(0);
  });
});

describe('other clients keep working', () => {
  it('delivers room messages to others while one client sends garbage until it is closed', async () => {
    const node = await startTestNode({ WS_MAX_INVALID_MESSAGES: '3' });
    const vandal = await connect(node.url, 'mallory');
    const alice = await connect(node.url, 'alice');
    const bob = await connect(node.url, 'bob');
    for (const c of [vandal, alice, bob]) await join(c, 'project:1');

    const garbage = ['{', '[]', 'null', '{"type":"x"}', Buffer.from([0xff])];
    for (const [i, frame] of garbage.entries()) {
      vandal.send(frame);
      alice.send({ type: 'send_message', room: 'project:1', data: { n: i } });
      expect(await bob.next((e) => e.type === 'message.new' && e.data?.n === i)).toMatchObject({
        room: 'project:1',
        sender: 'alice',
      });
    }
    expect((await vandal.closed).code).toBe(1008);
    expect(await bob.next((e) => e.type === 'user_left' && e.data?.user_id === 'mallory')).toMatchObject({ room: 'project:1' });

    alice.send({ type: 'send_message', room: 'project:1', data: { n: 'after' } });
    expect(await bob.next((e) => e.type === 'message.new' && e.data?.n === 'after')).toMatchObject({ sender: 'alice' });
    await expectAlive(alice, 'a');
    await expectAlive(bob, 'b');
    // The vandal's garbage never reached a member.
    expect(bob.received.filter((e) => e.type === 'error')).toEqual([]);
  });
});

/**
 * RFC 6455 §5.1: a server must close a connection whose client frames are not masked. Neither uWS
 * build checks the MASK bit (README "uWebSockets.js builds"): it unmasks every client frame with the
 * four bytes after the length. These pin what each build does, so the docs stay true if uWS changes.
 */
describe('client frames without the MASK bit (not checked by uWS)', () => {
  /** Upgrades over raw TCP, writes `frame`, and lists what the server sent back within 500 ms. */
  function rawFrame(node: TestNode, frame: Buffer): Promise<string[]> {
    return new Promise((resolve) => {
      const socket = tcpConnect(node.port, '127.0.0.1');
      let buffer = Buffer.alloc(0);
      let upgraded = false;
      const seen: string[] = [];
      socket.on('data', (chunk) => {
        buffer = Buffer.concat([buffer, chunk]);
        if (!upgraded) {
          const end = buffer.indexOf('\r\n\r\n');
          if (end < 0) return;
          upgraded = true;
          buffer = buffer.subarray(end + 4);
          socket.write(frame);
        }
        // Server frames are small and unmasked: opcode and a 7- or 16-bit length.
        while (buffer.length >= 2) {
          const long = (buffer[1]! & 0x7f) === 126;
          const length = long ? buffer.readUInt16BE(2) : buffer[1]! & 0x7f;
          const start = long ? 4 : 2;
          if (buffer.length < start + length) break;
          const opcode = buffer[0]! & 0x0f;
          seen.push(opcode === 1 ? `text:${JSON.parse(buffer.subarray(start, start + length).toString()).type}` : opcode === 10 ? 'pong' : opcode === 8 ? 'close' : `opcode:${opcode}`);
          buffer = buffer.subarray(start + length);
        }
      });
      socket.on('error', () => {});
      setTimeout(() => {
        socket.destroy();
        resolve(seen);
      }, 500);
      socket.write(
        `GET /api/v1/ws/connect?token=${token('raw')} HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      );
    });
  }

  it('answers a ping whose MASK bit is cleared as if it were masked, and waits for a mask key after an unmasked one; others are served', async () => {
    const node = await startTestNode();
    const other = await connect(node.url, 'other');
    // FIN+ping, length 0, MASK bit clear, then four bytes uWS takes for the key.
    expect(await rawFrame(node, Buffer.from([0x89, 0x00, 1, 2, 3, 4]))).toEqual(['text:connected', 'pong']);
    // A truly unmasked ping: uWS waits for a mask key that never comes, so no pong and no close.
    expect(await rawFrame(node, Buffer.from([0x89, 0x00]))).toEqual(['text:connected']);
    // The masked form is answered the same way, and the node serves everyone else throughout.
    expect(await rawFrame(node, Buffer.from([0x89, 0x80, 1, 2, 3, 4]))).toEqual(['text:connected', 'pong']);
    await expectAlive(other, 'after-unmasked');
  });
});
