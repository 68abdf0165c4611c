/**
 * Prometheus metrics on a private registry, exposed only on the internal port. Call sites name
 * events (`connectionOpened`, `frameRejected`); labels come from fixed vocabularies, never a room,
 * user, token or connection id, and client-chosen values (close codes, message types) are folded
 * into a bounded set first.
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { CloseCode, type ErrorCode, type RejectReason } from './errors.js';
import { CLIENT_MESSAGE_TYPES } from './protocol.js';

export type PublishSource = 'client' | 'server' | 'membership';
export type RefusalReason = 'max_connections' | 'draining';

const KNOWN_CLOSE_CODES = new Set<number>([1000, 1001, 1005, 1006, 1011, ...Object.values(CloseCode)]);
const KNOWN_TYPES = new Set<string>(CLIENT_MESSAGE_TYPES);

/** Close codes are partly client-chosen (any of 1000-4999); fold unknown ones into "other". */
function closeLabel(code: number): string {
  return KNOWN_CLOSE_CODES.has(code) ? String(code) : 'other';
}

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: '', eventLoopMonitoringPrecision: 20 });
  const registers = [registry];

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
    help: 'Upgrades answered with HTTP 503 before any socket existed, by reason.',
    labelNames: ['reason'],
    registers,
  });
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
    help: 'Events published to rooms by source (client send_message, server API/helpers, membership events).',
    labelNames: ['source'],
    registers,
  });
  const rooms = new Gauge({ name: 'wsedge_rooms', help: 'Rooms (uWS topics) with at least one member on this node.', registers });
  const rateLimited = new Counter({ name: 'wsedge_rate_limited_total', help: 'Client frames dropped by the rate limit.', registers });
  const backpressureDrops = new Counter({
    name: 'wsedge_backpressure_drops_total',
    help: 'Slow consumers closed because their unsent data passed WS_MAX_BACKPRESSURE (official uWS build only).',
    registers,
  });
  const tooBig = new Counter({
    name: 'wsedge_message_too_big_total',
    help: 'Frames refused for size: "limit" closed with 1009, "ceiling" dropped by uWS above maxPayloadLength (1006).',
    labelNames: ['kind'],
    registers,
  });
  const policyCloses = new Counter({
    name: 'wsedge_policy_closes_total',
    help: 'Connections closed for abuse by reason (invalid messages 1008, flooding 4429, token expiry 4401).',
    labelNames: ['reason'],
    registers,
  });

  return {
    registry,
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
    messageReceived(type: string) {
      received.inc({ type: KNOWN_TYPES.has(type) ? type : 'invalid' });
    },
    errorSent(code: ErrorCode) {
      errors.inc({ code });
    },
    published(source: PublishSource) {
      published.inc({ source });
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
    backpressureDrop() {
      backpressureDrops.inc();
    },
    messageTooBig(kind: 'limit' | 'ceiling') {
      tooBig.inc({ kind });
    },
    policyClose(reason: 'invalid_messages' | 'flooding' | 'token_expired') {
      policyCloses.inc({ reason });
    },
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
