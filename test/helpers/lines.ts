/** Child process output read line by line. */
import type { Readable } from 'node:stream';

/** Calls `onLine` for each complete, non-empty line the stream writes (UTF-8). */
export function readLines(stream: Readable, onLine: (line: string) => void): void {
  let pending = '';
  stream.setEncoding('utf8').on('data', (chunk: string) => {
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop()!;
    for (const line of lines) if (line !== '') onLine(line);
  });
}
