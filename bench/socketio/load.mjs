// The bench's clients: SIO_BENCH_CLIENTS socket.io-client websockets in this one process, spread
// over the servers' ports; rooms of SIO_BENCH_CLIENTS / SIO_BENCH_ROOMS members, each room's
// members on different workers. Counts deliveries and their latency between 'start' and 'stop'.
import { performance } from 'node:perf_hooks';
import { io } from 'socket.io-client';

const ports = process.env.SIO_BENCH_PORTS.split(',').map(Number);
const count = Number(process.env.SIO_BENCH_CLIENTS ?? 400);
const rooms = Number(process.env.SIO_BENCH_ROOMS ?? 40);
const MAX_SAMPLES = 4_000_000;
const latencies = new Float64Array(MAX_SAMPLES);
let samples = 0;
let delivered = 0;
let counting = false;

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
  socket.on('m', (sentAt) => {
    if (!counting) return;
    delivered++;
    if (samples < MAX_SAMPLES)
      latencies[samples++] = performance.timeOrigin + performance.now() - sentAt;
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
    const usage = process.cpuUsage();
    process.send({ id, result: { at: performance.now(), cpu: usage.user + usage.system } });
  } else if (op === 'stop') {
    counting = false;
    const usage = process.cpuUsage();
    const sorted = latencies.subarray(0, samples).sort();
    const pick = (q) => (samples ? sorted[Math.min(samples - 1, Math.floor(q * samples))] : NaN);
    process.send({
      id,
      result: {
        at: performance.now(),
        cpu: usage.user + usage.system,
        delivered,
        p50: pick(0.5),
        p99: pick(0.99),
      },
    });
  }
});
process.on('disconnect', () => process.exit(0));
