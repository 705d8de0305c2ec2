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
