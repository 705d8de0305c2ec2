// Socket.IO servers for the bench: a node:cluster primary with WORKERS workers, each a socket.io
// server on a port of its own (so the load process spreads its clients evenly and knows where
// each one is). SIO_BENCH_ADAPTER picks the adapter:
//   shm      shm-channels/socket.io on a ShmChannelLayer (SIO_BENCH_LAYER)
//   cluster  @socket.io/cluster-adapter (the primary relays through setupPrimary())
//   redis    @socket.io/redis-adapter on the bench's redis-server (SIO_BENCH_REDIS)
//   local    socket.io's in-memory adapter: each worker reaches only its own clients (the ceiling)
// The orchestrator (run.mjs) talks to the primary over IPC: { id, op: 'emit' | 'cpu', ... }.
import cluster from 'node:cluster';
import { createServer } from 'node:http';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';

const kind = process.env.SIO_BENCH_ADAPTER;
const workers = Number(process.env.SIO_BENCH_WORKERS ?? 4);
const rooms = Number(process.env.SIO_BENCH_ROOMS ?? 40);
const index = Number(process.env.SIO_BENCH_INDEX ?? 0);

if (cluster.isPrimary) {
  if (kind === 'cluster') (await import('@socket.io/cluster-adapter')).setupPrimary();
  // SIO_BENCH_PROFILE=<dir>: workers write V8 CPU profiles there when they exit.
  if (process.env.SIO_BENCH_PROFILE)
    cluster.setupPrimary({
      execArgv: ['--cpu-prof', `--cpu-prof-dir=${process.env.SIO_BENCH_PROFILE}`],
    });
  const forked = [];
  const ports = [];
  let nextId = 1;
  const waiting = new Map();
  const call = (worker, op, args = {}) =>
    new Promise((resolve) => {
      const id = nextId++;
      waiting.set(id, resolve);
      worker.send({ benchId: id, op, ...args });
    });
  for (let i = 0; i < workers; i++) {
    const worker = cluster.fork({ SIO_BENCH_INDEX: String(i) });
    forked.push(worker);
    worker.on('message', (message) => {
      if (message?.benchReady) {
        ports[i] = message.port;
        if (ports.filter(Boolean).length === workers)
          process.send({ ready: true, ports, pids: forked.map((w) => w.process.pid) });
      } else if (message?.benchId) {
        waiting.get(message.benchId)?.(message.result);
        waiting.delete(message.benchId);
      }
    });
  }
  process.on('message', async ({ id, op, ...args }) => {
    if (op === 'emit') {
      const results = await Promise.all(forked.map((worker) => call(worker, 'emit', args)));
      process.send({ id, result: results.reduce((sum, r) => sum + r, 0) });
    } else if (op === 'stats') {
      const results = await Promise.all(forked.map((worker) => call(worker, 'stats')));
      process.send({ id, result: results });
    } else if (op === 'cpu') {
      // µs of CPU (user + system) of the primary and of the workers together.
      const own = process.cpuUsage();
      const results = await Promise.all(forked.map((worker) => call(worker, 'cpu')));
      const workers = results.reduce((sum, r) => sum + r, 0);
      process.send({ id, result: { primary: own.user + own.system, workers } });
    }
  });
  process.on('disconnect', () => {
    for (const worker of forked) worker.kill(process.env.SIO_BENCH_PROFILE ? 'SIGTERM' : 'SIGKILL');
    process.exit(0);
  });
} else {
  const { Server } = await import('socket.io');
  const http = createServer();
  const io = new Server(http, { transports: ['websocket'] });
  if (kind === 'shm') {
    const { createAdapter } = await import('shm-channels/socket.io');
    io.adapter(
      createAdapter({
        name: process.env.SIO_BENCH_LAYER,
        ...JSON.parse(process.env.SIO_BENCH_SHM_OPTIONS ?? '{}'),
      }),
    );
  } else if (kind === 'cluster') {
    const { createAdapter } = await import('@socket.io/cluster-adapter');
    io.adapter(createAdapter());
  } else if (kind === 'redis') {
    const { createAdapter } = await import('@socket.io/redis-adapter');
    const { Redis } = await import('ioredis');
    const pub = new Redis(process.env.SIO_BENCH_REDIS);
    io.adapter(createAdapter(pub, pub.duplicate()));
  }
  io.on('connection', (socket) => socket.join(`room-${socket.handshake.auth.room}`));
  process.on('SIGTERM', () => process.exit(0));
  // How late this worker's event loop ran between two 'stats' calls (a worker blocked in a
  // layer call, or off its CPU, delays its own clients' deliveries too).
  const loopDelay = monitorEventLoopDelay({ resolution: 1 });
  loopDelay.enable();

  /** Room broadcasts to random rooms for `ms`: `rate` per second, or as fast as possible (0). */
  function emit({ rate, ms }) {
    return new Promise((resolve) => {
      const until = performance.now() + ms;
      let emitted = 0;
      const one = () => {
        const room = Math.floor(Math.random() * rooms);
        // The sender's index lets the load process tell local deliveries from relayed ones.
        io.to(`room-${room}`).emit('m', performance.timeOrigin + performance.now(), index);
        emitted++;
      };
      if (rate === 0) {
        const burst = () => {
          for (let i = 0; i < 20; i++) one();
          if (performance.now() < until) setImmediate(burst);
          else resolve(emitted);
        };
        burst();
        return;
      }
      const started = performance.now();
      const timer = setInterval(() => {
        const now = performance.now();
        const due = Math.floor(((now - started) / 1000) * rate);
        while (emitted < due) one();
        if (now >= until) {
          clearInterval(timer);
          resolve(emitted);
        }
      }, 5);
    });
  }

  process.on('message', async (/** @type {any} */ message) => {
    if (!message?.benchId) return;
    let result;
    if (message.op === 'emit') result = await emit(message);
    else if (message.op === 'stats') {
      const adapter = /** @type {any} */ (io.of('/').adapter);
      result = {
        ...(adapter.stats?.() ?? {}),
        loopDelayP99Ms: loopDelay.percentile(99) / 1e6,
        loopDelayMaxMs: loopDelay.max / 1e6,
      };
      loopDelay.reset();
      // shm: the segment lock's holds of this worker since the last 'stats' (then zeroed).
      const holds = adapter.layer?.lockHoldStats?.({ reset: true });
      if (holds) {
        result.lockHolds = Object.fromEntries(
          Object.entries(holds)
            .filter(([, op]) => op.count > 0)
            .map(([kind, op]) => [
              kind,
              {
                count: op.count,
                p99Ns: op.p99Ns,
                maxNs: op.maxNs,
                totalNs: op.totalNs,
                // holds whose bucket lies above 1 ms: a holder that lost its CPU, most likely
                over1Ms: op.buckets.filter(([edge]) => edge > 1e6).reduce((n, [, c]) => n + c, 0),
              },
            ]),
        );
      }
    } else if (message.op === 'cpu') {
      const usage = process.cpuUsage();
      result = usage.user + usage.system;
    }
    process.send({ benchId: message.benchId, result });
  });
  http.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () =>
    process.send({ benchReady: true, port: /** @type {any} */ (http.address()).port }),
  );
}
