/**
 * pino logger. Object first, message second, errors under `err`. Tokens, authorization headers and
 * query strings are redacted wherever they appear, as a second line of defence: code never logs them.
 */
import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

const REDACT = ['token', '*.token', 'authorization', '*.authorization', 'query', '*.query', 'secret', '*.secret', 'headers.authorization'];

export function createLogger(level: string, bindings: Record<string, unknown> = {}, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'ws-edge', ...bindings },
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ sync: false }),
  );
}

/**
 * The logger of one connection: every line carries its `connection_id` and `user_id`. Made when a
 * line is written, not kept on the session (heap per connection); guard debug lines with
 * `log.isLevelEnabled('debug')` so a disabled level costs nothing.
 */
export function connectionLog(log: Logger, connection: { readonly connectionId: string; readonly userId: string }): Logger {
  return log.child({ connection_id: connection.connectionId, user_id: connection.userId });
}
