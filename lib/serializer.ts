import { randomBytes } from 'node:crypto';
import { Packr, RESET_BUFFER_MODE, REUSE_BUFFER_MODE } from 'msgpackr';
import type { Message, Serializer } from './types.js';

/** msgpackr's buffer as pack() returns it in REUSE_BUFFER_MODE: the message is [start, end). */
type PackTarget = Uint8Array & { start: number; end: number };

/**
 * Plain msgpack (no msgpackr record extension), so Python's msgpack reads what Node writes.
 * Binary values (Buffer, Uint8Array) travel as msgpack bin and come back as Buffers.
 */
export class MsgpackSerializer implements Serializer {
  // int64AsType 'auto' (msgpackr >= 1.10; missing from its typings): 64-bit integers from other
  // msgpack writers (Python packs ints beyond 32 bits that way) decode as numbers when safe, as
  // BigInt only beyond 2^53.
  private readonly packr = new Packr({
    useRecords: false,
    mapsAsObjects: true,
    moreTypes: false,
    int64AsType: 'auto' as 'number',
  });

  serialize(message: Message): Uint8Array {
    assertSerializable(message);
    return this.packr.pack(message);
  }

  /**
   * serialize(), but the bytes stay valid only until the next serialization in this process:
   * msgpackr writes them where it will write the next message, instead of moving on through its
   * buffer and allocating a fresh one (whose pages fault in) every few large messages. For a
   * caller that copies them at once (the shm layer's send).
   */
  serializeTransient(message: Message): Uint8Array {
    assertSerializable(message);
    return this.packr.pack(message, RESET_BUFFER_MODE);
  }

  /** Random bytes no message holds: the stand-ins of serializePieces() (one per serializer). */
  private readonly standInPrefix = randomBytes(12);

  /**
   * serializeTransient()'s bytes as pieces that leave the message's top-level binary values of
   * `minBytes` or more (at least 64 KiB) uncopied: [bytes before the first such value, its bin
   * header, the value itself, the bytes after it, ...]. Their concatenation is exactly
   * serialize()'s bytes; the pieces other than the values are transient. Undefined when no
   * value is that large. For the shm layer's send, which copies the pieces straight into the
   * segment: a 5 MB Buffer is then copied once on its way, not twice.
   */
  serializePieces(message: Message, minBytes: number): Uint8Array[] | undefined {
    const large = largeBinaryKeys(message, minBytes);
    if (!large) return undefined;
    assertSerializable(message);
    return this.piecesOf(message, large);
  }

  /** Where serializeForCopy()'s last single buffer holds the message: [packedStart, packedEnd). */
  packedStart = 0;
  packedEnd = 0;

  /**
   * What the shm layer's send copies into the segment: serializePieces()'s pieces when the
   * message has a top-level binary value of `minBytes` or more (at least 64 KiB), else
   * serializeTransient()'s bytes, as msgpackr's own buffer with the message at [packedStart,
   * packedEnd) (no view made per message: a fifth of a small message's packing here). One walk
   * of the message both checks it and looks for large values (a send of a small message pays
   * for one walk, not two).
   */
  serializeForCopy(message: Message, minBytes: number): Uint8Array | Uint8Array[] {
    let large = false;
    if (minBytes >= 0x10000 && isPlainObject(message)) {
      for (const key of Object.keys(message)) {
        const value = (message as Record<string, unknown>)[key];
        if (value instanceof Uint8Array) large ||= value.byteLength >= minBytes;
        else if (!serializable(value, 1)) explainUnserializable(message, 'message');
      }
    } else if (!serializable(message, 0)) explainUnserializable(message, 'message');
    if (large) {
      const pieces = this.piecesOf(message, largeBinaryKeys(message, minBytes)!);
      if (pieces) return pieces;
    }
    const target = this.packr.pack(
      message,
      RESET_BUFFER_MODE | REUSE_BUFFER_MODE,
    ) as unknown as PackTarget;
    this.packedStart = target.start;
    this.packedEnd = target.end;
    return target;
  }

  /** serializePieces() of a message checked already, whose `large` keys hold the large values. */
  private piecesOf(message: Message, large: string[]): Uint8Array[] | undefined {
    // Each large value is packed as a 16-byte stand-in (bin8: 0xc4 0x10 and the bytes), found in
    // the output and replaced by the value's own bin32 header and bytes. Keys keep their order.
    const standIn = { ...(message as Record<string, unknown>) };
    const marks: Buffer[] = [];
    for (const [i, key] of large.entries()) {
      const mark = Buffer.alloc(18);
      mark[0] = 0xc4;
      mark[1] = 16;
      this.standInPrefix.copy(mark, 2);
      mark.writeUInt32LE(i, 14);
      marks.push(mark);
      standIn[key] = mark.subarray(2);
    }
    const packed = this.packr.pack(standIn, RESET_BUFFER_MODE);
    const bytes = Buffer.from(packed.buffer, packed.byteOffset, packed.byteLength);
    const pieces: Uint8Array[] = [];
    let from = 0;
    for (const [i, key] of large.entries()) {
      const at = bytes.indexOf(marks[i]!, from);
      if (at < 0) return undefined; // not packed as expected: the caller serializes as usual
      const value = (message as Record<string, Uint8Array>)[key]!;
      const header = Buffer.alloc(5);
      header[0] = 0xc6; // bin32: msgpack's bin for 64 KiB and more
      header.writeUInt32BE(value.byteLength, 1);
      pieces.push(bytes.subarray(from, at), header, value);
      from = at + 18;
    }
    pieces.push(bytes.subarray(from));
    return pieces;
  }

  /** The same options, but bin values are copied out instead of viewing the input. */
  private readonly detachedUnpackr = new Packr({
    useRecords: false,
    mapsAsObjects: true,
    moreTypes: false,
    int64AsType: 'auto' as 'number',
    copyBuffers: true,
  });

  deserialize(bytes: Uint8Array): Message {
    return this.packr.unpack(bytes) as Message;
  }

  /** The range deserializeDetached() reads (one object, reused). */
  private readonly range = { start: 0, end: 0 };

  /**
   * deserialize() of `buffer[start, end)`, a buffer the caller reuses at once (the shm layer's
   * receive scratch buffer): the message keeps no view of it (only bin values are copied, not
   * the whole input), and passing the long-lived buffer itself lets msgpackr reuse the DataView
   * it keeps on it instead of making one per message.
   */
  deserializeDetached(buffer: Uint8Array, start: number, end: number): Message {
    this.range.start = start;
    this.range.end = end;
    return this.detachedUnpackr.unpack(buffer, this.range) as Message;
  }
}

const MAX_DEPTH = 64;

/**
 * msgpack would silently drop or mangle these; a clear error beats a corrupted message. Every
 * message is walked (serializable(): no strings built); only a refused one is walked again to
 * say where the problem is.
 */
function assertSerializable(message: unknown): void {
  if (!serializable(message, 0)) explainUnserializable(message, 'message');
}

/** Whether msgpack carries `value` as it is (what explainUnserializable() would not throw for). */
function serializable(value: unknown, depth: number): boolean {
  switch (typeof value) {
    case 'function':
    case 'symbol':
    case 'bigint':
      return false;
    case 'object': {
      if (value === null) return true;
      // Plain objects first: what nearly every value of a message is.
      const proto: unknown = Object.getPrototypeOf(value);
      if (proto === Object.prototype || proto === null) {
        if (depth > MAX_DEPTH) return false;
        for (const key of Object.keys(value)) {
          if (!serializable((value as Record<string, unknown>)[key], depth + 1)) return false;
        }
        return true;
      }
      if (Array.isArray(value)) {
        if (depth > MAX_DEPTH) return false;
        for (let i = 0; i < value.length; i++) if (!serializable(value[i], depth + 1)) return false;
        return true;
      }
      if (ArrayBuffer.isView(value)) return value instanceof Uint8Array;
      return value instanceof Date;
    }
    default:
      return true;
  }
}

/** Throws the error that says what in `value` (at `path`) msgpack would not carry. */
function explainUnserializable(value: unknown, path: string, depth = 0): void {
  switch (typeof value) {
    case 'function':
    case 'symbol':
    case 'bigint':
      throw new TypeError(`message is not serializable: ${path} is a ${typeof value}`);
    case 'object': {
      if (value === null || value instanceof Uint8Array || value instanceof Date) return;
      if (ArrayBuffer.isView(value)) {
        // msgpack bin carries bytes: other views would come back as garbled Uint8Arrays.
        throw new TypeError(
          `message is not serializable: ${path} is ${describeInstance(value)}; send its bytes as a Uint8Array ` +
            `(new Uint8Array(view.buffer, view.byteOffset, view.byteLength))`,
        );
      }
      if (depth > MAX_DEPTH)
        throw new TypeError(`message is nested deeper than ${MAX_DEPTH} levels`);
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++)
          explainUnserializable(value[i], `${path}[${i}]`, depth + 1);
        return;
      }
      // Only plain objects nest: msgpack would flatten a class instance to its fields (or, for
      // a Map, Set, Error or Promise, to something else entirely) and the receiver would get a
      // different value than was sent.
      const proto: unknown = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        throw new TypeError(
          `message is not serializable: ${path} is ${describeInstance(value)}; ` +
            'send plain objects, arrays, strings, numbers, booleans, null, Dates and Buffers/Uint8Arrays',
        );
      }
      for (const key of Object.keys(value)) {
        explainUnserializable((value as Record<string, unknown>)[key], `${path}.${key}`, depth + 1);
      }
      return;
    }
    default:
      return;
  }
}

function isPlainObject(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** The keys of `message`'s top-level binary values of `minBytes` or more (at least 64 KiB). */
function largeBinaryKeys(message: Message, minBytes: number): string[] | undefined {
  if (Array.isArray(message) || minBytes < 0x10000) return undefined; // only a map's values
  let large: string[] | undefined;
  for (const key of Object.keys(message)) {
    const value = (message as Record<string, unknown>)[key];
    if (value instanceof Uint8Array && value.byteLength >= minBytes) (large ??= []).push(key);
  }
  return large;
}

function describeInstance(value: object): string {
  if (value instanceof Error) return 'an Error';
  if (value instanceof Promise) return 'a Promise';
  const name = (value as { constructor?: { name?: unknown } }).constructor?.name;
  if (typeof name !== 'string' || !name) return 'an object with a custom prototype';
  return `${/^[AEIOU]/.test(name) ? 'an' : 'a'} ${name}`;
}

export const defaultSerializer: Serializer = new MsgpackSerializer();
