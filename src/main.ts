/**
 * `ws-edge serve`: configuration, logger, node, signals. A bad configuration exits 1 with one
 * line per problem. Without a JWT key outside production the node starts in dev mode: an
 * ephemeral secret, a ready-to-use dev token, the demo's routes and a few defaults for a first
 * look, all printed to stderr (never through the logger).
 */
import { ephemeralSecret, signToken } from './auth.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { DEMO_PATH, DEMO_ROOM, DEV_TOKEN_PATH, internalPublisher, reachableHost, type DevMode } from './demo.js';
import { WS_PATH } from './messages.js';
import { createLogger, type Logger } from './log.js';
import { compileRooms } from './rooms.js';
import { startNode, type EdgeNode } from './server.js';

/** Lifetime of the token printed at a zero-config start. */
const DEV_TOKEN_TTL_SECONDS = 24 * 3600;

/** What dev mode changed: the secret, the publish API key when it made one, the defaults it applied. */
interface DevStart {
  readonly secret: string;
  /** Made for this start and printed; undefined when PUBLISH_API_KEY is set. */
  readonly generatedKey: string | undefined;
  /** The public port stayed on loopback because HOST is unset. */
  readonly loopback: boolean;
  /** Presence and history turned on for the demo room because their variables are unset. */
  readonly presence: boolean;
  readonly history: boolean;
}

/**
 * Dev mode (no JWT_SECRET or JWT_PUBLIC_KEY_FILE; loadConfig refuses that in production): an
 * ephemeral HS256 secret, the public port on 127.0.0.1 unless HOST is set, the publish API on with
 * a key made per start unless PUBLISH_API_KEY is set, presence and history in channel:demo unless
 * WS_PRESENCE_ROOMS / WS_HISTORY_ROOMS are set.
 */
function withDevMode(config: Config, env: NodeJS.ProcessEnv): { config: Config; dev: DevStart | undefined } {
  if (config.jwt.secret !== undefined || config.jwt.publicKeyFile !== undefined || config.jwt.jwksUrl !== undefined) return { config, dev: undefined };
  const demo = compileRooms([DEMO_ROOM])!;
  const dev: DevStart = {
    secret: ephemeralSecret(),
    generatedKey: config.publishApiKey === undefined ? ephemeralSecret() : undefined,
    loopback: (env['HOST']?.trim() ?? '') === '',
    presence: config.presence.patterns.length === 0,
    history: config.history.patterns.length === 0,
  };
  return {
    config: {
      ...config,
      jwt: { ...config.jwt, secret: dev.secret, secrets: [dev.secret], algorithms: ['HS256'] },
      host: dev.loopback ? '127.0.0.1' : config.host,
      publishApiKey: config.publishApiKey ?? dev.generatedKey,
      presence: dev.presence ? { ...config.presence, patterns: [DEMO_ROOM], rooms: demo } : config.presence,
      history: dev.history ? { ...config.history, patterns: [DEMO_ROOM], rooms: demo } : config.history,
    },
    dev,
  };
}

function devToken(config: Config, secret: string): string {
  return signToken({
    secret,
    userId: 'dev',
    username: 'dev',
    rooms: ['*'],
    ttlSeconds: DEV_TOKEN_TTL_SECONDS,
    issuer: config.jwt.issuer,
    audience: config.jwt.audience,
  });
}

function printDevBanner(config: Config, internalPort: number, token: string, dev: DevStart): void {
  const http = `http://${reachableHost(config.host)}:${config.port}`;
  const url = `ws://${reachableHost(config.host)}:${config.port}${WS_PATH}`;
  const key = dev.generatedKey ?? '$PUBLISH_API_KEY';
  const publish = JSON.stringify({ room: DEMO_ROOM, type: 'message.new', data: { text: 'hello from the backend' }, sender: 'backend' });
  const defaults = [
    ...(dev.loopback ? ['the public port on 127.0.0.1 only (HOST=0.0.0.0 opens it)'] : []),
    ...(dev.generatedKey !== undefined ? ['the publish API on with the key above'] : []),
    ...(dev.presence ? [`presence in ${DEMO_ROOM} (WS_PRESENCE_ROOMS)`] : []),
    ...(dev.history ? [`history in ${DEMO_ROOM} (WS_HISTORY_ROOMS)`] : []),
  ];
  process.stderr.write(
    [
      '',
      'ws-edge dev mode: no JWT_SECRET or JWT_PUBLIC_KEY_FILE set, so an ephemeral HS256 secret was generated.',
      'It lives only as long as this process. Dev token (user "dev", all rooms, 24 h):',
      '',
      `  ${token}`,
      '',
      'Connect:',
      `  npx ws-edge client --url ${url} --token ${token}`,
      '',
      `Browser demo (dev mode only): ${http}${DEMO_PATH}`,
      `Tokens for other users (dev mode only): ${http}${DEV_TOKEN_PATH}?user=<name>`,
      '',
      dev.generatedKey !== undefined ? `Publish API key (dev, new each start): ${dev.generatedKey}` : 'Publish API key: the PUBLISH_API_KEY you set',
      `Publish into ${DEMO_ROOM} as a backend does:`,
      `  curl -sS http://${reachableHost(config.internalHost)}:${internalPort}/api/v1/publish -H "Authorization: Bearer ${key}" -H 'Content-Type: application/json' -d '${publish}'`,
      '',
      ...(defaults.length === 0 ? [] : [`Dev defaults, each while its variable is unset: ${defaults.join('; ')}.`, '']),
    ].join('\n') + '\n',
  );
}

export async function serve(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  let loaded: Config;
  try {
    loaded = loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const problem of err.problems) process.stderr.write(`ws-edge: invalid configuration: ${problem}\n`);
      process.exit(1);
    }
    throw err;
  }
  const { config, dev } = withDevMode(loaded, env);
  const log = createLogger(config.logLevel, { node_id: config.nodeId });

  // Installed before the node starts: a signal during start-up drains once the node exists.
  let node: EdgeNode | undefined;
  let stopping: string | undefined;
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));

  const devMode: DevMode | undefined = dev && {
    secret: dev.secret,
    issuer: config.jwt.issuer,
    audience: config.jwt.audience,
    publishAsBackend: dev.generatedKey === undefined ? undefined : internalPublisher({ host: config.internalHost, port: () => node?.internalPort, key: dev.generatedKey }),
    // Bound to loopback (by default, or by HOST): only a loopback Host header is answered.
    loopback: ['127.0.0.1', '::1', 'localhost'].includes(config.host),
  };
  try {
    node = await startNode(config, log, devMode === undefined ? {} : { dev: devMode });
  } catch (err) {
    log.fatal({ err }, 'start failed');
    log.flush();
    process.stderr.write(`ws-edge: ${(err as Error).message}\n`);
    process.exit(1);
  }
  logStart(log, { ...config, maxConnections: node.maxConnections, publishPort: node.publishPort }, node.port, node.internalPort, node.uws, dev !== undefined);
  if (dev !== undefined) printDevBanner({ ...config, port: node.port }, node.internalPort, devToken(config, dev.secret), dev);
  if (stopping !== undefined) drain(node, stopping);

  function stop(signal: string): void {
    stopping = signal;
    if (node !== undefined) drain(node, signal);
  }

  function drain(edge: EdgeNode, signal: string): void {
    log.info({ event: 'signal', signal }, 'shutting down');
    edge.shutdown().then(
      () => {
        log.flush();
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        log.flush();
        process.exit(1);
      },
    );
  }
}

function logStart(
  log: Logger,
  config: Config,
  port: number,
  internalPort: number,
  uws: { source: string; version: string; binary: string; droppedHandler: boolean },
  devSecret: boolean,
): void {
  log.info(
    {
      event: 'start',
      port,
      internal_port: internalPort,
      publish_port: config.publishPort ?? null,
      host: config.host,
      internal_host: config.internalHost,
      node_env: config.nodeEnv,
      uws: { package: uws.source, version: uws.version, binary: uws.binary, dropped_handler: uws.droppedHandler },
      node: process.version,
      broker: config.redis === undefined ? 'memory' : 'redis',
      redis: config.redis === undefined ? null : { mode: config.redis.topology.mode, prefix: config.redis.prefix, unsubscribe_delay_s: config.redis.unsubscribeDelay, slot_ttl_s: config.redis.seatTtl, probe_interval_s: config.redis.probeInterval, probe_timeout_s: config.redis.probeTimeout },
      publish_api: config.publishApiKey !== undefined,
      ready_requires_broker: config.readyRequiresBroker,
      jwt: {
        key: config.jwt.jwksUrl !== undefined ? 'jwks' : config.jwt.publicKeyFile !== undefined ? 'public_key_file' : devSecret ? 'ephemeral_dev_secret' : 'secret',
        secrets: config.jwt.secrets.length,
        keys_refresh_s: config.jwt.keySource.refreshSeconds,
        max_lifetime_s: config.jwt.maxLifetimeSeconds,
        algorithms: config.jwt.algorithms ?? 'derived from key',
        issuer: config.jwt.issuer ?? null,
        audience: config.jwt.audience ?? null,
        clock_tolerance_s: config.jwt.clockToleranceSeconds,
      },
      limits: {
        max_connections: config.maxConnections,
        max_connections_per_user: config.maxConnectionsPerUser,
        max_rooms_per_connection: config.maxRoomsPerConnection,
        message_max_size: config.messageMaxSize,
        http_max_headers_size: config.httpMaxHeadersSize,
        uws_max_payload_length: config.messageMaxSize * 2,
        max_backpressure: config.maxBackpressure,
        rate_limit: config.rateLimit,
        rate_burst: config.rateBurst,
        rate_limit_close_after: config.rateLimitCloseAfter,
        max_invalid_messages: config.maxInvalidMessages,
      },
      heartbeat: { interval_s: config.heartbeatInterval, uws_idle_timeout_s: config.heartbeatInterval, send_pings_automatically: true },
      room_access: config.roomAccess,
      allowed_origins: config.allowedOrigins,
      trusted_proxies: config.trustedProxies,
      max_connections_per_ip: config.maxConnectionsPerIp,
      auth_failure_limit: config.authFailureLimit,
      membership_events: config.membershipEvents,
      membership_events_max_members: config.membershipEventsMaxMembers,
      drain_timeout_s: config.drainTimeout,
      history: { rooms: config.history.patterns, size: config.history.size, ttl_s: config.history.ttl, recover_max: config.history.recoverMax },
      presence: { rooms: config.presence.patterns, ttl_s: config.presence.ttl, refresh_s: config.presence.refresh, grace_s: config.presence.grace, events_max_users: config.presence.eventsMaxUsers },
      signals: { names: [...config.signals.names], rate: config.signals.rate },
    },
    'ws-edge started',
  );
}
