// 20 layers used the way a server uses one, then dropped without close() (test/churn.test.ts):
// prints the process count and this process's doorbell descriptors before, right after, and
// once the garbage collector took the layers, as JSON { before, dropped, after }.
//   node --expose-gc dropped-layers.mjs <layer name>
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { ShmChannelLayer } from 'shm-channels';

const [name] = process.argv.slice(2);
const gc = globalThis.gc;
if (!name || !gc) {
  console.error('dropped-layers.mjs: needs <layer name> and --expose-gc');
  process.exit(2);
}
// Descriptors of doorbell FIFOs this process reads (O_RDWR; a sender's cached write end is O_WRONLY).
const doorbells = () =>
  readdirSync('/proc/self/fd').filter((fd) => {
    try {
      if (!readlinkSync('/proc/self/fd/' + fd).startsWith('/dev/shm/shmch-bell.')) return false;
      const flags = /flags:\s*([0-7]+)/.exec(readFileSync('/proc/self/fdinfo/' + fd, 'utf8'));
      return flags !== null && (parseInt(flags[1], 8) & 3) === 2;
    } catch {
      return false;
    }
  }).length;
const observer = new ShmChannelLayer({ name });
const before = { processes: observer.stats().processes, doorbells: doorbells() };
await (async () => {
  for (let i = 0; i < 20; i++) {
    const layer = new ShmChannelLayer({ name });
    // Used the way a server uses one: a delivered receive, a cancelled one, a group.
    const channel = await layer.newChannel();
    await layer.groupAdd('room', channel);
    const got = layer.receive(channel);
    await observer.groupSend('room', { i });
    await got;
    await layer.receive(channel, { signal: AbortSignal.timeout(1) }).catch(() => {});
    await layer.groupDiscard('room', channel);
  }
})();
const dropped = { processes: observer.stats().processes, doorbells: doorbells() };
for (let i = 0; i < 100 && observer.stats().processes > before.processes; i++) {
  gc();
  await sleep(20);
}
const after = { processes: observer.stats().processes, doorbells: doorbells() };
console.log(JSON.stringify({ before, dropped, after }));
await observer.close();
