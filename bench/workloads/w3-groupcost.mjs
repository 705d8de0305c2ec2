// W3b: the cost of one groupSend as the group grows. For each size (1 .. 10000 member channels,
// made with newChannel() in min(4, size) member processes) the sender times N back-to-back
// groupSends of a 128-byte message; then flush() empties everything before the next size. The
// members are idle during the timed loop (no receive waiting), so the figure is the sender's cost
// (for Redis: the round trip and the server's work; for cluster IPC: until the primary has routed
// all N, by an acknowledged ping after the loop). Before the timed loop, N/5 (at least 3) untimed
// groupSends warm up (JIT, first touch of shared pages). Capacity N + N/5 + 16: no member is full.
// Also: 1000 members in 1 process vs in 4 processes, idle and live (live: every member channel
// has a receive waiting, in a loop, during the timed groupSends, as connected consumers would;
// then the figure includes waking the member processes, and the members' work competes with
// the sender for the CPUs).
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

async function listenAll({ layer, state }, { count }) {
  state.controller = new AbortController();
  const { signal } = state.controller;
  state.received = 0;
  for (const channel of state.channels.slice(0, count)) {
    (async () => {
      for (;;) {
        try {
          await layer.receive(channel, { signal });
        } catch {
          return; // aborted or closed
        }
        state.received++;
      }
    })();
  }
  return {};
}

async function stopListening({ state }) {
  state.controller?.abort();
  return { received: state.received };
}

export const roles = { addMembers, timeGroupSends, flush, listenAll, stopListening };

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
  if (sizes.includes(1000)) {
    configs.push({ size: 1000, processes: 1, live: true });
    configs.push({ size: 1000, processes: 4, live: true });
  }
  const usPerGroupSend = {};
  const byProcesses = {};
  const live = {};
  for (const config of configs) {
    const { size, processes } = config;
    const group = `bench.g${size}p${processes}${config.live ? 'live' : ''}`;
    const counts = Array.from(
      { length: processes },
      (_, p) => Math.floor(size / processes) + (p < size % processes ? 1 : 0),
    );
    for (let p = 0; p < processes; p++)
      await members[p].call('addMembers', { group, count: counts[p] });
    if (config.live)
      for (let p = 0; p < processes; p++) await members[p].call('listenAll', { count: counts[p] });
    const n = sends[size];
    const { ns } = await sender.call('timeGroupSends', { group, sends: n });
    const us = ns / 1000 / n;
    if (config.live) for (let p = 0; p < processes; p++) await members[p].call('stopListening');
    ctx.log(
      `${size} members in ${processes} process(es)${config.live ? ', live' : ''}: ${us.toFixed(1)} µs per groupSend`,
    );
    if (config.live) live[`${processes}proc`] = us;
    else {
      if (processes === Math.min(4, size)) usPerGroupSend[size] = us;
      if (size === 1000) byProcesses[`${processes}proc`] = us;
    }
    await sender.call('flush');
  }
  await ctx.stop(handles);
  return {
    usPerGroupSend,
    members1000: byProcesses,
    members1000live: live,
    relay: ctx.relayStats(),
  };
}
