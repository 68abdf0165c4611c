import { afterAll, describe, expect, it } from 'vitest';
import { connect, join } from '../helpers/client.js';
import { startTestNode, stopAllNodes } from '../helpers/node.js';

afterAll(stopAllNodes);

describe('smoke', () => {
  it('delivers a message to room members', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    const bob = await connect(node.url, 'bob');
    await join(alice, 'project:1');
    await join(bob, 'project:1');
    alice.send({ type: 'send_message', room: 'project:1', data: { text: 'hi' } });
    const got = await bob.next((e) => e.type === 'message.new');
    expect(got).toMatchObject({ type: 'message.new', room: 'project:1', data: { text: 'hi' }, sender: 'alice' });
    expect(await node.metric('wsedge_connections')).toBe(2);
  });
});
