// Attaches to an existing layer, sends one message and closes (test/lock-stall.test.ts runs it
// with a fault point that stops it inside the segment lock during that send).
//   node send-once.mjs <layer name> <channel> <message as JSON>
import { ShmChannelLayer } from 'shm-channels';

const [name, channel, message] = process.argv.slice(2);
if (!name || !channel || !message) {
  console.error('send-once.mjs: needs <layer name> <channel> <message as JSON>');
  process.exit(2);
}
const layer = new ShmChannelLayer({ name });
await layer.send(channel, JSON.parse(message));
await layer.close();
