/** `ws-edge/publisher` refuses bad arguments before anything reaches Redis, as the HTTP API does. */
import { afterAll, describe, expect, it } from 'vitest';
import { createPublisher } from '../../src/publisher.js';

// Nothing listens on port 1: a call that got past its checks would reject with "Redis unreachable".
const publisher = createPublisher({ redisUrl: 'redis://127.0.0.1:1' });
afterAll(() => publisher.close());

describe('publisher arguments', () => {
  it.each([
    ['an invalid user id', () => publisher.disconnectUser('not a user')],
    ['a code outside 4000-4999', () => publisher.disconnectUser('alice', 1000)],
    ['a fractional code', () => publisher.disconnectUser('alice', 4000.5)],
    ['a reason of two lines', () => publisher.disconnectUser('alice', 4403, 'two\nlines')],
    ['a reason over 123 bytes', () => publisher.disconnectUser('alice', 4403, 'é'.repeat(62))],
    ['a reserved type', () => publisher.sendToConnection('n1.1', 'connected', {})],
    ['a connection id without a node', () => publisher.sendToConnection('nodot', 'sync.required', {})],
  ])('rejects %s with a TypeError', async (_what, call) => {
    await expect(call()).rejects.toBeInstanceOf(TypeError);
  });

  it('throws synchronously for an invalid room', () => {
    expect(() => publisher.publish('room:1', 'task.created', {})).toThrow(TypeError);
  });
});
