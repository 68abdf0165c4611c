/**
 * What the client does after a close, and when it refreshes its token: pure functions over the
 * close-code table (RECONNECT in src/close-codes.ts, the one the docs and the server share), so the
 * policy is tested without sockets or clocks.
 */
import { reconnectAfter } from '../close-codes.js';

/** Full-jitter exponential backoff, milliseconds: random(0, min(cap, base * factor^attempt)). */
export interface Backoff {
  readonly base: number;
  readonly factor: number;
  readonly cap: number;
}

export const DEFAULT_BACKOFF: Backoff = { base: 1000, factor: 2, cap: 30_000 };
/** 1012: a draining node's clients spread their reconnects over this window. */
export const RESTART_SPREAD_MS = 5000;
/** 4429: at least this long before the next attempt, plus the usual jitter. */
export const LONG_BACKOFF_MS = 30_000;
/** The earliest a token refresh is tried, and the retry step when the provider failed. */
export const MIN_REFRESH_MS = 1000;

export type Random = () => number;

export function backoffDelay(backoff: Backoff, attempt: number, random: Random): number {
  return random() * Math.min(backoff.cap, backoff.base * backoff.factor ** attempt);
}

/** After a close: stop for good, or try again after `delay` ms (with a new token first when `newToken`). */
export type AfterClose = { readonly retry: false } | { readonly retry: true; readonly delay: number; readonly newToken: boolean };

export function afterClose(code: number, attempt: number, backoff: Backoff, random: Random): AfterClose {
  const jitter = backoffDelay(backoff, attempt, random);
  const after = reconnectAfter(code);
  if (after === 'never' || after === 'manual') return { retry: false };
  // 'none' is a close the client made; a server's 1000 is retried like a lost connection.
  const delay = after === 'restart' ? random() * RESTART_SPREAD_MS : after === 'long_backoff' ? LONG_BACKOFF_MS + jitter : jitter;
  return { retry: true, delay, newToken: after === 'new_token' };
}

/** Whether a message in flight at a close with `code` may be sent again (not after 1009: it may be the one refused). */
export const mayResend = (code: number): boolean => reconnectAfter(code) !== 'backoff_no_resend';

/** The longest timer setTimeout keeps (a longer one fires at once). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A token's `exp` and `iat` in epoch ms (undefined when absent or unreadable). */
export interface TokenTimes {
  readonly exp: number | undefined;
  readonly iat: number | undefined;
}

export function tokenTimes(token: string): TokenTimes {
  try {
    const payload = token.split('.')[1] ?? '';
    const claims = JSON.parse(atob(payload.replace(/-/g, '+').replace(/_/g, '/'))) as { exp?: unknown; iat?: unknown };
    const ms = (v: unknown) => (typeof v === 'number' ? v * 1000 : undefined);
    return { exp: ms(claims.exp), iat: ms(claims.iat) };
  } catch {
    return { exp: undefined, iat: undefined };
  }
}

/**
 * A token's life and what is left of it, in ms. With `iat` the life is `exp - iat`, counted from
 * when the client got the token (less a second: `iat` is rounded down), so a client clock that is
 * off does not matter; without it, what is left by the client's clock. Undefined without `exp`.
 */
export function lifeLeft(times: TokenTimes, obtainedAt: number, now: number): { life: number; left: number } | undefined {
  if (times.exp === undefined) return undefined;
  if (times.iat !== undefined && times.iat < times.exp) {
    const life = times.exp - times.iat;
    // JWT times are whole seconds: the token may be up to a second older than it looks.
    return { life, left: life - (now - obtainedAt) - 1000 };
  }
  const left = times.exp - now;
  return { life: left + (now - obtainedAt), left };
}

/** A refresh timer: at least MIN_REFRESH_MS, at most MAX_TIMER_MS. */
export const clampTimer = (ms: number): number => Math.min(MAX_TIMER_MS, Math.max(MIN_REFRESH_MS, ms));
