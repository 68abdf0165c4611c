import { afterEach, describe, expect, it, vi } from 'vitest';
import type { MessageError } from '../../src/errors.js';
import { MAX_DATA_DEPTH, MAX_DATA_VALUES, MAX_EVENT_TYPE_LENGTH, MAX_ID_LENGTH, type ClientMessage } from '../../src/messages.js';
import { encodeError, encodeEvent, encodeReply, isParseFailure, isPublishableType, parseFrame, type ParseFailure } from '../../src/protocol.js';

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

function failure(text: string): ParseFailure {
  const result = parseFrame(text);
  if (!isParseFailure(result)) throw new Error(`expected a failure for ${text}, got ${JSON.stringify(result)}`);
  return result;
}

function message(text: string): ClientMessage {
  const result = parseFrame(text);
  if (isParseFailure(result)) throw new Error(`expected a message for ${text}, got ${JSON.stringify(result)}`);
  return result;
}

const sendFrame = (data: unknown, id?: string): string => JSON.stringify({ type: 'send_message', room: 'project:1', data, id });

/** `depth` nested arrays: depth 1 is `[]`. */
function nestedArrays(depth: number): string {
  return '['.repeat(depth) + ']'.repeat(depth);
}

/** `depth` nested objects: depth 1 is `{}`. */
function nestedObjects(depth: number): unknown {
  let value: unknown = {};
  for (let i = 1; i < depth; i++) value = { a: value };
  return value;
}

describe('parseFrame: frames that are not messages', () => {
  it.each(['', 'not json', '{"type":"ping"', "{'type':'ping'}", '{"type":"ping"}x'])('answers invalid_json for %j', (text) => {
    expect(failure(text)).toEqual({ error: { code: 'invalid_json', message: 'message is not valid JSON' }, id: undefined, type: undefined });
  });

  it.each(['[]', '[{"type":"ping"}]', '42', 'null', '"ping"', 'true'])('answers invalid_message for the non-object %s', (text) => {
    expect(failure(text)).toEqual({
      error: { code: 'invalid_message', message: 'message must be a JSON object' },
      id: undefined,
      type: undefined,
    });
  });

  it('answers invalid_message when type is missing or not a string', () => {
    const missing = failure('{"room":"project:1"}');
    expect(missing.error).toEqual({ code: 'invalid_message', message: '"type" must be a string' });
    expect(failure('{"type":42}').error.code).toBe('invalid_message');
    expect(failure('{"type":null}').error.code).toBe('invalid_message');
    expect(failure('{"type":["ping"]}').error.code).toBe('invalid_message');
  });

  it.each(['JOIN_ROOM', 'pong', 'connected', 'message.new', '', '__proto__', 'constructor'])('answers unknown_type for type %j', (type) => {
    expect(failure(JSON.stringify({ type }))).toEqual({
      error: { code: 'unknown_type', message: 'unknown message type' },
      id: undefined,
      type: undefined,
    });
  });

  it.each(['join_room', 'leave_room', 'send_message'] as const)('answers invalid_message for %s without a string room', (type) => {
    expect(failure(JSON.stringify({ type, data: 1 }))).toEqual({
      error: { code: 'invalid_message', message: '"room" must be a string' },
      id: undefined,
      type,
    });
    expect(failure(JSON.stringify({ type, room: 1, data: 1 })).error.code).toBe('invalid_message');
  });

  it('answers invalid_message for send_message without data', () => {
    expect(failure('{"type":"send_message","room":"project:1"}')).toEqual({
      error: { code: 'invalid_message', message: '"data" is required' },
      id: undefined,
      type: 'send_message',
    });
  });

  it.each([
    ['missing', {}],
    ['empty', { token: '' }],
    ['a number', { token: 5 }],
    ['longer than 8192 characters', { token: 'x'.repeat(8193) }],
  ])('answers invalid_message for refresh_token with a token %s', (_what, fields) => {
    expect(failure(JSON.stringify({ type: 'refresh_token', ...fields }))).toEqual({
      error: { code: 'invalid_message', message: '"token" must be a non-empty string' },
      id: undefined,
      type: 'refresh_token',
    });
  });
});

describe('parseFrame: valid messages', () => {
  it('parses every client message type', () => {
    expect(message('{"type":"join_room","room":"project:1"}')).toEqual({ type: 'join_room', room: 'project:1', id: undefined });
    expect(message('{"type":"leave_room","room":"project:1","id":"r1"}')).toEqual({ type: 'leave_room', room: 'project:1', id: 'r1' });
    expect(message('{"type":"send_message","room":"channel:2","data":{"text":"hi"}}')).toEqual({
      type: 'send_message',
      room: 'channel:2',
      data: { text: 'hi' },
      id: undefined,
    });
    expect(message('{"type":"ping"}')).toEqual({ type: 'ping', id: undefined });
    expect(message('{"type":"refresh_token","token":"abc"}')).toEqual({ type: 'refresh_token', token: 'abc', id: undefined });
    expect(message(JSON.stringify({ type: 'refresh_token', token: 'x'.repeat(8192) })).type).toBe('refresh_token');
  });

  it('leaves the room string to the rooms module (grammar is checked by the handler)', () => {
    expect(message('{"type":"join_room","room":"not a room"}')).toEqual({ type: 'join_room', room: 'not a room', id: undefined });
  });

  it.each([null, 0, false, '', 'text', [], {}])('accepts send_message data %j', (data) => {
    expect(message(sendFrame(data))).toEqual({ type: 'send_message', room: 'project:1', data, id: undefined });
  });

  it('ignores unknown extra fields', () => {
    expect(message('{"type":"ping","extra":{"deep":[1,2,3]}}')).toEqual({ type: 'ping', id: undefined });
  });
});

describe('parseFrame: id echo', () => {
  it('echoes a valid id on success and on every failure after the id check', () => {
    expect(message('{"type":"ping","id":"p-1"}')).toEqual({ type: 'ping', id: 'p-1' });
    expect(failure('{"id":"a"}').id).toBe('a');
    expect(failure('{"type":"nope","id":"b"}')).toEqual({ error: { code: 'unknown_type', message: 'unknown message type' }, id: 'b', type: undefined });
    expect(failure('{"type":"join_room","id":"c"}').id).toBe('c');
    expect(failure('{"type":"send_message","room":"project:1","id":"d"}').id).toBe('d');
    expect(failure(sendFrame(nestedObjects(MAX_DATA_DEPTH + 1), 'e')).id).toBe('e');
  });

  it('echoes an empty id', () => {
    expect(message('{"type":"ping","id":""}')).toEqual({ type: 'ping', id: '' });
  });

  it(`accepts an id of ${MAX_ID_LENGTH} characters`, () => {
    const id = 'i'.repeat(MAX_ID_LENGTH);
    expect(message(JSON.stringify({ type: 'ping', id }))).toEqual({ type: 'ping', id });
  });

  it(`refuses an id of ${MAX_ID_LENGTH + 1} characters without echoing it`, () => {
    expect(failure(JSON.stringify({ type: 'ping', id: 'i'.repeat(MAX_ID_LENGTH + 1) }))).toEqual({
      error: { code: 'invalid_message', message: `"id" must be a string of at most ${MAX_ID_LENGTH} characters` },
      id: undefined,
      type: undefined,
    });
  });

  it.each([7, null, true, {}, ['x']])('refuses the non-string id %j without echoing it', (id) => {
    const result = failure(JSON.stringify({ type: 'ping', id }));
    expect(result.error.code).toBe('invalid_message');
    expect(result.id).toBeUndefined();
  });

  it('does not echo an id when the frame is not an object', () => {
    expect(failure('[{"id":"x"}]').id).toBeUndefined();
  });
});

describe('parseFrame: data bounds', () => {
  it(`accepts arrays nested exactly ${MAX_DATA_DEPTH} deep and refuses ${MAX_DATA_DEPTH + 1}`, () => {
    const at = `{"type":"send_message","room":"project:1","data":${nestedArrays(MAX_DATA_DEPTH)}}`;
    const over = `{"type":"send_message","room":"project:1","data":${nestedArrays(MAX_DATA_DEPTH + 1)}}`;
    expect(message(at).type).toBe('send_message');
    expect(failure(over)).toEqual({
      error: { code: 'invalid_message', message: `"data" nests deeper than ${MAX_DATA_DEPTH} levels` },
      id: undefined,
      type: 'send_message',
    });
  });

  it(`accepts objects nested exactly ${MAX_DATA_DEPTH} deep and refuses ${MAX_DATA_DEPTH + 1}`, () => {
    expect(message(sendFrame(nestedObjects(MAX_DATA_DEPTH))).type).toBe('send_message');
    expect(failure(sendFrame(nestedObjects(MAX_DATA_DEPTH + 1))).error).toEqual({
      code: 'invalid_message',
      message: `"data" nests deeper than ${MAX_DATA_DEPTH} levels`,
    });
  });

  it('counts a scalar inside the deepest container as no extra level', () => {
    const text = `{"type":"send_message","room":"project:1","data":${'['.repeat(MAX_DATA_DEPTH)}1${']'.repeat(MAX_DATA_DEPTH)}}`;
    expect(message(text).type).toBe('send_message');
  });

  it(`accepts exactly ${MAX_DATA_VALUES} values and refuses one more`, () => {
    const at = Array.from({ length: MAX_DATA_VALUES }, (_, i) => i);
    expect(message(sendFrame(at)).type).toBe('send_message');
    expect(failure(sendFrame([...at, 0]))).toEqual({
      error: { code: 'invalid_message', message: `"data" holds more than ${MAX_DATA_VALUES} values` },
      id: undefined,
      type: 'send_message',
    });
  });

  it('counts values recursively, object members and array items alike', () => {
    const half = MAX_DATA_VALUES / 2 - 1;
    // 2 members + 2 * (5000 - 1) items = 10,000 values.
    const at = { a: new Array(half).fill('x'), b: new Array(half).fill(null) };
    expect(message(sendFrame(at)).type).toBe('send_message');
    const over = { a: new Array(half).fill('x'), b: new Array(half + 1).fill(null) };
    expect(failure(sendFrame(over)).error.message).toBe(`"data" holds more than ${MAX_DATA_VALUES} values`);
  });

  it('survives an array nested 100,000 levels deep without throwing', () => {
    const depth = 100_000;
    const text = `{"type":"send_message","room":"project:1","id":"deep","data":${nestedArrays(depth)}}`;
    let result: ReturnType<typeof parseFrame> | undefined;
    expect(() => {
      result = parseFrame(text);
    }).not.toThrow();
    expect(result).toEqual({
      error: { code: 'invalid_message', message: `"data" nests deeper than ${MAX_DATA_DEPTH} levels` },
      id: 'deep',
      type: 'send_message',
    });
  });

  it('does not bound data of other message types (they ignore it)', () => {
    const text = `{"type":"ping","data":${nestedArrays(MAX_DATA_DEPTH + 5)}}`;
    expect(message(text)).toEqual({ type: 'ping', id: undefined });
  });
});

describe('encoding', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  const at = (iso: string): void => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date(iso));
  };

  it('encodes an event envelope with exactly type, room, data, sender, timestamp', () => {
    at('2025-11-13T12:00:00.000Z');
    const text = encodeEvent('task.created', 'project:1', { task_id: 7 }, 'alice');
    const envelope = JSON.parse(text) as Record<string, unknown>;
    expect(Object.keys(envelope)).toEqual(['type', 'room', 'data', 'sender', 'timestamp']);
    expect(envelope).toEqual({ type: 'task.created', room: 'project:1', data: { task_id: 7 }, sender: 'alice', timestamp: '2025-11-13T12:00:00.000Z' });
  });

  it('encodes a null sender as null', () => {
    at('2025-01-02T03:04:05.678Z');
    expect(encodeEvent('project.archived', 'project:9', null, null)).toBe(
      '{"type":"project.archived","room":"project:9","data":null,"sender":null,"timestamp":"2025-01-02T03:04:05.678Z"}',
    );
  });

  it('writes timestamps as ISO 8601 UTC with milliseconds', () => {
    const envelope = JSON.parse(encodeEvent('a', 'user:x', 1, null)) as { timestamp: string };
    expect(envelope.timestamp).toMatch(ISO_UTC);
    expect(Math.abs(Date.parse(envelope.timestamp) - Date.now())).toBeLessThan(5_000);
  });

  it('encodes a reply with and without an id', () => {
    at('2025-11-13T12:00:00.000Z');
    expect(encodeReply('pong', {}, undefined)).toBe('{"type":"pong","timestamp":"2025-11-13T12:00:00.000Z"}');
    expect(encodeReply('room_joined', { room: 'project:1' }, 'j1')).toBe(
      '{"type":"room_joined","id":"j1","room":"project:1","timestamp":"2025-11-13T12:00:00.000Z"}',
    );
    expect(JSON.parse(encodeReply('pong', {}, undefined))).not.toHaveProperty('id');
  });

  it('encodes an error with the machine code and the human message, the message also under its first name `error`', () => {
    at('2025-11-13T12:00:00.000Z');
    const error: MessageError = { code: 'forbidden', message: 'not allowed to join project:1' };
    const data = { code: 'forbidden', message: 'not allowed to join project:1', error: 'not allowed to join project:1' };
    expect(JSON.parse(encodeError(error, undefined))).toEqual({ type: 'error', data, timestamp: '2025-11-13T12:00:00.000Z' });
    expect(JSON.parse(encodeError(error, 'x9'))).toEqual({ type: 'error', id: 'x9', data, timestamp: '2025-11-13T12:00:00.000Z' });
    expect(JSON.parse(encodeError({ code: 'rejected', message: 'no spam here', detail: 'spam' }, 'm1', 'channel:1'))).toEqual({
      type: 'error',
      id: 'm1',
      room: 'channel:1',
      data: { code: 'rejected', message: 'no spam here', error: 'no spam here', detail: 'spam' },
      timestamp: '2025-11-13T12:00:00.000Z',
    });
  });
});

describe('isPublishableType', () => {
  it.each([
    'task.created',
    'task.status_changed',
    'message.new',
    'notification.mentioned',
    'user.typing',
    'a',
    'a1.b2_c',
    'x'.repeat(MAX_EVENT_TYPE_LENGTH),
  ])('accepts %s', (type) => {
    expect(isPublishableType(type)).toBe(true);
  });

  it.each([
    'connected',
    'error',
    'pong',
    'room_joined',
    'room_left',
    'user_joined',
    'user_left',
    'token_refreshed',
    'message_sent',
    'join_room',
    'leave_room',
    'send_message',
    'ping',
    'refresh_token',
  ])('refuses the reserved type %s', (type) => {
    expect(isPublishableType(type)).toBe(false);
  });

  it.each([
    '',
    'Task.created',
    'task..created',
    '.task',
    'task.',
    '1task',
    'task.1created',
    'task-created',
    'task created',
    'task:created',
    'x'.repeat(MAX_EVENT_TYPE_LENGTH + 1),
  ])('refuses the malformed type %j', (type) => {
    expect(isPublishableType(type)).toBe(false);
  });

  it.each([null, undefined, 1, {}, ['task.created']])('refuses the non-string %j', (type) => {
    expect(isPublishableType(type)).toBe(false);
  });
});
