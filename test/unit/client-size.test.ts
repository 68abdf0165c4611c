/**
 * The browser bundle of ws-edge/client (minified ESM, gzip -9, as scripts/bundle-client.mjs builds
 * it) stays at or under 7 KB, and carries nothing of the server. A size check, not a timing.
 */
import { describe, expect, it } from 'vitest';
import { bundleClient } from '../../scripts/bundle-client.mjs';

const BUDGET_GZIP_BYTES = 7 * 1024;

describe('the client bundle', () => {
  it(`is at most ${BUDGET_GZIP_BYTES} bytes gzip`, async () => {
    const { code, minified, gzip } = await bundleClient();
    console.log(JSON.stringify({ client_bundle_minified: minified, client_bundle_gzip: gzip, budget_gzip: BUDGET_GZIP_BYTES }));
    expect(gzip).toBeLessThanOrEqual(BUDGET_GZIP_BYTES);
    // Only the protocol modules come along: no Node built-ins, no server catalogue.
    expect(code).not.toMatch(/node:|uWebSockets|ioredis|origin not allowed/);
    expect(code).toContain('wsedge.bearer.');
  });
});
