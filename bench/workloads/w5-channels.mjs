// W5b: 100k channels resident. One process sends one 128-byte message to each of 100,000 named
// channels (sequential awaited sends: the time to create them), then reports the bytes they use:
//   shm       arena bytes in use (layer.stats()) and the segment's size
//   redis     used_memory growth of redis-server (INFO memory)
//   inmemory  heap growth of the process (after gc)
//   cluster   heap growth of the primary, where messages for channels nobody receives wait (after gc)
// A second process (for inmemory: the same one) then receives from 1000 of the channels picked at
// random and checks each message.
import { now, smallMessage } from '../lib.mjs';

const name = (i) => `bench.c${i}`;

function heapUsed() {
  globalThis.gc?.();
  globalThis.gc?.();
  return process.memoryUsage().heapUsed;
}

async function fill({ layer }, { channels }) {
  const heapBefore = heapUsed();
  const t0 = now();
  for (let i = 0; i < channels; i++) await layer.send(name(i), smallMessage(0x100000 + i));
  const seconds = (now() - t0) / 1e9;
  const heapAfter = heapUsed();
  let segment;
  if (typeof layer.stats === 'function') {
    const s = layer.stats(1);
    segment = {
      segmentBytes: s.segmentBytes,
      shmBytes: s.shmBytes,
      arenaUsedBytes: s.arenaUsedBytes,
      channels: s.channels,
      queued: s.queued,
    };
  }
  return { seconds, heapGrowth: heapAfter - heapBefore, segment };
}

async function probe({ layer }, { channels, probes }) {
  const picks = new Set();
  while (picks.size < Math.min(probes, channels)) picks.add(Math.floor(Math.random() * channels));
  picks.add(channels - 1);
  let ok = 0;
  const t0 = now();
  for (const i of picks) {
    const message = await layer.receive(name(i));
    if (message.seq === 0x100000 + i) ok++;
  }
  const seconds = (now() - t0) / 1e9;
  let remaining;
  if (typeof layer.stats === 'function') remaining = layer.stats(1).queued;
  return { probes: picks.size, ok, usPerReceive: (seconds * 1e6) / picks.size, remaining };
}

export const roles = { fill, probe };

export async function coordinate(ctx) {
  const { channels, probes } = ctx.params;
  const [filler, reader] = await ctx.spawn(2, {
    capacity: 100,
    shm: { size: 256 * 2 ** 20, maxChannels: 131072, maxNodes: 262144 },
  });
  const redisBefore = await ctx.redisInfo();
  globalThis.gc?.();
  const hostHeapBefore = process.memoryUsage().heapUsed;
  const filled = await filler.call('fill', { channels });
  globalThis.gc?.();
  const hostHeapGrowth = process.memoryUsage().heapUsed - hostHeapBefore;
  const redisAfter = await ctx.redisInfo();
  let bytesUsed;
  switch (ctx.backend) {
    case 'shm':
      bytesUsed = filled.segment.arenaUsedBytes;
      break;
    case 'redis':
      bytesUsed = redisAfter.usedMemory - redisBefore.usedMemory;
      break;
    case 'inmemory':
      bytesUsed = filled.heapGrowth;
      break;
    case 'cluster':
      bytesUsed = hostHeapGrowth;
      break;
  }
  const probed = await reader.call('probe', { channels, probes });
  await ctx.stop([filler, reader]);
  return {
    createSeconds: filled.seconds,
    bytesUsed,
    bytesPerChannel: bytesUsed / channels,
    segmentBytes: filled.segment?.segmentBytes,
    shmBytes: filled.segment?.shmBytes,
    redisKeys: redisAfter?.keys,
    receiveOk: probed.ok === probed.probes ? 1 : 0,
    receivedOk: probed.ok,
    probes: probed.probes,
    usPerReceive: probed.usPerReceive,
    remainingQueued: probed.remaining,
  };
}
