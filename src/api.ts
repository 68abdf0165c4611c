/**
 * The server API for backends, on the internal port only: POST /api/v1/publish,
 * /api/v1/disconnect, /api/v1/unsubscribe and /api/v1/subscribe, and GET
 * /api/v1/rooms/<room>/{history,presence,presence_stats}, with `Authorization: Bearer
 * <PUBLISH_API_KEY>` compared in constant time. Bodies are capped at WS_MESSAGE_MAX_SIZE while
 * they stream in, before any parsing.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Broker } from './broker.js';
import type { Config } from './config.js';
import { API_REFUSALS, CLOSES, isApplicationCloseCode, isCloseReason, type ApiRefusalName } from './errors.js';
import type { Events } from './events.js';
import { IDEMPOTENCY_KEY, readPage, type History } from './history.js';
import { isPresenceRoom, isSequenced } from './membership.js';
import type { RoomPublish } from './publish.js';
import { sendEncodedJson, sendJson, sendRefusal } from './http.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import { MAX_CLOSE_REASON_BYTES, MAX_HISTORY_LIMIT, MAX_PRESENCE_USERS } from './messages.js';
import type { PresenceTracker } from './presence-tracker.js';
import { encodeEvent, encodeHistory, encodeReply, isEpoch, isPublishableType } from './protocol.js';
import { isValidId, isValidRoom, userRoom } from './rooms.js';
import type { HttpRequest, HttpResponse, TemplatedApp } from './uws.js';

export interface ApiDeps {
  readonly config: Config;
  readonly log: Logger;
  readonly broker: Broker;
  readonly events: Events;
  /** The room-publish seam (publish.ts): plain rooms through the broker, sequenced ones through their history. */
  readonly publish: RoomPublish;
  readonly history: History;
  readonly presence: PresenceTracker;
  readonly metrics: Metrics;
}

type Answer = Record<string, unknown>;

type Endpoint = 'publish' | 'disconnect' | 'unsubscribe' | 'subscribe';

/** An API refusal: a catalogue entry, thrown by the checks and answered by the route. */
class ApiError extends Error {
  constructor(
    readonly refusal: ApiRefusalName,
    readonly limit?: number,
  ) {
    super(API_REFUSALS[refusal].reason);
  }
}

const badRequest = (name: ApiRefusalName, limit?: number) => new ApiError(name, limit);
const CONNECTION_ID = /^[A-Za-z0-9_-]{1,32}\.[0-9a-z]{1,16}$/;
const MAX_SENDER_LENGTH = 128;

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

/** Constant-time comparison: both sides are hashed to equal length first. */
function authorized(header: string, expected: Buffer): boolean {
  const match = /^Bearer (.+)$/.exec(header);
  return match !== null && timingSafeEqual(digest(match[1]!), expected);
}

/** Streams the body, refusing it once it passes `limit` bytes. */
function readBody(res: HttpResponse, limit: number, onBody: (body: Buffer) => void, onTooLarge: () => void): void {
  const chunks: Buffer[] = [];
  let size = 0;
  let refused = false;
  res.onData((chunk, isLast) => {
    if (refused) return;
    size += chunk.byteLength;
    if (size > limit) {
      refused = true;
      return onTooLarge();
    }
    // uWS reuses the chunk's memory after this callback: copy it.
    chunks.push(Buffer.from(Buffer.from(chunk)));
    if (isLast) onBody(Buffer.concat(chunks, size));
  });
}

function parseObject(body: Buffer): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw badRequest('invalid_json');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw badRequest('invalid_body');
  return value as Record<string, unknown>;
}

/**
 * One room's event: through the history when the room is sequenced, answered with its position
 * (`duplicate: true` when its idempotency key was seen: nothing was published again).
 */
function publishTo(deps: ApiDeps, room: string, envelope: string, key: string | undefined, answer: Answer): Answer | Promise<Answer> {
  if (key !== undefined && !isSequenced(deps, room)) throw badRequest('invalid_idempotency_key');
  const appended = deps.publish(room, envelope, key);
  if (appended === undefined) {
    deps.metrics.published('api');
    return answer;
  }
  return appended.then(
    ({ epoch, offset, duplicate }) => {
      if (duplicate) deps.metrics.duplicatePublish();
      else deps.metrics.published('api');
      return { ...answer, epoch, offset, ...(duplicate && { duplicate }) };
    },
    () => {
      throw badRequest('history_unavailable');
    },
  );
}

function publish(deps: ApiDeps, body: Record<string, unknown>): Answer | Promise<Answer> {
  const { room, user_id: userId, connection_id: connectionId, type, data, sender, idempotency_key: key } = body;
  const targets = [room, userId, connectionId].filter((t) => t !== undefined);
  if (targets.length !== 1) throw badRequest('invalid_target');
  if (!isPublishableType(type)) throw badRequest('invalid_type');
  if (sender !== undefined && sender !== null && (typeof sender !== 'string' || sender.length > MAX_SENDER_LENGTH)) {
    throw badRequest('invalid_sender', MAX_SENDER_LENGTH);
  }
  const from = (sender as string | null | undefined) ?? null;
  if (key !== undefined && (typeof key !== 'string' || !IDEMPOTENCY_KEY.test(key))) throw badRequest('invalid_idempotency_key');
  if (room !== undefined) {
    if (!isValidRoom(room)) throw badRequest('invalid_room');
    return publishTo(deps, room, encodeEvent(type, room, data ?? null, from), key, { status: 'published', room });
  }
  if (userId !== undefined) {
    if (!isValidId(userId)) throw badRequest('invalid_user_id');
    const target = userRoom(userId);
    return publishTo(deps, target, encodeEvent(type, target, data ?? null, from), key, { status: 'published', user_id: userId });
  }
  if (key !== undefined) throw badRequest('invalid_idempotency_key');
  if (typeof connectionId !== 'string' || !CONNECTION_ID.test(connectionId)) throw badRequest('invalid_connection_id');
  deps.broker.sendToConnection(connectionId, encodeEvent(type, null, data ?? null, from));
  deps.metrics.published('api');
  return { status: 'published', connection_id: connectionId };
}

function disconnect(deps: ApiDeps, body: Record<string, unknown>): Answer {
  const { user_id: userId, code = CLOSES.disconnected.code, reason = CLOSES.disconnected.message } = body;
  if (!isValidId(userId)) throw badRequest('invalid_user_id');
  if (!isApplicationCloseCode(code)) throw badRequest('invalid_code');
  if (!isCloseReason(reason)) throw badRequest('invalid_reason', MAX_CLOSE_REASON_BYTES);
  deps.broker.disconnectUser(userId, code, reason);
  return { status: 'disconnecting', user_id: userId, code };
}

/**
 * unsubscribe (the user, or one connection, leaves the room on every node) and subscribe (every
 * connection of the user joins it): refused while the broker cannot reach the other nodes, since
 * the change would reach this node only.
 */
function changeAccess(op: 'unsubscribe' | 'subscribe') {
  return async (deps: ApiDeps, body: Record<string, unknown>): Promise<Answer> => {
    const { user_id: userId, room, connection_id: connectionId } = body;
    if (!isValidId(userId)) throw badRequest('invalid_user_id');
    if (!isValidRoom(room) || room.startsWith('user:')) throw badRequest('invalid_access_room');
    if (connectionId !== undefined && (op === 'subscribe' || typeof connectionId !== 'string' || !CONNECTION_ID.test(connectionId))) throw badRequest('invalid_connection_id');
    if (!deps.broker.isUp() || !(await deps.broker.changeAccess({ op, userId, room, connectionId: connectionId as string | undefined }))) throw badRequest('broker_unavailable');
    return { status: op === 'subscribe' ? 'subscribed' : 'unsubscribed', user_id: userId, room, ...(connectionId === undefined ? {} : { connection_id: connectionId }) };
  };
}

const HANDLERS: Record<Endpoint, (deps: ApiDeps, body: Record<string, unknown>) => Answer | Promise<Answer>> = {
  publish,
  disconnect,
  unsubscribe: changeAccess('unsubscribe'),
  subscribe: changeAccess('subscribe'),
};

/** The query of GET .../history: since_epoch with since_offset, limit, reverse; undefined when malformed. */
function historyQuery(query: string, size: number): { since: { epoch: string; offset: number } | undefined; limit: number; reverse: boolean } | undefined {
  const q = new URLSearchParams(query);
  const epoch = q.get('since_epoch');
  const offset = q.get('since_offset');
  const limit = q.get('limit') ?? String(size);
  const reverse = q.get('reverse') ?? 'false';
  if ((epoch === null) !== (offset === null) || !/^\d{1,15}$/.test(offset ?? '0') || !/^\d{1,5}$/.test(limit) || !['true', 'false'].includes(reverse)) return undefined;
  if (epoch !== null && !isEpoch(epoch)) return undefined;
  const n = Number(limit);
  if (n < 1 || n > MAX_HISTORY_LIMIT) return undefined;
  return { since: epoch === null ? undefined : { epoch, offset: Number(offset) }, limit: Math.min(n, size), reverse: reverse === 'true' };
}

type RoomEndpoint = 'history' | 'presence' | 'presence_stats';
/** A room route's answer: a refusal at once, or the encoded JSON body (a refusal name when it fails). */
type RoomAnswer = ApiRefusalName | Promise<string>;

/** GET /api/v1/rooms/<room>/<endpoint>, the room URL-encoded or not, with the API key. */
function addRoomRoute(app: TemplatedApp, deps: ApiDeps, expected: Buffer | undefined, endpoint: RoomEndpoint, answer: (room: string, query: string) => RoomAnswer): void {
  app.get(`/api/v1/rooms/:room/${endpoint}`, (res: HttpResponse, req: HttpRequest) => {
    let aborted = false;
    res.onAborted(() => {
      aborted = true;
    });
    const fail = (name: ApiRefusalName): void => {
      deps.metrics.apiRequest(endpoint, API_REFUSALS[name].status);
      if (!aborted) sendRefusal(res, API_REFUSALS[name]);
    };
    if (expected === undefined) return fail('api_disabled');
    if (!authorized(req.getHeader('authorization'), expected)) return fail('unauthorized');
    let room = '';
    try {
      room = decodeURIComponent(req.getParameter(0) ?? '');
    } catch {
      // a malformed escape: not a room
    }
    if (!isValidRoom(room)) return fail('invalid_room');
    const result = answer(room, req.getQuery() ?? '');
    if (typeof result === 'string') return fail(result);
    result.then(
      (body) => {
        deps.metrics.apiRequest(endpoint, 200);
        if (!aborted) sendEncodedJson(res, '200 OK', body);
      },
      (name: ApiRefusalName) => fail(name),
    );
  });
}

/** GET .../history: the room's position and kept events, for a backend that loads state. */
function historyAnswer(deps: ApiDeps, room: string, rawQuery: string): RoomAnswer {
  if (!isSequenced(deps, room)) return 'no_history';
  const query = historyQuery(rawQuery, deps.config.history.size);
  if (query === undefined) return 'invalid_query';
  return readPage(deps.history, room, query.since, query.limit, query.reverse).then(
    (page) => encodeHistory(room, page, page.entries.map((e) => e.payload), undefined),
    () => Promise.reject<string>('history_unavailable'),
  );
}

/** GET .../presence and .../presence_stats: what a member's `presence` and `presence_stats` answer. */
function presenceAnswer(deps: ApiDeps, room: string, endpoint: 'presence' | 'presence_stats'): RoomAnswer {
  if (!isPresenceRoom(deps, room)) return 'no_presence';
  const read =
    endpoint === 'presence_stats'
      ? deps.presence.stats(room)
      : deps.presence.snapshot(room, MAX_PRESENCE_USERS).then(({ version, users, count }) => ({ users, count, truncated: count > users.length, version }));
  return read.then(
    (data) => encodeReply(endpoint, { room, data }, undefined),
    () => Promise.reject<string>('presence_unavailable'),
  );
}

export function addApiRoutes(app: TemplatedApp, deps: ApiDeps): void {
  const key = deps.config.publishApiKey;
  const expected = key === undefined ? undefined : digest(key);
  addRoomRoute(app, deps, expected, 'history', (room, query) => historyAnswer(deps, room, query));
  for (const endpoint of ['presence', 'presence_stats'] as const) addRoomRoute(app, deps, expected, endpoint, (room) => presenceAnswer(deps, room, endpoint));
  for (const endpoint of ['publish', 'disconnect', 'unsubscribe', 'subscribe'] as const) {
    app.post(`/api/v1/${endpoint}`, (res: HttpResponse, req: HttpRequest) => {
      let aborted = false;
      res.onAborted(() => {
        aborted = true;
      });
      const ok = (body: Answer): void => {
        deps.metrics.apiRequest(endpoint, 200);
        if (!aborted) sendJson(res, '200 OK', body);
      };
      const fail = (name: ApiRefusalName, limit?: number): void => {
        const refusal = API_REFUSALS[name];
        deps.metrics.apiRequest(endpoint, refusal.status);
        if (!aborted) sendRefusal(res, refusal, { limit });
      };
      if (expected === undefined) return fail('api_disabled');
      if (!authorized(req.getHeader('authorization'), expected)) return fail('unauthorized');
      const limit = deps.config.messageMaxSize;
      if (Number(req.getHeader('content-length') || 0) > limit) return fail('too_large', limit);
      readBody(
        res,
        limit,
        (body) => {
          const failed = (err: unknown): void => {
            if (err instanceof ApiError) return fail(err.refusal, err.limit);
            deps.log.error({ err, endpoint }, 'API request failed');
            fail('internal_error');
          };
          try {
            const answer = HANDLERS[endpoint](deps, parseObject(body));
            if (answer instanceof Promise) answer.then(ok, failed);
            else ok(answer);
          } catch (err) {
            failed(err);
          }
        },
        () => fail('too_large', limit),
      );
    });
  }
}
