#!/usr/bin/env node
/**
 * `npm run build`, remembered: dist/.built-at takes the time the build started, so that
 * `--if-stale` (npm's prestart) skips the compile while nothing under src/ nor tsconfig.json
 * changed since. Any file or folder there newer than the stamp (a deleted or renamed file changes
 * its folder's time), a missing stamp or a missing dist/cli.js builds again. pretest builds always.
 *
 *   node scripts/build.mjs [--if-stale]
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const STAMP = join(root, 'dist', '.built-at');
const INPUTS = ['src', 'tsconfig.json'];

/** The latest modification time under `path`, folders included. */
function newest(path) {
  const stat = statSync(path);
  if (!stat.isDirectory()) return stat.mtimeMs;
  return readdirSync(path).reduce((latest, entry) => Math.max(latest, newest(join(path, entry))), stat.mtimeMs);
}

function stale() {
  if (!existsSync(STAMP) || !existsSync(join(root, 'dist', 'cli.js'))) return true;
  const builtAt = statSync(STAMP).mtimeMs;
  // Equal counts as newer: on a file system with coarse times a same-second edit builds again.
  return INPUTS.some((input) => newest(join(root, input)) >= builtAt);
}

if (process.argv.includes('--if-stale') && !stale()) {
  process.stderr.write('ws-edge: dist/ is up to date with src/ (npm run build compiles anyway)\n');
  process.exit(0);
}
const startedAt = new Date();
// The npm that runs this script (npm_execpath), else the one on PATH.
const npm = process.env['npm_execpath']?.endsWith('.js') ? [process.execPath, process.env['npm_execpath']] : ['npm'];
const build = spawnSync(npm[0], [...npm.slice(1), 'run', '--silent', 'build'], { cwd: root, stdio: 'inherit' });
if (build.status !== 0) process.exit(build.status ?? 1);
writeFileSync(STAMP, '');
utimesSync(STAMP, startedAt, startedAt);
