import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createExpiryScheduler, type ExpiryScheduler } from '../../src/expiry.js';

/** Start of the test clock: a whole second, so sweeps land on whole seconds. */
const T0 = 1_700_000_000_000;

describe('createExpiryScheduler', () => {
  let clock: number;
  let expired: string[];
  let scheduler: ExpiryScheduler<string>;

  /** Moves the injected clock and the fake timers together, in steps, as a running process would. */
  const advance = (ms: number): void => {
    const end = clock + ms;
    while (clock < end) {
      const step = Math.min(1, end - clock);
      clock += step;
      vi.advanceTimersByTime(step);
    }
  };

  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(T0);
    clock = T0;
    expired = [];
    scheduler = createExpiryScheduler<string>((item) => expired.push(item), () => clock);
  });

  afterEach(() => {
    scheduler.stop();
    vi.useRealTimers();
  });

  it('fires an item at its expiry second, not before', () => {
    scheduler.add('a', T0 + 3_000);
    expect(scheduler.size()).toBe(1);
    advance(2_999);
    expect(expired).toEqual([]);
    advance(1);
    expect(expired).toEqual(['a']);
    expect(scheduler.size()).toBe(0);
  });

  it('fires an item expiring mid-second at the next whole second, never before its expiry', () => {
    scheduler.add('b', T0 + 2_001);
    advance(2_001);
    expect(expired).toEqual([]);
    advance(998);
    expect(expired).toEqual([]);
    advance(1);
    expect(expired).toEqual(['b']);
  });

  it('fires items in expiry order and each once', () => {
    scheduler.add('late', T0 + 5_000);
    scheduler.add('early', T0 + 2_000);
    scheduler.add('early', T0 + 2_000);
    expect(scheduler.size()).toBe(2);
    advance(2_000);
    expect(expired).toEqual(['early']);
    advance(3_000);
    expect(expired).toEqual(['early', 'late']);
    advance(10_000);
    expect(expired).toEqual(['early', 'late']);
    expect(scheduler.size()).toBe(0);
  });

  it('does not fire a removed item', () => {
    scheduler.add('a', T0 + 2_000);
    scheduler.add('b', T0 + 2_000);
    scheduler.remove('a', T0 + 2_000);
    expect(scheduler.size()).toBe(1);
    advance(5_000);
    expect(expired).toEqual(['b']);
    expect(scheduler.size()).toBe(0);
  });

  it('moves an item to a new expiry with remove then add (token refresh)', () => {
    scheduler.add('a', T0 + 2_000);
    scheduler.remove('a', T0 + 2_000);
    scheduler.add('a', T0 + 6_000);
    advance(5_999);
    expect(expired).toEqual([]);
    advance(1);
    expect(expired).toEqual(['a']);
  });

  it('ignores removing an item that is not scheduled, or with the wrong expiry', () => {
    scheduler.add('a', T0 + 2_000);
    scheduler.remove('unknown', T0 + 2_000);
    scheduler.remove('a', T0 + 9_000);
    expect(scheduler.size()).toBe(1);
    advance(2_000);
    expect(expired).toEqual(['a']);
    scheduler.remove('a', T0 + 2_000);
    expect(scheduler.size()).toBe(0);
  });

  it('fires an already expired item on the next sweep', () => {
    scheduler.add('past', T0 - 60_000);
    expect(scheduler.size()).toBe(1);
    advance(999);
    expect(expired).toEqual([]);
    advance(1);
    expect(expired).toEqual(['past']);
    expect(scheduler.size()).toBe(0);
  });

  it('fires an item added after a sweep, for a second already swept, on the next sweep', () => {
    advance(1_500);
    scheduler.add('due', T0 + 1_000);
    scheduler.add('now', clock);
    expect(scheduler.size()).toBe(2);
    advance(499);
    expect(expired).toEqual([]);
    advance(1);
    expect(expired.sort()).toEqual(['due', 'now']);
    expect(scheduler.size()).toBe(0);
  });

  it('can remove an already expired item before the sweep takes it', () => {
    advance(1_500);
    scheduler.add('due', T0 + 1_000);
    scheduler.remove('due', T0 + 1_000);
    expect(scheduler.size()).toBe(0);
    advance(3_000);
    expect(expired).toEqual([]);
  });

  it('catches up every second missed after a stalled event loop', () => {
    scheduler.add('a', T0 + 2_000);
    scheduler.add('b', T0 + 4_000);
    scheduler.add('c', T0 + 20_000);
    // The loop stalls for 5 s: the clock moves, then one timer fires.
    clock = T0 + 5_000;
    vi.advanceTimersByTime(1_000);
    expect(expired.sort()).toEqual(['a', 'b']);
    expect(scheduler.size()).toBe(1);
  });

  it('fires nothing after stop, and leaves no timer behind', () => {
    scheduler.add('a', T0 + 2_000);
    expect(vi.getTimerCount()).toBe(1);
    scheduler.stop();
    expect(vi.getTimerCount()).toBe(0);
    advance(5_000);
    expect(expired).toEqual([]);
  });

  it('returns size() to 0 after many items come and go', () => {
    for (let i = 0; i < 100; i++) scheduler.add(`i${i}`, T0 + 1_000 + (i % 7) * 1_000);
    for (let i = 0; i < 100; i += 2) scheduler.remove(`i${i}`, T0 + 1_000 + (i % 7) * 1_000);
    expect(scheduler.size()).toBe(50);
    advance(8_000);
    expect(expired).toHaveLength(50);
    expect(scheduler.size()).toBe(0);
  });
});
