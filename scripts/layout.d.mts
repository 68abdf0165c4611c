/** Types for scripts/layout.mjs, so test/unit/layout.test.ts type-checks like the rest of the tests. */
export interface FunctionLength {
  readonly file: string;
  readonly name: string;
  readonly lines: number;
}
export function sourceFiles(dir?: string): string[];
export function importsOf(file: string): string[];
export function functionLengths(files?: readonly string[]): FunctionLength[];
export function importCycles(files?: readonly string[]): string[][];
export interface FunctionParameters {
  readonly file: string;
  readonly name: string;
  readonly parameters: number;
}
export function functionParameters(files?: readonly string[]): FunctionParameters[];
export function membershipWrites(files?: readonly string[]): string[];
