/**
 * Builds one ws-edge node: the public app (WebSocket endpoint, health), the internal app (metrics,
 * health, the backend API), the broker (in-memory, or Redis when REDIS_URL is set), the per-user
 * connection limit, and the drain. `startNode` resolves once both ports listen.
 */
import { addApiRoutes, type PublishDeps } from './api.js';
import { createAnnouncer, createMemoryAnnouncements } from './announcements.js';
import { createAuthenticator } from './auth.js';
import { connectionCapacity, openFilesLimit } from './capacity.js';
import type { AccessChange, Broker, BrokerTarget, Payload } from './broker.js';
import { createMemoryBroker } from './broker-memory.js';
import type { Config } from './config.js';
import { createBehavior, type ConnectionContext } from './connection.js';
import { createDelivery, type Delivery } from './delivery.js';
import { CLOSES } from './errors.js';
import { createEvents, type Events } from './events.js';
import { createExpiryScheduler } from './expiry.js';
import type { History, SequencedDelivery } from './history.js';
import { createMemoryHistory } from './history-memory.js';
import type { PresenceStore } from './presence.js';
import { createMemoryPresence } from './presence-memory.js';
import { createPresenceTracker } from './presence-tracker.js';
import { WS_PATH } from './messages.js';
import { applyAccessChange, applyRevocation } from './access-changes.js';
import { createKeySource } from './key-source.js';
import { createRevocationList, MEMORY_REVOCATION_STORE, startRevocationReload, type KeptRevocation } from './revocation.js';
import { createRedisRevocationStore } from './redis/revocation.js';
import { addDemoRoutes, type DevMode } from './demo.js';
import { createRoomAuthorizer } from './room-auth.js';
import { addInternalRoutes, addPublicRoutes, type HealthSource, type NodeState } from './http.js';
import { createAddressCounts, createFailureLimiter, createLocalSeats, type ConnectionSeats, type LocalSeats } from './limits.js';
import { createMemoryLifecycle, createMemoryLog, NO_LIFECYCLE, type EventLog, type EventType, type Lifecycle } from './lifecycle.js';
import type { Logger } from './log.js';
import { createMetrics, type EventFate, type Metrics } from './metrics.js';
import { createClientAddress, withRelay } from './proxies.js';
import { createFallback } from './fallback.js';
import { createRedisBroker } from './redis/broker.js';
import { createRedisClients } from './redis/clients.js';
import { writesTogether } from './redis/connections.js';
import { createRedisHistory } from './redis/history.js';
import { createRedisAnnouncements, refreshAnnouncements } from './redis/announcements.js';
import { createRedisEventLog, createRedisLifecycle, streamKey } from './redis/lifecycle.js';
import { createRedisPresence } from './redis/presence.js';
import type { RedisClients } from './redis/links.js';
import { connectionCounter, createRedisSeats } from './redis/registry.js';
import { createMembership, isSequenced, type Membership } from './membership.js';
import { createRoomPublish, type RoomPublish } from './publish.js';
import { startPublishThread } from './publish-thread.js';
import { createBackendCaller } from './backend.js';
import { createSends } from './sends.js';
import { createMemorySendKeys } from './send-keys.js';
import { createRedisSendKeys } from './redis/send-keys.js';
import { closeWith, type GrantItem, type SessionSocket } from './session.js';
import { createSessionIndex, type SessionIndex } from './sessions.js';
import { createShutdown } from './shutdown.js';
import { createStreams, type Streams } from './streams.js';
import { startWebhooks, type Webhooks } from './webhooks.js';
import { createIngest } from './ingest.js';
import { startStreamIngest, type StreamIngest } from './redis/ingest.js';
import { createIngestQueue } from './redis/ingest-stream.js';
import { startOutbox, type Outbox } from './outbox.js';
import { listen, loadUws, type TemplatedApp, type us_listen_socket, type UwsBinding } from './uws.js';

export interface EdgeNode {
  readonly nodeId: string;
  readonly port: number;
  readonly internalPort: number;
  /** PUBLISH_PORT as listened on (the publish thread); undefined without it. */
  readonly publishPort: number | undefined;
  readonly metrics: Metrics;
  readonly broker: Broker;
  /** Server-side publishing: `publish(room, type, data, sender?)` and the product's event helpers. */
  readonly events: Events;
  readonly uws: UwsBinding;
  /** WS_MAX_CONNECTIONS in effect (the open-files limit less a margin when unset; 0: none). */
  readonly maxConnections: number;
  connections(): number;
  /** Ordered drain; idempotent; resolves before WS_DRAIN_TIMEOUT. */
  shutdown(): Promise<void>;
}

/**
 * What the broker does on this node: uWS topic publish, one socket, or closing a user's sockets;
 * sequenced rooms' events go to the streams, confirmations to the membership (both created after the broker they use).
 */
function brokerTarget(delivery: Delivery, sessions: SessionIndex, streams: () => Streams, membership: () => Membership, access: () => (change: AccessChange) => void, revoke: () => (kept: KeptRevocation) => void): BrokerTarget {
  return {
    changeAccess: (change) => access()(change),
    revoke: (kept) => revoke()(kept),
    deliver(room, payload, except) {
      const sender = except === undefined ? undefined : sessions.byConnection(except);
      if (sender === undefined) delivery.publish(room, payload);
      else delivery.publishExcept(sender, room, payload);
    },
    deliverSequenced: (room, epoch, offset, payload, except) => streams().deliver(room, epoch, offset, payload, except === undefined ? undefined : sessions.byConnection(except)),
    subscribed: (room) => membership().confirmed(room),
    deliverToConnection(connectionId, payload) {
      const ws = sessions.byConnection(connectionId);
      if (ws !== undefined) delivery.send(ws, payload);
    },
    disconnectUser(userId, code, reason) {
      const mine = sessions.byUser(userId);
      if (mine.length === 0) return;
      // What was published before the disconnect still reaches the user.
      delivery.flush();
      for (const ws of mine) ws.end(code, reason);
    },
  };
}

/** `node.events` through the room-publish seam: a sequenced room's failed append is counted (the helpers return nothing). */
function serverPublisher(publish: RoomPublish, metrics: Metrics): { publish(room: string, payload: string): void } {
  return {
    publish(room, payload) {
      publish(room, payload)?.catch(() => metrics.brokerPublishError('down'));
    },
  };
}

function connectionSeats(config: Config, local: LocalSeats, redis: RedisClients | undefined, sessions: SessionIndex, log: Logger): ConnectionSeats & { stop(): void } {
  if (redis === undefined) return { acquire: local.acquire, release: local.release, status: local.status, stop() {} };
  return createRedisSeats({
    redis: redis.command,
    prefix: config.redis!.prefix,
    maxPerUser: config.maxConnectionsPerUser,
    ttlSeconds: config.redis!.seatTtl,
    local,
    liveByUser: function* () {
      const byUser = new Map<string, string[]>();
      for (const ws of sessions.all()) {
        const { userId, connectionId } = ws.getUserData();
        const ids = byUser.get(userId);
        if (ids === undefined) byUser.set(userId, [connectionId]);
        else ids.push(connectionId);
      }
      yield* byUser;
    },
    log,
  });
}

/** Lifecycle events on Redis when the node has Redis (the stream beside their state), else in memory; and their webhook. */
function lifecycleOf(config: Config, redis: RedisClients | undefined, sessions: SessionIndex, metrics: Metrics, log: Logger): { lifecycle: Lifecycle; webhooks: Webhooks | undefined } {
  const { events } = config;
  const produced = (type: EventType): void => metrics.eventProduced(type);
  const dropped = (fate: EventFate, count: number): void => metrics.webhookEvents(fate, count);
  const webhooksOf = (log_: EventLog): Webhooks | undefined => (events.webhook === undefined ? undefined : startWebhooks(events.webhook, log_, metrics, log));
  if (redis === undefined) {
    const memory = createMemoryLog(events.maxlen, dropped);
    return { lifecycle: createMemoryLifecycle({ types: events.types, graceMs: events.graceMs, produced }, memory), webhooks: webhooksOf(memory) };
  }
  const stream = streamKey(config.redis!.prefix);
  const lifecycle = createRedisLifecycle({
    redis: redis.command,
    stream,
    nodeId: config.nodeId,
    types: events.types,
    graceMs: events.graceMs,
    ttlMs: config.redis!.seatTtl * 1000,
    maxlen: events.maxlen,
    produced,
    failed: () => metrics.eventWriteFailed(),
    connections: function* () {
      for (const ws of sessions.all()) {
        const { userId, connectionId } = ws.getUserData();
        yield [userId, connectionId];
      }
    },
    log,
  });
  return { lifecycle, webhooks: webhooksOf(createRedisEventLog(redis.command, stream, config.nodeId, dropped)) };
}

/** What ingestion needs: what a publish body needs, and the node's metrics for its own counts. */
type IngestDeps = PublishDeps & { readonly metrics: Metrics };

/** WS_STREAM: publish commands read from a Redis Stream, published through the API's checks (config.ts refuses it without Redis). */
function streamIngestOf(redis: RedisClients | undefined, deps: IngestDeps, log: Logger): StreamIngest | undefined {
  const { config, metrics } = deps;
  if (config.stream === undefined || redis === undefined) return undefined;
  log.info({ event: 'stream_ingest', stream: config.stream.key, dead: config.stream.dead, batch: config.stream.batch }, 'reading publish commands from the ingestion stream');
  const queue = createIngestQueue(redis.command, config.stream, config.nodeId);
  return startStreamIngest({ config: config.stream, queue, ingest: createIngest(deps, 'stream'), together: writesTogether(redis.command), metrics, log });
}

/** The ingestion sources configured: the stream, and the outbox (whose missing table refuses the start: one line, main.ts exits 1). */
async function ingestionOf(redis: RedisClients | undefined, deps: IngestDeps, log: Logger): Promise<{ stream: StreamIngest | undefined; outbox: Outbox | undefined }> {
  const { config, metrics } = deps;
  const outbox = config.outbox === undefined ? undefined : await startOutbox(config.outbox, { ingest: createIngest(deps, 'outbox'), metrics, log, nodeId: config.nodeId });
  return { stream: streamIngestOf(redis, deps, log), outbox };
}

/** Presence in Redis when the node has Redis (every topology: the keys sit in the room channel's slot), else in memory. */
function presenceStore(config: Config, redis: RedisClients | undefined): PresenceStore {
  if (redis === undefined) return createMemoryPresence();
  const keyLifeMs = (config.presence.ttl + config.presence.grace + 1) * 1000;
  return createRedisPresence({ command: redis.command, prefix: config.redis!.prefix, nodeId: config.nodeId, keyLifeMs });
}

/** The public and internal ports, and the publish thread's (PUBLISH_PORT): all of them, or none. */
async function openPorts(uws: UwsBinding, apps: { app: TemplatedApp; internal: TemplatedApp }, config: Config, { metrics, log }: { metrics: Metrics; log: Logger }) {
  const close = (...sockets: us_listen_socket[]) => sockets.forEach((s) => uws.uws.us_listen_socket_close(s));
  const publicSocket = await listen(apps.app, config.host, config.port);
  const internalSocket = await listen(apps.internal, config.internalHost, config.internalPort).catch((err: unknown) => {
    close(publicSocket);
    throw err;
  });
  const publishThread =
    config.publishPort === undefined
      ? undefined
      : await startPublishThread(config, metrics, log).catch((err: unknown) => {
          close(publicSocket, internalSocket);
          throw err;
        });
  return { publicSocket, internalSocket, port: uws.uws.us_socket_local_port(publicSocket), internalPort: uws.uws.us_socket_local_port(internalSocket), publishThread };
}

export interface NodeOptions {
  /** Dev mode: serve the browser demo, /dev/token and /dev/publish on the public port (src/demo.ts). */
  readonly dev?: DevMode;
}

export async function startNode(configured: Config, log: Logger, options: NodeOptions = {}): Promise<EdgeNode> {
  const capacity = connectionCapacity(configured.maxConnections, openFilesLimit());
  if (capacity.warning !== undefined) log.warn({ event: 'max_connections_unsafe' }, capacity.warning);
  const config: Config = { ...configured, maxConnections: capacity.max };
  const uws = loadUws(config.httpMaxHeadersSize);
  const metrics = createMetrics();
  const keySource = createKeySource(config.jwt, metrics, log);
  const revocations = createRevocationList(config.revocationsMax, metrics);
  const auth = createAuthenticator(config.jwt, { keys: keySource, revocations });
  const app = uws.uws.App();
  const internal = uws.uws.App();
  const localSeats = createLocalSeats(config.maxConnectionsPerUser);
  const sessions = createSessionIndex(localSeats.connectionsOf);
  const delivery = createDelivery(app);
  let state: NodeState = 'starting';
  // Starts at the clock so a restarted node with a fixed NODE_ID never reuses a connection id.
  let sequence = Date.now();

  const redis = config.redis === undefined ? undefined : createRedisClients(config.redis, config.nodeId);
  const target = { ...brokerTarget(delivery, sessions, () => streams, () => membership, () => accessChange, () => revoke), forwarded: (id: string, payload: Payload) => fallback.forwarded(id, payload) };
  const redisBroker = redis === undefined ? undefined : createRedisBroker({ config, target, log, metrics, redis });
  const broker: Broker = redisBroker ?? createMemoryBroker(target);
  const sequenced: SequencedDelivery = (...event) => target.deliverSequenced(...event);
  const history: History =
    redis === undefined ? createMemoryHistory(config.history, sequenced) : createRedisHistory({ command: redis.command, cluster: redis.mode === 'cluster', prefix: config.redis!.prefix, nodeId: config.nodeId, history: config.history });
  const streams = createStreams({ history, broker, delivery, metrics, log, members: (room) => app.numSubscribers(room), recoverMax: config.history.recoverMax });
  const presence = createPresenceTracker({ config: config.presence, store: presenceStore(config, redis), broker, metrics, log });
  metrics.presenceEntriesFrom(presence.entries);
  const seats = connectionSeats(config, localSeats, redis, sessions, log);
  const { lifecycle, webhooks } = config.events.types.size === 0 ? { lifecycle: NO_LIFECYCLE, webhooks: undefined } : lifecycleOf(config, redis, sessions, metrics, log);
  const publish = createRoomPublish({
    sequenced: (room) => isSequenced({ config }, room),
    broadcast: (room, envelope, except) => broker.publish(room, envelope, except),
    append: (room, head, key, except) => history.append(room, head, key, except),
  });
  const events = createEvents(serverPublisher(publish, metrics), () => metrics.published('server'));
  const expiry = createExpiryScheduler<SessionSocket>((ws) => {
    if (ws.getUserData().closed) return;
    metrics.policyClose('token_expired');
    closeWith(ws, CLOSES.token_lapsed);
  });

  const roomAuth = config.roomAuth === undefined ? undefined : createRoomAuthorizer(config.roomAuth, metrics, log);
  const grants = createExpiryScheduler<GrantItem>((item) => membership.grantExpired(item));
  const announcer = createAnnouncer({ store: redis === undefined ? createMemoryAnnouncements() : createRedisAnnouncements(redis.command, config.redis!.prefix, config.redis!.seatTtl), broker, metrics, cap: config.membershipEventsMaxMembers, log });
  const announcedRefresh = redis === undefined ? undefined : refreshAnnouncements(redis.command, config.redis!.prefix, config.redis!.seatTtl, announcer, log);
  const membership = createMembership({ config, auth, roomAuth, metrics, broker, delivery, app, streams, presence, grants, lifecycle, announcer });
  const backend = config.backend;
  const caller = (kind: 'publish' | 'rpc', url: string | undefined) => (backend === undefined || url === undefined ? undefined : createBackendCaller(kind, { url, key: backend.key, timeoutMs: backend.timeoutMs, concurrency: backend.concurrency }, metrics, log));
  const keys = redis === undefined || redisBroker === undefined ? createMemorySendKeys((room, envelope) => broker.publish(room, envelope)) : createRedisSendKeys(redis.command, redisBroker);
  const sends = createSends({ config, metrics, delivery, streams, publish, keys, proxy: caller('publish', backend?.publish?.url), isSequenced: (room) => isSequenced({ config }, room) });
  const authFailures = createFailureLimiter(config.authFailureLimit);
  const fallback = createFallback({ config, log, registry: metrics.registry, auth, broker, authFailures, app, port: () => port });
  const ctx: ConnectionContext = {
    config,
    auth,
    metrics,
    broker,
    delivery,
    app,
    expiry,
    history,
    streams,
    presence,
    log,
    seats,
    sessions,
    isDraining: () => state === 'draining',
    droppedHandler: uws.droppedHandler,
    nextConnectionId: () => `${config.nodeId}.${(++sequence).toString(36)}`,
    clientAddress: withRelay(createClientAddress(config.trustedProxies), fallback.relay),
    addressCounts: createAddressCounts(config.maxConnectionsPerIp),
    authFailures,
    roomAuth,
    membership,
    publish,
    sends,
    rpc: caller('rpc', backend?.rpcUrl),
    lifecycle,
  };
  const accessChange = (change: AccessChange): void => applyAccessChange(ctx, sessions, change);
  const revoke = (kept: KeptRevocation): void => {
    if (!revocations.add(kept)) log.warn({ event: 'revocations_full', max: config.revocationsMax }, 'WS_REVOCATIONS_MAX reached: a revocation is applied to live connections only');
    applyRevocation(ctx, sessions, kept.rule);
  };
  const revocationStore = redis === undefined ? MEMORY_REVOCATION_STORE : createRedisRevocationStore(redis.command, config.redis!.prefix, config.revocationsMax);
  const revocationReload = startRevocationReload(revocationStore, revocations, revoke, log);
  await Promise.all([keySource.ready, revocationReload.first]);
  app.ws<never>(WS_PATH, createBehavior(ctx) as never);
  const health: HealthSource = {
    state: () => (state === 'ready' && config.readyRequiresBroker && !broker.isUp() ? 'broker_down' : state),
    details: () => ({ node_id: config.nodeId, broker: broker.kind === 'memory' ? 'memory' : broker.isUp() ? 'up' : 'down', connections: sessions.size, ...(streamIngest !== undefined && { ingest: streamIngest.health() }), ...(outbox !== undefined && { outbox: outbox.state() }), ...(publishThread !== undefined && { publish_thread: publishThread.alive() ? 'up' : 'down' }) }),
  };
  metrics.readinessFrom(() => health.state() === 'ready');
  if (options.dev !== undefined) addDemoRoutes(app, options.dev);
  addPublicRoutes(app, health);
  const connectionsOf = connectionCounter(redis?.command, config.redis?.prefix ?? '', localSeats.connectionsOf);
  addApiRoutes(internal, { config, broker, revocations: { store: revocationStore, list: revocations }, events, publish, connections: connectionsOf, status: (userIds) => seats.status(userIds), together: redis === undefined ? undefined : writesTogether(redis.command), presence, history, metrics, log });
  addInternalRoutes(internal, health, metrics.registry);
  // After the API's routes, before listening; both publish through the API's checks.
  const { stream: streamIngest, outbox } = await ingestionOf(redis, { config, broker, publish, connections: connectionsOf, together: redis === undefined ? undefined : writesTogether(redis.command), metrics }, log);

  const { publicSocket, internalSocket, port, internalPort, publishThread } = await openPorts(uws, { app, internal }, config, { metrics, log });
  state = 'ready';

  const shutdown = createShutdown({
    log,
    sessions,
    drainTimeoutMs: config.drainTimeout * 1000,
    startDraining: () => {
      state = 'draining';
    },
    stopListening: () => uws.uws.us_listen_socket_close(publicSocket),
    closeBroker: async () => {
      await publishThread?.stop();
      expiry.stop();
      keySource.close();
      revocations.close();
      revocationReload.stop();
      grants.stop();
      seats.stop();
      announcedRefresh?.stop();
      lifecycle.stop();
      await streamIngest?.stop();
      await outbox?.stop();
      await webhooks?.stop();
      presence.stop();
      await broker.close();
    },
    stopInternal: () => uws.uws.us_listen_socket_close(internalSocket),
  });

  return {
    nodeId: config.nodeId,
    port,
    internalPort,
    publishPort: publishThread?.port,
    metrics,
    broker,
    events,
    uws,
    maxConnections: capacity.max,
    connections: () => sessions.size,
    shutdown,
  };
}
