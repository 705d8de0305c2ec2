// Conformance, section 10: message validation: what is not a plain, serializable object is rejected
// with TypeError; Dates, Buffers and prototype-less objects round-trip.
import { describe, expect, it } from 'vitest';
import type { ChannelLayer, Message } from '../support/package.js';
import { within, rejection, expectEmpty, type Suite } from './harness.js';

/**
 * send('conf.msg') and groupSend('conf-msg') of `message` both reject with a TypeError (checked
 * here, labelled `what`); resolves with send()'s error.
 */
async function refusedWithTypeError(
  layer: ChannelLayer,
  what: string,
  message: unknown,
): Promise<unknown> {
  const sent = await rejection(() => layer.send('conf.msg', message as Message), `send(${what})`);
  expect(sent, what).toBeInstanceOf(TypeError);
  const grouped = await rejection(
    () => layer.groupSend('conf-msg', message as Message),
    `groupSend(${what})`,
  );
  expect(grouped, what).toBeInstanceOf(TypeError);
  return sent;
}

export function describeMessageValidation({ open }: Suite): void {
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
      ['a Float64Array', { type: 'x', f: new Float64Array([1.5]) }, /message\.f is a Float64Array/],
    ];

    it('rejects a message that is not a plain object with TypeError', async () => {
      const layer = await open();
      await layer.groupAdd('conf-msg', 'conf.msg-member');
      for (const [what, message] of notPlain) await refusedWithTypeError(layer, what, message);
      await expectEmpty(layer, 'conf.msg');
      await expectEmpty(layer, 'conf.msg-member');
    });

    it('rejects values that cannot be serialized with TypeError', async () => {
      const layer = await open();
      await layer.groupAdd('conf-msg', 'conf.msg-member');
      for (const [what, message] of notSerializable)
        await refusedWithTypeError(layer, what, message);
      await expectEmpty(layer, 'conf.msg');
      await expectEmpty(layer, 'conf.msg-member');
    });

    it('rejects class instances, Errors, Promises, Maps and Sets nested anywhere with a TypeError naming the path', async () => {
      const layer = await open();
      await layer.groupAdd('conf-msg', 'conf.msg-member');
      for (const [what, message, path] of nestedInstances) {
        const sent = await refusedWithTypeError(layer, what, message);
        expect((sent as Error).message, what).toMatch(path);
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
}
