// Conformance, section 13: receiveAny(): one wait over many channels, oldest first, fair,
// cancellable, sharing messages with receive().
import { describe, expect, expectTypeOf, it } from 'vitest';
import { LayerClosed, type Message } from '../support/package.js';
import {
  SETTLE_MS,
  sleep,
  within,
  rejection,
  errorName,
  expectEmpty,
  type Suite,
} from './harness.js';

export function describeReceiveAny({ open, peerOf, hooks }: Suite): void {
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

    // A backend may remember the heads it saw (Redis does, to avoid looking at every channel
    // per message): what is sent meanwhile, to a channel that was empty then, must still come
    // out in send order, not after every later message of the remembered channels.
    it('messages sent while a backlog is being taken still come out in send order', async () => {
      const layer = await open();
      const other = await peerOf(layer);
      const channels = ['conf.any-backlog', 'conf.any-late'];
      for (let n = 1; n <= 3; n++) {
        await other.send('conf.any-backlog', sent('conf.any-backlog', n));
        await sleep(3);
      }
      const got: Array<[string, number]> = [];
      const take = async (): Promise<void> => {
        const { channel, message } = (await within(layer.receiveAny(channels)))!;
        got.push([channel, message.n as number]);
      };
      await take(); // backlog 1: the other channel is empty now
      await sleep(3);
      await other.send('conf.any-late', sent('conf.any-late', 1));
      await sleep(3);
      await other.send('conf.any-backlog', sent('conf.any-backlog', 4));
      for (let i = 0; i < 4; i++) await take();
      expect(got).toEqual([
        ['conf.any-backlog', 1],
        ['conf.any-backlog', 2],
        ['conf.any-backlog', 3],
        ['conf.any-late', 1],
        ['conf.any-backlog', 4],
      ]);
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

    // A receiveAny() that finds messages queued takes one in its own call; a ring for someone
    // else's channel seen by that call must still reach the receive() waiting there.
    it('a receive() of another channel is served while a receiveAny() loop takes a backlog (two lists in use)', async () => {
      const layer = await open({ capacity: 1000 });
      const other = await peerOf(layer);
      const channels = ['conf.any-bl-0', 'conf.any-bl-1', 'conf.any-bl-2'];
      // A second list in use by this instance (a backend may keep state per list).
      expect(await layer.receiveAny(['conf.any-bl-other'], { wait: false })).toBeNull();
      const total = 600;
      for (let n = 0; n < total; n++) await other.send(channels[n % 3]!, { n });
      let taken = 0;
      let servedAt = -1;
      const single = layer.receive('conf.any-bl-single').then((message) => {
        servedAt = taken;
        return message;
      });
      await sleep(30);
      while (taken < total) {
        await within(layer.receiveAny(channels));
        taken++;
        if (taken === 50) await other.send('conf.any-bl-single', { to: 'single' });
      }
      expect(await within(single)).toEqual({ to: 'single' });
      // Served while the loop still had hundreds of messages to take, not once it ran dry.
      expect(servedAt).toBeGreaterThanOrEqual(50);
      expect(servedAt).toBeLessThan(total - 100);
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

    // '!' channels of one instance may share one queue (channels_redis: one key per process;
    // shm: one inbox per process) and a group send to several of them be one entry; what this
    // instance took from it waits in its memory. Across them and named channels the order is
    // rough, but each channel keeps its own and every message comes once.
    it("takes from '!' channels and named channels together, group sends included: each channel in order, each message once", async () => {
      const layer = await open();
      const other = await peerOf(layer);
      const a = await layer.newChannel();
      const b = await layer.newChannel();
      const named = 'conf.any-named';
      await layer.groupAdd('conf-any-locals', a);
      await layer.groupAdd('conf-any-locals', b);
      const plan: Array<string | 'group'> = [a, named, b, 'group', named, a, 'group', b, named];
      const expected: Array<[string, number]> = [];
      for (const [n, to] of plan.entries()) {
        if (to === 'group') {
          expect(await other.groupSend('conf-any-locals', { n })).toBe(2);
          expected.push([a, n], [b, n]);
        } else {
          await other.send(to, { n });
          expected.push([to, n]);
        }
      }
      const got: Array<[string, number]> = [];
      for (let i = 0; i < expected.length; i++) {
        const { channel, message } = (await within(layer.receiveAny([named, b, a])))!;
        got.push([channel, message.n as number]);
      }
      for (const channel of [a, b, named]) {
        expect(got.filter(([c]) => c === channel)).toEqual(expected.filter(([c]) => c === channel));
      }
      expect(await layer.receiveAny([named, a, b], { wait: false })).toBeNull();
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

    it('follows a longer list changed in place anywhere: a name in the middle, the last one', async () => {
      const layer = await open();
      const list = Array.from({ length: 9 }, (_, i) => `conf.any-m${i}`);
      await layer.send('conf.any-mx', { n: 'x' });
      await layer.send('conf.any-my', { n: 'y' });
      expect(await layer.receiveAny(list, { wait: false })).toBeNull();
      // The comparison with the list's last contents goes four names at a time, then the rest.
      list[5] = 'conf.any-mx';
      expect(await within(layer.receiveAny(list))).toEqual({
        channel: 'conf.any-mx',
        message: { n: 'x' },
      });
      list[8] = 'conf.any-my';
      expect(await within(layer.receiveAny(list))).toEqual({
        channel: 'conf.any-my',
        message: { n: 'y' },
      });
      list.push('conf.any-m9');
      await layer.send('conf.any-m9', { n: 9 });
      expect(await within(layer.receiveAny(list))).toEqual({
        channel: 'conf.any-m9',
        message: { n: 9 },
      });
      expect(await layer.receiveAny(list, { wait: false })).toBeNull();
    });

    it('follows a list written out in each call: the same names, one name changed, an invalid one', async () => {
      const layer = await open();
      await layer.send('conf.any-w2', { n: 2 });
      await layer.send('conf.any-w3', { n: 3 });
      // A new array every call, as `receiveAny([a, b])` in a loop makes.
      expect(await layer.receiveAny(['conf.any-w1', 'conf.any-w2'], { wait: false })).toEqual({
        channel: 'conf.any-w2',
        message: { n: 2 },
      });
      expect(await layer.receiveAny(['conf.any-w1', 'conf.any-w2'], { wait: false })).toBeNull();
      expect(await within(layer.receiveAny(['conf.any-w1', 'conf.any-w3']))).toEqual({
        channel: 'conf.any-w3',
        message: { n: 3 },
      });
      await expect(layer.receiveAny(['conf.any-w1', 'conf any-w3'])).rejects.toThrow(TypeError);
      await expect(layer.receiveAny(['conf.any-w1', 3 as unknown as string])).rejects.toThrow(
        TypeError,
      );
      await layer.send('conf.any-w1', { n: 1 });
      expect(await within(layer.receiveAny(['conf.any-w1', 'conf.any-w3']))).toEqual({
        channel: 'conf.any-w1',
        message: { n: 1 },
      });
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
}
