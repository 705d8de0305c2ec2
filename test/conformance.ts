// The channel-layer conformance suite: every backend must pass it unchanged.
//
// A backend's test file calls describeConformance() with a factory:
//   - makeLayer(options) returns a fresh layer with its own, empty shared state (tests never see
//     each other's channels or groups);
//   - hooks.peer(layer) returns another instance on the same shared state as `layer` (what another
//     process attached to the same layer would be), opened with the same options. Without it, the
//     peer is `layer` itself (a single-process backend such as InMemoryChannelLayer);
//   - hooks.afterEach runs after each test, once the suite has closed every layer it opened
//     (e.g. to remove the test's segment, keys or files).
// Nothing here may depend on one backend: backend-specific checks belong in that backend's file.
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { getEventListeners } from 'node:events';
import { afterEach, describe, expect, expectTypeOf, it } from 'vitest';
import { ChannelFull, LayerClosed, MessageTooLarge } from './support/package.js';
import type { ChannelLayer, ChannelLayerOptions, Message } from './support/package.js';

export type LayerFactory = (
  options?: ChannelLayerOptions & Record<string, unknown>,
) => ChannelLayer | Promise<ChannelLayer>;

export interface ConformanceHooks {
  /** Another instance on the same shared state as `layer`, with the same options. Default: `layer`. */
  peer?: (layer: ChannelLayer) => ChannelLayer | Promise<ChannelLayer>;
  /** After each test, once every layer the test opened is closed. */
  afterEach?: () => void | Promise<void>;
  /**
   * What `layer` holds on to: shared records and this instance's own bookkeeping (entries of
   * each kind, by name). Connection churn must bring every count back to where it started.
   */
  footprint?: (layer: ChannelLayer) => Record<string, number> | Promise<Record<string, number>>;
  /**
   * ES module source that imports the package and declares `const layer`, a fresh layer of this
   * backend, for a child Node process (process-lifetime tests). Default: those tests are skipped.
   */
  childLayer?: () => string;
  /** receiveAny() is not implemented by this backend yet: its cases are skipped (temporary). */
  receiveAnyPending?: boolean;
}

/** Runs ES module source in a child Node process; kills it after `ms` (then `killed` is true). */
function runNode(
  source: string,
  ms = 8000,
): Promise<{ code: number | null; output: string; killed: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', source], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    let killed = false;
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, ms);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output: output.trim(), killed });
    });
  });
}

/** How long a receive that should succeed may take before the test fails (instead of hanging). */
const SETTLE_MS = 5000;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function sleepUntil(time: number): Promise<void> {
  const left = time - Date.now();
  if (left > 0) await sleep(left);
}

/** Fails the test if `promise` does not settle within `ms`. */
async function within<T>(promise: Promise<T>, ms = SETTLE_MS, what = 'operation'): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The error `call` rejects with. Layer methods return promises: a synchronous throw, a
 * non-promise result or a fulfilled promise fail the test.
 */
async function rejection(call: () => unknown, what = 'call', ms = SETTLE_MS): Promise<unknown> {
  let result: unknown;
  try {
    result = call();
  } catch (error) {
    throw new Error(
      `${what} threw synchronously instead of returning a rejected promise: ${String(error)}`,
      {
        cause: error,
      },
    );
  }
  if (!(result instanceof Promise)) throw new Error(`${what} did not return a promise`);
  const outcome = await within(
    result.then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error }),
    ),
    ms,
    what,
  );
  if (outcome.ok)
    throw new Error(`${what} resolved (with ${JSON.stringify(outcome.value)}) but should reject`);
  return outcome.error;
}

function errorName(error: unknown): string | undefined {
  return error instanceof Error ? error.name : undefined;
}

/** Asserts `channel` holds no message: a fresh marker sent now is the next thing received. */
async function expectEmpty(
  sender: ChannelLayer,
  channel: string,
  receiver: ChannelLayer = sender,
): Promise<void> {
  const marker = { type: 'conformance.marker', id: randomUUID() };
  await sender.send(channel, marker);
  const next = await within(receiver.receive(channel), SETTLE_MS, `receive(${channel})`);
  expect(next, `channel ${channel} should have been empty`).toEqual(marker);
}

/** Sends to `channel` until ChannelFull; returns how many sends succeeded (at most `limit`). */
async function fill(layer: ChannelLayer, channel: string, limit: number): Promise<number> {
  for (let i = 0; i < limit; i++) {
    try {
      await layer.send(channel, { type: 'fill', i });
    } catch (error) {
      if (error instanceof ChannelFull) return i;
      throw error;
    }
  }
  return limit;
}

function bytesOf(value: unknown): Buffer {
  if (!ArrayBuffer.isView(value)) throw new Error(`expected binary data, got ${typeof value}`);
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

export function describeConformance(
  backendName: string,
  makeLayer: LayerFactory,
  hooks: ConformanceHooks = {},
): void {
  describe(`channel layer conformance: ${backendName}`, () => {
    let opened: ChannelLayer[] = [];

    /** A fresh layer with its own state; closed after the test. */
    async function open(
      options?: ChannelLayerOptions & Record<string, unknown>,
    ): Promise<ChannelLayer> {
      const layer = await makeLayer(options);
      opened.push(layer);
      return layer;
    }

    /** Another instance sharing `layer`'s state (or `layer` itself for a single-instance backend). */
    async function peerOf(layer: ChannelLayer): Promise<ChannelLayer> {
      if (!hooks.peer) return layer;
      const peer = await hooks.peer(layer);
      opened.push(peer);
      return peer;
    }

    afterEach(async () => {
      const layers = opened.reverse();
      opened = [];
      const failures: unknown[] = [];
      for (const layer of layers) {
        try {
          await within(layer.close(), SETTLE_MS, 'close()');
        } catch (error) {
          failures.push(error);
        }
      }
      await hooks.afterEach?.();
      if (failures.length) throw failures[0];
    });

    describe('send and receive', () => {
      it('round-trips a message', async () => {
        const layer = await open();
        const message = {
          type: 'chat.message',
          text: 'hello',
          n: 42,
          nested: { list: [1, 'two', null] },
        };
        await layer.send('conf.basic', message);
        expect(await within(layer.receive('conf.basic'))).toEqual(message);
      });

      it('delivers to a receive that was waiting before the send', async () => {
        const layer = await open();
        const waiting = within(layer.receive('conf.waiting'));
        await sleep(20);
        await layer.send('conf.waiting', { type: 'late', n: 1 });
        expect(await waiting).toEqual({ type: 'late', n: 1 });
      });

      it('round-trips the usual value types', async () => {
        const layer = await open();
        const message = {
          type: 'types',
          int: 7,
          negative: -123456,
          big: 2 ** 52 + 1,
          float: 3.25,
          bool: true,
          no: false,
          nil: null,
          text: 'héllo wörld ✓ 日本',
          empty: '',
          list: [1, [2, [3, {}]], 'x'],
          object: { a: { b: { c: 'deep' } } },
        };
        await layer.send('conf.types', message);
        expect(await within(layer.receive('conf.types'))).toEqual(message);
      });

      it('keeps per-channel FIFO order for 500 messages', async () => {
        const layer = await open({ capacity: 1000 });
        for (let i = 0; i < 500; i++) await layer.send('conf.fifo', { type: 'seq', i });
        const got: number[] = [];
        for (let i = 0; i < 500; i++)
          got.push((await within(layer.receive('conf.fifo'))).i as number);
        expect(got).toEqual(Array.from({ length: 500 }, (_, i) => i));
        await expectEmpty(layer, 'conf.fifo');
      });

      it('keeps each channel in order independently of the others', async () => {
        const layer = await open({ capacity: 500 });
        for (let i = 0; i < 200; i++) {
          await layer.send('conf.order-a', { i });
          await layer.send('conf.order-b', { i: 1000 + i });
        }
        const b: number[] = [];
        for (let i = 0; i < 200; i++)
          b.push((await within(layer.receive('conf.order-b'))).i as number);
        const a: number[] = [];
        for (let i = 0; i < 200; i++)
          a.push((await within(layer.receive('conf.order-a'))).i as number);
        expect(a).toEqual(Array.from({ length: 200 }, (_, i) => i));
        expect(b).toEqual(Array.from({ length: 200 }, (_, i) => 1000 + i));
      });

      it('delivers a copy: changing the sent object afterwards does not change what is received', async () => {
        const layer = await open();
        const message = {
          type: 'original',
          nested: { value: 1, list: [1, 2] },
          bin: Buffer.from([1, 2, 3]),
        };
        await layer.send('conf.copy', message);
        message.type = 'changed';
        message.nested.value = 2;
        message.nested.list.push(3);
        message.bin[0] = 99;
        const received = await within(layer.receive('conf.copy'));
        expect(received.type).toBe('original');
        expect(received.nested).toEqual({ value: 1, list: [1, 2] });
        expect([...bytesOf(received.bin)]).toEqual([1, 2, 3]);
        expect(received).not.toBe(message);
      });

      it('gives every receiver of one group message its own copy', async () => {
        const layer = await open();
        await layer.groupAdd('conf-copies', 'conf.copy-a');
        await layer.groupAdd('conf-copies', 'conf.copy-b');
        await layer.groupSend('conf-copies', {
          type: 'shared',
          nested: { value: 1 },
          bin: Buffer.from([7, 8, 9]),
        });
        const a = await within(layer.receive('conf.copy-a'));
        (a.nested as { value: number }).value = 2;
        bytesOf(a.bin)[0] = 0;
        const b = await within(layer.receive('conf.copy-b'));
        expect(b.nested).toEqual({ value: 1 });
        expect([...bytesOf(b.bin)]).toEqual([7, 8, 9]);
      });

      it('round-trips Buffer and Uint8Array values byte-exact', async () => {
        const layer = await open();
        const every = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
        const random = randomBytes(64 * 1024);
        const view = new Uint8Array([0, 255, 128, 1, 0, 0, 10, 13]);
        const offsetView = new Uint8Array(randomBytes(100).buffer, 10, 50); // a view into a larger buffer
        const message = {
          type: 'binary',
          every,
          random,
          view,
          offsetView,
          empty: Buffer.alloc(0),
          list: [Buffer.from('ab')],
        };
        await layer.send('conf.binary', message);
        const received = await within(layer.receive('conf.binary'));
        expect(bytesOf(received.every).equals(every)).toBe(true);
        expect(bytesOf(received.random).equals(random)).toBe(true);
        expect(bytesOf(received.view).equals(Buffer.from(view))).toBe(true);
        expect(bytesOf(received.offsetView).equals(Buffer.from(offsetView))).toBe(true);
        expect(bytesOf(received.empty).length).toBe(0);
        expect(bytesOf((received.list as unknown[])[0]).toString()).toBe('ab');
      });

      it('round-trips a 5 MB message', async () => {
        const layer = await open();
        const payload = randomBytes(5 * 1024 * 1024);
        const text = 'x'.repeat(256 * 1024) + '✓';
        await layer.send('conf.large', { type: 'large', payload, text });
        const received = await within(layer.receive('conf.large'));
        expect(received.type).toBe('large');
        expect(bytesOf(received.payload).equals(payload)).toBe(true);
        expect(received.text).toBe(text);
      });

      // Issue 14: a 20 MB message failed on shm only; InMemory and Redis took anything.
      it('the largest message is 16 MiB by default on every backend; beyond it MessageTooLarge (a RangeError), nothing sent', async () => {
        const layer = await open();
        await layer.groupAdd('conf-big', 'conf.big-member');
        const tooBig = { type: 'big', payload: Buffer.alloc(16 * 1024 * 1024 + 1024) };
        const sent = await rejection(() => layer.send('conf.big', tooBig), 'send(17 MB)');
        expect(sent).toBeInstanceOf(MessageTooLarge);
        expect(sent).toBeInstanceOf(RangeError);
        expect(
          await rejection(() => layer.groupSend('conf-big', tooBig), 'groupSend(17 MB)'),
        ).toBeInstanceOf(MessageTooLarge);
        const fits = { type: 'fits', payload: Buffer.alloc(16 * 1024 * 1024 - 1024, 7) };
        await layer.send('conf.big', fits);
        expect(
          bytesOf((await within(layer.receive('conf.big'))).payload).equals(fits.payload),
        ).toBe(true);
        await expectEmpty(layer, 'conf.big-member');
      });

      it('the maxMessageSize option lowers the limit', async () => {
        const layer = await open({ maxMessageSize: 64 * 1024 });
        const error = await rejection(
          () => layer.send('conf.small-limit', { type: 'x', payload: Buffer.alloc(70 * 1024) }),
          'send',
        );
        expect(error).toBeInstanceOf(MessageTooLarge);
        await layer.send('conf.small-limit', { type: 'x', payload: Buffer.alloc(60 * 1024) });
        expect(await within(layer.receive('conf.small-limit'))).toMatchObject({ type: 'x' });
      });

      it('sends between two instances of one layer', async () => {
        const layer = await open();
        const other = await peerOf(layer);
        const waiting = within(other.receive('conf.cross'));
        await sleep(20);
        await layer.send('conf.cross', { type: 'to-other' });
        expect(await waiting).toEqual({ type: 'to-other' });
        await other.send('conf.cross-back', { type: 'to-layer' });
        expect(await within(layer.receive('conf.cross-back'))).toEqual({ type: 'to-layer' });
      });
    });

    describe('newChannel', () => {
      it("returns 'specific.<x>!<y>' names by default and respects the prefix", async () => {
        const layer = await open();
        const name = await layer.newChannel();
        expect(name).toMatch(/^specific\.[a-zA-Z\d\-_.]+![a-zA-Z\d\-_.]+$/);
        const prefixed = await layer.newChannel('chat.worker-1');
        expect(prefixed).toMatch(/^chat\.worker-1\.[a-zA-Z\d\-_.]+![a-zA-Z\d\-_.]+$/);
        expect(prefixed.split('!')).toHaveLength(2);
      });

      it('returns a different name on every call', async () => {
        const layer = await open();
        const names = await Promise.all(Array.from({ length: 200 }, () => layer.newChannel()));
        expect(new Set(names).size).toBe(200);
        const other = await peerOf(layer);
        const otherNames = await Promise.all(Array.from({ length: 50 }, () => other.newChannel()));
        expect(new Set([...names, ...otherNames]).size).toBe(250);
      });

      it('can be sent to and received from', async () => {
        const layer = await open();
        const channel = await layer.newChannel();
        await layer.send(channel, { type: 'direct', n: 1 });
        expect(await within(layer.receive(channel))).toEqual({ type: 'direct', n: 1 });
        const waiting = within(layer.receive(channel));
        await sleep(20);
        await layer.send(channel, { type: 'direct', n: 2 });
        expect(await waiting).toEqual({ type: 'direct', n: 2 });
      });

      it('receives what another instance sends to it', async () => {
        const layer = await open();
        const other = await peerOf(layer);
        const channel = await layer.newChannel('reply');
        const waiting = within(layer.receive(channel));
        await sleep(20);
        await other.send(channel, { type: 'reply', n: 1 });
        expect(await waiting).toEqual({ type: 'reply', n: 1 });
        await other.send(channel, { type: 'reply', n: 2 });
        expect(await within(layer.receive(channel))).toEqual({ type: 'reply', n: 2 });
      });

      it("rejects receive on a '!' channel this instance did not create", async () => {
        const layer = await open();
        let other = await peerOf(layer);
        if (other === layer) other = await open();
        const theirs = await layer.newChannel();
        await layer.send(theirs, { type: 'private' });
        const error = await rejection(
          () => other.receive(theirs),
          'receive of a foreign process-local channel',
        );
        expect(error).toBeInstanceOf(Error);
        const madeUp = await rejection(
          () => layer.receive('specific.abc123!def456'),
          'receive of a made-up channel',
        );
        expect(madeUp).toBeInstanceOf(Error);
        // The rejected receive took nothing: the owner still gets the message.
        expect(await within(layer.receive(theirs))).toEqual({ type: 'private' });
      });
    });

    describe('groups', () => {
      it('groupSend fans out to every member channel once', async () => {
        const layer = await open();
        const channels = ['conf.fan-1', 'conf.fan-2', 'conf.fan-3', await layer.newChannel()];
        for (const channel of channels) await layer.groupAdd('conf-fan', channel);
        await layer.groupSend('conf-fan', { type: 'fan', n: 1 });
        for (const channel of channels) {
          expect(await within(layer.receive(channel))).toEqual({ type: 'fan', n: 1 });
          await expectEmpty(layer, channel);
        }
        await expectEmpty(layer, 'conf.fan-not-member');
      });

      it('delivers to a receive already waiting on a member channel', async () => {
        const layer = await open();
        await layer.groupAdd('conf-wait', 'conf.group-wait');
        const waiting = within(layer.receive('conf.group-wait'));
        await sleep(20);
        await layer.groupSend('conf-wait', { type: 'woken' });
        expect(await waiting).toEqual({ type: 'woken' });
      });

      it('groupDiscard stops delivery to that channel only', async () => {
        const layer = await open();
        await layer.groupAdd('conf-discard', 'conf.stay');
        await layer.groupAdd('conf-discard', 'conf.leave');
        await layer.groupDiscard('conf-discard', 'conf.leave');
        await layer.groupSend('conf-discard', { type: 'after-discard' });
        expect(await within(layer.receive('conf.stay'))).toEqual({ type: 'after-discard' });
        await expectEmpty(layer, 'conf.leave');
        // Discarding what is not there is a no-op.
        await layer.groupDiscard('conf-discard', 'conf.leave');
        await layer.groupDiscard('conf-discard', 'conf.never-added');
        await layer.groupDiscard('conf-no-such-group', 'conf.stay');
        await layer.groupSend('conf-discard', { type: 'again' });
        expect(await within(layer.receive('conf.stay'))).toEqual({ type: 'again' });
        await expectEmpty(layer, 'conf.leave');
      });

      it('groupSend to a group without members is a no-op', async () => {
        const layer = await open();
        await layer.groupSend('conf-nobody', { type: 'void' });
        await layer.groupAdd('conf-emptied', 'conf.was-member');
        await layer.groupDiscard('conf-emptied', 'conf.was-member');
        await layer.groupSend('conf-emptied', { type: 'void' });
        await expectEmpty(layer, 'conf.was-member');
        // The group works again when a member is added.
        await layer.groupAdd('conf-emptied', 'conf.was-member');
        await layer.groupSend('conf-emptied', { type: 'back' });
        expect(await within(layer.receive('conf.was-member'))).toEqual({ type: 'back' });
      });

      it('adding a channel again is idempotent: one delivery per send', async () => {
        const layer = await open();
        await layer.groupAdd('conf-twice', 'conf.twice');
        await layer.groupAdd('conf-twice', 'conf.twice');
        await layer.groupAdd('conf-twice', 'conf.twice');
        await layer.groupSend('conf-twice', { type: 'once', n: 1 });
        await layer.groupSend('conf-twice', { type: 'once', n: 2 });
        expect(await within(layer.receive('conf.twice'))).toEqual({ type: 'once', n: 1 });
        expect(await within(layer.receive('conf.twice'))).toEqual({ type: 'once', n: 2 });
        await expectEmpty(layer, 'conf.twice');
        // One discard removes the membership entirely.
        await layer.groupDiscard('conf-twice', 'conf.twice');
        await layer.groupSend('conf-twice', { type: 'gone' });
        await expectEmpty(layer, 'conf.twice');
      });

      it('a channel can belong to several groups', async () => {
        const layer = await open();
        await layer.groupAdd('conf-g1', 'conf.multi');
        await layer.groupAdd('conf-g2', 'conf.multi');
        await layer.groupSend('conf-g1', { type: 'from', group: 1 });
        await layer.groupSend('conf-g2', { type: 'from', group: 2 });
        expect(await within(layer.receive('conf.multi'))).toEqual({ type: 'from', group: 1 });
        expect(await within(layer.receive('conf.multi'))).toEqual({ type: 'from', group: 2 });
        await layer.groupDiscard('conf-g1', 'conf.multi');
        await layer.groupSend('conf-g1', { type: 'from', group: 1 });
        await layer.groupSend('conf-g2', { type: 'from', group: 2 });
        expect(await within(layer.receive('conf.multi'))).toEqual({ type: 'from', group: 2 });
        await expectEmpty(layer, 'conf.multi');
      });

      it('groupSend skips a full member channel without throwing; the others still get the message', async () => {
        const layer = await open({ capacity: 2 });
        await layer.groupAdd('conf-partial', 'conf.full-member');
        await layer.groupAdd('conf-partial', 'conf.ok-member-1');
        await layer.groupAdd('conf-partial', 'conf.ok-member-2');
        await layer.send('conf.full-member', { type: 'old', n: 1 });
        await layer.send('conf.full-member', { type: 'old', n: 2 });
        await layer.groupSend('conf-partial', { type: 'group' });
        expect(await within(layer.receive('conf.ok-member-1'))).toEqual({ type: 'group' });
        expect(await within(layer.receive('conf.ok-member-2'))).toEqual({ type: 'group' });
        expect(await within(layer.receive('conf.full-member'))).toEqual({ type: 'old', n: 1 });
        expect(await within(layer.receive('conf.full-member'))).toEqual({ type: 'old', n: 2 });
        await expectEmpty(layer, 'conf.full-member');
        // With room again, the member gets the next group message.
        await layer.groupSend('conf-partial', { type: 'group', n: 2 });
        expect(await within(layer.receive('conf.full-member'))).toEqual({ type: 'group', n: 2 });
      });

      it('groupMembers lists the channels in a group; [] for an unknown or emptied group', async () => {
        const layer = await open();
        const local = await layer.newChannel();
        expect(await layer.groupMembers('conf-members-unknown')).toEqual([]);
        for (const channel of ['conf.m-a', 'conf.m-b', local, 'conf.m-a'])
          await layer.groupAdd('conf-members', channel);
        await layer.groupAdd('conf-members-other', 'conf.m-c');
        expect((await layer.groupMembers('conf-members')).sort()).toEqual(
          ['conf.m-a', 'conf.m-b', local].sort(),
        );
        expect(await layer.groupMembers('conf-members-other')).toEqual(['conf.m-c']);
        await layer.groupDiscard('conf-members', 'conf.m-b');
        expect((await layer.groupMembers('conf-members')).sort()).toEqual(
          ['conf.m-a', local].sort(),
        );
        await layer.groupDiscard('conf-members', 'conf.m-a');
        await layer.groupDiscard('conf-members', local);
        expect(await layer.groupMembers('conf-members')).toEqual([]);
        // Listing changes nothing: the other group still delivers.
        await layer.groupSend('conf-members-other', { type: 'still' });
        expect(await within(layer.receive('conf.m-c'))).toEqual({ type: 'still' });
      });

      it('groupMembers sees memberships added and discarded by another instance', async () => {
        const layer = await open();
        const other = await peerOf(layer);
        const mine = await layer.newChannel();
        await layer.groupAdd('conf-members-shared', mine);
        await other.groupAdd('conf-members-shared', 'conf.members-plain');
        const expected = [mine, 'conf.members-plain'].sort();
        expect((await layer.groupMembers('conf-members-shared')).sort()).toEqual(expected);
        expect((await other.groupMembers('conf-members-shared')).sort()).toEqual(expected);
        await other.groupDiscard('conf-members-shared', mine);
        expect(await layer.groupMembers('conf-members-shared')).toEqual(['conf.members-plain']);
      });

      it('membership and groupSend are shared between instances', async () => {
        const layer = await open();
        const other = await peerOf(layer);
        const mine = await layer.newChannel();
        await layer.groupAdd('conf-shared', mine);
        await other.groupAdd('conf-shared', 'conf.shared-plain');
        const waiting = within(layer.receive(mine));
        await sleep(20);
        await other.groupSend('conf-shared', { type: 'shared' });
        expect(await waiting).toEqual({ type: 'shared' });
        expect(await within(layer.receive('conf.shared-plain'))).toEqual({ type: 'shared' });
        await other.groupDiscard('conf-shared', mine);
        await layer.groupSend('conf-shared', { type: 'after' });
        expect(await within(other.receive('conf.shared-plain'))).toEqual({ type: 'after' });
        await expectEmpty(other, mine, layer);
      });
    });

    describe('groupSend reports its reach; releaseChannel', () => {
      it('groupSend resolves to how many member channels got the message', async () => {
        const layer = await open({ capacity: 1 });
        expect(await layer.groupSend('conf-reach', { type: 'x' })).toBe(0);
        await layer.groupAdd('conf-reach', 'conf.reach-a');
        await layer.groupAdd('conf-reach', 'conf.reach-b');
        await layer.groupAdd('conf-reach', 'conf.reach-c');
        expect(await layer.groupSend('conf-reach', { type: 'first' })).toBe(3);
        await layer.receive('conf.reach-a');
        await layer.receive('conf.reach-b');
        // c is still full (capacity 1): skipped, and not counted.
        expect(await layer.groupSend('conf-reach', { type: 'second' })).toBe(2);
        await layer.groupDiscard('conf-reach', 'conf.reach-a');
        await layer.receive('conf.reach-b');
        expect(await layer.groupSend('conf-reach', { type: 'third' })).toBe(1);
      });

      it('releaseChannel drops queued messages and memberships; a waiting receive rejects with ChannelReleased', async () => {
        const layer = await open();
        const other = await peerOf(layer);
        const channel = await layer.newChannel();
        await layer.groupAdd('conf-release', channel);
        await layer.groupAdd('conf-release', 'conf.release-stays');
        await other.send(channel, { type: 'queued' });
        expect(await other.groupSend('conf-release', { type: 'fan' })).toBe(2);
        await layer.releaseChannel(channel);
        expect(await layer.groupMembers('conf-release')).toEqual(['conf.release-stays']);
        expect(await other.groupSend('conf-release', { type: 'after' })).toBe(1);
        expect(await within(layer.receive('conf.release-stays'))).toEqual({ type: 'fan' });
        // A new channel for the next client; a receive waiting on a released one ends.
        const next = await layer.newChannel();
        const waiting = rejection(() => layer.receive(next), 'receive on a released channel');
        await sleep(10);
        await layer.releaseChannel(next);
        expect(errorName(await waiting)).toBe('ChannelReleased');
        await layer.releaseChannel(next); // twice is harmless
      });

      it('stats() counts members skipped as full and sends refused as full', async () => {
        const layer = await open({ capacity: 1 });
        const before = layer.stats();
        await layer.groupAdd('conf-counted', 'conf.counted-a');
        await layer.groupAdd('conf-counted', 'conf.counted-b');
        await layer.send('conf.counted-a', { type: 'fills' });
        expect(await layer.groupSend('conf-counted', { type: 'one' })).toBe(1);
        expect(await layer.groupSend('conf-counted', { type: 'two' })).toBe(0);
        expect(
          await rejection(
            () => layer.send('conf.counted-b', { type: 'x' }),
            'send to a full channel',
          ),
        ).toBeInstanceOf(ChannelFull);
        const after = layer.stats();
        expect(after.deliveriesSkippedFull - before.deliveriesSkippedFull).toBe(3);
        expect(after.sendsRefusedFull - before.sendsRefusedFull).toBe(1);
      });

      it("releaseChannel rejects a channel that is not this instance's '!' channel with TypeError", async () => {
        const layer = await open();
        const other = await peerOf(layer);
        const theirs = await (other === layer ? await open() : other).newChannel();
        for (const channel of ['conf.plain', theirs, 'specific.abc123!def456']) {
          expect(
            await rejection(() => layer.releaseChannel(channel), `releaseChannel(${channel})`),
          ).toBeInstanceOf(TypeError);
        }
      });

      // Issue 14: a server that makes a channel per connection, joins a room, ends each receive
      // loop with an AbortSignal and leaves must end up holding what it held before.
      it.skipIf(!hooks.footprint)('connection churn leaves nothing behind', async () => {
        const layer = await open();
        const other = await peerOf(layer);
        const settle = async (): Promise<void> => {
          for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
          await sleep(20);
        };
        const before = await hooks.footprint!(layer);
        for (let connection = 0; connection < 120; connection++) {
          const channel = await layer.newChannel();
          await layer.groupAdd('conf-churn', channel);
          const controller = new AbortController();
          const receiving = layer
            .receive(channel, { signal: controller.signal })
            .catch((error: unknown) => error);
          if (connection % 3 === 0) {
            expect(
              await other.groupSend('conf-churn', { type: 'chat', connection }),
            ).toBeGreaterThanOrEqual(1);
            expect(await within(receiving)).toEqual({ type: 'chat', connection });
          } else {
            await sleep(1);
            controller.abort();
            expect(errorName(await within(receiving))).toBe('AbortError');
          }
          if (connection % 2) await layer.releaseChannel(channel);
          else await layer.groupDiscard('conf-churn', channel);
        }
        await settle();
        expect(await hooks.footprint!(layer)).toEqual(before);
      });
    });

    describe.skipIf(!hooks.childLayer)('process lifetime', () => {
      it('a waiting receive keeps the process alive until its message comes', async () => {
        const child = await runNode(`${hooks.childLayer!()}
// Unref'd: only the waiting receive may keep this process alive until the send.
setTimeout(() => { layer.send('conf.lifetime', { type: 'late' }); }, 300).unref();
console.log((await layer.receive('conf.lifetime')).type);
await layer.close();`);
        expect(child).toEqual({ code: 0, output: 'late', killed: false });
      });

      it('an idle layer does not keep the process alive, even without close()', async () => {
        const started = Date.now();
        const child = await runNode(`${hooks.childLayer!()}
const channel = await layer.newChannel();
await layer.groupAdd('conf-lifetime', channel);
await layer.send('conf.lifetime-idle', { type: 'x' });
await layer.receive('conf.lifetime-idle');
await layer.receive(channel, { signal: AbortSignal.timeout(20) }).catch((e) => e.name);
await layer.groupDiscard('conf-lifetime', channel);
console.log('idle');`);
        expect(child).toEqual({ code: 0, output: 'idle', killed: false });
        expect(Date.now() - started).toBeLessThan(6000);
      });
    });

    describe('capacity', () => {
      it('holds 100 messages by default; the 101st send rejects with ChannelFull', async () => {
        const layer = await open();
        for (let i = 0; i < 100; i++) await layer.send('conf.cap-default', { i });
        const error = await rejection(
          () => layer.send('conf.cap-default', { i: 100 }),
          'the 101st send',
        );
        expect(error).toBeInstanceOf(ChannelFull);
        expect(errorName(error)).toBe('ChannelFull');
        // Other channels are not affected; a receive makes room again.
        await layer.send('conf.cap-other', { type: 'fine' });
        expect((await within(layer.receive('conf.cap-default'))).i).toBe(0);
        await layer.send('conf.cap-default', { i: 100 });
        expect(await rejection(() => layer.send('conf.cap-default', { i: 101 }))).toBeInstanceOf(
          ChannelFull,
        );
        const rest: number[] = [];
        for (let i = 0; i < 100; i++)
          rest.push((await within(layer.receive('conf.cap-default'))).i as number);
        expect(rest).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
      });

      it('applies the capacity option', async () => {
        const layer = await open({ capacity: 3 });
        expect(await fill(layer, 'conf.cap-3', 50)).toBe(3);
        const error = await rejection(() => layer.send('conf.cap-3', { type: 'more' }));
        expect(error).toBeInstanceOf(ChannelFull);
        expect(await fill(layer, 'conf.cap-3-other', 50)).toBe(3);
      });

      it('counts the capacity of a process-local channel too', async () => {
        const layer = await open({ capacity: 2 });
        const channel = await layer.newChannel();
        expect(await fill(layer, channel, 10)).toBe(2);
      });

      it('applies channelCapacity glob patterns given as an object, first match wins', async () => {
        const layer = await open({
          capacity: 4,
          channelCapacity: {
            'small.*': 1,
            'sm*': 2,
            'q?': 3,
            'r[ab]c': 5,
            'big.*': 7,
            'x[!ab]z': 6,
          },
        });
        expect(await fill(layer, 'small.one', 20)).toBe(1); // 'small.*' before 'sm*'
        expect(await fill(layer, 'smile', 20)).toBe(2);
        expect(await fill(layer, 'qx', 20)).toBe(3);
        expect(await fill(layer, 'qxx', 20)).toBe(4); // '?' is one character: default
        expect(await fill(layer, 'rbc', 20)).toBe(5);
        expect(await fill(layer, 'rcc', 20)).toBe(4);
        expect(await fill(layer, 'big.one', 20)).toBe(7);
        expect(await fill(layer, 'other', 20)).toBe(4);
        expect(await fill(layer, 'xcz', 20)).toBe(6); // '[!ab]': any character but a or b
        expect(await fill(layer, 'xaz', 20)).toBe(4);
      });

      it('applies channelCapacity given as a Map, in the Map order', async () => {
        const layer = await open({
          capacity: 4,
          channelCapacity: new Map([
            ['a*', 1],
            ['*', 3],
          ]),
        });
        expect(await fill(layer, 'abc', 20)).toBe(1);
        expect(await fill(layer, 'xyz', 20)).toBe(3);
        const reversed = await open({
          capacity: 4,
          channelCapacity: new Map([
            ['*', 3],
            ['a*', 1],
          ]),
        });
        expect(await fill(reversed, 'abc', 20)).toBe(3);
      });
    });

    describe('expiry', () => {
      it('never delivers a message older than expiry, and expired messages do not count against capacity', async () => {
        const layer = await open({ expiry: 1, capacity: 3 });
        const start = Date.now();
        await layer.send('conf.exp', { type: 'old', n: 1 });
        await layer.send('conf.exp', { type: 'old', n: 2 });
        await layer.groupAdd('conf-exp', 'conf.exp-member');
        await layer.groupSend('conf-exp', { type: 'old-group' });
        await sleepUntil(start + 600);
        await layer.send('conf.exp', { type: 'young' });
        expect(await rejection(() => layer.send('conf.exp', { type: 'overflow' }))).toBeInstanceOf(
          ChannelFull,
        );
        await sleepUntil(start + 1300);
        // The two old messages expired: they free their places, 'young' (0.7 s old) still counts.
        await layer.send('conf.exp', { type: 'new', n: 1 });
        await layer.send('conf.exp', { type: 'new', n: 2 });
        expect(await rejection(() => layer.send('conf.exp', { type: 'overflow' }))).toBeInstanceOf(
          ChannelFull,
        );
        expect(await within(layer.receive('conf.exp'))).toEqual({ type: 'young' });
        expect(await within(layer.receive('conf.exp'))).toEqual({ type: 'new', n: 1 });
        expect(await within(layer.receive('conf.exp'))).toEqual({ type: 'new', n: 2 });
        await expectEmpty(layer, 'conf.exp-member');
      });

      it('drops a group membership older than groupExpiry; groupAdd renews it', async () => {
        const layer = await open({ groupExpiry: 1 });
        const start = Date.now();
        await layer.groupAdd('conf-gexp', 'conf.gexp-stale');
        await layer.groupAdd('conf-gexp', 'conf.gexp-renewed');
        await layer.groupSend('conf-gexp', { type: 'early' });
        expect(await within(layer.receive('conf.gexp-stale'))).toEqual({ type: 'early' });
        expect(await within(layer.receive('conf.gexp-renewed'))).toEqual({ type: 'early' });
        await sleepUntil(start + 600);
        await layer.groupAdd('conf-gexp', 'conf.gexp-renewed');
        await layer.groupAdd('conf-gexp', 'conf.gexp-late');
        await sleepUntil(start + 1300);
        expect((await layer.groupMembers('conf-gexp')).sort()).toEqual([
          'conf.gexp-late',
          'conf.gexp-renewed',
        ]);
        await layer.groupSend('conf-gexp', { type: 'late' });
        expect(await within(layer.receive('conf.gexp-renewed'))).toEqual({ type: 'late' });
        expect(await within(layer.receive('conf.gexp-late'))).toEqual({ type: 'late' });
        await expectEmpty(layer, 'conf.gexp-stale');
      });

      it('groupMembers leaves out a membership older than groupExpiry, seen from another instance too', async () => {
        const layer = await open({ groupExpiry: 1 });
        const other = await peerOf(layer);
        const start = Date.now();
        await layer.groupAdd('conf-gexp-list', 'conf.gexp-list-old');
        expect(await other.groupMembers('conf-gexp-list')).toEqual(['conf.gexp-list-old']);
        await sleepUntil(start + 1300);
        expect(await other.groupMembers('conf-gexp-list')).toEqual([]);
        expect(await layer.groupMembers('conf-gexp-list')).toEqual([]);
        // A later groupAdd makes it a member again.
        await other.groupAdd('conf-gexp-list', 'conf.gexp-list-old');
        expect(await layer.groupMembers('conf-gexp-list')).toEqual(['conf.gexp-list-old']);
      });
    });

    describe('flush', () => {
      it('empties channels and groups', async () => {
        const layer = await open();
        const local = await layer.newChannel();
        await layer.send('conf.flush-a', { n: 1 });
        await layer.send('conf.flush-a', { n: 2 });
        await layer.send('conf.flush-b', { n: 3 });
        await layer.send(local, { n: 4 });
        await layer.groupAdd('conf-flush', 'conf.flush-member');
        await layer.flush();
        expect(await layer.groupMembers('conf-flush')).toEqual([]);
        await expectEmpty(layer, 'conf.flush-a');
        await expectEmpty(layer, 'conf.flush-b');
        await expectEmpty(layer, local);
        await layer.groupSend('conf-flush', { type: 'after-flush' });
        await expectEmpty(layer, 'conf.flush-member');
        // The layer is fully usable afterwards, including the capacity of flushed channels.
        expect(await fill(layer, 'conf.flush-a', 200)).toBe(100);
      });

      it('flush by one instance empties what the other sees; waiting receives keep working', async () => {
        const layer = await open();
        const other = await peerOf(layer);
        await layer.send('conf.flush-shared', { type: 'flushed' });
        await layer.groupAdd('conf-flush-shared', 'conf.flush-shared-member');
        const waiting = within(layer.receive('conf.flush-waiting'));
        await sleep(20);
        await other.flush();
        await other.send('conf.flush-waiting', { type: 'after-flush' });
        expect(await waiting).toEqual({ type: 'after-flush' });
        await expectEmpty(other, 'conf.flush-shared', layer);
        await other.groupSend('conf-flush-shared', { type: 'after-flush' });
        await expectEmpty(layer, 'conf.flush-shared-member');
      });
    });

    describe('name validation', () => {
      const badChannels: unknown[] = [
        '',
        ' ',
        'with space',
        'tab\there',
        'line\nbreak',
        'héllo',
        'ü',
        '日本',
        'emoji😀',
        'a/b',
        'a:b',
        'a!b!c',
        '!!',
        'x'.repeat(201),
        'x'.repeat(150) + '!' + 'y'.repeat(50),
      ];
      const badGroups: unknown[] = [
        '',
        ' ',
        'with space',
        'héllo',
        'ü',
        'a!b',
        'a!',
        '!',
        'a/b',
        'g'.repeat(201),
      ];
      const notStrings: unknown[] = [
        undefined,
        null,
        1,
        true,
        {},
        ['a'],
        Symbol('a'),
        Buffer.from('a'),
      ];

      async function expectTypeError(call: () => unknown, what: string): Promise<void> {
        const error = await rejection(call, what);
        expect(error, what).toBeInstanceOf(TypeError);
      }

      const show = (value: unknown): string =>
        typeof value === 'string'
          ? JSON.stringify(value.length > 40 ? `${value.slice(0, 20)}…(${value.length})` : value)
          : String(typeof value);

      it('rejects invalid channel names with TypeError in every method', async () => {
        const layer = await open();
        for (const name of badChannels) {
          const n = name as string;
          await expectTypeError(() => layer.send(n, { type: 'x' }), `send(${show(name)})`);
          await expectTypeError(() => layer.receive(n), `receive(${show(name)})`);
          await expectTypeError(
            () => layer.groupAdd('conf-valid', n),
            `groupAdd(_, ${show(name)})`,
          );
          await expectTypeError(
            () => layer.groupDiscard('conf-valid', n),
            `groupDiscard(_, ${show(name)})`,
          );
        }
        await expectEmpty(layer, 'conf.still-works');
      });

      it('rejects invalid group names with TypeError in every method', async () => {
        const layer = await open();
        for (const name of badGroups) {
          const n = name as string;
          await expectTypeError(() => layer.groupAdd(n, 'conf.valid'), `groupAdd(${show(name)})`);
          await expectTypeError(
            () => layer.groupDiscard(n, 'conf.valid'),
            `groupDiscard(${show(name)})`,
          );
          await expectTypeError(
            () => layer.groupSend(n, { type: 'x' }),
            `groupSend(${show(name)})`,
          );
          await expectTypeError(() => layer.groupMembers(n), `groupMembers(${show(name)})`);
        }
        await layer.groupSend('conf-valid', { type: 'x' });
        await expectEmpty(layer, 'conf.valid');
      });

      it('rejects non-string names with TypeError', async () => {
        const layer = await open();
        for (const name of notStrings) {
          const n = name as string;
          await expectTypeError(() => layer.send(n, { type: 'x' }), `send(${show(name)})`);
          await expectTypeError(() => layer.receive(n), `receive(${show(name)})`);
          await expectTypeError(
            () => layer.groupAdd(n, 'conf.valid'),
            `groupAdd(${show(name)}, _)`,
          );
          await expectTypeError(
            () => layer.groupAdd('conf-valid', n),
            `groupAdd(_, ${show(name)})`,
          );
          await expectTypeError(
            () => layer.groupDiscard(n, 'conf.valid'),
            `groupDiscard(${show(name)}, _)`,
          );
          await expectTypeError(
            () => layer.groupDiscard('conf-valid', n),
            `groupDiscard(_, ${show(name)})`,
          );
          await expectTypeError(
            () => layer.groupSend(n, { type: 'x' }),
            `groupSend(${show(name)})`,
          );
          await expectTypeError(() => layer.groupMembers(n), `groupMembers(${show(name)})`);
        }
      });

      it('rejects a newChannel prefix that makes an invalid name', async () => {
        const layer = await open();
        for (const prefix of ['with space', 'a!b', 'héllo', 'p'.repeat(200)]) {
          await expectTypeError(() => layer.newChannel(prefix), `newChannel(${show(prefix)})`);
        }
      });

      it('accepts 200-character channel and group names, and every allowed character', async () => {
        const layer = await open();
        const channel = 'c'.repeat(199) + 'z';
        const group = 'g'.repeat(199) + 'z';
        expect(channel).toHaveLength(200);
        await layer.send(channel, { type: 'long' });
        expect(await within(layer.receive(channel))).toEqual({ type: 'long' });
        await layer.groupAdd(group, channel);
        await layer.groupSend(group, { type: 'long-group' });
        expect(await within(layer.receive(channel))).toEqual({ type: 'long-group' });
        await layer.groupDiscard(group, channel);
        const bang = 'b'.repeat(100) + '!' + 'd'.repeat(99);
        expect(bang).toHaveLength(200);
        await layer.send(bang, { type: 'bang' }); // sending to a '!' name needs no ownership
        const chars = 'azAZ09-_.';
        await layer.send(chars, { type: 'chars' });
        expect(await within(layer.receive(chars))).toEqual({ type: 'chars' });
        await layer.groupAdd(chars, chars);
        await layer.groupSend(chars, { type: 'chars-group' });
        expect(await within(layer.receive(chars))).toEqual({ type: 'chars-group' });
      });
    });

    describe('message validation', () => {
      class Point {
        constructor(
          public x = 1,
          public y = 2,
        ) {}
      }
      const notPlain: Array<[string, unknown]> = [
        ['an array', [1, 2]],
        ['a string', 'hello'],
        ['a number', 42],
        ['null', null],
        ['undefined', undefined],
        ['a class instance', new Point()],
        ['a Map', new Map([['type', 'x']])],
        ['a Set', new Set([1])],
        ['a Date', new Date()],
        ['a Buffer', Buffer.from('x')],
      ];
      const notSerializable: Array<[string, Message]> = [
        ['a function', { type: 'x', f: () => 1 }],
        ['a symbol', { type: 'x', s: Symbol('s') }],
        ['a bigint', { type: 'x', b: 10n }],
        ['a nested function', { type: 'x', deep: { list: [1, { f() {} }] } }],
        ['a nested bigint', { type: 'x', deep: [[1n]] }],
      ];
      // Issue 14: msgpack silently flattened these ({p: Point} arrived as {p: {x, y}}, an Error as
      // an array, a Promise as {}). Each must be a TypeError that names where it is.
      const nestedInstances: Array<[string, Message, RegExp]> = [
        ['a nested class instance', { type: 'x', p: new Point() }, /message\.p is a Point/],
        [
          'an Error in an array',
          { type: 'x', list: [1, new Error('boom')] },
          /message\.list\[1\] is an Error/,
        ],
        [
          'a Promise deep inside',
          { type: 'x', a: { b: { c: Promise.resolve(1) } } },
          /message\.a\.b\.c is a Promise/,
        ],
        ['a nested Map', { type: 'x', m: new Map([['k', 1]]) }, /message\.m is a Map/],
        ['a nested Set', { type: 'x', s: [new Set([1])] }, /message\.s\[0\] is a Set/],
        [
          'a Float64Array',
          { type: 'x', f: new Float64Array([1.5]) },
          /message\.f is a Float64Array/,
        ],
      ];

      it('rejects a message that is not a plain object with TypeError', async () => {
        const layer = await open();
        await layer.groupAdd('conf-msg', 'conf.msg-member');
        for (const [what, message] of notPlain) {
          const m = message as Message;
          expect(
            await rejection(() => layer.send('conf.msg', m), `send(${what})`),
            what,
          ).toBeInstanceOf(TypeError);
          expect(
            await rejection(() => layer.groupSend('conf-msg', m), `groupSend(${what})`),
            what,
          ).toBeInstanceOf(TypeError);
        }
        await expectEmpty(layer, 'conf.msg');
        await expectEmpty(layer, 'conf.msg-member');
      });

      it('rejects values that cannot be serialized with TypeError', async () => {
        const layer = await open();
        await layer.groupAdd('conf-msg', 'conf.msg-member');
        for (const [what, message] of notSerializable) {
          expect(
            await rejection(() => layer.send('conf.msg', message), `send(${what})`),
            what,
          ).toBeInstanceOf(TypeError);
          expect(
            await rejection(() => layer.groupSend('conf-msg', message), `groupSend(${what})`),
            what,
          ).toBeInstanceOf(TypeError);
        }
        await expectEmpty(layer, 'conf.msg');
        await expectEmpty(layer, 'conf.msg-member');
      });

      it('rejects class instances, Errors, Promises, Maps and Sets nested anywhere with a TypeError naming the path', async () => {
        const layer = await open();
        await layer.groupAdd('conf-msg', 'conf.msg-member');
        for (const [what, message, path] of nestedInstances) {
          const sent = await rejection(() => layer.send('conf.msg', message), `send(${what})`);
          expect(sent, what).toBeInstanceOf(TypeError);
          expect((sent as Error).message, what).toMatch(path);
          const grouped = await rejection(
            () => layer.groupSend('conf-msg', message),
            `groupSend(${what})`,
          );
          expect(grouped, what).toBeInstanceOf(TypeError);
        }
        await expectEmpty(layer, 'conf.msg');
        await expectEmpty(layer, 'conf.msg-member');
      });

      it('nested Dates round-trip as Dates; Buffers and Uint8Arrays as Buffers (Uint8Array instances)', async () => {
        const layer = await open();
        const when = new Date(Date.UTC(2024, 1, 29, 12, 0, 0, 123));
        await layer.send('conf.dates', {
          type: 'x',
          at: { when },
          bytes: new Uint8Array([1, 2, 3]),
        });
        const received = await within(layer.receive('conf.dates'));
        const at = (received.at as { when: unknown }).when;
        expect(at).toBeInstanceOf(Date);
        expect((at as Date).getTime()).toBe(when.getTime());
        expect(received.bytes).toBeInstanceOf(Uint8Array);
        expect([...(received.bytes as Uint8Array)]).toEqual([1, 2, 3]);
      });

      it('accepts an object without a prototype', async () => {
        const layer = await open();
        const message = Object.assign(Object.create(null) as Message, { type: 'bare', n: 1 });
        await layer.send('conf.bare', message);
        expect({ ...(await within(layer.receive('conf.bare'))) }).toEqual({ type: 'bare', n: 1 });
      });
    });

    describe('cancellation', () => {
      it('an aborted receive rejects with AbortError and the next message goes to the next receive', async () => {
        const layer = await open();
        const controller = new AbortController();
        const aborted = layer.receive('conf.abort', { signal: controller.signal });
        const failed = rejection(() => aborted, 'aborted receive');
        await sleep(20);
        controller.abort();
        expect(errorName(await failed)).toBe('AbortError');
        await layer.send('conf.abort', { type: 'kept', n: 1 });
        expect(await within(layer.receive('conf.abort'))).toEqual({ type: 'kept', n: 1 });
        // Also when the send comes right after the abort, before the rejection is observed.
        const again = new AbortController();
        const second = rejection(
          () => layer.receive('conf.abort', { signal: again.signal }),
          'second aborted receive',
        );
        await sleep(20);
        again.abort(new Error('custom reason'));
        await layer.send('conf.abort', { type: 'kept', n: 2 });
        expect(errorName(await second)).toBe('AbortError');
        expect(await within(layer.receive('conf.abort'))).toEqual({ type: 'kept', n: 2 });
        await expectEmpty(layer, 'conf.abort');
      });

      it('aborting one of several waiting receives loses no message', async () => {
        const layer = await open();
        const controller = new AbortController();
        const first = within(layer.receive('conf.abort-many'));
        const middle = rejection(
          () => layer.receive('conf.abort-many', { signal: controller.signal }),
          'middle receive',
        );
        const last = within(layer.receive('conf.abort-many'));
        await sleep(20);
        controller.abort();
        expect(errorName(await middle)).toBe('AbortError');
        await layer.send('conf.abort-many', { n: 1 });
        await layer.send('conf.abort-many', { n: 2 });
        const got = [(await first).n, (await last).n].sort();
        expect(got).toEqual([1, 2]);
        await expectEmpty(layer, 'conf.abort-many');
      });

      it('an abort by one instance loses nothing sent by another', async () => {
        const layer = await open();
        const other = await peerOf(layer);
        const channel = await layer.newChannel();
        const controller = new AbortController();
        const aborted = rejection(
          () => layer.receive(channel, { signal: controller.signal }),
          'aborted receive',
        );
        await sleep(20);
        controller.abort();
        await other.send(channel, { type: 'cross', n: 1 });
        expect(errorName(await aborted)).toBe('AbortError');
        expect(await within(layer.receive(channel))).toEqual({ type: 'cross', n: 1 });
      });

      it('a receive with an already-aborted signal rejects at once and takes nothing', async () => {
        const layer = await open();
        const error = await rejection(
          () => layer.receive('conf.pre-aborted', { signal: AbortSignal.abort() }),
          'receive with an aborted signal (empty channel)',
          1000,
        );
        expect(errorName(error)).toBe('AbortError');
        await layer.send('conf.pre-aborted', { type: 'queued' });
        const withMessage = await rejection(
          () => layer.receive('conf.pre-aborted', { signal: AbortSignal.abort() }),
          'receive with an aborted signal (message queued)',
          1000,
        );
        expect(errorName(withMessage)).toBe('AbortError');
        expect(await within(layer.receive('conf.pre-aborted'))).toEqual({ type: 'queued' });
      });

      it('aborting after the message arrived changes nothing', async () => {
        const layer = await open();
        const controller = new AbortController();
        const waiting = within(layer.receive('conf.abort-late', { signal: controller.signal }));
        await sleep(20);
        await layer.send('conf.abort-late', { n: 1 });
        expect(await waiting).toEqual({ n: 1 });
        controller.abort();
        await layer.send('conf.abort-late', { n: 2 });
        expect(
          await within(layer.receive('conf.abort-late', { signal: new AbortController().signal })),
        ).toEqual({ n: 2 });
      });

      it('10,000 receives on one AbortSignal add one abort listener and no leak warning', async () => {
        const layer = await open();
        const controller = new AbortController();
        const warnings: Error[] = [];
        const onWarning = (warning: Error): void => void warnings.push(warning);
        process.on('warning', onWarning);
        try {
          const channels = Array.from({ length: 10 }, (_, i) => `conf.one-signal.${i}`);
          const outcomes = Array.from({ length: 10_000 }, (_, i) =>
            layer.receive(channels[i % channels.length]!, { signal: controller.signal }).then(
              (message) => ({ ok: true as const, message }),
              (error: unknown) => ({ ok: false as const, error }),
            ),
          );
          expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);
          // Deliveries in between leave the one listener in place for the receives still waiting.
          await layer.send(channels[0]!, { n: 1 });
          await layer.send(channels[1]!, { n: 2 });
          const first = await within(outcomes[0]!);
          const second = await within(outcomes[1]!);
          expect(first).toEqual({ ok: true, message: { n: 1 } });
          expect(second).toEqual({ ok: true, message: { n: 2 } });
          expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);
          controller.abort();
          const settled = await within(Promise.all(outcomes), 20_000, 'the aborted receives');
          const aborted = settled.filter((o) => !o.ok && errorName(o.error) === 'AbortError');
          expect(aborted).toHaveLength(10_000 - 2);
          expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
          await sleep(10); // warnings are emitted on a later tick
          expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
          // The aborts lost nothing: the next message sent still arrives.
          await layer.send(channels[3]!, { n: 3 });
          expect(await within(layer.receive(channels[3]!))).toEqual({ n: 3 });
        } finally {
          process.off('warning', onWarning);
        }
      }, 60_000);

      it('a signal shared by receives that all completed keeps no listener', async () => {
        const layer = await open();
        const controller = new AbortController();
        const waiting = Array.from({ length: 20 }, () =>
          layer.receive('conf.signal-done', { signal: controller.signal }),
        );
        for (let i = 0; i < 20; i++) await layer.send('conf.signal-done', { i });
        expect(
          (await within(Promise.all(waiting)))
            .map((m) => m.i)
            .sort((a, b) => (a as number) - (b as number)),
        ).toEqual(Array.from({ length: 20 }, (_, i) => i));
        expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
      });
    });

    describe('concurrent receivers', () => {
      const ids = (messages: Message[]): number[] =>
        messages.map((m) => m.id as number).sort((a, b) => a - b);
      const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

      it('many waiting receives on one channel each get a distinct message', async () => {
        const layer = await open();
        const receives = Array.from({ length: 60 }, () => layer.receive('conf.many'));
        await sleep(20);
        for (let i = 0; i < 60; i++) await layer.send('conf.many', { id: i });
        expect(ids(await within(Promise.all(receives)))).toEqual(range(60));
        await expectEmpty(layer, 'conf.many');
      });

      it('many receives on queued messages each get a distinct message', async () => {
        const layer = await open();
        for (let i = 0; i < 60; i++) await layer.send('conf.many-queued', { id: i });
        const receives = Array.from({ length: 60 }, () => layer.receive('conf.many-queued'));
        expect(ids(await within(Promise.all(receives)))).toEqual(range(60));
        await expectEmpty(layer, 'conf.many-queued');
      });

      it('receives waiting in two instances on one channel share the messages: none twice, none lost', async () => {
        const layer = await open();
        const other = await peerOf(layer);
        const receives = [
          ...Array.from({ length: 30 }, () => layer.receive('conf.shared-many')),
          ...Array.from({ length: 30 }, () => other.receive('conf.shared-many')),
        ];
        await sleep(20);
        for (let i = 0; i < 60; i++)
          await (i % 2 ? other : layer).send('conf.shared-many', { id: i });
        expect(ids(await within(Promise.all(receives)))).toEqual(range(60));
        await expectEmpty(layer, 'conf.shared-many', other);
        await expectEmpty(other, 'conf.shared-many', layer);
      });

      it("receives waiting on many channels at once each get their own channel's messages", async () => {
        const layer = await open();
        const other = await peerOf(layer);
        const channels = Array.from({ length: 40 }, (_, i) => `conf.fan-in-${i}`);
        const local = await layer.newChannel();
        const receives = [...channels, local].map((channel) =>
          Promise.all([layer.receive(channel), layer.receive(channel)]),
        );
        await sleep(20);
        for (const [i, channel] of [...channels, local].entries()) {
          await (i % 2 ? other : layer).send(channel, { channel, n: 1 });
          await (i % 2 ? layer : other).send(channel, { channel, n: 2 });
        }
        const results = await within(Promise.all(receives));
        for (const [i, channel] of [...channels, local].entries()) {
          expect(results[i], channel).toEqual([
            { channel, n: 1 },
            { channel, n: 2 },
          ]);
        }
      });

      it('two instances racing on queued messages and a stream of sends: none twice, none lost', async () => {
        const layer = await open({ capacity: 500 });
        const other = await peerOf(layer);
        for (let i = 0; i < 100; i++) await layer.send('conf.race', { id: i });
        const receives = Array.from({ length: 200 }, (_, i) =>
          (i % 2 ? other : layer).receive('conf.race'),
        );
        for (let i = 100; i < 200; i++) {
          await (i % 2 ? layer : other).send('conf.race', { id: i });
          if (i % 10 === 0) await sleep(1);
        }
        expect(ids(await within(Promise.all(receives)))).toEqual(range(200));
        await expectEmpty(layer, 'conf.race', other);
      });
    });

    describe.skipIf(hooks.receiveAnyPending)('receiveAny', () => {
      const sent = (channel: string, n: number): Message => ({ type: 'any', channel, n });

      it('takes a queued message from whichever channel has one, naming the channel', async () => {
        const layer = await open();
        await layer.send('conf.any-b', sent('conf.any-b', 1));
        const got = await within(layer.receiveAny(['conf.any-a', 'conf.any-b', 'conf.any-c']));
        expect(got).toEqual({ channel: 'conf.any-b', message: sent('conf.any-b', 1) });
        await expectEmpty(layer, 'conf.any-b');
      });

      it('takes the oldest message first across channels, and each channel keeps its order', async () => {
        const layer = await open();
        const other = await peerOf(layer);
        const channels = ['conf.any-x', 'conf.any-y', 'conf.any-z'];
        // Interleaved sends from two instances, a few ms apart so send times differ everywhere.
        const order: Array<[string, number]> = [
          ['conf.any-y', 1],
          ['conf.any-x', 1],
          ['conf.any-y', 2],
          ['conf.any-z', 1],
          ['conf.any-x', 2],
          ['conf.any-x', 3],
          ['conf.any-z', 2],
          ['conf.any-y', 3],
        ];
        for (const [i, [channel, n]] of order.entries()) {
          await (i % 2 ? other : layer).send(channel, sent(channel, n));
          await sleep(3);
        }
        const got: Array<[string, number]> = [];
        for (let i = 0; i < order.length; i++) {
          const { channel, message } = (await within(layer.receiveAny(channels)))!;
          expect(message.channel).toBe(channel);
          got.push([channel, message.n as number]);
        }
        expect(got).toEqual(order);
        expect(await layer.receiveAny(channels, { wait: false })).toBeNull();
      });

      it('does not let a busy channel drown out an old message in another', async () => {
        const layer = await open({ capacity: 200 });
        await layer.send('conf.any-quiet', { type: 'old' });
        await sleep(3);
        for (let i = 0; i < 150; i++) await layer.send('conf.any-busy', { type: 'busy', i });
        const first = await within(layer.receiveAny(['conf.any-busy', 'conf.any-quiet']));
        expect(first).toEqual({ channel: 'conf.any-quiet', message: { type: 'old' } });
        for (let i = 0; i < 150; i++) {
          expect(await within(layer.receiveAny(['conf.any-busy', 'conf.any-quiet']))).toEqual({
            channel: 'conf.any-busy',
            message: { type: 'busy', i },
          });
        }
      });

      it('waits until another instance sends to any of the channels', async () => {
        const layer = await open();
        const other = await peerOf(layer);
        const local = await layer.newChannel();
        const channels = ['conf.any-w1', 'conf.any-w2', local];
        const waiting = within(layer.receiveAny(channels));
        await sleep(30);
        await other.send('conf.any-w2', { type: 'woken', n: 1 });
        expect(await waiting).toEqual({ channel: 'conf.any-w2', message: { type: 'woken', n: 1 } });
        const again = within(layer.receiveAny(channels));
        await sleep(30);
        await other.send(local, { type: 'woken', n: 2 });
        expect(await again).toEqual({ channel: local, message: { type: 'woken', n: 2 } });
        expect(await layer.receiveAny(channels, { wait: false })).toBeNull();
      });

      it('wait: false resolves at once: null when every channel is empty, else a message', async () => {
        const layer = await open();
        const local = await layer.newChannel();
        const started = Date.now();
        expect(
          await within(layer.receiveAny(['conf.any-nw1', local], { wait: false }), 1000),
        ).toBeNull();
        expect(Date.now() - started).toBeLessThan(1000);
        await layer.send(local, { type: 'now' });
        expect(
          await within(layer.receiveAny(['conf.any-nw1', local], { wait: false }), 1000),
        ).toEqual({
          channel: local,
          message: { type: 'now' },
        });
        expect(await layer.receiveAny(['conf.any-nw1', local], { wait: false })).toBeNull();
        await expectEmpty(layer, local);
      });

      it('an aborted receiveAny rejects with AbortError and loses no message', async () => {
        const layer = await open();
        const other = await peerOf(layer);
        const channels = ['conf.any-ab1', 'conf.any-ab2'];
        const controller = new AbortController();
        const aborted = rejection(
          () => layer.receiveAny(channels, { signal: controller.signal }),
          'aborted receiveAny',
        );
        await sleep(20);
        controller.abort();
        expect(errorName(await aborted)).toBe('AbortError');
        await other.send('conf.any-ab2', { n: 1 });
        expect(await within(layer.receiveAny(channels))).toEqual({
          channel: 'conf.any-ab2',
          message: { n: 1 },
        });
        // A send right after the abort, before the rejection is observed, is not lost either.
        const again = new AbortController();
        const second = rejection(
          () => layer.receiveAny(channels, { signal: again.signal }),
          'second aborted receiveAny',
        );
        await sleep(20);
        again.abort();
        await other.send('conf.any-ab1', { n: 2 });
        expect(errorName(await second)).toBe('AbortError');
        expect(await within(layer.receive('conf.any-ab1'))).toEqual({ n: 2 });
        // An already-aborted signal rejects and takes nothing, even with a message queued.
        await layer.send('conf.any-ab1', { n: 3 });
        const pre = await rejection(
          () => layer.receiveAny(channels, { signal: AbortSignal.abort() }),
          'receiveAny with an aborted signal',
          1000,
        );
        expect(errorName(pre)).toBe('AbortError');
        expect(await within(layer.receive('conf.any-ab1'))).toEqual({ n: 3 });
        await expectEmpty(layer, 'conf.any-ab1', other);
        await expectEmpty(layer, 'conf.any-ab2', other);
      });

      it('aborting one of several waiting receiveAny()s loses no message', async () => {
        const layer = await open();
        const channels = ['conf.any-am1', 'conf.any-am2'];
        const controller = new AbortController();
        const first = within(layer.receiveAny(channels));
        const middle = rejection(
          () => layer.receiveAny(channels, { signal: controller.signal }),
          'middle receiveAny',
        );
        const last = within(layer.receiveAny(channels));
        await sleep(20);
        controller.abort();
        expect(errorName(await middle)).toBe('AbortError');
        await layer.send('conf.any-am1', { n: 1 });
        await layer.send('conf.any-am2', { n: 2 });
        const got = [(await first)!.message.n, (await last)!.message.n].sort();
        expect(got).toEqual([1, 2]);
        expect(await layer.receiveAny(channels, { wait: false })).toBeNull();
      });

      it('rejects an empty list, a non-list, non-string or invalid names with TypeError, taking nothing', async () => {
        const layer = await open();
        await layer.send('conf.any-valid', { type: 'kept' });
        const bad: unknown[] = [
          [],
          'conf.any-valid',
          undefined,
          null,
          { 0: 'conf.any-valid', length: 1 },
          ['conf.any-valid', 1],
          ['conf.any-valid', undefined],
          ['conf.any-valid', ''],
          ['conf.any-valid', 'with space'],
          ['conf.any-valid', 'x'.repeat(201)],
          ['conf.any-valid', 'a!b!c'],
        ];
        for (const channels of bad) {
          for (const wait of [true, false]) {
            const error = await rejection(
              () => layer.receiveAny(channels as string[], { wait }),
              `receiveAny(${JSON.stringify(channels)?.slice(0, 60)}, { wait: ${wait} })`,
            );
            expect(error, JSON.stringify(channels)?.slice(0, 60)).toBeInstanceOf(TypeError);
          }
        }
        expect(await within(layer.receive('conf.any-valid'))).toEqual({ type: 'kept' });
      });

      it("rejects a '!' channel this instance did not create with TypeError, taking nothing", async () => {
        const layer = await open();
        let other = await peerOf(layer);
        if (other === layer) other = await open();
        const theirs = await layer.newChannel();
        await layer.send(theirs, { type: 'private' });
        await other.send('conf.any-open', { type: 'open' });
        for (const channels of [
          [theirs],
          ['conf.any-open', theirs],
          ['conf.any-open', 'specific.abc123!def456'],
        ]) {
          const error = await rejection(
            () => other.receiveAny(channels),
            `receiveAny(${JSON.stringify(channels)})`,
          );
          expect(error).toBeInstanceOf(TypeError);
        }
        expect(await within(layer.receive(theirs))).toEqual({ type: 'private' });
        expect(await within(other.receive('conf.any-open'))).toEqual({ type: 'open' });
      });

      it('many receiveAny()s on one channel set, in two instances, each get a distinct message', async () => {
        const layer = await open();
        const other = await peerOf(layer);
        const channels = Array.from({ length: 5 }, (_, i) => `conf.any-many-${i}`);
        const receives = [
          ...Array.from({ length: 20 }, () => layer.receiveAny(channels)),
          ...(other === layer ? [] : Array.from({ length: 20 }, () => other.receiveAny(channels))),
        ];
        await sleep(30);
        for (let id = 0; id < receives.length; id++) {
          await (id % 2 ? other : layer).send(channels[id % channels.length]!, { id });
          if (id % 8 === 0) await sleep(1);
        }
        const results = await within(Promise.all(receives));
        for (const result of results)
          expect(channels[(result!.message.id as number) % channels.length]).toBe(result!.channel);
        expect(results.map((r) => r!.message.id as number).sort((a, b) => a - b)).toEqual(
          Array.from({ length: receives.length }, (_, i) => i),
        );
        expect(await layer.receiveAny(channels, { wait: false })).toBeNull();
      });

      it('receive() and receiveAny() on the same channel share its messages: none twice, none lost', async () => {
        const layer = await open({ capacity: 500 });
        const other = await peerOf(layer);
        const channels = ['conf.any-shared', 'conf.any-shared-2'];
        const receives: Array<Promise<Message>> = [];
        for (let i = 0; i < 60; i++) {
          receives.push(
            i % 2
              ? layer.receiveAny(channels).then((r) => r!.message)
              : other.receive('conf.any-shared'),
          );
        }
        await sleep(30);
        for (let id = 0; id < 60; id++)
          await (id % 3 ? other : layer).send('conf.any-shared', { id });
        const ids = (await within(Promise.all(receives)))
          .map((m) => m.id as number)
          .sort((a, b) => a - b);
        expect(ids).toEqual(Array.from({ length: 60 }, (_, i) => i));
        await expectEmpty(layer, 'conf.any-shared', other);
      });

      it('a receive() and a receiveAny() waiting on other channels are each woken by their own', async () => {
        const layer = await open();
        const other = await peerOf(layer);
        const single = within(layer.receive('conf.any-mixed-single'));
        const any = within(layer.receiveAny(['conf.any-mixed-a', 'conf.any-mixed-b']));
        await sleep(30);
        await other.send('conf.any-mixed-single', { to: 'single' });
        expect(await single).toEqual({ to: 'single' });
        await other.send('conf.any-mixed-b', { to: 'any' });
        expect(await any).toEqual({ channel: 'conf.any-mixed-b', message: { to: 'any' } });
        // And the other way round: the set's channel first, then the single one.
        const single2 = within(layer.receive('conf.any-mixed-single'));
        const any2 = within(layer.receiveAny(['conf.any-mixed-a', 'conf.any-mixed-b']));
        await sleep(30);
        await other.send('conf.any-mixed-a', { to: 'any' });
        await other.send('conf.any-mixed-single', { to: 'single' });
        expect(await any2).toEqual({ channel: 'conf.any-mixed-a', message: { to: 'any' } });
        expect(await single2).toEqual({ to: 'single' });
      });

      it('one loop over 100 channels gets every message once, in send order', async () => {
        const layer = await open({ capacity: 500 });
        const other = await peerOf(layer);
        const channels = Array.from({ length: 100 }, (_, i) => `conf.any-loop-${i}`);
        const total = 300;
        const got: number[] = [];
        const loop = (async () => {
          while (got.length < total) {
            const { channel, message } = (await layer.receiveAny(channels))!;
            expect(channel).toBe(channels[((message.id as number) * 37) % 100]);
            got.push(message.id as number);
          }
        })();
        for (let id = 0; id < total; id++) {
          await other.send(channels[(id * 37) % 100]!, { id });
          if (id % 25 === 0) await sleep(2);
        }
        await within(loop, 15_000, 'the receiveAny loop');
        // One sender, one receiver: the order of the sends is the order received.
        expect(got).toEqual(Array.from({ length: total }, (_, i) => i));
        expect(await layer.receiveAny(channels, { wait: false })).toBeNull();
      });

      it('follows the list it is given: the same array with new contents, and duplicates', async () => {
        const layer = await open();
        const list = ['conf.any-l1', 'conf.any-l2'];
        await layer.send('conf.any-l3', { n: 3 });
        expect(await layer.receiveAny(list, { wait: false })).toBeNull();
        list[1] = 'conf.any-l3';
        expect(await within(layer.receiveAny(list))).toEqual({
          channel: 'conf.any-l3',
          message: { n: 3 },
        });
        await layer.send('conf.any-l1', { n: 1 });
        expect(await within(layer.receiveAny(['conf.any-l1', 'conf.any-l1']))).toEqual({
          channel: 'conf.any-l1',
          message: { n: 1 },
        });
        expect(await layer.receiveAny(['conf.any-l1', 'conf.any-l1'], { wait: false })).toBeNull();
        // A frozen list (its contents cannot change) is used as it is.
        const frozen = Object.freeze(['conf.any-l2', 'conf.any-l3']);
        await layer.send('conf.any-l2', { n: 2 });
        expect(await within(layer.receiveAny(frozen))).toEqual({
          channel: 'conf.any-l2',
          message: { n: 2 },
        });
        expect(await layer.receiveAny(frozen, { wait: false })).toBeNull();
      });

      it('never returns an expired message', async () => {
        const layer = await open({ expiry: 1 });
        await layer.send('conf.any-exp1', { type: 'stale' });
        await sleep(1100);
        await layer.send('conf.any-exp2', { type: 'fresh' });
        expect(await within(layer.receiveAny(['conf.any-exp1', 'conf.any-exp2']))).toEqual({
          channel: 'conf.any-exp2',
          message: { type: 'fresh' },
        });
        expect(
          await layer.receiveAny(['conf.any-exp1', 'conf.any-exp2'], { wait: false }),
        ).toBeNull();
      });

      it("releaseChannel rejects a receiveAny naming the released '!' channel with ChannelReleased", async () => {
        const layer = await open();
        const local = await layer.newChannel();
        const waiting = rejection(
          () => layer.receiveAny(['conf.any-rel', local]),
          'receiveAny during releaseChannel',
        );
        await sleep(20);
        await layer.releaseChannel(local);
        expect(errorName(await waiting)).toBe('ChannelReleased');
        // The other channel still works, for a list without the released one.
        await layer.send('conf.any-rel', { n: 1 });
        expect(await within(layer.receiveAny(['conf.any-rel']))).toEqual({
          channel: 'conf.any-rel',
          message: { n: 1 },
        });
      });

      it('close rejects a waiting receiveAny with LayerClosed; later calls reject too', async () => {
        const layer = await open();
        const waiting = rejection(
          () => layer.receiveAny(['conf.any-close', 'conf.any-close2']),
          'receiveAny during close',
        );
        await sleep(20);
        await within(layer.close(), SETTLE_MS, 'close()');
        expect(await waiting).toBeInstanceOf(LayerClosed);
        expect(
          await rejection(() => layer.receiveAny(['conf.any-close']), 'receiveAny after close'),
        ).toBeInstanceOf(LayerClosed);
      });

      it('types receiveAny<T>() by its type argument', async () => {
        const layer = await open();
        await layer.send('conf.any-typed', { type: 'typed', count: 2 });
        const got = await within(
          layer.receiveAny<{ type: string; count: number }>(['conf.any-typed']),
        );
        expectTypeOf(got).toEqualTypeOf<{
          channel: string;
          message: { type: string; count: number };
        } | null>();
        expect(got!.message.count + 1).toBe(3);
      });
    });

    describe('close', () => {
      it('rejects waiting receives', async () => {
        const layer = await open();
        const local = await layer.newChannel();
        const plain = rejection(() => layer.receive('conf.closing'), 'receive during close');
        const mine = rejection(
          () => layer.receive(local),
          'receive on a local channel during close',
        );
        await sleep(20);
        await within(layer.close(), SETTLE_MS, 'close()');
        expect(await plain).toBeInstanceOf(LayerClosed);
        expect(await mine).toBeInstanceOf(LayerClosed);
      });

      it('makes every later call reject', async () => {
        const layer = await open();
        const local = await layer.newChannel();
        await layer.send('conf.closed', { type: 'before' });
        await layer.close();
        const calls: Array<[string, () => unknown]> = [
          ['send', () => layer.send('conf.closed', { type: 'x' })],
          ['receive', () => layer.receive('conf.closed')],
          ['receive(local)', () => layer.receive(local)],
          ['newChannel', () => layer.newChannel()],
          ['groupAdd', () => layer.groupAdd('conf-closed', 'conf.closed')],
          ['groupDiscard', () => layer.groupDiscard('conf-closed', 'conf.closed')],
          ['groupSend', () => layer.groupSend('conf-closed', { type: 'x' })],
          ['groupMembers', () => layer.groupMembers('conf-closed')],
          ['flush', () => layer.flush()],
        ];
        for (const [what, call] of calls) {
          expect(await rejection(call, `${what} after close`), what).toBeInstanceOf(LayerClosed);
        }
      });

      it('is idempotent', async () => {
        const layer = await open();
        await layer.close();
        await expect(layer.close()).resolves.toBeUndefined();
        await expect(Promise.all([layer.close(), layer.close()])).resolves.toBeDefined();
        const fresh = await open();
        await expect(Promise.all([fresh.close(), fresh.close()])).resolves.toBeDefined();
      });

      describe.skipIf(!hooks.peer)('with two instances', () => {
        it('closing one instance leaves the other working, with the messages it holds', async () => {
          const layer = await open();
          const other = await peerOf(layer);
          await layer.send('conf.survivor', { type: 'kept' });
          const waiting = within(other.receive('conf.survivor-wait'));
          await sleep(20);
          await layer.close();
          expect(await within(other.receive('conf.survivor'))).toEqual({ type: 'kept' });
          const third = await peerOf(other);
          await third.send('conf.survivor-wait', { type: 'woken' });
          expect(await waiting).toEqual({ type: 'woken' });
        });

        it('a receive cut short by close takes no message: another instance gets it', async () => {
          const layer = await open();
          const other = await peerOf(layer);
          const cut = rejection(() => layer.receive('conf.cut'), 'receive during close');
          await sleep(20);
          await layer.close();
          expect(await cut).toBeInstanceOf(LayerClosed);
          await other.send('conf.cut', { type: 'not-lost' });
          expect(await within(other.receive('conf.cut'))).toEqual({ type: 'not-lost' });
        });
      });
    });

    describe('interface', () => {
      it("lists the 'groups' and 'flush' extensions", async () => {
        const layer = await open();
        expect(layer.extensions).toContain('groups');
        expect(layer.extensions).toContain('flush');
      });

      it('types receive<T>() by its type argument', async () => {
        const layer = await open();
        await layer.send('conf.typed', { type: 'typed.message', count: 3 });
        const message = await within(layer.receive<{ type: string; count: number }>('conf.typed'));
        expectTypeOf(message).toEqualTypeOf<{ type: string; count: number }>();
        expectTypeOf(layer.receive).returns.resolves.toEqualTypeOf<Message>();
        // @ts-expect-error a message type must be an object type
        expectTypeOf(layer.receive<string>).toBeFunction();
        expect(message.type.toUpperCase()).toBe('TYPED.MESSAGE');
        expect(message.count + 1).toBe(4);
      });

      it('rejects invalid options with TypeError', async () => {
        for (const options of [
          { capacity: 0 },
          { capacity: 1.5 },
          { expiry: -1 },
          { groupExpiry: 0 },
          { channelCapacity: { 'a*': 0 } },
        ]) {
          const error = await rejection(
            async () => open(options),
            `open(${JSON.stringify(options)})`,
          );
          expect(error, JSON.stringify(options)).toBeInstanceOf(TypeError);
        }
      });
    });
  });
}
