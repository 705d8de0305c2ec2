// Conformance, section 6: capacity: 100 messages by default, then ChannelFull; the capacity option
// and channelCapacity patterns.
import { describe, expect, it } from 'vitest';
import { ChannelFull } from '../support/package.js';
import { within, rejection, errorName, expectEmpty, fill, type Suite } from './harness.js';

export function describeCapacity({ open, peerOf }: Suite): void {
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

    // Past ~16k entries V8 stores an array as a large object, whose shift() moves every element:
    // queues that shift arrays slow down there (and a queue that cuts taken entries off in
    // batches must keep them in order across its cuts).
    it('a deep queue (capacity 30,000) gives its messages back in order through receive and receiveAny', async () => {
      const layer = await open({ capacity: 30000 });
      const channel = 'conf.cap-deep';
      let sent = 0;
      const sendUpTo = async (count: number): Promise<void> => {
        for (; sent < count; sent++) await layer.send(channel, { i: sent });
      };
      const got: unknown[] = [];
      await sendUpTo(20000);
      for (let i = 0; i < 15000; i++) got.push((await layer.receive(channel)).i);
      await sendUpTo(30000);
      for (let i = 0; i < 15000; i++) {
        const message =
          i % 2 === 0
            ? await layer.receive(channel)
            : (await layer.receiveAny([channel, 'conf.cap-deep-other']))!.message;
        got.push(message.i);
      }
      expect(got).toEqual(Array.from({ length: 30000 }, (_, i) => i));
      await expectEmpty(layer, channel);
    }, 120_000);

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

    // The channel-layer spec and channels_redis: the capacity of a process-local channel applies
    // to its non-local part ('<prefix>.<client>!'), which all '!' channels of one instance share.
    it("counts the '!' channels of one instance together, at the part up to the '!'", async () => {
      const layer = await open({ capacity: 3 });
      const other = await peerOf(layer);
      const [a, b, c] = [
        await layer.newChannel(),
        await layer.newChannel(),
        await layer.newChannel(),
      ];
      await other.send(a, { n: 0 });
      await other.send(b, { n: 1 });
      await other.send(a, { n: 2 });
      for (const channel of [a, b, c]) {
        expect(
          await rejection(() => other.send(channel, { n: 'over' }), `send to ${channel}`),
        ).toBeInstanceOf(ChannelFull);
      }
      // The instance's '!' channels with another prefix, other instances' '!' channels and named
      // channels have their own room.
      const elsewhere = await (other === layer ? open({ capacity: 3 }) : Promise.resolve(other));
      expect(await fill(other, await elsewhere.newChannel(), 10)).toBe(3);
      expect(await fill(other, await layer.newChannel('conf.other-prefix'), 10)).toBe(3);
      expect(await fill(other, 'conf.cap-named', 10)).toBe(3);
      // A group send to the full instance reaches none of its channels there, and throws nothing.
      await layer.groupAdd('conf-cap-locals', b);
      await layer.groupAdd('conf-cap-locals', c);
      await layer.groupAdd('conf-cap-locals', 'conf.cap-member');
      expect(await other.groupSend('conf-cap-locals', { n: 'group' })).toBe(1);
      // Receiving makes room again for any of them; nothing was lost or reordered.
      expect(await within(layer.receive(b))).toEqual({ n: 1 });
      await other.send(c, { n: 3 });
      expect(await within(layer.receive(a))).toEqual({ n: 0 });
      expect(await within(layer.receive(a))).toEqual({ n: 2 });
      expect(await within(layer.receive(c))).toEqual({ n: 3 });
      await expectEmpty(other, b, layer);
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
}
