/**
 * A wait that can be cut short: the background loops (webhooks, stream and outbox ingestion) sleep
 * between rounds with `pause`, and `wake` ends the current sleep at once (a stop, a notification).
 */
export interface Pause {
  /** Resolves after `ms`, or at the next `wake`. */
  pause(ms: number): Promise<void>;
  /** Ends the sleep under way, if any. */
  wake(): void;
}

export function createPause(): Pause {
  let wake: (() => void) | undefined;
  return {
    pause: (ms) =>
      new Promise((resolve) => {
        const timer = setTimeout(done, ms);
        function done(): void {
          clearTimeout(timer);
          wake = undefined;
          resolve();
        }
        wake = done;
      }),
    wake: () => wake?.(),
  };
}
