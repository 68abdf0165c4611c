/**
 * The Python SDK (sdk/python, package `wsedge`) runs its own unittest suite against real nodes
 * (`node dist/cli.js serve`, redis-server, the product backend test/backend/chat_backend.py for
 * rpc and the publish proxy), each started by the suite on free ports:
 * `python3 -m unittest discover -s sdk/python/tests -v`, its output streamed here, with the counts
 * it prints (numbered keyed sends across a killed node and across lost replies, among others).
 * Debian's /usr/bin/python3 is used when it exists, since PATH's python3 may be a pyenv build
 * without Debian's packages; the client tests need `websockets` (Debian `python3-websockets`),
 * and a python3 without it fails this suite, never skips it.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const INSTALL_HINT = 'install the Debian packages python3 and python3-websockets (apt-get install python3-websockets); .ci/run does this';
/** The suite restarts nodes and waits on events only; two cores shared with other suites can make that slow. */
const TIMEOUT_MS = 180_000;

interface Ran {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly output: string;
}

/** Runs python to completion, streaming its output as it comes; rejects when python is missing. */
function runPython(args: readonly string[], stream: boolean): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, args, {
      cwd: ROOT,
      // No __pycache__ in the checkout; output unbuffered, so it streams in order.
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1', PYTHONUNBUFFERED: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const take = (chunk: string): void => {
      output += chunk;
      if (stream) process.stdout.write(chunk);
    };
    child.stdout.setEncoding('utf8').on('data', take);
    child.stderr.setEncoding('utf8').on('data', take);
    child.once('error', (err: NodeJS.ErrnoException) => reject(err.code === 'ENOENT' ? new Error(`${PYTHON} not found: ${INSTALL_HINT}`) : err));
    child.once('close', (code, signal) => resolve({ code, signal, output }));
  });
}

it('the Python SDK suite passes against real nodes', { timeout: TIMEOUT_MS }, async () => {
  const check = await runPython(['-c', 'import sys, websockets; assert sys.version_info >= (3, 10), sys.version; print("Python", sys.version.split()[0] + ", websockets", websockets.__version__)'], false);
  if (check.code !== 0) {
    throw new Error(`${PYTHON} cannot run the Python SDK's client (Python 3.10+ with websockets 10.x or later): ${check.output.trim().split('\n').pop()}: ${INSTALL_HINT}`);
  }
  process.stdout.write(`== ${PYTHON}: ${check.output.trim()}\n`);
  const ran = await runPython(['-m', 'unittest', 'discover', '-s', 'sdk/python/tests', '-v'], true);
  if (ran.code !== 0) {
    throw new Error(`python -m unittest exited with ${ran.code ?? ran.signal}:\n${ran.output}`);
  }
  expect(ran.output).toMatch(/\nOK/);
});
