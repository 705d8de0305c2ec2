// The worker thread of threads-main.mjs: its own layer instance on the same layer name.
import { pathToFileURL } from 'node:url';
import { parentPort, workerData } from 'node:worker_threads';

const { dist, name, options, mode } = workerData;
const { ShmChannelLayer } = await import(pathToFileURL(dist).href);
const layer = new ShmChannelLayer({ name, ...options });

if (mode === 'hang') {
  // Wait on a named channel forever; the main thread terminates us.
  const pending = layer.receive('hang-inbox');
  pending.catch(() => {});
  parentPort.postMessage({ waiting: true });
} else {
  const inbox = await layer.newChannel('worker');
  await layer.groupAdd('threads', inbox);
  parentPort.postMessage({ inbox });
  for (;;) {
    const m = await layer.receive(inbox);
    if (m.type === 'ping') {
      await layer.send(m.reply, { type: 'pong', n: m.n });
    } else if (m.type === 'burst') {
      for (let seq = 1; seq <= m.count; seq++) {
        for (;;) {
          try {
            await layer.send(m.channel, { type: 'item', seq });
            break;
          } catch (e) {
            if (e.name !== 'ChannelFull') throw e;
            await new Promise((r) => setTimeout(r, 1));
          }
        }
      }
    } else if (m.type === 'fan') {
      await layer.send(m.reply, { type: 'fan-ack' });
    } else if (m.type === 'stop') {
      await layer.groupDiscard('threads', inbox);
      await layer.close();
      break;
    }
  }
}
