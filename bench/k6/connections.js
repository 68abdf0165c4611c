// Ramp to VUS x CONNS_PER_VU held connections, every one of which must get `connected`, hold them,
// then close them all with 1000.
//
//   k6 run -e JWT_SECRET="$JWT_SECRET" -e VUS=20 -e CONNS_PER_VU=500 bench/k6/connections.js
//
// Each VU holds CONNS_PER_VU sockets (k6/websockets runs them on the VU's event loop), so 10,000
// connections need 20 VUs, not 10,000. One source address reaches one ip:port about 28,000 times
// (the ephemeral port range); beyond that give k6 several source addresses, handed to VUs in turn:
//
//   k6 run --local-ips=127.0.0.2-127.0.0.9 ...       # loopback: all of 127/8 is already local
//   k6 run --local-ips=10.0.0.11,10.0.0.12 ...       # addresses configured on the load generator
//
// (`--local-ips` / K6_LOCAL_IPS is a command-line option only.) Keep VUS x CONNS_PER_VU per address
// below ~28k, and the load generator's `ulimit -n` above the total.
//
// Parameters (-e NAME=value), besides the shared ones in lib.js (WS_URL, JWT_SECRET, TOKENS_FILE, ...):
//   VUS                       10     VUs, each holding CONNS_PER_VU connections
//   CONNS_PER_VU              100    connections per VU
//   RAMP                      60s    the connections open evenly spread over this time
//   HOLD                      60s    all of them stay open this long after the ramp
//   CONNECT_P95_MS            500    threshold on ws_connecting p(95): TCP connect + upgrade, ms
//   CONNECTED_P95_MS          1000   threshold on time_to_connected p(95): until the `connected` frame, ms
//   MAX_CONNECT_FAILURE_RATE  0      tolerated share of connections that never get `connected` (0.001 = 0.1%)
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';
import { setTimeout } from 'k6/timers';
import { connect, console, duration, envInt, envNumber, envSeconds, newRunId, tokenFor } from './lib.js';

const VUS = envInt('VUS', 10);
const CONNS_PER_VU = envInt('CONNS_PER_VU', 100);
const RAMP = envSeconds('RAMP', '60s');
const HOLD = envSeconds('HOLD', '60s');
const CONNECT_P95_MS = envNumber('CONNECT_P95_MS', 500);
const CONNECTED_P95_MS = envNumber('CONNECTED_P95_MS', 1000);
const MAX_CONNECT_FAILURE_RATE = envNumber('MAX_CONNECT_FAILURE_RATE', 0);
if (VUS < 1 || CONNS_PER_VU < 1) throw new Error('VUS and CONNS_PER_VU must be at least 1');
const TOTAL = VUS * CONNS_PER_VU;

/** One sample per connection attempt: true when it never got `connected` (tag `code`: its close code, `none` without a WebSocket). */
const connectFailures = new Rate('connect_failures');
/** Connections that got `connected`. */
const connected = new Counter('connected');
/** From `new WebSocket()` to the `connected` frame: TCP, upgrade, JWT verification, slot, first frame. */
const timeToConnected = new Trend('time_to_connected', true);
/** Connections closed by the server or the network while held (tag `code`). */
const dropped = new Counter('dropped');

export const options = {
  scenarios: {
    connections: {
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: 1,
      maxDuration: duration(RAMP + HOLD + 120),
    },
  },
  thresholds: {
    connect_failures: [`rate<=${MAX_CONNECT_FAILURE_RATE}`],
    connected: [`count>=${Math.ceil(TOTAL * (1 - MAX_CONNECT_FAILURE_RATE))}`],
    ws_connecting: [`p(95)<${CONNECT_P95_MS}`],
    time_to_connected: [`p(95)<${CONNECTED_P95_MS}`],
    dropped: ['count==0'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'],
};

export function setup() {
  return { runId: newRunId() };
}

/** @param {{ runId: string }} data */
export default function (data) {
  // One iteration per VU, so the scenario's iteration number is a 0-based VU index.
  const vuIndex = exec.scenario.iterationInTest;
  const startedAt = exec.scenario.startTime;
  const closeAt = startedAt + (RAMP + HOLD) * 1000;
  let failuresLogged = 0;

  for (let j = 0; j < CONNS_PER_VU; j++) {
    const slot = vuIndex * CONNS_PER_VU + j;
    const openAt = startedAt + (RAMP * 1000 * slot) / TOTAL;
    setTimeout(() => hold(slot), Math.max(0, openAt - Date.now()));
  }

  /** @param {number} slot */
  function hold(slot) {
    const openedAt = Date.now();
    let gotConnected = false;
    const conn = connect(tokenFor(slot, data.runId), {
      onConnected: (_info, at) => {
        gotConnected = true;
        connected.add(1);
        connectFailures.add(false);
        timeToConnected.add(at - openedAt);
      },
      onClose: (info) => {
        const code = String(info.code ?? 'none');
        if (!gotConnected) {
          connectFailures.add(true, { code });
          if (failuresLogged++ < 3) console.warn(`slot ${slot}: no connected; close ${code} "${info.reason}" ${info.error}`);
        } else if (!info.byUs) {
          dropped.add(1, { code });
        }
      },
    });
    setTimeout(() => conn.close(1000, 'hold over'), Math.max(0, closeAt - Date.now()));
  }
}
