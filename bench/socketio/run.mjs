#!/usr/bin/env node
// The Socket.IO workload (issue 12): WORKERS socket.io servers in cluster workers, CLIENTS
// websocket clients in a separate load process, rooms of CLIENTS / ROOMS members spread over the
// workers; every worker broadcasts to random rooms at a fixed rate, then as fast as it can.
// Adapters: this package's (shm), @socket.io/cluster-adapter, @socket.io/redis-adapter (on a
// throwaway redis-server) and socket.io's in-memory adapter with each worker reaching only its
// own clients (the ceiling: no cross-worker delivery at all). Results: deliveries/s at the
// clients, p50/p99 delivery latency, and CPU per 1,000 deliveries of every process involved
// (servers, cluster primary, load process, redis-server), medians over the repetitions.
//
//   node bench/socketio/run.mjs [--quick] [--reps N] [--adapters local,shm,cluster,redis] [--json FILE]
//                               [--prime-ms N]
import { fork } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ShmChannelLayer } from '../../dist/esm/index.mjs';
import { RedisServer } from '../redis-server.mjs';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    reps: { type: 'string' },
    adapters: { type: 'string' },
    json: { type: 'string' },
    'prime-ms': { type: 'string' },
  },
});
const WORKERS = 4;
const CLIENTS = 400;
const ROOMS = 40;
const FIXED_RATE = 250; // room broadcasts per second per worker: 1,000/s offered, 10 members each
const WARMUP_MS = args.quick ? 300 : 1000;
// Before anything is measured, the servers broadcast at PRIME_RATE for PRIME_MS, so that V8 has
// optimized every adapter's hot path: after only WARMUP_MS at the fixed rate it was still
// compiling during the fixed-rate window (--trace-opt: 282 functions optimized in an 8 s window
// with shm, 154 with the cluster adapter; perf: a fifth of the shm workers' CPU in compiler
// threads), which measured the warm-up rather than a server that has been running.
const PRIME_RATE = FIXED_RATE * 4;
const PRIME_MS = Number(args['prime-ms'] ?? (args.quick ? 500 : 2000));
const WINDOW_MS = args.quick ? 1500 : 5000;
const reps = Number(args.reps ?? (args.quick ? 1 : 3));
const adapters = (args.adapters ?? 'local,shm,cluster,redis').split(',');
const here = (file) => fileURLToPath(new URL(file, import.meta.url));
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

function rpc(child) {
  let nextId = 1;
  const waiting = new Map();
  child.on('message', (message) => {
    if (message?.id && waiting.has(message.id)) {
      waiting.get(message.id)(message.result);
      waiting.delete(message.id);
    }
  });
  return (op, extra = {}) =>
    new Promise((resolve) => {
      const id = nextId++;
      waiting.set(id, resolve);
      child.send({ id, op, ...extra });
    });
}

const once = (child, key) =>
  new Promise((resolve, reject) => {
    child.on('message', (message) => message?.[key] && resolve(message));
    child.once('exit', (code) => reject(new Error(`${key}: child exited (${code})`)));
  });

/** CPU µs of another process (redis-server) from /proc. */
function processCpu(pid) {
  if (!pid) return 0;
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return ((Number(fields[11]) + Number(fields[12])) / CLK_TCK) * 1e6;
}

async function measure(adapter, redis) {
  const layer = `bench-sio-${process.pid}-${adapter}`;
  const env = {
    ...process.env,
    SIO_BENCH_ADAPTER: adapter,
    SIO_BENCH_WORKERS: String(WORKERS),
    SIO_BENCH_ROOMS: String(ROOMS),
    SIO_BENCH_LAYER: layer,
    SIO_BENCH_REDIS: redis?.url ?? '',
  };
  const server = fork(here('./server.mjs'), [], { env, stdio: 'inherit' });
  const children = [server];
  try {
    const { ports } = await once(server, 'ready');
    const load = fork(here('./load.mjs'), [], {
      env: { ...env, SIO_BENCH_PORTS: ports.join(','), SIO_BENCH_CLIENTS: String(CLIENTS) },
      stdio: 'inherit',
    });
    children.push(load);
    await once(load, 'connected');
    const serverCall = rpc(server);
    const loadCall = rpc(load);
    const results = {};
    if (PRIME_MS > 0) await serverCall('emit', { rate: PRIME_RATE, ms: PRIME_MS });
    for (const [mode, rate] of [
      ['fixed', FIXED_RATE],
      ['full', 0],
    ]) {
      await serverCall('emit', { rate, ms: WARMUP_MS });
      const cpuServers0 = await serverCall('cpu');
      const redis0 = processCpu(redis?.pid);
      const start = await loadCall('start');
      const emitted = await serverCall('emit', { rate, ms: WINDOW_MS });
      const stop = await loadCall('stop');
      const adapterStats = await serverCall('stats');
      const cpuServers1 = await serverCall('cpu');
      const cpuWorkers = cpuServers1.workers - cpuServers0.workers;
      const cpuPrimary = cpuServers1.primary - cpuServers0.primary;
      const cpuLoad = stop.cpu - start.cpu;
      const cpuRedis = processCpu(redis?.pid) - redis0;
      const seconds = (stop.at - start.at) / 1000;
      const cpuMs = (cpuWorkers + cpuPrimary + cpuLoad + cpuRedis) / 1000;
      const per1000 = (us) => (us / 1000 / stop.delivered) * 1000;
      results[mode] = {
        emitsPerSecond: emitted / seconds,
        deliveredPerSecond: stop.delivered / seconds,
        p50Ms: stop.p50,
        p99Ms: stop.p99,
        // The p99's sample count, its parts (deliveries to the sender's own clients and ones
        // relayed by the adapter), and how much of its slowest 1% one 100 ms stretch holds.
        samples: stop.samples,
        localP50Ms: stop.local.p50,
        localP99Ms: stop.local.p99,
        relayedP50Ms: stop.relayed.p50,
        relayedP99Ms: stop.relayed.p99,
        slowInWorst100Ms: stop.slowInWorst100Ms,
        cpuMsPer1000: (cpuMs / stop.delivered) * 1000,
        cpuMsPerSecond: cpuMs / seconds,
        // Where that CPU went: the socket.io workers, the cluster primary (the cluster adapter's
        // relay), the clients' load process, and redis-server.
        workersCpuMsPer1000: per1000(cpuWorkers),
        primaryCpuMsPer1000: per1000(cpuPrimary),
        loadCpuMsPer1000: per1000(cpuLoad),
        redisCpuMsPer1000: per1000(cpuRedis),
        // shm only: envelopes per layer message (cumulative since the servers started)
        ...(adapterStats?.[0]?.batches
          ? {
              envelopesPerBatch:
                adapterStats.reduce((n, s) => n + s.sent, 0) /
                adapterStats.reduce((n, s) => n + s.batches, 0),
            }
          : {}),
      };
      // Let what is still queued drain before the next mode.
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    return results;
  } finally {
    for (const child of children.reverse())
      child.kill(process.env.SIO_BENCH_PROFILE ? 'SIGTERM' : 'SIGKILL');
    if (adapter === 'shm') {
      await new Promise((resolve) => setTimeout(resolve, 200));
      ShmChannelLayer.destroy(layer);
    }
  }
}

const ms = (value) => (Number.isFinite(value) ? value.toFixed(1) : '-');

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
console.log(
  `Socket.IO workload: ${WORKERS} workers, ${CLIENTS} websocket clients in a load process, ${ROOMS} rooms of ${CLIENTS / ROOMS}; ${cpu}, ${os.cpus().length} cores; ${reps} rep(s) of ${WINDOW_MS} ms`,
);
const redis = adapters.includes('redis') ? await RedisServer.start() : undefined;
const samples = Object.fromEntries(adapters.map((a) => [a, []]));
try {
  for (let rep = 0; rep < reps; rep++) {
    for (const adapter of adapters) {
      const result = await measure(adapter, redis);
      samples[adapter].push(result);
      console.log(
        `rep ${rep + 1} ${adapter.padEnd(7)} fixed ${result.fixed.deliveredPerSecond.toFixed(0)}/s p50 ${result.fixed.p50Ms.toFixed(2)} p99 ${result.fixed.p99Ms.toFixed(1)} ms (relayed ${ms(result.fixed.relayedP99Ms)}, local ${ms(result.fixed.localP99Ms)}; ${(result.fixed.slowInWorst100Ms * 100).toFixed(0)}% of the slowest 1% within 100 ms; CPU/1k ${result.fixed.cpuMsPer1000.toFixed(1)} ms: workers ${result.fixed.workersCpuMsPer1000.toFixed(1)}, primary ${result.fixed.primaryCpuMsPer1000.toFixed(1)}, load ${result.fixed.loadCpuMsPer1000.toFixed(1)}) | full ${result.full.deliveredPerSecond.toFixed(0)}/s ${result.full.cpuMsPer1000.toFixed(2)} ms CPU/1k` +
          (result.full.envelopesPerBatch
            ? ` (${result.full.envelopesPerBatch.toFixed(1)} envelopes per layer message)`
            : ''),
      );
    }
  }
} finally {
  await redis?.dispose?.();
}

const summary = {};
for (const adapter of adapters) {
  summary[adapter] = {};
  for (const mode of ['fixed', 'full']) {
    const keys = Object.keys(samples[adapter][0][mode]);
    summary[adapter][mode] = Object.fromEntries(
      keys.map((k) => [k, median(samples[adapter].map((s) => s[mode][k]))]),
    );
  }
}
const ceiling = summary.local;
const names = {
  local: 'in-memory, own clients only (ceiling)',
  shm: 'shm-channels/socket.io',
  cluster: '@socket.io/cluster-adapter',
  redis: '@socket.io/redis-adapter',
};
console.log('\nmedians');
console.log(
  'adapter                                | fixed: deliv/s  p50 ms  p99 ms  CPU ms/1k | full: deliv/s  x ceiling  CPU ms/1k  above ceiling',
);
for (const adapter of adapters) {
  const { fixed, full } = summary[adapter];
  const ratio = ceiling
    ? (full.deliveredPerSecond / ceiling.full.deliveredPerSecond).toFixed(2)
    : '-';
  const own = ceiling ? (full.cpuMsPer1000 - ceiling.full.cpuMsPer1000).toFixed(2) : '-';
  console.log(
    `${names[adapter].padEnd(38)} | ${fixed.deliveredPerSecond.toFixed(0).padStart(13)} ${fixed.p50Ms.toFixed(2).padStart(7)} ${fixed.p99Ms.toFixed(2).padStart(7)} ${fixed.cpuMsPer1000.toFixed(2).padStart(10)} | ${full.deliveredPerSecond.toFixed(0).padStart(12)} ${ratio.padStart(10)} ${full.cpuMsPer1000.toFixed(2).padStart(10)} ${own.padStart(14)}`,
  );
}
if (summary.shm && summary.cluster && ceiling) {
  const ownShm = summary.shm.full.cpuMsPer1000 - ceiling.full.cpuMsPer1000;
  const ownCluster = summary.cluster.full.cpuMsPer1000 - ceiling.full.cpuMsPer1000;
  console.log(
    `\ntargets: throughput >= 0.9x ceiling: ${(summary.shm.full.deliveredPerSecond / ceiling.full.deliveredPerSecond).toFixed(2)}x; own CPU <= 1/3 of cluster adapter's: ${ownShm.toFixed(2)} vs ${ownCluster.toFixed(2)} ms/1k (${(ownShm / ownCluster).toFixed(2)}x); fixed-rate p99 <= cluster's: ${summary.shm.fixed.p99Ms.toFixed(2)} vs ${summary.cluster.fixed.p99Ms.toFixed(2)} ms`,
  );
}
if (args.json)
  writeFileSync(
    args.json,
    JSON.stringify(
      {
        cpu,
        cores: os.cpus().length,
        node: process.version,
        date: new Date().toISOString(),
        params: {
          WORKERS,
          CLIENTS,
          ROOMS,
          FIXED_RATE,
          WARMUP_MS,
          PRIME_RATE,
          PRIME_MS,
          WINDOW_MS,
          reps,
        },
        samples,
        summary,
      },
      null,
      2,
    ),
  );
