import { describe, expect, it } from 'vitest';
import { MAX_ROOM_PATTERNS, NO_ROOMS, canJoin, compileRooms, isValidId, isValidRoom, userRoom, type RoomPatterns } from '../../src/rooms.js';

const id64 = 'a'.repeat(64);
const id65 = 'a'.repeat(65);

/** compileRooms for a claim the test knows is well formed. */
function grant(claim: unknown): RoomPatterns {
  const compiled = compileRooms(claim);
  if (compiled === null || compiled === undefined) throw new Error(`claim ${JSON.stringify(claim)} did not compile`);
  return compiled;
}

describe('isValidRoom', () => {
  it.each(['project:1', 'channel:general', 'task:A-b_9', 'user:alice', `project:${id64}`, 'task:-', 'channel:_'])('accepts %s', (room) => {
    expect(isValidRoom(room)).toBe(true);
  });

  it('accepts a 64-character id and refuses a 65-character one', () => {
    expect(isValidRoom(`channel:${id64}`)).toBe(true);
    expect(isValidRoom(`channel:${id65}`)).toBe(false);
  });

  it.each([
    ['an empty id', 'project:'],
    ['no kind', ':1'],
    ['no separator', 'project1'],
    ['an unknown kind', 'room:1'],
    ['an upper-case kind', 'Project:1'],
    ['a plural kind', 'projects:1'],
    ['a space', 'project:a b'],
    ['a trailing newline', 'project:1\n'],
    ['a leading space', ' project:1'],
    ['a dot', 'project:a.b'],
    ['a slash', 'project:a/b'],
    ['a second colon', 'project:1:2'],
    ['a wildcard', 'project:*'],
    ['a non-ASCII letter', 'project:ü'],
    ['an empty string', ''],
  ])('refuses a name with %s', (_what, room) => {
    expect(isValidRoom(room)).toBe(false);
  });

  it.each([1, null, undefined, {}, ['project:1']])('refuses the non-string %j', (value) => {
    expect(isValidRoom(value)).toBe(false);
  });
});

describe('isValidId and userRoom', () => {
  it('follows the room id grammar', () => {
    expect(isValidId(id64)).toBe(true);
    expect(isValidId(id65)).toBe(false);
    expect(isValidId('')).toBe(false);
    expect(isValidId('a:b')).toBe(false);
    expect(isValidId(42)).toBe(false);
  });

  it('names the personal room', () => {
    expect(userRoom('alice')).toBe('user:alice');
  });
});

describe('compileRooms', () => {
  it('returns undefined for an absent claim', () => {
    expect(compileRooms(undefined)).toBeUndefined();
  });

  it('compiles *', () => {
    expect(compileRooms(['*'])).toEqual({ all: true, prefixes: [], exact: new Set() });
  });

  it('compiles kind wildcards into prefixes', () => {
    expect(compileRooms(['project:*', 'user:*'])).toEqual({ all: false, prefixes: ['project:', 'user:'], exact: new Set() });
  });

  it('compiles exact rooms', () => {
    expect(compileRooms(['channel:42', 'task:7', 'channel:42'])).toEqual({
      all: false,
      prefixes: [],
      exact: new Set(['channel:42', 'task:7']),
    });
  });

  it('compiles a mixed claim and an empty one', () => {
    // `*` covers the rest: every claim holding it shares one grant object (no per-connection copy).
    expect(compileRooms(['*', 'task:*', 'channel:1'])).toEqual({ all: true, prefixes: [], exact: new Set() });
    expect(compileRooms(['task:*', '*'])).toBe(compileRooms(['*']));
    expect(compileRooms([])).toEqual(NO_ROOMS);
  });

  it.each([
    ['null', null],
    ['a string', '*'],
    ['an object', { rooms: ['*'] }],
    ['a number', 1],
    ['a number entry', [1]],
    ['a null entry', [null]],
    ['an unknown kind wildcard', ['room:*']],
    ['a bare kind', ['project']],
    ['a kind without id', ['project:']],
    ['a double wildcard', ['project:**']],
    ['an id prefix pattern', ['project:1*']],
    ['**', ['**']],
    ['an invalid room among valid ones', ['project:1', 'project:a b']],
    ['a nested array', [['*']]],
  ])('returns null for %s', (_what, claim) => {
    expect(compileRooms(claim)).toBeNull();
  });

  it(`accepts ${MAX_ROOM_PATTERNS} entries and refuses one more`, () => {
    const rooms = Array.from({ length: MAX_ROOM_PATTERNS }, (_, i) => `task:${i}`);
    expect(compileRooms(rooms)?.exact.size).toBe(MAX_ROOM_PATTERNS);
    expect(compileRooms([...rooms, 'task:extra'])).toBeNull();
  });
});

describe('canJoin', () => {
  it('lets a user join their own user room with no grant, under either policy', () => {
    expect(canJoin('alice', undefined, 'user:alice', 'token')).toBe(true);
    expect(canJoin('alice', NO_ROOMS, 'user:alice', 'token')).toBe(true);
    expect(canJoin('alice', undefined, 'user:alice', 'open')).toBe(true);
  });

  it("never lets a user join another user's room, even with * or user:* or the exact name, or under the open policy", () => {
    expect(canJoin('alice', grant(['*']), 'user:bob', 'token')).toBe(false);
    expect(canJoin('alice', grant(['user:*']), 'user:bob', 'token')).toBe(false);
    expect(canJoin('alice', grant(['user:bob']), 'user:bob', 'token')).toBe(false);
    expect(canJoin('alice', undefined, 'user:bob', 'open')).toBe(false);
    expect(canJoin('alice', grant(['*']), 'user:alice2', 'open')).toBe(false);
  });

  it('refuses every other room without a rooms claim under the token policy', () => {
    expect(canJoin('alice', undefined, 'project:1', 'token')).toBe(false);
    expect(canJoin('alice', NO_ROOMS, 'channel:1', 'token')).toBe(false);
  });

  it('allows every non-user room under the open policy, even without a claim', () => {
    expect(canJoin('alice', undefined, 'project:1', 'open')).toBe(true);
    expect(canJoin('alice', NO_ROOMS, 'task:9', 'open')).toBe(true);
  });

  it('allows every non-user room with *', () => {
    expect(canJoin('alice', grant(['*']), 'project:1', 'token')).toBe(true);
    expect(canJoin('alice', grant(['*']), 'channel:x', 'token')).toBe(true);
  });

  it('allows rooms of a granted kind only', () => {
    const projects = grant(['project:*']);
    expect(canJoin('alice', projects, 'project:1', 'token')).toBe(true);
    expect(canJoin('alice', projects, 'project:anything', 'token')).toBe(true);
    expect(canJoin('alice', projects, 'channel:1', 'token')).toBe(false);
    expect(canJoin('alice', projects, 'task:1', 'token')).toBe(false);
  });

  it('allows exact rooms only', () => {
    const exact = grant(['channel:42']);
    expect(canJoin('alice', exact, 'channel:42', 'token')).toBe(true);
    expect(canJoin('alice', exact, 'channel:420', 'token')).toBe(false);
    expect(canJoin('alice', exact, 'channel:4', 'token')).toBe(false);
    expect(canJoin('alice', exact, 'project:42', 'token')).toBe(false);
  });
});
