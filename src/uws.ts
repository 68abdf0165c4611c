/**
 * Loads the uWebSockets.js native binding. Order: the republished official build
 * (`uWebSockets.js` alias, glibc >= 2.38), then the legacy node-gyp build (`uws-legacy` alias,
 * glibc >= 2.34, Node 20 only, no TLS/compression) by requiring its `.node` file directly, so its
 * package's pure-JS emulation can never be picked. Throws when neither loads.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type * as UWS from 'uWebSockets.js';
import type { TemplatedApp, us_listen_socket } from 'uWebSockets.js';
import { DEFAULT_HTTP_MAX_HEADERS_SIZE } from './config.js';

export type { HttpRequest, HttpResponse, TemplatedApp, WebSocket, WebSocketBehavior, us_listen_socket, us_socket_context_t } from 'uWebSockets.js';

export type Uws = typeof UWS;

export interface UwsBinding {
  readonly uws: Uws;
  /** npm alias the binary came from. */
  readonly source: 'uWebSockets.js' | 'uws-legacy';
  /** Version of the package that shipped the binary. */
  readonly version: string;
  readonly binary: string;
  /** The `dropped` handler (backpressure drop notification) exists only in the official build. */
  readonly droppedHandler: boolean;
}

const require = createRequire(import.meta.url);

function binaryName(): string {
  return `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
}

function packageDir(pkg: string): string {
  // The official package's exports map hides package.json; resolve its main file instead.
  return dirname(require.resolve(pkg));
}

function versionOf(dir: string): string {
  const json = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version?: string };
  return json.version ?? 'unknown';
}

function loadOfficial(): UwsBinding {
  const dir = packageDir('uWebSockets.js');
  const binary = join(dir, binaryName());
  return { uws: require(binary) as Uws, source: 'uWebSockets.js', version: versionOf(dir), binary, droppedHandler: true };
}

function loadLegacy(): UwsBinding {
  const dir = dirname(require.resolve('uws-legacy/package.json'));
  const binary = join(dir, 'binaries', binaryName());
  return { uws: require(binary) as Uws, source: 'uws-legacy', version: versionOf(dir), binary, droppedHandler: false };
}

let loaded: UwsBinding | undefined;

/**
 * `maxHeadersSize` becomes uWS's UWS_HTTP_MAX_HEADERS_SIZE, which the binding reads once, when it
 * loads: the first call decides for the whole process.
 */
export function loadUws(maxHeadersSize = DEFAULT_HTTP_MAX_HEADERS_SIZE): UwsBinding {
  if (loaded) return loaded;
  process.env['UWS_HTTP_MAX_HEADERS_SIZE'] = String(maxHeadersSize);
  const failures: string[] = [];
  for (const load of [loadOfficial, loadLegacy]) {
    try {
      const binding = load();
      if (typeof binding.uws.App !== 'function' || typeof binding.uws.us_socket_local_port !== 'function') {
        throw new Error(`${binding.binary} is not a uWS native binding`);
      }
      loaded = binding;
      return binding;
    } catch (err) {
      failures.push(`${load === loadOfficial ? 'uWebSockets.js' : 'uws-legacy'}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  throw new Error(
    `no uWebSockets.js native binary loads on Node ${process.version} ${process.platform}-${process.arch}:\n  ${failures.join('\n  ')}\n` +
      'See README "uWebSockets.js builds" for the supported platforms.',
  );
}

/** Listens on `host:port` (0: any free port); rejects when the port cannot be had. */
export function listen(app: TemplatedApp, host: string, port: number): Promise<us_listen_socket> {
  return new Promise((resolve, reject) => {
    app.listen(host, port, (socket) => {
      if (socket) resolve(socket);
      else reject(new Error(`cannot listen on ${host}:${port}`));
    });
  });
}
