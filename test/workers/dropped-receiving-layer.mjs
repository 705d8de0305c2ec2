// A layer dropped without close() while a receive waits on it (test/churn.test.ts): the
// collector must not take it, the receive gets the message sent after five collections, and the
// process then exits by itself. Prints the message's type.
//   node --expose-gc dropped-receiving-layer.mjs <layer name>
import { setTimeout as sleep } from 'node:timers/promises';
import { ShmChannelLayer } from 'shm-channels';

const [name] = process.argv.slice(2);
const gc = globalThis.gc;
if (!name || !gc) {
  console.error('dropped-receiving-layer.mjs: needs <layer name> and --expose-gc');
  process.exit(2);
}
const received = (() => new ShmChannelLayer({ name }).receive('kept.ch'))();
for (let i = 0; i < 5; i++) {
  gc();
  await sleep(10);
}
const sender = new ShmChannelLayer({ name });
await sender.send('kept.ch', { type: 'late' });
console.log((await received).type);
await sender.close();
