// shm-channels/socket.io: a Socket.IO adapter over a channel layer.
export { createAdapter, type LayerAdapterClass } from './create-adapter.js';
export { LayerAdapter } from './adapter.js';
export type { AdapterOptions } from './options.js';
