// The poll window's policy (how long the event loop polls its bell before sleeping), fed the
// waits a receiver sees, and the run-queue reading that tells it whether others want its CPU.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { describe, expect, it } from 'vitest';
import { CpuContention, PollWindow } from './support/internal.js';

/** Windows that end without a ring until the window is as short as it gets. */
function collapse(window: InstanceType<typeof PollWindow>): void {
  for (let i = 0; i < 10; i++) window.missed();
}

describe('poll window', () => {
  it('shrinks while windows end without a ring, and grows on rings it catches', () => {
    const window = new PollWindow(200);
    collapse(window);
    expect(window.windowUs).toBe(8);
    for (let i = 0; i < 10; i++) window.caught(6);
    expect(window.windowUs).toBeGreaterThanOrEqual(24);
    expect(window.windowUs).toBeLessThanOrEqual(200);
  });

  it('a window halved below the usual reply time grows back from the wake-ups that follow', () => {
    // Replies ~40 µs away, a window of 8 µs: no poll catches one, every hop sleeps. Before,
    // only caught rings taught the window, so it stayed at 8 µs for good.
    const window = new PollWindow(200);
    collapse(window);
    for (let i = 0; i < 4; i++) window.woke(40, false);
    expect(window.windowUs).toBeGreaterThan(40);
    expect(window.windowUs).toBeLessThanOrEqual(200);
  });

  it('idle stretches and wake-ups while others wait for our CPU teach nothing', () => {
    const window = new PollWindow(200);
    collapse(window);
    window.woke(101, false); // beyond half the longest window: cheaper asleep
    window.woke(5_000_000, false);
    expect(window.windowUs).toBe(8);
    for (let i = 0; i < 10; i++) window.woke(40, true);
    expect(window.windowUs).toBe(8);
  });

  it('never polls with spinMicros 0', () => {
    const window = new PollWindow(0);
    expect(window.windowUs).toBe(0);
    window.caught(5);
    window.woke(5, false);
    window.missed();
    expect(window.windowUs).toBe(0);
  });
});

describe('CPU contention', () => {
  it('says contended while more threads want to run than there are CPUs', async () => {
    const cpus = availableParallelism();
    const spinners = Array.from({ length: 2 * cpus }, () =>
      spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }),
    );
    try {
      await new Promise((r) => setTimeout(r, 300)); // the spinners are up and running
      const contention = new CpuContention();
      let contended = false;
      // Readings 100 ms apart (the count is smoothed over a few).
      for (let reading = 0; reading < 5; reading++) {
        contended = contention.isContended(performance.now());
        await new Promise((r) => setTimeout(r, 105));
      }
      expect(contended).toBe(true);
    } finally {
      for (const spinner of spinners) spinner.kill('SIGKILL');
    }
  }, 20_000);

  it('keeps no descriptor open between readings (a worker thread that had a layer leaks none)', () => {
    const before = readdirSync('/proc/self/fd').length;
    const contention = new CpuContention();
    for (let reading = 0; reading < 3; reading++) contention.isContended(reading * 1000);
    expect(readdirSync('/proc/self/fd').length).toBe(before);
  });
});
