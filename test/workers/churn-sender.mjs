// Another process on a churned layer (test/churn.test.ts): sends to 60 distinct channels and
// prints `sent <channel count>`.
//   node churn-sender.mjs <layer name>
import { ShmChannelLayer } from 'shm-channels';

const [name] = process.argv.slice(2);
if (!name) {
  console.error('churn-sender.mjs: needs <layer name>');
  process.exit(2);
}
const layer = new ShmChannelLayer({ name });
for (let i = 0; i < 60; i++) await layer.send('other.process-' + i, { i });
console.log('sent', layer.stats().channels);
await layer.close();
