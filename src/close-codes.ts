/**
 * Close codes and what a client does after each: the reconnect policy of ws-edge/client and the
 * Reconnect column of docs/WEBSOCKET_API.md. A leaf module (the client bundle takes it whole);
 * errors.ts re-exports it next to the close reasons.
 */

/** Close codes sent to clients. */
export const CloseCode = {
  /** Client-initiated normal close. */
  NORMAL: 1000,
  /** Repeated invalid messages (WS_MAX_INVALID_MESSAGES within the window). */
  POLICY_VIOLATION: 1008,
  /** A frame above WS_MESSAGE_MAX_SIZE. */
  MESSAGE_TOO_BIG: 1009,
  /** The node is draining (deploy, restart); reconnect with jitter to any node. */
  SERVICE_RESTART: 1012,
  /** Missing, invalid or expired token; get a new token before reconnecting. */
  UNAUTHORIZED: 4401,
  /** Origin not allowed, or disconnected by an operator; do not retry. */
  FORBIDDEN: 4403,
  /** Too many connections for this user or address, or a client that keeps flooding. */
  TOO_MANY: 4429,
  /** Internal error while accepting the connection. */
  INTERNAL: 4500,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** What a client does after a close: the policy of ws-edge/client, one per close code. */
export type Reconnect =
  | 'none' // the client closed it
  | 'backoff' // jittered exponential backoff
  | 'backoff_no_resend' // backoff, and do not send the refused message again
  | 'restart' // a random 0-5 s delay, to any node, then backoff
  | 'new_token' // a new token first, then backoff
  | 'long_backoff' // at least 30 s plus jitter
  | 'manual' // fix the client: at most once, after a long delay or a user action
  | 'never';

export interface CloseAdvice {
  readonly reconnect: Reconnect;
  /** The Reconnect column of docs/WEBSOCKET_API.md's close code table. */
  readonly advice: string;
}

const BACKOFF: CloseAdvice = { reconnect: 'backoff', advice: 'Yes, with backoff.' };

/** Per close code a client can see; codes 4000-4999 not listed take OTHER_APPLICATION_CLOSE. */
export const RECONNECT: Readonly<Record<number, CloseAdvice>> = {
  1000: { reconnect: 'none', advice: 'Not needed.' },
  1006: BACKOFF,
  1008: { reconnect: 'manual', advice: 'Fix the client; do not auto-retry in a loop (at most once, after a long delay or a user action).' },
  1009: { reconnect: 'backoff_no_resend', advice: 'Yes, with backoff; do not resend that message.' },
  1012: { reconnect: 'restart', advice: 'Yes: after a random 0-5 s delay, to any node; then backoff as usual.' },
  4401: { reconnect: 'new_token', advice: 'Get a new token first, then reconnect with backoff. Do not retry with the same token.' },
  4403: { reconnect: 'never', advice: 'Do not retry.' },
  4429: { reconnect: 'long_backoff', advice: 'Back off longer: at least 30 s, plus jitter; slow the client down if it was flooding.' },
  4500: BACKOFF,
};
/** An operator's own code of 4000-4999. */
export const OTHER_APPLICATION_CLOSE: CloseAdvice = BACKOFF;

/** The advice for any close code a client receives. */
export function reconnectAfter(code: number): CloseAdvice {
  return RECONNECT[code] ?? (isApplicationCloseCode(code) ? OTHER_APPLICATION_CLOSE : BACKOFF);
}

/** Codes an operator may close connections with (default 4403): the application range. */
export function isApplicationCloseCode(code: unknown): code is number {
  return typeof code === 'number' && Number.isInteger(code) && code >= 4000 && code <= 4999;
}
