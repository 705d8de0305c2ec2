// A Socket.IO server with the shm-channels adapter, remote-controlled by a test over IPC. Runs as
// a node:cluster worker (or a forked child), listens on a port of its own (exclusive, so each
// client knows which server it talks to) and answers commands:
//   test -> server: { id, op, ...args }      server -> test: { id, ok, result | error }
//   server -> test (once): { ready: true, port, pid }
// Environment: SHMCH_ROOT (the package root: the BUILT package is imported from its dist/),
// SIO_LAYER ('shm:<name>' or 'redis:<url>|<prefix>'), SIO_NAME (a label), SIO_RECOVERY (ms of
// connection-state recovery, unset: off), SIO_ADAPTER (JSON adapter options), SIO_CHANNEL_CAPACITY
// (capacity of the adapter's channels), SIO_GROUP_EXPIRY (Redis layer's groupExpiry).
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Server } from 'socket.io';

const root = process.env.SHMCH_ROOT;
if (!root || !process.send) {
  console.error('sio-server.mjs: needs SHMCH_ROOT and an IPC channel');
  process.exit(2);
}
const { createAdapter } = await import(pathToFileURL(join(root, 'dist/esm/socket.io.mjs')).href);
const { RedisChannelLayer } = await import(pathToFileURL(join(root, 'dist/esm/index.mjs')).href);

const name = process.env.SIO_NAME ?? String(process.pid);
const layerSpec = process.env.SIO_LAYER ?? 'shm:socket.io-test';
const adapterOptions = JSON.parse(process.env.SIO_ADAPTER ?? '{}');
let layer;
let adapterFactory;
if (layerSpec.startsWith('shm:')) {
  const capacity = process.env.SIO_CHANNEL_CAPACITY;
  const channelCapacity = capacity ? { 'sio.*': Number(capacity) } : undefined;
  adapterFactory = createAdapter({ name: layerSpec.slice(4), channelCapacity }, adapterOptions);
} else {
  const [url, prefix] = layerSpec.slice(6).split('|');
  layer = new RedisChannelLayer({
    hosts: [url],
    prefix,
    groupExpiry: Number(process.env.SIO_GROUP_EXPIRY ?? 86400),
  });
  adapterFactory = createAdapter(layer, adapterOptions);
}

const http = createServer();
const recovery = process.env.SIO_RECOVERY ? Number(process.env.SIO_RECOVERY) : undefined;
const io = new Server(http, {
  transports: ['websocket'],
  adapter: adapterFactory,
  ...(recovery
    ? { connectionStateRecovery: { maxDisconnectionDuration: recovery, skipMiddlewares: true } }
    : {}),
});

/** serverSideEmit events this server got, by namespace. */
const serverSide = new Map();

function setUp(nsp) {
  nsp.on('connection', (socket) => {
    socket.data = {
      server: name,
      user: socket.handshake.auth?.user ?? null,
      recovered: socket.recovered,
    };
    socket.on('join', async (rooms, cb) => {
      await socket.join(rooms);
      cb?.(name);
    });
    socket.on('leave', async (room, cb) => {
      await socket.leave(room);
      cb?.(name);
    });
    socket.on('whoami', (cb) =>
      cb({ server: name, id: socket.id, recovered: socket.recovered, rooms: [...socket.rooms] }),
    );
  });
  nsp.on('hello', (...args) => {
    const ack = typeof args[args.length - 1] === 'function' ? args.pop() : undefined;
    const key = nsp.name;
    if (!serverSide.has(key)) serverSide.set(key, []);
    serverSide.get(key).push(args);
    if (ack && !args.includes('no-answer')) ack(`${name}:${args[0]}`);
  });
  nsp.adapter.on?.('error', (error) => console.error(`[${name}] adapter error`, error));
}

setUp(io.of('/'));
setUp(io.of('/chat'));
const dynamic = io.of(/^\/dyn-\w+$/);
dynamic.on('connection', (socket) => {
  socket.data = { server: name, dynamic: socket.nsp.name };
  socket.on('join', async (rooms, cb) => {
    await socket.join(rooms);
    cb?.(name);
  });
});

function target(nsp, { rooms, except, local, volatile, compress, timeout }) {
  let operator = /** @type {any} */ (io.of(nsp ?? '/'));
  if (local) operator = operator.local;
  if (rooms?.length) operator = operator.to(rooms);
  if (except?.length) operator = operator.except(except);
  if (volatile) operator = operator.volatile;
  if (compress !== undefined) operator = operator.compress(compress);
  if (timeout !== undefined) operator = operator.timeout(timeout);
  return operator;
}

const ops = {
  async emit(args) {
    const count = args.count ?? 1;
    for (let i = 0; i < count; i++) {
      const payload = args.count ? [...args.args, i] : args.args;
      target(args.nsp, args).emit(args.event, ...payload);
    }
    // Returns once the broadcasts are in the other servers' channels: later steps of a test
    // (e.g. another server's request) are then ordered after them.
    await /** @type {any} */ (io.of(args.nsp ?? '/').adapter).sent();
  },
  async emitBinary(args) {
    const bytes = Buffer.from(args.bytes, 'base64');
    target(args.nsp, args).emit(args.event, { n: bytes.length }, bytes);
  },
  async emitDynamic(args) {
    // A broadcast from the parent namespace reaches the matching child namespaces.
    (args.rooms?.length ? dynamic.to(args.rooms) : dynamic).emit(args.event, ...args.args);
  },
  async emitWithAck(args) {
    try {
      return { responses: await target(args.nsp, args).emitWithAck(args.event, ...args.args) };
    } catch (error) {
      return { error: error.message };
    }
  },
  async socketsJoin(args) {
    target(args.nsp, args).socketsJoin(args.join);
  },
  async socketsLeave(args) {
    target(args.nsp, args).socketsLeave(args.leave);
  },
  async disconnectSockets(args) {
    target(args.nsp, args).disconnectSockets(args.close ?? false);
  },
  async fetchSockets(args) {
    try {
      const sockets = await target(args.nsp, args).fetchSockets();
      return {
        sockets: sockets.map((s) => ({
          id: s.id,
          rooms: [...s.rooms],
          data: s.data,
          user: s.handshake?.auth?.user ?? null,
        })),
      };
    } catch (error) {
      return { error: error.message };
    }
  },
  async remoteEmit(args) {
    // RemoteSocket.emit / join / leave / disconnect on a socket that may live on another server.
    const [socket] = await io
      .of(args.nsp ?? '/')
      .in(args.socketId)
      .fetchSockets();
    if (!socket) return { found: false };
    if (args.join) socket.join(args.join);
    if (args.event) socket.emit(args.event, ...args.args);
    if (args.disconnect) socket.disconnect(true);
    return { found: true };
  },
  async serverSideEmit(args) {
    const nsp = io.of(args.nsp ?? '/');
    if (!args.ack) {
      nsp.serverSideEmit('hello', ...args.args);
      return null;
    }
    try {
      return { responses: await nsp.serverSideEmitWithAck('hello', ...args.args) };
    } catch (error) {
      return { error: error.message };
    }
  },
  async serverSideReceived(args) {
    return serverSide.get(args.nsp ?? '/') ?? [];
  },
  async serverCount(args) {
    return io.of(args.nsp ?? '/').adapter.serverCount();
  },
  async stats(args) {
    return /** @type {any} */ (io.of(args.nsp ?? '/').adapter).stats();
  },
  async localRooms(args) {
    return [...io.of(args.nsp ?? '/').adapter.rooms.keys()];
  },
  async emitAndClose(args) {
    // A last broadcast, then a graceful shutdown at once.
    io.of('/').emit(args.event, ...args.args);
    return ops.close();
  },
  async close() {
    await io.close();
    await layer?.close();
    setImmediate(() => process.exit(0));
    return null;
  },
};

process.on('message', async (/** @type {any} */ message) => {
  if (!message || typeof message.id !== 'number') return;
  const { id, op, ...args } = message;
  try {
    const result = await ops[op](args);
    process.send({ id, ok: true, result: result ?? null });
  } catch (error) {
    process.send({ id, ok: false, error: String(error?.stack ?? error) });
  }
});

process.on('disconnect', () => process.exit(0));

http.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
  process.send({ ready: true, port: /** @type {any} */ (http.address()).port, pid: process.pid });
});
