// The other process of test/lock-hold.test.ts: attaches to the layer, sends 7 messages to
// 'lockhold.q' and one groupSend to 'lockhold.group', and prints its own lockHoldStats() as JSON.
//   node lock-hold-sender.mjs <layer name>
import { ShmChannelLayer } from 'shm-channels';

const [name] = process.argv.slice(2);
if (!name) {
  console.error('lock-hold-sender.mjs: needs <layer name>');
  process.exit(2);
}
const layer = new ShmChannelLayer({ name, create: false });
for (let i = 0; i < 7; i++) await layer.send('lockhold.q', { type: 'm', i });
await layer.groupSend('lockhold.group', { type: 'm', i: 7 });
const stats = layer.lockHoldStats();
await layer.close();
process.stdout.write(JSON.stringify(stats));
