// Type-checked by test/socketio-types.test.ts: how an application writes it in TypeScript.
import { createServer } from 'node:http';
import { Server } from 'socket.io';
import { InMemoryChannelLayer } from 'shm-channels';
import { createAdapter, type AdapterOptions, type LayerAdapterClass } from 'shm-channels/socket.io';

const options: AdapterOptions = { requestsTimeout: 2000, prefix: 'app' };
const io = new Server(createServer(), { adapter: createAdapter({ name: 'typed' }, options) });
const onLayer: LayerAdapterClass = createAdapter(new InMemoryChannelLayer());
io.adapter(onLayer);
export const count: Promise<number> = io.of('/').adapter.serverCount();
// @ts-expect-error the first argument is a layer or layer options
createAdapter('chat');
