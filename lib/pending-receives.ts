import { abortError } from './errors.js';
import { ChannelSet } from './channel-set.js';
import type { Message, ReceivedFrom } from './types.js';

export interface Waiter {
  /** The channel of a receive(); undefined for a receiveAny() (which waits on `set`). */
  channel: string | undefined;
  set: ChannelSet | undefined;
  /** Arrival order across all waiters, so a message goes to the oldest receive that wants it. */
  seq: number;
  resolve(channel: string, message: Message): void;
  reject(error: unknown): void;
  signal: AbortSignal | undefined;
}

/**
 * Whether two lists hold the same names, in order. Run on every receiveAny() of a list that is
 * not frozen, so it is the per-call cost of a 100-channel loop: Object.is, not `!==`. With string
 * feedback V8 compiles `!==` to a call of its string comparison for every element, even when both
 * sides are the same string object (the usual case: the caller's own strings again); Object.is
 * compiles to a reference test that falls back to the comparison only for different objects
 * (~1.8 instead of ~3 ns per name on one machine). Four names per turn: the loop's own
 * bookkeeping was a third of its cost (100 names 558 -> 373 ns on another). `ours` is always one
 * of our own packed arrays of strings; frozen lists never get here (see setFor()), so the loads
 * stay specialised to the element kinds callers really use (with frozen and odd arrays mixed in
 * the same compare ran 3-5x slower).
 */
function sameContents(ours: readonly string[], theirs: readonly string[]): boolean {
  const length = ours.length;
  if (length !== theirs.length) return false;
  let i = 0;
  for (const whole = length - (length & 3); i < whole; i += 4) {
    if (
      !Object.is(ours[i], theirs[i]) ||
      !Object.is(ours[i + 1], theirs[i + 1]) ||
      !Object.is(ours[i + 2], theirs[i + 2]) ||
      !Object.is(ours[i + 3], theirs[i + 3])
    )
      return false;
  }
  for (; i < length; i++) if (!Object.is(ours[i], theirs[i])) return false;
  return true;
}

/** sameContents() for a frozen list: once per list (it is cached after), kept apart from it. */
function sameFrozen(ours: readonly string[], theirs: readonly string[]): boolean {
  if (ours.length !== theirs.length) return false;
  for (let i = 0; i < ours.length; i++) if (!Object.is(ours[i], theirs[i])) return false;
  return true;
}

/** Sets without waiters are swept when more than this many exist (a new set is being made). */
const IDLE_SETS_KEPT = 32;
/** A set unused for this long is dropped by the sweep (its backend state goes with it). */
const IDLE_SET_MS = 10_000;

/**
 * Receives waiting in this process, per channel, in arrival order, and receiveAny()s waiting per
 * channel set. A message is only ever taken from a queue for a waiter that is still here, so
 * cancelling a receive cannot lose a message. A message for a channel goes to the oldest receive
 * that wants it, whether that is a receive() of the channel or a receiveAny() naming it.
 *
 * Each AbortSignal gets one 'abort' listener however many receives share it (a long-lived
 * shutdown signal passed to thousands of receives must not trip Node's listener-leak warning);
 * the listener goes once the last receive using the signal has settled.
 */
export class PendingReceives {
  private readonly byChannel = new Map<string, Waiter[]>();
  private readonly bySignal = new Map<AbortSignal, { waiters: Set<Waiter>; onAbort: () => void }>();
  /** Every channel set in use, by key, and the sets naming each channel. */
  private readonly sets = new Map<string, ChannelSet>();
  private readonly setsOf = new Map<string, ChannelSet[]>();
  /** The set last resolved for a caller's array, with the names it held then. */
  private readonly setOfArray = new WeakMap<
    readonly string[],
    { names: string[]; frozen: boolean; set: ChannelSet }
  >();
  /** The set setFor() gave last (see there). */
  private lastSet: ChannelSet | undefined;
  private total = 0;
  private seq = 0;
  /** setFor()'s time stamp for sets (ms), and how many lookups it served. */
  private clock = Date.now();
  private lookups = 0;

  /**
   * `onEmpty`: nothing waits any more. `onAbandoned(channel)`: the last receive waiting on a
   * channel was cancelled (a backend withdraws what it registered for that channel).
   * `onSetDropped(set)`: an idle set was forgotten (a backend frees what it keeps for it).
   */
  constructor(
    private readonly onEmpty: () => void = () => {},
    private readonly onAbandoned: (channel: string) => void = () => {},
    private readonly onSetDropped: (set: ChannelSet) => void = () => {},
  ) {}

  get size(): number {
    return this.total;
  }

  /** Distinct AbortSignals this instance listens to (one listener each). */
  get signalCount(): number {
    return this.bySignal.size;
  }

  /** How many channels have waiting receive()s (receiveAny()s not counted). */
  get channels(): number {
    return this.byChannel.size;
  }

  /** Channel sets kept for receiveAny() (with or without waiters). */
  get setCount(): number {
    return this.sets.size;
  }

  add(channel: string, signal?: AbortSignal): Promise<Message> {
    if (signal?.aborted) return Promise.reject(abortError(signal));
    return new Promise<Message>((resolve, reject) => {
      let list = this.byChannel.get(channel);
      if (!list) {
        list = [];
        this.byChannel.set(channel, list);
      }
      const waiter: Waiter = {
        channel,
        set: undefined,
        seq: this.seq++,
        resolve: (_, message) => resolve(message),
        reject,
        signal,
      };
      if (signal) this.watch(signal, waiter);
      list.push(waiter);
      this.total++;
    });
  }

  /**
   * The set for a receiveAny() list: validates the names (with `validate`, once per distinct
   * list) and reuses the set a list with the same contents got before. Throws TypeError for an
   * empty list or a list that is not an array.
   */
  setFor(channels: readonly string[], validate: (channel: string) => void): ChannelSet {
    if (!Array.isArray(channels)) {
      throw new TypeError(`receiveAny() takes an array of channel names, got ${typeof channels}`);
    }
    if (channels.length === 0) throw new TypeError('receiveAny() needs at least one channel name');
    // The same array object again with the same contents: no string work at all, and for a
    // frozen array (its contents cannot have changed) not even the comparison.
    const cached = this.setOfArray.get(channels);
    if (cached && !cached.set.dropped && (cached.frozen || sameContents(cached.names, channels)))
      return this.used(cached.set);
    // Another array with the names of the set used last: a list written out in the call
    // (`receiveAny([inbox, 'jobs'])`) gets its set by one comparison, no validation and nothing
    // kept per array. (A set's names are valid and distinct, so equal lists mean the same set.)
    const last = this.lastSet;
    const frozen = Object.isFrozen(channels);
    if (
      last &&
      !last.dropped &&
      (frozen ? sameFrozen(last.channels, channels) : sameContents(last.channels, channels))
    ) {
      // A frozen one is kept, as below: its next calls need no comparison at all.
      if (frozen) this.setOfArray.set(channels, { names: [], frozen: true, set: last });
      return this.used(last);
    }
    this.clock = Date.now();
    for (const channel of channels) validate(channel);
    const distinct = [...new Set(channels)];
    const key = distinct.join(',');
    let set = this.sets.get(key);
    if (!set) {
      if (this.sets.size >= IDLE_SETS_KEPT) this.sweepSets();
      set = new ChannelSet(key, distinct);
      this.sets.set(key, set);
      for (const channel of distinct) {
        const list = this.setsOf.get(channel);
        if (list) list.push(set);
        else this.setsOf.set(channel, [set]);
      }
    }
    set.lastUsed = this.clock;
    this.lastSet = set;
    this.setOfArray.set(channels, { names: frozen ? [] : [...channels], frozen, set });
    return set;
  }

  /** setFor()'s answer for a set it found: stamped as used, remembered as the last one. */
  private used(set: ChannelSet): ChannelSet {
    // A clock read costs about as much as the rest of a receiveAny() here: the stamp is read
    // afresh every 64 calls. Staler only makes an idle-looking set go sooner (it is made again).
    if ((++this.lookups & 63) === 0) this.clock = Date.now();
    set.lastUsed = this.clock;
    this.lastSet = set;
    return set;
  }

  /** Waits for a message on any channel of `set`. */
  addAny(set: ChannelSet, signal?: AbortSignal): Promise<ReceivedFrom> {
    if (signal?.aborted) return Promise.reject(abortError(signal));
    return new Promise<ReceivedFrom>((resolve, reject) => {
      const waiter: Waiter = {
        channel: undefined,
        set,
        seq: this.seq++,
        resolve: (channel, message) => resolve({ channel, message }),
        reject,
        signal,
      };
      if (signal) this.watch(signal, waiter);
      set.waiters.push(waiter);
      this.total++;
    });
  }

  /** The channels with waiting receive()s and their waiters, oldest first (do not change them). */
  waitingChannels(): ReadonlyMap<string, readonly Waiter[]> {
    return this.byChannel;
  }

  /** Channels with receive() waiters and how many wait on each (receiveAny()s not included). */
  wanted(): Array<[channel: string, count: number]> {
    const out: Array<[string, number]> = [];
    for (const [channel, list] of this.byChannel) out.push([channel, list.length]);
    return out;
  }

  /** Every channel some receive or receiveAny waits on. */
  waitedChannels(): Set<string> {
    const out = new Set(this.byChannel.keys());
    for (const set of this.sets.values()) {
      if (set.waiters.length) for (const channel of set.channels) out.add(channel);
    }
    return out;
  }

  /** Sets with receiveAny()s waiting. */
  activeSets(): ChannelSet[] {
    const out: ChannelSet[] = [];
    for (const set of this.sets.values()) if (set.waiters.length) out.push(set);
    return out;
  }

  /** Every set kept (with or without waiters). */
  allSets(): IterableIterator<ChannelSet> {
    return this.sets.values();
  }

  /** Sets that name `channel`. */
  setsNaming(channel: string): readonly ChannelSet[] {
    return this.setsOf.get(channel) ?? [];
  }

  /** receive() waiters on the channel (receiveAny()s not included). */
  count(channel: string): number {
    return this.byChannel.get(channel)?.length ?? 0;
  }

  /** True if a receive() or a receiveAny() waits for a message of `channel`. */
  waits(channel: string): boolean {
    if (this.total === 0) return false; // a receive loop's usual case: no lookups
    if (this.byChannel.has(channel)) return true;
    const sets = this.setsOf.get(channel);
    if (sets) for (const set of sets) if (set.waiters.length) return true;
    return false;
  }

  /**
   * True if a receive waiting here is owed a message of one of the set's channels before a new
   * receiveAny() of the set: one of the set's own, a receive() of one of its channels, or another
   * set's receiveAny() naming one of them.
   */
  owesAnyOf(set: ChannelSet): boolean {
    if (this.total === 0) return false;
    if (set.waiters.length) return true;
    for (const channel of this.byChannel.keys()) if (set.has(channel)) return true;
    for (const other of this.sets.values()) {
      if (other === set || other.waiters.length === 0) continue;
      for (const channel of other.channels) if (set.has(channel)) return true;
    }
    return false;
  }

  /** Hands a message to the oldest receive that wants the channel's messages; false if none. */
  deliver(channel: string, message: Message): boolean {
    return this.resolveTaken(this.takeOldest(channel), channel, message);
  }

  /** Hands a message of `channel` (one of the set's) to the set's oldest receiveAny(). */
  deliverToSet(set: ChannelSet, channel: string, message: Message): boolean {
    return this.resolveTaken(this.takeFromSet(set), channel, message);
  }

  /** Fails the oldest receive of the channel (its message could not be decoded). */
  fail(channel: string, error: unknown): boolean {
    return this.rejectTaken(this.takeOldest(channel), error);
  }

  /** Fails the set's oldest receiveAny(). */
  failSet(set: ChannelSet, error: unknown): boolean {
    return this.rejectTaken(this.takeFromSet(set), error);
  }

  private resolveTaken(waiter: Waiter | undefined, channel: string, message: Message): boolean {
    if (!waiter) return false;
    waiter.resolve(channel, message);
    if (this.total === 0) this.onEmpty();
    return true;
  }

  private rejectTaken(waiter: Waiter | undefined, error: unknown): boolean {
    if (!waiter) return false;
    waiter.reject(error);
    if (this.total === 0) this.onEmpty();
    return true;
  }

  /** Rejects every receive waiting on `channel`, receiveAny()s naming it too (it was released). */
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
    for (const set of this.sets.values()) lists.push(set.waiters.splice(0));
    this.total = 0;
    for (const [signal, { onAbort }] of this.bySignal) signal.removeEventListener('abort', onAbort);
    this.bySignal.clear();
    for (const list of lists) {
      for (const waiter of list) waiter.reject(error);
    }
    this.onEmpty();
  }

  /** The oldest of the channel's receive() and the receiveAny()s of sets naming it. */
  private takeOldest(channel: string): Waiter | undefined {
    const list = this.byChannel.get(channel);
    let best: Waiter | undefined = list?.[0];
    let bestSet: ChannelSet | undefined;
    const sets = this.setsOf.get(channel);
    if (sets) {
      for (const set of sets) {
        const head = set.waiters[0];
        if (head && (!best || head.seq < best.seq)) {
          best = head;
          bestSet = set;
        }
      }
    }
    if (!best) return undefined;
    if (bestSet) return this.takeFromSet(bestSet);
    list!.shift();
    if (list!.length === 0) this.byChannel.delete(channel);
    this.total--;
    this.unwatch(best);
    return best;
  }

  private takeFromSet(set: ChannelSet): Waiter | undefined {
    const waiter = set.waiters.shift();
    if (!waiter) return undefined;
    this.total--;
    this.unwatch(waiter);
    return waiter;
  }

  /** Forgets sets nobody waits on that were not used for a while. */
  private sweepSets(): void {
    const cutoff = Date.now() - IDLE_SET_MS;
    for (const [key, set] of this.sets) {
      if (set.waiters.length || set.lastUsed > cutoff) continue;
      this.sets.delete(key);
      set.dropped = true;
      for (const channel of set.channels) {
        const list = this.setsOf.get(channel);
        if (!list) continue;
        const at = list.indexOf(set);
        if (at !== -1) list.splice(at, 1);
        if (list.length === 0) this.setsOf.delete(channel);
      }
      this.onSetDropped(set);
    }
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
    // One pass per channel or set touched, so aborting thousands of receives stays linear.
    const channels = new Set<string>();
    const sets = new Set<ChannelSet>();
    for (const waiter of waiters) {
      if (waiter.set) sets.add(waiter.set);
      else channels.add(waiter.channel!);
    }
    const maybeAbandoned = new Set<string>();
    for (const channel of channels) {
      const list = this.byChannel.get(channel);
      if (!list) continue;
      const kept = list.filter((waiter) => !waiters.has(waiter));
      this.total -= list.length - kept.length;
      if (kept.length) {
        this.byChannel.set(channel, kept);
      } else {
        this.byChannel.delete(channel);
        maybeAbandoned.add(channel);
      }
    }
    for (const set of sets) {
      const kept = set.waiters.filter((waiter) => !waiters.has(waiter));
      this.total -= set.waiters.length - kept.length;
      set.waiters = kept;
      if (kept.length === 0) for (const channel of set.channels) maybeAbandoned.add(channel);
    }
    for (const channel of maybeAbandoned) if (!this.waits(channel)) this.onAbandoned(channel);
    for (const waiter of waiters) waiter.reject(error);
    waiters.clear();
    if (this.total === 0) this.onEmpty();
  }
}
