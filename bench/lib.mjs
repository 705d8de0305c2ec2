// Small helpers shared by the orchestrator, the hosts, the workers and the workloads.
import { setTimeout as sleepMs } from 'node:timers/promises';
import { ChannelFull } from '../dist/esm/index.mjs';

/** CLOCK_MONOTONIC in nanoseconds, as a Number: one clock for every process on the machine. */
export function now() {
  return Number(process.hrtime.bigint());
}

export const MS = 1e6; // nanoseconds per millisecond

/** Sleeps until the monotonic clock reaches `at` (ns). */
export async function sleepUntil(at) {
  const ms = (at - now()) / MS;
  if (ms > 0) await sleepMs(ms);
}

export const sleep = sleepMs;

export const yieldMacrotask = () => new Promise((resolve) => setImmediate(resolve));

// A ~128-byte message (msgpack: 128 bytes for seq >= 65536) of the shape users send.
const PAYLOAD = 'x'.repeat(87);
export function smallMessage(seq) {
  return { type: 'bench.message', seq, payload: PAYLOAD };
}

export function median(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/** Nearest-rank percentile of a sorted array. */
export function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** Peak resident set of this process, in MB (resourceUsage().maxRSS is in KiB). */
export function maxRssMB() {
  return (process.resourceUsage().maxRSS * 1024) / 1e6;
}

/** ChannelFull, or its subclass SegmentFull (the shm arena has no room right now). */
export function isChannelFull(error) {
  return error instanceof ChannelFull;
}

// Diagnostics only (bench/README.md): BENCH_FULL_BACKOFF_MS=1 makes producers sleep 1 ms after a
// ChannelFull instead of the default short yield (setImmediate).
const FULL_BACKOFF_MS = Number(process.env.BENCH_FULL_BACKOFF_MS ?? 0);

/** send() with the retry every producer uses: on ChannelFull, yield to the event loop and retry. */
export async function sendRetrying(layer, channel, message, counters) {
  for (;;) {
    try {
      await layer.send(channel, message);
      return;
    } catch (error) {
      if (!isChannelFull(error)) throw error;
      if (counters) counters.full++;
      if (FULL_BACKOFF_MS > 0) await sleepMs(FULL_BACKOFF_MS);
      else await yieldMacrotask();
    }
  }
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function inBatches(items, limit, fn) {
  for (let i = 0; i < items.length; i += limit) {
    await Promise.all(items.slice(i, i + limit).map(fn));
  }
}

/**
 * Merges layer.lockHoldStats() of several processes: per operation kind, the buckets summed, then
 * p50/p99 read from the merged buckets (their upper edges, capped at the maximum, as the core
 * does). Kinds nobody used are left out.
 */
export function mergeLockHold(list) {
  const merged = {};
  for (const stats of list) {
    for (const [kind, op] of Object.entries(stats ?? {})) {
      if (!op.count) continue;
      const m = (merged[kind] ??= { count: 0, maxNs: 0, totalNs: 0, buckets: new Map() });
      m.count += op.count;
      m.maxNs = Math.max(m.maxNs, op.maxNs);
      m.totalNs += op.totalNs;
      for (const [edge, n] of op.buckets) m.buckets.set(edge, (m.buckets.get(edge) ?? 0) + n);
    }
  }
  const at = (m, fraction) => {
    const rank = Math.max(1, Math.ceil(fraction * m.count));
    let seen = 0;
    for (const [edge, n] of [...m.buckets].sort((a, b) => a[0] - b[0])) {
      seen += n;
      if (seen >= rank) return Math.min(edge, m.maxNs);
    }
    return m.maxNs;
  };
  return Object.fromEntries(
    Object.entries(merged).map(([kind, m]) => [
      kind,
      {
        count: m.count,
        p50Ns: at(m, 0.5),
        p99Ns: at(m, 0.99),
        maxNs: m.maxNs,
        meanNs: m.totalNs / m.count,
      },
    ]),
  );
}
