/**
 * Room grants on the client: a join may carry a grant (a string, or a provider asked at every
 * (re)join), and a provider's grant is renewed in band at 80% of its life by sending `join_room`
 * again with a fresh one, so the membership never reaches the grant's `exp`.
 */
import { clampTimer, lifeLeft, tokenTimes } from './policy.js';

/** A grant token, or a provider of fresh ones (the product backend's endpoint). */
export type GrantSource = string | (() => string | Promise<string>);

/** The share of a grant's life after which a provider's grant is renewed. */
const RENEW_AT = 0.8;

export function createGrants(renew: (room: string, grant: string) => Promise<unknown>, sourceOf: (room: string) => GrantSource | undefined) {
  const timers = new Map<string, ReturnType<typeof setTimeout>>();

  function cancel(room?: string): void {
    for (const [name, timer] of timers) {
      if (room !== undefined && name !== room) continue;
      clearTimeout(timer);
      timers.delete(name);
    }
  }

  /** After a grant went out for `room`: a provider's is renewed ahead of its exp. */
  function sent(room: string, grant: string): void {
    cancel(room);
    if (typeof sourceOf(room) !== 'function') return;
    const left = lifeLeft(tokenTimes(grant), Date.now(), Date.now());
    if (left === undefined) return;
    timers.set(
      room,
      setTimeout(async () => {
        timers.delete(room);
        const source = sourceOf(room);
        if (typeof source !== 'function') return;
        try {
          const fresh = await source();
          await renew(room, fresh);
          sent(room, fresh);
        } catch {
          // Not renewed: at its exp the server sends room_left grant_expired, and `left` tells the app.
        }
      }, clampTimer(left.left - left.life * (1 - RENEW_AT))),
    );
  }

  return {
    /** The grants to send with the joins of `rooms`, providers asked now. */
    resolve: (rooms: readonly string[]): Promise<Array<string | undefined>> =>
      Promise.all(rooms.map((room) => {
        const source = sourceOf(room);
        return typeof source === 'function' ? source() : source;
      })),
    sent,
    cancel,
  };
}
