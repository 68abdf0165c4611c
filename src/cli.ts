#!/usr/bin/env node
/** ws-edge serve | token | client */
import { parseArgs } from 'node:util';
import { signToken } from './auth.js';
import { runDemo, runInteractive } from './cli-client.js';
import { DEV_TOKEN_PATH } from './demo.js';
import { WS_PATH } from './messages.js';
import { isValidRoom } from './rooms.js';
import { serve } from './main.js';

const USAGE = `usage:
  ws-edge serve                      start a node (configuration from the environment)
  ws-edge token --user <id> [--username <name>] [--rooms <list>] [--ttl <seconds>] [--secret <s>]
                                     mint an HS256 token (secret: --secret or JWT_SECRET;
                                     iss/aud from JWT_ISSUER/JWT_AUDIENCE; rooms default "*")
  ws-edge token --user <id> --grant <room> [--ttl <seconds>] [--secret <s>]
                                     mint a room grant for join_room's "grant" (ttl default 300)
  ws-edge client [--url <ws-url>] [--token <jwt> | --user <id>] [--demo] [--room <room>] [--query-token]
                                     interactive test client, or a scripted demo that exits 0 on success
                                     (token: --token, else WS_EDGE_TOKEN, else minted for --user with
                                     JWT_SECRET, else asked of a dev-mode node's /dev/token)`;

function fail(message: string): never {
  process.stderr.write(`ws-edge: ${message}\n${USAGE}\n`);
  process.exit(2);
}

function tokenFromFlags(values: { user?: string; username?: string; rooms?: string; grant?: string; ttl?: string; secret?: string }): string {
  const secret = values.secret ?? process.env['JWT_SECRET'];
  if (!secret) fail('a secret is needed: --secret or JWT_SECRET');
  if (!values.user) fail('--user is required');
  if (values.grant !== undefined && !isValidRoom(values.grant)) fail('--grant must be a room such as project:42');
  if (values.grant !== undefined && (values.rooms !== undefined || values.username !== undefined)) fail('--grant takes no --rooms or --username');
  // Room grants are short-lived: they are the membership's own expiry.
  const ttl = Number(values.ttl ?? (values.grant === undefined ? 3600 : 300));
  if (!Number.isInteger(ttl) || ttl <= 0) fail('--ttl must be a positive number of seconds');
  return signToken({
    secret,
    userId: values.user,
    username: values.username,
    ...(values.grant === undefined ? { rooms: (values.rooms ?? '*').split(',').map((r) => r.trim()).filter((r) => r !== '') } : { room: values.grant }),
    ttlSeconds: ttl,
    issuer: process.env['JWT_ISSUER'] || undefined,
    audience: process.env['JWT_AUDIENCE'] || undefined,
  });
}

/**
 * A token from a node in dev mode (no JWT key: `ws-edge serve` with zero configuration), whose
 * public port hands them out at /dev/token; the URL's host and port, the user from --user or "dev".
 */
async function devModeToken(wsUrl: string, user: string | undefined): Promise<string> {
  const url = new URL(DEV_TOKEN_PATH, wsUrl.replace(/^ws/, 'http'));
  url.searchParams.set('user', user ?? 'dev');
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) }).catch(() => undefined);
  const body = res?.ok === true ? ((await res.json()) as { token?: unknown }) : undefined;
  if (typeof body?.token !== 'string') {
    fail(`no token: pass --token or WS_EDGE_TOKEN, or --user with JWT_SECRET (${url.origin} hands out none at ${DEV_TOKEN_PATH}: ${res === undefined ? 'no answer' : `HTTP ${res.status}`}; only a node in dev mode does)`);
  }
  return body.token;
}

const tokenFlags = {
  user: { type: 'string' },
  username: { type: 'string' },
  rooms: { type: 'string' },
  grant: { type: 'string' },
  ttl: { type: 'string' },
  secret: { type: 'string' },
} as const;

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
    case undefined:
      await serve();
      return;
    case 'token': {
      const { values } = parseArgs({ args: rest, options: tokenFlags, strict: true });
      process.stdout.write(tokenFromFlags(values) + '\n');
      return;
    }
    case 'client': {
      const { values } = parseArgs({
        args: rest,
        options: {
          ...tokenFlags,
          url: { type: 'string', default: `ws://127.0.0.1:${process.env['PORT'] || 8080}${WS_PATH}` },
          token: { type: 'string' },
          demo: { type: 'boolean', default: false },
          room: { type: 'string', default: 'channel:demo' },
          'query-token': { type: 'boolean', default: false },
          timeout: { type: 'string', default: '5000' },
        },
        strict: true,
      });
      const given = values.token ?? process.env['WS_EDGE_TOKEN'];
      const canMint = Boolean(values.secret ?? process.env['JWT_SECRET']);
      const opts = {
        url: values.url,
        token: given ?? (canMint ? tokenFromFlags(values) : await devModeToken(values.url, values.user)),
        queryToken: values['query-token'],
        room: values.room,
        timeoutMs: Number(values.timeout),
      };
      if (values.demo) {
        try {
          await runDemo(opts);
          process.exit(0);
        } catch (err) {
          process.stderr.write(`demo failed: ${(err as Error).message}\n`);
          process.exit(1);
        }
      }
      process.exit(await runInteractive(opts));
    }
    case '--help':
    case 'help':
      process.stdout.write(USAGE + '\n');
      return;
    default:
      fail(`unknown command ${command}`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`ws-edge: ${(err as Error).message}\n`);
  process.exit(1);
});
