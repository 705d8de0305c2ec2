// W5a scale: 1, 2, 4, 8 producer processes sending 128-byte messages into one named channel
// (capacity 10000, retry after a yield when full), one consumer process counting deliveries in
// the measuring window. One set of processes serves all levels (idle producers just wait); each
// level uses a channel of its own.
import { MS, sleepUntil } from '../lib.mjs';
import { commonRoles, window } from './common.mjs';

export const roles = { ...commonRoles };

export async function coordinate(ctx) {
  const { producers: levels, duration } = ctx.params;
  const max = Math.max(...levels);
  const handles = await ctx.spawn(1 + max, { capacity: 10000 });
  const consumer = handles[0];
  const producers = handles.slice(1);
  const msgsPerSec = {};
  const fullRetries = {};
  let lockHold;
  for (const n of levels) {
    const channel = `bench.w5.p${n}`;
    // Lock hold times of the most contended level only: counters start from zero before it.
    if (n === max) await ctx.lockHold(handles, { reset: true });
    const { start, winStart, winEnd } = window(ctx.params);
    await consumer.call('listen', { channels: [channel], winStart, winEnd });
    const produced = await Promise.all(
      producers.slice(0, n).map((p) => p.call('produce', { channel, start, until: winEnd })),
    );
    fullRetries[`${n}p`] = produced.reduce((sum, r) => sum + r.fullRetries, 0);
    await sleepUntil(winEnd + 100 * MS);
    const { count } = await consumer.call('counted');
    msgsPerSec[`${n}p`] = count / duration;
    ctx.log(`${n} producer(s): ${Math.round(count / duration).toLocaleString('en-US')} msg/s`);
    if (n === max) lockHold = await ctx.lockHold(handles);
  }
  await ctx.stop(handles);
  return { msgsPerSec, fullRetries, lockHold: lockHold && { [`${max}p`]: lockHold } };
}
