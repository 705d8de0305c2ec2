// W4 large messages: {type, seq, payload: Buffer} of 1 MB and 5 MB from one process to another,
// capacity 8 (the producer retries on ChannelFull/SegmentFull after a yield). MB/s end to end =
// payload bytes / time, from the producer's first send after the warm-up messages to the
// consumer's receipt of the last message (one monotonic clock for both processes).
// shm: a 256 MiB segment with maxMessageSize 8 MiB.
import { randomFillSync } from 'node:crypto';
import { now, sendRetrying, sleepUntil } from '../lib.mjs';

const CHANNEL = 'bench.large';

async function receiveN({ layer, state }, { count, bytes, warmup }) {
  state.done = (async () => {
    const times = [];
    let received = 0;
    let faultsAt = 0;
    for (let i = 0; i < count; i++) {
      const message = await layer.receive(CHANNEL);
      const t = now();
      if (i === warmup - 1) faultsAt = process.resourceUsage().minorPageFault;
      if (message.seq !== i) throw new Error(`expected seq ${i}, got ${message.seq}`);
      if (message.payload.length !== bytes)
        throw new Error(`payload of ${message.payload.length} bytes, expected ${bytes}`);
      received += message.payload.length;
      times.push(t);
    }
    // Minor page faults per message after the warm-up ones: where a received payload's memory
    // comes from (fresh pages fault in, warm ones do not).
    const faults = (process.resourceUsage().minorPageFault - faultsAt) / (count - warmup);
    return { times, received, faults };
  })();
  return {};
}

async function received({ state }) {
  return state.done;
}

async function sendN({ layer }, { count, bytes, warmup, start }) {
  const payload = randomFillSync(Buffer.alloc(bytes));
  const counters = { full: 0 };
  await sleepUntil(start);
  let timed;
  let faultsAt = 0;
  for (let i = 0; i < count; i++) {
    if (i === warmup) {
      timed = now();
      faultsAt = process.resourceUsage().minorPageFault;
    }
    await sendRetrying(layer, CHANNEL, { type: 'bench.large', seq: i, payload }, counters);
  }
  const faults = (process.resourceUsage().minorPageFault - faultsAt) / (count - warmup);
  return { timed, fullRetries: counters.full, faults };
}

export const roles = { receiveN, received, sendN };

export async function coordinate(ctx) {
  const { sizes, counts } = ctx.params;
  const MBps = {};
  const cpuUsPerMB = {};
  const detail = {};
  const lockHold = {};
  for (const bytes of sizes) {
    const label = `${bytes / 1e6}MB`;
    const [consumer, producer] = await ctx.spawn(2, {
      capacity: 8,
      shm: { size: 256 * 2 ** 20, maxMessageSize: 8 * 2 ** 20 },
    });
    const count = counts[bytes];
    const warmup = Math.max(3, Math.floor(count / 10));
    await consumer.call('receiveN', { count, bytes, warmup });
    const cpuBefore = await ctx.cpu([consumer, producer]);
    const sent = await producer.call('sendN', { count, bytes, warmup, start: now() + 100e6 });
    const { times, faults } = await consumer.call('received');
    cpuUsPerMB[label] =
      ((await ctx.cpu([consumer, producer])) - cpuBefore) / ((count * bytes) / 1e6);
    const seconds = (times[count - 1] - sent.timed) / 1e9;
    MBps[label] = ((count - warmup) * bytes) / 1e6 / seconds;
    lockHold[label] = await ctx.lockHold([consumer, producer]);
    // One figure for the inmemory backend (both roles in one process).
    const [consumerRssMB, producerRssMB] = await ctx.stop([consumer, producer]);
    detail[label] = {
      messages: count - warmup,
      seconds,
      fullRetries: sent.fullRetries,
      // Minor page faults per message on each side, and each process's peak RSS (MB).
      consumerFaults: faults,
      producerFaults: sent.faults,
      consumerRssMB,
      producerRssMB,
    };
    const mb = (n) => (n === undefined ? '-' : n.toFixed(0));
    ctx.log(
      `${label}: ${MBps[label].toFixed(0)} MB/s, page faults per message consumer ${faults.toFixed(0)} producer ${sent.faults.toFixed(0)}, peak RSS ${mb(consumerRssMB)}/${mb(producerRssMB)} MB`,
    );
  }
  return {
    MBps,
    cpuUsPerMB,
    detail,
    relay: ctx.relayStats(),
    lockHold: ctx.backend === 'shm' ? lockHold : undefined,
  };
}
