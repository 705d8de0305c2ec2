// W6 latency under load: the W2 ping-pong pair's round trips, first alone, then while another pair
// of processes on the same layer streams 5 MB messages as fast as it can (capacity 4). Reports both
// p99s and their ratio: large messages must not hold small ones up (a copy under the segment lock
// would). The ping-pong roles are W2's; the streaming roles are here.
import { randomFillSync } from 'node:crypto';
import { sendRetrying } from '../lib.mjs';
import { roles as w2roles } from './w2.mjs';

const BULK = 'bench.bulk';

async function stream({ layer, state }, { bytes }) {
  const payload = randomFillSync(Buffer.alloc(bytes));
  state.streaming = true;
  state.sent = 0;
  state.done = (async () => {
    for (let seq = 0; state.streaming; seq++) {
      await sendRetrying(layer, BULK, { type: 'bench.large', seq, payload });
      state.sent++;
    }
  })();
  return {};
}

async function stopStream({ layer, state }) {
  state.streaming = false;
  await state.done;
  await sendRetrying(layer, BULK, { type: 'bench.large', stop: true });
  return { sent: state.sent };
}

async function sink({ layer, state }) {
  state.received = 0;
  state.done = (async () => {
    for (;;) {
      const message = await layer.receive(BULK);
      if (message.stop) return;
      state.received++;
    }
  })();
  return {};
}

async function sunk({ state }) {
  await state.done;
  return { received: state.received };
}

/**
 * What this process waited for besides the layer, so far (Linux; null elsewhere): time runnable
 * but not running (`/proc/self/schedstat`, waiting for a CPU) and involuntary context switches.
 */
async function scheduling() {
  try {
    const { readFileSync } = await import('node:fs');
    const [, runDelayNs] = readFileSync('/proc/self/schedstat', 'utf8')
      .trim()
      .split(/\s+/)
      .map(Number);
    return { runDelayNs, involuntary: process.resourceUsage().involuntaryContextSwitches };
  } catch {
    return null;
  }
}

export const roles = { ...w2roles, stream, stopStream, sink, sunk, scheduling };

/** Per round trip of the ping pair, between two scheduling() readings of each of its processes. */
function waitedPerTrip(before, after, trips) {
  if (before.some((x) => !x) || after.some((x) => !x)) return {};
  const sum = (list, key) => list.reduce((total, x) => total + x[key], 0);
  return {
    runQueueUsPerTrip: (sum(after, 'runDelayNs') - sum(before, 'runDelayNs')) / 1000 / trips,
    preemptionsPerTrip: (sum(after, 'involuntary') - sum(before, 'involuntary')) / trips,
  };
}

export async function coordinate(ctx) {
  const { trips, warmupTrips, bytes } = ctx.params;
  const [ponger, pinger, consumer, producer] = await ctx.spawn(4, {
    capacity: 4,
    shm: { size: 256 * 2 ** 20, maxMessageSize: 8 * 2 ** 20 },
  });
  const { channel } = await ponger.call('serve');
  const pair = [ponger, pinger];
  const readScheduling = () => Promise.all(pair.map((h) => h.call('scheduling')));
  let before = await readScheduling();
  const idle = await pinger.call('ping', { channel, warmupTrips, trips });
  const idleWaits = waitedPerTrip(before, await readScheduling(), warmupTrips + trips);
  await consumer.call('sink');
  await producer.call('stream', { bytes });
  // From here the lock holds of each pair are those beside the other pair's traffic.
  await ctx.lockHold([ponger, pinger, consumer, producer], { reset: true });
  before = await readScheduling();
  const loaded = await pinger.call('ping', { channel, warmupTrips, trips });
  const loadedWaits = waitedPerTrip(before, await readScheduling(), warmupTrips + trips);
  const lockHold = {
    pingpong: await ctx.lockHold(pair),
    stream: await ctx.lockHold([consumer, producer]),
  };
  const { sent } = await producer.call('stopStream');
  const { received } = await consumer.call('sunk');
  ctx.log(
    `idle p99 ${idle.p99us.toFixed(1)} µs, under 5 MB streaming p99 ${loaded.p99us.toFixed(1)} µs (${received} large messages)`,
  );
  await ctx.stop([ponger, pinger, consumer, producer]);
  return {
    idleP50us: idle.p50us,
    idleP99us: idle.p99us,
    loadedP50us: loaded.p50us,
    loadedP99us: loaded.p99us,
    p99LoadedOverIdle: loaded.p99us / idle.p99us,
    largeMessages: received,
    largeMessagesSent: sent,
    // The ping pair's time runnable but without a CPU, per round trip: what the machine's cores
    // (not the layer) cost it; idle and under streaming.
    idleRunQueueUsPerTrip: idleWaits.runQueueUsPerTrip,
    loadedRunQueueUsPerTrip: loadedWaits.runQueueUsPerTrip,
    idlePreemptionsPerTrip: idleWaits.preemptionsPerTrip,
    loadedPreemptionsPerTrip: loadedWaits.preemptionsPerTrip,
    lockHold: ctx.backend === 'shm' ? lockHold : undefined,
  };
}
