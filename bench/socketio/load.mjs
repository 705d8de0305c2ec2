// The bench's clients: SIO_BENCH_CLIENTS socket.io-client websockets in this one process, spread
// over the servers' ports; rooms of SIO_BENCH_CLIENTS / SIO_BENCH_ROOMS members, each room's
// members on different workers. Counts deliveries and their latency between 'start' and 'stop'.
import { writeFileSync } from 'node:fs';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { io } from 'socket.io-client';

const ports = process.env.SIO_BENCH_PORTS.split(',').map(Number);
const count = Number(process.env.SIO_BENCH_CLIENTS ?? 400);
const rooms = Number(process.env.SIO_BENCH_ROOMS ?? 40);
const MAX_SAMPLES = 4_000_000;
const latencies = new Float64Array(MAX_SAMPLES);
/** Per sample: when it was sent (ms, the shared clock) and whether it crossed workers. */
const sentAts = new Float64Array(MAX_SAMPLES);
const relayed = new Uint8Array(MAX_SAMPLES);
let samples = 0;
let delivered = 0;
let counting = false;
// How late this process's event loop ran in the window: a starved load process delays every
// delivery it records, local and relayed alike.
const loopDelay = monitorEventLoopDelay({ resolution: 1 });

const sockets = [];
for (let i = 0; i < count; i++) {
  // Client i is in room i % rooms on worker floor(i / rooms) % workers: a room's members sit on
  // every worker, not all on one.
  const port = ports[Math.floor(i / rooms) % ports.length];
  const socket = io(`http://127.0.0.1:${port}`, {
    transports: ['websocket'],
    auth: { room: i % rooms },
    forceNew: true,
  });
  const worker = Math.floor(i / rooms) % ports.length;
  socket.on('m', (sentAt, from) => {
    if (!counting) return;
    delivered++;
    if (samples < MAX_SAMPLES) {
      sentAts[samples] = sentAt;
      relayed[samples] = from === worker ? 0 : 1;
      latencies[samples++] = performance.timeOrigin + performance.now() - sentAt;
    }
  });
  sockets.push(new Promise((resolve) => socket.once('connect', () => resolve(socket))));
}
await Promise.all(sockets);
process.send({ connected: true });

process.on('message', ({ id, op }) => {
  if (op === 'start') {
    delivered = 0;
    samples = 0;
    counting = true;
    loopDelay.reset();
    loopDelay.enable();
    const usage = process.cpuUsage();
    process.send({ id, result: { at: performance.now(), cpu: usage.user + usage.system } });
  } else if (op === 'stop') {
    counting = false;
    loopDelay.disable();
    const usage = process.cpuUsage();
    const all = latencies.slice(0, samples);
    const sorted = all.slice().sort();
    const pick = (q) => (samples ? sorted[Math.min(samples - 1, Math.floor(q * samples))] : NaN);
    const p99 = pick(0.99);
    const split = (want) => {
      const part = all.filter((_, k) => relayed[k] === want).sort();
      const at = (q) =>
        part.length ? part[Math.min(part.length - 1, Math.floor(q * part.length))] : NaN;
      return { samples: part.length, p50: at(0.5), p99: at(0.99) };
    };
    // A p99 over a 5 s window is the 1% slowest: if most of those were sent within one 100 ms
    // stretch, the p99 measured one stall (a descheduled process, a GC), not the steady state.
    const slowBySlice = new Map();
    let slow = 0;
    for (let k = 0; k < samples; k++) {
      if (all[k] < p99) continue;
      slow++;
      const slice = Math.floor(sentAts[k] / 100);
      slowBySlice.set(slice, (slowBySlice.get(slice) ?? 0) + 1);
    }
    const worstSlice = Math.max(0, ...slowBySlice.values());
    // SIO_BENCH_DUMP=<prefix>: every sample of the window (sent at, latency ms, relayed), to see
    // what the slowest 1% is (one stall, a congested stretch, a steady tail).
    if (process.env.SIO_BENCH_DUMP) {
      const rows = [];
      for (let k = 0; k < samples; k++)
        rows.push(`${sentAts[k].toFixed(3)} ${all[k].toFixed(3)} ${relayed[k]}`);
      writeFileSync(
        `${process.env.SIO_BENCH_DUMP}-${process.pid}-${Date.now()}.txt`,
        rows.join('\n'),
      );
    }
    process.send({
      id,
      result: {
        at: performance.now(),
        cpu: usage.user + usage.system,
        delivered,
        p50: pick(0.5),
        p99,
        samples,
        local: split(0),
        relayed: split(1),
        slowInWorst100Ms: slow ? worstSlice / slow : 0,
        loopDelayP99Ms: loopDelay.percentile(99) / 1e6,
        loopDelayMaxMs: loopDelay.max / 1e6,
      },
    });
  }
});
process.on('disconnect', () => process.exit(0));
