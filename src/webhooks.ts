/**
 * Webhooks: the event log delivered to WS_WEBHOOK_URL by one node at a time (the log's lease), in
 * the log's order, in batches of at most WS_WEBHOOK_BATCH events: whatever has accumulated is sent
 * as soon as the previous request is answered. Each request is signed: `X-WsEdge-Timestamp` (Unix
 * seconds) and `X-WsEdge-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`. A batch is
 * acknowledged on a 2xx answer; on anything else (another status, a redirect, a timeout, a refused
 * connection) it is sent again after a backoff (1 s doubling to 30 s), its events older than
 * WS_WEBHOOK_RETRY_FOR dropped and counted first. So a receiver that was down gets every event
 * afterwards, once per id unless a delivery's answer was lost (receivers keep the ids they saw).
 */
import { createHmac } from 'node:crypto';
import { BackendError, createPostTarget, postJson } from './backend.js';
import { eventTime, type EventLog, type LoggedEvent } from './lifecycle.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import { createPause } from './pause.js';

export interface WebhookConfig {
  readonly url: string;
  readonly secret: string;
  /** Events per request at most. */
  readonly batch: number;
  readonly timeoutMs: number;
  /** An event not delivered this long after it was appended is dropped. */
  readonly retryForMs: number;
}

/** A waiting node checks the lease this often; the holder renews it this often (the lease lives 6 s). */
const LEASE_CHECK_MS = 2000;
/** An empty log is read again after this. */
const IDLE_MS = 100;
/** The backlog gauge is refreshed this often. */
const BACKLOG_MS = 2000;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30_000;
/** A receiver's answer is not used; a longer one is cut off (and the request counts as failed). */
const MAX_ANSWER_BYTES = 64 * 1024;

export function sign(secret: string, timestamp: number, body: string): string {
  return `v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/** `{"events":[...]}`, each event's JSON with its id put first; one string built, nothing parsed. */
export function webhookBody(events: readonly LoggedEvent[]): string {
  return `{"events":[${events.map((e) => `{"id":${JSON.stringify(e.id)},${e.json.slice(1)}`).join(',')}]}`;
}

export interface Webhooks {
  stop(): Promise<void>;
}

export function startWebhooks(config: WebhookConfig, log: EventLog, metrics: Metrics, logger: Logger): Webhooks {
  const target = createPostTarget(config.url, 1);
  let stopped = false;
  const { pause, wake } = createPause();

  // Renewed on a timer of its own, so a holder waiting out a backoff keeps the lease.
  let held = false;
  const renew = async (): Promise<boolean> => (held = await log.hold().catch(() => false));
  const renewal = setInterval(() => void (held && renew()), LEASE_CHECK_MS).unref();
  const hold = (): Promise<boolean> | boolean => held || renew();

  let measured = 0;
  const measure = async (waiting: readonly LoggedEvent[]): Promise<void> => {
    if (Date.now() - measured < BACKLOG_MS && waiting.length === 0) return;
    measured = Date.now();
    const backlog = await log.backlog().catch(() => waiting.length);
    metrics.webhookBacklog(backlog, waiting.length === 0 ? 0 : (Date.now() - eventTime(waiting[0]!.id)) / 1000);
  };

  let failing = false;
  const post = async (events: readonly LoggedEvent[]): Promise<boolean> => {
    const body = webhookBody(events);
    const timestamp = Math.floor(Date.now() / 1000);
    const headers = { 'user-agent': 'ws-edge', 'x-wsedge-timestamp': String(timestamp), 'x-wsedge-signature': sign(config.secret, timestamp, body) };
    let reason: string;
    try {
      const answer = await postJson(target, { headers, body, deadline: Date.now() + config.timeoutMs, maxAnswerBytes: MAX_ANSWER_BYTES });
      if (answer.status >= 200 && answer.status < 300) {
        metrics.webhookRequest('ok');
        if (failing) logger.info({ event: 'webhook_recovered' }, 'webhook receiver answering again');
        failing = false;
        return true;
      }
      metrics.webhookRequest('refused');
      reason = `status ${answer.status}`;
    } catch (err) {
      const outcome = err instanceof BackendError ? err.outcome : 'down';
      metrics.webhookRequest(outcome === 'timeout' ? 'timeout' : outcome === 'down' ? 'down' : 'refused');
      reason = (err as Error).message;
    }
    if (!failing) logger.warn({ event: 'webhook_failed', reason }, 'webhook delivery failed; retrying with backoff');
    failing = true;
    return false;
  };

  /** Delivers one batch, retrying while this node holds the log; false when it lost the lease. */
  const deliver = async (batch: readonly LoggedEvent[]): Promise<void> => {
    let events = batch;
    for (let attempt = 0; !stopped; attempt += 1) {
      const oldest = Date.now() - config.retryForMs;
      const expired = events.filter((e) => eventTime(e.id) < oldest);
      if (expired.length > 0) {
        await log.ack(expired.map((e) => e.id));
        metrics.webhookEvents('expired', expired.length);
        logger.warn({ event: 'webhook_events_dropped', count: expired.length }, 'webhook events older than WS_WEBHOOK_RETRY_FOR dropped');
        events = events.filter((e) => eventTime(e.id) >= oldest);
      }
      if (events.length === 0) return;
      await measure(events);
      if (await post(events)) {
        await log.ack(events.map((e) => e.id));
        metrics.webhookEvents('delivered', events.length);
        const now = Date.now();
        for (const e of events) metrics.webhookLag((now - eventTime(e.id)) / 1000);
        return;
      }
      await pause(Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt));
      if (!(await hold())) return;
    }
  };

  let unreachable = false;
  const run = async (): Promise<void> => {
    while (!stopped) {
      try {
        if (!(await hold())) {
          // Another node delivers: this one's last figures would be stale (and could keep an alert firing).
          metrics.webhookBacklog(0, 0);
          await pause(LEASE_CHECK_MS);
          continue;
        }
        const events = await log.read(config.batch);
        unreachable = false;
        if (events.length === 0) {
          await measure(events);
          await pause(IDLE_MS);
          continue;
        }
        await deliver(events);
      } catch (err) {
        // Once per streak: Redis down for minutes must not write a line a second.
        if (!unreachable) logger.warn({ err, event: 'webhook_log_failed' }, 'webhook event log unreachable; retrying every second');
        unreachable = true;
        await pause(BACKOFF_MIN_MS);
      }
    }
  };
  const running = run();

  return {
    async stop() {
      stopped = true;
      clearInterval(renewal);
      wake();
      await running;
      target.agent.destroy();
    },
  };
}
