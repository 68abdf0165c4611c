/**
 * Sending joins: the rooms wanted and not yet joined on this connection go out in one frame (one
 * `join_room` for a single new room, else a `resume`, which takes over a join under way and counts
 * as one frame for the rate limit), with their positions and grants. A room refused as
 * `unavailable` or timed out is tried again after ROOM_RETRY_MS.
 */
import type { createGrants } from './grants.js';
import { ClientError, type Requests } from './requests.js';
import type { OutgoingRoom, Rooms } from './rooms.js';

const ROOM_RETRY_MS = 1000;

export interface JoinDeps {
  readonly rooms: Rooms;
  readonly requests: Requests;
  readonly grants: ReturnType<typeof createGrants>;
  request<T>(message: Record<string, unknown>, until: string): Promise<T>;
  connected(): boolean;
  /** The connection's own `user:` room (its join always goes in a resume). */
  personal(): string;
  /** Every room of the connection's first frame was answered (or refused). */
  settled(): void;
}

export function createJoins(deps: JoinDeps) {
  const { rooms, requests, grants } = deps;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;

  function refused(room: string, err: ClientError, id: string | undefined): void {
    if (rooms.refused(room, err, id) || retryTimer !== undefined) return;
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      flush();
    }, ROOM_RETRY_MS);
  }

  function send(id: string, wanted: readonly OutgoingRoom[], tokens: ReadonlyArray<string | undefined>): void {
    const fail = (err: ClientError): void => {
      for (const r of wanted) refused(r.room, err, id);
      deps.settled();
    };
    wanted.forEach((r, i) => tokens[i] !== undefined && grants.sent(r.room, tokens[i]!));
    const only = wanted[0]!;
    // A field left undefined (no grant, no position) is left out of the frame by JSON.stringify.
    if (wanted.length === 1 && only.since === undefined && !only.retry && only.room !== deps.personal()) {
      deps.request({ type: 'join_room', room: only.room, id, grant: tokens[0] }, 'room_joined').then(deps.settled, fail);
      return;
    }
    const list = wanted.map(({ room, since }, i) => ({ room, since, grant: tokens[i] }));
    deps.request({ type: 'resume', rooms: list, id }, 'resumed').then(deps.settled, fail);
  }

  function flush(): void {
    if (!deps.connected()) return;
    const id = requests.nextId();
    const wanted = rooms.unsent(id);
    if (wanted.length === 0) return deps.settled();
    grants.resolve(wanted.map((r) => r.room)).then(
      (tokens) => {
        // A connection lost while a grant provider answered: the next one sends its own frame.
        const still = wanted.filter((r) => rooms.sentUnder(r.room, id));
        if (deps.connected() && still.length > 0) send(id, still, still.map((r) => tokens[wanted.indexOf(r)]));
      },
      (err: unknown) => {
        const failed = new ClientError('unavailable', `grant provider failed: ${(err as Error)?.message ?? String(err)}`);
        for (const r of wanted) refused(r.room, failed, id);
      },
    );
  }

  return {
    flush,
    refused,
    reset(): void {
      clearTimeout(retryTimer);
      retryTimer = undefined;
      grants.cancel();
    },
  };
}
