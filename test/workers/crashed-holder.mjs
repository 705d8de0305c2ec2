// A process that carries a 5 MB message through layer 'crashed', leaves one small message
// queued, prints 'ready' and waits to be killed (test/docker-shm.test.ts).
//   node crashed-holder.mjs
import { ShmChannelLayer } from 'shm-channels';

const layer = new ShmChannelLayer({ name: 'crashed' });
await layer.send('big', { body: Buffer.alloc(5_000_000) });
await layer.receive('big');
await layer.send('later', { kept: true, n: 1 });
console.log('ready');
setInterval(() => {}, 1000);
