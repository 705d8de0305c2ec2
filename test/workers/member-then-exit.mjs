// A process that makes a '!' channel, joins it to group 'room', prints its name and exits
// without close(), as if it had crashed (test/churn.test.ts).
//   node member-then-exit.mjs <layer name>
import { ShmChannelLayer } from 'shm-channels';

const [name] = process.argv.slice(2);
if (!name) {
  console.error('member-then-exit.mjs: needs <layer name>');
  process.exit(2);
}
const layer = new ShmChannelLayer({ name });
const inbox = await layer.newChannel();
await layer.groupAdd('room', inbox);
console.log(inbox);
process.exit(0);
