/**
 * Room names, lists of rooms and patterns (a token's `rooms` claim, WS_HISTORY_ROOMS), and what the
 * token alone lets in (`canJoin`). Pure functions; the whole decision, grants and the callback
 * included, is access.ts's.
 */

export const ROOM_KINDS = ['project', 'channel', 'task', 'user'] as const;

/** WS_ROOM_ACCESS: rooms from the token's `rooms` claim, or any room. */
export type RoomAccess = 'token' | 'open' | 'callback';

/** `<kind>:<id>`, id of 1-64 characters [A-Za-z0-9_-]. */
const ROOM_PATTERN = /^(?:project|channel|task|user):[A-Za-z0-9_-]{1,64}$/;
const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** Upper bound on entries of a list of rooms and patterns. */
export const MAX_ROOM_PATTERNS = 1000;

export function isValidRoom(name: unknown): name is string {
  return typeof name === 'string' && ROOM_PATTERN.test(name);
}

/** A user id must fit the room id grammar, because every user has the room `user:<id>`. */
export function isValidId(id: unknown): id is string {
  return typeof id === 'string' && ID_PATTERN.test(id);
}

export function userRoom(userId: string): string {
  return `user:${userId}`;
}

/** A compiled list of rooms and patterns: a token's `rooms` claim, WS_HISTORY_ROOMS, WS_PRESENCE_ROOMS. */
export interface RoomPatterns {
  /** `*`: every room (other users' personal rooms stay forbidden). */
  readonly all: boolean;
  /** `project:*` and the like, stored as `project:`. */
  readonly prefixes: readonly string[];
  readonly exact: ReadonlySet<string>;
}

export const NO_ROOMS: RoomPatterns = { all: false, prefixes: [], exact: new Set() };
/** `["*"]`, the common claim: one shared object instead of three per connection. */
const ALL_ROOMS: RoomPatterns = { all: true, prefixes: [], exact: new Set() };

/**
 * Compiles a `rooms` claim: an array of `*`, `<kind>:*` or exact room names. Returns undefined when
 * the claim is absent, null when it is malformed (the token is then refused).
 */
export function compileRooms(claim: unknown): RoomPatterns | null | undefined {
  if (claim === undefined) return undefined;
  if (!Array.isArray(claim) || claim.length > MAX_ROOM_PATTERNS) return null;
  let all = false;
  const prefixes: string[] = [];
  const exact = new Set<string>();
  for (const entry of claim) {
    if (entry === '*') all = true;
    else if (typeof entry === 'string' && entry.endsWith(':*') && (ROOM_KINDS as readonly string[]).includes(entry.slice(0, -2))) {
      prefixes.push(entry.slice(0, -1));
    } else if (isValidRoom(entry)) exact.add(entry);
    else return null;
  }
  if (all) return ALL_ROOMS; // `*` covers every prefix and exact room
  return { all, prefixes, exact };
}

/** Whether `userId` holding `grant` may join `room`. `room` must already be valid. */
export function canJoin(userId: string, grant: RoomPatterns | undefined, room: string, policy: RoomAccess): boolean {
  if (room.startsWith('user:')) return room === userRoom(userId);
  if (policy === 'open') return true;
  return grant !== undefined && covers(grant, room);
}

/** Whether a compiled list of rooms and patterns names `room` (no rule for personal rooms). */
export function covers(grant: RoomPatterns, room: string): boolean {
  return grant.all || grant.exact.has(room) || grant.prefixes.some((prefix) => room.startsWith(prefix));
}
