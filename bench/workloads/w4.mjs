// W4 large messages: {type, seq, payload: Buffer} of 1 MB and 5 MB from one process to another,
// capacity 8 (the producer retries on ChannelFull/SegmentFull after a yield). MB/s end to end =
// payload bytes / time, from the producer's first send after the warm-up messages to the
// consumer's receipt of the last message (one monotonic clock for both processes).
// shm: a 256 MiB segment with maxMessageSize 8 MiB.
import { randomFillSync } from 'node:crypto';
import { now, sendRetrying, sleepUntil } from '../lib.mjs';

const CHANNEL = 'bench.large';

async function receiveN({ layer, state }, { count, bytes }) {
  state.done = (async () => {
    const times = [];
    let received = 0;
    for (let i = 0; i < count; i++) {
      const message = await layer.receive(CHANNEL);
      const t = now();
      if (message.seq !== i) throw new Error(`expected seq ${i}, got ${message.seq}`);
      if (message.payload.length !== bytes)
        throw new Error(`payload of ${message.payload.length} bytes, expected ${bytes}`);
      received += message.payload.length;
      times.push(t);
    }
    return { times, received };
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
  for (let i = 0; i < count; i++) {
    if (i === warmup) timed = now();
    await sendRetrying(layer, CHANNEL, { type: 'bench.large', seq: i, payload }, counters);
  }
  return { timed, fullRetries: counters.full };
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
    await consumer.call('receiveN', { count, bytes });
    const cpuBefore = await ctx.cpu([consumer, producer]);
    const sent = await producer.call('sendN', { count, bytes, warmup, start: now() + 100e6 });
    const { times } = await consumer.call('received');
    cpuUsPerMB[label] =
      ((await ctx.cpu([consumer, producer])) - cpuBefore) / ((count * bytes) / 1e6);
    const seconds = (times[count - 1] - sent.timed) / 1e9;
    MBps[label] = ((count - warmup) * bytes) / 1e6 / seconds;
    detail[label] = { messages: count - warmup, seconds, fullRetries: sent.fullRetries };
    ctx.log(`${label}: ${MBps[label].toFixed(0)} MB/s`);
    lockHold[label] = await ctx.lockHold([consumer, producer]);
    await ctx.stop([consumer, producer]);
  }
  return {
    MBps,
    cpuUsPerMB,
    detail,
    relay: ctx.relayStats(),
    lockHold: ctx.backend === 'shm' ? lockHold : undefined,
  };
}
