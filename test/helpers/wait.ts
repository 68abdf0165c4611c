/**
 * The one polling wait of the tests, for state seen from outside (metrics, Redis, logs, processes).
 * Calls `check` every `intervalMs` until it returns something other than `false`, and resolves with
 * that. A check may also throw to say why it is not there yet; after `timeoutMs` this rejects naming
 * `what` and the last reason, so a stuck wait says what it was stuck on.
 */
export async function waitFor<T>(what: string, check: () => T | false | Promise<T | false>, timeoutMs = 15_000, intervalMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let last = 'the check returned false';
    try {
      const result = await check();
      if (result !== false) return result;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${last}`);
    await new Promise((r) => setTimeout(r, intervalMs));
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
