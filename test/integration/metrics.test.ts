/**
 * /metrics on the internal port after known traffic: every metric of the contract is there, the
 * values match what was driven, and label values come from fixed vocabularies.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join, open, token, type TestClient } from '../helpers/client.js';
import { sampleValue, startTestNode, stopAllNodes, type TestNode } from '../helpers/node.js';
import { waitFor } from '../helpers/wait.js';

afterAll(stopAllNodes);

const CONTRACT_METRICS: Array<[string, 'gauge' | 'counter']> = [
  ['wsedge_connections', 'gauge'],
  ['wsedge_connections_opened_total', 'counter'],
  ['wsedge_connections_closed_total', 'counter'],
  ['wsedge_auth_failures_total', 'counter'],
  ['wsedge_messages_received_total', 'counter'],
  ['wsedge_messages_published_total', 'counter'],
  ['wsedge_rooms', 'gauge'],
  ['wsedge_rate_limited_total', 'counter'],
  ['wsedge_backpressure_drops_total', 'counter'],
  ['wsedge_message_too_big_total', 'counter'],
  ['wsedge_jwt_keys', 'gauge'],
  ['wsedge_jwt_key_fetches_total', 'counter'],
  ['wsedge_jwt_key_set_age_seconds', 'gauge'],
  ['wsedge_revocations_total', 'counter'],
  ['wsedge_revocations', 'gauge'],
  ['wsedge_revoked_closes_total', 'counter'],
];

/** Every label value a ws-edge metric may carry, by label name. */
const VOCABULARY: Record<string, string[]> = {
  code: [
    '1000', '1001', '1005', '1006', '1008', '1009', '1011', '1012', '4401', '4403', '4429', '4500', 'other',
    'invalid_json', 'invalid_message', 'unknown_type', 'binary_not_supported', 'invalid_room', 'forbidden',
    'not_joined', 'too_many_rooms', 'rate_limited', 'internal_error',
  ],
  reason: [
    'token_missing', 'token_ambiguous', 'token_invalid', 'token_expired', 'subprotocol', 'origin', 'user_limit', 'internal',
    'max_connections', 'draining', 'invalid_messages', 'flooding',
  ],
  type: ['join_room', 'leave_room', 'send_message', 'ping', 'refresh_token', 'invalid'],
  // wsedge_messages_published_total, and the policy step of wsedge_room_authorizations_total.
  source: ['client', 'server', 'membership', 'api', 'stream', 'outbox', 'personal', 'open', 'claim', 'grant', 'callback'],
  result: ['allow', 'deny', 'error', 'hit', 'miss'],
  kind: ['limit', 'ceiling'],
  // wsedge_membership_announcements_total and wsedge_ingest_entries_total.
  outcome: ['announced', 'full', 'unavailable', 'published', 'retried', 'dead'],
  // Bucket bounds of wsedge_cross_node_latency_seconds and wsedge_webhook_lag_seconds.
  le: ['0.0005', '0.001', '0.0025', '0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2', '2.5', '5', '10', '30', '60', '300', '+Inf'],
};

describe('metrics after known traffic', () => {
  let node: TestNode;
  let text: string;
  let contentType: string | null;
  const connectionIds: string[] = [];

  const connectAs = async (user: string): Promise<TestClient> => {
    const client = open(node.url, token(user));
    const hello = await client.next((e) => e.type === 'connected');
    connectionIds.push(hello.data.connection_id as string);
    return client;
  };

  beforeAll(async () => {
    node = await startTestNode({ WS_MESSAGE_MAX_SIZE: '4096', WS_RATE_LIMIT: '1', WS_RATE_BURST: '10' });

    // alice and bob share a room: 2 joins (2 membership events), 2 messages, 1 ping, 2 invalid frames.
    const alice = await connectAs('alice');
    const bob = await connectAs('bob');
    await join(alice, 'project:1');
    await join(bob, 'project:1');
    alice.send({ type: 'send_message', room: 'project:1', data: { n: 1 } });
    alice.send({ type: 'send_message', room: 'project:1', data: { n: 2 } });
    alice.send({ type: 'ping', id: 'p' });
    await alice.next((e) => e.id === 'p');
    alice.send('not json');
    alice.send({ type: 'bogus' });
    await alice.next((e) => e.type === 'error' && e.data.code === 'unknown_type');

    // Server-side publishing: 1 + 2 (a task event goes to its project and its task room).
    node.events.publish('project:1', 'project.updated', { name: 'x' });
    node.events.taskCreated({ projectId: 1, taskId: 7, task: { title: 't' } });
    await bob.next((e) => e.type === 'project.updated');
    await bob.next((e) => e.type === 'task.created');
    for (const n of [1, 2]) await bob.next((e) => e.type === 'message.new' && e.data.n === n);

    // A flood: a burst of 13 pings with a bucket of 10 gives 10 pongs and 3 rate-limited frames.
    const flooder = await connectAs('spammer');
    for (let i = 0; i < 13; i++) flooder.send({ type: 'ping', id: `f${i}` });
    for (let i = 0; i < 13; i++) await flooder.next((e) => e.type === 'pong' || e.type === 'error');

    // One byte over the cap: 1009.
    const big = await connectAs('big');
    const base = JSON.stringify({ type: 'ping', pad: '' }).length;
    big.send(JSON.stringify({ type: 'ping', pad: 'x'.repeat(4097 - base) }));
    expect((await big.closed).code).toBe(1009);

    // A client-chosen close code outside the known set, and a normal close.
    const carol = await connectAs('carol');
    carol.ws.close(4999, 'custom');
    await carol.closed;
    const dave = await connectAs('dave');
    dave.ws.close(1000, 'bye');
    await dave.closed;

    // Two refused upgrades.
    expect((await open(node.url, undefined).closed).code).toBe(4401);
    expect((await open(node.url, 'not-a-jwt').closed).code).toBe(4401);

    await waitFor('3 connections on the node', () => node.connections() === 3, 3000);
    expect(node.connections()).toBe(3);
    const res = await fetch(`${node.internal}/metrics`);
    expect(res.status).toBe(200);
    contentType = res.headers.get('content-type');
    text = await res.text();
  });

  const value = (name: string, labels: Record<string, string> = {}) => sampleValue(text, name, labels);
  /** The ws-edge sample lines (not HELP/TYPE, not process metrics whose values are arbitrary numbers). */
  const wsedgeSamples = () => text.split('\n').filter((l) => l.startsWith('wsedge_')).join('\n');

  it('serves Prometheus text format', () => {
    expect(contentType).toBe('text/plain; version=0.0.4; charset=utf-8');
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
      expect(line).toMatch(/^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? \S+$/);
    }
  });

  it.each(CONTRACT_METRICS)('declares %s as a %s with help text', (name, type) => {
    expect(text).toContain(`# TYPE ${name} ${type}\n`);
    expect(text).toMatch(new RegExp(`^# HELP ${name} \\S.*$`, 'm'));
  });

  it('includes process metrics and event-loop lag', () => {
    for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds']) {
      expect(text).toMatch(new RegExp(`^${name} \\d`, 'm'));
    }
    expect(value('process_resident_memory_bytes')).toBeGreaterThan(1024 * 1024);
    expect(value('process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(value('nodejs_eventloop_lag_seconds')).toBeGreaterThanOrEqual(0);
  });

  it('counts connections opened, open and closed by code', () => {
    expect(value('wsedge_connections')).toBe(3);
    expect(value('wsedge_connections_opened_total')).toBe(6);
    expect(value('wsedge_connections_closed_total', { code: '1009' })).toBe(1);
    expect(value('wsedge_connections_closed_total', { code: '1000' })).toBe(1);
    // 4999 is client-chosen: folded into "other", so the label set stays bounded.
    expect(value('wsedge_connections_closed_total', { code: 'other' })).toBe(1);
    expect(wsedgeSamples()).not.toContain('4999');
  });

  it('counts refused upgrades by reason', () => {
    expect(value('wsedge_auth_failures_total', { reason: 'token_missing' })).toBe(1);
    expect(value('wsedge_auth_failures_total', { reason: 'token_invalid' })).toBe(1);
    expect(value('wsedge_auth_failures_total', { reason: 'token_expired' })).toBe(0);
  });

  it('counts received messages by type, with unknown types as "invalid"', () => {
    expect(value('wsedge_messages_received_total', { type: 'join_room' })).toBe(2);
    expect(value('wsedge_messages_received_total', { type: 'send_message' })).toBe(2);
    expect(value('wsedge_messages_received_total', { type: 'ping' })).toBe(11);
    expect(value('wsedge_messages_received_total', { type: 'invalid' })).toBe(2);
    expect(wsedgeSamples()).not.toContain('bogus');
  });

  it('counts published events by source', () => {
    expect(value('wsedge_messages_published_total', { source: 'client' })).toBe(2);
    expect(value('wsedge_messages_published_total', { source: 'server' })).toBe(3);
    expect(value('wsedge_messages_published_total', { source: 'membership' })).toBe(2);
  });

  it('counts rooms, rate-limited frames, backpressure drops and oversized frames', () => {
    // user:alice, user:bob, user:spammer and project:1.
    expect(value('wsedge_rooms')).toBe(4);
    expect(value('wsedge_rate_limited_total')).toBe(3);
    expect(value('wsedge_backpressure_drops_total')).toBe(0);
    expect(value('wsedge_message_too_big_total', { kind: 'limit' })).toBe(1);
    expect(value('wsedge_message_too_big_total', { kind: 'ceiling' })).toBe(0);
  });

  it('never uses a room, user or connection id as a label value', () => {
    const seen = new Map<string, Set<string>>();
    for (const line of text.split('\n')) {
      if (!line.startsWith('wsedge_')) continue;
      for (const [, label, v] of line.matchAll(/([a-zA-Z_]+)="([^"]*)"/g)) {
        if (!seen.has(label!)) seen.set(label!, new Set());
        seen.get(label!)!.add(v!);
      }
    }
    expect([...seen.keys()].sort()).toEqual(['code', 'kind', 'le', 'outcome', 'reason', 'result', 'source', 'type']);
    for (const [label, values] of seen) {
      for (const v of values) expect(VOCABULARY[label]).toContain(v);
    }
    expect(connectionIds).toHaveLength(6);
    const labelled = text.split('\n').filter((l) => l.includes('{')).join('\n');
    for (const forbidden of ['alice', 'bob', 'spammer', 'carol', 'dave', 'project:1', 'task:7', 'user:', ...connectionIds]) {
      expect(labelled).not.toContain(forbidden);
    }
  });

  it('is served on the internal port only', async () => {
    const res = await fetch(`${node.http}/metrics`);
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ code: 'not_found', message: 'no such path', error: 'not_found', reason: 'no such path' });
  });
});
