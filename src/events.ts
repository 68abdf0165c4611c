/**
 * Server-side publishing: a typed `publish` and helpers for the product's domain events, each
 * routed to its rooms. Every event is encoded once per room and handed to a `send` function: the
 * node's broker inside a node, Redis in the publisher library (`ws-edge/publisher`). `R` is what
 * a send returns: void in the node, a Promise in the publisher.
 */
import { encodeEvent, isPublishableType } from './protocol.js';
import { isValidId, isValidRoom } from './rooms.js';

export type Id = string | number;

export interface TaskRef {
  readonly projectId: Id;
  readonly taskId: Id;
  /** Display name of whoever caused the event; null when the system did. */
  readonly by?: string | null;
}

export interface Events<R = void> {
  /** Publishes one event to one room. Throws on an invalid room or a reserved/malformed type. */
  publish(room: string, type: string, data: unknown, sender?: string | null): R;
  taskCreated(ref: TaskRef & { readonly task: unknown }): R;
  taskUpdated(ref: TaskRef & { readonly changes: unknown }): R;
  taskDeleted(ref: TaskRef): R;
  taskStatusChanged(ref: TaskRef & { readonly from: string; readonly to: string }): R;
  taskAssigned(ref: TaskRef & { readonly assigneeId: Id | null }): R;
  messageNew(ref: { readonly channelId: Id; readonly messageId: Id; readonly message: unknown; readonly by?: string | null }): R;
  messageEdited(ref: { readonly channelId: Id; readonly messageId: Id; readonly changes: unknown; readonly by?: string | null }): R;
  messageDeleted(ref: { readonly channelId: Id; readonly messageId: Id; readonly by?: string | null }): R;
  projectUpdated(ref: { readonly projectId: Id; readonly changes: unknown; readonly by?: string | null }): R;
  projectArchived(ref: { readonly projectId: Id; readonly by?: string | null }): R;
  notificationNew(ref: { readonly userId: Id; readonly notification: unknown; readonly by?: string | null }): R;
  notificationMentioned(ref: {
    readonly userId: Id;
    readonly room: string;
    readonly messageId?: Id;
    readonly excerpt?: string;
    readonly by?: string | null;
  }): R;
}

function room(kind: 'project' | 'channel' | 'task' | 'user', id: Id): string {
  const name = String(id);
  if (!isValidId(name)) throw new TypeError(`invalid ${kind} id: ${JSON.stringify(name)}`);
  return `${kind}:${name}`;
}

/** Hands one encoded event for `room` on. */
export type Send<R> = (room: string, payload: string) => R;

/** Events for the node: sends through `broker.publish`, calling `onPublished` after each (metrics). */
export function createEvents(broker: { publish(room: string, payload: string): void }, onPublished: (room: string) => void = () => {}): Events {
  return createEventsWith<void>(
    (room, payload) => {
      broker.publish(room, payload);
      onPublished(room);
    },
    () => {},
  );
}

/** `both` combines the results of the two sends of a task event. */
export function createEventsWith<R>(send: Send<R>, both: (results: [R, R]) => R): Events<R> {
  const publish = (target: string, type: string, data: unknown, sender: string | null = null): R => {
    if (!isValidRoom(target)) throw new TypeError(`invalid room: ${JSON.stringify(target)}`);
    if (!isPublishableType(type)) throw new TypeError(`reserved or malformed event type: ${JSON.stringify(type)}`);
    return send(target, encodeEvent(type, target, data ?? null, sender));
  };
  /** Task events go to the project room and the task room, one encoding each. */
  const toTask = (ref: TaskRef, type: string, data: Record<string, unknown>): R => {
    // Both names are checked before anything is published: all or nothing.
    const project = room('project', ref.projectId);
    const task = room('task', ref.taskId);
    const body = { task_id: ref.taskId, project_id: ref.projectId, ...data };
    return both([publish(project, type, body, ref.by ?? null), publish(task, type, body, ref.by ?? null)]);
  };

  return {
    publish,
    taskCreated: (ref) => toTask(ref, 'task.created', { task: ref.task }),
    taskUpdated: (ref) => toTask(ref, 'task.updated', { changes: ref.changes }),
    taskDeleted: (ref) => toTask(ref, 'task.deleted', {}),
    taskStatusChanged: (ref) => toTask(ref, 'task.status_changed', { old_status: ref.from, new_status: ref.to }),
    taskAssigned: (ref) => toTask(ref, 'task.assigned', { assignee_id: ref.assigneeId }),
    messageNew: (ref) =>
      publish(room('channel', ref.channelId), 'message.new', { message_id: ref.messageId, message: ref.message }, ref.by ?? null),
    messageEdited: (ref) =>
      publish(room('channel', ref.channelId), 'message.edited', { message_id: ref.messageId, changes: ref.changes }, ref.by ?? null),
    messageDeleted: (ref) => publish(room('channel', ref.channelId), 'message.deleted', { message_id: ref.messageId }, ref.by ?? null),
    projectUpdated: (ref) =>
      publish(room('project', ref.projectId), 'project.updated', { project_id: ref.projectId, changes: ref.changes }, ref.by ?? null),
    projectArchived: (ref) => publish(room('project', ref.projectId), 'project.archived', { project_id: ref.projectId }, ref.by ?? null),
    notificationNew: (ref) => publish(room('user', ref.userId), 'notification.new', ref.notification, ref.by ?? null),
    notificationMentioned: (ref) =>
      publish(
        room('user', ref.userId),
        'notification.mentioned',
        { room: ref.room, message_id: ref.messageId ?? null, excerpt: ref.excerpt ?? null },
        ref.by ?? null,
      ),
  };
}
