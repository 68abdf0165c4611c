/**
 * The publish thread's body (PUBLISH_PORT; publish-thread.ts starts it): POST /api/v1/publish and
 * /api/v1/publish/batch on a uWS app of its own, in a worker thread with its own event loop and its
 * own Redis command connection. A backend's publish is answered in Redis's time while the node's
 * socket loop is busy (a reconnect storm's handshakes, joins and replays), with the internal port's
 * checks and answers (api.ts). It publishes as `ws-edge/publisher` does, under an origin of its own,
 * so every node, its own included, delivers from Redis; a plain room is answered once Redis took
 * the event. Request and publish counts go to the node's metrics in batches.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { addPublishRoutes, type PublishRouteDeps } from './api.js';
import type { Config } from './config.js';
import { ROUTE_REFUSALS } from './errors.js';
import { sendRefusal } from './http.js';
import { createLogger } from './log.js';
import { isSequenced } from './membership.js';
import { createRoomPublish } from './publish.js';
import { publishingConnection, quit, writesTogether } from './redis/connections.js';
import { createRedisHistory } from './redis/history.js';
import { countConnections } from './redis/registry.js';
import { channelsOf, encodeFrame, nodeOfConnection, type FrameKind } from './redis/wire.js';
import { listen, loadUws } from './uws.js';

/** What the node hands the thread: its configuration, less the secrets it has no use for (publish-thread.ts). */
export interface PublishThreadData {
  readonly config: Config;
}

/** Messages to the node: listening (or not), then counts. */
export type PublishThreadMessage =
  | { readonly kind: 'listening'; readonly port: number }
  | { readonly kind: 'failed'; readonly error: string }
  | { readonly kind: 'counts'; readonly counts: ReadonlyArray<readonly [string, number]> };

/** A request that finds Redis not ready (starting, reconnecting, a master still connecting) waits this long for it, then fails as it would. */
const READY_WAIT_MS = 2000;
/** How often counts go to the node (they are read at its scrapes). */
const COUNTS_EVERY_MS = 250;
/** PUBLISHes handed to Redis and not answered yet; more are refused 503, as the node's broker drops past its backlog. */
const MAX_PENDING = 10_000;

const { config } = workerData as PublishThreadData;
const port = parentPort!;
const { topology, prefix } = config.redis!;
const log = createLogger(config.logLevel, { node_id: config.nodeId, thread: 'publish' });
// Not the node's id: the node must not take these frames for echoes of its own publishes.
const origin = `${config.nodeId}.publish`;
const name = `${prefix}${config.nodeId}:publish`;
const redis = publishingConnection(topology, name);
const { command, publish } = redis;
command.on('error', () => {}); // a refused publish answers 503; the node logs Redis's state
const channels = channelsOf(prefix, origin);

let pending = 0;
/** Resolves once Redis took the frame; rejects when it did not (unreachable, or MAX_PENDING waiting). */
const send = (channel: string, kind: FrameKind, target: string, payload: string, except?: string): Promise<unknown> => {
  if (pending >= MAX_PENDING) return Promise.reject(new Error('too many publishes waiting for Redis'));
  pending += 1;
  return publish(channel, encodeFrame(origin, kind, target, payload, except)).finally(() => (pending -= 1));
};

/** Counts since the last batch, by `metric label...`. */
const counts = new Map<string, number>();
const count = (key: string): void => void counts.set(key, (counts.get(key) ?? 0) + 1);
const flush = (): void => {
  if (counts.size === 0) return;
  port.postMessage({ kind: 'counts', counts: [...counts] } satisfies PublishThreadMessage);
  counts.clear();
};
const flushing = setInterval(flush, COUNTS_EVERY_MS);

/**
 * Runs `issue` at once when Redis is ready (a batch's commands still leave in one write), else in
 * arrival order once it is or READY_WAIT_MS passed; at most MAX_PENDING wait, the rest fail at once.
 */
const whenReady = <T>(issue: () => Promise<T>): Promise<T> => {
  if (redis.gate.open()) return issue();
  if (redis.gate.waiting() >= MAX_PENDING) return Promise.reject(new Error('too many publishes waiting for Redis'));
  return redis.gate.wait(READY_WAIT_MS).then(issue);
};

const history = createRedisHistory({ command, cluster: topology.mode === 'cluster', prefix, nodeId: origin, history: config.history });
const deps: PublishRouteDeps = {
  config,
  log,
  publish: createRoomPublish({
    sequenced: (room) => isSequenced({ config }, room),
    broadcast: (room, envelope, except) => whenReady(() => send(channels.room(room), 'r', room, envelope, except)),
    append: (room, head, key, except) => whenReady(() => history.append(room, head, key, except)),
  }),
  connections: (userIds, except) => whenReady(() => countConnections(command, prefix, userIds, except)),
  together: writesTogether(command),
  broker: {
    isUp: () => command.status === 'ready',
    // Every connection is reached through Redis, this node's own too: answered once Redis took it.
    sendToConnection: (connectionId, payload) =>
      whenReady(() => send(channels.node(nodeOfConnection(connectionId)), 'c', connectionId, payload)).then(
        () => true,
        () => false,
      ),
  },
  metrics: {
    published: (source) => count(`published ${source}`),
    duplicatePublish: () => count('duplicate'),
    apiRequest: (endpoint, status) => count(`request ${endpoint} ${status}`),
  },
};

const uws = loadUws(config.httpMaxHeadersSize);
const app = uws.uws.App();
addPublishRoutes(app, deps);
// Everything else is the internal port's (disconnect, subscribe, history, metrics...).
app.any('/*', (res) => sendRefusal(res, ROUTE_REFUSALS.not_found));

/**
 * Ends the thread by letting its loop run dry: the app with its open connections (a backend's
 * keep-alive ones included), the timer, Redis, the port to the node. Never terminated from outside:
 * a worker torn down with uWS handles open aborts the whole process.
 */
function close(): void {
  app.close();
  redis.gate.release();
  clearInterval(flushing);
  flush();
  void quit(command).finally(() => port.close());
}

// An error nobody caught ends this thread, not the node: /readyz says publish_thread down, INTERNAL_PORT still publishes.
const fail = (err: unknown): void => {
  log.error({ event: 'publish_thread_failed', err }, 'the publish thread failed: PUBLISH_PORT no longer answers');
  close();
};
process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);

listen(app, config.internalHost, config.publishPort!).then(
  (socket) => {
    port.postMessage({ kind: 'listening', port: uws.uws.us_socket_local_port(socket) } satisfies PublishThreadMessage);
    port.once('message', close);
  },
  (err: Error) => {
    port.postMessage({ kind: 'failed', error: err.message } satisfies PublishThreadMessage);
    close();
  },
);
