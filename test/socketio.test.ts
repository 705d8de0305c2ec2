// shm-channels/socket.io: real Socket.IO servers in real node:cluster workers, sharing one
// ShmChannelLayer, and real socket.io-client clients over websockets. The cases follow
// socket.io-adapter's own cluster-adapter suite (broadcast, acks, socketsJoin/Leave,
// disconnectSockets, fetchSockets, serverSideEmit), plus what only this adapter promises: rooms
// reach only the servers with members, liveness from the layer (SIGKILL), bursts without loss,
// connection-state recovery across workers, dynamic namespaces.
//
// A client that must NOT get a message is checked with a barrier: the same server then emits a
// marker to everyone; messages from one server arrive in order, so once the marker is there, the
// message would have been too.
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ShmChannelLayer } from './support/package.js';
import { Client, SioServer, waitFor } from './support/sio-cluster.js';

const layerName = `sio-test-${process.pid}`;
let servers: SioServer[] = [];
let clients: Client[] = [];
let counter = 0;

const unique = (what: string): string => `${what}-${++counter}`;

async function connect(server: SioServer, nsp = '/', options: Parameters<typeof Client.connect>[2] = {}): Promise<Client> {
  const client = await Client.connect(server, nsp, options);
  clients.push(client);
  return client;
}

/** Every client got `event` `times` times; then a marker from `from` to all proves nothing more is coming. */
async function barrier(from: SioServer, nsp = '/'): Promise<void> {
  const marker = unique('marker');
  await from.call('emit', { nsp, event: 'marker', args: [marker] });
  const inNsp = clients.filter((c) => c.socket.connected && c.socket.nsp === nsp);
  await waitFor(() => inNsp.every((c) => c.got('marker').some(([m]) => m === marker)), `marker ${marker} at every client`);
}

beforeAll(async () => {
  servers = await Promise.all(
    ['A', 'B', 'C'].map((name) => SioServer.start({ layer: `shm:${layerName}`, name })),
  );
  await waitFor(async () => (await servers[0]!.call<number>('serverCount')) === 3, 'three servers counted');
}, 30_000);

afterEach(() => {
  for (const client of clients) client.close();
  clients = [];
});

afterAll(async () => {
  await Promise.all(servers.map((server) => server.stop()));
  ShmChannelLayer.destroy(layerName);
});

describe('broadcast', () => {
  it('io.emit reaches every client of every server, once', async () => {
    const [a, b, c] = servers as [SioServer, SioServer, SioServer];
    const clientsOf = [await connect(a), await connect(b), await connect(c)];
    await b.call('emit', { event: 'news', args: ['hello', 42] });
    await waitFor(() => clientsOf.every((client) => client.got('news').length === 1), 'news at every client');
    await barrier(b);
    for (const client of clientsOf) expect(client.got('news')).toEqual([['hello', 42]]);
  });
});
