// Sends and receives large messages on one layer in this process, and prints (JSON) how much the
// process's anonymous memory grew over them (test/large-messages.test.ts). A receiver must hand
// out memory the JavaScript heap accounts for and reuses: memory it does not see is collected
// late, and every message faulted in fresh pages.
//   node large-receiver.mjs <layer name> <messages> <bytes per message>
import { readFileSync } from 'node:fs';
import { ShmChannelLayer } from 'shm-channels';

const [name, countText, bytesText] = process.argv.slice(2);
if (!name || !countText || !bytesText) {
  console.error('large-receiver.mjs: needs <layer name> <messages> <bytes per message>');
  process.exit(2);
}
const count = Number(countText);
const bytes = Number(bytesText);

/** Resident anonymous memory of this process (the heap and malloc, not the shared segment), MB. */
function anonymousMB() {
  const kib = /RssAnon:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
  return Number(kib) / 1024;
}

/** Minor page faults of this process so far. */
function minorFaults() {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
}

const layer = new ShmChannelLayer({ name, size: 64 << 20, maxMessageSize: 8 << 20 });
const payload = Buffer.alloc(bytes, 0x5a);
const warmup = 5;
let before = 0;
let faultsBefore = 0;
let peak = 0;
for (let i = 0; i < count; i++) {
  if (i === warmup) {
    before = anonymousMB();
    faultsBefore = minorFaults();
  }
  await layer.send('big', { i, payload });
  const message = await layer.receive('big');
  if (message.i !== i || !payload.equals(message.payload)) throw new Error(`message ${i} damaged`);
  if (i >= warmup) peak = Math.max(peak, anonymousMB());
}
const faultsPerMessage = (minorFaults() - faultsBefore) / (count - warmup);
await layer.close();
console.log(JSON.stringify({ growthMB: peak - before, faultsPerMessage }));
