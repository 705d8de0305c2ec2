// A bench worker: a node:cluster worker started by bench/host.mjs. It holds one layer of the
// measurement's backend and runs the roles of the workload (bench/workloads/<name>.mjs) that the
// host calls. With the inmemory backend one worker runs every role of the measurement ("virtual"
// workers vid 0..n-1 sharing its one layer).
import cluster from 'node:cluster';
import { createLayer, settle } from './backends.mjs';
import { maxRssMB } from './lib.mjs';

const workload = await import(
  new URL(`./workloads/${process.env.BENCH_WORKLOAD}.mjs`, import.meta.url).href
);
const roles = workload.roles ?? {};
let layer;
let backend;
const states = new Map();

async function call(vid, fn, args) {
  switch (fn) {
    case 'init':
      if (!layer) {
        backend = args.backend;
        layer = createLayer(backend, args.layerOptions);
      }
      return { pid: process.pid };
    case 'close':
      if (layer) {
        const l = layer;
        layer = undefined;
        await l.close();
      }
      // With BENCH_CPU_PROF the process must exit by itself for --cpu-prof to write its profile.
      if (process.env.BENCH_CPU_PROF) setTimeout(() => process.exit(0), 100);
      return { maxRssMB: maxRssMB() };
    case 'cpu': {
      // CPU time of this process so far (µs): the host sums it over the processes of a role set.
      const { user, system } = process.cpuUsage();
      return { us: user + system };
    }
    case 'lockHold':
      // shm only: this process's segment lock hold times per operation (null for other backends).
      return layer?.lockHoldStats?.({ reset: args.reset === true }) ?? null;
    case 'rss':
      return { maxRssMB: maxRssMB(), rssMB: process.memoryUsage().rss / 1e6 };
    default: {
      const role = roles[fn];
      if (!role) throw new Error(`workload ${process.env.BENCH_WORKLOAD} has no role ${fn}`);
      let state = states.get(vid);
      if (!state) states.set(vid, (state = {}));
      return role({ layer, backend, state, vid, settle: () => settle(layer) }, args);
    }
  }
}

function reply(message) {
  if (process.connected) process.send(message);
}
// A reply racing the host's exit (^C, a killed host) fails with EPIPE: nobody is left to tell.
cluster.worker?.on('error', () => {});
process.on('message', (/** @type {any} */ m) => {
  if (m === null || typeof m !== 'object' || m.bench !== 'call') return;
  call(m.vid, m.fn, m.args).then(
    (value) => reply({ bench: 'reply', id: m.id, value }),
    (error) => reply({ bench: 'reply', id: m.id, error: String(error?.stack ?? error) }),
  );
});
process.on('unhandledRejection', (/** @type {any} */ error) => {
  // A receive loop that ends with LayerClosed after close() is expected; anything else is a bug.
  if (error?.name === 'LayerClosed' || error?.name === 'AbortError') return;
  console.error(`[bench worker ${process.pid}] unhandled rejection:`, error);
  process.exit(1);
});
// The host is gone (finished, killed, crashed): so are we.
process.on('disconnect', () => process.exit(0));
process.send({ bench: 'ready' });
