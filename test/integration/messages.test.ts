/**
 * Messages: send_message fan-out to room members only, the event envelope, identity from the token,
 * acks and ping/pong, server-side publishing through node.events, and per-publisher ordering.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { connect, join, type Envelope, type TestClient } from '../helpers/client.js';
import { startTestNode, stopAllNodes } from '../helpers/node.js';

afterAll(stopAllNodes);

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

const event = (type: string, room: string, data: unknown, sender: string | null) => ({
  type,
  room,
  data,
  sender,
  timestamp: expect.stringMatching(ISO_UTC),
});

const ofType = (type: string) => (e: Envelope) => e.type === type;

/** Waits for `count` messages of `type`, in arrival order. */
async function collect(client: TestClient, type: string, count: number, timeoutMs = 5000): Promise<Envelope[]> {
  const out: Envelope[] = [];
  for (let i = 0; i < count; i++) out.push(await client.next(ofType(type), timeoutMs));
  return out;
}

describe('send_message', () => {
  it('reaches every member (the sender included, and other connections of the same user) and no non-member', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice', { username: 'Alice A.' });
    const alice2 = await connect(node.url, 'alice', { username: 'Alice A.' });
    const bob = await connect(node.url, 'bob');
    const carol = await connect(node.url, 'carol'); // connected, not a member
    const alice3 = await connect(node.url, 'alice', { username: 'Alice A.' }); // same user, not a member
    for (const c of [alice, alice2, bob]) await join(c, 'channel:7');
    await join(carol, 'channel:8');

    const data = { text: 'hello', n: 1, nested: { list: [1, 'two', null], ok: true } };
    alice.send({ type: 'send_message', room: 'channel:7', data });
    const expected = { ...event('message.new', 'channel:7', data, 'Alice A.'), user_id: 'alice' };
    for (const member of [alice, alice2, bob]) expect(await member.next(ofType('message.new'))).toEqual(expected);
    for (const other of [carol, alice3]) await other.expectNothing(ofType('message.new'));
    await alice.expectNothing(ofType('message.new'), 50); // exactly one copy for the sender
    expect(await node.metric('wsedge_messages_published_total', { source: 'client' })).toBe(1);
    expect(await node.metric('wsedge_messages_received_total', { type: 'send_message' })).toBe(1);
  });

  it('carries any JSON value as data unchanged', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    await join(alice, 'project:1');
    for (const data of ['a string', 42, 0, false, null, [1, { a: 'b' }], { 'unicode ✓': 'ünïcödé 🎉' }]) {
      alice.send({ type: 'send_message', room: 'project:1', data });
      expect(await alice.next(ofType('message.new'))).toEqual({ ...event('message.new', 'project:1', data, 'alice'), user_id: 'alice' });
    }
  });

  it('takes identity from the token, never from the body', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice', { username: 'Alice A.' });
    const bob = await connect(node.url, 'bob');
    await join(alice, 'project:1');
    await join(bob, 'project:1');
    const data = { text: 'hi', sender: 'mallory', user_id: 'mallory' };
    alice.send({ type: 'send_message', room: 'project:1', data, sender: 'mallory', user_id: 'mallory', username: 'Mallory', timestamp: '1999-01-01T00:00:00Z' });
    const got = await bob.next(ofType('message.new'));
    expect(got).toEqual({ ...event('message.new', 'project:1', data, 'Alice A.'), user_id: 'alice' });
    expect(got.timestamp).not.toBe('1999-01-01T00:00:00Z');
  });

  it('to a room not joined answers not_joined and delivers nothing', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    const bob = await connect(node.url, 'bob');
    await join(bob, 'project:1');
    alice.send({ type: 'send_message', room: 'project:1', data: { x: 1 }, id: 's-1' });
    expect(await alice.next((e) => e.id === 's-1')).toEqual({
      type: 'error',
      id: 's-1',
      data: { code: 'not_joined', message: expect.any(String), error: expect.any(String) },
      timestamp: expect.stringMatching(ISO_UTC),
    });
    await bob.expectNothing(ofType('message.new'));
    // The socket stays usable.
    alice.send({ type: 'ping', id: 'after' });
    expect(await alice.next((e) => e.id === 'after')).toMatchObject({ type: 'pong' });
  });

  it('to another user’s personal room is refused and delivers nothing', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    const bob = await connect(node.url, 'bob');
    alice.send({ type: 'send_message', room: 'user:bob', data: { x: 1 }, id: 's-2' });
    expect(await alice.next((e) => e.id === 's-2')).toMatchObject({ type: 'error', data: { code: 'not_joined' } });
    await bob.expectNothing(ofType('message.new'));
  });

  it('answers message_sent only when the message carries an id', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    await join(alice, 'task:3');
    alice.send({ type: 'send_message', room: 'task:3', data: 'no id' });
    await alice.next(ofType('message.new'));
    await alice.expectNothing(ofType('message_sent'));
    alice.send({ type: 'send_message', room: 'task:3', data: 'with id', id: 'm-1' });
    expect(await alice.next(ofType('message_sent'))).toEqual({
      type: 'message_sent',
      id: 'm-1',
      room: 'task:3',
      timestamp: expect.stringMatching(ISO_UTC),
    });
    // The broadcast copy never carries the client's id.
    expect(await alice.next(ofType('message.new'))).toEqual({ ...event('message.new', 'task:3', 'with id', 'alice'), user_id: 'alice' });
  });
});

describe('ping', () => {
  it('answers pong with the id echoed', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    alice.send({ type: 'ping', id: 'p-1' });
    expect(await alice.next(ofType('pong'))).toEqual({ type: 'pong', id: 'p-1', timestamp: expect.stringMatching(ISO_UTC) });
  });

  it('answers pong without an id when none was sent', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    alice.send({ type: 'ping' });
    expect(await alice.next(ofType('pong'))).toEqual({ type: 'pong', timestamp: expect.stringMatching(ISO_UTC) });
  });
});

describe('server-side publishing through node.events', () => {
  it('publish(room, type, data, sender) reaches members only, with the sender or null', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    const bob = await connect(node.url, 'bob');
    await join(alice, 'project:5');
    node.events.publish('project:5', 'project.updated', { name: 'New' }, 'system');
    expect(await alice.next(ofType('project.updated'))).toEqual(event('project.updated', 'project:5', { name: 'New' }, 'system'));
    node.events.publish('project:5', 'project.archived', { project_id: 5 });
    expect(await alice.next(ofType('project.archived'))).toEqual(event('project.archived', 'project:5', { project_id: 5 }, null));
    await bob.expectNothing((e) => e.type.startsWith('project.'));
    expect(await node.metric('wsedge_messages_published_total', { source: 'server' })).toBe(2);
  });

  it('publish refuses an invalid room and the server’s own event types', async () => {
    const node = await startTestNode();
    expect(() => node.events.publish('project:', 'task.created', {})).toThrow(TypeError);
    expect(() => node.events.publish('project:1', 'connected', {})).toThrow(TypeError);
    expect(() => node.events.publish('project:1', 'user_joined', {})).toThrow(TypeError);
    expect(() => node.events.publish('project:1', 'Not A Type', {})).toThrow(TypeError);
  });

  it('taskCreated reaches both project:<id> and task:<id>', async () => {
    const node = await startTestNode();
    const projectMember = await connect(node.url, 'alice');
    const taskMember = await connect(node.url, 'bob');
    const neither = await connect(node.url, 'carol');
    await join(projectMember, 'project:12');
    await join(taskMember, 'task:345');
    await join(neither, 'project:13');
    const task = { title: 'Write tests', status: 'todo', priority: 'high' };
    node.events.taskCreated({ projectId: 12, taskId: 345, task, by: 'dave' });
    const data = { task_id: 345, project_id: 12, task };
    expect(await projectMember.next(ofType('task.created'))).toEqual(event('task.created', 'project:12', data, 'dave'));
    expect(await taskMember.next(ofType('task.created'))).toEqual(event('task.created', 'task:345', data, 'dave'));
    await neither.expectNothing(ofType('task.created'));
    await projectMember.expectNothing(ofType('task.created'), 50);
  });

  it('a member of both task rooms gets the event once per room', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    await join(alice, 'project:1');
    await join(alice, 'task:2');
    node.events.taskStatusChanged({ projectId: 1, taskId: 2, from: 'todo', to: 'done' });
    const got = await collect(alice, 'task.status_changed', 2);
    expect(got.map((e) => e.room).sort()).toEqual(['project:1', 'task:2']);
    for (const e of got) expect(e.data).toEqual({ task_id: 2, project_id: 1, old_status: 'todo', new_status: 'done' });
    await alice.expectNothing(ofType('task.status_changed'));
  });

  it('messageNew reaches the channel room', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    const bob = await connect(node.url, 'bob');
    await join(alice, 'channel:9');
    node.events.messageNew({ channelId: 9, messageId: 100, message: { text: 'from the backend' }, by: 'bob' });
    expect(await alice.next(ofType('message.new'))).toEqual(
      event('message.new', 'channel:9', { message_id: 100, message: { text: 'from the backend' } }, 'bob'),
    );
    await bob.expectNothing(ofType('message.new'));
  });

  it('notificationMentioned reaches the user room of that user only', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    const bob = await connect(node.url, 'bob');
    await join(alice, 'channel:9');
    await join(bob, 'channel:9');
    node.events.notificationMentioned({ userId: 'bob', room: 'channel:9', messageId: 100, excerpt: 'hi @bob', by: 'alice' });
    expect(await bob.next(ofType('notification.mentioned'))).toEqual(
      event('notification.mentioned', 'user:bob', { room: 'channel:9', message_id: 100, excerpt: 'hi @bob' }, 'alice'),
    );
    await alice.expectNothing(ofType('notification.mentioned'));
  });
});

describe('ordering and delivery', () => {
  it('100 messages from one client arrive once each, in order, at every member', async () => {
    const node = await startTestNode({ WS_RATE_LIMIT: '1000', WS_RATE_BURST: '1000' });
    const alice = await connect(node.url, 'alice');
    const bob = await connect(node.url, 'bob');
    await join(alice, 'channel:1');
    await join(bob, 'channel:1');
    for (let seq = 0; seq < 100; seq++) alice.send({ type: 'send_message', room: 'channel:1', data: { seq } });
    const expected = Array.from({ length: 100 }, (_, i) => i);
    for (const member of [bob, alice]) {
      const got = await collect(member, 'message.new', 100);
      expect(got.map((e) => (e.data as { seq: number }).seq)).toEqual(expected);
      await member.expectNothing(ofType('message.new'), 100);
    }
    expect(await node.metric('wsedge_rate_limited_total')).toBe(0);
  });

  it('100 events from the server arrive once each, in order', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    await join(alice, 'project:1');
    for (let seq = 0; seq < 100; seq++) node.events.publish('project:1', 'test.seq', { seq });
    const got = await collect(alice, 'test.seq', 100);
    expect(got.map((e) => (e.data as { seq: number }).seq)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    await alice.expectNothing(ofType('test.seq'));
  });

  // Publishes run after the read (src/delivery.ts); replies must not overtake them. Frames written
  // in one burst land in one read, where the reordering would show.
  it('a socket gets events and replies in request order when many requests arrive in one read', async () => {
    const node = await startTestNode({ WS_RATE_LIMIT: '1000', WS_RATE_BURST: '1000' });
    const alice = await connect(node.url, 'alice');
    await join(alice, 'channel:1');
    const expected: string[] = [];
    for (let seq = 0; seq < 50; seq++) {
      alice.send({ type: 'send_message', room: 'channel:1', data: { seq }, id: `m${seq}` });
      alice.send({ type: 'ping', id: `p${seq}` });
      expected.push(`message.new ${seq}`, `message_sent m${seq}`, `pong p${seq}`);
    }
    alice.send({ type: 'send_message', room: 'channel:1', data: { seq: 50 } });
    alice.send({ type: 'leave_room', room: 'channel:1', id: 'leave' });
    expected.push('message.new 50', 'room_left leave');
    const got: string[] = [];
    for (let i = 0; i < expected.length; i++) {
      const e = await alice.next();
      got.push(e.type === 'message.new' ? `${e.type} ${(e.data as { seq: number }).seq}` : `${e.type} ${e.id}`);
    }
    expect(got).toEqual(expected);
  });
});
