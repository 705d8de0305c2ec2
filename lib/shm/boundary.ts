// The boundary between ShmChannelLayer and the addon: how a native call's errors become the
// package's errors, how a busy segment lock is told apart from a failure, and how a receive
// batch is read.
import {
  ChannelFull,
  LayerClosed,
  MessageTooLarge,
  SegmentFull,
  ShmError,
  type ShmErrorCode,
} from '../errors.js';
import { native } from './addon.js';

/**
 * The addon's error for a call that found the segment lock held by a live process for the one
 * short slice it waits: nothing was done, and the caller tries again from the event loop.
 */
export type LockBusy = Error & { code: 'EBUSY'; pid?: number };

export function isLockBusy(value: unknown): value is LockBusy {
  return value instanceof Error && (value as { code?: unknown }).code === 'EBUSY';
}

/** A native error (an Error with a `code`) as the package's error; anything else unchanged. */
export function packageError(error: unknown): unknown {
  if (error instanceof ShmError || !(error instanceof Error)) return error;
  const code = (error as { code?: unknown }).code;
  if (typeof code !== 'string') return error;
  switch (code) {
    case 'ECHANNELFULL':
      return new ChannelFull(error.message);
    case 'EARENAFULL':
      return new SegmentFull(error.message);
    case 'ETOOLARGE':
      return new MessageTooLarge(error.message);
    case 'EINVALIDARG':
      return new TypeError(error.message);
    case 'ECLOSED':
      return new LayerClosed();
    default:
      return new ShmError(error.message, code as ShmErrorCode);
  }
}

/** Runs a call into the addon; what it throws, it throws as the package's error. */
export function callNative<T>(call: () => T): T {
  try {
    return call();
  } catch (error) {
    throw packageError(error);
  }
}

/**
 * Runs a call that takes the segment lock: its result, or the LockBusy error returned (not
 * thrown) when the lock was busy; any other failure is thrown as the package's error.
 */
export function tryLocked<T>(call: () => T): T | LockBusy {
  try {
    return call();
  } catch (error) {
    if (isLockBusy(error)) return error;
    throw packageError(error);
  }
}

/*
 * Receive batches. The addon's receive() and receiveAny() return null when they took nothing;
 * otherwise one batch, either in a Buffer of its own or, when it fits, written to the start of
 * the `scratch` buffer the caller passed (its length returned instead). All numbers are u32
 * little-endian:
 *
 *   payloads back to back, from offset 0
 *   per message, in delivery order: `request` indexes the call's channel list (receive) or the
 *     set's channels (receiveAny); `length` is damagedMessageLength, with no payload bytes, for a
 *     message whose bytes failed their checksum in shared memory; receive() adds the ms until the
 *     message expires (at least 1) and its target count: 0 for a message of the requested channel
 *     itself, else the number of '!' channels it is for (the request was an inbox,
 *     '<prefix>.<client>!': one entry for a direct send to one of them, or for a group send to
 *     all of this instance's members of the group)
 *   receive() only: the targets, targetCount u32 per message in message order, each an index into
 *     the name table; then the name table: per distinct target, a u32 length and its ASCII bytes,
 *     zero-padded to a multiple of 4
 *   receive() only: the requests whose inbox this call emptied and where it kept our wait, one
 *     u32 each (see readReceiveBatch)
 *   receiveAny only: the positions it looked at that still hold messages, one u32 each
 *   trailer: receive: the message count, the target total, the name count, the name table's
 *              bytes and the number of emptied requests
 *            receiveAny: the message count, the number of positions listed, and how many of the
 *            set's channels the core knows to hold messages
 */

/** The length the addon gives a message whose stored bytes failed their checksum. */
let damagedMessageLength: number | undefined;
function damaged(): number {
  return (damagedMessageLength ??= native().constants.damagedMessageLength);
}

/**
 * One message of a batch: the index of its request and its bytes, `batch[start, end)`, with
 * `start` -1 for a message that failed its checksum and was dropped; for receive() batches also
 * the ms until it expires (receiveAny() batches: Infinity, they are delivered at once). When
 * `batch` is the caller's scratch buffer its bytes hold only until the next call: decode or copy
 * them at once (so a message is decoded straight from the batch, not copied first).
 */
export type BatchVisitor = (
  request: number,
  batch: Buffer,
  start: number,
  end: number,
  expiresInMs: number,
) => void;

/**
 * A receive() batch's message for '!' channels, taken from an inbox: its targets are
 * `names[batch.readUInt32LE(targets + 4 * i)]` for i < `targetCount` (read them before the next
 * native call, as the bytes).
 */
export type InboxVisitor = (
  request: number,
  batch: Buffer,
  start: number,
  end: number,
  expiresInMs: number,
  names: readonly string[],
  targets: number,
  targetCount: number,
) => void;

/** Bytes per message entry: receive() (request, length, ms until it expires, targets); receiveAny(). */
const RECEIVE_ENTRY = 16;
const RECEIVE_ANY_ENTRY = 8;
const RECEIVE_TRAILER = 20;
const NO_NAMES: readonly string[] = Object.freeze([]);

/**
 * The emptied requests of the last batch read, its first readReceiveBatch()-returned count of
 * entries valid (written in place: setting an array's length costs a runtime call per batch).
 */
const emptiedRequests: number[] = [];

/** The `k`th request the last batch read emptied (k < the count readReceiveBatch() returned). */
export function emptiedRequest(k: number): number {
  return emptiedRequests[k]!;
}

/**
 * Visits the messages of a receive() batch: those of the requested channels themselves with
 * `visit`, those an inbox holds for '!' channels with `visitInbox`. The name table is decoded
 * once per batch (a group send to 25 of our channels names them once, not 25 times per message).
 * Returns how many requests had their inbox emptied by the call, which kept our wait there (an
 * entry that comes later rings us); emptiedRequest() names them, in request order.
 */
export function readReceiveBatch(
  result: Buffer | number,
  scratch: Buffer,
  visit: BatchVisitor,
  visitInbox: InboxVisitor,
): number {
  const batch = typeof result === 'number' ? scratch : result;
  const view = typeof result === 'number' ? viewOfScratch(scratch) : viewOf(result);
  const trailer = (typeof result === 'number' ? result : result.length) - RECEIVE_TRAILER;
  const count = view.getUint32(trailer, true);
  const targetTotal = view.getUint32(trailer + 4, true);
  const nameCount = view.getUint32(trailer + 8, true);
  const nameBytes = view.getUint32(trailer + 12, true);
  const emptiedCount = view.getUint32(trailer + 16, true);
  const emptiedAt = trailer - emptiedCount * 4;
  for (let i = 0; i < emptiedCount; i++)
    emptiedRequests[i] = view.getUint32(emptiedAt + i * 4, true);
  const table = emptiedAt - nameBytes;
  let names = NO_NAMES;
  if (nameCount > 0) {
    const list: string[] = new Array<string>(nameCount);
    for (let i = 0, at = table; i < nameCount; i++) {
      const length = view.getUint32(at, true);
      list[i] = nameAt(batch, at + 4, length, i);
      at += 4 + ((length + 3) & ~3);
    }
    names = list;
    lastNames = list;
  }
  let targets = table - targetTotal * 4;
  const damagedLength = damaged();
  let offset = 0;
  for (let i = 0, entry = targets - count * RECEIVE_ENTRY; i < count; i++, entry += RECEIVE_ENTRY) {
    const request = view.getUint32(entry, true);
    const length = view.getUint32(entry + 4, true);
    const expiresInMs = view.getUint32(entry + 8, true);
    const targetCount = view.getUint32(entry + 12, true);
    const start = length === damagedLength ? -1 : offset;
    const end = start === -1 ? -1 : offset + length;
    if (start !== -1) offset = end;
    if (targetCount === 0) visit(request, batch, start, end, expiresInMs);
    else {
      visitInbox(request, batch, start, end, expiresInMs, names, targets, targetCount);
      targets += targetCount * 4;
    }
  }
  return emptiedCount;
}

/**
 * The names of the last batch that had any. A process's inbox entries name the same few '!'
 * channels batch after batch: the same string again, compared byte by byte, is cheaper than a
 * new one (a native call to make it, then a hash and slower comparisons wherever it is looked
 * up: the buffers, the waiting receives).
 */
let lastNames: readonly string[] = NO_NAMES;

/** The ASCII name `batch[start, start + length)`, the last batch's `index`th if it is the same. */
function nameAt(batch: Buffer, start: number, length: number, index: number): string {
  const known = index < lastNames.length ? lastNames[index]! : undefined;
  if (known !== undefined && known.length === length) {
    let same = true;
    for (let k = 0; k < length; k++) {
      if (batch[start + k] !== known.charCodeAt(k)) {
        same = false;
        break;
      }
    }
    if (same) return known;
  }
  return batch.toString('latin1', start, start + length);
}

/**
 * Batches are read through a DataView: Buffer's readUInt32LE checks its argument and bounds on
 * each call, which cost a tenth of a small message's receive. The last scratch buffer's view is
 * kept (nearly every batch is read from it); a batch in a Buffer of its own gets a fresh view
 * (one kept would hold on to a message of up to 5 MB after its receive).
 */
let viewedScratch: Buffer | undefined;
let scratchView: DataView | undefined;
function viewOfScratch(scratch: Buffer): DataView {
  if (scratch !== viewedScratch) {
    scratchView = viewOf(scratch);
    viewedScratch = scratch;
  }
  return scratchView!;
}

function viewOf(batch: Buffer): DataView {
  return new DataView(batch.buffer, batch.byteOffset, batch.byteLength);
}

/**
 * Visits the messages of a receiveAny() batch, and each position still holding messages; returns
 * how many of the set's channels the core knows to hold messages.
 */
export function readReceiveAnyBatch(
  result: Buffer | number,
  scratch: Buffer,
  stillHolding: (position: number) => void,
  visit: BatchVisitor,
): number {
  const batch = typeof result === 'number' ? scratch : result;
  const view = typeof result === 'number' ? viewOfScratch(scratch) : viewOf(result);
  const end = (typeof result === 'number' ? result : result.length) - 12;
  const count = view.getUint32(end, true);
  const positions = view.getUint32(end + 4, true);
  const held = view.getUint32(end + 8, true);
  const listed = end - positions * 4;
  for (let at = listed; at < end; at += 4) stillHolding(view.getUint32(at, true));
  const damagedLength = damaged();
  let offset = 0;
  for (let i = 0, entry = listed - count * RECEIVE_ANY_ENTRY; i < count; i++) {
    const request = view.getUint32(entry, true);
    const length = view.getUint32(entry + 4, true);
    entry += RECEIVE_ANY_ENTRY;
    if (length === damagedLength) {
      visit(request, batch, -1, -1, Infinity);
      continue;
    }
    visit(request, batch, offset, offset + length, Infinity);
    offset += length;
  }
  return held;
}
