/**
 * Plain HTTP routes. Public port: health and readiness (for load balancers and orchestrators).
 * Internal port: the same plus /metrics. Every answer is JSON; unknown paths are 404.
 */
import type { Registry } from 'prom-client';
import type { HttpResponse, TemplatedApp } from './uws.js';
import { WS_PATH } from './handshake.js';

/** `broker_down` only when WS_READY_REQUIRES_BROKER is set. */
export type NodeState = 'starting' | 'ready' | 'draining' | 'broker_down';

export interface HealthSource {
  readonly state: () => NodeState;
  readonly details: () => Record<string, unknown>;
}

export function sendJson(res: HttpResponse, status: string, body: unknown, headers: Record<string, string> = {}): void {
  res.cork(() => {
    res.writeStatus(status).writeHeader('Content-Type', 'application/json').writeHeader('Cache-Control', 'no-store');
    for (const [name, value] of Object.entries(headers)) res.writeHeader(name, value);
    res.end(JSON.stringify(body));
  });
}

function addHealthRoutes(app: TemplatedApp, health: HealthSource): void {
  app.get('/healthz', (res) => sendJson(res, '200 OK', { status: 'ok' }));
  app.get('/readyz', (res) => {
    const state = health.state();
    sendJson(res, state === 'ready' ? '200 OK' : '503 Service Unavailable', { status: state, ...health.details() });
  });
}

function addNotFound(app: TemplatedApp): void {
  app.any('/*', (res) => sendJson(res, '404 Not Found', { error: 'not_found' }));
}

export function addPublicRoutes(app: TemplatedApp, health: HealthSource): void {
  addHealthRoutes(app, health);
  // uWS hands non-upgrade requests on the WebSocket path on to the HTTP router.
  app.any(WS_PATH, (res) => sendJson(res, '426 Upgrade Required', { error: 'upgrade_required' }, { Upgrade: 'websocket' }));
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
        if (!aborted) sendJson(res, '500 Internal Server Error', { error: 'metrics_failed', reason: String(err) });
      },
    );
  });
  addNotFound(app);
}
