import { DEFAULT_MAX_MESSAGE_SIZE } from '../settings.js';
import { native } from './addon.js';

export interface SegmentSizing {
  size: number;
  maxChannels: number;
  maxGroups: number;
  maxMembers: number;
  maxNodes: number;
  maxMessageSize: number;
}

/**
 * The sizes of a new segment: those given, the others the core's defaults scaled with the size,
 * so that a small segment still leaves most of its bytes to the message arena (the tables take
 * about a fifth of the default 64 MiB).
 */
export function segmentSizing(options: Partial<SegmentSizing>): SegmentSizing {
  const core = native().constants;
  const size = options.size ?? core.defaultSegmentSize;
  if (!Number.isSafeInteger(size) || size < 1024 * 1024) {
    throw new TypeError(`size must be an integer of at least 1 MiB, got ${String(options.size)}`);
  }
  const scale = Math.min(1, size / core.defaultSegmentSize);
  const scaled = (full: number, floor: number): number => Math.max(floor, Math.floor(full * scale));
  return {
    size,
    maxChannels: options.maxChannels ?? scaled(core.defaultMaxChannels, 128),
    maxGroups: options.maxGroups ?? scaled(core.defaultMaxGroups, 32),
    maxMembers: options.maxMembers ?? scaled(core.defaultMaxMembers, 512),
    maxNodes: options.maxNodes ?? scaled(core.defaultMaxNodes, 2048),
    maxMessageSize:
      options.maxMessageSize ?? Math.min(DEFAULT_MAX_MESSAGE_SIZE, Math.floor(size / 4)),
  };
}
