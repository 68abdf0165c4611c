/**
 * Closes connections when their token expires. One timer for the whole node: items are kept in
 * buckets by expiry second and a once-a-second sweep takes the due ones. Memory is one Set entry
 * per live connection; nothing outlives `remove`.
 */
export interface ExpiryScheduler<T> {
  add(item: T, expiresAtMs: number): void;
  remove(item: T, expiresAtMs: number): void;
  /** Items currently scheduled. */
  size(): number;
  stop(): void;
}

const SWEEP_MS = 1000;

export function createExpiryScheduler<T>(onExpire: (item: T) => void, now: () => number = Date.now): ExpiryScheduler<T> {
  const buckets = new Map<number, Set<T>>();
  let scheduled = 0;
  let swept = Math.floor(now() / 1000);

  const sweep = (): void => {
    const current = Math.floor(now() / 1000);
    // Usually one second; after a stalled event loop, every second missed.
    for (let second = swept; second <= current; second++) {
      const due = buckets.get(second);
      if (due === undefined) continue;
      buckets.delete(second);
      scheduled -= due.size;
      for (const item of due) onExpire(item);
    }
    swept = current + 1;
  };
  const timer = setInterval(sweep, SWEEP_MS);
  timer.unref();

  return {
    add(item, expiresAtMs) {
      // Already due: the next sweep takes it.
      const second = Math.max(swept, Math.ceil(expiresAtMs / 1000));
      let bucket = buckets.get(second);
      if (bucket === undefined) buckets.set(second, (bucket = new Set()));
      if (!bucket.has(item)) scheduled += 1;
      bucket.add(item);
    },
    remove(item, expiresAtMs) {
      // Same key as `add` unless the bucket was already swept (then the item is gone anyway).
      const second = Math.max(swept, Math.ceil(expiresAtMs / 1000));
      const bucket = buckets.get(second);
      if (bucket?.delete(item)) {
        scheduled -= 1;
        if (bucket.size === 0) buckets.delete(second);
      }
    },
    size: () => scheduled,
    stop: () => clearInterval(timer),
  };
}
