// Where an adapter's layer comes from: one the application passed (and keeps owning), or a
// ShmChannelLayer the adapter opens from options and closes when its last namespace closes.
import { ShmChannelLayer, type ShmChannelLayerOptions } from '../shm/shm-layer.js';
import type { ChannelLayer } from '../types.js';

/** Capacity of the adapter's own channels in a layer it opens: room for bursts between drains. */
const ADAPTER_CHANNEL_CAPACITY = 10_000;

export interface LayerSource {
  acquire(): Promise<ChannelLayer>;
  release(): Promise<void>;
}

export function isChannelLayer(value: unknown): value is ChannelLayer {
  if (typeof value !== 'object' || value === null) return false;
  const layer = value as Record<string, unknown>;
  return [
    'send',
    'receive',
    'newChannel',
    'groupAdd',
    'groupDiscard',
    'groupMembers',
    'releaseChannel',
  ].every((method) => typeof layer[method] === 'function');
}

export function borrowedLayer(layer: ChannelLayer): LayerSource {
  return { acquire: async () => layer, release: async () => {} };
}

export function ownedLayer(options: ShmChannelLayerOptions): LayerSource {
  let layer: ShmChannelLayer | undefined;
  let users = 0;
  const capacities = new Map<string, number>(
    options.channelCapacity instanceof Map
      ? options.channelCapacity
      : Object.entries(options.channelCapacity ?? {}),
  );
  // The application's patterns come first (first match wins); ours covers the adapter's channels.
  if (!capacities.has('sio.*')) capacities.set('sio.*', ADAPTER_CHANNEL_CAPACITY);
  const resolved: ShmChannelLayerOptions = {
    name: 'socket.io',
    ...options,
    channelCapacity: capacities,
  };
  return {
    async acquire() {
      layer ??= new ShmChannelLayer(resolved);
      users++;
      return layer;
    },
    async release() {
      if (--users > 0 || !layer) return;
      const closing = layer;
      layer = undefined;
      await closing.close();
    },
  };
}
