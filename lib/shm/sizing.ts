/**
 * Default table sizes of a new segment, scaled with its size so that a small segment still leaves
 * most of its bytes to the message arena (the tables take about a fifth of the default 64 MiB).
 */
export const DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024;
const MAX_DEFAULT_MESSAGE_SIZE = 16 * 1024 * 1024;

export interface SegmentSizing {
  size: number;
  maxChannels: number;
  maxGroups: number;
  maxMembers: number;
  maxNodes: number;
  maxMessageSize: number;
}

export function segmentSizing(options: Partial<SegmentSizing>): SegmentSizing {
  const size = options.size ?? DEFAULT_SEGMENT_SIZE;
  if (!Number.isSafeInteger(size) || size < 1024 * 1024) {
    throw new TypeError(`size must be an integer of at least 1 MiB, got ${String(options.size)}`);
  }
  const scale = Math.min(1, size / DEFAULT_SEGMENT_SIZE);
  const scaled = (full: number, floor: number): number => Math.max(floor, Math.floor(full * scale));
  return {
    size,
    maxChannels: options.maxChannels ?? scaled(16384, 128),
    maxGroups: options.maxGroups ?? scaled(4096, 32),
    maxMembers: options.maxMembers ?? scaled(65536, 512),
    maxNodes: options.maxNodes ?? scaled(262144, 2048),
    maxMessageSize:
      options.maxMessageSize ?? Math.min(MAX_DEFAULT_MESSAGE_SIZE, Math.floor(size / 4)),
  };
}
