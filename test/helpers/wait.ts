/** Polls `check` until it holds; rejects naming `what` after `timeoutMs`. For state seen from outside (metrics, Redis, logs). */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Waiting on something that grows in place (received messages, log lines): call `wake()` after
 * each change. `until(check)` resolves with the first result of `check` that is not undefined,
 * rejects with what `check` throws (the source ended first), or after `timeoutMs` with the
 * message `timedOut()` gives then.
 */
export function createWaiters() {
  const waiters = new Set<() => void>();
  return {
    wake: (): void => waiters.forEach((w) => w()),
    until<T>(check: () => T | undefined, timeoutMs: number, timedOut: () => string): Promise<T> {
      return new Promise((resolve, reject) => {
        const done = (): void => {
          clearTimeout(timer);
          waiters.delete(attempt);
        };
        const attempt = (): void => {
          let result: T | undefined;
          try {
            result = check();
          } catch (err) {
            done();
            reject(err as Error);
            return;
          }
          if (result === undefined) return;
          done();
          resolve(result);
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(timedOut()));
        }, timeoutMs);
        waiters.add(attempt);
        attempt();
      });
    },
  };
}
