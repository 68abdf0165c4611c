// Preloaded into every server bench/run.mjs starts (`node --expose-gc --import ./bench/probe.mjs`):
// answers memory questions over IPC after a full GC, writes heap snapshots, runs the V8 CPU profiler (the one behind
// --cpu-prof) over a window the harness chooses, and exits when the harness goes away, so no server
// outlives a run.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { getHeapSpaceStatistics, writeHeapSnapshot } from 'node:v8';

let session;
const post = (method, params) => new Promise((resolve, reject) => session.post(method, params, (err, result) => (err ? reject(err) : resolve(result))));

async function profile(msg) {
  if (msg.probe === 'profile-start') {
    session = new Session();
    session.connect();
    await post('Profiler.enable');
    await post('Profiler.setSamplingInterval', { interval: msg.intervalUs ?? 500 });
    await post('Profiler.start');
    process.send({ probe: 'profile-start' });
  } else {
    const { profile: cpuprofile } = await post('Profiler.stop');
    writeFileSync(msg.file, JSON.stringify(cpuprofile));
    session.disconnect();
    process.send({ probe: 'profile-stop', file: msg.file });
  }
}

if (process.send) {
  process.on('message', (msg) => {
    if (msg?.probe === 'memory') {
      globalThis.gc?.();
      globalThis.gc?.();
      const { rss, heapUsed, heapTotal, external, arrayBuffers } = process.memoryUsage();
      // The young generation's committed size: V8 grows it (up to 2 x 16 MiB by default) with the
      // allocation rate, a fixed cost that a ramp of connections makes look like a per-connection one.
      const young = getHeapSpaceStatistics()
        .filter((s) => s.space_name === 'new_space' || s.space_name === 'new_large_object_space')
        .reduce((sum, s) => sum + s.space_size, 0);
      process.send({ probe: 'memory', rss, heapUsed, heapTotal, external, arrayBuffers, young });
    } else if (msg?.probe === 'heap-snapshot') {
      globalThis.gc?.();
      process.send({ probe: 'heap-snapshot', file: writeHeapSnapshot(msg.file) });
    } else if (msg?.probe === 'profile-start' || msg?.probe === 'profile-stop') {
      profile(msg).catch((err) => process.send({ probe: msg.probe, error: err.message }));
    }
  });
  process.on('disconnect', () => process.exit(0));
  // The IPC channel must not keep a server alive on its own, nor count as work.
  process.channel?.unref();
}
