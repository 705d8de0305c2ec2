import { CapacityRules } from '../capacity-rules.js';
import type { ChannelSet } from '../channel-set.js';
import {
  abortError,
  ChannelFull,
  ChannelReleased,
  LayerClosed,
  LockTimeout,
  ShmError,
} from '../errors.js';
import { ChannelLayerBase } from '../layer-base.js';
import { LocalChannels, nonLocalPart } from '../local-channels.js';
import { validateGroupName } from '../names.js';
import { PendingReceives } from '../pending-receives.js';
import { MsgpackSerializer } from '../serializer.js';
import type * as api from '../types.js';
import { native, type LockHoldStats, type NativeLayer, type NativeStats } from './addon.js';
import {
  callNative,
  emptiedRequest,
  isLockBusy,
  packageError,
  readReceiveAnyBatch,
  readReceiveBatch,
  tryLocked,
  type BatchVisitor,
  type InboxVisitor,
  type LockBusy,
} from './boundary.js';
import { CpuContention } from './cpu-contention.js';
import { PollWindow } from './poll-window.js';
import { segmentSizing, type SegmentSizing } from './sizing.js';

export interface ShmChannelLayerOptions extends api.ChannelLayerOptions {
  /** Layer name: every process that opens the same name shares one segment. Default 'default'. */
  name?: string;
  /** Segment size in bytes, reserved in /dev/shm when the segment is created. Default 64 MiB. */
  size?: number;
  /** Largest serialized message, in bytes. Default 16 MiB, or a quarter of a smaller segment. */
  maxMessageSize?: number;
  /** Channel records (named queues that exist at once). Default 16384 (scaled down with size). */
  maxChannels?: number;
  /** Group records. Default 4096 (scaled down with size). */
  maxGroups?: number;
  /** Group memberships across all groups. Default 65536 (scaled down with size). */
  maxMembers?: number;
  /** Queued deliveries across all channels. Default 262144 (scaled down with size). */
  maxNodes?: number;
  /** File mode of the segment and its doorbells. Default 0o600 (this user only). */
  mode?: number;
  /** Attach to a segment owned by another user or with another mode. Default false. */
  allowForeign?: boolean;
  /** Create the segment if it does not exist. Default true; false attaches or fails (tools). */
  create?: boolean;
  /**
   * Longest window (µs) in which the event loop keeps polling the doorbell word in shared memory
   * (once per event-loop turn) while receives wait, before it sleeps on the doorbell. The window
   * adapts below this bound: it grows while replies come within it or within half this bound
   * (unless more threads want to run than there are CPUs) and shrinks while they do not. 0: never
   * poll, always sleep. Default 200.
   */
  spinMicros?: number;
  /**
   * How long an operation may wait for another process that holds the segment lock and does not
   * let go (stopped, debugged, frozen) before it fails with `LockTimeout` (ms). Default 5000.
   * The wait never blocks the event loop for more than a few ms at a time.
   */
  lockTimeout?: number;
}

export interface ShmLayerStats extends NativeStats {
  name: string;
  channelList: Array<{ name: string; depth: number; groups: number }>;
  groupList: Array<{ name: string; members: number }>;
}

const MAINTENANCE_INTERVAL_MS = 2000;

/**
 * A layer dropped without close() gives back its slot and doorbell when it is
 * collected. The native wake callback and the housekeeping timer reach the layer only through a
 * WeakRef, so they do not keep it alive; what they need to shut down is held here instead.
 */
const unclosed = new FinalizationRegistry<{ handle: NativeLayer; maintenance: NodeJS.Timeout }>(
  ({ handle, maintenance }) => {
    clearInterval(maintenance);
    try {
      handle.close();
    } catch {
      // nothing left to tell anyone
    }
  },
);

/** Layers with receives waiting: a pending receive keeps its layer (and the process) alive. */
const waitingLayers = new Set<ShmChannelLayer>();
/** The longest poll window (µs) unless `spinMicros` says otherwise. */
const DEFAULT_POLL_MAX_US = 200;
/** Whether the machine has more running threads than CPUs; one reader for every layer here. */
const cpuContention = new CpuContention();
/**
 * Up to this many channels with waiting receives, every drain names them all, and the same native
 * call answers the doorbell (one call and one lock per wake-up). Beyond, the doorbell's ready list
 * names the few channels that rang.
 */
const COVER_ALL_CHANNELS = 32;
/** Indices in the native bellView(): [slot state, bell (rung since we looked), armed (we sleep)]. */
const BELL = 1;
const ARMED = 2;
/** Receive batches up to this size are copied into one reused buffer. */
const SCRATCH_BYTES = 64 * 1024;
/** Payloads this long or longer are copied outside the segment lock (the core's threshold). */
let outOfLockBytesValue: number | undefined;
function outOfLockBytes(): number {
  return (outOfLockBytesValue ??= native().constants.outOfLockBytes);
}
/** Adds `count` to `name`'s entry in the parallel lists `names` and `counts` (a drain's inboxes). */
function tally(names: string[], counts: number[], name: string, count: number): void {
  const at = names.indexOf(name);
  if (at !== -1) counts[at]! += count;
  else {
    names.push(name);
    counts.push(count);
  }
}
/** `length` zeros (Array.prototype.fill on a new Array costs several times this loop). */
function zeros(length: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < length; i++) out.push(0);
  return out;
}
/** A settled promise whose reactions run as microtasks (see willHandOut()). */
const SETTLED = Promise.resolve();
/** A drain's channel sets when there are none (not a fresh array per drain). */
const NO_SETS: readonly ChannelSet[] = Object.freeze([]);
/** pullSet()'s positions when there are no candidates (not a fresh array per call). */
const NO_POSITIONS: readonly number[] = Object.freeze([]);
/**
 * Every send to one of our own '!' channels ('<prefix>.<client>!<x>') and every group send to
 * our '!' members of a group is ONE entry in the inbox '<prefix>.<client>!' in shared memory
 * (channels_redis: one key per '<prefix>.<client>!'). A drain of an inbox takes up to this many
 * entries, within INBOX_BYTES of payload, whoever they are for, and keeps what no receive waits
 * for yet in per-channel buffers: the next receive()s of those channels cost no native call, no
 * lock and no doorbell. Only this instance can receive them anyway.
 */
const INBOX_ENTRIES = 64;
const INBOX_BYTES = 48 * 1024;
/**
 * Of those entries, one per receive() waiting on the inbox's channels, up to this many, are asked
 * for as wanted (the rest as extra, within INBOX_BYTES): a pop that comes back short of them found
 * the inbox empty and left our wait there, so no second call is needed to wait again (a process
 * with several receive loops, as the Socket.IO adapter runs, made two calls per wake-up).
 */
const INBOX_WANTED = 8;

/**
 * A message of our own '!' channels taken from an inbox before anyone asked: one object per inbox
 * entry, in the buffer of every channel it is for, decoded once for all of them.
 */
interface BufferedMessage {
  bytes: Uint8Array;
  decoded?: { message: api.Message } | { error: unknown };
  /** performance.now() after which it has expired (as it would have in the queue). */
  expiresAt: number;
  /** Order of arrival across every buffer (receiveAny takes the oldest). */
  order: number;
}

/**
 * How often buffered messages may be checked against one clock reading (a clock read costs about
 * a tenth of a buffered receive here); the reading is also renewed on every event-loop turn.
 */
const CLOCK_USES = 64;

/** A receiver's error for a message whose stored bytes failed their checksum (it was dropped). */
function damagedError(channel: string): ShmError {
  return new ShmError(
    `a message for ${channel} failed its checksum in shared memory and was dropped`,
    'ECORRUPT',
  );
}

/** The sizes given explicitly in `options` that the (existing) segment does not have, or null. */
function differingSizes(options: ShmChannelLayerOptions, actual: SegmentSizing): string | null {
  const differing: string[] = [];
  for (const key of [
    'size',
    'maxMessageSize',
    'maxChannels',
    'maxGroups',
    'maxMembers',
    'maxNodes',
  ] as const) {
    const given = options[key];
    if (given !== undefined && given !== actual[key])
      differing.push(`${key} ${actual[key]} (not ${given})`);
  }
  return differing.length ? differing.join(', ') : null;
}

/** A native call waiting for the segment lock (lib's retry queue). */
interface LockedCall {
  call(): unknown;
  resolve(value: unknown): void;
  reject(error: unknown): void;
  since: number;
}

/**
 * What this instance keeps per receiveAny() channel set: its native id and which of its channels
 * may hold messages. Every other channel of the set has our wait registered in shared memory, so
 * a send to it rings us (and `ready()` names it): only candidates need looking at.
 */
interface SetState {
  /** The native set of the named channels; -1 when the set names only our own '!' channels. */
  id: number;
  /** The set's channels the native set holds (our own '!' channels come through inboxes). */
  channels: readonly string[];
  /** Inboxes of the set's own '!' channels. */
  inboxes: readonly string[];
  positionOf: Map<string, number>;
  candidates: Set<number>;
  /** Look at every channel of the set next time (new set, flush, overflowed ready lists...). */
  all: boolean;
  /** Channels the core knows to hold messages (it keeps their heads): worth a call unasked. */
  held: number;
}

/**
 * A channel layer shared by every process on this machine that opens the same `name`: a POSIX
 * shared-memory segment holds the queues, groups and messages; a per-instance doorbell wakes
 * receivers. No server.
 */
export class ShmChannelLayer extends ChannelLayerBase implements api.ChannelLayer {
  readonly name: string;
  private readonly handle: NativeLayer;
  private readonly pending: PendingReceives;
  private readonly maintenance: NodeJS.Timeout;
  private drainScheduled = false;
  /** Where the next drain starts among its channel sets and receive()s (see drain()). */
  private drainTurn = 0;
  /** Channels whose last waiting receive was cancelled: their waits are withdrawn in one call. */
  private readonly abandoned = new Set<string>();
  /** Channels to look at on the next drain: new receives, and channels that rang our doorbell. */
  private readonly dirty = new Set<string>();
  /** Look at every waiting channel on the next drain (after flush, overflowed ready lists...). */
  private drainAll = false;
  /**
   * Our inboxes that the last receive call found empty: that call left our wait registered, so
   * the next entry there rings our bell. Until the bell rings, a receive() added to one of our
   * '!' channels (a receive loop coming back for its next message) has nothing to find, and its
   * drain makes no native call: one lock and one call fewer per wake-up. Only our inboxes:
   * nobody else receives from them or drops our wait there.
   */
  private readonly emptyWaited = new Set<string>();
  private waiting = false;
  private unlinked = false;
  /** Our slot's doorbell words in shared memory; null where external buffers are refused. */
  private readonly bell: Int32Array | null;
  private readonly pollWindow: PollWindow;
  private pollScheduled = false;
  private pollStartedAt = 0;
  /** Whether more threads wanted to run than there are CPUs when the last window ended. */
  private contendedAtMiss = true;
  /** We sleep on the doorbell FIFO: senders write to it. */
  private armed = false;
  private readonly pollTick = (): void => this.poll();
  private readonly lockTimeout: number;
  /** Calls that found the lock busy, in call order; later calls queue behind them. */
  private readonly lockBacklog: LockedCall[] = [];
  private lockRetry: NodeJS.Immediate | undefined;
  private drainRetry: NodeJS.Immediate | undefined;
  /** The serializer when it is the default msgpack one: transient bytes, detached decoding. */
  private readonly msgpack: MsgpackSerializer | undefined;
  /** Where small receive batches land (see drain()). */
  private readonly scratch = Buffer.allocUnsafeSlow(SCRATCH_BYTES);
  /** The last large message a full channel refused (weakly: a retry loop may give up on it). */
  private refusedLarge: { channel: string; message: WeakRef<object> } | undefined;
  /** Messages of our own '!' channels taken from their inboxes ahead of their receive()s. */
  private readonly buffered = new Map<string, BufferedMessage[]>();
  private bufferedOrder = 0;
  /** A buffer holds at most its channel's capacity: the oldest give way (channels_redis too). */
  private readonly capacities: CapacityRules;
  /** No channel's capacity is below this (a buffer this short needs no lookup). */
  private readonly leastCapacity: number;
  /** Our '!' channels released, until when (performance.now()) entries for them may still come. */
  private readonly released = new Map<string, number>();
  /**
   * Buffered messages dropped unreceived (expired, their channel released or unknown) and not
   * yet reported to the segment's counters (reportBufferDrops(): on release, housekeeping, close).
   */
  private bufferedExpired = 0;
  private bufferedOrphaned = 0;
  /** Buffered messages that gave way to newer ones, not yet reported either. */
  private bufferedSkippedFull = 0;
  /** The buffers' clock (bufferClock()): a reading, its uses, and whether this loop turn made it. */
  private clockReading = 0;
  private clockUses = 0;
  private clockFresh = false;
  private readonly clockTurn = (): void => {
    this.clockFresh = false;
  };

  constructor(options: ShmChannelLayerOptions = {}) {
    // The client id must fit the core's kMaxClientLength (32) characters.
    super(options, new LocalChannels(6, 12));
    this.msgpack = this.serializer instanceof MsgpackSerializer ? this.serializer : undefined;
    this.name = options.name ?? 'default';
    this.pending = new PendingReceives(
      () => this.setWaiting(false),
      (channel) => this.abandon(channel),
      (set) => this.dropSet(set),
    );
    this.capacities = new CapacityRules(this.settings);
    this.leastCapacity = Math.min(
      this.settings.capacity,
      ...this.settings.channelCapacity.map(([, capacity]) => capacity),
    );
    this.pollWindow = new PollWindow(Math.max(0, options.spinMicros ?? DEFAULT_POLL_MAX_US));
    const sizing = segmentSizing(options);
    this.lockTimeout = options.lockTimeout ?? native().constants.defaultLockTimeoutMs;
    if (!(this.lockTimeout >= 0) || !Number.isFinite(this.lockTimeout)) {
      throw new TypeError(
        `lockTimeout must be a finite number of milliseconds >= 0, got ${options.lockTimeout}`,
      );
    }
    this.handle = callNative(
      () =>
        new (native().NativeLayer)(
          {
            name: this.name,
            ...sizing,
            mode: options.mode,
            allowForeign: options.allowForeign,
            create: options.create,
            capacity: this.settings.capacity,
            channelCapacity: this.settings.channelCapacity,
            expiryMs: Math.round(this.settings.expirySeconds * 1000),
            groupExpiryMs: Math.round(this.settings.groupExpirySeconds * 1000),
            lockTimeoutMs: this.lockTimeout,
            clientId: this.local.client,
          },
          ShmChannelLayer.weakly(this).wake,
        ),
    );
    this.bell = callNative(() => this.handle.bellView());
    const mismatch = differingSizes(options, this.handle.config());
    if (mismatch) {
      this.handle.close();
      throw new ShmError(
        `layer '${this.name}' already exists with ${mismatch}: a segment's sizes are fixed when it is created. ` +
          'Leave the option out to use the existing segment, or destroy it first (ShmChannelLayer.destroy(name), ' +
          '`npx shm-channels destroy <name>`) when no process uses it',
        'EOPTIONS',
      );
    }
    // Reclaims dead processes' slots and channels, drops expired messages nobody received.
    // Unref'd: housekeeping never keeps the process alive.
    this.maintenance = setInterval(ShmChannelLayer.weakly(this).maintain, MAINTENANCE_INTERVAL_MS);
    this.maintenance.unref();
    unclosed.register(this, { handle: this.handle, maintenance: this.maintenance }, this);
  }

  /** Callbacks that reach `layer` through a WeakRef (made here, where no closure holds `this`). */
  private static weakly(layer: ShmChannelLayer): { wake: () => void; maintain: () => void } {
    const ref = new WeakRef(layer);
    return { wake: () => ref.deref()?.onWake(), maintain: () => ref.deref()?.maintain() };
  }

  /** Removes a layer's segment and doorbells. Processes still attached keep working on their copy. */
  static destroy(name: string): boolean {
    return callNative(() => native().NativeLayer.destroy(name));
  }

  /**
   * Removes layer `name` if no process is attached and no unexpired message waits in it (what
   * `npx shm-channels prune` does for every layer); otherwise only gives back its empty memory.
   * Returns whether it was removed. Throws ENOTFOUND for a layer that does not exist.
   */
  static prune(name: string): boolean {
    const handle = callNative(
      () =>
        new (native().NativeLayer)(
          {
            name,
            create: false,
            capacity: 1,
            channelCapacity: [],
            expiryMs: 1000,
            groupExpiryMs: 1000,
          },
          () => {},
        ),
    );
    try {
      return callNative(() => handle.prune());
    } finally {
      handle.close();
    }
  }

  /** Messages queued in layer `name`, read without attaching; -1 if missing or unreadable. */
  static peekQueued(name: string): number {
    return callNative(() => native().NativeLayer.peekQueued(name));
  }

  /** Processes attached to layer `name` (of any shm-channels version); -1 if it does not exist. */
  static attachedProcesses(name: string): number {
    return callNative(() => native().NativeLayer.attachedProcesses(name));
  }

  async send(channel: string, message: api.MessageInput): Promise<void> {
    this.checkSend(channel, message);
    const refused = this.refusedLarge;
    if (refused && refused.channel === channel && refused.message.deref() === message) {
      // A retry loop resending the large message its channel refused: while the channel is still
      // full it is refused again at the cost of a look, not of serializing and copying megabytes
      // (5 MB: about 0.5 ms of CPU per retry, taken from the receiver that would make room).
      const full = tryLocked(() => this.handle.refusesAsFull(channel));
      if (typeof full === 'number')
        throw new ChannelFull(`channel ${channel} is full (capacity ${full})`);
    }
    // A large binary value goes into the segment from the message itself (one copy), the rest
    // of the message from the serializer's bytes: [start, end) of the one buffer, or pieces.
    let payload: Uint8Array | Uint8Array[];
    let start = 0;
    let end: number;
    if (this.msgpack) {
      payload = this.msgpack.serializeForCopy(message as api.Message, outOfLockBytes());
      start = this.msgpack.packedStart;
      end = this.msgpack.packedEnd;
    } else {
      payload = this.serializer.serialize(message as api.Message);
      end = payload.length;
    }
    if (this.lockBacklog.length === 0) {
      // The common case, done at once (tryLocked() inline: no closure per message).
      let outcome: boolean | number | LockBusy;
      try {
        outcome = this.handle.send(channel, payload, start, end);
      } catch (error) {
        if (!isLockBusy(error)) throw packageError(error);
        outcome = error;
      }
      if (!isLockBusy(outcome)) return this.sent(channel, message, payload, end - start, outcome);
    }
    // The call waits for the lock: keep bytes of its own (transient ones are reused, and the
    // message's own buffers may change before the call runs: it sends them as they are now).
    // (A copy: the serializer's buffer is a Buffer, whose slice() is a view.)
    const bytes = Array.isArray(payload)
      ? Buffer.concat(payload)
      : Uint8Array.from(payload.subarray(start, end));
    await this.locked(() =>
      this.sent(
        channel,
        message,
        bytes,
        bytes.length,
        this.handle.send(channel, bytes, 0, bytes.length),
      ),
    );
  }

  /** What a send call's `outcome` means: sent, or refused as full (remembered if large). */
  private sent(
    channel: string,
    message: api.MessageInput,
    payload: Uint8Array | Uint8Array[],
    bytes: number,
    outcome: boolean | number,
  ): void {
    if (typeof outcome === 'number') {
      if (Array.isArray(payload) || bytes >= outOfLockBytes())
        this.refusedLarge = { channel, message: new WeakRef(message) };
      throw new ChannelFull(`channel ${channel} is full (capacity ${outcome})`);
    }
    this.refusedLarge = undefined;
  }

  receive<T extends api.Message = api.Message>(
    channel: string,
    options?: api.ReceiveOptions,
  ): Promise<T> {
    const signal = options?.signal;
    // A channel with a buffer was checked by the receive that filled it: only open is left.
    const buffered = this.buffered.size !== 0 && this.buffered.has(channel);
    try {
      if (buffered) this.checkOpen();
      else this.checkReceive(channel);
    } catch (error) {
      return Promise.reject(error);
    }
    if (buffered && !signal?.aborted) {
      // Buffered messages are older than any still queued for the channel, and a buffer is
      // only filled while no receive waits there: nobody is ahead of this one.
      const taken = this.takeBuffered(channel);
      if (taken) {
        return (
          'error' in taken ? Promise.reject(taken.error) : Promise.resolve(taken.message)
        ) as Promise<T>;
      }
    }
    if (!signal?.aborted && !this.pending.waits(channel) && this.mayTakeNow()) {
      // Nobody here is owed the channel's next message: take it in this call (one native call,
      // one decode, one settled promise; no waiter, no drain). Our own '!' channel: from its
      // inbox (unless the last call found that empty, with no ring since: nothing to find).
      const own = this.local.owns(channel);
      const nothingThere = own && this.emptyWaited.has(this.inboxOf(channel)) && !this.bellRung();
      const taken = nothingThere
        ? undefined
        : own
          ? this.takeFromInbox(channel)
          : this.takeFrom(channel);
      if (taken === 'look') {
        // The inbox held entries for other channels only: a drain looks further.
        const promise = this.pending.add(channel, signal) as Promise<T>;
        this.dirty.add(channel);
        this.scheduleDrain();
        return promise;
      }
      if (taken !== undefined) return taken as Promise<T>;
      // Empty (the call registered our wait, so a send rings us) or the lock was busy (a drain
      // is scheduled): wait, as a drain that found it empty would have left us.
      const promise = this.pending.add(channel, signal) as Promise<T>;
      if (!this.drainScheduled) {
        this.setWaiting(true);
        this.startPolling();
      }
      return promise;
    }
    const promise = this.pending.add(channel, signal) as Promise<T>;
    this.dirty.add(channel);
    this.scheduleDrain();
    return promise;
  }

  receiveAny<T extends api.Message = api.Message>(
    channels: readonly string[],
    options?: api.ReceiveAnyOptions,
  ): Promise<api.ReceivedFrom<T> | null> {
    const signal = options?.signal; // (no options object per call)
    let set: ChannelSet;
    try {
      set = this.receivableSet(this.pending, channels);
      this.stateOf(set);
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.buffered.size !== 0 && !signal?.aborted) {
      const taken = this.takeBufferedOf(set);
      if (taken) {
        return 'error' in taken
          ? Promise.reject(taken.error)
          : Promise.resolve({ channel: taken.channel, message: taken.message as T });
      }
    }
    if (options?.wait === false) {
      if (signal?.aborted) return Promise.reject(abortError(signal));
      try {
        return Promise.resolve(this.locked(() => this.takeNow(set)) as api.ReceivedFrom<T> | null);
      } catch (error) {
        return Promise.reject(error);
      }
    }
    if (!signal?.aborted && !this.pending.owesAnyOf(set) && this.mayTakeNow()) {
      // As receive(): nobody here is owed a message of these channels, so take the oldest now.
      // All empty: the call registered our waits, and the drain below has nothing to ask.
      const taken = this.takeAny(set);
      if (taken !== undefined) return taken as Promise<api.ReceivedFrom<T>>;
    }
    const promise = this.pending.addAny(set, signal) as Promise<api.ReceivedFrom<T>>;
    this.scheduleDrain();
    return promise;
  }

  async groupAdd(group: string, channel: string): Promise<void> {
    this.checkMembership(group, channel);
    return this.locked(() => this.handle.groupAdd(group, channel));
  }

  async groupDiscard(group: string, channel: string): Promise<void> {
    this.checkMembership(group, channel);
    return this.locked(() => this.handle.groupDiscard(group, channel));
  }

  async groupMembers(group: string): Promise<string[]> {
    this.checkOpen();
    validateGroupName(group);
    return this.locked(() => this.handle.groupMembers(group));
  }

  async groupSend(group: string, message: api.MessageInput): Promise<number> {
    this.checkGroupSend(group, message);
    let bytes = this.serializeForSend(message);
    const waiting = this.locked(() => this.handle.groupSend(group, bytes));
    // Waiting for the lock: bytes of its own (transient ones are reused).
    if (waiting instanceof Promise && this.msgpack) bytes = Uint8Array.from(bytes);
    return waiting;
  }

  async releaseChannel(channel: string): Promise<void> {
    this.checkRelease(channel);
    this.pending.rejectChannel(channel, new ChannelReleased(channel));
    this.emptyWaited.delete(this.inboxOf(channel));
    this.bufferedOrphaned += this.buffered.get(channel)?.length ?? 0;
    this.buffered.delete(channel);
    // Entries its inbox holds for it already are dropped by the core, a group entry no longer
    // names it; what we took before and what a sender sends to its name later, we drop here.
    this.noteReleased(channel);
    await this.locked(() => this.handle.releaseChannel(channel));
    this.reportBufferDrops();
    this.markCandidate(channel); // its record went, and our wait with it
  }

  async flush(): Promise<void> {
    this.checkOpen();
    await this.locked(() => this.handle.flush());
    this.buffered.clear(); // flushed with the queues they came from
    this.emptyWaited.clear(); // and our waits with their records
    // Our own waiters lost their registrations with the records flush removed.
    this.markAllSets();
    if (this.pending.size) this.scheduleDrain(true);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.maintenance);
    unclosed.unregister(this);
    waitingLayers.delete(this);
    clearImmediate(this.lockRetry);
    clearImmediate(this.drainRetry);
    clearImmediate(this.idleCheck);
    for (const waiting of this.lockBacklog.splice(0)) waiting.reject(new LayerClosed());
    this.pending.rejectAll(new LayerClosed());
    // Our '!' channels end with us: what their buffers hold is orphaned, like what they queue.
    for (const list of this.buffered.values()) this.bufferedOrphaned += list.length;
    this.buffered.clear();
    this.reportBufferDrops();
    this.handle.close();
  }

  /** Processes, channels with depths, groups with sizes and arena use of the whole segment. */
  stats(limit = 1000): ShmLayerStats {
    this.checkOpen();
    return callNative(() => {
      const native = this.handle.stats();
      return {
        name: this.name,
        ...native,
        // Buffered messages this instance dropped and has not reported to the segment yet.
        messagesReceived: Math.max(
          0,
          native.messagesReceived -
            this.bufferedExpired -
            this.bufferedOrphaned -
            this.bufferedSkippedFull,
        ),
        messagesExpired: native.messagesExpired + this.bufferedExpired,
        messagesOrphaned: native.messagesOrphaned + this.bufferedOrphaned,
        deliveriesSkippedFull: native.deliveriesSkippedFull + this.bufferedSkippedFull,
        channelList: this.handle.channels(limit),
        groupList: this.handle.groups(limit),
      };
    });
  }

  /**
   * How long this instance held the segment lock, per kind of operation (send, groupSend,
   * receive, receiveAny, groupAdd, groupDiscard, flush, maintain, recover, other): count, p50Ns,
   * p99Ns, maxNs, totalNs and the histogram's buckets. The work under the lock is what every other
   * process waits behind. This process's own figures, kept in its memory (always on, ~40 ns per
   * critical section); `reset: true` zeroes them after reading.
   */
  lockHoldStats(options: { reset?: boolean } = {}): LockHoldStats {
    this.checkOpen();
    return this.handle.lockHoldStats(options.reset === true);
  }

  /** Walks every shared structure; returns the inconsistencies found (none when healthy). */
  verify(): string[] {
    this.checkOpen();
    return callNative(() => this.handle.verify());
  }

  /**
   * The default serializer's transient bytes when the native call copies them at once (saves a
   * large allocation per large message); any other serializer's own.
   */
  private serializeForSend(message: api.MessageInput): Uint8Array {
    return this.msgpack
      ? this.msgpack.serializeTransient(message as api.Message)
      : this.serializer.serialize(message as api.Message);
  }

  private maintain(): void {
    if (this.closed) return;
    this.dropExpiredBuffered();
    this.reportBufferDrops();
    let attached: boolean;
    // Housekeeping may withdraw waits: the next drain looks for itself.
    this.emptyWaited.clear();
    try {
      // Also drops any registration of ours on a channel no receive here waits on any more.
      attached = this.handle.maintain([...this.waitedNatively()]);
    } catch {
      return; // a damaged segment surfaces on the next real call, with its error
    }
    if (!attached) {
      // Someone destroyed the segment (or replaced it) under us: processes that open the layer
      // from now on would never see our messages. Refuse to go on silently split in two.
      this.unlinked = true;
      this.pending.rejectAll(this.unlinkedError());
      return;
    }
    // Sets nobody waits on right now may have lost their waits just now: they look again.
    for (const set of this.pending.allSets()) {
      const state = set.state as SetState | undefined;
      if (state && set.waiters.length === 0) state.all = true;
    }
    // Safety net for one window no lock can cover: a sender killed after publishing a message
    // but before ringing our doorbell. Looking again every few seconds bounds that wait.
    if (this.pending.size > 0) this.scheduleDrain(true);
  }

  private unlinkedError(): ShmError {
    return new ShmError(
      `the segment of layer '${this.name}' was removed while this process was attached ` +
        `(ShmChannelLayer.destroy or rm /dev/shm); close this layer and open it again`,
      'EUNLINKED',
    );
  }

  /** The event loop woke on our doorbell FIFO (the native side disarmed us already). */
  private onWake(): void {
    this.armed = false;
    if (this.closed) return;
    if (this.pollStartedAt !== 0) {
      this.pollWindow.woke((performance.now() - this.pollStartedAt) * 1000, this.contendedAtMiss);
      this.pollStartedAt = 0;
    }
    this.answerBell();
  }

  /** Our bell rang: look at the channels that became ready (all of them if too many did). */
  private answerBell(): void {
    if (this.pending.channels <= COVER_ALL_CHANNELS && this.pending.setCount === 0) {
      this.drain(); // names every waiting channel: the same call consumes the bell
      return;
    }
    this.collectReady();
    this.drain();
  }

  /**
   * Consumes the bell and the list of channels that rang: receive()s look at those channels on
   * the next drain, receiveAny() sets count them as candidates, waits nobody here needs any more
   * are withdrawn.
   */
  private collectReady(): void {
    let ready: string[] | null;
    try {
      ready = this.handle.ready();
    } catch (error) {
      if (isLockBusy(error)) return; // the bell stays rung: the next drain looks again
      ready = null; // a damaged segment: the full drain will surface the error to the receivers
    }
    this.noteReady(ready);
  }

  /**
   * collectReady() from a receiveAny() that takes its message in its own call: that consumed the
   * bell, so what rang for the receive()s waiting here (and a "look everywhere") needs a drain of
   * its own. Without one a receive() of another channel waited until the receiveAny() loop's
   * channels ran dry, and every call of that loop looked at all its channels meanwhile.
   */
  private collectReadyOutsideDrain(): void {
    this.collectReady();
    if (this.dirty.size !== 0 || this.drainAll) this.scheduleDrain();
  }

  /** What rang: receive()s look there next drain, sets count them as candidates (null: all). */
  private noteReady(ready: string[] | null): void {
    if (ready === null) {
      this.drainAll = true;
      this.emptyWaited.clear();
      return;
    }
    let abandoned: string[] | undefined;
    for (const channel of ready) {
      if (this.isInbox(channel)) {
        this.emptyWaited.delete(channel);
        // Our '!' channels' entries: whoever waits there looks (stale waits go at housekeeping).
        this.dirty.add(channel);
        continue;
      }
      this.markCandidate(channel);
      if (this.pending.count(channel) > 0) this.dirty.add(channel);
      else if (!this.pending.waits(channel)) (abandoned ??= []).push(channel); // its receives were cancelled
    }
    if (abandoned) {
      try {
        this.handle.unwait(abandoned);
      } catch {
        // only an optimisation: a stale wait costs a spurious wake, nothing more
      }
    }
  }

  /**
   * What rang for other receives, reported by a set's call that answered the bell. Called from
   * inside the native call (after its lock is released): it must not throw, or the messages that
   * call took would be lost.
   */
  private readonly onOtherReady = (ready: string[] | null): void => {
    try {
      this.noteReady(ready);
      if (ready === null) {
        this.markAllSets();
        this.scheduleDrain(true);
      } else if (this.dirty.size) {
        this.scheduleDrain();
      }
    } catch {
      // bookkeeping only: the next housekeeping looks at everything
    }
  };

  /** Our wait on `channel` may be gone: every set naming it looks at it next time. */
  private markCandidate(channel: string): void {
    for (const set of this.pending.setsNaming(channel)) {
      const state = set.state as SetState | undefined;
      const position = state?.positionOf.get(channel);
      if (position !== undefined) state!.candidates.add(position);
    }
  }

  /** The set's native half, defined on first use. */
  private stateOf(set: ChannelSet): SetState {
    let state = set.state as SetState | undefined;
    if (!state) {
      // Our own '!' channels have no queue of their own: their inboxes are drained instead.
      const channels = set.channels.filter((channel) => !this.local.owns(channel));
      const inboxes = new Set<string>();
      for (const channel of set.channels)
        if (this.local.owns(channel)) inboxes.add(this.inboxOf(channel));
      const id = channels.length ? callNative(() => this.handle.defineSet(channels)) : -1;
      state = {
        id,
        channels,
        inboxes: [...inboxes],
        positionOf: new Map(channels.map((channel, i) => [channel, i])),
        candidates: new Set(),
        all: true,
        held: 0,
      };
      set.state = state;
    }
    return state;
  }

  /** An idle set was forgotten: free its native half and the waits only it held. */
  private dropSet(set: ChannelSet): void {
    const state = set.state as SetState | undefined;
    set.state = undefined;
    if (!state || this.closed) return;
    try {
      if (state.id !== -1) this.handle.forgetSet(state.id);
    } catch {
      // closed or damaged: nothing to free
    }
    for (const channel of set.channels) if (!this.pending.waits(channel)) this.abandon(channel);
  }

  /**
   * One native call for a set: up to `wanted` messages, oldest first, from the channels the core
   * knows to hold messages and those that may have got some since (candidates); the ones found
   * empty get our wait. Returns LockBusy when another process holds the lock (nothing happened:
   * the caller tries again later).
   */
  private pullSet(
    set: ChannelSet,
    wanted: number,
    deliver: (channel: string, message: api.Message) => void,
    fail: (error: unknown) => void,
    answerBell = false,
  ): LockBusy | undefined {
    const state = this.stateOf(set);
    if (state.id === -1) return undefined; // only our own '!' channels: from their inboxes
    if (!answerBell && !state.all && state.candidates.size === 0 && state.held === 0)
      return undefined;
    const positions = state.all
      ? state.channels.map((_, i) => i)
      : state.candidates.size
        ? [...state.candidates]
        : NO_POSITIONS;
    let result: Buffer | number | null | LockBusy;
    try {
      // (tryLocked() inline: no closure per call)
      result = this.handle.receiveAny(
        state.id,
        positions,
        wanted,
        answerBell,
        answerBell ? this.onOtherReady : undefined,
        this.scratch,
      );
    } catch (error) {
      if (!isLockBusy(error)) {
        state.all = true; // what it registered is unknown: look at everything next time
        const failure = packageError(error);
        for (let i = 0; i < wanted; i++) fail(failure);
        return undefined;
      }
      result = error;
    }
    if (isLockBusy(result)) return result;
    state.all = false;
    if (state.candidates.size) state.candidates.clear(); // clear() allocates, even when empty
    state.held = 0;
    if (result === null) return undefined;
    // The batch's visitors are made once and read the call's state from these fields (two to
    // four closures per call were a tenth of a receiveAny() loop's JS); kept and put back in
    // case a deserializer calls in again.
    const outer = this.pulling;
    const outerDeliver = this.pullingDeliver;
    const outerFail = this.pullingFail;
    this.pulling = state;
    this.pullingDeliver = deliver;
    this.pullingFail = fail;
    try {
      state.held = readReceiveAnyBatch(
        result,
        this.scratch,
        this.pulledStillHolding,
        this.pulledMessage,
      );
    } finally {
      this.pulling = outer;
      this.pullingDeliver = outerDeliver;
      this.pullingFail = outerFail;
    }
    return undefined;
  }

  /** The set, deliver and fail of the pullSet() whose batch is being read. */
  private pulling: SetState | undefined;
  private pullingDeliver: (channel: string, message: api.Message) => void = () => {};
  private pullingFail: (error: unknown) => void = () => {};

  /** A position of the set still holds messages and the call withdrew our wait there. */
  private readonly pulledStillHolding = (position: number): void => {
    // A receive() of that channel waits on that wait too: it looks again.
    if (this.pending.channels === 0) return;
    const channel = this.pulling!.channels[position]!;
    if (this.pending.count(channel) > 0) {
      this.dirty.add(channel);
      this.scheduleDrain();
    }
  };

  private readonly pulledMessage: BatchVisitor = (position, batch, start, end) => {
    const channel = this.pulling!.channels[position]!;
    if (start < 0) {
      this.pullingFail(damagedError(channel));
      return;
    }
    let message: api.Message;
    try {
      message = this.decodeOne(batch, start, end);
    } catch (error) {
      this.pullingFail(error);
      return;
    }
    this.pullingDeliver(channel, message);
  };

  /** receiveAny(wait: false): one call, now (throws EBUSY for `locked` to retry). */
  private takeNow(set: ChannelSet): api.ReceivedFrom | null {
    const { inboxes } = this.stateOf(set);
    if (inboxes.length) {
      // What our '!' channels' inboxes hold now, into the buffers (no wait registered there).
      const result = tryLocked(() =>
        this.handle.receive(
          [...inboxes],
          inboxes.map(() => 0),
          false,
          this.scratch,
          inboxes.map(() => INBOX_ENTRIES),
          INBOX_BYTES,
        ),
      );
      if (isLockBusy(result)) throw result;
      // That call withdrew our waits there.
      for (const inbox of inboxes) this.emptyWaited.delete(inbox);
      if (result !== null) {
        readReceiveBatch(
          result,
          this.scratch,
          () => {}, // an inbox holds only entries for '!' channels
          (request, batch, start, end, expiresInMs, names, targets, targetCount) =>
            this.demux(
              inboxes[request]!,
              batch,
              start,
              end,
              expiresInMs,
              names,
              targets,
              targetCount,
            ),
        );
      }
      const taken = this.takeBufferedOf(set);
      if (taken) {
        if ('error' in taken) throw taken.error;
        return { channel: taken.channel, message: taken.message };
      }
    }
    if (this.bellRung()) this.collectReadyOutsideDrain();
    if (this.drainAll) this.markAllSets();
    let result: api.ReceivedFrom | null = null;
    let failure: { error: unknown } | undefined;
    const busy = this.pullSet(
      set,
      1,
      (channel, message) => (result = { channel, message }),
      (error) => (failure = { error }),
    );
    if (busy) throw busy;
    if (failure) throw failure.error;
    return result;
  }

  /**
   * Whether a receive may take its message in its own native call instead of through a drain.
   * Not while a message already handed to a receive has not reached the code awaiting it: with
   * several receive loops in a process, loop A's message would sit in a settled promise while
   * loop B's call runs, and a process that dies in that call (SIGKILL, a fault in the core)
   * takes A's message with it although no receive of its own lost one. A drain never runs while
   * an await it settled is still queued (it is queued after them), so it is the way then. Not
   * while a drain is due (it runs after awaits queued since), nor while calls wait for the lock
   * (calls keep their order).
   */
  private mayTakeNow(): boolean {
    return this.unhanded === 0 && !this.drainScheduled && this.lockBacklog.length === 0;
  }

  /**
   * Messages in settled receive promises whose awaiting code has not run yet. Counted up just
   * before a promise settles with a message, down by a microtask queued just before it settles:
   * the continuation of `await layer.receive()` is queued right after that microtask, so at 0
   * every one of them has run or is running now.
   */
  private unhanded = 0;
  private readonly handedOver = (): void => {
    this.unhanded--;
  };

  /**
   * A promise is about to settle with a message (see `unhanded`). The count goes down in a
   * reaction to an already settled promise: the same microtask queue as queueMicrotask(), at a
   * third of its cost (which makes an AsyncResource and a bound function per call).
   */
  private willHandOut(): void {
    this.unhanded++;
    void SETTLED.then(this.handedOver);
  }

  /**
   * receive()'s own take of a named channel: one message straight from shared memory, as a
   * settled promise; undefined when the channel is empty (our wait is registered then) or the
   * lock is busy (nothing happened: a drain is scheduled to look again).
   */
  private takeFrom(channel: string): Promise<api.Message> | undefined {
    let result: Buffer | number | null | LockBusy;
    try {
      result = this.handle.receive(channel, 1, false, this.scratch);
    } catch (failure) {
      // (tryLocked() inline: no closure per message)
      if (!isLockBusy(failure)) return Promise.reject(packageError(failure));
      result = failure;
    }
    if (isLockBusy(result)) {
      this.dirty.add(channel);
      this.scheduleDrain();
      return undefined;
    }
    if (result === null) return undefined; // empty: the core registered our wait there
    // It got what it wanted, so it withdrew our wait there: sets naming it look again.
    if (this.pending.setCount > 0) this.markCandidate(channel);
    this.takingFrom = channel;
    readReceiveBatch(result, this.scratch, this.keepTaken, this.noInboxEntries);
    // (Set by the visitor: re-read, as the compiler cannot see it.)
    const took = this.took as boolean;
    const message = this.takenMessage;
    const failure = this.takenFailure as { error: unknown } | undefined;
    this.took = false;
    this.takenMessage = this.takenFailure = undefined;
    if (failure !== undefined) return Promise.reject(failure.error);
    if (!took) return undefined; // (the core returns the one asked for)
    this.willHandOut();
    return Promise.resolve(message!);
  }

  /**
   * What takeFrom() took (fields and one visitor, so no closure per call; a message is not
   * wrapped in an object, an error is).
   */
  private took = false;
  private takenMessage: api.Message | undefined;
  private takenFailure: { error: unknown } | undefined;
  private takingFrom = '';
  private readonly keepTaken: BatchVisitor = (_request, batch, start, end) => {
    if (start < 0) {
      this.takenFailure = { error: damagedError(this.takingFrom) };
      return;
    }
    try {
      this.takenMessage = this.decodeOne(batch, start, end);
      this.took = true;
    } catch (error) {
      this.takenFailure = { error };
    }
  };

  /** A named channel's batch holds no inbox entries. */
  private readonly noInboxEntries: InboxVisitor = () => {};

  /**
   * receive()'s own take of our own '!' `channel`: its inbox's next entries (as a drain takes
   * them: to waiting receives, the rest into the buffers), then the channel's first buffered
   * message as a settled promise. Undefined when the inbox is empty (our wait is registered
   * there) or the lock is busy (a drain is scheduled); 'look' when the inbox held entries for
   * other channels only (no wait registered: a drain must look further).
   */
  private takeFromInbox(channel: string): Promise<api.Message> | 'look' | undefined {
    const inbox = this.inboxOf(channel);
    let result: Buffer | number | null | LockBusy;
    try {
      result = tryLocked(() =>
        this.handle.receive(inbox, 1, false, this.scratch, INBOX_ENTRIES - 1, INBOX_BYTES),
      );
    } catch (failure) {
      this.emptyWaited.delete(inbox);
      return Promise.reject(failure);
    }
    if (isLockBusy(result)) {
      this.dirty.add(channel);
      this.scheduleDrain();
      return undefined;
    }
    if (result === null) {
      // Empty: the core registered our wait there (see emptyWaited).
      this.emptyWaited.add(inbox);
      return undefined;
    }
    const emptied = readReceiveBatch(
      result,
      this.scratch,
      this.noNamedMessages,
      (_request, batch, start, end, expiresInMs, names, targets, targetCount) =>
        this.demux(inbox, batch, start, end, expiresInMs, names, targets, targetCount),
    );
    // Emptied: the core kept our wait there, so the loop's next receive() need not call in only
    // to find it empty (one native call and one lock fewer per message of a ping-pong).
    if (emptied !== 0) this.emptyWaited.add(inbox);
    else this.emptyWaited.delete(inbox);
    const taken = this.takeBuffered(channel);
    if (taken === undefined) return 'look';
    if ('error' in taken) return Promise.reject(taken.error);
    this.willHandOut();
    return Promise.resolve(taken.message);
  }

  /** An inbox's batch holds only entries for '!' channels. */
  private readonly noNamedMessages: BatchVisitor = () => {};

  /**
   * receiveAny()'s own take: the oldest message of the set's channels as a settled promise;
   * undefined when they are all empty (our waits are registered) or the lock is busy (a drain
   * looks again).
   */
  private takeAny(set: ChannelSet): Promise<api.ReceivedFrom> | undefined {
    // Our bell rang: with no other set kept, the set's own call answers it (one lock).
    const rung = this.bellRung();
    const alone = this.pending.setCount === 1;
    if (rung && !alone) this.collectReadyOutsideDrain();
    if (this.drainAll) this.markAllSets();
    const busy = this.pullSet(set, 1, this.keepTakenAny, this.keepTakeFailure, rung && alone);
    const taken = this.takenAny;
    const failure = this.takeFailure;
    this.takenAny = this.takeFailure = undefined;
    if (busy) return undefined;
    if (failure !== undefined) return Promise.reject(failure.error);
    if (taken === undefined) return undefined;
    this.willHandOut();
    return Promise.resolve(taken);
  }

  /** Where takeAny()'s pullSet() puts what it got (fields, so no closures per call). */
  private takenAny: api.ReceivedFrom | undefined;
  private takeFailure: { error: unknown } | undefined;
  private readonly keepTakenAny = (channel: string, message: api.Message): void => {
    this.takenAny = { channel, message };
  };
  private readonly keepTakeFailure = (error: unknown): void => {
    this.takeFailure = { error };
  };

  private bellRung(): boolean {
    try {
      return this.bell !== null ? Atomics.load(this.bell, BELL) !== 0 : this.handle.bellRung();
    } catch {
      return false;
    }
  }

  private markAllSets(): void {
    for (const set of this.pending.allSets()) {
      const state = set.state as SetState | undefined;
      if (state) state.all = true;
    }
  }

  /**
   * The last receive waiting on `channel` was cancelled: withdraw our registration, or its record
   * could never be freed (one leaked record per timed-out receive or closed connection). Batched:
   * a burst of cancellations costs one native call.
   */
  private abandon(channel: string): void {
    if (this.closed) return;
    if (this.abandoned.size === 0) {
      queueMicrotask(() => {
        let channels = [...this.abandoned].filter((name) => !this.pending.waits(name));
        this.abandoned.clear();
        if (this.closed || channels.length === 0) return;
        // Our own '!' channels wait in their inbox: withdraw that once none of its channels waits.
        if (channels.some((name) => this.local.owns(name))) {
          const stillWaiting = this.waitedNatively();
          channels = [
            ...new Set(channels.map((name) => (this.local.owns(name) ? this.inboxOf(name) : name))),
          ].filter((name) => !stillWaiting.has(name));
          if (channels.length === 0) return;
        }
        for (const channel of channels) this.emptyWaited.delete(channel);
        try {
          this.handle.unwait(channels);
        } catch {
          // housekeeping drops what this missed (maintain() lists what we still wait on)
        }
        for (const channel of channels) this.markCandidate(channel);
      });
    }
    this.abandoned.add(channel);
  }

  /**
   * Receives wait and nothing is there: poll the bell word in shared memory once per event-loop
   * turn for a short window (a reply is often microseconds away, and sleeping costs a wake-up
   * of ~30 µs), then arm the doorbell and sleep. No native call and no syscall per poll.
   */
  private startPolling(): void {
    if (this.pollScheduled || this.closed) return;
    const bell = this.bell;
    if (bell === null || this.pollWindow.windowUs === 0) {
      this.sleep();
      return;
    }
    if (this.armed) {
      // Awake again (a new receive): senders need not write to the FIFO while we poll.
      Atomics.store(bell, ARMED, 0);
      this.armed = false;
    }
    this.pollScheduled = true;
    this.pollStartedAt = performance.now();
    setImmediate(this.pollTick);
  }

  private poll(): void {
    this.pollScheduled = false;
    if (this.closed || this.pending.size === 0) return;
    const bell = this.bell!;
    const waitedUs = (performance.now() - this.pollStartedAt) * 1000;
    if (Atomics.load(bell, BELL) !== 0) {
      this.pollStartedAt = 0;
      this.pollWindow.caught(waitedUs);
      this.answerBell();
      return;
    }
    if (waitedUs < this.pollWindow.windowUs) {
      this.pollScheduled = true;
      setImmediate(this.pollTick);
      return;
    }
    this.pollWindow.missed();
    // Read here, not on the wake-up: a ring that comes meanwhile is seen by sleep() below.
    this.contendedAtMiss = cpuContention.isContended(performance.now());
    this.sleep();
  }

  /** Arms the doorbell (senders will write to its FIFO) unless a ring came in meanwhile. */
  private sleep(): void {
    if (this.armed || this.closed) return;
    const bell = this.bell;
    let armed: boolean;
    if (bell !== null) {
      // Dekker handshake with the sender (seq_cst on both sides): publish "armed", then look
      // at the bell; a sender publishes the bell, then looks at "armed".
      Atomics.store(bell, ARMED, 1);
      armed = Atomics.load(bell, BELL) === 0;
      if (!armed) Atomics.store(bell, ARMED, 0);
    } else {
      armed = this.handle.arm();
    }
    if (armed) this.armed = true;
    else this.answerBell();
  }

  private scheduleDrain(all = false): void {
    if (all) this.drainAll = true;
    if (this.drainScheduled) return;
    this.drainScheduled = true;
    queueMicrotask(() => {
      this.drainScheduled = false;
      this.drain();
    });
  }

  /**
   * One native call takes what every waiting receive can use (short channels register a wake),
   * and one per channel set with receiveAny()s waiting whose channels may hold messages.
   */
  private drain(): void {
    if (this.drainAll) this.markAllSets();
    if (this.closed || this.pending.size === 0) {
      this.dirty.clear();
      this.drainAll = false;
      return;
    }
    // Sets of only our own '!' channels have no native half: their inboxes are drained with the
    // receive()s.
    const active =
      this.pending.setCount > 0
        ? this.pending.activeSets().filter((set) => this.stateOf(set).id !== -1)
        : NO_SETS;
    // A busy channel must not hide one that rang meanwhile: answer the bell before picking.
    // With one set waiting, its own call answers the bell (one lock per wake-up).
    const rung = active.length !== 0 && this.bellRung();
    if (rung && active.length !== 1) {
      this.collectReady();
      if (this.drainAll) this.markAllSets();
    }
    // Each set's receiveAny()s, then the receive()s, one native call each. Once a call has
    // handed out messages, no further call runs in this drain: the rest wait for the next one,
    // queued after the awaits just settled (as mayTakeNow() says why), which starts where this
    // one stopped, so no set and no channel starves.
    const turns = active.length + 1;
    for (let i = 0; i < turns; i++) {
      const turn = (this.drainTurn + i) % turns;
      if (i > 0 && this.unhanded > 0) {
        this.drainTurn = turn;
        this.scheduleDrain();
        break;
      }
      if (turn === active.length) {
        this.drainChannels();
        continue;
      }
      const set = active[turn]!;
      const busy = this.pullSet(
        set,
        set.waiters.length,
        (channel, message) => {
          this.willHandOut();
          this.pending.deliverToSet(set, channel, message);
        },
        (error) => this.pending.failSet(set, error),
        rung && active.length === 1,
      );
      // Another process holds the lock: look again soon, from the event loop; nothing failed.
      if (busy) this.retryDrainSoon();
    }
    const waiting = this.pending.size > 0;
    this.setWaiting(waiting);
    if (waiting) this.startPolling();
  }

  /**
   * The receive()s' part of a drain, and the inboxes of our own '!' channels that a receive() or
   * a receiveAny() waits on: one native call for all of them.
   */
  private drainChannels(): void {
    const lookEverywhere = this.drainAll;
    const everyChannel = this.drainAll || this.pending.channels <= COVER_ALL_CHANNELS;
    // Naming every waiting channel lets the same call answer the doorbell, unless channel sets
    // hold waits of their own (the call would withdraw them).
    const coversAll = everyChannel && this.pending.setCount === 0;
    // Named channels to receive from, with how many receive()s wait on each; then each inbox
    // to pop, with how many receive()s wait on its channels (a drain usually names one or two
    // of these: arrays, no map, no closure per drain).
    const requests: string[] = [];
    const counts: number[] = [];
    const inboxNames: string[] = [];
    const inboxWaiting: number[] = [];
    if (everyChannel) {
      for (const [channel, waiters] of this.pending.waitingChannels()) {
        if (!this.local.owns(channel)) {
          requests.push(channel);
          counts.push(waiters.length);
        } else tally(inboxNames, inboxWaiting, this.inboxOf(channel), waiters.length);
      }
    } else {
      for (const channel of this.dirty) {
        const count = this.pending.count(channel);
        if (count > 0) {
          if (!this.local.owns(channel)) {
            requests.push(channel);
            counts.push(count);
          } else tally(inboxNames, inboxWaiting, this.inboxOf(channel), count);
        } else if (this.isInbox(channel)) tally(inboxNames, inboxWaiting, channel, 0);
      }
    }
    if (this.pending.setCount > 0) {
      for (const set of this.pending.activeSets()) {
        const state = set.state as SetState | undefined;
        if (state) for (const inbox of state.inboxes) tally(inboxNames, inboxWaiting, inbox, 0);
      }
    }
    // (Set.clear() makes a new table even for an empty set.)
    if (this.dirty.size !== 0) this.dirty.clear();
    this.drainAll = false;
    // An inbox holds entries for any of our '!' channels: one wanted (we wait there if it is
    // empty), and more taken along for the buffers.
    const named = requests.length;
    const inboxes = inboxNames.length !== 0 ? inboxNames : undefined;
    let extra: number[] | undefined;
    if (inboxes) {
      extra = zeros(named);
      for (let i = 0; i < inboxes.length; i++) {
        const wanted = Math.min(INBOX_WANTED, Math.max(1, inboxWaiting[i]!));
        requests.push(inboxes[i]!);
        counts.push(wanted);
        extra.push(INBOX_ENTRIES - wanted);
      }
    }
    if (requests.length === 0) return;
    if (coversAll && !lookEverywhere && named === 0 && this.nothingNew(requests)) return;
    let result: Buffer | number | null | LockBusy;
    try {
      // (tryLocked() inline: no closure per drain)
      result =
        requests.length === 1
          ? this.handle.receive(
              requests[0]!,
              counts[0]!,
              coversAll,
              this.scratch,
              extra?.[0],
              INBOX_BYTES,
            )
          : this.handle.receive(requests, counts, coversAll, this.scratch, extra, INBOX_BYTES);
    } catch (error) {
      if (isLockBusy(error)) result = error;
      else {
        const failure = packageError(error);
        for (let i = 0; i < named; i++) {
          for (let n = 0; n < counts[i]!; n++) this.pending.fail(requests[i]!, failure);
        }
        if (inboxes) {
          for (const inbox of inboxes) this.emptyWaited.delete(inbox);
          this.failOwnWaiters(new Set(inboxes), failure);
        }
        return;
      }
    }
    if (isLockBusy(result)) {
      // Another process holds the lock: look again soon, from the event loop. The receives
      // keep waiting (their own signals bound them), nothing is failed.
      this.drainAll = true;
      this.retryDrainSoon();
      return;
    }
    // A receive() that got all it wanted withdrew our wait there: sets naming it look again.
    if (this.pending.setCount > 0) for (let i = 0; i < named; i++) this.markCandidate(requests[i]!);
    const gotFrom = inboxes && zeros(requests.length);
    let emptied = 0;
    if (result !== null) {
      this.drained = { requests, named, gotFrom, fromInboxes: 0 };
      emptied = readReceiveBatch(result, this.scratch, this.deliverDrained, this.demuxDrained);
    }
    const fromInboxes = this.drained?.fromInboxes ?? 0;
    this.drained = undefined;
    // An inbox that gave fewer than wanted: the core found it empty and registered our wait; one
    // it emptied: it kept our wait there (emptied lists those, in request order).
    let mayHoldMore = false;
    if (gotFrom) {
      for (let i = named, e = 0; i < requests.length; i++) {
        while (e < emptied && emptiedRequest(e) < i) e++;
        if (gotFrom[i]! < counts[i]! || (e < emptied && emptiedRequest(e) === i)) {
          this.emptyWaited.add(requests[i]!);
        } else {
          this.emptyWaited.delete(requests[i]!);
          mayHoldMore = true;
        }
      }
    }
    // An inbox that gave all we wanted may hold more, and our wait there was withdrawn: the
    // receives still waiting may find theirs further on. From the event loop: a flood of entries
    // for other channels must not keep it from running.
    if (fromInboxes > 0 && mayHoldMore && inboxes && this.pending.size > 0) {
      for (const inbox of inboxes) this.dirty.add(inbox);
      this.retryDrainSoon();
    }
  }

  /** The drain whose batch is being read (fields and two visitors, so no closures per drain). */
  private drained:
    | {
        requests: readonly string[];
        named: number;
        gotFrom: number[] | undefined;
        fromInboxes: number;
      }
    | undefined;
  private readonly deliverDrained: BatchVisitor = (request, batch, start, end) => {
    const drained = this.drained!;
    // Counted as the core counts: every entry it handed out for the request.
    if (drained.gotFrom && request >= drained.named) drained.gotFrom[request]!++;
    const channel = drained.requests[request]!;
    if (start < 0) {
      this.pending.fail(channel, damagedError(channel));
      return;
    }
    let message: api.Message;
    try {
      message = this.decodeOne(batch, start, end);
    } catch (error) {
      this.pending.fail(channel, error);
      return;
    }
    this.willHandOut();
    this.pending.deliver(channel, message);
  };
  private readonly demuxDrained: InboxVisitor = (
    request,
    batch,
    start,
    end,
    expiresInMs,
    names,
    targets,
    targetCount,
  ) => {
    const drained = this.drained!;
    drained.fromInboxes++;
    drained.gotFrom![request]!++;
    this.demux(
      drained.requests[request]!,
      batch,
      start,
      end,
      expiresInMs,
      names,
      targets,
      targetCount,
    );
  };

  /**
   * One inbox entry: to the receives waiting on its channels (decoded once for all of them),
   * or into their buffers; dropped for channels released or not ours (counted orphaned).
   */
  private demux(
    inbox: string,
    batch: Buffer,
    start: number,
    end: number,
    expiresInMs: number,
    names: readonly string[],
    targets: number,
    targetCount: number,
  ): void {
    let payload: BufferedMessage | undefined;
    let decoded: BufferedMessage['decoded'];
    for (let i = 0; i < targetCount; i++) {
      const channel = names[batch.readUInt32LE(targets + 4 * i)]!;
      // Only channels of that inbox (a damaged segment could name others): ours by their name.
      if (
        (this.released.size !== 0 && this.released.has(channel)) ||
        !channel.startsWith(inbox) ||
        channel.length === inbox.length
      ) {
        this.bufferedOrphaned++;
        continue;
      }
      if (start < 0) {
        // Failed its checksum (dropped, counted by the core): its receivers learn of it.
        if (this.pending.waits(channel)) this.pending.fail(channel, damagedError(channel));
        continue;
      }
      // A receive waits only where nothing is buffered: nobody is ahead of it.
      if (!this.buffered.has(channel) && this.pending.waits(channel)) {
        decoded ??= payload?.decoded ?? this.decodeEntry(batch, start, end);
        if (payload && !payload.decoded) payload.decoded = decoded;
        if ('error' in decoded) this.pending.fail(channel, decoded.error);
        else {
          this.willHandOut();
          this.pending.deliver(channel, decoded.message);
        }
        continue;
      }
      // Bytes of its own: the scratch buffer is reused by the next call.
      payload ??= {
        bytes:
          batch === this.scratch
            ? Buffer.from(batch.subarray(start, end))
            : batch.subarray(start, end),
        decoded,
        expiresAt: this.bufferClock() + expiresInMs - 1, // never later than the queue's own
        order: this.bufferedOrder++,
      };
      this.keepBuffered(channel, payload);
    }
  }

  /** An inbox entry decoded, or what the deserializer threw. */
  private decodeEntry(batch: Buffer, start: number, end: number): BufferedMessage['decoded'] & {} {
    try {
      return { message: this.decodeOne(batch, start, end) };
    } catch (error) {
      return { error };
    }
  }

  /**
   * Whether a drain of `requests` (inboxes only) would find nothing: each was empty with our wait
   * registered when we last looked, and our bell has not rung since (an entry there rings it
   * once its lock is released; it is looked at again from the poll or the doorbell).
   */
  private nothingNew(requests: readonly string[]): boolean {
    if (this.emptyWaited.size === 0) return false;
    for (let i = 0; i < requests.length; i++) if (!this.emptyWaited.has(requests[i]!)) return false;
    return !this.bellRung();
  }

  /** The receives waiting on our own '!' channels of `inboxes` fail (the inbox call failed). */
  private failOwnWaiters(inboxes: ReadonlySet<string>, failure: unknown): void {
    for (const [channel, count] of this.pending.wanted()) {
      if (this.local.owns(channel) && inboxes.has(this.inboxOf(channel)))
        for (let n = 0; n < count; n++) this.pending.fail(channel, failure);
    }
    for (const set of this.pending.activeSets()) {
      const state = set.state as SetState | undefined;
      if (state?.inboxes.some((inbox) => inboxes.has(inbox)))
        for (let n = set.waiters.length; n > 0; n--) this.pending.failSet(set, failure);
    }
  }

  /**
   * The inbox of one of our own '!' channels: its part up to the '!'. The last answer is kept: a
   * receive loop asks for the same channel's several times per message (not a new string each).
   */
  private inboxOf(channel: string): string {
    if (channel !== this.lastInboxOf) {
      this.lastInbox = nonLocalPart(channel);
      this.lastInboxOf = channel;
    }
    return this.lastInbox;
  }
  private lastInboxOf = '';
  private lastInbox = '';

  /** True for the name of one of our inboxes, '<prefix>.<client>!' (as the ready list names it). */
  private isInbox(channel: string): boolean {
    return channel.endsWith('!') && this.local.owns(channel);
  }

  /** Where receives here wait in shared memory: named channels, and our '!' channels' inboxes. */
  private waitedNatively(): Set<string> {
    const out = new Set<string>();
    for (const channel of this.pending.waitedChannels())
      out.add(this.local.owns(channel) ? this.inboxOf(channel) : channel);
    return out;
  }

  /** Entries still coming for a released channel are dropped for as long as they could live. */
  private noteReleased(channel: string): void {
    const now = performance.now();
    for (const [name, until] of this.released) {
      if (until > now) break; // in release order, each kept as long
      this.released.delete(name);
    }
    this.released.delete(channel);
    this.released.set(channel, now + this.settings.expirySeconds * 1000);
  }

  /**
   * What a batch's messages become: each deserialized and delivered, or its receiver failed
   * (ECORRUPT for a message that failed its checksum, or the deserializer's error).
   */
  private deliverEach(
    channelAt: (request: number) => string,
    deliver: (channel: string, message: api.Message) => void,
    fail: (channel: string, error: unknown) => void,
  ): BatchVisitor {
    return (request, batch, start, end) => {
      const channel = channelAt(request);
      if (start < 0) {
        fail(channel, damagedError(channel));
        return;
      }
      let message: api.Message;
      try {
        message = this.decodeOne(batch, start, end);
      } catch (error) {
        fail(channel, error);
        return;
      }
      deliver(channel, message);
    };
  }

  /**
   * One message's bytes, `batch[start, end)`, to a message. The scratch buffer is reused by the
   * next call, and a deserializer may keep views of what it is given (msgpack bin values do):
   * the default one copies its bin values out, any other gets a copy of the bytes.
   */
  private decodeOne(batch: Buffer, start: number, end: number): api.Message {
    if (batch !== this.scratch) return this.serializer.deserialize(batch.subarray(start, end));
    if (this.msgpack) return this.msgpack.deserializeDetached(batch, start, end);
    return this.serializer.deserialize(Buffer.from(batch.subarray(start, end)));
  }

  /** Keeps an inbox entry of our own `channel` for its next receive(), within its capacity. */
  private keepBuffered(channel: string, message: BufferedMessage): void {
    let list = this.buffered.get(channel);
    if (!list) {
      list = [];
      this.buffered.set(channel, list);
    }
    list.push(message);
    if (list.length > this.leastCapacity && list.length > this.capacities.capacityOf(channel)) {
      list.shift();
      this.bufferedSkippedFull++;
    }
  }

  /**
   * The oldest unexpired buffered message of `channel`, decoded. An entry for several of our
   * channels is decoded once: their receivers get the same message object (as channels_redis
   * puts one dict into each of its receive buffers).
   */
  private takeBuffered(channel: string): { message: api.Message } | { error: unknown } | undefined {
    const list = this.buffered.get(channel);
    if (!list) return undefined;
    const now = this.bufferClock();
    let taken: BufferedMessage | undefined;
    while ((taken = list.shift()) && taken.expiresAt <= now) this.bufferedExpired++;
    if (list.length === 0) this.buffered.delete(channel);
    if (!taken) return undefined;
    if (!taken.decoded) {
      try {
        taken.decoded = { message: this.serializer.deserialize(taken.bytes) };
      } catch (error) {
        taken.decoded = { error };
      }
    }
    return taken.decoded;
  }

  /**
   * performance.now() for the buffers' expiry, read at most once per CLOCK_USES uses and at
   * least once per event-loop turn: a message is never handed out later than a turn (and its
   * 1 ms margin) after it expired.
   */
  private bufferClock(): number {
    if (!this.clockFresh || ++this.clockUses >= CLOCK_USES) {
      this.clockReading = performance.now();
      this.clockUses = 0;
      if (!this.clockFresh) {
        this.clockFresh = true;
        setImmediate(this.clockTurn);
      }
    }
    return this.clockReading;
  }

  /** For receiveAny(): the oldest buffered message among the set's channels. */
  private takeBufferedOf(
    set: ChannelSet,
  ): (({ message: api.Message } | { error: unknown }) & { channel: string }) | undefined {
    for (;;) {
      let best: string | undefined;
      let bestOrder = Infinity;
      for (const [channel, list] of this.buffered) {
        if (list[0]!.order < bestOrder && set.has(channel)) {
          best = channel;
          bestOrder = list[0]!.order;
        }
      }
      if (best === undefined) return undefined;
      const taken = this.takeBuffered(best);
      if (taken) return { ...taken, channel: best };
      // Everything buffered there had expired: look again.
    }
  }

  /**
   * Tells the segment's counters about buffered messages dropped unreceived (they were counted
   * received when they left the segment). Best effort: on a busy lock they wait for next time.
   */
  private reportBufferDrops(): void {
    if (this.bufferedExpired === 0 && this.bufferedOrphaned === 0 && this.bufferedSkippedFull === 0)
      return;
    try {
      this.handle.countBufferDrops(
        this.bufferedExpired,
        this.bufferedOrphaned,
        this.bufferedSkippedFull,
      );
      this.bufferedExpired = 0;
      this.bufferedOrphaned = 0;
      this.bufferedSkippedFull = 0;
    } catch {
      // busy or closed: kept for the next housekeeping
    }
  }

  /** Housekeeping: buffered messages past their expiry go (counted as expired). */
  private dropExpiredBuffered(): void {
    if (this.buffered.size === 0) return;
    const now = performance.now();
    for (const [channel, list] of this.buffered) {
      const before = list.length;
      const kept = list.filter((m) => m.expiresAt > now);
      this.bufferedExpired += before - kept.length;
      if (kept.length === 0) this.buffered.delete(channel);
      else if (kept.length !== before) this.buffered.set(channel, kept);
    }
  }

  /**
   * Runs a native call that takes the segment lock. The native side waits one short slice for a
   * busy lock and then throws EBUSY; the call is retried from the event loop (timers and other
   * promises run meanwhile) until `lockTimeout`, then fails with LockTimeout. While calls wait,
   * later ones queue behind them, so one layer's operations keep their order.
   */
  private locked<T>(call: () => T): T | Promise<T> {
    if (this.lockBacklog.length === 0) {
      const result = tryLocked(call);
      if (!isLockBusy(result)) return result; // done at once: the common case costs no promise
    }
    return new Promise<T>((resolve, reject) => {
      this.lockBacklog.push({
        call,
        resolve: resolve as (value: unknown) => void,
        reject,
        since: Date.now(),
      });
      this.scheduleLockRetry();
    });
  }

  // Retries run from the check phase (setImmediate), not from a timer. The native call that
  // found the lock busy already slept up to one slice on the lock word, and the retry sleeps
  // there again, woken by the holder's unlock: a holder that was only descheduled (the common
  // case with more busy processes than cores) is followed at once. A 1 ms timer added a
  // millisecond or more to every such call even when the lock came free a microsecond later.
  // A stopped holder costs one slice's futex timeout per loop turn, and the loop keeps running
  // (timers, I/O) between the slices.
  private scheduleLockRetry(): void {
    this.lockRetry ??= setImmediate(() => {
      this.lockRetry = undefined;
      this.retryLocked();
    });
  }

  private retryDrainSoon(): void {
    this.drainRetry ??= setImmediate(() => {
      this.drainRetry = undefined;
      this.drain();
    });
  }

  private retryLocked(): void {
    while (this.lockBacklog.length > 0) {
      const next = this.lockBacklog[0]!;
      let result: unknown;
      try {
        result = tryLocked(next.call);
      } catch (error) {
        this.lockBacklog.shift();
        next.reject(error);
        continue;
      }
      if (!isLockBusy(result)) {
        this.lockBacklog.shift();
        next.resolve(result);
        continue;
      }
      if (Date.now() - next.since < this.lockTimeout) {
        this.scheduleLockRetry();
        return;
      }
      this.lockBacklog.shift();
      const pid = typeof result.pid === 'number' ? result.pid : 0;
      next.reject(
        new LockTimeout(
          `the segment lock of layer '${this.name}' has been held by process ${pid} for more ` +
            `than ${this.lockTimeout} ms (stopped, under a debugger or frozen?); nothing was done`,
          pid,
        ),
      );
    }
  }

  private setWaiting(waiting: boolean): void {
    if (!waiting && this.waiting && !this.closed) {
      // Not at once: a receive loop that got its message is usually waiting again within this
      // turn, and letting go of the doorbell, then holding it again, costs two native calls per
      // message (a ping-pong's every hop). The process may stay alive for one more turn.
      this.idleCheck ??= setImmediate(this.stopWaitingIfIdle);
      return;
    }
    this.holdDoorbell(waiting);
  }

  private idleCheck: NodeJS.Immediate | undefined;
  private readonly stopWaitingIfIdle = (): void => {
    this.idleCheck = undefined;
    if (this.pending.size === 0) this.holdDoorbell(false);
  };

  /** Whether our doorbell keeps the process alive (receives wait), and `waitingLayers` this. */
  private holdDoorbell(waiting: boolean): void {
    if (waiting === this.waiting || this.closed) return;
    this.waiting = waiting;
    if (waiting) waitingLayers.add(this);
    else waitingLayers.delete(this);
    this.handle.setWaiting(waiting);
    if (!waiting && this.armed && this.bell !== null) {
      // Nobody waits: senders need not write to the FIFO any more.
      Atomics.store(this.bell, ARMED, 0);
      this.armed = false;
    }
  }

  protected override checkOpen(): void {
    super.checkOpen();
    if (this.unlinked) throw this.unlinkedError();
  }
}
