import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { covers, NO_ROOMS } from '../../src/rooms.js';

type Env = Record<string, string | undefined>;

/** The problems loadConfig reports for `env`; fails the test when it does not throw a ConfigError. */
function problemsOf(env: Env): readonly string[] {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

const SECRET_32 = 'x'.repeat(32);

describe('loadConfig defaults', () => {
  it('starts with zero configuration and the documented defaults', () => {
    const config = loadConfig({});
    expect(config.nodeId).toMatch(/^[0-9a-f]{8}$/);
    expect({ ...config, nodeId: 'ignored' }).toEqual({
      nodeEnv: 'development',
      production: false,
      nodeId: 'ignored',
      host: '0.0.0.0',
      port: 8080,
      internalHost: '127.0.0.1',
      internalPort: 9090,
      logLevel: 'info',
      jwt: {
        secret: undefined,
        secrets: [],
        publicKeyFile: undefined,
        jwksUrl: undefined,
        keySource: { refreshSeconds: 300, unknownKidSeconds: 30, maxBytes: 65_536, maxKeys: 20, timeoutMs: 5000 },
        maxLifetimeSeconds: 86_400,
        algorithms: undefined,
        issuer: undefined,
        audience: undefined,
        clockToleranceSeconds: 5,
      },
      allowedOrigins: [],
      roomAccess: 'token',
      maxConnections: undefined,
      maxConnectionsPerUser: 5,
      maxRoomsPerConnection: 100,
      heartbeatInterval: 30,
      history: { patterns: [], rooms: NO_ROOMS, size: 100, ttl: 300, recoverMax: 300 },
      presence: { patterns: [], rooms: NO_ROOMS, ttl: 30, refresh: 10, grace: 10, eventsMaxUsers: 100 },
      events: { types: new Set(), signals: new Set(), graceMs: 5000, maxlen: 100_000, webhook: undefined },
      signals: { names: new Set(['typing', 'typing_stop', 'read']), rate: 10 },
      messageMaxSize: 1_048_576,
      httpMaxHeadersSize: 16_384,
      maxBackpressure: 4_194_304,
      rateLimit: 20,
      rateBurst: 40,
      rateLimitCloseAfter: 50,
      maxInvalidMessages: 10,
      membershipEvents: true,
      membershipEventsMaxMembers: 1000,
      drainTimeout: 20,
      redis: undefined,
      publishApiKey: undefined,
      revocationsMax: 100_000,
      readyRequiresBroker: false,
      trustedProxies: [],
      maxConnectionsPerIp: 0,
      authFailureLimit: 60,
    });
  });

  it('generates a different node id per start when NODE_ID is unset', () => {
    expect(loadConfig({}).nodeId).not.toBe(loadConfig({}).nodeId);
  });

  it('treats empty and blank variables as unset', () => {
    const config = loadConfig({ PORT: '', WS_RATE_LIMIT: '   ', JWT_SECRET: ' ', NODE_ENV: '' });
    expect(config.port).toBe(8080);
    expect(config.rateLimit).toBe(20);
    expect(config.jwt.secret).toBeUndefined();
    expect(config.nodeEnv).toBe('development');
  });

  it('reads explicit values, trimming whitespace', () => {
    const config = loadConfig({
      NODE_ENV: 'production',
      JWT_SECRET: SECRET_32,
      NODE_ID: 'edge-1',
      PORT: ' 8000 ',
      INTERNAL_PORT: '9000',
      LOG_LEVEL: 'debug',
      WS_ALLOWED_ORIGINS: ' https://a.example , ,https://b.example ',
      WS_ROOM_ACCESS: 'open',
      WS_MAX_CONNECTIONS: '100',
      WS_MEMBERSHIP_EVENTS: 'OFF',
      JWT_ALGORITHMS: 'HS256, HS512',
      JWT_ISSUER: 'issuer',
      JWT_AUDIENCE: 'audience',
      JWT_CLOCK_TOLERANCE: '0',
    });
    expect(config).toMatchObject({
      nodeEnv: 'production',
      production: true,
      nodeId: 'edge-1',
      port: 8000,
      internalPort: 9000,
      logLevel: 'debug',
      allowedOrigins: ['https://a.example', 'https://b.example'],
      roomAccess: 'open',
      maxConnections: 100,
      membershipEvents: false,
      jwt: {
        secret: SECRET_32,
        publicKeyFile: undefined,
        algorithms: ['HS256', 'HS512'],
        issuer: 'issuer',
        audience: 'audience',
        clockToleranceSeconds: 0,
      },
    });
  });

  it.each([
    ['true', true],
    ['1', true],
    ['yes', true],
    ['on', true],
    ['FALSE', false],
    ['0', false],
    ['no', false],
    ['off', false],
  ])('reads WS_MEMBERSHIP_EVENTS=%s as %s', (value, expected) => {
    expect(loadConfig({ WS_MEMBERSHIP_EVENTS: value }).membershipEvents).toBe(expected);
  });
});

describe('loadConfig integer validation', () => {
  it.each(['abc', '1.5', '1e3', '0x10', '+5', '5 5', '--1'])('refuses PORT=%s as not an integer', (value) => {
    expect(problemsOf({ PORT: value })).toEqual([`PORT: "${value}" is not an integer`]);
  });

  it.each([
    ['PORT', '-1', '0..65535'],
    ['PORT', '65536', '0..65535'],
    ['INTERNAL_PORT', '70000', '0..65535'],
    ['WS_MAX_CONNECTIONS', '-1', '0..10000000'],
    ['WS_MAX_CONNECTIONS_PER_USER', '0', '1..10000'],
    ['WS_MAX_ROOMS_PER_CONNECTION', '10001', '1..10000'],
    ['WS_RATE_LIMIT', '0', '1..100000'],
    ['WS_RATE_BURST', '100001', '1..100000'],
    ['WS_RATE_LIMIT_CLOSE_AFTER', '0', '1..1000000'],
    ['WS_MAX_INVALID_MESSAGES', '0', '1..1000000'],
    ['WS_MEMBERSHIP_EVENTS_MAX_MEMBERS', '-5', '0..10000000'],
    ['WS_DRAIN_TIMEOUT', '0', '1..3600'],
    ['WS_DRAIN_TIMEOUT', '3601', '1..3600'],
    ['JWT_CLOCK_TOLERANCE', '301', '0..300'],
    ['WS_MESSAGE_MAX_SIZE', '1023', '1024..67108864'],
    ['UWS_HTTP_MAX_HEADERS_SIZE', '4095', '4096..1048576'],
  ])('refuses %s=%s as outside %s', (name, value, range) => {
    expect(problemsOf({ [name]: value })).toEqual([`${name}: ${Number(value)} is outside ${range}`]);
  });

  it.each(['7', '961', '0'])('refuses WS_HEARTBEAT_INTERVAL=%s (uWS idleTimeout needs 8..960)', (value) => {
    expect(problemsOf({ WS_HEARTBEAT_INTERVAL: value })).toEqual([`WS_HEARTBEAT_INTERVAL: ${value} is outside 8..960`]);
  });

  it.each([8, 960])('accepts WS_HEARTBEAT_INTERVAL=%i at the bound', (value) => {
    expect(loadConfig({ WS_HEARTBEAT_INTERVAL: String(value) }).heartbeatInterval).toBe(value);
  });

  it('accepts the bounds of the other ranges', () => {
    const config = loadConfig({ PORT: '0', INTERNAL_PORT: '65535', WS_MAX_CONNECTIONS_PER_USER: '1', JWT_CLOCK_TOLERANCE: '300' });
    expect(config.port).toBe(0);
    expect(config.internalPort).toBe(65535);
    expect(config.maxConnectionsPerUser).toBe(1);
    expect(config.jwt.clockToleranceSeconds).toBe(300);
  });

  it('refuses a message size above 64 MiB', () => {
    expect(problemsOf({ WS_MESSAGE_MAX_SIZE: '67108865', WS_MAX_BACKPRESSURE: '134217728' })).toEqual([
      'WS_MESSAGE_MAX_SIZE: 67108865 is outside 1024..67108864',
    ]);
  });
});

describe('loadConfig cross-field and enum validation', () => {
  it('refuses WS_MAX_BACKPRESSURE equal to WS_MESSAGE_MAX_SIZE', () => {
    expect(problemsOf({ WS_MESSAGE_MAX_SIZE: '2048', WS_MAX_BACKPRESSURE: '2048' })).toEqual([
      'WS_MAX_BACKPRESSURE: 2048 must be larger than WS_MESSAGE_MAX_SIZE (2048)',
    ]);
  });

  it('refuses WS_MAX_BACKPRESSURE below the default WS_MESSAGE_MAX_SIZE', () => {
    expect(problemsOf({ WS_MAX_BACKPRESSURE: '1048576' })).toEqual([
      'WS_MAX_BACKPRESSURE: 1048576 must be larger than WS_MESSAGE_MAX_SIZE (1048576)',
    ]);
  });

  it('accepts WS_MAX_BACKPRESSURE one byte above WS_MESSAGE_MAX_SIZE', () => {
    const config = loadConfig({ WS_MESSAGE_MAX_SIZE: '2048', WS_MAX_BACKPRESSURE: '2049' });
    expect(config.messageMaxSize).toBe(2048);
    expect(config.maxBackpressure).toBe(2049);
  });

  it('refuses INTERNAL_PORT equal to PORT, but allows both at 0', () => {
    expect(problemsOf({ PORT: '7000', INTERNAL_PORT: '7000' })).toEqual(['INTERNAL_PORT: must differ from PORT (7000)']);
    expect(loadConfig({ PORT: '0', INTERNAL_PORT: '0' })).toMatchObject({ port: 0, internalPort: 0 });
  });

  it.each(['has space', 'a'.repeat(33), 'dot.ted'])('refuses NODE_ID=%s', (value) => {
    expect(problemsOf({ NODE_ID: value })).toEqual(['NODE_ID: use 1-32 characters of [A-Za-z0-9_-]']);
  });

  it('refuses unknown enum and boolean values', () => {
    expect(problemsOf({ LOG_LEVEL: 'verbose' })).toEqual([
      'LOG_LEVEL: "verbose" is not one of fatal, error, warn, info, debug, trace, silent',
    ]);
    expect(problemsOf({ WS_ROOM_ACCESS: 'public' })).toEqual(['WS_ROOM_ACCESS: "public" is not one of token, open, callback']);
    expect(problemsOf({ WS_MEMBERSHIP_EVENTS: 'maybe' })).toEqual(['WS_MEMBERSHIP_EVENTS: "maybe" is not a boolean (true/false)']);
  });
});

describe('loadConfig JWT validation', () => {
  it('refuses JWT_SECRET and JWT_PUBLIC_KEY_FILE together', () => {
    expect(problemsOf({ JWT_SECRET: SECRET_32, JWT_PUBLIC_KEY_FILE: '/keys/public.pem' })).toEqual([
      'JWT_SECRET: set only one of JWT_SECRET, JWT_PUBLIC_KEY_FILE, JWT_JWKS_URL',
    ]);
  });

  it('refuses NODE_ENV=production without a key', () => {
    expect(problemsOf({ NODE_ENV: 'production' })).toEqual([
      'JWT_SECRET: NODE_ENV=production requires JWT_SECRET, JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL',
    ]);
  });

  it('accepts NODE_ENV=production with a public key file', () => {
    expect(loadConfig({ NODE_ENV: 'production', JWT_PUBLIC_KEY_FILE: '/keys/public.pem' }).jwt.publicKeyFile).toBe('/keys/public.pem');
  });

  it('refuses a secret under 32 bytes in production, counting bytes not characters', () => {
    expect(problemsOf({ NODE_ENV: 'production', JWT_SECRET: 'x'.repeat(31) })).toEqual(['JWT_SECRET: each secret must be at least 32 bytes in production']);
    // 16 two-byte characters are 32 bytes.
    expect(loadConfig({ NODE_ENV: 'production', JWT_SECRET: 'é'.repeat(16) }).jwt.secret).toBe('é'.repeat(16));
    expect(loadConfig({ NODE_ENV: 'production', JWT_SECRET: SECRET_32 }).production).toBe(true);
  });

  it('allows a short secret outside production', () => {
    expect(loadConfig({ JWT_SECRET: 'short' }).jwt.secret).toBe('short');
  });

  it('refuses JWT_ALGORITHMS mixing HMAC and public-key algorithms', () => {
    expect(problemsOf({ JWT_SECRET: SECRET_32, JWT_ALGORITHMS: 'HS256,RS256' })).toEqual([
      'JWT_ALGORITHMS: mixes HMAC and public-key algorithms; pick one family',
    ]);
  });

  it.each(['none', 'None', 'HS256,none'])('refuses JWT_ALGORITHMS=%s', (value) => {
    const unknown = value.split(',').filter((a) => a !== 'HS256');
    expect(problemsOf({ JWT_SECRET: SECRET_32, JWT_ALGORITHMS: value })).toEqual([
      `JWT_ALGORITHMS: unsupported ${unknown.join(', ')} (never "none")`,
    ]);
  });

  it('refuses an algorithm name in the wrong case', () => {
    expect(problemsOf({ JWT_SECRET: SECRET_32, JWT_ALGORITHMS: 'hs256' })).toEqual(['JWT_ALGORITHMS: unsupported hs256 (never "none")']);
  });

  it('refuses HMAC algorithms with a public key file', () => {
    expect(problemsOf({ JWT_PUBLIC_KEY_FILE: '/keys/public.pem', JWT_ALGORITHMS: 'HS256' })).toEqual([
      'JWT_ALGORITHMS: HMAC algorithms cannot be used with JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL',
    ]);
  });

  it('refuses public-key algorithms without a public key file', () => {
    expect(problemsOf({ JWT_SECRET: SECRET_32, JWT_ALGORITHMS: 'RS256' })).toEqual([
      'JWT_ALGORITHMS: public-key algorithms need JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL',
    ]);
  });

  it('accepts a public-key family with a key file', () => {
    expect(loadConfig({ JWT_PUBLIC_KEY_FILE: '/keys/public.pem', JWT_ALGORITHMS: 'ES256,EdDSA' }).jwt.algorithms).toEqual(['ES256', 'EdDSA']);
  });
});

describe('loadConfig error reporting', () => {
  it('reports every problem together, one line each, each naming its variable', () => {
    const env: Env = {
      NODE_ENV: 'production',
      PORT: 'eighty',
      WS_RATE_LIMIT: '0',
      WS_HEARTBEAT_INTERVAL: '5',
      LOG_LEVEL: 'loud',
      WS_MEMBERSHIP_EVENTS: 'maybe',
      JWT_ALGORITHMS: 'none',
      WS_DRAIN_TIMEOUT: '1.5',
    };
    let error: unknown;
    try {
      loadConfig(env);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems;
    const expected = [
      'PORT: "eighty" is not an integer',
      'WS_RATE_LIMIT: 0 is outside 1..100000',
      'WS_HEARTBEAT_INTERVAL: 5 is outside 8..960',
      'LOG_LEVEL: "loud" is not one of fatal, error, warn, info, debug, trace, silent',
      'JWT_SECRET: NODE_ENV=production requires JWT_SECRET, JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL',
      'JWT_ALGORITHMS: unsupported none (never "none")',
      'WS_MEMBERSHIP_EVENTS: "maybe" is not a boolean (true/false)',
      'WS_DRAIN_TIMEOUT: "1.5" is not an integer',
    ];
    expect(problems).toHaveLength(expected.length);
    expect(problems).toEqual(expect.arrayContaining(expected));
    for (const problem of problems) expect(problem).toMatch(/^[A-Z_]+: /);
    expect((error as ConfigError).message).toBe(problems.join('\n'));
    expect((error as ConfigError).name).toBe('ConfigError');
  });
});

describe('client address settings', () => {
  it('accepts IPs and CIDRs in WS_TRUSTED_PROXIES and names the bad entries', () => {
    expect(loadConfig({ WS_TRUSTED_PROXIES: '10.0.0.0/8, 127.0.0.1,::1' }).trustedProxies).toEqual(['10.0.0.0/8', '127.0.0.1', '::1']);
    expect(() => loadConfig({ WS_TRUSTED_PROXIES: '10.0.0.0/8,haproxy' })).toThrow('WS_TRUSTED_PROXIES: not an IP address or CIDR block: haproxy');
  });

  it('reads the per-address limits', () => {
    const config = loadConfig({ WS_MAX_CONNECTIONS_PER_IP: '50', WS_AUTH_FAILURE_LIMIT: '0' });
    expect(config.maxConnectionsPerIp).toBe(50);
    expect(config.authFailureLimit).toBe(0);
  });
});

describe('Redis topologies', () => {
  it('reads one server from REDIS_URL', () => {
    expect(loadConfig({ REDIS_URL: 'redis://127.0.0.1:6379' }).redis?.topology).toEqual({ mode: 'standalone', url: 'redis://127.0.0.1:6379' });
  });

  it('reads cluster seed nodes from REDIS_CLUSTER_NODES', () => {
    expect(loadConfig({ REDIS_CLUSTER_NODES: 'redis-1:7000, 127.0.0.1:7001,[::1]:7002' }).redis?.topology).toEqual({
      mode: 'cluster',
      nodes: [
        { host: 'redis-1', port: 7000 },
        { host: '127.0.0.1', port: 7001 },
        { host: '::1', port: 7002 },
      ],
    });
  });

  it('reads sentinels and the master name', () => {
    expect(loadConfig({ REDIS_SENTINELS: 's1:26379,s2:26379', REDIS_SENTINEL_NAME: 'wsedge' }).redis?.topology).toEqual({
      mode: 'sentinel',
      sentinels: [
        { host: 's1', port: 26379 },
        { host: 's2', port: 26379 },
      ],
      name: 'wsedge',
    });
  });

  it('refuses more than one topology, malformed addresses and a sentinel setup without a name', () => {
    expect(() => loadConfig({ REDIS_URL: 'redis://x:1', REDIS_CLUSTER_NODES: 'a:1' })).toThrow('REDIS_URL: set only one of REDIS_URL, REDIS_CLUSTER_NODES, REDIS_SENTINELS');
    expect(() => loadConfig({ REDIS_CLUSTER_NODES: 'a:1,b' })).toThrow('REDIS_CLUSTER_NODES: "b" is not host:port');
    expect(() => loadConfig({ REDIS_CLUSTER_NODES: 'a:70000' })).toThrow('REDIS_CLUSTER_NODES: "a:70000" is not host:port');
    expect(() => loadConfig({ REDIS_SENTINELS: 's1:26379' })).toThrow('REDIS_SENTINEL_NAME: required with REDIS_SENTINELS');
    expect(() => loadConfig({ REDIS_SENTINEL_NAME: 'wsedge' })).toThrow('REDIS_SENTINEL_NAME: needs REDIS_SENTINELS');
  });
});

describe('sequenced rooms', () => {
  it('reads WS_HISTORY_ROOMS as rooms and patterns, and refuses anything else', () => {
    const { rooms } = loadConfig({ WS_HISTORY_ROOMS: 'project:*, task:7,user:*' }).history;
    expect(['project:1', 'task:7', 'user:ann'].map((room) => covers(rooms, room))).toEqual([true, true, true]);
    expect(['task:8', 'channel:1'].map((room) => covers(rooms, room))).toEqual([false, false]);
    expect(covers(loadConfig({ WS_HISTORY_ROOMS: '*' }).history.rooms, 'channel:1')).toBe(true);
    for (const bad of ['room:*', 'project:', 'task:a b', '**']) expect(() => loadConfig({ WS_HISTORY_ROOMS: bad }), bad).toThrow('WS_HISTORY_ROOMS: use *');
    expect(() => loadConfig({ WS_HISTORY_SIZE: '0' })).toThrow('WS_HISTORY_SIZE: 0 is outside 1..10000');
    expect(() => loadConfig({ WS_HISTORY_TTL: '0' })).toThrow('WS_HISTORY_TTL: 0 is outside 1..604800');
    expect(() => loadConfig({ WS_HISTORY_RECOVER_MAX: '10001' })).toThrow('WS_HISTORY_RECOVER_MAX: 10001 is outside 1..10000');
  });
});

describe('presence and signals', () => {
  it('reads WS_PRESENCE_ROOMS like the other room lists, and refuses a refresh as long as the TTL', () => {
    const { presence } = loadConfig({ WS_PRESENCE_ROOMS: 'channel:*,project:1', WS_PRESENCE_TTL: '20', WS_PRESENCE_REFRESH: '5', WS_PRESENCE_GRACE: '0' });
    expect(['channel:9', 'project:1', 'project:2'].map((room) => covers(presence.rooms, room))).toEqual([true, true, false]);
    expect(presence).toMatchObject({ ttl: 20, refresh: 5, grace: 0, eventsMaxUsers: 100 });
    expect(() => loadConfig({ WS_PRESENCE_ROOMS: 'room:*' })).toThrow('WS_PRESENCE_ROOMS: use *');
    expect(() => loadConfig({ WS_PRESENCE_TTL: '10', WS_PRESENCE_REFRESH: '10' })).toThrow('WS_PRESENCE_REFRESH: must be less than WS_PRESENCE_TTL');
    expect(() => loadConfig({ WS_PRESENCE_TTL: '1' })).toThrow('WS_PRESENCE_TTL: 1 is outside 2..3600');
  });

  it('reads WS_SIGNALS as names, none as no signal, and refuses names that cannot follow signal.', () => {
    expect([...loadConfig({ WS_SIGNALS: 'typing, cursor_move' }).signals.names]).toEqual(['typing', 'cursor_move']);
    expect(loadConfig({ WS_SIGNALS: 'none' }).signals.names.size).toBe(0);
    expect(() => loadConfig({ WS_SIGNALS: 'Typing,a.b' })).toThrow('WS_SIGNALS: names are [a-z][a-z0-9_]{0,31}, comma-separated, or none: Typing, a.b');
    expect(() => loadConfig({ WS_SIGNAL_RATE: '0' })).toThrow('WS_SIGNAL_RATE: 0 is outside 1..1000');
  });
});

describe('the room authorization callback', () => {
  it('needs a URL and a key with WS_ROOM_ACCESS=callback, and refuses the URL without it', () => {
    expect(loadConfig({ WS_ROOM_ACCESS: 'callback', WS_ROOM_AUTH_URL: 'http://api:8000/auth', WS_ROOM_AUTH_KEY: 'k'.repeat(16) }).roomAuth).toEqual({
      url: 'http://api:8000/auth',
      key: 'k'.repeat(16),
      timeoutMs: 2000,
      concurrency: 32,
      allowTtl: 60,
      denyTtl: 10,
    });
    expect(() => loadConfig({ WS_ROOM_ACCESS: 'callback' })).toThrow('WS_ROOM_AUTH_URL: WS_ROOM_ACCESS=callback needs an http:// or https:// URL');
    expect(() => loadConfig({ WS_ROOM_ACCESS: 'callback', WS_ROOM_AUTH_URL: 'http://api/auth', WS_ROOM_AUTH_KEY: 'short' })).toThrow('WS_ROOM_AUTH_KEY: WS_ROOM_ACCESS=callback needs a key of at least 16 characters');
    expect(() => loadConfig({ WS_ROOM_AUTH_URL: 'http://api/auth' })).toThrow('WS_ROOM_AUTH_URL: needs WS_ROOM_ACCESS=callback');
    expect(loadConfig({}).roomAuth).toBeUndefined();
  });
});

describe('lifecycle events and webhooks', () => {
  it('turns every lifecycle type on with a webhook, and signal with WS_SIGNALS_TO_BACKEND', () => {
    const config = loadConfig({ WS_WEBHOOK_URL: 'https://backend.example/hooks', WS_WEBHOOK_SECRET: SECRET_32, WS_SIGNALS_TO_BACKEND: 'read' });
    expect([...config.events.types]).toEqual(['user.online', 'user.offline', 'room.occupied', 'room.vacated', 'signal']);
    expect(config.events.webhook).toEqual({ url: 'https://backend.example/hooks', secret: SECRET_32, batch: 100, timeoutMs: 5000, retryForMs: 600_000 });
    expect(loadConfig({}).events.types.size).toBe(0);
    expect([...loadConfig({ WS_EVENTS: 'user.offline', REDIS_URL: 'redis://127.0.0.1:6379' }).events.types]).toEqual(['user.offline']);
  });

  it.each([
    [{ WS_WEBHOOK_URL: 'ftp://x', WS_WEBHOOK_SECRET: SECRET_32 }, 'WS_WEBHOOK_URL: must be an http:// or https:// URL'],
    [{ WS_WEBHOOK_URL: 'http://127.0.0.1:1/hook' }, 'WS_WEBHOOK_SECRET: WS_WEBHOOK_URL needs a signing secret of at least 32 bytes'],
    [{ WS_WEBHOOK_URL: 'http://127.0.0.1:1/hook', WS_WEBHOOK_SECRET: SECRET_32, NODE_ENV: 'production', JWT_SECRET: SECRET_32 }, 'WS_WEBHOOK_URL: must be https:// in production (events name users)'],
    [{ WS_WEBHOOK_URL: 'http://127.0.0.1:1/hook', WS_WEBHOOK_SECRET: SECRET_32, WS_EVENTS: 'none' }, 'WS_WEBHOOK_URL: WS_EVENTS=none leaves nothing to deliver'],
    [{ WS_EVENTS: 'user.online,user.gone' }, 'WS_EVENTS: one of user.online, user.offline, room.occupied, room.vacated, all or none, comma-separated: user.gone'],
    [{ WS_SIGNALS_TO_BACKEND: 'Read' }, 'WS_SIGNALS_TO_BACKEND: names are [a-z][a-z0-9_]{0,31}, comma-separated: Read'],
    [{ WS_SIGNALS_TO_BACKEND: 'read' }, "WS_EVENTS: without Redis the events stay in this node's memory, where only WS_WEBHOOK_URL can take them: set it (or REDIS_URL)"],
  ])('refuses %j with one line', (env, line) => {
    expect(problemsOf(env)).toContain(line);
  });
});
