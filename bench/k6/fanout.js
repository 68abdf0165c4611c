// ROOMS rooms with MEMBERS members each; timestamped, numbered events published into every room
// through `send_message` (one member per room publishes) and through POST /api/v1/publish; every
// member measures the end-to-end delay and checks each publisher's sequence for gaps,
// duplicates and reordering.
//
//   k6 run -e JWT_SECRET="$JWT_SECRET" -e PUBLISH_API_KEY="$PUBLISH_API_KEY" bench/k6/fanout.js
//
// Timeline: members connect and join over RAMP; SETTLE later publishing starts and lasts
// DURATION; members stay DRAIN longer for the last events, then close with 1000.
//
// - The sender is a member of its room and receives its own `message.new` (docs/WEBSOCKET_API.md,
//   send_message). Its copy is counted like any other: it is a delivery the product promises, and
//   its delay is the same path through the node (publish, uWS fan-out). Skipping it would hide a
//   lost or late copy to the publisher.
// - Delay = when k6 read the frame off the socket minus `ts`, the publisher's Date.now() before
//   sending. Both clocks are this k6 process's; across several load generators they must be
//   synchronised. The delay includes k6's own sending, so keep the load generator below saturation
//   (watch its CPU) or the numbers describe k6.
// - A member that joined before publishing began must see every publisher's events from seq 1;
//   one that joined late starts counting at the first event it sees. Losses after the last event
//   a member saw are not detectable and not counted.
// - API events go to one node (PUBLISH_URL): ws-edge orders events of one backend publishing
//   through one node. Each API VU is one publisher with its own sequence per room.
//
// Parameters (-e NAME=value), besides the shared ones in lib.js:
//   ROOMS             10     rooms
//   MEMBERS           10     members per room (ROOMS x MEMBERS connections, one user each)
//   CONNS_PER_VU      50     connections per member VU
//   RAMP              10s    members connect and join spread over this time
//   SETTLE            3s     pause between the end of the ramp and the first publish
//   DURATION          60s    publishing time
//   DRAIN             5s     members stay this long after publishing ends
//   WS_PUBLISH_RATE   2      send_message events per second per room (keep below the server's WS_RATE_LIMIT, 20)
//   API_RATE          10     API publishes per second in total, rooms in turn (0: off; off without PUBLISH_API_KEY)
//   API_VUS           2      VUs (publishers) preallocated for the API publishes; more are added if they fall behind
//   PAD_BYTES         0      padding added to every event's data, for bigger messages
//   DELAY_P95_MS      100    threshold on delivery_delay p(95), ms
//   DELAY_P99_MS      250    threshold on delivery_delay p(99), ms
//   FAULTS            0      1 while injecting faults (Redis or node restarts): gaps and unexpected closes are
//                            counted but not held to zero; duplicates and reordering still are
import { check } from 'k6';
import exec from 'k6/execution';
import http from 'k6/http';
import { Counter, Trend } from 'k6/metrics';
import { setInterval, clearInterval, setTimeout } from 'k6/timers';
import {
  API_EVENT_TYPE,
  PUBLISH_API_KEY,
  PUBLISH_URL,
  USER_PREFIX,
  connect,
  console,
  createSequenceTracker,
  duration,
  envBool,
  envInt,
  envNumber,
  envSeconds,
  newRunId,
  probe,
  probeOf,
  tokenFor,
} from './lib.js';

const ROOMS = envInt('ROOMS', 10);
const MEMBERS = envInt('MEMBERS', 10);
const CONNS_PER_VU = envInt('CONNS_PER_VU', 50);
const RAMP = envSeconds('RAMP', '10s');
const SETTLE = envSeconds('SETTLE', '3s');
const DURATION = envSeconds('DURATION', '60s');
const DRAIN = envSeconds('DRAIN', '5s');
const WS_PUBLISH_RATE = envNumber('WS_PUBLISH_RATE', 2);
const API_RATE = PUBLISH_API_KEY === undefined ? 0 : envInt('API_RATE', 10);
const API_VUS = envInt('API_VUS', 2);
const PAD = 'x'.repeat(envInt('PAD_BYTES', 0));
const DELAY_P95_MS = envNumber('DELAY_P95_MS', 100);
const DELAY_P99_MS = envNumber('DELAY_P99_MS', 250);
const FAULTS = envBool('FAULTS', false);

if (ROOMS < 1 || MEMBERS < 1 || CONNS_PER_VU < 1) throw new Error('ROOMS, MEMBERS and CONNS_PER_VU must be at least 1');
const TOTAL = ROOMS * MEMBERS;
const MEMBER_VUS = Math.ceil(TOTAL / CONNS_PER_VU);
if (WS_PUBLISH_RATE > 20) console.warn(`WS_PUBLISH_RATE ${WS_PUBLISH_RATE}/s is above the default WS_RATE_LIMIT (20/s): expect rate_limited errors unless the nodes allow more`);

/** End-to-end delay of every delivered probe, ms (tag `via`: ws or api). */
const deliveryDelay = new Trend('delivery_delay', true);
const deliveries = new Counter('deliveries');
/** Events a member never received although it was in the room (see the header). */
const gaps = new Counter('gaps');
const duplicates = new Counter('duplicates');
/** Events that arrived after a later event of the same publisher. */
const outOfOrder = new Counter('out_of_order');
const membersJoined = new Counter('members_joined');
/** Error envelopes the server answered (tag `code`), e.g. rate_limited or forbidden. */
const wsErrors = new Counter('ws_errors');
/** Closes this script did not ask for (tag `code`; `none`: the upgrade itself failed). */
const unexpectedCloses = new Counter('unexpected_closes');
const published = new Counter('published');

/** @type {import('k6/options').Options['scenarios']} */
const scenarios = {
  members: {
    executor: 'per-vu-iterations',
    exec: 'members',
    vus: MEMBER_VUS,
    iterations: 1,
    maxDuration: duration(RAMP + SETTLE + DURATION + DRAIN + 60),
  },
};
if (API_RATE > 0) {
  scenarios['api_publishers'] = {
    executor: 'constant-arrival-rate',
    exec: 'apiPublish',
    rate: API_RATE,
    timeUnit: '1s',
    startTime: duration(RAMP + SETTLE),
    duration: duration(DURATION),
    preAllocatedVUs: API_VUS,
    maxVUs: API_VUS * 5,
  };
}

/** @type {import('k6/options').Options['thresholds']} */
const thresholds = {
  delivery_delay: [`p(95)<${DELAY_P95_MS}`, `p(99)<${DELAY_P99_MS}`],
  // A delay threshold passes vacuously without samples: demand deliveries and joined members.
  deliveries: ['count>0'],
  members_joined: [`count>=${TOTAL}`],
  duplicates: ['count==0'],
  out_of_order: ['count==0'],
  ws_errors: ['count==0'],
};
if (!FAULTS) {
  thresholds['gaps'] = ['count==0'];
  thresholds['unexpected_closes'] = ['count==0'];
}
// Only with API traffic: a Rate without samples reads NaN and would fail.
if (API_RATE > 0) thresholds['http_req_failed{name:publish}'] = ['rate==0'];

export const options = {
  scenarios,
  thresholds,
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'],
};

/** @typedef {{ runId: string, startAt: number }} Data */

/** @returns {Data} */
export function setup() {
  return { runId: newRunId(), startAt: Date.now() + (RAMP + SETTLE) * 1000 };
}

/** @param {string} runId @param {number} index */
function roomName(runId, index) {
  return `channel:${USER_PREFIX}-${runId}-${index}`;
}

/**
 * The member VUs: slot i is member i % MEMBERS of room floor(i / MEMBERS); member 0 also publishes.
 * @param {Data} data
 */
export function members(data) {
  const vuIndex = exec.scenario.iterationInTest; // one iteration per VU
  const startedAt = exec.scenario.startTime;
  const stopPublishingAt = data.startAt + DURATION * 1000;
  const finishAt = stopPublishingAt + DRAIN * 1000;
  for (let slot = vuIndex * CONNS_PER_VU; slot < Math.min(TOTAL, (vuIndex + 1) * CONNS_PER_VU); slot++) {
    const openAt = startedAt + (RAMP * 1000 * slot) / TOTAL;
    setTimeout(() => member(slot), Math.max(0, openAt - Date.now()));
  }

  /** @param {number} slot */
  function member(slot) {
    const roomIndex = Math.floor(slot / MEMBERS);
    const room = roomName(data.runId, roomIndex);
    const publisher = slot % MEMBERS === 0 ? `ws-${roomIndex}` : undefined;
    /** @type {ReturnType<typeof createSequenceTracker> | undefined} */
    let tracker;
    /** @type {number | undefined} */
    let publishTimer;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      if (publishTimer !== undefined) clearInterval(publishTimer);
      if (tracker !== undefined) gaps.add(tracker.finish());
    };
    const conn = connect(tokenFor(slot, data.runId), {
      onConnected: () => conn.send({ type: 'join_room', room, id: 'join' }),
      onEnvelope: (msg, at) => {
        const p = probeOf(msg);
        if (p !== null) {
          if (tracker === undefined) return; // not joined yet: cannot happen, the join reply comes first
          deliveries.add(1);
          deliveryDelay.add(Math.max(0, at - p.ts), { via: p.pub.startsWith('api-') ? 'api' : 'ws' });
          const seen = tracker.see(p.pub, p.seq);
          if (seen === 'duplicate') duplicates.add(1);
          else if (seen === 'out_of_order') outOfOrder.add(1);
          return;
        }
        if (msg.type === 'room_joined' && msg.id === 'join') {
          membersJoined.add(1);
          // Joined at least a second before the first publish: every event from seq 1 is owed.
          tracker = createSequenceTracker(Date.now() <= data.startAt - 1000);
          if (publisher !== undefined) startPublishing(publisher);
          return;
        }
        if (msg.type === 'error') wsErrors.add(1, { code: String(msg.data?.code ?? 'unknown') });
      },
      onClose: (info) => {
        finish();
        if (!info.byUs) unexpectedCloses.add(1, { code: String(info.code ?? 'none') });
      },
    });
    setTimeout(() => {
      finish();
      conn.close(1000, 'done');
    }, Math.max(0, finishAt - Date.now()));

    /** @param {string} pub */
    function startPublishing(pub) {
      let seq = 0;
      setTimeout(() => {
        if (done) return;
        publishTimer = setInterval(() => {
          if (Date.now() >= stopPublishingAt) {
            if (publishTimer !== undefined) clearInterval(publishTimer);
            publishTimer = undefined;
            return;
          }
          seq++;
          if (conn.send({ type: 'send_message', room, data: probe(pub, seq, PAD) })) published.add(1, { via: 'ws' });
        }, 1000 / WS_PUBLISH_RATE);
      }, Math.max(0, data.startAt - Date.now()));
    }
  }
}

/**
 * The last accepted sequence number per API publisher and room (module state is per VU in k6,
 * so this holds one publisher's numbers; keyed by publisher all the same).
 * @type {Map<string, number>}
 */
const apiSequence = new Map();

/**
 * One API publish per iteration, rooms in turn; each VU is one publisher.
 * @param {Data} data
 */
export function apiPublish(data) {
  const now = Date.now();
  if (now < data.startAt || now >= data.startAt + DURATION * 1000) return;
  const room = roomName(data.runId, exec.scenario.iterationInTest % ROOMS);
  const pub = `api-${exec.vu.idInTest}`;
  const key = `${pub} ${room}`;
  const seq = (apiSequence.get(key) ?? 0) + 1;
  const body = JSON.stringify({ room, type: API_EVENT_TYPE, data: probe(pub, seq, PAD), sender: null });
  const res = http.post(PUBLISH_URL, body, {
    headers: { Authorization: `Bearer ${PUBLISH_API_KEY}`, 'Content-Type': 'application/json' },
    tags: { name: 'publish' },
  });
  // Only an accepted event uses up its number; a refused one would otherwise read as a gap.
  if (check(res, { 'publish API answers 200': (r) => r.status === 200 })) {
    apiSequence.set(key, seq);
    published.add(1, { via: 'api' });
  }
}
