/**
 * A real browser for the client's tests: Debian's chromium driven headless by playwright-core (no
 * browser download), and a local HTTP server for the pages, so they have a real Origin. A missing
 * chromium fails the suite with the package to install.
 */
import { existsSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser } from 'playwright-core';
import { bundleClient } from '../../scripts/bundle-client.mjs';

const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
// Without the networking flags chromium reaches for Google's hosts, which this network refuses.
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic'];

/** Playwright gives every launch a fresh, empty profile directory. */
export function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium; .ci/run does)`);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
}

export interface PageServer {
  /** http://127.0.0.1:<port> */
  readonly origin: string;
  /** Size of the bundle the pages load, minified and gzip. */
  readonly bundle: { readonly minified: number; readonly gzip: number };
  stop(): Promise<void>;
}

/** The page every test opens: the browser bundle of ws-edge/client as `window.edge`. */
const INDEX = `<!doctype html><html><head><meta charset="utf-8"><title>loading</title></head><body>
<script type="module">import * as edge from '/client.js'; window.edge = edge; document.title = 'ready';</script></body></html>`;

/** Serves `/` and `/client.js` (the client bundled for browsers, built now from src/client). */
export async function startPageServer(): Promise<PageServer> {
  const { code, minified, gzip } = await bundleClient();
  const server = createServer((req, res) => {
    const [type, body] = req.url === '/client.js' ? ['text/javascript', code] : req.url === '/' ? ['text/html', INDEX] : ['text/plain', 'not found'];
    res.writeHead(body === 'not found' ? 404 : 200, { 'content-type': `${type}; charset=utf-8` }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    bundle: { minified, gzip },
    stop: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
