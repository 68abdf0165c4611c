/** The configuration table in README.md and .env.example list exactly the variables config.ts reads. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const read = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');

/** Every `env` lookup in config.ts: r.int('NAME', ...), r.str('NAME', ...), r.optional('NAME') and so on. */
function variablesInCode(): string[] {
  const source = read('src/config.ts');
  return [...new Set([...source.matchAll(/r\.(?:str|optional|int|bool|oneOf|list)(?:<[^>]+>)?\('([A-Z0-9_]+)'/g)].map((m) => m[1]!))].sort();
}

describe('configuration docs', () => {
  const code = variablesInCode();

  it('finds the variables in config.ts', () => {
    expect(code).toContain('WS_MAX_CONNECTIONS_PER_USER');
    expect(code.length).toBeGreaterThan(20);
  });

  it('README configuration table lists exactly those variables', () => {
    const rows = [...read('README.md').matchAll(/^\| `([A-Z0-9_]+)` \|/gm)].map((m) => m[1]!);
    expect([...new Set(rows)].sort()).toEqual(code);
  });

  it('.env.example names every variable', () => {
    const names = [...read('.env.example').matchAll(/^#?\s*([A-Z0-9_]+)=/gm)].map((m) => m[1]!);
    expect([...new Set(names)].sort()).toEqual(code);
  });
});
