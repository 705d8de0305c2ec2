import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { crc32 as zlibCrc32 } from 'node:zlib';
import Redis from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  consistentHash,
  crc32,
  decodeMessage,
  encodeMessage,
  IoredisConnector,
  loadIoredis,
  RANDOM_PREFIX_BYTES,
} from './support/internal.js';
import {
  defaultSerializer,
  LayerClosed,
  RedisChannelLayer,
  RedisUnavailable,
  type RedisConnection,
  type RedisConnector,
} from './support/package.js';
import {
  haveRedisServer,
  RedisServer,
  redisLayers,
  runWorker,
  WORKERS,
} from './support/fixtures.js';

const redis = redisLayers();

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('redis: pieces without a server', () => {
  it('consistentHash is channels_redis _consistent_hash (crc32 & 0xfff over the ring)', () => {
    for (const value of ['abc', 'specific.1234!', 'group-1', 'chat', 'ünïcode', '']) {
      const bytes = Buffer.from(value, 'utf8');
      expect(crc32(bytes)).toBe(zlibCrc32(bytes) >>> 0);
      for (const ring of [1, 2, 3, 5, 7]) {
        const expected = ring === 1 ? 0 : Math.floor((zlibCrc32(bytes) & 0xfff) / (4096 / ring));
        expect(consistentHash(value, ring)).toBe(expected);
      }
    }
  });

  it('codec: 12 random prefix bytes, msgpack body, __asgi_channel__ carried and stripped', () => {
    const a = encodeMessage(defaultSerializer, { type: 'x', n: 1 }, 'specific.a!b');
    const b = encodeMessage(defaultSerializer, { type: 'x', n: 1 }, 'specific.a!b');
    expect(a.subarray(RANDOM_PREFIX_BYTES)).toEqual(b.subarray(RANDOM_PREFIX_BYTES));
    expect(a.subarray(0, RANDOM_PREFIX_BYTES)).not.toEqual(b.subarray(0, RANDOM_PREFIX_BYTES));
    expect(decodeMessage(defaultSerializer, a)).toEqual({
      message: { type: 'x', n: 1 },
      channels: ['specific.a!b'],
    });
    const group = encodeMessage(defaultSerializer, { type: 'y' }, ['s.a!1', 's.a!2']);
    expect(decodeMessage(defaultSerializer, group)).toEqual({
      message: { type: 'y' },
      channels: ['s.a!1', 's.a!2'],
    });
    expect(
      decodeMessage(defaultSerializer, encodeMessage(defaultSerializer, { type: 'z' })),
    ).toEqual({
      message: { type: 'z' },
    });
  });

  it('ioredis: a clear error when it is not installed', () => {
    const missing = (id: string): never => {
      const error = new Error(`Cannot find module '${id}'`) as Error & { code: string };
      error.code = 'MODULE_NOT_FOUND';
      throw error;
    };
    expect(() => loadIoredis(missing)).toThrow(/needs the 'ioredis' package.*npm install ioredis/);
    expect(() => new IoredisConnector(missing)).toThrow(/npm install ioredis/);
  });

  it('ioredis is loaded only when a RedisChannelLayer is constructed (built package)', () => {
    const run = runWorker('ioredis-lazy-load.cjs');
    expect(run.status, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout);
    expect(out).toEqual({
      afterImport: false,
      afterInMemory: false,
      error: expect.stringMatching(/needs the 'ioredis' package/),
      afterConstruct: true,
    });
  });

  it('validates hosts and prefix', () => {
    expect(() => new RedisChannelLayer({ hosts: [] })).toThrow(TypeError);
    expect(() => new RedisChannelLayer({ hosts: ['http://x:1'] })).toThrow(/redis:\/\//);
    expect(() => new RedisChannelLayer({ hosts: ['not a url'] })).toThrow(/invalid Redis URL/);
  });
});

describe.skipIf(!haveRedisServer())('redis: against redis-server', () => {
  let a: RedisServer;
  let b: RedisServer;
  let rawA: Redis;
  let rawB: Redis;

  beforeAll(async () => {
    [a, b] = await Promise.all([RedisServer.start(), RedisServer.start()]);
    rawA = new Redis(a.port, '127.0.0.1', { lazyConnect: false });
    rawB = new Redis(b.port, '127.0.0.1', { lazyConnect: false });
  }, 30_000);

  afterAll(async () => {
    rawA?.disconnect();
    rawB?.disconnect();
    await Promise.all([a?.dispose(), b?.dispose()]);
  });

  it('uses channels_redis key names and sorted sets', async () => {
    const prefix = redis.prefix();
    const layer = redis.open({ hosts: [a.url], prefix, expiry: 30, groupExpiry: 3600 });
    await layer.send('chat', { type: 'hello' });
    expect(await rawA.type(`${prefix}chat`)).toBe('zset');
    const ttl = await rawA.ttl(`${prefix}chat`);
    expect(ttl).toBeGreaterThan(25);
    expect(ttl).toBeLessThanOrEqual(30);
    const [member, score] = await rawA.zrangeBuffer(`${prefix}chat`, 0, -1, 'WITHSCORES');
    expect(Math.abs(Number(score!.toString()) - Date.now() / 1000)).toBeLessThan(5);
    expect(decodeMessage(defaultSerializer, member!).message).toEqual({ type: 'hello' });

    const channel = await layer.newChannel();
    await layer.groupAdd('room', channel);
    expect(await rawA.type(`${prefix}:group:room`)).toBe('zset');
    expect(await rawA.zrange(`${prefix}:group:room`, 0, -1)).toEqual([channel]);
    await layer.groupSend('room', { type: 'g' });
    const nonLocal = channel.slice(0, channel.indexOf('!') + 1);
    const stored = await rawA.zrangeBuffer(`${prefix}${nonLocal}`, 0, -1);
    expect(decodeMessage(defaultSerializer, stored[0]!)).toEqual({
      message: { type: 'g' },
      channels: [channel],
    });
    expect(await layer.receive(channel)).toEqual({ type: 'g' });
    expect(await layer.receive('chat')).toEqual({ type: 'hello' });

    await layer.send('chat', { type: 'again' });
    await layer.flush();
    expect(await rawA.keys(`${prefix}*`)).toEqual([]);
  });

  it('shards over two servers exactly as channels_redis picks hosts', async () => {
    const prefix = redis.prefix();
    const hosts = [a.url, b.host];
    const raws = [rawA, rawB];
    const sender = redis.open({ hosts, prefix });
    const receiver = redis.open({ hosts, prefix });
    // Groups live on the host their name hashes to.
    const groups = Array.from({ length: 12 }, (_, i) => `room-${i}`);
    const target = await receiver.newChannel();
    for (const group of groups) await sender.groupAdd(group, target);
    const seen = new Set<number>();
    for (const group of groups) {
      const index = consistentHash(group, 2);
      seen.add(index);
      expect(await raws[index]!.exists(`${prefix}:group:${group}`)).toBe(1);
      expect(await raws[1 - index]!.exists(`${prefix}:group:${group}`)).toBe(0);
    }
    expect(seen.size).toBe(2);

    // '!' channels: on the host of their non-local part, where their receiver reads.
    const nonLocal = target.slice(0, target.indexOf('!') + 1);
    const home = consistentHash(nonLocal, 2);
    await sender.send(target, { type: 'direct' });
    expect(await raws[home]!.zcard(`${prefix}${nonLocal}`)).toBe(1);
    expect(await raws[1 - home]!.exists(`${prefix}${nonLocal}`)).toBe(0);
    expect(await receiver.receive(target)).toEqual({ type: 'direct' });

    // Group sends reach the member's key on its host, once per group.
    for (const group of groups) await sender.groupSend(group, { type: 'group', group });
    const got = [];
    for (let i = 0; i < groups.length; i++)
      got.push(((await receiver.receive(target)) as { group: string }).group);
    expect(got.sort()).toEqual([...groups].sort());

    // Normal channels go round-robin over the hosts; a receiver reads all of them.
    for (let i = 0; i < 4; i++) await sender.send('work', { type: 'job', i });
    expect(await rawA.zcard(`${prefix}work`)).toBe(2);
    expect(await rawB.zcard(`${prefix}work`)).toBe(2);
    const jobs = [];
    for (let i = 0; i < 4; i++) jobs.push(((await receiver.receive('work')) as { i: number }).i);
    expect(jobs.sort()).toEqual([0, 1, 2, 3]);

    await sender.flush();
    expect(await rawA.keys(`${prefix}*`)).toEqual([]);
    expect(await rawB.keys(`${prefix}*`)).toEqual([]);
  });

  it('a cancelled receive loses no message, also with a receive blocked in Redis', async () => {
    const prefix = redis.prefix();
    const first = redis.open({ hosts: [a.url], prefix });
    const second = redis.open({ hosts: [a.url], prefix });
    const controller = new AbortController();
    const cancelled = first.receive('jobs', { signal: controller.signal });
    await sleep(100); // its BZPOPMIN is now blocked in Redis
    controller.abort();
    await expect(cancelled).rejects.toMatchObject({ name: 'AbortError' });
    await first.send('jobs', { type: 'one' });
    // The orphaned BZPOPMIN takes it and puts it back in place; the other layer gets it.
    expect(await second.receive('jobs')).toEqual({ type: 'one' });
  });

  it('receiveAny: one blocking connection for all its channels, one BZPOPMIN over all keys', async () => {
    const prefix = redis.prefix();
    const layer = redis.open({ hosts: [a.url], prefix });
    const sender = redis.open({ hosts: [a.url], prefix });
    const channels = Array.from({ length: 50 }, (_, i) => `any-${i}`);
    const waiting = layer.receiveAny(channels);
    await sleep(100);
    const clients = (await rawA.client('LIST')) as string;
    const blocked = clients
      .split('\n')
      .filter((line) => line.includes('name=shm-channels:receive'));
    expect(blocked).toHaveLength(1);
    expect(blocked[0]).toMatch(/cmd=bzpopmin/);
    await sender.send('any-37', { type: 'x' });
    expect(await waiting).toEqual({ channel: 'any-37', message: { type: 'x' } });
  });

  it('receiveAny: a cancelled one blocked in Redis loses no message', async () => {
    const prefix = redis.prefix();
    const first = redis.open({ hosts: [a.url], prefix });
    const second = redis.open({ hosts: [a.url], prefix });
    for (let round = 0; round < 5; round++) {
      const controller = new AbortController();
      const cancelled = expect(
        first.receiveAny(['jobs-a', 'jobs-b'], { signal: controller.signal }),
      ).rejects.toMatchObject({
        name: 'AbortError',
      });
      await sleep(50); // its BZPOPMIN is now blocked in Redis
      controller.abort();
      await first.send('jobs-b', { type: 'one', round });
      await cancelled;
      // Taken by the orphaned pop or not, it is back in its channel: the other layer gets it.
      expect(await second.receiveAny(['jobs-a', 'jobs-b'])).toEqual({
        channel: 'jobs-b',
        message: { type: 'one', round },
      });
    }
    expect(await rawA.exists(`${prefix}jobs-b`)).toBe(0);
  });

  it('receiveAny over two servers: reads every host; order is kept per host', async () => {
    const prefix = redis.prefix();
    const hosts = [a.url, b.host];
    const sender = redis.open({ hosts, prefix });
    const receiver = redis.open({ hosts, prefix });
    const local = await receiver.newChannel();
    // Round-robin puts these on both hosts.
    for (let i = 0; i < 6; i++) await sender.send(i % 2 ? 'two-a' : 'two-b', { i });
    await sender.send(local, { i: 6 });
    const got: number[] = [];
    for (let i = 0; i < 7; i++)
      got.push((await receiver.receiveAny(['two-a', 'two-b', local]))!.message.i as number);
    expect(got.sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(await receiver.receiveAny(['two-a', 'two-b', local], { wait: false })).toBeNull();
    const waiting = receiver.receiveAny(['two-a', 'two-b', local]);
    await sleep(100);
    await sender.send('two-a', { i: 7 });
    expect(await waiting).toEqual({ channel: 'two-a', message: { i: 7 } });
  });

  // Issue 14: a killed process's '!' channel accepted sends until it was full, then kept them for
  // `expiry`; nobody would ever read them.
  it("drops and counts sends to the '!' channels of a process that is gone (closed, or killed: heartbeat stale)", async () => {
    const prefix = redis.prefix();
    class QuickLayer extends RedisChannelLayer {
      protected override heartbeatSeconds = 0.1;
      protected override heartbeatStaleSeconds = 0.5;
    }
    const sender = redis.track(new QuickLayer({ hosts: [a.url, b.url], prefix }));
    const alive = redis.track(new QuickLayer({ hosts: [a.url, b.url], prefix }));
    const closed = redis.open({ hosts: [a.url, b.url], prefix });
    const live = await alive.newChannel();
    const gone = await closed.newChannel();
    await alive.groupAdd('room', live);
    await closed.groupAdd('room', gone);
    await closed.close(); // a clean close marks it gone at once
    // A killed process: its heartbeat stops. (The child exits without close().)
    const killed = execFileSync(
      process.execPath,
      [join(WORKERS, 'redis-member-then-exit.mjs'), prefix, a.url, b.url],
      { encoding: 'utf8' },
    ).trim();
    await sleep(700); // older than the sender's staleness limit
    for (let i = 0; i < 5; i++) {
      await sender.send(gone, { i });
      await sender.send(killed, { i });
    }
    expect(await sender.groupSend('room', { type: 'fan' })).toBe(1); // only the live member
    await sender.send(live, { type: 'direct' }); // a live process's channel still queues
    expect(sender.stats().messagesOrphaned).toBe(12);
    for (const channel of [gone, killed]) {
      const key = prefix + channel.slice(0, channel.indexOf('!') + 1);
      expect((await rawA.zcard(key)) + (await rawB.zcard(key))).toBe(0);
    }
    expect(await alive.receive(live)).toEqual({ type: 'fan' });
    expect(await alive.receive(live)).toEqual({ type: 'direct' });
    // channels_redis writes no heartbeat: a channel of a client without one queues as before.
    await sender.send('specific.pythonclient!abc', { type: 'py' });
    expect(sender.stats().messagesOrphaned).toBe(12);
  });

  it('moves back messages a channels_redis receiver left in <key>$inflight', async () => {
    const prefix = redis.prefix();
    class QuickLayer extends RedisChannelLayer {
      protected override blockSeconds = 0.2;
    }
    const layer = redis.track(new QuickLayer({ hosts: [a.url], prefix }));
    const payload = encodeMessage(defaultSerializer, { type: 'parked' });
    await rawA.zadd(`${prefix}q$inflight`, Date.now() / 1000, payload);
    // Not at once (its channels_redis receiver may just be slow), but after a whole idle timeout.
    const started = Date.now();
    expect(await layer.receive('q')).toEqual({ type: 'parked' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    expect(await rawA.exists(`${prefix}q$inflight`)).toBe(0);
  });

  it('survives a Redis restart: errors in flight, then recovers without spinning', async () => {
    const server = redis.disposeAfter(await RedisServer.start());
    let blockingCalls = 0;
    const inner = new IoredisConnector();
    const counting: RedisConnector = {
      connect(host, purpose): RedisConnection {
        const connection = inner.connect(host, purpose);
        return {
          call: (command, ...args) => {
            if (command === 'BZPOPMIN') blockingCalls++;
            return connection.call(command, ...args);
          },
          close: () => connection.close(),
        };
      },
    };
    const prefix = redis.prefix();
    const layer = redis.open({ hosts: [server.url], prefix, connector: counting });
    await layer.send('c', { type: 'before' });
    expect(await layer.receive('c')).toEqual({ type: 'before' });
    const local = await layer.newChannel();

    const waiting = layer.receive('c');
    const waitingLocal = layer.receive(local);
    const waitingResult = waiting.then(
      () => 'resolved',
      (error: unknown) => error,
    );
    const waitingLocalResult = waitingLocal.then(
      () => 'resolved',
      (error: unknown) => error,
    );
    await sleep(100);
    await server.stop();
    expect(await waitingResult).toBeInstanceOf(RedisUnavailable);
    expect(await waitingLocalResult).toBeInstanceOf(RedisUnavailable);
    await expect(layer.send('c', { type: 'down' })).rejects.toBeInstanceOf(RedisUnavailable);

    // A receive during the outage waits on the loop's back-off: no busy loop.
    const callsBefore = blockingCalls;
    const during = layer.receive('c').catch((error: unknown) => error);
    await sleep(1500);
    expect(blockingCalls - callsBefore).toBeLessThan(10);

    await server.restart();
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        await layer.send('c', { type: 'after' });
        break;
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await sleep(100);
      }
    }
    const duringResult = await during;
    const next = duringResult instanceof RedisUnavailable ? await layer.receive('c') : duringResult;
    expect(next).toEqual({ type: 'after' });
    await layer.send(local, { type: 'local-after' });
    expect(await layer.receive(local)).toEqual({ type: 'local-after' });
    await layer.groupAdd('grp', local);
    await layer.groupSend('grp', { type: 'group-after' });
    expect(await layer.receive(local)).toEqual({ type: 'group-after' });
  }, 30_000);

  it('close() while Redis is down is prompt and rejects waiting receives with LayerClosed', async () => {
    const server = redis.disposeAfter(await RedisServer.start());
    const layer = redis.open({ hosts: [server.url], prefix: redis.prefix() });
    await layer.send('x', { type: 'warm-up' });
    expect(await layer.receive('x')).toEqual({ type: 'warm-up' });
    await server.stop();
    const failed = await layer.receive('x').catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(RedisUnavailable);
    const waiting = layer.receive('x').catch((error: unknown) => error); // in the loop's back-off
    const local = layer.receive(await layer.newChannel()).catch((error: unknown) => error);
    const started = Date.now();
    await layer.close();
    expect(Date.now() - started).toBeLessThan(3000);
    expect(await waiting).toBeInstanceOf(LayerClosed);
    expect(await local).toBeInstanceOf(LayerClosed);
  }, 20_000);

  it('close() rejects waiting receives and later calls with LayerClosed', async () => {
    const layer = redis.open({ hosts: [a.url], prefix: redis.prefix() });
    const waiting = layer.receive('x').catch((error: unknown) => error);
    await sleep(50);
    await layer.close();
    expect(await waiting).toBeInstanceOf(LayerClosed);
    await expect(layer.send('x', { type: 'y' })).rejects.toBeInstanceOf(LayerClosed);
  });
});
