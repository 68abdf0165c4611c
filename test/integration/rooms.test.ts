/**
 * Rooms: join and leave replies, membership events, the room grammar, the access policy from the
 * token's `rooms` claim, the per-connection room limit, and membership event suppression.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { connect, join, type Envelope, type TestClient } from '../helpers/client.js';
import { startTestNode, stopAllNodes } from '../helpers/node.js';

afterAll(stopAllNodes);

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
let sequence = 0;

/** Sends a frame with a fresh id and resolves with the direct reply carrying that id. */
async function request(client: TestClient, frame: Record<string, unknown>): Promise<Envelope> {
  const id = `req-${++sequence}`;
  client.send({ ...frame, id });
  return client.next((e) => e.id === id);
}

async function expectError(client: TestClient, frame: Record<string, unknown>, code: string): Promise<void> {
  const reply = await request(client, frame);
  expect(reply).toEqual({ type: 'error', id: reply.id, data: { code, message: expect.any(String), error: expect.any(String) }, timestamp: expect.stringMatching(ISO_UTC) });
}

const membership = (type: 'user_joined' | 'user_left', room: string, userId: string, username = userId) => ({
  type,
  room,
  data: { user_id: userId, username },
  sender: username,
  timestamp: expect.stringMatching(ISO_UTC),
});

const isMembership = (e: Envelope) => e.type === 'user_joined' || e.type === 'user_left';

describe('join and leave', () => {
  it('join_room answers room_joined with the id echoed; others get user_joined, the joiner does not', async () => {
    const node = await startTestNode();
    const bob = await connect(node.url, 'bob');
    await join(bob, 'project:1');
    const alice = await connect(node.url, 'alice', { username: 'Alice A.' });
    alice.send({ type: 'join_room', room: 'project:1', id: 'j-1' });
    expect(await alice.next((e) => e.id === 'j-1')).toEqual({
      type: 'room_joined',
      id: 'j-1',
      room: 'project:1',
      timestamp: expect.stringMatching(ISO_UTC),
    });
    expect(await bob.next((e) => e.type === 'user_joined')).toEqual(membership('user_joined', 'project:1', 'alice', 'Alice A.'));
    await alice.expectNothing(isMembership);
  });

  it('join_room without an id answers room_joined without an id', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    alice.send({ type: 'join_room', room: 'task:5' });
    expect(await alice.next((e) => e.type === 'room_joined')).toEqual({
      type: 'room_joined',
      room: 'task:5',
      timestamp: expect.stringMatching(ISO_UTC),
    });
  });

  it('joining a room twice answers room_joined again without a second user_joined', async () => {
    const node = await startTestNode();
    const bob = await connect(node.url, 'bob');
    await join(bob, 'channel:1');
    const alice = await connect(node.url, 'alice');
    await join(alice, 'channel:1');
    await bob.next((e) => e.type === 'user_joined');
    expect(await request(alice, { type: 'join_room', room: 'channel:1' })).toMatchObject({ type: 'room_joined', room: 'channel:1' });
    await bob.expectNothing(isMembership);
  });

  it('leave_room answers room_left with the id echoed; others get user_left, the leaver does not', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    const bob = await connect(node.url, 'bob');
    await join(bob, 'project:1');
    await join(alice, 'project:1');
    await bob.next((e) => e.type === 'user_joined');
    alice.send({ type: 'leave_room', room: 'project:1', id: 'l-1' });
    expect(await alice.next((e) => e.id === 'l-1')).toEqual({
      type: 'room_left',
      id: 'l-1',
      room: 'project:1',
      timestamp: expect.stringMatching(ISO_UTC),
    });
    expect(await bob.next((e) => e.type === 'user_left')).toEqual(membership('user_left', 'project:1', 'alice'));
    await alice.expectNothing(isMembership);
    // Left for real: room traffic no longer reaches alice.
    bob.send({ type: 'send_message', room: 'project:1', data: { n: 1 } });
    await bob.next((e) => e.type === 'message.new');
    await alice.expectNothing((e) => e.type === 'message.new');
  });

  it('closing a socket sends user_left to every room it had joined', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    const bob = await connect(node.url, 'bob');
    const carol = await connect(node.url, 'carol');
    await join(bob, 'project:1');
    await join(carol, 'channel:2');
    await join(alice, 'project:1');
    await join(alice, 'channel:2');
    await bob.next((e) => e.type === 'user_joined');
    await carol.next((e) => e.type === 'user_joined');
    alice.close();
    expect(await bob.next((e) => e.type === 'user_left')).toEqual(membership('user_left', 'project:1', 'alice'));
    expect(await carol.next((e) => e.type === 'user_left')).toEqual(membership('user_left', 'channel:2', 'alice'));
    // Nobody hears about rooms they are not in.
    await bob.expectNothing((e) => e.type === 'user_left');
    await carol.expectNothing((e) => e.type === 'user_left');
  });

  it('a connection can be in several rooms and receives each room’s traffic', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    const rooms = ['project:1', 'channel:general', 'task:A-9_z', 'project:2'];
    for (const room of rooms) await join(alice, room);
    for (const room of rooms) node.events.publish(room, 'test.event', { room }, null);
    for (const room of rooms) expect(await alice.next((e) => e.type === 'test.event')).toMatchObject({ room, data: { room } });
    expect(await node.metric('wsedge_rooms')).toBe(5); // four rooms and user:alice
  });
});

describe('room names', () => {
  const invalid = [
    '',
    'project',
    'project:',
    'project:a b',
    'project:1:2',
    'project:ü',
    'project:../x',
    `project:${'a'.repeat(65)}`,
    'Project:1',
    'room:1',
    ' project:1',
    'user:',
    '*',
    'project:*',
  ];

  it('refuses invalid names on join with invalid_room and keeps the socket', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    for (const room of invalid) await expectError(alice, { type: 'join_room', room }, 'invalid_room');
    expect(await request(alice, { type: 'join_room', room: `project:${'a'.repeat(64)}` })).toMatchObject({ type: 'room_joined' });
    expect(await node.metric('wsedge_rooms')).toBe(2);
  });

  it('refuses invalid names on leave with invalid_room', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    for (const room of ['project:', 'foo:1', 'project:a b']) await expectError(alice, { type: 'leave_room', room }, 'invalid_room');
  });
});

describe('access', () => {
  it("with rooms ['project:*'] joins any project room but not channel:1", async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice', { rooms: ['project:*'] });
    await join(alice, 'project:1');
    await join(alice, 'project:other');
    await expectError(alice, { type: 'join_room', room: 'channel:1' }, 'forbidden');
    await expectError(alice, { type: 'join_room', room: 'task:1' }, 'forbidden');
  });

  it('exact grants allow exactly those rooms', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice', { rooms: ['channel:42', 'task:7'] });
    await join(alice, 'channel:42');
    await join(alice, 'task:7');
    await expectError(alice, { type: 'join_room', room: 'channel:43' }, 'forbidden');
    await expectError(alice, { type: 'join_room', room: 'channel:420' }, 'forbidden');
    await expectError(alice, { type: 'join_room', room: 'project:42' }, 'forbidden');
  });

  it('without a rooms claim only the own user room may be joined', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice', { rooms: undefined });
    await expectError(alice, { type: 'join_room', room: 'project:1' }, 'forbidden');
    await expectError(alice, { type: 'join_room', room: 'channel:1' }, 'forbidden');
    expect(await request(alice, { type: 'join_room', room: 'user:alice' })).toMatchObject({ type: 'room_joined', room: 'user:alice' });
  });

  it('an empty rooms claim allows no shared room', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice', { rooms: [] });
    await expectError(alice, { type: 'join_room', room: 'project:1' }, 'forbidden');
  });

  it('WS_ROOM_ACCESS=open allows any non-user room without a rooms claim', async () => {
    const node = await startTestNode({ WS_ROOM_ACCESS: 'open' });
    const alice = await connect(node.url, 'alice', { rooms: undefined });
    await join(alice, 'project:1');
    await join(alice, 'channel:2');
    await join(alice, 'task:3');
    await expectError(alice, { type: 'join_room', room: 'user:bob' }, 'forbidden');
  });

  it("another user's user: room is forbidden even with rooms ['*'] or an exact grant", async () => {
    const node = await startTestNode();
    const star = await connect(node.url, 'alice', { rooms: ['*'] });
    await expectError(star, { type: 'join_room', room: 'user:bob' }, 'forbidden');
    const exact = await connect(node.url, 'alice', { rooms: ['user:bob', 'user:*'] });
    await expectError(exact, { type: 'join_room', room: 'user:bob' }, 'forbidden');
    // bob's notifications never reach alice.
    node.events.notificationNew({ userId: 'bob', notification: { secret: true } });
    await star.expectNothing((e) => e.type === 'notification.new');
    await exact.expectNothing((e) => e.type === 'notification.new');
  });

  it('leaving the own user room is forbidden', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    await expectError(alice, { type: 'leave_room', room: 'user:alice' }, 'forbidden');
    node.events.notificationNew({ userId: 'alice', notification: { still: 'here' } });
    expect(await alice.next((e) => e.type === 'notification.new')).toMatchObject({ data: { still: 'here' } });
  });

  it('leaving a room not joined answers not_joined', async () => {
    const node = await startTestNode();
    const alice = await connect(node.url, 'alice');
    await expectError(alice, { type: 'leave_room', room: 'project:1' }, 'not_joined');
    await join(alice, 'project:1');
    await request(alice, { type: 'leave_room', room: 'project:1' });
    await expectError(alice, { type: 'leave_room', room: 'project:1' }, 'not_joined');
  });
});

describe('WS_MAX_ROOMS_PER_CONNECTION=3', () => {
  it('the fourth room is too_many_rooms; the personal room does not count; leaving frees a place', async () => {
    const node = await startTestNode({ WS_MAX_ROOMS_PER_CONNECTION: '3' });
    const alice = await connect(node.url, 'alice');
    await join(alice, 'project:1');
    await join(alice, 'project:2');
    await join(alice, 'project:3');
    await expectError(alice, { type: 'join_room', room: 'project:4' }, 'too_many_rooms');
    // Rejoining a room already held and the own room are not new rooms.
    expect(await request(alice, { type: 'join_room', room: 'project:2' })).toMatchObject({ type: 'room_joined' });
    expect(await request(alice, { type: 'join_room', room: 'user:alice' })).toMatchObject({ type: 'room_joined' });
    await request(alice, { type: 'leave_room', room: 'project:1' });
    await join(alice, 'project:4');
    // The refused join did not subscribe.
    node.events.publish('project:1', 'test.event', {}, null);
    await alice.expectNothing((e) => e.type === 'test.event');
  });
});

describe('membership event suppression', () => {
  it('WS_MEMBERSHIP_EVENTS=false sends no user_joined or user_left (join, leave, close)', async () => {
    const node = await startTestNode({ WS_MEMBERSHIP_EVENTS: 'false' });
    const bob = await connect(node.url, 'bob');
    await join(bob, 'project:1');
    const alice = await connect(node.url, 'alice');
    await join(alice, 'project:1');
    await request(alice, { type: 'leave_room', room: 'project:1' });
    await join(alice, 'project:1');
    alice.close();
    await alice.closed;
    await bob.expectNothing(isMembership);
    expect(await node.metric('wsedge_messages_published_total', { source: 'membership' })).toBe(0);
  });

  it('WS_MEMBERSHIP_EVENTS_MAX_MEMBERS=2: joins are announced while fewer than 2 announced members are in the room; an announced leave frees a place', async () => {
    const node = await startTestNode({ WS_MEMBERSHIP_EVENTS_MAX_MEMBERS: '2' });
    const [alice, bob, carol, dave] = await Promise.all(['alice', 'bob', 'carol', 'dave'].map((user) => connect(node.url, user)));
    // alice takes the first place (nobody to tell), bob the second.
    await join(alice!, 'project:1');
    await join(bob!, 'project:1');
    expect(await alice!.next((e) => e.type === 'user_joined')).toEqual(membership('user_joined', 'project:1', 'bob'));
    // Full: carol's join, leave, join and close are not announced.
    await join(carol!, 'project:1');
    await request(carol!, { type: 'leave_room', room: 'project:1' });
    await join(carol!, 'project:1');
    carol!.close();
    await carol!.closed;
    await alice!.expectNothing(isMembership);
    await bob!.expectNothing(isMembership);
    // bob was announced: his leave is, and frees the place dave takes.
    await request(bob!, { type: 'leave_room', room: 'project:1' });
    expect(await alice!.next((e) => e.type === 'user_left')).toEqual(membership('user_left', 'project:1', 'bob'));
    await join(dave!, 'project:1');
    expect(await alice!.next((e) => e.type === 'user_joined')).toEqual(membership('user_joined', 'project:1', 'dave'));
    expect(await node.metric('wsedge_membership_announcements_total', { outcome: 'announced' })).toBe(3);
  });
});
