// Wire compatibility with channels_redis 4.x: the Python RedisChannelLayer (Debian:
// python3-channels-redis) and RedisChannelLayer exchange messages through the same redis-server(s).
// The Python side is test/python/channels_redis_peer.py, driven over stdin/stdout.
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { consistentHash } from './support/internal.js';
import { ChannelFull, RedisChannelLayer, type Message } from './support/package.js';
import { haveRedisServer, RedisServer } from './support/redis-server.js';

const PYTHON = process.env.PYTHON_BIN ?? '/usr/bin/python3';
const PEER = join(__dirname, 'python', 'channels_redis_peer.py');

/** channels_redis importable by PYTHON? Missing: fail under CI, else skip loudly. */
function haveChannelsRedis(): boolean {
  const ok =
    existsSync(PYTHON) &&
    spawnSync(PYTHON, ['-c', 'import channels_redis.core, msgpack'], {
      stdio: 'ignore',
      timeout: 20_000,
    }).status === 0;
  if (ok) return true;
  if (process.env.CI) {
    throw new Error(
      `${PYTHON} cannot import channels_redis and CI is set: install it (Debian: apt-get install python3-channels-redis)`,
    );
  }
  console.warn(
    '\n' +
      '**************************************************************************\n' +
      `*  ${PYTHON} cannot import channels_redis: the Redis INTEROP tests are SKIPPED.\n` +
      '*  Install it (Debian: apt-get install python3-channels-redis).          *\n' +
      '**************************************************************************\n',
  );
  return false;
}

/** JSON can't carry bytes: {"__bytes__": base64} both ways (see the Python peer). */
function toJson(value: unknown): unknown {
  if (value instanceof Uint8Array) return { __bytes__: Buffer.from(value).toString('base64') };
  if (Array.isArray(value)) return value.map(toJson);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toJson(v)]));
  }
  return value;
}

function fromJson(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(fromJson);
  if (value && typeof value === 'object') {
    const entries = Object.entries(value);
    if (entries.length === 1 && entries[0]![0] === '__bytes__')
      return Buffer.from(entries[0]![1] as string, 'base64');
    return Object.fromEntries(entries.map(([k, v]) => [k, fromJson(v)]));
  }
  return value;
}

class PythonPeer {
  private nextId = 1;
  private readonly waiting = new Map<
    number,
    { resolve(v: unknown): void; reject(e: Error): void }
  >();
  private stderr = '';

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    child.stderr.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const reply = JSON.parse(line) as {
        id: number;
        ok: boolean;
        result?: unknown;
        error?: string;
      };
      const waiter = this.waiting.get(reply.id);
      if (!waiter) return;
      this.waiting.delete(reply.id);
      if (reply.ok) waiter.resolve(fromJson(reply.result));
      else waiter.reject(new Error(`python: ${reply.error}`));
    });
    child.on('exit', (code) => {
      for (const waiter of this.waiting.values())
        waiter.reject(new Error(`python peer exited (${code}):\n${this.stderr}`));
      this.waiting.clear();
    });
  }

  static async start(
    prefix: string,
    hosts: string[],
    options: Record<string, unknown> = {},
  ): Promise<PythonPeer> {
    const child = spawn(PYTHON, [PEER, JSON.stringify({ prefix, hosts, options })], {
      stdio: 'pipe',
    });
    const peer = new PythonPeer(child);
    await new Promise<void>((resolve, reject) => {
      peer.waiting.set(0, { resolve: () => resolve(), reject });
    });
    return peer;
  }

  call(op: string, args: Record<string, unknown> = {}): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.child.stdin.write(JSON.stringify(toJson({ id, op, ...args })) + '\n');
    });
  }

  send(channel: string, message: Message): Promise<unknown> {
    return this.call('send', { channel, message });
  }

  receive(channel: string, timeout = 10): Promise<Message> {
    return this.call('receive', { channel, timeout }) as Promise<Message>;
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.stdin.write(JSON.stringify({ id: -1, op: 'exit' }) + '\n');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

const RUN = haveRedisServer() && haveChannelsRedis();

/** Values msgpack carries between the two: binary both ways, unicode, numbers, nesting, nulls. */
const RICH: Message = {
  type: 'rich.message',
  text: 'héllo wörld ✓ 日本',
  bytes: Buffer.from([0, 1, 2, 253, 254, 255]),
  empty: Buffer.alloc(0),
  nested: {
    list: [1, -2, 3.5, 'x', Buffer.from('bin'), null, true, false],
    deep: { big: 2 ** 40, neg: -(2 ** 31) },
  },
  none: null,
};

describe.skipIf(!RUN).each([
  ['one host', 1],
  ['two hosts (sharded)', 2],
])('redis interop with channels_redis: %s', (_name, hostCount) => {
  const servers: RedisServer[] = [];
  let hosts: string[] = [];
  let counter = 0;
  let prefix = '';
  let python: PythonPeer;
  let node: RedisChannelLayer;

  beforeAll(async () => {
    for (let i = 0; i < hostCount; i++) servers.push(await RedisServer.start());
    hosts = servers.map((server) => server.url);
  }, 30_000);

  afterAll(async () => {
    await Promise.all(servers.map((server) => server.dispose()));
  });

  async function open(options: Record<string, number> = {}): Promise<void> {
    prefix = `interop${hostCount}x${counter++}:`;
    const pyOptions: Record<string, unknown> = {};
    if (options.capacity) pyOptions.capacity = options.capacity;
    python = await PythonPeer.start(prefix, hosts, pyOptions);
    node = new RedisChannelLayer({ hosts, prefix, ...options });
  }

  afterEach(async () => {
    await python?.close();
    await node?.close();
  });

  it('normal channel: Python sends, Node receives; Node sends, Python receives', async () => {
    await open();
    // With several hosts channels_redis spreads a normal channel round-robin over them, so only
    // one host keeps FIFO order.
    const inOrder = (got: Message[]): Message[] =>
      hostCount === 1 ? got : [...got].sort((x, y) => (x.n as number) - (y.n as number));
    await python.send('to-node', { type: 'from.python', n: 1 });
    await python.send('to-node', { type: 'from.python', n: 2 });
    expect(inOrder([await node.receive('to-node'), await node.receive('to-node')])).toEqual([
      { type: 'from.python', n: 1 },
      { type: 'from.python', n: 2 },
    ]);

    await node.send('to-python', { type: 'from.node', n: 1 });
    await node.send('to-python', { type: 'from.node', n: 2 });
    expect(inOrder([await python.receive('to-python'), await python.receive('to-python')])).toEqual(
      [
        { type: 'from.node', n: 1 },
        { type: 'from.node', n: 2 },
      ],
    );

    // A receive already waiting on each side.
    const nodeWaits = node.receive('later-node');
    const pythonWaits = python.receive('later-python');
    await new Promise((resolve) => setTimeout(resolve, 100));
    await python.send('later-node', { type: 'late' });
    await node.send('later-python', { type: 'late' });
    expect(await nodeWaits).toEqual({ type: 'late' });
    expect(await pythonWaits).toEqual({ type: 'late' });
  });

  it("'!' channels: Python new_channel() receives from Node, Node newChannel() receives from Python", async () => {
    await open();
    const pyChannel = (await python.call('new_channel')) as string;
    await node.send(pyChannel, { type: 'to.python.specific' });
    expect(await python.receive(pyChannel)).toEqual({ type: 'to.python.specific' });

    const nodeChannel = await node.newChannel();
    await python.send(nodeChannel, { type: 'to.node.specific' });
    expect(await node.receive(nodeChannel)).toEqual({ type: 'to.node.specific' });

    // Two Node channels share one key: messages are demultiplexed and buffered per channel.
    const first = await node.newChannel();
    const second = await node.newChannel('other');
    const third = await node.newChannel();
    await python.send(third, { type: 'for.third' });
    await python.send(first, { type: 'for.first' });
    await python.send(second, { type: 'for.second' });
    expect(await node.receive(first)).toEqual({ type: 'for.first' }); // takes and buffers third's
    expect(await node.receive(second)).toEqual({ type: 'for.second' });
    expect(await node.receive(third)).toEqual({ type: 'for.third' });

    if (hostCount > 1) {
      // channels_redis 4 send() picks the host of a '!' channel by its full name, its receive()
      // by the part up to '!': a Node receiver reads every host, so it gets those messages too.
      let stray = await node.newChannel();
      const home = (name: string): number =>
        consistentHash(name.slice(0, name.indexOf('!') + 1), hostCount);
      while (consistentHash(stray, hostCount) === home(stray)) stray = await node.newChannel();
      await python.send(stray, { type: 'stray' });
      expect(await node.receive(stray)).toEqual({ type: 'stray' });
    }
  });

  it('receiveAny takes what Python sends to several channels, oldest first', async () => {
    await open();
    const mine = await node.newChannel();
    const channels = ['any-py-a', 'any-py-b', mine];
    const sends: Array<[string, number]> = [
      ['any-py-b', 1],
      [mine, 2],
      ['any-py-a', 3],
      ['any-py-b', 4],
      [mine, 5],
    ];
    for (const [channel, n] of sends) {
      await python.send(channel, { type: 'from.python', n });
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const got: Array<[string, number]> = [];
    for (let i = 0; i < sends.length; i++) {
      const { channel, message } = (await node.receiveAny(channels))!;
      got.push([channel, message.n as number]);
    }
    // channels_redis spreads a normal channel over the hosts: the global order holds per host.
    if (hostCount === 1) expect(got).toEqual(sends);
    else expect([...got].sort((x, y) => x[1] - y[1])).toEqual(sends);
    const waiting = node.receiveAny(channels);
    await new Promise((resolve) => setTimeout(resolve, 100));
    await python.send('any-py-a', { type: 'late' });
    expect(await waiting).toEqual({ channel: 'any-py-a', message: { type: 'late' } });
  });

  it('groups: Python group_add + Node groupSend, Node groupAdd + Python group_send', async () => {
    await open();
    const pyChannel = (await python.call('new_channel')) as string;
    const nodeA = await node.newChannel();
    const nodeB = await node.newChannel();

    await python.call('group_add', { group: 'py-room', channel: pyChannel });
    await python.call('group_add', { group: 'py-room', channel: nodeA });
    await python.call('group_add', { group: 'py-room', channel: 'plain-node' });
    await node.groupSend('py-room', { type: 'group.from.node' });
    expect(await python.receive(pyChannel)).toEqual({ type: 'group.from.node' });
    expect(await node.receive(nodeA)).toEqual({ type: 'group.from.node' });
    expect(await node.receive('plain-node')).toEqual({ type: 'group.from.node' });

    await node.groupAdd('node-room', nodeA);
    await node.groupAdd('node-room', nodeB); // same key as nodeA: one message naming both
    await node.groupAdd('node-room', pyChannel);
    await node.groupAdd('node-room', 'plain-python');
    await python.call('group_send', { group: 'node-room', message: { type: 'group.from.python' } });
    expect(await node.receive(nodeB)).toEqual({ type: 'group.from.python' });
    expect(await node.receive(nodeA)).toEqual({ type: 'group.from.python' });
    expect(await python.receive(pyChannel)).toEqual({ type: 'group.from.python' });
    // channels_redis's receive() on a normal channel reads one host per call (round-robin) and
    // stays there, so with several hosts it may never see a group message on the other host.
    if (hostCount === 1)
      expect(await python.receive('plain-python')).toEqual({ type: 'group.from.python' });

    // Discards cross over too.
    await python.call('group_discard', { group: 'node-room', channel: nodeB });
    await node.groupDiscard('node-room', pyChannel);
    await node.groupSend('node-room', { type: 'after.discard' });
    expect(await node.receive(nodeA)).toEqual({ type: 'after.discard' });
    if (hostCount === 1)
      expect(await python.receive('plain-python')).toEqual({ type: 'after.discard' });
    await node.send(nodeB, { type: 'marker' });
    expect(await node.receive(nodeB)).toEqual({ type: 'marker' });
    await node.send(pyChannel, { type: 'marker' });
    expect(await python.receive(pyChannel)).toEqual({ type: 'marker' });
  });

  it("groupMembers lists channels_redis's group_add members, with Python's expiry rule", async () => {
    await open();
    const pyChannel = (await python.call('new_channel')) as string;
    const nodeChannel = await node.newChannel();
    expect(await node.groupMembers('members-room')).toEqual([]);
    await python.call('group_add', { group: 'members-room', channel: pyChannel });
    await python.call('group_add', { group: 'members-room', channel: 'plain-member' });
    await node.groupAdd('members-room', nodeChannel);
    expect((await node.groupMembers('members-room')).sort()).toEqual(
      [pyChannel, 'plain-member', nodeChannel].sort(),
    );
    await python.call('group_discard', { group: 'members-room', channel: 'plain-member' });
    expect((await node.groupMembers('members-room')).sort()).toEqual(
      [pyChannel, nodeChannel].sort(),
    );
    // The score of a member is the time of its last group_add; it counts as expired group_expiry
    // seconds later, whichever side reads it. Listing removes nothing: Python still reaches it.
    const added = Date.now();
    const strict = new RedisChannelLayer({ hosts, prefix, groupExpiry: 1 });
    try {
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, added + 1200 - Date.now())));
      expect(await strict.groupMembers('members-room')).toEqual([]);
      await python.call('group_add', { group: 'members-room', channel: pyChannel });
      expect(await strict.groupMembers('members-room')).toEqual([pyChannel]);
    } finally {
      await strict.close();
    }
    await python.call('group_send', { group: 'members-room', message: { type: 'still.member' } });
    expect(await node.receive(nodeChannel)).toEqual({ type: 'still.member' });
  });

  it('binary and rich values round-trip both ways', async () => {
    await open();
    await node.send('rich', RICH);
    const atPython = await python.receive('rich');
    expect(atPython).toEqual(RICH);
    await python.send('rich-back', atPython);
    const back = await node.receive('rich-back');
    expect(back).toEqual(RICH);
    expect(Buffer.isBuffer((back as { bytes: unknown }).bytes)).toBe(true);

    const pyChannel = (await python.call('new_channel')) as string;
    await node.send(pyChannel, RICH);
    expect(await python.receive(pyChannel)).toEqual(RICH);
    const nodeChannel = await node.newChannel();
    await python.send(nodeChannel, RICH);
    expect(await node.receive(nodeChannel)).toEqual(RICH);
  });

  // Per host: with several hosts a normal channel has a queue (and a capacity) on each.
  it.runIf(hostCount === 1)(
    'capacity is shared: a channel Node filled is full for Python, and the reverse',
    async () => {
      await open({ capacity: 2 });
      await node.send('full', { type: 'a' });
      await python.send('full', { type: 'b' });
      await expect(python.send('full', { type: 'c' })).rejects.toThrow(/ChannelFull/);
      await expect(node.send('full', { type: 'c' })).rejects.toBeInstanceOf(ChannelFull);
      expect(await python.receive('full')).toEqual({ type: 'a' });
      expect(await node.receive('full')).toEqual({ type: 'b' });
    },
  );

  it('flush from either side removes the other side’s messages and groups', async () => {
    await open();
    await python.send('flushed', { type: 'x' });
    await python.call('group_add', { group: 'flushed-room', channel: 'flushed' });
    await node.flush();
    await python.call('group_send', { group: 'flushed-room', message: { type: 'y' } });
    await node.send('flushed', { type: 'marker' });
    expect(await node.receive('flushed')).toEqual({ type: 'marker' });

    // Another channel: after the receive above, Node's pop on the other host may still be
    // blocked on 'flushed' for a moment, and a message it takes then goes back into the channel
    // (put back for the next receive), possibly after Python's flush. That race is not what this
    // checks.
    await node.send('flushed-2', { type: 'x' });
    await python.call('flush');
    await python.send('flushed-2', { type: 'marker' });
    expect(await node.receive('flushed-2')).toEqual({ type: 'marker' });
  });

  it.runIf(hostCount > 1)('picks the same host for keys as channels_redis', async () => {
    await open();
    for (const value of ['room-1', 'room-2', 'specific.abc!', 'chat', 'ünï', 'x'.repeat(100)]) {
      expect(consistentHash(value, hostCount)).toBe(await python.call('hash', { value }));
    }
  });
});
