// One source of truth per rule and default: what lib/ applies on every backend (names, defaults,
// the ShmError codes) against what the C++ core applies, read from the real addon. A rule changed
// on one side only fails here.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { shmLayers } from './support/fixtures.js';
import {
  DEFAULT_CAPACITY,
  DEFAULT_EXPIRY_SECONDS,
  DEFAULT_GROUP_EXPIRY_SECONDS,
  DEFAULT_MAX_MESSAGE_SIZE,
  native,
  packageError,
  SHM_ERROR_CODES,
  validateChannelName,
  validateGroupName,
} from './support/internal.js';
import { MAX_NAME_LENGTH, ROOT, ShmError } from './support/package.js';

/** The core's limits and defaults, as the addon reads them from the C++ constants. */
const inCore = native().constants;
const layers = shmLayers('constants', { size: 4 << 20 });
const attached: Array<{ close(): void }> = [];
afterEach(() => {
  for (const handle of attached.splice(0)) handle.close();
});

/** The binding attached to a fresh layer's segment: the core's own checks, without lib/'s. */
function openCore(): {
  send(channel: string, payload: Uint8Array): unknown;
  groupAdd(group: string, channel: string): void;
} {
  const handle = new (native().NativeLayer)(
    {
      name: layers.open().name,
      create: false,
      capacity: 10,
      channelCapacity: [],
      expiryMs: 60_000,
      groupExpiryMs: 60_000,
    },
    () => {},
  );
  attached.push(handle);
  return handle;
}

/** Whether `check` accepts; a refusal is a TypeError (lib/) or EINVALIDARG (the core). */
function accepts(check: () => unknown): boolean {
  try {
    check();
    return true;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (error instanceof TypeError || code === 'EINVALIDARG') return false;
    throw error;
  }
}

const payload = new Uint8Array([0x80]); // an empty msgpack map

describe('names: lib/names.ts and the core apply one rule', () => {
  // Every ASCII character and two beyond, inside a name, before and after a '!'.
  const characters = [...Array(128).keys()].map((c) => String.fromCharCode(c)).concat('é', '€');

  it('the longest name is the same', () => {
    const core = openCore();
    expect(MAX_NAME_LENGTH).toBe(inCore.maxNameLength);
    for (const length of [MAX_NAME_LENGTH, MAX_NAME_LENGTH + 1]) {
      const name = 'n'.repeat(length);
      const expected = length <= MAX_NAME_LENGTH;
      expect(accepts(() => validateChannelName(name))).toBe(expected);
      expect(accepts(() => core.send(name, payload))).toBe(expected);
      expect(accepts(() => validateGroupName(name))).toBe(expected);
      expect(accepts(() => core.groupAdd(name, 'member'))).toBe(expected);
    }
  });

  it('channel names: the same alphabet, and at most one !', () => {
    const core = openCore();
    for (const name of [
      ...characters.flatMap((c) => [`a${c}b`, `a!b${c}c`]),
      'a!b',
      'a!b!c',
      'a!!b',
    ]) {
      const byLib = accepts(() => validateChannelName(name));
      expect({ name, accepted: accepts(() => core.send(name, payload)) }).toEqual({
        name,
        accepted: byLib,
      });
    }
  });

  it('group names: the same alphabet, without the !', () => {
    const core = openCore();
    for (const name of characters.map((c) => `g${c}h`)) {
      const byLib = accepts(() => validateGroupName(name));
      expect({ name, accepted: accepts(() => core.groupAdd(name, 'member')) }).toEqual({
        name,
        accepted: byLib,
      });
    }
  });

  it("newChannel()'s client id fits what the core tracks of a '!' channel's owner", async () => {
    const channel = await layers.open().newChannel('p');
    const client = channel.slice(channel.indexOf('.') + 1, channel.indexOf('!'));
    // The core tracks a client id shorter than kMaxClientLength, and no other (slots.cc, ClaimSlot).
    expect(client.length).toBeGreaterThan(0);
    expect(client.length).toBeLessThan(inCore.maxClientLength);
  });
});

describe('defaults: lib/settings.ts and the core start from the same values', () => {
  it('capacity, expiry, group expiry and the largest message', () => {
    expect({
      capacity: DEFAULT_CAPACITY,
      expiryMs: DEFAULT_EXPIRY_SECONDS * 1000,
      groupExpiryMs: DEFAULT_GROUP_EXPIRY_SECONDS * 1000,
      maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE,
    }).toEqual({
      capacity: inCore.defaultCapacity,
      expiryMs: inCore.defaultExpiryMs,
      groupExpiryMs: inCore.defaultGroupExpiryMs,
      maxMessageSize: inCore.defaultMaxMessageSize,
    });
  });

  it('a segment opened without sizes has the core default size', () => {
    expect(layers.open({ size: undefined }).stats().segmentBytes).toBe(inCore.defaultSegmentSize);
  });
});

describe('ShmErrorCode: the codes a ShmError can carry', () => {
  // The codes lib/ gives ShmErrors of its own making (not from a native error).
  const layerOwn = ['EOPTIONS', 'EUNLINKED', 'ELOCKTIMEOUT'];

  it('every native error code becomes an error class of its own or a ShmError with a listed code', () => {
    expect(inCore.errorCodes.length).toBeGreaterThan(5);
    const asShmError: string[] = [];
    for (const code of inCore.errorCodes) {
      const error = packageError(Object.assign(new Error(`native ${code}`), { code }));
      expect(error).toBeInstanceOf(Error);
      if (error instanceof ShmError) {
        expect(SHM_ERROR_CODES).toContain(error.code);
        asShmError.push(error.code);
      }
    }
    // And nothing is listed that neither the core nor the layer produces.
    expect([...SHM_ERROR_CODES].sort()).toEqual([...asShmError, ...layerOwn].sort());
  });

  it('the README says what each code means', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    for (const code of SHM_ERROR_CODES) {
      expect(readme).toMatch(new RegExp(`^\\| \`${code}\` \\|`, 'm'));
    }
  });
});
