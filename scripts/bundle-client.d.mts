/** Types for scripts/bundle-client.mjs, so the tests that bundle the client type-check. */
export interface Bundle {
  readonly code: string;
  /** Bytes of the minified bundle. */
  readonly minified: number;
  /** Bytes after gzip -9. */
  readonly gzip: number;
}
export function bundle(entry: string, options?: Record<string, unknown>): Promise<Bundle>;
export function bundleClient(): Promise<Bundle>;
