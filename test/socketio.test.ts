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
import { haveRedisServer, RedisServer } from './support/redis-server.js';
import { Client, SioServer, waitFor } from './support/sio-cluster.js';

const layerName = `sio-test-${process.pid}`;
let servers: SioServer[] = [];
let clients: Client[] = [];
let counter = 0;

const unique = (what: string): string => `${what}-${++counter}`;

async function connect(
  server: SioServer,
  nsp = '/',
  options: Parameters<typeof Client.connect>[2] = {},
): Promise<Client> {
  const client = await Client.connect(server, nsp, options);
  clients.push(client);
  return client;
}

/** Every client got `event` `times` times; then a marker from `from` to all proves nothing more is coming. */
async function barrier(from: SioServer, nsp = '/'): Promise<void> {
  const marker = unique('marker');
  await from.call('emit', { nsp, event: 'marker', args: [marker] });
  const inNsp = clients.filter((c) => c.socket.connected && c.nsp === nsp);
  await waitFor(
    () => inNsp.every((c) => c.got('marker').some(([m]) => m === marker)),
    `marker ${marker} at every client`,
  );
}

beforeAll(async () => {
  servers = await Promise.all(
    ['A', 'B', 'C'].map((name) => SioServer.start({ layer: `shm:${layerName}`, name })),
  );
  await waitFor(
    async () => (await servers[0]!.call<number>('serverCount')) === 3,
    'three servers counted',
  );
}, 30_000);

afterEach(() => {
  for (const client of clients) client.close();
  clients = [];
});

afterAll(async () => {
  await Promise.all(servers.map((server) => server.stop()));
  ShmChannelLayer.destroy(layerName);
});

function three(): [SioServer, SioServer, SioServer] {
  return servers.slice(0, 3) as [SioServer, SioServer, SioServer];
}

describe('broadcast', () => {
  it('io.emit reaches every client of every server, once', async () => {
    const [a, b, c] = three();
    const clientsOf = [await connect(a), await connect(b), await connect(c)];
    await b.call('emit', { event: 'news', args: ['hello', 42] });
    await waitFor(
      () => clientsOf.every((client) => client.got('news').length === 1),
      'news at every client',
    );
    await barrier(b);
    for (const client of clientsOf) expect(client.got('news')).toEqual([['hello', 42]]);
  });

  it('a namespace broadcast reaches only that namespace', async () => {
    const [a, b, c] = three();
    const chat = [await connect(a, '/chat'), await connect(c, '/chat')];
    const main = [await connect(a), await connect(b)];
    await b.call('emit', { nsp: '/chat', event: 'chat', args: ['in chat'] });
    await waitFor(
      () => chat.every((client) => client.got('chat').length === 1),
      'chat at /chat clients',
    );
    await barrier(b);
    for (const client of main) expect(client.got('chat')).toEqual([]);
  });

  it('a room broadcast reaches the room members on every server, and only servers with members', async () => {
    const [a, b, c] = three();
    const room = unique('room');
    const inA = await connect(a);
    const inB = await connect(b);
    const outsider = await connect(c);
    const notInRoom = await connect(a);
    await inA.join(room);
    await inB.join(room);
    const before = await c.call<{ received: number }>('stats');
    for (let i = 0; i < 20; i++) await b.call('emit', { rooms: [room], event: 'room', args: [i] });
    await waitFor(
      () => inA.got('room').length === 20 && inB.got('room').length === 20,
      'room messages at members',
    );
    await barrier(b);
    // Server C has no member: of B's messages it got only the namespace-wide marker, which came
    // after the 20 (one sender's messages arrive in order).
    const after = await c.call<{ received: number }>('stats');
    expect(after.received - before.received).toBe(1);
    expect(outsider.got('room')).toEqual([]);
    expect(notInRoom.got('room')).toEqual([]);
    expect(inA.got('room')).toEqual(Array.from({ length: 20 }, (_, i) => [i]));
  });

  it('io.to([r1, r2]) delivers once to a socket in both rooms; except() leaves a room out', async () => {
    const [a, b, c] = three();
    const [r1, r2, r3] = [unique('r'), unique('r'), unique('r')];
    const both = await connect(a);
    const onlyR2 = await connect(b);
    const excluded = await connect(c);
    await both.join(r1, r2);
    await onlyR2.join(r2);
    await excluded.join(r1, r3);
    await c.call('emit', { rooms: [r1, r2], except: [r3], event: 'multi', args: ['x'] });
    await waitFor(
      () => both.got('multi').length === 1 && onlyR2.got('multi').length === 1,
      'multi-room delivery',
    );
    await barrier(c);
    expect(both.got('multi')).toEqual([['x']]);
    expect(excluded.got('multi')).toEqual([]);
  });

  it('io.except(room) reaches everyone else on every server', async () => {
    const [a, b, c] = three();
    const room = unique('except');
    const inRoom = await connect(b);
    const others = [await connect(a), await connect(c)];
    await inRoom.join(room);
    await a.call('emit', { except: [room], event: 'except', args: [1] });
    await waitFor(
      () => others.every((client) => client.got('except').length === 1),
      'except delivery',
    );
    await barrier(a);
    expect(inRoom.got('except')).toEqual([]);
  });

  it('io.local.emit stays on the emitting server', async () => {
    const [a, b] = three();
    const here = await connect(a);
    const there = await connect(b);
    await a.call('emit', { local: true, event: 'local', args: ['only here'] });
    await waitFor(() => here.got('local').length === 1, 'local delivery');
    await barrier(a);
    expect(there.got('local')).toEqual([]);
  });

  it('volatile and compress(false) broadcasts are delivered across servers', async () => {
    const [a, b] = three();
    const there = await connect(b);
    await a.call('emit', { volatile: true, event: 'volatile', args: ['v'] });
    await a.call('emit', { compress: false, event: 'plain', args: ['p'] });
    await waitFor(
      () => there.got('volatile').length === 1 && there.got('plain').length === 1,
      'flagged broadcasts',
    );
  });

  it('binary payloads arrive intact on other servers', async () => {
    const [a, b, c] = three();
    const payload = randomBytes(4096);
    const receivers = [await connect(b), await connect(c)];
    const room = unique('bin');
    for (const client of receivers) await client.join(room);
    // IPC carries no Buffers: base64 to the worker, which emits a real Buffer.
    await a.call('emitBinary', { rooms: [room], event: 'bin', bytes: payload.toString('base64') });
    await waitFor(
      () => receivers.every((client) => client.got('bin').length === 1),
      'binary delivery',
    );
    for (const client of receivers) {
      const [[meta, data]] = client.got('bin') as [[{ n: number }, ArrayBuffer]];
      expect(meta).toEqual({ n: payload.length });
      expect(Buffer.from(data).equals(payload)).toBe(true);
    }
  });

  it('keeps per-room order and loses nothing in a burst of 1,000 synchronous emits', async () => {
    const [a, b, c] = three();
    const room = unique('burst');
    const receivers = [await connect(b), await connect(c), await connect(b)];
    for (const client of receivers) await client.join(room);
    await a.call('emit', { rooms: [room], event: 'burst', args: [], count: 1000 });
    await waitFor(
      () => receivers.every((client) => client.got('burst').length >= 1000),
      '1000 messages at each member',
      30_000,
    );
    const expected = Array.from({ length: 1000 }, (_, i) => [i]);
    for (const client of receivers) expect(client.got('burst')).toEqual(expected);
  });
});

describe('broadcast with acks', () => {
  it('collects the acks of clients on every server', async () => {
    const [a, b, c] = three();
    for (const server of [a, b, c])
      await connect(server, '/', { ackWith: (_e, args) => `ack:${String(args[0])}` });
    const result = await a.call<{ responses?: unknown[]; error?: string }>('emitWithAck', {
      timeout: 5000,
      event: 'ask',
      args: ['q'],
    });
    expect(result.error).toBeUndefined();
    expect(result.responses).toEqual(['ack:q', 'ack:q', 'ack:q']);
  });

  it('collects acks from a room only, counting servers without members as zero', async () => {
    const [a, b, c] = three();
    const room = unique('ackroom');
    const member = await connect(c, '/', { ackWith: () => 'member' });
    await connect(b, '/', { ackWith: () => 'not a member' });
    await member.join(room);
    const result = await a.call<{ responses?: unknown[]; error?: string }>('emitWithAck', {
      rooms: [room],
      timeout: 5000,
      event: 'ask',
      args: [],
    });
    expect(result).toEqual({ responses: ['member'] });
  });

  it('resolves with no responses when no client is there', async () => {
    const [a] = three();
    const result = await a.call('emitWithAck', {
      rooms: [unique('empty')],
      timeout: 5000,
      event: 'ask',
      args: [],
    });
    expect(result).toEqual({ responses: [] });
  });

  it('times out with the responses so far when a client does not ack', async () => {
    const [a, b] = three();
    await connect(a, '/', { ackWith: () => 'fast' });
    await connect(b); // never acks
    const started = Date.now();
    const result = await a.call<{ error?: string }>('emitWithAck', {
      timeout: 500,
      event: 'ask',
      args: [],
    });
    expect(result.error).toMatch(/timed out/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(450);
  });
});

describe('socketsJoin, socketsLeave, disconnectSockets', () => {
  it('socketsJoin makes matching sockets on every server join a room', async () => {
    const [a, b, c] = three();
    const [from, to] = [unique('from'), unique('to')];
    const joined = [await connect(b), await connect(c)];
    const other = await connect(c);
    for (const client of joined) await client.join(from);
    await a.call('socketsJoin', { rooms: [from], join: to });
    await waitFor(
      async () =>
        (await b.call<string[]>('localRooms')).includes(to) &&
        (await c.call<string[]>('localRooms')).includes(to),
      'room created by socketsJoin',
    );
    await a.call('emit', { rooms: [to], event: 'joined', args: [] });
    await waitFor(
      () => joined.every((client) => client.got('joined').length === 1),
      'delivery to the joined room',
    );
    await barrier(a);
    expect(other.got('joined')).toEqual([]);
  });

  it('socketsLeave makes matching sockets leave a room on every server', async () => {
    const [a, b, c] = three();
    const room = unique('leave');
    const leaving = await connect(b);
    const staying = await connect(c);
    await leaving.join(room);
    await staying.join(room);
    await a.call('socketsLeave', { rooms: [leaving.socket.id], leave: room });
    await waitFor(
      async () => !(await b.call<string[]>('localRooms')).includes(room),
      'room left on B',
    );
    await a.call('emit', { rooms: [room], event: 'after-leave', args: [] });
    await waitFor(() => staying.got('after-leave').length === 1, 'delivery to who stayed');
    await barrier(a);
    expect(leaving.got('after-leave')).toEqual([]);
  });

  it('disconnectSockets disconnects the sockets of a room on every server, a single socket by its id', async () => {
    const [a, b, c] = three();
    const room = unique('kick');
    const kicked = [await connect(b), await connect(c)];
    const single = await connect(c);
    const spared = await connect(b);
    for (const client of kicked) await client.join(room);
    await a.call('disconnectSockets', { rooms: [room], close: false });
    await waitFor(
      () => kicked.every((client) => !client.socket.connected),
      'room members disconnected',
    );
    await a.call('disconnectSockets', { rooms: [single.socket.id!] });
    await waitFor(() => !single.socket.connected, 'single socket disconnected');
    expect(spared.socket.connected).toBe(true);
  });
});

describe('fetchSockets', () => {
  it('returns the sockets of every server with id, rooms, data and handshake', async () => {
    const [a, b, c] = three();
    const room = unique('fetch');
    const members = [
      await connect(a, '/', { auth: { user: 'ann' } }),
      await connect(b, '/', { auth: { user: 'bob' } }),
      await connect(c, '/', { auth: { user: 'cy' } }),
    ];
    await connect(c, '/', { auth: { user: 'outsider' } });
    for (const client of members) await client.join(room);
    const result = await b.call<{
      sockets: Array<{ id: string; rooms: string[]; data: { server: string }; user: string }>;
    }>('fetchSockets', { rooms: [room] });
    const byUser = Object.fromEntries(result.sockets.map((s) => [s.user, s]));
    expect(Object.keys(byUser).sort()).toEqual(['ann', 'bob', 'cy']);
    expect(byUser.ann!.data.server).toBe('A');
    expect(byUser.cy!.data.server).toBe('C');
    expect(byUser.ann!.id).toBe(members[0]!.socket.id);
    expect(byUser.cy!.rooms.sort()).toEqual([members[2]!.socket.id, room].sort());
    const all = await a.call<{ sockets: unknown[] }>('fetchSockets', {});
    expect(all.sockets.length).toBeGreaterThanOrEqual(4);
  });

  it('finds a single socket on another server by its id, and local() only looks here', async () => {
    const [a, b, c] = three();
    const target = await connect(c, '/', { auth: { user: 'target' } });
    const one = await a.call<{ sockets: Array<{ id: string; user: string }> }>('fetchSockets', {
      rooms: [target.socket.id],
    });
    expect(one.sockets.map((s) => s.user)).toEqual(['target']);
    const local = await b.call<{ sockets: unknown[] }>('fetchSockets', {
      rooms: [target.socket.id],
      local: true,
    });
    expect(local.sockets).toEqual([]);
    // A RemoteSocket acts on the server that has it.
    expect(
      await a.call('remoteEmit', { socketId: target.socket.id, event: 'direct', args: ['to you'] }),
    ).toEqual({ found: true });
    await waitFor(() => target.got('direct').length === 1, 'RemoteSocket.emit delivery');
  });
});

describe('RemoteSocket', () => {
  it('joins a room and disconnects on the server that has the socket', async () => {
    const [a, b, c] = three();
    const target = await connect(c);
    const room = unique('remote-join');
    expect(await a.call('remoteEmit', { socketId: target.socket.id, join: room })).toEqual({
      found: true,
    });
    await waitFor(
      async () => (await c.call<string[]>('localRooms')).includes(room),
      'remote join applied on C',
    );
    await b.call('emit', { rooms: [room], event: 'joined-remotely', args: [] });
    await waitFor(
      () => target.got('joined-remotely').length === 1,
      'delivery to the remotely joined room',
    );
    expect(await a.call('remoteEmit', { socketId: target.socket.id, disconnect: true })).toEqual({
      found: true,
    });
    await waitFor(() => !target.socket.connected, 'remote disconnect');
  });
});

describe('serverSideEmit', () => {
  it('reaches the other servers, not the sender', async () => {
    const [a, b, c] = three();
    const tag = unique('sse');
    await a.call('serverSideEmit', { args: [tag, { n: 1 }] });
    for (const server of [b, c]) {
      await waitFor(
        async () => (await server.call<unknown[][]>('serverSideReceived')).some(([t]) => t === tag),
        `${server.name} got ${tag}`,
      );
    }
    expect((await a.call<unknown[][]>('serverSideReceived')).some(([t]) => t === tag)).toBe(false);
    expect((await b.call<unknown[][]>('serverSideReceived')).find(([t]) => t === tag)).toEqual([
      tag,
      { n: 1 },
    ]);
  });

  it('with an ack, collects one response per other server', async () => {
    const [a] = three();
    const result = await a.call<{ responses: string[] }>('serverSideEmit', {
      ack: true,
      args: ['q'],
    });
    expect(result.responses.sort()).toEqual(['B:q', 'C:q']);
  });

  it('with an ack, times out with the responses so far when a server does not answer', async () => {
    const [a] = three();
    const result = await a.call<{ error?: string }>('serverSideEmit', {
      ack: true,
      args: ['q', 'no-answer'],
    });
    expect(result.error).toMatch(/timeout reached: missing 2 responses/);
  });
});

describe('namespaces', () => {
  it('io.of(/regex/): dynamic namespaces broadcast across servers, rooms included', async () => {
    const [a, b, c] = three();
    const nsp = `/dyn-${unique('x').replace(/\W/g, '')}`;
    const here = await connect(a, nsp);
    const there = await connect(b, nsp);
    const roomMember = await connect(c, nsp);
    const room = unique('dynroom');
    await roomMember.join(room);
    await a.call('emitDynamic', { event: 'dyn', args: ['all'] });
    await waitFor(
      () => [here, there, roomMember].every((client) => client.got('dyn').length === 1),
      'dynamic namespace delivery',
    );
    await a.call('emitDynamic', { rooms: [room], event: 'dynroom', args: ['room'] });
    await waitFor(() => roomMember.got('dynroom').length === 1, 'dynamic namespace room delivery');
    expect(there.got('dynroom')).toEqual([]);
  });
});

describe('full channels', () => {
  const name = `${layerName}-tiny`;
  let small: SioServer[] = [];

  beforeAll(async () => {
    // Channels of 2 messages: a burst fills them at once, so the senders must wait and retry.
    small = await Promise.all(
      ['F', 'G'].map((n) => SioServer.start({ layer: `shm:${name}`, name: n, channelCapacity: 2 })),
    );
    await waitFor(
      async () => (await small[0]!.call<number>('serverCount')) === 2,
      'two servers counted',
    );
  }, 30_000);

  afterAll(async () => {
    await Promise.all(small.map((server) => server.stop()));
    ShmChannelLayer.destroy(name);
  });

  it('a burst of 1,000 emits into channels of capacity 2 arrives whole and in order', async () => {
    const [f, g] = small as [SioServer, SioServer];
    const room = unique('tiny');
    const receivers = [await connect(g), await connect(g)];
    for (const client of receivers) await client.join(room);
    for (let round = 0; round < 3; round++) {
      await f.call('emit', { rooms: [room], event: `burst${round}`, args: [], count: 1000 });
    }
    const expected = Array.from({ length: 1000 }, (_, i) => [i]);
    for (let round = 0; round < 3; round++) {
      await waitFor(
        () => receivers.every((client) => client.got(`burst${round}`).length >= 1000),
        `burst ${round}`,
        30_000,
      );
      for (const client of receivers) expect(client.got(`burst${round}`)).toEqual(expected);
    }
    expect((await f.call<{ waiting: number }>('stats')).waiting).toBe(0);
  });
});

describe('liveness from the layer: servers that die or start', () => {
  const name = `${layerName}-live`;
  let p: SioServer;
  let q: SioServer;
  let r: SioServer;
  const started: SioServer[] = [];

  beforeAll(async () => {
    // P's requests could wait 20 s: whatever ends them sooner is the liveness check.
    [p, q, r] = await Promise.all([
      SioServer.start({ layer: `shm:${name}`, name: 'P', adapter: { requestsTimeout: 20_000 } }),
      SioServer.start({ layer: `shm:${name}`, name: 'Q' }),
      SioServer.start({ layer: `shm:${name}`, name: 'R' }),
    ]);
    started.push(p, q, r);
    await waitFor(async () => (await p.call<number>('serverCount')) === 3, 'three servers counted');
  }, 30_000);

  afterAll(async () => {
    await Promise.all(started.map((server) => server.stop()));
    ShmChannelLayer.destroy(name);
  });

  it('a SIGKILLed server releases the requests waiting on it, stops being counted; a new server is counted within 5 s', async () => {
    await connect(p, '/', { auth: { user: 'on-p' }, ackWith: () => 'p' });
    await connect(q, '/', { auth: { user: 'on-q' }, ackWith: () => 'q' });
    await connect(r, '/', { auth: { user: 'on-r' }, ackWith: () => 'r' });
    // R stops answering (still alive, still counted) and then dies with requests waiting on it.
    r.signal('SIGSTOP');
    const fetching = p.call<{ sockets?: Array<{ user: string }>; error?: string }>('fetchSockets', {
      timeout: 20_000,
    });
    const asking = p.call<{ responses?: string[]; error?: string }>('serverSideEmit', {
      ack: true,
      args: ['q'],
    });
    const acking = p.call<{ responses?: string[]; error?: string }>('emitWithAck', {
      timeout: 20_000,
      event: 'ask',
      args: [],
    });
    await waitFor(
      async () => (await q.call<unknown[][]>('serverSideReceived')).some(([t]) => t === 'q'),
      'the request reached Q',
    );
    r.signal('SIGKILL');
    const killedAt = Date.now();
    const [fetched, asked, acked] = await Promise.all([fetching, asking, acking]);
    const released = Date.now() - killedAt;
    expect(fetched.error).toBeUndefined();
    expect(fetched.sockets!.map((s) => s.user).sort()).toEqual(['on-p', 'on-q']);
    expect(asked).toEqual({ responses: ['Q:q'] });
    expect(acked.error).toBeUndefined();
    expect(acked.responses!.sort()).toEqual(['p', 'q']);
    // Released by the layer's liveness (seconds), not by the 20 s timeouts.
    expect(released).toBeLessThan(12_000);
    await waitFor(
      async () => (await p.call<number>('serverCount')) === 2,
      'the dead server no longer counted',
      10_000,
    );
    expect(await q.call('serverCount')).toBe(2);

    const s = await SioServer.start({ layer: `shm:${name}`, name: 'S' });
    started.push(s);
    await waitFor(
      async () => (await p.call<number>('serverCount')) === 3,
      'the new server counted',
      5000,
    );
    const client = await connect(s);
    await p.call('emit', { event: 'welcome', args: ['S'] });
    await waitFor(() => client.got('welcome').length === 1, 'broadcast reaches the new server');
  });

  it('a broadcast emitted just before io.close() still reaches the other servers', async () => {
    const leaving = await SioServer.start({ layer: `shm:${name}`, name: 'L' });
    started.push(leaving);
    await waitFor(
      async () =>
        (await leaving.call<number>('serverCount')) === (await p.call<number>('serverCount')),
      'L sees everyone',
    );
    const listener = await connect(q);
    await leaving.call('emitAndClose', { event: 'last-words', args: ['bye'] });
    await waitFor(() => listener.got('last-words').length === 1, 'the last broadcast delivered');
    await leaving.exited;
  });

  it('a server that closes is no longer counted', async () => {
    const t = await SioServer.start({ layer: `shm:${name}`, name: 'T' });
    const before = await p.call<number>('serverCount');
    await t.stop();
    await waitFor(
      async () => (await p.call<number>('serverCount')) === before - 1,
      'closed server no longer counted',
      5000,
    );
  });
});

describe('connection-state recovery across workers', () => {
  const name = `${layerName}-csr`;
  let x: SioServer;
  let y: SioServer;
  let z: SioServer;

  beforeAll(async () => {
    const start = (n: string) =>
      SioServer.start({ layer: `shm:${name}`, name: n, recoveryMs: 30_000 });
    [x, y, z] = await Promise.all([start('X'), start('Y'), start('Z')]);
    await waitFor(async () => (await x.call<number>('serverCount')) === 3, 'three servers counted');
  }, 30_000);

  afterAll(async () => {
    await Promise.all([x, y, z].map((server) => server?.stop()));
    ShmChannelLayer.destroy(name);
  });

  /** Connects to X, joins `room`, receives one room broadcast (for an offset), then drops. */
  async function dropAfterJoining(
    room: string,
  ): Promise<{ pid: string; offset: string; sid: string }> {
    const client = await connect(x);
    await client.join(room);
    await z.call('emit', { rooms: [room], event: 'news', args: ['before'] });
    await waitFor(() => client.got('news').length === 1, 'first broadcast');
    const internals = client.socket as unknown as { _pid: string; _lastOffset: string };
    const session = { pid: internals._pid, offset: internals._lastOffset, sid: client.socket.id! };
    expect(typeof session.pid).toBe('string');
    expect(typeof session.offset).toBe('string');
    // The network goes away (not a deliberate disconnect): a recoverable "transport close".
    client.socket.io.engine.close();
    await waitFor(
      async () => !(await x.call<string[]>('localRooms')).includes(session.sid),
      'X saw the socket go',
    );
    return session;
  }

  it('a client that reconnects to another worker gets its session and the room broadcasts it missed', async () => {
    const room = unique('csr');
    const session = await dropAfterJoining(room);
    await z.call('emit', { rooms: [room], event: 'news', args: ['missed-1'] });
    await z.call('emit', { rooms: [unique('elsewhere')], event: 'news', args: ['not for it'] });
    await y.call('emit', { event: 'news', args: ['missed-2'] });
    await z.call('emit', { rooms: [room], event: 'news', args: ['missed-3'] });
    const back = await connect(y, '/', { auth: { pid: session.pid, offset: session.offset } });
    const who = await back.emitWithAck<{
      id: string;
      recovered: boolean;
      rooms: string[];
      server: string;
    }>('whoami');
    expect(who).toMatchObject({ id: session.sid, recovered: true, server: 'Y' });
    expect(who.rooms.sort()).toEqual([room, session.sid].sort());
    await waitFor(() => back.got('news').length >= 3, 'missed packets replayed');
    // With recovery on, socket.io appends each packet's offset as a last argument.
    const texts = (): unknown[] => back.got('news').map(([text]) => text);
    // Order holds per sending server (Z's two), not between servers.
    expect(texts().filter((t) => t !== 'missed-2')).toEqual(['missed-1', 'missed-3']);
    expect(texts().sort()).toEqual(['missed-1', 'missed-2', 'missed-3']);
    // It is a member of its room on Y now.
    await z.call('emit', { rooms: [room], event: 'news', args: ['after'] });
    await waitFor(() => back.got('news').length === 4, 'live broadcast after recovery');
    expect(texts()[3]).toBe('after');
  });

  it('an unknown session or offset is not recovered', async () => {
    const fresh = await connect(y, '/', { auth: { pid: 'no-such-pid', offset: 'no-such-offset' } });
    expect(await fresh.emitWithAck('whoami')).toMatchObject({ recovered: false });
    const room = unique('csr-bad-offset');
    const session = await dropAfterJoining(room);
    const wrong = await connect(z, '/', { auth: { pid: session.pid, offset: 'not-an-offset' } });
    expect(await wrong.emitWithAck('whoami')).toMatchObject({ recovered: false });
  });
});

// The same adapter code on RedisChannelLayer. Redis cannot see a process die: a SIGKILLed
// server's memberships go when they expire, so these servers renew theirs every 500 ms with a
// 3 s groupExpiry.
describe.skipIf(!haveRedisServer())('on RedisChannelLayer', () => {
  let redis: RedisServer;
  let u: SioServer;
  let v: SioServer;
  let w: SioServer;
  const started: SioServer[] = [];
  let layer = '';

  beforeAll(async () => {
    redis = await RedisServer.start();
    layer = `redis:${redis.url}|sio${process.pid}:`;
    const options = {
      layer,
      groupExpiry: 3,
      adapter: { renewIntervalMs: 500, requestsTimeout: 20_000 },
    };
    const start = (n: string) => SioServer.start({ ...options, name: n });
    [u, v, w] = await Promise.all([start('U'), start('V'), start('W')]);
    started.push(u, v, w);
    await waitFor(async () => (await u.call<number>('serverCount')) === 3, 'three servers counted');
  }, 30_000);

  afterAll(async () => {
    await Promise.all(started.map((server) => server.stop()));
    await redis?.dispose();
  });

  it('broadcasts to all, and to a room only through the servers with members', async () => {
    const [onU, onV, onW] = [await connect(u), await connect(v), await connect(w)];
    await u.call('emit', { event: 'all', args: ['everyone'] });
    await waitFor(
      () => [onU, onV, onW].every((client) => client.got('all').length === 1),
      'broadcast to all',
    );
    const room = unique('redis-room');
    await onV.join(room);
    const before = await w.call<{ received: number }>('stats');
    await u.call('emit', { rooms: [room], event: 'room', args: ['members'] });
    await waitFor(() => onV.got('room').length === 1, 'room broadcast');
    await barrier(u);
    // W got U's marker, not the room message before it.
    expect((await w.call<{ received: number }>('stats')).received).toBe(before.received + 1);
    expect(onW.got('room')).toEqual([]);
  });

  it('fetchSockets returns the sockets of every server', async () => {
    await connect(u, '/', { auth: { user: 'ru' } });
    await connect(w, '/', { auth: { user: 'rw' } });
    const result = await v.call<{ sockets: Array<{ user: string }> }>('fetchSockets', {});
    expect(result.sockets.map((s) => s.user).sort()).toEqual(['ru', 'rw']);
  });

  it('serverCount: a new server is counted, a closed or SIGKILLed one stops being counted', async () => {
    /** One more server on the layer; afterAll stops it if the test does not. */
    const startAnother = async (name: string): Promise<SioServer> => {
      const server = await SioServer.start({
        layer,
        name,
        groupExpiry: 3,
        adapter: { renewIntervalMs: 500 },
      });
      started.push(server);
      return server;
    };
    const counted = (count: number, what: string, ms: number): Promise<void> =>
      waitFor(async () => (await u.call<number>('serverCount')) === count, what, ms);

    const x = await startAnother('RX');
    await counted(4, 'the new server counted', 5000);
    await x.stop();
    await counted(3, 'the closed server no longer counted', 5000);
    const y = await startAnother('RY');
    await counted(4, 'the new server counted', 5000);
    y.signal('SIGKILL');
    await counted(3, 'the killed server no longer counted', 10_000);
  });
});
