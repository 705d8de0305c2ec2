import { closeSync, openSync, readSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/**
 * How often (ms) the count of running threads is read again. A reading costs 10-60 µs (three
 * syscalls; the most on a busy 2-vCPU VM): every 20 ms it was 1.5% of a Socket.IO bench worker's
 * CPU. The count changes with whole processes starting and stopping, so a tenth of a second old
 * is fresh enough.
 */
const SAMPLE_MS = 100;

/**
 * Whether more threads want to run on this machine than it has CPUs: then a poll that keeps its
 * CPU busy delays whoever would answer it (on 2 vCPUs with one busy process beside a ping-pong
 * pair, learning to poll longer made the round trip 2.5x slower). From the running count Linux
 * gives in /proc/loadavg ("1.0 0.8 0.5 3/210 4321": 3 running, this thread included), smoothed
 * over a few readings. Not the thread's own run-queue wait (/proc/thread-self/schedstat): on a
 * VM that counts every wake-up of an idle vCPU too (~50 µs each here), busy machine or not.
 * Where the count cannot be read, every reading says contended, so polling keeps to what its
 * caught rings alone justify.
 */
export class CpuContention {
  private readonly buffer = Buffer.alloc(128);
  private readonly cpus = availableParallelism();
  private sampledAt = -Infinity;
  /** Smoothed count of running threads; until a first reading, "more than the CPUs". */
  private running = Infinity;

  /** `now`: performance.now(). Reads the count at most every SAMPLE_MS. */
  isContended(now: number): boolean {
    if (now - this.sampledAt >= SAMPLE_MS) {
      this.sampledAt = now;
      const running = this.readRunning();
      if (running === null) this.running = Infinity;
      else this.running = this.running === Infinity ? running : (this.running + running) / 2;
    }
    return this.running > this.cpus + 0.5;
  }

  /**
   * Opened and closed per reading: a descriptor kept open would outlive a worker
   * thread's module state and leak, one per worker that ever had a layer.
   */
  private readRunning(): number | null {
    let fd: number;
    try {
      fd = openSync('/proc/loadavg', 'r');
    } catch {
      return null; // not Linux
    }
    let length: number;
    try {
      length = readSync(fd, this.buffer, 0, this.buffer.length, 0);
    } catch {
      return null;
    } finally {
      closeSync(fd);
    }
    const match = /^\S+ \S+ \S+ (\d+)\//.exec(this.buffer.toString('latin1', 0, length));
    return match ? Number(match[1]) : null;
  }
}
