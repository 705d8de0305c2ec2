// Roles and helpers several workloads share.
import { MS, now, sendRetrying, sleepUntil, smallMessage } from '../lib.mjs';

export const SEQ0 = 0x100000; // seq values from here keep the message at 128 bytes (msgpack)

/** The measuring window of a run: starts `leadMs` from now, `warmup` s of traffic not counted. */
export function window(params, leadMs = 300) {
  const start = now() + leadMs * MS;
  const winStart = start + params.warmup * 1e9;
  const winEnd = winStart + params.duration * 1e9;
  return { start, winStart, winEnd };
}

/**
 * Consumer: one receive loop per channel (one receive waiting at a time, as a consumer's loop
 * does), counting the messages received inside [winStart, winEnd) by the shared monotonic clock.
 * Returns at once; the loops end when the layer closes.
 */
async function listen({ layer, state }, { channels, winStart, winEnd }) {
  state.count = 0;
  state.after = 0;
  state.before = 0;
  for (const channel of channels) {
    (async () => {
      for (;;) {
        try {
          await layer.receive(channel);
        } catch {
          return; // closed
        }
        const t = now();
        if (t >= winEnd) state.after++;
        else if (t >= winStart) state.count++;
        else state.before++;
      }
    })();
  }
  return { listening: channels.length };
}

async function counted({ state }) {
  return { count: state.count, after: state.after, before: state.before };
}

/** Producer: sends 128-byte messages to `channel` from `start` until `until` (retrying when full). */
async function produce({ layer }, { channel, start, until }) {
  await sleepUntil(start);
  const counters = { full: 0 };
  let seq = SEQ0;
  for (;;) {
    if ((seq & 63) === 0 && now() >= until) break;
    await sendRetrying(layer, channel, smallMessage(seq++), counters);
  }
  return { sent: seq - SEQ0, fullRetries: counters.full };
}

/** The shm layer's segment figures (undefined for the other backends). */
async function layerStats({ layer }) {
  if (typeof layer.stats !== 'function') return undefined;
  const s = layer.stats(10);
  return {
    segmentBytes: s.segmentBytes,
    shmBytes: s.shmBytes,
    arenaBytes: s.arenaBytes,
    arenaUsedBytes: s.arenaUsedBytes,
    channels: s.channels,
    groups: s.groups,
    members: s.members,
    queued: s.queued,
    processes: s.processes,
  };
}

export const commonRoles = { listen, counted, produce, layerStats };
