// Sends to other servers' channels and never drops silently. What is emitted together goes as one
// batch, and one send per destination is in flight at a time, with what is emitted meanwhile
// batched behind it (a burst of emits costs a few layer messages, not one each). A destination's
// first batch of an event-loop turn leaves as soon as the code that emitted it is done; what
// other callbacks of the same turn emit for it waits for the check phase and goes together. A
// destination that is full (ChannelFull) keeps its batch
// and is retried with backoff; later messages wait behind it, so per-destination order holds.
import { ChannelFull } from '../errors.js';
import type { Message } from '../types.js';
import { MESSAGE_TYPE } from './protocol.js';

const FIRST_RETRY_MS = 1;
const MAX_RETRY_MS = 50;
/** Bounds of one batch: entries and bytes. */
const BATCH_ENTRIES = 256;
const BATCH_BYTES = 512 * 1024;

interface Queue {
  entries: Uint8Array[];
  sending: boolean;
  delayMs: number;
  timer?: NodeJS.Timeout;
}

export class Outbox {
  private readonly queues = new Map<string, Queue>();
  private closed = false;
  /** Sends that found their destination full and were retried. */
  retries = 0;
  /** Layer messages sent (each a batch of envelopes). */
  batches = 0;
  private idleWaiters: Array<() => void> = [];
  /** Destinations whose batch of this event-loop turn left already (see send()). */
  private readonly sentThisTurn = new Set<string>();
  private turnEnd: NodeJS.Immediate | undefined;

  /**
   * @param onError a send failed for another reason than a full channel; that batch is dropped
   *   (it could never be delivered) and the error reported.
   * @param isAlive whether a full destination is still worth waiting for: a dead server's channel
   *   never drains, so its queue is dropped.
   */
  constructor(
    private readonly sendNow: (channel: string, message: Message) => Promise<void>,
    private readonly onError: (error: unknown, destination: string) => void,
    private readonly isAlive: (destination: string) => Promise<boolean>,
  ) {}

  /** Queues one encoded envelope for `destination`; sends at once when nothing is in flight. */
  send(destination: string, entry: Uint8Array): void {
    if (this.closed) return;
    let queue = this.queues.get(destination);
    if (!queue) {
      queue = { entries: [], sending: false, delayMs: FIRST_RETRY_MS };
      this.queues.set(destination, queue);
    }
    queue.entries.push(entry);
    if (queue.sending) return;
    queue.sending = true;
    const pump = () => void this.pump(destination, queue);
    if (this.sentThisTurn.has(destination)) {
      // Another callback of this turn sent there already: what the rest of the turn emits for
      // it goes together from the check phase (one layer message, one wake-up of the receiver).
      setImmediate(pump);
      return;
    }
    // A tick queued here runs once the promise jobs queued so far are done: a synchronous burst
    // of emits, and the publishing chains behind them, still make one batch. Not held until the
    // check phase: the turn's other I/O (other servers' messages to deliver) would come first,
    // and at a low rate there is nothing to batch with anyway.
    this.sentThisTurn.add(destination);
    this.turnEnd ??= setImmediate(() => {
      this.turnEnd = undefined;
      this.sentThisTurn.clear();
    });
    process.nextTick(pump);
  }

  /** Envelopes not yet handed to the layer, for one destination or all. */
  waiting(destination?: string): number {
    if (destination !== undefined) return this.queues.get(destination)?.entries.length ?? 0;
    let total = 0;
    for (const queue of this.queues.values()) total += queue.entries.length;
    return total;
  }

  /** Resolves once every queue is empty (everything queued so far was handed to the layer). */
  idle(): Promise<void> {
    if (this.queues.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Drops what waits for a destination that is gone. */
  forget(destination: string): void {
    const queue = this.queues.get(destination);
    if (!queue) return;
    clearTimeout(queue.timer);
    queue.entries.length = 0;
    this.queues.delete(destination);
    this.maybeIdle();
  }

  private maybeIdle(): void {
    if (this.queues.size > 0 || this.idleWaiters.length === 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }

  close(): void {
    this.closed = true;
    clearImmediate(this.turnEnd);
    this.sentThisTurn.clear();
    for (const destination of [...this.queues.keys()]) this.forget(destination);
    this.maybeIdle();
  }

  private async pump(destination: string, queue: Queue): Promise<void> {
    queue.sending = true;
    try {
      while (queue.entries.length && !this.closed && this.queues.get(destination) === queue) {
        let count = 0;
        let bytes = 0;
        while (count < queue.entries.length && count < BATCH_ENTRIES) {
          const size = queue.entries[count]!.byteLength;
          if (count > 0 && bytes + size > BATCH_BYTES) break;
          bytes += size;
          count++;
        }
        const batch = queue.entries.slice(0, count);
        try {
          await this.sendNow(destination, { type: MESSAGE_TYPE, b: batch });
          this.batches++;
          queue.entries.splice(0, count);
          queue.delayMs = FIRST_RETRY_MS;
        } catch (error) {
          if (!(error instanceof ChannelFull)) {
            queue.entries.splice(0, count);
            this.onError(error, destination);
            continue;
          }
          if (
            queue.delayMs >= MAX_RETRY_MS &&
            !(await this.isAlive(destination).catch(() => true))
          ) {
            this.forget(destination);
            return;
          }
          this.retries++;
          // Wait for the receiver to make room; everything queued keeps its place.
          await new Promise<void>((resolve) => {
            queue.timer = setTimeout(resolve, queue.delayMs);
          });
          queue.delayMs = Math.min(queue.delayMs * 2, MAX_RETRY_MS);
        }
      }
    } finally {
      queue.sending = false;
      if (this.queues.get(destination) === queue && queue.entries.length === 0)
        this.queues.delete(destination);
      this.maybeIdle();
    }
  }
}
