/**
 * Typing indicators over signals: `typing()` on every keystroke sends at most one `typing` per
 * `throttleMs`; `stop()` (on send or blur) sends `typing_stop` if a `typing` went out. Others'
 * typing state ends on their `typing_stop` or `expireMs` after their last `typing`.
 */
import type { SignalEvent } from '../messages.js';

export interface TypingOptions {
  /** At most one `typing` per this many ms (default 3000). */
  readonly throttleMs?: number;
  /** Someone stops typing this long after their last `typing` (default 6000: two throttle periods). */
  readonly expireMs?: number;
}

export interface Typing {
  typing(): void;
  stop(): void;
  /** user id -> username of the others typing now. */
  others(): Map<string, string>;
  dispose(): void;
}

interface SignalSource {
  on(event: 'signal', fn: (signal: SignalEvent) => void): () => void;
  signal(room: string, name: string, data?: unknown): boolean;
  readonly connection: { readonly user_id: string } | undefined;
}

export function createTyping(client: SignalSource, room: string, changed: (others: Map<string, string>) => void, opts: TypingOptions = {}): Typing {
  const throttleMs = opts.throttleMs ?? 3000;
  const expireMs = opts.expireMs ?? 6000;
  const typists = new Map<string, { username: string; timer: ReturnType<typeof setTimeout> }>();
  let lastSent = -Infinity;
  const others = (): Map<string, string> => new Map([...typists].map(([id, t]) => [id, t.username]));

  const end = (userId: string): void => {
    const t = typists.get(userId);
    if (t === undefined) return;
    clearTimeout(t.timer);
    typists.delete(userId);
    changed(others());
  };
  const off = client.on('signal', (s) => {
    // The sender's other connections get its signals too: a user is never shown typing to themselves.
    if (s.room !== room || s.user_id === client.connection?.user_id) return;
    if (s.type === 'signal.typing_stop') return end(s.user_id);
    if (s.type !== 'signal.typing') return;
    const known = typists.get(s.user_id);
    if (known !== undefined) clearTimeout(known.timer);
    typists.set(s.user_id, { username: s.sender ?? s.user_id, timer: setTimeout(() => end(s.user_id), expireMs) });
    if (known === undefined) changed(others());
  });

  return {
    typing() {
      const now = Date.now();
      if (now - lastSent < throttleMs) return;
      if (client.signal(room, 'typing')) lastSent = now;
    },
    stop() {
      if (lastSent === -Infinity) return;
      lastSent = -Infinity;
      client.signal(room, 'typing_stop');
    },
    others,
    dispose() {
      off();
      for (const id of [...typists.keys()]) end(id);
    },
  };
}
