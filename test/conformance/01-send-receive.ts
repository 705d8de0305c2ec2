// Conformance, section 1: send() and receive(): round trips, value types, per-channel order,
// copies, binary data, message size limits, two instances.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MessageTooLarge } from '../support/package.js';
import { sleep, within, rejection, expectEmpty, bytesOf, type Suite } from './harness.js';

export function describeSendAndReceive({ open, peerOf }: Suite): void {
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
      expect(bytesOf((await within(layer.receive('conf.big'))).payload).equals(fits.payload)).toBe(
        true,
      );
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
}
