import { describe, expect, it } from 'vitest';
import { INVALID_WINDOW_MS, RATE_STRIKE_WINDOW_MS } from '../../src/config.js';
import { createLocalSeats, newBucket, newStrikes, strike, takeToken } from '../../src/limits.js';

describe('createLocalSeats', () => {
  it('grants up to the limit per user and refuses the next', async () => {
    const slots = createLocalSeats(2);
    expect(await slots.acquire('alice', 'c1')).toBe(true);
    expect(await slots.acquire('alice', 'c2')).toBe(true);
    expect(await slots.acquire('alice', 'c3')).toBe(false);
    expect(await slots.acquire('bob', 'c4')).toBe(true);
    expect(slots.users()).toBe(2);
  });

  it('does not take a slot on a refused acquire', async () => {
    const slots = createLocalSeats(1);
    expect(await slots.acquire('alice', 'c1')).toBe(true);
    expect(await slots.acquire('alice', 'c2')).toBe(false);
    expect(await slots.acquire('alice', 'c3')).toBe(false);
    slots.release('alice', 'c1');
    expect(await slots.acquire('alice', 'c4')).toBe(true);
    expect(await slots.acquire('alice', 'c5')).toBe(false);
  });

  it('frees a slot at once on release', async () => {
    const slots = createLocalSeats(1);
    expect(await slots.acquire('alice', 'c1')).toBe(true);
    slots.release('alice', 'c1');
    expect(await slots.acquire('alice', 'c2')).toBe(true);
  });

  it('keeps map entries only for users holding a connection', async () => {
    const slots = createLocalSeats(5);
    await slots.acquire('alice', 'c1');
    await slots.acquire('alice', 'c2');
    await slots.acquire('bob', 'c3');
    expect(slots.users()).toBe(2);
    slots.release('alice', 'c1');
    expect(slots.users()).toBe(2);
    slots.release('alice', 'c2');
    expect(slots.users()).toBe(1);
    slots.release('bob', 'c3');
    expect(slots.users()).toBe(0);
  });

  it('treats release for an unknown user as a no-op', async () => {
    const slots = createLocalSeats(1);
    slots.release('nobody', 'c0');
    expect(slots.users()).toBe(0);
    expect(await slots.acquire('nobody', 'c1')).toBe(true);
    expect(await slots.acquire('nobody', 'c2')).toBe(false);
  });

  // ConnectionSeats.release documents "a no-op for an unknown connection"; a stray or repeated
  // release must not free a slot another live connection holds.
  it('treats release of a connection that holds no slot as a no-op', async () => {
    const slots = createLocalSeats(2);
    expect(await slots.acquire('alice', 'c1')).toBe(true);
    expect(await slots.acquire('alice', 'c2')).toBe(true);
    slots.release('alice', 'never-acquired');
    expect(await slots.acquire('alice', 'c3')).toBe(false);
  });

  it('frees a slot only once when the same connection is released twice', async () => {
    const slots = createLocalSeats(2);
    expect(await slots.acquire('alice', 'c1')).toBe(true);
    expect(await slots.acquire('alice', 'c2')).toBe(true);
    slots.release('alice', 'c1');
    slots.release('alice', 'c1');
    expect(await slots.acquire('alice', 'c3')).toBe(true);
    expect(await slots.acquire('alice', 'c4')).toBe(false);
  });
});

describe('takeToken', () => {
  const RATE = 2; // tokens per second
  const BURST = 3;

  it('allows a burst, then refuses', () => {
    const bucket = newBucket(BURST, 1_000);
    expect(bucket).toEqual({ tokens: BURST, refilledAt: 1_000 });
    expect(takeToken(bucket, 1_000, RATE, BURST)).toBe(true);
    expect(takeToken(bucket, 1_000, RATE, BURST)).toBe(true);
    expect(takeToken(bucket, 1_000, RATE, BURST)).toBe(true);
    expect(takeToken(bucket, 1_000, RATE, BURST)).toBe(false);
    expect(bucket.tokens).toBe(0);
  });

  it('refills at the rate: one token per 500 ms at 2/s', () => {
    const bucket = newBucket(BURST, 0);
    for (let i = 0; i < BURST; i++) takeToken(bucket, 0, RATE, BURST);
    expect(takeToken(bucket, 250, RATE, BURST)).toBe(false);
    expect(bucket.tokens).toBe(0.5);
    expect(takeToken(bucket, 499, RATE, BURST)).toBe(false);
    expect(takeToken(bucket, 500, RATE, BURST)).toBe(true);
    expect(takeToken(bucket, 500, RATE, BURST)).toBe(false);
    expect(takeToken(bucket, 1_000, RATE, BURST)).toBe(true);
    expect(bucket.refilledAt).toBe(1_000);
  });

  it('caps the refill at the burst after a long idle period', () => {
    const bucket = newBucket(BURST, 0);
    takeToken(bucket, 0, RATE, BURST);
    expect(takeToken(bucket, 3_600_000, RATE, BURST)).toBe(true);
    expect(bucket.tokens).toBe(BURST - 1);
    expect(takeToken(bucket, 3_600_000, RATE, BURST)).toBe(true);
    expect(takeToken(bucket, 3_600_000, RATE, BURST)).toBe(true);
    expect(takeToken(bucket, 3_600_000, RATE, BURST)).toBe(false);
  });

  it('sustains exactly the rate over time', () => {
    const bucket = newBucket(BURST, 0);
    let granted = 0;
    // One attempt every 10 ms for 10 s: the burst plus 2/s * 10 s.
    for (let now = 0; now <= 10_000; now += 10) if (takeToken(bucket, now, RATE, BURST)) granted += 1;
    expect(granted).toBe(BURST + RATE * 10);
  });

  it('neither refills nor moves its clock when time goes backwards', () => {
    const bucket = newBucket(1, 5_000);
    expect(takeToken(bucket, 5_000, RATE, 1)).toBe(true);
    expect(takeToken(bucket, 4_000, RATE, 1)).toBe(false);
    expect(bucket).toEqual({ tokens: 0, refilledAt: 5_000 });
  });
});

describe('strike', () => {
  it('trips when the strikes in one window exceed max', () => {
    const strikes = newStrikes();
    expect(strikes).toEqual({ count: 0, windowStart: 0 });
    const t0 = 1_700_000_000_000;
    expect(strike(strikes, t0, RATE_STRIKE_WINDOW_MS, 3)).toBe(false);
    expect(strike(strikes, t0 + 1, RATE_STRIKE_WINDOW_MS, 3)).toBe(false);
    expect(strike(strikes, t0 + 2, RATE_STRIKE_WINDOW_MS, 3)).toBe(false);
    expect(strike(strikes, t0 + 3, RATE_STRIKE_WINDOW_MS, 3)).toBe(true);
    expect(strike(strikes, t0 + 4, RATE_STRIKE_WINDOW_MS, 3)).toBe(true);
  });

  it('starts a new window once windowMs has passed since the window began', () => {
    const strikes = newStrikes();
    const t0 = 1_700_000_000_000;
    for (let i = 0; i < 3; i++) strike(strikes, t0, INVALID_WINDOW_MS, 3);
    // Last millisecond of the window: still counted in it.
    expect(strike(strikes, t0 + INVALID_WINDOW_MS - 1, INVALID_WINDOW_MS, 3)).toBe(true);
    // Exactly one window later: a fresh window.
    expect(strike(strikes, t0 + INVALID_WINDOW_MS, INVALID_WINDOW_MS, 3)).toBe(false);
    expect(strikes).toEqual({ count: 1, windowStart: t0 + INVALID_WINDOW_MS });
  });

  it('is a fixed window: strikes spread over two windows never trip', () => {
    const strikes = newStrikes();
    const t0 = 1_700_000_000_000;
    const results: boolean[] = [];
    for (let i = 0; i < 10; i++) results.push(strike(strikes, t0 + i * 5_000, 10_000, 2));
    expect(results.every((tripped) => !tripped)).toBe(true);
  });

  it('trips on the first strike when max is 0', () => {
    expect(strike(newStrikes(), 1_700_000_000_000, 10_000, 0)).toBe(true);
  });
});

describe('createAddressCounts', () => {
  it('caps connections per address and forgets addresses with none left', async () => {
    const { createAddressCounts } = await import('../../src/limits.js');
    const counts = createAddressCounts(2);
    expect(counts.acquire('a')).toBe(true);
    expect(counts.acquire('a')).toBe(true);
    expect(counts.acquire('a')).toBe(false);
    expect(counts.acquire('b')).toBe(true);
    counts.release('a');
    expect(counts.acquire('a')).toBe(true);
    counts.release('unknown');
  });

  it('is unlimited at 0', async () => {
    const { createAddressCounts } = await import('../../src/limits.js');
    const counts = createAddressCounts(0);
    for (let i = 0; i < 1000; i++) expect(counts.acquire('a')).toBe(true);
  });
});

describe('createFailureLimiter', () => {
  it('blocks an address after its burst of failures and lets it back as the bucket refills', async () => {
    const { createFailureLimiter } = await import('../../src/limits.js');
    const limiter = createFailureLimiter(60); // one per second, burst 60
    const t = 1_000_000;
    for (let i = 0; i < 60; i++) {
      expect(limiter.blocked('198.51.100.1', t)).toBe(false);
      limiter.fail('198.51.100.1', t);
    }
    expect(limiter.blocked('198.51.100.1', t)).toBe(true);
    expect(limiter.blocked('198.51.100.2', t)).toBe(false);
    expect(limiter.blocked('198.51.100.1', t + 999)).toBe(true);
    expect(limiter.blocked('198.51.100.1', t + 1000)).toBe(false);
  });

  it('still verifies a blocked address while it fails at most 10 times a second, and shuts it past that', async () => {
    const { createFailureLimiter, TRIAL_FAILURES_PER_SECOND } = await import('../../src/limits.js');
    expect(TRIAL_FAILURES_PER_SECOND).toBe(10);
    const limiter = createFailureLimiter(5);
    const t = 1_000_000;
    for (let i = 0; i < 5; i++) limiter.fail('nat', t);
    expect(limiter.blocked('nat', t)).toBe(true);
    // Blocked, but one bad upgrade a second never shuts it: valid users behind it are verified.
    for (let s = 0; s < 30; s++) {
      expect(limiter.mayVerify('nat', t + s * 1000)).toBe(true);
      limiter.fail('nat', t + s * 1000);
      expect(limiter.blocked('nat', t + s * 1000)).toBe(true);
    }
    // Once blocked, ten more failures at once use up the trial: no verification until one is
    // earned back (100 ms).
    for (let i = 0; i < 5; i++) limiter.fail('flood', t);
    for (let i = 0; i < 10; i++) {
      expect(limiter.mayVerify('flood', t)).toBe(true);
      limiter.fail('flood', t);
    }
    expect(limiter.mayVerify('flood', t)).toBe(false);
    expect(limiter.mayVerify('flood', t + 99)).toBe(false);
    expect(limiter.mayVerify('flood', t + 100)).toBe(true);
    expect(limiter.mayVerify('other', t)).toBe(true);
  });

  it('never blocks when off, and remembers a bounded number of addresses', async () => {
    const { createFailureLimiter } = await import('../../src/limits.js');
    const off = createFailureLimiter(0);
    for (let i = 0; i < 100; i++) off.fail('a', 0);
    expect(off.blocked('a', 0)).toBe(false);
    const small = createFailureLimiter(1, 3);
    for (const a of ['a', 'b', 'c', 'd']) small.fail(a, 0);
    expect(small.size()).toBe(3);
    expect(small.blocked('a', 0)).toBe(false); // forgotten first
    expect(small.blocked('d', 0)).toBe(true);
  });
});
