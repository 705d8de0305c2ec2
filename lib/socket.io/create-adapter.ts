import type { Adapter } from 'socket.io-adapter';
import type { ShmChannelLayerOptions } from '../shm/shm-layer.js';
import type { ChannelLayer } from '../types.js';
import { LayerAdapter } from './adapter.js';
import { borrowedLayer, isChannelLayer, ownedLayer, type LayerSource } from './layer-source.js';
import { resolveAdapterOptions, type AdapterOptions } from './options.js';

/** What createAdapter() returns: an adapter class for socket.io's `adapter` option. */
export type LayerAdapterClass = typeof Adapter & (new (nsp: any) => LayerAdapter);

/**
 * A Socket.IO adapter over a channel layer: `io.adapter(createAdapter(layer))`.
 *
 * @param layerOrOptions a ChannelLayer (ShmChannelLayer on one machine, RedisChannelLayer across
 *   machines) that the application opens and closes, or ShmChannelLayer options (default
 *   `{ name: 'socket.io' }`): then the adapter opens that layer and closes it with the server.
 * @returns the class socket.io constructs once per namespace.
 */
export function createAdapter(
  layerOrOptions?: ChannelLayer | ShmChannelLayerOptions,
  adapterOptions?: AdapterOptions,
): LayerAdapterClass {
  const options = resolveAdapterOptions(adapterOptions);
  let source: LayerSource;
  if (isChannelLayer(layerOrOptions)) {
    source = borrowedLayer(layerOrOptions);
  } else if (
    layerOrOptions === undefined ||
    (typeof layerOrOptions === 'object' && layerOrOptions !== null)
  ) {
    source = ownedLayer((layerOrOptions ?? {}) as ShmChannelLayerOptions);
  } else {
    throw new TypeError(
      'createAdapter(layerOrOptions): pass a ChannelLayer (with groupMembers) or ShmChannelLayer options such as { name: "chat" }',
    );
  }
  return class extends LayerAdapter {
    constructor(nsp: any) {
      super(nsp, source, options);
    }
  };
}
