/** Which refusals of a join ws-edge/client tries again (rooms.ts `refused`), and which end the room. */
import { describe, expect, it } from 'vitest';
import { ClientError } from '../../src/client/requests.js';
import { createRooms } from '../../src/client/rooms.js';

function refusedWith(code: string): { again: boolean; wanted: boolean; left: string[] } {
  const rooms = createRooms();
  const left: string[] = [];
  rooms.add('task:1', { left: (reason) => left.push(reason) }, undefined).catch(() => {});
  rooms.unsent('j1');
  const again = !rooms.refused('task:1', new ClientError(code as never, code), 'j1');
  return { again, wanted: rooms.has('task:1'), left };
}

describe('a refused join', () => {
  it('is tried again after unavailable, a timeout, or its frame dropped by the rate limit', () => {
    for (const code of ['unavailable', 'timeout', 'rate_limited']) expect(refusedWith(code), code).toEqual({ again: true, wanted: true, left: [] });
  });

  it('ends the room on a refusal of the join itself', () => {
    for (const code of ['forbidden', 'invalid_room', 'too_many_rooms']) expect(refusedWith(code), code).toMatchObject({ again: false, wanted: false });
  });
});
