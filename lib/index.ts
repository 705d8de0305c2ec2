// The declarations use Node's own types (AbortSignal, Buffer, NodeJS.Timeout): say so, so a
// TypeScript consumer gets them without listing @types/node itself.
/// <reference types="node" preserve="true" />

// The interface every backend implements, and its message and option types.
export type * from './types.js';

// The backends.
export {
  ShmChannelLayer,
  type ShmChannelLayerOptions,
  type ShmLayerStats,
} from './shm/shm-layer.js';
export type { LockHoldKind, LockHoldOp, LockHoldStats } from './shm/addon.js';
export { InMemoryChannelLayer } from './memory/in-memory-layer.js';
export { RedisChannelLayer, type RedisChannelLayerOptions } from './redis/redis-layer.js';
export type { RedisConnection, RedisConnector, RedisHost } from './redis/connection.js';
export { RedisUnavailable } from './redis/redis-unavailable.js';

// What the backends share.
export {
  ChannelFull,
  SegmentFull,
  MessageTooLarge,
  ShmError,
  type ShmErrorCode,
  LayerClosed,
  ChannelReleased,
  LockTimeout,
} from './errors.js';
export { MsgpackSerializer, defaultSerializer } from './serializer.js';
export { MAX_NAME_LENGTH } from './names.js';
