// W3b: the cost of one groupSend as the group grows. For each size (1 .. 10000 member channels,
// made with newChannel() in min(4, size) member processes) the sender times N back-to-back
// groupSends of a 128-byte message; then flush() empties everything before the next size. The
// members are idle during the timed loop (no receive waiting), so the figure is the sender's cost
// (for Redis: the round trip and the server's work; for cluster IPC: until the primary has routed
// all N, by an acknowledged ping after the loop). Before the timed loop, N/5 (at least 3) untimed
// groupSends warm up (JIT, first touch of shared pages). Capacity N + N/5 + 16: no member is full.
// Also: 1000 members in 1 process vs in 4 processes.
import { inBatches, now, smallMessage } from '../lib.mjs';
import { SEQ0 } from './common.mjs';

const warmupOf = (sends) => Math.max(3, Math.ceil(sends / 5));

async function addMembers({ layer, state }, { group, count }) {
  state.channels ??= [];
  while (state.channels.length < count) state.channels.push(await layer.newChannel());
  await inBatches(state.channels.slice(0, count), 200, (channel) => layer.groupAdd(group, channel));
  return { members: count };
}

async function timeGroupSends({ layer, settle }, { group, sends }) {
  const warmup = warmupOf(sends);
  for (let i = 0; i < warmup; i++) await layer.groupSend(group, smallMessage(SEQ0 + i));
  await settle();
  const t0 = now();
  for (let i = 0; i < sends; i++) await layer.groupSend(group, smallMessage(SEQ0 + warmup + i));
  await settle();
  return { ns: now() - t0 };
}

async function flush({ layer, settle }) {
  await layer.flush();
  await settle();
  return {};
}

export const roles = { addMembers, timeGroupSends, flush };

export async function coordinate(ctx) {
  const { sizes, sends } = ctx.params;
  const maxSends = Math.max(...Object.values(sends));
  const maxQueued = Math.max(...sizes.map((size) => size * (sends[size] + warmupOf(sends[size]))));
  const handles = await ctx.spawn(5, {
    capacity: maxSends + warmupOf(maxSends) + 16,
    shm: {
      size: 256 * 2 ** 20,
      maxChannels: 32768,
      maxMembers: 32768,
      maxNodes: Math.max(262144, 2 ** Math.ceil(Math.log2(maxQueued * 1.1))),
    },
  });
  const members = handles.slice(0, 4);
  const sender = handles[4];
  const configs = sizes.map((size) => ({ size, processes: Math.min(4, size) }));
  configs.push({ size: 1000, processes: 1 });
  const usPerGroupSend = {};
  const byProcesses = {};
  for (const { size, processes } of configs) {
    const group = `bench.g${size}p${processes}`;
    for (let p = 0; p < processes; p++) {
      const count = Math.floor(size / processes) + (p < size % processes ? 1 : 0);
      await members[p].call('addMembers', { group, count });
    }
    const n = sends[size];
    const { ns } = await sender.call('timeGroupSends', { group, sends: n });
    const us = ns / 1000 / n;
    ctx.log(`${size} members in ${processes} process(es): ${us.toFixed(1)} µs per groupSend`);
    if (processes === Math.min(4, size)) usPerGroupSend[size] = us;
    if (size === 1000) byProcesses[`${processes}proc`] = us;
    await sender.call('flush');
  }
  await ctx.stop(handles);
  return { usPerGroupSend, members1000: byProcesses, relay: ctx.relayStats() };
}
