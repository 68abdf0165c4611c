/** Free TCP ports on 127.0.0.1 for child processes that cannot listen on port 0 and report back. */
import { createServer } from 'node:net';

/**
 * A port that was free a moment ago: bound on port 0, then released. Another process may take it
 * before the caller does, so whoever spawns a server on it must retry on EADDRINUSE.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close();
        reject(new Error(`unexpected listen address ${String(address)}`));
        return;
      }
      server.close(() => resolve(address.port));
    });
  });
}
