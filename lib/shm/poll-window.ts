/** Bounds and start of the window (µs); the longest is the `spinMicros` option. */
const POLL_MIN_US = 8;
const POLL_START_US = 50;

/**
 * How long the event loop polls its bell word before it sleeps on the doorbell, learnt from how
 * long rings take to come: a few times their smoothed wait, so that quick replies do not cost a
 * long window, halved by every window that ends without one, so that an idle receiver stops
 * costing CPU.
 */
export class PollWindow {
  /** 0: never poll. */
  windowUs: number;
  /** Smoothed wait (µs) of the rings that came within the longest window. */
  private ringUs = POLL_START_US / 4;

  constructor(private readonly maxUs: number) {
    this.windowUs = Math.min(maxUs, POLL_START_US);
  }

  /** A poll caught a ring `waitedUs` after polling began. */
  caught(waitedUs: number): void {
    this.ringUs = this.ringUs * 0.75 + waitedUs * 0.25;
    this.windowUs = Math.min(this.maxUs, Math.max(POLL_MIN_US, 4 * this.ringUs, this.windowUs));
  }

  /** The window ended without a ring: we sleep. */
  missed(): void {
    this.windowUs = Math.min(this.maxUs, Math.max(POLL_MIN_US, this.windowUs / 2));
  }

  /**
   * We slept, and a ring woke us `waitedUs` after polling began. Within half the longest window,
   * polling would have caught it for less CPU than the wake-up took (a wake-up of an idle vCPU
   * costs ~50-100 µs here): learnt as a catch, or a window halved below the usual reply time
   * would never catch one again and every hop would sleep. Later rings teach nothing (idle
   * stretches, and senders a little slower than that, are cheaper asleep), and neither does any
   * ring while `contended` (more threads want to run than there are CPUs): it may have come
   * soon only because we stopped polling, and a longer window would delay it instead.
   */
  woke(waitedUs: number, contended: boolean): void {
    if (waitedUs <= this.maxUs / 2 && !contended) this.caught(waitedUs);
  }
}
