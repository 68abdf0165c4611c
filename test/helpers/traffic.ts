/**
 * Steady numbered traffic through real clients, for fault tests that measure how long delivery
 * stopped and whether it came back intact: a publisher sends `{ tag, seq, at }` on a timer, a
 * recorder timestamps every arrival, and `analyse` turns both into the numbers the docs quote.
 */
import { expect } from 'vitest';
import type { TestClient } from './client.js';
import { sleep } from './redis-process.js';
import { waitFor } from './wait.js';

export interface Arrival {
  readonly tag: string;
  readonly seq: number;
  /** The publisher's clock when it sent the message (same process, same clock). */
  readonly sentAt: number;
  readonly at: number;
}

/** Every message.new with a string `data.tag` that reaches `client`, with the time it arrived. */
export function recorder(client: TestClient): Arrival[] {
  const arrivals: Arrival[] = [];
  client.ws.on('message', (raw, isBinary) => {
    if (isBinary) return;
    const e = JSON.parse(String(raw)) as { type: string; data?: { tag?: unknown; seq?: number; at?: number } };
    if (e.type === 'message.new' && typeof e.data?.tag === 'string') arrivals.push({ tag: e.data.tag, seq: e.data.seq!, sentAt: e.data.at!, at: Date.now() });
  });
  return arrivals;
}

export interface Flow {
  readonly tag: string;
  readonly sent: Array<{ seq: number; at: number }>;
  stop(): void;
}

/** Sends `{ tag, seq, at }` to `room` every `everyMs` until stopped; the node's rate limit must allow it. */
export function flow(from: TestClient, room: string, tag: string, everyMs = 50): Flow {
  const sent: Array<{ seq: number; at: number }> = [];
  const timer = setInterval(() => {
    const at = Date.now();
    const seq = sent.length;
    sent.push({ seq, at });
    from.send({ type: 'send_message', room, data: { tag, seq, at } });
  }, everyMs);
  return { tag, sent, stop: () => clearInterval(timer) };
}

export interface FlowReport {
  sent: number;
  delivered: number;
  lost: number;
  duplicates: number;
  in_order: boolean;
  /** Arrivals older than one already seen, as [arrived seq, newest seq before it] (the first five). */
  reordered: Array<[number, number]>;
  /** Longest silence at the receiver between the fault and `until` (ms). */
  max_gap_ms: number;
  /** From the fault to the arrival that ended the longest silence (ms); null if that silence lasted until `until`. */
  resumed_after_ms: number | null;
}

/** Counts for one flow; gaps are measured from `faultAt` to `until` (when the traffic stopped). */
export function analyse(f: Flow, arrivals: readonly Arrival[], faultAt: number, until: number): FlowReport {
  const mine = arrivals.filter((a) => a.tag === f.tag);
  const seqs = mine.map((a) => a.seq);
  let gap = 0;
  let resumedAt: number | null = null;
  let previous = faultAt;
  for (const a of mine.filter((m) => m.at >= faultAt)) {
    if (a.at - previous > gap) {
      gap = a.at - previous;
      resumedAt = a.at;
    }
    previous = a.at;
  }
  if (until - previous > gap) {
    gap = until - previous;
    resumedAt = null;
  }
  const reordered: Array<[number, number]> = [];
  let newest = -1;
  for (const s of seqs) {
    if (s < newest && reordered.length < 5) reordered.push([s, newest]);
    newest = Math.max(newest, s);
  }
  const distinct = new Set(seqs).size;
  return {
    sent: f.sent.length,
    delivered: distinct,
    lost: f.sent.length - distinct,
    duplicates: seqs.length - distinct,
    in_order: reordered.length === 0,
    reordered,
    max_gap_ms: gap,
    resumed_after_ms: resumedAt === null ? null : resumedAt - faultAt,
  };
}

/** Resolves with the arrival time of the first message of `tag` sent after `since`; rejects at `deadline` (epoch ms). */
export function deliveredAfter(arrivals: readonly Arrival[], tag: string, since: number, deadline: number, what: string): Promise<number> {
  const find = async (): Promise<number> => {
    const hit = arrivals.find((a) => a.tag === tag && a.sentAt > since);
    if (!hit) throw new Error(`no ${tag} message sent after ${new Date(since).toISOString()} has arrived`);
    return hit.at;
  };
  return waitFor(what, find, Math.max(0, deadline - Date.now()));
}

/** Sequence numbers of `f` sent at or after `from` that never arrived. */
export function missingSince(f: Flow, arrivals: readonly Arrival[], from: number): { expected: number; missing: number[] } {
  const got = new Set(arrivals.filter((a) => a.tag === f.tag).map((a) => a.seq));
  const want = f.sent.filter((s) => s.at >= from).map((s) => s.seq);
  return { expected: want.length, missing: want.filter((s) => !got.has(s)) };
}

/** Lets the traffic run 1.5 s more, stops every flow and gives stragglers 0.5 s; resolves with when the flows stopped. */
export async function stopFlows(flows: Record<string, Flow>): Promise<number> {
  await sleep(1500);
  for (const f of Object.values(flows)) f.stop();
  const stoppedAt = Date.now();
  await sleep(500);
  return stoppedAt;
}

/** `t` as ms after `t0`, or null when it never happened: a report field. */
export function msAfter(t0: number, t: number | undefined): number | null {
  return t === undefined ? null : t - t0;
}

/** Every message of `f` sent at or after `from` arrived (soft: the other checks still run and report). */
export function expectAllSince(f: Flow, arrivals: readonly Arrival[], from: number): void {
  const { expected, missing } = missingSince(f, arrivals, from);
  expect.soft(expected, `${f.tag}: messages sent after recovery`).toBeGreaterThan(0);
  expect.soft(missing, `${f.tag}: messages sent after recovery that never arrived`).toEqual([]);
}

/**
 * Once delivery is back on every flow (`resumed` holds when each resumed; nothing is checked if one
 * did not) and the brokers have settled (`settledAt`, e.g. their last logged state change), nothing
 * more is lost: expectAllSince for each [flow, arrivals] from the latest of those times.
 */
export function expectNoLossAfterRecovery(resumed: ReadonlyArray<number | undefined>, settledAt: number, checks: ReadonlyArray<readonly [Flow, readonly Arrival[]]>): void {
  if (resumed.some((t) => t === undefined)) return;
  const from = Math.max(...(resumed as number[]), settledAt);
  for (const [f, arrivals] of checks) expectAllSince(f, arrivals, from);
}
