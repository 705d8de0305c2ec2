// W3a fan-out: 4 member processes x 25 channels (newChannel()) in one group; a 5th process runs a
// groupSend loop. Deliveries counted by the members inside the measuring window. Capacity 10000
// (the '!' channels of one member process share it: shm and Redis queue one entry per groupSend
// per process); groupSend skips full members (channel-layer semantics), so deliveries/s is what
// actually arrived.
import { isChannelFull, MS, now, sleepUntil, smallMessage, yieldMacrotask } from '../lib.mjs';
import { commonRoles, SEQ0, window } from './common.mjs';

const GROUP = 'bench.room';

async function join({ layer }, { count }) {
  const channels = [];
  for (let i = 0; i < count; i++) {
    const channel = await layer.newChannel();
    await layer.groupAdd(GROUP, channel);
    channels.push(channel);
  }
  return { channels };
}

async function groupLoop({ layer }, { start, until }) {
  await sleepUntil(start);
  let seq = SEQ0;
  let segmentFull = 0;
  for (;;) {
    if ((seq & 15) === 0 && now() >= until) break;
    try {
      await layer.groupSend(GROUP, smallMessage(seq++));
    } catch (error) {
      // groupSend skips full members, but the shm layer throws SegmentFull (a ChannelFull) when
      // its node pool or arena is exhausted: count it, yield, go on.
      if (!isChannelFull(error)) throw error;
      segmentFull++;
      await yieldMacrotask();
    }
  }
  return { groupSends: seq - SEQ0, seconds: (now() - start) / 1e9, segmentFull };
}

export const roles = { ...commonRoles, join, groupLoop };

export async function coordinate(ctx) {
  const { duration } = ctx.params;
  // Before the inboxes, 100 channels x capacity 10000 = 1,000,000 queued deliveries at most: the
  // shm segment keeps a node pool that large (the default 262144 would run out first), so runs
  // before and after compare.
  const handles = await ctx.spawn(5, {
    capacity: 10000,
    shm: { size: 256 * 2 ** 20, maxNodes: 1_048_576 },
  });
  const members = handles.slice(0, 4);
  const sender = handles[4];
  const joined = [];
  for (const m of members) joined.push((await m.call('join', { count: 25 })).channels);
  const { start, winStart, winEnd } = window(ctx.params);
  for (let i = 0; i < 4; i++)
    await members[i].call('listen', { channels: joined[i], winStart, winEnd });
  const cpuBefore = await ctx.cpu(handles);
  const sent = await sender.call('groupLoop', { start, until: winEnd });
  await sleepUntil(winEnd + 100 * MS);
  // Every process (and the relay for cluster), from before the first groupSend to after the
  // last delivery counted, per delivery made in that time (warm-up included).
  const cpuUs = (await ctx.cpu(handles)) - cpuBefore;
  let delivered = 0;
  let deliveredSinceStart = 0;
  for (const m of members) {
    const c = await m.call('counted');
    delivered += c.count;
    deliveredSinceStart += c.before + c.count + c.after;
  }
  const lockHold = await ctx.lockHold(handles);
  await ctx.stop(handles);
  return {
    deliveriesPerSec: delivered / duration,
    cpuUsPerDelivery: cpuUs / deliveredSinceStart,
    groupSendsPerSec: sent.groupSends / sent.seconds,
    delivered,
    groupSends: sent.groupSends,
    segmentFullErrors: sent.segmentFull,
    relay: ctx.relayStats(),
    lockHold: lockHold && { fanout4x25: lockHold },
  };
}
