// What every scenario of test/docker-shm.test.ts gets, inside its private 64 MB /dev/shm: how
// full /dev/shm is, what is in it, a filler file, the CLI, and report() for the result.
// env SHMCH_CLI: the package's command (dist/cjs/.../cli.js).
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readdirSync, rmSync, statSync, statfsSync, writeSync } from 'node:fs';

export const MiB = 1 << 20;

/** Bytes of /dev/shm in use. */
export const used = () => {
  const s = statfsSync('/dev/shm');
  return (s.blocks - s.bfree) * s.bsize;
};
/** Bytes of /dev/shm still free. */
export const free = () => {
  const s = statfsSync('/dev/shm');
  return s.bavail * s.bsize;
};
/** The files in /dev/shm, the filler left out, sorted. */
export const files = () =>
  readdirSync('/dev/shm')
    .filter((f) => f !== 'filler')
    .sort();
/** @param {string} file a name in /dev/shm @returns {number} the bytes it really occupies */
export const fileUse = (file) => statSync('/dev/shm/' + file).blocks * 512;

/**
 * Occupies /dev/shm until only `left` bytes are free (written, so the pages are really taken).
 * @param {number} left
 */
export function fill(left) {
  rmSync('/dev/shm/filler', { force: true });
  const fd = openSync('/dev/shm/filler', 'w');
  const chunk = Buffer.alloc(MiB, 1);
  let want = free() - left;
  try {
    while (want > 0) {
      const n = Math.min(want, chunk.length);
      writeSync(fd, chunk, 0, n);
      want -= n;
    }
  } finally {
    closeSync(fd);
  }
}

/** Runs the CLI, returns its stdout. @param {...string} args */
export const cli = (...args) => {
  const command = process.env.SHMCH_CLI;
  if (!command) throw new Error('small-shm.mjs: SHMCH_CLI is not set');
  return execFileSync(process.execPath, [command, ...args], { encoding: 'utf8' });
};
/** @param {number} ms */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** What the test asserts on: one line `RESULT <json>`. @param {unknown} value */
export const report = (value) => console.log('RESULT ' + JSON.stringify(value));
