/**
 * One publish command from an ingestion source (a Redis Stream entry, an outbox row): the publish
 * API's body, checked by the API's own rules (api.ts `preparePublish`) and published with the
 * entry's id as the idempotency key of its sequenced targets, so an entry handed over again after a
 * crash is not delivered twice there. Plain rooms have no positions to deduplicate by: an entry
 * published but not acknowledged before a crash reaches their members again (at least once).
 *
 * The outcome tells the consumer what to do with the entry: acknowledge it (`published`), move it
 * to the dead letter with the reason (`dead`: it can never be published), or keep it and try again
 * later (`retry`: a sequenced room's history was unreachable, with only the targets that failed; or
 * the broker is down, when a plain publish would reach this node's members only and be lost for
 * the others: the whole command waits).
 */
import { ApiError, preparePublish, type PublishDeps } from './api.js';
import { API_REFUSALS } from './errors.js';
import type { IngestSource } from './metrics.js';

export type { IngestSource };

export type Ingested =
  | { readonly status: 'published' }
  | { readonly status: 'dead'; readonly code: string; readonly message: string }
  | { readonly status: 'retry'; readonly body: Record<string, unknown> };

/** Publishes one command; `id` is unique within the source (an entry id, a row id). */
export type Ingest = (command: string | Record<string, unknown>, id: string) => Promise<Ingested>;

function dead(err: ApiError): Ingested {
  const { code, message } = API_REFUSALS[err.refusal];
  return { status: 'dead', code, message: message.replace('{limit}', String(err.limit ?? '')) };
}

/** A JSON object within the size cap, or the API's refusal of it. */
function parse(command: string, limit: number): Record<string, unknown> {
  if (Buffer.byteLength(command) > limit) throw new ApiError('too_large', limit);
  let value: unknown;
  try {
    value = JSON.parse(command);
  } catch {
    throw new ApiError('invalid_json');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ApiError('invalid_body');
  return value as Record<string, unknown>;
}

/**
 * The body again with only the targets whose result failed: a list body (`rooms`, `user_ids`)
 * answers a result per target; a single target either published or threw.
 */
function unfinished(body: Record<string, unknown>, results: ReadonlyArray<Record<string, unknown>>): Record<string, unknown> {
  const failed = results.filter((r) => r['status'] !== 'published');
  const rooms = failed.flatMap((r) => (r['room'] === undefined ? [] : [r['room']]));
  const userIds = failed.flatMap((r) => (r['user_id'] === undefined ? [] : [r['user_id']]));
  const { rooms: _rooms, user_ids: _userIds, ...rest } = body;
  return { ...rest, ...(rooms.length > 0 && { rooms }), ...(userIds.length > 0 && { user_ids: userIds }) };
}

export function createIngest(deps: PublishDeps, source: IngestSource): Ingest {
  return async (command, id) => {
    let body = typeof command === 'string' ? undefined : command;
    try {
      body ??= parse(command as string, deps.config.messageMaxSize);
      const prepared = preparePublish(deps, body, { source, key: `${source}:${id}` });
      if (!deps.broker.isUp()) return { status: 'retry', body };
      const answer = await prepared.run();
      const results = answer['results'];
      if (answer['status'] === 'partial' && Array.isArray(results)) return { status: 'retry', body: unfinished(body, results as Array<Record<string, unknown>>) };
      return { status: 'published' };
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      return (err.refusal === 'history_unavailable' || err.refusal === 'publish_unavailable') && body !== undefined ? { status: 'retry', body } : dead(err);
    }
  };
}
