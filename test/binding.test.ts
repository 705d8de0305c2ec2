// The Node-API binding called directly, as lib/ does: inputs the core cannot represent are refused
// with a typed error instead of being cut down or crashing the process.
import { afterEach, expect, it } from 'vitest';
import { native } from './support/internal.js';

const binding = native();
const names: string[] = [];

afterEach(() => {
  for (const name of names.splice(0)) binding.NativeLayer.destroy(name);
});

function openNative(): {
  send(c: string, p: Uint8Array): void;
  groupSend(g: string, p: Uint8Array): number;
  groupAdd(g: string, c: string): void;
  stats(): { queued: number; messagesSent: number };
  close(): void;
} {
  const name = `binding-${process.pid}-${names.length}`;
  names.push(name);
  return new binding.NativeLayer(
    {
      name,
      size: 4 << 20,
      maxChannels: 64,
      maxGroups: 16,
      maxMembers: 64,
      maxNodes: 256,
      maxMessageSize: 1 << 20,
      capacity: 10,
      channelCapacity: [],
      expiryMs: 60_000,
      groupExpiryMs: 60_000,
    },
    () => {},
  );
}

// Finding 15: the payload length was cast to 32 bits, so a 4 GiB payload became an empty message
// (and 4 GiB + n bytes a message of its first n bytes) that passed the maxMessageSize check.
it('a payload of 4 GiB or more is refused (ETOOLARGE), not truncated to its low 32 bits', () => {
  const layer = openNative();
  let huge: Uint8Array;
  try {
    huge = new Uint8Array(2 ** 32); // zero pages: reserved, never touched
  } catch {
    // A runtime whose typed arrays cannot be this long cannot hand the binding such a payload.
    return;
  }
  layer.groupAdd('g', 'c');
  for (const call of [() => layer.send('c', huge), () => layer.groupSend('g', huge)]) {
    let error: unknown;
    try {
      call();
    } catch (e) {
      error = e;
    }
    expect((error as { code?: string }).code).toBe('ETOOLARGE');
    expect((error as Error).message).toContain('4294967296 bytes');
  }
  expect(layer.stats().queued).toBe(0);
  expect(layer.stats().messagesSent).toBe(0);
  layer.close();
});

// send() and receive() read their payload and scratch buffer with one typed-array call: every
// kind of typed array still counts in bytes, and anything else is refused as before.
it('payloads and scratch buffers of any typed-array kind are taken by their bytes', () => {
  const layer = openNative() as unknown as {
    send(c: string, p: unknown): boolean | number;
    receive(c: string, wanted: number, coversAll: boolean, scratch?: unknown): unknown;
    close(): void;
  };
  const doubles = new Float64Array([1.5, -2, 3]);
  expect(layer.send('kinds', doubles)).toBe(true);
  const scratch = new Uint16Array(512);
  const length = layer.receive('kinds', 1, false, scratch) as number;
  expect(typeof length).toBe('number');
  const bytes = new Uint8Array(scratch.buffer, 0, length);
  expect(Buffer.from(bytes.subarray(0, 24)).equals(Buffer.from(doubles.buffer))).toBe(true);
  // A scratch too small (or none): the batch comes back in a Buffer of its own.
  expect(layer.send('kinds', new Uint8Array([7, 8, 9]))).toBe(true);
  const own = layer.receive('kinds', 1, false, new Uint8Array(2)) as Buffer;
  expect(Buffer.isBuffer(own)).toBe(true);
  expect([...own.subarray(0, 3)]).toEqual([7, 8, 9]);
  for (const bad of [new DataView(new ArrayBuffer(4)), 'text', 12, [new Uint8Array(1), {}]]) {
    expect(() => layer.send('kinds', bad)).toThrow(/payload must be a Uint8Array/);
  }
  expect(layer.receive('kinds', 1, false)).toBeNull();
  layer.close();
});

// The shm layer sends a range of the serializer's buffer, not a view made per message.
it('a send of a range of the payload queues exactly those bytes; a range outside it is refused', () => {
  const layer = openNative() as unknown as {
    send(c: string, p: unknown, start?: unknown, end?: unknown): boolean | number;
    receive(c: string, wanted: number, coversAll: boolean, scratch?: unknown): unknown;
    stats(): { queued: number };
    close(): void;
  };
  const bytes = new Uint8Array([10, 11, 12, 13, 14, 15]);
  expect(layer.send('range', bytes, 2, 5)).toBe(true);
  const scratch = new Uint8Array(256);
  expect(typeof layer.receive('range', 1, false, scratch)).toBe('number');
  expect([...scratch.subarray(0, 3)]).toEqual([12, 13, 14]); // the batch's payloads come first
  expect(layer.send('range', bytes, 0, 6)).toBe(true);
  expect(layer.send('range', bytes, 3, 3)).toBe(true); // an empty message
  for (const [start, end] of [
    [4, 2],
    [0, 7],
    [1, 'x'],
    [1, undefined],
  ]) {
    expect(() => layer.send('range', bytes, start, end)).toThrow(/range of the payload's bytes/);
  }
  expect(layer.stats().queued).toBe(2);
  const own = layer.receive('range', 1, false) as Buffer;
  expect([...own.subarray(0, 6)]).toEqual([10, 11, 12, 13, 14, 15]);
  layer.close();
  expect(() => layer.send('kinds', new Uint8Array(1))).toThrow(/the layer is closed/);
});

// send(), receive() and receiveAny() are functions of each instance that reach it without
// napi_unwrap; one kept after its layer was collected must throw, never touch the freed instance.
it('a send, receive or receiveAny function kept after its layer was garbage-collected throws', async () => {
  const { setFlagsFromString } = await import('node:v8');
  const { runInNewContext } = await import('node:vm');
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  let collected = false;
  const registry = new FinalizationRegistry(() => {
    collected = true;
  });
  const kept = (() => {
    const layer = openNative() as unknown as {
      send(c: string, p: Uint8Array): unknown;
      receive(c: string, wanted: number, coversAll: boolean): unknown;
      receiveAny(set: number, positions: number[], wanted: number): unknown;
    };
    registry.register(layer, 'layer');
    return { send: layer.send, receive: layer.receive, receiveAny: layer.receiveAny };
  })();
  for (let i = 0; i < 50 && !collected; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  expect(collected).toBe(true);
  await new Promise((resolve) => setImmediate(resolve)); // the addon's finalizer runs after
  expect(() => kept.send('c', new Uint8Array(1))).toThrow(/the layer is closed/);
  expect(() => kept.receive('c', 1, false)).toThrow(/the layer is closed/);
  expect(() => kept.receiveAny(1, [], 1)).toThrow(/the layer is closed/);
});

it('receiveAny refuses arguments of the wrong type with a TypeError, taking nothing', () => {
  const layer = openNative() as unknown as {
    send(c: string, p: Uint8Array): void;
    defineSet(channels: string[]): number;
    receiveAny(set: unknown, positions: unknown, wanted: unknown): Uint8Array | number | null;
    stats(): { queued: number };
  };
  layer.send('any-a', new Uint8Array(3));
  const set = layer.defineSet(['any-a', 'any-b']);
  expect(() => layer.receiveAny(String(set), [0], 1)).toThrow(TypeError);
  expect(() => layer.receiveAny(set, 0, 1)).toThrow(TypeError);
  expect(() => layer.receiveAny(set, [0], '1')).toThrow(TypeError);
  expect(() => layer.receiveAny(set, ['0'], 1)).toThrow(/positions must be numbers/);
  expect(() => layer.receiveAny(set, [2], 1)).toThrow(/out of range/);
  expect(layer.stats().queued).toBe(1);
  expect(layer.receiveAny(set, [0, 1], 1)).not.toBeNull();
  expect(layer.stats().queued).toBe(0);
});
