#!/usr/bin/env node
/**
 * The browser bundle of ws-edge/client: src/client/index.ts with the protocol modules it imports,
 * minified ESM, as an app's bundler would build it. `node scripts/bundle-client.mjs [out]` writes it
 * (default dist/client.bundle.js) and prints its minified and gzip sizes; the size test and the
 * browser tests call bundleClient().
 */
import { writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Bundles an entry point for browsers: { code, minified bytes, gzip bytes (level 9) }. */
export async function bundle(entry, options = {}) {
  const result = await build({ entryPoints: [entry], bundle: true, minify: true, format: 'esm', platform: 'browser', target: 'es2022', write: false, logLevel: 'silent', ...options });
  const code = result.outputFiles[0].text;
  return { code, minified: Buffer.byteLength(code), gzip: gzipSync(code, { level: 9 }).length };
}

export function bundleClient() {
  return bundle(resolve(root, 'src/client/index.ts'));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = resolve(root, process.argv[2] ?? 'dist/client.bundle.js');
  const { code, minified, gzip } = await bundleClient();
  writeFileSync(out, code);
  console.log(JSON.stringify({ out, minified, gzip }));
}
