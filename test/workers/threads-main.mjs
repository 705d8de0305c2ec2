// worker_threads scenario, run as a forked child of the test: the main thread and a worker thread
// each open their own ShmChannelLayer on the same name and talk through it. The only
// postMessage traffic is bootstrap (the worker's inbox name) and lifecycle. Reports one
// { result } or { error } message to the test over IPC.
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

const here = dirname(fileURLToPath(import.meta.url));
const dist = process.env.SHMCH_DIST;
const { name, options } = JSON.parse(process.env.MP_ARGS);
const { ShmChannelLayer } = await import(pathToFileURL(dist).href);

process.on('disconnect', () => process.exit(0));

const timeout = () => ({ signal: AbortSignal.timeout(20_000) });

async function main() {
  const layer = new ShmChannelLayer({ name, ...options });
  const result = {};
  try {
    const worker = new Worker(join(here, 'threads-worker.mjs'), {
      workerData: { dist, name, options, mode: 'echo' },
    });
    const exited = once(worker, 'exit');
    worker.on('error', (e) => console.error('worker error', e));
    const [{ inbox }] = await once(worker, 'message');
    result.processesWithWorker = layer.stats().processes;
    const mine = await layer.newChannel('main');

    // 1. main -> worker requests carrying a reply channel; worker -> main replies.
    for (let n = 1; n <= 100; n++) await layer.send(inbox, { type: 'ping', n, reply: mine });
    result.pongs = [];
    for (let n = 1; n <= 100; n++) result.pongs.push((await layer.receive(mine, timeout())).n);

    // 2. worker -> main on a named channel, while main receives concurrently.
    await layer.send(inbox, { type: 'burst', channel: 'from-worker', count: 300 });
    result.items = [];
    for (let i = 0; i < 300; i++)
      result.items.push((await layer.receive('from-worker', timeout())).seq);

    // 3. group fan-out from main to the worker's inbox (the worker joined group 'threads').
    await layer.groupSend('threads', { type: 'fan', reply: mine });
    result.fanAck = (await layer.receive(mine, timeout())).type;

    // 4. the worker closes its layer and exits: its slot is released.
    await layer.send(inbox, { type: 'stop' });
    const [code] = await exited;
    result.workerExitCode = code;
    result.processesAfterExit = layer.stats().processes;

    // 5. a worker terminated while a receive of it is pending: the env cleanup hook must stop its
    // waiter thread and release its slot.
    const hang = new Worker(join(here, 'threads-worker.mjs'), {
      workerData: { dist, name, options, mode: 'hang' },
    });
    hang.on('error', (e) => console.error('hang worker error', e));
    await once(hang, 'message');
    result.processesWithHangingWorker = layer.stats().processes;
    await hang.terminate();
    result.processesAfterTerminate = layer.stats().processes;
    // A message sent to the channel the dead worker waited on stays queued for the next receiver.
    await layer.send('hang-inbox', { type: 'late' });
    result.late = (await layer.receive('hang-inbox', timeout())).type;

    result.verify = layer.verify();
  } finally {
    await layer.close();
  }
  return result;
}

try {
  process.send({ result: await main() });
} catch (e) {
  process.send({ error: String(e?.stack ?? e) });
}
