/**
 * The house rules of src/ that a reviewer would otherwise have to remember: no import cycles, no
 * factory past about 150 lines, contracts that never import their implementations, and Redis only
 * behind src/redis/. scripts/layout.mjs prints the same numbers.
 */
import { describe, expect, it } from 'vitest';
import { functionLengths, functionParameters, importCycles, importsOf, membershipWrites, sourceFiles } from '../../scripts/layout.mjs';

const files = sourceFiles();

describe('source layout', () => {
  it('finds the sources', () => {
    expect(files).toContain('src/server.ts');
    expect(files).toContain('src/redis/broker.ts');
  });

  it('has no import cycles, type imports included', () => {
    expect(importCycles(files)).toEqual([]);
  });

  it('has no function longer than 150 lines', () => {
    const longest = functionLengths(files)[0]!;
    expect(longest.lines, `${longest.file} ${longest.name}`).toBeLessThanOrEqual(150);
  });

  it('has no function taking more than 6 parameters (an options object instead)', () => {
    const most = functionParameters(files)[0]!;
    expect(most.parameters, `${most.file} ${most.name}`).toBeLessThanOrEqual(6);
  });

  it('changes a connection\'s rooms only in the membership module (the stream engine finishes sequenced joins for it)', () => {
    const writes = membershipWrites(files);
    expect(writes.filter((w) => w.startsWith('src/membership.ts:')).length).toBeGreaterThan(0);
    const elsewhere = writes.filter((w) => !w.startsWith('src/membership.ts:') && !w.startsWith('src/streams.ts: ws.'));
    // The upgrade creates the empty state a session starts with, which is no write.
    expect(elsewhere).toEqual([]);
  });

  it('imports ioredis only under src/redis/', () => {
    const outside = files.filter((f) => !f.startsWith('src/redis/') && importsOf(f).some((spec) => spec === 'ioredis' || spec === 'cluster-key-slot'));
    expect(outside).toEqual([]);
  });

  it.each([
    ['src/broker.ts', ['src/broker-memory.ts', 'src/redis/broker.ts']],
    ['src/redis/links.ts', ['src/redis/single.ts', 'src/redis/cluster.ts', 'src/redis/clients.ts']],
    ['src/limits.ts', ['src/redis/registry.ts']],
  ])('keeps the contract %s free of its implementations', (contract, members) => {
    expect(importsOf(contract).filter((spec) => members.includes(spec))).toEqual([]);
  });

  it('keeps the protocol types free of runtime dependencies, for the client library', () => {
    expect(importsOf('src/messages.ts')).toEqual([]);
    expect(importsOf('src/close-codes.ts')).toEqual([]);
    expect([...new Set(importsOf('src/errors.ts'))].sort()).toEqual(['src/close-codes.ts', 'src/messages.ts']);
  });

  it('keeps the client library to the protocol modules: nothing of the server reaches the browser bundle', () => {
    const client = files.filter((f) => f.startsWith('src/client/'));
    expect(client.length).toBeGreaterThan(0);
    const outside = client.flatMap((f) => importsOf(f)).filter((spec) => !spec.startsWith('src/client/'));
    expect([...new Set(outside)].sort()).toEqual(['src/close-codes.ts', 'src/messages.ts']);
  });
});
