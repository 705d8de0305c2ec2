// Receives batches of small messages larger than the receive scratch buffer (200 messages of
// 1 KB taken by one native call) on one layer in this process, and prints (JSON) how much the
// process's anonymous memory grew over them and its page faults per batch
// (test/large-messages.test.ts).
//   node batch-receiver.mjs <layer name> <batches>
import { readFileSync } from 'node:fs';
import { ShmChannelLayer } from 'shm-channels';

const [name, batchesText] = process.argv.slice(2);
if (!name || !batchesText) {
  console.error('batch-receiver.mjs: needs <layer name> <batches>');
  process.exit(2);
}
const batches = Number(batchesText);

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

const layer = new ShmChannelLayer({ name, capacity: 1000, size: 64 << 20 });
const text = 'x'.repeat(1000);
const warmup = 20;
let before = 0;
let faultsBefore = 0;
let peak = 0;
for (let round = 0; round < batches; round++) {
  if (round === warmup) {
    before = anonymousMB();
    faultsBefore = minorFaults();
  }
  for (let i = 0; i < 200; i++) await layer.send('batch', { i, text });
  // 200 receives waiting at once: one native call takes the 200 messages (~200 KB).
  const got = await Promise.all(Array.from({ length: 200 }, () => layer.receive('batch')));
  for (const [i, message] of got.entries()) {
    if (message.i !== i || message.text !== text) throw new Error(`message ${i} damaged`);
  }
  if (round >= warmup) peak = Math.max(peak, anonymousMB());
}
const faultsPerBatch = (minorFaults() - faultsBefore) / (batches - warmup);
await layer.close();
console.log(JSON.stringify({ growthMB: peak - before, faultsPerBatch }));
