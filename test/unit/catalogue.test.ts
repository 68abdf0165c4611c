/**
 * The refusal catalogue (src/errors.ts) and the docs that describe it say the same: every error
 * code, close and HTTP refusal has its row, with the same code, text, status and reconnect advice.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  API_REFUSALS,
  CLOSES,
  ERROR_CODES,
  MESSAGE_ERROR_ENTRIES,
  OTHER_APPLICATION_CLOSE,
  reconnectAfter,
  RECONNECT,
  RECONNECT_ADVICE,
  refusalBody,
  REJECTIONS,
  ROUTE_REFUSALS,
  statusLine,
  UPGRADE_REFUSALS,
  type HttpRefusal,
} from '../../src/errors.js';

const read = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');
const api = read('docs/WEBSOCKET_API.md');
const readme = read('README.md');

/** The rows of the first table under `heading` whose header starts with `header` (cells trimmed). */
function table(doc: string, heading: string, header = '|'): string[][] {
  const start = doc.indexOf(`\n${heading}\n`);
  if (start < 0) throw new Error(`no heading ${heading}`);
  const lines = doc.slice(start + heading.length + 2).split('\n');
  const first = lines.findIndex((l) => l.startsWith(header));
  const rows: string[][] = [];
  for (const line of lines.slice(first + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(line.slice(1, -1).split(' | ').map((c) => c.trim()));
  }
  return rows;
}

/** The backquoted texts of a cell. */
const quoted = (cell: string): string[] => [...cell.matchAll(/`([^`]*)`/g)].map((m) => m[1]!);

describe('refusal catalogue and docs', () => {
  it('lists every error code once, with its invalid-message flag', () => {
    const rows = table(api, '## Error codes');
    const documented = Object.fromEntries(rows.map(([code, , invalid]) => [quoted(code!)[0], invalid!.startsWith('yes')]));
    const catalogued = Object.fromEntries(Object.entries(ERROR_CODES).map(([code, { invalid }]) => [code, invalid]));
    expect(documented).toEqual(catalogued);
    for (const entry of Object.values(MESSAGE_ERROR_ENTRIES)) expect(Object.keys(ERROR_CODES)).toContain(entry.code);
  });

  it('gives every close code its reconnect advice, as the catalogue says', () => {
    const rows = table(api, '## Close codes and reconnecting');
    const codes = new Set<string>();
    for (const [code, , , advice] of rows) {
      codes.add(code!);
      const expected = code === 'other 4000-4999' ? OTHER_APPLICATION_CLOSE : reconnectAfter(Number(code));
      expect({ code, advice }).toEqual({ code, advice: RECONNECT_ADVICE[expected] });
    }
    expect([...codes].filter((c) => c !== 'other 4000-4999').sort()).toEqual(Object.keys(RECONNECT).sort());
  });

  it('shows the reason text of every close under its code', () => {
    const rows = table(api, '## Close codes and reconnecting');
    const texts = (code: number) => rows.filter(([c]) => c === String(code)).flatMap(([, reason]) => quoted(reason!));
    for (const [name, close] of Object.entries({ ...REJECTIONS, ...CLOSES })) {
      expect(texts(close.code), `${name}: ${close.message}`).toContain(close.message);
    }
  });

  it('lists every refusal at the upgrade in check order, with code and reason', () => {
    const rows = table(api, '### After the upgrade (close codes)').map(([, code, reason]) => ({ code: Number(code), message: quoted(reason!)[0] }));
    const atUpgrade = Object.entries(REJECTIONS).filter(([name]) => !name.startsWith('refresh_'));
    expect(rows).toEqual(atUpgrade.map(([, { code, message }]) => ({ code, message })));
  });

  it('shows every HTTP refusal of the public port with its status, Retry-After, code and message', () => {
    const rows = table(api, '### Before the upgrade (HTTP)').map(([status, body]) => ({ status, body: JSON.parse(quoted(body!)[0]!) as unknown }));
    const documented = (refusal: HttpRefusal) => {
      const { code, message } = refusalBody(refusal);
      return { status: refusal.retryAfter === undefined ? statusLine(refusal) : `${statusLine(refusal)}, \`Retry-After: ${refusal.retryAfter}\``, body: { code, message } };
    };
    const { metrics_failed: _internalOnly, ...publicRoutes } = ROUTE_REFUSALS;
    expect(rows).toEqual([...Object.values(UPGRADE_REFUSALS), ...Object.values(publicRoutes)].map(documented));
  });

  it('lists every API refusal in README with its status and code', () => {
    const rows = table(readme, '### HTTP API', '| Status | `code` |').map(([status, code]) => `${status} ${quoted(code!)[0]}`);
    expect(rows.sort()).toEqual(Object.values(API_REFUSALS).map((r) => `${statusLine(r)} ${r.code}`).sort());
  });

  it('gives every HTTP refusal body the error envelope\'s code and message, and the same values as error and reason (kept for older clients)', () => {
    for (const refusal of [...Object.values(UPGRADE_REFUSALS), ...Object.values(ROUTE_REFUSALS), ...Object.values(API_REFUSALS)]) {
      const { code, message } = refusal;
      expect(refusalBody(refusal, 7)).toEqual({ code, message: message.replace('{limit}', '7'), error: code, reason: message.replace('{limit}', '7') });
    }
    expect(refusalBody(ROUTE_REFUSALS.metrics_failed, undefined, 'Error: boom')).toEqual({ code: 'metrics_failed', message: 'Error: boom', error: 'metrics_failed', reason: 'Error: boom' });
    const fields = table(api, '### Error fields').map(([field]) => quoted(field!)[0]);
    expect(fields).toEqual(['code', 'message', 'detail', 'error', 'reason']);
  });
});
