// One measurement (one workload x one backend) in a fresh process, forked by bench/run.mjs. It is
// the node:cluster primary of the measurement's workers (and, for the cluster backend, the relay
// that routes their messages), runs the workload's `coordinate(ctx)`, sends the result back and
// exits. Whatever happens, its workers are killed and its shm segments destroyed on the way out.
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ShmChannelLayer } from '../dist/esm/index.mjs';
import { IpcRelay } from './backends.mjs';
import { maxRssMB, mergeLockHold, now } from './lib.mjs';
import { redisFlushAll, redisInfo } from './redis-server.mjs';

const workers = new Set();
const shmNames = new Set();

function cleanup() {
  for (const w of workers) {
    try {
      w.process.kill('SIGKILL');
    } catch {}
  }
  workers.clear();
  for (const name of shmNames) {
    try {
      ShmChannelLayer.destroy(name);
    } catch {}
  }
  shmNames.clear();
}
process.on('exit', cleanup);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    cleanup();
    process.exit(1);
  });
}
process.on('disconnect', () => {
  // The orchestrator went away (or killed us): nothing left to report to.
  cleanup();
  process.exit(1);
});

const job = await new Promise((resolve) => process.once('message', resolve));
const { workload, backend, params, redisUrl, redisPid, tag, ipcSerialization } = job;
const module = await import(new URL(`./workloads/${workload}.mjs`, import.meta.url).href);

cluster.setupPrimary({
  exec: fileURLToPath(new URL('./worker.mjs', import.meta.url)),
  // Node's default ('json'), as cluster adapters use it, unless the workload needs Buffer values
  // to survive (W4: 'advanced', the V8 structured clone). BENCH_IPC_SERIALIZATION overrides.
  serialization: process.env.BENCH_IPC_SERIALIZATION ?? ipcSerialization ?? 'json',
  silent: false,
  // W5b measures heap growth after gc(). BENCH_CPU_PROF=<dir>: a V8 CPU profile of every worker.
  execArgv: [
    '--expose-gc',
    ...(process.env.BENCH_CPU_PROF
      ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_CPU_PROF]
      : []),
  ],
});

const relays = [];
let spawnCount = 0;
let callId = 1;

class Handle {
  constructor(physical, vid) {
    this.physical = physical;
    this.vid = vid;
  }
  get pid() {
    return this.physical.worker.process.pid;
  }
  call(fn, args = {}) {
    return this.physical.call(this.vid, fn, args);
  }
}

class Physical {
  constructor(worker) {
    this.worker = worker;
    this.pending = new Map();
    this.relay = undefined; // the cluster backend's relay of this worker's spawn
    this.exited = false;
    worker.on('message', (m) => {
      if (m === null || typeof m !== 'object') return;
      if (m.ipc !== undefined) {
        this.relay?.handle(worker, m);
        return;
      }
      if (m.bench === 'reply') {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (!p) return;
        if (m.error !== undefined) p.reject(new Error(`worker ${worker.process.pid}: ${m.error}`));
        else p.resolve(m.value);
      }
    });
    worker.on('exit', (code, signal) => {
      this.exited = true;
      workers.delete(worker);
      for (const p of this.pending.values())
        p.reject(new Error(`worker ${worker.process.pid} exited (${code ?? signal})`));
      this.pending.clear();
    });
  }
  call(vid, fn, args) {
    const id = callId++;
    if (this.exited || !this.worker.isConnected()) {
      return Promise.reject(new Error(`worker ${this.worker.process.pid} is gone (call ${fn})`));
    }
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.send({ bench: 'call', id, vid, fn, args });
    });
  }
}

function forkWorker() {
  const worker = cluster.fork({ BENCH_WORKLOAD: workload });
  workers.add(worker);
  // A send to a worker the host has just stopped fails with ERR_IPC_CHANNEL_CLOSED: harmless.
  worker.on('error', (/** @type {any} */ error) => {
    if (error?.code !== 'ERR_IPC_CHANNEL_CLOSED') ctx.log(`worker ${worker.process.pid}: ${error}`);
  });
  const physical = new Physical(worker);
  return new Promise((resolve, reject) => {
    const onExit = (code, signal) =>
      reject(new Error(`worker exited during start (${code ?? signal})`));
    worker.once('exit', onExit);
    worker.on('message', function ready(m) {
      if (m?.bench !== 'ready') return;
      worker.off('message', ready);
      worker.off('exit', onExit);
      resolve(physical);
    });
  });
}

const ctx = {
  backend,
  params,
  now,
  log(text) {
    process.send({ progress: text });
  },
  /**
   * Starts `count` role processes sharing one fresh layer (for inmemory: one process running
   * `count` roles). `layer`: {capacity, shm: {size, maxChannels, ...}}. Returns handles with
   * `.call(role, args)` and `.pid`.
   */
  async spawn(count, layer = {}) {
    const n = ++spawnCount;
    const layerOptions = { capacity: layer.capacity ?? 10000 };
    if (backend === 'shm') {
      const name = `bench-${tag}-${n}`;
      ShmChannelLayer.destroy(name);
      shmNames.add(name);
      layerOptions.shm = { name, ...(layer.shm ?? {}) };
      ctx.shmName = name;
    }
    if (backend === 'redis') layerOptions.redis = { url: redisUrl, prefix: `bench${tag}.${n}:` };
    const physicalCount = backend === 'inmemory' ? 1 : count;
    const physicals = await Promise.all(Array.from({ length: physicalCount }, forkWorker));
    if (backend === 'cluster') {
      // A fresh relay for every spawn, as every spawn has a fresh layer.
      const relay = new IpcRelay({ capacity: layerOptions.capacity });
      relays.push(relay);
      for (const p of physicals) {
        p.relay = relay;
        relay.attach(p.worker);
      }
    }
    // One after the other: the first creates the shm segment, the others attach.
    for (const p of physicals) await p.call(0, 'init', { backend, layerOptions });
    return Array.from({ length: count }, (_, i) =>
      backend === 'inmemory' ? new Handle(physicals[0], i) : new Handle(physicals[i], 0),
    );
  },
  /** Closes the layers of `handles` and stops their processes; returns their peak RSS (MB). */
  async stop(handles) {
    const seen = new Set();
    const rss = [];
    for (const h of handles) {
      if (seen.has(h.physical)) continue;
      seen.add(h.physical);
      const { maxRssMB } = await h.call('close');
      rss.push(maxRssMB);
      if (process.env.BENCH_CPU_PROF && !h.physical.exited) {
        await new Promise((resolve) => {
          h.physical.worker.once('exit', resolve);
          setTimeout(resolve, 10_000);
        });
      }
      h.physical.worker.process.kill('SIGKILL');
      workers.delete(h.physical.worker);
    }
    if (backend === 'redis') await redisFlushAll(redisUrl);
    return rss;
  },
  /**
   * CPU time (µs) used so far by the processes of `handles`, plus what carries their messages
   * besides: the relay (this process) for cluster, redis-server for redis. Two readings give the
   * CPU a measurement cost, for CPU per message beside speed.
   */
  async cpu(handles) {
    let us = 0;
    const seen = new Set();
    for (const h of handles) {
      if (seen.has(h.physical)) continue;
      seen.add(h.physical);
      us += (await h.call('cpu')).us;
    }
    if (backend === 'cluster') {
      const { user, system } = process.cpuUsage();
      us += user + system;
    }
    if (backend === 'redis' && redisPid) {
      try {
        // utime and stime, fields 14 and 15 of /proc/<pid>/stat, in clock ticks (100 per second).
        const fields = readFileSync(`/proc/${redisPid}/stat`, 'utf8').split(') ')[1].split(' ');
        us += ((Number(fields[11]) + Number(fields[12])) * 1e6) / 100;
      } catch {}
    }
    return us;
  },
  /**
   * shm only: how long the processes of `handles` held the segment lock, per operation kind,
   * merged (bench/lib.mjs mergeLockHold). `reset`: their counters start again from zero after.
   */
  async lockHold(handles, { reset = false } = {}) {
    if (backend !== 'shm') return undefined;
    const seen = new Set();
    const list = [];
    for (const h of handles) {
      if (seen.has(h.physical)) continue;
      seen.add(h.physical);
      list.push(await h.call('lockHold', { reset }));
    }
    return mergeLockHold(list);
  },
  async redisInfo() {
    return backend === 'redis' ? redisInfo(redisUrl) : undefined;
  },
  /**
   * shm only: attaches to the segment of the last spawn and samples its use every `ms` until the
   * returned function is called, which resolves to the peaks (arena bytes in use, messages queued).
   */
  shmSampler(ms = 100) {
    if (backend !== 'shm') return async () => undefined;
    const layer = new ShmChannelLayer({ name: ctx.shmName, create: false });
    const peak = { arenaUsedBytes: 0, shmBytes: 0, queued: 0, samples: 0 };
    const timer = setInterval(() => {
      const s = layer.stats(1);
      peak.arenaUsedBytes = Math.max(peak.arenaUsedBytes, s.arenaUsedBytes);
      peak.shmBytes = Math.max(peak.shmBytes, s.shmBytes ?? 0);
      peak.queued = Math.max(peak.queued, s.queued);
      peak.samples++;
    }, ms);
    return async () => {
      clearInterval(timer);
      await layer.close();
      return peak;
    };
  },
  relayStats() {
    if (relays.length === 0) return undefined;
    return {
      dropped: relays.reduce((sum, r) => sum + r.dropped, 0),
      routed: relays.reduce((sum, r) => sum + r.routed, 0),
    };
  },
  hostMaxRssMB: maxRssMB,
};

let reply;
try {
  reply = { result: await module.coordinate(ctx) };
} catch (error) {
  reply = { error: String(error?.stack ?? error) };
}
cleanup();
process.send(reply, () => process.exit(0));
