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
