/**
 * Lua scripts, one named file each under lua/ (copied next to the build by `npm run build`), defined
 * once per client as ioredis commands: EVALSHA, with EVAL when the server does not know it yet. A
 * script may start with a shared file (PRELUDES), e.g. the history scripts' epoch check.
 */
import { readFileSync } from 'node:fs';
import type { RedisClient } from './links.js';

export type ScriptName =
  | 'acquire-seat'
  | 'refresh-seats'
  | 'release-seat'
  | 'seat-status'
  | 'publish-recorded'
  | 'release-claim'
  | 'append-history'
  | 'read-history'
  | 'presence-add'
  | 'presence-remove'
  | 'presence-refresh'
  | 'presence-read'
  | 'lifecycle-appear'
  | 'lifecycle-disappear'
  | 'lifecycle-sweep'
  | 'lease'
  | 'lease-release'
  | 'revoke'
  | 'announce-take'
  | 'announce-refresh';

const PRELUDES: Partial<Record<ScriptName, string>> = {
  'append-history': 'stream-epoch',
  'read-history': 'stream-epoch',
  'presence-add': 'presence-sweep',
  'presence-remove': 'presence-sweep',
  'presence-refresh': 'presence-sweep',
  'presence-read': 'presence-sweep',
  'lifecycle-appear': 'lifecycle-head',
  'lifecycle-disappear': 'lifecycle-head',
  'lifecycle-sweep': 'lifecycle-head',
};

const sources = new Map<ScriptName, string>();

const file = (name: string): string => readFileSync(new URL(`./lua/${name}.lua`, import.meta.url), 'utf8');

function source(name: ScriptName): string {
  let lua = sources.get(name);
  if (lua === undefined) {
    const prelude = PRELUDES[name];
    lua = prelude === undefined ? file(name) : `${file(prelude)}\n${file(name)}`;
    sources.set(name, lua);
  }
  return lua;
}

/** The ioredis command a script is defined as: `acquire-slot` becomes `wsedgeAcquireSeat`. */
function commandName(name: ScriptName): string {
  return `wsedge-${name}`.replace(/-(\w)/g, (_, c: string) => c.toUpperCase());
}

/** Runs the script `name` with `keys.length` keys; defined on `redis` on first use. */
export function runScript(redis: RedisClient, name: ScriptName, keys: readonly string[], args: ReadonlyArray<string | number>): Promise<unknown> {
  const command = commandName(name);
  const client = redis as unknown as Record<string, (...a: Array<string | number>) => Promise<unknown>>;
  if (typeof client[command] !== 'function') redis.defineCommand(command, { numberOfKeys: keys.length, lua: source(name) });
  return client[command]!(...keys, ...args);
}
