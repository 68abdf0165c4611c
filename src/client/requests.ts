/**
 * Requests in flight: each gets an id, and its promise is settled by the reply carrying that id
 * (an `error` rejects it with the machine code), by its timeout, or by the connection's loss.
 */
import type { ErrorCode, ErrorReply, WireMessage } from '../messages.js';

/** Server codes, and the client's own: no reply in time, the connection went away, the client was closed, a frame above max_message_size. */
export type ClientErrorCode = ErrorCode | 'timeout' | 'disconnected' | 'closed' | 'message_too_big';

export class ClientError extends Error {
  override readonly name = 'ClientError';
  constructor(
    readonly code: ClientErrorCode,
    message: string,
    /** With `rejected`: the backend's own code. */
    readonly detail?: string,
  ) {
    super(message);
  }
}

/** `message`, or `error` from a node older than that field (during a rolling upgrade). */
export function replyError(reply: ErrorReply): ClientError {
  return new ClientError(reply.data.code, reply.data.message ?? reply.data.error, reply.data.detail);
}

interface Pending {
  readonly resolve: (reply: any) => void;
  readonly reject: (err: ClientError) => void;
  readonly timer: ReturnType<typeof setTimeout>;
  /** The reply type that settles it; replies of other types with the id (a resume's room_joined) do not. */
  readonly until: string;
}

export interface Requests {
  /** A fresh request id, for a message whose id must be known before it goes out. */
  nextId(): string;
  /** Sends `message` with its `id`, or a fresh one; resolves with the reply of type `until` (or rejects with `timeout` after `timeoutMs`). */
  request<T>(message: Record<string, unknown>, until: string, send: (frame: string) => void, timeoutMs?: number): Promise<T>;
  /** Settles the request a reply answers; false when the reply answers none. */
  settle(reply: WireMessage): boolean;
  /** Rejects every request in flight (their outcome is unknown: they are never sent again). */
  failAll(err: ClientError): void;
}

export function createRequests(defaultTimeoutMs: number): Requests {
  const pending = new Map<string, Pending>();
  let seq = 0;

  return {
    nextId: () => String(++seq),
    request<T>(message: Record<string, unknown>, until: string, send: (frame: string) => void, timeoutMs = defaultTimeoutMs): Promise<T> {
      const id = (message['id'] as string | undefined) ?? String(++seq);
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new ClientError('timeout', `no reply to ${String(message['type'])} within ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, { resolve, reject, timer, until });
        try {
          send(JSON.stringify({ ...message, id }));
        } catch (err) {
          pending.delete(id);
          clearTimeout(timer);
          reject(err);
        }
      });
    },
    settle(reply) {
      const entry = reply.id === undefined ? undefined : pending.get(reply.id);
      if (entry === undefined || (reply.type !== entry.until && reply.type !== 'error')) return false;
      // A resume's refusal of one room names the room; only a refusal of the whole frame settles it.
      if (reply.type === 'error' && entry.until === 'resumed' && reply.room !== undefined) return false;
      pending.delete(reply.id!);
      clearTimeout(entry.timer);
      if (reply.type === 'error') entry.reject(replyError(reply as ErrorReply));
      else entry.resolve(reply);
      return true;
    },
    failAll(err) {
      for (const entry of pending.values()) {
        clearTimeout(entry.timer);
        entry.reject(err);
      }
      pending.clear();
    },
  };
}
