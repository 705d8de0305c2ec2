import { MessageTooLarge } from './errors.js';
import type { ChannelLayerOptions } from './types.js';

export const DEFAULT_CAPACITY = 100;
export const DEFAULT_EXPIRY_SECONDS = 60;
export const DEFAULT_GROUP_EXPIRY_SECONDS = 86400;
/** Largest serialized message by default, the same on every backend. */
export const DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024;

/** The options every backend shares, checked and with defaults filled in. */
export interface CommonSettings {
  capacity: number;
  channelCapacity: Array<[pattern: string, capacity: number]>;
  expirySeconds: number;
  groupExpirySeconds: number;
  maxMessageSize: number;
}

function positiveInteger(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new TypeError(`${name} must be a positive integer, got ${String(value)}`);
  }
  return value;
}

function positiveSeconds(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new TypeError(`${name} must be a positive number of seconds, got ${String(value)}`);
  }
  return value;
}

export function commonSettings(options: ChannelLayerOptions): CommonSettings {
  const capacity = positiveInteger(options.capacity, 'capacity', DEFAULT_CAPACITY);
  const entries =
    options.channelCapacity instanceof Map
      ? [...options.channelCapacity.entries()]
      : Object.entries(options.channelCapacity ?? {});
  const channelCapacity = entries.map(([pattern, value]): [string, number] => [
    pattern,
    positiveInteger(value, `channelCapacity[${JSON.stringify(pattern)}]`, capacity),
  ]);
  return {
    capacity,
    channelCapacity,
    expirySeconds: positiveSeconds(options.expiry, 'expiry', DEFAULT_EXPIRY_SECONDS),
    groupExpirySeconds: positiveSeconds(
      options.groupExpiry,
      'groupExpiry',
      DEFAULT_GROUP_EXPIRY_SECONDS,
    ),
    maxMessageSize: positiveInteger(
      options.maxMessageSize,
      'maxMessageSize',
      DEFAULT_MAX_MESSAGE_SIZE,
    ),
  };
}

/** A serialized message over the layer's limit: MessageTooLarge, as every backend reports it. */
export function checkMessageSize(bytes: number, settings: CommonSettings): void {
  if (bytes > settings.maxMessageSize) {
    throw new MessageTooLarge(
      `message of ${bytes} bytes exceeds maxMessageSize ${settings.maxMessageSize}: send large data another way ` +
        '(a file or object store) and put its reference in the message, or raise maxMessageSize',
    );
  }
}

/** fnmatch-style glob (as Python's fnmatch.fnmatchcase) to an anchored RegExp. */
export function globToRegExp(glob: string): RegExp {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') out += '.*';
    else if (c === '?') out += '.';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end === -1) {
        out += '\\[';
      } else {
        let body = glob.slice(i + 1, end);
        if (body.startsWith('!')) body = '^' + body.slice(1);
        out += '[' + body.replace(/\\/g, '\\\\') + ']';
        i = end;
      }
    } else out += c.replace(/[.+^${}()|\\/]/g, '\\$&');
  }
  return new RegExp('^' + out + '$', 's');
}

/** Capacity lookup with the first-match-wins rule and a per-name cache. */
export class CapacityRules {
  private readonly rules: Array<[RegExp, number]>;
  private readonly cache = new Map<string, number>();

  constructor(private readonly settings: CommonSettings) {
    this.rules = settings.channelCapacity.map(([glob, cap]) => [globToRegExp(glob), cap]);
  }

  capacityOf(channel: string): number {
    let capacity = this.cache.get(channel);
    if (capacity === undefined) {
      capacity = this.settings.capacity;
      for (const [pattern, cap] of this.rules) {
        if (pattern.test(channel)) {
          capacity = cap;
          break;
        }
      }
      if (this.cache.size > 10000) this.cache.clear();
      this.cache.set(channel, capacity);
    }
    return capacity;
  }
}
