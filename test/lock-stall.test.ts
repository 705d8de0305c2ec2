// A live process that stops while it holds the segment lock (SIGSTOP, a debugger, `docker pause`,
// a core dump in progress) must not freeze the other processes' event loops: they wait for the
// lock in short slices from the event loop, and give up with a typed error after `lockTimeout`.
// The child stops itself inside the lock at fault point 12 (SHMCH_FAULT_ACTION=stop), a test hook
// compiled into every build, like the crash tests' fault points.
import { type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { childProcesses, shmLayers, startWorker } from './support/fixtures.js';
import { LockTimeout, ShmChannelLayer } from './support/package.js';

const shm = shmLayers('stall');
// After shmLayers(): vitest runs afterEach hooks last-registered first, so a child stopped inside
// the lock is killed before the layers close.
const children = childProcesses();

function isStopped(pid: number): boolean {
  try {
    // /proc/<pid>/stat: "pid (comm) state ..."; comm may hold spaces, state follows the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'T';
  } catch {
    return false;
  }
}

/** Starts a child that attaches to the layer and stops itself holding the segment lock. */
async function childStoppedInsideTheLock(name: string): Promise<ChildProcess> {
  const child = children.track(
    startWorker(
      'send-once.mjs',
      [name, 'from-child', JSON.stringify({ resumed: true })],
      { SHMCH_FAULT_POINT: '12', SHMCH_FAULT_ACTION: 'stop' },
      { stdio: ['ignore', 'inherit', 'inherit'] },
    ),
  );
  const deadline = Date.now() + 15_000;
  while (!isStopped(child.pid!)) {
    if (Date.now() > deadline || child.exitCode !== null)
      throw new Error('the child never stopped in the lock');
    await new Promise((r) => setTimeout(r, 10));
  }
  return child;
}

/** Runs a 5 ms interval until stopped; reports the longest gap between two ticks and the ticks. */
function tickGaps(): () => { longest: number; ticks: number } {
  let last = performance.now();
  let longest = 0;
  let ticks = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
    ++ticks;
  }, 5);
  return () => {
    clearInterval(timer);
    return { longest, ticks };
  };
}

/**
 * Times every call into the native layer: the JS thread is blocked exactly while one runs. Returns
 * the longest call so far.
 */
function timeNativeCalls(layer: ShmChannelLayer): () => number {
  const handle = (layer as unknown as { handle: Record<string, unknown> }).handle;
  let longest = 0;
  for (
    let proto = Object.getPrototypeOf(handle);
    proto && proto !== Object.prototype;
    proto = Object.getPrototypeOf(proto)
  ) {
    for (const key of Object.getOwnPropertyNames(proto)) {
      const original = handle[key];
      if (key === 'constructor' || typeof original !== 'function' || Object.hasOwn(handle, key))
        continue;
      Object.defineProperty(handle, key, {
        configurable: true,
        value: (...args: unknown[]) => {
          const started = performance.now();
          try {
            return (original as (...a: unknown[]) => unknown).apply(handle, args);
          } finally {
            const took = performance.now() - started;
            if (took > longest) {
              longest = took;
              if (process.env.SHMCH_DEBUG_STALL)
                console.log(`native ${key}: ${took.toFixed(1)} ms`);
            }
          }
        },
      });
    }
  }
  return () => longest;
}

// What the code guarantees: each native call waits one 1 ms slice for the lock and returns, so no
// single call, and no gap between event-loop turns, grows with the length of the stop. Wall-clock
// time on top of the slice is the scheduler's (a 72 ms call was seen at load 13 on 2 vCPUs), so the
// bounds are fractions of the stop: the old code blocked in one call for all of it.
const STOP_MS = 600;
const LOCK_TIMEOUT_MS = 500;

const exited = (child: ChildProcess) =>
  new Promise<number | null>((resolve) => {
    if (child.exitCode !== null) resolve(child.exitCode);
    else child.once('exit', (code) => resolve(code));
  });

// Finding 5 of the review: a 100 ms stop blocked every other process's send for 100.3 ms, a 2 s
// stop for 2 s, and a process that meant to SIGCONT the peer from a timer never could.
it(`a peer stopped inside the lock for ${STOP_MS} ms blocks the event loop only in short slices`, async () => {
  const name = shm.name();
  const layer = shm.open({ name });
  const child = await childStoppedInsideTheLock(name);
  const longestNativeCall = timeNativeCalls(layer);
  const received = layer.receive('from-child'); // waits through the stop, is not failed by it
  const stopGaps = tickGaps();
  const started = performance.now();
  // Resumed from a timer of this very event loop: only possible if the loop keeps running.
  setTimeout(() => child.kill('SIGCONT'), STOP_MS);
  await layer.send('work', { n: 1 });
  const took = performance.now() - started;
  const { longest: longestGap, ticks } = stopGaps();
  const longestBlock = longestNativeCall();
  console.log(
    `send behind a ${STOP_MS} ms stop took ${took.toFixed(0)} ms; longest native call ${longestBlock.toFixed(1)} ms, ` +
      `longest gap between 5 ms ticks ${longestGap.toFixed(1)} ms, ${ticks} ticks`,
  );
  expect(took).toBeGreaterThanOrEqual(STOP_MS - 10);
  // The loop is blocked only inside native calls, each waiting one 1 ms slice (a few ms on a
  // quiet machine). Before the fix: one call of 600 ms, no tick at all during the stop; here no
  // call and no gap may take a quarter of it, and the 5 ms timer keeps ticking (120 ticks at most).
  expect(longestBlock).toBeLessThan(STOP_MS / 4);
  expect(longestGap).toBeLessThan(STOP_MS / 4);
  expect(ticks).toBeGreaterThanOrEqual(10);
  expect(await received).toEqual({ resumed: true });
  expect(await exited(child)).toBe(0);
  expect(await layer.receive('work')).toEqual({ n: 1 });
  expect(layer.verify()).toEqual([]);
});

it('with a small lockTimeout the call fails with LockTimeout naming the holder, and loses nothing', async () => {
  const name = shm.name();
  const layer = shm.open({ name, lockTimeout: LOCK_TIMEOUT_MS });
  const child = await childStoppedInsideTheLock(name);
  const longestNativeCall = timeNativeCalls(layer);
  const gaps = tickGaps();
  const started = performance.now();
  const first = layer.send('work', { n: 1 });
  const second = layer.groupAdd('g', 'work'); // queued behind the first, times out as well
  const error = await first.catch((e: unknown) => e);
  const took = performance.now() - started;
  await expect(second).rejects.toBeInstanceOf(LockTimeout);
  const { longest: longestGap } = gaps();
  expect(error).toBeInstanceOf(LockTimeout);
  expect((error as LockTimeout).code).toBe('ELOCKTIMEOUT');
  expect((error as LockTimeout).pid).toBe(child.pid);
  expect((error as Error).message).toContain(String(child.pid));
  expect(took).toBeGreaterThanOrEqual(LOCK_TIMEOUT_MS - 5);
  // Gives up after lockTimeout; what comes on top is the loaded machine's scheduling.
  expect(took).toBeLessThan(LOCK_TIMEOUT_MS + 2000);
  // Waited in slices, not in one call for the whole timeout (see the bounds above).
  expect(longestNativeCall()).toBeLessThan(LOCK_TIMEOUT_MS / 4);
  expect(longestGap).toBeLessThan(LOCK_TIMEOUT_MS / 4);
  child.kill('SIGCONT');
  expect(await exited(child)).toBe(0);
  // Nothing of the failed calls happened; the layer works on.
  expect(
    layer
      .stats()
      .channelList.map((c) => c.name)
      .sort(),
  ).toEqual(['from-child']);
  expect(layer.stats().groups).toBe(0);
  await layer.send('work', { n: 2 });
  expect(await layer.receive('work')).toEqual({ n: 2 });
  expect(await layer.receive('from-child')).toEqual({ resumed: true });
  expect(layer.verify()).toEqual([]);
});

// The default serializer hands the shm layer transient bytes (reused by the next serialization).
// Sends that wait for the lock must keep copies: here every send waits behind the stopped peer
// while the next ones serialize, and each message must still arrive as it was sent.
it('sends queued behind a stopped peer keep their own bytes', async () => {
  const name = shm.name();
  const layer = shm.open({ name });
  const child = await childStoppedInsideTheLock(name);
  const sent = Array.from({ length: 6 }, (_, n) => ({
    n,
    bytes: Buffer.alloc(1000 + n * 5000, n + 1),
  }));
  const sends = sent.map((message) => layer.send('queued', message));
  const groupSend = layer.groupSend('no-such-group', { lost: true });
  setTimeout(() => child.kill('SIGCONT'), 200);
  await Promise.all(sends);
  expect(await groupSend).toBe(0);
  for (const message of sent) {
    const got = (await layer.receive('queued')) as { n: number; bytes: Uint8Array };
    expect(got.n).toBe(message.n);
    expect(Buffer.from(got.bytes).equals(message.bytes)).toBe(true);
  }
  expect(await exited(child)).toBe(0);
});

// A large binary value is sent from the message's own buffer (its other bytes from the
// serializer's): a send waiting for the lock must send what the message held when send() was
// called, even if the caller reuses that buffer at once.
it('a large message queued behind a stopped peer is sent as it was when send() was called', async () => {
  const name = shm.name();
  const layer = shm.open({ name });
  const child = await childStoppedInsideTheLock(name);
  const payload = Buffer.alloc(300_000, 1);
  const sends = [layer.send('queued', { n: 1, payload })];
  payload.fill(2); // the caller reuses its buffer for the next message
  sends.push(layer.send('queued', { n: 2, payload }));
  payload.fill(3);
  setTimeout(() => child.kill('SIGCONT'), 200);
  await Promise.all(sends);
  for (const n of [1, 2]) {
    const got = (await layer.receive('queued')) as { n: number; payload: Buffer };
    expect(got.n).toBe(n);
    expect(got.payload.equals(Buffer.alloc(300_000, n))).toBe(true);
  }
  expect(await exited(child)).toBe(0);
});
