/**
 * Redis Cluster slots as ws-edge uses them: a hash tag that lands in a given slot, channels grouped
 * by slot, and commands cut into chunks of a bounded number of channels.
 */
import calculateSlot from 'cluster-key-slot';

export const SLOTS = 16384;
/** Channels per (S)SUBSCRIBE command. */
const SUBSCRIBE_CHUNK = 1000;

export { calculateSlot as slotOf };

/** A hash tag for every slot, found once by search (about 180,000 hashes, a few ms). */
let tagOfSlot: string[] | undefined;
export function tagFor(slot: number): string {
  if (tagOfSlot === undefined) {
    const tags: string[] = new Array<string>(SLOTS);
    let found = 0;
    for (let i = 0; found < SLOTS; i++) {
      const s = calculateSlot(`p${i}`);
      if (tags[s] === undefined) {
        tags[s] = `p${i}`;
        found += 1;
      }
    }
    tagOfSlot = tags;
  }
  return tagOfSlot[slot]!;
}

/** `list` in chunks of at most SUBSCRIBE_CHUNK. */
export function inChunks<T>(list: readonly T[]): T[][] {
  const chunks: T[][] = [];
  for (let i = 0; i < list.length; i += SUBSCRIBE_CHUNK) chunks.push(list.slice(i, i + SUBSCRIBE_CHUNK));
  return chunks;
}

/** Channels grouped by slot, in chunks: a cluster refuses one SSUBSCRIBE over several slots. */
export function bySlot(channels: readonly string[]): string[][] {
  const groups = new Map<number, string[]>();
  for (const channel of channels) {
    const slot = calculateSlot(channel);
    const group = groups.get(slot);
    if (group === undefined) groups.set(slot, [channel]);
    else group.push(channel);
  }
  return [...groups.values()].flatMap(inChunks);
}
