/**
 * The k6 scripts in bench/k6 cannot run here (no k6 binary), so CI holds them to what can be
 * checked: they type-check against @types/k6 (the k6 v1.x API), import nothing k6 cannot load,
 * and every script has thresholds, so `k6 run` exits non-zero when a promise is broken.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));
const dir = new URL('../../bench/k6/', import.meta.url);
const SCRIPTS = ['connections.js', 'fanout.js', 'limits.js', 'soak.js'];
const source = (file: string) => readFileSync(new URL(file, dir), 'utf8');

describe('k6 scripts', () => {
  it('type-check against @types/k6 with no diagnostics', () => {
    const tsc = spawnSync(process.execPath, [`${root}node_modules/typescript/bin/tsc`, '-p', 'bench/k6/tsconfig.json'], { cwd: root, encoding: 'utf8' });
    expect(tsc.error).toBeUndefined();
    expect(tsc.stdout + tsc.stderr).toBe('');
    expect(tsc.status).toBe(0);
  });

  it('are the four scripts plus the shared module', () => {
    const js = readdirSync(dir).filter((f) => f.endsWith('.js')).sort();
    expect(js).toEqual([...SCRIPTS, 'lib.js'].sort());
  });

  it.each(SCRIPTS)('%s exports options with thresholds', (file) => {
    const text = source(file);
    const start = text.search(/^export const options = \{$/m);
    expect(start).toBeGreaterThanOrEqual(0);
    const options = text.slice(start, text.indexOf('\n};', start));
    // Either inline (`thresholds: {`) or built above and named (`thresholds,`).
    expect(options).toMatch(/^\s+thresholds(,|: \{)$/m);
    if (/^\s+thresholds,$/m.test(options)) expect(text).toMatch(/^const thresholds = \{$/m);
  });

  it.each([...SCRIPTS, 'lib.js'])('%s imports only k6 modules and ./lib.js', (file) => {
    const specifiers = [...source(file).matchAll(/^import\s[^;]*?from\s+'([^']+)';/gms)].map((m) => m[1]);
    expect(specifiers.length).toBeGreaterThan(0);
    for (const specifier of specifiers) expect(specifier).toMatch(/^(k6(\/[a-z/-]+)?|\.\/lib\.js)$/);
  });
});
