import { abortError } from './errors.js';
import type { Message } from './types.js';

interface Waiter {
  resolve(message: Message): void;
  reject(error: unknown): void;
  cleanup(): void;
}

/**
 * Receives waiting in this process, per channel, in arrival order. A message is only ever taken
 * from a queue for a waiter that is still here, so cancelling a receive cannot lose a message.
 */
export class PendingReceives {
  private readonly byChannel = new Map<string, Waiter[]>();
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

  add(channel: string, signal?: AbortSignal): Promise<Message> {
    if (signal?.aborted) return Promise.reject(abortError(signal));
    return new Promise<Message>((resolve, reject) => {
      let list = this.byChannel.get(channel);
      if (!list) {
        list = [];
        this.byChannel.set(channel, list);
      }
      const onAbort = (): void => {
        if (this.remove(channel, waiter)) reject(abortError(signal!));
      };
      const waiter: Waiter = {
        resolve,
        reject,
        cleanup: () => signal?.removeEventListener('abort', onAbort),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
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
    const list = this.byChannel.get(channel);
    const waiter = list?.shift();
    if (!waiter) return false;
    if (list!.length === 0) this.byChannel.delete(channel);
    this.total--;
    waiter.cleanup();
    waiter.resolve(message);
    if (this.total === 0) this.onEmpty();
    return true;
  }

  /** Fails the oldest waiter of the channel (its message could not be decoded). */
  fail(channel: string, error: unknown): boolean {
    const list = this.byChannel.get(channel);
    const waiter = list?.shift();
    if (!waiter) return false;
    if (list!.length === 0) this.byChannel.delete(channel);
    this.total--;
    waiter.cleanup();
    waiter.reject(error);
    if (this.total === 0) this.onEmpty();
    return true;
  }

  rejectAll(error: unknown): void {
    const lists = [...this.byChannel.values()];
    this.byChannel.clear();
    this.total = 0;
    for (const list of lists) {
      for (const waiter of list) {
        waiter.cleanup();
        waiter.reject(error);
      }
    }
    this.onEmpty();
  }

  private remove(channel: string, waiter: Waiter): boolean {
    const list = this.byChannel.get(channel);
    const at = list ? list.indexOf(waiter) : -1;
    if (at === -1) return false;
    list!.splice(at, 1);
    this.total--;
    waiter.cleanup();
    if (list!.length === 0) {
      this.byChannel.delete(channel);
      this.onAbandoned(channel);
    }
    if (this.total === 0) this.onEmpty();
    return true;
  }
}
