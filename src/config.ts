/**
 * All configuration comes from the environment, through one typed table. Every variable is
 * validated at start; all problems are reported together, one line each, naming the variable.
 * The same table is in README.md and .env.example (a test keeps the three in step).
 */
import { randomBytes } from 'node:crypto';
import { isAddressOrCidr } from './proxies.js';
import { isPublishableType } from './protocol.js';
import { LIFECYCLE_TYPES, type EventType } from './lifecycle.js';
import { compileRooms, NO_ROOMS, type RoomPatterns, type RoomAccess } from './rooms.js';
import type { WebhookConfig } from './webhooks.js';

export type { RoomAccess };

export interface JwtConfig {
  /** The current HMAC secret (HS256/384/512): the first of JWT_SECRET, the one tokens are minted with. */
  readonly secret: string | undefined;
  /** Every accepted HMAC secret, current first (JWT_SECRET is comma-separated: current,previous). */
  readonly secrets: readonly string[];
  /** Path of a file of one or more PEM public keys (RS256, ES256, EdDSA...), re-read every JWT_KEYS_REFRESH. */
  readonly publicKeyFile: string | undefined;
  /** A JWKS URL (https:// in production): keys chosen by `kid`. */
  readonly jwksUrl: string | undefined;
  /** How a key file or JWKS is refreshed, and the caps on what it may hold. */
  readonly keySource: KeySourceConfig;
  /** Seconds: a token whose `exp` is further away than this (plus the clock tolerance) is refused; revocations are kept this long. */
  readonly maxLifetimeSeconds: number;
  /** Narrows the algorithms derived from the key; undefined means all that fit the key. */
  readonly algorithms: readonly string[] | undefined;
  readonly issuer: string | undefined;
  readonly audience: string | undefined;
  readonly clockToleranceSeconds: number;
}

/** JWT_KEYS_*: the refresh of a key file or JWKS (keys.ts, jwks.ts). */
export interface KeySourceConfig {
  /** Seconds between refreshes of the key set (a failed one keeps the last good set). */
  readonly refreshSeconds: number;
  /** Seconds: a token with an unknown `kid` refetches the set at most once per this interval. */
  readonly unknownKidSeconds: number;
  /** Bytes: a larger JWKS answer or key file is refused. */
  readonly maxBytes: number;
  /** A set with more keys than this is refused. */
  readonly maxKeys: number;
  /** Milliseconds a JWKS fetch may take. */
  readonly timeoutMs: number;
}

export interface Config {
  readonly nodeEnv: string;
  readonly production: boolean;
  readonly nodeId: string;
  readonly host: string;
  readonly port: number;
  readonly internalHost: string;
  readonly internalPort: number;
  /** PUBLISH_PORT: the publish API also served by its own thread on INTERNAL_HOST (publish-thread.ts); undefined: not. */
  readonly publishPort: number | undefined;
  readonly logLevel: string;
  readonly jwt: JwtConfig;
  /** Peers whose X-Forwarded-For is believed (IPs or CIDRs); empty: the socket address is the client. */
  readonly trustedProxies: readonly string[];
  /** Connections per client address; 0 means unlimited. */
  readonly maxConnectionsPerIp: number;
  /** Failed authentications per client address per minute before HTTP 429; 0 turns the limiter off. */
  readonly authFailureLimit: number;
  /** Empty: any origin. Requests without an Origin header (non-browser clients) are always allowed. */
  readonly allowedOrigins: readonly string[];
  readonly roomAccess: RoomAccess;
  /** WS_ROOM_ACCESS=callback: the backend that authorizes joins. */
  readonly roomAuth: RoomAuthConfig | undefined;
  readonly backend: BackendConfig | undefined;
  /** WS_MAX_CONNECTIONS; 0 means unlimited; undefined (unset): the open-files limit less a margin (capacity.ts), resolved at start. */
  readonly maxConnections: number | undefined;
  readonly maxConnectionsPerUser: number;
  readonly maxRoomsPerConnection: number;
  /** Seconds; also the uWS idleTimeout (see README "Heartbeat"). */
  readonly heartbeatInterval: number;
  /** Bytes; a frame of exactly this size is accepted. */
  readonly messageMaxSize: number;
  /** uWS's cap on an upgrade request's headers (its own variable, read when the binding loads). */
  readonly httpMaxHeadersSize: number;
  /** Bytes of unsent data per socket before it is closed as a slow consumer. */
  readonly maxBackpressure: number;
  /** Sustained client frames per second (token bucket refill rate). */
  readonly rateLimit: number;
  /** Token bucket size: frames a client may send at once. */
  readonly rateBurst: number;
  /** Rate-limited frames within RATE_STRIKE_WINDOW_MS after which the socket is closed with 4429. */
  readonly rateLimitCloseAfter: number;
  /** Invalid messages within INVALID_WINDOW_MS after which the socket is closed with 1008. */
  readonly maxInvalidMessages: number;
  readonly membershipEvents: boolean;
  /** user_joined/user_left are not sent to rooms with more local members than this. */
  readonly membershipEventsMaxMembers: number;
  /** Seconds over which draining sockets are closed; the process exits before it ends. */
  readonly drainTimeout: number;
  readonly history: HistoryConfig;
  readonly presence: PresenceConfig;
  /** Lifecycle events and signals for the backend (src/lifecycle.ts), and their webhook. */
  readonly events: EventsConfig;
  readonly signals: SignalConfig;
  readonly redis: RedisConfig | undefined;
  /** WS_STREAM: publish commands read from a Redis Stream (src/redis/ingest.ts); undefined: off. */
  readonly stream: StreamConfig | undefined;
  /** WS_OUTBOX_URL: publish commands read from a PostgreSQL outbox table (src/outbox.ts); undefined: off. */
  readonly outbox: OutboxConfig | undefined;
  /** Bearer key of the internal publish/disconnect API; the API is off when unset. */
  readonly publishApiKey: string | undefined;
  /** WS_REVOCATIONS_MAX: revocations kept at once (each lives JWT_MAX_LIFETIME at most); a revoke past it is refused. */
  readonly revocationsMax: number;
  /** /readyz answers 503 while the broker is down (default: 200 with "broker":"down"). */
  readonly readyRequiresBroker: boolean;
}

/** Sequenced rooms: their events carry a position and are kept for recovery (README "Delivery guarantee"). */
export interface HistoryConfig {
  /** WS_HISTORY_ROOMS as given (logged at start)… */
  readonly patterns: readonly string[];
  /** …and compiled like a `rooms` claim; NO_ROOMS (the default) sequences no room. */
  readonly rooms: RoomPatterns;
  /** Events kept per room. */
  readonly size: number;
  /** Seconds without a publish after which a room's history and position are dropped (a new epoch follows). */
  readonly ttl: number;
  /** The most events one recovery replays; a client further behind gets `recovered: false`. */
  readonly recoverMax: number;
}

/** Client messages and RPC through the product backend (WS_PUBLISH_PROXY_URL, WS_RPC_URL); undefined when neither is set. */
export interface BackendConfig {
  /** WS_BACKEND_KEY, sent as `Authorization: Bearer <key>`. */
  readonly key: string;
  /** WS_BACKEND_TIMEOUT: one deadline for the wait for a turn and the call. */
  readonly timeoutMs: number;
  /** WS_BACKEND_CONCURRENCY: calls in flight per node and kind. */
  readonly concurrency: number;
  /** WS_BACKEND_MAX_PER_CONNECTION: one connection's calls in flight (sends through the proxy and rpc). */
  readonly perConnection: number;
  readonly publish: { readonly url: string; readonly patterns: readonly string[]; readonly rooms: RoomPatterns; readonly types: ReadonlySet<string> } | undefined;
  readonly rpcUrl: string | undefined;
}

/** What the backend hears (README "Lifecycle events and webhooks"). */
export interface EventsConfig {
  /** WS_EVENTS (and `signal` when WS_SIGNALS_TO_BACKEND names any); empty: no events. */
  readonly types: ReadonlySet<EventType>;
  /** WS_SIGNALS_TO_BACKEND: signals appended as `signal` events, sender's identity included. */
  readonly signals: ReadonlySet<string>;
  /** WS_EVENTS_GRACE: how long a user or room stays gone before user.offline / room.vacated. */
  readonly graceMs: number;
  /** WS_EVENTS_MAXLEN: the stream's cap (approximate), and the memory queue's. */
  readonly maxlen: number;
  readonly webhook: WebhookConfig | undefined;
}

/** PostgreSQL outbox ingestion (README "Ingestion: PostgreSQL outbox", src/outbox.ts). */
export interface OutboxConfig {
  /** WS_OUTBOX_URL: postgres:// URL; never logged (it may hold a password). */
  readonly url: string;
  /** WS_OUTBOX_TABLE: the outbox table; `<table>_dead` is its dead letter and `<table>` its notification channel. */
  readonly table: string;
  /** WS_OUTBOX_BATCH: rows claimed per transaction at most. */
  readonly batch: number;
  /** WS_OUTBOX_POLL: milliseconds between claims when no notification came. */
  readonly pollMs: number;
  /** WS_OUTBOX_POOL: connections for claims (partitions published side by side), besides the one that LISTENs and holds the locks. */
  readonly pool: number;
  /** WS_OUTBOX_TIMEOUT: milliseconds, the connect timeout and statement_timeout of every connection. */
  readonly timeoutMs: number;
}

/** Redis Stream ingestion (README "Ingestion: Redis Stream"): keys as given, not under REDIS_PREFIX (the product writes them). */
export interface StreamConfig {
  /** WS_STREAM: the stream the product appends publish commands to. */
  readonly key: string;
  /** WS_STREAM_BATCH: entries read and published per round. */
  readonly batch: number;
  /** WS_STREAM_DEAD: where malformed entries go, with the reason (default `<stream>:dead`). */
  readonly dead: string;
  /** WS_STREAM_DEAD_MAXLEN: the dead letter's cap (approximate); the oldest go first. */
  readonly deadMaxlen: number;
}

/** The authorization callback (WS_ROOM_ACCESS=callback). */
export interface RoomAuthConfig {
  readonly url: string;
  /** Sent as `Authorization: Bearer <key>`: the backend's proof that the call is ours. */
  readonly key: string;
  readonly timeoutMs: number;
  /** Calls in flight per node at most; more wait their turn. */
  readonly concurrency: number;
  /** Seconds an allow (unless the answer says `ttl`) and a deny are cached per user and room. */
  readonly allowTtl: number;
  readonly denyTtl: number;
}

/** Presence rooms: who is in them across the cluster (docs/WEBSOCKET_API.md "Presence"). */
export interface PresenceConfig {
  /** WS_PRESENCE_ROOMS as given… */
  readonly patterns: readonly string[];
  /** …and compiled; NO_ROOMS (the default) tracks no room. */
  readonly rooms: RoomPatterns;
  /** Seconds an entry lives without a refresh from its node. */
  readonly ttl: number;
  /** Seconds between a node's refreshes of its entries (and sweeps of expired ones). */
  readonly refresh: number;
  /** Seconds an entry outlives an abnormal close or a drain (1006, 1012), so a quick reconnect does not flap. */
  readonly grace: number;
  /** presence.join/presence.leave go only to rooms with at most this many present users. */
  readonly eventsMaxUsers: number;
}

/** Signals: ephemeral client events (typing, read receipts). */
export interface SignalConfig {
  /** Allowed names; empty: signals are off. */
  readonly names: ReadonlySet<string>;
  /** Signals per second per connection (a bucket of the same size), inside the frame rate limit. */
  readonly rate: number;
}

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** Where Redis is: one server (REDIS_URL), a Redis Cluster, or a Sentinel-managed master. */
export type RedisTopology =
  | { readonly mode: 'standalone'; readonly url: string }
  | { readonly mode: 'cluster'; readonly nodes: readonly HostPort[] }
  | { readonly mode: 'sentinel'; readonly sentinels: readonly HostPort[]; readonly name: string };

export interface RedisConfig {
  readonly topology: RedisTopology;
  /** Namespaces every key and channel, so deployments can share one Redis. */
  readonly prefix: string;
  /** Seconds a room stays subscribed after its last local member left. */
  readonly unsubscribeDelay: number;
  /** Seconds a connection's registry entry lives unless its node refreshes it. */
  readonly seatTtl: number;
  /** Seconds of subscriber silence after which the node probes its own link. */
  readonly probeInterval: number;
  /** Seconds a probe may take before the subscriber connection is rebuilt. */
  readonly probeTimeout: number;
}

/** Window of the rate-limit strike counter (WS_RATE_LIMIT_CLOSE_AFTER). */
export const RATE_STRIKE_WINDOW_MS = 10_000;
/** Window of the invalid-message counter (WS_MAX_INVALID_MESSAGES). */
export const INVALID_WINDOW_MS = 60_000;

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(problems.join('\n'));
    this.name = 'ConfigError';
  }
}

type Env = Readonly<Record<string, string | undefined>>;

interface Reader {
  str(name: string, fallback: string): string;
  optional(name: string): string | undefined;
  int(name: string, fallback: number, min: number, max: number): number;
  bool(name: string, fallback: boolean): boolean;
  oneOf<T extends string>(name: string, fallback: T, allowed: readonly T[]): T;
  list(name: string): string[];
}

function reader(env: Env, problems: string[]): Reader {
  const raw = (name: string): string | undefined => {
    const value = env[name]?.trim();
    return value === undefined || value === '' ? undefined : value;
  };
  return {
    str: (name, fallback) => raw(name) ?? fallback,
    optional: raw,
    int(name, fallback, min, max) {
      const value = raw(name);
      if (value === undefined) return fallback;
      if (!/^-?\d+$/.test(value)) {
        problems.push(`${name}: "${value}" is not an integer`);
        return fallback;
      }
      const n = Number(value);
      if (n < min || n > max) problems.push(`${name}: ${n} is outside ${min}..${max}`);
      return n;
    },
    bool(name, fallback) {
      const value = raw(name)?.toLowerCase();
      if (value === undefined) return fallback;
      if (['true', '1', 'yes', 'on'].includes(value)) return true;
      if (['false', '0', 'no', 'off'].includes(value)) return false;
      problems.push(`${name}: "${value}" is not a boolean (true/false)`);
      return fallback;
    },
    oneOf(name, fallback, allowed) {
      const value = raw(name);
      if (value === undefined) return fallback;
      if ((allowed as readonly string[]).includes(value)) return value as (typeof allowed)[number];
      problems.push(`${name}: "${value}" is not one of ${allowed.join(', ')}`);
      return fallback;
    },
    list(name) {
      return (raw(name) ?? '')
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '');
    },
  };
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const HMAC_ALGORITHMS = ['HS256', 'HS384', 'HS512'];
const PUBLIC_KEY_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];

/** uWS accepts idleTimeout 0 or 8..960 seconds; WS_HEARTBEAT_INTERVAL maps onto it directly. */
const HEARTBEAT_MIN = 8;
const HEARTBEAT_MAX = 960;
/**
 * The official uWS build refuses an upgrade whose headers pass 4 KiB by default (HTTP 431), which a
 * token of about 3.8 KB already does. 16 KiB fits the longest token accepted (8192 characters) with
 * room for cookies and the other headers.
 */
export const DEFAULT_HTTP_MAX_HEADERS_SIZE = 16_384;

/** uWS keeps a whole message in memory; 64 MiB keeps its hard ceiling (2x) far below 2^31. */
const MESSAGE_MAX_SIZE_LIMIT = 64 * 1024 * 1024;

export function loadConfig(env: Env = process.env): Config {
  const problems: string[] = [];
  const r = reader(env, problems);

  const nodeEnv = r.str('NODE_ENV', 'development');
  const production = nodeEnv === 'production';
  const messageMaxSize = r.int('WS_MESSAGE_MAX_SIZE', 1_048_576, 1024, MESSAGE_MAX_SIZE_LIMIT);
  const maxBackpressure = r.int('WS_MAX_BACKPRESSURE', 4_194_304, 1024, 1024 * 1024 * 1024);
  if (maxBackpressure <= messageMaxSize) {
    problems.push(`WS_MAX_BACKPRESSURE: ${maxBackpressure} must be larger than WS_MESSAGE_MAX_SIZE (${messageMaxSize})`);
  }
  const port = r.int('PORT', 8080, 0, 65535);
  const internalPort = r.int('INTERNAL_PORT', 9090, 0, 65535);
  if (port !== 0 && port === internalPort) problems.push(`INTERNAL_PORT: must differ from PORT (${port})`);
  const publishPort = r.optional('PUBLISH_PORT') === undefined ? undefined : r.int('PUBLISH_PORT', 0, 0, 65535);
  if (publishPort !== undefined && publishPort !== 0 && (publishPort === port || publishPort === internalPort)) problems.push('PUBLISH_PORT: must differ from PORT and INTERNAL_PORT');
  const nodeId = r.str('NODE_ID', randomBytes(4).toString('hex'));
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(nodeId)) problems.push('NODE_ID: use 1-32 characters of [A-Za-z0-9_-]');
  const rateLimit = r.int('WS_RATE_LIMIT', 20, 1, 100_000);
  const rateBurst = r.int('WS_RATE_BURST', 40, 1, 100_000);
  const heartbeatInterval = r.int('WS_HEARTBEAT_INTERVAL', 30, HEARTBEAT_MIN, HEARTBEAT_MAX);

  const config: Config = {
    nodeEnv,
    production,
    nodeId,
    host: r.str('HOST', '0.0.0.0'),
    port,
    internalHost: r.str('INTERNAL_HOST', '127.0.0.1'),
    internalPort,
    publishPort,
    logLevel: r.oneOf('LOG_LEVEL', 'info', LOG_LEVELS),
    jwt: readJwt(r, problems, production),
    allowedOrigins: r.list('WS_ALLOWED_ORIGINS'),
    trustedProxies: readTrustedProxies(r, problems),
    maxConnectionsPerIp: r.int('WS_MAX_CONNECTIONS_PER_IP', 0, 0, 10_000_000),
    authFailureLimit: r.int('WS_AUTH_FAILURE_LIMIT', 60, 0, 1_000_000),
    roomAccess: r.oneOf<RoomAccess>('WS_ROOM_ACCESS', 'token', ['token', 'open', 'callback']),
    roomAuth: readRoomAuth(r, problems),
    backend: readBackend(r, problems),
    maxConnections: r.optional('WS_MAX_CONNECTIONS') === undefined ? undefined : r.int('WS_MAX_CONNECTIONS', 0, 0, 10_000_000),
    maxConnectionsPerUser: r.int('WS_MAX_CONNECTIONS_PER_USER', 5, 1, 10_000),
    maxRoomsPerConnection: r.int('WS_MAX_ROOMS_PER_CONNECTION', 100, 1, 10_000),
    heartbeatInterval,
    messageMaxSize,
    httpMaxHeadersSize: r.int('UWS_HTTP_MAX_HEADERS_SIZE', DEFAULT_HTTP_MAX_HEADERS_SIZE, 4096, 1_048_576),
    maxBackpressure,
    rateLimit,
    rateBurst,
    rateLimitCloseAfter: r.int('WS_RATE_LIMIT_CLOSE_AFTER', 50, 1, 1_000_000),
    maxInvalidMessages: r.int('WS_MAX_INVALID_MESSAGES', 10, 1, 1_000_000),
    membershipEvents: r.bool('WS_MEMBERSHIP_EVENTS', true),
    membershipEventsMaxMembers: r.int('WS_MEMBERSHIP_EVENTS_MAX_MEMBERS', 1000, 0, 10_000_000),
    drainTimeout: r.int('WS_DRAIN_TIMEOUT', 20, 1, 3600),
    history: readHistory(r, problems),
    presence: readPresence(r, problems),
    events: readEvents(r, problems, production),
    signals: readSignals(r, problems),
    redis: readRedis(r, problems),
    stream: readStream(r, problems),
    outbox: readOutbox(r, problems),
    publishApiKey: r.optional('PUBLISH_API_KEY'),
    revocationsMax: r.int('WS_REVOCATIONS_MAX', 100_000, 1, 10_000_000),
    readyRequiresBroker: r.bool('WS_READY_REQUIRES_BROKER', false),
  };
  if (config.events.types.size > 0 && config.events.webhook === undefined && config.redis === undefined) {
    problems.push('WS_EVENTS: without Redis the events stay in this node\'s memory, where only WS_WEBHOOK_URL can take them: set it (or REDIS_URL)');
  }
  if (config.publishPort !== undefined && config.redis === undefined) problems.push('PUBLISH_PORT: the publish thread publishes through Redis: set REDIS_URL, REDIS_CLUSTER_NODES or REDIS_SENTINELS (without Redis, publish on INTERNAL_PORT)');
  if (config.stream !== undefined && config.redis === undefined) problems.push('WS_STREAM: stream ingestion reads a Redis Stream: set REDIS_URL, REDIS_CLUSTER_NODES or REDIS_SENTINELS');
  if (config.publishApiKey !== undefined && production && Buffer.byteLength(config.publishApiKey) < 32) {
    problems.push('PUBLISH_API_KEY: must be at least 32 bytes in production');
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

function readHistory(r: Reader, problems: string[]): HistoryConfig {
  const patterns = r.list('WS_HISTORY_ROOMS');
  const rooms = compileRooms(patterns);
  if (rooms === null) problems.push('WS_HISTORY_ROOMS: use *, <kind>:* or room names (project, channel, task, user), comma-separated');
  return {
    patterns,
    rooms: rooms ?? NO_ROOMS,
    size: r.int('WS_HISTORY_SIZE', 100, 1, 10_000),
    ttl: r.int('WS_HISTORY_TTL', 300, 1, 604_800),
    recoverMax: r.int('WS_HISTORY_RECOVER_MAX', 300, 1, 10_000),
  };
}

function readRoomAuth(r: Reader, problems: string[]): RoomAuthConfig | undefined {
  const url = r.optional('WS_ROOM_AUTH_URL');
  const key = r.optional('WS_ROOM_AUTH_KEY');
  const callback = r.optional('WS_ROOM_ACCESS') === 'callback';
  if (!callback) {
    if (url !== undefined) problems.push('WS_ROOM_AUTH_URL: needs WS_ROOM_ACCESS=callback');
    return undefined;
  }
  if (url === undefined || !/^https?:\/\/[^\s]+$/.test(url)) problems.push('WS_ROOM_AUTH_URL: WS_ROOM_ACCESS=callback needs an http:// or https:// URL');
  if (key === undefined || key.length < 16) problems.push('WS_ROOM_AUTH_KEY: WS_ROOM_ACCESS=callback needs a key of at least 16 characters');
  return {
    url: url ?? '',
    key: key ?? '',
    timeoutMs: r.int('WS_ROOM_AUTH_TIMEOUT', 2000, 50, 30_000),
    concurrency: r.int('WS_ROOM_AUTH_CONCURRENCY', 32, 1, 10_000),
    allowTtl: r.int('WS_ROOM_AUTH_ALLOW_TTL', 60, 0, 86_400),
    denyTtl: r.int('WS_ROOM_AUTH_DENY_TTL', 10, 0, 86_400),
  };
}

const HTTP_URL = /^https?:\/\/[^\s]+$/;

function readBackend(r: Reader, problems: string[]): BackendConfig | undefined {
  const publishUrl = r.optional('WS_PUBLISH_PROXY_URL');
  const rpcUrl = r.optional('WS_RPC_URL');
  if (publishUrl === undefined && rpcUrl === undefined) return undefined;
  for (const [name, url] of [['WS_PUBLISH_PROXY_URL', publishUrl], ['WS_RPC_URL', rpcUrl]] as const) {
    if (url !== undefined && !HTTP_URL.test(url)) problems.push(`${name}: must be an http:// or https:// URL`);
  }
  const key = r.optional('WS_BACKEND_KEY');
  if (key === undefined || key.length < 16) problems.push('WS_BACKEND_KEY: WS_PUBLISH_PROXY_URL and WS_RPC_URL need a key of at least 16 characters');
  const patterns = r.list('WS_PUBLISH_PROXY_ROOMS');
  const rooms = compileRooms(patterns.length === 0 ? ['*'] : patterns);
  if (rooms === null) problems.push('WS_PUBLISH_PROXY_ROOMS: use *, <kind>:* or room names (project, channel, task, user), comma-separated');
  const types = r.list('WS_PUBLISH_PROXY_TYPES');
  const bad = types.find((t) => !isPublishableType(t));
  if (bad !== undefined) problems.push(`WS_PUBLISH_PROXY_TYPES: ${bad} is not a publishable event type`);
  return {
    key: key ?? '',
    // At most a third of a send's claim lease (30 s): a claim never lapses while its send still waits.
    timeoutMs: r.int('WS_BACKEND_TIMEOUT', 2000, 50, 10_000),
    concurrency: r.int('WS_BACKEND_CONCURRENCY', 64, 1, 10_000),
    perConnection: r.int('WS_BACKEND_MAX_PER_CONNECTION', 16, 1, 1000),
    publish: publishUrl === undefined ? undefined : { url: publishUrl, patterns: patterns.length === 0 ? ['*'] : patterns, rooms: rooms ?? NO_ROOMS, types: new Set(types.length === 0 ? ['message.new'] : types) },
    rpcUrl,
  };
}

/** Lifecycle events are on when WS_EVENTS names types, or WS_WEBHOOK_URL is set (all lifecycle types then). */
function readEvents(r: Reader, problems: string[], production: boolean): EventsConfig {
  const url = r.optional('WS_WEBHOOK_URL');
  const listed = r.list('WS_EVENTS').filter((t) => t !== 'none');
  const unknown = listed.filter((t) => t !== 'all' && !(LIFECYCLE_TYPES as readonly string[]).includes(t));
  if (unknown.length > 0) problems.push(`WS_EVENTS: one of ${LIFECYCLE_TYPES.join(', ')}, all or none, comma-separated: ${unknown.join(', ')}`);
  const all = listed.includes('all') || (url !== undefined && r.optional('WS_EVENTS') === undefined);
  const signals = r.list('WS_SIGNALS_TO_BACKEND');
  const bad = signals.filter((n) => !SIGNAL_NAME.test(n));
  if (bad.length > 0) problems.push(`WS_SIGNALS_TO_BACKEND: names are [a-z][a-z0-9_]{0,31}, comma-separated: ${bad.join(', ')}`);
  const types = new Set<EventType>(all ? LIFECYCLE_TYPES : (listed as EventType[]));
  if (signals.length > 0) types.add('signal');
  if (types.size === 0 && url !== undefined) problems.push('WS_WEBHOOK_URL: WS_EVENTS=none leaves nothing to deliver');
  return {
    types,
    signals: new Set(signals),
    graceMs: r.int('WS_EVENTS_GRACE', 5, 0, 3600) * 1000,
    maxlen: r.int('WS_EVENTS_MAXLEN', 100_000, 100, 10_000_000),
    webhook: url === undefined ? undefined : readWebhook(r, problems, production, url),
  };
}

function readWebhook(r: Reader, problems: string[], production: boolean, url: string): WebhookConfig {
  if (!HTTP_URL.test(url) || !URL.canParse(url)) problems.push('WS_WEBHOOK_URL: must be an http:// or https:// URL');
  else if (production && url.startsWith('http:')) problems.push('WS_WEBHOOK_URL: must be https:// in production (events name users)');
  const secret = r.optional('WS_WEBHOOK_SECRET');
  if (secret === undefined || Buffer.byteLength(secret) < 32) problems.push('WS_WEBHOOK_SECRET: WS_WEBHOOK_URL needs a signing secret of at least 32 bytes');
  return {
    url,
    secret: secret ?? '',
    batch: r.int('WS_WEBHOOK_BATCH', 100, 1, 1000),
    timeoutMs: r.int('WS_WEBHOOK_TIMEOUT', 5000, 100, 60_000),
    retryForMs: r.int('WS_WEBHOOK_RETRY_FOR', 600, 10, 86_400) * 1000,
  };
}

/** A key the product can type: printable ASCII without spaces. */
const STREAM_KEY = /^[\x21-\x7e]{1,256}$/;

function readStream(r: Reader, problems: string[]): StreamConfig | undefined {
  const key = r.optional('WS_STREAM');
  if (key === undefined) return undefined;
  const dead = r.str('WS_STREAM_DEAD', `${key}:dead`);
  for (const [name, value] of [['WS_STREAM', key], ['WS_STREAM_DEAD', dead]] as const) {
    if (!STREAM_KEY.test(value)) problems.push(`${name}: a Redis key of 1-256 printable ASCII characters without spaces`);
  }
  if (dead === key) problems.push('WS_STREAM_DEAD: must differ from WS_STREAM');
  return { key, batch: r.int('WS_STREAM_BATCH', 100, 1, 1000), dead, deadMaxlen: r.int('WS_STREAM_DEAD_MAXLEN', 100_000, 100, 10_000_000) };
}

/** A table name PostgreSQL keeps as written (unquoted lower case), with room for the `_dead` suffix within 63 bytes. */
const OUTBOX_TABLE = /^[a-z_][a-z0-9_]{0,57}$/;

function readOutbox(r: Reader, problems: string[]): OutboxConfig | undefined {
  const url = r.optional('WS_OUTBOX_URL');
  if (url === undefined) return undefined;
  // The URL may hold a password: the problem names the variable, never its value.
  if (!/^postgres(ql)?:\/\/\S+$/.test(url) || !URL.canParse(url)) problems.push('WS_OUTBOX_URL: must be a postgres:// or postgresql:// URL');
  const table = r.str('WS_OUTBOX_TABLE', 'ws_edge_outbox');
  if (!OUTBOX_TABLE.test(table)) problems.push('WS_OUTBOX_TABLE: a lower-case table name (letters, digits, _), at most 58 characters');
  return {
    url,
    table,
    batch: r.int('WS_OUTBOX_BATCH', 100, 1, 1000),
    pollMs: r.int('WS_OUTBOX_POLL', 1000, 50, 60_000),
    pool: r.int('WS_OUTBOX_POOL', 4, 1, 64),
    timeoutMs: r.int('WS_OUTBOX_TIMEOUT', 5000, 100, 60_000),
  };
}

function readPresence(r: Reader, problems: string[]): PresenceConfig {
  const patterns = r.list('WS_PRESENCE_ROOMS');
  const rooms = compileRooms(patterns);
  if (rooms === null) problems.push('WS_PRESENCE_ROOMS: use *, <kind>:* or room names (project, channel, task, user), comma-separated');
  const ttl = r.int('WS_PRESENCE_TTL', 30, 2, 3600);
  const refresh = r.int('WS_PRESENCE_REFRESH', 10, 1, 3600);
  if (refresh >= ttl) problems.push('WS_PRESENCE_REFRESH: must be less than WS_PRESENCE_TTL (entries would expire between refreshes)');
  return { patterns, rooms: rooms ?? NO_ROOMS, ttl, refresh, grace: r.int('WS_PRESENCE_GRACE', 10, 0, 3600), eventsMaxUsers: r.int('WS_PRESENCE_EVENTS_MAX_USERS', 100, 0, 100_000) };
}

/** Signal names: the same grammar as event names' last part, so `signal.<name>` is a valid event type. */
const SIGNAL_NAME = /^[a-z][a-z0-9_]{0,31}$/;

function readSignals(r: Reader, problems: string[]): SignalConfig {
  const raw = r.optional('WS_SIGNALS');
  const names = raw === undefined ? ['typing', 'typing_stop', 'read'] : r.list('WS_SIGNALS').filter((n) => n !== 'none');
  const bad = names.filter((n) => !SIGNAL_NAME.test(n));
  if (bad.length > 0) problems.push(`WS_SIGNALS: names are [a-z][a-z0-9_]{0,31}, comma-separated, or none: ${bad.join(', ')}`);
  return { names: new Set(names), rate: r.int('WS_SIGNAL_RATE', 10, 1, 1000) };
}

function readTrustedProxies(r: Reader, problems: string[]): string[] {
  const entries = r.list('WS_TRUSTED_PROXIES');
  const bad = entries.filter((e) => !isAddressOrCidr(e));
  if (bad.length > 0) problems.push(`WS_TRUSTED_PROXIES: not an IP address or CIDR block: ${bad.join(', ')}`);
  return entries;
}

function hostPorts(name: string, entries: string[], problems: string[]): HostPort[] {
  const parsed: HostPort[] = [];
  for (const entry of entries) {
    const match = /^([A-Za-z0-9_.-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})$/.exec(entry);
    const port = Number(match?.[2]);
    if (!match || port < 1 || port > 65535) problems.push(`${name}: "${entry}" is not host:port`);
    else parsed.push({ host: match[1]!.replace(/^\[|\]$/g, ''), port });
  }
  return parsed;
}

function readTopology(r: Reader, problems: string[]): RedisTopology | undefined {
  const url = r.optional('REDIS_URL');
  const clusterNodes = r.list('REDIS_CLUSTER_NODES');
  const sentinels = r.list('REDIS_SENTINELS');
  const sentinelName = r.optional('REDIS_SENTINEL_NAME');
  const chosen = [url !== undefined, clusterNodes.length > 0, sentinels.length > 0].filter(Boolean).length;
  if (chosen > 1) {
    problems.push('REDIS_URL: set only one of REDIS_URL, REDIS_CLUSTER_NODES, REDIS_SENTINELS');
    return undefined;
  }
  if (sentinelName !== undefined && sentinels.length === 0) problems.push('REDIS_SENTINEL_NAME: needs REDIS_SENTINELS');
  if (url !== undefined) {
    if (!/^rediss?:\/\//.test(url)) problems.push('REDIS_URL: must start with redis:// or rediss://');
    return { mode: 'standalone', url };
  }
  if (clusterNodes.length > 0) return { mode: 'cluster', nodes: hostPorts('REDIS_CLUSTER_NODES', clusterNodes, problems) };
  if (sentinels.length > 0) {
    if (sentinelName === undefined) problems.push('REDIS_SENTINEL_NAME: required with REDIS_SENTINELS (the monitored master name)');
    return { mode: 'sentinel', sentinels: hostPorts('REDIS_SENTINELS', sentinels, problems), name: sentinelName ?? '' };
  }
  return undefined;
}

function readRedis(r: Reader, problems: string[]): RedisConfig | undefined {
  const topology = readTopology(r, problems);
  const prefix = r.str('REDIS_PREFIX', 'wsedge:');
  if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(prefix)) problems.push('REDIS_PREFIX: use 1-64 characters of [A-Za-z0-9_.:-]');
  const settings = {
    prefix,
    unsubscribeDelay: r.int('REDIS_UNSUBSCRIBE_DELAY', 5, 0, 3600),
    seatTtl: r.int('REDIS_SLOT_TTL', 30, 3, 3600),
    probeInterval: r.int('REDIS_PROBE_INTERVAL', 5, 1, 3600),
    probeTimeout: r.int('REDIS_PROBE_TIMEOUT', 3, 1, 600),
  };
  return topology === undefined ? undefined : { topology, ...settings };
}

function readJwt(r: Reader, problems: string[], production: boolean): JwtConfig {
  const secrets = r.list('JWT_SECRET');
  const publicKeyFile = r.optional('JWT_PUBLIC_KEY_FILE');
  const jwksUrl = r.optional('JWT_JWKS_URL');
  const algorithms = r.list('JWT_ALGORITHMS');
  const sources = [secrets.length > 0, publicKeyFile !== undefined, jwksUrl !== undefined].filter(Boolean).length;
  if (sources > 1) {
    problems.push('JWT_SECRET: set only one of JWT_SECRET, JWT_PUBLIC_KEY_FILE, JWT_JWKS_URL');
  }
  if (sources === 0 && production) {
    problems.push('JWT_SECRET: NODE_ENV=production requires JWT_SECRET, JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL');
  }
  if (production && secrets.some((s) => Buffer.byteLength(s) < 32)) {
    problems.push('JWT_SECRET: each secret must be at least 32 bytes in production');
  }
  if (jwksUrl !== undefined) {
    if (!HTTP_URL.test(jwksUrl) || !URL.canParse(jwksUrl)) problems.push('JWT_JWKS_URL: must be an http:// or https:// URL');
    else if (production && !jwksUrl.startsWith('https:')) problems.push('JWT_JWKS_URL: must be https:// in production');
  }
  const unknown = algorithms.filter((a) => !HMAC_ALGORITHMS.includes(a) && !PUBLIC_KEY_ALGORITHMS.includes(a));
  if (unknown.length > 0) problems.push(`JWT_ALGORITHMS: unsupported ${unknown.join(', ')} (never "none")`);
  const hmac = algorithms.filter((a) => HMAC_ALGORITHMS.includes(a));
  const pub = algorithms.filter((a) => PUBLIC_KEY_ALGORITHMS.includes(a));
  const publicKeys = publicKeyFile !== undefined || jwksUrl !== undefined;
  if (hmac.length > 0 && pub.length > 0) {
    problems.push('JWT_ALGORITHMS: mixes HMAC and public-key algorithms; pick one family');
  } else if (publicKeys && hmac.length > 0) {
    problems.push('JWT_ALGORITHMS: HMAC algorithms cannot be used with JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL');
  } else if (!publicKeys && pub.length > 0) {
    problems.push('JWT_ALGORITHMS: public-key algorithms need JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL');
  }
  return {
    secret: secrets[0],
    secrets,
    publicKeyFile,
    jwksUrl,
    keySource: {
      refreshSeconds: r.int('JWT_KEYS_REFRESH', 300, 1, 86_400),
      unknownKidSeconds: r.int('JWT_KEYS_UNKNOWN_KID_INTERVAL', 30, 1, 3600),
      maxBytes: r.int('JWT_KEYS_MAX_BYTES', 65_536, 1024, 10_485_760),
      maxKeys: r.int('JWT_KEYS_MAX', 20, 1, 1000),
      timeoutMs: r.int('JWT_KEYS_TIMEOUT', 5000, 100, 60_000),
    },
    maxLifetimeSeconds: r.int('JWT_MAX_LIFETIME', 86_400, 60, 31_536_000),
    algorithms: algorithms.length > 0 ? algorithms : undefined,
    issuer: r.optional('JWT_ISSUER'),
    audience: r.optional('JWT_AUDIENCE'),
    clockToleranceSeconds: r.int('JWT_CLOCK_TOLERANCE', 5, 0, 300),
  };
}

export const HMAC_ALGS: readonly string[] = HMAC_ALGORITHMS;
export const PUBLIC_KEY_ALGS: readonly string[] = PUBLIC_KEY_ALGORITHMS;
