/**
 * The Redis broker on a real Sentinel deployment (master, replica, three sentinels) with in-process
 * nodes: cross-node delivery through the master the sentinels name, a SENTINEL FAILOVER during
 * traffic (delivery resumes and the subscriptions move to the new master), and a frozen master
 * (DEBUG SLEEP) that the sentinels fail over while it hangs, where recovery has to come from
 * ioredis' failover detector or the broker's liveness probe. Recovery times are printed as one
 * JSON line per scenario for the docs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { brokerCounters, brokerEvents, closeMembers, lastBrokerChange, logMarks, member, probeFailedLogs, probeFailures, publishErrors, reconnects, startBrokerNodes, stopNodes } from '../helpers/broker-nodes.js';
import { stopAllNodes, type TestNode } from '../helpers/node.js';
import { stopAllProcesses } from '../helpers/processes.js';
import { uniquePrefix } from '../helpers/redis.js';
import { stopAllClusters } from '../helpers/redis-cluster.js';
import { startRedisSentinel, stopAllSentinels, type SentinelSetup } from '../helpers/redis-sentinel.js';
import { query, sleep } from '../helpers/redis-process.js';
import { numsub, waitSubscribed } from '../helpers/broker-checks.js';
import { waitFor } from '../helpers/wait.js';
import { analyse, deliveredAfter, expectNoLossAfterRecovery, flow, msAfter, recorder, stopFlows } from '../helpers/traffic.js';

// Five redis-server processes and sentinel gossip on 2 cores that may be busy.
const SETUP_TIMEOUT_MS = 60_000;
/** The documented bound for delivery to resume after a failover; measured values are printed. */
const RECOVERY_BOUND_MS = 15_000;
/** The bound for the node's room channels to show on the new master. */
const RESUBSCRIBE_BOUND_MS = 15_000;

let setup: SentinelSetup;

beforeAll(async () => {
  setup = await startRedisSentinel();
}, SETUP_TIMEOUT_MS);

afterAll(async () => {
  closeMembers();
  await stopAllNodes();
  await stopAllProcesses();
  await stopAllClusters();
  await stopAllSentinels();
}, 30_000);

const startNodes = (deployment: SentinelSetup, prefix: string, ids: string[]) =>
  startBrokerNodes({ REDIS_SENTINELS: deployment.sentinels, REDIS_SENTINEL_NAME: deployment.masterName }, prefix, ids);

/**
 * Two nodes, one member on each in `room`, traffic both ways every 50 ms; resolves once traffic
 * flows through the current master.
 */
async function withTraffic(deployment: SentinelSetup, ids: [string, string], room: string) {
  const prefix = uniquePrefix();
  const nodes = await startNodes(deployment, prefix, ids);
  const [a, b] = nodes as [TestNode, TestNode];
  const ca = await member(a, `${ids[0]}-u`, [room]);
  const cb = await member(b, `${ids[1]}-u`, [room]);
  const channel = `${prefix}room:${room}`;
  await waitSubscribed((await deployment.master()).port, channel, 2, 5000);
  const atA = recorder(ca);
  const atB = recorder(cb);
  const flows = { ab: flow(ca, room, 'ab'), ba: flow(cb, room, 'ba') };
  await deliveredAfter(atB, 'ab', 0, Date.now() + 3000, 'A→B traffic before the fault');
  await deliveredAfter(atA, 'ba', 0, Date.now() + 3000, 'B→A traffic before the fault');
  return { prefix, nodes, channel, atA, atB, flows, marks: logMarks(nodes) };
}

describe('Redis Sentinel broker', () => {
  it('delivers cross-node through the master the sentinels name, once and in order', { timeout: 20_000 }, async () => {
    const prefix = uniquePrefix();
    const nodes = await startNodes(setup, prefix, ['sn-a', 'sn-b']);
    const [a, b] = nodes as [TestNode, TestNode];
    const room = 'channel:sentinel';
    const ca = await member(a, 'sa', [room]);
    const cb = await member(b, 'sb', [room]);
    const master = (await setup.master()).port;
    expect(master).toBe(setup.dataPorts[0]);
    await waitSubscribed(master, `${prefix}room:${room}`, 2, 5000);
    // Nothing subscribes on the replica.
    expect(await numsub(setup.dataPorts[1]!, `${prefix}room:${room}`)).toBe(0);

    for (let n = 0; n < 50; n++) ca.send({ type: 'send_message', room, data: { n } });
    for (let m = 0; m < 50; m++) cb.send({ type: 'send_message', room, data: { m } });
    for (let n = 0; n < 50; n++) expect(await cb.next((e) => e.type === 'message.new' && e.data?.n !== undefined)).toMatchObject({ room, sender: 'sa', data: { n } });
    for (let m = 0; m < 50; m++) expect(await ca.next((e) => e.type === 'message.new' && e.data?.m !== undefined)).toMatchObject({ room, sender: 'sb', data: { m } });
    await sleep(300);
    expect(cb.received.filter((e) => e.type === 'message.new' && e.data?.n !== undefined)).toEqual([]);
    expect(ca.received.filter((e) => e.type === 'message.new' && e.data?.m !== undefined)).toEqual([]);
    await stopNodes(nodes);
  });

  it('resumes delivery after SENTINEL FAILOVER during traffic, with the room subscriptions on the new master', { timeout: 45_000 }, async () => {
    const room = 'channel:switch';
    const { nodes, channel, atA, atB, flows, marks } = await withTraffic(setup, ['sw-a', 'sw-b'], room);

    const faultAt = Date.now();
    const { from, to } = await setup.failover();
    const switchedAt = Date.now();
    const deadline = faultAt + RECOVERY_BOUND_MS;
    const [abAt, baAt] = await Promise.all([
      deliveredAfter(atB, 'ab', switchedAt, deadline, 'A→B delivery to resume').catch(() => undefined),
      deliveredAfter(atA, 'ba', switchedAt, deadline, 'B→A delivery to resume').catch(() => undefined),
    ]);
    const onNewMasterAt = await waitFor('both nodes subscribed on the new master', async () => {
      const channels = (await query(to, ['PUBSUB', 'CHANNELS', '*room*'])) as string[];
      if (!channels.includes(channel) || (await numsub(to, channel)) !== 2) throw new Error(`${JSON.stringify(channels)}, ${await numsub(to, channel)} subscribers`);
      return Date.now();
    }, RESUBSCRIBE_BOUND_MS - (Date.now() - faultAt), 100).catch(() => undefined);
    const stoppedAt = await stopFlows(flows);

    const since = (t: number | undefined) => msAfter(faultAt, t);
    const report = {
      scenario: 'sentinel_failover',
      failover_ms: switchedAt - faultAt,
      resumed_a_to_b_ms: since(abAt),
      resumed_b_to_a_ms: since(baAt),
      subscribed_on_new_master_ms: since(onNewMasterAt),
      ab: analyse(flows.ab, atB, faultAt, stoppedAt),
      ba: analyse(flows.ba, atA, faultAt, stoppedAt),
      old_master_subscribers: await numsub(from, channel).catch(() => null),
      ...(await brokerCounters(nodes)),
      broker_events: brokerEvents(nodes, marks, faultAt),
    };
    console.log(JSON.stringify(report));

    expect(from).toBe(setup.dataPorts[0]);
    expect(to).toBe(setup.dataPorts[1]);
    expect.soft(abAt, `A→B delivery resumed within ${RECOVERY_BOUND_MS} ms`).toBeDefined();
    expect.soft(baAt, `B→A delivery resumed within ${RECOVERY_BOUND_MS} ms`).toBeDefined();
    expect.soft(onNewMasterAt, `the room channel on the new master (PUBSUB CHANNELS '*room*', 2 subscribers) within ${RESUBSCRIBE_BOUND_MS} ms`).toBeDefined();
    for (const r of [report.ab, report.ba]) expect.soft(r).toMatchObject({ duplicates: 0, in_order: true });
    expectNoLossAfterRecovery([abAt, baAt], lastBrokerChange(nodes, marks), [
      [flows.ab, atB],
      [flows.ba, atA],
    ]);
    await stopNodes(nodes);
  });

  it('resumes delivery when the master hangs (DEBUG SLEEP 15) and the sentinels fail it over', { timeout: 75_000 }, async () => {
    // A fresh deployment: after the failover above the old master rejoins only some 20 s later.
    const fresh = await startRedisSentinel();
    const room = 'channel:hang';
    const { nodes, channel, atA, atB, flows, marks } = await withTraffic(fresh, ['hg-a', 'hg-b'], room);
    const [oldMaster, replica] = fresh.dataPorts as [number, number];

    const faultAt = Date.now();
    await fresh.freeze(oldMaster, 15);
    const newMaster = await fresh.waitForFailover(oldMaster);
    const switchedAt = Date.now();
    const deadline = faultAt + RECOVERY_BOUND_MS;
    const [abAt, baAt] = await Promise.all([
      deliveredAfter(atB, 'ab', switchedAt, deadline, 'A→B delivery to resume').catch(() => undefined),
      deliveredAfter(atA, 'ba', switchedAt, deadline, 'B→A delivery to resume').catch(() => undefined),
    ]);
    const onNewMasterAt = await waitFor('both nodes subscribed on the new master', async () => {
      const channels = (await query(newMaster, ['PUBSUB', 'CHANNELS', '*room*'])) as string[];
      if (!channels.includes(channel) || (await numsub(newMaster, channel)) !== 2) throw new Error(JSON.stringify(channels));
      return Date.now();
    }, Math.max(0, deadline - Date.now()), 100).catch(() => undefined);
    const stoppedAt = await stopFlows(flows);

    const since = (t: number | undefined) => msAfter(faultAt, t);
    const probeFailed = await probeFailures(nodes);
    const report = {
      scenario: 'sentinel_frozen_master',
      sentinel_failover_ms: switchedAt - faultAt,
      resumed_a_to_b_ms: since(abAt),
      resumed_b_to_a_ms: since(baAt),
      subscribed_on_new_master_ms: since(onNewMasterAt),
      ab: analyse(flows.ab, atB, faultAt, stoppedAt),
      ba: analyse(flows.ba, atA, faultAt, stoppedAt),
      probe_failures: probeFailed,
      probe_failed_logs: probeFailedLogs(nodes, marks).map((lines) => lines.length),
      reconnects: await reconnects(nodes),
      publish_errors: await publishErrors(nodes),
      // The probe acted if it failed on a node; otherwise only ioredis (its failover detector) can have moved it.
      mechanism: nodes.map((_, i) => (probeFailed[i]! > 0 ? 'liveness probe' : 'failover detector')),
      broker_events: brokerEvents(nodes, marks, faultAt),
    };
    console.log(JSON.stringify(report));

    expect(newMaster).toBe(replica);
    expect.soft(abAt, `A→B delivery resumed within ${RECOVERY_BOUND_MS} ms of the freeze`).toBeDefined();
    expect.soft(baAt, `B→A delivery resumed within ${RECOVERY_BOUND_MS} ms of the freeze`).toBeDefined();
    expect.soft(onNewMasterAt, `the room channel on the new master within ${RECOVERY_BOUND_MS} ms of the freeze`).toBeDefined();
    expect.soft(await Promise.all(nodes.map((n) => n.metric('wsedge_broker_up')))).toEqual([1, 1]);
    expect.soft(report.reconnects.every((r) => r >= 1), 'each node counted its broker recovery').toBe(true);
    for (const r of [report.ab, report.ba]) expect.soft(r).toMatchObject({ duplicates: 0, in_order: true });
    expectNoLossAfterRecovery([abAt, baAt], lastBrokerChange(nodes, marks), [
      [flows.ab, atB],
      [flows.ba, atA],
    ]);
    await stopNodes(nodes);
    await fresh.stop();
  });

  it('starts a new epoch for sequenced rooms after SENTINEL FAILOVER: room_reset to the members, recovered: false for the old epoch', { timeout: 60_000 }, async () => {
    const fresh = await startRedisSentinel();
    const room = 'task:failover';
    const nodes = await startBrokerNodes({ REDIS_SENTINELS: fresh.sentinels, REDIS_SENTINEL_NAME: fresh.masterName }, uniquePrefix(), ['sq-a', 'sq-b'], { WS_HISTORY_ROOMS: 'task:*' });
    const [a, b] = nodes as [TestNode, TestNode];
    const ca = await member(a, 'sqa', [room]);
    const cb = await member(b, 'sqb', [room]);
    const events = (c: typeof ca) => c.received.filter((e) => e.type === 'message.new' && e.room === room);
    await waitFor('B receives A’s events', async () => {
      ca.send({ type: 'send_message', room, data: { n: 0 } });
      await sleep(50);
      return events(cb).length > 0;
    }, 5000);
    const before = events(cb).at(-1)!;
    await fresh.failover();
    const resets = await Promise.all([ca, cb].map((c) => c.next((e) => e.type === 'room_reset' && e.room === room, RECOVERY_BOUND_MS)));
    for (const reset of resets) expect(reset).toMatchObject({ offset: 0, epoch: expect.not.stringMatching(`^${before.epoch}$`) });
    const late = await member(b, 'sqc', []);
    late.send({ type: 'join_room', room, since: { epoch: before.epoch, offset: before.offset }, id: 'late' });
    expect(await late.next((e) => e.id === 'late', 5000)).toMatchObject({ type: 'room_joined', recovered: false, epoch: resets[0]!.epoch });
    console.log(JSON.stringify({ scenario: 'sentinel_failover_sequenced', old_epoch: before.epoch, new_epoch: resets[0]!.epoch, resets: resets.length, recovered_for_old_epoch: false }));
    await stopNodes(nodes);
    await fresh.stop();
  });
});
