/**
 * The deploy package (Dockerfile, deploy/) checked with the real tools: promtool on the alert rules,
 * their unit tests, the compose Prometheus config and a live /metrics scrape; a YAML parser on every
 * file under deploy/; the dashboard and the alerts against the metric names a live node (Redis
 * broker, some traffic) really exports; HAProxy on its compose environment; the container health
 * checks run against a live node; and the Dockerfile, compose file and Kubernetes manifests against
 * the repository and each other. A missing tool fails the run: promtool comes from Debian's
 * `prometheus`, PyYAML from `python3-yaml`, plus `redis-server` and `haproxy`.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { connect, join as joinRoom, type TestClient } from '../helpers/client.js';
import { sampleValue, startTestNode, stopAllNodes, type TestNode } from '../helpers/node.js';
import { freePort } from '../helpers/ports.js';
import { startRedis, stopAllRedis, uniquePrefix, type RedisServer } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const at = (...parts: string[]) => resolve(ROOT, ...parts);
const read = (path: string) => readFileSync(at(path), 'utf8');

const RUNBOOK = 'https://github.com/example/ws-edge/blob/main/docs/RUNBOOK.md';
/** The scrape job the alerts and the dashboard select (compose job_name, ServiceMonitor jobLabel). */
const JOB = 'ws-edge';
const API_KEY = 'deploy-suite-publish-api-key-0123456789abcdef';
const SECRET = 'deploy-suite-jwt-secret-0123456789abcdef-0123456789';

/**
 * What `promtool check metrics` (2.42, Debian 12) says about prom-client's default metrics: these
 * three gauges end in _total. They come from collectDefaultMetrics, not from ws-edge's own metrics;
 * anything else it reports fails the test.
 */
afterAll(async () => {
  await stopAllNodes();
  await stopAllRedis();
});

// ---------------------------------------------------------------------------------------------
// Tools

const INSTALL_HINTS: Record<string, string> = {
  promtool: 'install the Debian package prometheus (apt-get install prometheus), which ships /usr/bin/promtool',
  haproxy: 'install the Debian package haproxy (it lives in /usr/sbin)',
  python3: 'install the Debian packages python3 and python3-yaml',
};

interface Ran {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a tool to completion; rejects (never skips) when it is not installed. */
function run(command: string, args: readonly string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<Ran> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, {
      cwd: ROOT,
      env: { ...process.env, PATH: `${process.env['PATH'] ?? ''}:/usr/sbin:/sbin`, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.once('error', (err: NodeJS.ErrnoException) => {
      const tool = command.split('/').pop()!;
      reject(err.code === 'ENOENT' ? new Error(`${command} not found: ${INSTALL_HINTS[tool] ?? 'install it'}; .ci/run does this`) : err);
    });
    child.once('close', (code) => resolvePromise({ code, stdout, stderr }));
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

/** PATH's python3 may be a pyenv build without PyYAML; Debian's python3-yaml is /usr/bin/python3's. */
async function pythonWithYaml(): Promise<string> {
  const tried: string[] = [];
  for (const python of ['python3', '/usr/bin/python3']) {
    const result = await run(python, ['-c', 'import yaml']).catch((err: Error) => ({ code: -1, stdout: '', stderr: err.message }));
    if (result.code === 0) return python;
    tried.push(`${python}: ${result.stderr.trim().split('\n').pop()}`);
  }
  throw new Error(`no python3 with PyYAML (${tried.join('; ')}): ${INSTALL_HINTS['python3']}; .ci/run does this`);
}

/**
 * Parses every file with PyYAML's safe loader (all documents), refusing duplicate keys, which
 * YAML allows and Kubernetes and compose would silently resolve to the last one. Merge keys (<<)
 * are fine. Prints {path: documents} or {path: {"error": message}} as JSON.
 */
const YAML_TO_JSON = `
import json, sys, yaml
class Strict(yaml.SafeLoader):
    pass
def mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == 'tag:yaml.org,2002:merge':
            continue
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, 'duplicate key %r' % (key,), key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)
Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
out = {}
for path in sys.argv[1:]:
    try:
        with open(path, encoding='utf-8') as f:
            out[path] = list(yaml.load_all(f, Loader=Strict))
    except Exception as err:
        out[path] = {'error': str(err)}
json.dump(out, sys.stdout, default=str)
`;

type Doc = Record<string, any>;

/** Files under deploy/ with the given extensions, as repository-relative paths. */
function filesUnder(dir: string, extensions: readonly string[]): string[] {
  const found: string[] = [];
  const walk = (path: string): void => {
    for (const entry of readdirSync(at(path), { withFileTypes: true })) {
      const child = `${path}/${entry.name}`;
      if (entry.isDirectory()) walk(child);
      else if (extensions.some((ext) => entry.name.endsWith(ext))) found.push(child);
    }
  };
  walk(dir);
  return found.sort();
}

// ---------------------------------------------------------------------------------------------
// PromQL

/** PromQL functions, aggregations and keywords: identifiers that are not metric names. */
const PROMQL_WORDS = new Set(['and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', 'inf', 'nan', 'start', 'end']);

/**
 * Metric names a PromQL expression selects: strings, label matchers, ranges, grouping clauses and
 * Grafana variables removed, then every identifier that is not a function call or a keyword.
 */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\$\{[^}]*\}|\$\w+/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\boffset\s+-?\w+/g, ' ')
    .replace(/#[^\n]*/g, ' ');
  const names = new Set<string>();
  for (const m of stripped.matchAll(/\d[\w.]*(?:[eE][+-]?\d+)?|([A-Za-z_:][\w:]*)(\s*\()?/g)) {
    const [, name, call] = m;
    if (name === undefined || call !== undefined || PROMQL_WORDS.has(name.toLowerCase())) continue;
    names.add(name);
  }
  return [...names];
}

/** Grafana's label_values(selector, label): only the selector is PromQL. */
function templateQueryExpr(query: unknown): string | undefined {
  const text = typeof query === 'string' ? query : (query as { query?: string } | undefined)?.query;
  if (text === undefined || text === '') return undefined;
  const labelValues = /^\s*label_values\((.*),\s*\w+\s*\)\s*$/.exec(text);
  return labelValues ? labelValues[1]! : text;
}

interface Scrape {
  /** Series names a Prometheus scrape of it creates (histogram suffixes included), plus `up`. */
  readonly series: Set<string>;
  /** Metric families by # TYPE. */
  readonly families: Map<string, string>;
}

function parseScrape(texts: readonly string[]): Scrape {
  const series = new Set<string>(['up']);
  const families = new Map<string, string>();
  for (const text of texts) {
    for (const line of text.split('\n')) {
      const type = /^# TYPE (\S+) (\S+)$/.exec(line);
      if (type) {
        const name = type[1]!;
        const kind = type[2]!;
        families.set(name, kind);
        if (kind === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) series.add(name + suffix);
        else if (kind === 'summary') for (const suffix of ['', '_sum', '_count']) series.add(name + suffix);
        else series.add(name);
        continue;
      }
      const sample = /^([A-Za-z_:][\w:]*)[{ ]/.exec(line);
      if (sample) series.add(sample[1]!);
    }
  }
  return { series, families };
}

/** Every PromQL expression of the dashboard: panel targets (rows included) and template queries. */
function dashboardExprs(dashboard: Doc): Array<{ where: string; expr: string }> {
  const found: Array<{ where: string; expr: string }> = [];
  const walk = (value: unknown, where: string): void => {
    if (Array.isArray(value)) return value.forEach((v) => walk(v, where));
    if (typeof value !== 'object' || value === null) return;
    const obj = value as Doc;
    const here = typeof obj['title'] === 'string' ? `panel "${obj['title']}"` : where;
    if (typeof obj['expr'] === 'string') found.push({ where: here, expr: obj['expr'] });
    for (const [key, child] of Object.entries(obj)) if (key !== 'templating') walk(child, here);
  };
  walk(dashboard['panels'], 'dashboard');
  for (const variable of (dashboard['templating']?.['list'] ?? []) as Doc[]) {
    if (variable['type'] !== 'query') continue;
    const expr = templateQueryExpr(variable['query']);
    if (expr !== undefined) found.push({ where: `variable $${variable['name']}`, expr });
  }
  return found;
}

function alertRules(alerts: Doc): Doc[] {
  return (alerts['groups'] as Doc[]).flatMap((g) => g['rules'] as Doc[]);
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

interface Instruction {
  readonly op: string;
  readonly args: string;
}

/** Instructions per stage, continuation lines joined, comments dropped. */
function dockerStages(text: string): Instruction[][] {
  const stages: Instruction[][] = [];
  const logical = text.replace(/\\\r?\n/g, ' ').split('\n');
  for (const line of logical) {
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m || line.trimStart().startsWith('#')) continue;
    const op = m[1]!.toUpperCase();
    if (op === 'FROM') stages.push([]);
    stages.at(-1)?.push({ op, args: m[2]!.trim() });
  }
  return stages;
}

/** The exec-form JSON array after CMD (in CMD or HEALTHCHECK ... CMD [...]). */
function execForm(args: string): string[] {
  const json = /CMD\s+(\[.*\])\s*$/.exec(args)?.[1] ?? args;
  return JSON.parse(json) as string[];
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the compose and k8s checks

function seconds(duration: string | number): number {
  if (typeof duration === 'number') return duration;
  let total = 0;
  for (const m of duration.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) total += Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] as 'ms' | 's' | 'm' | 'h'];
  return total;
}

/** The variables src/config.ts reads: r.int('NAME', ...), r.optional('NAME') and so on. */
function configVariables(): Set<string> {
  return new Set([...read('src/config.ts').matchAll(/r\.(?:str|optional|int|bool|oneOf|list)(?:<[^>]+>)?\('([A-Z0-9_]+)'/g)].map((m) => m[1]!));
}

function configProblems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
}

const matches = (selector: Record<string, string>, labels: Record<string, string>) => Object.entries(selector).every(([k, v]) => labels[k] === v);


// ---------------------------------------------------------------------------------------------
// Shared fixtures: every YAML file parsed once, two live nodes on one Redis with some traffic.

let yamlFiles: string[];
let parsed: Record<string, Doc[] | { error: string }>;
const docs = (path: string): Doc[] => {
  const entry = parsed[path];
  if (entry === undefined) throw new Error(`${path} was not parsed`);
  if (!Array.isArray(entry)) throw new Error(`${path}: ${entry.error}`);
  return entry;
};
const doc = (path: string): Doc => docs(path)[0]!;

let redis: RedisServer;
let nodeA: TestNode;
let nodeB: TestNode;
let scrapeA: string;
let scrapeB: string;
let scrape: Scrape;

beforeAll(async () => {
  yamlFiles = filesUnder('deploy', ['.yml', '.yaml']);
  const python = await pythonWithYaml();
  const result = await run(python, ['-c', YAML_TO_JSON, ...yamlFiles]);
  if (result.code !== 0) throw new Error(`YAML parser failed: ${result.stderr}`);
  parsed = JSON.parse(result.stdout) as typeof parsed;

  // Two nodes on one Redis so the broker metrics exist and the cross-node histogram gets samples.
  redis = await startRedis();
  const env = { REDIS_URL: redis.url, REDIS_PREFIX: uniquePrefix(), PUBLISH_API_KEY: API_KEY };
  nodeA = await startTestNode({ ...env, NODE_ID: 'deploy-a' });
  nodeB = await startTestNode({ ...env, NODE_ID: 'deploy-b' });

  const clients: TestClient[] = [];
  const alice = await connect(nodeA.url, 'alice');
  const bob = await connect(nodeB.url, 'bob');
  clients.push(alice, bob);
  await joinRoom(alice, 'project:1');
  await joinRoom(bob, 'project:1');
  await waitFor('both nodes subscribed to project:1', async () => {
    const reply = await redis.command('PUBSUB', 'NUMSUB', `${env.REDIS_PREFIX}room:project:1`);
    return /:2\r\n$/.test(reply);
  });
  alice.send({ type: 'send_message', room: 'project:1', data: { text: 'hello' } });
  await bob.next((e) => e.type === 'message.new' && e.data?.text === 'hello');
  alice.send({ type: 'ping', id: 'p1' });
  await alice.next((e) => e.id === 'p1');
  alice.send('not json');
  await alice.next((e) => e.type === 'error');
  const publish = (key: string) =>
    fetch(`${nodeA.internal}/api/v1/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ room: 'project:1', type: 'project.updated', data: { n: 1 } }),
    });
  expect((await publish(API_KEY)).status).toBe(200);
  expect((await publish('wrong-key')).status).toBe(401);
  await bob.next((e) => e.type === 'project.updated');

  scrapeA = await nodeA.metricsText();
  scrapeB = await nodeB.metricsText();
  scrape = parseScrape([scrapeA, scrapeB]);
  for (const client of clients) client.close();
});

// ---------------------------------------------------------------------------------------------

describe('YAML under deploy/', () => {
  it('finds the files of every part', () => {
    for (const path of ['deploy/compose/docker-compose.yml', 'deploy/compose/prometheus.yml', 'deploy/prometheus/alerts.yml', 'deploy/k8s/kustomization.yaml', 'deploy/k8s/deployment.yaml']) {
      expect(yamlFiles).toContain(path);
    }
  });

  it('every file parses, without duplicate keys or empty documents', () => {
    const problems = yamlFiles.flatMap((path) => {
      const entry = parsed[path]!;
      if (!Array.isArray(entry)) return [`${path}: ${entry.error}`];
      return entry.some((d) => d === null || typeof d !== 'object') ? [`${path}: a document is empty or not a mapping`] : [];
    });
    expect(problems).toEqual([]);
  });

  it('a duplicate key is refused (the check can fail)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wsedge-deploy-'));
    try {
      const file = join(dir, 'dup.yml');
      writeFileSync(file, 'a: 1\nb: 2\na: 3\n');
      const result = await run(await pythonWithYaml(), ['-c', YAML_TO_JSON, file]);
      expect(JSON.parse(result.stdout)[file].error).toMatch(/duplicate key 'a'/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('Prometheus alert rules (deploy/prometheus/alerts.yml)', () => {
  it('pass promtool check rules', async () => {
    const result = await run('promtool', ['check', 'rules', 'deploy/prometheus/alerts.yml']);
    expect(result.stdout + result.stderr).toMatch(/SUCCESS: \d+ rules found/);
    expect(result.code).toBe(0);
  });

  it('fire as their unit tests say (promtool test rules)', async () => {
    const result = await run('promtool', ['test', 'rules', 'deploy/prometheus/alerts.test.yml']);
    expect(result.stdout + result.stderr).toMatch(/SUCCESS/);
    expect(result.code).toBe(0);
  });

  it('cover what on-call needs, each with a summary, a description and its runbook anchor', () => {
    const rules = alertRules(doc('deploy/prometheus/alerts.yml'));
    const names = rules.map((r) => r['alert'] as string);
    expect(new Set(names).size).toBe(names.length);
    for (const wanted of [
      'WsEdgeNodeDown',
      'WsEdgeBrokerDown',
      'WsEdgeAuthFailureSpike',
      'WsEdgeUserLimitRejections',
      'WsEdgeMaxConnectionsRefusals',
      'WsEdgeBackpressureDrops',
      'WsEdgeEventLoopLag',
      'WsEdgeCrossNodeLatencyHigh',
      'WsEdgeConnectionsNearCapacity',
      'WsEdgeBrokerProbeFailures',
      'WsEdgeBrokerPublishErrors',
      'WsEdgeRoomResets',
    ]) {
      expect(names).toContain(wanted);
    }
    for (const rule of rules) {
      const name = rule['alert'] as string;
      expect(rule['labels']?.['severity'], name).toMatch(/^(warning|critical)$/);
      expect(rule['annotations']?.['summary'], name).toBeTruthy();
      expect(String(rule['annotations']?.['description'] ?? '').length, name).toBeGreaterThan(40);
      expect(rule['annotations']?.['runbook_url'], name).toBe(`${RUNBOOK}#${name.toLowerCase()}`);
    }
  });

  it('select the scrape job the deployments create', () => {
    const jobs = new Set(alertRules(doc('deploy/prometheus/alerts.yml')).flatMap((r) => [...String(r['expr']).matchAll(/\bjob\s*=~?\s*"([^"]*)"/g)].map((m) => m[1])));
    expect([...jobs]).toEqual([JOB]);
    const compose = doc('deploy/compose/prometheus.yml');
    expect((compose['scrape_configs'] as Doc[]).map((s) => s['job_name'])).toContain(JOB);
  });

  it('the compose Prometheus config and the rules it loads pass promtool check config', async () => {
    const result = await run('promtool', ['check', 'config', 'deploy/compose/prometheus.yml']);
    expect(result.stdout + result.stderr).toMatch(/SUCCESS: 1 rule files found/);
    expect(result.code).toBe(0);
  });
});

describe('metric names against a live node', () => {
  it('the PromQL name extractor finds selectors and skips functions, labels, keywords and variables', () => {
    expect(
      metricNames('histogram_quantile(0.99, sum by (le, job) (rate(a_bucket{job=~"$job", x="y{z}"}[$__rate_interval]))) > 0.25 and on(instance) b offset 5m or absent(c) * 1e3 / d[5m:1m]').sort(),
    ).toEqual(['a_bucket', 'b', 'c', 'd']);
    expect(metricNames('sum(rate(e[5m])) by (code) / ignoring(code) group_left f')).toEqual(['e', 'f']);
  });

  it('the live scrape has every ws-edge metric family, the broker ones included', () => {
    const ours = [...scrape.families.keys()].filter((n) => n.startsWith('wsedge_'));
    expect(ours).toEqual(expect.arrayContaining(['wsedge_connections', 'wsedge_broker_up', 'wsedge_cross_node_latency_seconds', 'wsedge_api_requests_total']));
    expect(scrape.series).toContain('wsedge_cross_node_latency_seconds_bucket');
    // alice's message and the API event reached bob on node B through Redis: real observations.
    expect(sampleValue(scrapeB, 'wsedge_cross_node_latency_seconds_count')).toBeGreaterThan(0);
  });

  it('promtool check metrics finds no naming or type problem in a live scrape', async () => {
    const result = await run('promtool', ['check', 'metrics'], { input: scrapeA });
    const problems = (result.stdout + result.stderr).split('\n').map((l) => l.trim()).filter((l) => l !== '');
    expect(problems).toEqual([]);
    expect(result.code).toBe(0);
  });

  it('the dashboard queries only series the node exports', () => {
    const exprs = dashboardExprs(JSON.parse(read('deploy/grafana/ws-edge.json')) as Doc);
    expect(exprs.length).toBeGreaterThan(30);
    const unknown = exprs.flatMap(({ where, expr }) => metricNames(expr).filter((n) => !scrape.series.has(n)).map((n) => `${where}: ${n}`));
    expect(unknown).toEqual([]);
  });

  it('the alerts and their unit tests reference only series the node exports', () => {
    const rules = alertRules(doc('deploy/prometheus/alerts.yml'));
    const unknown = rules.flatMap((r) => metricNames(String(r['expr'])).filter((n) => !scrape.series.has(n)).map((n) => `${r['alert']}: ${n}`));
    expect(unknown).toEqual([]);
    const tests = doc('deploy/prometheus/alerts.test.yml');
    const inputs = (tests['tests'] as Doc[]).flatMap((t) => (t['input_series'] as Doc[]).map((s) => /^[A-Za-z_:][\w:]*/.exec(String(s['series']))![0]));
    expect(inputs.filter((n) => !scrape.series.has(n))).toEqual([]);
  });

  it('the dashboard has a panel for every ws-edge metric family and for the process basics', () => {
    const used = new Set(dashboardExprs(JSON.parse(read('deploy/grafana/ws-edge.json')) as Doc).flatMap(({ expr }) => metricNames(expr)));
    const covered = (family: string) => [family, `${family}_bucket`, `${family}_sum`, `${family}_count`].some((n) => used.has(n));
    const families = [...scrape.families.keys()].filter((n) => n.startsWith('wsedge_'));
    expect(families.filter((f) => !covered(f))).toEqual([]);
    for (const basic of ['up', 'process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_gc_duration_seconds']) {
      expect(covered(basic), basic).toBe(true);
    }
  });
});

describe('Grafana dashboard (deploy/grafana/ws-edge.json)', () => {
  const dashboard = JSON.parse(read('deploy/grafana/ws-edge.json')) as Doc;
  const panels = dashboard['panels'] as Doc[];

  it('has uid ws-edge and a templated Prometheus data source used by every panel and query', () => {
    expect(dashboard['uid']).toBe('ws-edge');
    const variables = dashboard['templating']['list'] as Doc[];
    expect(variables.find((v) => v['name'] === 'DS_PROMETHEUS')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    const sources: unknown[] = [];
    const walk = (value: unknown): void => {
      if (Array.isArray(value)) return value.forEach(walk);
      if (typeof value !== 'object' || value === null) return;
      for (const [key, child] of Object.entries(value)) {
        if (key === 'datasource') sources.push(child);
        else walk(child);
      }
    };
    walk(panels);
    walk(variables.filter((v) => v['type'] === 'query'));
    expect(sources.length).toBeGreaterThan(30);
    const hardCoded = sources.filter((s) => !(typeof s === 'object' && s !== null && (s as Doc)['uid'] === '${DS_PROMETHEUS}'));
    expect(hardCoded).toEqual([]);
  });

  it('groups panels in rows in the order on-call asks', () => {
    const rows = panels.filter((p) => p['type'] === 'row').map((p) => p['title']);
    expect(rows).toEqual(['Is it up', 'Connections', 'Traffic', 'Fan-out', 'API', 'Process', 'Sequenced rooms', 'Presence and signals', 'Room permissions', 'Backend calls', 'Lifecycle events and webhooks', 'Keys and revocations', 'Ingestion', 'HTTP fallback']);
  });

  it('has unique panel ids, fits 24 columns, and every graph has a query', () => {
    const ids = panels.map((p) => p['id'] as number);
    expect(new Set(ids).size).toBe(ids.length);
    for (const panel of panels) {
      const { x, w } = panel['gridPos'] as { x: number; w: number };
      expect(x + w, String(panel['title'])).toBeLessThanOrEqual(24);
      if (panel['type'] === 'row' || panel['type'] === 'text') continue;
      const targets = panel['targets'] as Doc[];
      expect(targets.length, String(panel['title'])).toBeGreaterThan(0);
      for (const target of targets) expect(String(target['expr']), String(panel['title'])).toMatch(/\S/);
    }
  });
});

describe('Dockerfile', () => {
  const text = read('Dockerfile');
  const stages = dockerStages(text);
  const runtime = stages.at(-1)!;
  const last = (op: string) => runtime.filter((i) => i.op === op).at(-1);

  it('is multi-stage and runs Node 24 on Debian 13 (glibc >= 2.38 for the official uWS binaries)', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    expect(runtime[0]!.args).toMatch(/^node:24[-.\w]*trixie/);
  });

  it('copies only paths that exist in the repository and that .dockerignore lets through', () => {
    const ignored = read('.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#') && !l.startsWith('!'));
    const sources = stages.flat().filter((i) => i.op === 'COPY' && !/--from=/.test(i.args)).flatMap((i) => {
      const words = i.args.split(/\s+/).filter((w) => !w.startsWith('--'));
      return words.slice(0, -1);
    });
    expect(sources.sort()).toEqual(['package-lock.json', 'package.json', 'src', 'tsconfig.json']);
    for (const source of sources) {
      expect(existsSync(at(source)), source).toBe(true);
      expect(ignored.filter((pattern) => pattern.replace(/\/$/, '') === source.split('/')[0]), source).toEqual([]);
    }
  });

  it('builds with a script package.json has, and its CMD runs a file the build produces', () => {
    const pkg = JSON.parse(read('package.json')) as { scripts: Record<string, string> };
    expect(text).toMatch(/RUN npm run build/);
    expect(pkg.scripts['build']).toMatch(/tsc -p tsconfig\.json/);
    const cmd = execForm(last('CMD')!.args);
    expect(cmd[0]).toBe('node');
    const script = cmd[1]!;
    expect(script).toBe('dist/cli.js');
    // tsconfig.json compiles src/ into dist/: dist/cli.js comes from src/cli.ts.
    const tsconfig = JSON.parse(read('tsconfig.json')) as { compilerOptions: { outDir: string; rootDir: string } };
    expect(`${tsconfig.compilerOptions.outDir}/cli.js`).toBe(script);
    expect(existsSync(at(tsconfig.compilerOptions.rootDir, 'cli.ts'))).toBe(true);
    expect(existsSync(at(script)), `${script} (dist/ is built by npm test's pretest)`).toBe(true);
    expect(cmd.slice(2)).toEqual(['serve']);
  });

  it('runs as a non-root user, exposes both ports and checks /healthz', () => {
    expect(last('USER')?.args).toBeDefined();
    expect(last('USER')!.args).not.toMatch(/^(root|0)(:|$)/);
    expect(runtime.filter((i) => i.op === 'EXPOSE').flatMap((i) => i.args.split(/\s+/))).toEqual(expect.arrayContaining(['8080', '9090']));
    expect(last('HEALTHCHECK')?.args).toMatch(/\/healthz/);
    expect(text).not.toMatch(/(JWT_SECRET|PUBLISH_API_KEY)\s*=/);
  });

  it('its HEALTHCHECK command passes against a live node and fails against a closed port', async () => {
    const [command, ...args] = execForm(last('HEALTHCHECK')!.args);
    const healthy = await run(command === 'node' ? process.execPath : command!, args, { env: { PORT: String(nodeA.port) } });
    expect(healthy.code, healthy.stderr).toBe(0);
    const closed = await run(command === 'node' ? process.execPath : command!, args, { env: { PORT: String(await freePort()) } });
    expect(closed.code).toBe(1);
  });
});

describe('compose stack (deploy/compose/docker-compose.yml)', () => {
  const COMPOSE_DIR = 'deploy/compose';
  const compose = () => doc(`${COMPOSE_DIR}/docker-compose.yml`);
  const services = () => compose()['services'] as Record<string, Doc>;
  const edgeNames = () => Object.keys(services()).filter((n) => /^ws-edge-\d+$/.test(n));
  const hostPath = (p: string) => relative(ROOT, resolve(ROOT, COMPOSE_DIR, p));
  /** Bind mounts: [host path relative to the repo, container path]. */
  const binds = (service: Doc) =>
    ((service['volumes'] ?? []) as string[]).filter((v) => v.startsWith('.')).map((v) => {
      const [host, container] = v.split(':') as [string, string];
      return [hostPath(host), container] as const;
    });

  it('has three ws-edge nodes built from the repository Dockerfile, with Redis, HAProxy, Prometheus and Grafana', () => {
    expect(edgeNames()).toEqual(['ws-edge-1', 'ws-edge-2', 'ws-edge-3']);
    for (const name of ['redis', 'haproxy', 'prometheus', 'grafana']) expect(services()[name], name).toBeDefined();
    expect(services()['redis']!['image']).toBe('redis:7-alpine');
    expect(services()['haproxy']!['image']).toBe('haproxy:2.8');
    for (const name of edgeNames()) {
      const build = services()[name]!['build'] as { context: string; dockerfile: string };
      expect(existsSync(at(hostPath(build.context), build.dockerfile)), name).toBe(true);
      expect(hostPath(build.context)).toBe('');
    }
  });

  it('references only files that exist', () => {
    const mounted = Object.values(services()).flatMap(binds).map(([host]) => host);
    expect(mounted).toEqual(
      expect.arrayContaining([
        'deploy/haproxy/haproxy.cfg',
        'deploy/compose/prometheus.yml',
        'deploy/prometheus/alerts.yml',
        'deploy/grafana/ws-edge.json',
        'deploy/compose/grafana/provisioning/datasources/prometheus.yml',
        'deploy/compose/grafana/provisioning/dashboards/ws-edge.yml',
      ]),
    );
    expect(mounted.filter((p) => !existsSync(at(p)))).toEqual([]);
  });

  it('gives every node its id, Redis, an internal port reachable in the network, and secrets only by interpolation', () => {
    const required = new Set<string>();
    for (const name of edgeNames()) {
      const env = services()[name]!['environment'] as Record<string, string>;
      expect(env['NODE_ID']).toBe(name);
      expect(env['REDIS_URL']).toBe('redis://redis:6379');
      expect(env['INTERNAL_HOST']).toBe('0.0.0.0');
      for (const secret of ['JWT_SECRET', 'PUBLISH_API_KEY']) {
        expect(env[secret], `${name} ${secret}`).toMatch(new RegExp(`^\\$\\{${secret}:\\?`));
        required.add(secret);
      }
      // The environment, with real secrets in place of the interpolations, is a valid configuration.
      const resolved = Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v).startsWith('${') ? SECRET : String(v)]));
      expect(configProblems(resolved), name).toEqual([]);
    }
    // .env.example names every variable the compose file requires, with no value filled in.
    for (const m of JSON.stringify(compose()).matchAll(/\$\{([A-Z0-9_]+):\?/g)) required.add(m[1]!);
    const example = read(`${COMPOSE_DIR}/.env.example`);
    for (const name of required) expect(example, name).toMatch(new RegExp(`^${name}=$`, 'm'));
  });

  it('stops each node later than its drain can take (stop_grace_period > WS_DRAIN_TIMEOUT)', () => {
    for (const name of edgeNames()) {
      const service = services()[name]!;
      const drain = Number((service['environment'] as Record<string, string>)['WS_DRAIN_TIMEOUT']);
      expect(drain, name).toBeGreaterThan(0);
      expect(seconds(service['stop_grace_period'] as string), name).toBeGreaterThan(drain);
      expect(service['stop_signal'] ?? 'SIGTERM').toBe('SIGTERM');
    }
  });

  it('has health checks on every service, and the nodes check /healthz', () => {
    for (const [name, service] of Object.entries(services())) expect((service['healthcheck'] as Doc | undefined)?.['test'], name).toBeDefined();
    for (const name of edgeNames()) expect((services()[name]!['healthcheck'] as Doc)['test'].join(' '), name).toMatch(/\/healthz/);
  });

  it("the nodes' health check command passes against a live node", async () => {
    const [kind, command, ...args] = (services()['ws-edge-1']!['healthcheck'] as Doc)['test'] as string[];
    expect(kind).toBe('CMD');
    expect(command).toBe('node');
    const result = await run(process.execPath, args, { env: { PORT: String(nodeA.port) } });
    expect(result.code, result.stderr).toBe(0);
  });

  it('points HAProxy at every node, and haproxy -c accepts the shipped config with that environment', async () => {
    const haproxy = services()['haproxy']!;
    expect(binds(haproxy)).toContainEqual(['deploy/haproxy/haproxy.cfg', '/usr/local/etc/haproxy/haproxy.cfg']);
    const env = haproxy['environment'] as Record<string, string>;
    expect([env['WSEDGE_NODE1'], env['WSEDGE_NODE2'], env['WSEDGE_NODE3']]).toEqual(edgeNames().map((n) => `${n}:8080`));
    expect(env['HAPROXY_BIND']).toBeDefined();
    // -V: HAProxy 3.0 says nothing on success without it. The compose names do not resolve here:
    // 2.6 reports each as a WARNING, 3.0 as a NOTICE (init-addr none lets it start); -V adds the
    // version and path NOTICEs. Nothing else may be reported.
    const result = await run('haproxy', ['-c', '-V', '-f', 'deploy/haproxy/haproxy.cfg'], { env: Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)])) });
    const output = result.stdout + result.stderr;
    expect(output).toMatch(/Configuration file is valid/);
    expect(result.code).toBe(0);
    const reports = output.split('\n').filter((line) => /\[(NOTICE|WARNING|ALERT)\]/.test(line));
    const expected = /\[(NOTICE|WARNING)\].*(could not resolve address 'ws-edge-[123]'|haproxy version is|path to executable is)/;
    for (const line of reports) expect(line).toMatch(expected);
  });

  it("Prometheus scrapes every node's internal port and loads the mounted alert rules", () => {
    const prometheus = doc(`${COMPOSE_DIR}/prometheus.yml`);
    const job = (prometheus['scrape_configs'] as Doc[]).find((s) => s['job_name'] === JOB)!;
    expect(job['metrics_path'] ?? '/metrics').toBe('/metrics');
    const targets = (job['static_configs'] as Doc[]).flatMap((c) => c['targets'] as string[]);
    expect(targets.sort()).toEqual(edgeNames().map((n) => `${n}:9090`));

    // rule_files is relative to the config file: on this machine and inside the container.
    const mounts = new Map(binds(services()['prometheus']!).map(([host, container]) => [host, container]));
    const configInContainer = mounts.get(`${COMPOSE_DIR}/prometheus.yml`)!;
    expect((services()['prometheus']!['command'] as string[])).toContain(`--config.file=${configInContainer}`);
    for (const rules of prometheus['rule_files'] as string[]) {
      const onHost = relative(ROOT, resolve(ROOT, COMPOSE_DIR, rules));
      expect(onHost).toBe('deploy/prometheus/alerts.yml');
      expect(mounts.get(onHost)).toBe(posix.resolve(posix.dirname(configInContainer), rules));
    }
  });

  it('Grafana gets the Prometheus data source and loads the dashboard from where it is mounted', () => {
    const mounts = new Map(binds(services()['grafana']!).map(([host, container]) => [host, container]));
    const datasources = doc(`${COMPOSE_DIR}/grafana/provisioning/datasources/prometheus.yml`);
    expect(datasources['datasources']).toContainEqual(expect.objectContaining({ type: 'prometheus', url: 'http://prometheus:9090' }));
    const providers = doc(`${COMPOSE_DIR}/grafana/provisioning/dashboards/ws-edge.yml`)['providers'] as Doc[];
    const dashboardPath = mounts.get('deploy/grafana/ws-edge.json')!;
    expect(providers.map((p) => p['options']['path'])).toContain(posix.dirname(dashboardPath));
    for (const [host, container] of mounts) if (host.includes('/provisioning/')) expect(container).toMatch(/^\/etc\/grafana\/provisioning\//);
  });
});

describe('Kubernetes manifests (deploy/k8s)', () => {
  const K8S = 'deploy/k8s';
  const objects = () =>
    (doc(`${K8S}/kustomization.yaml`)['resources'] as string[]).flatMap((file) => docs(`${K8S}/${file}`));
  const find = (kind: string, name?: string) => {
    const found = objects().filter((o) => o['kind'] === kind && (name === undefined || o['metadata']['name'] === name));
    expect(found.length, `${kind} ${name ?? ''}`).toBe(1);
    return found[0]!;
  };
  const configMap = () => find('ConfigMap')['data'] as Record<string, string>;
  const deployment = () => find('Deployment');
  const pod = () => deployment()['spec']['template'];
  const container = () => (pod()['spec']['containers'] as Doc[])[0]!;
  const portsByName = () => new Map((container()['ports'] as Doc[]).map((p) => [p['name'] as string, p['containerPort'] as number]));
  const secretTemplate = () => doc(`${K8S}/secret.example.yaml`);

  it('the kustomization lists every manifest, and every listed file exists', () => {
    const listed = doc(`${K8S}/kustomization.yaml`)['resources'] as string[];
    expect(listed.filter((f) => !existsSync(at(K8S, f)))).toEqual([]);
    const manifests = readdirSync(at(K8S)).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml' && f !== 'secret.example.yaml');
    expect([...listed].sort()).toEqual(manifests.sort());
  });

  it('has the objects an SRE expects', () => {
    for (const [apiVersion, kind] of [
      ['apps/v1', 'Deployment'],
      ['v1', 'ConfigMap'],
      ['policy/v1', 'PodDisruptionBudget'],
      ['autoscaling/v2', 'HorizontalPodAutoscaler'],
      ['monitoring.coreos.com/v1', 'ServiceMonitor'],
      ['networking.k8s.io/v1', 'NetworkPolicy'],
    ] as const) {
      expect(find(kind)['apiVersion'], kind).toBe(apiVersion);
    }
    expect(objects().filter((o) => o['kind'] === 'Service')).toHaveLength(2);
    expect(secretTemplate()['kind']).toBe('Secret');
  });

  it('runs 3 replicas with the named ports (the publish thread\'s as PUBLISH_PORT), probes on /readyz and /healthz, and config from the ConfigMap and Secret', () => {
    expect(deployment()['spec']['replicas']).toBe(3);
    expect(Object.fromEntries(portsByName())).toEqual({ http: 8080, internal: 9090, publish: 9091 });
    expect(Number(configMap()['PUBLISH_PORT'])).toBe(portsByName().get('publish'));
    expect(container()['readinessProbe']['httpGet']).toEqual({ path: '/readyz', port: 'http' });
    expect(container()['livenessProbe']['httpGet']).toEqual({ path: '/healthz', port: 'http' });
    const envFrom = container()['envFrom'] as Doc[];
    expect(envFrom).toContainEqual({ configMapRef: { name: find('ConfigMap')['metadata']['name'] } });
    expect(envFrom).toContainEqual({ secretRef: { name: secretTemplate()['metadata']['name'] } });
    expect(container()['resources']['requests']).toEqual(expect.objectContaining({ cpu: expect.anything(), memory: expect.anything() }));
    expect(container()['resources']['limits']).toEqual(expect.objectContaining({ memory: expect.anything() }));
    expect((pod()['spec']['topologySpreadConstraints'] as Doc[]).length).toBeGreaterThan(0);
    expect(matches(deployment()['spec']['selector']['matchLabels'], pod()['metadata']['labels'])).toBe(true);
  });

  it('gives the drain its time: terminationGracePeriodSeconds > preStop sleep + WS_DRAIN_TIMEOUT', () => {
    const preStop = container()['lifecycle']['preStop']['exec']['command'] as string[];
    expect(preStop[0]).toBe('sleep');
    const sleep = Number(preStop[1]);
    const drain = Number(configMap()['WS_DRAIN_TIMEOUT']);
    expect(sleep).toBeGreaterThan(0);
    expect(drain).toBeGreaterThan(0);
    expect(pod()['spec']['terminationGracePeriodSeconds']).toBeGreaterThan(sleep + drain);
  });

  it('meets the restricted Pod Security Standard', () => {
    const podContext = pod()['spec']['securityContext'];
    const context = container()['securityContext'];
    expect(podContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: 'RuntimeDefault' } });
    expect(context).toMatchObject({
      runAsNonRoot: true,
      runAsUser: 1000,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    });
    // uid 1000 is the `node` user the Dockerfile switches to.
    expect(read('Dockerfile')).toMatch(/^USER node$/m);
  });

  it('exposes only the public port on the public Service; the internal one (with the publish thread\'s) has its own Service', () => {
    const services = objects().filter((o) => o['kind'] === 'Service');
    const labels = pod()['metadata']['labels'] as Record<string, string>;
    const byPort = (port: number) => services.filter((s) => (s['spec']['ports'] as Doc[]).some((p) => p['port'] === port));
    const [publicService] = byPort(8080);
    const [internalService] = byPort(9090);
    expect((publicService!['spec']['ports'] as Doc[]).map((p) => p['port'])).toEqual([8080]);
    expect((internalService!['spec']['ports'] as Doc[]).map((p) => p['port'])).toEqual([9090, 9091]);
    for (const service of services) {
      expect(matches(service['spec']['selector'], labels), service['metadata']['name']).toBe(true);
      for (const port of service['spec']['ports'] as Doc[]) expect(portsByName().get(port['targetPort']), service['metadata']['name']).toBe(port['port']);
    }
  });

  it('the ServiceMonitor scrapes /metrics on the internal Service only, as job ws-edge', () => {
    const monitor = find('ServiceMonitor')['spec'];
    const services = objects().filter((o) => o['kind'] === 'Service');
    const selected = services.filter((s) => matches(monitor['selector']['matchLabels'], s['metadata']['labels']));
    expect(selected).toHaveLength(1);
    const [service] = selected;
    expect((monitor['endpoints'] as Doc[]).map((e) => [e['port'], e['path']])).toEqual([[(service!['spec']['ports'] as Doc[])[0]!['name'], '/metrics']]);
    expect((service!['spec']['ports'] as Doc[])[0]!['port']).toBe(9090);
    expect(service!['metadata']['labels'][monitor['jobLabel']]).toBe(JOB);
  });

  it('the NetworkPolicy opens the public port to all and the internal port only to chosen peers', () => {
    const policy = find('NetworkPolicy')['spec'];
    expect(matches(policy['podSelector']['matchLabels'], pod()['metadata']['labels'])).toBe(true);
    const rules = policy['ingress'] as Doc[];
    const forPort = (name: string) => rules.filter((r) => (r['ports'] as Doc[]).some((p) => p['port'] === name || p['port'] === portsByName().get(name)));
    expect(forPort('http')).toHaveLength(1);
    expect(forPort('http')[0]!['from']).toBeUndefined();
    expect(forPort('internal')).toHaveLength(1);
    expect((forPort('internal')[0]!['from'] as Doc[]).length).toBeGreaterThan(0);
    const peers = JSON.stringify(forPort('internal')[0]!['from']);
    expect(peers).toMatch(/monitoring/);
    // The publish thread's port is open to the same peers as the internal port, no more.
    expect(forPort('publish')).toEqual(forPort('internal'));
  });

  it('the PodDisruptionBudget and the HPA target these pods', () => {
    expect(matches(find('PodDisruptionBudget')['spec']['selector']['matchLabels'], pod()['metadata']['labels'])).toBe(true);
    const hpa = find('HorizontalPodAutoscaler')['spec'];
    expect(hpa['scaleTargetRef']).toMatchObject({ kind: 'Deployment', name: deployment()['metadata']['name'] });
    expect(hpa['minReplicas']).toBeGreaterThanOrEqual(deployment()['spec']['replicas']);
    expect((hpa['metrics'] as Doc[]).map((m) => m['resource']?.['name'])).toContain('cpu');
    expect(read(`${K8S}/horizontalpodautoscaler.yaml`)).toMatch(/#\s+name: wsedge_connections/);
  });

  it('the ConfigMap holds only variables config.ts reads, and with real secrets it is a valid configuration', () => {
    const known = configVariables();
    expect(known.size).toBeGreaterThan(20);
    expect(Object.keys(configMap()).filter((k) => !known.has(k))).toEqual([]);
    for (const secret of ['JWT_SECRET', 'PUBLISH_API_KEY', 'JWT_PUBLIC_KEY_FILE']) expect(configMap()[secret], secret).toBeUndefined();
    const secrets = secretTemplate()['stringData'] as Record<string, string>;
    expect(Object.keys(secrets).sort()).toEqual(['JWT_SECRET', 'PUBLISH_API_KEY', 'REDIS_URL']);
    expect(configProblems({ ...configMap(), JWT_SECRET: SECRET, PUBLISH_API_KEY: API_KEY, REDIS_URL: secrets['REDIS_URL']! })).toEqual([]);
  });

  it("the Secret template's placeholders cannot go live: a production node refuses them", () => {
    const problems = configProblems({ ...configMap(), ...(secretTemplate()['stringData'] as Record<string, string>) });
    expect(problems).toEqual(expect.arrayContaining([expect.stringMatching(/^JWT_SECRET: /), expect.stringMatching(/^PUBLISH_API_KEY: /)]));
  });
});
