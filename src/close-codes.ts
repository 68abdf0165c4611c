/**
 * Close codes and what a client does after each: the reconnect policy of ws-edge/client. A leaf
 * module (the client bundle takes it whole); errors.ts re-exports it next to the close reasons and
 * the Reconnect column of docs/WEBSOCKET_API.md (RECONNECT_ADVICE).
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

/** Per close code a client can see; codes not listed (other 4000-4999 included) back off. */
export const RECONNECT: Readonly<Record<number, Reconnect>> = {
  1000: 'none',
  1006: 'backoff',
  1008: 'manual',
  1009: 'backoff_no_resend',
  1012: 'restart',
  4401: 'new_token',
  4403: 'never',
  4429: 'long_backoff',
  4500: 'backoff',
};
/** An operator's own code of 4000-4999. */
export const OTHER_APPLICATION_CLOSE: Reconnect = 'backoff';

/** What a client does after any close code it receives. */
export function reconnectAfter(code: number): Reconnect {
  return RECONNECT[code] ?? (isApplicationCloseCode(code) ? OTHER_APPLICATION_CLOSE : 'backoff');
}

/** Codes an operator may close connections with (default 4403): the application range. */
export function isApplicationCloseCode(code: unknown): code is number {
  return typeof code === 'number' && Number.isInteger(code) && code >= 4000 && code <= 4999;
}
