/**
 * A real Prometheus (Debian's `prometheus`) scrapes two running nodes joined by Redis; after some
 * traffic the series come back through Prometheus' HTTP API: the connections gauge, the message
 * counters, and a quantile of the cross-node latency histogram.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { waitSubscribed } from '../helpers/broker-checks.js';
import { connect, join as joinRoom } from '../helpers/client.js';
import { startTestNode, stopAllNodes } from '../helpers/node.js';
import { freePort } from '../helpers/ports.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

let prometheus: ChildProcess | undefined;
const dir = mkdtempSync(join(tmpdir(), 'wsedge-prometheus-'));

afterAll(async () => {
  prometheus?.kill('SIGKILL');
  await stopAllNodes();
  await stopAllRedis();
  rmSync(dir, { recursive: true, force: true });
});

function requirePrometheus(): void {
  const found = spawnSync('prometheus', ['--version']);
  if (found.error) throw new Error('prometheus not found: install it (apt-get install prometheus); .ci/run does this');
}

async function query(base: string, promql: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> {
  const res = await fetch(`${base}/api/v1/query?query=${encodeURIComponent(promql)}`);
  const body = (await res.json()) as { status: string; data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> } };
  expect(body.status).toBe('success');
  return body.data.result;
}

/** Polls a PromQL query until `accept` holds for its result (Prometheus scrapes every second). */
function eventually<T>(read: () => Promise<T>, accept: (value: T) => boolean, timeoutMs = 20_000): Promise<T> {
  return waitFor('a PromQL result', async () => {
    const value = await read();
    if (!accept(value)) throw new Error(JSON.stringify(value));
    return value;
  }, timeoutMs, 500);
}

describe('Prometheus scraping ws-edge', () => {
  it('reads the connections gauge, message counters and a latency quantile back through its API', async () => {
    requirePrometheus();
    const redis = await startRedis();
    const prefix = uniquePrefix();
    const env = { REDIS_URL: redis.url, REDIS_PREFIX: prefix };
    const a = await startTestNode(env);
    const b = await startTestNode(env);
    const port = await freePort();
    const config = join(dir, 'prometheus.yml');
    writeFileSync(
      config,
      [
        'global:',
        '  scrape_interval: 1s',
        'scrape_configs:',
        '  - job_name: ws-edge',
        '    static_configs:',
        `      - targets: ['127.0.0.1:${a.internalPort}', '127.0.0.1:${b.internalPort}']`,
        '',
      ].join('\n'),
    );
    prometheus = spawn(
      'prometheus',
      [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
      { stdio: 'ignore' },
    );
    const base = `http://127.0.0.1:${port}`;
    await eventually(
      () => fetch(`${base}/-/ready`).then((r) => r.status, () => 0),
      (status) => status === 200,
    );

    const alice = await connect(a.url, 'alice');
    const bob = await connect(b.url, 'bob');
    const carol = await connect(b.url, 'carol');
    for (const c of [alice, bob, carol]) await joinRoom(c, 'project:1');
    await waitSubscribed(redis.port, `${prefix}room:project:1`, 2); // cross-node delivery starts once Redis confirms
    for (let i = 0; i < 10; i++) alice.send({ type: 'send_message', room: 'project:1', data: { i } });
    for (let i = 0; i < 10; i++) await bob.next((e) => e.type === 'message.new' && e.data.i === i);

    const up = await eventually(() => query(base, 'up{job="ws-edge"}'), (r) => r.length === 2 && r.every((s) => s.value[1] === '1'));
    expect(up).toHaveLength(2);
    const connections = await eventually(() => query(base, 'sum(wsedge_connections)'), (r) => r[0]?.value[1] === '3');
    expect(connections[0]!.value[1]).toBe('3');
    const received = await eventually(
      () => query(base, 'sum(wsedge_messages_received_total{type="send_message"})'),
      (r) => r[0]?.value[1] === '10',
    );
    expect(received[0]!.value[1]).toBe('10');
    const published = await eventually(() => query(base, 'sum by (source) (wsedge_messages_published_total)'), (r) =>
      r.some((s) => s.metric['source'] === 'client' && s.value[1] === '10'),
    );
    expect(published.find((s) => s.metric['source'] === 'client')!.value[1]).toBe('10');
    const p99 = await eventually(
      () => query(base, 'histogram_quantile(0.99, sum by (le) (wsedge_cross_node_latency_seconds_bucket))'),
      (r) => r.length === 1 && Number.isFinite(Number(r[0]!.value[1])),
    );
    const seconds = Number(p99[0]!.value[1]);
    expect(seconds).toBeGreaterThan(0);
    expect(seconds).toBeLessThanOrEqual(2.5);
  }, 60_000);
});
