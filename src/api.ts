/**
 * The server API for backends, on the internal port only: POST /api/v1/publish,
 * /api/v1/publish/batch, /api/v1/disconnect, /api/v1/unsubscribe, /api/v1/subscribe and /api/v1/revoke, and GET
 * /api/v1/rooms/<room>/{history,presence,presence_stats}, with `Authorization: Bearer
 * <PUBLISH_API_KEY>` compared in constant time. Bodies are capped at WS_MESSAGE_MAX_SIZE while
 * they stream in, before any parsing.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Broker } from './broker.js';
import type { Config } from './config.js';
import { API_REFUSALS, CLOSES, isApplicationCloseCode, isCloseReason, refusalBody, type ApiRefusalName } from './errors.js';
import type { Events } from './events.js';
import { IDEMPOTENCY_KEY, readPage, type History } from './history.js';
import { isPresenceRoom, isSequenced } from './membership.js';
import { eventEncoder, isConnectionId, listTargets, MAX_PUBLICATIONS, MAX_TARGETS, publishTargets, type ConnectionCount, type RoomPublish, type Target, type TargetOutcome, type WritesTogether } from './publish.js';
import { sendEncodedJson, sendJson, sendRefusal } from './http.js';
import type { UserStatus } from './limits.js';
import type { Logger } from './log.js';
import type { Metrics, PublishSource } from './metrics.js';
import { MAX_CLOSE_REASON_BYTES, MAX_HISTORY_LIMIT, MAX_PRESENCE_USERS } from './messages.js';
import type { PresenceTracker } from './presence-tracker.js';
import { encodeEvent, encodeHistory, encodeReply, isEpoch, isPublishableType } from './protocol.js';
import { isValidId, isValidRoom, userRoom } from './rooms.js';
import { expiryOf, issuedBeforeMs, isTokenId, type KeptRevocation, type Revocation, type RevocationList, type RevocationStore } from './revocation.js';
import type { HttpRequest, HttpResponse, TemplatedApp } from './uws.js';

export interface ApiDeps {
  readonly config: Config;
  readonly log: Logger;
  readonly broker: Broker;
  readonly events: Events;
  /** The room-publish seam (publish.ts): plain rooms through the broker, sequenced ones through their history. */
  readonly publish: RoomPublish;
  /** Each user's live connections on every node (this node's without Redis), for the answer to a user target. */
  readonly connections: ConnectionCount;
  /** Hands the Redis commands a multi-target publish issues to the socket in one write; absent without Redis. */
  readonly together?: WritesTogether;
  /** Whether each user is connected anywhere (the seat registry, limits.ts); rejects while Redis is away. */
  readonly status: (userIds: readonly string[]) => Promise<UserStatus[]>;
  readonly history: History;
  readonly presence: PresenceTracker;
  readonly metrics: Metrics;
  /** Where revocations are kept (Redis, or this node's memory) and this node's list. */
  readonly revocations: { readonly store: RevocationStore; readonly list: RevocationList };
}

type Answer = Record<string, unknown>;

type Endpoint = 'publish' | 'publish_batch' | 'disconnect' | 'unsubscribe' | 'subscribe' | 'users_status' | 'revoke';

/** At most this many user ids in one status question. */
export const MAX_STATUS_USERS = 500;

/** An API refusal: a catalogue entry, thrown by the checks and answered by the route. */
export class ApiError extends Error {
  constructor(
    readonly refusal: ApiRefusalName,
    readonly limit?: number,
  ) {
    super(API_REFUSALS[refusal].message);
  }
}

const badRequest = (name: ApiRefusalName, limit?: number) => new ApiError(name, limit);
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

/** The refusal body of an item or target that failed on its own (a batch item, one of many targets). */
function refusalOf(err: ApiError): Answer {
  return refusalBody(API_REFUSALS[err.refusal], err.limit);
}

/** A publication checked and ready: how many targets it has, and what publishes it. */
export interface Prepared {
  readonly targets: number;
  run(): Answer | Promise<Answer>;
}

/**
 * Why a target was not published: its history unreachable (a sequenced room), or Redis refusing the
 * PUBLISH (only the publish thread's plain rooms can fail: a node delivers its own members at once).
 */
function unavailable(deps: Pick<PublishDeps, 'config'>, target: Target): ApiError {
  return badRequest(isSequenced(deps, target.room) ? 'history_unavailable' : 'publish_unavailable');
}

/** A target's answer fields: its room or user, and what publishing gave it. */
function targetAnswer(deps: Pick<PublishDeps, 'metrics' | 'config'>, outcome: TargetOutcome, source: PublishSource): Answer {
  const { target } = outcome;
  const id = target.userId === undefined ? { room: target.room } : { user_id: target.userId };
  if (!outcome.ok) return { ...id, ...refusalOf(unavailable(deps, target)) };
  const { appended, connections } = outcome;
  if (appended?.duplicate) deps.metrics.duplicatePublish();
  else deps.metrics.published(source);
  return {
    status: 'published',
    ...id,
    ...(connections !== undefined && { connections }),
    ...(appended !== undefined && { epoch: appended.epoch, offset: appended.offset, ...(appended.duplicate && { duplicate: true }) }),
  };
}

/**
 * What a publish body needs: the API's dependencies less its HTTP-only ones, and of the broker and
 * the metrics only what a publish uses (the publish thread has no more: publish-thread.ts).
 */
export type PublishDeps = Pick<ApiDeps, 'config' | 'connections' | 'together'> & {
  /** What a plain room's publish returns is not used: the publish thread's rejects when Redis refused it. */
  readonly publish: RoomPublish<unknown>;
  readonly broker: Pick<Broker, 'isUp'> & {
    /** A node answers nothing (its own connection served at once, another node's through Redis); the publish thread whether Redis took it. */
    sendToConnection(connectionId: string, payload: string): void | Promise<boolean>;
  };
  readonly metrics: Pick<Metrics, 'published' | 'duplicatePublish'>;
};

/** What the publish routes need: a publish body's dependencies, a log for failures, request counts. */
export type PublishRouteDeps = PublishDeps & {
  readonly log: Logger;
  readonly metrics: PublishDeps['metrics'] & Pick<Metrics, 'apiRequest'>;
};

/** Where a publish body came from: the API, or an ingestion (stream, outbox) with its entry's id. */
export interface BodySource {
  readonly source: PublishSource;
  /** The idempotency key of the sequenced targets when the body names none (an entry's or row's id). */
  readonly key?: string;
}

const API: BodySource = { source: 'api' };

/**
 * Checks a publish body (`room`, `user_id` or `connection_id`; or `rooms` and/or `user_ids`) and
 * returns what publishes it; throws the first refusal (an ApiError). One target answers as it always
 * has; a list answers a result per target, 503 only when every target failed (nothing was published).
 */
export function preparePublish(deps: PublishDeps, body: Record<string, unknown>, origin: BodySource = API): Prepared {
  const { room, user_id: userId, connection_id: connectionId, rooms, user_ids: userIds, type, data, sender, idempotency_key: key, exclude_connection: excludeConnection } = body;
  const single = [room, userId, connectionId].filter((t) => t !== undefined).length;
  const listed = rooms !== undefined || userIds !== undefined;
  if (single + (listed ? 1 : 0) !== 1) throw badRequest('invalid_target');
  const targets = listed ? listTargets(rooms, userIds) : undefined;
  if (typeof targets === 'string') throw badRequest(targets, targets === 'too_many_targets' ? MAX_TARGETS : undefined);
  if (!isPublishableType(type)) throw badRequest('invalid_type');
  if (sender !== undefined && sender !== null && (typeof sender !== 'string' || sender.length > MAX_SENDER_LENGTH)) {
    throw badRequest('invalid_sender', MAX_SENDER_LENGTH);
  }
  const from = (sender as string | null | undefined) ?? null;
  if (key !== undefined && (typeof key !== 'string' || !IDEMPOTENCY_KEY.test(key))) throw badRequest('invalid_idempotency_key');
  const except = excludeConnection ?? undefined;
  const excluded = isConnectionId(except) ? except : undefined;
  if (connectionId !== undefined) {
    if (key !== undefined) throw badRequest('invalid_idempotency_key');
    if (!isConnectionId(connectionId)) throw badRequest('invalid_connection_id');
    if (except !== undefined) throw badRequest('invalid_exclude_connection');
    return {
      targets: 1,
      async run() {
        if ((await deps.broker.sendToConnection(connectionId, encodeEvent(type, null, data ?? null, from))) === false) throw badRequest('publish_unavailable');
        deps.metrics.published(origin.source);
        return { status: 'published', connection_id: connectionId };
      },
    };
  }
  if (room !== undefined && !isValidRoom(room)) throw badRequest('invalid_room');
  if (userId !== undefined && !isValidId(userId)) throw badRequest('invalid_user_id');
  const list: readonly Target[] = targets ?? (room !== undefined ? [{ room: room as string }] : [{ room: userRoom(userId as string), userId: userId as string }]);
  if (key !== undefined && !list.every((t) => isSequenced(deps, t.room))) throw badRequest('invalid_idempotency_key');
  if (except !== excluded) throw badRequest('invalid_exclude_connection');
  const publication = { targets: list, encode: eventEncoder(type, data, from), key: (key as string | undefined) ?? origin.key, except: excluded };
  return {
    targets: list.length,
    async run() {
      const outcomes = await publishTargets(deps.publish, deps.connections, publication, deps.together);
      if (outcomes.every((o) => !o.ok)) throw unavailable(deps, outcomes[0]!.target);
      const answers = outcomes.map((o) => targetAnswer(deps, o, origin.source));
      if (targets === undefined) return answers[0]!;
      return { status: outcomes.every((o) => o.ok) ? 'published' : 'partial', results: answers };
    },
  };
}

function publish(deps: PublishDeps, body: Record<string, unknown>): Answer | Promise<Answer> {
  return preparePublish(deps, body).run();
}

/**
 * POST /api/v1/publish/batch: `{"publications": [publish bodies]}`, 1 to 100 of them, their targets
 * together at most 1,000. Each item is answered on its own, in order: what a publish of it answers,
 * or its refusal (`{"code", "message", "error", "reason"}`); a bad item does not stop the others.
 */
function publishBatch(deps: PublishRouteDeps, body: Record<string, unknown>): Promise<Answer> {
  const { publications } = body;
  if (!Array.isArray(publications) || publications.length === 0 || publications.length > MAX_PUBLICATIONS) throw badRequest('invalid_batch', MAX_PUBLICATIONS);
  const items = publications.map((item: unknown): Prepared | ApiError => {
    if (typeof item !== 'object' || item === null || Array.isArray(item)) return badRequest('invalid_body');
    try {
      return preparePublish(deps, item as Record<string, unknown>);
    } catch (err) {
      if (err instanceof ApiError) return err;
      throw err;
    }
  });
  const total = items.reduce((sum, item) => sum + (item instanceof ApiError ? 0 : item.targets), 0);
  if (total > MAX_TARGETS) throw badRequest('too_many_targets', MAX_TARGETS);
  // Each run issues its Redis commands before its first await: the whole batch leaves in one write.
  const together = deps.together ?? ((fn) => fn());
  const answered = together(() =>
    items.map(async (item): Promise<Answer> => {
      if (item instanceof ApiError) return refusalOf(item);
      try {
        return await item.run();
      } catch (err) {
        if (err instanceof ApiError) return refusalOf(err);
        deps.log.error({ err, endpoint: 'publish_batch' }, 'API request failed');
        return refusalOf(badRequest('internal_error'));
      }
    }),
  );
  return Promise.all(answered).then((results) => ({ results }));
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
    if (connectionId !== undefined && (op === 'subscribe' || !isConnectionId(connectionId))) throw badRequest('invalid_connection_id');
    if (!deps.broker.isUp() || !(await deps.broker.changeAccess({ op, userId, room, connectionId: connectionId as string | undefined }))) throw badRequest('broker_unavailable');
    return { status: op === 'subscribe' ? 'subscribed' : 'unsubscribed', user_id: userId, room, ...(connectionId === undefined ? {} : { connection_id: connectionId }) };
  };
}

/** The revocation a body asks for: `{user_id, issued_before}` or `{jti}`, nothing else. */
function revocationOf(body: Record<string, unknown>): Revocation {
  const { user_id: userId, issued_before: before, jti } = body;
  if ((jti === undefined) === (userId === undefined) || (jti !== undefined && before !== undefined) || (userId !== undefined && before === undefined)) throw badRequest('invalid_revocation');
  if (jti !== undefined) {
    if (!isTokenId(jti)) throw badRequest('invalid_jti');
    return { kind: 'jti', tokenId: jti };
  }
  if (!isValidId(userId)) throw badRequest('invalid_user_id');
  const issuedBefore = issuedBeforeMs(before);
  if (issuedBefore === undefined) throw badRequest('invalid_issued_before');
  return { kind: 'user', userId, issuedBefore };
}

/**
 * POST /api/v1/revoke: kept in Redis first (so it outlives every node and a node that misses the
 * frame reads it on its reload), then applied on every node: live connections it covers close with
 * 4401 `token revoked`, and the tokens are refused at the upgrade, refresh_token and for grants.
 */
async function revoke(deps: ApiDeps, body: Record<string, unknown>): Promise<Answer> {
  const rule = revocationOf(body);
  const { jwt } = deps.config;
  const kept: KeptRevocation = { rule, expiresAt: expiryOf(rule, Date.now(), (jwt.maxLifetimeSeconds + jwt.clockToleranceSeconds) * 1000) };
  let saved: boolean;
  try {
    saved = await deps.revocations.store.save(kept);
  } catch {
    throw badRequest('revocations_unavailable');
  }
  if (!saved || (!deps.revocations.list.has(kept) && deps.revocations.list.size >= deps.config.revocationsMax)) throw badRequest('revocations_full');
  await deps.broker.revoke(kept);
  const expiresAt = new Date(kept.expiresAt).toISOString();
  return rule.kind === 'jti' ? { status: 'revoked', jti: rule.tokenId, expires_at: expiresAt } : { status: 'revoked', user_id: rule.userId, issued_before: new Date(rule.issuedBefore).toISOString(), expires_at: expiresAt };
}

/** POST /api/v1/users/status: online, connections and last_seen for each user, cluster-wide. */
async function usersStatus(deps: ApiDeps, body: Record<string, unknown>): Promise<Answer> {
  const ids = body['user_ids'];
  if (!Array.isArray(ids) || ids.length === 0 || ids.length > MAX_STATUS_USERS || !ids.every(isValidId) || new Set(ids).size !== ids.length) throw badRequest('invalid_user_ids', MAX_STATUS_USERS);
  try {
    return { users: await deps.status(ids as string[]) };
  } catch {
    throw badRequest('status_unavailable');
  }
}

type Handler<D> = (deps: D, body: Record<string, unknown>) => Answer | Promise<Answer>;

const PUBLISH_HANDLERS: Record<'publish' | 'publish_batch', Handler<PublishRouteDeps>> = {
  publish,
  publish_batch: publishBatch,
};

const HANDLERS: Record<Exclude<Endpoint, keyof typeof PUBLISH_HANDLERS>, Handler<ApiDeps>> = {
  disconnect,
  unsubscribe: changeAccess('unsubscribe'),
  subscribe: changeAccess('subscribe'),
  users_status: usersStatus,
  revoke,
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

/** The API key's digest, compared in constant time; undefined without PUBLISH_API_KEY (the routes answer api_disabled). */
export function apiKeyDigest(key: string | undefined): Buffer | undefined {
  return key === undefined ? undefined : digest(key);
}

const PATHS: Record<Endpoint, string> = {
  publish: '/api/v1/publish',
  publish_batch: '/api/v1/publish/batch',
  disconnect: '/api/v1/disconnect',
  unsubscribe: '/api/v1/unsubscribe',
  subscribe: '/api/v1/subscribe',
  users_status: '/api/v1/users/status',
  revoke: '/api/v1/revoke',
};

/** One POST route: the API key, the size cap while the body streams in, one parse, the handler's answer or refusal. */
function addPostRoute<D extends Pick<PublishRouteDeps, 'config' | 'log' | 'metrics'>>(app: TemplatedApp, deps: D, expected: Buffer | undefined, endpoint: Endpoint, handler: Handler<D>): void {
  app.post(PATHS[endpoint], (res: HttpResponse, req: HttpRequest) => {
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
          const answer = handler(deps, parseObject(body));
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

/** POST /api/v1/publish and /api/v1/publish/batch: on the internal port, and on the publish thread's port. */
export function addPublishRoutes(app: TemplatedApp, deps: PublishRouteDeps, expected = apiKeyDigest(deps.config.publishApiKey)): void {
  for (const [endpoint, handler] of Object.entries(PUBLISH_HANDLERS) as Array<[keyof typeof PUBLISH_HANDLERS, Handler<PublishRouteDeps>]>) addPostRoute(app, deps, expected, endpoint, handler);
}

export function addApiRoutes(app: TemplatedApp, deps: ApiDeps): void {
  const expected = apiKeyDigest(deps.config.publishApiKey);
  addRoomRoute(app, deps, expected, 'history', (room, query) => historyAnswer(deps, room, query));
  for (const endpoint of ['presence', 'presence_stats'] as const) addRoomRoute(app, deps, expected, endpoint, (room) => presenceAnswer(deps, room, endpoint));
  addPublishRoutes(app, deps, expected);
  for (const [endpoint, handler] of Object.entries(HANDLERS) as Array<[keyof typeof HANDLERS, Handler<ApiDeps>]>) addPostRoute(app, deps, expected, endpoint, handler);
}
