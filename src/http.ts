/**
 * Plain HTTP routes. Public port: health and readiness (for load balancers and orchestrators).
 * Internal port: the same plus /metrics. Every answer is JSON; unknown paths are 404.
 */
import type { Registry } from 'prom-client';
import { refusalBody, ROUTE_REFUSALS, statusLine, type HttpRefusal } from './errors.js';
import { WS_PATH } from './messages.js';
import type { HttpResponse, TemplatedApp } from './uws.js';

/** `broker_down` only when WS_READY_REQUIRES_BROKER is set. */
export type NodeState = 'starting' | 'ready' | 'draining' | 'broker_down';

export interface HealthSource {
  readonly state: () => NodeState;
  readonly details: () => Record<string, unknown>;
}

export function sendJson(res: HttpResponse, status: string, body: unknown, headers: Record<string, string> = {}, closeConnection = false): void {
  sendEncodedJson(res, status, JSON.stringify(body), headers, closeConnection);
}

/** A JSON body encoded already (a history page holds stored event bytes as they are). */
export function sendEncodedJson(res: HttpResponse, status: string, json: string, headers: Record<string, string> = {}, closeConnection = false): void {
  res.cork(() => {
    res.writeStatus(status).writeHeader('Content-Type', 'application/json').writeHeader('Cache-Control', 'no-store');
    for (const [name, value] of Object.entries(headers)) res.writeHeader(name, value);
    res.end(json, closeConnection);
  });
}

export interface RefusalOptions {
  /** Fills `{limit}` in the message. */
  readonly limit?: number;
  /** Replaces the entry's message (a failed scrape's error). */
  readonly reason?: string;
  readonly headers?: Record<string, string>;
  /** Closes the TCP connection after the answer (refused upgrades: the next attempt may go elsewhere). */
  readonly closeConnection?: boolean;
}

/** Answers with a catalogue entry: its status, `{"code","message","error","reason"}` (errors.ts `refusalBody`), and `Retry-After` when it has one. */
export function sendRefusal(res: HttpResponse, refusal: HttpRefusal, options: RefusalOptions = {}): void {
  const headers = refusal.retryAfter === undefined ? options.headers : { ...options.headers, 'Retry-After': String(refusal.retryAfter) };
  sendJson(res, statusLine(refusal), refusalBody(refusal, options.limit, options.reason), headers, options.closeConnection);
}

function addHealthRoutes(app: TemplatedApp, health: HealthSource): void {
  app.get('/healthz', (res) => sendJson(res, '200 OK', { status: 'ok' }));
  app.get('/readyz', (res) => {
    const state = health.state();
    sendJson(res, state === 'ready' ? '200 OK' : '503 Service Unavailable', { status: state, ...health.details() });
  });
}

function addNotFound(app: TemplatedApp): void {
  app.any('/*', (res) => sendRefusal(res, ROUTE_REFUSALS.not_found));
}

export function addPublicRoutes(app: TemplatedApp, health: HealthSource): void {
  addHealthRoutes(app, health);
  // uWS hands non-upgrade requests on the WebSocket path on to the HTTP router.
  app.any(WS_PATH, (res) => sendRefusal(res, ROUTE_REFUSALS.upgrade_required, { headers: { Upgrade: 'websocket' } }));
  addNotFound(app);
}

export function addInternalRoutes(app: TemplatedApp, health: HealthSource, registry: Registry): void {
  addHealthRoutes(app, health);
  app.get('/metrics', (res) => {
    let aborted = false;
    res.onAborted(() => {
      aborted = true;
    });
    registry.metrics().then(
      (text) => {
        if (aborted) return;
        res.cork(() => {
          res.writeStatus('200 OK').writeHeader('Content-Type', registry.contentType);
          res.end(text);
        });
      },
      (err: unknown) => {
        if (!aborted) sendRefusal(res, ROUTE_REFUSALS.metrics_failed, { reason: String(err) });
      },
    );
  });
  addNotFound(app);
}
