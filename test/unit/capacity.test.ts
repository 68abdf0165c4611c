import { describe, expect, it } from 'vitest';
import { connectionCapacity, fileMargin, openFilesLimit } from '../../src/capacity.js';

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            2000                 20000                files
`;

describe('connection capacity from the open-files limit', () => {
  it('reads the soft limit, and nothing where it cannot', () => {
    expect(openFilesLimit(() => LIMITS)).toBe(2000);
    expect(openFilesLimit(() => 'Max open files            unlimited            unlimited            files')).toBeUndefined();
    expect(
      openFilesLimit(() => {
        throw new Error('no /proc');
      }),
    ).toBeUndefined();
  });

  it('keeps 10% (at least 256) for everything but WebSockets', () => {
    expect([fileMargin(400), fileMargin(2000), fileMargin(20_000), fileMargin(1_048_576)]).toEqual([256, 256, 2000, 104_858]);
  });

  it('defaults to the limit less the margin, keeps a value that fits, and warns about one that does not (or none)', () => {
    expect(connectionCapacity(undefined, 20_000)).toEqual({ max: 18_000, warning: undefined });
    expect(connectionCapacity(undefined, 200)).toEqual({ max: 1, warning: undefined });
    expect(connectionCapacity(undefined, undefined)).toEqual({ max: 0, warning: undefined });
    expect(connectionCapacity(15_000, 20_000)).toEqual({ max: 15_000, warning: undefined });
    expect(connectionCapacity(19_000, 20_000).warning).toBe(
      'WS_MAX_CONNECTIONS=19000 does not fit the open-files limit of 20000 (18000 after 2000 kept for Redis, backend calls and the node): past it the node cannot accept and spins; unset it or set at most 18000, or raise the limit (ulimit -n, LimitNOFILE)',
    );
    expect(connectionCapacity(0, 2000)).toMatchObject({ max: 0, warning: expect.stringMatching(/^WS_MAX_CONNECTIONS=0 \(no limit\) does not fit the open-files limit of 2000 \(1744 after 256/) });
    expect(connectionCapacity(0, undefined)).toEqual({ max: 0, warning: undefined });
  });
});
