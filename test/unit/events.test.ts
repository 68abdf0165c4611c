import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createEvents, type Events } from '../../src/events.js';

const NOW = '2025-11-13T12:00:00.000Z';

interface Published {
  readonly room: string;
  readonly payload: string;
}

describe('createEvents', () => {
  let published: Published[];
  let counted: string[];
  let events: Events;

  /** The envelopes handed to the sink, decoded; asserts each payload's room matches its target. */
  const envelopes = (): Array<Record<string, unknown>> =>
    published.map(({ room, payload }) => {
      const envelope = JSON.parse(payload) as Record<string, unknown>;
      expect(envelope['room']).toBe(room);
      expect(Object.keys(envelope)).toEqual(['type', 'room', 'data', 'sender', 'timestamp']);
      return envelope;
    });

  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date(NOW));
    published = [];
    counted = [];
    // A plain in-process sink: events.ts needs only a publish function.
    const sink = { publish: (room: string, payload: string) => void published.push({ room, payload }) };
    events = createEvents(sink, (room) => counted.push(room));
  });

  afterEach(() => {
    vi.useRealTimers();
  });

  describe('publish', () => {
    it('hands one encoded envelope to the broker and reports it', () => {
      events.publish('channel:7', 'user.typing', { on: true }, 'alice');
      expect(published).toEqual([
        { room: 'channel:7', payload: `{"type":"user.typing","room":"channel:7","data":{"on":true},"sender":"alice","timestamp":"${NOW}"}` },
      ]);
      expect(counted).toEqual(['channel:7']);
    });

    it('defaults the sender to null and undefined data to null', () => {
      events.publish('project:1', 'project.pinged', undefined);
      expect(envelopes()).toEqual([{ type: 'project.pinged', room: 'project:1', data: null, sender: null, timestamp: NOW }]);
    });

    it.each(['project:', 'room:1', 'project:a b', 'user:' + 'x'.repeat(65), 'project:*', ''])('throws for the invalid room %j', (room) => {
      expect(() => events.publish(room, 'task.created', {})).toThrow(TypeError);
      expect(() => events.publish(room, 'task.created', {})).toThrow(`invalid room: ${JSON.stringify(room)}`);
      expect(published).toEqual([]);
      expect(counted).toEqual([]);
    });

    it.each(['connected', 'error', 'pong', 'user_joined', 'user_left', 'room_joined', 'message_sent', 'send_message', 'ping'])(
      'throws for the reserved type %s',
      (type) => {
        expect(() => events.publish('project:1', type, {})).toThrow(`reserved or malformed event type: ${JSON.stringify(type)}`);
        expect(published).toEqual([]);
      },
    );

    it.each(['', 'Task.Created', 'task created', 'task..x', 'x'.repeat(65)])('throws for the malformed type %j', (type) => {
      expect(() => events.publish('project:1', type, {})).toThrow(TypeError);
      expect(published).toEqual([]);
    });
  });

  describe('task events', () => {
    it('go to project:<id> and task:<id>, each encoded once', () => {
      events.taskCreated({ projectId: 12, taskId: 345, task: { title: 'Write tests' }, by: 'alice' });
      expect(published.map((p) => p.room)).toEqual(['project:12', 'task:345']);
      const data = { task_id: 345, project_id: 12, task: { title: 'Write tests' } };
      expect(envelopes()).toEqual([
        { type: 'task.created', room: 'project:12', data, sender: 'alice', timestamp: NOW },
        { type: 'task.created', room: 'task:345', data, sender: 'alice', timestamp: NOW },
      ]);
      expect(counted).toEqual(['project:12', 'task:345']);
    });

    it('carry each helper’s type and data', () => {
      events.taskUpdated({ projectId: 'p', taskId: 't', changes: { title: 'New' } });
      events.taskDeleted({ projectId: 'p', taskId: 't', by: null });
      events.taskStatusChanged({ projectId: 'p', taskId: 't', from: 'todo', to: 'done', by: 'bob' });
      events.taskAssigned({ projectId: 'p', taskId: 't', assigneeId: 9 });
      events.taskAssigned({ projectId: 'p', taskId: 't', assigneeId: null });
      const all = envelopes();
      expect(all.map((e) => [e['type'], e['room']])).toEqual([
        ['task.updated', 'project:p'],
        ['task.updated', 'task:t'],
        ['task.deleted', 'project:p'],
        ['task.deleted', 'task:t'],
        ['task.status_changed', 'project:p'],
        ['task.status_changed', 'task:t'],
        ['task.assigned', 'project:p'],
        ['task.assigned', 'task:t'],
        ['task.assigned', 'project:p'],
        ['task.assigned', 'task:t'],
      ]);
      expect(all.map((e) => e['data'])).toEqual([
        { task_id: 't', project_id: 'p', changes: { title: 'New' } },
        { task_id: 't', project_id: 'p', changes: { title: 'New' } },
        { task_id: 't', project_id: 'p' },
        { task_id: 't', project_id: 'p' },
        { task_id: 't', project_id: 'p', old_status: 'todo', new_status: 'done' },
        { task_id: 't', project_id: 'p', old_status: 'todo', new_status: 'done' },
        { task_id: 't', project_id: 'p', assignee_id: 9 },
        { task_id: 't', project_id: 'p', assignee_id: 9 },
        { task_id: 't', project_id: 'p', assignee_id: null },
        { task_id: 't', project_id: 'p', assignee_id: null },
      ]);
      expect(all.map((e) => e['sender'])).toEqual([null, null, null, null, 'bob', 'bob', null, null, null, null]);
    });

    it('throw for an invalid project id without publishing anything', () => {
      expect(() => events.taskCreated({ projectId: 'a b', taskId: 1, task: {} })).toThrow('invalid project id: "a b"');
      expect(() => events.taskDeleted({ projectId: 1.5, taskId: 1 })).toThrow('invalid project id: "1.5"');
      expect(published).toEqual([]);
      expect(counted).toEqual([]);
    });

    // A helper that throws must have published nothing: the caller sees a failure, so members of
    // project:<id> must not have received the event either.
    it('throw for an invalid task id without publishing to the project room', () => {
      expect(() => events.taskDeleted({ projectId: 1, taskId: '' })).toThrow('invalid task id: ""');
      expect(() => events.taskDeleted({ projectId: 1, taskId: 'x'.repeat(65) })).toThrow(TypeError);
      expect(published).toEqual([]);
      expect(counted).toEqual([]);
    });
  });

  describe('message events', () => {
    it('go to channel:<id>', () => {
      events.messageNew({ channelId: 4, messageId: 99, message: { text: 'hi' }, by: 'carol' });
      events.messageEdited({ channelId: 4, messageId: 99, changes: { text: 'hello' } });
      events.messageDeleted({ channelId: 4, messageId: 99, by: 'carol' });
      expect(envelopes()).toEqual([
        { type: 'message.new', room: 'channel:4', data: { message_id: 99, message: { text: 'hi' } }, sender: 'carol', timestamp: NOW },
        { type: 'message.edited', room: 'channel:4', data: { message_id: 99, changes: { text: 'hello' } }, sender: null, timestamp: NOW },
        { type: 'message.deleted', room: 'channel:4', data: { message_id: 99 }, sender: 'carol', timestamp: NOW },
      ]);
    });

    it('throw for an invalid channel id', () => {
      expect(() => events.messageNew({ channelId: 'general/2', messageId: 1, message: {} })).toThrow('invalid channel id: "general/2"');
      expect(published).toEqual([]);
    });
  });

  describe('project events', () => {
    it('go to project:<id>', () => {
      events.projectUpdated({ projectId: 3, changes: { name: 'X' }, by: 'dave' });
      events.projectArchived({ projectId: 3 });
      expect(envelopes()).toEqual([
        { type: 'project.updated', room: 'project:3', data: { project_id: 3, changes: { name: 'X' } }, sender: 'dave', timestamp: NOW },
        { type: 'project.archived', room: 'project:3', data: { project_id: 3 }, sender: null, timestamp: NOW },
      ]);
    });
  });

  describe('notification events', () => {
    it('go to user:<id> only', () => {
      events.notificationNew({ userId: 'alice', notification: { id: 1, text: 'Assigned' } });
      events.notificationMentioned({ userId: 42, room: 'channel:4', messageId: 99, excerpt: '@bob look', by: 'carol' });
      events.notificationMentioned({ userId: 42, room: 'task:1' });
      expect(published.map((p) => p.room)).toEqual(['user:alice', 'user:42', 'user:42']);
      expect(envelopes()).toEqual([
        { type: 'notification.new', room: 'user:alice', data: { id: 1, text: 'Assigned' }, sender: null, timestamp: NOW },
        {
          type: 'notification.mentioned',
          room: 'user:42',
          data: { room: 'channel:4', message_id: 99, excerpt: '@bob look' },
          sender: 'carol',
          timestamp: NOW,
        },
        { type: 'notification.mentioned', room: 'user:42', data: { room: 'task:1', message_id: null, excerpt: null }, sender: null, timestamp: NOW },
      ]);
    });

    it('throw for an invalid user id', () => {
      expect(() => events.notificationNew({ userId: 'user:alice', notification: {} })).toThrow('invalid user id: "user:alice"');
      expect(published).toEqual([]);
    });
  });

  it('works without an onPublished callback', () => {
    const payloads: string[] = [];
    createEvents({ publish: (_room, payload) => void payloads.push(payload) }).projectArchived({ projectId: 1 });
    expect(payloads).toHaveLength(1);
  });
});
