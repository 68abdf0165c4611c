/**
 * The multi-node harness against the real things it drives: redis-server, a TCP link that can be
 * starved, ws-edge node processes and the shipped HAProxy config. If these fail, the cluster suites
 * built on them cannot be trusted either way.
 */
import { connect as tcpConnect, type Socket } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { open, token, type TestClient } from '../helpers/client.js';
import { startHaproxy, stopAllHaproxy } from '../helpers/haproxy.js';
import { startNodeProcess, stopAllProcesses } from '../helpers/processes.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';
import { encodeCommand, redisCommand } from '../helpers/resp.js';
import { startTcpProxy, stopAllProxies } from '../helpers/tcp-proxy.js';

const clients: TestClient[] = [];

afterAll(async () => {
  for (const client of clients) client.close();
  await Promise.all([stopAllHaproxy(), stopAllProcesses(), stopAllProxies()]);
  await stopAllRedis();
});

/** Resolves with the next bytes on `socket`, or with undefined if none arrive within `ms`. */
function nextData(socket: Socket, ms: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const onData = (chunk: Buffer) => {
      clearTimeout(timer);
      resolve(chunk.toString());
    };
    const timer = setTimeout(() => {
      socket.off('data', onData);
      resolve(undefined);
    }, ms);
    socket.once('data', onData);
  });
}

describe('redis-server helper', () => {
  it('starts a server on a free port that answers PING', async () => {
    const redis = await startRedis();
    expect(redis.port).toBeGreaterThan(0);
    expect(redis.url).toBe(`redis://127.0.0.1:${redis.port}`);
    expect(await redis.command('PING')).toBe('+PONG\r\n');
    expect(await redis.command('CONFIG', 'GET', 'appendonly')).toBe('*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n');
    expect(uniquePrefix()).toMatch(/^wsedge-test-[0-9a-f]{8}:$/);
    expect(uniquePrefix()).not.toBe(uniquePrefix());
  });

  it('restarts on the same port with no data kept, after a stop and after a kill', async () => {
    const redis = await startRedis();
    const key = `${uniquePrefix()}k`;
    expect(await redis.command('SET', key, 'v')).toBe('+OK\r\n');
    expect(await redis.command('GET', key)).toBe('$1\r\nv\r\n');

    await redis.stop();
    await expect(redis.command('PING')).rejects.toThrow(/ECONNREFUSED/);
    await redis.restart();
    expect(await redis.command('PING')).toBe('+PONG\r\n');
    expect(await redis.command('GET', key)).toBe('$-1\r\n');

    await redis.command('SET', key, 'again');
    await redis.kill();
    await expect(redis.command('PING')).rejects.toThrow(/ECONNREFUSED/);
    await redis.restart();
    expect(await redis.command('DBSIZE')).toBe(':0\r\n');
  });
});

describe('TCP proxy', () => {
  it('forwards Redis traffic, and while blackholed swallows it without closing the socket', async () => {
    const redis = await startRedis();
    const proxy = await startTcpProxy(redis.port);
    expect(proxy.url).toBe(`redis://127.0.0.1:${proxy.port}`);
    expect(await redisCommand(proxy.port, ['PING'])).toBe('+PONG\r\n');

    const socket = tcpConnect(proxy.port, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    let closed = false;
    socket.once('close', () => (closed = true));
    socket.write(encodeCommand(['PING']));
    expect(await nextData(socket, 2000)).toBe('+PONG\r\n');
    expect(proxy.connections()).toBe(1);

    proxy.blackhole(true);
    socket.write(encodeCommand(['PING']));
    expect(await nextData(socket, 500)).toBeUndefined();
    expect(closed).toBe(false);
    expect(proxy.connections()).toBe(1);
    // A new connection is accepted but starved too.
    await expect(redisCommand(proxy.port, ['PING'], 300)).rejects.toThrow(/no reply/);

    proxy.blackhole(false);
    socket.write(encodeCommand(['PING']));
    // Exactly one reply: the swallowed PING never reached Redis.
    expect(await nextData(socket, 2000)).toBe('+PONG\r\n');
    expect(await nextData(socket, 200)).toBeUndefined();

    proxy.closeAll();
    await new Promise((resolve) => socket.once('close', resolve));
    expect(proxy.connections()).toBe(0);
    expect(await redisCommand(proxy.port, ['PING'])).toBe('+PONG\r\n');
    await proxy.stop();
  });
});

describe('HAProxy in front of three ws-edge processes', () => {
  it('spreads connections over every node and never logs the token', async () => {
    const nodes = await Promise.all([startNodeProcess(), startNodeProcess(), startNodeProcess()]);
    expect(new Set(nodes.map((n) => n.nodeId)).size).toBe(3);
    const haproxy = await startHaproxy(nodes.map((n) => n.port));
    // Real health checks on /readyz passed, not just HAProxy's optimistic initial state.
    expect(await haproxy.servers()).toEqual(
      ['ws-edge-1', 'ws-edge-2', 'ws-edge-3'].map((name) => ({ name, status: 'UP', check: 'L7OK' })),
    );

    const tokens = Array.from({ length: 6 }, (_, i) => token(`user${i}`));
    // One at a time, so leastconn sees each open socket before placing the next.
    for (const tok of tokens) {
      const client = open(haproxy.url, tok);
      clients.push(client);
      expect(await client.next((e) => e.type === 'connected')).toMatchObject({ type: 'connected' });
    }

    const perNode = await Promise.all(nodes.map((n) => n.metric('wsedge_connections')));
    expect(perNode.reduce((a, b) => a + b, 0)).toBe(6);
    for (const count of perNode) expect(count).toBeGreaterThanOrEqual(1);

    // HAProxy writes a WebSocket's access line when the tunnel closes.
    for (const client of clients.splice(0)) {
      client.close();
      await client.closed;
    }
    const lines = await haproxy.waitForLogs((l) => l.includes('/api/v1/ws/connect'), 6);
    for (const line of lines) expect(line).toMatch(/ ws_edge ws_edge_nodes\/ws-edge-[123] .* 101 .*GET "\/api\/v1\/ws\/connect" HTTP\/1\.1$/);
    const all = haproxy.logs.join('\n');
    expect(all).not.toContain('token=');
    for (const tok of tokens) expect(all).not.toContain(tok);
  });
});
