import { abortError } from './errors.js';
import type { Message } from './types.js';

interface Waiter {
  channel: string;
  resolve(message: Message): void;
  reject(error: unknown): void;
  signal: AbortSignal | undefined;
}

/**
 * Receives waiting in this process, per channel, in arrival order. A message is only ever taken
 * from a queue for a waiter that is still here, so cancelling a receive cannot lose a message.
 *
 * Each AbortSignal gets one 'abort' listener however many receives share it (a long-lived
 * shutdown signal passed to thousands of receives must not trip Node's listener-leak warning);
 * the listener goes once the last receive using the signal has settled.
 */
export class PendingReceives {
  private readonly byChannel = new Map<string, Waiter[]>();
  private readonly bySignal = new Map<AbortSignal, { waiters: Set<Waiter>; onAbort: () => void }>();
  private total = 0;

  /**
   * `onEmpty`: nothing waits any more. `onAbandoned(channel)`: the last receive waiting on a
   * channel was cancelled (a backend withdraws what it registered for that channel).
   */
  constructor(
    private readonly onEmpty: () => void = () => {},
    private readonly onAbandoned: (channel: string) => void = () => {},
  ) {}

  get size(): number {
    return this.total;
  }

  /** Distinct AbortSignals this instance listens to (one listener each). */
  get signalCount(): number {
    return this.bySignal.size;
  }

  /** How many channels have waiting receives. */
  get channels(): number {
    return this.byChannel.size;
  }

  add(channel: string, signal?: AbortSignal): Promise<Message> {
    if (signal?.aborted) return Promise.reject(abortError(signal));
    return new Promise<Message>((resolve, reject) => {
      let list = this.byChannel.get(channel);
      if (!list) {
        list = [];
        this.byChannel.set(channel, list);
      }
      const waiter: Waiter = { channel, resolve, reject, signal };
      if (signal) this.watch(signal, waiter);
      list.push(waiter);
      this.total++;
    });
  }

  /** Channels with waiters and how many wait on each. */
  wanted(): Array<[channel: string, count: number]> {
    const out: Array<[string, number]> = [];
    for (const [channel, list] of this.byChannel) out.push([channel, list.length]);
    return out;
  }

  count(channel: string): number {
    return this.byChannel.get(channel)?.length ?? 0;
  }

  /** Hands a message to the oldest waiter of the channel; false if none waits. */
  deliver(channel: string, message: Message): boolean {
    const waiter = this.takeOldest(channel);
    if (!waiter) return false;
    waiter.resolve(message);
    if (this.total === 0) this.onEmpty();
    return true;
  }

  /** Fails the oldest waiter of the channel (its message could not be decoded). */
  fail(channel: string, error: unknown): boolean {
    const waiter = this.takeOldest(channel);
    if (!waiter) return false;
    waiter.reject(error);
    if (this.total === 0) this.onEmpty();
    return true;
  }

  /** Rejects every receive waiting on `channel` (it was released). */
  rejectChannel(channel: string, error: unknown): void {
    let waiter: Waiter | undefined;
    let rejected = false;
    while ((waiter = this.takeOldest(channel))) {
      waiter.reject(error);
      rejected = true;
    }
    if (rejected && this.total === 0) this.onEmpty();
  }

  rejectAll(error: unknown): void {
    const lists = [...this.byChannel.values()];
    this.byChannel.clear();
    this.total = 0;
    for (const [signal, { onAbort }] of this.bySignal) signal.removeEventListener('abort', onAbort);
    this.bySignal.clear();
    for (const list of lists) {
      for (const waiter of list) waiter.reject(error);
    }
    this.onEmpty();
  }

  private takeOldest(channel: string): Waiter | undefined {
    const list = this.byChannel.get(channel);
    const waiter = list?.shift();
    if (!waiter) return undefined;
    if (list!.length === 0) this.byChannel.delete(channel);
    this.total--;
    this.unwatch(waiter);
    return waiter;
  }

  private watch(signal: AbortSignal, waiter: Waiter): void {
    let entry = this.bySignal.get(signal);
    if (!entry) {
      const waiters = new Set<Waiter>();
      const onAbort = (): void => this.aborted(signal, waiters);
      entry = { waiters, onAbort };
      this.bySignal.set(signal, entry);
      signal.addEventListener('abort', onAbort, { once: true });
    }
    entry.waiters.add(waiter);
  }

  private unwatch(waiter: Waiter): void {
    const signal = waiter.signal;
    if (!signal) return;
    const entry = this.bySignal.get(signal);
    if (!entry) return;
    entry.waiters.delete(waiter);
    if (entry.waiters.size === 0) {
      signal.removeEventListener('abort', entry.onAbort);
      this.bySignal.delete(signal);
    }
  }

  /** Every receive still waiting on `signal` is withdrawn and rejects with its AbortError. */
  private aborted(signal: AbortSignal, waiters: Set<Waiter>): void {
    if (this.bySignal.get(signal)?.waiters !== waiters) return;
    this.bySignal.delete(signal);
    const error = abortError(signal);
    // One pass per channel touched, so aborting thousands of receives stays linear.
    const channels = new Set<string>();
    for (const waiter of waiters) channels.add(waiter.channel);
    for (const channel of channels) {
      const list = this.byChannel.get(channel);
      if (!list) continue;
      const kept = list.filter((waiter) => !waiters.has(waiter));
      this.total -= list.length - kept.length;
      if (kept.length) {
        this.byChannel.set(channel, kept);
      } else {
        this.byChannel.delete(channel);
        this.onAbandoned(channel);
      }
    }
    for (const waiter of waiters) waiter.reject(error);
    waiters.clear();
    if (this.total === 0) this.onEmpty();
  }
}
