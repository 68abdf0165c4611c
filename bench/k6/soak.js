// Steady load with connection churn for DURATION: VUS x CONNS_PER_VU connection slots, each a
// member of one of ROOMS rooms, sending a timestamped, numbered event to its room every
// SEND_INTERVAL. Each connection lives a random LIFETIME_MIN..LIFETIME_MAX, closes itself with 1000
// and its slot reconnects (a new connection, a new publisher) after RECONNECT_DELAY, so the node
// keeps accepting, joining, leaving and releasing slots under load.
//
//   k6 run -e JWT_SECRET="$JWT_SECRET" -e DURATION=30m bench/k6/soak.js
//
// Any close of a connected socket that the script did not ask for is counted in `unexpected_closes`
// (tag `code`), a connection that never got `connected` in `connect_failures`; either way the slot
// reconnects after 1-5 s; the threshold allows MAX_UNEXPECTED_CLOSES of them (0: a rolling deploy
// during the run shows up as 1012s, raise it for that). Delivery is measured as in fanout.js:
// delay from the sender's clock to the frame read, per-publisher sequences for gaps, duplicates
// and reordering; a member that joins mid-stream starts counting at the first event it sees.
//
// Parameters (-e NAME=value), besides the shared ones in lib.js:
//   VUS                       10     VUs
//   CONNS_PER_VU              20     connection slots per VU
//   ROOMS                     20     rooms; slot i is in room i % ROOMS
//   DURATION                  10m    steady-state time (after RAMP)
//   RAMP                      30s    slots open spread over this time
//   LIFETIME_MIN              30s    shortest connection lifetime
//   LIFETIME_MAX              120s   longest connection lifetime (uniform in between)
//   RECONNECT_DELAY           0.5s   pause before a slot reconnects after closing itself
//   SEND_INTERVAL             5s     each connection sends one event to its room this often (0: no sending)
//   DELAY_P95_MS              100    threshold on delivery_delay p(95), ms
//   DELAY_P99_MS              250    threshold on delivery_delay p(99), ms
//   MAX_UNEXPECTED_CLOSES     0      threshold on unexpected_closes
//   MAX_CONNECT_FAILURE_RATE  0      threshold on connect_failures (share of attempts without `connected`)
//   FAULTS                    0      1 while injecting faults: gaps are counted but not held to zero
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';
import { setInterval, clearInterval, setTimeout, clearTimeout } from 'k6/timers';
import { USER_PREFIX, connect, createSequenceTracker, duration, envBool, envInt, envNumber, envSeconds, newRunId, probe, probeOf, tokenFor } from './lib.js';

const VUS = envInt('VUS', 10);
const CONNS_PER_VU = envInt('CONNS_PER_VU', 20);
const ROOMS = envInt('ROOMS', 20);
const DURATION = envSeconds('DURATION', '10m');
const RAMP = envSeconds('RAMP', '30s');
const LIFETIME_MIN = envSeconds('LIFETIME_MIN', '30s');
const LIFETIME_MAX = envSeconds('LIFETIME_MAX', '120s');
const RECONNECT_DELAY = envSeconds('RECONNECT_DELAY', '0.5s');
const SEND_INTERVAL = envSeconds('SEND_INTERVAL', '5s');
const DELAY_P95_MS = envNumber('DELAY_P95_MS', 100);
const DELAY_P99_MS = envNumber('DELAY_P99_MS', 250);
const MAX_UNEXPECTED_CLOSES = envInt('MAX_UNEXPECTED_CLOSES', 0);
const MAX_CONNECT_FAILURE_RATE = envNumber('MAX_CONNECT_FAILURE_RATE', 0);
const FAULTS = envBool('FAULTS', false);
const TOTAL = VUS * CONNS_PER_VU;
if (VUS < 1 || CONNS_PER_VU < 1 || ROOMS < 1) throw new Error('VUS, CONNS_PER_VU and ROOMS must be at least 1');
if (LIFETIME_MAX < LIFETIME_MIN) throw new Error('LIFETIME_MAX must be at least LIFETIME_MIN');

const deliveryDelay = new Trend('delivery_delay', true);
const deliveries = new Counter('deliveries');
const gaps = new Counter('gaps');
const duplicates = new Counter('duplicates');
const outOfOrder = new Counter('out_of_order');
/** Closes the script did not ask for (tag `code`): a node going away, a heartbeat drop, a policy close. */
const unexpectedCloses = new Counter('unexpected_closes');
/** One sample per connection attempt: true when it never got `connected` (tag `code`). */
const connectFailures = new Rate('connect_failures');
/** Connections that ended their lifetime and were replaced: the churn. */
const churned = new Counter('churned');
const wsErrors = new Counter('ws_errors');

/** @type {import('k6/options').Options['thresholds']} */
const thresholds = {
  unexpected_closes: [`count<=${MAX_UNEXPECTED_CLOSES}`],
  connect_failures: [`rate<=${MAX_CONNECT_FAILURE_RATE}`],
  duplicates: ['count==0'],
  out_of_order: ['count==0'],
  ws_errors: ['count==0'],
};
if (SEND_INTERVAL > 0) {
  thresholds['delivery_delay'] = [`p(95)<${DELAY_P95_MS}`, `p(99)<${DELAY_P99_MS}`];
  thresholds['deliveries'] = ['count>0']; // the delay threshold alone would pass without samples
}
if (!FAULTS) thresholds['gaps'] = ['count==0'];

export const options = {
  scenarios: {
    soak: {
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: 1,
      maxDuration: duration(RAMP + DURATION + 120),
    },
  },
  thresholds,
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'],
};

export function setup() {
  return { runId: newRunId() };
}

/** @param {{ runId: string }} data */
export default function (data) {
  const vuIndex = exec.scenario.iterationInTest; // one iteration per VU
  const startedAt = exec.scenario.startTime;
  const endAt = startedAt + (RAMP + DURATION) * 1000;
  for (let j = 0; j < CONNS_PER_VU; j++) {
    const slot = vuIndex * CONNS_PER_VU + j;
    setTimeout(() => runSlot(slot), Math.max(0, startedAt + (RAMP * 1000 * slot) / TOTAL - Date.now()));
  }

  /** @param {number} slot */
  function runSlot(slot) {
    const room = `channel:${USER_PREFIX}-${data.runId}-${slot % ROOMS}`;
    let generation = 0;

    const start = () => {
      if (Date.now() >= endAt) return;
      generation++;
      const pub = `s${slot}g${generation}`; // a new publisher per connection, numbering from 1
      let seq = 0;
      let gotConnected = false;
      const tracker = createSequenceTracker(false);
      /** @type {number | undefined} */
      let sendTimer;
      /** @type {number | undefined} */
      let lifeTimer;
      let finished = false;
      const finish = () => {
        if (finished) return;
        finished = true;
        if (sendTimer !== undefined) clearInterval(sendTimer);
        if (lifeTimer !== undefined) clearTimeout(lifeTimer);
        gaps.add(tracker.finish());
      };
      const lifetime = (LIFETIME_MIN + Math.random() * (LIFETIME_MAX - LIFETIME_MIN)) * 1000;
      const conn = connect(tokenFor(slot, data.runId), {
        onConnected: () => {
          gotConnected = true;
          connectFailures.add(false);
          conn.send({ type: 'join_room', room, id: 'join' });
        },
        onEnvelope: (msg, at) => {
          const p = probeOf(msg);
          if (p !== null) {
            deliveries.add(1);
            deliveryDelay.add(Math.max(0, at - p.ts));
            const seen = tracker.see(p.pub, p.seq);
            if (seen === 'duplicate') duplicates.add(1);
            else if (seen === 'out_of_order') outOfOrder.add(1);
            return;
          }
          if (msg.type === 'room_joined' && msg.id === 'join') {
            if (SEND_INTERVAL > 0) {
              sendTimer = setInterval(() => {
                seq++;
                conn.send({ type: 'send_message', room, data: probe(pub, seq, '') });
              }, SEND_INTERVAL * 1000);
            }
            return;
          }
          if (msg.type === 'error') wsErrors.add(1, { code: String(msg.data?.code ?? 'unknown') });
        },
        onClose: (info) => {
          finish();
          const code = String(info.code ?? 'none');
          const ended = Date.now() >= endAt;
          const backoff = 1000 + Math.random() * 4000;
          if (!gotConnected) {
            // Refused or failed before `connected` (a connecting socket closed by the end of the run is neither).
            if (!(info.byUs && ended)) connectFailures.add(true, { code });
            if (!ended) setTimeout(start, backoff);
            return;
          }
          if (info.byUs) {
            if (!ended) {
              churned.add(1);
              setTimeout(start, RECONNECT_DELAY * 1000);
            }
            return;
          }
          unexpectedCloses.add(1, { code });
          if (!ended) setTimeout(start, backoff);
        },
      });
      // Ends at its lifetime or at the end of the run, whichever comes first.
      lifeTimer = setTimeout(() => {
        finish();
        conn.close(1000, Date.now() >= endAt ? 'done' : 'churn');
      }, Math.max(0, Math.min(lifetime, endAt - Date.now())));
    };
    start();
  }
}
