/**
 * Prometheus metrics on a private registry, exposed only on the internal port. Call sites name
 * events (`connectionOpened`, `frameRejected`); labels come from fixed vocabularies, never a room,
 * user, token or connection id, and client-chosen values (close codes, message types) are folded
 * into a bounded set first.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { CloseCode, type ErrorCode, type RejectReason, type UPGRADE_REFUSALS } from './errors.js';
import { CLIENT_MESSAGE_TYPES } from './messages.js';

export type PublishSource = 'client' | 'server' | 'membership' | 'api' | 'stream' | 'outbox';
export type BrokerPublishError = 'down' | 'backlog' | 'error';
export type RefusalReason = keyof typeof UPGRADE_REFUSALS;

const KNOWN_CLOSE_CODES = new Set<number>([1000, 1001, 1005, 1006, 1011, ...Object.values(CloseCode)]);
const LINT_FAILING_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** Close codes are partly client-chosen (any of 1000-4999); fold unknown ones into "other". */
function closeLabel(code: number): string {
  return KNOWN_CLOSE_CODES.has(code) ? String(code) : 'other';
}

type Registers = Registry[];

/** Connections: open, opened, closed by code, refused at or before the upgrade, closed for abuse. */
function connectionMetrics(registers: Registers) {
  const connections = new Gauge({ name: 'wsedge_connections', help: 'Open WebSocket connections on this node.', registers });
  const opened = new Counter({ name: 'wsedge_connections_opened_total', help: 'Accepted WebSocket connections.', registers });
  const closed = new Counter({
    name: 'wsedge_connections_closed_total',
    help: 'Closed WebSocket connections by close code (unknown client codes as "other").',
    labelNames: ['code'],
    registers,
  });
  const authFailures = new Counter({
    name: 'wsedge_auth_failures_total',
    help: 'Connections refused at upgrade (closed with 4401/4403/4429/4500) by reason.',
    labelNames: ['reason'],
    registers,
  });
  const upgradesRefused = new Counter({
    name: 'wsedge_upgrades_refused_total',
    help: 'Upgrades refused over HTTP before any socket existed: 503 (draining, max_connections) or 429 (auth_failures).',
    labelNames: ['reason'],
    registers,
  });
  const backpressureDrops = new Counter({
    name: 'wsedge_backpressure_drops_total',
    help: 'Slow consumers closed because their unsent data passed WS_MAX_BACKPRESSURE (official uWS build only).',
    registers,
  });
  const policyCloses = new Counter({
    name: 'wsedge_policy_closes_total',
    help: 'Connections closed for abuse by reason (invalid messages 1008, flooding 4429, token expiry 4401).',
    labelNames: ['reason'],
    registers,
  });
  return {
    connectionOpened() {
      opened.inc();
      connections.inc();
    },
    connectionClosed(code: number) {
      closed.inc({ code: closeLabel(code) });
      connections.dec();
    },
    connectionRejected(reason: RejectReason) {
      authFailures.inc({ reason });
    },
    upgradeRefused(reason: RefusalReason) {
      upgradesRefused.inc({ reason });
    },
    backpressureDrop() {
      backpressureDrops.inc();
    },
    policyClose(reason: 'invalid_messages' | 'flooding' | 'token_expired') {
      policyCloses.inc({ reason });
    },
  };
}

/** Client frames, error envelopes, publishes, rooms. */
function messageMetrics(registers: Registers) {
  const received = new Counter({
    name: 'wsedge_messages_received_total',
    help: 'Client frames by message type ("invalid" for frames that did not parse to a known type).',
    labelNames: ['type'],
    registers,
  });
  const errors = new Counter({
    name: 'wsedge_message_errors_total',
    help: 'Error envelopes sent to clients by machine code.',
    labelNames: ['code'],
    registers,
  });
  const published = new Counter({
    name: 'wsedge_messages_published_total',
    help: 'Events published to rooms by source (client send_message, server helpers, membership events, the publish API, stream and outbox ingestion).',
    labelNames: ['source'],
    registers,
  });
  // Hot-path counters: label children bound once, not looked up per message.
  const receivedByType = new Map(CLIENT_MESSAGE_TYPES.map((type) => [type as string, received.labels(type)]));
  const receivedInvalid = received.labels('invalid');
  const publishedBySource: Record<PublishSource, ReturnType<typeof published.labels>> = {
    client: published.labels('client'),
    server: published.labels('server'),
    membership: published.labels('membership'),
    api: published.labels('api'),
    stream: published.labels('stream'),
    outbox: published.labels('outbox'),
  };
  const rooms = new Gauge({ name: 'wsedge_rooms', help: 'Rooms (uWS topics) with at least one member on this node.', registers });
  const rateLimited = new Counter({ name: 'wsedge_rate_limited_total', help: 'Client frames dropped by the rate limit.', registers });
  const tooBig = new Counter({
    name: 'wsedge_message_too_big_total',
    help: 'Frames refused for size: "limit" closed with 1009, "ceiling" dropped by uWS above maxPayloadLength (1006).',
    labelNames: ['kind'],
    registers,
  });
  return {
    messageReceived(type: string) {
      (receivedByType.get(type) ?? receivedInvalid).inc();
    },
    errorSent(code: ErrorCode) {
      errors.inc({ code });
    },
    published(source: PublishSource) {
      publishedBySource[source].inc();
    },
    roomAdded() {
      rooms.inc();
    },
    roomRemoved() {
      rooms.dec();
    },
    rateLimited() {
      rateLimited.inc();
    },
    messageTooBig(kind: 'limit' | 'ceiling') {
      tooBig.inc({ kind });
    },
  };
}

/** The broker: up, reconnects, subscriptions, publishes it could not hand on, probes, cross-node latency. */
function brokerMetrics(registers: Registers) {
  const brokerUp = new Gauge({ name: 'wsedge_broker_up', help: '1 while the broker reaches other nodes (always 1 for the in-memory broker).', registers });
  brokerUp.set(1);
  const brokerReconnects = new Counter({ name: 'wsedge_broker_reconnects_total', help: 'Recoveries of the broker after it was down.', registers });
  const brokerSubscriptions = new Gauge({ name: 'wsedge_broker_subscriptions', help: 'Room channels Redis has confirmed subscribed for this node.', registers });
  const brokerPublishErrors = new Counter({
    name: 'wsedge_broker_publish_errors_total',
    help: 'Events not handed to Redis (delivered locally only): down, backlog full, or a failed command.',
    labelNames: ['reason'],
    registers,
  });
  const probeFailures = new Counter({ name: 'wsedge_broker_probe_failures_total', help: 'Liveness probes of the subscriber link that did not come back in time.', registers });
  const framesDropped = new Counter({
    name: 'wsedge_broker_frames_dropped_total',
    help: 'Frames received from Redis and dropped, by reason.',
    labelNames: ['reason'],
    registers,
  });
  const crossNodeLatency = new Histogram({
    name: 'wsedge_cross_node_latency_seconds',
    help: 'From an event leaving its origin node to its local publish on this node.',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers,
  });
  return {
    brokerUp(up: boolean) {
      brokerUp.set(up ? 1 : 0);
    },
    brokerReconnect() {
      brokerReconnects.inc();
    },
    brokerSubscriptions(count: number) {
      brokerSubscriptions.set(count);
    },
    brokerPublishError(reason: BrokerPublishError) {
      brokerPublishErrors.inc({ reason });
    },
    probeFailure() {
      probeFailures.inc();
    },
    brokerFrameDropped(reason: 'malformed') {
      framesDropped.inc({ reason });
    },
    crossNodeLatency(seconds: number) {
      crossNodeLatency.observe(Math.max(0, seconds));
    },
  };
}

/** The internal API, by endpoint and status. */
function apiMetrics(registers: Registers) {
  const apiRequests = new Counter({
    name: 'wsedge_api_requests_total',
    help: 'Internal API requests (publish, disconnect, history) by endpoint and HTTP status.',
    labelNames: ['endpoint', 'status'],
    registers,
  });
  return {
    apiRequest(endpoint: 'publish' | 'publish_batch' | 'disconnect' | 'unsubscribe' | 'subscribe' | 'users_status' | 'revoke' | 'history' | 'presence' | 'presence_stats', status: number) {
      apiRequests.inc({ endpoint, status: String(status) });
    },
  };
}

/** Sequenced rooms: recoveries by outcome, events replayed, live gaps repaired, rooms reset, duplicates dropped. */
function historyMetrics(registers: Registers) {
  const recoveries = new Counter({
    name: 'wsedge_recoveries_total',
    help: 'Joins and resumes with a position, by outcome (recovered: every missed event replayed; reset: the client reloads).',
    labelNames: ['outcome'],
    registers,
  });
  const replayed = new Counter({ name: 'wsedge_events_replayed_total', help: 'Events sent from history to recovering clients.', registers });
  const repaired = new Counter({ name: 'wsedge_gaps_repaired_total', help: 'Offset gaps in a live room stream filled from history before delivery went on.', registers });
  const resets = new Counter({
    name: 'wsedge_room_resets_total',
    help: 'room_reset sent to a room\'s local members: a new epoch, or a gap history could not fill.',
    labelNames: ['reason'],
    registers,
  });
  const duplicates = new Counter({ name: 'wsedge_duplicate_events_total', help: 'Sequenced events dropped because their offset was delivered already.', registers });
  const duplicatePublishes = new Counter({
    name: 'wsedge_duplicate_publishes_total',
    help: 'Publishes whose idempotency key was seen within its window: answered with the first position, not published again.',
    registers,
  });
  const lost = new Counter({
    name: 'wsedge_recovery_resets_total',
    help: 'Recoveries answered recovered: false, by reason: epoch (the room started over), too_far (more missed than WS_HISTORY_RECOVER_MAX), trimmed (history no longer held them: WS_HISTORY_SIZE or WS_HISTORY_TTL too small for the outage).',
    labelNames: ['reason'],
    registers,
  });
  const byOutcome = { recovered: recoveries.labels('recovered'), reset: recoveries.labels('reset') };
  const byLoss = { epoch: lost.labels('epoch'), too_far: lost.labels('too_far'), trimmed: lost.labels('trimmed') };
  const byReason = { epoch: resets.labels('epoch'), gap: resets.labels('gap') };
  return {
    recoveryLost(reason: keyof typeof byLoss) {
      byLoss[reason].inc();
    },
    recovery(outcome: keyof typeof byOutcome, events: number) {
      byOutcome[outcome].inc();
      if (events > 0) replayed.inc(events);
    },
    gapRepaired() {
      repaired.inc();
    },
    roomReset(reason: keyof typeof byReason) {
      byReason[reason].inc();
    },
    duplicateEvent() {
      duplicates.inc();
    },
    duplicatePublish() {
      duplicatePublishes.inc();
    },
  };
}

export type AccessSource = 'personal' | 'open' | 'claim' | 'grant' | 'callback';
export type AccessResult = 'allow' | 'deny' | 'error';

function accessMetrics(registers: Registers) {
  const outcomes = new Counter({
    name: 'wsedge_room_authorizations_total',
    help: 'Room join decisions by the source that decided (personal, open, claim, grant, callback) and result (allow, deny, error).',
    labelNames: ['source', 'result'],
    registers,
  });
  const latency = new Histogram({
    name: 'wsedge_room_auth_callback_seconds',
    help: 'Calls to WS_ROOM_AUTH_URL, by result (allow, deny, error: timeout, down, bad answer).',
    labelNames: ['result'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5],
    registers,
  });
  const cache = new Counter({ name: 'wsedge_room_auth_cache_total', help: 'Callback decisions asked for, by whether a cached answer was used (hit) or the backend was called (miss).', labelNames: ['result'], registers });
  const revocations = new Counter({
    name: 'wsedge_room_revocations_total',
    help: 'Memberships taken away on this node: a backend unsubscribe, a refreshed token, an expired room grant.',
    labelNames: ['cause'],
    registers,
  });
  for (const source of ['personal', 'open', 'claim', 'grant', 'callback']) for (const result of ['allow', 'deny', 'error']) outcomes.labels(source, result);
  for (const result of ['hit', 'miss']) cache.labels(result);
  for (const cause of ['unsubscribe', 'token', 'grant_expired']) revocations.labels(cause);
  return {
    roomAuthorization(source: AccessSource, result: AccessResult) {
      outcomes.labels(source, result).inc();
    },
    roomAuthCall(result: AccessResult, seconds: number) {
      latency.labels(result).observe(seconds);
    },
    roomAuthCache(result: 'hit' | 'miss') {
      cache.labels(result).inc();
    },
    revocation(cause: 'unsubscribe' | 'token' | 'grant_expired') {
      revocations.labels(cause).inc();
    },
  };
}

export type BackendKind = 'room_auth' | 'publish' | 'rpc';
/** `busy`: no turn before the deadline (the node's calls in flight at the cap); `bad_answer`: not a 200 with a JSON object of at most 4 KB. */
export type BackendOutcome = 'ok' | 'timeout' | 'down' | 'bad_answer' | 'busy';

function backendMetrics(registers: Registers) {
  const calls = new Counter({
    name: 'wsedge_backend_calls_total',
    help: 'Calls to the product backend by kind (room_auth, publish, rpc) and outcome (ok, timeout, down, bad_answer, busy: no turn before the deadline).',
    labelNames: ['kind', 'outcome'],
    registers,
  });
  const latency = new Histogram({
    name: 'wsedge_backend_call_seconds',
    help: 'Calls to the product backend by kind, the wait for a turn included.',
    labelNames: ['kind'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5],
    registers,
  });
  const refused = new Counter({
    name: 'wsedge_backend_refusals_total',
    help: 'Client requests the backend refused (publish proxy denies, rpc errors), by kind.',
    labelNames: ['kind'],
    registers,
  });
  for (const kind of ['room_auth', 'publish', 'rpc']) {
    for (const outcome of ['ok', 'timeout', 'down', 'bad_answer', 'busy']) calls.labels(kind, outcome);
    refused.labels(kind);
  }
  return {
    backendCall(kind: BackendKind, outcome: BackendOutcome, seconds: number) {
      calls.labels(kind, outcome).inc();
      latency.labels(kind).observe(seconds);
    },
    backendRefusal(kind: BackendKind) {
      refused.labels(kind).inc();
    },
  };
}

export type SignalOutcome = 'delivered' | 'unknown_name' | 'not_joined' | 'rate_limited' | 'invalid';

function presenceMetrics(registers: Registers) {
  let entries = (): number => 0;
  new Gauge({
    name: 'wsedge_presence_entries',
    help: 'Presence entries this node keeps alive: its connections in presence rooms (WS_PRESENCE_ROOMS).',
    registers,
    collect() {
      this.set(entries());
    },
  });
  const joins = new Counter({ name: 'wsedge_presence_joins_total', help: 'Users who became present in a room (their first connection, cluster-wide), seen by this node.', registers });
  const leaves = new Counter({
    name: 'wsedge_presence_leaves_total',
    help: 'Users who stopped being present, by reason: left (leave or normal close), expired (node gone, grace over), revoked.',
    labelNames: ['reason'],
    registers,
  });
  const errors = new Counter({ name: 'wsedge_presence_errors_total', help: 'Presence store calls that failed (Redis unreachable).', registers });
  const signals = new Counter({ name: 'wsedge_signals_total', help: 'Client signals, by outcome.', labelNames: ['outcome'], registers });
  const byReason = { left: leaves.labels('left'), expired: leaves.labels('expired'), revoked: leaves.labels('revoked') };
  const byOutcome = Object.fromEntries((['delivered', 'unknown_name', 'not_joined', 'rate_limited', 'invalid'] as const).map((o) => [o, signals.labels(o)])) as Record<SignalOutcome, ReturnType<typeof signals.labels>>;
  return {
    /** Where `wsedge_presence_entries` reads the count at scrape time. */
    presenceEntriesFrom(count: () => number) {
      entries = count;
    },
    presenceChange(kind: 'join' | 'leave', reason: keyof typeof byReason | undefined) {
      if (kind === 'join') joins.inc();
      else byReason[reason ?? 'left'].inc();
    },
    presenceError() {
      errors.inc();
    },
    signal(outcome: SignalOutcome) {
      byOutcome[outcome].inc();
    },
  };
}

export type WebhookOutcome = 'ok' | 'refused' | 'timeout' | 'down';
/** An event that left the backlog: delivered, or dropped (older than WS_WEBHOOK_RETRY_FOR, trimmed from the capped stream, or pushed out of the memory queue). */
export type EventFate = 'delivered' | 'expired' | 'trimmed' | 'overflow';

/** Lifecycle events (src/lifecycle.ts) and their webhook delivery (src/webhooks.ts). */
function eventMetrics(registers: Registers) {
  const produced = new Counter({ name: 'wsedge_events_total', help: 'Events this node appended for the backend (user.online, user.offline, room.occupied, room.vacated, signal), by type.', labelNames: ['type'], registers });
  const failures = new Counter({ name: 'wsedge_events_write_failures_total', help: 'Lifecycle writes that failed (Redis unreachable); the next refresh or the expiry sweep makes up for them.', registers });
  const requests = new Counter({ name: 'wsedge_webhook_requests_total', help: 'Webhook requests by outcome: ok (2xx), refused (another status), timeout, down (unreachable).', labelNames: ['outcome'], registers });
  const fates = new Counter({ name: 'wsedge_webhook_events_total', help: 'Events that left the webhook backlog: delivered, or dropped as expired (WS_WEBHOOK_RETRY_FOR), trimmed (stream cap) or overflow (memory queue cap).', labelNames: ['outcome'], registers });
  const backlog = new Gauge({ name: 'wsedge_webhook_backlog', help: 'Events not yet delivered to the webhook, as the delivering node last saw them (0 on the others).', registers });
  const age = new Gauge({ name: 'wsedge_webhook_backlog_age_seconds', help: 'Age of the oldest event the delivering node is trying to deliver (0 when none waits).', registers });
  const lag = new Histogram({ name: 'wsedge_webhook_lag_seconds', help: 'From an event being appended to its delivery being acknowledged by the receiver.', buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300], registers });
  for (const type of ['user.online', 'user.offline', 'room.occupied', 'room.vacated', 'signal']) produced.labels(type);
  for (const outcome of ['ok', 'refused', 'timeout', 'down']) requests.labels(outcome);
  for (const outcome of ['delivered', 'expired', 'trimmed', 'overflow']) fates.labels(outcome);
  return {
    eventProduced(type: string) {
      produced.labels(type).inc();
    },
    eventWriteFailed() {
      failures.inc();
    },
    webhookRequest(outcome: WebhookOutcome) {
      requests.labels(outcome).inc();
    },
    webhookEvents(fate: EventFate, count: number) {
      if (count > 0) fates.labels(fate).inc(count);
    },
    webhookBacklog(events: number, ageSeconds: number) {
      backlog.set(events);
      age.set(ageSeconds);
    },
    webhookLag(seconds: number) {
      lag.observe(seconds);
    },
  };
}

/** What became of a join that could be announced (announcements.ts): announced, the room full, or its store unreachable. */
export type AnnouncementOutcome = 'announced' | 'full' | 'unavailable';

/** Membership events bounded cluster-wide (announcements.ts). */
function announcementMetrics(registers: Registers) {
  const outcomes = new Counter({
    name: 'wsedge_membership_announcements_total',
    help: 'Joins that could be announced (user_joined) by outcome: announced, full (WS_MEMBERSHIP_EVENTS_MAX_MEMBERS announced members in the room cluster-wide), unavailable (Redis unreachable: not announced).',
    labelNames: ['outcome'],
    registers,
  });
  const byOutcome = Object.fromEntries((['announced', 'full', 'unavailable'] as const).map((o) => [o, outcomes.labels(o)])) as Record<AnnouncementOutcome, ReturnType<typeof outcomes.labels>>;
  return {
    announcement(outcome: AnnouncementOutcome) {
      byOutcome[outcome].inc();
    },
  };
}

/** Where ingested publish commands come from (src/ingest.ts). */
export type IngestSource = 'stream' | 'outbox';
export type IngestFate = 'published' | 'retried' | 'dead';

/** Publish commands read from a Redis Stream or a PostgreSQL outbox (src/ingest.ts and its consumers). */
function ingestMetrics(registers: Registers) {
  const fates = new Counter({
    name: 'wsedge_ingest_entries_total',
    help: 'Ingested publish commands by source (stream, outbox) and outcome: published, retried (a sequenced room unreachable; kept and tried again), dead (moved to the dead letter).',
    labelNames: ['source', 'outcome'],
    registers,
  });
  const dead = new Counter({ name: 'wsedge_ingest_dead_total', help: 'Ingested commands moved to the dead letter, by source and refusal code.', labelNames: ['source', 'code'], registers });
  const age = new Gauge({ name: 'wsedge_ingest_lag_seconds', help: 'Age of the oldest command not yet published, by source, as this node last saw it (0 when none waits or this node does not consume).', labelNames: ['source'], registers });
  const latency = new Histogram({ name: 'wsedge_ingest_latency_seconds', help: 'From a command being written (entry id time, row created_at) to its publication, by source.', labelNames: ['source'], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30], registers });
  const up = new Gauge({ name: 'wsedge_ingest_up', help: 'Whether this node can reach the ingestion source (1) or not (0), by source.', labelNames: ['source'], registers });
  for (const source of ['stream', 'outbox']) for (const outcome of ['published', 'retried', 'dead']) fates.labels(source, outcome);
  return {
    ingested(source: IngestSource, fate: IngestFate, count = 1) {
      if (count > 0) fates.labels(source, fate).inc(count);
    },
    ingestDead(source: IngestSource, code: string) {
      dead.labels(source, code).inc();
    },
    ingestLag(source: IngestSource, seconds: number) {
      age.labels(source).set(seconds);
    },
    ingestLatency(source: IngestSource, seconds: number) {
      latency.labels(source).observe(seconds);
    },
    ingestUp(source: IngestSource, reachable: boolean) {
      up.labels(source).set(reachable ? 1 : 0);
    },
  };
}

/**
 * How a key set refresh ended: loaded, unchanged, why the fetch gave nothing (jwks.ts FetchProblem)
 * or why the set was refused (keys.ts KeySetProblem).
 */
export type KeyFetchOutcome =
  | 'ok'
  | 'unchanged'
  | 'redirect'
  | 'http_error'
  | 'too_large'
  | 'timeout'
  | 'network'
  | 'not_json'
  | 'invalid'
  | 'too_many_keys'
  | 'symmetric'
  | 'alg_none'
  | 'unsupported'
  | 'mixed'
  | 'private_key'
  | 'duplicate_kid'
  | 'invalid_key'
  | 'no_usable_key';
export type RevocationKind = 'user' | 'jti';

/** Verification keys (key-source.ts) and revocations (revocation.ts). */
function keyMetrics(registers: Registers) {
  const keys = new Gauge({ name: 'wsedge_jwt_keys', help: 'Verification keys loaded (secrets, key file keys or JWKS keys).', registers });
  const fetches = new Counter({
    name: 'wsedge_jwt_key_fetches_total',
    help: 'Refreshes of a key file or JWKS by outcome: ok, unchanged, or why the set was refused (the last good set is kept).',
    labelNames: ['outcome'],
    registers,
  });
  let loadedAt = Date.now();
  let refreshing = false;
  new Gauge({
    name: 'wsedge_jwt_key_set_age_seconds',
    help: 'Seconds since the key file or JWKS was last loaded or found unchanged (since start while never loaded); 0 for JWT_SECRET.',
    registers,
    collect() {
      this.set(refreshing ? (Date.now() - loadedAt) / 1000 : 0);
    },
  });
  const revocations = new Counter({
    name: 'wsedge_revocations_total',
    help: 'Revocations this node took in (from the API, another node or a publisher), by kind: user (issued before a time) or jti.',
    labelNames: ['kind'],
    registers,
  });
  const kept = new Gauge({ name: 'wsedge_revocations', help: 'Revocations kept on this node (each until the longest token life has passed).', registers });
  const revokedCloses = new Counter({ name: 'wsedge_revoked_closes_total', help: 'Live connections closed with 4401 token revoked.', registers });
  return {
    /** `refresh`: the set comes from a file or JWKS, whose age is reported. */
    keySetLoaded(count: number, refresh: boolean) {
      keys.set(count);
      loadedAt = Date.now();
      refreshing = refresh;
    },
    keyFetch(outcome: KeyFetchOutcome) {
      fetches.inc({ outcome });
    },
    revocationAdded(kind: RevocationKind) {
      revocations.inc({ kind });
    },
    revocationsKept(count: number) {
      kept.set(count);
    },
    revokedClose() {
      revokedCloses.inc();
    },
  };
}

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: '', eventLoopMonitoringPrecision: 20 });
  // prom-client names these gauges with a counter suffix, which `promtool check metrics` flags.
  for (const name of LINT_FAILING_DEFAULTS) registry.removeSingleMetric(name);
  const registers = [registry];
  let readiness = (): boolean => false;
  new Gauge({
    name: 'wsedge_ready',
    help: '1 while /readyz answers 200 (ready), 0 while starting, draining or (with WS_READY_REQUIRES_BROKER) broker down.',
    registers,
    collect() {
      this.set(readiness() ? 1 : 0);
    },
  });
  return {
    registry,
    /** Where `wsedge_ready` reads the node's readiness at scrape time. */
    readinessFrom(ready: () => boolean) {
      readiness = ready;
    },
    ...connectionMetrics(registers),
    ...messageMetrics(registers),
    ...brokerMetrics(registers),
    ...apiMetrics(registers),
    ...historyMetrics(registers),
    ...presenceMetrics(registers),
    ...accessMetrics(registers),
    ...backendMetrics(registers),
    ...eventMetrics(registers),
    ...ingestMetrics(registers),
    ...announcementMetrics(registers),
    ...keyMetrics(registers),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
