// W1 throughput: 1 producer process -> 1 consumer process, one named channel, capacity 10000.
// Also the memory figures: peak RSS of both processes (and of the relay / redis-server), and
// the shm segment's size and arena use.
import { MS, sleepUntil } from '../lib.mjs';
import { commonRoles, window } from './common.mjs';

export const roles = { ...commonRoles };

export async function coordinate(ctx) {
  const { duration } = ctx.params;
  const [consumer, producer] = await ctx.spawn(2, { capacity: 10000 });
  const channel = 'bench.w1';
  const { start, winStart, winEnd } = window(ctx.params);
  await consumer.call('listen', { channels: [channel], winStart, winEnd });
  // shm: the host attaches too and samples the segment's use (every 100 ms) during the run.
  const stopSampling = ctx.shmSampler(100);
  const cpuBefore = await ctx.cpu([consumer, producer]);
  const produced = await producer.call('produce', { channel, start, until: winEnd });
  const peak = await stopSampling();
  await sleepUntil(winEnd + 100 * MS);
  const { count, after } = await consumer.call('counted');
  // Every process involved (and the relay or redis-server), from before the first message to
  // after the last was received, per message sent.
  const cpuUs = (await ctx.cpu([consumer, producer])) - cpuBefore;
  const segment = await consumer.call('layerStats');
  const redis = await ctx.redisInfo();
  const lockHold = await ctx.lockHold([consumer, producer]);
  const rss = await ctx.stop([consumer, producer]);
  return {
    msgsPerSec: count / duration,
    cpuUsPerMessage: cpuUs / produced.sent,
    received: count,
    receivedAfterWindow: after,
    sent: produced.sent,
    fullRetries: produced.fullRetries,
    consumerMaxRssMB: rss[0],
    producerMaxRssMB: rss[1] ?? rss[0],
    relayMaxRssMB: ctx.backend === 'cluster' ? ctx.hostMaxRssMB() : undefined,
    relay: ctx.relayStats(),
    redisRssMB: redis ? redis.usedMemoryRss / 1e6 : undefined,
    segmentBytes: segment?.segmentBytes,
    arenaUsedBytesAfter: segment?.arenaUsedBytes,
    peakArenaUsedBytes: peak?.arenaUsedBytes,
    peakShmBytes: peak?.shmBytes,
    peakQueued: peak?.queued,
    lockHold: lockHold && { '1to1': lockHold },
  };
}
