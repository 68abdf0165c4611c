/**
 * Builds one ws-edge node: the public app (WebSocket endpoint, health), the internal app (metrics,
 * health), the broker, and the drain. `startNode` resolves once both ports listen.
 */
import { createAuthenticator } from './auth.js';
import { createBroker, type Broker } from './broker.js';
import type { Config } from './config.js';
import { createBehavior } from './connection.js';
import { createEvents, type Events } from './events.js';
import { createExpiryScheduler } from './expiry.js';
import { WS_PATH } from './handshake.js';
import { CloseCode } from './errors.js';
import { addInternalRoutes, addPublicRoutes, type HealthSource, type NodeState } from './http.js';
import { createLocalSlots } from './limits.js';
import type { Logger } from './log.js';
import { createMetrics, type Metrics } from './metrics.js';
import type { SessionSocket } from './session.js';
import { createShutdown } from './shutdown.js';
import { loadUws, type TemplatedApp, type us_listen_socket, type UwsBinding } from './uws.js';

export interface EdgeNode {
  readonly nodeId: string;
  readonly port: number;
  readonly internalPort: number;
  readonly metrics: Metrics;
  readonly broker: Broker;
  /** Server-side publishing: `publish(room, type, data, sender?)` and the product's event helpers. */
  readonly events: Events;
  readonly uws: UwsBinding;
  connections(): number;
  /** Ordered drain; idempotent; resolves before WS_DRAIN_TIMEOUT. */
  shutdown(): Promise<void>;
}

function listen(uws: UwsBinding, app: TemplatedApp, host: string, port: number): Promise<us_listen_socket> {
  return new Promise((resolve, reject) => {
    app.listen(host, port, (socket) => {
      if (socket) resolve(socket);
      else reject(new Error(`cannot listen on ${host}:${port}`));
    });
  });
}

export async function startNode(config: Config, log: Logger): Promise<EdgeNode> {
  const uws = loadUws();
  const auth = createAuthenticator(config.jwt);
  const metrics = createMetrics();
  const app = uws.uws.App();
  const internal = uws.uws.App();
  const live = new Set<SessionSocket>();
  let state: NodeState = 'starting';
  let sequence = 0;

  const broker = createBroker(config, (room, payload) => app.publish(room, payload, false, false));
  const events = createEvents(broker, () => metrics.published('server'));
  const expiry = createExpiryScheduler<SessionSocket>((ws) => {
    if (ws.getUserData().closed) return;
    metrics.policyClose('token_expired');
    ws.end(CloseCode.UNAUTHORIZED, 'token expired');
  });

  app.ws<never>(
    WS_PATH,
    createBehavior({
      config,
      auth,
      metrics,
      broker,
      app,
      expiry,
      log,
      slots: createLocalSlots(config.maxConnectionsPerUser),
      live,
      isDraining: () => state === 'draining',
      droppedHandler: uws.droppedHandler,
      nextConnectionId: () => `${config.nodeId}.${(++sequence).toString(36)}`,
    }) as never,
  );
  const health: HealthSource = {
    state: () => state,
    details: () => ({ node_id: config.nodeId, broker: broker.kind, connections: live.size }),
  };
  addPublicRoutes(app, health);
  addInternalRoutes(internal, health, metrics.registry);

  const publicSocket = await listen(uws, app, config.host, config.port);
  const internalSocket = await listen(uws, internal, config.internalHost, config.internalPort).catch((err: unknown) => {
    uws.uws.us_listen_socket_close(publicSocket);
    throw err;
  });
  const port = uws.uws.us_socket_local_port(publicSocket);
  const internalPort = uws.uws.us_socket_local_port(internalSocket);
  state = 'ready';

  const shutdown = createShutdown({
    log,
    live,
    drainTimeoutMs: config.drainTimeout * 1000,
    startDraining: () => {
      state = 'draining';
    },
    stopListening: () => uws.uws.us_listen_socket_close(publicSocket),
    closeBroker: async () => {
      expiry.stop();
      await broker.close();
    },
    stopInternal: () => uws.uws.us_listen_socket_close(internalSocket),
  });

  return {
    nodeId: config.nodeId,
    port,
    internalPort,
    metrics,
    broker,
    events,
    uws,
    connections: () => live.size,
    shutdown,
  };
}
