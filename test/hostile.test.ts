// A segment scribbled on by a hostile or broken process: random bytes land anywhere in a live
// segment (except the lock word, which no layout can protect against forgery), and a second
// process keeps using the layer. Every call must either work or fail with a typed error; the
// process must never crash or hang.
import { expect, it } from 'vitest';
import { NATIVE_MODULE } from './support/internal.js';
import { runModule, shmLayers } from './support/fixtures.js';

const shm = shmLayers('hostile');

const victim = (name: string, seed: number) => `
import { createRequire } from 'node:module';
import { openSync, readSync, writeSync, fstatSync } from 'node:fs';
const { native } = createRequire(import.meta.url)(${JSON.stringify(NATIVE_MODULE)});
const { lockOffset, lockBytes } = native();
let state = ${seed};
const random = () => ((state = (state * 1103515245 + 12345) >>> 0) / 2 ** 32);
const layer = new ShmChannelLayer({ name: '${name}', size: 2 << 20, maxChannels: 64, maxGroups: 16, maxMembers: 128, maxNodes: 512 });
const fd = openSync('/dev/shm/shmch.' + process.getuid() + '.${name}', 'r+');
const size = fstatSync(fd).size;
// Header fields (layout.h): the channel table starts at offset 80, the arena at 144.
const header = Buffer.alloc(152);
readSync(fd, header, 0, 152, 0);
const tablesStart = Number(header.readBigUInt64LE(80));
const tablesEnd = Number(header.readBigUInt64LE(144)) + 65536;
const outcomes = {};
const note = (e) => { const k = e ? (e.code ?? e.name) : 'ok'; outcomes[k] = (outcomes[k] ?? 0) + 1; };
const attempt = async (f) => { try { await f(); note(); } catch (e) {
  if (!(e instanceof Error) || !(e.code || ['ChannelFull', 'SegmentFull', 'TypeError', 'AbortError', 'TimeoutError', 'MessageTooLarge'].includes(e.name))) throw e;
  note(e); } };
const channels = ['a', 'b', 'c.d', await layer.newChannel()];
for (let round = 0; round < 150; round++) {
  for (let i = 0; i < 4; i++) {
    const ch = channels[Math.floor(random() * channels.length)];
    await attempt(() => layer.send(ch, { round, i, pad: 'x'.repeat(Math.floor(random() * 300)) }));
    await attempt(() => layer.groupAdd('g', ch));
  }
  await attempt(() => layer.groupSend('g', { round }));
  // The hostile writes: a few random bytes at random places, and now and then a whole run.
  const writes = 1 + Math.floor(random() * 12);
  for (let w = 0; w < writes; w++) {
    // Mostly into the tables and the start of the arena, sometimes anywhere (header included).
    const at = random() < 0.8
      ? tablesStart + Math.floor(random() * (tablesEnd - tablesStart))
      : Math.floor(random() * size);
    const bytes = Buffer.alloc(1 + Math.floor(random() * (random() < 0.1 ? 512 : 8)));
    for (let k = 0; k < bytes.length; k++) bytes[k] = Math.floor(random() * 256);
    if (at + bytes.length > lockOffset && at < lockOffset + lockBytes) continue;
    writeSync(fd, bytes, 0, Math.min(bytes.length, size - at), at);
  }
  for (const ch of channels) await attempt(() => layer.receive(ch, { signal: AbortSignal.timeout(5) }));
  await attempt(() => layer.groupDiscard('g', channels[0]));
  await attempt(async () => layer.stats());
  await attempt(async () => layer.verify());
  if (round % 25 === 24) await attempt(() => layer.flush());
}
console.log(JSON.stringify(outcomes));
await layer.close();
`;

// Arbitrary seeds, each of which must land on checked structures (the ECORRUPT check below). Seed
// 3 stopped doing so when layout 3 grew Slot and moved every region after it (its scribbles now
// land where damage is harmless or repaired silently: 2403 ok, 3 aborted receives); 5 replaces it.
for (const seed of [1, 2, 4, 5]) {
  it(`random bytes in a live segment give typed errors, never a crash or a hang (seed ${seed})`, () => {
    const name = shm.name();
    const run = runModule(victim(name, seed), {}, { timeout: 60_000 });
    expect(run.signal, run.stderr).toBeNull();
    expect(run.status, run.stderr).toBe(0);
    const outcomes = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as Record<string, number>;
    console.log(`seed ${seed}: ${JSON.stringify(outcomes)}`);
    expect(outcomes.ok).toBeGreaterThan(0);
    // The scribbles did hit structures: some calls were refused as corrupt.
    expect(outcomes.ECORRUPT ?? 0).toBeGreaterThan(0);
  }, 90_000);
}
