// The declarations use Node's own types (AbortSignal, Buffer, NodeJS.Timeout): say so, so a
// TypeScript consumer gets them without listing @types/node itself.
/// <reference types="node" preserve="true" />
export { ShmChannelLayer, type ShmChannelLayerOptions, type ShmLayerStats } from './shm-layer.js';
export type { LockHoldKind, LockHoldOp, LockHoldStats } from './native.js';
export { InMemoryChannelLayer } from './in-memory-layer.js';
export {
  RedisChannelLayer,
  RedisUnavailable,
  type RedisChannelLayerOptions,
  type RedisConnector,
  type RedisConnection,
  type RedisHost,
} from './redis/redis-layer.js';
export {
  ChannelFull,
  SegmentFull,
  MessageTooLarge,
  ShmError,
  LayerClosed,
  ChannelReleased,
  LockTimeout,
} from './errors.js';
export { MsgpackSerializer, defaultSerializer } from './serializer.js';
export { MAX_NAME_LENGTH } from './names.js';
export type {
  ChannelLayer,
  ChannelLayerOptions,
  DeliveryStats,
  Message,
  MessageInput,
  ReceiveAnyOptions,
  ReceivedFrom,
  ReceiveOptions,
  Serializer,
} from './types.js';
