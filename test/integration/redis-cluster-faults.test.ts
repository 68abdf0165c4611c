/**
 * The Redis broker on a real Redis Cluster (3 masters, 3 replicas, one cluster for the file) under
 * the faults a cluster adds, with in-process nodes and steady traffic: a coordinated failover, a
 * frozen master (only its rooms may stall; the liveness probe notices it and rebuilds only that
 * shard's links) and a master killed with -9. Each test fails if delivery does not resume within
 * RECOVERY_BOUND_MS or a wanted room is not subscribed on the master that serves it afterwards.
 * Recovery times are printed as one JSON line per scenario for the docs (README "Redis topologies").
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { brokerCounters, brokerEvents, brokersUp, closeMembers, lastBrokerChange, logMarks, member, probeFailedLogs, probeFailures, publishErrors, reconnects, startBrokerNodes, stopNodes } from '../helpers/broker-nodes.js';
import { stopAllNodes, type TestNode } from '../helpers/node.js';
import { uniquePrefix } from '../helpers/redis.js';
import { redisCommand } from '../helpers/resp.js';
import { roomsOnMasters, shardNumsub, shardSubscribed, startRedisCluster, stopAllClusters, type PlacedRoom, type RedisCluster } from '../helpers/redis-cluster.js';
import { asArray, asString, info, query, sleep } from '../helpers/redis-process.js';
import { waitFor } from '../helpers/wait.js';
import { analyse, deliveredAfter, expectAllSince, expectNoLossAfterRecovery, flow, msAfter, recorder, stopFlows } from '../helpers/traffic.js';

// Six redis-server processes and gossip on 2 cores that may be busy.
const SETUP_TIMEOUT_MS = 60_000;
/**
 * The documented bound for delivery to resume after a failover, a freeze or a kill: generous, as
 * the machine has 2 cores shared with other work; measured values (0.7-5 s) are printed.
 */
const RECOVERY_BOUND_MS = 15_000;

let cluster: RedisCluster;

beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
}, SETUP_TIMEOUT_MS);

afterAll(async () => {
  closeMembers();
  await stopAllNodes();
  await stopAllClusters();
}, 30_000);

/**
 * Waits up to `timeoutMs` for every room channel to have its expected number of shard subscribers
 * on the master serving it now; returns what each showed last, for one soft assertion that names
 * every room still missing.
 */
async function resubscribed(expected: Record<string, number>, timeoutMs: number): Promise<Record<string, number>> {
  const seen: Record<string, number> = {};
  const check = async () => {
    for (const [channel] of Object.entries(expected)) seen[channel] = await shardNumsub(await cluster.masterForKey(channel), channel);
    if (Object.entries(expected).some(([channel, count]) => seen[channel] !== count)) throw new Error(JSON.stringify(seen));
  };
  await waitFor('every room subscribed on its current master', check, timeoutMs, 200).catch(() => {});
  return seen;
}

/**
 * Every wanted channel, checked on the master that serves its slot now with PUBSUB SHARDCHANNELS
 * (not only a subscriber count): the channels missing there, by master port.
 */
async function missingOnOwners(channels: readonly string[], pattern: string): Promise<Record<number, string[]>> {
  const missing: Record<number, string[]> = {};
  for (const channel of channels) {
    const owner = await cluster.masterForKey(channel);
    const listed = asArray(await query(owner, ['PUBSUB', 'SHARDCHANNELS', pattern])).map(asString);
    if (!listed.includes(channel)) (missing[owner] ??= []).push(channel);
  }
  return missing;
}

/** Ids of the connections named `name` on one node (CLIENT LIST). */
async function connectionIds(port: number, name: string): Promise<string[]> {
  const list = asString(await query(port, ['CLIENT', 'LIST']));
  return list
    .split('\n')
    .filter((line) => line.split(' ').includes(`name=${name}`))
    .map((line) => /^id=(\d+)/.exec(line)![1]!)
    .sort();
}

/** Until every node is back in a 3-master, 3-replica cluster with every replication link up. */
async function clusterWhole(timeoutMs = 30_000): Promise<void> {
  await waitFor('the cluster to be whole (3 masters, 3 linked replicas, state ok)', async () => {
    const masters = await cluster.masters();
    const replicas = await cluster.replicas();
    if (masters.length !== 3 || replicas.length !== 3) throw new Error(`${masters.length} masters, ${replicas.length} replicas`);
    for (const m of masters) if (!replicas.some((r) => r.masterPort === m.port)) throw new Error(`master ${m.port} has no replica`);
    for (const r of replicas) {
      const link = (await info(r.port, 'replication', 1000))['master_link_status'];
      if (link !== 'up') throw new Error(`replica ${r.port}: master_link_status ${link}`);
    }
    for (const n of [...masters, ...replicas]) {
      const state = /cluster_state:(\w+)/.exec(await cluster.command(n.port, 'CLUSTER', 'INFO'))?.[1];
      if (state !== 'ok') throw new Error(`${n.port}: cluster_state ${state}`);
    }
  }, timeoutMs, 200);
}

/**
 * Waits until the cluster is whole again and every wanted room has its subscribers on the master
 * serving it now (`whole`: false after a kill, when one node stays down), while the traffic goes on, so that what follows is measured on a settled system
 * (a node may learn of a failover up to a slot-map refresh after the cluster itself). Resolves with
 * when (epoch ms), or undefined if that did not happen by `deadline`.
 */
async function settle(want: Record<string, number>, deadline: number, whole = true): Promise<number | undefined> {
  const left = () => Math.max(1000, deadline - Date.now());
  try {
    if (whole) await clusterWhole(left());
  } catch {
    return undefined;
  }
  const seen = await resubscribed(want, left());
  return Object.entries(want).every(([channel, count]) => seen[channel] === count) ? Date.now() : undefined;
}

/**
 * Once the cluster is whole: nodes `<base>-a` and `<base>-b`, and on them `users[0]` and `users[1]`,
 * each a member of two rooms, `faulty` and `other`, served by two different masters; resolves once
 * both nodes are shard-subscribed to both rooms.
 */
async function twoNodesTwoShards(base: string, users: [string, string]) {
  await clusterWhole();
  const prefix = uniquePrefix();
  const nodes = await startBrokerNodes({ REDIS_CLUSTER_NODES: cluster.seeds }, prefix, [`${base}-a`, `${base}-b`]);
  const [a, b] = nodes as [TestNode, TestNode];
  const masters = (await cluster.masters()).map((m) => m.port);
  const [faulty, other] = (await roomsOnMasters(cluster, prefix, base, masters.slice(0, 2))) as [PlacedRoom, PlacedRoom];
  const ca = await member(a, users[0], [faulty.room, other.room], 5000);
  const cb = await member(b, users[1], [faulty.room, other.room], 5000);
  await shardSubscribed(cluster, faulty.channel, 2, 5000);
  await shardSubscribed(cluster, other.channel, 2, 5000);
  return { prefix, nodes, faulty, other, ca, cb };
}

/**
 * How every scenario ends: settled within the bound (`settled` says what that means there), and
 * every wanted room subscribed (count and PUBSUB SHARDCHANNELS) on the master serving it now.
 */
async function expectRoomsHome(prefix: string, want: Record<string, number>, settledAt: number | undefined, settled = 'cluster settled and every room resubscribed'): Promise<void> {
  expect.soft(settledAt, `${settled} within ${RECOVERY_BOUND_MS} ms`).toBeDefined();
  expect.soft(await resubscribed(want, 2000)).toEqual(want);
  expect.soft(await missingOnOwners(Object.keys(want), `${prefix}room:*`), 'wanted rooms not in PUBSUB SHARDCHANNELS of their master').toEqual({});
}

describe('Redis Cluster broker under shard faults', () => {
  it('resumes cross-node delivery after CLUSTER FAILOVER during traffic and resubscribes every room on its current master', { timeout: 45_000 }, async () => {
    const { prefix, nodes, faulty: moving, other: steady, ca, cb } = await twoNodesTwoShards('fo', ['fa', 'fb']);
    const atB = recorder(cb);
    const atA = recorder(ca);
    // Traffic both ways on the room whose master fails over, and on a room of another shard.
    const flows = { moving: flow(ca, moving.room, 'moving'), back: flow(cb, moving.room, 'back'), steady: flow(ca, steady.room, 'steady') };
    await deliveredAfter(atB, 'moving', 0, Date.now() + 3000, 'traffic before the failover');
    const marks = logMarks(nodes);

    const replica = (await cluster.replicas()).find((r) => r.masterPort === moving.master)!;
    const faultAt = Date.now();
    await cluster.failover(replica.port);
    const switchedAt = Date.now();
    const deadline = faultAt + RECOVERY_BOUND_MS;
    const resumedAt = await deliveredAfter(atB, 'moving', switchedAt, deadline, 'A→B delivery to resume').catch(() => undefined);
    const backAt = await deliveredAfter(atA, 'back', switchedAt, deadline, 'B→A delivery to resume').catch(() => undefined);
    // Every room with local members, on whichever master serves it now.
    const want = { [moving.channel]: 2, [steady.channel]: 2, [`${prefix}room:user:fa`]: 1, [`${prefix}room:user:fb`]: 1 };
    const settledAt = await settle(want, deadline);
    const stoppedAt = await stopFlows(flows);

    const report = {
      scenario: 'cluster_failover',
      settled_ms: msAfter(faultAt, settledAt),
      failover_ms: switchedAt - faultAt,
      resumed_a_to_b_ms: msAfter(faultAt, resumedAt),
      resumed_b_to_a_ms: msAfter(faultAt, backAt),
      moving: analyse(flows.moving, atB, faultAt, stoppedAt),
      back: analyse(flows.back, atA, faultAt, stoppedAt),
      steady: analyse(flows.steady, atB, faultAt, stoppedAt),
      ...(await brokerCounters(nodes)),
      broker_events: brokerEvents(nodes, marks, faultAt),
    };
    console.log(JSON.stringify(report));

    expect(await cluster.masterForKey(moving.channel)).toBe(replica.port);
    expect.soft(resumedAt, `A→B delivery on the failed-over shard resumed within ${RECOVERY_BOUND_MS} ms`).toBeDefined();
    expect.soft(backAt, `B→A delivery on the failed-over shard resumed within ${RECOVERY_BOUND_MS} ms`).toBeDefined();
    await expectRoomsHome(prefix, want, settledAt);
    expect.soft(await query(replica.port, ['PUBSUB', 'SHARDCHANNELS', `${prefix}room:*`])).toContain(moving.channel);
    for (const r of [report.moving, report.back, report.steady]) expect.soft(r).toMatchObject({ duplicates: 0, in_order: true });
    // Once delivery is back and the brokers have settled, nothing more is lost.
    expectNoLossAfterRecovery([resumedAt, backAt], lastBrokerChange(nodes, marks), [
      [flows.moving, atB],
      [flows.back, atA],
    ]);
    // Another shard's room is not disturbed by the failover.
    expect.soft(report.steady.lost).toBe(0);
    await stopNodes(nodes);
  });

  it('keeps a room on another shard delivering while one master is frozen (DEBUG SLEEP 3); the frozen shard’s room delivers again after', { timeout: 45_000 }, async () => {
    const { prefix, nodes, faulty: frozen, other: healthy, ca, cb } = await twoNodesTwoShards('fz', ['za', 'zb']);
    const atB = recorder(cb);
    const flows = { frozen: flow(ca, frozen.room, 'frozen'), healthy: flow(ca, healthy.room, 'healthy') };
    await deliveredAfter(atB, 'frozen', 0, Date.now() + 3000, 'traffic before the freeze');
    const marks = logMarks(nodes);

    const faultAt = Date.now();
    // The reply comes when the master wakes: its DEBUG SLEEP ends.
    const wokeAt = await redisCommand(frozen.master, ['DEBUG', 'SLEEP', '3'], 10_000).then(() => Date.now());
    const resumedAt = await deliveredAfter(atB, 'frozen', wokeAt, faultAt + RECOVERY_BOUND_MS, 'delivery on the frozen shard to resume').catch(() => undefined);
    const want = { [frozen.channel]: 2, [healthy.channel]: 2 };
    const settledAt = await settle(want, faultAt + RECOVERY_BOUND_MS);
    const stoppedAt = await stopFlows(flows);

    const duringFreeze = atB.filter((x) => x.tag === 'healthy' && x.sentAt >= faultAt + 200 && x.sentAt <= wokeAt - 200);
    const report = {
      scenario: 'cluster_freeze_3s',
      settled_ms: msAfter(faultAt, settledAt),
      frozen_ms: wokeAt - faultAt,
      frozen_room_resumed_ms: msAfter(faultAt, resumedAt),
      frozen_room: analyse(flows.frozen, atB, faultAt, stoppedAt),
      healthy_room: analyse(flows.healthy, atB, faultAt, stoppedAt),
      healthy_delivered_during_freeze: duringFreeze.length,
      // With a 2 s cluster node timeout the replica may take over while the master sleeps.
      failed_over: (await cluster.masterForKey(frozen.channel)) !== frozen.master,
      ...(await brokerCounters(nodes)),
      broker_events: brokerEvents(nodes, marks, faultAt),
    };
    console.log(JSON.stringify(report));

    // The other shard's room went on as if nothing happened: everything delivered, promptly.
    expect.soft(report.healthy_room).toMatchObject({ lost: 0, duplicates: 0, in_order: true });
    expect.soft(report.healthy_room.max_gap_ms).toBeLessThan(1000);
    expect.soft(duringFreeze.length).toBeGreaterThan(((wokeAt - faultAt - 400) / 50) * 0.8);
    expect.soft(report.frozen_room).toMatchObject({ duplicates: 0, in_order: true });
    expect.soft(resumedAt, `delivery on the frozen shard resumed within ${RECOVERY_BOUND_MS} ms`).toBeDefined();
    expectNoLossAfterRecovery([resumedAt], lastBrokerChange(nodes, marks), [[flows.frozen, atB]]);
    await expectRoomsHome(prefix, want, settledAt);
    await stopNodes(nodes);
  });

  it('notices a frozen shard with the liveness probe (DEBUG SLEEP 5, probe 1 s + 2 s) and recovers every room', { timeout: 60_000 }, async () => {
    const { prefix, nodes, faulty: frozen, other: healthy, ca, cb } = await twoNodesTwoShards('pr', ['pa', 'pb']);
    // Idle links: the probe runs only after a second without traffic.
    await sleep(1500);
    const before = await probeFailures(nodes);
    // The healthy master's connections from both nodes, which a probe failure on the other shard must leave alone.
    const names = nodes.flatMap((n) => [`${prefix}${n.nodeId}:sub`, `${prefix}${n.nodeId}:cmd`]);
    const healthyLinks = async () => (await Promise.all(names.map((name) => connectionIds(healthy.master, name)))).map((ids) => ids.join(','));
    const healthyBefore = await healthyLinks();
    const marks = logMarks(nodes);

    const faultAt = Date.now();
    const woke = redisCommand(frozen.master, ['DEBUG', 'SLEEP', '5'], 15_000).then(() => Date.now());
    const noticedAt = await waitFor('a probe failure on both nodes', async () => {
      const now = await probeFailures(nodes);
      if (now.some((v, i) => v <= before[i]!)) throw new Error(`probe failures ${now.join(', ')}`);
      return Date.now();
    }, 8000, 100).catch(() => undefined);
    // From here on traffic both ways on both rooms; what the healthy room does during the rest of the freeze is reported.
    const atB = recorder(cb);
    const atA = recorder(ca);
    const flows = {
      frozen: flow(ca, frozen.room, 'frozen'),
      frozenBack: flow(cb, frozen.room, 'frozen-back'),
      healthy: flow(ca, healthy.room, 'healthy'),
      healthyBack: flow(cb, healthy.room, 'healthy-back'),
    };
    const wokeAt = await woke;
    const deadline = wokeAt + RECOVERY_BOUND_MS;
    const upAt = await brokersUp(nodes, Math.max(0, deadline - Date.now())).catch(() => undefined);
    const resumed = await Promise.all([
      deliveredAfter(atB, 'frozen', wokeAt, deadline, 'A→B on the frozen shard').catch(() => undefined),
      deliveredAfter(atA, 'frozen-back', wokeAt, deadline, 'B→A on the frozen shard').catch(() => undefined),
      deliveredAfter(atB, 'healthy', wokeAt, deadline, 'A→B on the healthy shard').catch(() => undefined),
      deliveredAfter(atA, 'healthy-back', wokeAt, deadline, 'B→A on the healthy shard').catch(() => undefined),
    ]);
    const want = { [frozen.channel]: 2, [healthy.channel]: 2 };
    const settledAt = await settle(want, deadline);
    const stoppedAt = await stopFlows(flows);

    const since = (t: number | undefined) => msAfter(faultAt, t);
    const report = {
      scenario: 'cluster_freeze_5s_probe',
      settled_ms: since(settledAt),
      frozen_ms: wokeAt - faultAt,
      probe_failure_after_ms: since(noticedAt),
      probe_failures: (await probeFailures(nodes)).map((v, i) => v - before[i]!),
      probe_failed_logs: probeFailedLogs(nodes, marks).map((lines) => lines.length),
      reconnects: await reconnects(nodes),
      publish_errors: await publishErrors(nodes),
      brokers_up_after_ms: since(upAt),
      resumed_ms: { frozen: since(resumed[0]), frozen_back: since(resumed[1]), healthy: since(resumed[2]), healthy_back: since(resumed[3]) },
      healthy_sent_before_wake: flows.healthy.sent.filter((x) => x.at < wokeAt).length,
      healthy_delivered_before_wake: atB.filter((x) => x.tag === 'healthy' && x.at < wokeAt).length,
      healthy: analyse(flows.healthy, atB, noticedAt ?? faultAt, stoppedAt),
      frozen: analyse(flows.frozen, atB, noticedAt ?? faultAt, stoppedAt),
      failed_over: (await cluster.masterForKey(frozen.channel)) !== frozen.master,
      broker_events: brokerEvents(nodes, marks, faultAt),
    };
    console.log(JSON.stringify(report));

    expect.soft(noticedAt, 'a probe failure on both nodes within 8 s').toBeDefined();
    for (const [i, failed] of probeFailedLogs(nodes, marks).entries()) {
      expect.soft(failed, `${nodes[i]!.nodeId}: probe failures logged, for the frozen shard only`).toEqual([expect.objectContaining({ level: 'warn', timeout_s: 2, shard: `127.0.0.1:${frozen.master}` })]);
    }
    // Only the frozen shard's links were rebuilt: the healthy master still has the same connections.
    expect.soft(healthyBefore.every((ids) => ids !== ''), `connections ${names.join(', ')} on the healthy master before the fault`).toBe(true);
    expect.soft(await healthyLinks(), 'connections to the healthy master, rebuilt?').toEqual(healthyBefore);
    // probe interval 1 s + timeout 2 s + a tick and some slack
    if (noticedAt !== undefined) expect.soft(noticedAt - faultAt).toBeLessThan(5000);
    expect.soft(upAt, `both brokers up within ${RECOVERY_BOUND_MS} ms of the wake`).toBeDefined();
    expect.soft(resumed.map((t) => t !== undefined), 'delivery resumed [frozen A→B, frozen B→A, healthy A→B, healthy B→A]').toEqual([true, true, true, true]);
    // A failing shard affects only its rooms: the healthy room keeps delivering while the other shard sleeps.
    const whileAsleep = flows.healthy.sent.filter((x) => x.at < wokeAt - 300).map((x) => x.seq);
    const gotHealthy = new Set(atB.filter((x) => x.tag === 'healthy').map((x) => x.seq));
    expect.soft(whileAsleep.filter((seq) => !gotHealthy.has(seq)), 'healthy-shard messages sent during the freeze that never arrived').toEqual([]);
    await expectRoomsHome(prefix, want, settledAt);
    const recovered = Math.max(...resumed.map((t) => t ?? Date.now()), upAt ?? Date.now(), lastBrokerChange(nodes, marks));
    expectAllSince(flows.frozen, atB, recovered);
    expectAllSince(flows.frozenBack, atA, recovered);
    expectAllSince(flows.healthy, atB, recovered);
    expectAllSince(flows.healthyBack, atA, recovered);
    await stopNodes(nodes);
  });

  it('starts a new epoch for a sequenced room whose master fails over: room_reset to its members, recovered: false for the old epoch, positions after', { timeout: 45_000 }, async () => {
    await clusterWhole();
    const prefix = uniquePrefix();
    const nodes = await startBrokerNodes({ REDIS_CLUSTER_NODES: cluster.seeds }, prefix, ['sq-a', 'sq-b'], { WS_HISTORY_ROOMS: 'channel:*' });
    const [a, b] = nodes as [TestNode, TestNode];
    const [placed] = (await roomsOnMasters(cluster, prefix, 'sq', [(await cluster.masters())[0]!.port])) as [PlacedRoom];
    const { room } = placed;
    const ca = await member(a, 'sqa', [room], 5000);
    const cb = await member(b, 'sqb', [room], 5000);
    await shardSubscribed(cluster, placed.channel, 2, 5000);
    const events = (c: typeof ca) => c.received.filter((e) => e.type === 'message.new' && e.room === room);
    for (let n = 1; n <= 5; n++) ca.send({ type: 'send_message', room, data: { n } });
    await waitFor('5 events at B', () => events(cb).length === 5, 5000);
    const before = events(cb).at(-1)!;
    expect(events(cb).map((e) => e.offset)).toEqual([1, 2, 3, 4, 5]);

    const replica = (await cluster.replicas()).find((r) => r.masterPort === placed.master)!;
    await cluster.failover(replica.port);
    // The promoted replica may lack acknowledged writes: its streams start a new epoch, and the members are told.
    const resets = await Promise.all([ca, cb].map((c) => c.next((e) => e.type === 'room_reset' && e.room === room, RECOVERY_BOUND_MS)));
    for (const reset of resets) expect(reset).toMatchObject({ offset: 0, epoch: expect.not.stringMatching(`^${before.epoch}$`) });
    ca.send({ type: 'send_message', room, data: { n: 6 }, id: 'after' });
    const sent = await ca.next((e) => e.id === 'after', 5000);
    expect(sent).toMatchObject({ type: 'message_sent', epoch: resets[0]!.epoch, offset: 1 });
    await waitFor('the event after the failover at B', () => events(cb).length === 6, 5000);
    expect(events(cb).at(-1)).toMatchObject({ data: { n: 6 }, epoch: resets[0]!.epoch, offset: 1 });
    // A client holding the old epoch is never told recovered.
    const late = await member(b, 'sqc', [], 5000);
    late.send({ type: 'join_room', room, since: { epoch: before.epoch, offset: before.offset }, id: 'late' });
    expect(await late.next((e) => e.id === 'late', 5000)).toMatchObject({ type: 'room_joined', recovered: false, epoch: resets[0]!.epoch, offset: 1 });
    console.log(JSON.stringify({ scenario: 'cluster_failover_sequenced', old_epoch: before.epoch, new_epoch: resets[0]!.epoch, resets: resets.length, recovered_for_old_epoch: false }));
    await stopNodes(nodes);
  });

  it('resumes delivery after a master is killed with -9 and its replica promoted', { timeout: 60_000 }, async () => {
    const { prefix, nodes, faulty: doomed, other: steady, ca, cb } = await twoNodesTwoShards('kl', ['ka', 'kb']);
    const atB = recorder(cb);
    const atA = recorder(ca);
    const flows = { doomed: flow(ca, doomed.room, 'doomed'), back: flow(cb, doomed.room, 'back'), steady: flow(ca, steady.room, 'steady') };
    await deliveredAfter(atB, 'doomed', 0, Date.now() + 3000, 'traffic before the kill');
    const marks = logMarks(nodes);

    const faultAt = Date.now();
    await cluster.kill(doomed.master);
    const promoted = await cluster.waitForPromotion(doomed.master);
    const promotedAt = Date.now();
    const deadline = faultAt + RECOVERY_BOUND_MS;
    const resumedAt = await deliveredAfter(atB, 'doomed', promotedAt, deadline, 'A→B delivery to resume').catch(() => undefined);
    const backAt = await deliveredAfter(atA, 'back', promotedAt, deadline, 'B→A delivery to resume').catch(() => undefined);
    const want = { [doomed.channel]: 2, [steady.channel]: 2, [`${prefix}room:user:ka`]: 1, [`${prefix}room:user:kb`]: 1 };
    const settledAt = await settle(want, deadline, false);
    const stoppedAt = await stopFlows(flows);

    const report = {
      scenario: 'cluster_kill_master',
      settled_ms: msAfter(faultAt, settledAt),
      promoted_ms: promotedAt - faultAt,
      resumed_a_to_b_ms: msAfter(faultAt, resumedAt),
      resumed_b_to_a_ms: msAfter(faultAt, backAt),
      doomed: analyse(flows.doomed, atB, faultAt, stoppedAt),
      back: analyse(flows.back, atA, faultAt, stoppedAt),
      steady: analyse(flows.steady, atB, faultAt, stoppedAt),
      ...(await brokerCounters(nodes)),
      broker_events: brokerEvents(nodes, marks, faultAt),
    };
    console.log(JSON.stringify(report));

    expect(await cluster.masterForKey(doomed.channel)).toBe(promoted.port);
    expect.soft(resumedAt, `A→B delivery on the killed shard resumed within ${RECOVERY_BOUND_MS} ms`).toBeDefined();
    expect.soft(backAt, `B→A delivery on the killed shard resumed within ${RECOVERY_BOUND_MS} ms`).toBeDefined();
    await expectRoomsHome(prefix, want, settledAt, 'every room resubscribed on its master');
    expect.soft(await query(promoted.port, ['PUBSUB', 'SHARDCHANNELS', `${prefix}room:*`])).toContain(doomed.channel);
    // At-most-once, but what arrives keeps publish order, and never twice.
    for (const r of [report.doomed, report.back, report.steady]) expect.soft(r).toMatchObject({ duplicates: 0, in_order: true, reordered: [] });
    expectNoLossAfterRecovery([resumedAt, backAt], lastBrokerChange(nodes, marks), [
      [flows.doomed, atB],
      [flows.back, atA],
    ]);
    // A failing shard affects only its rooms.
    expect.soft(report.steady.lost).toBe(0);
    await stopNodes(nodes);
  });
});
