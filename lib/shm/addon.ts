import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import nodeGypBuild from 'node-gyp-build';
import type { SegmentSizing } from './sizing.js';

export interface NativeStats {
  slot: number;
  processes: number;
  channels: number;
  groups: number;
  members: number;
  queued: number;
  nodesFree: number;
  arenaBytes: number;
  arenaUsedBytes: number;
  segmentBytes: number;
  /** Bytes of /dev/shm the segment occupies now: memory is reserved as needed and given back. */
  shmBytes: number;
  messagesSent: number;
  messagesReceived: number;
  messagesExpired: number;
  /** Messages dropped at receive because their stored bytes failed the checksum. */
  messagesDamaged: number;
  /** groupSend deliveries skipped because the member channel (or the segment) was full. */
  deliveriesSkippedFull: number;
  /** Sends refused with ChannelFull (the sender got the error). */
  sendsRefusedFull: number;
  /** Messages for '!' channels whose instance had gone or released them: dropped. */
  messagesOrphaned: number;
  lockRecoveries: number;
  /** This instance's doorbell rings that could not be delivered (they cost only latency). */
  ringFailures: number;
}

/** Kinds of operation whose critical sections are timed separately (native/core/lock_hold.h). */
export type LockHoldKind =
  | 'send'
  | 'groupSend'
  | 'receive'
  | 'receiveAny'
  | 'groupAdd'
  | 'groupDiscard'
  | 'flush'
  | 'maintain'
  | 'recover'
  | 'other';

/**
 * How long one instance held the segment lock in one kind of operation, waits for the lock
 * excluded. Percentiles are the upper edges of log-linear buckets (4 per power of two): at most
 * 25% above the true value, never above `maxNs`.
 */
export interface LockHoldOp {
  count: number;
  p50Ns: number;
  p99Ns: number;
  maxNs: number;
  totalNs: number;
  /** [upper edge in ns, count] of every non-empty bucket, ascending: merge these across processes. */
  buckets: Array<[number, number]>;
}

export type LockHoldStats = Record<LockHoldKind, LockHoldOp>;

export interface NativeLayerOptions {
  name: string;
  size?: number;
  maxChannels?: number;
  maxGroups?: number;
  maxMembers?: number;
  maxNodes?: number;
  maxMessageSize?: number;
  mode?: number;
  allowForeign?: boolean;
  create?: boolean;
  capacity: number;
  channelCapacity: Array<[string, number]>;
  expiryMs: number;
  groupExpiryMs: number;
  /** Bound of a synchronous wait for a live lock holder (constructor, stats, verify). */
  lockTimeoutMs?: number;
  /** How long one call waits for a busy lock before it throws EBUSY (JS retries). */
  lockSliceMicros?: number;
  clientId?: string;
}

export interface NativeLayer {
  readonly slot: number;
  /**
   * True: queued. False: the channel is a '!' channel of an instance that is gone; dropped and
   * counted. A number: the channel is full (that is its capacity) and nothing was queued; returned
   * rather than thrown, so that a retry loop's refusals cost one JS error, not two and a C++ one.
   * The message is `payload`'s bytes [start, end) (a serializer's buffer, not a view of it made
   * per message; all of it without a start); an array of Uint8Arrays is sent as their
   * concatenation (start and end unused).
   */
  send(
    channel: string,
    payload: Uint8Array | readonly Uint8Array[],
    start?: number,
    end?: number,
  ): boolean | number;
  /**
   * The channel's capacity when a send to it would be refused as full now (counted and backed off
   * as a refused send), else false; nothing is sent and no record is made.
   */
  refusesAsFull(channel: string): number | false;
  /** Drops a '!' channel's queue, memberships and record; returns the messages dropped. */
  releaseChannel(channel: string): number;
  /**
   * Buffered messages dropped unreceived: moved from the received count to expired, orphaned
   * and deliveriesSkippedFull (a full receive buffer's oldest gave way).
   */
  countBufferDrops(expired: number, orphaned: number, skippedFull?: number): void;
  groupSend(group: string, payload: Uint8Array): number;
  /**
   * Takes up to `wanted` messages per channel, then up to `extra` more per channel while
   * `extraBytes` of payload last (only `wanted` decides where we wait). Returns null or a
   * receive batch (its format: lib/shm/boundary.ts).
   */
  receive(
    channels: string | string[],
    wanted: number | number[],
    coversAllWaits?: boolean,
    scratch?: Uint8Array,
    extra?: number | number[],
    extraBytes?: number,
  ): Buffer | number | null;
  /** Defines a receiveAny channel set (distinct, valid names); returns its id. */
  defineSet(channels: readonly string[]): number;
  forgetSet(id: number): void;
  /**
   * Up to `wanted` messages from the set, oldest first among its channels the core knows to hold
   * messages and those at `positions` (rang since). Registers waits on the ones found empty.
   * Returns null or a receiveAny batch (its format: lib/shm/boundary.ts), written to `scratch`
   * when it fits (its length returned instead). With `answerBell` the same call consumes the
   * bell and the ready list; ready channels outside the set go to `onOtherReady` (null: more rang
   * than were recorded, look at everything).
   */
  receiveAny(
    set: number,
    positions: readonly number[],
    wanted: number,
    answerBell?: boolean,
    onOtherReady?: ((ready: string[] | null) => void) | undefined,
    scratch?: Uint8Array,
  ): Buffer | number | null;
  groupAdd(group: string, channel: string): void;
  groupDiscard(group: string, channel: string): void;
  /** Channels of the group's live, unexpired memberships. */
  groupMembers(group: string): string[];
  flush(): void;
  /** Housekeeping; false once the segment's name was removed or taken by another segment. */
  maintain(stillWaiting?: string[]): boolean;
  /** Channels that rang this instance since the last call; null: look at every waiting one. */
  ready(): string[] | null;
  /** Withdraws this instance's wait on channels nobody here receives from any more. */
  unwait(channels: string[]): void;
  setWaiting(waiting: boolean): void;
  /** True: armed (a ring writes to the doorbell FIFO); false: a ring came in, look now. */
  arm(): boolean;
  bellRung(): boolean;
  /** [slot state, bell, armed] of this instance's slot in shared memory, or null. */
  bellView(): Int32Array | null;
  stats(): NativeStats;
  /** This instance's lock hold times per operation kind (private memory, no lock); `reset` zeroes them after. */
  lockHoldStats(reset?: boolean): LockHoldStats;
  /** The sizes the segment was created with. */
  config(): SegmentSizing;
  channels(limit?: number): Array<{ name: string; depth: number; groups: number }>;
  groups(limit?: number): Array<{ name: string; members: number }>;
  verify(): string[];
  isUnlinked(): boolean;
  /** Removes the layer when no other process is attached and no unexpired message waits (then closes). */
  prune(): boolean;
  close(): void;
}

/**
 * The core's limits and defaults, read from its own constants (native/binding/addon.cc): lib/shm
 * takes the ones only it uses from here; test/constants.test.ts checks the shared ones against
 * lib/settings.ts and lib/names.ts.
 */
export interface NativeConstants {
  maxNameLength: number;
  /** Longest client id in '!' channel names the core tracks (a longer one is not tracked). */
  maxClientLength: number;
  /** Length a receive batch gives a message that failed its checksum (lib/shm/boundary.ts). */
  damagedMessageLength: number;
  /** Payloads this long or longer are copied outside the segment lock. */
  outOfLockBytes: number;
  defaultCapacity: number;
  defaultExpiryMs: number;
  defaultGroupExpiryMs: number;
  defaultLockTimeoutMs: number;
  defaultSegmentSize: number;
  defaultMaxChannels: number;
  defaultMaxGroups: number;
  defaultMaxMembers: number;
  defaultMaxNodes: number;
  defaultMaxMessageSize: number;
  defaultMode: number;
  /** Every `code` a native error can carry. */
  errorCodes: string[];
}

export interface NativeBinding {
  NativeLayer: {
    new (options: NativeLayerOptions, onWake: () => void): NativeLayer;
    destroy(name: string): boolean;
    /** Instances attached to the layer's segment (any layout version); -1: no such segment. */
    attachedProcesses(name: string): number;
    /** Messages queued, read without attaching; -1 if missing or of another layout version. */
    peekQueued(name: string): number;
  };
  layoutVersion: number;
  lockOffset: number;
  lockBytes: number;
  constants: NativeConstants;
}

/** The package root (holds package.json, prebuilds/ and build/), from dist/cjs or lib/. */
function packageRoot(): string {
  let dir = __dirname;
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (
      existsSync(manifest) &&
      JSON.parse(readFileSync(manifest, 'utf8')).name === 'shm-channels'
    ) {
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error('shm-channels: cannot find the package root');
    dir = parent;
  }
}

let cached: NativeBinding | undefined;

export function native(): NativeBinding {
  cached ??= nodeGypBuild(packageRoot()) as NativeBinding;
  return cached;
}
