/**
 * send_message, each with an idempotency key (the app's or a random one), so that from the app's
 * view every send happens once. A send in flight when the connection is lost has an unknown
 * outcome: it is kept and sent again with the same key once the next connection's resume is
 * answered; the server answers a repeat with the first result (`duplicate: true`) and delivers it
 * only once. A send answered with an error is settled with that error and never sent again, but
 * for a resend answered `unavailable`: its first try may still be under way (on a node that died
 * with the key claimed), so its outcome is still unknown and it is tried again, a few times. Sends
 * made while not connected wait (never sent before) when `queueSize` allows, else fail at once.
 * Order per room holds through retries: while a send to a room waits for its retry, later sends to
 * that room wait behind it, and the retry sends every waiting send of the room, oldest first.
 */
import type { ErrorReply, MessageSent, WireMessage } from '../messages.js';
import { ClientError, replyError } from './requests.js';

/** A send is not sent again once its first try is this old: the server remembers a key for 300 s. */
export const RESEND_WINDOW_MS = 240_000;
/** A resend answered `unavailable` is tried again after 1, 2, 4, 8, 8... s, this many times (past the server's 30 s claim on a key). */
export const RESEND_RETRIES = 8;

/** 16 random bytes, base64url (22 characters). */
export const newKey = (): string =>
  btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))))
    .slice(0, 22)
    .replace(/\+/g, '-')
    .replace(/\//g, '_');

interface Send {
  readonly message: Record<string, unknown>;
  readonly resolve: (reply: MessageSent) => void;
  readonly reject: (err: ClientError) => void;
  /** The request id it went out under on this connection; undefined: not in flight. */
  id?: string | undefined;
  /** When it first went out (ms); undefined: never sent. */
  first?: number | undefined;
  /** Resends answered `unavailable` so far. */
  retries: number;
  /** In flight: the reply timeout; kept after a loss: the end of its resend window; or the next retry. */
  timer?: ReturnType<typeof setTimeout> | undefined;
}

export interface SendDeps {
  nextId(): string;
  /** Connected, and the resume answered. */
  ready(): boolean;
  /** Sends a frame; throws a ClientError when it cannot go (not connected, above max_message_size). */
  transmit(frame: string): void;
  readonly timeout: number;
  /** Sends made while not connected that may wait (never sent). */
  readonly queueSize: number;
  /** Sends in flight at a loss that are kept for a resend; the oldest beyond are rejected. */
  readonly resendLimit: number;
}

export function createSends(deps: SendDeps) {
  /** Every unsettled send, oldest first. */
  const sends = new Set<Send>();
  const inFlight = new Map<string, Send>();
  const lost = (why: string): ClientError => new ClientError('disconnected', why);
  const gone = (): ClientError => lost('the connection was lost before the reply');
  const count = (sent: boolean): number => [...sends].filter((s) => (s.first !== undefined) === sent).length;

  function finish(s: Send, outcome: MessageSent | ClientError): void {
    sends.delete(s);
    if (s.id !== undefined) inFlight.delete(s.id);
    clearTimeout(s.timer);
    if (outcome instanceof ClientError) s.reject(outcome);
    else s.resolve(outcome);
  }

  function transmit(s: Send): void {
    const id = deps.nextId();
    try {
      deps.transmit(JSON.stringify({ ...s.message, id }));
    } catch (err) {
      return finish(s, err as ClientError);
    }
    s.id = id;
    s.first ??= Date.now();
    inFlight.set(id, s);
    clearTimeout(s.timer);
    s.timer = setTimeout(() => finish(s, new ClientError('timeout', `no reply to send_message within ${deps.timeout} ms`)), deps.timeout);
  }

  /** Out of flight, to be sent again after the next resume, until its resend window ends. */
  function park(s: Send): void {
    if (s.id !== undefined) inFlight.delete(s.id);
    s.id = undefined;
    clearTimeout(s.timer);
    s.timer = setTimeout(() => finish(s, gone()), s.first! + RESEND_WINDOW_MS - Date.now());
  }

  /** Every send of `room` not in flight goes, oldest first (one waiting for its retry, and those held behind it). */
  function retry(room: unknown): void {
    for (const s of [...sends]) if (s.id === undefined && s.message['room'] === room) transmit(s);
  }

  return {
    /** `now`: send at once; else wait for the next connection's resume, when the queue has room. */
    add(message: Record<string, unknown>, now: boolean): Promise<MessageSent> {
      if (!now && count(false) >= deps.queueSize) return Promise.reject(lost(deps.queueSize === 0 ? 'not connected' : `the send queue is full (${deps.queueSize})`));
      return new Promise((resolve, reject) => {
        const s: Send = { message, resolve, reject, retries: 0 };
        // Behind a send of the same room waiting for its retry: it goes with that retry.
        const behind = now && [...sends].some((w) => w.id === undefined && w.message['room'] === message['room']);
        sends.add(s);
        if (now && !behind) transmit(s);
      });
    },

    /** Settles the send a reply answers; false when it answers none. */
    settle(reply: WireMessage): boolean {
      const s = reply.id === undefined ? undefined : inFlight.get(reply.id);
      if (s === undefined || (reply.type !== 'message_sent' && reply.type !== 'error')) return false;
      const err = reply.type === 'error' ? replyError(reply as ErrorReply) : undefined;
      const delay = Math.min(8000, 1000 * 2 ** s.retries);
      // Every send is keyed, so any `unavailable` is tried again: a first try's may have been published (a Redis timeout after the script ran).
      if (err?.code === 'unavailable' && s.retries < RESEND_RETRIES && Date.now() + delay < s.first! + RESEND_WINDOW_MS) {
        s.retries += 1;
        park(s);
        clearTimeout(s.timer);
        s.timer = setTimeout(() => (deps.ready() ? retry(s.message['room']) : park(s)), delay);
      } else {
        finish(s, err ?? (reply as MessageSent));
      }
      return true;
    },

    /**
     * The connection is gone: sends in flight are kept for a resend, for RESEND_WINDOW_MS from their
     * first try and at most `resendLimit` of them. `closed`: every send is rejected; `resend` false
     * (a close with 1009): the sends in flight are rejected, queued ones wait.
     */
    down(closed: boolean, resend: boolean): void {
      for (const s of sends) {
        if (closed) finish(s, new ClientError('closed', 'the client is closed'));
        else if (s.id !== undefined) resend ? park(s) : finish(s, gone());
      }
      // The oldest beyond the bound.
      let over = count(true) - deps.resendLimit;
      for (const s of sends) if (over > 0 && s.first !== undefined && over--) finish(s, gone());
    },

    /** The connection is ready (its resume answered): every waiting send goes, oldest first. */
    flush(): void {
      for (const s of [...sends]) if (s.id === undefined) transmit(s);
    },
  };
}
