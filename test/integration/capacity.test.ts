/**
 * A node at its open-files limit (issue 25): unless WS_MAX_CONNECTIONS says otherwise it holds the
 * limit less a margin and refuses the rest with HTTP 503 `max_connections`, counted, so it never
 * reaches the limit, where uSockets' accept would spin. Node processes under `prlimit --nofile`.
 */
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { open, token, type TestClient } from '../helpers/client.js';
import { startNodeProcess, stopAllProcesses } from '../helpers/processes.js';

const clients: TestClient[] = [];

afterAll(async () => {
  clients.splice(0).forEach((c) => c.close());
  await stopAllProcesses();
});

/** CPU seconds a process has used (utime + stime from /proc/<pid>/stat, 100 ticks a second). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

describe('the open-files limit', () => {
  it('holds the limit less the margin and refuses the rest with 503, counted; the node keeps serving', { timeout: 60_000 }, async () => {
    const node = await startNodeProcess({ WS_MAX_CONNECTIONS_PER_IP: '0', WS_AUTH_FAILURE_LIMIT: '0' }, { openFiles: 400 });
    const start = node.logs.find((l) => l['event'] === 'start') as { limits: { max_connections: number } };
    // 400 less max(256, 10%).
    expect(start.limits.max_connections).toBe(144);
    const cpuBefore = cpuSeconds(node.child.pid!);
    const outcomes = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const c = open(node.url, token(`u${i}`));
        clients.push(c);
        return Promise.race([c.next((e) => e.type === 'connected', 20_000).then(() => 'connected'), c.closed.then(() => 'refused')]);
      }),
    );
    const connected = outcomes.filter((o) => o === 'connected').length;
    const refused = await node.metric('wsedge_upgrades_refused_total', { reason: 'max_connections' });
    // The internal port answers and every admitted client is served.
    const survivors = clients.filter((_, i) => outcomes[i] === 'connected');
    await Promise.all(survivors.map(async (c, i) => {
      c.send({ type: 'ping', id: `p${i}` });
      await c.next((e) => e.id === `p${i}`, 20_000);
    }));
    console.log(JSON.stringify({ scenario: 'open-files-limit', open_files: 400, max_connections: start.limits.max_connections, attempted: 200, connected, refused_503: refused, node_cpu_s: +(cpuSeconds(node.child.pid!) - cpuBefore).toFixed(2) }));
    expect([connected, refused]).toEqual([144, 56]);
  });

  it('warns at start about a WS_MAX_CONNECTIONS the limit cannot hold, with one log line', async () => {
    const node = await startNodeProcess({ WS_MAX_CONNECTIONS: '0' }, { openFiles: 400 });
    const warning = await node.waitForLog((l) => l['event'] === 'max_connections_unsafe');
    expect(warning['msg']).toMatch(/^WS_MAX_CONNECTIONS=0 \(no limit\) does not fit the open-files limit of 400 \(144 after 256 kept/);
  });
});
