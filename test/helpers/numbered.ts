/**
 * Numbered events for the "no event lost" suites: a backend publishing `task.updated {n}` 1, 2, 3,
 * ... to rooms through a node's API without pause, and the count of what a client's sequence lost
 * or got twice against what was published.
 */
import { expect } from 'vitest';

/** Publishes n = 1, 2, ... to every room until `until()`; resolves with the last n (each answered 200). */
export async function publishNumbered(internal: string, apiKey: string, rooms: readonly string[], until: () => boolean): Promise<number> {
  let n = 0;
  while (!until()) {
    n += 1;
    for (const room of rooms) {
      const res = await fetch(`${internal}/api/v1/publish`, {
        method: 'POST',
        headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ room, type: 'task.updated', data: { n } }),
      });
      expect(res.status).toBe(200);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return n;
}

/** 1..published. */
export const numbers = (published: number): number[] => Array.from({ length: published }, (_, i) => i + 1);

/** What `got` lost of 1..published, and how many of it arrived more than once. */
export function lossOf(published: number, got: readonly number[]): { lost: number; duplicated: number } {
  const seen = new Set(got);
  return { lost: numbers(published).filter((n) => !seen.has(n)).length, duplicated: got.length - seen.size };
}

/** The numbers of 1..published that `got` lacks, as ranges ("17-22"), for a failure message. */
export function missingOf(published: number, got: readonly number[]): string[] {
  const seen = new Set(got);
  const ranges: string[] = [];
  for (let n = 1; n <= published; n++) {
    if (seen.has(n)) continue;
    let end = n;
    while (end < published && !seen.has(end + 1)) end += 1;
    ranges.push(end === n ? `${n}` : `${n}-${end}`);
    n = end;
  }
  return ranges;
}

/** The sums of lossOf over many sequences. */
export function totalLoss(published: number, sequences: Iterable<readonly number[]>): { lost: number; duplicated: number } {
  let lost = 0;
  let duplicated = 0;
  for (const got of sequences) {
    const loss = lossOf(published, got);
    lost += loss.lost;
    duplicated += loss.duplicated;
  }
  return { lost, duplicated };
}
