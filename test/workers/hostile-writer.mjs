// A process that uses a layer and scribbles random bytes into its segment between calls
// (test/hostile.test.ts). Every call must work or fail with a typed error; anything else is
// thrown and ends the process with a non-zero status. Prints the outcome counts as JSON.
//   node hostile-writer.mjs <layer name> <seed>      env SHMCH_NATIVE_MODULE: the addon loader
import { openSync, readSync, writeSync, fstatSync } from 'node:fs';
import { createRequire } from 'node:module';
import { ShmChannelLayer } from 'shm-channels';

const [name, seedText] = process.argv.slice(2);
const nativeModule = process.env.SHMCH_NATIVE_MODULE;
if (!name || !seedText || !nativeModule) {
  console.error('hostile-writer.mjs: needs <layer name> <seed> and SHMCH_NATIVE_MODULE');
  process.exit(2);
}
const { native } = createRequire(import.meta.url)(nativeModule);
// The lock word is left alone: no layout can protect against a forged owner.
const { lockOffset, lockBytes } = native();
let state = Number(seedText);
const random = () => (state = (state * 1103515245 + 12345) >>> 0) / 2 ** 32;
const layer = new ShmChannelLayer({
  name,
  size: 2 << 20,
  maxChannels: 64,
  maxGroups: 16,
  maxMembers: 128,
  maxNodes: 512,
});
const fd = openSync(`/dev/shm/shmch.${process.getuid()}.${name}`, 'r+');
const size = fstatSync(fd).size;
// Header fields (layout.h): the channel table starts at offset 80, the arena at 144.
const header = Buffer.alloc(152);
readSync(fd, header, 0, 152, 0);
const tablesStart = Number(header.readBigUInt64LE(80));
const tablesEnd = Number(header.readBigUInt64LE(144)) + 65536;

/** @type {Record<string, number>} */
const outcomes = {};
const typedErrors = [
  'ChannelFull',
  'SegmentFull',
  'TypeError',
  'AbortError',
  'TimeoutError',
  'MessageTooLarge',
];
/** @param {any} [error] */
const note = (error) => {
  const kind = error ? (error.code ?? error.name) : 'ok';
  outcomes[kind] = (outcomes[kind] ?? 0) + 1;
};
/** @param {() => unknown} call */
const attempt = async (call) => {
  try {
    await call();
    note();
  } catch (error) {
    if (
      !(error instanceof Error) ||
      !(('code' in error && error.code) || typedErrors.includes(error.name))
    )
      throw error;
    note(error);
  }
};

const channels = ['a', 'b', 'c.d', await layer.newChannel()];
for (let round = 0; round < 150; round++) {
  for (let i = 0; i < 4; i++) {
    const channel = channels[Math.floor(random() * channels.length)];
    await attempt(() =>
      layer.send(channel, { round, i, pad: 'x'.repeat(Math.floor(random() * 300)) }),
    );
    await attempt(() => layer.groupAdd('g', channel));
  }
  await attempt(() => layer.groupSend('g', { round }));
  // The hostile writes: a few random bytes at random places, and now and then a whole run.
  const writes = 1 + Math.floor(random() * 12);
  for (let w = 0; w < writes; w++) {
    // Mostly into the tables and the start of the arena, sometimes anywhere (header included).
    const at =
      random() < 0.8
        ? tablesStart + Math.floor(random() * (tablesEnd - tablesStart))
        : Math.floor(random() * size);
    const bytes = Buffer.alloc(1 + Math.floor(random() * (random() < 0.1 ? 512 : 8)));
    for (let k = 0; k < bytes.length; k++) bytes[k] = Math.floor(random() * 256);
    if (at + bytes.length > lockOffset && at < lockOffset + lockBytes) continue;
    writeSync(fd, bytes, 0, Math.min(bytes.length, size - at), at);
  }
  for (const channel of channels)
    await attempt(() => layer.receive(channel, { signal: AbortSignal.timeout(5) }));
  await attempt(() => layer.groupDiscard('g', channels[0]));
  await attempt(async () => layer.stats());
  await attempt(async () => layer.verify());
  if (round % 25 === 24) await attempt(() => layer.flush());
}
console.log(JSON.stringify(outcomes));
await layer.close();
