#!/usr/bin/env node
/**
 * Browser bundle sizes of ws-edge/client against centrifuge-js and socket.io-client, built the same
 * way (esbuild: bundle, minify, ESM, browser; gzip -9). Each entry imports only the client's
 * constructor, as an app would. The other packages are installed from the npm registry into a
 * temporary directory (nothing is added to this project). `node bench/client-size.mjs`
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundle, bundleClient } from '../scripts/bundle-client.mjs';

const OTHERS = [
  { name: 'centrifuge', entry: "export { Centrifuge } from 'centrifuge';" },
  { name: 'socket.io-client', entry: "export { io } from 'socket.io-client';" },
];

const dir = mkdtempSync(join(tmpdir(), 'client-size-'));
try {
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--silent', '--prefix', dir, ...OTHERS.map((o) => o.name)], { stdio: 'inherit' });
  const rows = [];
  const own = await bundleClient();
  rows.push({ client: 'ws-edge/client', version: JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version, minified: own.minified, gzip: own.gzip });
  for (const other of OTHERS) {
    const entry = join(dir, `${other.name.replace(/\W/g, '-')}-entry.mjs`);
    writeFileSync(entry, other.entry);
    const built = await bundle(entry, { nodePaths: [join(dir, 'node_modules')] });
    const version = JSON.parse(readFileSync(join(dir, 'node_modules', other.name, 'package.json'), 'utf8')).version;
    rows.push({ client: other.name, version, minified: built.minified, gzip: built.gzip });
  }
  for (const row of rows) console.log(JSON.stringify({ ...row, gzip_vs_ws_edge: Number((row.gzip / own.gzip).toFixed(2)) }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
