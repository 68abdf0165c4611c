/** Starts a real ws-edge node in this process on random ports, with a silent logger. */
import { Writable } from 'node:stream';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { startNode, type EdgeNode, type NodeOptions } from '../../src/server.js';

export const TEST_SECRET = 'test-secret-that-is-long-enough-for-hs256-0123456789';

export interface TestNode extends EdgeNode {
  readonly url: string;
  readonly http: string;
  readonly internal: string;
  /** JSON log lines the node wrote (debug and above). */
  readonly logs: Array<Record<string, unknown>>;
  metricsText(): Promise<string>;
  /** Value of one sample, e.g. metric('wsedge_connections') or metric('wsedge_auth_failures_total', { reason: 'origin' }). */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
}

const running = new Set<TestNode>();

export async function startTestNode(env: Record<string, string> = {}, options: NodeOptions = {}): Promise<TestNode> {
  const config = loadConfig({
    JWT_SECRET: TEST_SECRET,
    HOST: '127.0.0.1',
    PORT: '0',
    INTERNAL_HOST: '127.0.0.1',
    INTERNAL_PORT: '0',
    LOG_LEVEL: 'debug',
    WS_DRAIN_TIMEOUT: '2',
    ...env,
  });
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const node = await startNode(config, createLogger(config.logLevel, { node_id: config.nodeId }, sink), options);
  const internal = `http://127.0.0.1:${node.internalPort}`;
  const metricsText = async () => (await fetch(`${internal}/metrics`)).text();
  const testNode: TestNode = Object.assign(Object.create(null) as object, node, {
    url: `ws://127.0.0.1:${node.port}/api/v1/ws/connect`,
    http: `http://127.0.0.1:${node.port}`,
    internal,
    logs,
    metricsText,
    async metric(name: string, labels: Record<string, string> = {}) {
      return sampleValue(await metricsText(), name, labels);
    },
  }) as TestNode;
  running.add(testNode);
  return testNode;
}

export async function stopTestNode(node: TestNode): Promise<void> {
  running.delete(node);
  await node.shutdown();
}

export async function stopAllNodes(): Promise<void> {
  await Promise.all([...running].map(stopTestNode));
}

/** Reads one sample from Prometheus text format; 0 when the series does not exist yet. */
export function sampleValue(text: string, name: string, labels: Record<string, string> = {}): number {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const present = (match[2] ?? '').split(',');
    if (wanted.every((w) => present.includes(w))) return Number(match[3]);
  }
  return 0;
}
